#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need on a fresh
# machine, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# The interoperability test signs with an independent RFC 9421
# implementation (Python's http-message-signatures).
# The MNotify tests mail a real SMTP server (Python's aiosmtpd).
if ! python3 -c "import http_message_signatures, requests, aiosmtpd" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi

# The sandbox the tests start runs the example registers and the adapters as
# real processes: build every binary of the workspace first.
cargo build --workspace --bins --examples --locked
cargo test --workspace --all-targets --locked
