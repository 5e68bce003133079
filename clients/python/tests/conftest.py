"""Fixtures: a real nats-server per test (the pinned binary from .tools/venv) and producers
bound to it."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from jetq import AsyncProducer
from jetq.testing import NatsServer, create_task_stream

from .support import config_for, within

if TYPE_CHECKING:
    from jetq.testing_postgres import PostgresServer


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




@pytest.fixture(scope="session")
def postgres() -> Iterator["PostgresServer"]:
    """A PostgreSQL cluster of our own for the session (initdb in a temporary directory, a free
    port): never the machine's server."""
    from jetq.testing_postgres import PostgresServer

    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


_databases = itertools.count(1)


@pytest.fixture
def outbox_dsn(postgres: "PostgresServer") -> str:
    """A fresh database on the session's cluster with the outbox table (the canonical schema)
    created; its libpq connection string."""
    import psycopg

    from jetq.outbox_schema import MIGRATION_0001

    name = postgres.create_database(f"outbox_{next(_databases)}")
    with psycopg.connect(postgres.dsn(name), autocommit=True) as conn:
        for statement in MIGRATION_0001:
            conn.execute(statement)
    return postgres.dsn(name)
