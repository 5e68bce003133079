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

from pathlib import Path
from typing import Dict

import pytest

from jetq.testing import RunningBinary, cargo_binary, free_port

REPO = Path(__file__).resolve().parents[3]


def rust_binaries() -> Dict[str, str]:
    """Paths of ``jetq-scheduler`` and ``test_worker``, building the missing ones."""
    try:
        return {
            "jetq-scheduler": cargo_binary("jetq-scheduler", "jetq-scheduler", REPO, "JETQ_TEST_SCHEDULER_BIN"),
            "test_worker": cargo_binary("jetq-tests", "test_worker", REPO, "JETQ_TEST_WORKER_BIN"),
        }
    except RuntimeError as err:
        pytest.fail(f"{err}\n(these tests run the Rust scheduler and worker; deselect them with -m 'not rust')")


def start_scheduler(binary: str, nats_url: str) -> RunningBinary:
    """``jetq-scheduler`` releasing delayed tasks (no schedules file), ready once its
    ``/readyz`` answers 200 (it has connected and provisioned)."""
    port = free_port()
    env = {"JETQ_NATS_URL": nats_url, "JETQ_RELEASE_DELAYED": "true", "JETQ_HEALTH_LISTEN": f"127.0.0.1:{port}"}
    return RunningBinary(binary, env, ready_url=f"http://127.0.0.1:{port}/readyz")


def worker_env(nats_url: str, name: str) -> Dict[str, str]:
    """The ``test_worker`` environment the Rust crash tests use."""
    return {
        "JETQ_NATS_URL": nats_url,
        "JETQ_ACK_WAIT": "2s",
        "JETQ_FETCH_EXPIRES": "500ms",
        "JETQ_CONCURRENCY": "2",
        "TEST_WORKER_NAME": name,
    }
