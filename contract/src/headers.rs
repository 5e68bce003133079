//! Header names of the wire contract. Header names are case-sensitive on the wire: other-language
//! producers must write them exactly as spelled here (see docs/PROTOCOL.md).

/// The task id, or the caller's idempotency key. JetStream drops a second message with the same
/// id inside the stream's duplicate window.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// When the task was enqueued, RFC 3339 in UTC (e.g. `2026-11-27T07:00:00.123456Z`).
pub const ENQUEUED_AT: &str = "Jetq-Enqueued-At";
/// Per-task override of the type's maximum number of attempts (decimal integer ≥ 1).
pub const MAX_ATTEMPTS: &str = "Jetq-Max-Attempts";
/// Per-task override of the type's per-attempt timeout, in milliseconds (decimal integer ≥ 1).
pub const TIMEOUT_MS: &str = "Jetq-Timeout-Ms";
/// The task's priority level within its queue (`high` or `low`; absent for `normal`). The
/// subject decides where a task waits (`<queue>~<level>`, see [`crate::Priority`]); this header
/// records the level on the task itself, so that its dead letter — whose subject names the
/// queue only — is replayed at the level it had.
pub const PRIORITY: &str = "Jetq-Priority";
/// W3C trace context: the parent span of the task's processing.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state, carried along with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// On a dead letter: the original task id (the dead letter's own `Nats-Msg-Id` differs).
pub const TASK_ID: &str = "Jetq-Task-Id";
/// On a dead letter: why it died (`exhausted`, `fatal`, `undecodable`, `unknown-task`,
/// `deliveries-exhausted`).
pub const DEAD_REASON: &str = "Jetq-Dead-Reason";
/// On a dead letter: the number of attempts made.
pub const ATTEMPTS: &str = "Jetq-Attempts";
/// On a dead letter: when it was written, RFC 3339 UTC.
pub const DEAD_AT: &str = "Jetq-Dead-At";
/// On a dead letter: the task's sequence in the task stream.
pub const TASK_SEQUENCE: &str = "Jetq-Task-Sequence";
/// On a dead letter: the failure record as compact JSON ([`crate::FailureRecord`]).
pub const FAILURE: &str = "Jetq-Failure";
/// On a dead letter whose task body did not fit in one message beside its failure record: the
/// name of the object in the `<PREFIX>_DEAD_PAYLOADS` object store that holds the body. The dead
/// letter's own body is then empty. See [`crate::dead`].
pub const PAYLOAD_OBJECT: &str = "Jetq-Payload-Object";
/// On a dead letter with [`PAYLOAD_OBJECT`]: the body's size in bytes.
pub const PAYLOAD_SIZE: &str = "Jetq-Payload-Size";

/// On a delayed task: the earliest time it may run, RFC 3339 UTC. The scheduler releases the task
/// to its task subject at (never before) this time. Kept on the released task.
pub const NOT_BEFORE: &str = "Jetq-Not-Before";
/// On a task enqueued by a periodic schedule: the schedule's name.
pub const SCHEDULE: &str = "Jetq-Schedule";
/// On a task enqueued by a periodic schedule: the fire time it stands for, RFC 3339 UTC with
/// seconds (the part of its `Nats-Msg-Id` after `<schedule>:`).
pub const FIRE_TIME: &str = "Jetq-Fire-Time";

/// The hot names above as [`HeaderName`](async_nats::header::HeaderName)s, for the per-task
/// paths of the producer and the worker: looking a header up (or inserting one) by `&str`
/// validates the name and copies a non-standard one into a fresh allocation every time.
///
/// ```
/// use async_nats::HeaderMap;
/// use jetq_contract::headers;
///
/// let mut map = HeaderMap::new();
/// map.insert(headers::ENQUEUED_AT, "2026-11-27T07:00:00.000000Z");
/// let value = map.get(headers::names::ENQUEUED_AT).map(|v| v.as_str());
/// assert_eq!(value, Some("2026-11-27T07:00:00.000000Z"));
/// ```
pub mod names {
    use async_nats::header::HeaderName;

    /// [`MSG_ID`](super::MSG_ID).
    pub const MSG_ID: HeaderName = HeaderName::from_static(super::MSG_ID);
    /// [`ENQUEUED_AT`](super::ENQUEUED_AT).
    pub const ENQUEUED_AT: HeaderName = HeaderName::from_static(super::ENQUEUED_AT);
    /// [`MAX_ATTEMPTS`](super::MAX_ATTEMPTS).
    pub const MAX_ATTEMPTS: HeaderName = HeaderName::from_static(super::MAX_ATTEMPTS);
    /// [`TIMEOUT_MS`](super::TIMEOUT_MS).
    pub const TIMEOUT_MS: HeaderName = HeaderName::from_static(super::TIMEOUT_MS);
    /// [`TRACEPARENT`](super::TRACEPARENT).
    pub const TRACEPARENT: HeaderName = HeaderName::from_static(super::TRACEPARENT);
    /// [`TRACESTATE`](super::TRACESTATE).
    pub const TRACESTATE: HeaderName = HeaderName::from_static(super::TRACESTATE);
    /// [`TRACK_STATUS`](crate::status::TRACK_STATUS).
    pub const TRACK_STATUS: HeaderName = HeaderName::from_static(crate::status::TRACK_STATUS);
}
