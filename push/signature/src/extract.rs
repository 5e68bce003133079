//! The axum extractor (feature `axum`).

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::{Verifier, VerifyError, SIGNATURE_HEADER, TASK_ID_HEADER, TIMESTAMP_HEADER};

/// A verified jetq push request whose JSON body (the task's arguments) decoded as `T`.
///
/// The extractor reads `Jetq-Timestamp`, `Jetq-Task-Id`, `Jetq-Signature` and the raw body,
/// verifies them with the [`Verifier`] from the router's state (directly, or through
/// [`FromRef`] from your own state type) against the current clock, and only then decodes the
/// body. It consumes the body, so it must be the last extractor of the handler; other headers
/// (such as the attempt number) can be read with a `HeaderMap` extractor before it.
///
/// Refusals ([`PushRejection`]): a missing, malformed, stale or mismatched signature answers
/// `401 Unauthorized`; a body that is not JSON of type `T` answers `400 Bad Request`; a body
/// that cannot be read (over axum's body limit, 2 MB by default) keeps axum's own answer.
///
/// ```
/// use axum::{extract::FromRef, routing::post, Router};
/// use jetq_push_signature::{SigningKeys, VerifiedPush, Verifier};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct SendEmail {
///     to: String,
/// }
///
/// #[derive(Clone)]
/// struct AppState {
///     verifier: Verifier,
/// }
///
/// impl FromRef<AppState> for Verifier {
///     fn from_ref(state: &AppState) -> Verifier {
///         state.verifier.clone()
///     }
/// }
///
/// async fn send_email(push: VerifiedPush<SendEmail>) -> &'static str {
///     let VerifiedPush { task_id, args, .. } = push;
///     // Make the work idempotent on `task_id`: a task may be delivered more than once.
///     println!("task {task_id}: email to {}", args.to);
///     "sent"
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // JETQ_PUSH_SIGNING_KEYS=key1[,key2]; here from a literal.
/// let verifier = Verifier::new(SigningKeys::from_env_value("whsec_example")?);
/// let app: Router = Router::new()
///     .route("/tasks/send_email", post(send_email))
///     .with_state(AppState { verifier });
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifiedPush<T> {
    /// The task id (`Jetq-Task-Id`), covered by the signature: use it to make the work
    /// idempotent.
    pub task_id: String,
    /// The signing time (`Jetq-Timestamp`), Unix seconds.
    pub timestamp: u64,
    /// The task's arguments, decoded from the JSON body.
    pub args: T,
}

impl<T> VerifiedPush<T> {
    /// A `VerifiedPush` built by hand, to call a handler directly in a unit test.
    ///
    /// ```
    /// use jetq_push_signature::VerifiedPush;
    ///
    /// let push = VerifiedPush::new("01JDQ5X1ZB8Y2K3M4N5P6Q7R8S", 1_764_240_000, 42u32);
    /// assert_eq!((push.task_id.as_str(), push.args), ("01JDQ5X1ZB8Y2K3M4N5P6Q7R8S", 42));
    /// ```
    pub fn new(task_id: impl Into<String>, timestamp: u64, args: T) -> Self {
        VerifiedPush {
            task_id: task_id.into(),
            timestamp,
            args,
        }
    }
}

/// Why [`VerifiedPush`] refused a request; as a response, 401, 400 or axum's body error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushRejection {
    /// The signature did not verify: answered with `401 Unauthorized`.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// The body could not be read (too large, connection lost): axum's own response.
    #[error(transparent)]
    Body(#[from] BytesRejection),
    /// The body is not JSON of the expected type: answered with `400 Bad Request`.
    #[error("push request body is not the expected JSON: {0}")]
    Json(#[source] serde_json::Error),
}

impl PushRejection {
    /// The HTTP status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            PushRejection::Signature(_) => StatusCode::UNAUTHORIZED,
            PushRejection::Body(inner) => inner.status(),
            PushRejection::Json(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for PushRejection {
    fn into_response(self) -> Response {
        match self {
            PushRejection::Body(inner) => inner.into_response(),
            other => (other.status(), other.to_string()).into_response(),
        }
    }
}

/// A header's value as text: None when absent, Malformed when not visible ASCII.
fn header(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, VerifyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.to_owned()))
            .map_err(|_| VerifyError::Malformed {
                header: name,
                reason: "not visible ASCII",
            }),
    }
}

impl<S, T> FromRequest<S> for VerifiedPush<T>
where
    S: Send + Sync,
    Verifier: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = PushRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        let headers = req.headers();
        let timestamp_text = header(headers, TIMESTAMP_HEADER)?;
        let task_id = header(headers, TASK_ID_HEADER)?;
        let signature = header(headers, SIGNATURE_HEADER)?;
        let body = Bytes::from_request(req, state).await?;
        let timestamp = verifier.check(
            timestamp_text.as_deref(),
            task_id.as_deref(),
            signature.as_deref(),
            &body,
            SystemTime::now(),
        )?;
        let args = serde_json::from_slice(&body).map_err(PushRejection::Json)?;
        Ok(VerifiedPush {
            // `check` succeeded, so the header is present.
            task_id: task_id
                .as_deref()
                .map(crate::trim_ows)
                .unwrap_or_default()
                .to_owned(),
            timestamp,
            args,
        })
    }
}
