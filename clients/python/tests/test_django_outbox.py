"""jetq.django on a real PostgreSQL (the session's own cluster) and a real nats-server: the app's
migration creates the outbox table, ``enqueue`` writes in the view's transaction (a row per
committed task, none after a rollback, refused outside a transaction), ``enqueue_on_commit``
publishes after the commit only."""

from __future__ import annotations

import json
import logging
from typing import Iterator

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        # HOST/PORT are filled in by the django_database fixture once the cluster runs (nothing
        # connects before that).
        DATABASES={
            "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "jetq_django"},
            "lite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        },
        INSTALLED_APPS=["django.contrib.contenttypes", "jetq.django"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import connections, transaction  # noqa: E402
from django.db.migrations.state import ProjectState  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases, teardown_test_environment  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

import jetq.django  # noqa: E402
from jetq import ConfigError, InvalidName, SerializeError  # noqa: E402
from jetq.django.models import OutboxMessage  # noqa: E402
from jetq.errors import NotInTransaction, OutboxMissing  # noqa: E402
from jetq.testing import NatsServer, create_task_stream_sync, stored_tasks_sync  # noqa: E402
from jetq.testing_postgres import PostgresServer  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def django_database(postgres: PostgresServer) -> Iterator[None]:
    """Django's test database on the session's cluster, with the migrations applied (those of
    jetq.django create the outbox table)."""
    settings.DATABASES["default"].update(postgres.django_settings("jetq_django"))
    setup_test_environment()
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        yield
    finally:
        connections.close_all()
        teardown_databases(old, verbosity=0)
        teardown_test_environment()


@pytest.fixture(autouse=True)
def empty_tables() -> Iterator[None]:
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS members (email TEXT PRIMARY KEY)")
    yield
    with connections["default"].cursor() as cursor:
        cursor.execute("DELETE FROM jetq_outbox")
        cursor.execute("DELETE FROM members")


@pytest.fixture
def jetq_env(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer]:
    """The JETQ_* environment pointing at the test's nats-server (with its task stream), for
    the default producer of enqueue_on_commit."""
    create_task_stream_sync(nats_server.url)
    monkeypatch.setenv("JETQ_NATS_URL", nats_server.url)
    monkeypatch.setenv("JETQ_CONNECT_TIMEOUT", "2s")
    monkeypatch.setenv("JETQ_REQUEST_TIMEOUT", "1s")
    monkeypatch.setenv("JETQ_PUBLISH_ATTEMPTS", "2")
    jetq.django.close_default_producer()
    try:
        yield nats_server
    finally:
        jetq.django.close_default_producer()


def add_member(email: str) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO members VALUES (%s)", [email])


def members() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM members")
        return int(cursor.fetchone()[0])


def test_the_migration_created_the_canonical_table_and_the_model_reads_it() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname = 'jetq_outbox_notify'")
        assert cursor.fetchall() == [("jetq_outbox_notify",)]
    assert OutboxMessage._meta.managed is False and OutboxMessage._meta.db_table == "jetq_outbox"
    assert OutboxMessage.objects.count() == 0


def test_a_committed_transaction_holds_the_member_and_exactly_one_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JETQ_PREFIX", "shop")
    with TracerProvider().get_tracer("t").start_as_current_span("signup"):
        with transaction.atomic():
            add_member("ada@example.com")
            task_id = jetq.django.enqueue("emails", "send_email", {"to": "ada@example.com"}, key="welcome-1", max_attempts=5)
    assert task_id == "welcome-1"
    [row] = OutboxMessage.objects.all()
    assert (row.msg_id, row.subject) == ("welcome-1", "shop.task.emails.send_email")
    assert bytes(row.payload) == b'{"to":"ada@example.com"}'
    assert set(row.headers) == {"Jetq-Enqueued-At", "Jetq-Max-Attempts", "traceparent"}
    assert row.headers["Jetq-Max-Attempts"] == "5"
    assert row.attempts == 0 and row.last_error is None and row.created_at is not None
    assert members() == 1


def test_a_rolled_back_transaction_leaves_neither_member_nor_task() -> None:
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            add_member("grace@example.com")
            jetq.django.enqueue("emails", "send_email", {"to": "grace@example.com"})
            raise RuntimeError("the audit log failed")
    with transaction.atomic():
        jetq.django.enqueue("emails", "send_email", {})
        transaction.set_rollback(True)
    with transaction.atomic():
        jetq.django.enqueue("emails", "kept", {})
        try:
            with transaction.atomic():  # a savepoint: its task goes with it
                jetq.django.enqueue("emails", "dropped", {})
                raise ValueError
        except ValueError:
            pass
    assert members() == 0
    assert [row.subject for row in OutboxMessage.objects.all()] == ["jetq.task.emails.kept"]


def test_outside_a_transaction_nothing_is_written() -> None:
    with pytest.raises(NotInTransaction) as raised:
        jetq.django.enqueue("emails", "send_email", {})
    assert "transaction.atomic()" in str(raised.value) and raised.value.database == "default"
    assert OutboxMessage.objects.count() == 0


def test_bad_input_is_refused_before_writing_and_the_transaction_goes_on() -> None:
    with transaction.atomic():
        add_member("linus@example.com")
        with pytest.raises(InvalidName):
            jetq.django.enqueue("emails", "send.email", {})
        with pytest.raises(SerializeError):
            jetq.django.enqueue("emails", "send_email", {"not json": object()})
        assert members() == 1, "the transaction is still usable"
    assert OutboxMessage.objects.count() == 0 and members() == 1


def test_a_missing_table_is_a_clear_error_and_rolls_back() -> None:
    with pytest.raises(OutboxMissing) as raised:
        with transaction.atomic():
            with connections["default"].cursor() as cursor:
                cursor.execute("ALTER TABLE jetq_outbox RENAME TO jetq_outbox_elsewhere")
            jetq.django.enqueue("emails", "send_email", {})
    assert "migrate jetq" in str(raised.value)
    assert OutboxMessage.objects.count() == 0, "the rename was rolled back with the transaction"


def test_sqlite_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as raised:
        with transaction.atomic(using="lite"):
            jetq.django.enqueue("emails", "send_email", {}, using="lite")
    assert "PostgreSQL" in str(raised.value) and "sqlite" in str(raised.value)
    from importlib import import_module

    [operation] = import_module("jetq.django.migrations.0001_jetq_outbox").Migration.operations
    with connections["lite"].schema_editor() as editor:
        with pytest.raises(ImproperlyConfigured) as refused:
            operation.database_forwards("jetq", editor, ProjectState(), ProjectState())
    assert "needs PostgreSQL" in str(refused.value) and "'lite'" in str(refused.value)


def test_enqueue_on_commit_publishes_only_after_the_commit(jetq_env: NatsServer) -> None:
    with transaction.atomic():
        add_member("barbara@example.com")
        task_id = jetq.django.enqueue_on_commit("emails", "send_email", {"to": "barbara@example.com"})
        assert stored_tasks_sync(jetq_env.url) == [], "nothing is published inside the transaction"
    [task] = stored_tasks_sync(jetq_env.url)
    assert task.subject == "jetq.task.emails.send_email" and task.headers["Nats-Msg-Id"] == task_id
    assert json.loads(task.payload) == {"to": "barbara@example.com"}
    assert OutboxMessage.objects.count() == 0, "no outbox involved"


def test_enqueue_on_commit_publishes_nothing_after_a_rollback(jetq_env: NatsServer) -> None:
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            jetq.django.enqueue_on_commit("emails", "send_email", {})
            raise RuntimeError("rolled back")
    with transaction.atomic():
        jetq.django.enqueue_on_commit("emails", "send_email", {})
        transaction.set_rollback(True)
    with pytest.raises(InvalidName):
        with transaction.atomic():
            jetq.django.enqueue_on_commit("emails", "bad task", {})
    # A marker published after the rest shows the earlier ones would have arrived by now.
    with transaction.atomic():
        marker = jetq.django.enqueue_on_commit("emails", "marker", {})
    assert [task.headers["Nats-Msg-Id"] for task in stored_tasks_sync(jetq_env.url)] == [marker]


def test_enqueue_on_commit_loses_the_task_when_nats_is_down_and_says_so(
    jetq_env: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The weaker guarantee, shown: the data commits, the publish fails, the task is lost —
    logged with its id, not raised from the committed view."""
    jetq.django.default_producer()  # connected, then the server goes away
    jetq_env.kill()
    with caplog.at_level(logging.ERROR, logger="jetq"):
        with transaction.atomic():
            add_member("margaret@example.com")
            task_id = jetq.django.enqueue_on_commit("emails", "send_email", {})
    assert members() == 1
    assert any(task_id in r.getMessage() and "NOT enqueued" in r.getMessage() for r in caplog.records), caplog.text


def test_the_model_and_the_migration_agree() -> None:
    """``makemigrations`` finds nothing to add for the jetq app (it exits 1 when it would): the
    model's options match the migration's state. (Fields of an unmanaged model are not compared
    by Django; the ORM reading every column of a real row, above, checks those.)"""
    from django.core.management import call_command

    call_command("makemigrations", "jetq", "--check", "--dry-run", verbosity=0)


def test_the_migration_reverses_and_applies_again() -> None:
    """``migrate jetq zero`` drops the table and its trigger function; ``migrate jetq`` creates
    them again (the module's other tests keep working afterwards)."""
    from django.core.management import call_command

    def objects() -> tuple:
        with connections["default"].cursor() as cursor:
            cursor.execute(
                "SELECT to_regclass('jetq_outbox') IS NOT NULL, "
                "EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'jetq_outbox_notify')"
            )
            return tuple(cursor.fetchone())

    call_command("migrate", "jetq", "zero", verbosity=0)
    assert objects() == (False, False)
    call_command("migrate", "jetq", verbosity=0)
    assert objects() == (True, True)
    with transaction.atomic():
        jetq.django.enqueue("emails", "send_email", {})
    assert OutboxMessage.objects.count() == 1
