//! One task by id (`jetq tasks show`, the console's task page): its status record, where it
//! waits, its attempts, the worker running it and its dead letters.

use jetq_contract::{attempts::AttemptRecord, headers, Priority};
use serde::Serialize;

use super::{header, ListState, TaskLocation, TaskSummary};
use crate::{admin::Admin, error::AdminError};

/// Everything known about one task id (`jetq tasks show`).
#[derive(Debug, Clone, Serialize)]
pub struct TaskDetail {
    /// The task id.
    pub id: String,
    /// Its status record, if it is tracked.
    pub status: Option<jetq_contract::TaskStatus>,
    /// Where it waits, if it is queued, in flight or delayed.
    pub location: Option<TaskLocation>,
    /// Its attempt record (hand-backs and failed attempts), if it is in the task stream.
    pub attempts: Option<AttemptRecord>,
    /// Running now on this worker, if presence lists it.
    pub worker: Option<String>,
    /// Its dead letters (sequence, reason, error), if any.
    pub dead_letters: Vec<TaskSummary>,
}

impl Admin {
    /// Everything known about task `id`: status record, where it waits, attempt record, the
    /// worker running it, dead letters. [`AdminError::NotFound`] if nothing is known.
    pub async fn task_detail(
        &self,
        id: &str,
        queue: Option<&str>,
    ) -> Result<TaskDetail, AdminError> {
        let status = match self.task_status(id).await {
            Ok(status) => Some(status),
            Err(err) if err.kind() == crate::ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        let location = self.find_task(id, queue).await?;
        let attempts = match location.as_ref().filter(|l| l.place != "delayed") {
            Some(found) => match self
                .optional_bucket(&self.subjects().attempts_bucket())
                .await?
            {
                Some(store) => store
                    .get(found.task.sequence.to_string())
                    .await
                    .ok()
                    .flatten()
                    .and_then(|value| AttemptRecord::from_json(&value).ok()),
                None => None,
            },
            None => None,
        };
        let worker = self.workers().await?.into_iter().find_map(|worker| {
            worker
                .record
                .running
                .iter()
                .any(|task| task.id == id)
                .then(|| worker.record.id.clone())
        });
        let stream = self.subjects().dead_stream();
        let dead_letters: Vec<TaskSummary> = self
            .dead_letters_of_task(id)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|dead| TaskSummary {
                state: ListState::Dead,
                id: dead.task_id,
                queue: dead.queue,
                task: dead.task,
                priority: header(&dead.raw_headers, headers::PRIORITY)
                    .unwrap_or_else(|| Priority::Normal.as_str().to_owned()),
                stream: stream.clone(),
                sequence: dead.sequence,
                enqueued_at: dead.enqueued_at,
                not_before: None,
                attempt: dead.attempts,
                error: dead.error,
                reason: dead.reason,
                worker: None,
                started_at: None,
            })
            .collect();
        if status.is_none() && location.is_none() && worker.is_none() && dead_letters.is_empty() {
            return Err(AdminError::not_found(
                format!("task {id}"),
                Some(
                    "not tracked, not queued, in flight or delayed, not running and not \
                     dead-lettered (finished untracked tasks leave no trace)"
                        .into(),
                ),
            ));
        }
        Ok(TaskDetail {
            id: id.to_owned(),
            status,
            location,
            attempts,
            worker,
            dead_letters,
        })
    }
}
