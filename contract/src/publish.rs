//! Publishing to a JetStream stream until the server acknowledges it: the one implementation of
//! "send, await the ack, resend with the same `Nats-Msg-Id` while the outcome is unknown" that
//! the scheduler (fires and delayed-task releases) and the CLI (dead-letter replays) share.
//!
//! A timed-out send or ack leaves the outcome unknown: the message may be stored. Resending it
//! unchanged is safe because the stream's duplicate window drops a second copy with the same id
//! (and acknowledges it as a duplicate). Every other error is final: nothing was stored by that
//! send, and sending the same bytes again would not change the answer.
//!
//! `max_sends` counts every send, the first included: with 3, a message whose acks never arrive
//! is sent exactly 3 times, however its sends and acks time out.

use std::future::{Future, IntoFuture};

use async_nats::{
    jetstream::{
        self,
        context::{PublishAckFuture, PublishError as SendError, PublishErrorKind},
        message::PublishMessage,
        publish::PublishAck,
    },
    HeaderMap,
};
use bytes::Bytes;

use crate::headers;

/// Sends per message when acks time out, unless a caller configures another number.
pub const DEFAULT_MAX_SENDS: u32 = 3;

/// A message ready to publish, resent unchanged (same `Nats-Msg-Id`) while its outcome is
/// unknown.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The subject it is published to.
    pub subject: String,
    /// Its `Nats-Msg-Id`, also set in `headers`.
    pub id: String,
    /// Every header it carries, `Nats-Msg-Id` included.
    pub headers: HeaderMap,
    /// The payload.
    pub payload: Bytes,
}

impl Outgoing {
    /// A message with `id` set as its `Nats-Msg-Id` header (replacing any there).
    pub fn new(
        subject: impl Into<String>,
        id: impl Into<String>,
        mut headers: HeaderMap,
        payload: Bytes,
    ) -> Outgoing {
        let id = id.into();
        headers.insert(headers::MSG_ID, id.as_str());
        Outgoing {
            subject: subject.into(),
            id,
            headers,
            payload,
        }
    }
}

/// The acknowledgement of a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acked {
    /// The stream that stored it.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// The stream already held a message with this id (in its duplicate window) and stored
    /// nothing new: another publisher's, or, when `sends > 1`, possibly an earlier send of this
    /// publish whose ack was lost.
    pub duplicate: bool,
    /// How many sends it took (1 when the first was acknowledged).
    pub sends: u32,
}

/// Why a publish was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Every send or its ack timed out: the message may or may not be stored. Publishing it
    /// again with the same id is safe.
    #[error(
        "cannot publish to {subject} (id {id}): not acknowledged after {sends} send(s): {source}"
    )]
    Unacknowledged {
        /// The subject.
        subject: String,
        /// The message's `Nats-Msg-Id`.
        id: String,
        /// How many times it was sent.
        sends: u32,
        /// The last timeout.
        source: SendError,
    },
    /// The client or the server refused the message (no stream, too large, not connected, a
    /// JetStream error): the last send stored nothing.
    #[error("cannot publish to {subject} (id {id}): {source}")]
    Failed {
        /// The subject.
        subject: String,
        /// The message's `Nats-Msg-Id`.
        id: String,
        /// How many times it was sent.
        sends: u32,
        /// What the client or server said.
        source: SendError,
    },
}

impl PublishError {
    /// The client's error of the last send (its `kind()` says what happened).
    pub fn send_error(&self) -> &SendError {
        match self {
            PublishError::Unacknowledged { source, .. } | PublishError::Failed { source, .. } => {
                source
            }
        }
    }

    /// How many times the message was sent.
    pub fn sends(&self) -> u32 {
        match self {
            PublishError::Unacknowledged { sends, .. } | PublishError::Failed { sends, .. } => {
                *sends
            }
        }
    }
}

/// Publishes [`Outgoing`] messages on a JetStream context, at most `max_sends` sends each.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
    max_sends: u32,
}

impl Publisher {
    /// A publisher on `js`; `max_sends` below 1 counts as 1. How long a send and its ack may
    /// take is the context's request timeout.
    pub fn new(js: jetstream::Context, max_sends: u32) -> Publisher {
        Publisher {
            js,
            max_sends: max_sends.max(1),
        }
    }

    /// The JetStream context it publishes on.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// One send without awaiting the ack (to pipeline many): pass its result to
    /// [`Publisher::confirm`], which counts it as the first send.
    pub async fn send(&self, message: &Outgoing) -> Result<PublishAckFuture, SendError> {
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(message.headers.clone());
        self.js.send_publish(message.subject.clone(), publish).await
    }

    /// Awaits the ack of the first send (`first`, the result of [`Publisher::send`]), resending
    /// the message unchanged while sends or acks time out, up to `max_sends` sends in all.
    pub async fn confirm(
        &self,
        message: &Outgoing,
        first: Result<PublishAckFuture, SendError>,
    ) -> Result<Acked, PublishError> {
        until_acked(self.max_sends, first, || self.send(message))
            .await
            .map(|(ack, sends)| Acked {
                stream: ack.stream,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
                sends,
            })
            .map_err(|(source, sends)| {
                let (subject, id) = (message.subject.clone(), message.id.clone());
                if is_unknown_outcome(&source) {
                    PublishError::Unacknowledged {
                        subject,
                        id,
                        sends,
                        source,
                    }
                } else {
                    PublishError::Failed {
                        subject,
                        id,
                        sends,
                        source,
                    }
                }
            })
    }

    /// Sends the message and awaits its ack, resending while the outcome is unknown.
    pub async fn publish(&self, message: &Outgoing) -> Result<Acked, PublishError> {
        let first = self.send(message).await;
        self.confirm(message, first).await
    }
}

/// True when a send's outcome is unknown (the send or its ack timed out): the message may be
/// stored, and a resend with the same id is deduplicated.
pub fn is_unknown_outcome(err: &SendError) -> bool {
    err.kind() == PublishErrorKind::TimedOut
}

/// The resend loop, apart from the client so that its counting is tested without a server:
/// `first` is send 1; each unknown outcome sends again while fewer than `max_sends` were made.
/// Returns the ack or the last error, with the number of sends.
async fn until_acked<S, F, A>(
    max_sends: u32,
    first: Result<A, SendError>,
    mut send: S,
) -> Result<(PublishAck, u32), (SendError, u32)>
where
    S: FnMut() -> F,
    F: Future<Output = Result<A, SendError>>,
    A: IntoFuture<Output = Result<PublishAck, SendError>>,
{
    let mut sends = 1;
    let mut sent = first;
    loop {
        let outcome = match sent {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(ack) => return Ok((ack, sends)),
            Err(err) if is_unknown_outcome(&err) && sends < max_sends => {
                sends += 1;
                sent = send().await;
            }
            Err(err) => return Err((err, sends)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::{ready, Ready};

    use super::*;

    type Ack = Ready<Result<PublishAck, SendError>>;

    fn timed_out() -> SendError {
        SendError::new(PublishErrorKind::TimedOut)
    }

    fn acked(duplicate: bool) -> PublishAck {
        serde_json::from_value(serde_json::json!({
            "stream": "JETQ_TASKS", "seq": 7, "duplicate": duplicate
        }))
        .expect("a publish ack")
    }

    /// Runs the loop where send n (1-based) answers `answer(n)`; returns the result and the
    /// number of sends made.
    async fn run(
        max_sends: u32,
        answer: impl Fn(u32) -> Result<Ack, SendError>,
    ) -> (Result<(PublishAck, u32), (SendError, u32)>, u32) {
        let made = std::cell::Cell::new(1);
        let result = until_acked(max_sends, answer(1), || {
            made.set(made.get() + 1);
            ready(answer(made.get()))
        })
        .await;
        (result, made.get())
    }

    #[tokio::test]
    async fn acks_that_time_out_are_resent_until_max_sends_in_all() {
        let (result, made) = run(3, |_| Ok(ready(Err(timed_out())))).await;
        assert_eq!(made, 3);
        let (err, sends) = result.expect_err("never acknowledged");
        assert_eq!((err.kind(), sends), (PublishErrorKind::TimedOut, 3));
    }

    #[tokio::test]
    async fn a_first_send_that_times_out_counts_as_a_send() {
        // The scheduler's old loop sent 4 times here with 3 attempts.
        let (result, made) = run(3, |n| {
            if n == 1 {
                Err(timed_out())
            } else {
                Ok(ready(Err(timed_out())))
            }
        })
        .await;
        assert_eq!(made, 3);
        assert_eq!(result.expect_err("never acknowledged").1, 3);
    }

    #[tokio::test]
    async fn a_late_ack_ends_the_resends_and_keeps_the_duplicate_flag() {
        let (result, made) = run(5, |n| {
            Ok(ready(if n < 2 {
                Err(timed_out())
            } else {
                Ok(acked(true))
            }))
        })
        .await;
        assert_eq!(made, 2);
        let (ack, sends) = result.expect("acknowledged");
        assert_eq!((ack.sequence, ack.duplicate, sends), (7, true, 2));
    }

    #[tokio::test]
    async fn other_errors_are_final_at_once() {
        let (result, made) = run(3, |_| {
            Ok(ready(Err(SendError::new(PublishErrorKind::StreamNotFound))))
        })
        .await;
        assert_eq!(made, 1);
        assert_eq!(
            result.expect_err("refused").0.kind(),
            PublishErrorKind::StreamNotFound
        );
    }

    #[tokio::test]
    async fn zero_max_sends_still_sends_once() {
        let (_, made) = run(0, |_| Ok(ready(Err(timed_out())))).await;
        assert_eq!(made, 1);
    }
}
