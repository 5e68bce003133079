//! The relay (`jetq-relay`): publishes committed outbox rows to JetStream, exactly once.
//!
//! Runs as its own binary rather than inside `jetq-scheduler`: it is the only jetq component
//! that needs database credentials (a scheduler pod should not hold them), it scales with the
//! write rate of the application's database rather than with schedules, one relay deployment
//! serves one database (there may be several per NATS installation), and a relay outage or
//! database outage then never stops periodic tasks. See `docs/OUTBOX.md`.
//!
//! Several replicas run at once: each claims rows with `FOR UPDATE SKIP LOCKED`, so none
//! publishes a row another holds (`claim.rs`). It wakes on `LISTEN <table>` (the migration's
//! trigger notifies on commit) and polls as a fallback.

mod claim;
pub mod dead;
mod metrics;
pub mod row;
mod settings;
mod sql;

use std::{
    collections::HashSet,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_nats::connection::State;
use jetq_contract::{publish::Publisher, ConnectError, ConnectionConfig, StreamSettings, Subjects};
use sqlx::{
    postgres::{PgListener, PgPoolOptions},
    PgPool,
};
use tokio::sync::Notify;

pub use metrics::{DEAD_LETTERED, FAILURES, LAG, RELAYED};
pub use settings::RelaySettings;

use crate::{OutboxError, TableName};

/// Why the relay could not start. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The configuration, table name or database URL is unusable, or the table is missing.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// NATS could not be reached, or the server is too old.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The database could not be reached at startup.
    #[error(
        "cannot reach the database at JETQ_DATABASE_URL ({host}): {source}; check the URL, \
         the credentials and that PostgreSQL accepts connections"
    )]
    Database {
        /// Host and database, without credentials.
        host: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The task stream does not exist.
    #[error(
        "the task stream {stream} does not exist: run `jetq-provision` (or start a worker) first"
    )]
    NoTaskStream {
        /// The stream's name.
        stream: String,
    },
}

impl From<jetq_contract::ConfigError> for RelayError {
    fn from(err: jetq_contract::ConfigError) -> Self {
        RelayError::Outbox(OutboxError::Config(err))
    }
}

/// A failure of one relay cycle; the relay logs it, backs off and tries again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CycleError {
    #[error("database: {0}")]
    Database(sqlx::Error),
    #[error("NATS is not connected ({0:?})")]
    NatsDown(State),
    #[error("a claim took longer than {0:?} and was abandoned")]
    ClaimTimeout(Duration),
}

/// The relay. Build it with [`Relay::connect`] or [`Relay::from_env`], then [`Relay::run`].
#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    table: TableName,
    subjects: Subjects,
    client: async_nats::Client,
    publisher: Publisher,
    settings: RelaySettings,
    /// The task stream's duplicate window (the shorter of the task and delayed streams').
    window: Duration,
    /// Time allowed for a publish to reach the server and for clock differences between
    /// relays, taken off the window before an earlier attempt counts as too old.
    margin: Duration,
    streams: StreamSettings,
    metrics: metrics::RelayMetrics,
    wake: Arc<Notify>,
    database_ok: Arc<AtomicBool>,
    /// Rows whose publish was acknowledged but whose delete did not commit (the database went
    /// away): deleted before anything else, never published again by this relay.
    acked: Arc<Mutex<HashSet<i64>>>,
}

impl Relay {
    /// Reads `JETQ_*` (see [`RelaySettings`] and [`ConnectionConfig`]) and connects.
    pub async fn from_env() -> Result<Relay, RelayError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let connection = ConnectionConfig::from_env_iter(vars.clone())?;
        let settings = RelaySettings::from_env_iter(vars)?;
        Relay::connect(connection, settings).await
    }

    /// Checks the configuration, connects to NATS and the database, and checks that the
    /// outbox table and the task stream exist.
    pub async fn connect(
        connection: ConnectionConfig,
        settings: RelaySettings,
    ) -> Result<Relay, RelayError> {
        settings.validate()?;
        connection.validate()?;
        let table = settings.table()?;
        let subjects = connection.subjects()?;
        let pool = connect_database(&settings).await?;
        check_table(&pool, &table).await?;

        let client = jetq_contract::connect(&connection, "jetq-relay").await?;
        let js = jetq_contract::jetstream(client.clone(), &connection);
        let tasks_stream = subjects.tasks_stream();
        let mut window = match js.get_stream(&tasks_stream).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => info.config.duplicate_window,
                Err(_) => StreamSettings::default().duplicate_window,
            },
            Err(_) => {
                return Err(RelayError::NoTaskStream {
                    stream: tasks_stream,
                })
            }
        };
        if let Ok(mut delayed) = js.get_stream(subjects.delayed_stream()).await {
            if let Ok(info) = delayed.info().await {
                window = window.min(info.config.duplicate_window);
            }
        }
        let streams = StreamSettings {
            duplicate_window: window,
            ..StreamSettings::default()
        };
        let margin = connection.request_timeout * settings.relay_publish_attempts.max(1)
            + Duration::from_secs(1);
        let publisher = Publisher::new(js, settings.relay_publish_attempts);
        let metrics = metrics::RelayMetrics::new(&metrics::meter(), table.as_str());
        tracing::info!(
            table = %table, duplicate_window = ?window, batch = settings.relay_batch_size,
            "jetq-relay connected"
        );
        Ok(Relay {
            pool,
            table,
            subjects,
            client,
            publisher,
            settings,
            window,
            margin,
            streams,
            metrics,
            wake: Arc::new(Notify::new()),
            database_ok: Arc::new(AtomicBool::new(true)),
            acked: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The NATS client (for readiness checks).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// True while the last database statement succeeded (for readiness checks).
    pub fn database_ok(&self) -> bool {
        self.database_ok.load(Ordering::Relaxed)
    }

    /// The duplicate window the relay relies on.
    pub fn duplicate_window(&self) -> Duration {
        self.window
    }

    /// The age in seconds of the oldest unrelayed row when last measured.
    pub fn lag(&self) -> f64 {
        self.metrics.lag()
    }

    /// Relays until `shutdown` completes; a claim in progress finishes first. Failures (NATS
    /// or the database away) are logged and retried with backoff: the relay never stops on
    /// its own.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let listener = tokio::spawn(listen(
            self.pool.clone(),
            self.table.clone(),
            Arc::clone(&self.wake),
        ));
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        let mut last_lag = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            let outcome = self.cycle().await;
            if matches!(&outcome, Ok(claimed) if claimed.no_delayed_stream) {
                self.ensure_delayed_stream().await;
            }
            if last_lag.elapsed() >= Duration::from_secs(1) {
                self.measure_lag().await;
                last_lag = tokio::time::Instant::now();
            }
            let pause = match outcome {
                Ok(claimed) if claimed.marked >= self.settings.relay_batch_size => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(claimed) if claimed.failed > 0 => {
                    failures += 1;
                    backoff(failures)
                }
                Ok(_) => {
                    failures = 0;
                    self.settings.relay_poll_interval
                }
                Err(err) => {
                    failures += 1;
                    tracing::warn!(error = %err, "relay cycle failed; retrying");
                    self.metrics.failed(match err {
                        CycleError::Database(_) => "database",
                        CycleError::NatsDown(_) => "not_connected",
                        CycleError::ClaimTimeout(_) => "claim_timeout",
                    });
                    backoff(failures)
                }
            };
            if pause.is_zero() {
                // More rows are waiting: go on, unless asked to stop.
                if futures::FutureExt::now_or_never(&mut shutdown).is_some() {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.wake.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        listener.abort();
    }

    /// One cycle: deletes rows acknowledged earlier, then one claim.
    async fn cycle(&self) -> Result<claim::Claimed, CycleError> {
        let state = self.client.connection_state();
        if state != State::Connected {
            return Err(CycleError::NatsDown(state));
        }
        let result = async {
            self.delete_acked().await?;
            self.claim().await
        }
        .await;
        let db_down = matches!(result, Err(CycleError::Database(_)));
        self.database_ok.store(!db_down, Ordering::Relaxed);
        result
    }

    fn remember_acked(&self, ids: &[i64]) {
        if let Ok(mut acked) = self.acked.lock() {
            acked.extend(ids.iter().copied());
        }
    }

    async fn delete_acked(&self) -> Result<(), CycleError> {
        let ids: Vec<i64> = match self.acked.lock() {
            Ok(acked) if !acked.is_empty() => acked.iter().copied().collect(),
            _ => return Ok(()),
        };
        sqlx::query(&sql::delete(&self.table))
            .bind(&ids)
            .execute(&self.pool)
            .await
            .map_err(CycleError::Database)?;
        if let Ok(mut acked) = self.acked.lock() {
            for id in ids {
                acked.remove(&id);
            }
        }
        Ok(())
    }

    async fn measure_lag(&self) {
        let lag: Result<Option<f64>, _> = sqlx::query_scalar(&sql::lag(&self.table))
            .fetch_optional(&self.pool)
            .await;
        if let Ok(lag) = lag {
            self.metrics.set_lag(lag.unwrap_or(0.0));
        }
    }

    async fn ensure_delayed_stream(&self) {
        let js = self.publisher.jetstream();
        let ensure =
            jetq_contract::delayed::ensure_delayed_stream(js, &self.subjects, &self.streams);
        match tokio::time::timeout(Duration::from_secs(10), ensure).await {
            Ok(Ok(())) => tracing::info!("created the delayed-task stream"),
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot create the delayed-task stream"),
            Err(_) => tracing::warn!("creating the delayed-task stream timed out"),
        }
    }
}

/// 200 ms doubling to 10 s, ±20 %.
fn backoff(failures: u32) -> Duration {
    let base = 200u64 << failures.saturating_sub(1).min(6);
    let base = base.min(10_000) as f64;
    let jitter = rand::random_range(0.8..1.2);
    Duration::from_millis((base * jitter) as u64)
}

/// A database pool whose sessions cannot hold a claim's locks longer than the claim timeout:
/// the server ends a session idle in a transaction after it (a hung relay), and every
/// statement is bounded by it.
async fn connect_database(settings: &RelaySettings) -> Result<PgPool, RelayError> {
    let options = settings.connect_options()?;
    let host = format!(
        "host {}, database {}",
        options.get_host(),
        options.get_database().unwrap_or("(default)")
    );
    let timeout_ms = settings.relay_claim_timeout.as_millis().to_string();
    let options = options.application_name("jetq-relay").options([
        ("idle_in_transaction_session_timeout", timeout_ms.as_str()),
        ("statement_timeout", timeout_ms.as_str()),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options);
    // A bad password or database name fails at once; an unreachable server is retried for a
    // while (a relay may start before its database in a fresh deployment).
    let mut attempt = 0;
    loop {
        match sqlx::query("SELECT 1").execute(&pool).await {
            Ok(_) => return Ok(pool),
            Err(err) => {
                attempt += 1;
                let permanent = err.as_database_error().is_some();
                if permanent || attempt >= 10 {
                    return Err(RelayError::Database { host, source: err });
                }
                tracing::warn!(error = %err, %host, "database not reachable yet; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

async fn check_table(pool: &PgPool, table: &TableName) -> Result<(), RelayError> {
    let found: Option<String> = sqlx::query_scalar(sql::TABLE_EXISTS)
        .bind(table.as_str())
        .fetch_one(pool)
        .await
        .map_err(|source| RelayError::Database {
            host: "(table check)".into(),
            source,
        })?;
    match found {
        Some(_) => Ok(()),
        None => Err(OutboxError::MissingTable {
            table: table.as_str().to_owned(),
        }
        .into()),
    }
}

/// Wakes the relay on every `NOTIFY <table>` (sent by the table's trigger on commit),
/// reconnecting after a lost connection. Missed notifications only delay rows until the next
/// poll.
async fn listen(pool: PgPool, table: TableName, wake: Arc<Notify>) {
    let mut failures = 0;
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(table.as_str()).await {
                Ok(()) => {
                    failures = 0;
                    // The connection may have been down: look at once.
                    wake.notify_one();
                    loop {
                        match listener.recv().await {
                            Ok(_) => wake.notify_one(),
                            Err(err) => {
                                tracing::debug!(error = %err, "LISTEN connection lost");
                                break;
                            }
                        }
                    }
                }
                Err(err) => tracing::debug!(error = %err, "LISTEN failed"),
            },
            Err(err) => tracing::debug!(error = %err, "LISTEN connection failed"),
        }
        failures += 1;
        tokio::time::sleep(backoff(failures)).await;
    }
}
