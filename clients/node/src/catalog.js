// The producer's view of the task-type catalog (docs/PROTOCOL.md §9): what the workers handling a
// type published about it, read from the `<PREFIX>_CATALOG` KV bucket (key `<queue>.<task>`) and
// cached for 30 s, so that a type its workers track is tracked without the caller passing
// `trackStatus: true` — as the Rust producer (producer/src/catalog.rs) and the Python client
// (clients/python/src/jetq/catalog.py) do.
//
// Lookups never fail: a missing bucket, a missing or deleted entry, a read that fails
// (permissions, timeout) and a value that is not an entry all mean "unknown", and an unknown type
// is enqueued exactly as without a catalog.

import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';

/** How long an answer ("unknown" included) is reused, in milliseconds (§9). */
export const DEFAULT_CATALOG_TTL_MS = 30_000;

const MAX_U32 = 2 ** 32 - 1;
const MAX_U64 = 2 ** 64 - 1;
/** The headers `prepare` writes before `Jetq-Track-Status` (protocol.js); it goes right after them. */
const BEFORE_TRACK_STATUS = new Set(['Nats-Msg-Id', 'Jetq-Enqueued-At', 'Jetq-Max-Attempts', 'Jetq-Timeout-Ms']);

/** The catalog bucket of a prefix: `<PREFIX>_CATALOG` (`JETQ_CATALOG` by default). */
export function catalogBucket(subjects) {
  // Named from the upper-cased prefix (`-` as `_`) exactly as the status bucket is.
  return `${subjects.statusBucket.slice(0, -'_STATUS'.length)}_CATALOG`;
}

/** The catalog key of a task type: `<queue>.<task>` (both are §1 names: no encoding). */
export function catalogKey(queue, task) {
  return `${queue}.${task}`;
}

function isWithin(value, limit) {
  return Number.isInteger(value) && value >= 0 && value <= limit;
}

/**
 * The entry a catalog value holds, or null when it is not one: not UTF-8 JSON, not an object,
 * a field missing or of the wrong type. Unknown fields are ignored (later versions may add some).
 * @param {Uint8Array|string} raw
 * @returns {{queue: string, task: string, max_attempts: number, timeout_ms: number,
 *   tracked: boolean, updated_at: string} | null}
 */
export function parseCatalogEntry(raw) {
  let value;
  try {
    const text = typeof raw === 'string' ? raw : new TextDecoder('utf-8', { fatal: true }).decode(raw);
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const { queue, task, max_attempts: maxAttempts, timeout_ms: timeoutMs, tracked, updated_at: updatedAt } = value;
  if (typeof queue !== 'string' || typeof task !== 'string' || typeof updatedAt !== 'string') return null;
  if (typeof tracked !== 'boolean' || !isWithin(maxAttempts, MAX_U32) || !isWithin(timeoutMs, MAX_U64)) return null;
  return { queue, task, max_attempts: maxAttempts, timeout_ms: timeoutMs, tracked, updated_at: updatedAt };
}

/** The value a worker writes for `entry`: compact JSON in §9's field order. */
export function catalogEntryJson(entry) {
  return JSON.stringify({
    queue: entry.queue,
    task: entry.task,
    max_attempts: entry.max_attempts,
    timeout_ms: entry.timeout_ms,
    tracked: entry.tracked,
    updated_at: entry.updated_at,
  });
}

/**
 * `prepared` (from protocol.js `prepare`) as if the caller had asked to track it: `tracked`, and
 * `Jetq-Track-Status: 1` where `prepare` puts it, so the message is the one `trackStatus: true`
 * would have built. An already tracked message is returned as it is.
 */
export function withTracking(prepared) {
  if (prepared.tracked) return prepared;
  const headers = [...prepared.headers];
  let at = headers.findIndex(([name]) => !BEFORE_TRACK_STATUS.has(name));
  if (at < 0) at = headers.length;
  headers.splice(at, 0, ['Jetq-Track-Status', '1']);
  return { ...prepared, headers, tracked: true };
}

/** A cached reader of the task-type catalog of one prefix. */
export class Catalog {
  /**
   * @param {import('@nats-io/nats-core').NatsConnection} nc
   * @param {import('./protocol.js').Subjects} subjects
   * @param {{ttlMs?: number, requestTimeoutMs?: number}} [options] requestTimeoutMs bounds each
   *   read (stream info, get), so a catalog that does not answer delays an enqueue by at most that.
   */
  constructor(nc, subjects, { ttlMs = DEFAULT_CATALOG_TTL_MS, requestTimeoutMs = 2000 } = {}) {
    this.nc = nc;
    this.bucket = catalogBucket(subjects);
    this.ttlMs = ttlMs;
    this.requestTimeoutMs = requestTimeoutMs;
    /** The bucket once opened. */
    this.kv = null;
    /** When the bucket was last found missing or unreadable (performance.now() ms). */
    this.missingSince = null;
    /** key -> {at, answer}: `answer` is the promise of the entry (or null); `at` is null while it is read. */
    this.entries = new Map();
  }

  /**
   * What the workers published about `queue`/`task`, or null when nothing is known. Concurrent
   * lookups of one type share one read; the answer is reused for `ttlMs`.
   */
  entry(queue, task) {
    const key = catalogKey(queue, task);
    const cached = this.entries.get(key);
    if (cached && (cached.at === null || performance.now() - cached.at < this.ttlMs)) return cached.answer;
    const slot = { at: null, answer: null };
    slot.answer = this.read(key).then((found) => {
      slot.at = performance.now();
      return found;
    });
    this.entries.set(key, slot);
    return slot.answer;
  }

  /** Whether the workers of `queue`/`task` track its status (false when unknown). */
  async tracked(queue, task) {
    const found = await this.entry(queue, task);
    return found !== null && found.tracked;
  }

  async read(key) {
    const kv = await this.store();
    if (!kv) return null;
    let found;
    try {
      found = await kv.get(key);
    } catch {
      return null; // permissions, timeout: unknown
    }
    if (!found || found.operation !== 'PUT') return null; // missing, deleted or purged
    const entry = parseCatalogEntry(found.value);
    if (entry === null) process.emitWarning(`jetq: catalog entry ${key} of ${this.bucket} is not a task type: ignored`);
    return entry;
  }

  /** The bucket, opened once; a missing one is looked for again after `ttlMs`. */
  async store() {
    if (this.kv) return this.kv;
    if (this.missingSince !== null && performance.now() - this.missingSince < this.ttlMs) return null;
    try {
      // Stream info first: it says whether the bucket exists and whether it answers direct
      // gets: with the generated permissions a producer may do just these two (§9), so no
      // JetStream account check ($JS.API.INFO) either.
      const options = { timeout: this.requestTimeoutMs, checkAPI: false };
      const jsm = await jetstreamManager(this.nc, options);
      const info = await jsm.streams.info(`KV_${this.bucket}`);
      const js = jetstream(this.nc, options);
      this.kv = await new Kvm(js).open(this.bucket, { allow_direct: Boolean(info.config.allow_direct) });
      this.missingSince = null;
    } catch {
      this.missingSince = performance.now(); // missing bucket, permissions, timeout: unknown
    }
    return this.kv;
  }
}
