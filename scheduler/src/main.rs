//! `jetq-scheduler`: periodic tasks and delayed-task release, configured from `JETQ_*`
//! environment variables and the YAML file named by `JETQ_SCHEDULES_FILE`.
//!
//! Exits with status 1 and a message naming the variable, schedule or field at fault when the
//! configuration is unusable; otherwise runs until SIGTERM or SIGINT. SIGHUP reloads the
//! schedules file.
//!
//! Telemetry (docs/OBSERVABILITY.md): logs by `RUST_LOG`/`JETQ_LOG_FORMAT`, traces and metrics
//! over OTLP by the `OTEL_*` variables (each fire is a root span `schedule <name>`), and
//! `/healthz`, `/readyz` (NATS connected) and `/metrics` on `JETQ_HEALTH_LISTEN`
//! (default `0.0.0.0:8459`).

use std::process::ExitCode;

use jetq_scheduler::Scheduler;
use jetq_telemetry::{Readiness, TelemetryGuard};

#[tokio::main]
async fn main() -> ExitCode {
    jetq_telemetry::run_main("jetq-scheduler", "jetq-scheduler", |telemetry| {
        Box::pin(run(telemetry))
    })
    .await
}

async fn run(telemetry: &TelemetryGuard) -> Result<(), String> {
    let scheduler = Scheduler::from_env().await.map_err(|err| err.to_string())?;
    let client = scheduler.client();
    let readiness = Readiness::new();
    readiness.add("nats", move || match client.connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        state => Err(format!("NATS connection is {state:?}")),
    });
    let health = telemetry
        .serve_health(readiness)
        .await
        .map_err(|err| err.to_string())?;
    scheduler.run().await;
    health.stop().await;
    Ok(())
}
