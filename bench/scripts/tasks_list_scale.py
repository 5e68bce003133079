"""`jetq tasks list` and `jetq cancel` at scale (issue #24): N pending tasks (default 100,000,
enqueued with the Python client against a fresh nats-server), the median time of a 100-task page
from the start, the middle and the end of the queue, and of a search by id over all of them.
Run: N=100000 .tools/venv/bin/python bench/scripts/tasks_list_scale.py (JETQ_BIN: the jetq binary)."""
import asyncio, json, os, subprocess, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python", "src"))
from jetq import AsyncProducer
from jetq.config import Config
from jetq.testing import NatsServer, create_task_stream

N = int(os.environ.get("N", "100000"))
JETQ = os.environ.get("JETQ_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "jetq"))

def jetq(url, *args):
    env = {"JETQ_NATS_URL": url, "PATH": "/usr/bin:/bin"}
    t = time.monotonic()
    out = subprocess.run([JETQ, *args], env=env, capture_output=True, text=True, timeout=120)
    return time.monotonic() - t, out

async def main():
    server = NatsServer()
    try:
        await create_task_stream(server.url)
        producer = await AsyncProducer.connect(Config(nats_url=server.url))
        t = time.monotonic()
        for start in range(0, N, 10000):
            outcomes = await producer.enqueue_many([("work", "job", {"n": i}) for i in range(start, min(N, start + 10000))], window=512)
            assert all(not isinstance(o, Exception) for o in outcomes)
        print(f"enqueued {N} in {time.monotonic() - t:.1f}s", flush=True)
        await producer.close()
        # Warm-up (process start), then timed pages.
        base, _ = jetq(server.url, "--version")
        rows = []
        for label, extra in [("first page", []), ("page at 50%", ["--after", str(N // 2)]), ("page at 99%", ["--after", str(N - 200)])]:
            times = []
            for _ in range(5):
                took, out = jetq(server.url, "tasks", "list", "--state", "pending", "--queue", "work", "--limit", "100", "--json", *extra)
                assert out.returncode == 0, out.stderr
                page = json.loads(out.stdout)
                assert len(page["tasks"]) == 100, len(page["tasks"])
                times.append(took)
            times.sort()
            rows.append((label, times[2], base))
        for label, median, base in rows:
            print(f"{label}: median {median*1000:.0f} ms per `jetq tasks list --limit 100` run (process start ~{base*1000:.0f} ms)")
        took, out = jetq(server.url, "cancel", "does-not-exist", "--queue", "work", "--yes")
        print(f"cancel search of an unknown id over {N} pending: {took:.2f}s exit {out.returncode}")
    finally:
        server.stop()

asyncio.run(main())
