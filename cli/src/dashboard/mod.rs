//! The web dashboard: `jetq dashboard --listen 127.0.0.1:8080`.
//!
//! A server-rendered page (axum) with a little inline JavaScript and no external resources:
//!
//! - queues with live counts and rates, and an inline SVG chart of the last minutes, refreshed
//!   by polling `GET /api/overview` (a sampler takes a snapshot every `sample_every`);
//! - dead letters with their errors and **Replay** / **Discard** buttons (filters by queue,
//!   task, reason), a detail page per dead letter;
//! - schedules with their next fires, when a schedules file is configured;
//! - the task types the workers published (the task-type catalog, also `GET /api/catalog`);
//! - flow control (`limits.rs`): the rate and concurrency limits the workers registered, what
//!   holds and waits on each, the unique keys held and by which task, with a **Release** button
//!   per entry (as `jetq limits`; also `GET /api/limits`, `POST /api/limits/release?entry=`);
//! - a task-status lookup (`/status?id=`): state, attempts, progress, result and history of a
//!   tracked task.
//!
//! ## Security
//!
//! - `--token` (or `JETQ_DASHBOARD_TOKEN`) protects every page and endpoint except `/healthz`:
//!   `Authorization: Bearer <token>`, or HTTP basic auth with the token as the password (the
//!   browser asks for it). Without a token the dashboard only listens on a loopback address
//!   unless `--no-auth` is given.
//! - Changes (replay, discard, release) are `POST` only, need the token like everything else,
//!   and must carry the header `X-Jetq-Request: 1` (which a cross-site form cannot send) and,
//!   when the browser sends an `Origin`, come from the dashboard's own origin.
//! - `--read-only` removes the buttons and refuses every change with 403.

mod catalog;
mod limits;
mod page;

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use axum::{
    extract::{Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{
    dead::{DeadFilter, ReplayOptions, Selection},
    error::{AdminError, ErrorKind},
    schedules::ScheduleView,
    stats::Overview,
    Admin,
};

/// How the dashboard runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardConfig {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The token every request must carry (bearer, or basic-auth password).
    pub token: Option<String>,
    /// Refuse every change.
    pub read_only: bool,
    /// Allow a non-loopback listen address without a token.
    pub allow_no_auth: bool,
    /// Sampling period of queue counts (rates and chart).
    pub sample_every: Duration,
    /// History kept for the chart.
    pub history: Duration,
    /// The schedules file to show.
    pub schedules_file: Option<PathBuf>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            read_only: false,
            allow_no_auth: false,
            sample_every: Duration::from_secs(2),
            history: Duration::from_secs(600),
            schedules_file: None,
        }
    }
}

impl DashboardConfig {
    /// Refuses configurations that would expose replay and delete to the network unprotected.
    pub fn validate(&self) -> Result<(), AdminError> {
        if self.token.is_none() && !self.listen.ip().is_loopback() && !self.allow_no_auth {
            return Err(AdminError::Invalid(format!(
                "refusing to serve the dashboard on {} without a token: it shows task payloads \
                 and can replay and delete dead letters. Set --token (or JETQ_DASHBOARD_TOKEN), \
                 listen on 127.0.0.1, or pass --no-auth if something in front of it \
                 authenticates",
                self.listen
            )));
        }
        if self.sample_every < Duration::from_millis(100) {
            return Err(AdminError::Invalid(
                "--sample-every must be at least 100ms".into(),
            ));
        }
        Ok(())
    }
}

/// One point of the chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Point {
    /// Unix milliseconds.
    t: u64,
    queues: BTreeMap<String, QueuePoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct QueuePoint {
    pending: u64,
    in_flight: u64,
    dead: u64,
    rate: Option<f64>,
}

#[derive(Debug, Default)]
struct Samples {
    points: VecDeque<Point>,
    latest: Option<Overview>,
    error: Option<String>,
}

#[derive(Clone)]
struct AppState {
    admin: Admin,
    config: Arc<DashboardConfig>,
    samples: Arc<Mutex<Samples>>,
}

impl AppState {
    fn samples(&self) -> std::sync::MutexGuard<'_, Samples> {
        // A poisoned lock only means a panic elsewhere mid-update; the data is still usable.
        self.samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a sample now and records it.
    async fn sample(&self) {
        let result = self.admin.overview().await;
        let mut samples = self.samples();
        match result {
            Ok(mut overview) => {
                if let Some(previous) = &samples.latest {
                    overview.rates_since(previous);
                }
                let t = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let queues = overview
                    .queues
                    .iter()
                    .map(|q| {
                        (
                            q.queue.clone(),
                            QueuePoint {
                                pending: q.pending,
                                in_flight: q.in_flight,
                                dead: q.dead,
                                rate: q.rate.map(|r| r.delivered_per_sec),
                            },
                        )
                    })
                    .collect();
                samples.points.push_back(Point { t, queues });
                let keep = (self.config.history.as_secs_f64()
                    / self.config.sample_every.as_secs_f64())
                .ceil()
                .max(2.0) as usize;
                while samples.points.len() > keep {
                    samples.points.pop_front();
                }
                samples.latest = Some(overview);
                samples.error = None;
            }
            Err(err) => samples.error = Some(err.to_string()),
        }
    }
}

/// A dashboard bound to its address, ready to serve.
pub struct Dashboard {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("addr", &self.listener.local_addr().ok())
            .finish()
    }
}

impl Dashboard {
    /// Validates the configuration and binds the listen address.
    pub async fn bind(admin: Admin, config: DashboardConfig) -> Result<Dashboard, AdminError> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|err| {
                AdminError::Invalid(format!("cannot listen on {}: {err}", config.listen))
            })?;
        Ok(Dashboard {
            listener,
            state: AppState {
                admin,
                config: Arc::new(config),
                samples: Arc::new(Mutex::new(Samples::default())),
            },
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, AdminError> {
        self.listener
            .local_addr()
            .map_err(|err| AdminError::Invalid(format!("no local address: {err}")))
    }

    /// Serves until `shutdown` completes, sampling queue counts in the background.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AdminError> {
        let state = self.state.clone();
        let sampler = tokio::spawn({
            let state = state.clone();
            async move {
                let mut tick = tokio::time::interval(state.config.sample_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    state.sample().await;
                }
            }
        });
        let result = axum::serve(self.listener, router(state))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|err| AdminError::nats("the dashboard server failed", err));
        sampler.abort();
        result
    }
}

/// Binds, prints the address (`listening on http://…/`) on stdout and serves until `shutdown`.
pub async fn run(
    admin: Admin,
    config: DashboardConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdminError> {
    let read_only = config.read_only;
    let auth = config.token.is_some();
    let dashboard = Dashboard::bind(admin, config).await?;
    let addr = dashboard.local_addr()?;
    println!("listening on http://{addr}/");
    eprintln!(
        "jetq dashboard: http://{addr}/ ({}; {})",
        if read_only {
            "read-only"
        } else {
            "replay and discard enabled"
        },
        if auth {
            "token required"
        } else {
            "no authentication"
        }
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    dashboard.serve(shutdown).await
}

fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(index))
        .route("/dead/{seq}", get(dead_page))
        .route("/status", get(status_page))
        .route("/api/overview", get(api_overview))
        .route("/api/dead", get(api_dead))
        .route("/api/dead/{seq}", get(api_dead_one))
        .route("/api/dead/{seq}/replay", post(api_replay))
        .route("/api/dead/{seq}/discard", post(api_discard))
        .route("/api/schedules", get(api_schedules))
        .route("/api/status/{id}", get(api_status))
        .route("/api/catalog", get(catalog::api_catalog))
        .route("/api/limits", get(limits::api_limits))
        .route("/api/limits/release", post(limits::api_release))
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(protected)
        .with_state(state)
}

/// Authentication for everything, and the extra checks on changes.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.config.token {
        if !authorized(request.headers(), token) {
            let mut response =
                (StatusCode::UNAUTHORIZED, Html(page::unauthorized())).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"jetq dashboard\", charset=\"UTF-8\""),
            );
            return response;
        }
    }
    if request.method() == Method::POST {
        if state.config.read_only {
            return error_response(
                StatusCode::FORBIDDEN,
                "the dashboard is read-only (started with --read-only)",
            );
        }
        let headers = request.headers();
        if headers.get("x-jetq-request").map(HeaderValue::as_bytes) != Some(b"1") {
            return error_response(
                StatusCode::FORBIDDEN,
                "changes need the header X-Jetq-Request: 1 (cross-site requests are refused)",
            );
        }
        if let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
        {
            let origin = origin.to_str().unwrap_or_default();
            let host = host.to_str().unwrap_or_default();
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host);
            if !same {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "changes are only accepted from the dashboard's own pages",
                );
            }
        }
    }
    next.run(request).await
}

/// Checks `Authorization: Bearer <token>` or `Basic <base64(user:token)>`, in constant time.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let value = value.trim();
    if let Some(bearer) = strip_scheme(value, "bearer") {
        return constant_time_eq(bearer.trim().as_bytes(), token.as_bytes());
    }
    if let Some(basic) = strip_scheme(value, "basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        return constant_time_eq(&decoded[colon + 1..], token.as_bytes());
    }
    false
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// True if `given` equals `token`, in time that depends on the token's length only: `given` is
/// cut or padded to it and compared with `subtle`, its length compared apart, so neither how
/// many bytes matched nor how long the token is shows in the response time.
fn constant_time_eq(given: &[u8], token: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let mut padded = given.to_vec();
    padded.resize(token.len(), 0);
    let same_length = (given.len() as u64).ct_eq(&(token.len() as u64));
    (padded.as_slice().ct_eq(token) & same_length).into()
}

/// A JSON error body.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

fn admin_error(err: AdminError) -> Response {
    let status = match err.kind() {
        ErrorKind::Usage => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::NotSupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Failed => StatusCode::BAD_GATEWAY,
    };
    error_response(status, err.to_string())
}

/// Query of the dead-letter views.
#[derive(Debug, Default, Deserialize)]
struct DeadQuery {
    queue: Option<String>,
    task: Option<String>,
    reason: Option<String>,
    limit: Option<usize>,
}

impl DeadQuery {
    fn filter(&self) -> DeadFilter {
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        DeadFilter {
            queue: non_empty(&self.queue),
            task: non_empty(&self.task),
            reason: non_empty(&self.reason),
            ..DeadFilter::default()
        }
    }

    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

/// The overview JSON the page polls.
#[derive(Debug, Serialize)]
struct OverviewBody {
    overview: Option<Overview>,
    history: Vec<Point>,
    sample_every_ms: u64,
    read_only: bool,
    error: Option<String>,
}

async fn overview_body(state: &AppState) -> OverviewBody {
    let empty = state.samples().latest.is_none();
    if empty {
        state.sample().await;
    }
    let samples = state.samples();
    OverviewBody {
        overview: samples.latest.clone(),
        history: samples.points.iter().cloned().collect(),
        sample_every_ms: state.config.sample_every.as_millis() as u64,
        read_only: state.config.read_only,
        error: samples.error.clone(),
    }
}

async fn api_overview(State(state): State<AppState>) -> Response {
    Json(overview_body(&state).await).into_response()
}

async fn api_dead(State(state): State<AppState>, Query(query): Query<DeadQuery>) -> Response {
    match state
        .admin
        .dead_letters(&query.filter(), Some(query.limit()))
        .await
    {
        Ok(page) => Json(serde_json::json!({
            "total": page.total,
            "shown": page.dead_letters.len(),
            "dead_letters": page.dead_letters.iter().map(|d| d.summary()).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(err) => admin_error(err),
    }
}

async fn api_dead_one(State(state): State<AppState>, Path(seq): Path<u64>) -> Response {
    match state.admin.dead_letter(seq).await {
        Ok(dead) => Json(dead).into_response(),
        Err(err) => admin_error(err),
    }
}

async fn api_replay(State(state): State<AppState>, Path(seq): Path<u64>) -> Response {
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
                tracing::info!(dead_sequence = seq, "dashboard: dead letter replayed");
                Json(report).into_response()
            }
            Some(err) => admin_error(err),
        },
        Err(err) => admin_error(err),
    }
}

async fn api_discard(State(state): State<AppState>, Path(seq): Path<u64>) -> Response {
    match state
        .admin
        .purge(&Selection::Sequences(vec![seq]), false, &())
        .await
    {
        Ok(report) if report.failed == 0 => {
            tracing::info!(dead_sequence = seq, "dashboard: dead letter discarded");
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

async fn load_schedules(state: &AppState) -> Option<Result<Vec<ScheduleView>, String>> {
    let path = state.config.schedules_file.as_ref()?;
    Some(
        state
            .admin
            .schedules(path, 3)
            .await
            .map_err(|err| err.to_string()),
    )
}

async fn api_schedules(State(state): State<AppState>) -> Response {
    match load_schedules(&state).await {
        None => error_response(
            StatusCode::NOT_FOUND,
            "no schedules file configured (--schedules-file or JETQ_SCHEDULES_FILE)",
        ),
        Some(Ok(views)) => Json(views).into_response(),
        Some(Err(err)) => error_response(StatusCode::BAD_GATEWAY, err),
    }
}

async fn api_status(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.admin.task_status(&id).await {
        Ok(status) => Json(status).into_response(),
        Err(err) => admin_error(err),
    }
}

async fn index(State(state): State<AppState>, Query(query): Query<DeadQuery>) -> Response {
    let overview = overview_body(&state).await;
    let dead = state
        .admin
        .dead_letters(&query.filter(), Some(query.limit()))
        .await
        .map_err(|err| err.to_string());
    let schedules = load_schedules(&state).await;
    let catalog = state
        .admin
        .catalog(None)
        .await
        .map_err(|err| err.to_string());
    let limits = state.admin.limits().await.map_err(|err| err.to_string());
    let view = page::IndexView {
        overview_json: serde_json::to_string(&overview).unwrap_or_else(|_| "{}".into()),
        overview: overview.overview.as_ref(),
        overview_error: overview.error.as_deref(),
        dead: dead.as_ref().map_err(String::as_str),
        filter: &query.filter(),
        schedules: schedules
            .as_ref()
            .map(|r| r.as_ref().map_err(String::as_str)),
        schedules_configured: state.config.schedules_file.is_some(),
        catalog: catalog.as_ref().map_err(String::as_str),
        limits: limits.as_ref().map_err(String::as_str),
        read_only: state.config.read_only,
        server_version: state.admin.server_version_text(),
    };
    Html(page::index(&view)).into_response()
}

async fn dead_page(State(state): State<AppState>, Path(seq): Path<u64>) -> Response {
    match state.admin.dead_letter(seq).await {
        Ok(dead) => Html(page::dead_letter(&dead, state.config.read_only)).into_response(),
        Err(err) => {
            let status = if err.kind() == ErrorKind::NotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_GATEWAY
            };
            (status, Html(page::message("Dead letter", &err.to_string()))).into_response()
        }
    }
}

/// Query of the status lookup.
#[derive(Debug, Deserialize)]
struct StatusQuery {
    id: Option<String>,
}

async fn status_page(State(state): State<AppState>, Query(query): Query<StatusQuery>) -> Response {
    let id = query.id.unwrap_or_default();
    match state.admin.task_status(&id).await {
        Ok(status) => Html(page::task_status(&status)).into_response(),
        Err(err) => {
            let status = if err.kind() == ErrorKind::NotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_GATEWAY
            };
            (
                status,
                Html(page::message(&format!("Task {id}"), &err.to_string())),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_and_basic_tokens_are_accepted() {
        assert!(authorized(&with_auth("Bearer s3cret"), "s3cret"));
        assert!(authorized(&with_auth("bearer s3cret"), "s3cret"));
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:s3cret");
        assert!(authorized(&with_auth(&format!("Basic {basic}")), "s3cret"));
        assert!(!authorized(&with_auth("Bearer s3cre"), "s3cret"));
        assert!(!authorized(&with_auth("Bearer s3crett"), "s3cret"));
        let wrong = base64::engine::general_purpose::STANDARD.encode("s3cret:nope");
        assert!(!authorized(&with_auth(&format!("Basic {wrong}")), "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }

    #[test]
    fn no_token_means_loopback_only() {
        let open = DashboardConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..DashboardConfig::default()
        };
        assert!(open.validate().is_err());
        let with_token = DashboardConfig {
            token: Some("t".into()),
            ..open.clone()
        };
        assert!(with_token.validate().is_ok());
        assert!(DashboardConfig::default().validate().is_ok());
    }
}
