# Sourced by compare.sh and profile.sh: builds what the benchmarks run, starts
# a sandbox on a copy of the policies with rate limits lifted, and exports
# WORK, LOAD, PKI, SANDBOX_PID, PROVIDER_URL and PROVIDER_PID. The caller's
# EXIT trap must call `bench_cleanup`, which also removes WORK (set
# KEEP_BENCH_WORK=1 to keep it).

command -v python3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }

# Every binary of the workspace (the sandbox starts the adapters and the
# example registers beside the `mconnect` binary), then the load harness.
cargo build --release --workspace --bins --examples
cargo build --release --bench load
LOAD=$(ls -t target/release/deps/load-* | grep -v '\.d$' | head -n 1)

WORK=$(mktemp -d)
bench_cleanup() {
    [ -n "${NGINX_PID:-}" ] && kill "$NGINX_PID" 2>/dev/null || true
    [ -n "${SANDBOX_PID:-}" ] && kill -INT "$SANDBOX_PID" 2>/dev/null || true
    sleep 1
    pkill -f "state_register.*--pki $WORK" 2>/dev/null || true
    # The sandbox's audit log and state grow by the run's exchanges (GBs
    # over a long run): remove them unless asked to keep them for a look.
    if [ -z "${KEEP_BENCH_WORK:-}" ]; then
        [ -n "${SANDBOX_PID:-}" ] && wait "$SANDBOX_PID" 2>/dev/null || true
        rm -rf "$WORK"
    else
        echo "bench: kept $WORK (KEEP_BENCH_WORK)" >&2
    fi
}

# The shipped grants limit each consumer to a few calls a second, as a real
# deployment would; the benchmark measures the broker, so it runs on a copy
# of the policies with the rate limits and quotas lifted (the limiter still
# runs on every call).
cp -r catalog policies "$WORK/"
python3 - "$WORK/policies" <<'PY'
import glob, json, sys
for path in glob.glob(sys.argv[1] + "/*.json"):
    doc = json.load(open(path))
    for grant in doc.get("grants", []):
        grant["rate_limit"] = {"requests": 1000000, "per": "second", "burst": 1000000}
        grant.pop("quota", None)
    json.dump(doc, open(path, "w"), ensure_ascii=False, indent=2)
PY
target/release/mconnect --log warn sandbox --dir "$WORK/sandbox" --data-port 0 --admin-port 0 --ops-port 0 \
    --catalog "$WORK/catalog" --policies "$WORK/policies" >"$WORK/sandbox.log" 2>&1 &
SANDBOX_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/sandbox/sandbox.json" ] && break; sleep 0.2; done
[ -s "$WORK/sandbox/sandbox.json" ] || { cat "$WORK/sandbox.log"; exit 1; }
PROVIDER_URL=$(python3 -c "import json,sys;m=json.load(open(sys.argv[1]));print(next(p['endpoint'] for p in m['participants'] if p['id']=='asp-rsp'))" "$WORK/sandbox/sandbox.json")
PROVIDER_PID=$(pgrep -f "state_register.*--participant asp-rsp.*--pki $WORK" | head -n 1)
PKI="$WORK/sandbox/pki"
export WORK LOAD PKI SANDBOX_PID PROVIDER_URL PROVIDER_PID
