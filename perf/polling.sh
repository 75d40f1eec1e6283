#!/usr/bin/env bash
# Busy against adaptive polling, on the machine at hand (root; network namespaces; release binaries):
#
#   cargo build --release -p edgelb --bin edgelbd && perf/polling.sh [TARGET_DIR]
#
# edgelbd (one worker, AF_PACKET ports) between a client and a UDP echo backend in NAT mode, run with `[workers]
# polling = "busy"` (the default) and with "adaptive" at three longest sleeps. For each it prints the CPU edgelbd
# used while no traffic flowed (5 s, from /proc/PID/stat) and the round-trip times of 500 probes sent one every 10 ms
# (low load: the worker idles between probes, so an adaptive worker is asleep when most of them arrive). On a VM an
# idle vCPU halts, and waking it costs the host's scheduling: the RTTs then show that more than the worker's sleep.
# Addresses from 198.18.0.0/15 inside the namespaces only; everything it creates goes when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-target}
edgelbd="$target/release/edgelbd"
[ -x "$edgelbd" ] || { echo "no $edgelbd: cargo build --release -p edgelb --bin edgelbd" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
p="elbpoll$$"
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for ns in cl lb be; do ip netns del "$p-$ns" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
for ns in cl lb be; do ip netns add "$p-$ns"; ip -n "$p-$ns" link set lo up; done
ip link add "$p-c" type veth peer name "$p-l0"
ip link set "$p-c" netns "$p-cl" name cl0
ip link set "$p-l0" netns "$p-lb" name lb0
ip link add "$p-b" type veth peer name "$p-l1"
ip link set "$p-b" netns "$p-be" name be0
ip link set "$p-l1" netns "$p-lb" name lb1
for x in "cl cl0" "lb lb0" "lb lb1" "be be0"; do set -- $x; ip -n "$p-$1" link set "$2" up; done
ip -n "$p-cl" addr add 198.18.0.10/24 dev cl0
ip -n "$p-cl" route add 198.19.0.0/24 dev cl0
ip -n "$p-be" addr add 198.18.2.10/24 dev be0
ip -n "$p-be" route add default via 198.18.2.1
ip netns exec "$p-be" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
' &
pids+=($!)

run() {
    local polling=$1 extra=${2:-}
    cat >"$dir/edgelbd.toml" <<EOF
[workers]
polling = "$polling"
$extra

[[port]]
name = "lb0"
driver = "afpacket"
addresses = ["198.18.0.1/24"]
frames = 256

[[port]]
name = "lb1"
driver = "afpacket"
addresses = ["198.18.2.1/24"]
frames = 256

[api]
enabled = false

[metrics]
enabled = false

[[service]]
vip = "198.19.0.1"
protocol = "udp"
port = 53
mode = "nat"

[[service.backend]]
address = "198.18.2.10"
port = 5353
EOF
    ip netns exec "$p-lb" "$edgelbd" --config "$dir/edgelbd.toml" >"$dir/edgelbd-$polling.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    sleep 2
    # Warm the path (ARP both ways), then let it idle.
    ip netns exec "$p-cl" python3 - <<'EOF'
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(20):
    s.sendto(b"warm", ("198.19.0.1", 53))
    try:
        s.recvfrom(64)
        break
    except OSError:
        time.sleep(0.2)
EOF
    sleep 1
    local hz t0 t1
    hz=$(getconf CLK_TCK)
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sleep 5
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    local cpu
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { printf "%.0f", (b - a) / hz / 5 * 100 }')
    local rtt
    rtt=$(ip netns exec "$p-cl" python3 - <<'EOF'
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
rtts, lost = [], 0
for i in range(500):
    t = time.perf_counter()
    s.sendto(b"%d" % i, ("198.19.0.1", 53))
    try:
        while s.recvfrom(64)[0] != b"%d" % i:
            pass
        rtts.append((time.perf_counter() - t) * 1e6)
    except OSError:
        lost += 1
    time.sleep(max(0, 0.01 - (time.perf_counter() - t)))
rtts.sort()
q = lambda f: rtts[min(len(rtts) - 1, int(f * len(rtts)))] if rtts else float("nan")
print(f"RTT p50 {q(0.5):.0f} us, p90 {q(0.9):.0f} us, p99 {q(0.99):.0f} us, max {rtts[-1] if rtts else float('nan'):.0f} us, lost {lost} of 500")
EOF
)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    printf '%-28s idle CPU %3s %% of a core | probes every 10 ms: %s\n' "$polling ${extra/max_sleep_us = /max sleep }" "$cpu" "$rtt"
}

echo "edgelbd polling, one worker, NAT UDP echo through AF_PACKET ports on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
run busy
for us in 20 200 1000; do run adaptive "max_sleep_us = $us"; done
