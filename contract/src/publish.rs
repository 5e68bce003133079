//! Publishing to a JetStream stream until the server acknowledges it: the one implementation of
//! "send, await the ack, resend with the same `Nats-Msg-Id` while the outcome is unknown" that
//! the scheduler (fires and delayed-task releases) and the CLI (dead-letter replays) share.
//!
//! A timed-out send or ack leaves the outcome unknown: the message may be stored. Resending it
//! unchanged is safe because the stream's duplicate window drops a second copy with the same id
//! (and acknowledges it as a duplicate). Every other error is final: nothing was stored by that
//! send, and sending the same bytes again would not change the answer.
//!
//! `max_sends` counts every send whose outcome was unknown, the first included: with 3, a message
//! whose acks never arrive is sent exactly 3 times, however its sends and acks time out.
//!
//! A reply that says "nothing stored, try again shortly" — no responders (no stream, or a stream
//! without a leader during an election) or a JetStream 503 other than a failed store — is
//! different: the send is known to have stored nothing, so it does not use up a send. The message
//! is resent after a pause ([`retry_pause`]: 250 ms, doubling, at most 2 s) until the **retry
//! budget** (by default the request timeout × `max_sends`, counted from the first send) is spent
//! (docs/PROTOCOL.md §3, "Publish errors"). An election in a cluster takes seconds; a budget
//! counted in sends was spent in 0.75 s.

use std::future::{Future, IntoFuture};
use std::time::Duration;

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

/// The first pause after a retryable reply; each later one doubles, up to [`MAX_RETRY_PAUSE`].
pub const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The longest pause between two sends after retryable replies.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// The JetStream error code of a store that failed (a full stream, exhausted resources): a 503
/// that a resend does not cure.
pub const STREAM_STORE_FAILED: u64 = 10077;

/// The pause before resend number `retry` (0-based) after a retryable reply, when `remaining` of
/// the retry budget is left: 250 ms doubling to at most 2 s, cut to what remains so that the
/// last resend happens as the budget ends. `None` when nothing remains: give up.
///
/// With replies that come back at once and a 2 s budget the pauses are 250, 500, 1000 and
/// 250 ms (5 sends); the conformance vectors' `retry_pauses` section pins this schedule.
///
/// ```
/// use std::time::Duration;
/// use jetq_contract::publish::retry_pause;
///
/// let ms = Duration::from_millis;
/// assert_eq!(retry_pause(0, ms(2000)), Some(ms(250)));
/// assert_eq!(retry_pause(5, ms(10_000)), Some(ms(2000)));
/// assert_eq!(retry_pause(3, ms(250)), Some(ms(250)));
/// assert_eq!(retry_pause(3, Duration::ZERO), None);
/// ```
pub fn retry_pause(retry: u32, remaining: Duration) -> Option<Duration> {
    if remaining.is_zero() {
        return None;
    }
    let doubled = FIRST_RETRY_PAUSE
        .checked_mul(1 << retry.min(8))
        .unwrap_or(MAX_RETRY_PAUSE);
    Some(doubled.min(MAX_RETRY_PAUSE).min(remaining))
}

/// The retry budget of one publish: how long it may go on resending after retryable replies,
/// counted from its first send. Each [`RetryBudget::next_pause`] gives the next pause, or `None`
/// once the budget is spent.
#[derive(Debug, Clone, Copy)]
pub struct RetryBudget {
    deadline: tokio::time::Instant,
    retries: u32,
}

impl RetryBudget {
    /// A budget of `budget` from now (the first send).
    pub fn starting_now(budget: Duration) -> RetryBudget {
        RetryBudget {
            deadline: tokio::time::Instant::now() + budget,
            retries: 0,
        }
    }

    /// The pause before the next resend after a retryable reply; `None` when the budget is spent.
    pub fn next_pause(&mut self) -> Option<Duration> {
        let remaining = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let pause = retry_pause(self.retries, remaining)?;
        self.retries += 1;
        Some(pause)
    }

    /// True once the budget's time has run out (a timed-out send is then not resent either).
    pub fn spent(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }

    /// Resends made after retryable replies so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }
}

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

/// Publishes [`Outgoing`] messages on a JetStream context, at most `max_sends` sends each whose
/// outcome is unknown, and resending after retryable replies within the retry budget.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
    max_sends: u32,
    budget: Duration,
}

impl Publisher {
    /// A publisher on `js`; `max_sends` below 1 counts as 1. How long a send and its ack may
    /// take is the context's request timeout. The retry budget is the default request timeout
    /// (5 s) × `max_sends`; set the caller's own with [`Publisher::retry_budget`].
    pub fn new(js: jetstream::Context, max_sends: u32) -> Publisher {
        let max_sends = max_sends.max(1);
        Publisher {
            js,
            max_sends,
            budget: crate::config::DEFAULT_REQUEST_TIMEOUT * max_sends,
        }
    }

    /// How long one publish may go on resending after retryable replies (no responders during
    /// an election, a JetStream 503), counted from its first send. Use the connection's request
    /// timeout × `max_sends`.
    pub fn retry_budget(mut self, budget: Duration) -> Publisher {
        self.budget = budget;
        self
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
        let stream_missing = || self.stream_missing(&message.subject);
        until_acked(
            self.max_sends,
            self.budget,
            first,
            || self.send(message),
            stream_missing,
        )
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

    /// True only when the server says no stream captures `subject` (asked once, after a
    /// no-responders reply, waiting at most 1 s): then the publish is refused at once instead of
    /// resent for the whole budget. No answer, or any other, means "maybe an election".
    async fn stream_missing(&self, subject: &str) -> bool {
        let asked = self.js.stream_by_subject(subject);
        matches!(
            tokio::time::timeout(STREAM_CHECK_WAIT, asked).await,
            Ok(Err(err)) if err.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound
        )
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

/// True when a reply says nothing was stored and a resend may succeed shortly: no responders
/// (no stream captures the subject, or its stream has no leader during an election) or a
/// JetStream error with code 503 other than a failed store ([`STREAM_STORE_FAILED`]: a full
/// stream or exhausted resources, which a resend does not cure).
pub fn is_temporarily_unavailable(err: &SendError) -> bool {
    match err.kind() {
        PublishErrorKind::StreamNotFound => true,
        PublishErrorKind::Other => std::error::Error::source(err)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|err| err.code() == 503 && err.error_code().0 != STREAM_STORE_FAILED),
        _ => false,
    }
}

/// How long a publish that found no responders waits to hear whether its stream exists.
pub const STREAM_CHECK_WAIT: Duration = Duration::from_secs(1);

/// The resend loop, apart from the client so that its counting is tested without a server:
/// `first` is send 1; an unknown outcome sends again while fewer than `max_sends` such sends were
/// made and the budget lasts; a retryable reply sends again after [`RetryBudget::next_pause`]
/// without using up a send — unless, asked once after the first no-responders reply,
/// `stream_missing` says no stream captures the subject. Returns the ack or the last error, with
/// the number of sends in all.
async fn until_acked<S, F, A, M, G>(
    max_sends: u32,
    budget: Duration,
    first: Result<A, SendError>,
    mut send: S,
    mut stream_missing: M,
) -> Result<(PublishAck, u32), (SendError, u32)>
where
    S: FnMut() -> F,
    F: Future<Output = Result<A, SendError>>,
    A: IntoFuture<Output = Result<PublishAck, SendError>>,
    M: FnMut() -> G,
    G: Future<Output = bool>,
{
    let mut looked_for_stream = false;
    let mut retry = RetryBudget::starting_now(budget);
    // Sends whose outcome was unknown, the one in flight included.
    let mut counted = 1;
    let mut sends = 1;
    let mut sent = first;
    loop {
        let outcome = match sent {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(ack) => return Ok((ack, sends)),
            Err(err) if is_unknown_outcome(&err) && counted < max_sends && !retry.spent() => {
                counted += 1;
            }
            Err(err)
                if err.kind() == PublishErrorKind::StreamNotFound
                    && !std::mem::replace(&mut looked_for_stream, true)
                    && stream_missing().await =>
            {
                return Err((err, sends));
            }
            Err(err) if is_temporarily_unavailable(&err) => match retry.next_pause() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err((err, sends)),
            },
            Err(err) => return Err((err, sends)),
        }
        sends += 1;
        sent = send().await;
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
        run_with_budget(max_sends, Duration::from_secs(15), answer).await
    }

    async fn run_with_budget(
        max_sends: u32,
        budget: Duration,
        answer: impl Fn(u32) -> Result<Ack, SendError>,
    ) -> (Result<(PublishAck, u32), (SendError, u32)>, u32) {
        let made = std::cell::Cell::new(1);
        let result = until_acked(
            max_sends,
            budget,
            answer(1),
            || {
                made.set(made.get() + 1);
                ready(answer(made.get()))
            },
            || ready(false),
        )
        .await;
        (result, made.get())
    }

    fn no_responders() -> SendError {
        SendError::new(PublishErrorKind::StreamNotFound)
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
        for kind in [
            PublishErrorKind::WrongLastSequence,
            PublishErrorKind::MaxPayloadExceeded,
            PublishErrorKind::Other,
        ] {
            let (result, made) = run(3, |_| Ok(ready(Err(SendError::new(kind))))).await;
            assert_eq!(made, 1, "{kind:?}");
            assert_eq!(result.expect_err("refused").0.kind(), kind);
        }
    }

    /// Time is paused: the sleeps between resends advance the clock at once, so the schedule is
    /// exact.
    #[tokio::test(start_paused = true)]
    async fn no_responders_are_resent_until_the_budget_is_spent_without_using_up_sends() {
        let started = tokio::time::Instant::now();
        let (result, made) =
            run_with_budget(2, Duration::from_secs(2), |_| Err(no_responders())).await;
        // Sends at 0, 0.25, 0.75, 1.75 and 2.0 s: the last pause is cut to the budget's end.
        assert_eq!(made, 5);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let (err, sends) = result.expect_err("never stored");
        assert_eq!((err.kind(), sends), (PublishErrorKind::StreamNotFound, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_elected_within_the_budget_gets_the_message_stored() {
        // An election: 6 s of no responders, then the new leader acknowledges.
        let started = tokio::time::Instant::now();
        let (result, _) = run(3, |_| {
            if started.elapsed() < Duration::from_secs(6) {
                Err(no_responders())
            } else {
                Ok(ready(Ok(acked(false))))
            }
        })
        .await;
        let (ack, sends) = result.expect("stored after the election");
        assert_eq!(ack.sequence, 7);
        // 250 + 500 + 1000 + 2000 + 2000 ms of pauses: the sixth send is at 5.75 s, the seventh at 7.75.
        assert_eq!(sends, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_send_is_not_resent_once_the_budget_is_spent() {
        // Each ack times out after 5 s; the budget is 8 s: the second send's timeout comes at
        // 10 s, past the budget, so there is no third send although max_sends allows 5.
        let made = std::cell::Cell::new(1);
        let slow_timeout = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Err::<PublishAck, _>(timed_out())
        };
        let result = until_acked(
            5,
            Duration::from_secs(8),
            Ok(slow_timeout()),
            || {
                made.set(made.get() + 1);
                ready(Ok(slow_timeout()))
            },
            || ready(false),
        )
        .await;
        assert_eq!(made.get(), 2);
        assert_eq!(result.expect_err("timed out").1, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_responders_for_a_subject_no_stream_captures_are_final_at_once() {
        let made = std::cell::Cell::new(1);
        let asked = std::cell::Cell::new(0);
        let result = until_acked(
            3,
            Duration::from_secs(15),
            Err::<Ack, _>(no_responders()),
            || {
                made.set(made.get() + 1);
                ready(Err::<Ack, _>(no_responders()))
            },
            || {
                asked.set(asked.get() + 1);
                ready(true)
            },
        )
        .await;
        assert_eq!((made.get(), asked.get()), (1, 1));
        assert_eq!(result.expect_err("no stream").1, 1);
    }

    #[test]
    fn the_pause_schedule_matches_the_conformance_vectors() {
        #[derive(serde::Deserialize)]
        struct Schedule {
            budget_ms: u64,
            pauses_ms: Vec<u64>,
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/conformance/vectors.json"
        );
        let vectors: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the vectors"))
                .expect("JSON");
        let schedules: Vec<Schedule> =
            serde_json::from_value(vectors["retry_pauses"].clone()).expect("retry_pauses");
        assert!(!schedules.is_empty());
        for schedule in schedules {
            // Replies that come back at once: the time spent is the sum of the pauses.
            let budget = Duration::from_millis(schedule.budget_ms);
            let mut spent = Duration::ZERO;
            let mut pauses = Vec::new();
            while let Some(pause) = retry_pause(pauses.len() as u32, budget - spent) {
                pauses.push(pause.as_millis() as u64);
                spent += pause;
            }
            assert_eq!(
                pauses, schedule.pauses_ms,
                "budget {} ms",
                schedule.budget_ms
            );
        }
    }

    #[tokio::test]
    async fn zero_max_sends_still_sends_once() {
        let (_, made) = run(0, |_| Ok(ready(Err(timed_out())))).await;
        assert_eq!(made, 1);
    }
}
