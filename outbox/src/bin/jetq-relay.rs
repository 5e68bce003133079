//! `jetq-relay`: publishes the rows of the transactional outbox table to JetStream.
//!
//! ```text
//! jetq-relay            run until SIGTERM/SIGINT
//! jetq-relay migrate    create the outbox table (idempotent) and exit
//! ```
//!
//! Configuration from `JETQ_*` (docs/OUTBOX.md): `JETQ_DATABASE_URL` (required),
//! `JETQ_OUTBOX_TABLE`, `JETQ_RELAY_BATCH_SIZE`, `JETQ_RELAY_POLL_INTERVAL`,
//! `JETQ_RELAY_CLAIM_TIMEOUT`, plus `JETQ_NATS_URL` and the other connection variables. An
//! unusable configuration, an unreachable database or a missing table exits with status 1 and a
//! message saying what to fix. Telemetry as every jetq binary: logs by `RUST_LOG`, OTLP by
//! `OTEL_*`, `/healthz`, `/readyz` (NATS connected, database reachable) and `/metrics` on
//! `JETQ_HEALTH_LISTEN`.

use std::process::ExitCode;

use jetq_outbox::relay::{Relay, RelaySettings};
use jetq_telemetry::{Readiness, TelemetryGuard};

#[tokio::main]
async fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    match command.as_deref() {
        None | Some("run") => {
            jetq_telemetry::run_main("jetq-relay", "jetq-relay", |telemetry| {
                Box::pin(run(telemetry))
            })
            .await
        }
        Some("migrate") => {
            jetq_telemetry::run_main("jetq-relay", "jetq-relay migrate", |_| Box::pin(migrate()))
                .await
        }
        Some("-h" | "--help" | "help") => {
            println!(
                "usage: jetq-relay [run | migrate]\n\nSee docs/OUTBOX.md for the JETQ_* variables."
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("jetq-relay: unknown command {other:?}; usage: jetq-relay [run | migrate]");
            ExitCode::from(2)
        }
    }
}

async fn migrate() -> Result<(), String> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let settings = RelaySettings::from_env_iter(vars).map_err(|err| err.to_string())?;
    let table = settings.table().map_err(|err| err.to_string())?;
    let options = settings.connect_options().map_err(|err| err.to_string())?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|err| format!("cannot connect to JETQ_DATABASE_URL: {err}"))?;
    jetq_outbox::migrate(&pool, &table)
        .await
        .map_err(|err| err.to_string())?;
    tracing::info!(%table, "outbox table ready");
    Ok(())
}

async fn run(telemetry: &TelemetryGuard) -> Result<(), String> {
    let relay = Relay::from_env().await.map_err(|err| err.to_string())?;
    let readiness = Readiness::new();
    let client = relay.client().clone();
    readiness.add("nats", move || match client.connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        state => Err(format!("NATS connection is {state:?}")),
    });
    let database = relay.clone();
    readiness.add("database", move || {
        if database.database_ok() {
            Ok(())
        } else {
            Err("the last database statement failed".to_owned())
        }
    });
    let health = telemetry
        .serve_health(readiness)
        .await
        .map_err(|err| err.to_string())?;
    relay.run(jetq_contract::bootstrap::shutdown_signal()).await;
    health.stop().await;
    Ok(())
}
