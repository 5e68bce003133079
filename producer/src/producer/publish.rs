//! Publishing one task until the server acknowledges it (docs/PROTOCOL.md §3, "Publish
//! errors"): resends while the outcome is unknown (an ack that timed out) or the server says to
//! try again (no responders during an election, a JetStream 503) within the retry budget, and the
//! mapping of the client's publish errors to [`EnqueueError`].

use async_nats::{
    connection::State,
    jetstream::{
        self,
        context::{PublishAckFuture, PublishError, PublishErrorKind},
    },
};

// STREAM_STORE_FAILED: JetStream's error code for a failed store, which `discard: New` limits
// report as "maximum messages exceeded" / "maximum bytes exceeded".
use jetq_contract::publish::{RetryBudget, STREAM_CHECK_WAIT, STREAM_STORE_FAILED};

use super::{prepared::Prepared, Producer};
use crate::error::EnqueueError;

/// JetStream's error code for a message over the stream's `max_msg_size`.
const MESSAGE_EXCEEDS_MAXIMUM: u64 = 10054;

/// True when a publish stored nothing and may succeed shortly: no responders (no stream
/// captures the subject, or the stream has no leader during an election) or a JetStream error
/// with code 503 (temporarily unavailable) other than a failed store (10077: a full stream or
/// exhausted resources, which a resend does not cure).
fn is_unavailable(err: &EnqueueError) -> bool {
    match err {
        EnqueueError::NoStream { .. } => true,
        EnqueueError::Rejected { source, .. } => std::error::Error::source(source)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|err| err.code() == 503 && err.error_code().0 != STREAM_STORE_FAILED),
        _ => false,
    }
}

impl Producer {
    /// Awaits acks, resending with the same id while the outcome is unknown or the server
    /// says to try again (docs/PROTOCOL.md §3, "Publish errors"). The caller made the first send:
    /// `first` is its ack future, `None` if that send itself timed out.
    ///
    /// - An ack that times out leaves the outcome unknown; the duplicate window makes a resend
    ///   with the same id safe. At most `publish_attempts` such sends in all.
    /// - No responders or a JetStream 503 stored nothing: the stream has no leader for a moment
    ///   (an election) or cannot store right now. The task is resent after a pause (250 ms,
    ///   doubling, at most 2 s) until the retry budget — `ack_timeout × publish_attempts` from
    ///   now — is spent. These sends do not use up attempts: an election lasts seconds.
    /// - No responders because the task stream does not exist (the server says so): a producer
    ///   allowed to provision creates it and sends again; otherwise the enqueue fails at once.
    ///
    /// Returns the task's stream sequence and whether the server dropped it as a duplicate.
    pub(super) async fn publish_until_acked(
        &self,
        prepared: &Prepared,
        first: Option<PublishAckFuture>,
    ) -> Result<(u64, bool), EnqueueError> {
        let mut retry = RetryBudget::starting_now(self.ack_timeout * self.attempts);
        // Sends whose outcome was unknown, the one in flight included.
        let mut attempt = 1;
        let mut resent = false;
        let mut pending = first;
        let mut looked_for_stream = false;
        loop {
            let ack_future = match pending.take() {
                Some(future) => future,
                None if attempt >= self.attempts || retry.spent() => {
                    return Err(self.timeout_or_disconnected(self.timed_out(prepared), attempt));
                }
                None => {
                    attempt += 1;
                    resent = true;
                    // A resend: rare, so its (larger) send future is boxed.
                    match Box::pin(self.send(prepared)).await {
                        Ok(future) => future,
                        Err(EnqueueError::Timeout { .. }) => continue,
                        Err(err) => return Err(self.timeout_or_disconnected(err, attempt)),
                    }
                }
            };
            match ack_future.await {
                Ok(ack) => {
                    // A fresh id can only collide with our own earlier send, whose ack timed
                    // out but which the server stored: that is this task, not a duplicate.
                    let ours = (resent || prepared.resent) && prepared.generated_id;
                    return Ok((ack.sequence, ack.duplicate && !ours));
                }
                Err(err) => match self.classify(prepared, err) {
                    EnqueueError::Timeout { .. } => continue,
                    // No responders: once per enqueue, ask whether a stream captures the
                    // subject at all (bounded: during an election the question may go
                    // unanswered too). A missing task stream is created when this producer
                    // provisions; a missing delayed stream is the caller's to create.
                    err @ EnqueueError::NoStream { .. } if !looked_for_stream => {
                        looked_for_stream = true;
                        let wait = self.ack_timeout.min(STREAM_CHECK_WAIT);
                        if Box::pin(self.status.stream_missing(&prepared.subject, wait)).await {
                            if !self.status.is_task_subject(&prepared.subject)
                                || !Box::pin(self.status.provision_tasks_stream()).await
                            {
                                return Err(self.timeout_or_disconnected(err, attempt));
                            }
                            resent = true;
                            pending = self.resend_now(prepared).await?;
                            continue;
                        }
                        pending = self
                            .resend_after_pause(prepared, &mut retry, err, attempt)
                            .await?;
                    }
                    err if is_unavailable(&err) => {
                        pending = self
                            .resend_after_pause(prepared, &mut retry, err, attempt)
                            .await?;
                        resent = true;
                    }
                    err => return Err(self.timeout_or_disconnected(err, attempt)),
                },
            }
        }
    }

    /// After a reply that stored nothing but may succeed shortly: pauses as the retry budget
    /// says and sends again (`None` if that send timed out), or returns `err` once the budget
    /// is spent. Boxed by the caller's `?`-free paths: rare, and the sleep would grow every
    /// in-flight future.
    pub(super) async fn resend_after_pause(
        &self,
        prepared: &Prepared,
        retry: &mut RetryBudget,
        err: EnqueueError,
        attempt: u32,
    ) -> Result<Option<PublishAckFuture>, EnqueueError> {
        let Some(pause) = retry.next_pause() else {
            return Err(self.timeout_or_disconnected(err, attempt));
        };
        Box::pin(tokio::time::sleep(pause)).await;
        Box::pin(self.resend_now(prepared)).await
    }

    /// Sends the task again at once: its ack future, or `None` if the send timed out.
    pub(super) async fn resend_now(
        &self,
        prepared: &Prepared,
    ) -> Result<Option<PublishAckFuture>, EnqueueError> {
        match Box::pin(self.send(prepared)).await {
            Ok(future) => Ok(Some(future)),
            Err(EnqueueError::Timeout { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The error of a task whose every attempt timed out (`attempts` is set by the caller).
    pub(super) fn timed_out(&self, prepared: &Prepared) -> EnqueueError {
        EnqueueError::Timeout {
            task: prepared.task.to_string(),
            id: prepared.id.clone(),
            timeout: self.ack_timeout,
            attempts: 1,
        }
    }

    pub(super) fn timeout_or_disconnected(&self, err: EnqueueError, attempts: u32) -> EnqueueError {
        match err {
            EnqueueError::Timeout {
                task, id, timeout, ..
            } => {
                if self.client.connection_state() == State::Connected {
                    EnqueueError::Timeout {
                        task,
                        id,
                        timeout,
                        attempts,
                    }
                } else {
                    EnqueueError::NotConnected { task, attempts }
                }
            }
            other => other,
        }
    }

    pub(super) fn classify(&self, prepared: &Prepared, err: PublishError) -> EnqueueError {
        let task = prepared.task.to_string();
        match err.kind() {
            PublishErrorKind::TimedOut => self.timed_out(prepared),
            PublishErrorKind::MaxPayloadExceeded => EnqueueError::TooLarge {
                task,
                size: prepared.payload.len(),
                source: err,
            },
            PublishErrorKind::StreamNotFound => EnqueueError::NoStream {
                subject: prepared.subject.to_string(),
            },
            _ => {
                let server_error = std::error::Error::source(&err)
                    .and_then(|source| source.downcast_ref::<jetstream::Error>())
                    .map(|e| (e.error_code().0, e.to_string()));
                match server_error {
                    Some((STREAM_STORE_FAILED, description)) if description.contains("maximum") => {
                        EnqueueError::StreamFull { task, description }
                    }
                    Some((MESSAGE_EXCEEDS_MAXIMUM, _)) => EnqueueError::TooLarge {
                        task,
                        size: prepared.payload.len(),
                        source: err,
                    },
                    _ => EnqueueError::Rejected { task, source: err },
                }
            }
        }
    }
}
