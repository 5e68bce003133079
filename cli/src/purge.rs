//! Purging one queue's waiting tasks (`jetq queues purge`): what an operator does when a bug
//! enqueued a flood of tasks that must not run, or a queue is retired.
//!
//! A purge deletes the queue's messages from the task stream with one JetStream purge request
//! filtered by the queue's subject (`<prefix>.task.<queue>.*`, or one task type's subject). What
//! that covers, and what it does not:
//!
//! - **Pending** tasks (not yet delivered, or waiting for a redelivery after a failure or a
//!   hand-back): deleted; no worker will run them.
//! - **Running** tasks: their messages are deleted too, but a handler already running finishes;
//!   its ack then finds nothing to acknowledge (harmless), and a failure cannot be retried, since
//!   the message is gone. Pause the queue first (`jetq pause`) and wait for running tasks to end
//!   when that matters.
//! - **Delayed** tasks of the queue (in the delayed-task stream, released by the scheduler when
//!   due) only with `--delayed`: they are not pending yet.
//! - **Dead letters** are not touched (`jetq dead purge --queue` deletes those).
//!
//! Tracked tasks keep their last status record (e.g. `queued`) until the status bucket's TTL
//! removes it: the purge writes no status. Nothing can be undone; the CLI asks first.

use serde::Serialize;

use crate::{
    admin::Admin,
    error::AdminError,
    stats::{subject_counts, unknown_queue},
};

/// What a purge would delete, or deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueuePurge {
    /// The queue.
    pub queue: String,
    /// Only this task type, when one was named.
    pub task: Option<String>,
    /// Tasks in the task stream (pending or running).
    pub tasks: u64,
    /// Delayed tasks (only counted and purged with `delayed`).
    pub delayed: u64,
}

impl QueuePurge {
    /// Tasks in all.
    pub fn total(&self) -> u64 {
        self.tasks + self.delayed
    }
}

impl Admin {
    /// How many tasks [`Admin::purge_queue`] would delete now: the queue's messages in the task
    /// stream (of one task type when `task` is given) and, with `delayed`, its delayed tasks.
    /// An unknown queue (no messages, no consumer) is an error, so a typo does not look like an
    /// empty queue.
    pub async fn count_queue(
        &self,
        queue: &str,
        task: Option<&str>,
        delayed: bool,
    ) -> Result<QueuePurge, AdminError> {
        let found = self.on_queue(Action::Count, queue, task, delayed).await?;
        if found.total() == 0 && !self.queue_known(queue).await? {
            return Err(unknown_queue(queue));
        }
        Ok(found)
    }

    /// Deletes the queue's tasks from the task stream (of one task type when `task` is given)
    /// and, with `delayed`, its delayed tasks; returns what the server deleted. See the module
    /// documentation for what happens to running tasks.
    pub async fn purge_queue(
        &self,
        queue: &str,
        task: Option<&str>,
        delayed: bool,
    ) -> Result<QueuePurge, AdminError> {
        self.on_queue(Action::Purge, queue, task, delayed).await
    }

    /// Counts or purges the queue's tasks and, with `delayed`, its delayed tasks.
    async fn on_queue(
        &self,
        action: Action,
        queue: &str,
        task: Option<&str>,
        delayed: bool,
    ) -> Result<QueuePurge, AdminError> {
        let (tasks_filter, delayed_filter) = self.purge_filters(queue, task)?;
        let tasks = action
            .apply(&self.tasks_stream().await?, &tasks_filter)
            .await?;
        let delayed = match (delayed, self.delayed_stream().await?) {
            (true, Some(stream)) => action.apply(&stream, &delayed_filter).await?,
            _ => 0,
        };
        Ok(QueuePurge {
            queue: queue.to_owned(),
            task: task.map(str::to_owned),
            tasks,
            delayed,
        })
    }

    /// The subject filters of a queue's (or one task type's) tasks and delayed tasks; bad
    /// names are refused before anything is asked.
    fn purge_filters(
        &self,
        queue: &str,
        task: Option<&str>,
    ) -> Result<(String, String), AdminError> {
        jetq_contract::name::validate(jetq_contract::NameKind::Queue, queue)?;
        let subjects = self.subjects();
        let prefix = subjects.prefix();
        match task {
            Some(task) => {
                jetq_contract::name::validate(jetq_contract::NameKind::Task, task)?;
                Ok((
                    subjects.task(queue, task),
                    format!("{prefix}.delayed.*.{queue}.{task}"),
                ))
            }
            None => Ok((
                subjects.queue_filter(queue),
                format!("{prefix}.delayed.*.{queue}.*"),
            )),
        }
    }

    async fn delayed_stream(
        &self,
    ) -> Result<Option<async_nats::jetstream::stream::Stream>, AdminError> {
        self.optional_stream(&self.subjects().delayed_stream())
            .await
    }

    /// A queue with no messages is known when its durable consumer exists.
    async fn queue_known(&self, queue: &str) -> Result<bool, AdminError> {
        let tasks = self.tasks_stream().await?;
        Ok(tasks
            .consumer_info(self.subjects().durable(queue))
            .await
            .is_ok())
    }
}

/// What [`Admin::on_queue`] does to the matching messages.
#[derive(Debug, Clone, Copy)]
enum Action {
    Count,
    Purge,
}

impl Action {
    /// Counts or purges the messages of `stream` on subjects matching `filter`.
    async fn apply(
        self,
        stream: &async_nats::jetstream::stream::Stream,
        filter: &str,
    ) -> Result<u64, AdminError> {
        match self {
            Action::Count => count(stream, filter).await,
            Action::Purge => purge(stream, filter).await,
        }
    }
}

/// Messages of `stream` on subjects matching `filter`.
async fn count(
    stream: &async_nats::jetstream::stream::Stream,
    filter: &str,
) -> Result<u64, AdminError> {
    let counts = subject_counts(stream, filter, |_| Some(String::new())).await?;
    Ok(counts.values().sum())
}

/// Purges the messages of `stream` on subjects matching `filter`; how many were deleted.
async fn purge(
    stream: &async_nats::jetstream::stream::Stream,
    filter: &str,
) -> Result<u64, AdminError> {
    let name = stream.cached_info().config.name.clone();
    let response = stream
        .purge()
        .filter(filter)
        .await
        .map_err(|err| AdminError::nats(format!("cannot purge {filter} from {name}"), err))?;
    Ok(response.purged)
}
