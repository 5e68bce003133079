//! `jetq-provision [--queue QUEUE]...`: creates or updates what a jetq deployment needs on
//! the NATS side — the task, dead-letter and advisory streams, the attempt-history bucket, the
//! sweeper's consumer, the task-status bucket and artifact store, the scheduler's delayed-task
//! stream and state bucket, and the durable consumer of each given queue — then exits.
//!
//! Run it as the admin NATS user (it is the only role allowed to change streams and consumers);
//! workers then run with `JETQ_PROVISION=false` and their own least-privilege users. It is the
//! only jetq process that updates an *existing* stream or bucket to its `JETQ_*` settings
//! (`JETQ_STREAM_MAX_MSGS`, `JETQ_STATUS_TTL`, …): workers, schedulers and producers create
//! what is missing and only report differences. Requests are retried while a fresh cluster
//! elects its leaders. In the
//! Kubernetes manifests it is the init container of every worker pod, with the same `JETQ_*`
//! settings as the worker (`JETQ_ACK_WAIT`, `JETQ_MAX_DELIVER`, `JETQ_MAX_IN_FLIGHT`), so the
//! durable matches the workers that use it. Durables never get an `inactive_threshold`: a queue
//! scaled to zero pods keeps its consumer.
//!
//! Configuration: `JETQ_*` (connection, stream settings, worker settings). Exits 0 when
//! everything exists as configured, 1 with a message naming what failed otherwise.

use std::process::ExitCode;

use jetq_consumer::WorkerSettings;
use jetq_contract::{name, ConnectionConfig, NameKind, StreamSettings, Topology};

const USAGE: &str = "usage: jetq-provision [--queue QUEUE]...

Creates or reconciles the jetq streams, buckets and the durable consumer of each QUEUE, as
configured by the JETQ_* environment variables, then exits. Run it as the admin NATS user.";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut queues = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--queue", Some(queue)) => queues.push(queue),
            ("--help" | "-h", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("jetq-provision: unexpected argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match provision(&queues).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jetq-provision: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn provision(queues: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    for queue in queues {
        name::validate(NameKind::Queue, queue)?;
    }
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let connection = ConnectionConfig::from_env_iter(vars.clone())?;
    let streams = StreamSettings::from_env_iter(vars.clone())?;
    let settings = WorkerSettings::from_env_iter(vars)?;
    let subjects = connection.subjects()?;
    let client = jetq_contract::connect(&connection, "jetq-provision").await?;
    let js = jetq_contract::jetstream(client.clone(), &connection);
    // The one process that updates existing streams and buckets to its settings: workers,
    // schedulers and producers only create what is missing and report differences.
    let topology = Topology::new(js.clone(), subjects.clone(), streams.clone()).reconciling();
    topology.ensure_streams().await?;
    topology.ensure_sweeper_consumer().await?;
    // Everything the least-privilege users may use but not create: status of tracked tasks
    // (workers, producers), the scheduler's delayed-task stream and state.
    topology.ensure_status_stores().await?;
    jetq_scheduler::provision_with(&topology).await?;
    for queue in queues {
        topology
            .ensure_queue(queue, &settings.queue_settings())
            .await?;
        tracing::info!(%queue, durable = %subjects.durable(queue), "queue provisioned");
    }
    client.flush().await?;
    tracing::info!(stream = %subjects.tasks_stream(), "streams provisioned");
    Ok(())
}
