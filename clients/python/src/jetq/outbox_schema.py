"""The outbox table's schema (docs/PROTOCOL.md §10), as SQL statements for PostgreSQL.

:data:`MIGRATION_0001` is ``outbox/migrations/0001_jetq_outbox.sql`` of the jetq repository
(the canonical copy, which the Rust ``jetq-outbox`` crate and relay ship) split into its
statements; ``tests/test_outbox_schema.py`` compares the two so they cannot drift. The Django
migration of :mod:`jetq.django` runs these statements; other applications can run them with
their own migration tool, or the canonical file.

A later schema change gets a new constant (``MIGRATION_0002``) rather than an edit here:
databases migrated with 0001 must stay valid.
"""

from __future__ import annotations

import re
from typing import Tuple

from .errors import ConfigError

__all__ = ["DEFAULT_TABLE", "MIGRATION_0001", "validate_table", "schema_statements"]

#: The outbox table's default name; it is also the relays' NOTIFY channel.
DEFAULT_TABLE = "jetq_outbox"

#: One row per task waiting to be relayed; a statement-level trigger wakes the relays (NOTIFY
#: is delivered only when the inserting transaction commits).
MIGRATION_0001: Tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS jetq_outbox (
    id          BIGSERIAL    PRIMARY KEY,
    msg_id      TEXT         NOT NULL,
    subject     TEXT         NOT NULL,
    headers     JSONB        NOT NULL DEFAULT '{}'::jsonb,
    payload     BYTEA        NOT NULL,
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    attempts    INTEGER      NOT NULL DEFAULT 0,
    last_error  TEXT
);""",
    "CREATE INDEX IF NOT EXISTS jetq_outbox_created_at ON jetq_outbox (created_at);",
    """CREATE OR REPLACE FUNCTION jetq_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('jetq_outbox', ''); RETURN NULL; END $$;""",
    "DROP TRIGGER IF EXISTS jetq_outbox_notify ON jetq_outbox;",
    """CREATE TRIGGER jetq_outbox_notify AFTER INSERT ON jetq_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION jetq_outbox_notify();""",
)

_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def validate_table(table: str) -> str:
    """``table`` if it is a valid outbox table name (``[a-z_][a-z0-9_]{0,62}``: an unquoted
    PostgreSQL identifier, also used as the NOTIFY channel), else :class:`~jetq.errors.ConfigError`.

    >>> validate_table("jetq_outbox")
    'jetq_outbox'
    """
    if not isinstance(table, str) or _TABLE.fullmatch(table) is None:
        raise ConfigError(
            "outbox table",
            f"{table!r} is not a valid table name: 1-63 characters of a-z 0-9 _, not starting with a digit",
        )
    return table


def schema_statements(table: str = DEFAULT_TABLE) -> Tuple[str, ...]:
    """:data:`MIGRATION_0001` for an outbox table named ``table``: the index, function and
    trigger are named after it and the NOTIFY channel is ``table``, as the Rust side names them.

    >>> schema_statements("shop_outbox")[1]
    'CREATE INDEX IF NOT EXISTS shop_outbox_created_at ON shop_outbox (created_at);'
    """
    validate_table(table)
    return tuple(statement.replace(DEFAULT_TABLE, table) for statement in MIGRATION_0001)
