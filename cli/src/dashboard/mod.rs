//! The web console: `jetq dashboard --listen 127.0.0.1:8080`.
//!
//! Server-rendered pages (axum, minijinja templates in `cli/templates`, see [`page`]) with one
//! served style sheet and one small script, no external resources; usable at phone width:
//!
//! - `/` overview: queues with live counts and rates and inline SVG charts of the last minutes,
//!   refreshed by polling `GET /api/overview` (a sampler takes a snapshot every
//!   `sample_every`); the dead-letter count of the navigation comes from the same snapshot;
//! - `/queues` (`queues.rs`): counts, rates, latency (age of the oldest pending task), paused
//!   state with **Pause** / **Resume** (as `jetq pause` / `jetq resume`);
//! - `/dead` (`dead.rs`): dead letters, paged and filtered (queue, task, reason, age, task id),
//!   **Replay** / **Discard** per letter and for every letter matching the filter (a dry-run
//!   count to confirm, a background job with a progress endpoint, its result); `/dead/{seq}`
//!   one letter with its attempts, arguments and headers;
//! - `/limits` (`limits.rs`): flow control, with a **Release** button per entry;
//! - `/catalog` (`catalog.rs`): the task types the workers published;
//! - `/tasks` (`tasks.rs`): tasks by state (pending, delayed, retrying, running, dead), paged
//!   and filtered by queue and type, a search by id; `/tasks/{id}` one task (status, attempts
//!   with errors, where it is, trace id) with **Cancel**;
//! - `/workers` (`tasks.rs`): live workers, their running tasks and heartbeat age;
//! - `/batches`, `/batches/{id}`, `/chains/{id}` (`batches.rs`): batches with their running,
//!   queued and finished members and callbacks, chains with their links;
//! - `/history` (`history.rs`): per-minute charts of the last 1 h / 6 h / 24 h per queue from
//!   the workers' metrics history (PROTOCOL §15), drawn on the server as inline SVG;
//! - `/schedules`: the schedules file's schedules, next and last fire, paused state, with
//!   **Pause** / **Resume** and **Run now**;
//! - `/status?id=`: state, attempts, progress, result and history of a tracked task.
//!
//! ## Security
//!
//! - `--token` (or `JETQ_DASHBOARD_TOKEN`) protects every page and endpoint except `/healthz`
//!   and the static assets: `Authorization: Bearer <token>`, or HTTP basic auth with the token
//!   as the password (the browser asks for it). `--read-only-token`
//!   (`JETQ_DASHBOARD_READ_ONLY_TOKEN`) is a second token with the read-only role: it sees every
//!   page and is refused every change. Without a token the dashboard only listens on a
//!   loopback address unless `--no-auth` is given.
//! - Changes (replay, discard, bulk jobs, pause, resume, release, cancel, schedule pause,
//!   resume and run) are `POST` only, need the
//!   token like everything else, and must carry the header `X-Jetq-Request: 1` (which a
//!   cross-site form cannot send) and, when the browser sends an `Origin`, come from the
//!   dashboard's own origin.
//! - `--read-only` makes every caller read-only: no buttons, every change refused with 403.
//! - Every change, and every refused one, is logged at info with who asked: the basic-auth user
//!   name and the token's role, or the remote address.

mod auth;
mod batches;
mod catalog;
mod dead;
mod history;
mod jobs;
mod limits;
mod page;
mod queues;
mod stored;
mod task_bulk;
mod tasks;

pub use auth::Role;
use auth::{guard, Caller};

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use axum::{
    extract::{ConnectInfo, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{
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
    /// A second token with the read-only role: every page, no change.
    pub read_only_token: Option<String>,
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
            read_only_token: None,
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
        if self.token.is_none()
            && self.read_only_token.is_none()
            && !self.listen.ip().is_loopback()
            && !self.allow_no_auth
        {
            return Err(AdminError::Invalid(format!(
                "refusing to serve the dashboard on {} without a token: it shows task payloads \
                 and can replay and delete dead letters. Set --token (or JETQ_DASHBOARD_TOKEN), \
                 listen on 127.0.0.1, or pass --no-auth if something in front of it \
                 authenticates",
                self.listen
            )));
        }
        if self.token.is_some() && self.token == self.read_only_token {
            return Err(AdminError::Invalid(
                "--token and --read-only-token must differ".into(),
            ));
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
    jobs: Arc<jobs::Jobs>,
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
                jobs: Arc::new(jobs::Jobs::default()),
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
        let result = axum::serve(
            self.listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
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
    let auth = config.token.is_some() || config.read_only_token.is_some();
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
        .route("/queues", get(queues::page))
        .route("/dead", get(dead::list_page))
        .route("/dead/{seq}", get(dead::detail_page))
        .route("/limits", get(limits::page))
        .route("/catalog", get(catalog::page))
        .route("/schedules", get(schedules_page))
        .route("/status", get(status_page))
        .route("/tasks", get(tasks::list_page))
        .route("/tasks/{id}", get(tasks::detail_page))
        .route("/workers", get(tasks::workers_page))
        .route("/history", get(history::page))
        .route("/api/history", get(history::api_history))
        .route("/batches", get(batches::list_page))
        .route("/batches/{id}", get(batches::detail_page))
        .route("/chains/{id}", get(batches::chain_page))
        .route("/api/batches", get(batches::api_list))
        .route("/api/batches/{id}", get(batches::api_one))
        .route("/api/chains", get(batches::api_chains))
        .route("/api/chains/{id}", get(batches::api_chain))
        .route("/api/tasks", get(tasks::api_list))
        .route("/api/tasks/{id}", get(tasks::api_one))
        .route("/api/tasks/{id}/cancel", post(tasks::api_cancel))
        .route("/api/tasks/count", get(task_bulk::api_count))
        .route("/api/tasks/bulk-cancel", post(task_bulk::api_bulk_cancel))
        .route("/api/workers", get(tasks::api_workers))
        .route(
            "/api/schedules/{name}/{action}",
            post(tasks::api_schedule_action),
        )
        .route("/api/overview", get(api_overview))
        .route("/api/queues", get(queues::api_queues))
        .route("/api/queues/{queue}/pause", post(queues::api_pause))
        .route("/api/queues/{queue}/resume", post(queues::api_resume))
        .route("/api/dead", get(dead::api_list))
        .route("/api/dead/count", get(dead::api_count))
        .route("/api/dead/bulk", post(dead::api_bulk))
        .route("/api/dead/{seq}", get(dead::api_one))
        .route("/api/dead/{seq}/replay", post(dead::api_replay))
        .route("/api/dead/{seq}/discard", post(dead::api_discard))
        .route("/api/jobs", get(jobs::api_list))
        .route("/api/jobs/{id}", get(jobs::api_one))
        .route("/api/schedules", get(api_schedules))
        .route("/api/status/{id}", get(api_status))
        .route("/api/catalog", get(catalog::api_catalog))
        .route("/api/limits", get(limits::api_limits))
        .route("/api/limits/release", post(limits::api_release))
        .route("/api/whoami", get(api_whoami))
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/static/console.css",
            get(|| async { page::asset("text/css; charset=utf-8", page::CSS) }),
        )
        .route(
            "/static/console.js",
            get(|| async { page::asset("text/javascript; charset=utf-8", page::JS) }),
        )
        .merge(protected)
        .with_state(state)
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

fn status_of(err: &AdminError) -> StatusCode {
    match err.kind() {
        ErrorKind::Usage => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::NotSupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Failed => StatusCode::BAD_GATEWAY,
    }
}

fn admin_error(err: AdminError) -> Response {
    error_response(status_of(&err), err.to_string())
}

/// The overview JSON the pages poll.
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

/// The layout's context for `page`: the dead-letter count comes from `overview`, the same
/// sample as the queue counts the page shows.
fn chrome(
    state: &AppState,
    caller: &Caller,
    page: &'static str,
    title: impl Into<String>,
    overview: &OverviewBody,
) -> page::Chrome {
    page::Chrome {
        page,
        title: title.into(),
        server_version: state.admin.server_version_text(),
        who: caller.user.as_ref().map(|_| caller.who()),
        can_act: caller.can_act(),
        dead_total: overview.overview.as_ref().map(|o| o.dead_total),
        nav: page::NAV,
        initial: serde_json::to_value(overview).ok(),
    }
}

async fn api_overview(State(state): State<AppState>) -> Response {
    Json(overview_body(&state).await).into_response()
}

async fn api_whoami(Extension(caller): Extension<Caller>) -> Response {
    Json(serde_json::json!({
        "user": caller.user,
        "role": caller.role,
        "can_act": caller.can_act(),
        "who": caller.who(),
    }))
    .into_response()
}

/// A queue's row as the overview and queues pages show it: the stats plus their texts.
fn queue_rows(overview: Option<&Overview>) -> Vec<serde_json::Value> {
    overview
        .map(|o| {
            o.queues
                .iter()
                .map(|q| {
                    let mut row = serde_json::to_value(q).unwrap_or_default();
                    if let Some(fields) = row.as_object_mut() {
                        fields.insert("state_text".into(), q.state().into());
                        fields.insert("pending_text".into(), q.pending_text().into());
                        fields.insert(
                            "rate_text".into(),
                            q.rate
                                .map_or_else(
                                    || "-".to_owned(),
                                    |r| crate::stats::format_rate(r.delivered_per_sec),
                                )
                                .into(),
                        );
                    }
                    row
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn index(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "overview", "Overview", &overview);
    page::respond(
        StatusCode::OK,
        "overview.html",
        &chrome,
        serde_json::json!({
            "overview": overview.overview,
            "overview_error": overview.error,
            "queues": queue_rows(overview.overview.as_ref()),
        }),
    )
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

async fn schedules_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "schedules", "Schedules", &overview);
    let loaded = load_schedules(&state).await;
    let (schedules, error) = match loaded {
        None => (Vec::new(), None),
        Some(Ok(views)) => (views, None),
        Some(Err(err)) => (Vec::new(), Some(err)),
    };
    page::respond(
        StatusCode::OK,
        "schedules.html",
        &chrome,
        serde_json::json!({
            "configured": state.config.schedules_file.is_some(),
            "schedules": schedules,
            "error": error,
        }),
    )
}

async fn api_status(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match state.admin.task_status(&id).await {
        Ok(status) => Json(status).into_response(),
        Err(err) => admin_error(err),
    }
}

/// Query of the status lookup.
#[derive(Debug, Deserialize)]
struct StatusQuery {
    id: Option<String>,
}

async fn status_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<StatusQuery>,
) -> Response {
    let id = query.id.unwrap_or_default();
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "status", format!("Task {id}"), &overview);
    match state.admin.task_status(&id).await {
        Ok(status) => {
            let optional = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
            let rows: Vec<(&str, String)> = vec![
                ("Queue", status.queue.clone()),
                ("Task", status.task.clone()),
                ("State", status.state.as_str().to_owned()),
                (
                    "Attempt",
                    match status.max_attempts {
                        Some(max) => format!("{} of {max}", status.attempt),
                        None => status.attempt.to_string(),
                    },
                ),
                ("Enqueued at", optional(&status.enqueued_at)),
                ("Started at", optional(&status.started_at)),
                ("Finished at", optional(&status.finished_at)),
                ("Next attempt at", optional(&status.next_attempt_at)),
                (
                    "Progress",
                    status.progress.as_ref().map_or_else(
                        || "-".into(),
                        |p| format!("{:.0}% {}", p.percent, p.message),
                    ),
                ),
                (
                    "Result",
                    status
                        .result
                        .as_ref()
                        .map_or_else(|| "-".into(), |r| r.to_string()),
                ),
                ("Error", optional(&status.error)),
            ];
            let mut rows: Vec<(String, String)> =
                rows.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            for artifact in &status.artifacts {
                rows.push((
                    "Artifact".into(),
                    format!("{} ({} bytes)", artifact.name, artifact.size),
                ));
            }
            page::respond(
                StatusCode::OK,
                "status.html",
                &chrome,
                serde_json::json!({ "status": status, "rows": rows }),
            )
        }
        Err(err) => page::message(
            if err.kind() == ErrorKind::NotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_GATEWAY
            },
            &chrome,
            &format!("Task {id}"),
            &err.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::auth::authorized;
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_and_basic_tokens_are_accepted() {
        assert_eq!(
            authorized(&with_auth("Bearer s3cret"), "s3cret").as_deref(),
            Some("bearer")
        );
        assert!(authorized(&with_auth("bearer s3cret"), "s3cret").is_some());
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:s3cret");
        assert_eq!(
            authorized(&with_auth(&format!("Basic {basic}")), "s3cret").as_deref(),
            Some("ops")
        );
        assert!(authorized(&with_auth("Bearer s3cre"), "s3cret").is_none());
        assert!(authorized(&with_auth("Bearer s3crett"), "s3cret").is_none());
        let wrong = base64::engine::general_purpose::STANDARD.encode("s3cret:nope");
        assert!(authorized(&with_auth(&format!("Basic {wrong}")), "s3cret").is_none());
        assert!(authorized(&HeaderMap::new(), "s3cret").is_none());
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
