#!/usr/bin/env bash
# The data-access portal's lookup answer page under load (issue 13): starts
# the same release sandbox as compare.sh (policies with rate limits lifted;
# the portal reads its grants from that same copy), then runs the portal
# load harness once per rate: officials' lookups through the portal, the
# broker and the provider, then the provider asked directly at that rate.
# Writes benches/results/portal-<date>.{jsonl,md} and prints the table.
#
# Usage: bash benches/portal.sh [seconds-per-run] [rates...]   (default 20 s at 5 20 50/s)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(5 20 50)
OUT=benches/results
mkdir -p "$OUT"
STAMP=$(date -u +%Y-%m-%dT%H%MZ)

# Built before the sandbox starts, so that it does not idle through a compile.
cargo build --release --bench portal_load
PORTAL_LOAD=$(ls -t target/release/deps/portal_load-* | grep -v '\.d$' | head -n 1)

source benches/sandbox-env.sh
trap bench_cleanup EXIT

RESULTS="$OUT/portal-$STAMP.jsonl"
: >"$RESULTS"
for rate in "${RATES[@]}"; do
    "$PORTAL_LOAD" --bench --sandbox "$WORK/sandbox" --sessions 16 --rate "$rate" --duration "$SECS" \
        | tee -a "$RESULTS"
done

python3 - "$RESULTS" "$OUT/portal-$STAMP.md" "$STAMP" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ms = lambda us: f"{us / 1000:.1f}"
lines = [
    f"Portal lookup answer page under load, {sys.argv[3]}: ms; the answer page from the lookup's",
    "scheduled time; \"beyond\" = the page less the provider's median (target: 50 ms median, 200 ms p99).",
    "",
    "| lookups/s | lookups | errors | page p50 | p90 | p99 | max | whole lookup p50 / p99 | provider p50 / p99 | beyond: p50 / p99 | target |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
]
for r in runs:
    page, flow, prov = r["answer_page"], r["lookup_flow"], r["provider"]
    b50, b99 = r["answer_page_median_beyond_provider_us"], r["answer_page_p99_beyond_provider_us"]
    met = "met" if r["errors"] == 0 and b50 < 50_000 and b99 < 200_000 else "NOT met"
    lines.append(
        f"| {r['offered_rate']} | {r['lookups']} | {r['errors']} | {ms(page['median_us'])} | "
        f"{ms(page['p90_us'])} | {ms(page['p99_us'])} | {ms(page['max_us'])} | "
        f"{ms(flow['median_us'])} / {ms(flow['p99_us'])} | "
        f"{ms(prov['median_us'])} / {ms(prov['p99_us'])} (errors {r['provider_errors']}) | "
        f"{ms(b50)} / {ms(b99)} | {met} |"
    )
table = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(table)
print(table)
PY
echo "results: $RESULTS and $OUT/portal-$STAMP.md"
