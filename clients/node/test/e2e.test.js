// End to end, as a third party would run it: a real nats-server, the Rust example worker
// (JETQ_TEST_EXAMPLE_WORKER_BIN, built by scripts/test.sh) and this producer. The welcome email
// enqueued by the Express example's route is sent by the Rust worker to an SMTP sink; a batch
// and a tracked task's status read go the same way; a type the worker publishes as tracked in
// the task-type catalog is tracked without asking; a delayed task lands in the delayed stream.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Producer, WaitTimeout } from '../src/index.js';
import { app } from '../examples/signup.js';
import { startSmtpSink } from './smtp-sink.js';
import { freePort, natsServerBinary, startNatsServer, within } from './support.js';

const WORKER = process.env.JETQ_TEST_EXAMPLE_WORKER_BIN;
const skip = !natsServerBinary() ? 'JETQ_TEST_NATS_SERVER is not set'
  : !WORKER ? 'JETQ_TEST_EXAMPLE_WORKER_BIN is not set (scripts/test.sh builds it)' : false;

async function startWorker(natsUrl, smtpPort) {
  const healthPort = await freePort();
  const child = spawn(WORKER, [], {
    env: {
      ...process.env,
      JETQ_NATS_URL: natsUrl,
      JETQ_HEALTH_LISTEN: `127.0.0.1:${healthPort}`,
      JETQ_FETCH_EXPIRES: '500ms',
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(smtpPort),
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let logs = '';
  child.stdout.on('data', (c) => { logs += c; });
  child.stderr.on('data', (c) => { logs += c; });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the worker exited with ${child.exitCode}:\n${logs}`);
    try {
      const res = await fetch(`http://127.0.0.1:${healthPort}/readyz`);
      if (res.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`the worker was not ready within 30 s:\n${logs}`); }
    await new Promise((r) => { setTimeout(r, 100); });
  }
  return {
    logs: () => logs,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await within(20_000, 'worker exit', exited).catch(() => child.kill('SIGKILL'));
    },
  };
}

describe('the Rust example worker runs what the Node producer enqueues', { skip }, () => {
  let server; let smtp; let worker; let producer; let http; let base;
  before(async () => {
    server = await startNatsServer();
    smtp = await startSmtpSink();
    worker = await startWorker(server.url, smtp.port);
    producer = await Producer.connect({ servers: server.url });
    http = app(producer).listen(0, '127.0.0.1');
    await new Promise((resolve) => http.once('listening', resolve));
    base = `http://127.0.0.1:${http.address().port}`;
  });
  after(async () => {
    await new Promise((resolve) => (http ? http.close(resolve) : resolve()));
    await producer?.close();
    await worker?.stop();
    await smtp?.close();
    await server?.stop();
  });

  test('the signup route enqueues the welcome email and the worker sends it', async () => {
    const res = await fetch(`${base}/signup`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'ada@example.com' }),
    });
    assert.equal(res.status, 202);
    const body = await res.json();
    assert.equal(body.task_id, 'signup:ada@example.com');
    assert.equal(body.duplicate, false);
    await within(20_000, `the welcome mail (worker logs:\n${worker.logs()})`, smtp.until((mails) => mails.some((m) => m.to.some((t) => t.includes('ada@example.com')))));
    const mail = smtp.mails.find((m) => m.to.some((t) => t.includes('ada@example.com')));
    assert.match(mail.data, /Subject: Welcome to jetq!/);
    assert.match(mail.data, /thanks for signing up/);

    // Tracked: the producer wrote `queued`, the worker `running` then `succeeded`.
    const done = await within(20_000, 'a terminal status', producer.wait(body.task_id, 15_000));
    assert.equal(done.state, 'succeeded');
    assert.equal(done.queue, 'emails');
    assert.equal(done.transitions[0].state, 'queued');
    const page = await (await fetch(`${base}/tasks/${encodeURIComponent(body.task_id)}`)).json();
    assert.equal(page.state, 'succeeded');

    // The same signup again inside the duplicate window: one task, reported as a duplicate.
    const again = await (await fetch(`${base}/signup`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'ada@example.com' }),
    })).json();
    assert.equal(again.duplicate, true);
  });

  test('a batch is enqueued in order and every mail is sent', async () => {
    const emails = ['b1@example.com', 'b2@example.com', 'b3@example.com'];
    const results = await producer.enqueueMany([
      ...emails.map((to) => ({ queue: 'emails', task: 'send_email', args: { to, subject: 'Batch', body: 'hi' } })),
      { queue: 'emails', task: 'send.email', args: {} },
    ]);
    assert.deepEqual(results.map((r) => r.ok), [true, true, true, false]);
    assert.equal(results[3].error.name, 'InvalidName');
    const sequences = results.slice(0, 3).map((r) => r.value.sequence);
    assert.deepEqual([...sequences].sort((a, b) => a - b), sequences, 'sent in input order');
    await within(20_000, 'the batch mails', smtp.until((mails) => emails.every((e) => mails.some((m) => m.to.some((t) => t.includes(e))))));
  });

  test('a traceparent from the caller reaches the worker unchanged', async () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const queued = await producer.enqueue('emails', 'send_email', { to: 'trace@example.com', subject: 'Traced', body: 'x' }, { traceparent, trackStatus: true });
    const done = await within(20_000, 'the traced task', producer.wait(queued.id, 15_000));
    assert.equal(done.state, 'succeeded');
  });

  test('a delayed task waits in the delayed stream, created on first use', async () => {
    const queued = await producer.enqueue('emails', 'send_email', { to: 'later@example.com', subject: 'Later', body: 'x' }, { delayMs: 3_600_000 });
    assert.equal(queued.stream, 'JETQ_DELAYED');
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await jetstreamManager(nc);
      const stored = await jsm.streams.getMessage('JETQ_DELAYED', { seq: queued.sequence });
      assert.match(stored.subject, /^jetq\.delayed\.[0-9]+\.emails\.send_email$/);
      assert.ok(stored.header.get('Jetq-Not-Before'));
    } finally {
      await nc.close();
    }
  });

  test('a type the Rust worker tracks is tracked from Node without asking (the catalog)', async () => {
    // The example worker publishes exports.generate_csv as tracked (PROTOCOL.md §9). A delayed
    // export (no scheduler runs here to release it, so no worker touches it) has the `queued`
    // record only because the producer read the catalog and wrote it.
    const later = await producer.enqueue('exports', 'generate_csv', { export_id: 'node-later', rows: 1, row_delay_ms: 0 }, { key: 'node-later', delayMs: 3_600_000 });
    const waiting = await producer.status(later.id);
    assert.equal(waiting?.state, 'queued', `the producer wrote the queued record (worker logs:\n${worker.logs()})`);
    assert.equal(waiting.task, 'generate_csv');
    // Run now: the caller can wait on it without having asked to track it.
    const queued = await producer.enqueue('exports', 'generate_csv', { export_id: 'node-export', rows: 3, row_delay_ms: 0 }, { key: 'node-export' });
    const done = await within(20_000, `the export (worker logs:\n${worker.logs()})`, producer.wait(queued.id, 15_000));
    assert.equal(done.state, 'succeeded');
    assert.equal(done.sequence, queued.sequence);
    assert.equal(done.result.rows, 3);
  });

  test('waiting on an unknown task times out with a typed error', async () => {
    await assert.rejects(producer.wait('no-such-task', 300), WaitTimeout);
    assert.equal(await producer.status('no-such-task'), null);
  });
});
