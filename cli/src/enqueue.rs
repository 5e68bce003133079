//! Enqueueing an untyped task from the command line or the dashboard, through the producer.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use jetq_contract::Priority;
use jetq_producer::{EnqueueOptions, RawTask};
use serde::{Serialize, Serializer};

use crate::{admin::Admin, error::AdminError};

/// When an enqueued task may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// At once.
    Now,
    /// After this delay (released by `jetq-scheduler`).
    In(Duration),
    /// At this time (released by `jetq-scheduler`).
    At(SystemTime),
}

/// One task to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueRequest {
    /// Queue name.
    pub queue: String,
    /// Task wire name.
    pub task: String,
    /// The JSON arguments.
    pub args: serde_json::Value,
    /// Idempotency key (becomes the task id).
    pub key: Option<String>,
    /// When it may run.
    pub when: When,
    /// Per-task override of the maximum attempts.
    pub max_attempts: Option<u32>,
    /// Per-task override of the per-attempt timeout.
    pub timeout: Option<Duration>,
    /// The task's priority level within its queue (PROTOCOL §12): a level other than
    /// `normal` is published to `<prefix>.task.<queue>~<level>.<task>` with `Jetq-Priority`.
    pub priority: Priority,
}

impl EnqueueRequest {
    /// A task to run now with default options.
    pub fn new(queue: impl Into<String>, task: impl Into<String>, args: serde_json::Value) -> Self {
        EnqueueRequest {
            queue: queue.into(),
            task: task.into(),
            args,
            key: None,
            when: When::Now,
            max_attempts: None,
            timeout: None,
            priority: Priority::Normal,
        }
    }
}

/// What the server acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnqueueOutcome {
    /// The task id.
    pub id: String,
    /// Queue.
    pub queue: String,
    /// Task wire name.
    pub task: String,
    /// Its priority level: `high`, `normal` or `low`.
    #[serde(serialize_with = "level_name")]
    pub priority: Priority,
    /// Its task subject, the level's (`<prefix>.task.<queue>[~<level>].<task>`): where it
    /// waits for a worker (a delayed task is released there when due).
    pub subject: String,
    /// The stream that stored it (the task stream, or the delayed-task stream).
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// True if a task with the same id was already stored within the duplicate window.
    pub duplicate: bool,
    /// For a delayed task: when it becomes runnable, RFC 3339 UTC.
    pub not_before: Option<String>,
}

impl Admin {
    /// Enqueues one task; returns only after the server acknowledged it.
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome, AdminError> {
        let payload = serde_json::to_vec(&request.args)
            .map_err(|err| AdminError::Invalid(format!("cannot encode the arguments: {err}")))?;
        let mut options = EnqueueOptions::new();
        if let Some(key) = request.key {
            options = options.key(key);
        }
        if let Some(attempts) = request.max_attempts {
            options = options.max_attempts(attempts);
        }
        if let Some(timeout) = request.timeout {
            options = options.timeout(timeout);
        }
        options = options.priority(request.priority);
        let raw = RawTask {
            queue: request.queue.clone(),
            task: request.task.clone(),
            payload: Bytes::from(payload),
            options,
        };
        let now = SystemTime::now();
        let due = match request.when {
            When::Now => None,
            When::In(delay) if delay.is_zero() => None,
            When::In(delay) => Some(now + delay),
            When::At(at) if at <= now => None,
            When::At(at) => Some(at),
        };
        let producer = self.producer();
        let enqueued = match (request.when, due) {
            (_, None) => producer.enqueue_raw(raw).await?,
            (When::In(delay), Some(_)) => producer.enqueue_raw_in(delay, raw).await?,
            (_, Some(at)) => producer.enqueue_raw_at(at, raw).await?,
        };
        let subjects = self.subjects();
        let stream = match due {
            None => subjects.tasks_stream(),
            Some(_) => subjects.delayed_stream(),
        };
        let subject = subjects.task_at(&request.queue, request.priority, &request.task);
        Ok(EnqueueOutcome {
            id: enqueued.id,
            queue: request.queue,
            task: request.task,
            priority: request.priority,
            subject,
            stream,
            sequence: enqueued.sequence,
            duplicate: enqueued.duplicate,
            not_before: due.map(jetq_contract::time::format),
        })
    }
}

/// A level as JSON: its wire name.
fn level_name<S: Serializer>(level: &Priority, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(level.as_str())
}
