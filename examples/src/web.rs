//! The web app: an axum router whose handlers enqueue tasks and answer at once.
//!
//! - `POST /signup` `{"email": "..."}` enqueues a welcome [`SendEmail`] with the idempotency key
//!   `signup:<email>` and answers `202 {"task_id": "...", "duplicate": bool}`: a repeated signup
//!   inside the stream's duplicate window is dropped by the server and reported as a duplicate.
//!   The mail is enqueued at priority `high`. The request never waits for SMTP.
//! - `POST /exports` `{"rows": N, "row_delay_ms": M}` enqueues a [`GenerateCsv`] with a fresh
//!   export id (also its task id) and answers `202 {"export_id", "task_id", "status_url"}`.
//! - `GET /exports/{id}` answers the export's [`ExportStatus`]: state, attempt, progress, and
//!   once it succeeded the size and a `csv_url`; 404 for an unknown export.
//! - `GET /exports/{id}/csv` streams the finished CSV from the jetq artifact store, chunk by
//!   chunk (409 while it is not finished): no disk is shared with the workers.
//! - `GET /exports/{id}/events` is a server-sent-events stream of [`ExportStatus`] (event
//!   `status`), one per change, pushed by a KV watch and ending with the final state;
//!   `GET /exports/{id}/page` is a small page that shows it as a progress bar.
//! - `DELETE /exports/{id}` cancels the export: dropped if it has not started, stopped at its
//!   next row if it runs (`202 {"outcome", "status"}`).
//!
//! - `POST /chunked-exports`, `GET /chunked-exports/{id}` and `GET /chunked-exports/{id}/csv`:
//!   the same export split into chunks that run in parallel as a chord (see
//!   [`crate::chunked`]).
//!
//! Errors are JSON `{"error": "..."}`: malformed JSON is 400, a wrong content type 415, invalid
//! values 422; a queue that refused the task is 503 (with `Retry-After` when the stream is full),
//! a bug in the task definition 500.

use std::{convert::Infallible, net::SocketAddr, str::FromStr, time::Duration};

use axum::{
    body::Body,
    extract::{rejection::JsonRejection, Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        Html, IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use futures::{Stream, StreamExt};
use jetq_contract::status::{TaskState, TaskStatus};
use jetq_producer::{CancelOutcome, EnqueueError, EnqueueOptions, Producer, StatusError};
use serde::{Deserialize, Serialize};

use crate::{
    tasks::{GenerateCsv, SendEmail},
    worker::{validate_export_id, ExportSummary, CSV_ARTIFACT},
};

/// The subject of the welcome mail.
pub const WELCOME_SUBJECT: &str = "Welcome to jetq!";
/// Most rows one export may ask for.
pub const MAX_ROWS: u32 = 1_000_000;
/// Longest total pause (`rows × row_delay_ms`) an export may ask for: well inside the
/// 10-minute timeout of [`GenerateCsv`].
pub const MAX_EXPORT_DELAY: Duration = Duration::from_secs(300);
/// `Retry-After` (seconds) sent when the task stream is full.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Where the web app listens: `WEB_LISTEN` (default `127.0.0.1:3000`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WebConfig {
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3000))
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: default_listen(),
        }
    }
}

impl WebConfig {
    /// Reads `WEB_*` from the process environment.
    pub fn from_env() -> Result<Self, crate::ConfigError> {
        envy::prefixed("WEB_")
            .from_env()
            .map_err(|err| crate::ConfigError::from_envy("WEB_", err))
    }
}

/// Body of `POST /signup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignupRequest {
    /// The new user's email address.
    pub email: String,
}

/// Answer of `POST /signup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignupResponse {
    /// The welcome mail's task id (`signup:<email>`).
    pub task_id: String,
    /// True if this signup repeated one already queued inside the duplicate window.
    pub duplicate: bool,
}

/// Body of `POST /exports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportRequest {
    /// Data rows to generate (1 to [`MAX_ROWS`]).
    pub rows: u32,
    /// Pause per row in milliseconds (default 0).
    #[serde(default)]
    pub row_delay_ms: u64,
}

/// Answer of `POST /exports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportResponse {
    /// The export's id.
    pub export_id: String,
    /// The task id (the export id: it is the task's idempotency key).
    pub task_id: String,
    /// Where its status is: `/exports/<export_id>`.
    pub status_url: String,
}

/// Answer of `GET /exports/{id}` and each event of `GET /exports/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportStatus {
    /// The export's id.
    pub export_id: String,
    /// `queued`, `running`, `retrying`, `succeeded`, `failed`, `dead` or `cancelled`.
    pub state: TaskState,
    /// The current or last attempt (0 before the first).
    pub attempt: u32,
    /// Progress in percent, once the worker reported some.
    pub percent: Option<f64>,
    /// The last progress message.
    pub message: Option<String>,
    /// The last error.
    pub error: Option<String>,
    /// Data rows, once it succeeded.
    pub rows: Option<u32>,
    /// CSV size in bytes, once it succeeded.
    pub bytes: Option<u64>,
    /// Where to download the CSV, once it succeeded.
    pub csv_url: Option<String>,
    /// When the status last changed, RFC 3339 UTC.
    pub updated_at: String,
}

impl ExportStatus {
    /// The export's view of a task status record.
    pub fn from_record(record: &TaskStatus) -> Self {
        let summary: Option<ExportSummary> = record
            .result
            .as_ref()
            .and_then(|value| serde_json::from_value(value.clone()).ok());
        let succeeded = record.state == TaskState::Succeeded;
        ExportStatus {
            export_id: record.id.clone(),
            state: record.state,
            attempt: record.attempt,
            percent: record.progress.as_ref().map(|p| p.percent),
            message: record.progress.as_ref().map(|p| p.message.clone()),
            error: record.error.clone(),
            rows: summary.map(|s| s.rows),
            bytes: summary.map(|s| s.bytes),
            csv_url: succeeded.then(|| format!("/exports/{}/csv", record.id)),
            updated_at: record.updated_at.clone(),
        }
    }
}

/// Answer of `DELETE /exports/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelResponse {
    /// `cancelled` (it had not started), `cancel-requested` (it is running and stops at its next
    /// row) or `already-finished`.
    pub outcome: String,
    /// The status after the request.
    pub status: ExportStatus,
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// An error answer: status, message and, for a full queue, a `Retry-After`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

impl From<EnqueueError> for ApiError {
    fn from(err: EnqueueError) -> Self {
        let message = err.to_string();
        match err {
            EnqueueError::StreamFull { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message,
                retry_after: Some(RETRY_AFTER_SECS),
            },
            // The task definitions or this app are wrong, not the request.
            EnqueueError::InvalidName(_)
            | EnqueueError::InvalidKey(_)
            | EnqueueError::Serialize { .. }
            | EnqueueError::Flow(_)
            | EnqueueError::TooLarge { .. } => {
                tracing::error!(error = %message, "enqueue failed: a bug in the app");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            // The queue is unavailable: not stored (or not known to be), try again later. That is
            // NoStream, NotConnected, Timeout, Unique and Rejected, and (EnqueueError is
            // non_exhaustive) any kind a later jetq adds, until this app maps it.
            _ => {
                tracing::warn!(error = %message, "enqueue failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
            }
        }
    }
}

impl From<StatusError> for ApiError {
    fn from(err: StatusError) -> Self {
        let message = err.to_string();
        let status = match err {
            StatusError::NotFound { .. } | StatusError::ArtifactNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            StatusError::ArtifactName(_) => StatusCode::NOT_FOUND,
            StatusError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            StatusError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => {
                tracing::warn!(error = %message, "status store unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The app's routes, enqueueing through `producer`.
pub fn router(producer: Producer) -> Router {
    Router::new()
        .route("/signup", post(signup))
        .route("/exports", post(create_export))
        .route("/exports/{id}", get(export_status).delete(cancel_export))
        .route("/exports/{id}/csv", get(download_export))
        .route("/exports/{id}/events", get(export_events))
        .route("/exports/{id}/page", get(export_page))
        // The chunked export: a chord of chunks, assembled by its callback (chunked.rs).
        .merge(crate::chunked::routes())
        .with_state(producer)
}

/// Checks and normalizes a signup address: trimmed, lower-cased ASCII that parses as an email
/// address, so it is also a valid idempotency key.
pub fn normalize_email(email: &str) -> Result<String, String> {
    let email = email.trim().to_ascii_lowercase();
    if email.is_empty() {
        return Err("email is empty".into());
    }
    if !email.is_ascii() || email.chars().any(|c| c.is_ascii_control()) {
        return Err("email must be printable ASCII".into());
    }
    if email.len() > 254 {
        return Err("email is longer than 254 characters".into());
    }
    lettre::Address::from_str(&email)
        .map_err(|err| format!("{email:?} is not an email address: {err}"))?;
    Ok(email)
}

/// The welcome mail for a new user.
pub fn welcome_email(email: &str) -> SendEmail {
    SendEmail {
        to: email.to_owned(),
        subject: WELCOME_SUBJECT.to_owned(),
        body: format!(
            "Hello {email},\n\nthanks for signing up. This mail was sent by a jetq worker, \
             not by the web request that queued it.\n"
        ),
    }
}

async fn signup(
    State(producer): State<Producer>,
    body: Result<Json<SignupRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<SignupResponse>), ApiError> {
    let Json(request) = body?;
    let email = normalize_email(&request.email).map_err(ApiError::invalid)?;
    // High priority: the person who just signed up is waiting for this mail, so it goes
    // before the queue's other mails (docs/FLOW_CONTROL.md, "Priorities").
    let mut options = EnqueueOptions::new()
        .key(format!("signup:{email}"))
        .priority(jetq_producer::Priority::High);
    if crate::flow::unique_signups() {
        // One welcome mail per address while one is queued or being sent, however long that
        // takes (the idempotency key alone dedups for the stream's 2-minute window only).
        options = options.unique(jetq_producer::Unique::key(format!("welcome:{email}")));
    }
    let enqueued = producer
        .enqueue_with(&welcome_email(&email), options)
        .await?;
    tracing::info!(task_id = %enqueued.id, duplicate = enqueued.duplicate, "signup queued a welcome mail");
    Ok((
        StatusCode::ACCEPTED,
        Json(SignupResponse {
            task_id: enqueued.id,
            duplicate: enqueued.duplicate,
        }),
    ))
}

async fn create_export(
    State(producer): State<Producer>,
    body: Result<Json<ExportRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ExportResponse>), ApiError> {
    let Json(request) = body?;
    if request.rows == 0 || request.rows > MAX_ROWS {
        return Err(ApiError::invalid(format!(
            "rows must be between 1 and {MAX_ROWS}"
        )));
    }
    let total_delay = u128::from(request.rows) * u128::from(request.row_delay_ms);
    if total_delay > MAX_EXPORT_DELAY.as_millis() {
        return Err(ApiError::invalid(format!(
            "rows × row_delay_ms must be at most {} ms",
            MAX_EXPORT_DELAY.as_millis()
        )));
    }
    let task = GenerateCsv {
        export_id: ulid::Ulid::new().to_string(),
        rows: request.rows,
        row_delay_ms: request.row_delay_ms,
    };
    let options = EnqueueOptions::new().key(task.export_id.clone());
    let enqueued = producer.enqueue_with(&task, options).await?;
    tracing::info!(task_id = %enqueued.id, export_id = %task.export_id, "export queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(ExportResponse {
            status_url: format!("/exports/{}", task.export_id),
            export_id: task.export_id,
            task_id: enqueued.id,
        }),
    ))
}

/// The status record of export `id`, or 404.
async fn export_record(producer: &Producer, id: &str) -> Result<TaskStatus, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no export {id:?}"));
    validate_export_id(id).map_err(|_| not_found())?;
    producer.status(id).await?.ok_or_else(not_found)
}

async fn export_status(
    State(producer): State<Producer>,
    Path(id): Path<String>,
) -> Result<Json<ExportStatus>, ApiError> {
    let record = export_record(&producer, &id).await?;
    Ok(Json(ExportStatus::from_record(&record)))
}

async fn download_export(
    State(producer): State<Producer>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = export_record(&producer, &id).await?;
    if record.state != TaskState::Succeeded {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("export {id} is {}, not finished", record.state),
        ));
    }
    let artifact = producer.artifact(&id, CSV_ARTIFACT).await?;
    let size = artifact.size();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(artifact));
    let disposition = format!("attachment; filename=\"{id}.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

async fn export_events(
    State(producer): State<Producer>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    export_record(&producer, &id).await?;
    let updates = producer.watch(&id).await?;
    let events = updates.map(|update| {
        let event = match update {
            Ok(record) => Event::default()
                .event("status")
                .json_data(ExportStatus::from_record(&record))
                .unwrap_or_else(|err| Event::default().event("error").data(err.to_string())),
            Err(err) => Event::default().event("error").data(err.to_string()),
        };
        Ok(event)
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn export_page(
    State(producer): State<Producer>,
    Path(id): Path<String>,
) -> Result<Html<String>, ApiError> {
    // The id is checked (`[A-Za-z0-9_-]`), so it is safe inside the page.
    export_record(&producer, &id).await?;
    Ok(Html(PAGE.replace("{id}", &id)))
}

async fn cancel_export(
    State(producer): State<Producer>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<CancelResponse>), ApiError> {
    export_record(&producer, &id).await?;
    let (outcome, record) = match producer.cancel(&id).await? {
        CancelOutcome::Cancelled(record) => ("cancelled", record),
        CancelOutcome::Requested(record) => ("cancel-requested", record),
        CancelOutcome::AlreadyFinished(record) => ("already-finished", record),
    };
    tracing::info!(export_id = %id, outcome, "export cancellation");
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelResponse {
            outcome: outcome.to_owned(),
            status: ExportStatus::from_record(&record),
        }),
    ))
}

/// The progress page of `GET /exports/{id}/page`: follows the SSE stream.
const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Export {id}</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Export {id}</h1>
<progress id="bar" max="100" value="0" style="width: 100%"></progress>
<p id="text">waiting for the worker…</p>
<p id="done" hidden><a href="/exports/{id}/csv">Download the CSV</a></p>
<script>
const source = new EventSource("/exports/{id}/events");
source.addEventListener("status", (event) => {
  const status = JSON.parse(event.data);
  document.getElementById("bar").value = status.percent ?? 0;
  document.getElementById("text").textContent =
    status.state + (status.message ? ": " + status.message : "") +
    (status.error ? " (" + status.error + ")" : "");
  if (status.csv_url) document.getElementById("done").hidden = false;
  if (["succeeded", "failed", "dead", "cancelled"].includes(status.state)) source.close();
});
</script>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_validates_emails() {
        assert_eq!(
            normalize_email("  Ada@Example.com ").as_deref(),
            Ok("ada@example.com")
        );
        for bad in [
            "",
            "   ",
            "not-an-email",
            "a b@example.com",
            "é@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn normalized_emails_are_valid_keys() {
        let email = normalize_email("first.last+tag@example.co.uk").unwrap();
        jetq_contract::name::validate_key(&format!("signup:{email}")).unwrap();
    }

    #[test]
    fn listen_address_defaults_to_port_3000() {
        assert_eq!(WebConfig::default().listen.to_string(), "127.0.0.1:3000");
    }
}
