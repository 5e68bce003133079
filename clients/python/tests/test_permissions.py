"""The Python producer as the least-privilege ``producer`` user of k8s/nats/permissions.conf (the
file the Kubernetes deployment ships, also enforced on the Rust side by tests/tests/permissions.rs):
everything a web app does — enqueue, delayed enqueue, tracked enqueue, status, wait, watch,
cancel, artifacts — works with exactly those rights, with ``JETQ_PROVISION=false``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import AsyncIterator, Iterator

import nats
import pytest

import jetq
from jetq import AsyncProducer, TaskState
from jetq.testing import NatsServer, stored_tasks

from .support import config_for, within

PERMISSIONS = Path(__file__).resolve().parents[3] / "k8s" / "nats" / "permissions.conf"
# Every password variable the file refers to (a user added there needs no change here).
PASSWORDS = {
    name: f"pw-{name.lower()}"
    for name in sorted(set(re.findall(r"\$(JETQ_[A-Z_]+_PASSWORD)", PERMISSIONS.read_text())))
}


@pytest.fixture
def secured_server() -> Iterator[NatsServer]:
    variables = "\n".join(f'{name}: "{value}"' for name, value in PASSWORDS.items())
    server = NatsServer(extra_config=f"{variables}\n{PERMISSIONS.read_text(encoding='utf-8')}")
    try:
        yield server
    finally:
        server.stop()


def url_as(server: NatsServer, user: str) -> str:
    password = PASSWORDS[f"JETQ_{user.upper().replace('-', '_')}_PASSWORD"]
    return f"nats://{user}:{password}@127.0.0.1:{server.port}"


@pytest.fixture
async def provisioned(secured_server: NatsServer) -> AsyncIterator[NatsServer]:
    """What jetq-provision (the admin user) sets up: the task and delayed streams, the status
    bucket and the artifact store."""
    from jetq.testing import create_task_stream

    await within("task stream", create_task_stream(url_as(secured_server, "admin")))
    admin = await within("admin", AsyncProducer.connect(config_for(secured_server, nats_url=url_as(secured_server, "admin"))))
    try:
        await within("delayed stream", admin.enqueue("emails", "send_email", {}, delay=3600, key="provision-delayed"))
        await within("status stores", admin.status("provision"))
        nc = await nats.connect(url_as(secured_server, "admin"))
        try:
            store = await nc.jetstream().object_store("JETQ_ARTIFACTS")
            await store.put("export-1/export.csv", b"row,customer,amount_cents\n1,customer-0001,7919\n")
        finally:
            await nc.close()
    finally:
        await admin.close()
    yield secured_server


async def test_the_producer_user_can_do_everything_a_web_app_needs(provisioned: NatsServer) -> None:
    config = config_for(provisioned, nats_url=url_as(provisioned, "producer"), provision=False)
    producer = await within("connect", AsyncProducer.connect(config))
    try:
        plain = await within("enqueue", producer.enqueue_detailed("emails", "send_email", {"to": "a@example.com"}))
        assert plain.stream == "JETQ_TASKS"
        delayed = await within("delayed", producer.enqueue_detailed("emails", "send_email", {}, delay=60))
        assert delayed.stream == "JETQ_DELAYED"
        tracked = await within("tracked", producer.enqueue_detailed("exports", "generate_csv", {"rows": 1}, track_status=True))
        status = await within("status", producer.status(tracked.id))
        assert status is not None and status.state is TaskState.QUEUED and status.sequence == tracked.sequence

        async def first_seen() -> TaskState:
            async for update in producer.watch(tracked.id):
                return update.state
            raise AssertionError("the watch ended without a record")

        assert await within("watch", first_seen()) is TaskState.QUEUED
        with pytest.raises(jetq.WaitTimeout):
            await within("wait", producer.wait(tracked.id, 0.5))
        assert (await within("cancel", producer.cancel(tracked.id))).cancelled
        assert (await within("wait", producer.wait(tracked.id, 10))).state is TaskState.CANCELLED
        csv = await within("artifact", producer.artifact("export-1", "export.csv"))
        assert csv.startswith(b"row,customer,amount_cents\n")
        with pytest.raises(jetq.ArtifactNotFound):
            await within("artifact", producer.artifact("export-2", "export.csv"))
    finally:
        await producer.close()
    stored = await stored_tasks(url_as(provisioned, "admin"))
    assert [t.headers["Nats-Msg-Id"] for t in stored] == [plain.id, tracked.id]


async def test_the_producer_user_cannot_create_what_is_missing(secured_server: NatsServer) -> None:
    from jetq.testing import create_task_stream

    await within("task stream", create_task_stream(url_as(secured_server, "admin")))
    config = config_for(secured_server, nats_url=url_as(secured_server, "producer"), provision=False, request_timeout=1.0)
    producer = await within("connect", AsyncProducer.connect(config))
    try:
        # No delayed stream and no right to create it: the publish's own error, nothing else.
        with pytest.raises(jetq.NoStream):
            await within("delayed", producer.enqueue("emails", "send_email", {}, delay=60))
        # No status bucket: the tracked task is still queued; reading says why there is no record.
        task_id = await within("tracked", producer.enqueue("exports", "generate_csv", {}, track_status=True))
        with pytest.raises(jetq.StatusUnavailable):
            await within("status", producer.status(task_id))
    finally:
        await producer.close()
    assert len(await stored_tasks(url_as(secured_server, "admin"))) == 1


async def test_the_producer_user_starts_and_reads_batches_and_chains(provisioned: NatsServer) -> None:
    """Batches and chains (docs/WORKFLOWS.md "Kubernetes"): the producer user writes and reads
    JETQ_BATCHES (records, markers listed by a watch) and reads the workers' presence records
    (a member a live worker runs counts as running)."""
    import json

    from jetq import workflows as wf
    from jetq.protocol import format_timestamp

    admin = await within("admin", AsyncProducer.connect(config_for(provisioned, nats_url=url_as(provisioned, "admin"))))
    try:
        await within("workflow bucket", wf._store(admin))  # as jetq-provision creates it
    finally:
        await admin.close()
    config = config_for(provisioned, nats_url=url_as(provisioned, "producer"), provision=False)
    producer = await within("connect", AsyncProducer.connect(config))
    try:
        batch = wf.Batch(producer, id="py-perm", skip_callback_check=True)
        batch.add("emails", "send_email", {"to": "a@example.com"}, key="py-perm-1")
        batch.add("emails", "send_email", {"to": "b@example.com"}, key="py-perm-2")
        batch.on_complete("exports", "generate_csv", {"rows": 1})
        await within("enqueue a batch", batch.enqueue())
        await within("start a chain", wf.enqueue_chain(producer, wf.Chain("py-perm-chain").then("emails", "send_email", {})))
        chain = await within("chain status", wf.chain_status(producer, "py-perm-chain"))
        assert chain is not None and chain.state == "running"

        # A worker's presence record listing member 1 as running (written as a worker would).
        nc = await nats.connect(url_as(provisioned, "admin"))
        try:
            js = nc.jetstream()
            from nats.js.api import KeyValueConfig

            # As jetq-provision creates it (direct gets allowed).
            presence = await js.create_key_value(KeyValueConfig(bucket="JETQ_WORKERS", history=1, direct=True))
            now = format_timestamp()
            record = {
                "id": "h-1-01J9ZQ5W3V7ZB4M8K2N6P0R1S3", "host": "h", "pid": 1, "version": "0.1.0", "prefix": "jetq",
                "queues": ["emails"], "concurrency": 4, "started_at": now, "heartbeat_at": now,
                "running": [{"id": "py-perm-1", "queue": "emails", "task": "send_email", "started_at": now, "attempt": 1, "batch": "py-perm"}],
                "running_count": 1,
            }
            await presence.put(record["id"], json.dumps(record).encode())
        finally:
            await nc.close()
        status = await within("batch status", wf.batch_status(producer, "py-perm"))
        assert status is not None
        assert (status.total, status.pending, status.running, status.queued) == (2, 2, 1, 1)
    finally:
        await producer.close()
