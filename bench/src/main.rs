//! `jetq-bench`: every jetq figure against its raw async-nats twin, on a fresh nats-server per
//! measurement, in the same run. See BENCHMARKS.md for the method and the latest results.
//!
//! ```text
//! jetq-bench [--quick] [--reps N] [--sync always|default|both] [--concurrency N] [--window N]
//!            [--drain-workers 1,2,4]
//!            [--sections enqueue,drain,latency,memory,delayed,scale,flow,outbox]
//!            [--scale 10000,100000,1000000] [--scale-reps N] [--delayed-pending N]
//!            [--server PATH] [--out FILE] [--diagnose] [--only jetq|raw] [--replicated]
//! jetq-bench worker --impl jetq|raw --url URL [--concurrency N] [--hold-ms N] [--latency]
//!            [--double-ack]
//! jetq-bench scheduler --url URL
//! ```
//!
//! `JETQ_BENCH_WORKER_RUNTIME=current-thread` runs the worker processes (both twins) on tokio's
//! current-thread runtime instead of the multi-thread one; `JETQ_*` worker variables apply to
//! jetq's worker processes (e.g. `JETQ_PREFETCH=1024`).

mod child;
mod flow;
mod measure;
mod outbox;
mod report;
mod stats;
mod worker;
mod workload;

use jetq_contract::config::TaskRetention;
use std::{path::PathBuf, process::ExitCode, time::Duration};

use measure::ServerSpec;
use report::{Better, Table};
use tokio::time::Instant;

/// Which side of a comparison runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// jetq's producer / worker.
    Jetq,
    /// async-nats used directly: the ceiling.
    Raw,
}

impl Impl {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Jetq => "jetq",
            Impl::Raw => "raw",
        }
    }

    /// The implementation named `text` (`jetq` or `raw`).
    pub fn parse(text: &str) -> Result<Impl, String> {
        match text {
            "jetq" => Ok(Impl::Jetq),
            "raw" => Ok(Impl::Raw),
            other => Err(format!("unknown implementation {other:?} (jetq or raw)")),
        }
    }
}

/// Everything a run is asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    quick: bool,
    reps: usize,
    scale_reps: usize,
    syncs: Vec<bool>,
    concurrency: usize,
    window: usize,
    /// Worker process counts of the drain section.
    drain_workers: Vec<usize>,
    /// Delayed tasks pending in the scheduler-memory run.
    delayed_pending: u64,
    sections: Vec<String>,
    scale: Vec<u64>,
    server: Option<PathBuf>,
    out: Option<PathBuf>,
    diagnose: bool,
    /// Also measure the concurrent callers on a three-server cluster (R3 task stream).
    replicated: bool,
    /// Profiling aid: run only this twin (ratios are then missing).
    only: Option<Impl>,
    command: String,
}

/// Scaling runs at least this big repeat only `--scale-reps` times (default 1).
const BIG_SCALE: u64 = 1_000_000;

const SECTIONS: [&str; 8] = [
    "enqueue", "drain", "latency", "memory", "delayed", "scale", "flow", "outbox",
];

impl Config {
    fn parse(args: &[String]) -> Result<Config, String> {
        let mut config = Config {
            quick: false,
            reps: 3,
            scale_reps: 0,
            syncs: vec![true, false],
            concurrency: 16,
            window: 256,
            drain_workers: vec![1, 2, 4],
            delayed_pending: 1_000_000,
            sections: SECTIONS.iter().map(|s| s.to_string()).collect(),
            scale: vec![10_000, 100_000, 1_000_000],
            server: None,
            out: None,
            diagnose: false,
            replicated: false,
            only: None,
            command: std::iter::once("jetq-bench".to_owned())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
        };
        let mut reps = None;
        let mut scale = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let mut value = || {
                iter.next()
                    .cloned()
                    .ok_or_else(|| format!("{arg} needs a value"))
            };
            let number = |text: String| {
                text.replace('_', "")
                    .parse::<u64>()
                    .map_err(|e| format!("{arg}: {e}"))
            };
            match arg.as_str() {
                "--quick" => config.quick = true,
                "--full" => config.quick = false,
                "--reps" => reps = Some(number(value()?)? as usize),
                "--scale-reps" => config.scale_reps = number(value()?)? as usize,
                "--concurrency" => config.concurrency = number(value()?)?.max(1) as usize,
                "--window" => config.window = number(value()?)?.max(1) as usize,
                "--sync" => {
                    config.syncs = match value()?.as_str() {
                        "always" => vec![true],
                        "default" => vec![false],
                        "both" => vec![true, false],
                        other => return Err(format!("--sync {other}: always, default or both")),
                    }
                }
                "--sections" => {
                    config.sections = value()?.split(',').map(str::to_owned).collect();
                    if let Some(bad) = config
                        .sections
                        .iter()
                        .find(|s| !SECTIONS.contains(&s.as_str()))
                    {
                        return Err(format!("unknown section {bad}; known: {SECTIONS:?}"));
                    }
                }
                "--scale" => {
                    scale = Some(
                        value()?
                            .split(',')
                            .map(|n| number(n.to_owned()))
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                }
                "--drain-workers" => {
                    config.drain_workers = value()?
                        .split(',')
                        .map(|n| number(n.to_owned()).map(|n| n.max(1) as usize))
                        .collect::<Result<Vec<_>, _>>()?
                }
                "--delayed-pending" => config.delayed_pending = number(value()?)?,
                "--server" => config.server = Some(PathBuf::from(value()?)),
                "--out" => config.out = Some(PathBuf::from(value()?)),
                "--diagnose" => config.diagnose = true,
                "--replicated" => config.replicated = true,
                "--only" => config.only = Some(Impl::parse(&value()?)?),
                "-h" | "--help" => return Err(usage()),
                other => return Err(format!("unknown argument {other}\n{}", usage())),
            }
        }
        if config.quick {
            config.scale = vec![10_000, 100_000];
            config.delayed_pending = 100_000;
        }
        config.reps = reps.unwrap_or(if config.quick { 1 } else { 3 }).max(1);
        if config.scale_reps == 0 {
            config.scale_reps = 1;
        }
        if let Some(scale) = scale {
            config.scale = scale;
        }
        Ok(config)
    }

    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }

    /// Sizes of the measurements: (sequential seconds, pipelined tasks, drain tasks) for
    /// `sync_interval: always` (true) or the default (false).
    fn sizes(&self, sync: bool) -> (Duration, u64, u64) {
        match (self.quick, sync) {
            (true, true) => (Duration::from_secs(1), 2_000, 2_000),
            (true, false) => (Duration::from_secs(1), 40_000, 40_000),
            (false, true) => (Duration::from_secs(3), 5_000, 5_000),
            (false, false) => (Duration::from_secs(3), 150_000, 50_000),
        }
    }

    /// Delayed-task accuracy run: (tasks, spread of their due times).
    fn delayed_sizes(&self) -> (u64, Duration) {
        if self.quick {
            (500, Duration::from_secs(3))
        } else {
            (2_000, Duration::from_secs(6))
        }
    }

    /// Sending time of a latency run at `rate`. 5,000/s is beyond what this machine's disk
    /// takes under `sync_interval: always`: that run is kept short, as its backlog must drain.
    fn latency_duration(&self, rate: u32, sync: bool) -> Duration {
        match (self.quick, rate < 1000, sync) {
            (true, true, _) => Duration::from_secs(3),
            (true, false, false) => Duration::from_secs(2),
            (true, false, true) => Duration::from_secs(1),
            (false, true, _) => Duration::from_secs(8),
            (false, false, false) => Duration::from_secs(4),
            (false, false, true) => Duration::from_secs(1),
        }
    }
}

fn usage() -> String {
    "usage: jetq-bench [--quick] [--reps N] [--sync always|default|both] [--concurrency N] \
     [--window N] [--drain-workers 1,2,4] \
     [--sections enqueue,drain,latency,memory,delayed,scale,flow,outbox] [--scale N,N,..] \
     [--scale-reps N] [--delayed-pending N] [--server PATH] [--out FILE] [--diagnose] \
     [--only jetq|raw] [--replicated]"
        .to_owned()
}

fn sync_label(sync: bool) -> &'static str {
    if sync {
        "sync_interval: always"
    } else {
        "server default fsync"
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let worker_process = args.first().map(String::as_str) == Some("worker");
    let current_thread = worker_process
        && std::env::var("JETQ_BENCH_WORKER_RUNTIME").as_deref() == Ok("current-thread");
    let mut builder = match current_thread {
        true => tokio::runtime::Builder::new_current_thread(),
        false => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if worker_process {
        match worker::WorkerArgs::parse(&args[1..]) {
            Ok(worker_args) => runtime.block_on(worker::run(worker_args)),
            Err(e) => Err(e),
        }
    } else if args.first().map(String::as_str) == Some("scheduler") {
        runtime.block_on(worker::run_scheduler(&args[1..]))
    } else {
        match Config::parse(&args) {
            Ok(config) => runtime.block_on(run(config)),
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jetq-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs progress on stderr.
struct Progress {
    start: Instant,
}

impl Progress {
    fn log(&self, text: &str) {
        let t = self.start.elapsed().as_secs();
        eprintln!("[{:>2}:{:02}] {text}", t / 60, t % 60);
    }
}

async fn run(config: Config) -> Result<(), String> {
    let spec = ServerSpec {
        binary: config.server.clone(),
    };
    let progress = Progress {
        start: Instant::now(),
    };
    let server_version = spec.start(true).await.version().to_owned();
    let load_at_start = load_average();
    let mut table = Table::default();
    let kib_to_mib = |kib: u64| kib as f64 / 1024.0;
    // jetq's worker processes read JETQ_*: a variable left in the shell changes "at its
    // defaults", so the report says which are set, and on which runtime the workers ran.
    let jetq_env: Vec<String> = std::env::vars()
        .filter(|(key, _)| {
            key.starts_with("JETQ_")
                && !key.starts_with("JETQ_BENCH_")
                && !key.starts_with("JETQ_TEST_")
        })
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let conditions = format!(
        "worker processes on tokio's {} runtime; JETQ_* worker variables set: {}",
        match std::env::var("JETQ_BENCH_WORKER_RUNTIME").as_deref() {
            Ok("current-thread") => "current-thread",
            _ => "multi-thread",
        },
        match jetq_env.is_empty() {
            true => "none".to_owned(),
            false => jetq_env.join(" "),
        }
    );
    progress.log(&format!(
        "nats-server {server_version}; {} repetition(s); sections {:?}; {conditions}",
        config.reps, config.sections,
    ));

    for rep in 0..config.reps {
        // Alternate which twin goes first, so drift over the run does not favour one.
        let order: Vec<Impl> = if rep % 2 == 0 {
            vec![Impl::Jetq, Impl::Raw]
        } else {
            vec![Impl::Raw, Impl::Jetq]
        };
        let order: Vec<Impl> = order
            .into_iter()
            .filter(|imp| config.only.is_none_or(|only| only == *imp))
            .collect();
        for &sync in &config.syncs {
            let group = sync_label(sync);
            let (seq_time, pipe_n, drain_n) = config.sizes(sync);
            if config.runs("enqueue") {
                for &imp in &order {
                    let name = "enqueue, one at a time (awaited)";
                    let value = measure::enqueue_sequential(&spec, sync, imp, seq_time).await;
                    table.record_rate(&progress, group, name, imp, value);
                }
                for &imp in &order {
                    // The twin publishes the very message jetq does (its two headers included);
                    // a second row holds the same jetq figure against a header-less raw publish.
                    let name = format!(
                        "enqueue, pipelined ({} in flight, {pipe_n} tasks)",
                        config.window
                    );
                    let bare = format!(
                        "enqueue, pipelined ({} in flight, {pipe_n} tasks), against a raw \
                         publish without headers",
                        config.window
                    );
                    let result =
                        measure::enqueue_pipelined(&spec, sync, imp, pipe_n, config.window, true)
                            .await;
                    if config.diagnose {
                        if let Ok(piped) = &result {
                            for (what, value) in [
                                ("producer CPU per task", piped.client_cpu_us),
                                ("nats-server CPU per task", piped.server_cpu_us),
                            ] {
                                let row = format!("{name}: {what}");
                                let ok = Ok(value);
                                table.record(&progress, group, &row, "µs", Better::Lower, imp, ok);
                            }
                        }
                    }
                    let value = result.map(|p| p.rate);
                    table.record_rate(&progress, group, &name, imp, value.clone());
                    if imp == Impl::Jetq {
                        table.record_rate(&progress, group, &bare, imp, value);
                    } else {
                        let bare_value = measure::enqueue_pipelined(
                            &spec,
                            sync,
                            imp,
                            pipe_n,
                            config.window,
                            false,
                        )
                        .await
                        .map(|p| p.rate);
                        table.record_rate(&progress, group, &bare, imp, bare_value);
                    }
                }
                // Web requests enqueuing at once, each awaiting its own task (issue 20's
                // target under sync_interval always: >= 3x raw).
                for &imp in &order {
                    let name = format!(
                        "enqueue, 64 concurrent callers each awaiting its task, {pipe_n} tasks"
                    );
                    let value = measure::enqueue_callers(&spec, sync, imp, pipe_n, 64).await;
                    table.record_rate(&progress, group, &name, imp, value);
                }
                if config.replicated && sync {
                    // The same on the production shape: three servers, the task stream
                    // replicated three times (the sync is the Raft log's; all three servers
                    // share this machine's two cores).
                    for &imp in &order {
                        let name = format!(
                            "enqueue, 64 concurrent callers each awaiting its task, {pipe_n} \
                             tasks, 3-server cluster, task stream R3"
                        );
                        let value =
                            measure::enqueue_callers_replicated(&spec, imp, pipe_n, 64).await;
                        table.record_rate(&progress, group, &name, imp, value);
                    }
                }
                if config.diagnose && config.only.is_none() {
                    // Both columns are jetq: the pipeline loop of `enqueue_many` against as many
                    // concurrent `enqueue` calls as its window.
                    let name = format!(
                        "diagnostic: jetq, {} concurrent enqueue calls (jetq column) vs \
                         enqueue_many (raw column), {pipe_n} tasks",
                        config.window
                    );
                    let concurrent =
                        measure::enqueue_concurrent(&spec, sync, pipe_n, config.window).await;
                    let many = measure::enqueue_pipelined(
                        &spec,
                        sync,
                        Impl::Jetq,
                        pipe_n,
                        config.window,
                        false,
                    )
                    .await
                    .map(|p| p.rate);
                    for (imp, value) in [(Impl::Jetq, concurrent), (Impl::Raw, many)] {
                        table.record_rate(&progress, group, &name, imp, value);
                    }
                }
                if config.diagnose {
                    // The "jetq" column holds raw publishes carrying jetq's two headers: the
                    // ratio is what the headers (dedup by Nats-Msg-Id) cost the server alone.
                    let name = format!(
                        "diagnostic: raw pipelined publish with jetq's headers (jetq column) vs \
                         without ({} in flight, {pipe_n} tasks)",
                        config.window
                    );
                    for (imp, headers) in [(Impl::Jetq, true), (Impl::Raw, false)] {
                        if config.only.is_some() {
                            break;
                        }
                        let result = measure::enqueue_pipelined(
                            &spec,
                            sync,
                            Impl::Raw,
                            pipe_n,
                            config.window,
                            headers,
                        )
                        .await;
                        if let Ok(piped) = &result {
                            let row = format!("{name}: nats-server CPU per task");
                            let ok = Ok(piped.server_cpu_us);
                            table.record(&progress, group, &row, "µs", Better::Lower, imp, ok);
                        }
                        let value = result.map(|p| p.rate);
                        table.record_rate(&progress, group, &name, imp, value);
                    }
                }
            }
            if config.runs("drain") {
                for &workers in &config.drain_workers {
                    for &imp in &order {
                        let name = format!(
                            "drain {drain_n} queued, {workers} worker process{} (concurrency {})",
                            if workers == 1 { "" } else { "es" },
                            config.concurrency
                        );
                        let result = measure::drain(
                            &spec,
                            sync,
                            imp,
                            workers,
                            drain_n,
                            config.concurrency,
                            config.diagnose,
                            false,
                            TaskRetention::WorkQueue,
                        )
                        .await;
                        if config.diagnose {
                            if let Ok(d) = &result {
                                record_diagnosis(
                                    &mut table, &progress, group, &name, imp, drain_n, d,
                                );
                            }
                        }
                        let value = result.map(|d| d.rate);
                        table.record_rate(&progress, group, &name, imp, value);
                    }
                }
            }
            if config.runs("drain") && config.only.is_none() {
                // Against raw JetStream at its best, not a twin held to jetq's settings: jetq's
                // default worker (concurrency 16, prefetch up to 512) vs a raw pull consumer asking for
                // 500 at a time and acking inline (issue 20's target: >= 0.75x).
                let name = format!(
                    "drain {drain_n} queued, 1 worker process: jetq at its defaults vs raw at its \
                     best (pull batch 500, inline plain ack)"
                );
                for (imp, concurrency) in [(Impl::Jetq, config.concurrency), (Impl::Raw, 500)] {
                    let result = measure::drain(
                        &spec,
                        sync,
                        imp,
                        1,
                        drain_n,
                        concurrency,
                        config.diagnose,
                        false,
                        TaskRetention::WorkQueue,
                    )
                    .await;
                    if config.diagnose {
                        if let Ok(d) = &result {
                            record_diagnosis(&mut table, &progress, group, &name, imp, drain_n, d);
                        }
                    }
                    let value = result.map(|d| d.rate);
                    table.record_rate(&progress, group, &name, imp, value);
                }
            }
            if config.runs("drain") && config.only.is_none() {
                // Issue 20's durable drain: jetq on a Limits task stream whose finished tasks
                // its workers purge below the ack floor (JETQ_TASK_RETENTION=limits, purge every
                // 100 ms, timed until the stream is empty) against raw JetStream at its best on
                // the WorkQueue stream (target under sync_interval always: >= 2x).
                let name = format!(
                    "drain {drain_n} queued, 1 worker process: jetq on a Limits task stream \
                     (JETQ_TASK_RETENTION=limits) vs raw at its best on WorkQueue (pull batch \
                     500, inline plain ack)"
                );
                for (imp, concurrency, retention) in [
                    (Impl::Jetq, config.concurrency, TaskRetention::Limits),
                    (Impl::Raw, 500, TaskRetention::WorkQueue),
                ] {
                    let result = measure::drain(
                        &spec,
                        sync,
                        imp,
                        1,
                        drain_n,
                        concurrency,
                        false,
                        false,
                        retention,
                    )
                    .await;
                    let value = result.map(|d| d.rate);
                    table.record_rate(&progress, group, &name, imp, value);
                }
            }
            if config.runs("drain") && config.only.is_none() {
                // What confirmed acks would cost a worker: both columns are the raw twin, one
                // worker process, confirmed (`double_ack`, handled concurrently) vs plain acks.
                let name = format!(
                    "diagnostic: raw drain {drain_n} queued, confirmed (double) acks in the jetq \
                     column vs plain acks, 1 worker process"
                );
                for (imp, double_ack) in [(Impl::Jetq, true), (Impl::Raw, false)] {
                    let result = measure::drain(
                        &spec,
                        sync,
                        Impl::Raw,
                        1,
                        drain_n,
                        config.concurrency,
                        false,
                        double_ack,
                        TaskRetention::WorkQueue,
                    )
                    .await;
                    let value = result.map(|d| d.rate);
                    table.record_rate(&progress, group, &name, imp, value);
                }
            }
            if config.runs("latency") {
                for rate in [500u32, 5000] {
                    for &imp in &order {
                        let duration = config.latency_duration(rate, sync);
                        let result = measure::latency(
                            &spec,
                            sync,
                            imp,
                            f64::from(rate),
                            duration,
                            config.concurrency,
                        )
                        .await;
                        let prefix = format!("enqueue→handler start @{rate}/s");
                        for (what, pick) in [
                            ("p50", (|l: &measure::Latency| l.p50_ms) as fn(&_) -> f64),
                            ("p99", |l| l.p99_ms),
                            ("p99.9", |l| l.p999_ms),
                            ("max", |l| l.max_ms),
                        ] {
                            table.record(
                                &progress,
                                group,
                                &format!("{prefix} {what}"),
                                "ms",
                                Better::Lower,
                                imp,
                                result.as_ref().map(pick).map_err(Clone::clone),
                            );
                        }
                        table.record(
                            &progress,
                            group,
                            &format!("{prefix}: enqueues completed per second"),
                            "tasks/s",
                            Better::Higher,
                            imp,
                            result
                                .as_ref()
                                .map(|l| l.achieved_rate)
                                .map_err(Clone::clone),
                        );
                        if let Ok(l) = &result {
                            progress.log(&format!(
                                "  ({} latency samples, {} enqueues failed)",
                                l.samples, l.failed
                            ));
                            if l.failed > 0 {
                                table.failures.push(format!(
                                    "{group} | {prefix} | {}: {} enqueues failed (ack timeout: \
                                     offered load above capacity)",
                                    imp.name(),
                                    l.failed
                                ));
                            }
                        }
                    }
                }
            }
        }
        if config.runs("memory") {
            let group = "worker memory (sync_interval: always)";
            for &imp in &order {
                for (concurrency, idle) in [(config.concurrency, true), (256, false)] {
                    let result = measure::memory(
                        &spec,
                        imp,
                        concurrency,
                        Duration::from_millis(100),
                        (concurrency as u64 * 20).max(2_000),
                    )
                    .await;
                    if idle {
                        table.record(
                            &progress,
                            group,
                            &format!("RSS idle (concurrency {concurrency}, empty queue)"),
                            "MiB",
                            Better::Lower,
                            imp,
                            result
                                .as_ref()
                                .map(|m| kib_to_mib(m.idle_kib))
                                .map_err(Clone::clone),
                        );
                    }
                    table.record(
                        &progress,
                        group,
                        &format!("peak RSS, all {concurrency} slots busy (100 ms tasks)"),
                        "MiB",
                        Better::Lower,
                        imp,
                        result.map(|m| kib_to_mib(m.busy_kib)),
                    );
                }
            }
        }
        if config.runs("flow") {
            // jetq only (issue 21): flow control's bookkeeping against a plain queue, same server.
            let group =
                "flow control, default fsync (docs/FLOW_CONTROL.md; limits never make a task wait)";
            let (duration, _, _) = config.sizes(false);
            let drain_n = if config.quick { 2_000 } else { 20_000 };
            let result = flow::measure(&spec, false, duration, drain_n).await;
            for (name, pick) in [
                (
                    "enqueue one by one, plain",
                    (|c: &flow::FlowCosts| c.enqueue_plain) as fn(&_) -> f64,
                ),
                ("enqueue one by one, unique key (scope active)", |c| {
                    c.enqueue_unique
                }),
                ("enqueue one by one, debounce key (a delayed task)", |c| {
                    c.enqueue_debounced
                }),
                ("drain, 1 in-process worker, plain", |c| c.drain_plain),
                (
                    "drain, 1 in-process worker, tasks at high, normal and low in turn",
                    |c| c.drain_three_levels,
                ),
                ("drain, 1 in-process worker, every task at high", |c| {
                    c.drain_high
                }),
                ("drain, 1 in-process worker, rate limit", |c| {
                    c.drain_rate_limited
                }),
                ("drain, 1 in-process worker, concurrency limit", |c| {
                    c.drain_concurrency_limited
                }),
            ] {
                table.record(
                    &progress,
                    group,
                    name,
                    "tasks/s",
                    Better::Higher,
                    Impl::Jetq,
                    result.as_ref().map(pick).map_err(Clone::clone),
                );
            }
        }
        if config.runs("outbox") {
            // jetq only (issue 23): transactional enqueue against a plain enqueue, same server.
            let group = "transactional enqueue (outbox + jetq-relay, PostgreSQL), default fsync";
            let (samples, n) = if config.quick {
                (100, 5_000)
            } else {
                (500, 50_000)
            };
            let result = outbox::measure(&spec, samples, n).await;
            for (name, unit, better, pick) in [
                (
                    "plain enqueue: call -> on the stream subject, p50",
                    "ms",
                    Better::Lower,
                    (|c: &outbox::OutboxCosts| c.plain_p50_ms) as fn(&_) -> f64,
                ),
                (
                    "plain enqueue: call -> on the stream subject, p99",
                    "ms",
                    Better::Lower,
                    |c| c.plain_p99_ms,
                ),
                (
                    "outbox: COMMIT returned -> on the stream subject, p50",
                    "ms",
                    Better::Lower,
                    |c| c.commit_p50_ms,
                ),
                (
                    "outbox: COMMIT returned -> on the stream subject, p99",
                    "ms",
                    Better::Lower,
                    |c| c.commit_p99_ms,
                ),
                ("plain enqueue_many", "tasks/s", Better::Higher, |c| {
                    c.plain_rate
                }),
                (
                    "one relay draining committed rows (batch 100)",
                    "tasks/s",
                    Better::Higher,
                    |c| c.relay_rate,
                ),
            ] {
                table.record(
                    &progress,
                    group,
                    name,
                    unit,
                    better,
                    Impl::Jetq,
                    result.as_ref().map(pick).map_err(Clone::clone),
                );
            }
        }
        if config.runs("delayed") {
            // jetq only: there is no raw twin of the scheduler in this harness.
            let group = "delayed tasks (jetq scheduler process + worker process)";
            let (n, spread) = config.delayed_sizes();
            let lead = Duration::from_secs(3);
            let name = format!(
                "fire accuracy, {n} tasks due over {}s (sync_interval: always): handler start − \
                 due time",
                spread.as_secs()
            );
            let result =
                measure::delayed_accuracy(&spec, true, n, lead, spread, config.concurrency).await;
            if let Ok(lateness) = &result {
                progress.log(&format!("  ({} delayed tasks ran)", lateness.samples));
            }
            for (what, pick) in [
                ("p50", (|l: &measure::Lateness| l.p50_ms) as fn(&_) -> f64),
                ("p99", |l| l.p99_ms),
                ("max", |l| l.max_ms),
            ] {
                table.record(
                    &progress,
                    group,
                    &format!("{name} {what}"),
                    "ms",
                    Better::Lower,
                    Impl::Jetq,
                    result.as_ref().map(pick).map_err(Clone::clone),
                );
            }
            if rep < config.scale_reps {
                let pending = config.delayed_pending;
                let result = measure::scheduler_memory(&spec, pending).await;
                for (what, pick) in [
                    (
                        "scheduler RSS, nothing pending",
                        (|m: &measure::SchedulerMemory| m.idle_kib) as fn(&_) -> u64,
                    ),
                    (
                        "scheduler RSS, all pending (5 s after the last enqueue)",
                        |m| m.pending_kib,
                    ),
                    ("scheduler peak RSS (VmHWM) over the run", |m| m.peak_kib),
                ] {
                    table.record(
                        &progress,
                        group,
                        &format!("{what}, {pending} delayed tasks due within the hour"),
                        "MiB",
                        Better::Lower,
                        Impl::Jetq,
                        result
                            .as_ref()
                            .map(|m| kib_to_mib(pick(m)))
                            .map_err(Clone::clone),
                    );
                }
                table.record(
                    &progress,
                    group,
                    &format!(
                        "delayed enqueue (enqueue_in, 256 at once, server default fsync), \
                         {pending} tasks"
                    ),
                    "tasks/s",
                    Better::Higher,
                    Impl::Jetq,
                    result.map(|m| m.enqueue_rate),
                );
            }
        }
        if config.runs("scale") {
            let group = "how cost grows (server default fsync, 1 worker process)";
            for &n in &config.scale {
                // A million tasks take minutes per run: those repeat only `--scale-reps` times.
                if n >= BIG_SCALE && rep >= config.scale_reps {
                    continue;
                }
                for &imp in &order {
                    let result = measure::drain(
                        &spec,
                        false,
                        imp,
                        1,
                        n,
                        config.concurrency,
                        config.diagnose,
                        false,
                        TaskRetention::WorkQueue,
                    )
                    .await;
                    if config.diagnose {
                        if let Ok(d) = &result {
                            let name = format!("drain rate, {n} queued");
                            record_diagnosis(&mut table, &progress, group, &name, imp, n, d);
                        }
                    }
                    table.record(
                        &progress,
                        group,
                        &format!("drain rate, {n} queued"),
                        "tasks/s",
                        Better::Higher,
                        imp,
                        result.as_ref().map(|d| d.rate).map_err(Clone::clone),
                    );
                    table.record(
                        &progress,
                        group,
                        &format!("worker peak RSS (VmHWM), {n} queued"),
                        "MiB",
                        Better::Lower,
                        imp,
                        result.map(|d| kib_to_mib(d.peak_rss_kib)),
                    );
                }
            }
        }
    }

    let elapsed = progress.start.elapsed();
    let load = format!(
        "load average (1/5/15 min) {load_at_start} at the start, {} at the end; {conditions}",
        load_average()
    );
    let text = report::render(&config, &server_version, elapsed, &load, &table);
    println!("{text}");
    if let Some(out) = &config.out {
        std::fs::write(out, &text).map_err(|e| format!("write {}: {e}", out.display()))?;
        progress.log(&format!("report written to {}", out.display()));
    }
    Ok(())
}

/// The `--diagnose` figures of a drain: pull requests and CPU per task.
fn record_diagnosis(
    table: &mut Table,
    progress: &Progress,
    group: &str,
    name: &str,
    imp: Impl,
    n: u64,
    drained: &measure::Drained,
) {
    if let Some(pulls) = drained.pulls {
        table.record(
            progress,
            group,
            &format!("{name}: tasks per pull request"),
            "tasks",
            Better::Higher,
            imp,
            Ok(n as f64 / pulls.max(1) as f64),
        );
    }
    let per_task = |seconds: f64| seconds * 1e6 / n.max(1) as f64;
    table.record(
        progress,
        group,
        &format!("{name}: worker CPU per task"),
        "µs",
        Better::Lower,
        imp,
        Ok(per_task(drained.worker_cpu)),
    );
    table.record(
        progress,
        group,
        &format!("{name}: nats-server CPU per task"),
        "µs",
        Better::Lower,
        imp,
        Ok(per_task(drained.server_cpu)),
    );
}

/// `/proc/loadavg`'s three load averages: how busy the shared machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
