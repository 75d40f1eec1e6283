#!/usr/bin/env bash
# Instructions per packet (callgrind, deterministic: no machine noise), each case beside the floor measured the
# same way:
#
#   cargo build --release -p edgelb-perf && perf/instructions.sh [TARGET_DIR] [PACKETS]
#
# Each case runs `edgelb-perf --packets N` (a fixed count) under `valgrind --tool=callgrind`, counting only the
# measured polls (`--toggle-collect='*measured_polls*'`: set-up and the warm-up that opens the flows excluded). The
# floor (`--mode floor`) is the same worker and replay port receiving each packet and sending it back with its MACs
# swapped; "above the floor" is what parsing, lookup, scheduling and rewriting cost. The encoder column is flow
# replication's sending thread (`--replicate`), per record. Needs valgrind (Debian `valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-target}
packets=${2:-200000}
perf="$target/release/edgelb-perf"
[ -x "$perf" ] || { echo "no $perf: cargo build --release -p edgelb-perf" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind missing (apt-get install valgrind)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Instructions in the measured polls of one run (the worker's thread), and in the replication encoder's.
count() {
    local tag=$1
    shift
    valgrind --tool=callgrind --separate-threads=yes --collect-atstart=no \
        --toggle-collect='*measured_polls*' --toggle-collect='*replicate_out*' \
        --callgrind-out-file="$out/$tag.%p" "$perf" --packets "$packets" "$@" >"$out/$tag.log" 2>&1
    local worker=0 encoder=0 f n
    for f in "$out/$tag".*-*; do
        n=$(awk '/^totals:/ {print $2}' "$f")
        [ -n "$n" ] && [ "$n" != 0 ] || continue
        if grep -q 'replicate_out' "$f"; then encoder=$n; else worker=$n; fi
    done
    echo "$worker $encoder"
}

floor=$(count floor --mode floor --flows 10000)
floor=${floor%% *}
fpp=$((floor / packets))
echo "callgrind, $packets packets per case, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-44s %12s %12s %12s\n' "case (edgelb-perf arguments)" "instr/pkt" "above floor" "instr/record"
printf '%-44s %12d %12s %12s\n' "--mode floor --flows 10000" "$fpp" "-" "-"
while read -r args; do
    [ -n "$args" ] || continue
    read -r w e <<<"$(count case $args)"
    rec=$(awk '/^replication:/ {print $2}' "$out/case.log")
    per_rec=-
    [ "$e" != 0 ] && [ -n "$rec" ] && per_rec=$((e / rec))
    printf '%-44s %12d %12d %12s\n' "$args" $((w / packets)) $(((w - floor) / packets)) "$per_rec"
    rm -f "$out"/case.*
done <<'EOF'
--mode nat --flows 10000
--mode nat --flows 10000 --no-fast-path
--mode nat --flows 10000 --v6
--mode dsr_l2 --flows 10000
--mode nat --flows 10000 --new
--mode dsr_l2 --flows 10000 --new
--mode nat --flows 10000 --replies
--mode nat --flows 10000 --replies --no-fast-path
--mode fullnat --flows 10000 --replies
--mode nat --flows 10000 --replies --v6
--mode nat --flows 10000 --new --replicate
--mode nat --flows 10000 --replicate
EOF
