"""The blocking Producer (what Django views use): same behaviour as AsyncProducer, safe across
threads, bounded waits, refuses use after close or fork."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import List

import pytest

import jetq
from jetq import ConnectError, InvalidName, NoStream, NotConnected, ProducerClosed, Producer, StreamFull
from jetq.testing import NatsServer, create_task_stream_sync, free_port, stored_tasks_sync

from .support import config_for


def test_enqueue_and_enqueue_many_block_until_acked(nats_server: NatsServer, task_stream: str) -> None:
    with Producer(config_for(nats_server)) as producer:
        task_id = producer.enqueue("emails", "send_email", {"to": "ada@example.com"}, key="welcome:1")
        again = producer.enqueue_detailed("emails", "send_email", {"to": "ada@example.com"}, key="welcome:1")
        results = producer.enqueue_many(
            [("exports", "generate_csv", {"export_id": f"e{n}", "rows": n, "row_delay_ms": 0}) for n in range(10)]
        )
    assert task_id == "welcome:1"
    assert again.duplicate and again.id == task_id
    assert all(isinstance(r, jetq.Enqueued) for r in results)
    stored = stored_tasks_sync(nats_server.url)
    assert [t.subject for t in stored] == ["jetq.task.emails.send_email"] + ["jetq.task.exports.generate_csv"] * 10
    assert [json.loads(t.payload)["rows"] for t in stored[1:]] == list(range(10))


def test_shared_between_threads(nats_server: NatsServer, task_stream: str) -> None:
    ids: List[str] = []
    lock = threading.Lock()
    with Producer(config_for(nats_server)) as producer:

        def worker(n: int) -> None:
            for i in range(10):
                task_id = producer.enqueue("work", "job", {"n": n * 100 + i})
                with lock:
                    ids.append(task_id)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a thread hung"
    assert len(set(ids)) == 80
    assert len(stored_tasks_sync(nats_server.url)) == 80


def test_typed_errors_reach_the_caller(nats_server: NatsServer) -> None:
    create_task_stream_sync(nats_server.url, max_msgs=1)
    with Producer(config_for(nats_server)) as producer:
        with pytest.raises(InvalidName):
            producer.enqueue("emails", "send.email", {})
        producer.enqueue("work", "job", {})
        with pytest.raises(StreamFull):
            producer.enqueue("work", "job", {})
        with Producer(config_for(nats_server, prefix="other")) as other:
            with pytest.raises(NoStream):
                other.enqueue("work", "job", {})


def test_close_is_idempotent_and_final(nats_server: NatsServer, task_stream: str) -> None:
    producer = Producer(config_for(nats_server))
    threads_before = threading.active_count()
    producer.close()
    producer.close()
    with pytest.raises(ProducerClosed):
        producer.enqueue("work", "job", {})
    assert not producer.is_connected
    assert threading.active_count() <= threads_before - 1, "the loop thread is gone"


def test_connect_failure_is_bounded_and_leaves_no_thread() -> None:
    threads_before = threading.active_count()
    started = time.monotonic()
    with pytest.raises(ConnectError):
        Producer(nats_url=f"nats://127.0.0.1:{free_port()}", connect_timeout=1.0)
    assert time.monotonic() - started < 5
    assert threading.active_count() == threads_before


def test_from_env(nats_server: NatsServer, task_stream: str) -> None:
    with Producer.from_env({"JETQ_NATS_URL": nats_server.url, "JETQ_REQUEST_TIMEOUT": "2s"}) as producer:
        assert producer.config.request_timeout == 2.0
        assert producer.enqueue("work", "job", {"n": 1})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_producer_inherited_through_fork_refuses_to_work(nats_server: NatsServer, task_stream: str) -> None:
    with Producer(config_for(nats_server)) as producer:
        pid = os.fork()
        if pid == 0:  # the child: report what enqueue raised through the exit code
            code = 3
            try:
                producer.enqueue("work", "job", {})
            except NotConnected as err:
                code = 0 if "another process" in str(err) else 4
            except BaseException:
                code = 5
            os._exit(code)
        deadline = time.monotonic() + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, "the forked child hung"
            time.sleep(0.05)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert producer.enqueue("work", "job", {}), "the parent's producer still works"
