// The Node.js producer against docs/conformance/vectors.json, the same file the Rust and Python
// producers are tested against: the exact bytes of every valid vector (prepared, and stored by
// a real server), every refusal with its reason, delayed subjects, status keys, timestamps, the
// task-type catalog's bucket and entries, and what each publish reply makes the producer do
// (counted sends against a fake responder).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, headers as natsHeaders } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  InvalidKey, InvalidName, InvalidOption, InvalidPriority, PRIORITIES, PRIORITY_HEADER, Producer,
  Subjects, catalogBucket, catalogEntryJson, catalogKey, classifyReply, formatTimestamp,
  parseCatalogEntry, parseTimestamp, prepare, queueToken, retryPauseMs, splitQueueToken, statusKey,
} from '../src/index.js';
import { REPO, createTaskStream, loadVectors, natsServerBinary, startNatsServer, within } from './support.js';

const VECTORS = loadVectors();
const PATTERNS = Object.fromEntries(Object.entries(VECTORS.patterns).map(([k, v]) => [k, new RegExp(v)]));

/** The vector's options as this client's enqueue options. */
function options(vector) {
  const opts = vector.options;
  const out = {};
  if ('key' in opts) out.key = opts.key;
  if ('max_attempts' in opts) out.maxAttempts = opts.max_attempts;
  if ('timeout_us' in opts) out.timeoutMs = opts.timeout_us / 1000;
  if ('traceparent' in opts) out.traceparent = opts.traceparent;
  if ('tracestate' in opts) out.tracestate = opts.tracestate;
  // A double cannot hold every integer (nested_values has 2^53 + 1): such args go pre-encoded.
  if (JSON.stringify(vector.args) !== vector.payload) out.json = vector.payload;
  return out;
}

function checkMessage(vector, subject, headers, payload) {
  assert.equal(subject, vector.subject, vector.name);
  assert.equal(Buffer.from(payload).toString('utf8'), vector.payload, vector.name);
  assert.deepEqual(Buffer.compare(Buffer.from(payload), Buffer.from(vector.payload, 'utf8')), 0, vector.name);
  const expected = [...Object.keys(vector.headers), ...Object.keys(vector.header_patterns)].sort();
  assert.deepEqual([...headers.keys()].sort(), expected, `${vector.name}: header names`);
  for (const [name, value] of Object.entries(vector.headers)) assert.equal(headers.get(name), value, `${vector.name}: ${name}`);
  for (const [name, pattern] of Object.entries(vector.header_patterns)) {
    assert.match(headers.get(name), PATTERNS[pattern], `${vector.name}: ${name}`);
  }
}

describe('vectors without a server', () => {
  test('every valid vector is prepared exactly', () => {
    for (const vector of VECTORS.valid) {
      const prepared = prepare(new Subjects(vector.prefix), vector.queue, vector.task, vector.args, options(vector));
      checkMessage(vector, prepared.subject, new Map(prepared.headers), prepared.payload);
      assert.equal(new Subjects(vector.prefix).tasksStream, vector.stream);
    }
  });

  test('args that survive JSON in JavaScript are sent without help', () => {
    const plain = VECTORS.valid.filter((v) => JSON.stringify(v.args) === v.payload);
    assert.ok(plain.length >= VECTORS.valid.length - 1, 'only the 2^53 + 1 vector needs pre-encoded JSON');
  });

  test('every invalid vector is refused with the documented error and reason', () => {
    for (const vector of VECTORS.invalid) {
      assert.throws(() => prepare(new Subjects(), vector.queue, vector.task, vector.args, options(vector)), (err) => {
        assert.equal(err.constructor.name, vector.error, vector.name);
        if (err instanceof InvalidName) assert.equal(err.kind, vector.name_kind, vector.name);
        else assert.ok(err instanceof InvalidKey, vector.name);
        assert.equal(err.reason, vector.reason, vector.name);
        return true;
      });
    }
  });

  test('every invalid prefix is refused', () => {
    for (const vector of VECTORS.invalid_prefixes) {
      assert.throws(() => new Subjects(vector.prefix), InvalidName, vector.name);
    }
  });

  test('delayed subjects and Jetq-Not-Before headers', () => {
    for (const vector of VECTORS.delayed) {
      const due = parseTimestamp(vector.due);
      const prepared = prepare(new Subjects(), vector.queue, vector.task, {}, { at: vector.due, now: due - 60_000_000n });
      assert.equal(prepared.subject, vector.subject, vector.name);
      assert.equal(new Map(prepared.headers).get('Jetq-Not-Before'), vector.not_before, vector.name);
    }
  });

  test('status keys', () => {
    for (const vector of VECTORS.status_keys) assert.equal(statusKey(vector.id), vector.key, vector.id);
  });

  test('timestamps', () => {
    for (const vector of VECTORS.timestamps) {
      const parsed = parseTimestamp(vector.text);
      assert.equal(parsed === null ? null : formatTimestamp(parsed), vector.utc, vector.name);
    }
  });

  test('the catalog bucket of the default prefix', () => {
    assert.equal(catalogBucket(new Subjects('jetq')), VECTORS.catalog.bucket);
    assert.ok(VECTORS.catalog.entries.length >= 4);
  });

  test('catalog entries read (and are written) as the vectors say', () => {
    // As tests/tests/conformance.rs and test_conformance.py: the value reads as the expected
    // entry (or as none), its key is the vector's, and an exact vector is what a writer produces.
    for (const vector of VECTORS.catalog.entries) {
      const entry = parseCatalogEntry(Buffer.from(vector.value, 'utf8'));
      if (vector.entry === null) {
        assert.equal(entry, null, vector.name);
        continue;
      }
      assert.notEqual(entry, null, vector.name);
      for (const field of ['queue', 'task', 'max_attempts', 'timeout_ms', 'tracked']) {
        assert.equal(entry[field], vector.entry[field], `${vector.name}: ${field}`);
      }
      assert.equal(catalogKey(entry.queue, entry.task), vector.key, vector.name);
      if (vector.exact) assert.equal(catalogEntryJson(entry), vector.value, vector.name);
    }
  });

  test('publish replies are classified as the vectors say', () => {
    for (const vector of VECTORS.publish_acks) {
      const reply = classifyReply({ task: 't', subject: 's', size: 1 }, vector.status, vector.body);
      assert.equal(reply.outcome, vector.outcome, vector.name);
      if (reply.outcome === 'stored') {
        assert.equal(reply.sequence, vector.sequence, vector.name);
        assert.equal(reply.duplicate, vector.duplicate, vector.name);
      } else {
        assert.equal(reply.error.constructor.name, vector.error, vector.name);
      }
    }
  });
});

describe('vectors through a real server', { skip: natsServerBinary() ? false : 'JETQ_TEST_NATS_SERVER is not set' }, () => {
  let server;
  let nc;
  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc?.close();
    await server?.stop();
  });

  test('every valid vector is stored exactly', async () => {
    const jsm = await jetstreamManager(nc);
    const producers = new Map();
    for (const vector of VECTORS.valid) {
      if (!producers.has(vector.prefix)) {
        await createTaskStream(jsm, vector.prefix);
        producers.set(vector.prefix, new Producer(nc, { prefix: vector.prefix }));
      }
      const result = await within(5000, vector.name, producers.get(vector.prefix).enqueue(vector.queue, vector.task, vector.args, options(vector)));
      assert.equal(result.duplicate, false, vector.name);
      assert.equal(result.stream, vector.stream, vector.name);
      const stored = await jsm.streams.getMessage(vector.stream, { seq: result.sequence });
      const headers = new Map();
      for (const [name, values] of stored.header) headers.set(name, values[0]);
      checkMessage(vector, stored.subject, headers, stored.data);
      assert.equal(headers.get('Nats-Msg-Id'), result.id);
    }
  });

  test('publish replies are retried or reported, counting the sends', async () => {
    const answered = VECTORS.publish_acks.filter((v) => v.status !== '503');
    const sends = new Map();
    const subscriptions = answered.map((vector) => nc.subscribe(`ackq.task.acks.${vector.name}`, {
      callback: (_err, msg) => {
        sends.set(vector.name, (sends.get(vector.name) ?? 0) + 1);
        if (vector.status) {
          // A reply with a status line and no body, as the server writes one.
          const h = natsHeaders(Number(vector.status), 'status');
          msg.respond(new Uint8Array(0), { headers: h });
        } else {
          msg.respond(vector.body);
        }
      },
    }));
    await nc.flush();
    // Prefix ackq: no stream captures these subjects, only the responder.
    // A retry budget of 1 s × 2 attempts: the retry_pauses vector for 2,000 ms says how many
    // sends a retryable reply gets (replies here come back at once).
    const schedule = VECTORS.retry_pauses.find((v) => v.budget_ms === 2000);
    const retrySends = schedule.pauses_ms.length + 1;
    const producer = new Producer(nc, { prefix: 'ackq', provision: false, publishAttempts: 2, requestTimeoutMs: 1000 });
    try {
      for (const vector of VECTORS.publish_acks) {
        const outcome = await within(10_000, vector.name, producer.enqueue('acks', vector.name, {}, { key: `ack-${vector.name}` }).then(
          (value) => ({ value }),
          (error) => ({ error }),
        ));
        const sent = sends.get(vector.name) ?? 0;
        if (vector.outcome === 'stored') {
          assert.equal(outcome.value?.sequence, vector.sequence, `${vector.name}: ${outcome.error}`);
          assert.equal(outcome.value.duplicate, vector.duplicate, vector.name);
          assert.equal(sent, 1, vector.name);
        } else {
          assert.equal(outcome.error?.constructor.name, vector.error, `${vector.name}: ${outcome.error}`);
          // (A 503 vector finds no stream at all: the producer asks, hears "not found" and
          // reports NoStream after one send.)
          if (vector.status !== '503') assert.equal(sent, vector.outcome === 'retry' ? retrySends : 1, `${vector.name}: sends`);
        }
      }
    } finally {
      for (const sub of subscriptions) sub.unsubscribe();
    }
  });

  test('the pauses after retryable replies follow the retry_pauses vectors', () => {
    for (const vector of VECTORS.retry_pauses) {
      const pauses = [];
      let spent = 0;
      for (let pause = retryPauseMs(0, vector.budget_ms); pause !== null; pause = retryPauseMs(pauses.length, vector.budget_ms - spent)) {
        pauses.push(pause);
        spent += pause;
      }
      assert.deepEqual(pauses, vector.pauses_ms, `budget ${vector.budget_ms} ms`);
    }
  });

  test('nothing is published for an invalid vector', async () => {
    const producer = new Producer(nc);
    for (const vector of VECTORS.invalid) {
      await assert.rejects(producer.enqueue(vector.queue, vector.task, vector.args, options(vector)), (err) => err.constructor.name === vector.error);
    }
  });
});

// docs/conformance/priorities.json (§12), shared with tests/tests/priority_conformance.rs and
// clients/python/tests/test_conformance.py.
const PRIORITY_VECTORS = JSON.parse(readFileSync(join(REPO, 'docs', 'conformance', 'priorities.json'), 'utf8'));

/** The values of every Jetq-Priority header among (name, value) pairs. */
function priorityHeaders(pairs) {
  return [...pairs].filter(([name]) => name === PRIORITY_HEADER).map(([, value]) => value);
}

/** The enqueue options of a priorities.json message vector (a due time: a minute after `now`). */
function priorityOptions(vector) {
  const out = {};
  if (vector.priority !== null) out.priority = vector.priority;
  if (vector.due) {
    out.at = vector.due;
    out.now = parseTimestamp(vector.due) - 60_000_000n;
  }
  return out;
}

describe('priority vectors without a server', () => {
  test('the header and the levels', () => {
    assert.equal(PRIORITY_VECTORS.header, PRIORITY_HEADER);
    assert.deepEqual(PRIORITY_VECTORS.levels, [...PRIORITIES]);
  });

  test('every message vector is prepared on its subject with its header', () => {
    assert.ok(PRIORITY_VECTORS.messages.some((v) => v.due));
    for (const vector of PRIORITY_VECTORS.messages) {
      const prepared = prepare(new Subjects(vector.prefix), vector.queue, vector.task, {}, priorityOptions(vector));
      assert.equal(prepared.subject, vector.subject, vector.name);
      assert.deepEqual(priorityHeaders(prepared.headers), vector.header === null ? [] : [vector.header], vector.name);
      assert.equal(prepared.queue, vector.queue, `${vector.name}: the queue is named without its level`);
    }
  });

  test('queue tokens and subjects split as the vectors say', () => {
    for (const vector of PRIORITY_VECTORS.tokens) {
      assert.equal(queueToken(vector.queue, vector.level), vector.token);
      assert.deepEqual(splitQueueToken(vector.token), { queue: vector.queue, level: vector.level });
    }
    for (const vector of PRIORITY_VECTORS.subjects) {
      const prefix = `${vector.prefix}.task.`;
      assert.ok(vector.subject.startsWith(prefix));
      const [token, task, ...rest] = vector.subject.slice(prefix.length).split('.');
      const split = task && rest.length === 0 ? splitQueueToken(token) : null;
      const parsed = split && { queue: split.queue, level: split.level, task };
      assert.deepEqual(parsed, vector.parsed, vector.subject);
      if (parsed) assert.equal(new Subjects(vector.prefix).taskAt(parsed.queue, parsed.level, parsed.task), vector.subject);
    }
  });

  test('every invalid priority is refused with the documented reason', () => {
    for (const vector of PRIORITY_VECTORS.invalid) {
      assert.throws(() => prepare(new Subjects(), 'emails', 'send', {}, { priority: vector.priority }), (err) => {
        assert.ok(err instanceof InvalidPriority && err instanceof InvalidOption, vector.name);
        assert.equal(err.reason, vector.reason, vector.name);
        assert.equal(err.message, vector.reason, vector.name);
        return true;
      });
    }
  });
});

describe('priority vectors through a real server', { skip: natsServerBinary() ? false : 'JETQ_TEST_NATS_SERVER is not set' }, () => {
  let server;
  let nc;
  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc?.close();
    await server?.stop();
  });

  test('high and low tasks are stored on their level subjects, with the header', async () => {
    const jsm = await jetstreamManager(nc);
    const producers = new Map();
    for (const vector of PRIORITY_VECTORS.messages.filter((v) => !v.due)) {
      if (!producers.has(vector.prefix)) {
        await createTaskStream(jsm, vector.prefix);
        producers.set(vector.prefix, new Producer(nc, { prefix: vector.prefix }));
      }
      const producer = producers.get(vector.prefix);
      const result = await within(5000, vector.name, producer.enqueue(vector.queue, vector.task, {}, priorityOptions(vector)));
      const stored = await jsm.streams.getMessage(producer.subjects.tasksStream, { seq: result.sequence });
      assert.equal(stored.subject, vector.subject, vector.name);
      const pairs = [];
      for (const [name, values] of stored.header) for (const value of values) pairs.push([name, value]);
      assert.deepEqual(priorityHeaders(pairs), vector.header === null ? [] : [vector.header], vector.name);
    }
    const before = (await jsm.streams.info('JETQ_TASKS')).state.messages;
    const many = await within(5000, 'enqueueMany', producers.get('jetq').enqueueMany([
      { queue: 'emails', task: 'send', args: {}, options: { priority: 'high' } },
      { queue: 'emails', task: 'send', args: {}, options: { priority: 'urgent' } },
    ]));
    assert.equal(many[0].ok, true, String(many[0].error));
    assert.ok(!many[1].ok && many[1].error instanceof InvalidPriority, String(many[1].error));
    await assert.rejects(producers.get('jetq').enqueue('emails', 'send', {}, { priority: 'urgent' }), InvalidPriority);
    assert.equal((await jsm.streams.info('JETQ_TASKS')).state.messages, before + 1, 'only the high task of the batch is stored');
  });
});
