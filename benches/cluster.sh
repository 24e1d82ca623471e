#!/usr/bin/env bash
# One run, three configurations, same machine, payload and load (issue 15,
# deliverable 9): throughput at saturation and CPU per exchange of
#   (a) one broker on embedded redb        (`mconnect sandbox`),
#   (b) one broker on PostgreSQL           (broker a of `mconnect sandbox
#       --cluster`, called directly: state, the shared replay check and audit
#       shipping in PostgreSQL; broker b runs idle beside it),
#   (c) two brokers behind nginx           (the same cluster through its load
#       balancer: layer 4, TLS passed through, connections round robin).
# The load harness (benches/load.rs) runs closed loop, small payload (GET
# asp-rsp/person-by-idnp), CONCURRENCY connections (HTTP/1.1, kept alive),
# SECS seconds per run, RUNS runs per configuration after a short unrecorded
# warm-up of each: a a a, then b c b c b c (the one-broker sandbox is stopped
# and its directory removed before the cluster starts: every exchange
# leaves a few KB on disk, audit logs, PostgreSQL's copy and its WAL, and
# two sandboxes' worth did not fit the development machine's disk). CPU comes from /proc/<pid>/stat
# (utime + stime) read before and after each timed run: the brokers, the
# provider (the population register), PostgreSQL (postmaster, backends and
# background processes), nginx (master and workers) and the load generator,
# each separately. Both sandboxes run on the policies with rate limits and
# quotas lifted (as benches/sandbox-env.sh does; the limiter still runs).
#
# Writes benches/results/cluster-<date>.{jsonl,md,sizes}; removes its
# scratch directory at the end.
#
# Usage: bash benches/cluster.sh [seconds-per-run] [runs]   (default 10 3)
#   CONCURRENCY=32 by default. Needs Debian's postgresql, nginx and
#   libnginx-mod-stream (tests/run.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
RUNS=${2:-3}
CONCURRENCY=${CONCURRENCY:-32}
WARM=2
OUT=benches/results
mkdir -p "$OUT"
STAMP=$(date -u +%Y-%m-%dT%H%MZ)
RESULTS="$OUT/cluster-$STAMP.jsonl"
: >"$RESULTS"

# Builds, and starts the one-broker sandbox in $WORK/sandbox on the lifted
# policies ($WORK/catalog, $WORK/policies): SANDBOX_PID, PROVIDER_PID.
FREE_MB=$(df -Pm "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')
[ "$FREE_MB" -ge 1024 ] || { echo "only $FREE_MB MB free in ${TMPDIR:-/tmp}: the runs need about 1 GB" >&2; exit 1; }
source benches/sandbox-env.sh
CLUSTER_PID=
cleanup() {
    if [ -n "$CLUSTER_PID" ]; then
        kill -INT "$CLUSTER_PID" 2>/dev/null || true
        for _ in $(seq 1 120); do kill -0 "$CLUSTER_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$CLUSTER_PID" 2>/dev/null || true
    fi
    if [ -n "${SANDBOX_PID:-}" ]; then
        kill -INT "$SANDBOX_PID" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$SANDBOX_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$SANDBOX_PID" 2>/dev/null || true
    fi
    sleep 1
    rm -rf "$WORK"
}
trap cleanup EXIT

run() { # config seconds record|warm
    local sandbox args
    case "$1" in
        redb)
            sandbox="$WORK/sandbox"
            args=(--cpu-pids "$SANDBOX_PID" --cpu-group "broker=$SANDBOX_PID"
                --cpu-group "provider=$PROVIDER_PID")
            ;;
        postgres)
            sandbox="$WORK/cluster"
            args=(--connect-url "$A_URL" --cpu-pids "$A_PID"
                --cpu-group "broker-a=$A_PID" --cpu-group "broker-b=$B_PID"
                --cpu-group "postgres=$PG_PID+" --cpu-group "nginx=$NGINX_PID+"
                --cpu-group "provider=$CPROVIDER_PID")
            ;;
        nginx)
            sandbox="$WORK/cluster"
            args=(--cpu-pids "$A_PID,$B_PID"
                --cpu-group "broker-a=$A_PID" --cpu-group "broker-b=$B_PID"
                --cpu-group "postgres=$PG_PID+" --cpu-group "nginx=$NGINX_PID+"
                --cpu-group "provider=$CPROVIDER_PID")
            ;;
    esac
    local line
    line=$("$LOAD" --bench --sandbox "$sandbox" --target mconnect --payload small --mode closed \
        --duration "$2" --concurrency "$CONCURRENCY" --max-requests $(($2 * 6000)) "${args[@]}" 2>/dev/null)
    if [ "$3" = record ]; then
        printf '{"config":"%s","run":%s,"loadavg":"%s","result":%s}\n' \
            "$1" "$RUN" "$(cut -d' ' -f1-3 /proc/loadavg)" "$line" | tee -a "$RESULTS"
    fi
    # A run with refusals measures something else (a full disk, say): stop.
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); sys.exit(1 if r['errors'] > r['requests'] // 100 else 0)" "$line" \
        || { echo "$1: more than 1% of the calls failed: $line" >&2; exit 1; }
}

# (a) one broker on redb, then its sandbox stopped and removed.
echo "one broker: sandbox pid $SANDBOX_PID, provider $PROVIDER_PID" >&2
RUN=0
run redb "$WARM" warm
for RUN in $(seq 1 "$RUNS"); do run redb "$SECS" record; done
kill -0 "$SANDBOX_PID" 2>/dev/null || { echo "the one-broker sandbox ended during the runs" >&2; exit 1; }
kill -INT "$SANDBOX_PID"
for _ in $(seq 1 60); do kill -0 "$SANDBOX_PID" 2>/dev/null || break; sleep 0.5; done
SANDBOX_PID=
rm -rf "$WORK/sandbox"

# The cluster sandbox (PostgreSQL runs as the postgres user and must reach
# its directory).
chmod 755 "$WORK"
target/release/mconnect --log warn sandbox --cluster --dir "$WORK/cluster" --data-port 0 \
    --catalog "$WORK/catalog" --policies "$WORK/policies" >"$WORK/cluster.log" 2>&1 &
CLUSTER_PID=$!
for _ in $(seq 1 1200); do
    [ -s "$WORK/cluster/sandbox.json" ] && break
    kill -0 "$CLUSTER_PID" 2>/dev/null || break
    sleep 0.2
done
[ -s "$WORK/cluster/sandbox.json" ] || { cat "$WORK/cluster.log"; exit 1; }

# The processes to measure, from sandbox.json.
read -r A_PID B_PID A_URL NGINX_PID PG_PID CPROVIDER_PID < <(python3 - "$WORK/cluster/sandbox.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
procs = {p["participant"]: p["pid"] for p in m["processes"]}
a, b = m["cluster"]["brokers"]
print(a["pid"], b["pid"], a["data_url"], procs["load-balancer"], procs["postgres"], procs["asp-rsp"])
PY
)
echo "cluster: brokers $A_PID $B_PID (a at $A_URL), nginx $NGINX_PID, postgres $PG_PID, provider $CPROVIDER_PID" >&2

RUN=0
for config in postgres nginx; do run "$config" "$WARM" warm; done
for RUN in $(seq 1 "$RUNS"); do
    for config in postgres nginx; do run "$config" "$SECS" record; done
done
# Every broker still the one measured (none restarted during the runs).
for pid in "$A_PID" "$B_PID"; do
    kill -0 "$pid" 2>/dev/null || { echo "process $pid ended during the runs" >&2; exit 1; }
done
# What the runs left in PostgreSQL: rows and bytes (table, indexes and TOAST)
# per row of the shipped audit log and of the shared replay ids, once the
# shippers caught up (growth figures for ARCHITECTURE.md).
PG_URL=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['cluster']['postgres'])" "$WORK/cluster/sandbox.json")
sleep 2
psql "$PG_URL" -Atc "SELECT 'postgres_sizes', relname, n, pg_total_relation_size(oid), round(pg_total_relation_size(oid)::numeric / greatest(n, 1)) FROM (SELECT c.oid, c.relname, (SELECT count(*) FROM audit_records) AS n FROM pg_class c WHERE relname = 'audit_records' UNION ALL SELECT c.oid, c.relname, (SELECT count(*) FROM replay_ids) FROM pg_class c WHERE relname = 'replay_ids') t" \
    | tee "$OUT/cluster-$STAMP.sizes" >&2 || true

python3 - "$RESULTS" "$OUT/cluster-$STAMP.md" "$SECS" "$CONCURRENCY" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
secs, conc = sys.argv[3], sys.argv[4]
names = {"redb": "(a) one broker, redb", "postgres": "(b) one broker, PostgreSQL",
         "nginx": "(c) two brokers behind nginx"}
def per(r, group):
    for g in r["result"]["cpu_groups"]:
        if g["name"] == group:
            return g["cpu_us_per_request"] or 0.0
    return None
def fmt(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    return f"{statistics.median(xs):,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
out = [f"Closed loop, {conc} connections, small payload, {secs} s per run; "
       "median (min–max) of the runs. CPU in µs per answered exchange.", "",
       "| configuration | req/s | errors | p50 / p99 ms | brokers CPU | PostgreSQL CPU | nginx CPU | provider CPU | generator CPU | load average (1 min) |",
       "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for key in ["redb", "postgres", "nginx"]:
    rs = [r for r in rows if r["config"] == key]
    if not rs:
        continue
    res = [r["result"] for r in rs]
    tput = fmt([x["throughput_rps"] for x in res])
    errors = sum(x["errors"] for x in res)
    lat = "{:.2f} / {:.2f}".format(statistics.median(x["p50_us"] for x in res) / 1000,
                                   statistics.median(x["p99_us"] for x in res) / 1000)
    brokers = fmt([x["cpu_us_per_request"] for x in res])
    pg = fmt([per(r, "postgres") for r in rs])
    ng = fmt([per(r, "nginx") for r in rs])
    prov = fmt([per(r, "provider") for r in rs])
    gen = fmt([x["generator_cpu_ms"] * 1000 / x["ok"] if x["ok"] else None for x in res])
    loads = ", ".join(r["loadavg"].split()[0] for r in rs)
    out.append(f"| {names[key]} | {tput} | {errors} | {lat} | {brokers} | {pg} | {ng} | {prov} | {gen} | {loads} |")
split = [(per(r, "broker-a"), per(r, "broker-b")) for r in rows if r["config"] == "nginx"]
if split:
    out += ["", "Through nginx, CPU per exchange of broker a / broker b per run: "
            + "; ".join(f"{a:,.0f} / {b:,.0f}" for a, b in split if a is not None and b is not None)]
idle = [per(r, "broker-b") for r in rows if r["config"] == "postgres"]
if idle:
    out += ["", "(b) broker b, idle beside a: " + ", ".join(f"{x:,.1f}" for x in idle if x is not None)
            + " µs per exchange of a."]
try:
    sizes = [l.split("|") for l in open(sys.argv[2].replace(".md", ".sizes")) if l.strip()]
    out += ["", "Left in PostgreSQL after the runs: " + "; ".join(
        f"{t}: {int(n):,} rows, {int(b) / 2**20:,.1f} MiB, {int(per):,} bytes a row" for _, t, n, b, per in sizes)]
except (OSError, ValueError):
    pass
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
echo "results: $RESULTS and $OUT/cluster-$STAMP.md" >&2
