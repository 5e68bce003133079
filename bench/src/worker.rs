//! The `worker` subcommand: one worker process (jetq `Worker` or the raw pull-and-ack twin),
//! driven by the parent over stdin/stdout.
//!
//! Protocol (one line each): the child prints `READY` once connected and provisioned; it starts
//! pulling when it reads `GO`; on `REPORT` it prints
//! `REPORT <tasks> <latency samples> <p50 µs> <p99 µs> <p99.9 µs> <max µs>`; it exits at end of
//! input (the parent usually kills it).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::{stream::FuturesUnordered, StreamExt};
use jetq_consumer::{TaskContext, TaskError, Worker};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

use crate::{
    stats::percentile,
    workload::{now_us, stream_name, SendEmail, RAW_DURABLE, WARMUP_USER},
    Impl,
};

/// What the parent asks of a worker process.
#[derive(Debug, Clone)]
pub(crate) struct WorkerArgs {
    pub imp: Impl,
    pub url: String,
    pub concurrency: usize,
    /// Record handler start − enqueue time of every non-warm-up task.
    pub latency: bool,
    /// Simulated work per task (0: a no-op handler).
    pub hold: Duration,
    /// Raw twin only: confirmed acks (`double_ack`, a request answered by the server) instead
    /// of plain ones; the messages of a batch are then handled concurrently, as jetq does.
    pub double_ack: bool,
}

impl WorkerArgs {
    /// Command-line arguments that reproduce these settings after `worker`.
    pub(crate) fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--impl".to_owned(),
            self.imp.name().to_owned(),
            "--url".to_owned(),
            self.url.clone(),
            "--concurrency".to_owned(),
            self.concurrency.to_string(),
            "--hold-ms".to_owned(),
            self.hold.as_millis().to_string(),
        ];
        if self.latency {
            args.push("--latency".to_owned());
        }
        if self.double_ack {
            args.push("--double-ack".to_owned());
        }
        args
    }

    /// Parses what [`WorkerArgs::to_args`] wrote.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut parsed = WorkerArgs {
            imp: Impl::Jetq,
            url: String::new(),
            concurrency: 16,
            latency: false,
            hold: Duration::ZERO,
            double_ack: false,
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let mut value = || {
                iter.next()
                    .cloned()
                    .ok_or_else(|| format!("{arg} needs a value"))
            };
            match arg.as_str() {
                "--impl" => parsed.imp = Impl::parse(&value()?)?,
                "--url" => parsed.url = value()?,
                "--concurrency" => {
                    parsed.concurrency = value()?.parse().map_err(|e| format!("{arg}: {e}"))?
                }
                "--hold-ms" => {
                    parsed.hold =
                        Duration::from_millis(value()?.parse().map_err(|e| format!("{arg}: {e}"))?)
                }
                "--latency" => parsed.latency = true,
                "--double-ack" => parsed.double_ack = true,
                other => return Err(format!("unknown worker argument {other}")),
            }
        }
        if parsed.url.is_empty() {
            return Err("worker needs --url".into());
        }
        Ok(parsed)
    }
}

/// What every handler call does: optional simulated work, a count, a latency sample.
struct Recorder {
    count: AtomicU64,
    latency: bool,
    hold: Duration,
    samples: Mutex<Vec<u64>>,
}

impl Recorder {
    /// Called at handler start with the decoded arguments.
    async fn on_task(&self, email: &SendEmail) {
        if self.latency && email.user_id != WARMUP_USER {
            let latency = now_us().saturating_sub(email.sent_at_us);
            self.samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(latency);
        }
        if !self.hold.is_zero() {
            tokio::time::sleep(self.hold).await;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> String {
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        samples.sort_unstable();
        let at = |q: f64| percentile(&samples, q).unwrap_or(0);
        format!(
            "REPORT {} {} {} {} {} {}",
            self.count.load(Ordering::Relaxed),
            samples.len(),
            at(0.50),
            at(0.99),
            at(0.999),
            samples.last().copied().unwrap_or(0)
        )
    }
}

/// Runs the worker process. Errors end the process with a message on stderr.
pub(crate) async fn run(args: WorkerArgs) -> Result<(), String> {
    let recorder = Arc::new(Recorder {
        count: AtomicU64::new(0),
        latency: args.latency,
        hold: args.hold,
        samples: Mutex::new(Vec::new()),
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();

    match args.imp {
        Impl::Jetq => {
            let handler_recorder = recorder.clone();
            // From the environment, so a run can try a worker setting (`JETQ_PREFETCH=1024
            // jetq-bench ...`); the URL and concurrency are the bench's.
            let worker = Worker::from_env()
                .map_err(|e| format!("jetq worker settings: {e}"))?
                .url(args.url.clone())
                .concurrency(args.concurrency)
                // Used only when the stream has Limits retention (the durable-drain rows);
                // it overrides JETQ_PURGE_INTERVAL.
                .purge_interval(Duration::from_millis(100))
                .handler(move |email: SendEmail, _ctx: TaskContext| {
                    let recorder = handler_recorder.clone();
                    async move {
                        recorder.on_task(&email).await;
                        Ok::<(), TaskError>(())
                    }
                })
                .build()
                .await
                .map_err(|e| format!("jetq worker: {e}"))?;
            println!("READY");
            wait_for_go(&mut lines).await?;
            tokio::spawn(worker.run_until(std::future::pending()));
        }
        Impl::Raw => {
            let client = async_nats::connect(args.url.as_str())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let js = jetstream::new(client);
            let stream = js
                .get_stream(stream_name())
                .await
                .map_err(|e| format!("get stream: {e}"))?;
            let consumer: PullConsumer = stream
                .get_consumer(RAW_DURABLE)
                .await
                .map_err(|e| format!("get consumer: {e}"))?;
            println!("READY");
            wait_for_go(&mut lines).await?;
            tokio::spawn(raw_loop(
                consumer,
                args.concurrency,
                args.double_ack,
                recorder.clone(),
            ));
        }
    }
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "REPORT" {
            println!("{}", recorder.report());
        }
    }
    // End of input: leave at once (a profiler wrapping this process then writes its data).
    std::process::exit(0)
}

async fn wait_for_go(lines: &mut Lines<BufReader<Stdin>>) -> Result<(), String> {
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if line.trim() == "GO" => return Ok(()),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return Err("stdin closed before GO".into()),
        }
    }
}

/// The raw twin: a durable pull consumer fetching batches of `batch` messages, decoding each
/// and acking it with a plain ack (a confirmed one with `double_ack`). With `hold` > 0 (the
/// RSS-at-full-concurrency run) or `double_ack`, the messages of a batch are handled
/// concurrently.
async fn raw_loop(consumer: PullConsumer, batch: usize, double_ack: bool, recorder: Arc<Recorder>) {
    loop {
        let messages = consumer
            .batch()
            .max_messages(batch)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(err) => {
                eprintln!("raw worker: pull request failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if recorder.hold.is_zero() && !double_ack {
            while let Some(Ok(message)) = messages.next().await {
                handle_raw(&recorder, message, false).await;
            }
        } else {
            let mut running = FuturesUnordered::new();
            loop {
                tokio::select! {
                    next = messages.next() => match next {
                        Some(Ok(message)) => {
                            running.push(handle_raw(&recorder, message, double_ack))
                        }
                        _ => break,
                    },
                    Some(()) = running.next(), if !running.is_empty() => {}
                }
            }
            while running.next().await.is_some() {}
        }
    }
}

async fn handle_raw(recorder: &Recorder, message: jetstream::Message, double_ack: bool) {
    match serde_json::from_slice::<SendEmail>(&message.payload) {
        Ok(email) => recorder.on_task(&email).await,
        Err(err) => eprintln!("raw worker: undecodable payload: {err}"),
    }
    let acked = if double_ack {
        message.double_ack().await
    } else {
        message.ack().await
    };
    if let Err(err) = acked {
        eprintln!("raw worker: ack failed: {err}");
    }
}

/// The `scheduler` subcommand: a jetq scheduler (no schedules, releasing delayed tasks) in its
/// own process, so its memory can be read. Same protocol as a worker: `READY`, `GO`, `REPORT`
/// (all counts 0).
pub(crate) async fn run_scheduler(args: &[String]) -> Result<(), String> {
    let url = match args {
        [flag, url] if flag == "--url" => url.clone(),
        _ => return Err("usage: jetq-bench scheduler --url URL".into()),
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let scheduler = jetq_scheduler::Scheduler::builder()
        .url(url)
        .build()
        .await
        .map_err(|e| format!("jetq scheduler: {e}"))?;
    println!("READY");
    wait_for_go(&mut lines).await?;
    tokio::spawn(scheduler.run_until(std::future::pending()));
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "REPORT" {
            println!("REPORT 0 0 0 0 0 0");
        }
    }
    std::process::exit(0)
}
