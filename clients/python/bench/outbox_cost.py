"""What the transactional outbox costs per task, against a plain enqueue (issue 23).

Runs on a throw-away PostgreSQL cluster and nats-server of its own (jetq.testing*), so the
numbers include no network hop: a transaction inserting a member row and committing, the same
with an outbox enqueue (INSERT + the NOTIFY trigger at commit), the outbox INSERT alone, and
Producer.enqueue (one publish, ack awaited). The test cluster runs with fsync off, so commit
costs are CPU only: in production the outbox adds no WAL flush of its own (it commits with the
application's writes)::

    cd clients/python && ../../.tools/venv/bin/python bench/outbox_cost.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import psycopg
from jetq import Producer, Config
from jetq.outbox import Outbox
from jetq.outbox_schema import MIGRATION_0001
from jetq.testing import NatsServer, create_task_stream_sync
from jetq.testing_postgres import PostgresServer

N = 500
ROUNDS = 7


def median_us(samples):
    return sorted(samples)[len(samples) // 2] * 1e6


with PostgresServer() as pg, NatsServer() as nats:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        for s in MIGRATION_0001:
            c.execute(s)
        c.execute("CREATE TABLE members (id bigserial primary key, email text)")
    outbox = Outbox()
    counter = iter(range(10**9))
    args = {"subject": "Welcome", "body": "Hi"}

    def member_only(conn):
        i = next(counter)
        conn.execute("INSERT INTO members (email) VALUES (%s)", [f"m{i}@example.com"])
        conn.commit()

    def member_and_outbox(conn):
        i = next(counter)
        conn.execute("INSERT INTO members (email) VALUES (%s)", [f"m{i}@example.com"])
        outbox.enqueue(conn, "emails", "send_email", {"to": f"m{i}@example.com", **args}, key=f"welcome-{i}")
        conn.commit()

    def outbox_only(conn):
        i = next(counter)
        outbox.enqueue(conn, "emails", "send_email", {"to": f"m{i}@example.com", **args}, key=f"w-{i}")

    create_task_stream_sync(nats.url)
    results = {"member INSERT + commit": [], "member INSERT + outbox enqueue + commit": [],
               "outbox enqueue alone (no commit)": [], "Producer.enqueue (ack awaited)": []}
    with psycopg.connect(pg.dsn()) as conn, Producer(Config(nats_url=nats.url)) as producer:
        def enqueue(_):
            i = next(counter)
            producer.enqueue("emails", "send_email", {"to": f"m{i}@example.com", **args}, key=f"p-{i}")

        variants = list(zip(results, [member_only, member_and_outbox, outbox_only, enqueue]))
        for round_ in range(ROUNDS + 1):  # rounds interleave the variants; round 0 warms up
            for label, fn in variants:
                started = time.perf_counter()
                for _ in range(N):
                    fn(conn)
                conn.commit()
                if round_:
                    results[label].append((time.perf_counter() - started) / N)
    for label, samples in results.items():
        print(f"{label}: {median_us(samples):.0f} us per task (median of {ROUNDS} rounds of {N})")
    delta = median_us(results["member INSERT + outbox enqueue + commit"]) - median_us(results["member INSERT + commit"])
    print(f"outbox delta per transaction: {delta:.0f} us")
