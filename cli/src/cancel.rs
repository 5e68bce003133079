//! Cancelling any task by id (`jetq cancel`, the console's cancel action), and every task
//! matching a filter ([`bulk`]: `jetq cancel --all`, the console's bulk Cancel).
//!
//! | the task is | what happens | outcome |
//! |---|---|---|
//! | tracked (has a status record, PROTOCOL §8) and not finished | the status path: `queued`/`retrying` → `cancelled` (the worker drops it unrun), `running` → `cancel_requested_at` (the handler is told; the task ends `cancelled`) | `cancelled` / `requested` |
//! | untracked, queued (stored, not delivered) | deleted from the task stream by sequence | `deleted` (`was: pending`) |
//! | untracked, running | the worker running it is asked on its control subject (PROTOCOL §16; found from worker presence, §14, else every live worker of its queue is asked): it terminates the message (`+TERM`) at once, tells the handler (context cancelled) and the attempt ends `cancelled` — no retry, no dead letter | `requested` (`was: running`, `worker`) |
//! | untracked, waiting to retry (delivered, a failed attempt recorded, no worker runs it now) | deleted from the task stream by sequence and its attempt record removed | `deleted` (`was: retrying`) |
//! | untracked, delivered but no live worker runs it (its worker died; prefetched and about to start; or run by a worker without presence, which cannot be asked) | deleted from the task stream by sequence: it is not redelivered, but a worker that holds it may run it once (its ack then fails) | `deleted` (`was: in_flight`, `raced: true`) |
//! | untracked, running on a worker whose presence lists it but that does not answer (older than protocol 1.10, stopped or hung) | refused: [`AdminError::CannotCancel`] | — |
//! | delayed (tracked or not) | deleted from the delayed-task stream (a tracked one is also marked `cancelled`) | `deleted` (`was: delayed`) / `cancelled` |
//!
//! A task is found by its id (`Nats-Msg-Id`) in the task stream above the ack floors (of
//! `--queue`'s durables, or all), then in the delayed stream ([`Admin::find_task`]).
//!
//! What `requested` guarantees for an untracked running task: the worker terminated the message
//! (and flushed the `+TERM` to the server) **before** it replied, so the task is never delivered
//! again — not even when that worker dies right after; the handler was told, and when it
//! returns the attempt ends `cancelled` whatever it returned. A handler that ignores its
//! context runs on to its end (cancellation is cooperative), but its outcome is dropped. No
//! reply within 2 s (the worker died or hung before it answered) is not `requested`: the task
//! may be redelivered after `ack_wait` and run again; cancel it again then.
//!
//! Races: an untracked queued task delivered between the check and the delete still runs once
//! (the report says `raced: true` when the durable moved past it meanwhile). Tracked tasks keep
//! the cancellation in their record, so a redelivery of a tracked task is dropped too.

use std::time::Duration;

use jetq_contract::control::{cancel_subject, CancelReply, CancelRequest};
use jetq_producer::{CancelOutcome, StatusError};
use serde::Serialize;

use crate::{
    error::AdminError,
    tasks::{ListState, TaskLocation},
    workers::WorkerView,
    Admin,
};

pub mod bulk;

/// How long a worker has to answer a cancel request.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `jetq cancel` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CancelReport {
    /// The task id.
    pub id: String,
    /// `cancelled` (will not run), `requested` (running, the handler was told),
    /// `already_finished` (tracked and finished: nothing changed) or `deleted` (removed from a
    /// stream).
    pub outcome: String,
    /// `tracked`, `pending`, `retrying`, `running`, `in_flight` or `delayed`: how it was found.
    pub was: String,
    /// For an untracked running task: the worker that cancelled it.
    pub worker: Option<String>,
    /// The stream it was deleted from, for `deleted`.
    pub stream: Option<String>,
    /// Its sequence there.
    pub sequence: Option<u64>,
    /// The tracked task's state after the cancel.
    pub state: Option<String>,
    /// A worker took the task while it was being deleted: it may run once.
    pub raced: bool,
}

impl Admin {
    /// Cancels task `id` (see the module documentation for each case). `queue` narrows the
    /// search of an untracked task. A task found nowhere is [`AdminError::NotFound`].
    pub async fn cancel_task(
        &self,
        id: &str,
        queue: Option<&str>,
    ) -> Result<CancelReport, AdminError> {
        // Tracked first: its status record is the authority while it runs.
        let tracked = self.cancel_tracked(id).await?;
        let location = self.find_task(id, queue).await?;
        self.cancel_found(id, tracked, location).await
    }

    /// The status path of a cancel: `None` when the task is not tracked.
    async fn cancel_tracked(&self, id: &str) -> Result<Option<CancelOutcome>, AdminError> {
        match self.producer().cancel(id).await {
            Ok(outcome) => Ok(Some(outcome)),
            Err(StatusError::NotFound { .. }) | Err(StatusError::Unavailable(_)) => Ok(None),
            Err(err) => Err(AdminError::Status(err)),
        }
    }

    /// Cancels task `id` found at `location` after the status path said `tracked`.
    async fn cancel_found(
        &self,
        id: &str,
        tracked: Option<CancelOutcome>,
        location: Option<TaskLocation>,
    ) -> Result<CancelReport, AdminError> {
        match tracked {
            Some(CancelOutcome::AlreadyFinished(status)) if location.is_none() => {
                return Ok(report(
                    id,
                    "already_finished",
                    "tracked",
                    Some(status.state.to_string()),
                ))
            }
            Some(CancelOutcome::Requested(status)) => {
                return Ok(report(
                    id,
                    "requested",
                    "tracked",
                    Some(status.state.to_string()),
                ))
            }
            Some(CancelOutcome::Cancelled(status)) => {
                // Also remove a delayed copy, so it is not even released.
                if let Some(found) = location.filter(|l| l.place == "delayed") {
                    self.delete_from(&found).await?;
                }
                return Ok(report(
                    id,
                    "cancelled",
                    "tracked",
                    Some(status.state.to_string()),
                ));
            }
            _ => {}
        }
        let Some(found) = location else {
            return Err(AdminError::not_found(
                format!("task {id}"),
                Some(
                    "it is neither tracked nor queued, waiting to retry or delayed (finished, \
                     dead-lettered — see `jetq dead list --task-id` — or never enqueued); \
                     --queue narrows the search"
                        .into(),
                ),
            ));
        };
        match found.place.as_str() {
            "delayed" => {
                self.delete_from(&found).await?;
                Ok(deleted(id, "delayed", &found, false))
            }
            "pending" => {
                self.delete_from(&found).await?;
                let raced = self.delivered_past(&found).await;
                Ok(deleted(id, "pending", &found, raced))
            }
            _ => {
                // In flight: running, or waiting for its next attempt. Ask the workers first.
                let workers = self.workers().await?;
                let asked = self.ask_workers(&workers, id, &found).await;
                if let Some(worker) = asked.cancelled_by {
                    let mut report = report(id, "requested", "running", None);
                    report.worker = Some(worker);
                    report.sequence = Some(found.task.sequence);
                    return Ok(report);
                }
                if let Some(worker) = asked.silent_runner {
                    return Err(AdminError::CannotCancel {
                        id: id.to_owned(),
                        reason: format!(
                            "running on worker {worker}, which does not answer cancel requests \
                             (it stopped or hangs, or runs a jetq older than protocol 1.10); if \
                             it stopped, the task is redelivered after ack_wait: cancel it \
                             again then"
                        ),
                    });
                }
                let failed_before = self
                    .tasks(
                        &crate::tasks::TaskFilter {
                            state: ListState::Retrying,
                            queue: Some(found.task.queue.clone()),
                            task: Some(found.task.task.clone()),
                        },
                        &crate::tasks::PageRequest {
                            limit: 1,
                            after: Some(found.task.sequence.saturating_sub(1).to_string()),
                        },
                    )
                    .await?
                    .tasks
                    .first()
                    .is_some_and(|t| t.sequence == found.task.sequence);
                self.delete_from(&found).await?;
                if let Some(store) = self
                    .optional_bucket(&self.subjects().attempts_bucket())
                    .await?
                {
                    let _ = store.delete(found.task.sequence.to_string()).await;
                }
                if failed_before {
                    Ok(deleted(id, "retrying", &found, false))
                } else {
                    // Delivered, and no live worker runs it: its worker died (it would be
                    // redelivered), or a worker prefetched it and starts it just now (it may
                    // run once; its ack then fails and it is not retried).
                    Ok(deleted(id, "in_flight", &found, true))
                }
            }
        }
    }

    /// Asks the workers that may run the task at `found` to cancel it: those whose presence
    /// lists it, and every other live worker of its queue (presence is up to one interval
    /// old), all at once.
    async fn ask_workers(&self, workers: &[WorkerView], id: &str, found: &TaskLocation) -> Asked {
        let sequence = found.task.sequence;
        let lists = |w: &WorkerView| {
            w.record
                .running
                .iter()
                .any(|t| t.id == id && (t.sequence == 0 || t.sequence == sequence))
        };
        let candidates: Vec<&WorkerView> = workers
            .iter()
            .filter(|w| lists(w) || w.record.queues.contains(&found.task.queue))
            .collect();
        let request = CancelRequest {
            id: id.to_owned(),
            sequence,
            by: None,
        };
        let Ok(body) = serde_json::to_vec(&request) else {
            return Asked::default();
        };
        let asks = candidates.iter().map(|w| {
            let subject = cancel_subject(self.subjects().prefix(), &w.record.id);
            let body = body.clone();
            async move {
                let answer =
                    tokio::time::timeout(ASK_TIMEOUT, self.client().request(subject, body.into()))
                        .await;
                match answer {
                    Ok(Ok(message)) => serde_json::from_slice::<CancelReply>(&message.payload)
                        .ok()
                        .map(|reply| reply.found),
                    _ => None,
                }
            }
        });
        let answers = futures::future::join_all(asks).await;
        let mut asked = Asked::default();
        for (worker, answer) in candidates.iter().zip(answers) {
            match answer {
                Some(true) if asked.cancelled_by.is_none() => {
                    asked.cancelled_by = Some(worker.record.id.clone());
                }
                None if lists(worker) => asked.silent_runner = Some(worker.record.id.clone()),
                _ => {}
            }
        }
        asked
    }

    async fn delete_from(&self, found: &TaskLocation) -> Result<(), AdminError> {
        let stream = self
            .optional_stream(&found.task.stream)
            .await?
            .ok_or_else(|| AdminError::not_found(format!("stream {}", found.task.stream), None))?;
        match stream.delete_message(found.task.sequence).await {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    err.kind(),
                    async_nats::jetstream::stream::DeleteMessageErrorKind::JetStream(ref e)
                        if e.error_code() == async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND
                ) =>
            {
                Err(AdminError::not_found(
                    format!(
                        "task {} (sequence {} of {})",
                        found.task.id.as_deref().unwrap_or("?"),
                        found.task.sequence,
                        found.task.stream
                    ),
                    Some("it ended or was removed meanwhile".into()),
                ))
            }
            Err(err) => Err(AdminError::nats(
                format!(
                    "cannot delete task {} (sequence {} of {})",
                    found.task.id.as_deref().unwrap_or("?"),
                    found.task.sequence,
                    found.task.stream
                ),
                err,
            )),
        }
    }

    /// Whether the task's level durable delivered it meanwhile.
    async fn delivered_past(&self, found: &TaskLocation) -> bool {
        let Ok(level) = found.task.priority.parse::<jetq_contract::Priority>() else {
            return false;
        };
        let durable = self.subjects().durable_at(&found.task.queue, level);
        let Ok(stream) = self.tasks_stream().await else {
            return false;
        };
        stream
            .consumer_info(&durable)
            .await
            .map(|info| info.delivered.stream_sequence >= found.task.sequence)
            .unwrap_or(false)
    }
}

fn report(id: &str, outcome: &str, was: &str, state: Option<String>) -> CancelReport {
    CancelReport {
        id: id.to_owned(),
        outcome: outcome.to_owned(),
        was: was.to_owned(),
        worker: None,
        stream: None,
        sequence: None,
        state,
        raced: false,
    }
}

fn deleted(id: &str, was: &str, found: &TaskLocation, raced: bool) -> CancelReport {
    CancelReport {
        id: id.to_owned(),
        outcome: "deleted".into(),
        was: was.to_owned(),
        worker: None,
        stream: Some(found.task.stream.clone()),
        sequence: Some(found.task.sequence),
        state: None,
        raced,
    }
}

/// What the workers answered to a cancel request.
#[derive(Debug, Default)]
struct Asked {
    /// The worker that ran the task and cancelled it.
    cancelled_by: Option<String>,
    /// A worker whose presence lists the task but that did not answer.
    silent_runner: Option<String>,
}
