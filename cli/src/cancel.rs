//! Cancelling any task by id (`jetq cancel`, the console's cancel action).
//!
//! | the task is | what happens |
//! |---|---|
//! | tracked (has a status record, PROTOCOL §8) and not finished | the status path: `queued`/`retrying` → `cancelled` (the worker drops it unrun), `running` → `cancel_requested_at` (the handler is told; the task ends `cancelled`) |
//! | untracked, queued (stored, not delivered) | deleted from the task stream by sequence |
//! | untracked, waiting to retry (delivered, a failed attempt recorded, no worker runs it now) | deleted from the task stream by sequence and its attempt record removed |
//! | untracked, running | refused: [`AdminError::CannotCancel`] "running: cannot be stopped, it was not tracked" |
//! | delayed (tracked or not) | deleted from the delayed-task stream (a tracked one is also marked `cancelled`) |
//!
//! A task is found by its id (`Nats-Msg-Id`) in the task stream above the ack floors (of
//! `--queue`'s durables, or all), then in the delayed stream ([`Admin::find_task`]).
//!
//! Races: an untracked queued task delivered between the check and the delete still runs once
//! (the report says `raced: true` when the durable moved past it meanwhile); an untracked
//! retrying task whose next attempt started within the last presence interval (10 s by
//! default) may finish that attempt. Tracked tasks have no such gap: use tracking
//! (`track_status`) for tasks that must be cancellable while they run.

use jetq_producer::{CancelOutcome, StatusError};
use serde::Serialize;

use crate::{
    error::AdminError,
    tasks::{ListState, TaskLocation},
    Admin,
};

/// What `jetq cancel` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CancelReport {
    /// The task id.
    pub id: String,
    /// `cancelled` (will not run), `requested` (running, the handler was told),
    /// `already_finished` (tracked and finished: nothing changed) or `deleted` (removed from a
    /// stream).
    pub outcome: String,
    /// `tracked`, `pending`, `retrying` or `delayed`: how it was found.
    pub was: String,
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
        let tracked = match self.producer().cancel(id).await {
            Ok(outcome) => Some(outcome),
            Err(StatusError::NotFound { .. }) | Err(StatusError::Unavailable(_)) => None,
            Err(err) => return Err(AdminError::Status(err)),
        };
        let location = self.find_task(id, queue).await?;
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
                // In flight: running, or waiting for its next attempt.
                let running = self.workers().await?.into_iter().any(|worker| {
                    worker
                        .record
                        .running
                        .iter()
                        .any(|task| task.sequence == found.task.sequence)
                });
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
                if running || !failed_before {
                    return Err(AdminError::CannotCancel {
                        id: id.to_owned(),
                        reason: "running: cannot be stopped, it was not tracked (enqueue it \
                                 with tracking, or give its type track_status(true), to cancel \
                                 running tasks)"
                            .into(),
                    });
                }
                self.delete_from(&found).await?;
                if let Some(store) = self
                    .optional_bucket(&self.subjects().attempts_bucket())
                    .await?
                {
                    let _ = store.delete(found.task.sequence.to_string()).await;
                }
                Ok(deleted(id, "retrying", &found, false))
            }
        }
    }

    async fn delete_from(&self, found: &TaskLocation) -> Result<(), AdminError> {
        let stream = self
            .optional_stream(&found.task.stream)
            .await?
            .ok_or_else(|| AdminError::not_found(format!("stream {}", found.task.stream), None))?;
        match stream.delete_message(found.task.sequence).await {
            Ok(_) => Ok(()),
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
        stream: Some(found.task.stream.clone()),
        sequence: Some(found.task.sequence),
        state: None,
        raced,
    }
}
