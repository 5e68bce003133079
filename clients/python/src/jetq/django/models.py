"""The outbox table as a Django model, for reading it (admin, monitoring); writes go through
:func:`jetq.django.enqueue`.

Unmanaged: the schema is the canonical one (docs/PROTOCOL.md §10) shared with the Rust writer
and relay, created by this app's migration from :data:`jetq.outbox_schema.MIGRATION_0001`, and
Django must never alter it (``makemigrations`` ignores unmanaged models' fields).
"""

from __future__ import annotations

from django.db import models


class OutboxMessage(models.Model):  # type: ignore[misc]  # Django ships no type information
    """A task written in a committed transaction and not yet published by the relay (which
    deletes the row once JetStream acknowledged it)."""

    #: Relay order (oldest first).
    id = models.BigAutoField(primary_key=True)
    #: The task id: the idempotency key, or a generated ULID; the relay's ``Nats-Msg-Id``.
    msg_id = models.TextField()
    #: Where it is published, e.g. ``jetq.task.emails.send_email``.
    subject = models.TextField()
    #: The message's headers, ``{"Header-Name": "value"}``.
    headers = models.JSONField(default=dict)
    #: The task's arguments, the JSON bytes exactly as published.
    payload = models.BinaryField()
    #: When the row was written (the transaction's start time).
    created_at = models.DateTimeField()
    #: Failed publish attempts of the relay.
    attempts = models.IntegerField(default=0)
    #: Why the relay's last attempt failed, if it did.
    last_error = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = "jetq_outbox"
        ordering = ["id"]
        verbose_name = "outbox message"

    def __str__(self) -> str:
        return f"{self.subject} ({self.msg_id})"
