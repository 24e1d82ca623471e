#!/usr/bin/env bash
# Profiles the broker under load and draws a flamegraph: starts the same
# sandbox as compare.sh, drives it with the load harness (closed loop, small
# payload unless told otherwise) and samples the broker with `perf` (DWARF
# call graphs). Writes benches/results/flame-<date>.svg and the folded stacks
# beside it, so two runs can be compared with `inferno-diff-folded`.
#
# Usage: bash benches/profile.sh [seconds] [small|large] [rate]
#   (default 10 small; with a rate, an open loop at that many requests/s)
# Needs perf (linux-perf) and inferno (cargo install inferno); installs both
# if missing. perf must be allowed to sample: kernel.perf_event_paranoid <= 2.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
PAYLOAD=${2:-small}
RATE=${3:-}
MODE=(--mode closed)
[ -n "$RATE" ] && MODE=(--mode open --rate "$RATE")
OUT=benches/results
mkdir -p "$OUT"
export PATH="$HOME/.cargo/bin:$PATH"
STAMP=$(date -u +%Y-%m-%dT%H%MZ)

command -v perf >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install --locked inferno

source benches/sandbox-env.sh
trap bench_cleanup EXIT

"$LOAD" --bench --sandbox "$WORK/sandbox" --target mconnect --payload "$PAYLOAD" "${MODE[@]}" \
    --duration "$((SECS + 2))" --concurrency 32 --cpu-pids "$SANDBOX_PID" \
    --max-requests $(((SECS + 2) * 6000)) 2>/dev/null &
LOAD_PID=$!
sleep 1
perf record -q -F 499 --call-graph dwarf,32768 -p "$SANDBOX_PID" -o "$WORK/perf.data" -- sleep "$SECS"
wait "$LOAD_PID"
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$OUT/flame-$STAMP.folded"
inferno-flamegraph --title "mconnect broker, ${MODE[*]}, $PAYLOAD payload, $STAMP" \
    <"$OUT/flame-$STAMP.folded" >"$OUT/flame-$STAMP.svg"
echo "flamegraph: $OUT/flame-$STAMP.svg"
