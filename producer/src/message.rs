//! A task's wire message built without a connection: subject, id, headers and payload exactly as
//! [`Producer::enqueue`](crate::Producer::enqueue) would publish them (PROTOCOL.md §3, or §7 for
//! a delayed task), for writers that store the message instead of sending it — the
//! transactional outbox (`jetq-outbox`) writes it into a database row that a relay publishes
//! later.
//!
//! Names, keys, subjects, headers, the id and the `send` span (whose W3C context becomes the
//! message's `traceparent`) come from the same contract functions the producer uses. What a
//! connected producer adds and this cannot: the task-type catalog lookup (it needs NATS) and
//! the `queued` status record of a tracked task (the `Jetq-Track-Status` header is still set,
//! so workers record every later transition), and a unique key (taken in NATS before
//! publishing; refused here). A limit key is a header and is kept.

use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use bytes::Bytes;
use jetq_contract::{delayed, headers, Subjects, Task};

use crate::{telemetry, EnqueueError, EnqueueOptions};

/// One task message, ready to be stored or published.
///
/// ```
/// use jetq_producer::{message::TaskMessage, EnqueueOptions};
/// use jetq_contract::Subjects;
///
/// let message = TaskMessage::raw(
///     &Subjects::default(),
///     "emails",
///     "send_welcome",
///     br#"{"user":42}"#.to_vec().into(),
///     EnqueueOptions::new().key("welcome:42"),
///     None,
/// )
/// .unwrap();
/// assert_eq!(message.subject, "jetq.task.emails.send_welcome");
/// assert_eq!(message.id, "welcome:42");
/// assert!(message.headers.iter().any(|(name, _)| name == "Jetq-Enqueued-At"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// `<prefix>.task.<queue>.<task>`, or `<prefix>.delayed.<due second>.<queue>.<task>`.
    pub subject: String,
    /// The task id (`Nats-Msg-Id`): the caller's key, or a fresh ULID.
    pub id: String,
    /// Every header but `Nats-Msg-Id`, as (name, value) pairs in a stable order.
    pub headers: Vec<(String, String)>,
    /// The JSON arguments.
    pub payload: Bytes,
}

impl TaskMessage {
    /// The message of a typed task: its arguments serialized to JSON, its queue and name, and
    /// status tracking when the type asks for it. `due` makes it a delayed task (a time not in
    /// the future makes it an immediate one).
    pub fn typed<T: Task>(
        subjects: &Subjects,
        task: &T,
        options: EnqueueOptions,
        due: Option<SystemTime>,
    ) -> Result<TaskMessage, EnqueueError> {
        let (payload, options) = options.for_task(task)?;
        TaskMessage::raw(subjects, T::QUEUE, T::NAME, payload, options, due)
    }

    /// The message of an untyped task (JSON arguments for a queue and task name).
    pub fn raw(
        subjects: &Subjects,
        queue: &str,
        task: &str,
        payload: Bytes,
        options: EnqueueOptions,
        due: Option<SystemTime>,
    ) -> Result<TaskMessage, EnqueueError> {
        let mut options = options;
        let id = options.take_id(queue, task)?;
        let now = SystemTime::now();
        let due =
            due.filter(|at| at.duration_since(now).unwrap_or(Duration::ZERO) > Duration::ZERO);
        let token = options.queue_token(queue);
        let subject = match due {
            Some(at) => subjects.delayed(delayed::bucket_of(at), &token, task),
            None => subjects.task(&token, task),
        };
        let mut map = HeaderMap::new();
        map.insert(
            headers::ENQUEUED_AT,
            jetq_contract::time::format(now).as_str(),
        );
        options.write_headers(&mut map);
        if let Some(at) = due {
            map.insert(
                headers::NOT_BEFORE,
                jetq_contract::time::format(at).as_str(),
            );
        }
        if let Some(flow) = &options.flow {
            crate::producer::unique::add_headers(flow, &payload, &mut map)?;
            // A unique key is taken in NATS before publishing, which a writer without a
            // connection cannot do; the limit key is only a header and travels as such.
            if let Some(key) = map.get(jetq_contract::flow::UNIQUE_KEY) {
                return Err(EnqueueError::Unique {
                    task: task.to_owned(),
                    key: key.as_str().to_owned(),
                    reason: "unique keys need NATS at enqueue time and cannot be written to a \
                             transactional outbox; use an idempotency key (EnqueueOptions::key) \
                             or a unique constraint in your database"
                        .to_owned(),
                });
            }
        }
        let caller = options
            .traceparent
            .as_deref()
            .map(|parent| (parent, options.tracestate.as_deref()));
        // The `send` span of the producer: a child of the caller's current span, its context
        // injected into the headers. It ends here (the message is stored, not yet sent); the
        // relay's publish span links to it.
        let _span =
            telemetry::send_span(&subject, queue, task, &id, payload.len(), caller, &mut map);
        let mut headers: Vec<(String, String)> = map
            .iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |value| (name.to_string(), value.as_str().to_owned()))
            })
            .collect();
        headers.sort();
        Ok(TaskMessage {
            subject,
            id,
            headers,
            payload,
        })
    }
}
