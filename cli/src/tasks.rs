//! Tasks by state, paged (`jetq tasks list`, the console's task pages), one task by id
//! (`jetq tasks show`) and cancelling any task (`jetq cancel`).
//!
//! Each state is read where it lives, from a start sequence, and a page stops at its limit, so
//! a page deep in a long listing costs what the first one does:
//!
//! | state | where | from |
//! |---|---|---|
//! | `pending` | task stream, above each level durable's `delivered.stream_sequence` (PROTOCOL §12: three durables per queue) | the lowest delivered floor of the durables concerned, or the cursor |
//! | `retrying` | task stream, delivered but not acked, with a failed attempt in `<PREFIX>_ATTEMPTS` (PROTOCOL §4) | the lowest ack floor, or the cursor |
//! | `delayed` | the delayed-task stream | its first sequence, or the cursor |
//! | `running` | the workers' presence records (PROTOCOL §14) | an offset |
//! | `dead` | the dead-letter stream (the `dead` module) | its first sequence, or the cursor |
//!
//! A cursor is the last sequence of the previous page (for `running`, the number of tasks
//! already shown), returned as [`TaskPage::next`].

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use async_nats::{jetstream::stream::Stream, HeaderMap};
use futures::TryStreamExt;
use jetq_contract::{attempts::AttemptRecord, headers, NameKind, Priority, Subjects};
use serde::Serialize;

use crate::{admin::Admin, dead::DeadFilter, error::AdminError};

mod detail;
mod reader;

pub use detail::TaskDetail;
use reader::BATCH;

/// A state `jetq tasks list` can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListState {
    /// Stored and not delivered to any worker yet.
    Pending,
    /// Waiting in the delayed-task stream for its due time.
    Delayed,
    /// Delivered, failed at least once, waiting for its next attempt (or running it).
    Retrying,
    /// Running on a worker now (from worker presence).
    Running,
    /// Dead-lettered.
    Dead,
}

impl std::str::FromStr for ListState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pending" => Ok(ListState::Pending),
            "delayed" => Ok(ListState::Delayed),
            "retrying" => Ok(ListState::Retrying),
            "running" => Ok(ListState::Running),
            "dead" => Ok(ListState::Dead),
            other => Err(format!(
                "unknown state {other:?}: the states are pending, delayed, retrying, running and dead"
            )),
        }
    }
}

impl std::fmt::Display for ListState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListState::Pending => "pending",
            ListState::Delayed => "delayed",
            ListState::Retrying => "retrying",
            ListState::Running => "running",
            ListState::Dead => "dead",
        })
    }
}

/// Which tasks to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFilter {
    /// The state.
    pub state: ListState,
    /// Only this queue (all its priority levels).
    pub queue: Option<String>,
    /// Only this task type.
    pub task: Option<String>,
}

/// Which page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// At most this many tasks (at least 1).
    pub limit: usize,
    /// The previous page's [`TaskPage::next`]; `None` for the first page.
    pub after: Option<String>,
}

/// One task in a listing. Fields a state does not have are `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSummary {
    /// The task's state in this listing.
    pub state: ListState,
    /// The task id (its `Nats-Msg-Id`), `null` if it has none.
    pub id: Option<String>,
    /// The queue (without level).
    pub queue: String,
    /// The task type.
    pub task: String,
    /// The priority level: `high`, `normal` or `low`.
    pub priority: String,
    /// The stream the task is stored in.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// `Jetq-Enqueued-At`.
    pub enqueued_at: Option<String>,
    /// Delayed: the due time (`Jetq-Not-Before`).
    pub not_before: Option<String>,
    /// Retrying, running, dead: the attempt (running: current; retrying: failed so far).
    pub attempt: Option<u32>,
    /// Retrying, dead: the last error.
    pub error: Option<String>,
    /// Dead: the reason.
    pub reason: Option<String>,
    /// Running: the worker id.
    pub worker: Option<String>,
    /// Running: when the attempt started.
    pub started_at: Option<String>,
}

/// A page of tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskPage {
    /// The state listed.
    pub state: ListState,
    /// The tasks, in stream order (running: oldest attempt first).
    pub tasks: Vec<TaskSummary>,
    /// The cursor of the next page, `null` on the last page.
    pub next: Option<String>,
}

/// Where a task is, for `jetq tasks show` and `jetq cancel`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskLocation {
    /// `pending`, `in_flight` (delivered, not acknowledged: running or waiting to retry) or
    /// `delayed`.
    pub place: String,
    /// The task as listed.
    pub task: TaskSummary,
}

/// The level durables' floors: `(delivered, ack floor)` stream sequences by `(queue, level)`.
type Floors = BTreeMap<(String, Priority), (u64, u64)>;

/// The most messages a search by id reads before it gives up (`--queue` narrows it).
pub const MAX_SEARCH: u64 = 1_000_000;

impl Admin {
    /// A page of tasks in one state (see the module documentation for where each comes from).
    pub async fn tasks(
        &self,
        filter: &TaskFilter,
        page: &PageRequest,
    ) -> Result<TaskPage, AdminError> {
        if let Some(queue) = &filter.queue {
            jetq_contract::name::validate(NameKind::Queue, queue)?;
        }
        if let Some(task) = &filter.task {
            jetq_contract::name::validate(NameKind::Task, task)?;
        }
        let limit = page.limit.max(1);
        let after = match &page.after {
            None => None,
            Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                AdminError::Invalid(format!(
                    "--after {text:?} is not a cursor: pass the `next` of the previous page"
                ))
            })?),
        };
        match filter.state {
            ListState::Pending | ListState::Retrying => {
                self.stored_tasks(filter, after, limit).await
            }
            ListState::Delayed => self.delayed_tasks(filter, after, limit).await,
            ListState::Running => self.running_tasks(filter, after, limit).await,
            ListState::Dead => self.dead_tasks(filter, after, limit).await,
        }
    }

    /// The delivered and ack-floor sequences of every level durable (of `queue`, or all).
    async fn floors(&self, stream: &Stream, queue: Option<&str>) -> Result<Floors, AdminError> {
        let mut floors = Floors::new();
        match queue {
            Some(queue) => {
                for level in Priority::ALL {
                    let durable = self.subjects().durable_at(queue, level);
                    if let Ok(info) = stream.consumer_info(&durable).await {
                        floors.insert(
                            (queue.to_owned(), level),
                            (
                                info.delivered.stream_sequence,
                                info.ack_floor.stream_sequence,
                            ),
                        );
                    }
                }
            }
            None => {
                let mut consumers = stream.consumers();
                while let Some(info) = consumers.try_next().await.map_err(|err| {
                    AdminError::nats("cannot list the task stream's consumers", err)
                })? {
                    let Some(token) = info.name.strip_prefix("worker-") else {
                        continue;
                    };
                    let Some((queue, level)) = Priority::split_queue_token(token) else {
                        continue;
                    };
                    floors.insert(
                        (queue.to_owned(), level),
                        (
                            info.delivered.stream_sequence,
                            info.ack_floor.stream_sequence,
                        ),
                    );
                }
            }
        }
        Ok(floors)
    }

    /// Pending or retrying tasks, read from the task stream.
    async fn stored_tasks(
        &self,
        filter: &TaskFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<TaskPage, AdminError> {
        let subjects = self.subjects().clone();
        let stream = self.tasks_stream().await?;
        let floors = self.floors(&stream, filter.queue.as_deref()).await?;
        let pending = filter.state == ListState::Pending;
        // Where the range starts: above the lowest delivered floor (pending) or ack floor
        // (retrying) of the durables concerned; a queue without durables starts at 1.
        let lowest = |pick: fn(&(u64, u64)) -> u64| -> u64 {
            match &filter.queue {
                Some(_) if floors.len() == Priority::ALL.len() => {
                    floors.values().map(pick).min().unwrap_or(0)
                }
                Some(_) => 0,
                None => 0,
            }
        };
        let floor = if pending {
            lowest(|f| f.0)
        } else {
            lowest(|f| f.1)
        };
        let start = after.map_or(floor + 1, |a| a.saturating_add(1).max(floor + 1));
        // Retrying tasks are at or below their durable's delivered sequence.
        let end = if pending {
            None
        } else {
            Some(floors.values().map(|f| f.0).max().unwrap_or(0))
        };
        let attempts = if pending {
            None
        } else {
            self.optional_bucket(&subjects.attempts_bucket()).await?
        };
        let mut page = TaskPage {
            state: filter.state,
            tasks: Vec::new(),
            next: None,
        };
        if end.is_some_and(|end| end < start) || (!pending && attempts.is_none()) {
            return Ok(page);
        }
        let filters = task_filters(&subjects, filter.queue.as_deref(), filter.task.as_deref());
        let mut reader = self
            .read_from(&stream, filters, start, limit + 1, "the task stream")
            .await?;
        while let Some(message) = reader.next().await? {
            if end.is_some_and(|end| message.sequence > end) {
                break;
            }
            let Some((queue, level, task)) = subjects.parse_task_level(&message.subject) else {
                continue;
            };
            let (delivered, ack_floor) = floors
                .get(&(queue.to_owned(), level))
                .copied()
                .unwrap_or((0, 0));
            let mut summary = summary(
                filter.state,
                &subjects.tasks_stream(),
                message.sequence,
                queue,
                level,
                task,
                &message.headers,
            );
            if pending {
                if message.sequence <= delivered {
                    continue;
                }
            } else {
                if message.sequence > delivered || message.sequence <= ack_floor {
                    continue;
                }
                let Some(store) = &attempts else { break };
                let Ok(Some(value)) = store.get(message.sequence.to_string()).await else {
                    continue;
                };
                let Ok(record) = AttemptRecord::from_json(&value) else {
                    continue;
                };
                let Some(last) = record.failures.last() else {
                    continue;
                };
                summary.attempt = Some(last.attempt);
                summary.error = Some(last.error.clone());
            }
            if page.tasks.len() == limit {
                page.next = page.tasks.last().map(|t| t.sequence.to_string());
                break;
            }
            page.tasks.push(summary);
        }
        Ok(page)
    }

    /// Delayed tasks, in the order they were stored.
    async fn delayed_tasks(
        &self,
        filter: &TaskFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<TaskPage, AdminError> {
        let subjects = self.subjects().clone();
        let mut page = TaskPage {
            state: ListState::Delayed,
            tasks: Vec::new(),
            next: None,
        };
        let Some(stream) = self.optional_stream(&subjects.delayed_stream()).await? else {
            return Ok(page);
        };
        let filters = delayed_filters(&subjects, filter.queue.as_deref(), filter.task.as_deref());
        let start = after.map_or(1, |a| a.saturating_add(1));
        let mut reader = self
            .read_from(
                &stream,
                filters,
                start,
                limit + 1,
                "the delayed-task stream",
            )
            .await?;
        while let Some(message) = reader.next().await? {
            let Some((_, token, task)) = subjects.parse_delayed(&message.subject) else {
                continue;
            };
            let (queue, level) =
                Priority::split_queue_token(token).unwrap_or((token, Priority::Normal));
            let mut summary = summary(
                ListState::Delayed,
                &subjects.delayed_stream(),
                message.sequence,
                queue,
                level,
                task,
                &message.headers,
            );
            summary.not_before = header(&message.headers, headers::NOT_BEFORE);
            if page.tasks.len() == limit {
                page.next = page.tasks.last().map(|t| t.sequence.to_string());
                break;
            }
            page.tasks.push(summary);
        }
        Ok(page)
    }

    /// Running tasks, from the workers' presence records.
    async fn running_tasks(
        &self,
        filter: &TaskFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<TaskPage, AdminError> {
        let stream = self.subjects().tasks_stream();
        let mut running: Vec<TaskSummary> = self
            .workers()
            .await?
            .into_iter()
            .flat_map(|worker| {
                let id = worker.record.id.clone();
                worker
                    .record
                    .running
                    .into_iter()
                    .map(move |task| (id.clone(), task))
            })
            .filter(|(_, task)| {
                filter.queue.as_ref().is_none_or(|q| *q == task.queue)
                    && filter.task.as_ref().is_none_or(|t| *t == task.task)
            })
            .map(|(worker, task)| TaskSummary {
                state: ListState::Running,
                id: Some(task.id),
                queue: task.queue,
                task: task.task,
                priority: Priority::Normal.as_str().to_owned(),
                stream: stream.clone(),
                sequence: task.sequence,
                enqueued_at: None,
                not_before: None,
                attempt: Some(task.attempt),
                error: None,
                reason: None,
                worker: Some(worker),
                started_at: Some(task.started_at),
            })
            .collect();
        running.sort_by(|a, b| (&a.started_at, a.sequence).cmp(&(&b.started_at, b.sequence)));
        let skip = usize::try_from(after.unwrap_or(0)).unwrap_or(usize::MAX);
        let total = running.len();
        let tasks: Vec<TaskSummary> = running.into_iter().skip(skip).take(limit).collect();
        let shown = skip.saturating_add(tasks.len());
        Ok(TaskPage {
            state: ListState::Running,
            next: (shown < total).then(|| shown.to_string()),
            tasks,
        })
    }

    /// Dead letters, as `jetq dead list` reads them.
    async fn dead_tasks(
        &self,
        filter: &TaskFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<TaskPage, AdminError> {
        let dead_filter = DeadFilter {
            queue: filter.queue.clone(),
            task: filter.task.clone(),
            ..DeadFilter::default()
        };
        let slice = self.dead_letters_after(&dead_filter, after, limit).await?;
        let stream = self.subjects().dead_stream();
        let tasks: Vec<TaskSummary> = slice
            .dead_letters
            .into_iter()
            .map(|dead| TaskSummary {
                state: ListState::Dead,
                id: dead.task_id,
                queue: dead.queue,
                task: dead.task,
                priority: header(&dead.raw_headers, headers::PRIORITY)
                    .and_then(|p| p.parse::<Priority>().ok())
                    .unwrap_or(Priority::Normal)
                    .as_str()
                    .to_owned(),
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
        Ok(TaskPage {
            state: ListState::Dead,
            next: if slice.more {
                tasks.last().map(|t| t.sequence.to_string())
            } else {
                None
            },
            tasks,
        })
    }

    /// Finds a queued, in-flight or delayed task by its id (`Nats-Msg-Id`): reads the task
    /// stream above the ack floors (of `queue`'s durables, or all), then the delayed stream,
    /// reading headers only and at most [`MAX_SEARCH`] messages in each. `None` if not found.
    pub async fn find_task(
        &self,
        id: &str,
        queue: Option<&str>,
    ) -> Result<Option<TaskLocation>, AdminError> {
        if let Some(queue) = queue {
            jetq_contract::name::validate(NameKind::Queue, queue)?;
        }
        let subjects = self.subjects().clone();
        let stream = self.tasks_stream().await?;
        let floors = self.floors(&stream, queue).await?;
        let start = match queue {
            Some(_) if floors.len() == Priority::ALL.len() => {
                floors.values().map(|f| f.1).min().unwrap_or(0) + 1
            }
            _ => 1,
        };
        let mut reader = self
            .read_from(
                &stream,
                task_filters(&subjects, queue, None),
                start,
                BATCH,
                "the task stream",
            )
            .await?;
        let mut read = 0u64;
        while let Some(message) = reader.next().await? {
            read += 1;
            if read > MAX_SEARCH {
                return Err(search_too_long(id));
            }
            if header(&message.headers, headers::MSG_ID).as_deref() != Some(id) {
                continue;
            }
            let Some((queue, level, task)) = subjects.parse_task_level(&message.subject) else {
                continue;
            };
            let (delivered, ack_floor) = floors
                .get(&(queue.to_owned(), level))
                .copied()
                .unwrap_or((0, 0));
            if message.sequence <= ack_floor {
                continue;
            }
            let place = if message.sequence > delivered {
                ListState::Pending
            } else {
                ListState::Retrying
            };
            return Ok(Some(TaskLocation {
                place: if place == ListState::Pending {
                    "pending".into()
                } else {
                    "in_flight".into()
                },
                task: summary(
                    place,
                    &subjects.tasks_stream(),
                    message.sequence,
                    queue,
                    level,
                    task,
                    &message.headers,
                ),
            }));
        }
        let Some(delayed) = self.optional_stream(&subjects.delayed_stream()).await? else {
            return Ok(None);
        };
        let mut reader = self
            .read_from(
                &delayed,
                delayed_filters(&subjects, queue, None),
                1,
                BATCH,
                "the delayed-task stream",
            )
            .await?;
        let mut read = 0u64;
        while let Some(message) = reader.next().await? {
            read += 1;
            if read > MAX_SEARCH {
                return Err(search_too_long(id));
            }
            if header(&message.headers, headers::MSG_ID).as_deref() != Some(id) {
                continue;
            }
            let Some((_, token, task)) = subjects.parse_delayed(&message.subject) else {
                continue;
            };
            let (queue, level) =
                Priority::split_queue_token(token).unwrap_or((token, Priority::Normal));
            let mut summary = summary(
                ListState::Delayed,
                &subjects.delayed_stream(),
                message.sequence,
                queue,
                level,
                task,
                &message.headers,
            );
            summary.not_before = header(&message.headers, headers::NOT_BEFORE);
            return Ok(Some(TaskLocation {
                place: "delayed".into(),
                task: summary,
            }));
        }
        Ok(None)
    }
}

fn search_too_long(id: &str) -> AdminError {
    AdminError::Invalid(format!(
        "task {id}: not found in the first {MAX_SEARCH} stored tasks; narrow the search with \
         --queue"
    ))
}

/// The task-stream subjects of `queue`'s levels (or every queue), of task type `task` (or all).
fn task_filters(subjects: &Subjects, queue: Option<&str>, task: Option<&str>) -> Vec<String> {
    let task = task.unwrap_or("*");
    match queue {
        Some(queue) => Priority::ALL
            .iter()
            .map(|level| subjects.task_at(queue, *level, task))
            .collect(),
        None => vec![subjects.task("*", task)],
    }
}

/// The delayed-stream subjects of `queue`'s levels (or every queue), of `task` (or all).
fn delayed_filters(subjects: &Subjects, queue: Option<&str>, task: Option<&str>) -> Vec<String> {
    let task = task.unwrap_or("*");
    match queue {
        Some(queue) => Priority::ALL
            .iter()
            .map(|level| {
                format!(
                    "{}.delayed.*.{}.{task}",
                    subjects.prefix(),
                    level.queue_token(queue)
                )
            })
            .collect(),
        None => vec![format!("{}.delayed.*.*.{task}", subjects.prefix())],
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|value| value.as_str().to_owned())
}

fn summary(
    state: ListState,
    stream: &str,
    sequence: u64,
    queue: &str,
    level: Priority,
    task: &str,
    message_headers: &HeaderMap,
) -> TaskSummary {
    TaskSummary {
        state,
        id: header(message_headers, headers::MSG_ID),
        queue: queue.to_owned(),
        task: task.to_owned(),
        priority: level.as_str().to_owned(),
        stream: stream.to_owned(),
        sequence,
        enqueued_at: header(message_headers, headers::ENQUEUED_AT),
        not_before: None,
        attempt: None,
        error: None,
        reason: None,
        worker: None,
        started_at: None,
    }
}

/// Seconds from an RFC 3339 time to now (`None` if it does not parse).
pub fn age_secs(at: &str) -> Option<f64> {
    let then = jetq_contract::time::parse(at)?;
    Some(
        SystemTime::now()
            .duration_since(then)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_print() {
        for name in ["pending", "delayed", "retrying", "running", "dead"] {
            let state: ListState = name.parse().unwrap();
            assert_eq!(state.to_string(), name);
        }
        assert!("queued".parse::<ListState>().is_err());
    }

    #[test]
    fn filters_cover_every_level() {
        let subjects = Subjects::default();
        assert_eq!(
            task_filters(&subjects, Some("emails"), None),
            vec![
                "jetq.task.emails~high.*",
                "jetq.task.emails.*",
                "jetq.task.emails~low.*"
            ]
        );
        assert_eq!(
            task_filters(&subjects, None, Some("send")),
            vec!["jetq.task.*.send"]
        );
        assert_eq!(
            delayed_filters(&subjects, Some("emails"), Some("send"))[1],
            "jetq.delayed.*.emails.send"
        );
    }
}
