//! The Tasks, task detail and Workers pages, and the task and schedule actions:
//!
//! - `/tasks?state=pending|delayed|retrying|running|dead&queue=&type=&after=`: a page of tasks in
//!   one state ([`Admin::tasks`]), paged by its cursor, with a search box by task id and one by
//!   unique key;
//! - `/tasks/{id}`: [`Admin::task_detail`]: status record, where it waits, attempts with their
//!   errors, the worker running it, dead letters, trace id; **Cancel**
//!   (`POST /api/tasks/{id}/cancel`, [`Admin::cancel_task`]);
//! - `/workers`: [`Admin::workers`]: host, version, queues, concurrency, running tasks and for
//!   how long, last heartbeat age;
//! - `POST /api/schedules/{name}/pause|resume|run`: [`Admin::set_schedule_paused`] and
//!   [`Admin::run_schedule`], `by` the caller.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;

use super::page::{encode, non_empty};
use super::{admin_error, chrome, error_response, overview_body, page, stored, AppState, Caller};
use crate::{
    error::{AdminError, ErrorKind},
    tasks::{ListState, PageRequest, TaskFilter},
};

/// Tasks shown per page.
const PAGE: usize = 50;

/// The states, in the page's tab order.
const STATES: &[&str] = &["pending", "delayed", "retrying", "running", "dead"];

/// Query of `/tasks` and `/api/tasks`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TasksQuery {
    state: Option<String>,
    queue: Option<String>,
    #[serde(rename = "type")]
    task: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    /// The search box: a task id (redirects to its detail page).
    id: Option<String>,
    /// The search box's other field: a unique key (`Jetq-Unique-Key`); redirects to the page
    /// of the task holding it.
    key: Option<String>,
    /// Show this bulk cancel job's progress or result.
    job: Option<String>,
}

impl TasksQuery {
    fn filter(&self) -> Result<(TaskFilter, PageRequest), AdminError> {
        let state = non_empty(&self.state)
            .unwrap_or_else(|| "pending".into())
            .parse::<ListState>()
            .map_err(AdminError::Invalid)?;
        Ok((
            TaskFilter {
                state,
                queue: non_empty(&self.queue),
                task: non_empty(&self.task),
            },
            PageRequest {
                limit: self.limit.unwrap_or(PAGE).clamp(1, 500),
                after: non_empty(&self.after),
            },
        ))
    }
}

/// A duration in seconds as the pages show it: `850 ms`, `42 s`, `3m 12s`, `2h 5m`, `1d 1h`.
fn age_text(secs: Option<f64>) -> String {
    let Some(secs) = secs else {
        return "-".into();
    };
    let ms = (secs.max(0.0) * 1000.0) as u64;
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..=59 => format!("{s} s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={}", encode(v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// `GET /api/tasks`: the page as JSON.
pub(super) async fn api_list(
    State(state): State<AppState>,
    Query(query): Query<TasksQuery>,
) -> Response {
    let (filter, page) = match query.filter() {
        Ok(parsed) => parsed,
        Err(err) => return admin_error(err),
    };
    match state.admin.tasks(&filter, &page).await {
        Ok(tasks) => Json(tasks).into_response(),
        Err(err) => admin_error(err),
    }
}

/// `GET /tasks`.
pub(super) async fn list_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<TasksQuery>,
) -> Response {
    if let Some(id) = non_empty(&query.id) {
        let target = format!("/tasks/{}", encode(&id));
        return axum::response::Redirect::to(&target).into_response();
    }
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "tasks", "Tasks", &overview);
    if let Some(key) = non_empty(&query.key) {
        return find_by_unique_key(&state, &chrome, &key).await;
    }
    let (filter, request) = match query.filter() {
        Ok(parsed) => parsed,
        Err(err) => {
            return page::message(StatusCode::BAD_REQUEST, &chrome, "Tasks", &err.to_string())
        }
    };
    let queue = filter.queue.clone();
    let task = filter.task.clone();
    let state_name = filter.state.to_string();
    let (tasks, next, error) = match state.admin.tasks(&filter, &request).await {
        Ok(found) => (found.tasks, found.next, None),
        Err(err) => (Vec::new(), None, Some(err.to_string())),
    };
    let tabs: Vec<serde_json::Value> = STATES
        .iter()
        .map(|s| {
            serde_json::json!({
                "state": s,
                "href": format!("/tasks?{}", query_string(&[
                    ("state", Some((*s).to_owned())),
                    ("queue", queue.clone()),
                    ("type", task.clone()),
                ])),
            })
        })
        .collect();
    let next_href = next.as_ref().map(|cursor| {
        format!(
            "/tasks?{}",
            query_string(&[
                ("state", Some(state_name.clone())),
                ("queue", queue.clone()),
                ("type", task.clone()),
                ("after", Some(cursor.clone())),
            ])
        )
    });
    let first_href = request.after.as_ref().map(|_| {
        format!(
            "/tasks?{}",
            query_string(&[
                ("state", Some(state_name.clone())),
                ("queue", queue.clone()),
                ("type", task.clone()),
            ])
        )
    });
    page::respond(
        StatusCode::OK,
        "tasks.html",
        &chrome,
        serde_json::json!({
            "state": state_name,
            "tabs": tabs,
            "queue": queue,
            "task": task,
            "tasks": tasks,
            "next_href": next_href,
            "first_href": first_href,
            "error": error,
            "filter_query": query_string(&[
                ("state", Some(filter.state.to_string())),
                ("queue", queue.clone()),
                ("type", task.clone()),
            ]),
            "job": query.job.as_deref().and_then(|id| state.jobs.view(id)),
        }),
    )
}

/// `GET /api/tasks/{id}`.
pub(super) async fn api_one(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.admin.task_detail(&id, None).await {
        Ok(detail) => Json(detail).into_response(),
        Err(err) => admin_error(err),
    }
}

/// `GET /tasks/{id}`.
pub(super) async fn detail_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "tasks", format!("Task {id}"), &overview);
    let detail = match state.admin.task_detail(&id, None).await {
        Ok(detail) => detail,
        Err(err) => {
            return page::message(
                if err.kind() == ErrorKind::NotFound {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_GATEWAY
                },
                &chrome,
                &format!("Task {id}"),
                &err.to_string(),
            )
        }
    };
    // Its arguments, headers, trace id, batch and chain, from the stored message (its dead
    // letter's for a dead task).
    let stored = match &detail.location {
        Some(found) => stored::read(&state, &found.task.stream, found.task.sequence).await,
        None => match detail.dead_letters.first() {
            Some(dead) => stored::read(&state, &dead.stream, dead.sequence).await,
            None => None,
        },
    }
    .unwrap_or_default();
    // What the status is, in one word: the status record's state, else where it was found.
    let status_text = if let Some(status) = &detail.status {
        status.state.as_str().to_owned()
    } else if detail.worker.is_some() {
        "running".to_owned()
    } else if let Some(found) = &detail.location {
        found.place.clone()
    } else if !detail.dead_letters.is_empty() {
        "dead".to_owned()
    } else {
        "-".to_owned()
    };
    let summary = detail
        .location
        .as_ref()
        .map(|l| &l.task)
        .or(detail.dead_letters.first());
    let finished = detail
        .status
        .as_ref()
        .is_some_and(|s| s.state.is_terminal());
    let cancellable = detail.location.is_some() || (detail.status.is_some() && !finished);
    page::respond(
        StatusCode::OK,
        "task_detail.html",
        &chrome,
        serde_json::json!({
            "id": detail.id,
            "status_text": status_text,
            "summary": summary,
            "detail": detail,
            "trace_id": stored.trace_id,
            "cancellable": cancellable,
            "batch": stored.batch,
            "chain": stored.chain.as_ref().map(|(id, index)| serde_json::json!({ "id": id, "index": index })),
            "arguments": stored.arguments,
            "headers": stored.headers,
        }),
    )
}

/// `POST /api/tasks/{id}/cancel`: [`Admin::cancel_task`]; a task that cannot be cancelled where
/// it is (untracked, running on a worker that does not answer cancel requests) is 409 with the
/// reason.
pub(super) async fn api_cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match state.admin.cancel_task(&id, None).await {
        Ok(report) => {
            tracing::info!(by = %caller.who(), task = %id, outcome = %report.outcome, was = %report.was, "dashboard: task cancelled");
            Json(report).into_response()
        }
        Err(err @ AdminError::CannotCancel { .. }) => {
            tracing::info!(by = %caller.who(), task = %id, error = %err, "dashboard: cancel refused");
            error_response(StatusCode::CONFLICT, err.to_string())
        }
        Err(err) => admin_error(err),
    }
}

/// `GET /workers`.
pub(super) async fn workers_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "workers", "Workers", &overview);
    let (workers, error) = match state.admin.workers().await {
        Ok(workers) => (workers, None),
        Err(err) => (Vec::new(), Some(err.to_string())),
    };
    let rows: Vec<serde_json::Value> = workers
        .iter()
        .map(|w| {
            let running: Vec<serde_json::Value> = w
                .record
                .running
                .iter()
                .zip(&w.running_for_secs)
                .map(|(task, secs)| {
                    serde_json::json!({
                        "id": task.id,
                        "queue": task.queue,
                        "task": task.task,
                        "attempt": task.attempt,
                        "started_at": task.started_at,
                        "for_text": age_text(*secs),
                    })
                })
                .collect();
            serde_json::json!({
                "id": w.record.id,
                "host": w.record.host,
                "pid": w.record.pid,
                "version": w.record.version,
                "queues": w.record.queues,
                "concurrency": w.record.concurrency,
                "running_count": w.record.running_count,
                "running": running,
                "started_at": w.record.started_at,
                "heartbeat_at": w.record.heartbeat_at,
                "heartbeat_text": age_text(w.heartbeat_age_secs),
            })
        })
        .collect();
    page::respond(
        StatusCode::OK,
        "workers.html",
        &chrome,
        serde_json::json!({ "workers": rows, "error": error }),
    )
}

/// `GET /api/workers`.
pub(super) async fn api_workers(State(state): State<AppState>) -> Response {
    match state.admin.workers().await {
        Ok(workers) => Json(workers).into_response(),
        Err(err) => admin_error(err),
    }
}

fn schedule_error(err: AdminError) -> Response {
    match err.kind() {
        ErrorKind::Failed if matches!(err, AdminError::Schedule(_)) => {
            error_response(StatusCode::CONFLICT, err.to_string())
        }
        _ => admin_error(err),
    }
}

/// `POST /api/schedules/{name}/{pause|resume|run}`.
pub(super) async fn api_schedule_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let by = caller.user.clone().unwrap_or_else(|| caller.who());
    let by = format!("console:{by}");
    match action.as_str() {
        "pause" | "resume" => {
            let paused = action == "pause";
            match state.admin.set_schedule_paused(&name, paused, &by).await {
                Ok(control) => {
                    tracing::info!(by = %caller.who(), schedule = %name, paused, "dashboard: schedule {action}d");
                    Json(serde_json::json!({ "name": name, "paused": control.paused, "control": control }))
                        .into_response()
                }
                Err(err) => schedule_error(err),
            }
        }
        "run" => match state.admin.run_schedule(&name, &by).await {
            Ok(request) => {
                let task_id = format!("{name}:run:{request}");
                tracing::info!(by = %caller.who(), schedule = %name, task = %task_id, "dashboard: schedule run now");
                Json(serde_json::json!({ "name": name, "request": request, "task_id": task_id }))
                    .into_response()
            }
            Err(err) => schedule_error(err),
        },
        other => error_response(
            StatusCode::NOT_FOUND,
            format!("unknown schedule action {other:?}: pause, resume or run"),
        ),
    }
}

/// The search by unique key: the page of the one task holding `key`; a list when tasks of
/// several types hold the same key (a key is unique per queue and type); 404 when none does.
async fn find_by_unique_key(state: &AppState, chrome: &page::Chrome, key: &str) -> Response {
    let holders = match state.admin.holders_of_unique_key(key).await {
        Ok(holders) => holders,
        Err(err) => {
            return page::message(
                StatusCode::SERVICE_UNAVAILABLE,
                chrome,
                "Tasks",
                &format!("cannot read the unique keys: {err}"),
            )
        }
    };
    match holders.as_slice() {
        [one] => {
            let target = format!("/tasks/{}", encode(&one.hold.task_id));
            axum::response::Redirect::to(&target).into_response()
        }
        [] => page::message(
            StatusCode::NOT_FOUND,
            chrome,
            "Tasks",
            &format!(
                "No task holds the unique key {key:?} now. A key is held from its enqueue until \
                 its scope lets it go (docs/FLOW_CONTROL.md); a finished task is found by its id."
            ),
        ),
        several => {
            let list = several
                .iter()
                .map(|held| format!("{}/{}: task {}", held.queue, held.task, held.hold.task_id))
                .collect::<Vec<_>>()
                .join("; ");
            page::message(
                StatusCode::OK,
                chrome,
                "Tasks",
                &format!(
                    "The unique key {key:?} is held by {}: {list}.",
                    several.len()
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::age_text;

    #[test]
    fn ages_read_as_durations() {
        assert_eq!(age_text(None), "-");
        assert_eq!(age_text(Some(0.85)), "850 ms");
        assert_eq!(age_text(Some(192.0)), "3m 12s");
    }
}
