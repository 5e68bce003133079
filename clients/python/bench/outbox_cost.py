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

N = 2000
with PostgresServer() as pg, NatsServer() as nats:
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        for s in MIGRATION_0001: c.execute(s)
        c.execute("CREATE TABLE members (id bigserial primary key, email text)")
    outbox = Outbox()
    def run(label, fn):
        with psycopg.connect(pg.dsn()) as conn:
            for i in range(200): fn(conn, i)  # warm-up
            conn.commit()
            t = time.perf_counter()
            for i in range(N): fn(conn, i)
            el = time.perf_counter() - t
        print(f"{label}: {el/N*1e6:.0f} us per transaction")
        return el / N
    def member_only(conn, i):
        conn.execute("INSERT INTO members (email) VALUES (%s)", [f"m{i}@example.com"]); conn.commit()
    def member_and_outbox(conn, i):
        conn.execute("INSERT INTO members (email) VALUES (%s)", [f"m{i}@example.com"])
        outbox.enqueue(conn, "emails", "send_email", {"to": f"m{i}@example.com", "subject": "Welcome", "body": "Hi"}, key=f"welcome-{i}")
        conn.commit()
    def outbox_only_no_commit(conn, i):
        outbox.enqueue(conn, "emails", "send_email", {"to": f"m{i}@example.com", "subject": "Welcome", "body": "Hi"}, key=f"w2-{i}")
    a = run("member INSERT + commit", member_only)
    b = run("member INSERT + outbox enqueue + commit", member_and_outbox)
    c = run("outbox enqueue alone (no commit, 1 transaction)", outbox_only_no_commit)
    create_task_stream_sync(nats.url)
    with Producer(Config(nats_url=nats.url)) as p:
        for i in range(200): p.enqueue("emails", "send_email", {"to": "x"})
        t = time.perf_counter()
        for i in range(N): p.enqueue("emails", "send_email", {"to": f"m{i}@example.com", "subject": "Welcome", "body": "Hi"}, key=f"p-{i}")
        d = (time.perf_counter() - t) / N
    print(f"Producer.enqueue (ack awaited): {d*1e6:.0f} us per task")
    print(f"outbox delta per transaction: {(b-a)*1e6:.0f} us")
