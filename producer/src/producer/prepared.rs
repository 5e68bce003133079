//! A task ready to publish: the subject, id and headers of its message decided once, so that
//! a resend after an ack timeout sends the very same message (and the server's duplicate
//! window recognises it).
//!
//! This is the per-task work on the enqueue path, so it avoids what it can of allocation:
//! typed tasks keep their `&'static` queue and task names, header names are static, and the
//! header map (which async-nats takes by value) is assembled for each send from the fields
//! below: the id and the enqueue time, plus a clone of the usually empty (and then
//! allocation-free) map of further headers, where building the whole map here and cloning it
//! per send copied every header.

use std::{borrow::Cow, time::SystemTime};

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use jetq_contract::{headers, Subjects, Task};

use super::Producer;
use crate::{telemetry, EnqueueError, EnqueueOptions};

/// A task ready to publish (see the module documentation).
pub(crate) struct Prepared {
    pub(crate) queue: Cow<'static, str>,
    pub(crate) task: Cow<'static, str>,
    /// The level within the queue: a delayed task's subject carries it too.
    pub(crate) priority: jetq_contract::Priority,
    pub(crate) subject: Subject,
    pub(crate) id: String,
    /// `Jetq-Enqueued-At`, RFC 3339.
    pub(crate) enqueued_at: String,
    /// Every header but the id and the enqueue time (overrides, status tracking, trace
    /// context, a delayed task's due time); most tasks have none, and an empty map does not
    /// allocate.
    pub(crate) extra_headers: HeaderMap,
    /// Track the task's status (its type or its options ask for it).
    pub(crate) tracked: bool,
    /// True when the id is a fresh ULID of ours rather than a caller's idempotency key.
    pub(crate) generated_id: bool,
    /// An earlier send of this very message may have been stored (an atomic batch with no
    /// answer): a duplicate of a generated id is then this task itself.
    pub(crate) resent: bool,
    pub(crate) payload: Bytes,
    /// The task's `send` span: open from preparation until the ack (or the final error).
    pub(crate) span: tracing::Span,
}

impl Prepared {
    /// The message's headers, built afresh for each send.
    pub(crate) fn headers(&self) -> HeaderMap {
        let mut map = self.extra_headers.clone();
        map.insert(headers::names::MSG_ID, self.id.as_str());
        map.insert(headers::names::ENQUEUED_AT, self.enqueued_at.as_str());
        map
    }
}

impl Prepared {
    /// A typed task prepared: its arguments as JSON, its type's status tracking added to the
    /// options. Pure, like [`Prepared::new`].
    pub(crate) fn typed<T: Task>(
        subjects: &Subjects,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<Prepared, EnqueueError> {
        let (payload, options) = options.for_task(task)?;
        Prepared::new(
            subjects,
            Cow::Borrowed(T::QUEUE),
            Cow::Borrowed(T::NAME),
            payload,
            options,
        )
    }

    /// A task prepared from its names, payload and options: names and key checked, the id
    /// chosen (the key, or a fresh ULID), the headers and the `send` span made. Pure: no
    /// connection, nothing sent or read (as Python's `protocol.prepare`); the producer then
    /// publishes it, the catalog and status records aside.
    pub(crate) fn new(
        subjects: &Subjects,
        queue: Cow<'static, str>,
        task: Cow<'static, str>,
        payload: Bytes,
        options: EnqueueOptions,
    ) -> Result<Prepared, EnqueueError> {
        let generated_id = options.key.is_none();
        let mut options = options;
        let id = options.take_id(&queue, &task)?;
        let mut extra_headers = HeaderMap::new();
        options.write_headers(&mut extra_headers);
        if let Some(flow) = &options.flow {
            super::unique::add_headers(flow, &payload, &mut extra_headers)?;
        }
        let subject = subjects.task(&options.queue_token(&queue), &task);
        let caller = options
            .traceparent
            .as_deref()
            .map(|parent| (parent, options.tracestate.as_deref()));
        let span = telemetry::send_span(
            &subject,
            &queue,
            &task,
            &id,
            payload.len(),
            caller,
            &mut extra_headers,
        );
        Ok(Prepared {
            queue,
            task,
            priority: options.priority,
            subject: Subject::from(subject),
            id,
            enqueued_at: jetq_contract::time::format(SystemTime::now()),
            extra_headers,
            tracked: options.track_status,
            generated_id,
            resent: false,
            payload,
            span,
        })
    }
}

impl Producer {
    /// [`Prepared::typed`] with this producer's subjects.
    pub(crate) fn prepare_typed<T: Task>(
        &self,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<Prepared, EnqueueError> {
        Prepared::typed(&self.subjects, task, options)
    }

    /// [`Prepared::new`] with this producer's subjects.
    pub(crate) fn prepare(
        &self,
        queue: Cow<'static, str>,
        task: Cow<'static, str>,
        payload: Bytes,
        options: EnqueueOptions,
    ) -> Result<Prepared, EnqueueError> {
        Prepared::new(&self.subjects, queue, task, payload, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_prepared_without_a_connection() {
        let prepared = Prepared::new(
            &Subjects::default(),
            Cow::Borrowed("emails"),
            Cow::Borrowed("send_welcome"),
            Bytes::from_static(b"{}"),
            EnqueueOptions::new().key("welcome:42").max_attempts(3),
        )
        .expect("a valid task");
        assert_eq!(prepared.subject.as_str(), "jetq.task.emails.send_welcome");
        let map = prepared.headers();
        let header = |name: &str| map.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(header(headers::MSG_ID).as_deref(), Some("welcome:42"));
        assert_eq!(header(headers::MAX_ATTEMPTS).as_deref(), Some("3"));
        assert!(header(headers::ENQUEUED_AT).is_some());
        assert!(!prepared.generated_id);

        let bad = Prepared::new(
            &Subjects::default(),
            Cow::Borrowed("a.b"),
            Cow::Borrowed("send_welcome"),
            Bytes::from_static(b"{}"),
            EnqueueOptions::new(),
        );
        assert!(
            matches!(bad, Err(EnqueueError::InvalidName(_))),
            "a.b is no queue name"
        );
    }
}
