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
use jetq_contract::{headers, name, NameKind, Task};

use super::Producer;
use crate::{telemetry, EnqueueError, EnqueueOptions};

/// A task ready to publish (see the module documentation).
pub(crate) struct Prepared {
    pub(crate) queue: Cow<'static, str>,
    pub(crate) task: Cow<'static, str>,
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

impl Producer {
    pub(crate) fn prepare_typed<T: Task>(
        &self,
        task: &T,
        options: EnqueueOptions,
    ) -> Result<Prepared, EnqueueError> {
        let payload = serde_json::to_vec(task).map_err(|source| EnqueueError::Serialize {
            task: T::NAME.to_owned(),
            source,
        })?;
        let mut options = options;
        options.track_status |= T::options().track_status;
        self.prepare(
            Cow::Borrowed(T::QUEUE),
            Cow::Borrowed(T::NAME),
            Bytes::from(payload),
            options,
        )
    }

    pub(crate) fn prepare(
        &self,
        queue: Cow<'static, str>,
        task: Cow<'static, str>,
        payload: Bytes,
        options: EnqueueOptions,
    ) -> Result<Prepared, EnqueueError> {
        name::validate(NameKind::Queue, &queue)?;
        name::validate(NameKind::Task, &task)?;
        let generated_id = options.key.is_none();
        let id = match options.key {
            Some(key) => {
                name::validate_key(&key)?;
                key
            }
            None => ulid::Ulid::new().to_string(),
        };
        let mut extra_headers = HeaderMap::new();
        if let Some(attempts) = options.max_attempts {
            extra_headers.insert(headers::MAX_ATTEMPTS, attempts.to_string().as_str());
        }
        if let Some(timeout) = options.timeout {
            extra_headers.insert(
                headers::TIMEOUT_MS,
                timeout.as_millis().max(1).to_string().as_str(),
            );
        }
        if options.track_status {
            extra_headers.insert(jetq_contract::status::TRACK_STATUS, "1");
        }
        if let Some(flow) = &options.flow {
            super::unique::add_headers(flow, &payload, &mut extra_headers)?;
        }
        let subject = self.subjects.task(&queue, &task);
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
