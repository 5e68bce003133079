// The task-type catalog (docs/PROTOCOL.md §9) read by the Node.js producer, against a real
// nats-server: entries written with the nats client (as a worker writes them) make an untracked
// enqueue of a tracked type tracked (header and `queued` record); untracked, broken, deleted and
// missing entries and a missing catalog change nothing; a many-task enqueue reads each type once;
// answers are reused for the TTL; a producer with the shipped producer permissions
// (k8s/nats/permissions.conf) reads the catalog and records the queued state, and one that may
// not read the catalog still enqueues.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import {
  DEFAULT_CATALOG_TTL_MS, Producer, Subjects, prepare, withTracking,
} from '../src/index.js';
import {
  REPO, createTaskStream, loadVectors, natsServerBinary, startNatsServer, within,
} from './support.js';

const skip = natsServerBinary() ? false : 'JETQ_TEST_NATS_SERVER is not set';

/** A catalog value as a worker writes it, plus a field a later version might add. */
function entryValue(queue, task, tracked) {
  return JSON.stringify({
    queue, task, max_attempts: 3, timeout_ms: 60000, tracked,
    updated_at: '2026-12-07T04:00:00.000000Z', added_later: [1],
  });
}

async function writeCatalog(nc, entries) {
  const kv = await new Kvm(nc).create('JETQ_CATALOG', { history: 1 });
  for (const [key, value] of Object.entries(entries)) await kv.put(key, value);
  return kv;
}

/** The stored task's `Jetq-Track-Status` header, or null. */
async function trackHeader(jsm, sequence, stream = 'JETQ_TASKS') {
  const stored = await jsm.streams.getMessage(stream, { seq: sequence });
  return stored.header?.get('Jetq-Track-Status') || null;
}

/** Counts the JetStream API requests about the catalog stream seen on `$JS.API.>`. */
async function countCatalogRequests(url) {
  const spy = await connect({ servers: url });
  const counts = { info: 0, get: 0 };
  spy.subscribe('$JS.API.>', {
    callback: (_err, msg) => {
      if (!msg.subject.includes('KV_JETQ_CATALOG')) return;
      if (msg.subject.includes('.STREAM.INFO.')) counts.info += 1;
      else if (msg.subject.includes('.GET.')) counts.get += 1;
    },
  });
  await spy.flush();
  return { counts, close: () => spy.close() };
}

function sleep(ms) { return new Promise((resolve) => { setTimeout(resolve, ms); }); }

describe('the catalog without a server', () => {
  test('a tracked copy is the message trackStatus: true builds', () => {
    for (const vector of loadVectors().valid) {
      const options = {
        key: vector.options.key ?? 'catalog-test', now: 1_700_000_000_000_000n,
        maxAttempts: vector.options.max_attempts, timeoutMs: vector.options.timeout_us && vector.options.timeout_us / 1000,
        traceparent: vector.options.traceparent, tracestate: vector.options.tracestate,
        json: vector.payload,
      };
      const subjects = new Subjects(vector.prefix);
      const untracked = prepare(subjects, vector.queue, vector.task, null, options);
      const asked = prepare(subjects, vector.queue, vector.task, null, { ...options, trackStatus: true });
      assert.equal(untracked.tracked, false, vector.name);
      assert.deepEqual(withTracking(untracked), asked, vector.name);
      assert.equal(withTracking(asked), asked, `${vector.name}: already tracked`);
    }
    const delayed = { key: 'd', now: 0n, delayMs: 5000, traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };
    assert.deepEqual(
      withTracking(prepare(new Subjects(), 'q', 't', {}, delayed)),
      prepare(new Subjects(), 'q', 't', {}, { ...delayed, trackStatus: true }),
    );
  });

  test('answers are reused for 30 seconds by default', () => {
    assert.equal(DEFAULT_CATALOG_TTL_MS, 30_000);
    assert.equal(new Producer(null).catalog.ttlMs, 30_000);
    assert.equal(new Producer(null, { catalogTtlMs: 5 }).catalog.ttlMs, 5);
    assert.equal(new Producer(null, { prefix: 'my-app' }).catalog.bucket, 'MY_APP_CATALOG');
  });
});

describe('the catalog through a real server', { skip }, () => {
  let server;
  let nc;
  let jsm;
  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    jsm = await jetstreamManager(nc);
    await createTaskStream(jsm);
  });
  after(async () => {
    await nc?.close();
    await server?.stop();
  });

  test('an entry marking a type tracked makes an untracked enqueue tracked; others change nothing', async () => {
    const warnings = [];
    const onWarning = (warning) => warnings.push(warning.message);
    process.on('warning', onWarning);
    try {
      const kv = await writeCatalog(nc, {
        'work.tracked_job': entryValue('work', 'tracked_job', true),
        'work.job': entryValue('work', 'job', false),
        'work.broken': '{not json',
        'work.wrong_type': entryValue('work', 'wrong_type', 'yes'),
        'work.deleted': entryValue('work', 'deleted', true),
      });
      await kv.delete('work.deleted');
      const producer = new Producer(nc);

      const tracked = await within(5000, 'enqueue', producer.enqueue('work', 'tracked_job', { n: 1 }));
      assert.equal(await trackHeader(jsm, tracked.sequence), '1');
      const record = await within(5000, 'status', producer.status(tracked.id));
      assert.equal(record?.state, 'queued');
      assert.deepEqual([record.queue, record.task, record.sequence], ['work', 'tracked_job', tracked.sequence]);

      // Untracked, broken, wrongly typed, deleted and missing entries change nothing.
      for (const task of ['job', 'broken', 'wrong_type', 'deleted', 'absent']) {
        const result = await within(5000, `enqueue ${task}`, producer.enqueue('work', task, { n: 2 }));
        assert.equal(await trackHeader(jsm, result.sequence), null, task);
        assert.equal(await producer.status(result.id), null, task);
      }
      await new Promise((resolve) => { setImmediate(resolve); });
      assert.ok(warnings.some((w) => w.includes('work.broken')), `a broken entry is reported: ${warnings}`);

      // Many at once: every task of the tracked type, and only those; a delayed one too.
      assert.ok(await producer.ensureDelayedStream());
      const many = await within(5000, 'enqueueMany', producer.enqueueMany([
        { queue: 'work', task: 'tracked_job', args: { n: 3 } },
        { queue: 'work', task: 'job', args: { n: 4 } },
        { queue: 'work', task: 'tracked_job', args: { n: 5 }, options: { delayMs: 60_000 } },
      ]));
      assert.ok(many.every((r) => r.ok), JSON.stringify(many.map((r) => String(r.error))));
      const [first, second, delayed] = many.map((r) => r.value);
      assert.equal((await producer.status(first.id))?.state, 'queued');
      assert.equal(await producer.status(second.id), null);
      const delayedRecord = await producer.status(delayed.id);
      assert.equal(delayedRecord?.state, 'queued');
      assert.equal(delayedRecord.sequence, undefined, 'a delayed task has no task-stream sequence yet');
      assert.equal(await trackHeader(jsm, delayed.sequence, 'JETQ_DELAYED'), '1');
    } finally {
      process.off('warning', onWarning);
    }
  });

  test('a many-task enqueue reads each type once and answers are reused for the TTL', async () => {
    const spy = await countCatalogRequests(server.url);
    try {
      const producer = new Producer(nc, { catalogTtlMs: 400 });
      const task = (name, n) => ({ queue: 'work', task: name, args: { n } });
      const many = await within(5000, 'enqueueMany', producer.enqueueMany([
        task('tracked_job', 1), task('job', 2), task('tracked_job', 3), task('absent', 4),
        task('job', 5), task('tracked_job', 6),
      ]));
      assert.ok(many.every((r) => r.ok));
      assert.deepEqual(spy.counts, { info: 1, get: 3 }, 'one stream info, one read per type');
      await within(5000, 'enqueue', producer.enqueue('work', 'tracked_job', {}));
      assert.deepEqual(spy.counts, { info: 1, get: 3 }, 'within the TTL: no read');

      // "Unknown" is cached too: an entry written now is seen only once the TTL has passed.
      await writeCatalog(nc, { 'work.late': entryValue('work', 'late', false) });
      const before = await within(5000, 'enqueue', producer.enqueue('work', 'absent', {}));
      assert.equal(await trackHeader(jsm, before.sequence), null);
      await writeCatalog(nc, { 'work.absent': entryValue('work', 'absent', true) });
      const cached = await within(5000, 'enqueue', producer.enqueue('work', 'absent', {}));
      assert.equal(await trackHeader(jsm, cached.sequence), null, 'the cached answer is still "unknown"');
      await sleep(450); // the TTL must pass on the wall clock
      const later = await within(5000, 'enqueue', producer.enqueue('work', 'absent', {}));
      assert.equal(await trackHeader(jsm, later.sequence), '1', 'read again after the TTL');
      assert.equal(spy.counts.get, 4);

      // Once per type per many-task enqueue even when no answer outlives a read (TTL 0).
      const uncached = new Producer(nc, { catalogTtlMs: 0 });
      const reads = spy.counts.get;
      const again = await within(5000, 'enqueueMany', uncached.enqueueMany([
        task('tracked_job', 1), task('job', 2), task('tracked_job', 3), task('job', 4), task('absent', 5),
      ]));
      assert.ok(again.every((r) => r.ok));
      assert.equal(spy.counts.get - reads, 3, 'one read per (queue, task)');
    } finally {
      await spy.close();
    }
  });

  test('without a catalog nothing is tracked and nothing is created', async () => {
    await createTaskStream(jsm, 'bare');
    const producer = new Producer(nc, { prefix: 'bare' });
    const result = await within(5000, 'enqueue', producer.enqueue('work', 'tracked_job', { n: 1 }));
    assert.equal(await trackHeader(jsm, result.sequence, 'BARE_TASKS'), null);
    const names = [];
    for await (const info of jsm.streams.list()) names.push(info.config.name);
    assert.ok(!names.includes('KV_BARE_CATALOG') && !names.includes('KV_BARE_STATUS'), names.join(' '));
  });
});

describe('the catalog with the shipped producer permissions', { skip }, () => {
  // k8s/nats/permissions.conf as shipped: the producer may read the catalog only by stream info
  // and direct get, and the status bucket as §8 says, with no JetStream account check.
  let server;
  let admin;
  let jsm;
  before(async () => {
    const shipped = readFileSync(join(REPO, 'k8s', 'nats', 'permissions.conf'), 'utf8');
    // Every password variable the file refers to (a user added there needs no change here).
    const roles = new Set([...shipped.matchAll(/\$JETQ_([A-Z_]+)_PASSWORD/g)].map((m) => m[1]));
    const passwords = [...roles].map((role) => `JETQ_${role}_PASSWORD: ${role.toLowerCase()}`).join('\n');
    server = await startNatsServer({ extraConfig: `${passwords}\n${shipped}` });
    admin = await connect({ servers: server.url, user: 'admin', pass: 'admin' });
    jsm = await jetstreamManager(admin);
    await createTaskStream(jsm);
    await writeCatalog(admin, { 'emails.send_email': entryValue('emails', 'send_email', true) });
    await new Producer(admin).ensureStatusStores(); // provisioning's job, not the producer's
  });
  after(async () => {
    await admin?.close();
    await server?.stop();
  });

  test('the producer user reads the catalog and records the queued state', async () => {
    const nc = await connect({ servers: server.url, user: 'producer', pass: 'producer' });
    const warnings = [];
    const onWarning = (warning) => warnings.push(warning.message);
    process.on('warning', onWarning);
    try {
      const producer = new Producer(nc, { provision: false });
      const result = await within(5000, 'enqueue', producer.enqueue('emails', 'send_email', { to: 'a@example.com' }));
      assert.equal(await trackHeader(jsm, result.sequence), '1');
      const record = await within(5000, 'status', producer.status(result.id));
      assert.deepEqual([record?.state, record?.sequence], ['queued', result.sequence]);
      const watched = await within(5000, 'watch', (async () => {
        for await (const version of producer.watch(result.id)) return version;
        return null;
      })());
      assert.equal(watched?.state, 'queued', 'watch (an ordered consumer) is allowed too');
      await new Promise((resolve) => { setImmediate(resolve); });
      assert.deepEqual(warnings, []);
    } finally {
      process.off('warning', onWarning);
      await nc.close();
    }
  });
});

describe('the catalog for a producer that may not read it', { skip }, () => {
  const users = `authorization {
  users = [
    { user: admin, password: admin }
    { user: blind, password: blind, permissions: {
        publish: { allow: ["jetq.task.*.*"] }
        subscribe: { allow: ["_INBOX.>"] } } }
  ]
}`;
  let server;
  let admin;
  let jsm;
  before(async () => {
    server = await startNatsServer({ extraConfig: users });
    admin = await connect({ servers: server.url, user: 'admin', pass: 'admin' });
    jsm = await jetstreamManager(admin);
    await createTaskStream(jsm);
    await writeCatalog(admin, { 'work.tracked_job': entryValue('work', 'tracked_job', true) });
  });
  after(async () => {
    await admin?.close();
    await server?.stop();
  });

  test('it still enqueues, untracked, without waiting out a timeout', async () => {
    const nc = await connect({ servers: server.url, user: 'blind', pass: 'blind' });
    try {
      const producer = new Producer(nc, { provision: false });
      const started = Date.now();
      const result = await within(5000, 'enqueue', producer.enqueue('work', 'tracked_job', {}));
      assert.equal(await trackHeader(jsm, result.sequence), null);
      // The server refuses the catalog read at once (a permissions violation), so the enqueue
      // does not wait for the request timeout (2 s).
      assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
    } finally {
      await nc.close();
    }
  });
});
