//! Per-enqueue options: idempotency key, per-task overrides, trace context.

use std::time::Duration;

/// Options of one enqueue. The defaults enqueue with a fresh id and the type's own settings.
///
/// ```
/// use jetq_producer::EnqueueOptions;
/// use std::time::Duration;
/// let options = EnqueueOptions::new()
///     .key("welcome-email:user-42")
///     .max_attempts(3)
///     .timeout(Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnqueueOptions {
    pub(crate) key: Option<String>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
    pub(crate) track_status: bool,
    /// The level within the queue (PROTOCOL §12).
    pub(crate) priority: jetq_contract::Priority,
    /// Unique key and limit key (docs/FLOW_CONTROL.md); boxed: most enqueues have neither.
    pub(crate) flow: Option<Box<crate::producer::unique::FlowOptions>>,
    /// The batch the task is a member of (`Jetq-Batch`, PROTOCOL §13); set by
    /// [`Batch`](crate::Batch), never by callers.
    pub(crate) batch: Option<std::sync::Arc<str>>,
}

impl EnqueueOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// A typed task's payload (its arguments as JSON) and these options with its type's status
    /// tracking added: what the producer and [`TaskMessage`](crate::message::TaskMessage) both
    /// start a typed task from.
    pub(crate) fn for_task<T: jetq_contract::Task>(
        mut self,
        task: &T,
    ) -> Result<(bytes::Bytes, Self), crate::EnqueueError> {
        let payload =
            serde_json::to_vec(task).map_err(|source| crate::EnqueueError::Serialize {
                task: T::NAME.to_owned(),
                source,
            })?;
        self.track_status |= T::options().track_status;
        Ok((bytes::Bytes::from(payload), self))
    }

    /// Checks the queue and task names and returns the task id: the idempotency key (checked,
    /// and taken out of the options) or a fresh ULID. The producer and
    /// [`TaskMessage`](crate::message::TaskMessage) both start a task here.
    pub(crate) fn take_id(
        &mut self,
        queue: &str,
        task: &str,
    ) -> Result<String, crate::EnqueueError> {
        use jetq_contract::{name, NameKind};
        name::validate(NameKind::Queue, queue)?;
        name::validate(NameKind::Task, task)?;
        match self.key.take() {
            Some(key) => {
                name::validate_key(&key)?;
                Ok(key)
            }
            None => Ok(ulid::Ulid::new().to_string()),
        }
    }

    /// Writes the per-task overrides these options carry (PROTOCOL.md §3: `Jetq-Max-Attempts`,
    /// `Jetq-Timeout-Ms`, at least 1 ms) and the status-tracking header, as both the producer
    /// and [`TaskMessage`](crate::message::TaskMessage) put them on the wire.
    pub(crate) fn write_headers(&self, map: &mut async_nats::HeaderMap) {
        use jetq_contract::headers;
        if let Some(attempts) = self.max_attempts {
            map.insert(headers::MAX_ATTEMPTS, attempts.to_string().as_str());
        }
        if let Some(timeout) = self.timeout {
            map.insert(
                headers::TIMEOUT_MS,
                timeout.as_millis().max(1).to_string().as_str(),
            );
        }
        if self.track_status {
            map.insert(jetq_contract::status::TRACK_STATUS, "1");
        }
        if self.priority != jetq_contract::Priority::Normal {
            map.insert(headers::PRIORITY, self.priority.as_str());
        }
        if let Some(batch) = &self.batch {
            map.insert(jetq_contract::workflow::names::BATCH, &**batch);
        }
    }

    /// The task's subject token for `queue`: the queue itself, or `<queue>~<level>` for a
    /// priority other than `normal`.
    pub(crate) fn queue_token<'q>(&self, queue: &'q str) -> std::borrow::Cow<'q, str> {
        self.priority.queue_token(queue)
    }

    /// An idempotency key: it becomes the task id (`Nats-Msg-Id`), and a second enqueue with
    /// the same key inside the stream's duplicate window is dropped by the server and reported
    /// as a duplicate.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The task's priority within its queue (default [`Priority::Normal`]): workers pull
    /// `high` tasks before `normal` ones and those before `low` ones, and a busy higher level
    /// still leaves the lower ones a share (docs/FLOW_CONTROL.md, "Priorities").
    ///
    /// ```
    /// use jetq_producer::{EnqueueOptions, Priority};
    /// let options = EnqueueOptions::new().priority(Priority::High);
    /// ```
    ///
    /// [`Priority::Normal`]: jetq_contract::Priority::Normal
    pub fn priority(mut self, priority: jetq_contract::Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Overrides the type's maximum number of attempts for this task.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Overrides the type's per-attempt timeout for this task.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Tracks this task's status even if its type does not (`TaskOptions::track_status`): the
    /// producer writes a `queued` record and sends `Jetq-Track-Status: 1`, so workers record each
    /// transition. For untyped tasks ([`crate::RawTask`]) this is the only way to opt in.
    ///
    /// ```
    /// let options = jetq_producer::EnqueueOptions::new().track_status();
    /// ```
    pub fn track_status(mut self) -> Self {
        self.track_status = true;
        self
    }

    /// A unique key: while a task of this type holds it (as its scope says), enqueueing the
    /// same key returns the holder's id with `duplicate: true` instead of a second task. Not
    /// bounded by the stream's duplicate window (docs/FLOW_CONTROL.md).
    pub fn unique(mut self, unique: crate::Unique) -> Self {
        self.flow.get_or_insert_with(Default::default).unique = Some(unique);
        self
    }

    /// The key a worker's per-key rate and concurrency limits count this task under
    /// (`Jetq-Limit-Key`, e.g. a tenant or user id; 1–128 bytes of printable ASCII).
    pub fn limit_key(mut self, key: impl Into<String>) -> Self {
        self.flow.get_or_insert_with(Default::default).limit_key = Some(key.into());
        self
    }

    /// Sets the W3C `traceparent` (and optional `tracestate`) the task's processing continues.
    ///
    /// Rarely needed: every enqueue already opens a `send` span under the caller's current
    /// `tracing` span and injects its context when an OpenTelemetry layer is installed. A valid
    /// value given here wins: it is written to the headers verbatim and becomes the `send`
    /// span's parent. An invalid value is ignored (the span's own context is sent instead).
    pub fn trace_context(
        mut self,
        traceparent: impl Into<String>,
        tracestate: Option<String>,
    ) -> Self {
        self.traceparent = Some(traceparent.into());
        self.tracestate = tracestate;
        self
    }
}

/// What the server acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The task id: the idempotency key if one was given, else a fresh ULID.
    pub id: String,
    /// The task's sequence number in the task stream (of the original, for a duplicate).
    pub sequence: u64,
    /// True if a task with the same id was already in the duplicate window and this one was
    /// dropped by the server.
    pub duplicate: bool,
}
