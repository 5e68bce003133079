//! The cost per member of a batch against plain tasks, in the same run on the same server
//! (docs/WORKFLOWS.md, "Cost"): N tasks enqueued with `enqueue_many` and drained by one
//! in-process worker, then N members of one batch enqueued with `Batch::enqueue` and drained
//! until its `on_complete` callback ran. Ignored by default (a measurement, not a check); run it
//! in release mode:
//!
//! ```sh
//! cargo test --release -p jetq-tests --test workflow_cost -- --ignored --nocapture
//! ```
//!
//! `JETQ_COST_MEMBERS` sets N (default 10,000), `JETQ_COST_CONCURRENCY` the worker's
//! concurrency (default 64).

use std::time::{Duration, Instant};

use jetq_consumer::{TaskContext, TaskError, WorkerSettings};
use jetq_producer::BatchOptions;
use jetq_tests::{workflow::Done, *};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release mode with --ignored --nocapture"]
async fn batch_members_cost_against_plain_tasks() {
    let members = env("JETQ_COST_MEMBERS", 10_000);
    let concurrency = env("JETQ_COST_CONCURRENCY", 64) as usize;
    let server = NatsServer::start().await;
    let runs = RunCount::new();
    let (callbacks, mut callback) = tokio::sync::mpsc::unbounded_channel();
    let worker = worker(&server)
        .settings(WorkerSettings {
            concurrency,
            ack_wait: Duration::from_secs(30),
            ..fast_settings()
        })
        .handler(counting_handler(&runs, |_| ok()))
        .handler(move |done: Done, _ctx: TaskContext| {
            callbacks.send(done.batch).ok();
            std::future::ready(Ok::<(), TaskError>(()))
        })
        .build()
        .await
        .unwrap();
    let producer = producer(&server).await;
    let (stop, run) = spawn_worker(worker);
    let jobs: Vec<Job> = (0..members)
        .map(|n| Job {
            n,
            note: String::new(),
        })
        .collect();

    // Warm up: one small batch (opens the buckets, the catalog, the connection's paths).
    let mut warm = producer.batch(BatchOptions::new());
    for job in jobs.iter().take(10) {
        warm = warm.add(job);
    }
    warm.on_complete(&Done::default()).enqueue().await.unwrap();
    within(
        Duration::from_secs(60),
        "the warm-up callback",
        callback.recv(),
    )
    .await;
    let base = runs.get();

    let started = Instant::now();
    for result in producer.enqueue_many(&jobs).await {
        result.unwrap();
    }
    let plain_enqueue = started.elapsed();
    eventually(Duration::from_secs(600), "plain tasks drained", || async {
        (runs.get() >= base + members).then_some(())
    })
    .await;
    let plain = started.elapsed();

    let started = Instant::now();
    let mut batch = producer.batch(BatchOptions::new());
    for job in &jobs {
        batch = batch.add(job);
    }
    batch.on_complete(&Done::default()).enqueue().await.unwrap();
    let batch_enqueue = started.elapsed();
    let summary = within(
        Duration::from_secs(600),
        "the batch callback",
        callback.recv(),
    )
    .await
    .unwrap();
    let batched = started.elapsed();
    assert_eq!(summary.total, members);
    assert_eq!(summary.succeeded, members);

    let per = |d: Duration| d.as_secs_f64() * 1e6 / members as f64;
    println!(
        "{members} tasks, concurrency {concurrency}: plain enqueue {plain_enqueue:?} + drain = {plain:?} \
         ({:.1} µs/task); batch enqueue {batch_enqueue:?} + drain to callback = {batched:?} \
         ({:.1} µs/member); batch / plain = {:.2}; per member +{:.1} µs",
        per(plain),
        per(batched),
        batched.as_secs_f64() / plain.as_secs_f64(),
        per(batched) - per(plain)
    );
    stop_worker(stop, run).await;
}
