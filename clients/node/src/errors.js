// Typed errors of the jetq Node.js producer: one class per outcome docs/PROTOCOL.md §3 names,
// so a route handler can tell a caller's bug from a full queue from an unknown outcome.

/** Base class of every error of this package. */
export class JetqError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Base class of everything that stops a task from being enqueued. */
export class EnqueueError extends JetqError {}

/** A queue, task or prefix name that cannot be a subject token (§1). */
export class InvalidName extends EnqueueError {
  /** @param {'queue'|'task'|'prefix'} kind @param {string} value @param {string} reason */
  constructor(kind, value, reason) {
    const text = { queue: 'queue name', task: 'task name', prefix: 'subject prefix' }[kind];
    super(`invalid ${text} ${JSON.stringify(value)}: ${reason} (allowed: 1-64 characters of A-Z a-z 0-9 _ -)`);
    this.kind = kind;
    this.value = value;
    this.reason = reason;
  }
}

/** An idempotency key that cannot be a Nats-Msg-Id, or one of the reserved ids (§3). */
export class InvalidKey extends EnqueueError {
  /** @param {string} value @param {string} reason */
  constructor(value, reason) {
    super(`invalid idempotency key ${JSON.stringify(value)}: ${reason}`);
    this.value = value;
    this.reason = reason;
  }
}

/** An option out of range (maxAttempts, timeoutMs, traceparent, delay). */
export class InvalidOption extends EnqueueError {
  constructor(option, problem) {
    super(`invalid ${option}: ${problem}`);
    this.option = option;
    this.problem = problem;
  }
}

/**
 * A priority that is not one of the levels `high`, `normal`, `low` (§12); nothing was sent.
 * `message` and `reason` are the text every jetq producer gives.
 */
export class InvalidPriority extends InvalidOption {
  /** @param {unknown} value */
  constructor(value) {
    const quoted = typeof value === 'string' ? JSON.stringify(value) : String(value);
    const reason = `unknown priority ${quoted}: the levels are "high", "normal" and "low"`;
    super('priority', reason);
    this.message = reason;
    this.value = value;
    this.reason = reason;
  }
}

/** The arguments cannot be encoded as JSON. */
export class SerializeError extends EnqueueError {}

/** The delay is longer than the producer's maximum (30 days by default); nothing was sent. */
export class DelayTooLong extends EnqueueError {
  constructor(task, delayMs, maxMs) {
    super(`task ${task}: a delay of ${delayMs} ms is longer than the maximum of ${maxMs} ms`);
    this.task = task;
    this.delayMs = delayMs;
    this.maxMs = maxMs;
  }
}

/** Payload plus header block exceed the server's max_payload, or the stream's max_msg_size. */
export class TooLarge extends EnqueueError {
  constructor(task, size, limit, description = '') {
    super(`task ${task} is ${size} bytes, over the server's limit (${limit ?? description})`);
    this.task = task;
    this.size = size;
    this.limit = limit;
  }
}

/** The task stream is full (err_code 10077): nothing was queued; try later with the same key. */
export class StreamFull extends EnqueueError {
  constructor(task, description) {
    super(`the task stream is full and refused task ${task}: ${description}`);
    this.task = task;
    this.description = description;
  }
}

/** No stream captured the subject on any attempt (no responders): not provisioned, or no leader. */
export class NoStream extends EnqueueError {
  constructor(subject) {
    super(`no stream accepts subject ${subject}: the jetq stream does not exist or has no leader`);
    this.subject = subject;
  }
}

/** Not connected: the task was not acknowledged. */
export class NotConnected extends EnqueueError {
  constructor(task, attempts) {
    super(`not connected to NATS; task ${task} was not acknowledged after ${attempts} attempt(s)`);
    this.task = task;
    this.attempts = attempts;
  }
}

/** No ack after every attempt: the outcome is unknown; retry with the same key. */
export class Timeout extends EnqueueError {
  constructor(task, id, timeoutMs, attempts) {
    super(`no acknowledgement for task ${task} (id ${id}) within ${timeoutMs} ms after ${attempts} attempt(s): it may or may not be queued; retry with the same key`);
    this.task = task;
    this.id = id;
    this.timeoutMs = timeoutMs;
    this.attempts = attempts;
  }
}

/** The server refused the task for another reason; `code` and `errCode` as it sent them. */
export class Rejected extends EnqueueError {
  constructor(task, description, code = null, errCode = null) {
    super(`the server rejected task ${task}: ${description} (code ${code}, err_code ${errCode})`);
    this.task = task;
    this.description = description;
    this.code = code;
    this.errCode = errCode;
  }
}

/** Base class of status read errors. */
export class StatusError extends JetqError {}
/** The status bucket does not exist (no tracked task ran or was enqueued here). */
export class StatusUnavailable extends StatusError {}
/** A record that is not status JSON. */
export class StatusCorrupt extends StatusError {}
/** `wait` ran out of time; `last` is the last record seen (or null). */
export class WaitTimeout extends StatusError {
  constructor(id, timeoutMs, last) {
    super(`task ${id} did not finish within ${timeoutMs} ms (last state: ${last?.state ?? 'none'})`);
    this.id = id;
    this.timeoutMs = timeoutMs;
    this.last = last;
  }
}
