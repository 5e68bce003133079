#!/usr/bin/env python3
"""How long nats-server takes to answer an atomic batch of N messages, against a lone publish
(issue #20, session 10: why the producer's group commit decides from measurements).

For each fsync setting a fresh nats-server (temp store, the task stream's shape: WorkQueue, file
storage, one replica, `allow_atomic`) answers `--count` publishes of each kind, one at a time and
awaited: a lone request, and atomic batches of 2, 3, 5, 10 and 50 messages of ~200 bytes (every
message but the last published without a reply, the last with `Nats-Batch-Commit: 1`, as
producer/src/producer/atomic.rs sends them). Prints p50/p90/p99 of the time to the answer.

On a one-replica file stream the server stages every atomic batch in a file store of its own,
created and deleted per batch (nats-server `newBatchStore` in server/jetstream_batching.go), so a
batch has a fixed cost whatever its size and the fsync setting.

Usage (from the repository root):
  .tools/venv/bin/python bench/scripts/batch_commit_latency.py
  .tools/venv/bin/python bench/scripts/batch_commit_latency.py --sync default --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import tempfile
import time

import nats

SIZES = (1, 2, 3, 5, 10, 50)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def quiet(_err: Exception) -> None:
    """Connection attempts before the server listens are expected: no traceback."""


async def connect_when_up(url: str, limit: float = 10.0) -> nats.NATS:
    deadline = time.monotonic() + limit
    while True:
        try:
            return await nats.connect(
                url, allow_reconnect=False, connect_timeout=1, error_cb=quiet
            )
        except Exception:
            if time.monotonic() > deadline:
                raise SystemExit(f"nats-server at {url} did not come up within {limit}s")
            await asyncio.sleep(0.05)


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


async def measure(server_bin: str, sync: str, count: int) -> None:
    with tempfile.TemporaryDirectory() as store:
        port = free_port()
        conf = os.path.join(store, "server.conf")
        sync_line = ", sync_interval: always" if sync == "always" else ""
        with open(conf, "w") as f:
            f.write(f'port: {port}\njetstream {{ store_dir: "{store}"{sync_line} }}\n')
        server = subprocess.Popen([server_bin, "-c", conf], stderr=subprocess.DEVNULL)
        try:
            nc = await connect_when_up(f"nats://127.0.0.1:{port}")
            config = {
                "name": "T",
                "subjects": ["t.>"],
                "retention": "workqueue",
                "storage": "file",
                "num_replicas": 1,
                "allow_atomic": True,
            }
            created = await nc.request("$JS.API.STREAM.CREATE.T", json.dumps(config).encode())
            if b'"error"' in created.data:
                raise SystemExit(f"cannot create the stream: {created.data!r}")
            payload = b"x" * 200
            for size in SIZES:
                took = []
                for i in range(count):
                    started = time.perf_counter()
                    if size == 1:
                        answer = await nc.request("t.a", payload, timeout=5)
                    else:
                        batch = f"b{size}-{i}"
                        for seq in range(1, size):
                            headers = {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(seq)}
                            await nc.publish("t.a", payload, headers=headers)
                        headers = {
                            "Nats-Batch-Id": batch,
                            "Nats-Batch-Sequence": str(size),
                            "Nats-Batch-Commit": "1",
                        }
                        answer = await nc.request("t.a", payload, timeout=5, headers=headers)
                    took.append((time.perf_counter() - started) * 1000)
                    if b'"error"' in answer.data:
                        raise SystemExit(f"refused: {answer.data!r}")
                took.sort()
                kind = "lone publish" if size == 1 else f"batch of {size}"
                print(
                    f"sync={sync:7} {kind:14} p50 {percentile(took, 0.5):6.2f} ms"
                    f"  p90 {percentile(took, 0.9):6.2f} ms  p99 {percentile(took, 0.99):6.2f} ms"
                )
            await nc.close()
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--server", default=os.path.join(repo, ".tools/venv/bin/nats-server"))
    parser.add_argument("--sync", choices=["default", "always", "both"], default="both")
    parser.add_argument("--count", type=int, default=300, help="answers timed per kind")
    args = parser.parse_args()
    syncs = ["default", "always"] if args.sync == "both" else [args.sync]
    for sync in syncs:
        asyncio.run(measure(args.server, sync, args.count))


if __name__ == "__main__":
    main()
