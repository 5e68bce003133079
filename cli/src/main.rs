//! `jetq`: the operator's command line for jetq queues, dead letters and schedules.
//!
//! Configured like every jetq binary, from `JETQ_*` environment variables (`JETQ_NATS_URL`,
//! credentials, TLS, `JETQ_PREFIX`). Every listing takes `--json`; exit codes are documented in
//! `docs/CLI.md` and `jetq --help`.

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use jetq_cli::{
    dashboard::{self, DashboardConfig},
    dead::{DeadFilter, DeadLetter, Progress, PurgeReport, ReplayOptions, ReplayReport, Selection},
    error::exit,
    pause::PauseState,
    schedules::{schedules_path, ScheduleView},
    stats::{format_rate, Overview},
    Admin, AdminError, EnqueueOutcome, EnqueueRequest, When,
};
use serde::Serialize;

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
struct Cli {
    /// Print machine-readable JSON on stdout (errors too, as {"error": {...}}).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per queue: pending, in flight, max in flight, redelivered, dead, delayed, rate.
    ///
    /// Numbers come from JetStream's own state: the queue's durable consumer `worker-<queue>`
    /// and the per-subject counts of the task, dead-letter and delayed streams. Rates come from
    /// two samples `--interval` apart.
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
    /// The scheduler's periodic schedules with their next fire times.
    Schedules(SchedulesArgs),
    /// A tracked task's status by id: state, attempts, progress, result, error, artifacts.
    ///
    /// Only task types with `track_status(true)` (or tasks enqueued with tracking) have a
    /// status. `--wait` follows the record until the task finishes.
    Status(StatusArgs),
    /// Serve the web dashboard: live queue counts and rates, dead letters with replay and
    /// discard, schedules.
    Dashboard(DashboardArgs),
}

#[derive(Debug, Args)]
struct QueuesArgs {
    /// Only this queue (exit code 3 if it is unknown).
    #[arg(long)]
    queue: Option<String>,
    /// Time between the two samples the rates come from; 0 skips rates.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
}

#[derive(Debug, Args)]
struct EnqueueArgs {
    /// Queue name.
    queue: String,
    /// Task wire name.
    task: String,
    /// The task's arguments as JSON.
    #[arg(long, default_value = "{}", conflicts_with = "args_file")]
    args: String,
    /// Read the JSON arguments from a file (`-`: standard input).
    #[arg(long, value_name = "PATH")]
    args_file: Option<PathBuf>,
    /// Idempotency key: becomes the task id; the same key within the duplicate window is
    /// stored once.
    #[arg(long)]
    key: Option<String>,
    /// Run no earlier than this long from now (released by jetq-scheduler).
    #[arg(long, value_parser = parse_duration, conflicts_with = "at")]
    delay: Option<Duration>,
    /// Run no earlier than this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    at: Option<SystemTime>,
    /// Override the task type's maximum attempts.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Override the task type's per-attempt timeout.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
}

#[derive(Debug, Args, Clone, Default)]
struct FilterArgs {
    /// Only dead letters of this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only dead letters of this task type.
    #[arg(long)]
    task: Option<String>,
    /// Only dead letters at least this old (e.g. 7days).
    #[arg(long, value_parser = parse_duration)]
    older_than: Option<Duration>,
    /// Only dead letters at most this old (e.g. 1h).
    #[arg(long, value_parser = parse_duration)]
    newer_than: Option<Duration>,
    /// Only this reason: exhausted, fatal, undecodable, unknown-task, deliveries-exhausted.
    #[arg(long)]
    reason: Option<String>,
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.task.is_none()
            && self.older_than.is_none()
            && self.newer_than.is_none()
            && self.reason.is_none()
    }

    fn filter(&self, task_id: Option<String>) -> DeadFilter {
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
enum DeadCommand {
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
struct DeadListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only dead letters of this task id.
    #[arg(long)]
    task_id: Option<String>,
    /// Show at most this many (0: all). The total is always counted.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["sequence", "task_id"])))]
struct DeadShowArgs {
    /// The dead letter's sequence (the SEQ column of `jetq dead list`).
    sequence: Option<u64>,
    /// Show the dead letters of this task id instead.
    #[arg(long)]
    task_id: Option<String>,
}

#[derive(Debug, Args)]
struct DeadActionArgs {
    /// Dead-letter sequences (the SEQ column of `jetq dead list`); each must exist.
    sequences: Vec<u64>,
    /// The dead letters of this task id.
    #[arg(long)]
    task_id: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Every dead letter (of the whole installation).
    #[arg(long)]
    all: bool,
    /// Only say what would be done.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation. Needed when standard input is not a terminal, for a purge
    /// and for a replay of more than one dead letter.
    #[arg(long, short = 'y')]
    yes: bool,
}

impl DeadActionArgs {
    fn selection(&self) -> Result<Selection, AdminError> {
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
struct QueueArg {
    /// Queue name.
    queue: String,
}

#[derive(Debug, Args)]
struct PauseArgs {
    /// Queue name.
    queue: String,
    /// Resume by itself after this long (default: paused until `jetq resume`).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration, conflicts_with = "until")]
    for_: Option<Duration>,
    /// Resume by itself at this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    until: Option<SystemTime>,
}

#[derive(Debug, Args)]
struct SchedulesArgs {
    /// The schedules file (default: $JETQ_SCHEDULES_FILE, as the scheduler reads it).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Next fire times to show per schedule.
    #[arg(long, default_value_t = 3)]
    count: usize,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The task id.
    task_id: String,
    /// Wait up to this long for the task to finish (succeeded, failed, dead or cancelled);
    /// exit code 1 if it is still running then.
    #[arg(long, value_parser = parse_duration)]
    wait: Option<Duration>,
}

#[derive(Debug, Args)]
struct DashboardArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Require this token: `Authorization: Bearer <token>`, or basic auth with the token as
    /// password (any user name), for every page and endpoint.
    #[arg(long, env = "JETQ_DASHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Show only: no replay, discard or other change.
    #[arg(long)]
    read_only: bool,
    /// Allow serving without a token on a non-loopback address.
    #[arg(long)]
    no_auth: bool,
    /// How often queue counts are sampled for the rates and the chart.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    sample_every: Duration,
    /// How much history the chart keeps.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    history: Duration,
    /// The schedules file to show (default: $JETQ_SCHEDULES_FILE if set).
    #[arg(long)]
    schedules_file: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|err| format!("{err}; write durations like 30s, 5m, 2h or 7days"))
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    jetq_contract::time::parse(text.trim())
        .ok_or_else(|| "expected an RFC 3339 time such as 2026-11-27T07:00:00Z".to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("jetq: error: cannot start the async runtime: {err}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            report_error(&err, json);
            ExitCode::from(err.exit_code())
        }
    }
}

/// ANSI colour in log lines only on a terminal, and never with `NO_COLOR` set (no-color.org).
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn report_error(err: &AdminError, json: bool) {
    eprintln!("jetq: error: {err}");
    if json {
        let kind = match err.kind() {
            jetq_cli::ErrorKind::Usage => "usage",
            jetq_cli::ErrorKind::NotFound => "not_found",
            jetq_cli::ErrorKind::NotSupported => "not_supported",
            jetq_cli::ErrorKind::Unavailable => "unavailable",
            jetq_cli::ErrorKind::Failed => "error",
        };
        print_json(&serde_json::json!({
            "error": { "kind": kind, "message": err.to_string(), "exit_code": err.exit_code() }
        }));
    }
}

async fn run(cli: Cli) -> Result<(), AdminError> {
    let json = cli.json;
    // `schedules` works without NATS too.
    if let Command::Schedules(args) = &cli.command {
        let path = schedules_path(args.file.as_deref())?;
        // The last fires need NATS; the schedules themselves do not.
        let views = match Admin::from_env().await {
            Ok(admin) => admin.schedules(&path, args.count).await?,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the last fires from NATS");
                jetq_cli::schedules::load_schedules(&path, args.count, chrono::Utc::now())?
            }
        };
        print_schedules(&views, json);
        return Ok(());
    }
    let admin = Admin::from_env().await?;
    match cli.command {
        Command::Queues(args) => {
            let mut overview = admin.overview_sampled(args.interval).await?;
            if let Some(queue) = &args.queue {
                jetq_contract::name::validate(jetq_contract::NameKind::Queue, queue)?;
                overview.queues.retain(|q| &q.queue == queue);
                if overview.queues.is_empty() {
                    return Err(AdminError::NotFound {
                        what: format!("queue {queue}"),
                        hint: Some("`jetq queues` lists the known queues".into()),
                    });
                }
            }
            print_queues(&overview, json);
        }
        Command::Enqueue(args) => {
            let outcome = admin.enqueue(enqueue_request(args)?).await?;
            print_enqueued(&outcome, json);
        }
        Command::Dead(DeadCommand::List(args)) => {
            let filter = args.filter.filter(args.task_id.clone());
            let limit = (args.limit > 0).then_some(args.limit);
            let page = admin.dead_letters(&filter, limit).await?;
            print_dead_list(&page, json);
        }
        Command::Dead(DeadCommand::Show(args)) => {
            let letters = match (args.sequence, &args.task_id) {
                (Some(sequence), _) => vec![admin.dead_letter(sequence).await?],
                (None, Some(id)) => admin.dead_letters_of_task(id).await?,
                (None, None) => unreachable_usage()?,
            };
            print_dead_letters(&letters, json);
        }
        Command::Dead(DeadCommand::Replay(args)) => {
            let selection = args.selection()?;
            let single = matches!(&selection, Selection::Sequences(s) if s.len() == 1);
            if !args.dry_run && !args.yes && !single {
                confirm(&admin, &selection, &args, "replay", "re-enqueue").await?;
            }
            let bar = Bar::new("replaying", json);
            let options = ReplayOptions {
                dry_run: args.dry_run,
                ..ReplayOptions::default()
            };
            let report = admin.replay(&selection, &options, &bar).await;
            bar.finish();
            let report = report?;
            print_replay(&report, json);
            if let Some(err) = report.error() {
                return Err(err);
            }
        }
        Command::Dead(DeadCommand::Purge(args)) => {
            let selection = args.selection()?;
            if !args.dry_run && !args.yes {
                confirm(&admin, &selection, &args, "purge", "delete for good").await?;
            }
            let bar = Bar::new("purging", json);
            let report = admin.purge(&selection, args.dry_run, &bar).await;
            bar.finish();
            let report = report?;
            print_purge(&report, json);
            if let Some(first) = report.failures.first() {
                return Err(AdminError::Partial {
                    operation: "deletions",
                    failed: report.failed,
                    total: report.matched,
                    first: format!("dead letter {}: {}", first.dead_sequence, first.error),
                });
            }
        }
        Command::Pause(args) => {
            let until = match (args.for_, args.until) {
                (Some(duration), _) => Some(SystemTime::now() + duration),
                (None, until) => until,
            };
            let state = admin.pause(&args.queue, until).await?;
            print_pause(&state, json);
        }
        Command::Resume(args) => {
            let state = admin.resume(&args.queue).await?;
            print_pause(&state, json);
        }
        Command::Dashboard(args) => {
            let schedules_file = args.schedules_file.clone().or_else(|| {
                std::env::var_os(jetq_cli::schedules::SCHEDULES_FILE_ENV)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
            });
            let config = DashboardConfig {
                listen: args.listen,
                token: args.token.filter(|t| !t.is_empty()),
                read_only: args.read_only,
                allow_no_auth: args.no_auth,
                sample_every: args.sample_every,
                history: args.history,
                schedules_file,
            };
            dashboard::run(admin, config, shutdown_signal()).await?;
        }
        Command::Status(args) => {
            let status = match args.wait {
                Some(timeout) => admin.wait_for_task(&args.task_id, timeout).await?,
                None => admin.task_status(&args.task_id).await?,
            };
            print_task_status(&status, json);
        }
        Command::Schedules(_) => {}
    }
    Ok(())
}

/// Asks on the terminal before a destructive command, showing how many dead letters it affects;
/// refuses (usage error naming `--yes`) when standard input is not a terminal. Nothing to do
/// (no match) needs no confirmation.
async fn confirm(
    admin: &Admin,
    selection: &Selection,
    args: &DeadActionArgs,
    command: &str,
    effect: &str,
) -> Result<(), AdminError> {
    let count = admin.count_selected(selection).await?;
    if count == 0 {
        return Ok(());
    }
    let scope = describe_selection(selection, args);
    let what = format!("`jetq dead {command}` would {effect} {count} dead letter(s) ({scope})");
    if !std::io::stdin().is_terminal() {
        return Err(AdminError::ConfirmationRequired { what });
    }
    let prompt = format!("{what}. Continue? [y/N] ");
    let answer = tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{prompt}");
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|err| AdminError::Invalid(format!("cannot read the confirmation: {err}")))?
    .map_err(|err| AdminError::Invalid(format!("cannot read the confirmation: {err}")))?;
    if confirmed(&answer) {
        Ok(())
    } else {
        Err(AdminError::NotConfirmed)
    }
}

/// `y` or `yes` (any case) confirms; anything else, an empty line included, does not.
fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn describe_selection(selection: &Selection, args: &DeadActionArgs) -> String {
    match selection {
        Selection::Sequences(sequences) => {
            let list: Vec<String> = sequences.iter().map(u64::to_string).collect();
            format!("sequences {}", cut(&list.join(" "), 80))
        }
        Selection::Filter(_) if args.all => "all queues".into(),
        Selection::Filter(filter) => {
            let mut parts = Vec::new();
            if let Some(queue) = &filter.queue {
                parts.push(format!("queue {queue}"));
            }
            if let Some(task) = &filter.task {
                parts.push(format!("task {task}"));
            }
            if let Some(id) = &filter.task_id {
                parts.push(format!("task id {id}"));
            }
            if let Some(reason) = &filter.reason {
                parts.push(format!("reason {reason}"));
            }
            if let Some(age) = filter.older_than {
                parts.push(format!("older than {}", humantime::format_duration(age)));
            }
            if let Some(age) = filter.newer_than {
                parts.push(format!("newer than {}", humantime::format_duration(age)));
            }
            parts.join(", ")
        }
    }
}

fn unreachable_usage() -> Result<Vec<DeadLetter>, AdminError> {
    Err(AdminError::Invalid(
        "give a dead-letter sequence or --task-id".into(),
    ))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn enqueue_request(args: EnqueueArgs) -> Result<EnqueueRequest, AdminError> {
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
    })
}

/// An indicatif progress bar on stderr, shown only on a terminal and without `--json` (it has no
/// colour, so `NO_COLOR` changes nothing).
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(verb: &str, json: bool) -> Bar {
        if json || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(&format!(
            "{verb} {{bar:40}} {{pos}}/{{len}} dead letters ({{rate}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        // indicatif's own {per_sec} prints four decimals (804.9470/s).
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&format_rate(state.per_sec()));
            },
        );
        bar.set_style(style);
        Bar(Some(bar))
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn set_total(&self, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total);
        }
    }
    fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
}

fn print_json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// Prints rows as aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_owned()
    };
    let _ = writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    );
    for row in rows {
        let _ = writeln!(out, "{}", line(row));
    }
}

fn cut(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), format_rate)
}

fn print_queues(overview: &Overview, json: bool) {
    if json {
        print_json(overview);
        return;
    }
    if overview.queues.is_empty() {
        println!("no queues yet: no worker has started and nothing was enqueued");
    } else {
        let rows = overview
            .queues
            .iter()
            .map(|q| {
                let state = if q.paused {
                    match &q.pause_until {
                        Some(until) => format!("paused until {until}"),
                        None => "paused".into(),
                    }
                } else if q.consumer.is_none() {
                    "no worker yet".into()
                } else {
                    "active".into()
                };
                vec![
                    q.queue.clone(),
                    q.pending.to_string(),
                    q.in_flight.to_string(),
                    q.max_in_flight
                        .map_or_else(|| "-".into(), |m| m.to_string()),
                    q.redelivered.to_string(),
                    q.stranded.to_string(),
                    q.dead.to_string(),
                    q.delayed.to_string(),
                    rate(q.rate.map(|r| r.delivered_per_sec)),
                    state,
                ]
            })
            .collect();
        table(
            &[
                "QUEUE",
                "PENDING",
                "IN FLIGHT",
                "MAX IN FLIGHT",
                "REDELIVERED",
                "STRANDED",
                "DEAD",
                "DELAYED",
                "RATE",
                "STATE",
            ],
            rows,
        );
    }
    match overview.rate {
        Some(rate) => println!(
            "\ntask stream: {} stored; {} enqueued, {} completed (over {:.1}s); RATE = \
             deliveries to workers per second",
            overview.tasks_stored,
            format_rate(rate.enqueued_per_sec),
            format_rate(rate.completed_per_sec),
            rate.interval_secs
        ),
        None => println!("\ntask stream: {} stored", overview.tasks_stored),
    }
}

fn print_task_status(status: &jetq_cli::status::TaskStatus, json: bool) {
    if json {
        print_json(status);
        return;
    }
    let attempts = match status.max_attempts {
        Some(max) => format!("{}/{max}", status.attempt),
        None => status.attempt.to_string(),
    };
    println!(
        "task        {} ({}.{})",
        status.id, status.queue, status.task
    );
    println!("state       {}", status.state.as_str());
    println!("attempt     {attempts}");
    let times = [
        ("enqueued", &status.enqueued_at),
        ("started", &status.started_at),
        ("finished", &status.finished_at),
        ("next try", &status.next_attempt_at),
        ("cancel req", &status.cancel_requested_at),
    ];
    for (label, at) in times {
        if let Some(at) = at {
            println!("{label:<11} {at}");
        }
    }
    println!("updated     {}", status.updated_at);
    if let Some(progress) = &status.progress {
        println!("progress    {:.0}% {}", progress.percent, progress.message);
    }
    if let Some(result) = &status.result {
        println!("result      {result}");
    }
    if let Some(reason) = &status.dead_reason {
        println!("dead        {}", reason.as_str());
    }
    if let Some(error) = &status.error {
        println!("error       {error}");
    }
    for artifact in &status.artifacts {
        println!("artifact    {} ({} bytes)", artifact.name, artifact.size);
    }
}

fn print_enqueued(outcome: &EnqueueOutcome, json: bool) {
    if json {
        print_json(outcome);
        return;
    }
    let duplicate = if outcome.duplicate {
        " (duplicate: a task with this id was already stored; nothing new was queued)"
    } else {
        ""
    };
    match &outcome.not_before {
        Some(at) => println!(
            "enqueued task {} ({}.{}) to run at {at}, sequence {} in {}{duplicate}",
            outcome.id, outcome.queue, outcome.task, outcome.sequence, outcome.stream
        ),
        None => println!(
            "enqueued task {} ({}.{}), sequence {} in {}{duplicate}",
            outcome.id, outcome.queue, outcome.task, outcome.sequence, outcome.stream
        ),
    }
}

fn print_dead_list(page: &jetq_cli::dead::DeadPage, json: bool) {
    if json {
        #[derive(Serialize)]
        struct Listing {
            total: u64,
            shown: usize,
            dead_letters: Vec<jetq_cli::dead::DeadSummary>,
        }
        print_json(&Listing {
            total: page.total,
            shown: page.dead_letters.len(),
            dead_letters: page.dead_letters.iter().map(DeadLetter::summary).collect(),
        });
        return;
    }
    if page.total == 0 {
        println!("no dead letters match");
        return;
    }
    let rows = page
        .dead_letters
        .iter()
        .map(|d| {
            vec![
                d.sequence.to_string(),
                d.queue.clone(),
                d.task.clone(),
                d.reason.clone().unwrap_or_else(|| "-".into()),
                d.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
                d.dead_at.clone(),
                d.task_id.clone().unwrap_or_else(|| "-".into()),
                cut(d.error.as_deref().unwrap_or("-"), 60),
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "QUEUE", "TASK", "REASON", "ATTEMPTS", "DEAD AT", "TASK ID", "ERROR",
        ],
        rows,
    );
    if (page.dead_letters.len() as u64) < page.total {
        println!(
            "\nshowing {} of {} (--limit 0 shows all)",
            page.dead_letters.len(),
            page.total
        );
    } else {
        println!("\n{} dead letter(s)", page.total);
    }
}

fn print_dead_letters(letters: &[DeadLetter], json: bool) {
    if json {
        if let [one] = letters {
            print_json(one);
        } else {
            print_json(&letters);
        }
        return;
    }
    for (i, d) in letters.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("dead letter {}", d.sequence);
        println!("  queue        {}", d.queue);
        println!("  task         {}", d.task);
        println!("  task id      {}", d.task_id.as_deref().unwrap_or("-"));
        println!("  reason       {}", d.reason.as_deref().unwrap_or("-"));
        println!(
            "  attempts     {}",
            d.attempts.map_or_else(|| "-".into(), |a| a.to_string())
        );
        println!("  dead at      {}", d.dead_at);
        println!("  enqueued at  {}", d.enqueued_at.as_deref().unwrap_or("-"));
        println!(
            "  task seq     {}",
            d.task_sequence
                .map_or_else(|| "-".into(), |s| s.to_string())
        );
        println!("  error        {}", d.error.as_deref().unwrap_or("-"));
        if let Some(failure) = &d.failure {
            if let Some(http) = &failure.http {
                let more = if http.body_truncated { " (cut)" } else { "" };
                println!("  http status  {}", http.status);
                println!("  http body    {}{more}", cut(&http.body, 500));
            }
            if !failure.history.is_empty() {
                println!("  history");
                for attempt in &failure.history {
                    println!(
                        "    #{} {} {:?}: {}",
                        attempt.attempt,
                        attempt.at,
                        attempt.outcome,
                        cut(&attempt.error, 200)
                    );
                }
            }
        }
        match (&d.args, &d.payload_text) {
            (Some(args), _) => println!(
                "  args         {}",
                serde_json::to_string(args).unwrap_or_default()
            ),
            (None, Some(text)) => println!("  payload      {} (not JSON)", cut(text, 500)),
            _ => {}
        }
        println!("  headers");
        for (name, values) in &d.headers {
            for value in values {
                println!("    {name}: {}", cut(value, 200));
            }
        }
    }
}

fn print_replay(report: &ReplayReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    if report.dry_run {
        println!(
            "dry run: {} dead letter(s) would be replayed",
            report.matched
        );
        for item in &report.items {
            println!(
                "  {} {}.{} task {} -> {}",
                item.dead_sequence,
                item.queue,
                item.task,
                item.task_id.as_deref().unwrap_or("-"),
                item.new_id
            );
        }
        return;
    }
    println!(
        "replayed {} of {} dead letter(s){}{}",
        report.replayed,
        report.matched,
        if report.duplicates > 0 {
            format!(
                " ({} had already been re-enqueued by an earlier run; not stored twice)",
                report.duplicates
            )
        } else {
            String::new()
        },
        if report.failed > 0 {
            format!("; {} failed and were kept", report.failed)
        } else {
            String::new()
        }
    );
    for failure in &report.failures {
        println!("  dead letter {}: {}", failure.dead_sequence, failure.error);
    }
}

fn print_purge(report: &PurgeReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    if report.dry_run {
        println!(
            "dry run: {} dead letter(s) would be deleted",
            report.matched
        );
        if !report.sequences.is_empty() {
            let list: Vec<String> = report.sequences.iter().map(u64::to_string).collect();
            println!("  {}", cut(&list.join(" "), 2000));
        }
        return;
    }
    println!(
        "deleted {} of {} dead letter(s)",
        report.deleted, report.matched
    );
    for failure in &report.failures {
        println!("  dead letter {}: {}", failure.dead_sequence, failure.error);
    }
}

fn print_pause(state: &PauseState, json: bool) {
    if json {
        print_json(state);
        return;
    }
    match (&state.pause_until, state.paused, state.until_resumed) {
        (_, false, _) => println!(
            "queue {} is delivering (consumer {})",
            state.queue, state.consumer
        ),
        (_, true, true) | (None, true, _) => println!(
            "queue {} is paused until `jetq resume {}` (consumer {}); running tasks finish, new \
             tasks wait",
            state.queue, state.queue, state.consumer
        ),
        (Some(until), true, false) => println!(
            "queue {} is paused until {until} (consumer {}); running tasks finish, new tasks wait",
            state.queue, state.consumer
        ),
    }
}

fn print_schedules(views: &[ScheduleView], json: bool) {
    if json {
        print_json(&views);
        return;
    }
    if views.is_empty() {
        println!("the schedules file has no schedules");
        return;
    }
    let rows = views
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                format!("{} ({})", s.cron, s.timezone),
                format!("{}.{}", s.queue, s.task),
                if s.enabled { "yes".into() } else { "no".into() },
                s.handled_until.clone().unwrap_or_else(|| "-".into()),
                if s.next_fires.is_empty() {
                    "-".into()
                } else {
                    s.next_fires.join(", ")
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "CRON",
            "TASK",
            "ENABLED",
            "HANDLED UNTIL",
            "NEXT FIRES (UTC)",
        ],
        rows,
    );
}

#[cfg(test)]
mod tests {
    use super::confirmed;

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y\n", "Y\n", "yes\n", " YES \r\n"] {
            assert!(confirmed(yes), "{yes:?}");
        }
        for no in ["\n", "", "n\n", "no\n", "yep\n", "sure\n"] {
            assert!(!confirmed(no), "{no:?}");
        }
    }
}
