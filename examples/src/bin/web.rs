//! The web app: `POST /signup` and `POST /exports` enqueue tasks and answer 202 at once.
//!
//! Configuration: `JETQ_*` (see `jetq_contract::ConnectionConfig`) and `WEB_LISTEN`
//! (default `127.0.0.1:3000`). Stops on SIGTERM or Ctrl-C.

use std::process::ExitCode;

use jetq_examples::web::{router, WebConfig};
use jetq_producer::Producer;

#[tokio::main]
async fn main() -> ExitCode {
    jetq_examples::init_tracing("info");
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("web: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let config = WebConfig::from_env().map_err(|err| err.to_string())?;
    let producer = Producer::from_env()
        .await
        .map_err(|err| format!("cannot connect the producer: {err}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
    tracing::info!(listen = %config.listen, "web app listening");
    axum::serve(listener, router(producer))
        .with_graceful_shutdown(jetq_consumer::shutdown_signal())
        .await
        .map_err(|err| format!("server error: {err}"))
}
