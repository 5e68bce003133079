//! The dead-letter pages and actions of the console: `/dead` (paged, filtered listing),
//! `/dead/{seq}` (one letter), replay and discard of one letter, and of every letter matching a
//! filter — counted first (`GET /api/dead/count`, the dry run the confirmation quotes), then run
//! server-side as a background job (`POST /api/dead/bulk`, progress at `GET /api/jobs/{id}`).
//!
//! Everything goes through the admin library the CLI uses: [`DeadFilter`] and
//! [`Admin::dead_letters_after`](crate::Admin::dead_letters_after) for the listing,
//! [`Admin::count_selected`](crate::Admin::count_selected) for the count,
//! [`Admin::replay`](crate::Admin::replay) and [`Admin::purge`](crate::Admin::purge) for the
//! actions (the same as `jetq dead replay|purge --queue … --reason …`).

use std::time::{Duration, Instant};

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::{Deserialize, Serialize};

use super::page::{encode, non_empty};
use super::{
    admin_error, chrome, error_response, jobs::BulkAction, overview_body, page, AppState, Caller,
};
use crate::{
    dead::{DeadFilter, DeadLetter, ReplayOptions, Selection},
    error::ErrorKind,
    text::cut,
};

/// The dead reasons a worker writes (`Jetq-Dead-Reason`), for the filter's list.
const REASONS: [&str; 5] = [
    "exhausted",
    "fatal",
    "undecodable",
    "unknown-task",
    "deliveries-exhausted",
];

/// Query of the dead-letter views and actions: the filter, the page, and a bulk action.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DeadQuery {
    queue: Option<String>,
    task: Option<String>,
    reason: Option<String>,
    older_than: Option<String>,
    newer_than: Option<String>,
    task_id: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
    /// Bulk: `replay` or `discard`.
    action: Option<String>,
    /// Bulk: the count the operator confirmed (logged beside the job).
    expected: Option<u64>,
    /// The list page: show this job's progress or result.
    job: Option<String>,
}

/// The filter as typed, for the form and the links.
#[derive(Debug, Default, Serialize)]
struct FilterForm {
    queue: Option<String>,
    task: Option<String>,
    reason: Option<String>,
    older_than: Option<String>,
    newer_than: Option<String>,
    task_id: Option<String>,
}

impl DeadQuery {
    fn form(&self) -> FilterForm {
        FilterForm {
            queue: non_empty(&self.queue),
            task: non_empty(&self.task),
            reason: non_empty(&self.reason),
            older_than: non_empty(&self.older_than),
            newer_than: non_empty(&self.newer_than),
            task_id: non_empty(&self.task_id),
        }
    }

    /// The filter, checked (names, ages) as the CLI checks its flags.
    pub(super) fn filter(&self) -> Result<DeadFilter, String> {
        let form = self.form();
        let age = |name: &str, value: &Option<String>| -> Result<Option<Duration>, String> {
            value
                .as_deref()
                .map(|text| {
                    humantime::parse_duration(text).map_err(|err| {
                        format!("{name} {text:?}: {err}; write ages like 30s, 5m, 2h or 7days")
                    })
                })
                .transpose()
        };
        let filter = DeadFilter {
            queue: form.queue.clone(),
            task: form.task.clone(),
            older_than: age("older than", &form.older_than)?,
            newer_than: age("newer than", &form.newer_than)?,
            reason: form.reason.clone(),
            task_id: form.task_id.clone(),
        };
        filter.validate().map_err(|err| err.to_string())?;
        Ok(filter)
    }

    fn limit(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 500)
    }

    /// The filter as a query string (no page), for links and the bulk buttons.
    fn filter_query(&self) -> String {
        let form = self.form();
        [
            ("queue", &form.queue),
            ("task", &form.task),
            ("reason", &form.reason),
            ("older_than", &form.older_than),
            ("newer_than", &form.newer_than),
            ("task_id", &form.task_id),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode(v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// A filter in words, for confirmations and logs: `queue=work, reason=fatal`.
pub(super) fn describe(filter: &DeadFilter) -> String {
    let mut parts = Vec::new();
    if let Some(q) = &filter.queue {
        parts.push(format!("queue={q}"));
    }
    if let Some(t) = &filter.task {
        parts.push(format!("task={t}"));
    }
    if let Some(r) = &filter.reason {
        parts.push(format!("reason={r}"));
    }
    if let Some(d) = filter.older_than {
        parts.push(format!("older than {}", humantime::format_duration(d)));
    }
    if let Some(d) = filter.newer_than {
        parts.push(format!("newer than {}", humantime::format_duration(d)));
    }
    if let Some(id) = &filter.task_id {
        parts.push(format!("task id={id}"));
    }
    if parts.is_empty() {
        "every dead letter".to_owned()
    } else {
        parts.join(", ")
    }
}

/// True when the server counts the matches itself (no full read): queue, task, newer-than.
fn counted_by_server(filter: &DeadFilter) -> bool {
    filter.older_than.is_none() && filter.reason.is_none() && filter.task_id.is_none()
}

/// A listing row: the summary plus the error cut for the table.
fn row(d: &DeadLetter) -> serde_json::Value {
    let mut row = serde_json::to_value(d.summary()).unwrap_or_default();
    if let Some(fields) = row.as_object_mut() {
        fields.insert(
            "error_short".into(),
            cut(d.error.as_deref().unwrap_or("-"), 120).into(),
        );
    }
    row
}

/// `GET /dead`: one page of the dead letters matching the filter, oldest first.
pub(super) async fn list_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<DeadQuery>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "dead", "Dead letters", &overview);
    let limit = query.limit();
    let started = Instant::now();
    let mut error = None;
    let mut letters = Vec::new();
    let mut next_after = None;
    let mut matching = None;
    let mut filter_empty = true;
    match query.filter() {
        Err(err) => error = Some(err),
        Ok(filter) => {
            filter_empty = filter.is_everything();
            match state
                .admin
                .dead_letters_after(&filter, query.after, limit)
                .await
            {
                Ok(slice) => {
                    if slice.more {
                        next_after = slice.dead_letters.last().map(|d| d.sequence);
                    }
                    letters = slice.dead_letters.iter().map(row).collect();
                }
                Err(err) => error = Some(err.to_string()),
            }
            matching = if filter_empty {
                // The same sample as the navigation and the queue table.
                chrome.dead_total
            } else if counted_by_server(&filter) {
                state
                    .admin
                    .count_selected(&Selection::Filter(filter.clone()))
                    .await
                    .ok()
            } else {
                None
            };
        }
    }
    let read_ms = started.elapsed().as_millis() as u64;
    let queue_names: Vec<String> = overview
        .overview
        .as_ref()
        .map(|o| o.queues.iter().map(|q| q.queue.clone()).collect())
        .unwrap_or_default();
    let mut task_names: Vec<String> = letters
        .iter()
        .filter_map(|l| l["task"].as_str().map(str::to_owned))
        .collect();
    task_names.sort();
    task_names.dedup();
    tracing::debug!(
        read_ms,
        shown = letters.len(),
        "dashboard: dead-letter page read"
    );
    page::respond(
        StatusCode::OK,
        "dead_list.html",
        &chrome,
        serde_json::json!({
            "filter": query.form(),
            "filter_query": query.filter_query(),
            "filter_empty": filter_empty,
            "queue_names": queue_names,
            "task_names": task_names,
            "reasons": REASONS,
            "letters": letters,
            "matching": matching,
            "after": query.after,
            "next_after": next_after,
            "limit": limit,
            "read_ms": read_ms,
            "error": error,
            "job": query.job.as_deref().and_then(|id| state.jobs.view(id)),
        }),
    )
}

/// A header as the detail page shows it: JSON values (`Jetq-Failure`) pretty-printed.
#[derive(Debug, Serialize)]
struct HeaderRow {
    name: String,
    value: String,
    pretty: bool,
}

fn header_rows(dead: &DeadLetter) -> Vec<HeaderRow> {
    let mut rows = Vec::new();
    for (name, values) in &dead.headers {
        for value in values {
            let parsed = value
                .trim_start()
                .starts_with(['{', '['])
                .then(|| serde_json::from_str::<serde_json::Value>(value).ok())
                .flatten();
            rows.push(match parsed {
                Some(json) => HeaderRow {
                    name: name.clone(),
                    value: serde_json::to_string_pretty(&json).unwrap_or_else(|_| value.clone()),
                    pretty: true,
                },
                None => HeaderRow {
                    name: name.clone(),
                    value: value.clone(),
                    pretty: false,
                },
            });
        }
    }
    rows
}

/// `GET /dead/{seq}`: one dead letter with its attempts, arguments and headers.
pub(super) async fn detail_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(seq): Path<u64>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(
        &state,
        &caller,
        "dead",
        format!("Dead letter {seq}"),
        &overview,
    );
    match state.admin.dead_letter(seq).await {
        Ok(dead) => {
            let payload = match (&dead.args, &dead.payload_text) {
                (Some(args), _) => serde_json::to_string_pretty(args).unwrap_or_default(),
                (None, Some(text)) => text.clone(),
                _ => String::new(),
            };
            page::respond(
                StatusCode::OK,
                "dead_detail.html",
                &chrome,
                serde_json::json!({
                    "d": dead,
                    "payload": payload,
                    "headers": header_rows(&dead),
                }),
            )
        }
        Err(err) => page::message(
            if err.kind() == ErrorKind::NotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_GATEWAY
            },
            &chrome,
            &format!("Dead letter {seq}"),
            &err.to_string(),
        ),
    }
}

/// `GET /api/dead`: a page of the listing as JSON (`after`, `limit`), with the server's total
/// for filters it can count.
pub(super) async fn api_list(
    State(state): State<AppState>,
    Query(query): Query<DeadQuery>,
) -> Response {
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(err) => return error_response(StatusCode::BAD_REQUEST, err),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let slice = match state
        .admin
        .dead_letters_after(&filter, query.after, limit)
        .await
    {
        Ok(slice) => slice,
        Err(err) => return admin_error(err),
    };
    let total = if counted_by_server(&filter) {
        match state
            .admin
            .count_selected(&Selection::Filter(filter.clone()))
            .await
        {
            Ok(total) => Some(total),
            Err(err) => return admin_error(err),
        }
    } else {
        None
    };
    Json(serde_json::json!({
        "total": total,
        "shown": slice.dead_letters.len(),
        "next_after": if slice.more { slice.dead_letters.last().map(|d| d.sequence) } else { None },
        "dead_letters": slice.dead_letters.iter().map(|d| d.summary()).collect::<Vec<_>>(),
    }))
    .into_response()
}

pub(super) async fn api_one(State(state): State<AppState>, Path(seq): Path<u64>) -> Response {
    match state.admin.dead_letter(seq).await {
        Ok(dead) => Json(dead).into_response(),
        Err(err) => admin_error(err),
    }
}

pub(super) async fn api_replay(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(seq): Path<u64>,
) -> Response {
    let result = state
        .admin
        .replay(
            &Selection::Sequences(vec![seq]),
            &ReplayOptions::default(),
            &(),
        )
        .await;
    match result {
        Ok(report) => match report.error() {
            None => {
                tracing::info!(by = %caller.who(), dead_sequence = seq, "dashboard: dead letter replayed");
                Json(report).into_response()
            }
            Some(err) => admin_error(err),
        },
        Err(err) => admin_error(err),
    }
}

pub(super) async fn api_discard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(seq): Path<u64>,
) -> Response {
    match state
        .admin
        .purge(&Selection::Sequences(vec![seq]), false, &())
        .await
    {
        Ok(report) if report.failed == 0 => {
            tracing::info!(by = %caller.who(), dead_sequence = seq, "dashboard: dead letter discarded");
            Json(report).into_response()
        }
        Ok(report) => error_response(
            StatusCode::BAD_GATEWAY,
            report
                .failures
                .first()
                .map(|f| f.error.clone())
                .unwrap_or_default(),
        ),
        Err(err) => admin_error(err),
    }
}

/// `GET /api/dead/count`: how many dead letters match the filter now — the dry run a bulk
/// action's confirmation quotes.
pub(super) async fn api_count(
    State(state): State<AppState>,
    Query(query): Query<DeadQuery>,
) -> Response {
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(err) => return error_response(StatusCode::BAD_REQUEST, err),
    };
    let started = Instant::now();
    match state
        .admin
        .count_selected(&Selection::Filter(filter.clone()))
        .await
    {
        Ok(count) => Json(serde_json::json!({
            "count": count,
            "filter": describe(&filter),
            "counted_by_server": counted_by_server(&filter),
            "elapsed_ms": started.elapsed().as_millis() as u64,
        }))
        .into_response(),
        Err(err) => admin_error(err),
    }
}

/// `POST /api/dead/bulk?action=replay|discard&<filter>`: starts a background job that replays
/// or discards every dead letter matching the filter; answers 202 with the job
/// (`GET /api/jobs/{id}` follows it).
pub(super) async fn api_bulk(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<DeadQuery>,
) -> Response {
    let action = match query.action.as_deref() {
        Some("replay") | Some("retry") => BulkAction::Replay,
        Some("discard") | Some("purge") => BulkAction::Discard,
        other => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("action must be replay or discard, not {other:?}"),
            )
        }
    };
    super::jobs::start_response(
        &state,
        &caller,
        action,
        query.filter().map(super::jobs::JobTarget::Dead),
        query.expected,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_ages_and_round_trip_as_a_query() {
        let query = DeadQuery {
            queue: Some("work".into()),
            reason: Some(" fatal ".into()),
            older_than: Some("1h".into()),
            task: Some(String::new()),
            ..DeadQuery::default()
        };
        let filter = query.filter().unwrap();
        assert_eq!(filter.queue.as_deref(), Some("work"));
        assert_eq!(filter.task, None);
        assert_eq!(filter.reason.as_deref(), Some("fatal"));
        assert_eq!(filter.older_than, Some(Duration::from_secs(3600)));
        assert_eq!(
            query.filter_query(),
            "queue=work&reason=fatal&older_than=1h"
        );
        assert_eq!(describe(&filter), "queue=work, reason=fatal, older than 1h");
        let bad = DeadQuery {
            newer_than: Some("soon".into()),
            ..DeadQuery::default()
        };
        assert!(bad.filter().unwrap_err().contains("newer than"));
        assert_eq!(encode("a b&c=é"), "a%20b%26c%3D%C3%A9");
    }
}
