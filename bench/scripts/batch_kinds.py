#!/usr/bin/env python3
"""Atomic batches, fast batches and lone publishes on one nats-server (issue #20, session 10).

Issue 20 asked to measure nats-server 2.14's fast (non-atomic) batch publish and choose with
numbers. For each fsync setting a fresh nats-server (temp store; a WorkQueue file stream with
`allow_atomic` and `allow_batched`) is given, from one nats-py connection:

- latency: 200 rounds of k = 2 and k = 10 messages of ~200 bytes, one round at a time, as an
  atomic batch (headers Nats-Batch-Id / -Sequence / -Commit, the commit answered), as a fast
  batch (each message's reply subject `<prefix>.<id>.<flow>.<gap>.<seq>.<op>.$FI`, the commit's
  PubAck awaited; nats-server server/stream.go `getFastBatch`), and as lone requests with all
  k in flight; p50 and p90 of the round;
- throughput: 20,000 messages in batches of 1,000 (4 batches in flight) for the two batch kinds,
  and as lone requests with 256 in flight (nats-py's request path limits this last row: read
  it against jetq-bench's raw rows, not as the server's limit).

Usage (from the repository root):
  .tools/venv/bin/python bench/scripts/batch_kinds.py            # default fsync, then always
  .tools/venv/bin/python bench/scripts/batch_kinds.py always
"""
import asyncio, json, os, socket, subprocess, sys, tempfile, time
import nats

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

async def quiet(_err):
    """Connection attempts before the server listens are expected: no traceback."""


async def up(url):
    for _ in range(200):
        try: return await nats.connect(url, allow_reconnect=False, error_cb=quiet)
        except Exception: await asyncio.sleep(0.05)
    raise SystemExit("no server")

async def run(sync, n_total, batch):
    d = tempfile.mkdtemp(); port = free_port(); conf = os.path.join(d, "s.conf")
    extra = ", sync_interval: always" if sync == "always" else ""
    open(conf, "w").write(f'port: {port}\njetstream {{ store_dir: "{d}"{extra} }}\n')
    srv = subprocess.Popen([os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".tools/venv/bin/nats-server"), "-c", conf], stderr=subprocess.DEVNULL)
    nc = await up(f"nats://127.0.0.1:{port}")
    cfg = {"name": "T", "subjects": ["t.>"], "retention": "workqueue", "storage": "file", "allow_atomic": True, "allow_batched": True}
    r = await nc.request("$JS.API.STREAM.CREATE.T", json.dumps(cfg).encode())
    assert b'"error"' not in r.data, r.data
    payload = b"x" * 200
    answers = {}
    async def on_reply(msg):
        fut = answers.get(msg.subject)
        if fut is not None and not fut.done():
            d = json.loads(msg.data)
            if d.get("type") in ("ack", "gap"):  # flow control / gap: not the final answer
                if d.get("type") == "gap": print("GAP", d)
                return
            fut.set_result(d)
    await nc.subscribe("fb.>", cb=on_reply)
    await nc.subscribe("ab.>", cb=on_reply)
    await nc.flush()
    counter = [0]
    def mid():
        counter[0] += 1; return str(counter[0])

    async def fast(k, tag):
        # reply: <prefix>.<id>.<flow>.<gap>.<seq>.<op>.$FI ; final PubAck comes to the commit's reply
        loop = asyncio.get_running_loop()
        commit_reply = f"fb.{tag}.500.fail.{k}.2.$FI"
        fut = loop.create_future(); answers[commit_reply] = fut
        for s in range(1, k + 1):
            op = 0 if s == 1 else (2 if s == k else 1)
            await nc.publish("t.a", payload, reply=f"fb.{tag}.500.fail.{s}.{op}.$FI", headers={"Nats-Msg-Id": mid()})
        a = await asyncio.wait_for(fut, 10); del answers[commit_reply]
        assert "error" not in a, a
        assert a.get("count") == k, a
    async def atomic(k, tag):
        loop = asyncio.get_running_loop(); inbox = f"ab.{tag}"
        fut = loop.create_future(); answers[inbox] = fut
        for s in range(1, k):
            await nc.publish("t.a", payload, headers={"Nats-Batch-Id": tag, "Nats-Batch-Sequence": str(s), "Nats-Msg-Id": mid()})
        await nc.publish("t.a", payload, reply=inbox, headers={"Nats-Batch-Id": tag, "Nats-Batch-Sequence": str(k), "Nats-Batch-Commit": "1", "Nats-Msg-Id": mid()})
        a = await asyncio.wait_for(fut, 10); del answers[inbox]
        assert "error" not in a, a
    async def lone_pipelined(k, tag):
        sem = asyncio.Semaphore(256)
        async def one():
            async with sem:
                r = await nc.request("t.a", payload, timeout=10, headers={"Nats-Msg-Id": mid()})
                assert b"error" not in r.data, r.data
        await asyncio.gather(*(one() for _ in range(k)))

    # latency: one batch of k at a time
    for k in (2, 10):
        for name, fn in (("atomic", atomic), ("fast", fast), ("lone-pipelined", lone_pipelined)):
            lat = []
            for i in range(200):
                t = time.perf_counter(); await fn(k, f"l{name}{k}x{i}"); lat.append((time.perf_counter() - t) * 1000)
            lat.sort()
            print(f"sync={sync:7} latency k={k:3} {name:15} p50 {lat[100]:6.2f} ms p90 {lat[180]:6.2f} ms")
    # throughput: n_total in batches of `batch`, one batch at a time (atomic: 4 in flight)
    for name, fn in (("atomic", atomic), ("fast", fast), ("lone-pipelined", lone_pipelined)):
        t = time.perf_counter()
        if name == "lone-pipelined":
            await fn(n_total, "x")
        else:
            sem = asyncio.Semaphore(4)
            async def b(i):
                async with sem: await fn(batch, f"t{name}{i}")
            await asyncio.gather(*(b(i) for i in range(n_total // batch)))
        el = time.perf_counter() - t
        print(f"sync={sync:7} throughput {name:15} {n_total/el:9.0f} msgs/s (batches of {batch}, 4 in flight)")
    await nc.close(); srv.terminate(); srv.wait()

for sync in sys.argv[1:] or ["default", "always"]:
    asyncio.run(run(sync, 20000, 1000))
