//! How a worker starts its tasks, against a real nats-server: short tasks are chained on one
//! runner (consumer/src/pull/runners.rs), but that never costs concurrency — tasks that await
//! still run `concurrency` side by side, and a task whose blocking work runs the documented
//! way (`spawn_blocking`, awaited) does not hold up the task queued behind it.
//!
//! A runner is started for a waiting task in two ways — its runner's task is suspended, or
//! nothing was taken from the backlog for `BUSY_AFTER` — and either alone passes these tests;
//! with neither (one runner chaining every task) both fail (checked).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jetq_consumer::{TaskContext, WorkerSettings};
use jetq_tests::*;
use tokio::sync::{mpsc, Barrier};

#[tokio::test]
async fn tasks_that_await_run_side_by_side_up_to_the_concurrency() {
    init_logs();
    const CONCURRENCY: usize = 8;
    let server = NatsServer::start().await;
    // Every task waits at a barrier for all eight: they end only if all eight run at once.
    let barrier = Arc::new(Barrier::new(CONCURRENCY));
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let worker = worker(&server)
        .settings(WorkerSettings {
            concurrency: CONCURRENCY,
            ..fast_settings()
        })
        .handler(move |job: Job, _ctx: TaskContext| {
            let (barrier, tx) = (barrier.clone(), tx.clone());
            async move {
                barrier.wait().await;
                tx.send(job.n).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let producer = producer(&server).await;
    let tasks: Vec<Job> = (0..CONCURRENCY as u64)
        .map(|n| Job {
            n,
            note: String::new(),
        })
        .collect();
    for result in producer.enqueue_many(&tasks).await {
        result.unwrap();
    }
    // Queued before the worker starts: they arrive together, and a worker that ran them on
    // one runner would wait at the barrier for ever.
    let (stop, run) = spawn_worker(worker);
    let mut done = Vec::new();
    for _ in 0..CONCURRENCY {
        done.push(
            next(
                &mut rx,
                "every task past the barrier (all eight running at once)",
            )
            .await,
        );
    }
    done.sort_unstable();
    assert_eq!(done, (0..CONCURRENCY as u64).collect::<Vec<_>>());
    stop_worker(stop, run).await;
}

#[tokio::test]
async fn a_task_in_spawn_blocking_does_not_hold_up_the_task_behind_it() {
    init_logs();
    const BLOCKS_FOR: Duration = Duration::from_millis(2_500);
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let worker = worker(&server)
        .settings(WorkerSettings {
            concurrency: 2,
            ..fast_settings()
        })
        .handler(move |job: Job, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send((job.n, Instant::now())).ok();
                if job.note == "block" {
                    // Blocking work the documented way: the handler awaits it, so its runner
                    // is suspended and the task queued behind it gets another runner.
                    tokio::task::spawn_blocking(|| std::thread::sleep(BLOCKS_FOR))
                        .await
                        .ok();
                }
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let producer = producer(&server).await;
    let tasks = [
        Job {
            n: 1,
            note: "block".into(),
        },
        Job {
            n: 2,
            note: "quick".into(),
        },
    ];
    for result in producer.enqueue_many(&tasks).await {
        result.unwrap();
    }
    // Queued before the worker starts, so the second waits behind the first on one runner.
    let (stop, run) = spawn_worker(worker);
    let (first, blocked_at) = next(&mut rx, "the blocking task to start").await;
    assert_eq!(first, 1, "tasks start in queue order");
    let (second, started_at) = next(&mut rx, "the quick task to start").await;
    assert_eq!(second, 2);
    let behind = started_at - blocked_at;
    assert!(
        behind < BLOCKS_FOR / 2,
        "the quick task started on another runner while the first awaited its blocking work, \
         not after it: {behind:?} after the first"
    );
    stop_worker(stop, run).await;
}
