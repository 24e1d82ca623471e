#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need on a fresh
# machine, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# The interoperability test signs with an independent RFC 9421
# implementation (Python's http-message-signatures).
# The MNotify tests mail a real SMTP server (Python's aiosmtpd).
# The portal's browser test drives Chromium with Playwright.
# The portal's MPass test signs in at a real SAML identity provider
# (pysaml2's, which signs with Debian's xmlsec1).
# The admin API's conformance test (tests/openapi_conformance.rs) runs
# schemathesis against a sandbox.
if ! python3 -c "import http_message_signatures, requests, aiosmtpd, playwright, saml2.server, schemathesis" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi
if ! command -v xmlsec1 >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq xmlsec1 >/dev/null
fi

# The state store's PostgreSQL tests (tests/store.rs) start a server of
# their own from Debian's package (initdb and postgres, run as the postgres
# user the package creates, since PostgreSQL refuses root).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi

# The cluster sandbox (`mconnect sandbox --cluster`, tests/cluster_sandbox.rs)
# puts Debian's nginx in stream mode in front of its brokers; Debian builds
# the stream module as a separate package.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] || [ ! -f /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    apt-get update -qq && apt-get install -y -qq nginx libnginx-mod-stream >/dev/null
fi

# The metrics test (tests/prometheus.rs) starts Debian's Prometheus, which
# scrapes a sandbox and answers PromQL, and lints /metrics with its promtool.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
fi

# The portal's browser test drives Debian's Chromium through Playwright
# (PyPI, above) and checks every page with axe-core (npm, pinned in
# tests/browser/package-lock.json).
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
if [ ! -f tests/browser/node_modules/axe-core/axe.min.js ]; then
    command -v npm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq npm >/dev/null; }
    (cd tests/browser && npm ci --silent --no-audit --no-fund)
fi

# The sandbox the tests start runs the example registers and the adapters as
# real processes: build every binary of the workspace first.
cargo build --workspace --bins --examples --locked
cargo test --workspace --all-targets --locked
