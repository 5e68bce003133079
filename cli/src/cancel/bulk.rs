//! Cancelling every task matching a filter (`jetq cancel --all`, the console's bulk Cancel):
//! the tasks of the chosen states (pending, delayed, retrying, running; all four by default)
//! in a queue and/or of a task type are listed first (the dry run's count), then each is
//! cancelled as `jetq cancel <id>` would ([`Admin::cancel_task`]'s table), without searching
//! for it again: the listing says where it is.
//!
//! A task that ends meanwhile (succeeded, or already gone) counts as `gone`, not as a failure.
//! Tasks enqueued after the listing are not cancelled.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::CancelReport;
use crate::{
    dead::Progress,
    error::AdminError,
    tasks::{ListState, PageRequest, TaskFilter, TaskLocation, TaskSummary},
    Admin,
};

/// Tasks read per listing page.
const PAGE: usize = 1000;

/// The most failures a report lists (it counts all of them).
const MAX_FAILURES: usize = 20;

/// Which tasks a bulk cancel takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelFilter {
    /// Only this queue (all its priority levels).
    pub queue: Option<String>,
    /// Only this task type.
    pub task: Option<String>,
    /// Only these states (pending, delayed, retrying, running); empty means all four.
    pub states: Vec<ListState>,
}

impl CancelFilter {
    /// The states to list: the chosen ones, or all four cancellable states.
    pub fn states(&self) -> Vec<ListState> {
        if self.states.is_empty() {
            vec![
                ListState::Pending,
                ListState::Delayed,
                ListState::Retrying,
                ListState::Running,
            ]
        } else {
            self.states.clone()
        }
    }

    /// Checks the states: dead letters are not tasks to cancel.
    pub fn validate(&self) -> Result<(), AdminError> {
        if self.states.contains(&ListState::Dead) {
            return Err(AdminError::Invalid(
                "dead letters cannot be cancelled (discard them: `jetq dead purge`); the states \
                 are pending, delayed, retrying and running"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The filter in words, for confirmations and logs.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(queue) = &self.queue {
            parts.push(format!("queue={queue}"));
        }
        if let Some(task) = &self.task {
            parts.push(format!("type={task}"));
        }
        let states: Vec<String> = self.states().iter().map(ToString::to_string).collect();
        parts.push(format!("state={}", states.join(",")));
        parts.join(", ")
    }
}

/// A task a bulk cancel could not cancel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CancelFailure {
    /// The task id (`null` if it has none).
    pub id: Option<String>,
    /// Its sequence in its stream.
    pub sequence: u64,
    /// Why.
    pub error: String,
}

/// What a bulk cancel did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkCancelReport {
    /// The filter in words.
    pub filter: String,
    /// Only counted.
    pub dry_run: bool,
    /// Tasks matching the filter when they were listed, by state.
    pub matched: u64,
    /// Per state listed: how many matched.
    pub by_state: BTreeMap<String, u64>,
    /// Cancelled: deleted, marked `cancelled` or (running) `requested`.
    pub cancelled: u64,
    /// Per outcome (`deleted`, `cancelled`, `requested`, `already_finished`).
    pub by_outcome: BTreeMap<String, u64>,
    /// Ended or removed meanwhile (not found any more).
    pub gone: u64,
    /// Could not be cancelled (see `failures`).
    pub failed: u64,
    /// The first failures.
    pub failures: Vec<CancelFailure>,
}

impl Admin {
    /// Every task matching `filter` now, by state, each once (a task retrying and running is
    /// listed as running).
    pub async fn cancellable_tasks(
        &self,
        filter: &CancelFilter,
    ) -> Result<Vec<TaskSummary>, AdminError> {
        filter.validate()?;
        let mut seen = BTreeSet::new();
        let mut found = Vec::new();
        let mut states = filter.states();
        // Running before retrying: a running task also looks like a retrying one.
        states.sort_by_key(|s| match s {
            ListState::Running => 0,
            _ => 1,
        });
        for state in states {
            let task_filter = TaskFilter {
                state,
                queue: filter.queue.clone(),
                task: filter.task.clone(),
            };
            let mut after = None;
            loop {
                let page = self
                    .tasks(
                        &task_filter,
                        &PageRequest {
                            limit: PAGE,
                            after: after.clone(),
                        },
                    )
                    .await?;
                for task in page.tasks {
                    if seen.insert((task.stream.clone(), task.sequence)) {
                        found.push(task);
                    }
                }
                match page.next {
                    Some(next) if Some(&next) != after.as_ref() => after = Some(next),
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    /// Cancels every task matching `filter` (only counts them with `dry_run`), reporting each
    /// one done to `progress`.
    pub async fn cancel_matching(
        &self,
        filter: &CancelFilter,
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<BulkCancelReport, AdminError> {
        let tasks = self.cancellable_tasks(filter).await?;
        let mut report = BulkCancelReport {
            filter: filter.describe(),
            dry_run,
            matched: tasks.len() as u64,
            by_state: BTreeMap::new(),
            cancelled: 0,
            by_outcome: BTreeMap::new(),
            gone: 0,
            failed: 0,
            failures: Vec::new(),
        };
        for task in &tasks {
            *report.by_state.entry(task.state.to_string()).or_default() += 1;
        }
        if dry_run {
            return Ok(report);
        }
        progress.set_total(report.matched);
        for task in tasks {
            match self.cancel_listed(&task).await {
                Ok(done) => {
                    if done.outcome != "already_finished" {
                        report.cancelled += 1;
                    }
                    *report.by_outcome.entry(done.outcome).or_default() += 1;
                }
                Err(AdminError::NotFound { .. }) => report.gone += 1,
                Err(err) => {
                    report.failed += 1;
                    if report.failures.len() < MAX_FAILURES {
                        report.failures.push(CancelFailure {
                            id: task.id.clone(),
                            sequence: task.sequence,
                            error: err.to_string(),
                        });
                    }
                }
            }
            progress.inc(1);
        }
        Ok(report)
    }

    /// Cancels one listed task where the listing found it.
    async fn cancel_listed(&self, task: &TaskSummary) -> Result<CancelReport, AdminError> {
        let id = task.id.clone().unwrap_or_default();
        let tracked = if id.is_empty() {
            None
        } else {
            self.cancel_tracked(&id).await?
        };
        let place = match task.state {
            ListState::Pending => "pending",
            ListState::Delayed => "delayed",
            _ => "in_flight",
        };
        let location = TaskLocation {
            place: place.into(),
            task: task.clone(),
        };
        self.cancel_found(&id, tracked, Some(location)).await
    }
}
