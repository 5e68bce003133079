// The wire protocol of docs/PROTOCOL.md (version 1.5) as pure functions: names, keys, ids,
// timestamps, subjects, the message a task becomes, status keys, and what a publish reply means.
// Nothing here talks to a server; producer.js does.

import { randomBytes } from 'node:crypto';
import {
  DelayTooLong, InvalidKey, InvalidName, InvalidOption, InvalidPriority, NoStream, Rejected,
  SerializeError, StreamFull, TooLarge,
} from './errors.js';

export const PROTOCOL_VERSION = '1.5';
export const MAX_NAME_LEN = 64;
export const MAX_KEY_LEN = 256;
/** Ids jetq writes itself (§3, "Task ids and reserved ids"). */
export const RESERVED_KEY_PREFIXES = ['replay:', 'delayed:', 'dead:'];
/** The longest delay accepted unless configured otherwise (§7): 30 days. */
export const DEFAULT_MAX_DELAY_MS = 30 * 24 * 3600 * 1000;
/** JetStream err_codes of §3's table. */
export const STREAM_STORE_FAILED = 10077;
export const MESSAGE_EXCEEDS_MAXIMUM = 10054;

const FIRE_ID = /^[A-Za-z0-9_-]{1,64}:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$/;
// Unicode White_Space (what "whitespace" means in §1's reasons).
const WHITESPACE = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u;

/**
 * Throws InvalidName unless `value` matches [A-Za-z0-9_-]{1,64} (§1); the reason is the first
 * rule broken, in the order the vectors pin (length in UTF-8 bytes before the character set).
 * @param {'queue'|'task'|'prefix'} kind @param {string} value
 */
export function validateName(kind, value) {
  if (typeof value !== 'string') throw new InvalidName(kind, String(value), 'it is not a string');
  if (value === '') throw new InvalidName(kind, value, 'it is empty');
  if (Buffer.byteLength(value, 'utf8') > MAX_NAME_LEN) throw new InvalidName(kind, value, 'it is too long');
  for (const char of value) {
    if (/^[A-Za-z0-9_-]$/.test(char)) continue;
    if (char === '.') throw new InvalidName(kind, value, "'.' would split it into two subject tokens");
    if (char === '*' || char === '>') throw new InvalidName(kind, value, "'*' and '>' are subject wildcards");
    if (WHITESPACE.test(char)) throw new InvalidName(kind, value, 'whitespace is not allowed in subjects');
    throw new InvalidName(kind, value, 'it contains a character outside the allowed set');
  }
}

/** True if `id` has the shape of a schedule's fire id, `<name>:<YYYY-MM-DDTHH:MM:SSZ>`. */
export function isFireId(id) {
  return FIRE_ID.test(id);
}

/** Throws InvalidKey unless `value` is a usable idempotency key (§3). @param {string} value */
export function validateKey(value) {
  if (typeof value !== 'string') throw new InvalidKey(String(value), 'it is not a string');
  if (value === '') throw new InvalidKey(value, 'it is empty');
  if (Buffer.byteLength(value, 'utf8') > MAX_KEY_LEN) throw new InvalidKey(value, 'it is longer than 256 bytes');
  if (!/^[!-~]+$/.test(value)) throw new InvalidKey(value, 'only printable ASCII without spaces is allowed');
  if (RESERVED_KEY_PREFIXES.some((prefix) => value.startsWith(prefix))) {
    throw new InvalidKey(value, 'it starts with a prefix jetq reserves (replay:, delayed:, dead:)');
  }
  if (isFireId(value)) {
    throw new InvalidKey(value, "it has the form of a schedule's fire id (<name>:<YYYY-MM-DDTHH:MM:SSZ>)");
  }
}

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** A fresh ULID: 48 bits of milliseconds and 80 random bits, 26 Crockford base-32 characters. */
export function ulid(nowMs = Date.now()) {
  let value = (BigInt(nowMs) << 80n) | BigInt('0x' + randomBytes(10).toString('hex'));
  let out = '';
  for (let i = 0; i < 26; i += 1) {
    out = CROCKFORD[Number(value & 31n)] + out;
    value >>= 5n;
  }
  return out;
}

// ---- Timestamps (§3, "Timestamps"): instants are BigInt microseconds since the epoch. ----

const TIMESTAMP = /^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))$/;

/**
 * Reads a timestamp in any form readers accept; null for anything else.
 * @param {string} text @returns {bigint|null} microseconds since the epoch
 */
export function parseTimestamp(text) {
  const m = typeof text === 'string' ? TIMESTAMP.exec(text) : null;
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) return null;
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(ms);
  if (check.getUTCFullYear() !== year || check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day) return null;
  let micros = BigInt(ms) * 1000n + BigInt(((m[7] ?? '') + '000000').slice(0, 6));
  if (!m[8]) {
    const hours = Number(m[10]);
    const minutes = Number(m[11]);
    if (hours > 23 || minutes > 59) return null;
    const offset = BigInt(hours * 3600 + minutes * 60) * 1000000n;
    micros = m[9] === '+' ? micros - offset : micros + offset;
  }
  return micros;
}

/** The producers' form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`. @param {bigint} micros */
export function formatTimestamp(micros) {
  const ms = micros / 1000n;
  const iso = new Date(Number(ms)).toISOString(); // ...T07:00:00.123Z
  const fraction = String(((micros % 1000000n) + 1000000n) % 1000000n).padStart(6, '0');
  return `${iso.slice(0, 19)}.${fraction}Z`;
}

/** Now, in microseconds (milliseconds from the clock, padded). */
export function nowMicros() {
  return BigInt(Date.now()) * 1000n;
}

/** A Date, a timestamp string or microseconds, as microseconds. */
export function toMicros(at) {
  if (typeof at === 'bigint') return at;
  if (at instanceof Date) return BigInt(at.getTime()) * 1000n;
  if (typeof at === 'string') {
    const parsed = parseTimestamp(at);
    if (parsed === null) throw new InvalidOption('at', `${JSON.stringify(at)} is not an RFC 3339 time`);
    return parsed;
  }
  throw new InvalidOption('at', 'expected a Date, an RFC 3339 string or microseconds (bigint)');
}

// ---- Priorities within a queue (§12) ----

/** The levels, highest first. */
export const PRIORITIES = Object.freeze(['high', 'normal', 'low']);
/** The header repeating a `high` or `low` task's level. */
export const PRIORITY_HEADER = 'Jetq-Priority';

/**
 * The level named by `value` (`'high'`, `'normal'` or `'low'` exactly; undefined or null is
 * `'normal'`). Throws InvalidPriority for anything else.
 */
export function parsePriority(value) {
  if (value === undefined || value === null) return 'normal';
  if (typeof value === 'string' && PRIORITIES.includes(value)) return value;
  throw new InvalidPriority(value);
}

/** The subject token of `queue` at `level`: the queue for `normal`, `<queue>~<level>` else. */
export function queueToken(queue, level) {
  const parsed = parsePriority(level);
  return parsed === 'normal' ? queue : `${queue}~${parsed}`;
}

/**
 * A subject's queue token split into `{queue, level}`; null for a level that does not exist
 * (`~urgent`, `~normal`).
 */
export function splitQueueToken(token) {
  const at = token.indexOf('~');
  if (at < 0) return { queue: token, level: 'normal' };
  const queue = token.slice(0, at);
  const level = token.slice(at + 1);
  return queue !== '' && (level === 'high' || level === 'low') ? { queue, level } : null;
}

// ---- Subjects and objects (§2, §7, §8) ----

export class Subjects {
  /** @param {string} prefix */
  constructor(prefix = 'jetq') {
    validateName('prefix', prefix);
    this.prefix = prefix;
    const upper = prefix.toUpperCase().replaceAll('-', '_');
    this.tasksStream = `${upper}_TASKS`;
    this.delayedStream = `${upper}_DELAYED`;
    this.statusBucket = `${upper}_STATUS`;
    this.artifactsBucket = `${upper}_ARTIFACTS`;
  }

  task(queue, task) { return `${this.prefix}.task.${queue}.${task}`; }

  /** The task subject of `queue` at a priority level (§12): `<prefix>.task.<queue>~high.<task>`. */
  taskAt(queue, level, task) { return this.task(queueToken(queue, level), task); }

  delayed(dueSecond, queue, task) { return `${this.prefix}.delayed.${dueSecond}.${queue}.${task}`; }

  get allDelayed() { return `${this.prefix}.delayed.*.*.*`; }
}

/** The status bucket key of a task id (§8, "Key encoding"). */
export function statusKey(id) {
  if (id === '') return '=';
  let out = '';
  for (const byte of Buffer.from(id, 'utf8')) {
    const char = String.fromCharCode(byte);
    out += /^[A-Za-z0-9_-]$/.test(char) ? char : `=${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

// ---- The message of a task (§3, §7) ----

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** Header block size as the server counts it: NATS/1.0\r\n, Name: value\r\n each, \r\n. */
export function headerBlockSize(headers) {
  let size = 'NATS/1.0\r\n'.length + 2;
  for (const [name, value] of headers) size += Buffer.byteLength(`${name}: ${value}\r\n`, 'utf8');
  return size;
}

/**
 * The exact message of a task: subject, payload bytes and headers in order.
 *
 * options: key, maxAttempts, timeoutMs (fractions allowed: rounded down, at least 1),
 * traceparent, tracestate, trackStatus, delayMs or at (Date | RFC 3339 string | bigint
 * microseconds), json (the payload already encoded, instead of `args`), maxDelayMs, now (bigint
 * microseconds, for tests), priority (`'high'`, `'normal'` or `'low'`, §12: the level's subject
 * `<queue>~high` and the `Jetq-Priority` header; anything else throws InvalidPriority).
 */
export function prepare(subjects, queue, task, args, options = {}) {
  validateName('queue', queue);
  validateName('task', task);
  if (options.key !== undefined && options.key !== null) validateKey(options.key);
  const priority = parsePriority(options.priority);
  const token = queueToken(queue, priority);
  let text;
  if (options.json !== undefined) {
    text = typeof options.json === 'string' ? options.json : Buffer.from(options.json).toString('utf8');
    try { JSON.parse(text); } catch (err) { throw new SerializeError(`the json of task ${task} is not JSON: ${err.message}`); }
  } else {
    try { text = JSON.stringify(args === undefined ? null : args); } catch (err) {
      throw new SerializeError(`cannot serialize the arguments of task ${task} to JSON: ${err.message}`);
    }
    if (text === undefined) throw new SerializeError(`the arguments of task ${task} are not JSON (a function or symbol)`);
  }
  const headers = [];
  const generatedId = options.key === undefined || options.key === null;
  const id = generatedId ? ulid() : options.key;
  const now = options.now ?? nowMicros();
  headers.push(['Nats-Msg-Id', id]);
  headers.push(['Jetq-Enqueued-At', formatTimestamp(now)]);
  if (options.maxAttempts !== undefined) {
    if (!Number.isInteger(options.maxAttempts) || options.maxAttempts < 1 || options.maxAttempts > 4294967295) {
      throw new InvalidOption('maxAttempts', 'must be an integer of at least 1');
    }
    headers.push(['Jetq-Max-Attempts', String(options.maxAttempts)]);
  }
  if (options.timeoutMs !== undefined) {
    if (typeof options.timeoutMs !== 'number' || !Number.isFinite(options.timeoutMs) || options.timeoutMs <= 0) {
      throw new InvalidOption('timeoutMs', 'must be a positive number of milliseconds');
    }
    headers.push(['Jetq-Timeout-Ms', String(Math.max(1, Math.floor(options.timeoutMs)))]);
  }
  if (options.trackStatus) headers.push(['Jetq-Track-Status', '1']);
  if (priority !== 'normal') headers.push([PRIORITY_HEADER, priority]);
  if (options.traceparent) {
    if (!TRACEPARENT.test(options.traceparent) || options.traceparent.startsWith('ff')) {
      throw new InvalidOption('traceparent', `${JSON.stringify(options.traceparent)} is not a W3C traceparent`);
    }
    headers.push(['traceparent', options.traceparent]);
    if (options.tracestate) headers.push(['tracestate', options.tracestate]);
  }
  let subject = subjects.task(token, task);
  let delayed = false;
  let due = null;
  if (options.delayMs !== undefined || options.at !== undefined) {
    if (options.delayMs !== undefined && (typeof options.delayMs !== 'number' || !(options.delayMs >= 0))) {
      throw new InvalidOption('delayMs', 'must be a number of milliseconds, 0 or more');
    }
    due = options.at !== undefined ? toMicros(options.at) : now + BigInt(Math.round(options.delayMs * 1000));
    const delayMs = Number(due - now) / 1000;
    const maxMs = options.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
    if (delayMs > maxMs) throw new DelayTooLong(task, delayMs, maxMs);
    if (due > now) {
      // §7: the due second (rounded down) in the subject, the due time in Jetq-Not-Before.
      const second = due >= 0n ? due / 1000000n : (due - 999999n) / 1000000n;
      subject = subjects.delayed(second, token, task);
      headers.push(['Jetq-Not-Before', formatTimestamp(due)]);
      delayed = true;
    }
  }
  return {
    subject, payload: Buffer.from(text, 'utf8'), headers, id, generatedId, delayed, due,
    tracked: Boolean(options.trackStatus), queue, task, enqueuedAt: formatTimestamp(now), priority,
  };
}

// ---- What a publish reply means (§3, "The publish outcome") ----

/**
 * Classifies a publish reply: `{outcome: 'stored', sequence, duplicate, stream}`,
 * `{outcome: 'retry', error}` (nothing stored; resend the same message after a pause) or
 * `{outcome: 'give_up', error}`. `duplicate` is the server's flag: the caller applies the
 * generated-id rule.
 * @param {{task: string, subject: string, size: number}} what
 * @param {string|null} status the reply's status code when it has one (503: no responders)
 * @param {string} body
 */
export function classifyReply(what, status, body) {
  if (status === '503' && !body) return { outcome: 'retry', error: new NoStream(what.subject) };
  let parsed = {};
  if (body) {
    try { parsed = JSON.parse(body); } catch {
      return { outcome: 'give_up', error: new Rejected(what.task, `unreadable publish ack: ${body.slice(0, 200)}`) };
    }
  }
  if (parsed === null || typeof parsed !== 'object') {
    return { outcome: 'give_up', error: new Rejected(what.task, `unexpected publish ack: ${body.slice(0, 200)}`) };
  }
  if (parsed.error && typeof parsed.error === 'object') {
    const { code = null, err_code: errCode = null, description = '' } = parsed.error;
    if (errCode === STREAM_STORE_FAILED && description.includes('maximum')) {
      return { outcome: 'give_up', error: new StreamFull(what.task, description) };
    }
    if (errCode === MESSAGE_EXCEEDS_MAXIMUM) {
      return { outcome: 'give_up', error: new TooLarge(what.task, what.size, null, description) };
    }
    const error = new Rejected(what.task, description, code, errCode);
    const retry = code === 503 && errCode !== STREAM_STORE_FAILED;
    return { outcome: retry ? 'retry' : 'give_up', error };
  }
  if (status !== null && status !== undefined && status !== '' && status !== '200') {
    return { outcome: 'give_up', error: new Rejected(what.task, 'status reply', Number(status)) };
  }
  if (!Number.isInteger(parsed.seq)) {
    return { outcome: 'give_up', error: new Rejected(what.task, `publish ack without a sequence: ${body.slice(0, 200)}`) };
  }
  return { outcome: 'stored', sequence: parsed.seq, duplicate: parsed.duplicate === true, stream: String(parsed.stream ?? '') };
}

/**
 * The pause in ms before resend number `retry` (0-based) after a `retry` reply, when
 * `remainingMs` of the retry budget are left: 250 ms doubling to at most 2 s, cut to what
 * remains so that the last resend happens as the budget ends; `null` when nothing remains
 * (vectors: `retry_pauses`).
 */
export function retryPauseMs(retry, remainingMs) {
  if (!(remainingMs > 0)) return null;
  return Math.min(250 * 2 ** Math.min(retry, 8), 2000, remainingMs);
}

export function isDuplicate(ackedDuplicate, attempt, generatedId) {
  return ackedDuplicate && !(attempt > 1 && generatedId);
}

/** True for the four terminal states (§8). */
export function isTerminal(state) {
  return ['succeeded', 'failed', 'dead', 'cancelled'].includes(state);
}
