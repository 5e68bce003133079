//! `jetq-provision`: creates or updates what a jetq deployment needs on the NATS side — the
//! task, dead-letter and advisory streams, the attempt-history bucket, the sweeper's consumer,
//! the task-status bucket and artifact store, the scheduler's delayed-task stream and state
//! bucket, and the durable consumer of each given queue — then exits. With `--wait` it creates
//! nothing and waits until they exist (see [`jetq_k8s::provision`]).
//!
//! Run it as the admin NATS user (it is the only role allowed to change streams and consumers);
//! workers then run with `JETQ_PROVISION=false` and their own least-privilege users. It is the
//! only jetq process that updates an *existing* stream or bucket to its `JETQ_*` settings
//! (`JETQ_STREAM_MAX_MSGS`, `JETQ_STATUS_TTL`, …): workers, schedulers and producers create
//! what is missing and only report differences. Requests are retried while a fresh cluster
//! elects its leaders. In the Kubernetes manifests it is the provisioning Job, with each
//! queue's worker settings as flags (`--queue emails --ack-wait 30s --max-deliver 26
//! --max-in-flight 1000 --queue exports ...`), so each durable matches the workers that use it;
//! the worker and scheduler pods run `jetq-provision --wait` with their own users as their init
//! container. Durables never get an `inactive_threshold`: a queue scaled to zero pods keeps its
//! consumer.
//!
//! Configuration: `JETQ_*` (connection, stream settings, worker settings). Exits 0 when
//! everything exists as configured, 1 with a message naming what failed otherwise, 2 on a
//! command line it does not understand.

use std::process::ExitCode;

use jetq_k8s::provision::{self, Command, USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let command = match provision::parse(std::env::args().skip(1), &env) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(err) => {
            eprintln!("jetq-provision: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match provision::run(&command, env).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jetq-provision: {err}");
            ExitCode::FAILURE
        }
    }
}
