//! Shared fixtures of the outbox tests: a real nats-server and a real PostgreSQL (each test
//! starts its own), the migrated outbox table, relays in this process or as `jetq-relay`
//! processes, and readers of what reached the task stream.

#![allow(dead_code, unreachable_pub)]

use std::{collections::HashMap, process::Stdio, time::Duration};

use async_nats::jetstream;
use jetq_contract::{ConnectionConfig, StreamSettings, Subjects, Topology};
use jetq_harness::postgres::PostgresServer;
use jetq_outbox::{
    relay::{Relay, RelaySettings},
    Outbox, TableName,
};
use jetq_producer::EnqueueOptions;
pub use jetq_tests::{eventually, within, Job, NatsServer, WAIT};
use sqlx::{postgres::PgPoolOptions, PgPool};

/// A nats-server with the jetq streams, and a PostgreSQL with the outbox table.
pub struct Env {
    pub nats: NatsServer,
    pub pg: PostgresServer,
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub outbox: Outbox,
}

impl Env {
    /// Both servers, the streams (with `window` as the duplicate window) and the table.
    pub async fn start(window: Duration) -> Env {
        Env::start_with(window, NatsServer::builder()).await
    }

    /// [`Env::start`] with a nats-server built by `nats` (e.g. a small `max_payload`).
    pub async fn start_with(window: Duration, nats: jetq_harness::ServerBuilder) -> Env {
        jetq_tests::init_logs();
        let (nats, pg) = tokio::join!(nats.start(), PostgresServer::start());
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&pg.url())
            .await
            .expect("test pool connects");
        jetq_outbox::migrate(&pool, &TableName::default())
            .await
            .expect("migration runs");
        let js = jetq_tests::raw_jetstream(&nats).await;
        let settings = StreamSettings {
            duplicate_window: window,
            ..StreamSettings::default()
        };
        Topology::new(js.clone(), Subjects::default(), settings)
            .ensure_streams()
            .await
            .expect("streams provisioned");
        Env {
            nats,
            pg,
            pool,
            js,
            outbox: Outbox::new(),
        }
    }

    pub fn connection(&self) -> ConnectionConfig {
        ConnectionConfig {
            request_timeout: Duration::from_millis(1500),
            ..ConnectionConfig::with_url(self.nats.url())
        }
    }

    pub fn relay_settings(&self) -> RelaySettings {
        RelaySettings {
            relay_poll_interval: Duration::from_millis(500),
            relay_claim_timeout: Duration::from_secs(10),
            ..RelaySettings::new(self.pg.url())
        }
    }

    /// A relay running in this process until the returned handle is stopped or dropped.
    pub async fn relay(&self) -> RunningRelay {
        self.relay_with(self.relay_settings()).await
    }

    pub async fn relay_with(&self, settings: RelaySettings) -> RunningRelay {
        let relay = Relay::connect(self.connection(), settings)
            .await
            .expect("relay starts");
        RunningRelay::spawn(relay)
    }

    /// The environment a `jetq-relay` process runs with.
    pub fn relay_env(&self) -> Vec<(String, String)> {
        vec![
            ("JETQ_NATS_URL".into(), self.nats.url()),
            ("JETQ_DATABASE_URL".into(), self.pg.url()),
            ("JETQ_REQUEST_TIMEOUT".into(), "1500ms".into()),
            ("JETQ_RELAY_POLL_INTERVAL".into(), "300ms".into()),
            ("JETQ_RELAY_CLAIM_TIMEOUT".into(), "10s".into()),
            ("JETQ_HEALTH_LISTEN".into(), "127.0.0.1:0".into()),
            ("RUST_LOG".into(), "warn".into()),
        ]
    }

    /// Writes `count` jobs (`n` = start..start+count, key `<prefix>-<n>`) in one committed
    /// transaction per job.
    pub async fn write_jobs(&self, prefix: &str, start: u64, count: u64) {
        for n in start..start + count {
            let mut tx = self.pool.begin().await.expect("begin");
            self.outbox
                .enqueue_with(
                    &mut tx,
                    &Job {
                        n,
                        note: String::new(),
                    },
                    EnqueueOptions::new().key(format!("{prefix}-{n}")),
                )
                .await
                .expect("outbox write");
            tx.commit().await.expect("commit");
        }
    }

    /// Rows left in the outbox table.
    pub async fn rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM jetq_outbox")
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// How many messages the task stream holds per `Nats-Msg-Id`.
    pub async fn stream_ids(&self) -> HashMap<String, usize> {
        let messages =
            jetq_tests::stream_messages(&self.js, &Subjects::default().tasks_stream()).await;
        let mut ids = HashMap::new();
        for message in messages {
            let id = jetq_tests::header(&message, "Nats-Msg-Id").unwrap_or_default();
            *ids.entry(id).or_insert(0) += 1;
        }
        ids
    }

    /// Waits until the table is empty and the task stream holds `count` messages.
    pub async fn until_relayed(&self, count: usize, timeout: Duration) {
        eventually(timeout, &format!("{count} tasks relayed"), || async {
            let rows = self.rows().await;
            let len = jetq_tests::stream_len(&self.js, &Subjects::default().tasks_stream()).await;
            (rows == 0 && len as usize >= count).then_some(())
        })
        .await;
    }
}

/// A relay running in a task of the test's runtime.
pub struct RunningRelay {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl RunningRelay {
    pub fn spawn(relay: Relay) -> RunningRelay {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            relay
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        RunningRelay {
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            within(WAIT, "the relay to stop", handle)
                .await
                .expect("relay task ends without panicking");
        }
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// A `jetq-relay` process.
pub fn spawn_relay_process(env: &[(String, String)]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_jetq-relay"))
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("jetq-relay starts")
}

/// Runs `jetq-relay` with `args` to completion: (exit code, stderr).
pub async fn run_relay_command(env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetq-relay"))
        .args(args)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .output();
    let output = within(Duration::from_secs(60), "jetq-relay to exit", output)
        .await
        .expect("jetq-relay runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
