#!/usr/bin/env python3
"""Is a purge below the ack floor safe? (issue #20, docs/DURABLE_DRAIN.md)

A purge "below the ack floor" is only safe if the floor never passes a task that still needs
something done to it. The one such task is a task whose `max_deliver` was spent without a final
ack: jetq's sweeper reads it by sequence (after the MAX_DELIVERIES advisory) and moves it to
dead letters. This script shows, on a WorkQueue and on a Limits stream, where the floor is:

1. 5 tasks, max_deliver 2, ack_wait 1 s; task #2 is NAK'd on both deliveries, the others acked;
2. 5 more tasks, all acked (the queue keeps flowing);
3. task #2 deleted (as the sweeper would), 5 more acked.

On the Limits stream two purge checks follow:

4. stranded task: a fresh stream where task #2 runs out of deliveries and more tasks are acked
   until the floor passes it; a naive purge below the floor deletes it (the sweeper would then
   find nothing), the clamped purge (`seq` = lowest unswept advisory) keeps it;
5. slow task: task #3 is held unacked (progress heartbeats) while the others are acked; a purge
   below the floor keeps it, and after its ack the next purge empties the queue.

Usage (from the repository root):
  .tools/venv/bin/python bench/scripts/ackfloor_max_deliver.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time

import nats
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from durable_drain import Server  # noqa: E402

ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.T.>"


async def run(binary: str, retention: RetentionPolicy) -> None:
    with tempfile.TemporaryDirectory(prefix="ackfloor-") as store:
        server = Server(binary, store)
        await server.start()
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await js.add_stream(
                StreamConfig(name="T", subjects=["jetq.task.>"], retention=retention,
                             storage=StorageType.FILE)
            )
            await js.add_stream(
                StreamConfig(name="ADV", subjects=[ADVISORY], storage=StorageType.FILE)
            )
            await js.add_consumer(
                "T",
                ConsumerConfig(durable_name="w", filter_subject="jetq.task.q.>",
                               ack_policy=AckPolicy.EXPLICIT, ack_wait=1, max_deliver=2),
            )
            sub = await js.pull_subscribe_bind("w", "T")

            async def state(step: str) -> None:
                info = await js.consumer_info("T", "w")
                stream = await js.stream_info("T")
                adv = await js.stream_info("ADV")
                print(f"  {step:40s} ack_floor={info.ack_floor.stream_seq:<3} "
                      f"num_pending={info.num_pending} num_ack_pending={info.num_ack_pending} "
                      f"stream_msgs={stream.state.messages} advisories={adv.state.messages}")

            for _ in range(5):
                await js.publish("jetq.task.q.t", b"x")
            deliveries = []
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                try:
                    msgs = await sub.fetch(10, timeout=1)
                except Exception:
                    continue
                for m in msgs:
                    deliveries.append((m.metadata.sequence.stream, m.metadata.num_delivered))
                    if m.metadata.sequence.stream == 2:
                        await m.nak()
                    else:
                        await m.ack_sync()
            print(f"{retention.value}: deliveries (seq, n) {deliveries}")
            await state("1. task 2 exhausted, others acked")

            async def five_more(step: str) -> None:
                for _ in range(5):
                    await js.publish("jetq.task.q.t", b"x")
                got = 0
                while got < 5:
                    for m in await sub.fetch(5 - got, timeout=2):
                        got += 1
                        await m.ack_sync()
                await state(step)

            await five_more("2. five more acked")
            await js.delete_msg("T", 2)
            await five_more("3. task 2 deleted, five more acked")
            await nc.close()
        finally:
            server.stop()


async def stored(js, seq: int) -> bool:
    try:
        await js.get_msg("T", seq)
        return True
    except nats.js.errors.NotFoundError:
        return False


async def purge_checks(binary: str, clamp: bool) -> None:
    """Step 4: a stranded task below the floor, purged naively or with the advisory clamp."""
    with tempfile.TemporaryDirectory(prefix="ackfloor-purge-") as store:
        server = Server(binary, store)
        await server.start()
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="T", subjects=["jetq.task.>"],
                                             storage=StorageType.FILE))
            await js.add_stream(StreamConfig(name="ADV", subjects=[ADVISORY],
                                             storage=StorageType.FILE))
            await js.add_consumer("T", ConsumerConfig(
                durable_name="w", filter_subject="jetq.task.q.>",
                ack_policy=AckPolicy.EXPLICIT, ack_wait=1, max_deliver=2))
            sub = await js.pull_subscribe_bind("w", "T")
            for _ in range(5):
                await js.publish("jetq.task.q.t", b"x")
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                try:
                    msgs = await sub.fetch(10, timeout=1)
                except Exception:
                    continue
                for m in msgs:
                    if m.metadata.sequence.stream == 2:
                        await m.nak()
                    else:
                        await m.ack_sync()
            for _ in range(5):
                await js.publish("jetq.task.q.t", b"x")
            got = 0
            while got < 5:
                for m in await sub.fetch(5 - got, timeout=2):
                    got += 1
                    await m.ack_sync()
            floor = (await js.consumer_info("T", "w")).ack_floor.stream_seq
            point = floor + 1
            if clamp:
                adv = await js.get_last_msg("ADV", ADVISORY.replace(">", "w"))
                unswept = json.loads(adv.data)["stream_seq"]
                point = min(point, unswept)
            await js.purge_stream("T", seq=point, subject="jetq.task.q.>")
            kind = "clamped" if clamp else "naive"
            print(f"  4. {kind:7s} purge: floor={floor} purge seq<{point}: stranded task 2 "
                  f"still stored = {await stored(js, 2)}")
            await nc.close()
        finally:
            server.stop()


async def slow_task_check(binary: str) -> None:
    """Step 5: a task held unacked is never purged."""
    with tempfile.TemporaryDirectory(prefix="ackfloor-slow-") as store:
        server = Server(binary, store)
        await server.start()
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="T", subjects=["jetq.task.>"],
                                             storage=StorageType.FILE))
            await js.add_consumer("T", ConsumerConfig(
                durable_name="w", filter_subject="jetq.task.q.>",
                ack_policy=AckPolicy.EXPLICIT, ack_wait=2))
            sub = await js.pull_subscribe_bind("w", "T")
            for _ in range(10):
                await js.publish("jetq.task.q.t", b"x")
            held = None
            got = 0
            while got < 10:
                for m in await sub.fetch(10 - got, timeout=2):
                    got += 1
                    if m.metadata.sequence.stream == 3:
                        held = m
                    else:
                        await m.ack_sync()
            for _ in range(3):  # outlive ack_wait twice over with progress heartbeats
                await held.in_progress()
                await asyncio.sleep(1.0)
            floor = (await js.consumer_info("T", "w")).ack_floor.stream_seq
            await js.purge_stream("T", seq=floor + 1, subject="jetq.task.q.>")
            left = (await js.stream_info("T")).state.messages
            print(f"  5. slow task held 3 s: floor={floor}, after purge: task 3 stored = "
                  f"{await stored(js, 3)}, stream messages = {left}")
            await held.ack_sync()
            floor = (await js.consumer_info("T", "w")).ack_floor.stream_seq
            await js.purge_stream("T", seq=floor + 1, subject="jetq.task.q.>")
            left = (await js.stream_info("T")).state.messages
            print(f"     after its ack: floor={floor}, after purge: stream messages = {left}")
            await nc.close()
        finally:
            server.stop()


async def main() -> None:
    binary = os.environ.get("NATS_SERVER", ".tools/venv/bin/nats-server")
    for retention in (RetentionPolicy.WORK_QUEUE, RetentionPolicy.LIMITS):
        await run(binary, retention)
    await purge_checks(binary, clamp=False)
    await purge_checks(binary, clamp=True)
    await slow_task_check(binary)


if __name__ == "__main__":
    asyncio.run(main())
