//! `jetq-scheduler`: periodic tasks and delayed-task release, configured from `JETQ_*`
//! environment variables and the YAML file named by `JETQ_SCHEDULES_FILE`.
//!
//! Exits with status 1 and a message naming the variable, schedule or field at fault when the
//! configuration is unusable; otherwise runs until SIGTERM or SIGINT. SIGHUP reloads the
//! schedules file.

use std::process::ExitCode;

use jetq_scheduler::Scheduler;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Scheduler::from_env().await {
        Ok(scheduler) => {
            scheduler.run().await;
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("jetq-scheduler: {err}");
            ExitCode::FAILURE
        }
    }
}
