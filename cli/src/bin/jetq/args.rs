//! The command line's arguments: clap's derive types, their parsers (durations, times) and the
//! conversions from arguments to the library's requests (dead-letter selections, enqueue requests).

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use clap::{Args, Parser, Subcommand};
use jetq_cli::{dead::Selection, AdminError, DeadFilter, EnqueueRequest, When};
use jetq_contract::Priority;

const AFTER_HELP: &str = "\
Configuration (as for every jetq component):
  JETQ_NATS_URL          server URL(s), comma separated (default nats://127.0.0.1:4222)
  JETQ_NATS_TOKEN, JETQ_NATS_USER + JETQ_NATS_PASSWORD, JETQ_NATS_NKEY_SEED,
  JETQ_NATS_CREDS_FILE   authentication (one of them)
  JETQ_NATS_TLS_CA, JETQ_NATS_TLS_CERT, JETQ_NATS_TLS_KEY, JETQ_NATS_TLS_REQUIRED
  JETQ_PREFIX            subject prefix (default jetq)
  JETQ_REQUEST_TIMEOUT   JetStream request timeout (default 5s)

Exit codes:
  0  success
  1  error (server error, timeout, some items of a replay or purge failed)
  2  usage (bad option, invalid JSON or name)
  3  not found (queue, dead letter, task id, stream, schedules file)
  4  not supported (needs a newer nats-server)
  5  NATS unavailable (cannot connect, credentials refused, server too old)

Durations are written like 30s, 5m, 2h, 7days; times as RFC 3339 (2026-11-27T07:00:00Z).";

/// Operate jetq task queues on NATS JetStream: queue counts, dead letters, replay, pause.
#[derive(Debug, Parser)]
#[command(name = "jetq", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    /// Print machine-readable JSON on stdout (errors too, as {"error": {...}}).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Per queue: pending, in flight, max in flight, redelivered, dead, delayed, rate.
    ///
    /// Numbers come from JetStream's own state: the queue's durable consumer `worker-<queue>`
    /// and the per-subject counts of the task, dead-letter and delayed streams. Rates come from
    /// two samples `--interval` apart. `jetq queues purge <queue>` deletes a queue's waiting
    /// tasks.
    Queues(QueuesArgs),
    /// Enqueue a task by queue and task name, with JSON arguments.
    Enqueue(EnqueueArgs),
    /// List, show, replay or purge dead letters.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Stop delivery of a queue to all its workers (nats-server 2.11+).
    ///
    /// Pauses the queue's durable consumer: running tasks finish, new tasks wait in the task
    /// stream, nothing is lost. The pause is kept by the server until it ends or `jetq resume`.
    Pause(PauseArgs),
    /// Restart delivery of a paused queue.
    Resume(QueueArg),
    /// The scheduler's periodic schedules with their next fire times, paused state and last
    /// handled fire; `pause`, `resume` and `run` a schedule at runtime.
    Schedules(SchedulesArgs),
    /// The live worker processes: host, version, queues, concurrency, running tasks, last
    /// heartbeat (from their presence records, PROTOCOL.md §14).
    Workers,
    /// The per-minute metrics history the workers keep for 24 hours (PROTOCOL.md §15): per
    /// queue and minute, tasks succeeded, failed attempts, retried, dead, run time p50/p95/max
    /// (bucket estimates) and queue depth.
    History(HistoryArgs),
    /// Tasks by state (pending, delayed, retrying, running, dead), paged; one task by id.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Cancel a task by id, or every task matching a filter (`--all`): tracked (the status
    /// path), queued or waiting to retry (deleted from the task stream), delayed (deleted from
    /// the delayed stream), untracked and running (its worker is asked: it terminates the
    /// task and tells the handler, PROTOCOL.md §16). A running task whose worker does not
    /// answer cannot be stopped (exit code 1).
    Cancel(CancelArgs),
    /// The task types the workers published: queue, task, attempts, timeout, tracked.
    ///
    /// Read from the task-type catalog (KV bucket `<PREFIX>_CATALOG`, PROTOCOL.md §9) that
    /// every worker writes at startup and producers in every language read to learn which types
    /// are tracked. Entries producers would ignore are listed apart, with the reason.
    Catalog(CatalogArgs),
    /// A tracked task's status by id: state, attempts, progress, result, error, artifacts.
    ///
    /// Only task types with `track_status(true)` (or tasks enqueued with tracking) have a
    /// status. `--wait` follows the record until the task finishes.
    Status(StatusArgs),
    /// Flow control: the limits the workers registered, what waits on them, the unique keys
    /// held and their holders; `release <entry>` and `prune` (docs/FLOW_CONTROL.md).
    Limits(jetq_cli::limits::LimitsArgs),
    /// Serve the web dashboard: live queue counts and rates, dead letters with replay and
    /// discard, schedules.
    Dashboard(DashboardArgs),
    /// The batches (docs/WORKFLOWS.md): id, state, total, succeeded, dead, pending, callbacks
    /// fired — from the batch records' counters (a hint; `jetq batch <id>` counts exactly).
    Batches,
    /// One batch: exact counts from its members' markers, its callbacks and their firing, and
    /// its finished members, paged (`--after` the previous page's `next`).
    Batch(BatchArgs),
    /// One chain: its links, how far it got, where it stopped.
    Chain(ChainArgs),
    /// The chains: id, state, links, where each is (or failed), newest first.
    Chains,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Only this queue (default: every queue).
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// How far back, from 1m to 24h (the current minute included).
    #[arg(long, default_value = "1h")]
    pub(crate) since: String,
}

#[derive(Debug, Args)]
pub(crate) struct BatchArgs {
    /// The batch id.
    pub(crate) id: String,
    /// Finished members per page.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// Members after this member id (the previous page's `next`).
    #[arg(long)]
    pub(crate) after: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ChainArgs {
    /// The chain id.
    pub(crate) id: String,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct QueuesArgs {
    /// What to do with a queue instead of listing the queues.
    #[command(subcommand)]
    pub(crate) action: Option<QueuesAction>,
    /// Only this queue (exit code 3 if it is unknown).
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Time between the two samples the rates come from; 0 skips rates.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) interval: Duration,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueuesAction {
    /// Delete a queue's waiting tasks from the task stream (asks first).
    ///
    /// Pending tasks and tasks waiting for a retry are deleted; a handler already running
    /// finishes, but its task can no longer be retried (pause the queue first to let running
    /// tasks end). Delayed tasks only with `--delayed`; dead letters are never touched
    /// (`jetq dead purge --queue`).
    Purge(QueuePurgeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct QueuePurgeArgs {
    /// The queue.
    pub(crate) queue: String,
    /// Only this task type's tasks.
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Only the tasks of this priority level: high, normal or low (default: all three).
    #[arg(long, value_name = "LEVEL", value_parser = parse_priority)]
    pub(crate) priority: Option<Priority>,
    /// Also delete the queue's delayed tasks (not yet due).
    #[arg(long)]
    pub(crate) delayed: bool,
    /// Only count what would be deleted.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Do not ask for confirmation (needed when standard input is not a terminal).
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// Queue name.
    pub(crate) queue: String,
    /// Task wire name.
    pub(crate) task: String,
    /// The task's arguments as JSON.
    #[arg(long, default_value = "{}", conflicts_with = "args_file")]
    pub(crate) args: String,
    /// Read the JSON arguments from a file (`-`: standard input).
    #[arg(long, value_name = "PATH")]
    pub(crate) args_file: Option<PathBuf>,
    /// Idempotency key: becomes the task id; the same key within the duplicate window is
    /// stored once.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Run no earlier than this long from now (released by jetq-scheduler).
    #[arg(long, value_parser = parse_duration, conflicts_with = "at")]
    pub(crate) delay: Option<Duration>,
    /// Run no earlier than this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub(crate) at: Option<SystemTime>,
    /// Override the task type's maximum attempts.
    #[arg(long)]
    pub(crate) max_attempts: Option<u32>,
    /// Override the task type's per-attempt timeout.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// The task's priority level within its queue: high, normal or low. Workers pull higher
    /// levels first (docs/PROTOCOL.md §12).
    #[arg(long, value_name = "LEVEL", default_value = "normal", value_parser = parse_priority)]
    pub(crate) priority: Priority,
}

#[derive(Debug, Args, Clone, Default)]
pub(crate) struct FilterArgs {
    /// Only dead letters of this queue.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Only dead letters of this task type.
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Only dead letters at least this old (e.g. 7days).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) older_than: Option<Duration>,
    /// Only dead letters at most this old (e.g. 1h).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) newer_than: Option<Duration>,
    /// Only this reason: exhausted, fatal, undecodable, unknown-task, deliveries-exhausted.
    #[arg(long)]
    pub(crate) reason: Option<String>,
}

impl FilterArgs {
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.task.is_none()
            && self.older_than.is_none()
            && self.newer_than.is_none()
            && self.reason.is_none()
    }

    pub(crate) fn filter(&self, task_id: Option<String>) -> DeadFilter {
        DeadFilter {
            queue: self.queue.clone(),
            task: self.task.clone(),
            older_than: self.older_than,
            newer_than: self.newer_than,
            reason: self.reason.clone(),
            task_id,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadCommand {
    /// List dead letters, oldest first.
    List(DeadListArgs),
    /// Show one dead letter: failure history, arguments, headers.
    Show(DeadShowArgs),
    /// Re-enqueue dead letters with a fresh attempt count, then remove them.
    ///
    /// Each replay keeps the payload and the original headers (trace context included) and gets
    /// the id `replay:<dead-letter sequence>:<task id>`; the dead letter is removed only after
    /// the task stream acknowledged the replay. Re-running an interrupted replay is safe: it
    /// stores no second copy within the duplicate window (2 minutes by default).
    Replay(DeadActionArgs),
    /// Delete dead letters for good.
    Purge(DeadActionArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DeadListArgs {
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Only dead letters of this task id.
    #[arg(long)]
    pub(crate) task_id: Option<String>,
    /// Show at most this many (0: all). The total is always counted.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["sequence", "task_id"])))]
pub(crate) struct DeadShowArgs {
    /// The dead letter's sequence (the SEQ column of `jetq dead list`).
    pub(crate) sequence: Option<u64>,
    /// Show the dead letters of this task id instead.
    #[arg(long)]
    pub(crate) task_id: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DeadActionArgs {
    /// Dead-letter sequences (the SEQ column of `jetq dead list`); each must exist.
    pub(crate) sequences: Vec<u64>,
    /// The dead letters of this task id.
    #[arg(long)]
    pub(crate) task_id: Option<String>,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Every dead letter (of the whole installation).
    #[arg(long)]
    pub(crate) all: bool,
    /// Only say what would be done.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Do not ask for confirmation. Needed when standard input is not a terminal, for a purge
    /// and for a replay of more than one dead letter.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

impl DeadActionArgs {
    pub(crate) fn selection(&self) -> Result<Selection, AdminError> {
        let by_filter = self.task_id.is_some() || !self.filter.is_empty();
        match (!self.sequences.is_empty(), by_filter, self.all) {
            (true, false, false) => Ok(Selection::Sequences(self.sequences.clone())),
            (false, true, false) => Ok(Selection::Filter(self.filter.filter(self.task_id.clone()))),
            (false, false, true) => Ok(Selection::Filter(DeadFilter::default())),
            (false, false, false) => Err(AdminError::Invalid(
                "say which dead letters: sequences, --task-id, a filter (--queue, --task, \
                 --older-than, --newer-than, --reason) or --all"
                    .into(),
            )),
            _ => Err(AdminError::Invalid(
                "choose one way to select dead letters: sequences, --task-id/filters, or --all"
                    .into(),
            )),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct QueueArg {
    /// Queue name.
    pub(crate) queue: String,
}

#[derive(Debug, Args)]
pub(crate) struct PauseArgs {
    /// Queue name.
    pub(crate) queue: String,
    /// Resume by itself after this long (default: paused until `jetq resume`).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration, conflicts_with = "until")]
    pub(crate) for_: Option<Duration>,
    /// Resume by itself at this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub(crate) until: Option<SystemTime>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// List the tasks in one state, paged by stream sequence (`--after` the previous page's
    /// `next`).
    List(TasksListArgs),
    /// Everything known about one task id: status record, where it waits, attempts, the worker
    /// running it, dead letters.
    Show(TaskShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TasksListArgs {
    /// pending, delayed, retrying, running or dead.
    #[arg(long)]
    pub(crate) state: jetq_cli::tasks::ListState,
    /// Only this queue (all its priority levels).
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Only this task type.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) task: Option<String>,
    /// At most this many tasks.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// The cursor of the previous page (its `next`).
    #[arg(long, value_name = "CURSOR")]
    pub(crate) after: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct TaskShowArgs {
    /// The task id.
    pub(crate) task_id: String,
    /// Search only this queue's stored tasks.
    #[arg(long)]
    pub(crate) queue: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The task id (or `--all` with filters).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(crate) task_id: Option<String>,
    /// Cancel every task matching `--queue`, `--type` and `--state` (all four states by
    /// default); `--dry-run` only counts them.
    #[arg(long)]
    pub(crate) all: bool,
    /// Search only this queue's stored tasks (faster with many queues); with `--all`, only
    /// this queue's tasks.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// With `--all`: only this task type.
    #[arg(long = "type", value_name = "TYPE", requires = "all")]
    pub(crate) task: Option<String>,
    /// With `--all`: only tasks in these states: pending, delayed, retrying, running
    /// (repeat or separate with commas; default all four).
    #[arg(long, value_delimiter = ',', requires = "all")]
    pub(crate) state: Vec<jetq_cli::tasks::ListState>,
    /// With `--all`: only count the matching tasks.
    #[arg(long, requires = "all")]
    pub(crate) dry_run: bool,
    /// Do not ask for confirmation (needed when standard input is not a terminal).
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchedulesAction {
    /// Skip every fire of a schedule until it is resumed (all scheduler replicas).
    Pause(ScheduleNameArgs),
    /// Fire a paused schedule again from its next fire.
    Resume(ScheduleNameArgs),
    /// Enqueue a schedule's task once now (id `<schedule>:run:<request id>`).
    Run(ScheduleNameArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleNameArgs {
    /// The schedule's name.
    pub(crate) name: String,
    /// Who does it, recorded with the change (default: $USER).
    #[arg(long)]
    pub(crate) by: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct SchedulesArgs {
    /// Pause, resume or run a schedule instead of listing them.
    #[command(subcommand)]
    pub(crate) action: Option<SchedulesAction>,
    /// The schedules file (default: $JETQ_SCHEDULES_FILE, as the scheduler reads it).
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
    /// Next fire times to show per schedule.
    #[arg(long, default_value_t = 3)]
    pub(crate) count: usize,
}

#[derive(Debug, Args)]
pub(crate) struct CatalogArgs {
    /// Only the task types of this queue.
    #[arg(long)]
    pub(crate) queue: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The task id.
    pub(crate) task_id: String,
    /// Wait up to this long for the task to finish (succeeded, failed, dead or cancelled);
    /// exit code 1 if it is still running then.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) wait: Option<Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// Require this token: `Authorization: Bearer <token>`, or basic auth with the token as
    /// password (any user name), for every page and endpoint.
    #[arg(long, env = "JETQ_DASHBOARD_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// A second token with the read-only role: it sees every page and is refused every change
    /// (bearer, or basic auth with it as password).
    #[arg(long, env = "JETQ_DASHBOARD_READ_ONLY_TOKEN", hide_env_values = true)]
    pub(crate) read_only_token: Option<String>,
    /// Show only: no replay, discard or other change, whatever the token.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// Allow serving without a token on a non-loopback address.
    #[arg(long)]
    pub(crate) no_auth: bool,
    /// How often queue counts are sampled for the rates and the chart.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) sample_every: Duration,
    /// How much history the chart keeps.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub(crate) history: Duration,
    /// The schedules file to show (default: $JETQ_SCHEDULES_FILE if set).
    #[arg(long)]
    pub(crate) schedules_file: Option<PathBuf>,
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|err| format!("{err}; write durations like 30s, 5m, 2h or 7days"))
}

/// A priority level by name; anything else is refused with the names of the levels.
pub(crate) fn parse_priority(text: &str) -> Result<Priority, String> {
    text.trim()
        .parse::<Priority>()
        .map_err(|err| err.to_string())
}

pub(crate) fn parse_time(text: &str) -> Result<SystemTime, String> {
    jetq_contract::time::parse(text.trim())
        .ok_or_else(|| "expected an RFC 3339 time such as 2026-11-27T07:00:00Z".to_owned())
}

pub(crate) fn enqueue_request(args: EnqueueArgs) -> Result<EnqueueRequest, AdminError> {
    let text = match &args.args_file {
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|err| {
                AdminError::Invalid(format!("cannot read arguments from stdin: {err}"))
            })?;
            text
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|err| AdminError::Invalid(format!("cannot read {}: {err}", path.display())))?,
        None => args.args.clone(),
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|err| {
        AdminError::Invalid(format!(
            "--args is not valid JSON: {err} (e.g. --args '{{\"to\":\"a@example.com\"}}')"
        ))
    })?;
    let when = match (args.delay, args.at) {
        (Some(delay), _) => When::In(delay),
        (None, Some(at)) => When::At(at),
        (None, None) => When::Now,
    };
    Ok(EnqueueRequest {
        queue: args.queue,
        task: args.task,
        args: value,
        key: args.key,
        when,
        max_attempts: args.max_attempts,
        timeout: args.timeout,
        priority: args.priority,
    })
}
