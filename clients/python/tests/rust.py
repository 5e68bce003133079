"""The Rust side as real processes for the cross-language tests: the ``jetq-scheduler`` binary
(scheduler/ crate) and the ``test_worker`` binary (tests/src/bin), which runs ``Job`` tasks
(queue ``work``, task ``job``, ``{"n": .., "note": ..}``; ``note`` ``sleep:<ms>`` makes it sleep)
and reports ``"<worker> <n> <attempt> <id>"`` on the core subjects ``test.started`` /
``test.done`` (and its name on ``test.ready`` once it pulls).

The binaries are ``$JETQ_TEST_SCHEDULER_BIN`` / ``$JETQ_TEST_WORKER_BIN`` (``scripts/test.sh``
builds them and sets both); when unset, ``cargo build`` builds them (a no-op when they are up to
date). Every wait is bounded; every process is stopped (SIGTERM, then SIGKILL) by its fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from jetq.testing import free_port

REPO = Path(__file__).resolve().parents[3]
#: Building from scratch on a small machine takes minutes; an up-to-date build takes seconds.
BUILD_TIMEOUT = 1800.0
STOP_TIMEOUT = 15.0
READY_TIMEOUT = 30.0

_BINARIES = {
    # binary: (package, environment variable)
    "jetq-scheduler": ("jetq-scheduler", "JETQ_TEST_SCHEDULER_BIN"),
    "test_worker": ("jetq-tests", "JETQ_TEST_WORKER_BIN"),
}


def _cargo() -> Optional[str]:
    found = shutil.which("cargo")
    if found:
        return found
    home = Path.home() / ".cargo" / "bin" / "cargo"
    return str(home) if os.access(home, os.X_OK) else None


def rust_binaries() -> Dict[str, str]:
    """Paths of ``jetq-scheduler`` and ``test_worker``, building the missing ones."""
    paths: Dict[str, str] = {}
    to_build: List[str] = []
    for binary, (_, variable) in _BINARIES.items():
        configured = os.environ.get(variable)
        if configured:
            if not os.access(configured, os.X_OK):
                pytest.fail(f"{variable}={configured} is not an executable file")
            paths[binary] = configured
        else:
            to_build.append(binary)
    if not to_build:
        return paths
    cargo = _cargo()
    if cargo is None:
        pytest.fail(
            "these tests run the Rust scheduler and worker: install Rust (cargo) or set "
            + " and ".join(_BINARIES[b][1] for b in to_build)
            + " (scripts/test.sh does); deselect them with -m 'not rust'"
        )
    command = [cargo, "build", "--quiet"]
    for binary in to_build:
        command += ["-p", _BINARIES[binary][0], "--bin", binary]
    try:
        built = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} did not finish within {BUILD_TIMEOUT:g}s")
    if built.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({built.returncode}):\n{built.stderr[-4000:]}")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "debug"
    for binary in to_build:
        paths[binary] = str(target / binary)
    return paths


class RustProcess:
    """A Rust binary run by a test, its output in a temporary log file."""

    def __init__(self, name: str, binary: str, env: Dict[str, str]) -> None:
        self.name = name
        self._dir = tempfile.mkdtemp(prefix=f"jetq-{name}-")
        self._log_path = os.path.join(self._dir, "output.log")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("JETQ_", "OTEL_"))}
        full_env.update({"OTEL_SDK_DISABLED": "true", "RUST_LOG": "warn"})
        full_env.update(env)
        with open(self._log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary], env=full_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def logs(self) -> str:
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        """Fails the test with the process's output if it exited."""
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"{self.name} exited with {code}:\n{self.logs()[-4000:]}")

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL after a bound; removes the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self._dir, ignore_errors=True)


def start_scheduler(binary: str, nats_url: str) -> RustProcess:
    """``jetq-scheduler`` releasing delayed tasks (no schedules file), ready once its
    ``/readyz`` answers 200 (it has connected and provisioned)."""
    port = free_port()
    process = RustProcess(
        "jetq-scheduler",
        binary,
        {
            "JETQ_NATS_URL": nats_url,
            "JETQ_RELEASE_DELAYED": "true",
            "JETQ_HEALTH_LISTEN": f"127.0.0.1:{port}",
        },
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        process.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return process
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            process.stop()
            pytest.fail(f"jetq-scheduler was not ready within {READY_TIMEOUT:g}s:\n{process.logs()[-4000:]}")
        time.sleep(0.1)


def worker_env(nats_url: str, name: str) -> Dict[str, str]:
    """The ``test_worker`` environment the Rust crash tests use."""
    return {
        "JETQ_NATS_URL": nats_url,
        "JETQ_ACK_WAIT": "2s",
        "JETQ_FETCH_EXPIRES": "500ms",
        "JETQ_CONCURRENCY": "2",
        "TEST_WORKER_NAME": name,
    }
