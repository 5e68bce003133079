"""The migration operation that creates the outbox table (PostgreSQL only)."""

from __future__ import annotations

from typing import Any, Sequence

from django.db import migrations


class RunPostgresSQL(migrations.RunSQL):  # type: ignore[misc]  # Django ships no type information
    """:class:`~django.db.migrations.operations.RunSQL` that refuses, with the fix, to run on a
    database other than PostgreSQL (the outbox needs JSONB, a trigger and NOTIFY; a
    half-created table on SQLite would only fail later, at the first enqueue)."""

    def __init__(self, sql: Sequence[str], reverse_sql: Sequence[str], **kwargs: Any) -> None:
        super().__init__(list(sql), list(reverse_sql), **kwargs)

    def _run_sql(self, schema_editor: Any, sqls: Any) -> None:
        vendor = schema_editor.connection.vendor
        if vendor != "postgresql":
            from django.core.exceptions import ImproperlyConfigured

            alias = schema_editor.connection.alias
            raise ImproperlyConfigured(
                f"jetq's outbox table needs PostgreSQL, but database {alias!r} is {vendor}: point it at "
                "PostgreSQL, or keep the jetq app's migrations off this database with a router's allow_migrate()"
            )
        super()._run_sql(schema_editor, sqls)
