//! A worker process for the flow-control tests (tests/tests/flow_*.rs): runs `Job` tasks under
//! the limits its environment asks for and reports each start and finish on core NATS:
//! `test.started` / `test.done` with `"<worker> <n> <attempt> <id> <unix micros> <limit key>"`
//! (`-` for no limit key). The handler sleeps `Job::note` = `sleep:<ms>` milliseconds.
//!
//! - `TEST_RATE`, `TEST_BURST`: a rate limit on `Job` (tasks per second, burst);
//! - `TEST_CONCURRENCY`: a concurrency limit on `Job`; `TEST_PER_KEY=1` makes both per limit key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jetq_consumer::{ConcurrencyLimit, Limits, RateLimit, TaskContext, TaskError, Worker};
use jetq_tests::Job;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("flow_worker: {message}");
    std::process::exit(1);
}

fn micros_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    jetq_tests::init_logs();
    let builder = Worker::from_env().unwrap_or_else(|err| fail(err));
    let per_key = std::env::var("TEST_PER_KEY").as_deref() == Ok("1");
    let mut limits = Limits::new();
    if let Some(rate) = env::<f64>("TEST_RATE") {
        let burst = env::<u32>("TEST_BURST").unwrap_or(1);
        let mut rate = RateLimit::new(rate, burst).unwrap_or_else(|err| fail(err));
        if per_key {
            rate = rate.per_key();
        }
        limits = limits.rate(rate);
    }
    if let Some(max) = env::<u32>("TEST_CONCURRENCY") {
        let mut concurrency = ConcurrencyLimit::new(max).unwrap_or_else(|err| fail(err));
        if per_key {
            concurrency = concurrency.per_key();
        }
        limits = limits.concurrency(concurrency);
    }
    let url = std::env::var("JETQ_NATS_URL").unwrap_or_default();
    let reporter = async_nats::connect(url.as_str())
        .await
        .unwrap_or_else(|err| fail(format!("cannot connect reporter: {err}")));
    let name = std::env::var("TEST_WORKER_NAME").unwrap_or_else(|_| "worker".into());
    let handler_reporter = reporter.clone();
    let handler_name = name.clone();
    let worker = builder
        .handler(move |job: Job, ctx: TaskContext| {
            let reporter = handler_reporter.clone();
            let name = handler_name.clone();
            async move {
                let key = ctx.header("Jetq-Limit-Key").unwrap_or("-").to_owned();
                let report = |at: u128| {
                    format!("{name} {} {} {} {at} {key}", job.n, ctx.attempt(), ctx.id())
                };
                let _ = reporter
                    .publish("test.started", report(micros_now()).into())
                    .await;
                let _ = reporter.flush().await;
                if let Some(ms) = job.note.strip_prefix("sleep:").and_then(|v| v.parse().ok()) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let _ = reporter
                    .publish("test.done", report(micros_now()).into())
                    .await;
                let _ = reporter.flush().await;
                Ok::<(), TaskError>(())
            }
        })
        .limits::<Job>(limits)
        .build()
        .await
        .unwrap_or_else(|err| fail(err));
    let _ = reporter.publish("test.ready", name.into()).await;
    let _ = reporter.flush().await;
    worker.run().await;
}
