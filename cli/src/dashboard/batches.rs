//! The Batches pages (docs/WORKFLOWS.md, PROTOCOL.md §13), from the readers of `jetq batches`,
//! `jetq batch <id>` and `jetq chain <id>` (`crate::workflows`):
//!
//! - `/batches?after=<id>`: every batch, newest first, 50 a page: state, total, succeeded,
//!   dead, pending with how many of them run now, callbacks fired;
//! - `/batches/{id}?after=<member>`: one batch — counts from the markers (exact), running and
//!   queued members, its callbacks and whether they fired, its parent, the members that run
//!   now (from worker presence) and a page of finished members with their outcome, each linked
//!   to its task page (and a dead one to its dead letters);
//! - `/chains/{id}`: a chain's links, how far it got and where it stopped; the chains are
//!   listed below the batches on `/batches` (newest first, 50 a page, `?chains_after=<id>`);
//! - JSON twins `GET /api/batches`, `/api/batches/{id}`, `/api/chains`, `/api/chains/{id}`;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use jetq_contract::workflow::{ChainState, MemberOutcome};
use serde::Deserialize;

use super::page::encode;
use super::{admin_error, chrome, overview_body, page, AppState, Caller};
use crate::{error::ErrorKind, workflows::BatchRow};

/// Batches per page of `/batches`; members per page of `/batches/{id}`.
const PAGE: usize = 50;

/// Query of the batch pages: the cursor (`after`: the last batch id, or member id, shown) and
/// the page size.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
    /// `/batches`: the cursor of the chains' list.
    chains_after: Option<String>,
}

impl PageQuery {
    fn after(&self) -> Option<&str> {
        self.after
            .as_deref()
            .map(str::trim)
            .filter(|after| !after.is_empty())
    }

    fn chains_after(&self) -> Option<&str> {
        self.chains_after
            .as_deref()
            .map(str::trim)
            .filter(|after| !after.is_empty())
    }

    fn limit(&self) -> usize {
        self.limit.unwrap_or(PAGE).clamp(1, 500)
    }
}

/// The page of `rows` (newest first) after the row whose id is `after`, and the cursor of the
/// next page. A cursor that is no longer listed (its record expired) gives an empty page.
fn page_after<'a, T>(
    rows: &'a [T],
    id: impl Fn(&T) -> &str,
    after: Option<&str>,
    limit: usize,
) -> (&'a [T], Option<String>) {
    let start = match after {
        Some(after) => rows
            .iter()
            .position(|row| id(row) == after)
            .map_or(rows.len(), |at| at + 1),
        None => 0,
    };
    let end = (start + limit).min(rows.len());
    let next = (end < rows.len() && end > start).then(|| id(&rows[end - 1]).to_owned());
    (&rows[start..end], next)
}

fn batch_page<'a>(
    rows: &'a [BatchRow],
    after: Option<&str>,
    limit: usize,
) -> (&'a [BatchRow], Option<String>) {
    page_after(rows, |row| row.id.as_str(), after, limit)
}

/// `GET /api/batches?after=&limit=`: a page of batches, newest first.
pub(super) async fn api_list(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Response {
    match state.admin.batches().await {
        Ok(rows) => {
            let (page, next) = batch_page(&rows, query.after(), query.limit());
            Json(serde_json::json!({ "batches": page, "next": next, "total": rows.len() }))
                .into_response()
        }
        Err(err) => admin_error(err),
    }
}

/// `GET /batches`.
pub(super) async fn list_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PageQuery>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "batches", "Batches", &overview);
    let (rows, error) = match state.admin.batches().await {
        Ok(rows) => (rows, None),
        Err(err) => (Vec::new(), Some(err.to_string())),
    };
    let (page, next) = batch_page(&rows, query.after(), query.limit());
    let (chains, chains_error) = match state.admin.chains().await {
        Ok(chains) => (chains, None),
        Err(err) => (Vec::new(), Some(err.to_string())),
    };
    let (chain_page, chains_next) =
        page_after(&chains, |c| c.id.as_str(), query.chains_after(), PAGE);
    page::respond(
        StatusCode::OK,
        "batches.html",
        &chrome,
        serde_json::json!({
            "batches": page,
            "total": rows.len(),
            "next_href": next.map(|after| format!("/batches?after={}", encode(&after))),
            "first_href": query.after().map(|_| "/batches"),
            "error": error,
            "chains": chain_page,
            "chains_total": chains.len(),
            "chains_next_href": chains_next
                .map(|after| format!("/batches?chains_after={}#chains", encode(&after))),
            "chains_first_href": query.chains_after().map(|_| "/batches#chains"),
            "chains_error": chains_error,
        }),
    )
}

/// `GET /api/chains?after=&limit=`: a page of chains, newest first.
pub(super) async fn api_chains(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Response {
    match state.admin.chains().await {
        Ok(rows) => {
            let (page, next) = page_after(&rows, |c| c.id.as_str(), query.after(), query.limit());
            Json(serde_json::json!({ "chains": page, "next": next, "total": rows.len() }))
                .into_response()
        }
        Err(err) => admin_error(err),
    }
}

/// `GET /api/batches/{id}?after=&limit=`: [`crate::Admin::batch_detail`].
pub(super) async fn api_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    match state
        .admin
        .batch_detail(&id, query.after(), query.limit())
        .await
    {
        Ok(detail) => Json(detail).into_response(),
        Err(err) => admin_error(err),
    }
}

fn not_found_or_failed(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Usage => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// `GET /batches/{id}`.
pub(super) async fn detail_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let overview = overview_body(&state).await;
    let title = format!("Batch {id}");
    let chrome = chrome(&state, &caller, "batches", title.clone(), &overview);
    let detail = match state
        .admin
        .batch_detail(&id, query.after(), query.limit())
        .await
    {
        Ok(detail) => detail,
        Err(err) => {
            return page::message(
                not_found_or_failed(err.kind()),
                &chrome,
                &title,
                &err.to_string(),
            )
        }
    };
    let members: Vec<serde_json::Value> = detail
        .members
        .iter()
        .map(|member| {
            let child = member.id.strip_prefix("batch:");
            serde_json::json!({
                "id": member.id,
                "href": match child {
                    Some(child) => format!("/batches/{}", encode(child)),
                    None => format!("/tasks/{}", encode(&member.id)),
                },
                "dead_href": (member.outcome == MemberOutcome::Dead && child.is_none())
                    .then(|| format!("/dead?task_id={}", encode(&member.id))),
                "outcome": member.outcome,
                "at": member.at,
                "result": member.result.as_ref().map(|r| r.to_string()),
            })
        })
        .collect();
    let callbacks: Vec<serde_json::Value> = [
        ("on_complete", &detail.on_complete, &detail.completed),
        ("on_success", &detail.on_success, &detail.succeeded_all),
    ]
    .into_iter()
    .map(|(which, callback, fire)| {
        let fired = match fire {
            Some(fire) => match &fire.done_at {
                Some(done) => format!("fired at {done}"),
                None => format!("firing since {}", fire.started_at),
            },
            None => "not fired".to_owned(),
        };
        let task_id = format!("batch:{}:{which}", detail.id);
        serde_json::json!({
            "which": which,
            "callback": callback.as_ref().map(|c| format!("{}.{}", c.queue, c.task)),
            "args": callback.as_ref().map(|c| callback_args(&c.args)),
            "fired": fired,
            "done": fire.as_ref().is_some_and(|f| f.done_at.is_some()),
            "task_href": fire.as_ref().map(|_| format!("/tasks/{}", encode(&task_id))),
            "task_id": task_id,
        })
    })
    .collect();
    let done = detail.succeeded + detail.dead;
    let percent = (done * 100).checked_div(detail.total).unwrap_or(100);
    let next_href = detail
        .next_after
        .as_ref()
        .map(|after| format!("/batches/{}?after={}", encode(&detail.id), encode(after)));
    page::respond(
        StatusCode::OK,
        "batch_detail.html",
        &chrome,
        serde_json::json!({
            "batch": detail,
            "members": members,
            "callbacks": callbacks,
            "percent": percent,
            "next_href": next_href,
            "first_href": query.after().map(|_| format!("/batches/{}", encode(&id))),
        }),
    )
}

/// A callback's arguments as given, without the `batch` field the summary replaces when it
/// fires.
fn callback_args(args: &serde_json::Value) -> String {
    let mut args = args.clone();
    if let Some(fields) = args.as_object_mut() {
        fields.remove("batch");
    }
    args.to_string()
}

/// `GET /api/chains/{id}`: [`crate::Admin::chain_detail`].
pub(super) async fn api_chain(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.admin.chain_detail(&id).await {
        Ok(chain) => Json(chain).into_response(),
        Err(err) => admin_error(err),
    }
}

/// `GET /chains/{id}`.
pub(super) async fn chain_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let overview = overview_body(&state).await;
    let title = format!("Chain {id}");
    let chrome = chrome(&state, &caller, "batches", title.clone(), &overview);
    let chain = match state.admin.chain_detail(&id).await {
        Ok(chain) => chain,
        Err(err) => {
            return page::message(
                not_found_or_failed(err.kind()),
                &chrome,
                &title,
                &err.to_string(),
            )
        }
    };
    let links: Vec<serde_json::Value> = chain
        .links
        .iter()
        .enumerate()
        .map(|(index, link)| {
            let state_text = match chain.state {
                ChainState::Failed if chain.failed_at == Some(index) => "failed",
                ChainState::Succeeded => "succeeded",
                _ if index < chain.at => "succeeded",
                ChainState::Running if index == chain.at => "enqueued / running",
                _ => "not started",
            };
            let task_id = format!("chain:{}:{index}", chain.id);
            serde_json::json!({
                "index": index,
                "task": format!("{}.{}", link.queue, link.task),
                "args": link.args.to_string(),
                "with_previous": link.with_previous,
                "state": state_text,
                "task_id": task_id,
                "task_href": (index <= chain.at).then(|| format!("/tasks/{}", encode(&task_id))),
                "dead_href": (state_text == "failed")
                    .then(|| format!("/dead?task_id={}", encode(&task_id))),
            })
        })
        .collect();
    page::respond(
        StatusCode::OK,
        "chain_detail.html",
        &chrome,
        serde_json::json!({ "chain": chain, "links": links }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetq_contract::workflow::BatchState;

    fn row(id: &str) -> BatchRow {
        BatchRow {
            id: id.into(),
            state: BatchState::Closed,
            total: 1,
            succeeded: 0,
            dead: 0,
            pending: 1,
            running: 0,
            completed_fired: false,
            success_fired: false,
            chord: false,
            parent: None,
            created_at: String::new(),
        }
    }

    #[test]
    fn batches_are_paged_after_an_id() {
        let rows: Vec<BatchRow> = ["e", "d", "c", "b", "a"].into_iter().map(row).collect();
        let ids = |page: &[BatchRow]| page.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let (page, next) = batch_page(&rows, None, 2);
        assert_eq!(
            (ids(page), next.as_deref()),
            (vec!["e".into(), "d".into()], Some("d"))
        );
        let (page, next) = batch_page(&rows, Some("d"), 2);
        assert_eq!(
            (ids(page), next.as_deref()),
            (vec!["c".into(), "b".into()], Some("b"))
        );
        let (page, next) = batch_page(&rows, Some("b"), 2);
        assert_eq!((ids(page), next), (vec!["a".into()], None));
        // A batch that expired since: an empty page, no next.
        let (page, next) = batch_page(&rows, Some("gone"), 2);
        assert!(page.is_empty() && next.is_none());
    }
}
