//! The Queues page: counts, rates, latency and paused state of every queue, with Pause and
//! Resume buttons (`POST /api/queues/{queue}/pause|resume`, what `jetq pause`/`jetq resume` do,
//! through [`Admin::pause`] and [`Admin::resume`]); `GET /api/queues` is the same as JSON.
//!
//! **Latency** is the age of the oldest pending task: a task stored and not yet delivered to a
//! worker. For each priority level of the queue (PROTOCOL §12) it reads the first message on
//! the level's subject filter (`<prefix>.task.<queue>[~<level>].*`) after the level durable's
//! delivered stream sequence (`STREAM.MSG.GET` with `next_by_subj`: one request, no scan; the
//! task stream is a work queue, so acknowledged tasks are gone), and takes the oldest over the
//! levels. A level without a durable consumer yet has every stored task pending.

use std::time::SystemTime;

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use futures::future::join_all;
use jetq_contract::Priority;
use serde::Serialize;

use super::{admin_error, chrome, overview_body, page, queue_rows, AppState, Caller};
use crate::{error::AdminError, stats::QueueStats, Admin};

/// The oldest pending task of a queue.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Latency {
    /// When it was stored, RFC 3339 UTC; `None` when nothing is pending.
    pub oldest_pending_at: Option<String>,
    /// Its age in milliseconds (0 when nothing is pending).
    pub latency_ms: u64,
}

/// The oldest pending task of `queue` over its levels (`None`: nothing pending).
pub(super) async fn oldest_pending(
    admin: &Admin,
    stream: &Stream,
    queue: &QueueStats,
) -> Result<Option<SystemTime>, AdminError> {
    let subjects = admin.subjects();
    let mut oldest: Option<SystemTime> = None;
    for level in Priority::ALL {
        let durable = subjects.durable_at(&queue.queue, level);
        let start = if queue.consumers.contains(&durable) {
            match stream.consumer_info(&durable).await {
                Ok(info) => info.delivered.stream_sequence + 1,
                // Deleted meanwhile: every stored task of the level waits.
                Err(_) => 1,
            }
        } else {
            1
        };
        let filter = subjects.task_at(&queue.queue, level, "*");
        match stream
            .get_first_raw_message_by_subject(&filter, start)
            .await
        {
            Ok(message) => {
                let at = SystemTime::from(message.time);
                if oldest.is_none_or(|o| at < o) {
                    oldest = Some(at);
                }
            }
            Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => {}
            Err(err) if err.to_string().contains("no message found") => {}
            Err(err) => {
                return Err(AdminError::nats(
                    format!("cannot read the oldest pending task of {filter}"),
                    err,
                ))
            }
        }
    }
    Ok(oldest)
}

/// A latency as the page shows it: `-` for none, else `850 ms`, `42 s`, `3m 12s`, `2h 5m`.
fn latency_text(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms} ms"),
        1..=59 => format!("{secs} s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// The latency of each queue (same order), `None` where it could not be read.
async fn latencies(admin: &Admin, queues: &[QueueStats]) -> Vec<Option<Latency>> {
    let Ok(stream) = admin.tasks_stream().await else {
        return vec![None; queues.len()];
    };
    let now = SystemTime::now();
    join_all(queues.iter().map(|q| {
        let stream = &stream;
        async move {
            match oldest_pending(admin, stream, q).await {
                Ok(oldest) => Some(Latency {
                    oldest_pending_at: oldest.map(jetq_contract::time::format),
                    latency_ms: oldest.map_or(0, |at| {
                        now.duration_since(at).map_or(0, |d| d.as_millis() as u64)
                    }),
                }),
                Err(err) => {
                    tracing::warn!(queue = %q.queue, error = %err, "dashboard: cannot read a queue's latency");
                    None
                }
            }
        }
    }))
    .await
}

/// `GET /queues`.
pub(super) async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "queues", "Queues", &overview);
    let stats: &[QueueStats] = overview
        .overview
        .as_ref()
        .map_or(&[], |o| o.queues.as_slice());
    let latency = latencies(&state.admin, stats).await;
    let mut rows = queue_rows(overview.overview.as_ref());
    for (row, latency) in rows.iter_mut().zip(latency) {
        if let Some(fields) = row.as_object_mut() {
            let pending = fields
                .get("pending")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            let (at, text) = match &latency {
                Some(l) if l.oldest_pending_at.is_some() => (
                    l.oldest_pending_at.clone(),
                    latency_text(Some(l.latency_ms)),
                ),
                Some(_) if pending == 0 => (None, "-".to_owned()),
                Some(_) => (None, "0 ms".to_owned()),
                None => (None, "?".to_owned()),
            };
            fields.insert("oldest_pending_at".into(), at.into());
            fields.insert("latency_text".into(), text.into());
            fields.insert("latency_ms".into(), latency.map(|l| l.latency_ms).into());
        }
    }
    page::respond(
        StatusCode::OK,
        "queues.html",
        &chrome,
        serde_json::json!({
            "overview": overview.overview,
            "overview_error": overview.error,
            "queues": rows,
        }),
    )
}

/// `GET /api/queues`: every queue's stats with its latency.
pub(super) async fn api_queues(State(state): State<AppState>) -> Response {
    let overview = match state.admin.overview().await {
        Ok(overview) => overview,
        Err(err) => return admin_error(err),
    };
    let latency = latencies(&state.admin, &overview.queues).await;
    let rows: Vec<serde_json::Value> = overview
        .queues
        .iter()
        .zip(latency)
        .map(|(q, l)| {
            let mut row = serde_json::to_value(q).unwrap_or_default();
            if let Some(fields) = row.as_object_mut() {
                fields.insert(
                    "oldest_pending_at".into(),
                    l.as_ref().and_then(|l| l.oldest_pending_at.clone()).into(),
                );
                fields.insert("latency_ms".into(), l.map(|l| l.latency_ms).into());
            }
            row
        })
        .collect();
    Json(serde_json::json!({ "at": overview.at, "queues": rows })).into_response()
}

/// `POST /api/queues/{queue}/pause`: pauses every level until resumed (`jetq pause <queue>`).
pub(super) async fn api_pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
) -> Response {
    match state.admin.pause(&queue, None).await {
        Ok(paused) => {
            tracing::info!(by = %caller.who(), queue = %queue, consumers = ?paused.consumers, "dashboard: queue paused");
            state.sample().await;
            Json(paused).into_response()
        }
        Err(err) => admin_error(err),
    }
}

/// `POST /api/queues/{queue}/resume`: resumes every level (`jetq resume <queue>`).
pub(super) async fn api_resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
) -> Response {
    match state.admin.resume(&queue).await {
        Ok(resumed) => {
            tracing::info!(by = %caller.who(), queue = %queue, consumers = ?resumed.consumers, "dashboard: queue resumed");
            state.sample().await;
            Json(resumed).into_response()
        }
        Err(err) => admin_error(err),
    }
}

#[cfg(test)]
mod tests {
    use super::latency_text;

    #[test]
    fn latencies_read_as_durations() {
        assert_eq!(latency_text(None), "-");
        assert_eq!(latency_text(Some(850)), "850 ms");
        assert_eq!(latency_text(Some(42_000)), "42 s");
        assert_eq!(latency_text(Some(192_000)), "3m 12s");
        assert_eq!(latency_text(Some(7_500_000)), "2h 5m");
        assert_eq!(latency_text(Some(90_000_000)), "1d 1h");
    }
}
