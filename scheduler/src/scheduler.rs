//! The [`Scheduler`]: runs every schedule of the schedules file and releases delayed tasks,
//! reloading the file when it changes (or on SIGHUP) without a restart.

use std::{collections::HashMap, future::Future, path::PathBuf, sync::Arc, time::Duration};

use async_nats::jetstream;
use jetq_contract::{
    publish::{self, Publisher},
    ConnectionConfig, StreamSettings, Subjects, Topology,
};
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    error::SchedulerError,
    file::{Schedule, Schedules},
    metrics::SchedulerMetrics,
    periodic::{self, Shared},
    release::Releaser,
    settings::SchedulerSettings,
    state::{self, State},
};

/// How long running schedule steps get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Builds a [`Scheduler`]; every setting has a default.
///
/// ```no_run
/// # async fn run() -> Result<(), jetq_scheduler::SchedulerError> {
/// let scheduler = jetq_scheduler::Scheduler::builder()
///     .url("nats://127.0.0.1:4222")
///     .schedules_file("/etc/jetq/schedules.yaml")
///     .build()
///     .await?;
/// scheduler.run().await; // until SIGTERM or SIGINT
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SchedulerBuilder {
    connection: ConnectionConfig,
    streams: StreamSettings,
    settings: SchedulerSettings,
    client: Option<async_nats::Client>,
    schedules: Option<Schedules>,
    meter: Option<opentelemetry::metrics::Meter>,
}

impl SchedulerBuilder {
    /// Server URL(s), comma separated.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.connection.nats_url = url.into();
        self
    }

    /// The whole connection configuration.
    pub fn connection(mut self, connection: ConnectionConfig) -> Self {
        self.connection = connection;
        self
    }

    /// Stream settings used when provisioning (and whose duplicate window bounds the grace).
    pub fn streams(mut self, streams: StreamSettings) -> Self {
        self.streams = streams;
        self
    }

    /// All scheduler settings at once.
    pub fn settings(mut self, settings: SchedulerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The schedules file (YAML), watched for changes.
    pub fn schedules_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.schedules_file = Some(path.into());
        self
    }

    /// Schedules given in code instead of a file (not reloaded).
    pub fn schedules(mut self, schedules: Schedules) -> Self {
        self.schedules = Some(schedules);
        self
    }

    /// How often the schedules file is checked for changes (default 2 s).
    pub fn schedules_poll(mut self, every: Duration) -> Self {
        self.settings.schedules_poll = every;
        self
    }

    /// How late a fire may be and still count as on time (default 10 s).
    pub fn misfire_grace(mut self, grace: Duration) -> Self {
        self.settings.misfire_grace = grace;
        self
    }

    /// Whether this scheduler creates the streams and its state bucket at startup (default
    /// true). Off, they must exist (see [`provision`]).
    pub fn provision(mut self, provision: bool) -> Self {
        self.settings.provision = provision;
        self
    }

    /// Whether this scheduler releases delayed tasks (default true).
    pub fn release_delayed(mut self, release: bool) -> Self {
        self.settings.release_delayed = release;
        self
    }

    /// The OpenTelemetry meter the scheduler's metrics are recorded with (default: the global
    /// meter provider's `jetq-scheduler` meter, as it is when `build` is called).
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Uses an existing client instead of connecting (its server version is still checked).
    pub fn client(mut self, client: async_nats::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Validates the settings and the schedules file, connects, and provisions the task and
    /// delayed-task streams and the state bucket (or, with provisioning off, opens them).
    pub async fn build(self) -> Result<Scheduler, SchedulerError> {
        self.connection.validate()?;
        self.streams.validate()?;
        self.settings
            .validate(Some(self.streams.duplicate_window))?;
        let (schedules, file_text) = match (&self.schedules, &self.settings.schedules_file) {
            (Some(schedules), _) => (schedules.clone(), None),
            (None, Some(path)) => {
                let text = crate::file::read(path)?;
                let schedules = Schedules::from_yaml(&text, path)?;
                warn_if_empty(&schedules, path);
                (schedules, Some(text))
            }
            (None, None) => (Schedules::empty(), None),
        };
        let subjects = self.connection.subjects()?;
        let client = jetq_contract::bootstrap::connect_or_adopt(
            &self.connection,
            self.client,
            "jetq-scheduler",
        )
        .await?;
        let js = jetq_contract::jetstream(client, &self.connection);
        let kv = if self.settings.provision {
            let topology = Topology::new(js.clone(), subjects.clone(), self.streams.clone());
            provision_with(&topology).await?;
            state::ensure_bucket(&topology).await?
        } else {
            state::open_bucket(&js, &subjects).await?
        };
        check_clock(&kv).await;
        let delayed_stream = js
            .get_stream(subjects.delayed_stream())
            .await
            .map_err(|err| jetq_contract::ProvisionError::Missing {
                name: format!("stream {}", subjects.delayed_stream()),
                source: Box::new(err),
            })?;
        let meter = self.meter.unwrap_or_else(crate::metrics::meter);
        Ok(Scheduler {
            js,
            subjects,
            metrics: SchedulerMetrics::new(&meter),
            settings: self.settings,
            state: State::new(kv),
            delayed_stream,
            schedules,
            fixed: self.schedules.is_some(),
            file_text,
            reload: Arc::new(Notify::new()),
            publish_budget: self.connection.request_timeout * publish::DEFAULT_MAX_SENDS,
        })
    }
}

/// Creates what a scheduler uses on the server where it is missing: the task stream, the
/// delayed-task stream and the `JETQ_SCHEDULER` state bucket. Existing ones are compared and
/// left unchanged (differences are logged); [`provision_with`] a reconciling
/// [`Topology`] updates them instead. A scheduler does this itself at startup unless
/// `JETQ_PROVISION=false`; deployments with least-privilege NATS users run it once as the
/// admin user (`jetq-provision` does) and give the scheduler its own user.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use jetq_scheduler::contract::{ConnectionConfig, StreamSettings};
/// let connection = ConnectionConfig::with_url("nats://127.0.0.1:4222");
/// let client = jetq_scheduler::contract::connect(&connection, "provision").await?;
/// let js = jetq_scheduler::contract::jetstream(client, &connection);
/// jetq_scheduler::provision(&js, &connection.subjects()?, &StreamSettings::default()).await?;
/// # Ok(()) }
/// ```
pub async fn provision(
    js: &jetstream::Context,
    subjects: &Subjects,
    streams: &StreamSettings,
) -> Result<(), jetq_contract::ProvisionError> {
    provision_with(&Topology::new(
        js.clone(),
        subjects.clone(),
        streams.clone(),
    ))
    .await
}

/// [`provision`] with the given topology: `jetq-provision` passes a
/// [`Topology::reconciling`] one, so existing streams and the bucket take its settings.
pub async fn provision_with(topology: &Topology) -> Result<(), jetq_contract::ProvisionError> {
    topology.ensure_tasks_stream().await?;
    topology.ensure_delayed_stream().await?;
    state::ensure_bucket(topology).await?;
    Ok(())
}

/// Asks a running [`Scheduler`] to re-read its schedules file now (as SIGHUP does).
#[derive(Debug, Clone)]
pub struct ReloadHandle(Arc<Notify>);

impl ReloadHandle {
    /// Triggers a reload.
    pub fn reload(&self) {
        self.0.notify_one();
    }
}

/// Runs periodic schedules and releases delayed tasks. Run as many replicas as you like: every
/// fire and every released task is published with a deterministic `Nats-Msg-Id`, so the task
/// stream keeps one copy (see `docs/SCHEDULER.md` for the guarantees).
pub struct Scheduler {
    js: jetstream::Context,
    subjects: Subjects,
    metrics: SchedulerMetrics,
    settings: SchedulerSettings,
    state: State,
    delayed_stream: jetstream::stream::Stream,
    schedules: Schedules,
    fixed: bool,
    file_text: Option<String>,
    reload: Arc<Notify>,
    /// How long a fire or release may resend while no stream leader answers (an election):
    /// the request timeout × the sends allowed, as the producer's.
    publish_budget: std::time::Duration,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("prefix", &self.subjects.prefix())
            .field("settings", &self.settings)
            .field("schedules", &self.schedules.len())
            .finish()
    }
}

impl Scheduler {
    /// A builder with defaults.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder::default()
    }

    /// Builds a scheduler from `JETQ_*` environment variables (see [`SchedulerSettings`] and
    /// `jetq_contract::ConnectionConfig`).
    pub async fn from_env() -> Result<Scheduler, SchedulerError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Scheduler::builder()
            .connection(ConnectionConfig::from_env_iter(vars.clone())?)
            .streams(StreamSettings::from_env_iter(vars.clone())?)
            .settings(SchedulerSettings::from_env_iter(vars)?)
            .build()
            .await
    }

    /// The schedules loaded at build time.
    pub fn schedules(&self) -> &Schedules {
        &self.schedules
    }

    /// A handle that triggers a reload of the schedules file.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(self.reload.clone())
    }

    /// The NATS client, e.g. for a readiness probe on the connection state.
    pub fn client(&self) -> async_nats::Client {
        self.js.client()
    }

    /// Runs until SIGTERM or SIGINT.
    pub async fn run(self) {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `shutdown` completes. Dropping the returned future stops everything at once
    /// (all work is owned by it), as a crash would.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let cancel = CancellationToken::new();
        let mut background = JoinSet::new();
        if self.settings.release_delayed {
            let releaser = Releaser {
                subjects: self.subjects.clone(),
                stream: self.delayed_stream.clone(),
                publisher: Publisher::new(self.js.clone(), publish::DEFAULT_MAX_SENDS)
                    .retry_budget(self.publish_budget),
                state: self.state.clone(),
                lookback: self.settings.delayed_lookback,
                window: self.settings.release_window,
            };
            background.spawn(releaser.run(cancel.child_token()));
        }
        let controls = crate::control::Controls::default();
        let shared = Shared {
            subjects: self.subjects.clone(),
            publisher: Publisher::new(self.js.clone(), publish::DEFAULT_MAX_SENDS)
                .retry_budget(self.publish_budget),
            state: self.state.clone(),
            grace: self.settings.misfire_grace,
            metrics: self.metrics.clone(),
            controls: controls.clone(),
        };
        // Runtime pauses and run-now requests (PROTOCOL §7), watched in the state bucket.
        background.spawn(
            controls
                .clone()
                .watch_controls(self.state.store().clone(), cancel.child_token()),
        );
        background.spawn(controls.clone().watch_runs(
            self.state.store().clone(),
            self.subjects.clone(),
            shared.publisher.clone(),
            cancel.child_token(),
        ));
        let mut runners = Runners {
            shared,
            cancel: cancel.clone(),
            running: HashMap::new(),
            tasks: JoinSet::new(),
        };
        runners.apply(&self.schedules);
        tracing::info!(
            schedules = self.schedules.len(),
            release_delayed = self.settings.release_delayed,
            "scheduler running"
        );

        let file = if self.fixed {
            None
        } else {
            self.settings.schedules_file.clone()
        };
        let mut last_text = self.file_text.clone();
        let mut poll = tokio::time::interval(self.settings.schedules_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hangup = Hangup::new();
        tokio::pin!(shutdown);
        loop {
            let forced = tokio::select! {
                _ = &mut shutdown => break,
                _ = poll.tick() => false,
                _ = hangup.recv() => true,
                _ = self.reload.notified() => true,
                Some(joined) = runners.tasks.join_next() => {
                    if let Err(err) = joined {
                        if err.is_panic() {
                            tracing::error!(error = %err, "a schedule runner panicked");
                        }
                    }
                    continue;
                }
            };
            let Some(path) = &file else { continue };
            match crate::file::read(path) {
                Ok(text) => {
                    if !forced && last_text.as_deref() == Some(text.as_str()) {
                        continue;
                    }
                    match Schedules::from_yaml(&text, path) {
                        Ok(schedules) => {
                            warn_if_empty(&schedules, path);
                            let changed = runners.apply(&schedules);
                            tracing::info!(
                                schedules = schedules.len(),
                                changed,
                                "schedules file reloaded"
                            );
                        }
                        Err(err) => tracing::error!(
                            error = %err,
                            "schedules file rejected; keeping the previous schedules"
                        ),
                    }
                    last_text = Some(text);
                }
                Err(err) => {
                    if forced || last_text.is_some() {
                        tracing::error!(error = %err, "cannot read the schedules file; keeping the previous schedules");
                    }
                    last_text = None;
                }
            }
        }
        tracing::info!("scheduler stopping");
        cancel.cancel();
        let drain = async {
            while runners.tasks.join_next().await.is_some() {}
            while background.join_next().await.is_some() {}
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("scheduler tasks did not stop in time; aborting them");
        }
    }
}

/// A schedules file that parses but holds no schedules is accepted (a scheduler may be there
/// only to release delayed tasks), but it is more often a mistake — a ConfigMap emptied by a bad
/// template, every entry commented out — so it is a warning at startup and at each reload.
fn warn_if_empty(schedules: &Schedules, path: &std::path::Path) {
    if let Some(warning) = crate::file::empty_file_warning(schedules, path) {
        tracing::warn!(file = %path.display(), "{warning}");
    }
}

/// The running schedule tasks, by name.
struct Runners {
    shared: Shared,
    cancel: CancellationToken,
    running: HashMap<String, (Arc<Schedule>, CancellationToken)>,
    tasks: JoinSet<()>,
}

impl Runners {
    /// Stops removed and changed schedules and starts new and changed ones; returns how many
    /// changed.
    fn apply(&mut self, schedules: &Schedules) -> usize {
        let mut changed = 0;
        self.running.retain(|name, (schedule, token)| {
            let keep = schedules.get(name).is_some_and(|new| **new == **schedule);
            if !keep {
                token.cancel();
                changed += 1;
            }
            keep
        });
        for schedule in schedules.iter() {
            if self.running.contains_key(&schedule.name) {
                continue;
            }
            let token = self.cancel.child_token();
            self.tasks.spawn(periodic::run(
                schedule.clone(),
                self.shared.clone(),
                token.clone(),
            ));
            self.running
                .insert(schedule.name.clone(), (schedule.clone(), token));
            changed += 1;
        }
        self.shared
            .controls
            .set_schedules(self.running.values().map(|(schedule, _)| schedule));
        changed
    }
}

/// Warns when this host's clock is more than a second off the server's: every replica fires by
/// its own clock.
async fn check_clock(kv: &jetstream::kv::Store) {
    let key = "clock-check";
    let sent = time::OffsetDateTime::now_utc();
    if kv.put(key, "".into()).await.is_err() {
        return;
    }
    if let Ok(Some(entry)) = kv.entry(key).await {
        let received = time::OffsetDateTime::now_utc();
        let midpoint = sent + (received - sent) / 2;
        let difference: time::Duration = entry.created - midpoint;
        let skew = difference.abs();
        if skew > time::Duration::seconds(1) {
            tracing::warn!(
                skew_ms = skew.whole_milliseconds() as i64,
                "this host's clock differs from the NATS server's by more than a second; \
                 fires and delayed tasks follow this host's clock"
            );
        }
    }
}

/// Waits for SIGHUP where there is one.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Self {
        Hangup {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// Completes on SIGTERM or SIGINT: the contract's, shared by every jetq component.
pub use jetq_contract::bootstrap::shutdown_signal;
