"""Creates the outbox table, its index and its NOTIFY trigger: exactly
``outbox/migrations/0001_jetq_outbox.sql`` (tests/test_outbox_schema.py compares them)."""

from django.db import migrations, models

from jetq.django.operations import RunPostgresSQL
from jetq.outbox_schema import MIGRATION_0001


class Migration(migrations.Migration):  # type: ignore[misc]  # Django ships no type information
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        RunPostgresSQL(
            sql=MIGRATION_0001,
            reverse_sql=[
                "DROP TABLE IF EXISTS jetq_outbox;",
                "DROP FUNCTION IF EXISTS jetq_outbox_notify();",
            ],
            state_operations=[
                migrations.CreateModel(
                    name="OutboxMessage",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("msg_id", models.TextField()),
                        ("subject", models.TextField()),
                        ("headers", models.JSONField(default=dict)),
                        ("payload", models.BinaryField()),
                        ("created_at", models.DateTimeField()),
                        ("attempts", models.IntegerField(default=0)),
                        ("last_error", models.TextField(null=True)),
                    ],
                    options={
                        "verbose_name": "outbox message",
                        "db_table": "jetq_outbox",
                        "ordering": ["id"],
                        "managed": False,
                    },
                ),
            ],
        ),
    ]
