//! Task status against a real nats-server: transitions (with retries and dead letters),
//! `wait` returning on success and failure and timing out cleanly, progress observed live,
//! results, artifacts streamed through the object store, cancellation of queued and running
//! tasks, retention expiry, and untracked tasks leaving the status bucket untouched.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use jetq_consumer::{StatusError as HandlerStatusError, TaskContext, TaskError};
use jetq_contract::{
    status::{TaskState, TaskStatus},
    DeadReason, RetryPolicy, StreamSettings, Task, TaskOptions,
};
use jetq_producer::{CancelOutcome, EnqueueOptions, Producer, RawTask, StatusError};
use jetq_tests::*;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{mpsc, Notify},
};

/// A tracked task type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Export {
    rows: u64,
}

impl Task for Export {
    const NAME: &'static str = "export";
    const QUEUE: &'static str = "status";
    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(3)
            .timeout(Duration::from_secs(15))
            .retry(RetryPolicy::constant(Duration::from_millis(50)).jitter(0.0))
            .track_status(true)
    }
}

fn states(status: &TaskStatus) -> Vec<(TaskState, u32)> {
    status
        .transitions
        .iter()
        .map(|t| (t.state, t.attempt))
        .collect()
}

const STATUS_STREAM: &str = "KV_JETQ_STATUS";

#[tokio::test]
async fn a_tracked_task_goes_from_queued_to_running_to_succeeded_with_its_result() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    // Enqueued before any worker runs: the producer records it as queued.
    let enqueued = producer.enqueue(&Export { rows: 21 }).await.unwrap();
    let queued = producer
        .status(&enqueued.id)
        .await
        .unwrap()
        .expect("a record");
    assert_eq!(queued.state, TaskState::Queued);
    assert_eq!(queued.sequence, Some(enqueued.sequence));
    assert_eq!(
        (queued.queue.as_str(), queued.task.as_str()),
        ("status", "export")
    );
    assert_eq!(queued.attempt, 0);
    assert!(queued.enqueued_at.is_some());

    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (on_start, gate) = (started.clone(), release.clone());
    let worker = worker(&server)
        .handler(move |export: Export, ctx: TaskContext| {
            let (on_start, gate) = (on_start.clone(), gate.clone());
            async move {
                on_start.notify_one();
                gate.notified().await;
                ctx.set_result(&serde_json::json!({ "rows": export.rows * 2 }))?;
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);

    within(WAIT, "the handler to start", started.notified()).await;
    let running = producer.status(&enqueued.id).await.unwrap().unwrap();
    assert_eq!(running.state, TaskState::Running);
    assert_eq!((running.attempt, running.max_attempts), (1, Some(3)));
    assert!(running.started_at.is_some());
    assert_eq!(
        running.enqueued_at, queued.enqueued_at,
        "kept from the queued record"
    );

    release.notify_one();
    let done = producer.wait(&enqueued.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(done.result, Some(serde_json::json!({ "rows": 42 })));
    assert!(done.finished_at.is_some());
    assert_eq!(
        states(&done),
        vec![
            (TaskState::Queued, 0),
            (TaskState::Running, 1),
            (TaskState::Succeeded, 1)
        ]
    );
    // Finished tasks return at once.
    let again = within(Duration::from_secs(5), "wait on a finished task", async {
        producer.wait(&enqueued.id, WAIT).await
    })
    .await
    .unwrap();
    assert_eq!(again.state, TaskState::Succeeded);
}

#[tokio::test]
async fn retries_and_dead_letters_are_recorded_and_wait_returns_the_failure() {
    let server = NatsServer::start().await;
    let worker = worker(&server)
        .unknown_task_grace(Duration::from_millis(300))
        .handler(|export: Export, ctx: TaskContext| async move {
            match export.rows {
                // Fails twice, then succeeds.
                1 if ctx.attempt() < 3 => Err(TaskError::retry(format!("flaky {}", ctx.attempt()))),
                1 => ok(),
                // Fatal at once.
                2 => Err(TaskError::fatal("no such customer")),
                // Always fails.
                _ => Err(TaskError::retry(format!(
                    "down on attempt {}",
                    ctx.attempt()
                ))),
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;

    let flaky = producer.enqueue(&Export { rows: 1 }).await.unwrap();
    let done = producer.wait(&flaky.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(
        states(&done),
        vec![
            (TaskState::Queued, 0),
            (TaskState::Running, 1),
            (TaskState::Retrying, 1),
            (TaskState::Running, 2),
            (TaskState::Retrying, 2),
            (TaskState::Running, 3),
            (TaskState::Succeeded, 3),
        ]
    );
    let retry = &done.transitions[2];
    assert_eq!(retry.error.as_deref(), Some("flaky 1"));
    assert_eq!(
        done.error.as_deref(),
        Some("flaky 2"),
        "the last error is kept"
    );
    assert!(done.next_attempt_at.is_none(), "cleared once running again");

    let poison = producer.enqueue(&Export { rows: 3 }).await.unwrap();
    let failed = producer.wait(&poison.id, WAIT).await.unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.dead_reason, Some(DeadReason::Exhausted));
    assert_eq!(failed.attempt, 3);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("down on attempt 3"),
        "{failed:?}"
    );
    let retrying: Vec<&str> = failed
        .transitions
        .iter()
        .filter(|t| t.state == TaskState::Retrying)
        .filter_map(|t| t.error.as_deref())
        .collect();
    assert_eq!(retrying, ["down on attempt 1", "down on attempt 2"]);
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    assert_eq!(
        header(&dead[0], jetq_contract::headers::TASK_ID).as_deref(),
        Some(poison.id.as_str())
    );

    let fatal = producer.enqueue(&Export { rows: 2 }).await.unwrap();
    let failed = producer.wait(&fatal.id, WAIT).await.unwrap();
    assert_eq!(
        (failed.state, failed.dead_reason, failed.attempt),
        (TaskState::Failed, Some(DeadReason::Fatal), 1)
    );

    // Dead without a handler verdict: an undecodable payload, and a task type no worker knows,
    // both opting in per task through the header.
    let undecodable = producer
        .enqueue_raw(RawTask {
            queue: "status".into(),
            task: "export".into(),
            payload: Bytes::from_static(br#"{"rows":"many"}"#),
            options: EnqueueOptions::new().track_status(),
        })
        .await
        .unwrap();
    let dead = producer.wait(&undecodable.id, WAIT).await.unwrap();
    assert_eq!(
        (dead.state, dead.dead_reason),
        (TaskState::Dead, Some(DeadReason::Undecodable))
    );
    let unknown = producer
        .enqueue_raw(RawTask {
            queue: "status".into(),
            task: "nobody_runs_this".into(),
            payload: Bytes::from_static(b"{}"),
            options: EnqueueOptions::new().track_status(),
        })
        .await
        .unwrap();
    let dead = producer.wait(&unknown.id, WAIT).await.unwrap();
    assert_eq!(
        (dead.state, dead.dead_reason),
        (TaskState::Dead, Some(DeadReason::UnknownTask))
    );
    assert_eq!(dead.queue, "status");
    assert_eq!(dead.task, "nobody_runs_this");
}

#[tokio::test]
async fn wait_times_out_cleanly_with_the_last_state_seen() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    // No worker: the task stays queued.
    let enqueued = producer.enqueue(&Export { rows: 1 }).await.unwrap();
    let started = Instant::now();
    let err = producer
        .wait(&enqueued.id, Duration::from_millis(400))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    match &err {
        StatusError::Timeout { id, waited, last } => {
            assert_eq!(id, &enqueued.id);
            assert_eq!(*waited, Duration::from_millis(400));
            assert_eq!(last.as_ref().map(|s| s.state), Some(TaskState::Queued));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("last state: queued"), "{err}");

    // An id nobody enqueued: a timeout too, with nothing seen.
    let err = producer
        .wait("never-enqueued", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StatusError::Timeout { last: None, .. }),
        "{err:?}"
    );
    assert!(producer.status("never-enqueued").await.unwrap().is_none());
    assert!(matches!(
        producer.cancel("never-enqueued").await,
        Err(StatusError::NotFound { .. })
    ));
}

#[tokio::test]
async fn progress_is_observed_live_and_in_order() {
    let server = NatsServer::start().await;
    // The handler reports a step, then waits until the test has seen it.
    let (seen_tx, seen_rx) = mpsc::unbounded_channel::<()>();
    let seen_rx = Arc::new(tokio::sync::Mutex::new(seen_rx));
    let worker = worker(&server)
        .handler(move |_export: Export, ctx: TaskContext| {
            let seen_rx = seen_rx.clone();
            async move {
                let mut seen = seen_rx.lock().await;
                for step in 1..=5u32 {
                    ctx.progress(f64::from(step) * 20.0, format!("step {step} of 5"))
                        .await?;
                    within(WAIT, "the test to see the progress", seen.recv()).await;
                }
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let producer = producer(&server).await;
    let enqueued = producer.enqueue(&Export { rows: 5 }).await.unwrap();
    let mut updates = producer.watch(&enqueued.id).await.unwrap();
    let (_stop, _run) = spawn_worker(worker);

    let mut observed = Vec::new();
    let mut last_state = TaskState::Queued;
    while let Some(status) = within(WAIT, "the next status update", updates.next()).await {
        let status = status.unwrap();
        last_state = status.state;
        if let Some(progress) = &status.progress {
            if observed.last() != Some(&progress.percent) {
                observed.push(progress.percent);
                assert_eq!(
                    progress.message,
                    format!("step {} of 5", observed.len()),
                    "{status:?}"
                );
                seen_tx.send(()).unwrap();
            }
        }
    }
    assert_eq!(observed, [20.0, 40.0, 60.0, 80.0, 100.0]);
    assert_eq!(
        last_state,
        TaskState::Succeeded,
        "the watch ends after the outcome"
    );
}

#[tokio::test]
async fn a_cancelled_queued_task_is_dropped_when_pulled_without_running() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let doomed = producer.enqueue(&Export { rows: 1 }).await.unwrap();
    let outcome = producer.cancel(&doomed.id).await.unwrap();
    let CancelOutcome::Cancelled(status) = outcome else {
        panic!("a queued task is cancelled at once: {outcome:?}");
    };
    assert_eq!(status.state, TaskState::Cancelled);
    // wait() sees the terminal state at once.
    let done = producer.wait(&doomed.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Cancelled);
    // Cancelling again changes nothing.
    assert!(matches!(
        producer.cancel(&doomed.id).await.unwrap(),
        CancelOutcome::AlreadyFinished(_)
    ));

    let ran = Arc::new(AtomicU32::new(0));
    let counter = ran.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |export: Export, ctx: TaskContext| {
            let (counter, tx) = (counter.clone(), tx.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tx.send((ctx.id().to_owned(), export.rows)).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let kept = producer.enqueue(&Export { rows: 2 }).await.unwrap();
    let (id, rows) = next(&mut rx, "the task that was not cancelled").await;
    assert_eq!((id.as_str(), rows), (kept.id.as_str(), 2));
    let js = raw_jetstream(&server).await;
    eventually(WAIT, "both tasks to leave the task stream", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the cancelled task never ran"
    );
    assert_eq!(
        stream_len(&js, "JETQ_DEAD").await,
        0,
        "terminated, not dead-lettered"
    );
    let status = producer.status(&doomed.id).await.unwrap().unwrap();
    assert_eq!(status.state, TaskState::Cancelled);
    assert_eq!(status.attempt, 0);
}

#[tokio::test]
async fn a_running_handler_sees_the_cancellation_and_the_task_ends_cancelled() {
    let server = NatsServer::start().await;
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicU32::new(0));
    let saw_flag = Arc::new(AtomicBool::new(false));
    let (counter, flag) = (runs.clone(), saw_flag.clone());
    let worker = worker(&server)
        .handler(move |export: Export, ctx: TaskContext| {
            let (started_tx, counter, flag) = (started_tx.clone(), counter.clone(), flag.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                started_tx.send(ctx.id().to_owned()).ok();
                within(WAIT, "the cancellation", ctx.cancelled()).await;
                flag.store(ctx.is_cancelled(), Ordering::SeqCst);
                if export.rows == 1 {
                    // Stops with an error: not retried, not dead-lettered.
                    Err(TaskError::retry("stopped early"))
                } else {
                    // Finishes anyway: still cancelled, and its result is not kept.
                    ctx.set_result(&"partial")?;
                    ok()
                }
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    for rows in [1, 2] {
        let enqueued = producer.enqueue(&Export { rows }).await.unwrap();
        let id = next(&mut started_rx, "the handler to start").await;
        assert_eq!(id, enqueued.id);
        let outcome = producer.cancel(&enqueued.id).await.unwrap();
        let CancelOutcome::Requested(status) = outcome else {
            panic!("a running task gets a request: {outcome:?}");
        };
        assert_eq!(status.state, TaskState::Running);
        assert!(status.cancel_requested_at.is_some());
        let done = producer.wait(&enqueued.id, WAIT).await.unwrap();
        assert_eq!(done.state, TaskState::Cancelled, "{done:?}");
        assert_eq!(done.result, None);
        assert!(
            saw_flag.swap(false, Ordering::SeqCst),
            "is_cancelled() was true"
        );
    }
    let js = raw_jetstream(&server).await;
    eventually(WAIT, "the cancelled tasks to leave the task stream", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "each ran once, no retry");
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0);
}

/// The bytes of line `i` of the generated artifact.
fn line(i: u32) -> String {
    format!(
        "{i},customer-{:05},{}\n",
        i % 10_000,
        (u64::from(i) * 7919) % 100_000
    )
}

#[tokio::test]
async fn a_multi_megabyte_artifact_streams_from_the_worker_to_the_reader() {
    let server = NatsServer::start().await;
    const LINES: u32 = 150_000; // ~4 MB
    let worker = worker(&server)
        .handler(|_export: Export, ctx: TaskContext| async move {
            let mut csv = ctx.artifact_writer("export.csv")?;
            for i in 0..LINES {
                csv.write_all(line(i).as_bytes()).await?;
            }
            let info = csv.finish().await?;
            // A second artifact from a reader; and a dropped writer stores nothing.
            ctx.put_artifact("summary.json", &mut &b"{\"lines\":150000}"[..])
                .await?;
            let mut abandoned = ctx.artifact_writer("abandoned.csv")?;
            abandoned.write_all(b"half a file").await?;
            drop(abandoned);
            ctx.set_result(&serde_json::json!({ "bytes": info.size }))?;
            ok()
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    // A separate producer connection plays the web tier: it shares no disk with the worker.
    let web = producer(&server).await;
    let enqueued = web.enqueue(&Export { rows: 0 }).await.unwrap();
    let done = web.wait(&enqueued.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    let expected: Vec<u8> = (0..LINES).flat_map(|i| line(i).into_bytes()).collect();
    assert!(expected.len() > 3_000_000, "{}", expected.len());
    let names: Vec<&str> = done.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["export.csv", "summary.json"]);
    assert_eq!(done.artifacts[0].size, expected.len() as u64);
    assert_eq!(
        done.result,
        Some(serde_json::json!({ "bytes": expected.len() }))
    );

    let mut artifact = web.artifact(&enqueued.id, "export.csv").await.unwrap();
    assert_eq!(artifact.size(), expected.len() as u64);
    let mut body = Vec::new();
    within(
        WAIT,
        "reading the artifact",
        artifact.read_to_end(&mut body),
    )
    .await
    .unwrap();
    assert_eq!(body.len(), expected.len());
    assert!(
        body == expected,
        "the artifact differs from what was written"
    );
    let mut summary = String::new();
    web.artifact(&enqueued.id, "summary.json")
        .await
        .unwrap()
        .read_to_string(&mut summary)
        .await
        .unwrap();
    assert_eq!(summary, "{\"lines\":150000}");
    assert!(matches!(
        web.artifact(&enqueued.id, "abandoned.csv").await,
        Err(StatusError::ArtifactNotFound { .. })
    ));
    assert!(matches!(
        web.artifact(&enqueued.id, "../etc/passwd").await,
        Err(StatusError::ArtifactName(_))
    ));
}

#[tokio::test]
async fn untracked_tasks_write_nothing_to_the_status_bucket() {
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                // The status API is there, but an untracked task has no record.
                let refused = ctx.progress(50.0, "half").await;
                tx.send((job.n, ctx.is_tracked(), refused.is_err())).ok();
                assert!(!ctx.is_cancelled());
                if job.n == 2 {
                    return Err(TaskError::fatal("to dead letters"));
                }
                if !ctx.is_tracked() {
                    assert!(matches!(
                        ctx.set_result(&1),
                        Err(HandlerStatusError::NotTracked { .. })
                    ));
                }
                ok()
            }
        })
        .handler(|_export: Export, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let js = raw_jetstream(&server).await;
    // The worker tracks a type, so it provisioned the bucket: it exists and is empty.
    assert_eq!(stream_len(&js, STATUS_STREAM).await, 0);
    let producer = producer(&server).await;
    let ok_job = producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    producer
        .enqueue(&Job {
            n: 2,
            note: String::new(),
        })
        .await
        .unwrap();
    for _ in 0..2 {
        let (_, tracked, refused) = next(&mut rx, "an untracked task").await;
        assert!(!tracked && refused);
    }
    dead_letters(&js, 1).await;
    eventually(WAIT, "both tasks to finish", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
    let mut bucket = js.get_stream(STATUS_STREAM).await.unwrap();
    let info = bucket.info().await.unwrap();
    assert_eq!(
        (info.state.messages, info.state.last_sequence),
        (0, 0),
        "nothing was ever written for untracked tasks"
    );
    assert!(producer.status(&ok_job.id).await.unwrap().is_none());

    // A raw task of the untracked type opts in with the header.
    let raw = producer
        .enqueue_raw(RawTask {
            queue: "work".into(),
            task: "job".into(),
            payload: Bytes::from_static(br#"{"n":3}"#),
            options: EnqueueOptions::new().track_status(),
        })
        .await
        .unwrap();
    let (n, tracked, refused) = next(&mut rx, "the opted-in task").await;
    assert!(n == 3 && tracked && !refused);
    let done = producer.wait(&raw.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(done.progress.map(|p| p.percent), Some(50.0));
}

#[tokio::test]
async fn records_and_artifacts_expire_after_the_status_ttl() {
    let server = NatsServer::start().await;
    let streams = StreamSettings {
        status_ttl: Duration::from_secs(1),
        ..StreamSettings::default()
    };
    let worker = worker(&server)
        .streams(streams.clone())
        .handler(|_export: Export, ctx: TaskContext| async move {
            ctx.put_artifact("out.txt", &mut &b"short-lived"[..])
                .await?;
            ok()
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = Producer::builder()
        .connection(connection(&server))
        .streams(streams)
        .connect()
        .await
        .unwrap();
    let enqueued = producer.enqueue(&Export { rows: 1 }).await.unwrap();
    let done = producer.wait(&enqueued.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert!(producer.artifact(&enqueued.id, "out.txt").await.is_ok());
    eventually(WAIT, "the record to expire", || {
        let producer = producer.clone();
        let id = enqueued.id.clone();
        async move { producer.status(&id).await.unwrap().is_none().then_some(()) }
    })
    .await;
    eventually(WAIT, "the artifact to expire", || {
        let producer = producer.clone();
        let id = enqueued.id.clone();
        async move {
            matches!(
                producer.artifact(&id, "out.txt").await,
                Err(StatusError::ArtifactNotFound { .. })
            )
            .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn ids_that_are_not_kv_keys_are_tracked_under_their_encoded_key() {
    let server = NatsServer::start().await;
    let worker = worker(&server)
        .handler(|_export: Export, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    let id = "export:ada@example.com/2026.11*>";
    let enqueued = producer
        .enqueue_with(&Export { rows: 1 }, EnqueueOptions::new().key(id))
        .await
        .unwrap();
    assert_eq!(enqueued.id, id);
    let done = producer.wait(id, WAIT).await.unwrap();
    assert_eq!((done.id.as_str(), done.state), (id, TaskState::Succeeded));
    // A duplicate enqueue does not reset the finished record.
    let again = producer
        .enqueue_with(&Export { rows: 1 }, EnqueueOptions::new().key(id))
        .await
        .unwrap();
    assert!(again.duplicate);
    let status = producer.status(id).await.unwrap().unwrap();
    assert_eq!(status.state, TaskState::Succeeded);
    let js = raw_jetstream(&server).await;
    let kv = js.get_key_value("JETQ_STATUS").await.unwrap();
    let entry = kv
        .entry(jetq_contract::status::key(id))
        .await
        .unwrap()
        .expect("stored under the encoded key");
    assert_eq!(TaskStatus::from_json(&entry.value).unwrap().id, id);
}

#[tokio::test]
async fn a_delayed_tracked_task_is_queued_until_released_and_can_be_cancelled_before() {
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |export: Export, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send((ctx.id().to_owned(), export.rows)).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    let doomed = producer
        .enqueue_in(Duration::from_secs(1), &Export { rows: 1 })
        .await
        .unwrap();
    let kept = producer
        .enqueue_in(Duration::from_secs(1), &Export { rows: 2 })
        .await
        .unwrap();
    let queued = producer.status(&kept.id).await.unwrap().expect("a record");
    assert_eq!(queued.state, TaskState::Queued);
    assert_eq!(queued.sequence, None, "not in the task stream yet");
    assert!(matches!(
        producer.cancel(&doomed.id).await.unwrap(),
        CancelOutcome::Cancelled(_)
    ));

    let scheduler = RunningScheduler::start(scheduler(&server).release_delayed(true)).await;
    let done = producer.wait(&kept.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert!(done.sequence.is_some());
    assert_eq!(next(&mut rx, "the kept task").await, (kept.id.clone(), 2));
    let js = raw_jetstream(&server).await;
    eventually(
        WAIT,
        "the cancelled task to be released and dropped",
        || {
            let js = js.clone();
            async move {
                let released = stream_len(&js, "KV_JETQ_STATUS").await == 2
                    && stream_len(&js, "JETQ_TASKS").await == 0
                    && stream_len(&js, "JETQ_DELAYED").await == 0;
                released.then_some(())
            }
        },
    )
    .await;
    assert!(rx.try_recv().is_err(), "the cancelled task never ran");
    let status = producer.status(&doomed.id).await.unwrap().unwrap();
    assert_eq!(status.state, TaskState::Cancelled);
    scheduler.stop().await;
}

#[tokio::test]
async fn a_stale_worker_never_overwrites_a_final_state_and_a_finished_task_is_not_rerun() {
    let server = NatsServer::start().await;
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let (on_start, gate, counter) = (started.clone(), release.clone(), runs.clone());
    let worker = worker(&server)
        .handler(move |_export: Export, _ctx: TaskContext| {
            let (on_start, gate, counter) = (on_start.clone(), gate.clone(), counter.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                on_start.notify_one();
                gate.notified().await;
                Err::<(), _>(TaskError::retry("this attempt lost its race"))
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    let enqueued = producer.enqueue(&Export { rows: 1 }).await.unwrap();
    within(WAIT, "the handler to start", started.notified()).await;

    // Meanwhile, someone else records the task as finished (as a worker whose attempt
    // succeeded would, just before its ack).
    let js = raw_jetstream(&server).await;
    let kv = js.get_key_value("JETQ_STATUS").await.unwrap();
    let key = jetq_contract::status::key(&enqueued.id);
    let entry = kv.entry(key.as_str()).await.unwrap().unwrap();
    let mut record = TaskStatus::from_json(&entry.value).unwrap();
    assert_eq!(record.state, TaskState::Running);
    record.result = Some(serde_json::json!("done elsewhere"));
    record.enter(TaskState::Succeeded, None);
    kv.put(key.as_str(), record.to_json().unwrap().into())
        .await
        .unwrap();

    // The stale attempt fails: its `retrying` must not replace `succeeded`, and the
    // redelivery it causes is acked without running again.
    release.notify_one();
    eventually(WAIT, "the task to leave the task stream", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
    let status = producer.status(&enqueued.id).await.unwrap().unwrap();
    assert_eq!(status.state, TaskState::Succeeded, "{status:?}");
    assert_eq!(status.result, Some(serde_json::json!("done elsewhere")));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "not run again after it succeeded"
    );
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0);
}

#[tokio::test]
async fn tracked_tasks_still_run_when_the_status_store_is_missing() {
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // This worker has no tracked type, so it does not create the status bucket, and the
    // producer may not provision: there is no status store at all.
    let worker = worker(&server)
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                let progress = ctx.progress(10.0, "starting").await;
                tx.send((job.n, ctx.is_tracked(), progress)).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = Producer::builder()
        .connection(connection(&server))
        .provision(false)
        .connect()
        .await
        .unwrap();
    for n in 1..=2 {
        let started = Instant::now();
        let enqueued = producer
            .enqueue_raw(RawTask {
                queue: "work".into(),
                task: "job".into(),
                payload: Bytes::from(format!("{{\"n\":{n}}}")),
                options: EnqueueOptions::new().track_status(),
            })
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let (seen, tracked, progress) = next(&mut rx, "the task to run anyway").await;
        assert_eq!(seen, n);
        assert!(!tracked);
        assert!(
            matches!(progress, Err(HandlerStatusError::Unavailable { .. })),
            "{progress:?}"
        );
        assert!(matches!(
            producer.status(&enqueued.id).await,
            Err(StatusError::Unavailable(_))
        ));
    }
    let js = raw_jetstream(&server).await;
    assert!(
        js.get_key_value("JETQ_STATUS").await.is_err(),
        "nothing created it"
    );
}

/// A task tracked per enqueue, pulled by a worker with no tracked type of its own on a server
/// where no status bucket exists yet: the producer opens (creates) the bucket before it
/// publishes, so the worker, which pulls the task at once, finds it and records every state.
#[tokio::test]
async fn a_task_tracked_per_enqueue_is_recorded_by_a_worker_with_no_tracked_types() {
    let server = NatsServer::start().await;
    let worker = worker(&server)
        .handler(|_job: Job, ctx: TaskContext| async move {
            ctx.set_result(&"done")?;
            ok()
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    let enqueued = producer
        .enqueue_with(
            &Job {
                n: 1,
                note: String::new(),
            },
            EnqueueOptions::new().track_status(),
        )
        .await
        .unwrap();
    let done = producer
        .wait(&enqueued.id, WAIT)
        .await
        .expect("the worker recorded the task");
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.result, Some(serde_json::json!("done")));
}
