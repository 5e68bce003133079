#!/usr/bin/env bash
# The quickstart: installs the pinned nats-server and aiosmtpd into .tools/venv if needed, then
# runs the seed scenario (web app + worker + scheduler on examples/schedules.yaml + local
# nats-server + SMTP sink) and prints what happened and where to look (jetq queues, jetq
# schedules, jetq dashboard). `--stay` keeps the stack running for those until Ctrl-C. Set
# JETQ_NATS_URL to run against an existing server instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/ensure-nats-server.sh >/dev/null
exec cargo run -p jetq-examples --bin demo -- "$@"
