//! Purging one queue's waiting tasks (`jetq queues purge`): what an operator does when a bug
//! enqueued a flood of tasks that must not run, or a queue is retired.
//!
//! A purge deletes the queue's messages from the task stream with one JetStream purge request
//! per priority level (PROTOCOL §12), filtered by the level's subject
//! (`<prefix>.task.<queue>.*`, `<prefix>.task.<queue>~high.*`, `<prefix>.task.<queue>~low.*`,
//! or one task type's subjects); `--priority` purges one level only. What that covers, and what
//! it does not:
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

use jetq_contract::Priority;
use serde::Serialize;

use crate::{
    admin::Admin,
    error::AdminError,
    stats::{subject_counts, unknown_queue, ByPriority},
};

/// What a purge would delete, or deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueuePurge {
    /// The queue.
    pub queue: String,
    /// Only this task type, when one was named.
    pub task: Option<String>,
    /// Only this priority level, when one was named (`high`, `normal` or `low`); `null`: all.
    pub priority: Option<String>,
    /// Tasks in the task stream (pending or running), all levels purged together.
    pub tasks: u64,
    /// `tasks` for each level.
    pub tasks_by_priority: ByPriority,
    /// Delayed tasks (only counted and purged with `delayed`), of the levels purged.
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
    /// stream (of one task type when `task` is given, of one level when `priority` is) and,
    /// with `delayed`, its delayed tasks. An unknown queue (no messages, no consumer) is an
    /// error, so a typo does not look like an empty queue.
    pub async fn count_queue(
        &self,
        queue: &str,
        task: Option<&str>,
        priority: Option<Priority>,
        delayed: bool,
    ) -> Result<QueuePurge, AdminError> {
        let found = self
            .on_queue(Action::Count, queue, task, priority, delayed)
            .await?;
        if found.total() == 0 && !self.queue_known(queue).await? {
            return Err(unknown_queue(queue));
        }
        Ok(found)
    }

    /// Deletes the queue's tasks from the task stream (of one task type when `task` is given,
    /// of one level when `priority` is) and, with `delayed`, its delayed tasks; returns what
    /// the server deleted. See the module documentation for what happens to running tasks.
    pub async fn purge_queue(
        &self,
        queue: &str,
        task: Option<&str>,
        priority: Option<Priority>,
        delayed: bool,
    ) -> Result<QueuePurge, AdminError> {
        self.on_queue(Action::Purge, queue, task, priority, delayed)
            .await
    }

    /// Counts or purges the queue's tasks and, with `delayed`, its delayed tasks, level by
    /// level.
    async fn on_queue(
        &self,
        action: Action,
        queue: &str,
        task: Option<&str>,
        priority: Option<Priority>,
        delayed: bool,
    ) -> Result<QueuePurge, AdminError> {
        let filters = self.purge_filters(queue, task, priority)?;
        let tasks_stream = self.tasks_stream().await?;
        let delayed_stream = match delayed {
            true => self.delayed_stream().await?,
            false => None,
        };
        let mut found = QueuePurge {
            queue: queue.to_owned(),
            task: task.map(str::to_owned),
            priority: priority.map(|level| level.as_str().to_owned()),
            ..QueuePurge::default()
        };
        for (level, tasks_filter, delayed_filter) in filters {
            let tasks = action.apply(&tasks_stream, &tasks_filter).await?;
            found.tasks += tasks;
            *found.tasks_by_priority.slot(level) += tasks;
            if let Some(stream) = &delayed_stream {
                found.delayed += action.apply(stream, &delayed_filter).await?;
            }
        }
        Ok(found)
    }

    /// The subject filters of a queue's (or one task type's) tasks and delayed tasks, one pair
    /// per level (or for the one level asked for); bad names are refused before anything is
    /// asked.
    fn purge_filters(
        &self,
        queue: &str,
        task: Option<&str>,
        priority: Option<Priority>,
    ) -> Result<Vec<(Priority, String, String)>, AdminError> {
        jetq_contract::name::validate(jetq_contract::NameKind::Queue, queue)?;
        if let Some(task) = task {
            jetq_contract::name::validate(jetq_contract::NameKind::Task, task)?;
        }
        let subjects = self.subjects();
        let prefix = subjects.prefix();
        let levels = match priority {
            Some(level) => vec![level],
            None => Priority::ALL.to_vec(),
        };
        Ok(levels
            .into_iter()
            .map(|level| {
                let token = level.queue_token(queue);
                match task {
                    Some(task) => (
                        level,
                        subjects.task_at(queue, level, task),
                        format!("{prefix}.delayed.*.{token}.{task}"),
                    ),
                    None => (
                        level,
                        subjects.queue_filter_at(queue, level),
                        format!("{prefix}.delayed.*.{token}.*"),
                    ),
                }
            })
            .collect())
    }

    async fn delayed_stream(
        &self,
    ) -> Result<Option<async_nats::jetstream::stream::Stream>, AdminError> {
        self.optional_stream(&self.subjects().delayed_stream())
            .await
    }

    /// A queue with no messages is known when a durable consumer of one of its levels exists.
    async fn queue_known(&self, queue: &str) -> Result<bool, AdminError> {
        let tasks = self.tasks_stream().await?;
        for level in Priority::ALL {
            if tasks
                .consumer_info(self.subjects().durable_at(queue, level))
                .await
                .is_ok()
            {
                return Ok(true);
            }
        }
        Ok(false)
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
