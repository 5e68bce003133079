"""Fixtures: a real nats-server per test (the pinned binary from .tools/venv) and producers
bound to it."""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from jetq import AsyncProducer
from jetq.testing import NatsServer, create_task_stream

from .support import config_for, within


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream, on a free port, with a temporary store."""
    server = NatsServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def task_stream(nats_server: NatsServer) -> str:
    """The JETQ_TASKS stream on the test server, as a worker would provision it."""
    return await within("the task stream", create_task_stream(nats_server.url))

@pytest.fixture
async def producer(nats_server: NatsServer, task_stream: str) -> AsyncIterator[AsyncProducer]:
    """An AsyncProducer connected to the test server, whose task stream exists."""
    producer = await within("connect", AsyncProducer.connect(config_for(nats_server)))
    try:
        yield producer
    finally:
        await producer.close()


@pytest.fixture
async def raw_client(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    """A plain nats-py client on the test server (for fake responders and inspection)."""
    nc = await within("raw connect", nats.connect(nats_server.url, allow_reconnect=False))
    try:
        yield nc
    finally:
        await nc.close()


