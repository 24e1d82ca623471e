#!/usr/bin/env bash
# One command, one run, same machine and payloads: (a) direct calls to an
# example provider, (b) the same calls through nginx as a plain TLS reverse
# proxy, (c) the same calls through mconnect (signature verification, policy,
# schema validation, minimisation, durable audit). Writes
# benches/results/compare-<date>.{json,md,png}.
#
# Usage: bash benches/compare.sh [seconds-per-run]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
OUT=benches/results
mkdir -p "$OUT"
STAMP=$(date -u +%Y-%m-%dT%H%MZ)

source benches/sandbox-env.sh
trap bench_cleanup EXIT
command -v nginx >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install --quiet matplotlib

NGINX_PORT=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    upstream provider { server ${PROVIDER_URL#https://}; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $PKI/broker.cert.pem;
        ssl_certificate_key $PKI/broker.key.pem;
        ssl_protocols TLSv1.3;
        client_max_body_size 8m;
        location / {
            proxy_pass https://provider;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_ssl_certificate $PKI/broker.cert.pem;
            proxy_ssl_certificate_key $PKI/broker.key.pem;
            proxy_ssl_trusted_certificate $PKI/ca.cert.pem;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_buffers 16 64k;
        }
    }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
sleep 1
NGINX_PIDS=$(pgrep -d, -f "nginx: worker process" || true)

RESULTS="$OUT/compare-$STAMP.jsonl"
: >"$RESULTS"
run() { # target payload mode [rate]
    local pids
    case "$1" in
        direct) pids="$PROVIDER_PID" ;;
        proxy) pids="$NGINX_PIDS" ;;
        mconnect) pids="$SANDBOX_PID" ;;
    esac
    local extra=()
    [ "$3" = open ] && extra=(--rate "$4")
    "$LOAD" --bench --sandbox "$WORK/sandbox" --target "$1" --proxy-url "https://127.0.0.1:$NGINX_PORT" \
        --payload "$2" --mode "$3" --duration "$SECS" --concurrency 32 --cpu-pids "$pids" \
        --max-requests $((SECS * 6000)) "${extra[@]}" \
        2>/dev/null | tee -a "$RESULTS"
}
for payload in small large; do
    for target in direct proxy mconnect; do
        run "$target" "$payload" closed
    done
done
for rate in 500 1000; do
    for target in direct proxy mconnect; do
        run "$target" small open "$rate"
    done
done
python3 benches/report.py "$RESULTS" "$OUT/compare-$STAMP"
echo "report: $OUT/compare-$STAMP.md and .png"
