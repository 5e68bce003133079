//! The Tasks page's bulk **Cancel**: every task matching the page's filter (state, queue, task
//! type) — counted first (`GET /api/tasks/count`, the dry run the confirmation quotes), then
//! cancelled server-side as a background job (`POST /api/tasks/bulk-cancel`, progress at
//! `GET /api/jobs/{id}`), each task as `jetq cancel <id>` would ([`Admin::cancel_matching`],
//! the code behind `jetq cancel --all`).

use std::time::Instant;

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;

use super::{
    admin_error, error_response,
    jobs::{self, BulkAction, JobTarget},
    page::non_empty,
    AppState, Caller,
};
use crate::{cancel::bulk::CancelFilter, tasks::ListState, Admin};

/// Query of the bulk cancel: the Tasks page's filter, and the count the operator confirmed.
#[derive(Debug, Default, Deserialize)]
pub(super) struct BulkCancelQuery {
    /// One state or several separated by commas; empty means pending, delayed, retrying and
    /// running.
    state: Option<String>,
    queue: Option<String>,
    #[serde(rename = "type")]
    task: Option<String>,
    /// The count the operator confirmed (logged beside the job).
    expected: Option<u64>,
}

impl BulkCancelQuery {
    fn filter(&self) -> Result<CancelFilter, String> {
        let states = match non_empty(&self.state) {
            None => Vec::new(),
            Some(states) => states
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::parse::<ListState>)
                .collect::<Result<Vec<_>, _>>()?,
        };
        let filter = CancelFilter {
            queue: non_empty(&self.queue),
            task: non_empty(&self.task),
            states,
        };
        filter.validate().map_err(|err| err.to_string())?;
        Ok(filter)
    }
}

/// `GET /api/tasks/count?state=&queue=&type=`: how many tasks a bulk cancel would take now,
/// by state.
pub(super) async fn api_count(
    State(state): State<AppState>,
    Query(query): Query<BulkCancelQuery>,
) -> Response {
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(err) => return error_response(StatusCode::BAD_REQUEST, err),
    };
    let started = Instant::now();
    match count(&state.admin, &filter).await {
        Ok(report) => Json(serde_json::json!({
            "count": report.matched,
            "by_state": report.by_state,
            "filter": report.filter,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        }))
        .into_response(),
        Err(err) => admin_error(err),
    }
}

async fn count(
    admin: &Admin,
    filter: &CancelFilter,
) -> Result<crate::cancel::bulk::BulkCancelReport, crate::error::AdminError> {
    admin.cancel_matching(filter, true, &()).await
}

/// `POST /api/tasks/bulk-cancel?state=&queue=&type=&expected=N`: starts a background job that
/// cancels every task matching the filter; answers 202 with the job (`GET /api/jobs/{id}`
/// follows it).
pub(super) async fn api_bulk_cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<BulkCancelQuery>,
) -> Response {
    jobs::start_response(
        &state,
        &caller,
        BulkAction::Cancel,
        query.filter().map(JobTarget::Tasks),
        query.expected,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_as_a_list_and_dead_is_refused() {
        let query = BulkCancelQuery {
            state: Some("pending, delayed".into()),
            queue: Some(" work ".into()),
            task: Some(String::new()),
            expected: None,
        };
        let filter = query.filter().unwrap();
        assert_eq!(filter.states, vec![ListState::Pending, ListState::Delayed]);
        assert_eq!(filter.queue.as_deref(), Some("work"));
        assert_eq!(filter.task, None);
        assert_eq!(filter.describe(), "queue=work, state=pending,delayed");
        let dead = BulkCancelQuery {
            state: Some("dead".into()),
            ..BulkCancelQuery::default()
        };
        assert!(dead.filter().unwrap_err().contains("dead letters"));
        let all = BulkCancelQuery::default().filter().unwrap();
        assert_eq!(all.describe(), "state=pending,delayed,retrying,running");
    }
}
