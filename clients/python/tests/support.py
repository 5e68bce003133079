"""Helpers of the tests: the shared conformance vectors, bounded waits, test settings and a
scriptable stand-in for JetStream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, TypeVar

import pytest
from nats.aio.msg import Msg

from jetq import Config
from jetq.testing import NatsServer

T = TypeVar("T")

#: The longest any awaited event may take before a test fails.
WAIT = 20.0

VECTORS_PATH = Path(__file__).resolve().parents[3] / "docs" / "conformance" / "vectors.json"


def load_vectors() -> Dict[str, Any]:
    """docs/conformance/vectors.json, shared with the Rust producer's tests."""
    with open(VECTORS_PATH, encoding="utf-8") as handle:
        data: Dict[str, Any] = json.load(handle)
    return data


async def within(what: str, awaitable: Awaitable[T], limit: float = WAIT) -> T:
    """Awaits ``awaitable``, failing the test loudly after ``limit`` seconds."""
    try:
        return await asyncio.wait_for(awaitable, timeout=limit)
    except asyncio.TimeoutError:
        pytest.fail(f"timed out after {limit}s waiting for {what}")



def config_for(server: NatsServer, **changes: Any) -> Config:
    """Producer settings for tests: short timeouts so failures show in seconds."""
    base = Config(nats_url=server.url, connect_timeout=5.0, request_timeout=2.0)
    return base.replace(**changes) if changes else base



class FakeJetStream:
    """A core-NATS responder standing in for JetStream on one subject, to script acks:
    ``answer(i, msg)`` returns the reply body for the i-th request (0-based) or None to stay
    silent. Records every request and the most unanswered requests seen at once."""

    def __init__(self, answer: Callable[[int, Msg], Optional[bytes]], delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.requests: List[Msg] = []
        self.pending = 0
        self.max_pending = 0

    async def handle(self, msg: Msg) -> None:
        index = len(self.requests)
        self.requests.append(msg)
        self.pending += 1
        self.max_pending = max(self.max_pending, self.pending)
        asyncio.ensure_future(self._reply(index, msg))

    async def _reply(self, index: int, msg: Msg) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        body = self.answer(index, msg)
        self.pending -= 1
        if body is not None:
            await msg.respond(body)


def ack(seq: int, duplicate: bool = False) -> bytes:
    """A JetStream publish ack body."""
    body: Dict[str, Any] = {"stream": "JETQ_TASKS", "seq": seq}
    if duplicate:
        body["duplicate"] = True
    return json.dumps(body).encode()
