"""Chord results by reference from Python (docs/PROTOCOL.md §13, 1.9): ``chord_result`` returns
an inline result as is and reads a ``result_ref`` from ``<PREFIX>_RESULTS`` (written here with
nats-py's object store, as a Rust worker lays it out), and fails with ``ChordResultError`` for a
missing object."""

from __future__ import annotations

import json

import nats
import pytest

from jetq import AsyncProducer
from jetq import workflows as wf
from jetq.testing import NatsServer
from jetq.workflow_results import ChordResultError, result_object_name, results_bucket
from jetq.protocol import Subjects

from .support import config_for, within


async def test_chord_result_reads_inline_and_stored_results(nats_server: NatsServer) -> None:
    nc = await within("connect", nats.connect(nats_server.url, allow_reconnect=False))
    producer = await within("producer", AsyncProducer.connect(config_for(nats_server)))
    try:
        js = nc.jetstream()
        store = await js.create_object_store(results_bucket(Subjects("jetq")))
        large = {"csv": "x" * (300 * 1024), "chunk": 3}
        name = result_object_name("export-42", "signup:ada@example.com")
        await store.put(name, json.dumps(large, separators=(",", ":")).encode())
        entry = {"id": "signup:ada@example.com", "outcome": "succeeded", "result_ref": name}
        assert await within("stored result", wf.chord_result(producer, entry)) == large
        inline = {"id": "m2", "outcome": "succeeded", "result": {"n": 2}}
        assert await wf.chord_result(producer, inline) == {"n": 2}
        assert await wf.chord_result(producer, {"id": "m3", "outcome": "dead"}) is None
        with pytest.raises(ChordResultError):
            await wf.chord_result(producer, {"id": "m4", "outcome": "succeeded", "result_ref": "export-42/missing"})
    finally:
        await producer.close()
        await nc.close()
