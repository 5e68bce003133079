//! The worker: sends the welcome emails over SMTP and stores the CSV exports in the jetq
//! artifact store.
//!
//! Configuration: `JETQ_*` (connection and worker settings, see `jetq_consumer::WorkerSettings`),
//! `SMTP_HOST`/`SMTP_PORT`/`SMTP_FROM`/`SMTP_TIMEOUT` (default `127.0.0.1:2525`) and, for an
//! optional local copy of each export, `EXPORT_DIR` (unset by default). Stops gracefully on
//! SIGTERM or Ctrl-C.
//!
//! Telemetry (see docs/OBSERVABILITY.md): logs by `RUST_LOG`/`JETQ_LOG_FORMAT`, traces and
//! metrics over OTLP by the `OTEL_*` variables, `/healthz`, `/readyz` and `/metrics` on
//! `JETQ_HEALTH_LISTEN` (default `0.0.0.0:8459`).

use std::process::ExitCode;

use jetq_consumer::Worker;
use jetq_examples::worker::{build, WorkerConfig};
use jetq_telemetry::{Readiness, TelemetryGuard};

#[tokio::main]
async fn main() -> ExitCode {
    jetq_telemetry::run_main("jetq-worker", "worker", |telemetry| {
        Box::pin(run(telemetry))
    })
    .await
}

async fn run(telemetry: &TelemetryGuard) -> Result<(), String> {
    let mut config = WorkerConfig::from_env().map_err(|err| err.to_string())?;
    // The chunked export's assembler reads the chunks' results and enqueues the mail.
    let producer = jetq_producer::Producer::from_env()
        .map_err(|err| err.to_string())?
        .connect()
        .await
        .map_err(|err| format!("cannot connect the producer: {err}"))?;
    config.producer = Some(producer);
    tracing::info!(
        smtp = %format!("{}:{}", config.smtp.host, config.smtp.port),
        local_copy = ?config.exports.dir,
        "worker starting"
    );
    let builder = Worker::from_env().map_err(|err| err.to_string())?;
    let worker = build(builder, config)
        .build()
        .await
        .map_err(|err| format!("cannot start the worker: {err}"))?;
    let readiness = Readiness::new();
    let health = worker.health();
    readiness.add("worker", move || health.check());
    let health = telemetry
        .serve_health(readiness)
        .await
        .map_err(|err| err.to_string())?;
    worker.run().await;
    health.stop().await;
    Ok(())
}
