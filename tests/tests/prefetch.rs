//! The worker's prefetch against a real nats-server: tasks fetched ahead of free slots never sit
//! on a busy pod while another pod is idle — a task that waited longer than the buffer bound is
//! handed back (no attempt used) and runs on the idle worker long before the busy one is free.

use std::time::{Duration, Instant};

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
