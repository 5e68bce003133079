//! Sending one task to its target and turning the answer into the task's outcome.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{
    header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, USER_AGENT},
    HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode,
};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use jetq_consumer::{contract::HttpFailure, TaskContext, TaskError};
use jetq_contract::headers as task_headers;
use jetq_push_signature::{sign, SigningKeys, SIGNATURE_HEADER, TASK_ID_HEADER, TIMESTAMP_HEADER};
use opentelemetry::{
    propagation::{Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tokio::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    flow::Limiter,
    metrics::{Answer, PushMetrics},
    targets::Target,
};

/// Header carrying the attempt number, 1-based.
pub const ATTEMPT_HEADER: &str = "Jetq-Attempt";
/// Header carrying the attempts the task is allowed.
pub const MAX_ATTEMPTS_HEADER: &str = "Jetq-Max-Attempts";
/// Header carrying the task's queue.
pub const QUEUE_HEADER: &str = "Jetq-Queue";
/// Header carrying the task's wire name.
pub const TASK_HEADER: &str = "Jetq-Task";
/// Header carrying the enqueue time, RFC 3339 UTC.
pub const ENQUEUED_AT_HEADER: &str = "Jetq-Enqueued-At";

/// The longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Time kept back from the attempt's timeout so a request that runs out of time is reported
/// by the dispatcher (with the target and URL) before the worker's own timeout fires.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// How requests are signed.
#[derive(Clone, Debug)]
pub enum Signing {
    /// Every request carries `Jetq-Timestamp` and `Jetq-Signature`.
    Keys(SigningKeys),
    /// Requests are not signed (`JETQ_PUSH_UNSIGNED=true`; development only).
    Unsigned,
}

/// The pooled HTTP(S) client every request goes through.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Redirects a target with `follow_redirects: true` follows at most.
pub const MAX_REDIRECTS: usize = 5;

/// What every delivery shares: the HTTP client and the signing keys.
pub(crate) struct Dispatcher {
    /// One connection pool for every target; redirects are never followed by the client
    /// itself (see [`Dispatcher::exchange`]).
    pub(crate) client: HttpClient,
    pub(crate) signing: Signing,
    pub(crate) max_response_bytes: usize,
    pub(crate) metrics: PushMetrics,
}

/// A target with its live limits.
pub(crate) struct LiveTarget {
    pub(crate) target: Arc<Target>,
    pub(crate) limiter: Limiter,
    /// Metric attributes of its requests (the host is fixed: no placeholder may be in it).
    attributes: Vec<opentelemetry::KeyValue>,
}

impl LiveTarget {
    pub(crate) fn new(target: Arc<Target>) -> Self {
        let limiter = Limiter::new(target.concurrency, target.rate, target.burst);
        let attributes =
            PushMetrics::target_attributes(&target.name, &target.url_for("queue", "task"));
        LiveTarget {
            target,
            limiter,
            attributes,
        }
    }
}

impl Dispatcher {
    /// Runs one attempt: waits for a slot and a token, POSTs the task, classifies the answer.
    pub(crate) async fn deliver(
        &self,
        live: &LiveTarget,
        payload: Bytes,
        ctx: TaskContext,
    ) -> Result<(), TaskError> {
        let target = &live.target;
        let started = Instant::now();
        let deadline = started + ctx.timeout().saturating_sub(DEADLINE_MARGIN);
        let wait_until = deadline.min(started + target.max_wait);
        let waiting = self.metrics.waiting(&target.name);
        let acquired = tokio::time::timeout_at(wait_until, live.limiter.acquire()).await;
        drop(waiting);
        self.metrics.waited(&target.name, started.elapsed());
        let _permit = match acquired {
            Ok(Some(permit)) => permit,
            Ok(None) | Err(_) => {
                return Err(TaskError::retry(format!(
                    "target {}: no free request slot within {:?} (concurrency {}, rate {}); \
                     the endpoint is at its limit",
                    target.name,
                    started.elapsed(),
                    target.concurrency,
                    target
                        .rate
                        .map_or_else(|| "unlimited".to_owned(), |r| format!("{r}/s")),
                )))
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(TaskError::retry(format!(
                "target {}: the attempt's timeout ran out waiting for a request slot",
                target.name
            )));
        }
        let timeout = target.timeout.min(remaining);
        let url = target.url_for(ctx.queue(), ctx.task());
        let headers = self.headers(&ctx, &payload)?;
        tracing::debug!(target = %target.name, %url, ?timeout, "sending task");
        let sending = Instant::now();
        let exchanged =
            tokio::time::timeout(timeout, self.exchange(target, &url, &headers, payload)).await;
        let took = sending.elapsed();
        let (url, status, response_headers, body) = match exchanged {
            Ok(Ok(answer)) => answer,
            Ok(Err(failure)) => {
                self.metrics
                    .request(&live.attributes, Answer::Error(failure.kind()), took);
                return Err(failure.into_task_error(&target.name));
            }
            Err(_elapsed) => {
                self.metrics
                    .request(&live.attributes, Answer::Error("timeout"), took);
                return Err(TaskError::retry(format!(
                    "target {}: POST {url} timed out after {timeout:?}",
                    target.name
                )));
            }
        };
        self.metrics
            .request(&live.attributes, Answer::Status(status.as_u16()), took);
        classify(&target.name, &url, status, &response_headers, &body)
    }

    /// Sends the request and reads the answer's head and (bounded) body, following redirects
    /// only for targets that allow it: the same POST, headers and body go to the `Location`
    /// (resolved against the current URL, `http`/`https` only), at most [`MAX_REDIRECTS`]
    /// times. Returns the URL that answered.
    async fn exchange(
        &self,
        target: &Target,
        url: &str,
        headers: &HeaderMap,
        payload: Bytes,
    ) -> Result<(String, StatusCode, HeaderMap, Vec<u8>), SendFailure> {
        let mut url = url.to_owned();
        let mut hops = 0;
        loop {
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(url.as_str())
                .body(Full::new(payload.clone()))
                .map_err(|err| SendFailure::Invalid(format!("POST {url}: {err}")))?;
            *request.headers_mut() = headers.clone();
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| SendFailure::Send {
                    url: url.clone(),
                    connect: err.is_connect(),
                    error: jetq_consumer::error_chain(&err),
                })?;
            let status = response.status();
            let next = (target.follow_redirects && status.is_redirection() && hops < MAX_REDIRECTS)
                .then(|| redirect_target(&url, response.headers()))
                .flatten();
            if let Some(next) = next {
                hops += 1;
                tracing::debug!(target = %target.name, from = %url, to = %next, "following a redirect");
                url = next;
                continue;
            }
            let (parts, body) = response.into_parts();
            let body = read_limited(body, self.max_response_bytes).await;
            return Ok((url, status, parts.headers, body));
        }
    }

    /// Every header of the request: content type, task facts, signature, trace context.
    fn headers(&self, ctx: &TaskContext, body: &[u8]) -> Result<HeaderMap, TaskError> {
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        map.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("jetq-push/", env!("CARGO_PKG_VERSION"))),
        );
        let enqueued_at = ctx
            .header(task_headers::ENQUEUED_AT)
            .map(str::to_owned)
            .unwrap_or_else(|| jetq_contract::time::format(ctx.enqueued_at()));
        let values = [
            (TASK_ID_HEADER, ctx.id().to_owned()),
            (ATTEMPT_HEADER, ctx.attempt().to_string()),
            (MAX_ATTEMPTS_HEADER, ctx.max_attempts().to_string()),
            (QUEUE_HEADER, ctx.queue().to_owned()),
            (TASK_HEADER, ctx.task().to_owned()),
            (ENQUEUED_AT_HEADER, enqueued_at),
        ];
        for (name, value) in values {
            let value = HeaderValue::from_str(&value).map_err(|_| {
                TaskError::fatal(format!(
                    "the task's {name} {value:?} cannot be sent as an HTTP header value \
                     (visible ASCII only)"
                ))
            })?;
            map.insert(HeaderName::from_static(lower(name)), value);
        }
        if let Signing::Keys(keys) = &self.signing {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let signature = sign(keys, now, ctx.id(), body);
            map.insert(
                HeaderName::from_static(lower(TIMESTAMP_HEADER)),
                HeaderValue::from(now),
            );
            let signature = HeaderValue::from_str(&signature)
                .map_err(|_| TaskError::fatal("the signature is not a valid header value"))?;
            map.insert(HeaderName::from_static(lower(SIGNATURE_HEADER)), signature);
        }
        inject_trace_context(ctx, &mut map);
        Ok(map)
    }
}

/// Header names are matched case-insensitively in HTTP; `http` keeps them lower case.
fn lower(name: &'static str) -> &'static str {
    match name {
        TASK_ID_HEADER => "jetq-task-id",
        ATTEMPT_HEADER => "jetq-attempt",
        MAX_ATTEMPTS_HEADER => "jetq-max-attempts",
        QUEUE_HEADER => "jetq-queue",
        TASK_HEADER => "jetq-task",
        ENQUEUED_AT_HEADER => "jetq-enqueued-at",
        TIMESTAMP_HEADER => "jetq-timestamp",
        SIGNATURE_HEADER => "jetq-signature",
        other => other,
    }
}

struct HttpInjector<'a>(&'a mut HeaderMap);

impl Injector for HttpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return;
        };
        if !value.is_empty() {
            self.0.insert(name, value);
        }
    }
}

/// W3C `traceparent`/`tracestate` of the attempt's `process` span (the worker runs every
/// handler inside it), so the endpoint's spans continue the producer's trace. Without an
/// OpenTelemetry layer there is no such span: the task's own trace context is passed on.
fn inject_trace_context(ctx: &TaskContext, map: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HttpInjector(map));
        return;
    }
    for name in [task_headers::TRACEPARENT, task_headers::TRACESTATE] {
        if let Some(value) = ctx.header(name) {
            HttpInjector(map).set(name, value.to_owned());
        }
    }
}

/// Where a redirect points: its `Location` resolved against `url`, if that is an `http` or
/// `https` URL.
fn redirect_target(url: &str, headers: &HeaderMap) -> Option<String> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    let next = url::Url::parse(url).ok()?.join(location).ok()?;
    matches!(next.scheme(), "http" | "https").then(|| next.to_string())
}

/// Why no answer came back.
enum SendFailure {
    /// The request could not be built (a URL the target's template should never produce).
    Invalid(String),
    /// Connecting, TLS, or the exchange failed.
    Send {
        url: String,
        connect: bool,
        error: String,
    },
}

impl SendFailure {
    fn kind(&self) -> &'static str {
        match self {
            SendFailure::Invalid(_) => "invalid_request",
            SendFailure::Send { connect: true, .. } => "connect",
            SendFailure::Send { .. } => "request",
        }
    }

    fn into_task_error(self, target: &str) -> TaskError {
        match self {
            SendFailure::Invalid(error) => TaskError::fatal(format!(
                "target {target}: cannot build the request: {error}"
            )),
            SendFailure::Send {
                url,
                connect,
                error,
            } => {
                let what = if connect {
                    "could not connect"
                } else {
                    "failed"
                };
                TaskError::retry(format!("target {target}: POST {url} {what}: {error}"))
            }
        }
    }
}

/// Reads at most `limit` bytes of the body (what is left unread is dropped with the
/// connection); a body that fails half way is reported as what was read.
async fn read_limited(mut body: hyper::body::Incoming, limit: usize) -> Vec<u8> {
    let mut read = Vec::new();
    while read.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let take = data.len().min(limit - read.len());
                    read.extend_from_slice(&data[..take]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    read
}

/// The outcome of an answer (see the table in `docs/PUSH.md`).
fn classify(
    target: &str,
    url: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), TaskError> {
    if status.is_success() {
        return Ok(());
    }
    let http = HttpFailure::new(status.as_u16(), body);
    let answered = format!("target {target}: POST {url} answered {status}");
    let with_body = || {
        if http.body.is_empty() {
            answered.clone()
        } else {
            format!("{answered}: {}", http.body)
        }
    };
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        let error = match retry_after(headers, SystemTime::now()) {
            Some(delay) => {
                TaskError::retry_after(delay, format!("{answered} (Retry-After {delay:?})"))
            }
            None => TaskError::retry(with_body()),
        };
        return Err(error.with_http(http));
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Err(TaskError::retry(with_body()).with_http(http));
    }
    if status.is_redirection() {
        let location = headers
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("(none)");
        return Err(TaskError::fatal(format!(
            "{answered} to {location}; redirects are not followed (set follow_redirects: true \
             on the target to follow them)"
        ))
        .with_http(http));
    }
    if status.is_client_error() {
        return Err(TaskError::fatal(with_body()).with_http(http));
    }
    // 1xx or non-standard codes: nothing says retrying is useless.
    Err(TaskError::retry(with_body()).with_http(http))
}

/// `Retry-After` as a delay: delay-seconds or an HTTP date (a date in the past is "now"),
/// capped at [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = httpdate::parse_http_date(text).ok()?;
            at.duration_since(now).unwrap_or_default()
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetq_consumer::FailureKind;

    fn answer(status: u16, headers: &[(&'static str, &str)], body: &str) -> Result<(), TaskError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        classify(
            "t",
            "https://a.example/x",
            StatusCode::from_u16(status).unwrap(),
            &map,
            body.as_bytes(),
        )
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert!(answer(200, &[], "").is_ok());
        assert!(answer(204, &[], "").is_ok());
        let not_found = answer(404, &[], "no such user").unwrap_err();
        assert_eq!(not_found.kind(), FailureKind::Fatal);
        assert_eq!(not_found.http().unwrap().status, 404);
        assert_eq!(not_found.http().unwrap().body, "no such user");
        assert!(not_found.message().contains("404 Not Found: no such user"));
        assert_eq!(
            answer(500, &[], "").unwrap_err().kind(),
            FailureKind::Retry { after: None }
        );
        assert_eq!(
            answer(408, &[], "").unwrap_err().kind(),
            FailureKind::Retry { after: None }
        );
        assert_eq!(
            answer(429, &[("retry-after", "7")], "").unwrap_err().kind(),
            FailureKind::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            answer(503, &[], "").unwrap_err().kind(),
            FailureKind::Retry { after: None }
        );
        let moved = answer(301, &[("location", "https://b.example/")], "").unwrap_err();
        assert_eq!(moved.kind(), FailureKind::Fatal);
        assert!(moved.message().contains("https://b.example/"));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut map = HeaderMap::new();
        map.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&map, now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        map.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&map, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        map.insert(RETRY_AFTER, HeaderValue::from_str(&earlier).unwrap());
        assert_eq!(retry_after(&map, now), Some(Duration::ZERO));
        map.insert(RETRY_AFTER, HeaderValue::from_static("999999999"));
        assert_eq!(retry_after(&map, now), Some(MAX_RETRY_AFTER));
        map.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&map, now), None);
    }

    #[test]
    fn header_names_have_lower_case_forms() {
        for name in [
            TASK_ID_HEADER,
            ATTEMPT_HEADER,
            MAX_ATTEMPTS_HEADER,
            QUEUE_HEADER,
            TASK_HEADER,
            ENQUEUED_AT_HEADER,
            TIMESTAMP_HEADER,
            SIGNATURE_HEADER,
        ] {
            assert_eq!(lower(name), name.to_ascii_lowercase());
        }
    }
}
