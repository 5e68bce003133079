//! The web app: `POST /signup` and `POST /exports` enqueue tasks and answer 202 at once;
//! `GET /exports/{id}` (and its `/events` stream and `/page`) follows an export, `GET
//! /exports/{id}/csv` streams the finished CSV from the artifact store, `DELETE /exports/{id}`
//! cancels it.
//!
//! Configuration: `JETQ_*` (see `jetq_contract::ConnectionConfig`) and `WEB_LISTEN`
//! (default `127.0.0.1:3000`). Stops on SIGTERM or Ctrl-C.
//!
//! Telemetry (see docs/OBSERVABILITY.md): every request runs in a server span that continues an
//! incoming `traceparent`, so the tasks it enqueues join its trace; `/healthz`, `/readyz` and
//! `/metrics` are served on `WEB_LISTEN` next to the app's routes.

use std::process::ExitCode;

use jetq_contract::async_nats::connection::State;
use jetq_examples::web::{router, WebConfig};
use jetq_producer::Producer;
use jetq_telemetry::{Readiness, TelemetryGuard};

#[tokio::main]
async fn main() -> ExitCode {
    jetq_telemetry::run_main("jetq-web", "web", |telemetry| Box::pin(run(telemetry))).await
}

async fn run(telemetry: &TelemetryGuard) -> Result<(), String> {
    let config = WebConfig::from_env().map_err(|err| err.to_string())?;
    let producer = Producer::from_env()
        .map_err(|err| err.to_string())?
        .connect()
        .await
        .map_err(|err| format!("cannot connect the producer: {err}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
    let readiness = Readiness::new();
    let client = producer.client().clone();
    readiness.add("nats", move || match client.connection_state() {
        State::Connected => Ok(()),
        state => Err(format!("not connected to NATS ({state})")),
    });
    let app = router(producer)
        .layer(axum::middleware::from_fn(jetq_telemetry::trace_requests))
        .merge(telemetry.health_router(readiness));
    tracing::info!(listen = %config.listen, "web app listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(jetq_consumer::shutdown_signal())
        .await
        .map_err(|err| format!("server error: {err}"))
}
