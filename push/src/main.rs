//! `jetq-push`: runs the tasks of the configured queues by POSTing them to HTTP endpoints.
//!
//! Configuration (docs/PUSH.md): the worker's `JETQ_*` variables (connection, streams,
//! `JETQ_CONCURRENCY`, `JETQ_QUEUES`, ...), the targets file named by `JETQ_PUSH_TARGETS_FILE`,
//! and `JETQ_PUSH_SIGNING_KEYS` (or `JETQ_PUSH_UNSIGNED=true`). Exits with status 1 and a
//! message naming the variable, or the target and field, at fault when the configuration is
//! unusable; otherwise runs until SIGTERM or SIGINT and shuts down gracefully.
//!
//! Telemetry (docs/OBSERVABILITY.md): logs by `RUST_LOG`/`JETQ_LOG_FORMAT`, traces and metrics
//! over OTLP by the `OTEL_*` variables, `/healthz`, `/readyz` and `/metrics` on
//! `JETQ_HEALTH_LISTEN` (default `0.0.0.0:8459`).

use std::process::ExitCode;

use jetq_telemetry::{Readiness, TelemetryGuard};

#[tokio::main]
async fn main() -> ExitCode {
    jetq_telemetry::run_main("jetq-push", "jetq-push", |telemetry| {
        Box::pin(run(telemetry))
    })
    .await
}

async fn run(telemetry: &TelemetryGuard) -> Result<(), String> {
    let worker = jetq_push::from_env()
        .map_err(|err| err.to_string())?
        .build()
        .await
        .map_err(|err| format!("cannot start the push worker: {err}"))?;
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
