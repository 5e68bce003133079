//! The dashboard's view of flow control (docs/FLOW_CONTROL.md, PROTOCOL.md §11): the Limits
//! page (`/limits`, template `limits.html`), `GET /api/limits` (the JSON of `jetq limits --json`, read by the
//! same [`Admin::limits`](crate::Admin::limits)) and `POST /api/limits/release?entry=<entry>`
//! (what `jetq limits release <entry>` does, through the same
//! [`limits::release`](crate::limits::release)). The release is a change: the guard in `mod.rs`
//! applies the token, read-only, `X-Jetq-Request` and same-origin checks to it as to replay and
//! discard.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;

use super::{admin_error, chrome, error_response, overview_body, page, AppState, Caller};
use crate::limits::{self, LimitsOverview, UniqueKeyHeld};

/// `GET /api/limits`: the configured limits, rate buckets, slots and unique keys held.
pub(super) async fn api_limits(State(state): State<AppState>) -> Response {
    match state.admin.limits().await {
        Ok(overview) => Json(overview).into_response(),
        Err(err) => admin_error(err),
    }
}

/// Query of a release.
#[derive(Debug, Deserialize)]
pub(super) struct ReleaseQuery {
    entry: Option<String>,
}

/// `POST /api/limits/release?entry=<entry>`: deletes one entry as listed (a unique key, a rate
/// bucket, a slot entry, a reservation); 404 when it does not exist.
pub(super) async fn api_release(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ReleaseQuery>,
) -> Response {
    let Some(entry) = query.entry.filter(|e| !e.trim().is_empty()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "name the entry to release: ?entry=<entry as listed>",
        );
    };
    match limits::release(&state.admin, &entry).await {
        Ok(released) => {
            tracing::info!(
                by = %caller.who(),
                entry = %released.released,
                bucket = %released.bucket,
                "dashboard: flow-control entry released"
            );
            Json(released).into_response()
        }
        Err(err) => admin_error(err),
    }
}

/// When a unique key stops holding, as the hold says.
fn unique_until(u: &UniqueKeyHeld) -> String {
    let hold = &u.hold;
    if let Some(end) = &hold.expires_at {
        return format!("until {end}");
    }
    match hold.sequence {
        Some(seq) if hold.scope == "queued" => format!("while task seq {seq} waits"),
        Some(seq) => format!("until task seq {seq} ends"),
        None => match &hold.lease_until {
            Some(end) => format!("pending, lease until {end}"),
            None => "pending".to_owned(),
        },
    }
}

/// The page's rows: the limits the workers registered, the rate buckets (rate, burst, next
/// free time, tasks waiting), the concurrency entries (slots held, by whom, lease ends, tasks
/// waiting) and the unique keys held.
fn view(overview: &LimitsOverview) -> serde_json::Value {
    use serde_json::json;
    let config = |queue: &str, task: &str| {
        overview
            .configured
            .iter()
            .find(|c| c.queue == queue && c.task == task)
    };
    let per_key = |yes: bool| if yes { " per key" } else { "" };
    let configured: Vec<_> = overview
        .configured
        .iter()
        .map(|c| {
            json!({
                "queue": c.queue,
                "task": c.task,
                "rate": c.rate.map_or_else(|| "-".to_owned(), |r| format!("{r}/s{}", per_key(c.rate_per_key))),
                "burst": c.rate.map_or_else(|| "-".to_owned(), |_| c.burst.unwrap_or(1).to_string()),
                "concurrency": c.concurrency.map_or_else(|| "-".to_owned(), |n| format!("{n}{}", per_key(c.concurrency_per_key))),
                "updated_at": c.updated_at,
            })
        })
        .collect();
    let rates: Vec<_> = overview
        .rates
        .iter()
        .map(|r| {
            let c = config(&r.queue, &r.task);
            json!({
                "entry": r.entry,
                "limit_key": r.limit_key.as_deref().unwrap_or("-"),
                "rate": c.and_then(|c| c.rate).map_or_else(|| "-".to_owned(), |rate| format!("{rate}/s")),
                "burst": c.and_then(|c| c.rate.map(|_| c.burst.unwrap_or(1))).map_or_else(|| "-".to_owned(), |b| b.to_string()),
                "next_free": if r.reserved_ahead_ms == 0 && c.is_some() { "now".to_owned() } else { r.next_free_at.clone() },
                "reserved_ahead_ms": r.reserved_ahead_ms,
                "waiting": r.waiting,
            })
        })
        .collect();
    let concurrency: Vec<_> = overview
        .concurrency
        .iter()
        .map(|slots| {
            let max = config(&slots.queue, &slots.task)
                .and_then(|c| c.concurrency)
                .map_or_else(String::new, |max| format!(" of {max}"));
            json!({
                "entry": slots.entry,
                "limit_key": slots.limit_key.as_deref().unwrap_or("-"),
                "held": format!("{}{max}", slots.running.len()),
                "holders": slots.running.iter().map(|(seq, id, until)| json!({"seq": seq, "id": id, "until": until})).collect::<Vec<_>>(),
                "waiting": slots.waiting,
            })
        })
        .collect();
    let unique: Vec<_> = overview
        .unique
        .iter()
        .map(|u| {
            json!({
                "entry": u.entry,
                "key": u.key,
                "queue": u.queue,
                "task": u.task,
                "task_id": u.hold.task_id,
                "scope": u.hold.scope,
                "until": unique_until(u),
                "expired": u.expired,
            })
        })
        .collect();
    json!({
        "in_use": overview.limits_bucket || overview.unique_bucket,
        "configured": configured,
        "rates": rates,
        "concurrency": concurrency,
        "unique": unique,
    })
}

/// `GET /limits`: the flow-control state, with a Release button per entry.
pub(super) async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "limits", "Limits", &overview);
    let context = match state.admin.limits().await {
        Ok(limits) => view(&limits),
        Err(err) => serde_json::json!({ "error": err.to_string() }),
    };
    page::respond(StatusCode::OK, "limits.html", &chrome, context)
}
