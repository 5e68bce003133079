"""Django test setup without pytest-django: a PostgreSQL cluster of the session's own (initdb
in a temporary directory, a free port: never the machine's server) holding the test database,
and per test a real nats-server (the pinned binary from .tools/venv, on a free port, temporary
store) with the task stream, and the shop's jetq producer pointed at it."""

from __future__ import annotations

import os
from typing import Iterator

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shopsite.settings")
django.setup()

from django.test.utils import (  # noqa: E402 - needs django.setup()
    setup_databases,
    setup_test_environment,
    teardown_databases,
    teardown_test_environment,
)

from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402

from jetq.django.models import OutboxMessage  # noqa: E402
from jetq.testing import NatsServer, create_task_stream_sync  # noqa: E402
from jetq.testing_postgres import PostgresServer  # noqa: E402
from shop import jobs  # noqa: E402
from shop.models import Export, Member, SignupEvent  # noqa: E402


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL cluster."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def django_test_database(postgres: PostgresServer) -> Iterator[None]:
    """Django's test database on the session's cluster, with the migrations applied (the shop's
    tables and jetq's outbox table). DATABASES is pointed there before anything connects."""
    settings.DATABASES["default"].update(postgres.django_settings("shop"))
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        yield
    finally:
        connections.close_all()
        teardown_databases(old_config, verbosity=0)
        teardown_test_environment()


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    """The test database's URL, for jetq-relay (JETQ_DATABASE_URL)."""
    return postgres.url_for(connections["default"].settings_dict["NAME"])


@pytest.fixture(autouse=True)
def clean_tables() -> Iterator[None]:
    """Every test starts with empty tables (the views commit for real: no TestCase rollback,
    so on_commit callbacks run as in production)."""
    yield
    SignupEvent.objects.all().delete()
    Member.objects.all().delete()
    Export.objects.all().delete()
    OutboxMessage.objects.all().delete()


@pytest.fixture
def nats_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer]:
    """A nats-server for this test, the jetq environment pointing at it, short timeouts."""
    server = NatsServer()
    monkeypatch.setenv("JETQ_NATS_URL", server.url)
    monkeypatch.setenv("JETQ_CONNECT_TIMEOUT", "2s")
    monkeypatch.setenv("JETQ_REQUEST_TIMEOUT", "1s")
    monkeypatch.setenv("JETQ_PUBLISH_ATTEMPTS", "2")
    jobs.reset_producer()
    try:
        yield server
    finally:
        jobs.reset_producer()
        server.stop()


@pytest.fixture
def task_stream(nats_server: NatsServer) -> str:
    """The JETQ_TASKS stream, as the Rust worker provisions it at startup."""
    return create_task_stream_sync(nats_server.url)
