#!/usr/bin/env bash
# The quickstart: installs the pinned nats-server and aiosmtpd into .tools/venv if needed, then
# runs the seed scenario (web app + worker + local nats-server + SMTP sink) and prints what
# happened. Set JETQ_NATS_URL to run against an existing server instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/ensure-nats-server.sh >/dev/null
exec cargo run -p jetq-examples --bin demo
