// The jetq producer for Node.js: docs/PROTOCOL.md (1.1) on the official @nats-io packages.
// Every enqueue is one request on the task subject whose reply is the JetStream publish ack;
// the reply is read by classifyReply (§3), so the retry rules live in one place.

import { connect, headers as natsHeaders, errors as natsErrors } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import {
  EnqueueError, NotConnected, StatusCorrupt, StatusUnavailable, Timeout, TooLarge, WaitTimeout,
} from './errors.js';
import { Catalog, catalogKey, withTracking } from './catalog.js';
import {
  Subjects, classifyReply, formatTimestamp, headerBlockSize, isDuplicate, isTerminal, nowMicros,
  parseTimestamp, prepare, retryPauseMs, statusKey,
} from './protocol.js';

const NANOS_PER_MS = 1_000_000;
const DAY_MS = 24 * 3600 * 1000;
/** Compare-and-set rounds of the queued write before it gives up (§8). */
const CAS_ROUNDS = 8;
const REOPEN_AFTER_MS = 30_000;

let otel; // @opentelemetry/api when installed (optional), resolved once
async function traceContextFromOpenTelemetry() {
  if (otel === undefined) {
    try { otel = await import('@opentelemetry/api'); } catch { otel = null; }
  }
  if (!otel) return {};
  const carrier = {};
  otel.propagation.inject(otel.context.active(), carrier);
  return carrier.traceparent ? { traceparent: carrier.traceparent, tracestate: carrier.tracestate } : {};
}

function sleep(ms) { return new Promise((resolve) => { setTimeout(resolve, ms); }); }

function isNoResponders(err) {
  return err instanceof natsErrors.NoRespondersError
    || (err instanceof natsErrors.RequestError && err.isNoResponders())
    || err?.cause instanceof natsErrors.NoRespondersError;
}

function isTimeout(err) {
  return err instanceof natsErrors.TimeoutError || err?.cause instanceof natsErrors.TimeoutError;
}

/**
 * A jetq producer. Create with `Producer.connect({servers})` or `new Producer(nc, options)`.
 *
 * options: prefix ('jetq'), requestTimeoutMs (2000: per publish attempt), publishAttempts (3),
 * enqueueWindow (256), maxDelayMs (30 days), provision (true: create the delayed stream and the
 * status stores when missing), replicas (1), statusTtlMs (24 h), artifactsMaxBytes (-1),
 * catalogTtlMs (30 s: how long a task-type catalog answer is reused, §9).
 */
export class Producer {
  constructor(nc, options = {}) {
    this.nc = nc;
    this.subjects = new Subjects(options.prefix ?? 'jetq');
    this.requestTimeoutMs = options.requestTimeoutMs ?? 2000;
    this.publishAttempts = Math.max(1, options.publishAttempts ?? 3);
    this.enqueueWindow = Math.max(1, options.enqueueWindow ?? 256);
    this.maxDelayMs = options.maxDelayMs ?? 30 * DAY_MS;
    this.provision = options.provision ?? true;
    this.replicas = options.replicas ?? 1;
    this.statusTtlMs = options.statusTtlMs ?? DAY_MS;
    this.artifactsMaxBytes = options.artifactsMaxBytes ?? -1;
    this.ownsConnection = options.ownsConnection ?? false;
    this.kv = null;
    this.kvFailedUntil = 0;
    /** The task-type catalog (§9): a type its workers track is tracked whatever the caller asked. */
    this.catalog = new Catalog(nc, this.subjects, {
      ttlMs: options.catalogTtlMs, requestTimeoutMs: this.requestTimeoutMs,
    });
  }

  /** Connects (nats.js options, e.g. `{servers: 'nats://127.0.0.1:4222'}`) and builds a producer. */
  static async connect(connectOptions = {}, options = {}) {
    const nc = await connect(connectOptions);
    return new Producer(nc, { ...options, ownsConnection: true });
  }

  async close() {
    if (this.ownsConnection) await this.nc.drain();
  }

  /**
   * Enqueues one task and resolves once the server stored it: `{id, sequence, duplicate,
   * stream}`. Options as `prepare` in protocol.js (key, maxAttempts, timeoutMs, delayMs, at,
   * traceparent, tracestate, trackStatus, json, priority: 'high' | 'normal' | 'low'). Rejects
   * with the typed errors of errors.js (InvalidPriority for another priority).
   */
  async enqueue(queue, task, args, options = {}) {
    const prepared = await this.prepare(queue, task, args, options);
    return this.deliver(prepared);
  }

  /** Builds the message (validating everything) without sending it. */
  async prepare(queue, task, args, options = {}) {
    let trace = {};
    if (!options.traceparent) trace = await traceContextFromOpenTelemetry();
    return prepare(this.subjects, queue, task, args, { maxDelayMs: this.maxDelayMs, ...trace, ...options });
  }

  /**
   * Enqueues many tasks: sent in input order, up to `window` acks awaited at once. Resolves to
   * one result per task, in order: `{ok: true, value}` or `{ok: false, error}`; one task's
   * failure does not stop the others. The task-type catalog is read at most once per
   * (queue, task) per call.
   * @param {Array<{queue: string, task: string, args?: unknown, options?: object}>} tasks
   */
  async enqueueMany(tasks, { window = this.enqueueWindow } = {}) {
    const results = new Array(tasks.length);
    const inFlight = new Set();
    const lookups = new Map(); // (queue, task) -> whether the catalog says tracked, read once
    for (let index = 0; index < tasks.length; index += 1) {
      const { queue, task, args, options } = tasks[index];
      while (inFlight.size >= window) await Promise.race(inFlight);
      let prepared;
      try {
        prepared = await this.prepare(queue, task, args, options ?? {});
      } catch (error) {
        results[index] = { ok: false, error };
        continue;
      }
      // Looked up here, in input order, so the tasks are still sent in input order.
      prepared = await this.trackIfCataloged(prepared, lookups);
      const running = this.deliverAsIs(prepared).then(
        (value) => { results[index] = { ok: true, value }; },
        (error) => { results[index] = { ok: false, error }; },
      ).finally(() => inFlight.delete(running));
      inFlight.add(running);
    }
    await Promise.all(inFlight);
    return results;
  }

  /**
   * Publishes a prepared message until it is acknowledged; tracked (as with `trackStatus: true`)
   * when the task-type catalog says the type's workers track it (§9).
   */
  async deliver(prepared) {
    return this.deliverAsIs(await this.trackIfCataloged(prepared));
  }

  /**
   * `prepared`, tracked when the caller did not ask but the task-type catalog marks its type
   * tracked (§9); unknown (no catalog, no entry, a broken one, a failed read) changes nothing.
   * `lookups`, when given, keeps one answer per (queue, task) for a many-task enqueue.
   */
  async trackIfCataloged(prepared, lookups = null) {
    if (prepared.tracked) return prepared;
    let answer;
    if (lookups) {
      const key = catalogKey(prepared.queue, prepared.task);
      if (!lookups.has(key)) lookups.set(key, this.catalog.tracked(prepared.queue, prepared.task));
      answer = lookups.get(key);
    } else {
      answer = this.catalog.tracked(prepared.queue, prepared.task);
    }
    return (await answer) ? withTracking(prepared) : prepared;
  }

  /** Publishes `prepared` exactly as it is (see `deliver`); writes the queued record if tracked. */
  async deliverAsIs(prepared) {
    if (prepared.tracked) await this.statusBucket({ forEnqueue: true }).catch(() => null);
    let result;
    try {
      result = await this.publishUntilAcked(prepared);
    } catch (err) {
      // §7: the first delayed task of an installation creates the delayed stream, then
      // publishes again once.
      if (!(prepared.delayed && err.name === 'NoStream' && this.provision && await this.ensureDelayedStream())) throw err;
      result = await this.publishUntilAcked(prepared);
    }
    if (prepared.tracked && !result.duplicate) await this.recordQueued(prepared, result);
    return result;
  }

  async publishUntilAcked(prepared) {
    const size = prepared.payload.length + headerBlockSize(prepared.headers);
    const limit = this.nc.info?.max_payload;
    if (limit && size > limit) throw new TooLarge(prepared.task, size, limit);
    const hdrs = natsHeaders();
    for (const [name, value] of prepared.headers) hdrs.set(name, value);
    const what = { task: prepared.task, subject: prepared.subject, size };
    // PROTOCOL.md §3, "Publish errors": a timed-out ack leaves the outcome unknown (resend,
    // at most publishAttempts such sends); a reply that stored nothing (no responders during an
    // election, a JetStream 503) is resent after a pause until the retry budget — the request
    // timeout × publishAttempts from the first send — is spent, without using up attempts.
    const deadline = Date.now() + this.requestTimeoutMs * this.publishAttempts;
    let attempt = 1; // sends whose outcome was unknown, the one in flight included
    let retries = 0; // sends after replies that stored nothing
    let lookedForStream = false;
    for (;;) {
      if (this.nc.isClosed()) throw new NotConnected(prepared.task, attempt);
      let status = null;
      let body = '';
      try {
        const reply = await this.nc.request(prepared.subject, prepared.payload, { timeout: this.requestTimeoutMs, headers: hdrs });
        if (reply.headers?.hasError || (reply.headers && reply.headers.code >= 300)) status = String(reply.headers.code);
        body = reply.data?.length ? new TextDecoder().decode(reply.data) : '';
      } catch (err) {
        if (isNoResponders(err)) {
          status = '503';
        } else if (isTimeout(err)) {
          if (attempt >= this.publishAttempts || Date.now() >= deadline) break;
          attempt += 1; // the outcome is unknown: resend the same message (§3)
          continue;
        } else if (this.nc.isClosed() || err instanceof natsErrors.ClosedConnectionError) {
          throw new NotConnected(prepared.task, attempt);
        } else {
          throw new EnqueueError(`cannot publish task ${prepared.task}: ${err.message}`, { cause: err });
        }
      }
      const reply = classifyReply(what, status, body);
      if (reply.outcome === 'stored') {
        return {
          id: prepared.id,
          sequence: reply.sequence,
          duplicate: isDuplicate(reply.duplicate, attempt + retries, prepared.generatedId),
          stream: reply.stream,
        };
      }
      if (reply.outcome === 'give_up') throw reply.error;
      // No responders: once, ask whether the stream is really gone (then report it at once).
      if (reply.error.name === 'NoStream' && !lookedForStream) {
        lookedForStream = true;
        if (await this.streamMissing(prepared.subject, Math.min(this.requestTimeoutMs, 1000))) throw reply.error;
      }
      const pause = retryPauseMs(retries, deadline - Date.now());
      if (pause === null) throw reply.error;
      retries += 1;
      await sleep(pause);
    }
    throw new Timeout(prepared.task, prepared.id, this.requestTimeoutMs, this.publishAttempts);
  }

  /**
   * True only when the server says no stream captures `subject` (a task's or a delayed
   * task's): a publish that found no responders is that or an election. Any other answer (a
   * stream's name, an error, no answer within `waitMs`, no permission to ask) means it exists
   * or may.
   */
  async streamMissing(subject, waitMs) {
    const notFound = (err) => err?.name === 'StreamNotFoundError' || /no stream matches subject/i.test(String(err?.message));
    let timer;
    const waited = new Promise((resolve) => { timer = setTimeout(() => resolve(false), waitMs); });
    const asked = this.jsm()
      .then((jsm) => jsm.streams.find(subject))
      .then(() => false, notFound);
    try {
      return await Promise.race([asked, waited]);
    } finally {
      clearTimeout(timer);
    }
  }

  async jsm() {
    // No JetStream account check ($JS.API.INFO): the generated producer permissions do not
    // allow it (k8s/nats/permissions.conf), and every call below reports its own failure.
    this.manager ??= await jetstreamManager(this.nc, { checkAPI: false });
    return this.manager;
  }

  /** Creates the delayed-task stream with §7's settings; false when it cannot. */
  async ensureDelayedStream() {
    const jsm = await this.jsm();
    let replicas = 1;
    let window = 2 * 60 * 1000 * NANOS_PER_MS;
    try {
      const info = await jsm.streams.info(this.subjects.tasksStream);
      replicas = info.config.num_replicas || replicas;
      window = info.config.duplicate_window || window;
    } catch { /* defaults */ }
    try {
      await jsm.streams.add({
        name: this.subjects.delayedStream,
        description: 'jetq delayed tasks waiting for their due time',
        subjects: [this.subjects.allDelayed],
        retention: 'limits',
        storage: 'file',
        discard: 'new',
        max_age: 0,
        max_msgs: -1,
        max_bytes: -1,
        duplicate_window: window,
        num_replicas: replicas,
        allow_direct: true,
      });
    } catch (err) {
      if (err?.api_error?.err_code !== 10058 && !/already in use/.test(err?.message ?? '')) return false;
    }
    return true;
  }

  /** Creates the status bucket and artifact store streams with §8's settings. */
  async ensureStatusStores() {
    const jsm = await this.jsm();
    const ttl = this.statusTtlMs * NANOS_PER_MS;
    const status = this.subjects.statusBucket;
    const artifacts = this.subjects.artifactsBucket;
    const configs = [
      {
        name: `KV_${status}`, description: 'jetq: status, progress and results of tracked tasks',
        subjects: [`$KV.${status}.>`], max_msgs_per_subject: 1, max_age: ttl, storage: 'file',
        discard: 'new', allow_rollup_hdrs: true, deny_delete: true, deny_purge: false,
        allow_direct: true, num_replicas: this.replicas,
      },
      {
        name: `OBJ_${artifacts}`, description: 'jetq: artifacts of tracked tasks',
        subjects: [`$O.${artifacts}.C.>`, `$O.${artifacts}.M.>`], max_age: ttl,
        max_bytes: this.artifactsMaxBytes, storage: 'file', discard: 'new',
        allow_rollup_hdrs: true, allow_direct: true, num_replicas: this.replicas,
      },
    ];
    for (const config of configs) {
      try {
        await jsm.streams.add(config);
      } catch (err) {
        if (err?.api_error?.err_code !== 10058 && !/already in use/.test(err?.message ?? '')) throw err;
      }
    }
  }

  /** The status bucket; created first when missing and provisioning is on (§8). */
  async statusBucket({ forEnqueue = false } = {}) {
    if (this.kv) return this.kv;
    if (forEnqueue && Date.now() < this.kvFailedUntil) throw new StatusUnavailable('the status bucket was missing moments ago');
    const bucket = this.subjects.statusBucket;
    try {
      const jsm = await this.jsm();
      let info;
      try {
        info = await jsm.streams.info(`KV_${bucket}`);
      } catch (err) {
        if (!this.provision) throw err;
        await this.ensureStatusStores();
        info = await jsm.streams.info(`KV_${bucket}`);
      }
      // Direct gets when the bucket allows them (§8 creates it so): a producer may read records
      // only that way with the generated permissions.
      this.kv = await new Kvm(this.nc).open(bucket, { allow_direct: Boolean(info.config.allow_direct) });
      return this.kv;
    } catch (err) {
      this.kvFailedUntil = Date.now() + REOPEN_AFTER_MS;
      throw new StatusUnavailable(`the jetq status store ${bucket} is not available: ${err.message}`, { cause: err });
    }
  }

  /**
   * The producer's `queued` write (§8): compare-and-set; skipped when the record is this task's
   * or a later one's; replaces an earlier task's record, terminal or not. Best effort.
   */
  async recordQueued(prepared, result) {
    try {
      const kv = await this.statusBucket({ forEnqueue: true });
      const key = statusKey(prepared.id);
      const sequence = prepared.delayed ? undefined : result.sequence;
      const now = formatTimestamp(nowMicros());
      const record = {
        id: prepared.id, queue: prepared.queue, task: prepared.task, state: 'queued',
        ...(sequence !== undefined ? { sequence } : {}), attempt: 0,
        enqueued_at: prepared.enqueuedAt, updated_at: now,
        transitions: [{ state: 'queued', attempt: 0, at: now }],
      };
      const bytes = JSON.stringify(record);
      for (let round = 0; round < CAS_ROUNDS; round += 1) {
        const entry = await kv.get(key);
        if (entry && entry.operation === 'PUT') {
          let existing = null;
          try { existing = entry.json(); } catch { existing = null; }
          const known = Number.isInteger(existing?.sequence) ? existing.sequence : null;
          const enqueuedAt = parseTimestamp(existing?.enqueued_at ?? '');
          const ahead = sequence !== undefined
            ? known !== null && known >= sequence
            : known !== null && enqueuedAt !== null && enqueuedAt === parseTimestamp(prepared.enqueuedAt);
          if (ahead) return;
        }
        try {
          if (entry) await kv.update(key, bytes, entry.revision);
          else await kv.create(key, bytes);
          return;
        } catch (err) {
          if (/wrong last sequence|10071|key exists/i.test(`${err?.message} ${err?.api_error?.err_code}`)) continue;
          throw err;
        }
      }
      throw new Error('the record kept changing while it was written');
    } catch (err) {
      process.emitWarning(`jetq: task ${prepared.id} queued, but its queued status was not recorded: ${err.message}`);
    }
  }

  /** The status record of task `id` (§8), or null: unknown id, untracked, or expired. */
  async status(id) {
    const kv = await this.statusBucket();
    const entry = await kv.get(statusKey(id));
    if (!entry || entry.operation !== 'PUT') return null;
    return decode(id, entry);
  }

  /**
   * Every version of task `id`'s record from now on (the current one first), ending after a
   * terminal state. Stop early with `break`; bound it yourself.
   */
  async* watch(id) {
    const kv = await this.statusBucket();
    const watcher = await kv.watch({ key: statusKey(id) });
    try {
      for await (const entry of watcher) {
        if (entry.operation !== 'PUT') continue;
        const record = decode(id, entry);
        yield record;
        if (isTerminal(record.state)) return;
      }
    } finally {
      watcher.stop();
    }
  }

  /** Waits for a terminal record of task `id`; WaitTimeout after `timeoutMs`. */
  async wait(id, timeoutMs) {
    let last = null;
    let timer;
    const kv = await this.statusBucket();
    const watcher = await kv.watch({ key: statusKey(id) });
    const expired = new Promise((resolve) => {
      timer = setTimeout(() => { watcher.stop(); resolve(); }, timeoutMs);
    });
    const watched = (async () => {
      for await (const entry of watcher) {
        if (entry.operation !== 'PUT') continue;
        last = decode(id, entry);
        if (isTerminal(last.state)) return last;
      }
      return null;
    })();
    try {
      const done = await Promise.race([watched, expired]);
      if (done) return done;
      throw new WaitTimeout(id, timeoutMs, last);
    } finally {
      clearTimeout(timer);
      watcher.stop();
    }
  }
}

function decode(id, entry) {
  try {
    const record = entry.json();
    if (record === null || typeof record !== 'object' || typeof record.state !== 'string') throw new Error('not a status record');
    return record;
  } catch (err) {
    throw new StatusCorrupt(`the status record of task ${id} is not valid: ${err.message}`);
  }
}
