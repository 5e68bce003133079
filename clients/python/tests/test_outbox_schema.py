"""The outbox schema the Python side creates is the canonical one
(outbox/migrations/0001_jetq_outbox.sql, shipped by the Rust jetq-outbox crate): the statements
of jetq.outbox_schema and the Django migration, compared with the file, whitespace and comments
aside, so the two sides cannot drift."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import psycopg

from jetq.outbox_schema import MIGRATION_0001, schema_statements
from jetq.testing_postgres import PostgresServer

CANONICAL = Path(__file__).resolve().parents[3] / "outbox" / "migrations" / "0001_jetq_outbox.sql"


def normalized(sql: str) -> str:
    """SQL without ``--`` comments, with every run of whitespace one space, and none next to
    punctuation."""
    without_comments = re.sub(r"--[^\n]*", "", sql)
    collapsed = re.sub(r"\s+", " ", without_comments).strip()
    return re.sub(r"\s*([(),;])\s*", r"\1", collapsed)


def test_the_schema_statements_are_the_canonical_migration() -> None:
    assert normalized(" ".join(MIGRATION_0001)) == normalized(CANONICAL.read_text(encoding="utf-8"))


def test_the_django_migration_runs_exactly_the_canonical_statements() -> None:
    migration = importlib.import_module("jetq.django.migrations.0001_jetq_outbox").Migration
    [operation] = migration.operations
    assert tuple(operation.sql) == MIGRATION_0001
    assert normalized(" ".join(operation.sql)) == normalized(CANONICAL.read_text(encoding="utf-8"))


def test_the_normalization_still_sees_a_difference() -> None:
    canonical = normalized(CANONICAL.read_text(encoding="utf-8"))
    assert normalized(" ".join(MIGRATION_0001).replace("INTEGER", "BIGINT")) != canonical
    assert normalized(" ".join(MIGRATION_0001[:-1])) != canonical


def test_the_canonical_file_and_the_statements_create_the_same_schema(postgres: PostgresServer) -> None:
    """Run on a real server: the file (as psql runs it) and the statements give the same
    columns, index and trigger, and both are idempotent (run twice)."""
    describe = (
        "SELECT string_agg(column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, ''), '; ' "
        "ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'jetq_outbox'"
    )
    extras = (
        "SELECT (SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'jetq_outbox'), "
        "(SELECT string_agg(pg_get_triggerdef(oid), '; ') FROM pg_trigger WHERE tgname = 'jetq_outbox_notify')"
    )
    from_file = postgres.create_database("schema_from_file")
    for _ in range(2):
        postgres.psql(CANONICAL.read_text(encoding="utf-8"), from_file)
    from_statements = postgres.create_database("schema_from_statements")
    for _ in range(2):
        with psycopg.connect(postgres.dsn(from_statements)) as conn:
            for statement in schema_statements():
                conn.execute(statement)
    described = []
    for database in (from_file, from_statements):
        with psycopg.connect(postgres.dsn(database)) as conn:
            described.append((conn.execute(describe).fetchone(), conn.execute(extras).fetchone()))
    assert described[0] == described[1]
    columns = described[0][0][0]
    assert "headers jsonb NO '{}'::jsonb" in columns and "payload bytea NO" in columns
