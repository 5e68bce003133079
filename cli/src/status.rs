//! Task status: the record a tracked task keeps in the `JETQ_STATUS` bucket (state, attempts,
//! progress, result, error, artifacts), read through the producer's status API. Only task types
//! with `TaskOptions::track_status(true)` (or tasks enqueued with the tracking header) have one;
//! see `docs/STATUS.md`.

use std::time::Duration;

use jetq_producer::StatusError;

pub use jetq_contract::{TaskState, TaskStatus};

use crate::{error::AdminError, Admin};

/// What an operator can do when a task has no status record.
const NO_RECORD_HINT: &str = "only tasks of types with track_status(true), or enqueued with \
     tracking, have a status; records expire after JETQ_STATUS_TTL";

impl Admin {
    /// The status record of task `task_id`. A task without a record (unknown id, untracked type,
    /// expired, or no tracked task ever ran here) is [`AdminError::NotFound`].
    pub async fn task_status(&self, task_id: &str) -> Result<TaskStatus, AdminError> {
        match self.producer().status(task_id).await {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(not_found(task_id)),
            Err(err) => Err(status_error(task_id, err)),
        }
    }

    /// Waits (watching the record, no polling) until task `task_id` reaches a terminal state
    /// (succeeded, failed, dead, cancelled) and returns that record; a task still running after
    /// `timeout` is an error of kind `Failed` that names its last state.
    pub async fn wait_for_task(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<TaskStatus, AdminError> {
        self.producer()
            .wait(task_id, timeout)
            .await
            .map_err(|err| status_error(task_id, err))
    }
}

fn not_found(task_id: &str) -> AdminError {
    AdminError::NotFound {
        what: format!("status of task {task_id}"),
        hint: Some(NO_RECORD_HINT.into()),
    }
}

fn status_error(task_id: &str, err: StatusError) -> AdminError {
    match err {
        // No bucket: no tracked task ever ran against this server (the CLI never creates it).
        StatusError::NotFound { .. } | StatusError::Unavailable(_) => not_found(task_id),
        other => AdminError::Status(other),
    }
}
