//! Pausing and resuming a queue: the JetStream consumer pause API (nats-server 2.11+) on the
//! queue's durable consumers: `worker-<queue>` and, for its priority levels (PROTOCOL §12),
//! `worker-<queue>~high` and `worker-<queue>~low`. All three are paused or resumed together; a
//! level's consumer that does not exist (a worker older than priorities created only
//! `worker-<queue>`) is skipped.
//!
//! Every worker of a queue pulls from those durable consumers, so pausing them stops delivery
//! cluster-wide at once: tasks in flight finish (their acks still count), new tasks accumulate
//! in the task stream, and nothing is lost. Resuming restarts delivery. The server keeps the
//! pause in the consumer's configuration (`pause_until`), so it survives server restarts.
//!
//! nats-server 2.10 has no pause API (`$JS.API.CONSUMER.PAUSE` came with 2.11); there the
//! commands refuse with [`AdminError::NotSupported`] and say what to do instead.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{context::ConsumerInfoErrorKind, stream::Stream};
use jetq_contract::{connect::Version, NameKind, Priority};
use serde::Serialize;

use crate::{
    admin::{format_time, Admin},
    dead::to_datetime,
    error::AdminError,
    stats::unknown_queue,
};

/// The first server version with the consumer pause API.
pub const PAUSE_SINCE: Version = Version::new(2, 11, 0);

/// How far ahead an open-ended pause is set: in practice, until resumed.
pub const INDEFINITELY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A queue's pause state after a pause or resume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PauseState {
    /// The queue.
    pub queue: String,
    /// Its durable consumer (`worker-<queue>`, the `normal` level's; if only a level's
    /// consumer exists, that one).
    pub consumer: String,
    /// Every durable consumer of the queue that was paused or resumed, highest level first;
    /// levels without a consumer are not listed.
    pub consumers: Vec<String>,
    /// Whether delivery is paused now (every consumer in `consumers` is).
    pub paused: bool,
    /// Until when, RFC 3339 UTC, while paused.
    pub pause_until: Option<String>,
    /// True for a pause without an end (it lasts until `resume`).
    pub until_resumed: bool,
}

/// Checks that a server of version `reported` can pause consumers; the error explains why not
/// and what to do instead.
pub fn check_pause_supported(reported: &str) -> Result<(), AdminError> {
    match Version::parse(reported) {
        Some(version) if version >= PAUSE_SINCE => Ok(()),
        _ => Err(AdminError::NotSupported(format!(
            "pausing a queue needs nats-server {PAUSE_SINCE} or newer, and this server is \
             {reported}. jetq pauses a queue by pausing its durable consumer (the JetStream \
             consumer pause API, added in 2.11), which stops delivery to every worker of the \
             queue at once. On 2.10, stop delivery by scaling the queue's workers to zero: tasks \
             keep accumulating safely in the task stream until workers return"
        ))),
    }
}

impl Admin {
    /// Pauses delivery of `queue` to all its workers until `until` (`None`: until resumed).
    pub async fn pause(
        &self,
        queue: &str,
        until: Option<SystemTime>,
    ) -> Result<PauseState, AdminError> {
        let now = SystemTime::now();
        let until = match until {
            Some(until) if until <= now => {
                return Err(AdminError::Invalid(format!(
                    "the pause end {} is in the past",
                    jetq_contract::time::format(until)
                )))
            }
            Some(until) => until,
            None => now + INDEFINITELY,
        };
        let (stream, consumers) = self.queue_consumers(queue).await?;
        let mut states = Vec::with_capacity(consumers.len());
        for (i, consumer) in consumers.iter().enumerate() {
            let response = stream
                .pause_consumer(consumer, to_datetime(until)?)
                .await
                .map_err(|err| {
                    AdminError::nats(
                        format!(
                            "cannot pause consumer {consumer}{}",
                            done_before(&consumers[..i], "paused")
                        ),
                        err,
                    )
                })?;
            states.push((response.paused, Some(response.pause_until)));
        }
        Ok(self.state(queue, consumers, &states))
    }

    /// Resumes delivery of `queue` (every level's consumer).
    pub async fn resume(&self, queue: &str) -> Result<PauseState, AdminError> {
        let (stream, consumers) = self.queue_consumers(queue).await?;
        let mut states = Vec::with_capacity(consumers.len());
        for (i, consumer) in consumers.iter().enumerate() {
            let response = stream.resume_consumer(consumer).await.map_err(|err| {
                AdminError::nats(
                    format!(
                        "cannot resume consumer {consumer}{}",
                        done_before(&consumers[..i], "resumed")
                    ),
                    err,
                )
            })?;
            states.push((response.paused, None));
        }
        Ok(self.state(queue, consumers, &states))
    }

    /// The queue's state from the answers for each of its `consumers` (same order): paused
    /// when all are, until the earliest end.
    fn state(
        &self,
        queue: &str,
        consumers: Vec<String>,
        states: &[(bool, Option<async_nats::datetime::DateTime>)],
    ) -> PauseState {
        let paused = !states.is_empty() && states.iter().all(|(paused, _)| *paused);
        let until = states
            .iter()
            .filter_map(|(_, until)| *until)
            .min()
            .filter(|_| paused);
        let until_resumed = until
            .is_some_and(|until| SystemTime::from(until) > SystemTime::now() + INDEFINITELY / 2);
        let normal = self.subjects().durable(queue);
        let consumer = if consumers.contains(&normal) {
            normal
        } else {
            consumers.first().cloned().unwrap_or(normal)
        };
        PauseState {
            queue: queue.to_owned(),
            consumer,
            consumers,
            paused,
            pause_until: until.map(format_time),
            until_resumed,
        }
    }

    /// The durable consumers of every level of `queue` that exist, highest level first; an
    /// error if none does.
    async fn queue_consumers(&self, queue: &str) -> Result<(Stream, Vec<String>), AdminError> {
        jetq_contract::name::validate(NameKind::Queue, queue)?;
        check_pause_supported(&self.server_version_text())?;
        let stream = self.tasks_stream().await?;
        let mut found = Vec::with_capacity(Priority::ALL.len());
        for level in Priority::ALL {
            let consumer = self.subjects().durable_at(queue, level);
            match stream.consumer_info(&consumer).await {
                Ok(_) => found.push(consumer),
                // A level's consumer made by no worker yet (or by one older than priorities).
                Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => {}
                Err(err) => {
                    return Err(AdminError::nats(
                        format!("cannot read consumer {consumer}"),
                        err,
                    ))
                }
            }
        }
        if !found.is_empty() {
            return Ok((stream, found));
        }
        let consumer = self.subjects().durable(queue);
        Err(match self.queue_stats(queue).await {
            // Known from its tasks, but no worker made the consumer yet.
            Ok(_) => AdminError::not_found(
                format!("consumer {consumer} of queue {queue}"),
                Some(
                    "no worker of this queue has started yet, so there is no delivery \
                     to pause; nothing runs its tasks until one does"
                        .into(),
                ),
            ),
            Err(_) => unknown_queue(queue),
        })
    }
}

/// What an error part-way through says was already done: ` (worker-q~high already paused)`.
fn done_before(done: &[String], verb: &str) -> String {
    if done.is_empty() {
        String::new()
    } else {
        format!(" ({} already {verb})", done.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_servers_are_refused_with_the_reason() {
        let err = check_pause_supported("2.10.24").unwrap_err();
        assert_eq!(err.exit_code(), 4);
        let text = err.to_string();
        assert!(text.contains("2.11") && text.contains("2.10.24"), "{text}");
        assert!(
            text.contains("scaling the queue's workers to zero"),
            "{text}"
        );
        assert!(check_pause_supported("2.11.0").is_ok());
        assert!(check_pause_supported("2.15.1").is_ok());
    }
}
