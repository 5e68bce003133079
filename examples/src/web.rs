//! The web app: an axum router whose handlers enqueue tasks and answer at once.
//!
//! - `POST /signup` `{"email": "..."}` enqueues a welcome [`SendEmail`] with the idempotency key
//!   `signup:<email>` and answers `202 {"task_id": "...", "duplicate": bool}`: a repeated signup
//!   inside the stream's duplicate window is dropped by the server and reported as a duplicate.
//!   The request never waits for SMTP.
//! - `POST /exports` `{"rows": N, "row_delay_ms": M}` enqueues a [`GenerateCsv`] with a fresh
//!   export id and answers `202 {"export_id": "...", "task_id": "..."}`.
//!
//! Errors are JSON `{"error": "..."}`: malformed JSON is 400, a wrong content type 415, invalid
//! values 422; a queue that refused the task is 503 (with `Retry-After` when the stream is full),
//! a bug in the task definition 500.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use axum::{
    extract::{rejection::JsonRejection, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use jetq_producer::{EnqueueError, EnqueueOptions, Producer};
use serde::{Deserialize, Serialize};

use crate::tasks::{GenerateCsv, SendEmail};

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
    /// The export's id: the CSV file will be `<export_id>.csv`.
    pub export_id: String,
    /// The task id.
    pub task_id: String,
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
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
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
            | EnqueueError::TooLarge { .. } => {
                tracing::error!(error = %message, "enqueue failed: a bug in the app");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            // The queue is unavailable: not stored (or not known to be), try again later.
            EnqueueError::NoStream { .. }
            | EnqueueError::NotConnected { .. }
            | EnqueueError::Timeout { .. }
            | EnqueueError::Rejected { .. } => {
                tracing::warn!(error = %message, "enqueue failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
            }
        }
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
    let options = EnqueueOptions::new().key(format!("signup:{email}"));
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
    let enqueued = producer.enqueue(&task).await?;
    tracing::info!(task_id = %enqueued.id, export_id = %task.export_id, "export queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(ExportResponse {
            export_id: task.export_id,
            task_id: enqueued.id,
        }),
    ))
}

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
