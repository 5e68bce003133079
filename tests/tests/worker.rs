//! Worker behaviour against a real nats-server: success, retries with backoff, dead letters
//! after exactly max attempts with every error, fatal and undecodable tasks, timeouts, panics,
//! heartbeats for long tasks, unknown task types, shutdown hand-back and startup errors.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use jetq_consumer::{TaskContext, TaskError, WorkerError};
use jetq_contract::{headers, FailureRecord, RetryPolicy, Task, TaskOptions};
use jetq_producer::{EnqueueOptions, RawTask};
use jetq_tests::*;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[tokio::test]
async fn a_successful_task_runs_once_and_leaves_the_stream() {
    init_logs();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(recording_handler(tx, |_| ok()))
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let enqueued = producer(&server)
        .await
        .enqueue(&Job {
            n: 5,
            note: String::new(),
        })
        .await
        .unwrap();
    let got = next(&mut rx, "the task to run").await;
    assert_eq!(
        (got.id.as_str(), got.n, got.attempt),
        (enqueued.id.as_str(), 5, 1)
    );
    let js = raw_jetstream(&server).await;
    common::await_drained(&js).await;
    assert!(rx.try_recv().is_err(), "ran exactly once");
}

#[tokio::test]
async fn a_failing_task_is_retried_with_backoff_and_then_succeeds() {
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(recording_handler(tx, |ctx| {
            if ctx.attempt() < 3 {
                return Err(TaskError::retry("provider unavailable"));
            }
            ok()
        }))
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    producer(&server)
        .await
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    let attempts: Vec<Seen> = vec![
        next(&mut rx, "attempt 1").await,
        next(&mut rx, "attempt 2").await,
        next(&mut rx, "attempt 3").await,
    ];
    assert_eq!(
        attempts.iter().map(|s| s.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // Job's policy is a constant 50 ms: NAK with delay, not an ack_wait (3 s) expiry.
    let gap = attempts[1].at - attempts[0].at;
    assert!(
        gap >= Duration::from_millis(45) && gap < Duration::from_millis(2500),
        "{gap:?}"
    );
    let js = raw_jetstream(&server).await;
    common::await_drained(&js).await;
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0);
}

/// A task of its own queue whose retries back off exponentially, without jitter, so every gap
/// between attempts has an exact lower bound.
#[derive(Debug, Serialize, Deserialize)]
struct Backoff {
    n: u64,
}

impl Task for Backoff {
    const NAME: &'static str = "backoff";
    const QUEUE: &'static str = "backoff";
    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(4)
            .timeout(Duration::from_secs(10))
            .retry(
                RetryPolicy::exponential(Duration::from_millis(200))
                    .max(Duration::from_secs(10))
                    .jitter(0.0),
            )
    }
}

/// Issue #27: every integration test used a constant policy, so a worker that computed the
/// delay of attempt 1 for every attempt (`retry.delay(1)`) passed them all. Here the gaps must
/// grow as the policy says (200, 400, 800 ms): never shorter (the server redelivers a NAK with
/// delay only after the delay), and not much longer either (a NAK without delay is far too
/// early, an ack_wait expiry far too late).
#[tokio::test]
async fn retries_wait_the_exponential_backoff_of_each_attempt() {
    init_logs();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |_task: Backoff, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send((ctx.attempt(), Instant::now())).ok();
                if ctx.attempt() < 4 {
                    return Err(TaskError::retry("provider unavailable"));
                }
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    producer(&server)
        .await
        .enqueue(&Backoff { n: 1 })
        .await
        .unwrap();
    let mut attempts = Vec::new();
    for what in ["attempt 1", "attempt 2", "attempt 3", "attempt 4"] {
        attempts.push(next(&mut rx, what).await);
    }
    assert_eq!(
        attempts.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let policy = Backoff::options().retry;
    // Slack above the delay: the NAK, the redelivery and the pull, on a busy 2-core machine;
    // still well below fast_settings' ack_wait (3 s) for the longest gap (800 ms).
    let slack = Duration::from_millis(900);
    let ack_wait = fast_settings().ack_wait;
    let mut gaps = Vec::new();
    for (attempt, pair) in (1u32..).zip(attempts.windows(2)) {
        let gap = pair[1].1 - pair[0].1;
        let delay = policy.delay(attempt);
        gaps.push((gap, delay));
        assert!(
            gap >= delay,
            "retry after attempt {attempt} came {gap:?} later, before its backoff of {delay:?} \
             (gaps and delays so far: {gaps:?})"
        );
        assert!(
            gap <= delay + slack && delay + slack < ack_wait,
            "retry after attempt {attempt} came {gap:?} later, far beyond its backoff of \
             {delay:?} (gaps and delays so far: {gaps:?})"
        );
    }
    eprintln!("gaps between attempts (measured, policy): {gaps:?}");
    let js = raw_jetstream(&server).await;
    common::await_drained(&js).await;
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0);
}

#[tokio::test]
async fn retry_after_from_the_handler_sets_the_delay() {
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(recording_handler(tx, |ctx| {
            if ctx.attempt() == 1 {
                return Err(TaskError::retry_after(
                    Duration::from_millis(1200),
                    "429 Too Many Requests",
                ));
            }
            ok()
        }))
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    producer(&server)
        .await
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    let first = next(&mut rx, "attempt 1").await;
    let second = next(&mut rx, "attempt 2").await;
    let gap = second.at - first.at;
    assert!(
        gap >= Duration::from_millis(1150),
        "retried too early: {gap:?}"
    );
    assert!(
        gap < Duration::from_millis(2900),
        "waited for ack_wait instead: {gap:?}"
    );
}

#[tokio::test]
async fn a_poison_task_is_dead_lettered_after_exactly_max_attempts_with_every_error() {
    init_logs();
    let server = NatsServer::start().await;
    let runs = RunCount::new();
    let worker = worker(&server)
        .handler(counting_handler(&runs, |ctx| {
            Err(TaskError::retry(format!(
                "smtp refused on attempt {}",
                ctx.attempt()
            )))
        }))
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    let enqueued = producer
        .enqueue_with(
            &Job {
                n: 9,
                note: "poison".into(),
            },
            EnqueueOptions::new().trace_context(
                "00-11111111111111111111111111111111-2222222222222222-01",
                None,
            ),
        )
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    assert_eq!(runs.get(), 3, "Job allows exactly 3 attempts");
    let letter = &dead[0];
    assert_eq!(letter.subject.as_str(), "jetq.dead.work.job");
    let body: Job = serde_json::from_slice(&letter.payload).unwrap();
    assert_eq!(
        body,
        Job {
            n: 9,
            note: "poison".into()
        },
        "payload kept verbatim"
    );
    assert_eq!(
        header(letter, headers::TASK_ID).as_deref(),
        Some(enqueued.id.as_str())
    );
    assert_eq!(
        header(letter, headers::DEAD_REASON).as_deref(),
        Some("exhausted")
    );
    assert_eq!(header(letter, headers::ATTEMPTS).as_deref(), Some("3"));
    assert!(
        header(letter, headers::ENQUEUED_AT).is_some(),
        "original headers kept"
    );
    assert!(
        header(letter, headers::TRACEPARENT)
            .unwrap()
            .contains("1111"),
        "trace link kept"
    );
    let record: FailureRecord =
        serde_json::from_str(&header(letter, headers::FAILURE).unwrap()).unwrap();
    assert_eq!(record.attempts, 3);
    let errors: Vec<&str> = record.history.iter().map(|a| a.error.as_str()).collect();
    assert_eq!(
        errors,
        vec![
            "smtp refused on attempt 1",
            "smtp refused on attempt 2",
            "smtp refused on attempt 3"
        ]
    );
    assert!(record.error.contains("attempt 3"), "{}", record.error);
    common::await_drained(&js).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs.get(), 3, "no attempt after the dead letter");
}

#[tokio::test]
async fn per_task_max_attempts_header_overrides_the_type() {
    let server = NatsServer::start().await;
    let runs = RunCount::new();
    let worker = worker(&server)
        .handler(counting_handler(&runs, |_| Err(TaskError::retry("nope"))))
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    producer(&server)
        .await
        .enqueue_with(
            &Job {
                n: 1,
                note: String::new(),
            },
            EnqueueOptions::new().max_attempts(1),
        )
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    assert_eq!(header(&dead[0], headers::ATTEMPTS).as_deref(), Some("1"));
    assert_eq!(runs.get(), 1);
}

#[tokio::test]
async fn fatal_errors_and_undecodable_payloads_go_to_dead_letters_at_once() {
    let server = NatsServer::start().await;
    let runs = RunCount::new();
    let worker = worker(&server)
        .handler(counting_handler(&runs, |_| {
            Err(TaskError::fatal("address does not exist"))
        }))
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    assert_eq!(
        header(&dead[0], headers::DEAD_REASON).as_deref(),
        Some("fatal")
    );
    assert_eq!(header(&dead[0], headers::ATTEMPTS).as_deref(), Some("1"));
    let record: FailureRecord =
        serde_json::from_str(&header(&dead[0], headers::FAILURE).unwrap()).unwrap();
    assert_eq!(record.error, "address does not exist");

    producer
        .enqueue_raw(RawTask {
            queue: "work".into(),
            task: "job".into(),
            payload: Bytes::from_static(b"{\"n\": \"not a number\"}"),
            options: Default::default(),
        })
        .await
        .unwrap();
    let dead = dead_letters(&js, 2).await;
    let letter = &dead[1];
    assert_eq!(
        header(letter, headers::DEAD_REASON).as_deref(),
        Some("undecodable")
    );
    let record: FailureRecord =
        serde_json::from_str(&header(letter, headers::FAILURE).unwrap()).unwrap();
    assert!(
        record.error.contains("invalid type"),
        "decode error kept: {}",
        record.error
    );
    assert_eq!(&letter.payload[..], b"{\"n\": \"not a number\"}");
    assert_eq!(
        runs.get(),
        1,
        "the undecodable task never reached the handler"
    );
}

#[derive(Debug, Serialize, Deserialize)]
struct Slow;
impl Task for Slow {
    const NAME: &'static str = "slow";
    const QUEUE: &'static str = "work";
    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(2)
            .timeout(Duration::from_millis(300))
            .retry(jetq_contract::RetryPolicy::constant(Duration::from_millis(10)).jitter(0.0))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Panics;
impl Task for Panics {
    const NAME: &'static str = "panics";
    const QUEUE: &'static str = "work";
    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(2)
            .retry(jetq_contract::RetryPolicy::constant(Duration::from_millis(10)).jitter(0.0))
    }
}

#[tokio::test]
async fn timeouts_and_panics_are_failed_attempts_and_the_worker_keeps_going() {
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(|_slow: Slow, _ctx: TaskContext| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            ok()
        })
        .handler(|_p: Panics, ctx: TaskContext| async move {
            if ctx.attempt() > 0 {
                panic!("boom on attempt {}", ctx.attempt());
            }
            ok()
        })
        .handler(recording_handler(tx, |_| ok()))
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    producer.enqueue(&Slow).await.unwrap();
    producer.enqueue(&Panics).await.unwrap();
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 2).await;
    let by_task = |name: &str| {
        dead.iter()
            .find(|m| m.subject.as_str().ends_with(name))
            .map(|m| {
                serde_json::from_str::<FailureRecord>(&header(m, headers::FAILURE).unwrap())
                    .unwrap()
            })
            .unwrap_or_else(|| panic!("no dead letter for {name}"))
    };
    let slow = by_task("slow");
    assert_eq!(slow.history.len(), 2);
    assert!(slow
        .history
        .iter()
        .all(|a| a.outcome == jetq_contract::AttemptOutcome::Timeout));
    assert!(
        slow.error.contains("timed out after 300ms"),
        "{}",
        slow.error
    );
    let panics = by_task("panics");
    assert!(panics
        .history
        .iter()
        .all(|a| a.outcome == jetq_contract::AttemptOutcome::Panic));
    assert!(
        panics.error.contains("boom on attempt 2"),
        "{}",
        panics.error
    );
    // The worker survived both: it still runs tasks.
    producer
        .enqueue(&Job {
            n: 77,
            note: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut rx, "a task after the panics").await.n, 77);
}

#[tokio::test]
async fn a_task_longer_than_ack_wait_is_kept_alive_by_heartbeats() {
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // ack_wait 3 s; the task takes 7 s: without heartbeats it would be redelivered twice.
    let worker = worker(&server)
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(("start", ctx.attempt())).ok();
                tokio::time::sleep(Duration::from_millis(job.n)).await;
                tx.send(("end", ctx.attempt())).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    producer(&server)
        .await
        .enqueue(&Job {
            n: 7000,
            note: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut rx, "start").await, ("start", 1));
    assert_eq!(
        next(&mut rx, "end").await,
        ("end", 1),
        "no redelivery while the task ran"
    );
    let js = raw_jetstream(&server).await;
    common::await_drained(&js).await;
    assert!(rx.try_recv().is_err(), "ran once");
}

#[tokio::test]
async fn an_unknown_task_type_is_handed_back_until_a_worker_knows_it() {
    let server = NatsServer::start().await;
    // A worker that only knows Job, on the same queue as the new type.
    let old = worker(&server)
        .unknown_task_grace(Duration::from_secs(30))
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    let (stop_old, old_run) = spawn_worker(old);
    let producer = producer(&server).await;
    producer
        .enqueue_raw(RawTask {
            queue: "work".into(),
            task: "new_feature".into(),
            payload: Bytes::from_static(b"{}"),
            options: Default::default(),
        })
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    // The old worker hands it back (it is redelivered, not dropped or dead-lettered).
    let consumer_info = || {
        let js = js.clone();
        async move {
            let stream = js.get_stream("JETQ_TASKS").await.unwrap();
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer("worker-work").await.unwrap();
            consumer.info().await.unwrap().clone()
        }
    };
    eventually(WAIT, "the unknown task to be redelivered", || async {
        (consumer_info().await.num_redelivered >= 1).then_some(())
    })
    .await;
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0);
    let _ = stop_old.send(());
    within(WAIT, "old worker to stop", old_run).await.unwrap();

    #[derive(Serialize, Deserialize)]
    struct NewFeature {}
    impl Task for NewFeature {
        const NAME: &'static str = "new_feature";
        const QUEUE: &'static str = "work";
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let new = worker(&server)
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .handler(move |_t: NewFeature, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(ctx.attempt()).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop_new, _new_run) = spawn_worker(new);
    let attempt = next(&mut rx, "the new worker to run the task").await;
    // It was handed back at least once before, and hand-backs are not attempts.
    assert_eq!(
        attempt, 1,
        "hand-backs of an unknown type do not use up attempts"
    );
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0);
}

#[tokio::test]
async fn an_unknown_task_type_is_dead_lettered_after_the_grace_period() {
    let server = NatsServer::start().await;
    let worker = worker(&server)
        .unknown_task_grace(Duration::from_secs(1))
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let started = Instant::now();
    producer(&server)
        .await
        .enqueue_raw(RawTask {
            queue: "work".into(),
            task: "retired_task".into(),
            payload: Bytes::from_static(b"{\"x\":1}"),
            options: Default::default(),
        })
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the grace period"
    );
    assert_eq!(
        header(&dead[0], headers::DEAD_REASON).as_deref(),
        Some("unknown-task")
    );
    assert_eq!(dead[0].subject.as_str(), "jetq.dead.work.retired_task");
}

#[tokio::test]
async fn shutdown_lets_short_tasks_finish_and_hands_long_ones_to_another_worker_at_once() {
    init_logs();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let make = |name: &'static str,
                tx: mpsc::UnboundedSender<(&'static str, &'static str, u64, u32)>| {
        worker(&server)
            .ack_wait(Duration::from_secs(20))
            .shutdown_grace(Duration::from_millis(1500))
            .handler(move |job: Job, ctx: TaskContext| {
                let tx = tx.clone();
                async move {
                    tx.send((name, "start", job.n, ctx.attempt())).ok();
                    tokio::time::sleep(Duration::from_millis(if job.note == "long" {
                        60_000
                    } else {
                        500
                    }))
                    .await;
                    tx.send((name, "end", job.n, ctx.attempt())).ok();
                    ok()
                }
            })
    };
    let first = make("first", tx.clone()).build().await.unwrap();
    let (stop_first, first_run) = spawn_worker(first);
    let producer = producer(&server).await;
    producer
        .enqueue(&Job {
            n: 1,
            note: "short".into(),
        })
        .await
        .unwrap();
    producer
        .enqueue(&Job {
            n: 2,
            note: "long".into(),
        })
        .await
        .unwrap();
    let mut started = Vec::new();
    while started.len() < 2 {
        let (who, what, n, _) = next(&mut rx, "both tasks to start").await;
        assert_eq!((who, what), ("first", "start"));
        started.push(n);
    }
    let stop_at = Instant::now();
    let _ = stop_first.send(());
    let (who, what, n, _) = next(&mut rx, "the short task to finish during the grace period").await;
    assert_eq!((who, what, n), ("first", "end", 1));
    within(WAIT, "the first worker to stop", first_run)
        .await
        .unwrap();

    let second = make("second", tx).build().await.unwrap();
    let (_stop_second, _second_run) = spawn_worker(second);
    let (who, what, n, attempt) = next(
        &mut rx,
        "the long task to be picked up by the second worker",
    )
    .await;
    // Handed back at the end of the grace period: not a failed attempt.
    assert_eq!((who, what, n, attempt), ("second", "start", 2, 1));
    let waited = stop_at.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "handed back at once, not after ack_wait (20 s): {waited:?}"
    );
}

/// A long task interrupted by more rolling deploys than it has attempts: each hand-back at the
/// end of the shutdown grace is no attempt, so it completes with the count of its one real
/// failure instead of being dead-lettered as exhausted.
#[tokio::test]
async fn a_long_task_survives_more_rolling_restarts_than_attempts_and_counts_only_real_failures() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    // Job allows 3 attempts; 1 real failure + 5 restarts = 6 deliveries before the last one.
    const RESTARTS: u32 = 5;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u32, u32, &'static str)>();
    let make = |generation: u32, tx: mpsc::UnboundedSender<(u32, u32, &'static str)>| {
        worker(&server)
            .ack_wait(Duration::from_secs(20))
            .shutdown_grace(Duration::from_millis(200))
            .handler(move |_job: Job, ctx: TaskContext| {
                let tx = tx.clone();
                async move {
                    tx.send((generation, ctx.attempt(), "start")).ok();
                    if generation == 0 {
                        return Err(TaskError::retry("a real failure"));
                    }
                    if generation <= RESTARTS {
                        // Longer than the grace: this run is interrupted by the deploy.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    tx.send((generation, ctx.attempt(), "done")).ok();
                    ok()
                }
            })
            .build()
    };
    producer(&server)
        .await
        .enqueue(&Job {
            n: 1,
            note: "long".into(),
        })
        .await
        .unwrap();
    // Generation 0 fails once (a real failure), then keeps the task for its retry... which
    // goes to generation 0 again: stop it after its first failure so generation 1 gets it.
    let first = make(0, tx.clone()).await.unwrap();
    let (stop, run) = spawn_worker(first);
    assert_eq!(next(&mut rx, "the first attempt").await, (0, 1, "start"));
    let _ = stop.send(());
    within(WAIT, "generation 0 to stop", run).await.unwrap();
    for generation in 1..=RESTARTS {
        let worker = make(generation, tx.clone()).await.unwrap();
        let (stop, run) = spawn_worker(worker);
        let (seen_generation, attempt, what) = next(
            &mut rx,
            &format!("generation {generation} to start the task"),
        )
        .await;
        assert_eq!((seen_generation, what), (generation, "start"));
        assert_eq!(
            attempt, 2,
            "generation {generation}: one real failure before, the hand-backs do not count"
        );
        let _ = stop.send(());
        within(WAIT, "a rolling restart", run).await.unwrap();
    }
    let last = make(RESTARTS + 1, tx).await.unwrap();
    let (_stop, _run) = spawn_worker(last);
    assert_eq!(
        next(&mut rx, "the last run").await,
        (RESTARTS + 1, 2, "start")
    );
    assert_eq!(
        next(&mut rx, "the task to finish").await,
        (RESTARTS + 1, 2, "done")
    );
    common::await_drained(&js).await;
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0, "never dead-lettered");
}

#[tokio::test]
async fn startup_errors_name_the_problem() {
    let server = NatsServer::start().await;
    let duplicate = worker(&server)
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .build()
        .await;
    assert!(
        matches!(duplicate, Err(WorkerError::DuplicateHandler { ref task, .. }) if task == "job")
    );

    #[derive(Serialize, Deserialize)]
    struct Greedy;
    impl Task for Greedy {
        const NAME: &'static str = "greedy";
        fn options() -> TaskOptions {
            TaskOptions::default().max_attempts(50)
        }
    }
    let greedy = worker(&server)
        .handler(|_g: Greedy, _ctx: TaskContext| async move { ok() })
        .build()
        .await;
    match greedy {
        Err(err @ WorkerError::AttemptsExceedDeliveries { .. }) => {
            assert!(err.to_string().contains("JETQ_MAX_DELIVER"), "{err}")
        }
        Err(other) => panic!("expected AttemptsExceedDeliveries, got {other}"),
        Ok(_) => panic!("expected AttemptsExceedDeliveries, got a worker"),
    }

    #[derive(Serialize, Deserialize)]
    struct BadName;
    impl Task for BadName {
        const NAME: &'static str = "bad.name";
    }
    let bad = worker(&server)
        .handler(|_b: BadName, _ctx: TaskContext| async move { ok() })
        .build()
        .await;
    assert!(matches!(bad, Err(WorkerError::InvalidName(_))));

    let none = worker(&server).build().await;
    assert!(matches!(none, Err(WorkerError::NoHandlers)));

    let unserved = worker(&server)
        .queues(["work", "emails"])
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .build()
        .await;
    match unserved {
        Err(err @ WorkerError::QueueWithoutHandlers { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains("emails") && text.contains("JETQ_QUEUES") && text.contains("work"),
                "{text}"
            );
        }
        Err(other) => panic!("expected QueueWithoutHandlers, got {other}"),
        Ok(_) => panic!("expected QueueWithoutHandlers, got a worker"),
    }
}

#[tokio::test]
async fn a_worker_listed_queues_pulls_only_those() {
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let producer = producer(&server).await;
    producer
        .enqueue(&Email {
            to: "ada@example.com".into(),
        })
        .await
        .unwrap();
    producer
        .enqueue(&Job {
            n: 7,
            note: String::new(),
        })
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let emails_tx = tx.clone();
    let worker = worker(&server)
        .queues(["work"])
        .handler(move |job: Job, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(format!("job {}", job.n)).ok();
                ok()
            }
        })
        .handler(move |email: Email, _ctx: TaskContext| {
            let tx = emails_tx.clone();
            async move {
                tx.send(format!("email {}", email.to)).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    assert_eq!(worker.queues(), ["work"]);
    let (stop, handle) = spawn_worker(worker);
    assert_eq!(next(&mut rx, "the job").await, "job 7");
    // The emails queue was neither bound nor provisioned: its task waits, unconsumed.
    let tasks = js.get_stream("JETQ_TASKS").await.unwrap();
    assert!(
        tasks.consumer_info("worker-emails").await.is_err(),
        "the emails durable must not be created by a worker that does not serve it"
    );
    eventually(WAIT, "only the email left in the stream", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 1).then_some(()) }
    })
    .await;
    assert!(rx.try_recv().is_err(), "the email must not run");
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn raw_handlers_take_a_task_type_or_a_whole_queue_by_name_and_get_the_payload_bytes() {
    init_logs();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, u32, Bytes)>();
    let specific = tx.clone();
    let built = worker(&server)
        // A typed handler on another queue keeps working next to raw ones.
        .handler(|_email: Email, _ctx: TaskContext| async move { ok() })
        .raw_handler(
            "hooks",
            "special",
            TaskOptions::default().max_attempts(1),
            move |payload: Bytes, ctx: TaskContext| {
                let tx = specific.clone();
                async move {
                    tx.send((
                        "special".into(),
                        ctx.task().to_owned(),
                        ctx.max_attempts(),
                        payload,
                    ))
                    .ok();
                    ok()
                }
            },
        )
        .raw_handler(
            "hooks",
            jetq_consumer::ANY_TASK,
            TaskOptions::default().max_attempts(2),
            move |payload: Bytes, ctx: TaskContext| {
                let tx = tx.clone();
                async move {
                    tx.send((
                        "any".into(),
                        ctx.task().to_owned(),
                        ctx.max_attempts(),
                        payload,
                    ))
                    .ok();
                    if ctx.task() == "refused" {
                        return Err(TaskError::fatal("endpoint answered 404 Not Found")
                            .with_http(jetq_contract::HttpFailure::new(404, b"no such hook")));
                    }
                    ok()
                }
            },
        )
        .build()
        .await
        .unwrap();
    assert_eq!(built.queues(), vec!["emails", "hooks"]);
    let (_stop, _run) = spawn_worker(built);
    let producer = producer(&server).await;
    let raw = |task: &str, payload: &'static [u8]| RawTask {
        queue: "hooks".into(),
        task: task.into(),
        payload: Bytes::from_static(payload),
        options: Default::default(),
    };
    producer
        .enqueue_raw(raw("special", b"{\"a\":1}"))
        .await
        .unwrap();
    let got = next(&mut rx, "the task type's own handler").await;
    assert_eq!(
        got,
        (
            "special".into(),
            "special".into(),
            1,
            Bytes::from_static(b"{\"a\":1}")
        )
    );
    // Not JSON of any type: a raw handler gets the bytes as they are.
    producer
        .enqueue_raw(raw("anything", b"[1, 2]"))
        .await
        .unwrap();
    let got = next(&mut rx, "the queue's catch-all").await;
    assert_eq!(
        got,
        (
            "any".into(),
            "anything".into(),
            2,
            Bytes::from_static(b"[1, 2]")
        )
    );

    producer.enqueue_raw(raw("refused", b"{}")).await.unwrap();
    next(&mut rx, "the refused task").await;
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    let record: FailureRecord =
        serde_json::from_str(&header(&dead[0], headers::FAILURE).unwrap()).unwrap();
    assert_eq!(record.error, "endpoint answered 404 Not Found");
    let http = record
        .http
        .expect("the HTTP response in the failure record");
    assert_eq!((http.status, http.body.as_str()), (404, "no such hook"));
    common::await_drained(&js).await;

    let bad_queue = worker(&server)
        .raw_handler(
            "bad.queue",
            "x",
            TaskOptions::default(),
            |_: Bytes, _| async { ok() },
        )
        .build()
        .await;
    assert!(matches!(bad_queue, Err(WorkerError::InvalidName(_))));
    let bad_task = worker(&server)
        .raw_handler("hooks", "a*", TaskOptions::default(), |_: Bytes, _| async {
            ok()
        })
        .build()
        .await;
    assert!(matches!(bad_task, Err(WorkerError::InvalidName(_))));
    let twice = worker(&server)
        .raw_handler("hooks", "*", TaskOptions::default(), |_: Bytes, _| async {
            ok()
        })
        .raw_handler("hooks", "*", TaskOptions::default(), |_: Bytes, _| async {
            ok()
        })
        .build()
        .await;
    assert!(matches!(twice, Err(WorkerError::DuplicateHandler { ref task, .. }) if task == "*"));
}
