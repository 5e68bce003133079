//! Bulk actions run in the background: a replay or discard of every dead letter matching a
//! filter is a job with an id, run by [`Admin::replay`] or [`Admin::purge`] (the code behind
//! `jetq dead replay|purge`), and so is a cancel of every task matching a filter
//! ([`Admin::cancel_matching`], `jetq cancel --all`); their progress is fed by their
//! [`Progress`] calls. The page polls
//! `GET /api/jobs/{id}`; the dashboard keeps the last [`KEEP`] jobs in memory (they are not
//! persisted: a restart forgets them, the letters' state is in JetStream).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use super::{dead::describe, error_response, AppState, Caller};
use crate::{
    cancel::bulk::CancelFilter,
    dead::{DeadFilter, Progress, ReplayOptions, Selection},
    Admin,
};

/// Jobs kept for `GET /api/jobs`.
const KEEP: usize = 50;

/// What a bulk job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum BulkAction {
    /// Re-enqueue each letter (`jetq dead replay`).
    Replay,
    /// Delete each letter (`jetq dead purge`).
    Discard,
    /// Cancel each task matching a task filter (`jetq cancel --all`).
    Cancel,
}

/// What a job works on.
#[derive(Debug, Clone)]
pub(super) enum JobTarget {
    /// Dead letters (replay, discard).
    Dead(DeadFilter),
    /// Tasks (cancel).
    Tasks(CancelFilter),
}

/// How a job ended.
#[derive(Debug, Clone)]
struct Outcome {
    succeeded: u64,
    failed: u64,
    error: Option<String>,
    finished_at: String,
    elapsed_ms: u64,
}

/// One bulk job.
#[derive(Debug)]
pub(super) struct Job {
    id: String,
    action: BulkAction,
    filter: String,
    by: String,
    confirmed: Option<u64>,
    started_at: String,
    started: Instant,
    estimate: AtomicU64,
    processed: AtomicU64,
    outcome: Mutex<Option<Outcome>>,
}

/// A job as `GET /api/jobs/{id}` shows it.
#[derive(Debug, Serialize)]
pub(super) struct JobView {
    id: String,
    action: BulkAction,
    filter: String,
    by: String,
    /// `running`, `done` (every letter handled; some may have failed) or `failed` (the job
    /// stopped on an error).
    state: &'static str,
    /// How many letters the job expects: the count the operator confirmed, else the scan's
    /// estimate.
    expected: u64,
    /// Letters handled so far.
    processed: u64,
    /// Replayed or deleted (when finished).
    succeeded: u64,
    /// Left in place because their replay or deletion failed.
    failed: u64,
    error: Option<String>,
    started_at: String,
    finished_at: Option<String>,
    elapsed_ms: u64,
}

impl Progress for Job {
    fn set_total(&self, total: u64) {
        self.estimate.store(total, Ordering::Relaxed);
    }

    fn inc(&self, n: u64) {
        self.processed.fetch_add(n, Ordering::Relaxed);
    }
}

impl Job {
    fn outcome(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(super) fn view(&self) -> JobView {
        let outcome = self.outcome();
        let processed = self.processed.load(Ordering::Relaxed);
        let estimate = self.estimate.load(Ordering::Relaxed);
        JobView {
            id: self.id.clone(),
            action: self.action,
            filter: self.filter.clone(),
            by: self.by.clone(),
            state: match &outcome {
                None => "running",
                Some(o) if o.error.is_some() => "failed",
                Some(_) => "done",
            },
            expected: self.confirmed.unwrap_or(estimate).max(processed),
            processed,
            succeeded: outcome.as_ref().map_or(0, |o| o.succeeded),
            failed: outcome.as_ref().map_or(0, |o| o.failed),
            error: outcome.as_ref().and_then(|o| o.error.clone()),
            started_at: self.started_at.clone(),
            finished_at: outcome.as_ref().map(|o| o.finished_at.clone()),
            elapsed_ms: outcome.as_ref().map_or_else(
                || self.started.elapsed().as_millis() as u64,
                |o| o.elapsed_ms,
            ),
        }
    }

    fn finish(&self, succeeded: u64, failed: u64, error: Option<String>) {
        let outcome = Outcome {
            succeeded,
            failed,
            error,
            finished_at: jetq_contract::time::now(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        };
        *self
            .outcome
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(outcome);
    }
}

/// The dashboard's jobs, newest last.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    next: AtomicU64,
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl Jobs {
    fn list(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Job>>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.list().iter().find(|j| j.id == id).cloned()
    }

    /// The view of job `id`, if the dashboard still has it.
    pub(super) fn view(&self, id: &str) -> Option<JobView> {
        self.get(id).map(|job| job.view())
    }

    /// Starts `action` on every dead letter or task matching `target` in the background.
    pub(super) fn start(
        &self,
        admin: Admin,
        action: BulkAction,
        target: JobTarget,
        by: String,
        confirmed: Option<u64>,
    ) -> Arc<Job> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let job = Arc::new(Job {
            id: format!("job-{stamp}-{n}"),
            action,
            filter: match &target {
                JobTarget::Dead(filter) => describe(filter),
                JobTarget::Tasks(filter) => filter.describe(),
            },
            by,
            confirmed,
            started_at: jetq_contract::time::now(),
            started: Instant::now(),
            estimate: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            outcome: Mutex::new(None),
        });
        {
            let mut list = self.list();
            list.push_back(job.clone());
            while list.len() > KEEP {
                list.pop_front();
            }
        }
        tracing::info!(
            by = %job.by,
            job = %job.id,
            action = ?action,
            filter = %job.filter,
            confirmed = ?confirmed,
            "dashboard: bulk action started"
        );
        let running = job.clone();
        tokio::spawn(async move {
            let result = match target {
                JobTarget::Dead(filter) => {
                    let selection = Selection::Filter(filter);
                    match action {
                        BulkAction::Replay => admin
                            .replay(&selection, &ReplayOptions::default(), running.as_ref())
                            .await
                            .map(|r| {
                                let first = r.failures.first().map(|f| {
                                    format!("dead letter {}: {}", f.dead_sequence, f.error)
                                });
                                (r.replayed, r.failed, first)
                            }),
                        _ => admin
                            .purge(&selection, false, running.as_ref())
                            .await
                            .map(|r| {
                                let first = r.failures.first().map(|f| {
                                    format!("dead letter {}: {}", f.dead_sequence, f.error)
                                });
                                (r.deleted, r.failed, first)
                            }),
                    }
                }
                JobTarget::Tasks(filter) => admin
                    .cancel_matching(&filter, false, running.as_ref())
                    .await
                    .map(|r| {
                        let first = r.failures.first().map(|f| {
                            format!(
                                "task {} (sequence {}): {}",
                                f.id.as_deref().unwrap_or("-"),
                                f.sequence,
                                f.error
                            )
                        });
                        (r.cancelled + r.gone, r.failed, first)
                    }),
            };
            match result {
                Ok((succeeded, failed, first_failure)) => {
                    running.finish(succeeded, failed, None);
                    tracing::info!(
                        by = %running.by,
                        job = %running.id,
                        action = ?action,
                        filter = %running.filter,
                        succeeded,
                        failed,
                        first_failure = ?first_failure,
                        elapsed_ms = running.view().elapsed_ms,
                        "dashboard: bulk action done"
                    );
                }
                Err(err) => {
                    let processed = running.processed.load(Ordering::Relaxed);
                    running.finish(processed, 0, Some(err.to_string()));
                    tracing::info!(
                        by = %running.by,
                        job = %running.id,
                        action = ?action,
                        filter = %running.filter,
                        processed,
                        error = %err,
                        "dashboard: bulk action failed"
                    );
                }
            }
        });
        job
    }
}

/// The answer to a bulk request (`POST /api/dead/bulk`, `POST /api/tasks/bulk-cancel`): 400
/// when its filter did not parse, else 202 with the job started for `caller` (`confirmed`: the
/// count the operator confirmed), which `GET /api/jobs/{id}` follows.
pub(super) fn start_response(
    state: &AppState,
    caller: &Caller,
    action: BulkAction,
    target: Result<JobTarget, String>,
    confirmed: Option<u64>,
) -> Response {
    let target = match target {
        Ok(target) => target,
        Err(err) => return error_response(StatusCode::BAD_REQUEST, err),
    };
    let job = state
        .jobs
        .start(state.admin.clone(), action, target, caller.who(), confirmed);
    (StatusCode::ACCEPTED, Json(job.view())).into_response()
}

/// `GET /api/jobs`: the recent jobs, newest first.
pub(super) async fn api_list(State(state): State<AppState>) -> Response {
    let views: Vec<JobView> = state.jobs.list().iter().rev().map(|j| j.view()).collect();
    Json(views).into_response()
}

/// `GET /api/jobs/{id}`: one job's progress or result.
pub(super) async fn api_one(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.jobs.get(&id) {
        Some(job) => Json(job.view()).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            format!(
                "no job {id} (the dashboard keeps the last {KEEP}, and forgets them on restart)"
            ),
        ),
    }
}
