//! Debounce (PROTOCOL §11, docs/FLOW_CONTROL.md) against a real nats-server with a scheduler
//! releasing delayed tasks and a worker: a burst of enqueues of one key runs once, with the
//! last enqueue's arguments, no earlier than the debounce delay after the last enqueue; another
//! key is independent, and a later burst runs again.

use std::time::{Duration, Instant};

use jetq_consumer::TaskContext;
use jetq_producer::{EnqueueOptions, Unique, UniqueScope};
use jetq_tests::*;
use tokio::sync::mpsc;

fn debounced(key: &str) -> EnqueueOptions {
    let scope = UniqueScope::debounce(Duration::from_millis(1500)).unwrap();
    EnqueueOptions::new().unique(Unique::key(key).scope(scope))
}

#[tokio::test]
async fn a_burst_of_enqueues_runs_once_with_the_last_arguments_after_the_delay() {
    init_logs();
    let server = NatsServer::start().await;
    let _scheduler = RunningScheduler::start(scheduler(&server).release_delayed(true)).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, String, Instant)>();
    let worker = worker(&server)
        .handler(move |job: Job, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send((job.n, job.note, Instant::now())).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    let mut last = Instant::now();
    for n in 1..=5u64 {
        let enqueued = producer
            .enqueue_with(
                &Job {
                    n,
                    note: "search:acme".into(),
                },
                debounced("reindex:acme"),
            )
            .await
            .unwrap();
        assert!(
            !enqueued.duplicate,
            "a debounced enqueue replaces, it is no duplicate"
        );
        last = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producer
        .enqueue_with(
            &Job {
                n: 9,
                note: "search:other".into(),
            },
            debounced("reindex:other"),
        )
        .await
        .unwrap();
    let mut ran = Vec::new();
    while ran.len() < 2 {
        ran.push(next(&mut rx, "the debounced tasks to run").await);
    }
    ran.sort_by_key(|(n, _, _)| *n);
    assert_eq!(
        ran.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
        vec![5, 9],
        "one run per key, with the last enqueue's arguments"
    );
    let waited = ran[0].2 - last;
    assert!(
        waited >= Duration::from_millis(1400),
        "started {waited:?} after the last enqueue, before its 1.5 s delay"
    );
    // The four replaced tasks are released too and dropped without running: once the task
    // stream is empty every one of them has been handled, and none reached the handler.
    let js = raw_jetstream(&server).await;
    let delayed = jetq_contract::Subjects::default().delayed_stream();
    eventually(WAIT, "every replaced task released and handled", || async {
        (stream_len(&js, &delayed).await == 0 && stream_len(&js, "JETQ_TASKS").await == 0)
            .then_some(())
    })
    .await;
    assert!(rx.try_recv().is_err(), "a replaced task ran");
    // The key was released when its task started: a new burst runs again.
    producer
        .enqueue_with(
            &Job {
                n: 10,
                note: String::new(),
            },
            debounced("reindex:acme"),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut rx, "the next burst to run").await.0, 10);
}
