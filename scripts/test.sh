#!/usr/bin/env bash
# The whole test suite, set-up included, on a fresh Debian 12 machine with the Rust toolchain (as root, so it can
# install packages; as another user it skips the installs and uses what is there).
#
#   scripts/test.sh
#
# Steps: system packages; formatting and lints; every crate's tests (unit, property, golden packets, kernel ports
# and end to end in network namespaces, which need root); the golden fixtures regenerated with scapy and compared
# byte for byte with the committed ones; the fuzz targets built and run briefly (the benchmarks run once in test
# mode with the tests); one release build for the perf harness and the README's main command (`edgelb lab`). With
# libdpdk installed (always, as root) lints and tests run with the `dpdk` feature too: the DPDK port on DPDK's own
# vdevs, without PCI or huge pages.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# Each step prints the time the previous one took and the time so far (where CI's minutes go).
started=$(date +%s)
last=$started
step() {
    local now
    now=$(date +%s)
    if [ "$now" != "$started" ] || [ "$last" != "$started" ]; then
        printf '    (step took %d s; %d s so far)\n' $((now - last)) $((now - started))
    fi
    last=$now
    printf '\n==> %s\n' "$*"
}

if [ "$(id -u)" = 0 ]; then
    step "system packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip ca-certificates build-essential \
        iproute2 iputils-ping curl dpdk dpdk-dev libdpdk-dev clang libclang-dev pkg-config bird2 frr gobgpd keepalived \
        systemd util-linux prometheus valgrind nftables qemu-user
fi
features=()
if pkg-config --exists libdpdk 2>/dev/null; then
    features=(--features dpdk)
else
    echo "note: libdpdk is not installed, so the DPDK port is neither linted nor tested (run as root to install it)"
fi

step "cargo fmt --check"
cargo fmt --all --check

step "Python tools: scapy (golden packets), grpcio with reflection and health, prometheus-client (foreign clients)"
venv="${EDGELB_VENV:-$root/target/venv}"
export EDGELB_VENV="$venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q 'scapy==2.8.0' 'grpcio==1.76.0' 'grpcio-reflection==1.76.0' 'grpcio-health-checking==1.76.0' 'prometheus-client==0.23.1'

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
if [ ${#features[@]} -gt 0 ]; then
    cargo clippy --workspace --all-targets "${features[@]}" -- -D warnings
fi

step "cargo test --workspace --all-targets ${features[*]} (benchmarks too, once each in test mode), then doc tests"
# --all-targets takes the bench targets in: criterion runs each benchmark once, apply_latency 20 applies (debug).
cargo test --workspace --all-targets "${features[@]}"
cargo test --workspace --doc "${features[@]}"

step "golden fixtures: regenerate with scapy, compare with the committed ones"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" dataplane/tests/golden/make_golden.py "$out"
for f in input.pcap expected.pcap cases.json config.json; do
    cmp "$out/$f" "dataplane/tests/golden/$f" || { echo "golden fixture $f differs from what make_golden.py writes"; exit 1; }
done

step "fuzz targets (packet pipeline: bytes and built packets; BGP decoder): build and a short run"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# fuzz CRATE TARGET SUMMARY ARGS...: the run's whole log goes to a file and only the lines matching SUMMARY are
# printed. A failed run prints the log's telling lines (libFuzzer's seed among them), the log's end and every crash
# input in hex. A stateful target's crash input may fail only after the inputs before it, and the same seed need not
# repeat the campaign: the panic message is what names the fault.
fuzz() {
    local crate=$1 target=$2 summary=$3
    shift 3
    local log="$out/fuzz-$target.log"
    if (cd "$crate" && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$@" >"$log" 2>&1); then
        grep -E "$summary" "$log" || true
        return 0
    fi
    echo "fuzz target $target failed. The telling lines of its log:"
    grep -n -E 'INFO: Seed:|panicked|ERROR|SUMMARY|deadly|leak|Test unit written|Base64|Error' "$log" | head -n 40 || true
    echo "The end of its log:"
    grep -v -E '^"|# Uses: ' "$log" | tail -n 60
    local a
    for a in "$crate/fuzz/artifacts/$target"/*; do
        [ -f "$a" ] || continue
        echo "$a ($(stat -c %s "$a") bytes), in hex:"
        od -An -tx1 -v "$a"
    done
    df -h "$crate"
    return 1
}
corpus="$out/corpus"
python3 dataplane/fuzz/seed_corpus.py "$corpus"
fuzz dataplane process 'stat::|^Done' "$corpus" -- -runs=300000 -print_final_stats=1
# Structure-aware: the input drives a packet builder, so the packets pass the checksum gates and reach fragments,
# options, extension headers, ICMP errors and replies in every mode; its log line shows the deep paths reached.
mkdir -p "$out/craft-corpus"
fuzz dataplane craft '^craft: 65536|stat::|^Done' "$out/craft-corpus" -- -runs=100000 -max_len=256 -print_final_stats=1
python3 bgp-codec/fuzz/seed_corpus.py "$out/bgp-corpus"
fuzz bgp-codec bgp_decode 'stat::|^Done' "$out/bgp-corpus" -- -runs=300000 -max_len=4096 -print_final_stats=1

step "release build, once (edgelb, edgelb-perf); the perf harness runs briefly; the main command runs"
# One release build serves every release run below: the feature set stays the same, so nothing compiles twice. Only
# the two binaries run here are linked (each is a fat-LTO link of its own; edgelb is edgelbd and edgelbctl too).
cargo build --release -p edgelb -p edgelb-perf --bin edgelb --bin edgelb-perf --bin edgelb-gen "${features[@]}"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
"$target_dir/release/edgelb-perf" --mode nat --flows 10000 --cores 1 --seconds 0.5
"$target_dir/release/edgelb-perf" --mode floor --flows 10000 --cores 1 --seconds 0.5
"$target_dir/release/edgelb-perf" --mode nat --flows 10000 --cores 1 --seconds 0.5 --new-percent 50 --new-flow-limit 1000
# Instructions per packet under callgrind, beside the floor (a fixed count: the same figures on any machine).
if command -v valgrind >/dev/null; then
    perf/instructions.sh "$target_dir" 50000
fi
if [ ${#features[@]} -gt 0 ]; then
    "$target_dir/release/edgelb-perf" --port dpdk --mode nat --flows 10000 --seconds 0.5
fi
if [ "$(id -u)" = 0 ]; then
    # The kernel comparison and the charts, briefly (two rate steps; small sweeps): that both still run.
    KC_RATES="100000 200000" KC_FIXED_RATE=100000 perf/kernel-compare "$target_dir" "$out/kernel-compare.json"
    KC_FAMILY=6 KC_RATES="100000" KC_FIXED_RATE=100000 perf/kernel-compare "$target_dir" "$out/kernel-compare-v6.json"
    "$target_dir/release/edgelb-perf" --plot "$out/plots" --plot-flows 1000,10000 --seconds 0.2 \
        --kernel-json "$out/kernel-compare.json"
    ls "$out/plots"
    "$target_dir/release/edgelb" lab --requests 30
    # The failover drill as a newcomer sees it (BIRD, two appliances, a kill and a return, DSR and NAT; about 70 s).
    "$target_dir/release/edgelb" lab --ha
fi

step "all checks passed"
