//! The worker's prefetch against a real nats-server: tasks fetched ahead of free slots never sit
//! on a busy pod while another pod is idle — a task that waited longer than the buffer bound is
//! handed back (no attempt used) and runs on the idle worker long before the busy one is free —
//! and a queue of large tasks is prefetched within `JETQ_PREFETCH_BYTES`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use jetq_consumer::{TaskContext, WorkerSettings};
use jetq_tests::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn a_prefetched_task_waiting_behind_a_slow_one_goes_to_an_idle_worker() {
    init_logs();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, u64, u32, Instant)>();
    let make = |name: &'static str,
                tx: mpsc::UnboundedSender<(&'static str, u64, u32, Instant)>| {
        worker(&server)
            .settings(WorkerSettings {
                concurrency: 1,
                prefetch: Some(4),
                ..fast_settings()
            })
            .handler(move |job: Job, ctx: TaskContext| {
                let tx = tx.clone();
                async move {
                    tx.send((name, job.n, ctx.attempt(), Instant::now())).ok();
                    if job.note == "slow" {
                        tokio::time::sleep(Duration::from_secs(8)).await;
                    }
                    ok()
                }
            })
            .build()
    };
    let busy = make("busy", tx.clone()).await.unwrap();
    let (_stop_busy, _busy_run) = spawn_worker(busy);
    let producer = producer(&server).await;
    producer
        .enqueue(&Job {
            n: 1,
            note: "slow".into(),
        })
        .await
        .unwrap();
    let (who, n, _, _) = next(&mut rx, "the slow task to start").await;
    assert_eq!((who, n), ("busy", 1));
    // The busy worker's one slot is taken; it prefetches the next task into its buffer.
    let enqueued_at = Instant::now();
    producer
        .enqueue(&Job {
            n: 2,
            note: "quick".into(),
        })
        .await
        .unwrap();
    let idle = make("idle", tx).await.unwrap();
    let (_stop_idle, _idle_run) = spawn_worker(idle);
    let (who, n, attempt, at) = next(&mut rx, "the quick task to run").await;
    assert_eq!(
        (who, n, attempt),
        ("idle", 2, 1),
        "run by the idle worker, the hand-back no attempt"
    );
    let waited = at - enqueued_at;
    assert!(
        waited < Duration::from_secs(4),
        "not held until the slow task ended (8 s), nor until ack_wait (3 s) ran out: {waited:?}"
    );
}

/// Drains `count` tasks whose `note` is `size` bytes with a worker of `concurrency`, prefetch
/// up to 256 tasks and 256 KiB, and returns the batch of every pull request it sent on the
/// queue's `normal` level (the server's API subject, seen by a plain subscriber).
async fn pull_batches_draining(size: usize, count: u64, concurrency: usize) -> Vec<u64> {
    const BUDGET: u64 = 256 * 1024;
    let server = NatsServer::start().await;
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut requests = watcher
        .subscribe("$JS.API.CONSUMER.MSG.NEXT.>")
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let batches = Arc::new(Mutex::new(Vec::new()));
    let seen = batches.clone();
    let watching = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            // The queue's `normal` level, not `worker-work~high` (whose watches ask for 1) nor
            // the sweeper's advisories.
            if !request
                .subject
                .as_str()
                .ends_with(".JETQ_TASKS.worker-work")
            {
                continue;
            }
            // Every request is recorded: one this test cannot read counts as unbounded.
            let batch = serde_json::from_slice::<serde_json::Value>(&request.payload)
                .ok()
                .and_then(|body| body["batch"].as_u64())
                .unwrap_or(u64::MAX);
            seen.lock().unwrap().push(batch);
        }
    });
    let producer = producer(&server).await;
    let tasks: Vec<Job> = (0..count)
        .map(|n| Job {
            n,
            note: "x".repeat(size),
        })
        .collect();
    for result in within(
        WAIT,
        "the tasks to be enqueued",
        producer.enqueue_many(&tasks),
    )
    .await
    {
        result.unwrap();
    }
    let (done_tx, mut done) = mpsc::unbounded_channel::<()>();
    let counter = Arc::new(AtomicU64::new(0));
    let worker = worker(&server)
        .settings(WorkerSettings {
            concurrency,
            prefetch: Some(256),
            prefetch_bytes: Some(BUDGET),
            ..fast_settings()
        })
        .handler(move |_job: Job, _ctx: TaskContext| {
            let (counter, done_tx) = (counter.clone(), done_tx.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) + 1 == count {
                    done_tx.send(()).ok();
                }
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (stop, run) = spawn_worker(worker);
    next(&mut done, "every task to run").await;
    stop_worker(stop, run).await;
    watching.abort();
    let batches = batches.lock().unwrap().clone();
    assert!(!batches.is_empty(), "the worker's pull requests were seen");
    batches
}

#[tokio::test]
async fn a_queue_of_large_tasks_is_prefetched_within_the_byte_budget() {
    init_logs();
    // 32 KiB tasks: 256 KiB holds 7 of them (with subject and headers), so no request asks for
    // more than the 2 slots plus 8. Without the bound this drain's requests grow to 30-44.
    let large = pull_batches_draining(32 * 1024, 1_500, 2).await;
    let largest = large.iter().max().copied().unwrap_or(0);
    assert!(
        largest <= 10,
        "pull requests stay within 2 slots + 256 KiB of 32 KiB tasks: {large:?}"
    );
    // The same worker on 100-byte tasks grows its prefetch past that (what the bound cuts).
    let small = pull_batches_draining(100, 3_000, 2).await;
    let largest = small.iter().max().copied().unwrap_or(0);
    assert!(
        largest > 10,
        "small tasks are prefetched far beyond 10 at a time: {small:?}"
    );
}

#[tokio::test]
async fn a_queue_run_one_task_at_a_time_still_pulls_short_tasks_in_large_requests() {
    init_logs();
    // Concurrency 1: each delivery finds the slot idle (the last task ended long before the
    // next arrived), so no delivery ever waited in the buffer — the prefetch grew only from
    // buffered tasks that started at once, and this queue asked for 1-2 tasks per round trip
    // (5,000 tasks/s on the bench machine instead of 100,000).
    let batches = pull_batches_draining(100, 3_000, 1).await;
    let largest = batches.iter().max().copied().unwrap_or(0);
    assert!(
        largest >= 64,
        "a one-slot worker of short tasks grows its prefetch: {batches:?}"
    );
    assert!(
        batches.len() < 300,
        "3,000 tasks in far fewer requests than one per task or two: {} requests",
        batches.len()
    );
}
