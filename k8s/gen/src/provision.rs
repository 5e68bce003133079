//! What `jetq-provision` does, shared by the binary and the tests of the rendered manifests.
//!
//! ```text
//! jetq-provision [--queue QUEUE [--ack-wait D] [--max-deliver N] [--max-in-flight N]]...
//! jetq-provision --wait [--queue QUEUE]... [--scheduler] [--wait-budget D]
//! ```
//!
//! Provisioning (as the admin NATS user) creates or reconciles the streams, buckets and the
//! durable consumer of each queue. A queue's settings are the `JETQ_*` worker settings of the
//! environment (`JETQ_ACK_WAIT`, `JETQ_MAX_DELIVER`, `JETQ_MAX_IN_FLIGHT`), overridden by the
//! flags that follow its `--queue`, so one run provisions queues whose workers differ (the
//! Kubernetes provisioning Job does). Values are parsed and validated by the worker's own parser.
//!
//! Waiting (`--wait`, with a least-privilege user: a worker's or the scheduler's) creates
//! nothing: it waits until each queue's durable consumer exists (and with `--scheduler` the
//! delayed-task stream and the scheduler's state bucket), retrying with backoff for
//! `--wait-budget` (default [`DEFAULT_PROVISION_BUDGET`]), then fails naming what is missing.
//! The worker and scheduler pods run it as their init container, so they start only once the
//! provisioning Job ran, without ever holding the admin password.

use std::time::Duration;

use jetq_consumer::WorkerSettings;
use jetq_contract::{
    name, topology::DEFAULT_PROVISION_BUDGET, wait::until_provisioned, ConnectionConfig, NameKind,
    QueueSettings, StreamSettings, Topology,
};

/// The usage text.
pub const USAGE: &str =
    "usage: jetq-provision [--queue QUEUE [--ack-wait D] [--max-deliver N] [--max-in-flight N]]...
       jetq-provision --wait [--queue QUEUE]... [--scheduler] [--wait-budget D]

Creates or reconciles the jetq streams, buckets and the durable consumer of each QUEUE, as
configured by the JETQ_* environment variables (each queue's --ack-wait, --max-deliver and
--max-in-flight override JETQ_ACK_WAIT, JETQ_MAX_DELIVER and JETQ_MAX_IN_FLIGHT), then exits.
Run it as the admin NATS user.

With --wait it creates nothing: it waits (default 60s) until each QUEUE's durable consumer
exists (and, with --scheduler, the delayed-task stream and the scheduler's state bucket), as a
worker's or the scheduler's own NATS user, then exits 0; 1 if they are still missing.";

/// The per-queue flags and the worker variables they override.
pub const QUEUE_FLAGS: &[(&str, &str)] = &[
    ("--ack-wait", "JETQ_ACK_WAIT"),
    ("--max-deliver", "JETQ_MAX_DELIVER"),
    ("--max-in-flight", "JETQ_MAX_IN_FLIGHT"),
];

/// The command line was not understood.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// An argument this command does not take.
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
    /// A flag without its value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A queue flag before any `--queue`.
    #[error("{0} applies to the queue before it: put it after --queue QUEUE")]
    NoQueue(String),
    /// A queue's settings are invalid (the worker's parser refused them).
    #[error("queue {queue}: {message}")]
    Settings {
        /// The queue.
        queue: String,
        /// What the parser said.
        message: String,
    },
    /// `--wait-budget` is not a duration.
    #[error("--wait-budget {value:?}: {message}")]
    Budget {
        /// The value given.
        value: String,
        /// Why it is not a duration.
        message: String,
    },
    /// Settings only provisioning uses, given with `--wait`, or `--scheduler` without it.
    #[error("{0}")]
    Mode(String),
}

/// What one run does.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print the usage.
    Help,
    /// Provision, as the admin user: every stream and bucket, and these queues' durables.
    Provision {
        /// Each queue with the settings of its durable.
        queues: Vec<(String, QueueSettings)>,
    },
    /// Wait until someone else provisioned, creating nothing.
    Wait {
        /// The queues whose durables must exist.
        queues: Vec<String>,
        /// Also wait for the delayed-task stream and the scheduler's state bucket.
        scheduler: bool,
        /// How long to wait before failing.
        budget: Duration,
    },
}

/// Parses the arguments (without the program name); `env` gives each queue's default settings.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: &[(String, String)],
) -> Result<Command, ArgsError> {
    // Each queue with the variables its own flags override.
    let mut queues: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut wait = false;
    let mut scheduler = false;
    let mut budget: Option<Duration> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| ArgsError::MissingValue(arg.clone()))
        };
        match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--wait" => wait = true,
            "--scheduler" => scheduler = true,
            "--queue" => {
                let queue = value()?;
                name::validate(NameKind::Queue, &queue).map_err(|err| ArgsError::Settings {
                    queue: queue.clone(),
                    message: err.to_string(),
                })?;
                queues.push((queue, Vec::new()));
            }
            "--wait-budget" => {
                let text = value()?;
                budget =
                    Some(
                        humantime::parse_duration(&text).map_err(|err| ArgsError::Budget {
                            value: text.clone(),
                            message: err.to_string(),
                        })?,
                    );
            }
            flag => {
                let Some((_, variable)) = QUEUE_FLAGS.iter().find(|(f, _)| *f == flag) else {
                    return Err(ArgsError::Unexpected(arg));
                };
                let text = value()?;
                let (_, overrides) = queues
                    .last_mut()
                    .ok_or_else(|| ArgsError::NoQueue(flag.to_owned()))?;
                overrides.push(((*variable).to_owned(), text));
            }
        }
    }
    if wait {
        if let Some((queue, _)) = queues.iter().find(|(_, overrides)| !overrides.is_empty()) {
            return Err(ArgsError::Mode(format!(
                "--wait creates nothing: queue {queue}'s settings are for provisioning"
            )));
        }
        return Ok(Command::Wait {
            queues: queues.into_iter().map(|(queue, _)| queue).collect(),
            scheduler,
            budget: budget.unwrap_or(DEFAULT_PROVISION_BUDGET),
        });
    }
    if scheduler || budget.is_some() {
        return Err(ArgsError::Mode(
            "--scheduler and --wait-budget go with --wait (provisioning always creates the \
             scheduler's stream and bucket)"
                .into(),
        ));
    }
    let mut provisioned = Vec::new();
    for (queue, overrides) in queues {
        let settings = queue_settings(env, &overrides).map_err(|message| ArgsError::Settings {
            queue: queue.clone(),
            message,
        })?;
        provisioned.push((queue, settings));
    }
    Ok(Command::Provision {
        queues: provisioned,
    })
}

/// A queue's durable settings: the worker's `JETQ_*` settings of `env` with `overrides`
/// applied, parsed and validated by the worker's own parser.
fn queue_settings(
    env: &[(String, String)],
    overrides: &[(String, String)],
) -> Result<QueueSettings, String> {
    let vars = env
        .iter()
        .filter(|(key, _)| !overrides.iter().any(|(over, _)| over == key))
        .chain(overrides)
        .cloned();
    let settings = WorkerSettings::from_env_iter(vars).map_err(|err| err.to_string())?;
    settings.validate().map_err(|err| err.to_string())?;
    Ok(settings.queue_settings())
}

/// Runs a parsed command against the server `env` configures.
pub async fn run(
    command: &Command,
    env: Vec<(String, String)>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let connection = ConnectionConfig::from_env_iter(env.clone())?;
    let streams = StreamSettings::from_env_iter(env)?;
    let subjects = connection.subjects()?;
    let client = jetq_contract::connect(&connection, "jetq-provision").await?;
    let js = jetq_contract::jetstream(client.clone(), &connection);
    match command {
        Command::Help => {}
        Command::Provision { queues } => {
            // The one process that updates existing streams and buckets to its settings:
            // workers, schedulers and producers only create what is missing and report
            // differences.
            let topology = Topology::new(js.clone(), subjects.clone(), streams).reconciling();
            topology.ensure_streams().await?;
            topology.ensure_sweeper_consumer().await?;
            // Everything the least-privilege users may use but not create: status of tracked
            // tasks (workers, producers), the scheduler's delayed-task stream and state.
            topology.ensure_status_stores().await?;
            jetq_contract::catalog::ensure_bucket(&topology).await?;
            // Worker presence (PROTOCOL §14): `jetq workers` and the console read it.
            jetq_contract::presence::ensure_bucket(&topology).await?;
            // Metrics history (PROTOCOL §15): workers merge per-minute counts, the console reads.
            jetq_contract::metrics_history::ensure_bucket(&topology).await?;
            // Flow control (PROTOCOL §11): unique keys and rate/concurrency limits.
            topology
                .ensure_bucket(jetq_contract::flow::unique_bucket_config(&topology))
                .await?;
            topology
                .ensure_bucket(jetq_contract::flow::limits_bucket_config(&topology))
                .await?;
            // Batches and chains (PROTOCOL §13): records, member markers.
            topology
                .ensure_bucket(jetq_contract::workflow::bucket_config(&topology))
                .await?;
            // Chord results too large for their markers (PROTOCOL §13).
            topology.ensure_results_store().await?;
            jetq_scheduler::provision_with(&topology).await?;
            // Queues last: a durable that exists means everything above does (what `--wait`
            // relies on).
            for (queue, settings) in queues {
                topology.ensure_queue(queue, settings).await?;
                tracing::info!(
                    %queue,
                    durable = %subjects.durable(queue),
                    ack_wait = ?settings.ack_wait,
                    max_deliver = settings.max_deliver,
                    max_in_flight = settings.max_in_flight,
                    "queue provisioned"
                );
            }
            tracing::info!(stream = %subjects.tasks_stream(), "streams provisioned");
        }
        Command::Wait {
            queues,
            scheduler,
            budget,
        } => {
            let topology = Topology::new(js.clone(), subjects.clone(), streams);
            if *scheduler {
                let stream = subjects.delayed_stream();
                until_provisioned(&format!("stream {stream}"), *budget, || {
                    js.get_stream(stream.clone())
                })
                .await?;
                let bucket = subjects.scheduler_bucket();
                until_provisioned(&format!("key-value bucket {bucket}"), *budget, || {
                    js.get_key_value(bucket.clone())
                })
                .await?;
            }
            for queue in queues {
                jetq_consumer::existing_consumer(&topology, queue, *budget).await?;
                tracing::info!(%queue, durable = %subjects.durable(queue), "durable exists");
            }
        }
    }
    client.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn each_queue_gets_its_own_flags_over_the_environment() {
        let env = vec![
            ("JETQ_ACK_WAIT".to_owned(), "45s".to_owned()),
            ("JETQ_MAX_DELIVER".to_owned(), "12".to_owned()),
        ];
        let command = parse(
            args("--queue a --ack-wait 2m --max-in-flight 20 --queue b"),
            &env,
        )
        .unwrap();
        let Command::Provision { queues } = command else {
            panic!("{command:?}")
        };
        assert_eq!(queues.len(), 2);
        assert_eq!(queues[0].0, "a");
        assert_eq!(queues[0].1.ack_wait, Duration::from_secs(120));
        assert_eq!(queues[0].1.max_deliver, 12);
        assert_eq!(queues[0].1.max_in_flight, 20);
        assert_eq!(queues[1].0, "b");
        assert_eq!(queues[1].1.ack_wait, Duration::from_secs(45));
        assert_eq!(
            queues[1].1.max_in_flight,
            QueueSettings::default().max_in_flight
        );
    }

    #[test]
    fn bad_arguments_are_refused_naming_the_problem() {
        let refused = |text: &str| parse(args(text), &[]).unwrap_err().to_string();
        assert!(refused("--ack-wait 2m").contains("after --queue"));
        assert!(refused("--queue a --ack-wait soon").contains("queue a"));
        assert!(refused("--queue a --max-deliver").contains("needs a value"));
        assert!(refused("--queue a.b").contains("queue a.b"));
        assert!(refused("--wait --queue a --ack-wait 2m").contains("creates nothing"));
        assert!(refused("--scheduler").contains("--wait"));
        assert!(refused("--frobnicate").contains("unexpected argument"));
    }

    #[test]
    fn wait_takes_queues_the_scheduler_and_a_budget() {
        assert_eq!(
            parse(args("--wait --queue a --scheduler --wait-budget 5s"), &[]).unwrap(),
            Command::Wait {
                queues: vec!["a".into()],
                scheduler: true,
                budget: Duration::from_secs(5),
            }
        );
        assert_eq!(
            parse(args("--wait"), &[]).unwrap(),
            Command::Wait {
                queues: vec![],
                scheduler: false,
                budget: DEFAULT_PROVISION_BUDGET,
            }
        );
    }
}
