#!/usr/bin/env python3
"""Drain throughput of JetStream retention/ack strategies under `sync_interval: always` (issue #20).

Every mode runs against its own nats-server (fresh temp store, `jetstream { sync_interval: always }`),
modes are interleaved round by round, and the median of the rounds is reported. Each server is
pre-loaded with N tasks of ~200 bytes on `jetq.task.emails.send`, plus one task on
`jetq.task.other.send` after every 20 (a second queue sharing the stream, which must survive every
purge untouched). A durable pull consumer `worker-emails` filtered on `jetq.task.emails.>` is then
drained with pull requests of `--batch` messages, two kept outstanding, each message acked as it
arrives (no handler). The clock runs from the first pull to the moment the server has processed
the last ack (the last ack is sent with a reply subject, and acks of one consumer are processed in
order) and, for modes that purge, the final purge below the ack floor has returned.

Modes (see docs/DURABLE_DRAIN.md):
  wq             WorkQueue stream, explicit ack per message (jetq today)
  wq_term        same, but `+TERM` instead of `+ACK`
  (WorkQueue + AckAll is refused by the server: "workqueue stream requires explicit ack", 10098)
  wq_memcons     WorkQueue, consumer with mem_storage
  interest       Interest stream, explicit ack per message
  limits_nopurge Limits stream, explicit ack per message, never purged (ceiling; grows forever)
  limits_purge   Limits stream, explicit ack per message, purge below the ack floor every --purge-ms
  limits_ackall  Limits stream, AckAll, ack every 50th message, purge as above
  limits_memcons Limits stream, consumer mem_storage, explicit ack, purge as above

`--mixed pub|atomic` loads nothing beforehand: a second connection enqueues (one by one with 256
in flight, or atomic batches of 500) while the drain runs, and the rate is end to end.
`--count-syscalls` attaches strace to the server for the drain and prints fsync/pwrite64/renameat
counts per task (strace slows the server: read the counts, not the rates).
`--crash MODE` instead runs the crash check: drain MODE (handler throttled to --crash-rate), kill -9
the server after half the tasks, restart it on the same store, drain the rest, and count tasks lost
/ redelivered; exits 1 if a task was lost.

Usage (from the repository root):
  .tools/venv/bin/python bench/scripts/durable_drain.py --rounds 3
  .tools/venv/bin/python bench/scripts/durable_drain.py --rounds 3 --mixed atomic --modes wq,limits_purge
  .tools/venv/bin/python bench/scripts/durable_drain.py --crash limits_purge
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import nats
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

STREAM = "TASKS"
DURABLE = "worker-emails"
EMAILS = "jetq.task.emails.send"
EMAILS_FILTER = "jetq.task.emails.>"
OTHER = "jetq.task.other.send"
OTHER_EVERY = 20
ACKALL_EVERY = 50


@dataclass(frozen=True)
class Mode:
    retention: RetentionPolicy
    ack_policy: AckPolicy = AckPolicy.EXPLICIT
    ack_body: bytes = b"+ACK"
    ack_every: int = 1
    purge: bool = False
    mem_consumer: bool = False


MODES = {
    "wq": Mode(RetentionPolicy.WORK_QUEUE),
    "wq_term": Mode(RetentionPolicy.WORK_QUEUE, ack_body=b"+TERM"),
    "wq_memcons": Mode(RetentionPolicy.WORK_QUEUE, mem_consumer=True),
    "interest": Mode(RetentionPolicy.INTEREST),
    "limits_nopurge": Mode(RetentionPolicy.LIMITS),
    "limits_purge": Mode(RetentionPolicy.LIMITS, purge=True),
    "limits_ackall": Mode(RetentionPolicy.LIMITS, AckPolicy.ALL, ack_every=ACKALL_EVERY, purge=True),
    "limits_memcons": Mode(RetentionPolicy.LIMITS, purge=True, mem_consumer=True),
}


async def quiet(_err) -> None:
    """nats-py error callback: the crash check kills the server on purpose."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One nats-server with JetStream and `sync_interval: always` on a temp store."""

    def __init__(self, binary: str, store: str, port: int | None = None):
        self.binary, self.store = binary, store
        self.port = port or free_port()
        self.conf = os.path.join(store, "nats.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"listen: 127.0.0.1:{self.port}\n"
                f"jetstream {{ store_dir: {json.dumps(os.path.join(store, 'js'))}, "
                f"sync_interval: always }}\n"
            )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", self.conf],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.store, "server.log"), "a"),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"nats-server on {self.port} did not start (see {self.store}/server.log)")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def body_of(size: int) -> bytes:
    return json.dumps({"to": "someone@example.com", "pad": "x" * size})[:size].encode()


async def create(nc, mode: Mode, ack_wait: float, atomic: bool = False) -> None:
    """The task stream (jetq's settings but `mode`'s retention) and the queue's durable."""
    retention = {
        RetentionPolicy.WORK_QUEUE: "workqueue",
        RetentionPolicy.LIMITS: "limits",
        RetentionPolicy.INTEREST: "interest",
    }[mode.retention]
    config = {
        "name": STREAM,
        "subjects": ["jetq.task.>"],
        "retention": retention,
        "storage": "file",
        "discard": "new",
        "num_replicas": 1,
    }
    if atomic:
        config["allow_atomic"] = True
    resp = json.loads(
        (await nc.request(f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps(config).encode(), 10)).data
    )
    if "error" in resp:
        raise RuntimeError(f"stream create: {resp['error']}")
    await nc.jetstream().add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=DURABLE,
            filter_subject=EMAILS_FILTER,
            ack_policy=mode.ack_policy,
            ack_wait=ack_wait,
            max_ack_pending=1000,
            mem_storage=mode.mem_consumer or None,
        ),
    )


def subjects_in_order(n: int) -> list[str]:
    """N tasks of the drained queue with one of another queue after every OTHER_EVERY."""
    out = []
    for i in range(n):
        out.append(EMAILS)
        if (i + 1) % OTHER_EVERY == 0:
            out.append(OTHER)
    return out


async def load(nc, n: int, size: int) -> tuple[int, int]:
    """Publishes one by one, 256 in flight (each stored message is one sync); (emails, others)."""
    js = nc.jetstream()
    body = body_of(size)
    pending: list = []
    subjects = subjects_in_order(n)
    for subject in subjects:
        pending.append(js.publish(subject, body))
        if len(pending) >= 256:
            await asyncio.gather(*pending)
            pending.clear()
    if pending:
        await asyncio.gather(*pending)
    return n, len(subjects) - n


async def load_atomic(nc, n: int, size: int, batch: int = 500) -> tuple[int, int]:
    """Publishes atomic batches (ADR-50; one sync per batch), one batch in flight."""
    body = body_of(size)
    subjects = subjects_in_order(n)
    for start in range(0, len(subjects), batch):
        chunk = subjects[start : start + batch]
        batch_id = f"b{start}"
        for i, subject in enumerate(chunk[:-1]):
            await nc.publish(
                subject,
                body,
                headers={"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i + 1)},
            )
        reply = await nc.request(
            chunk[-1],
            body,
            timeout=30,
            headers={
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(len(chunk)),
                "Nats-Batch-Commit": "1",
            },
        )
        ack = json.loads(reply.data)
        if ack.get("batch") != batch_id or ack.get("count") != len(chunk):
            raise RuntimeError(f"atomic batch not stored: {ack}")
    return n, len(subjects) - n


async def setup(nc, mode: Mode, n: int, size: int, ack_wait: float) -> tuple[int, int]:
    """Create stream + consumer and pre-load; returns (emails, others) stored."""
    await create(nc, mode, ack_wait)
    return await load(nc, n, size)


async def ack_floor(js) -> int:
    info = await js.consumer_info(STREAM, DURABLE)
    return info.ack_floor.stream_seq


async def purge_below_floor(js) -> int:
    """Purges this queue's tasks below the consumer's ack floor; returns the floor used."""
    floor = await ack_floor(js)
    if floor > 0:
        await js.purge_stream(STREAM, seq=floor + 1, subject=EMAILS_FILTER)
    return floor


def parse_strace(text: str) -> dict[str, int]:
    """Calls per syscall from an `strace -c` summary."""
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    return counts


class Drainer:
    """Pull-and-ack loop: two pull requests of `batch` outstanding, ack as messages arrive."""

    def __init__(
        self, nc, mode: Mode, batch: int, target: int, record: bool = False, rate: float = 0
    ):
        self.nc, self.mode, self.batch, self.target = nc, mode, batch, target
        self.rate = rate  # messages/s the handler may take (0 = unthrottled)
        self.received = 0
        self.requested = 0
        self.done = asyncio.Event()
        self.half = asyncio.Event()
        self.record = record
        self.delivered: list[int] = []  # stream sequences delivered (record mode)
        self.acked: list[int] = []  # stream sequences whose ack was sent (record mode)
        self.last_reply: str | None = None
        self.inbox = nc.new_inbox()
        self.stopped = False

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(self.inbox, cb=self.on_msg)
        await self.refill()

    async def refill(self) -> None:
        while not self.stopped and self.requested - self.received < 2 * self.batch:
            req = json.dumps({"batch": self.batch, "expires": 2_000_000_000}).encode()
            await self.nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{DURABLE}", req, reply=self.inbox
            )
            self.requested += self.batch

    async def on_msg(self, msg) -> None:
        if self.stopped:
            return
        if msg.headers and msg.headers.get("Status"):
            # 408 request expired / 409: give back the credit of that request.
            pending = int(msg.headers.get("Nats-Pending-Messages", "0") or 0)
            self.requested -= pending
            await self.refill()
            return
        self.received += 1
        seq = int(msg.reply.split(".")[5]) if self.record else 0
        if self.record:
            self.delivered.append(seq)
        last = self.received >= self.target
        if last or self.received % self.mode.ack_every == 0:
            if last:
                # Reply after the server processed this ack (and every earlier one).
                self.last_reply = msg.reply
            else:
                await self.nc.publish(msg.reply, self.mode.ack_body)
            if self.record:
                self.acked.append(seq)
        if self.received * 2 >= self.target:
            self.half.set()
        if self.rate and self.received % 100 == 0:
            await asyncio.sleep(100 / self.rate)
        if last:
            self.done.set()
        else:
            await self.refill()


async def purger(js, every: float, stop: asyncio.Event, counter: list) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass
        if stop.is_set():
            return
        await purge_below_floor(js)
        counter[0] += 1


async def run_mode(binary: str, name: str, args) -> dict:
    mode = MODES[name]
    with tempfile.TemporaryDirectory(prefix=f"drain-{name}-") as store:
        server = Server(binary, store)
        await server.start()
        try:
            nc = await nats.connect(server.url, max_reconnect_attempts=0)
            js = nc.jetstream(timeout=30)
            producer = None
            if args.mixed:
                # Producer and worker at once: nothing pre-loaded, the clock includes enqueue.
                await create(nc, mode, ack_wait=30, atomic=args.mixed == "atomic")
                emails = args.n
                others = len(subjects_in_order(args.n)) - args.n
                pnc = await nats.connect(server.url, max_reconnect_attempts=0)
                loader = load_atomic if args.mixed == "atomic" else load
            else:
                emails, others = await setup(nc, mode, args.n, args.size, ack_wait=30)
            drainer = Drainer(nc, mode, args.batch, emails)
            stop, purges = asyncio.Event(), [0]
            tracer = None
            if args.count_syscalls:
                # Attach to every server thread for the drain only (slows it: count, not time).
                trace_out = os.path.join(store, "strace.txt")
                tracer = subprocess.Popen(
                    ["strace", "-f", "-c", "-p", str(server.proc.pid), "-o", trace_out,
                     "-e", "trace=fsync,fdatasync,write,pwrite64,openat,rename,renameat,unlink"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
            t0 = time.perf_counter()
            if args.mixed:
                producer = asyncio.create_task(loader(pnc, args.n, args.size))
            ptask = (
                asyncio.create_task(purger(js, args.purge_ms / 1000, stop, purges))
                if mode.purge
                else None
            )
            await drainer.start()
            await asyncio.wait_for(drainer.done.wait(), 600)
            drainer.stopped = True
            await nc.request(drainer.last_reply, mode.ack_body, timeout=30)
            if producer:
                await producer
                await pnc.close()
            if ptask:
                stop.set()
                await ptask
                await purge_below_floor(js)
            elapsed = time.perf_counter() - t0
            syscalls = None
            if tracer:
                await asyncio.sleep(0.3)  # let the consumer state flusher (<= 10/s) run once more
                tracer.send_signal(signal.SIGINT)
                tracer.wait(timeout=30)
                with open(trace_out) as f:
                    syscalls = parse_strace(f.read())
            info = await js.consumer_info(STREAM, DURABLE)
            sinfo = await js.stream_info(STREAM)
            subjects = (await js.stream_info(STREAM, subjects_filter=">")).state.subjects or {}
            await nc.close()
        finally:
            server.stop()
    ok_emails = subjects.get(EMAILS, 0)
    ok_other = subjects.get(OTHER, 0)
    expected_emails = 0 if (mode.retention != RetentionPolicy.LIMITS or mode.purge) else emails
    checks = (
        info.num_pending == 0
        and info.num_ack_pending == 0
        and ok_other == others
        and ok_emails == expected_emails
    )
    return {
        "mode": name,
        "msgs_per_s": emails / elapsed,
        "seconds": elapsed,
        "purges": purges[0],
        "stream_msgs_after": sinfo.state.messages,
        "other_queue_intact": ok_other == others,
        "checks_ok": checks,
        "syscalls": syscalls,
    }


async def crash_check(binary: str, name: str, args) -> dict:
    """Drain, kill -9 at half, restart, drain the rest; count lost and redelivered tasks."""
    mode = MODES[name]
    with tempfile.TemporaryDirectory(prefix=f"crash-{name}-") as store:
        server = Server(binary, store)
        await server.start()
        nc = await nats.connect(server.url, allow_reconnect=False, error_cb=quiet)
        js = nc.jetstream(timeout=30)
        emails, others = await setup(nc, mode, args.n, args.size, ack_wait=args.crash_ack_wait)
        # The stream sequences that belong to the emails queue.
        all_seqs = set()
        seq = 0
        for i in range(emails):
            seq += 1
            all_seqs.add(seq)
            if (i + 1) % OTHER_EVERY == 0:
                seq += 1
        first = Drainer(nc, mode, args.batch, emails, record=True, rate=args.crash_rate)
        stop, purges = asyncio.Event(), [0]
        ptask = (
            asyncio.create_task(purger(js, args.purge_ms / 1000, stop, purges))
            if mode.purge
            else None
        )
        await first.start()
        await asyncio.wait_for(first.half.wait(), 600)
        server.kill9()
        first.stopped = True
        stop.set()
        if ptask:
            try:
                await asyncio.wait_for(ptask, 5)
            except Exception:
                pass
        try:
            await nc.close()
        except Exception:
            pass
        delivered_before = set(first.delivered)
        acked_before = set(first.acked)

        server = Server(binary, store, port=server.port)
        await server.start()
        try:
            nc = await nats.connect(server.url, max_reconnect_attempts=0)
            js = nc.jetstream(timeout=30)
            info = await js.consumer_info(STREAM, DURABLE)
            floor_after_restart = info.ack_floor.stream_seq
            sinfo = await js.stream_info(STREAM)
            first_seq_after_restart = sinfo.state.first_seq
            stored = (await js.stream_info(STREAM, subjects_filter=">")).state.subjects or {}
            emails_stored_after_restart = stored.get(EMAILS, 0)
            # Drain what is left until the server has nothing pending for 2 ack waits.
            remaining = info.num_pending + info.num_ack_pending
            second = Drainer(nc, mode, args.batch, 10**9, record=True)
            await second.start()
            quiet_since = time.monotonic()
            last_count = 0
            while True:
                await asyncio.sleep(0.2)
                if second.received != last_count:
                    last_count, quiet_since = second.received, time.monotonic()
                info = await js.consumer_info(STREAM, DURABLE)
                if (
                    info.num_pending == 0
                    and info.num_ack_pending == 0
                    and time.monotonic() - quiet_since > 2 * args.crash_ack_wait
                ):
                    break
                if time.monotonic() - quiet_since > 60:
                    raise RuntimeError("crash check: drain after restart stalled")
            second.stopped = True
            await nc.flush()
            if mode.purge:
                await purge_below_floor(js)
            subjects = (await js.stream_info(STREAM, subjects_filter=">")).state.subjects or {}
            await nc.close()
        finally:
            server.stop()
    delivered_after = set(second.delivered)
    processed = acked_before | delivered_after
    lost = all_seqs - processed
    return {
        "mode": name,
        "tasks": emails,
        "killed_after_delivered": len(delivered_before),
        "acks_sent_before_kill": len(acked_before),
        "ack_floor_after_restart": floor_after_restart,
        "stream_first_seq_after_restart": first_seq_after_restart,
        "purges_before_kill": purges[0],
        "emails_stored_after_restart": emails_stored_after_restart,
        "pending_after_restart": remaining,
        "delivered_after_restart": len(second.delivered),
        "redelivered_acked": len(delivered_after & acked_before),
        "redelivered_unacked": len(delivered_after & (delivered_before - acked_before)),
        "never_delivered_before": len(delivered_after - delivered_before),
        "lost": len(lost),
        "lost_sample": sorted(lost)[:10],
        "other_queue_intact": subjects.get(OTHER, 0) == others,
        "emails_left_in_stream": subjects.get(EMAILS, 0),
    }


async def noop_purge_check(binary: str, args) -> dict:
    """Syscalls of 100 purge ticks that find nothing (the steady state of an idle purger)."""
    mode = MODES["limits_purge"]
    with tempfile.TemporaryDirectory(prefix="noop-purge-") as store:
        server = Server(binary, store)
        await server.start()
        try:
            nc = await nats.connect(server.url, max_reconnect_attempts=0)
            js = nc.jetstream(timeout=30)
            emails, _ = await setup(nc, mode, 1000, args.size, ack_wait=30)
            drainer = Drainer(nc, mode, args.batch, emails)
            await drainer.start()
            await asyncio.wait_for(drainer.done.wait(), 120)
            drainer.stopped = True
            await nc.request(drainer.last_reply, mode.ack_body, timeout=30)
            await purge_below_floor(js)
            await asyncio.sleep(0.5)
            trace_out = os.path.join(store, "strace.txt")
            tracer = subprocess.Popen(
                ["strace", "-f", "-c", "-p", str(server.proc.pid), "-o", trace_out,
                 "-e", "trace=fsync,fdatasync,write,pwrite64,openat,rename,renameat,unlink"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)
            t0 = time.perf_counter()
            for _ in range(100):
                await purge_below_floor(js)
            elapsed = time.perf_counter() - t0
            await asyncio.sleep(0.3)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            with open(trace_out) as f:
                syscalls = parse_strace(f.read())
            await nc.close()
        finally:
            server.stop()
    return {"noop_purge_ticks": 100, "seconds": round(elapsed, 3), "syscalls": syscalls}


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--server", default=os.environ.get("NATS_SERVER", ".tools/venv/bin/nats-server"))
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--purge-ms", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", default="wq,limits_purge,limits_ackall,limits_nopurge,wq_term,"
                   "wq_memcons,interest,limits_memcons")
    p.add_argument("--mixed", choices=["pub", "atomic"],
                   help="no preload: a second connection enqueues while the drain runs (one by "
                        "one, 256 in flight, or atomic batches of 500); the rate is end to end")
    p.add_argument("--count-syscalls", action="store_true",
                   help="strace the server during the drain and print fsync/write counts per task "
                        "(slows the drain: use for counts, not for rates)")
    p.add_argument("--noop-purge-check", action="store_true",
                   help="strace 100 purge ticks (consumer info + filtered purge) that find "
                        "nothing, on a drained Limits stream")
    p.add_argument("--crash", help="run the crash check for this mode instead")
    p.add_argument("--crash-ack-wait", type=float, default=2.0)
    p.add_argument("--crash-rate", type=float, default=5000,
                   help="handler rate before the kill, so acks, state flushes and purges happen")
    p.add_argument("--json", help="write all results to this file")
    args = p.parse_args()
    version = subprocess.run([args.server, "--version"], capture_output=True, text=True).stdout
    print(f"# {version.strip()}  n={args.n} size={args.size} batch={args.batch} "
          f"purge_ms={args.purge_ms} mixed={args.mixed}", flush=True)

    if args.noop_purge_check:
        print(json.dumps(await noop_purge_check(args.server, args), indent=1))
        return 0

    if args.crash:
        result = await crash_check(args.server, args.crash, args)
        print(json.dumps(result, indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        return 0 if result["lost"] == 0 else 1

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for m in modes:
            res = await run_mode(args.server, m, args)
            results[m].append(res)
            print(f"round {r + 1} {m:15s} {res['msgs_per_s']:9.0f} msgs/s "
                  f"({res['seconds']:.2f}s, purges={res['purges']}, checks_ok={res['checks_ok']})",
                  flush=True)
            if res["syscalls"] is not None:
                per = {k: round(v / args.n, 3) for k, v in sorted(res["syscalls"].items())}
                print(f"    syscalls during drain: {res['syscalls']}  per task: {per}", flush=True)
    base = statistics.median(x["msgs_per_s"] for x in results[modes[0]])
    print(f"\n| mode | median drain msgs/s | runs | vs {modes[0]} | checks |")
    print("|---|---|---|---|---|")
    for m in modes:
        rates = [x["msgs_per_s"] for x in results[m]]
        med = statistics.median(rates)
        ok = all(x["checks_ok"] for x in results[m])
        runs = ", ".join(f"{x:.0f}" for x in rates)
        print(f"| {m} | {med:.0f} | {runs} | {med / base:.2f}x | {'ok' if ok else 'FAILED'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
