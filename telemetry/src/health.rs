//! The health server of a binary: `/healthz` (alive), `/readyz` (every readiness check passes)
//! and `/metrics` (Prometheus text), plus the request-span middleware for web apps.

use std::{
    fmt,
    future::IntoFuture,
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{Status, TraceContextExt},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use prometheus::{Encoder, TextEncoder};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::TelemetryError;

type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The readiness checks a binary's `/readyz` runs: ready when every check passes. Components
/// add their own (the worker: connected and its consumers bound; later the scheduler).
/// Cheap to clone; clones share the checks.
///
/// ```
/// let readiness = jetq_telemetry::Readiness::new();
/// readiness.add("nats", || Ok::<(), String>(()));
/// assert!(readiness.check().is_ok());
/// readiness.add("warm-up", || Err("cache not loaded".to_string()));
/// assert_eq!(readiness.check().unwrap_err(), vec!["warm-up: cache not loaded".to_string()]);
/// ```
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<RwLock<Vec<(String, Check)>>>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.check().is_ok())
            .finish()
    }
}

impl Readiness {
    /// No checks yet: ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named check; `Err` carries the reason shown on `/readyz` (never a secret).
    pub fn add<F, E>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> Result<(), E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let check: Check = Arc::new(move || check().map_err(|err| err.to_string()));
        self.checks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((name.into(), check));
    }

    /// `Ok` when every check passes, else one `name: reason` per failing check.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let checks = self
            .checks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let failures: Vec<String> = checks
            .iter()
            .filter_map(|(name, check)| check().err().map(|reason| format!("{name}: {reason}")))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }
}

/// What the health routes serve.
#[derive(Clone)]
struct HealthState {
    readiness: Readiness,
    registry: Option<prometheus::Registry>,
}

/// `/healthz`, `/readyz` and (with a registry) `/metrics`, as a router a web app can also
/// merge into its own.
pub fn health_router(readiness: Readiness, registry: Option<prometheus::Registry>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HealthState {
            readiness,
            registry,
        })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HealthState>) -> Response {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", reasons.join("\n")),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<HealthState>) -> Response {
    let Some(registry) = state.registry else {
        return (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response();
    };
    match render(&registry) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}

/// The Prometheus text exposition of a registry.
pub(crate) fn render(registry: &prometheus::Registry) -> Result<String, TelemetryError> {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .map_err(|err| TelemetryError::Metrics(err.to_string()))?;
    String::from_utf8(buffer).map_err(|err| TelemetryError::Metrics(err.to_string()))
}

/// A running health server. Stop it with [`HealthServer::stop`]; dropping it stops it too.
#[derive(Debug)]
pub struct HealthServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl HealthServer {
    /// Binds `addr` and serves `router` on it in a background task.
    pub async fn bind(addr: SocketAddr, router: Router) -> Result<HealthServer, TelemetryError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(server.into_future());
        tracing::info!(%local_addr, "serving /healthz, /readyz and /metrics");
        Ok(HealthServer {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits for the server task to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "health server failed"),
                Err(err) => tracing::warn!(error = %err, "health server task failed"),
            }
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct HttpExtractor<'a>(&'a HeaderMap);

impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// axum middleware: runs each request in a `<METHOD> <route>` span (kind SERVER) that continues
/// an incoming W3C `traceparent`, so tasks enqueued by the handler join the request's trace.
///
/// ```no_run
/// # let router: axum::Router = axum::Router::new();
/// let router = router.layer(axum::middleware::from_fn(jetq_telemetry::trace_requests));
/// ```
pub async fn trace_requests(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let name = format!("{method} {}", route.as_deref().unwrap_or(""));
    let span = tracing::info_span!(
        "request",
        otel.name = %name.trim_end(),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route.as_deref().unwrap_or(""),
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HttpExtractor(request.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent.clone());
    }
    // The span's own trace id; without an OpenTelemetry layer, the caller's, for the logs.
    if let Some(trace_id) = jetq_contract::otel::log_trace_id(&span.context(), &parent) {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.set_status(Status::error(status.to_string()));
    }
    response
}
