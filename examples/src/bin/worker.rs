//! The worker: sends the welcome emails over SMTP and writes the CSV exports.
//!
//! Configuration: `JETQ_*` (connection and worker settings, see `jetq_consumer::WorkerSettings`),
//! `SMTP_HOST`/`SMTP_PORT`/`SMTP_FROM`/`SMTP_TIMEOUT` (default `127.0.0.1:2525`) and
//! `EXPORT_DIR` (default `./exports`). Stops gracefully on SIGTERM or Ctrl-C.

use std::process::ExitCode;

use jetq_consumer::Worker;
use jetq_examples::worker::{build, WorkerConfig};

#[tokio::main]
async fn main() -> ExitCode {
    jetq_examples::init_tracing("info");
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("worker: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let config = WorkerConfig::from_env().map_err(|err| err.to_string())?;
    tracing::info!(
        smtp = %format!("{}:{}", config.smtp.host, config.smtp.port),
        exports = %config.exports.dir.display(),
        "worker starting"
    );
    let builder = Worker::from_env().map_err(|err| err.to_string())?;
    let worker = build(builder, config)
        .build()
        .await
        .map_err(|err| format!("cannot start the worker: {err}"))?;
    worker.run().await;
    Ok(())
}
