//! Handlers that block their thread, against a real nats-server: written the documented way
//! (`spawn_blocking` with the context's cancellation token) a long blocking task keeps its
//! heartbeats past `ack_wait` and stops at its timeout; written the wrong way it is reported as
//! stalled (error log and `jetq.tasks.stalled`).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use jetq_consumer::{CancellationToken, TaskContext, TaskError};
use jetq_contract::{headers, FailureRecord, RetryPolicy, TaskOptions};
use jetq_producer::RawTask;
use jetq_telemetry::{Readiness, Telemetry, TelemetryConfig};
use jetq_tests::{otel::*, *};
use tokio::sync::mpsc;

/// Blocks the calling thread for `total`, in slices, until `token` is cancelled: the shape of
/// CPU-bound or blocking work that checks for cancellation at safe points. Returns whether it
/// was cancelled.
fn blocking_work(total: Duration, token: &CancellationToken) -> bool {
    let started = Instant::now();
    while started.elapsed() < total {
        if token.is_cancelled() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn raw(task: &str) -> RawTask {
    RawTask {
        queue: "work".into(),
        task: task.into(),
        payload: Bytes::from_static(b"{}"),
        options: Default::default(),
    }
}

#[tokio::test]
async fn blocking_work_on_spawn_blocking_keeps_heartbeats_and_stops_at_its_timeout() {
    isolate_subscribers();
    let telemetry = Telemetry::new(TelemetryConfig::local("jetq-worker", "warn")).unwrap();
    let server = NatsServer::start().await;
    let starts = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, bool, Duration)>();
    let long = TaskOptions::default()
        .max_attempts(1)
        .timeout(Duration::from_secs(30));
    let short = TaskOptions::default()
        .max_attempts(1)
        .timeout(Duration::from_secs(1))
        .retry(RetryPolicy::constant(Duration::from_millis(50)).jitter(0.0));
    let (long_tx, short_tx, long_starts) = (tx.clone(), tx, starts.clone());
    // fast_settings: ack_wait 3 s, heartbeats every second.
    let worker = worker(&server)
        .meter(telemetry.meter("jetq-consumer"))
        .raw_handler(
            "work",
            "long_report",
            long,
            move |_body, ctx: TaskContext| {
                let tx = long_tx.clone();
                long_starts.fetch_add(1, Ordering::SeqCst);
                async move {
                    let token = ctx.cancellation_token();
                    let started = Instant::now();
                    let cancelled = tokio::task::spawn_blocking(move || {
                        blocking_work(Duration::from_millis(4500), &token)
                    })
                    .await
                    .map_err(|err| TaskError::retry(err.to_string()))?;
                    tx.send(("long", cancelled, started.elapsed())).ok();
                    Ok(())
                }
            },
        )
        .raw_handler("work", "runaway", short, move |_body, ctx: TaskContext| {
            let tx = short_tx.clone();
            async move {
                let token = ctx.cancellation_token();
                let started = Instant::now();
                // The worker gives up on the attempt at its timeout; the blocking thread learns
                // it from the token and reports how long it ran.
                tokio::task::spawn_blocking(move || {
                    let cancelled = blocking_work(Duration::from_secs(60), &token);
                    tx.send(("runaway", cancelled, started.elapsed())).ok();
                });
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .build()
        .await
        .unwrap();
    let readiness = Readiness::new();
    let health = telemetry.serve_health(readiness).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let producer = producer(&server).await;
    producer.enqueue_raw(raw("long_report")).await.unwrap();
    producer.enqueue_raw(raw("runaway")).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next(&mut rx, "both blocking handlers to report").await);
    }
    let long = seen.iter().find(|s| s.0 == "long").expect("long report");
    assert!(!long.1, "the long work ran to its end");
    assert!(long.2 >= Duration::from_millis(4500));
    let runaway = seen.iter().find(|s| s.0 == "runaway").expect("runaway");
    eprintln!(
        "runaway stopped after {:?}; long work took {:?}",
        runaway.2, long.2
    );
    assert!(runaway.1, "the runaway work saw the cancellation");
    assert!(
        runaway.2 >= Duration::from_secs(1) && runaway.2 < Duration::from_secs(3),
        "stopped at its 1 s timeout, not later: {:?}",
        runaway.2
    );
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    assert!(header(&dead[0], headers::TASK_ID).is_some());
    let failure: FailureRecord =
        serde_json::from_str(&header(&dead[0], headers::FAILURE).unwrap()).unwrap();
    assert!(
        failure.error.contains("timed out"),
        "the runaway attempt ended as a timeout: {}",
        failure.error
    );
    eventually(WAIT, "the long task to be acked", || async {
        (stream_len(&js, "JETQ_TASKS").await == 0).then_some(())
    })
    .await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        1,
        "4.5 s of blocking work past a 3 s ack_wait was never redelivered"
    );
    let (code, body) = http_get(health.local_addr(), "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        metric(&parse_prometheus(&body), "jetq_tasks_stalled_total", &[]),
        0.0,
        "the documented way never stalls the runtime"
    );
    let _ = stop.send(());
    within(WAIT, "the worker to stop", run).await.unwrap();
    health.stop().await;
}

#[tokio::test]
async fn a_handler_that_blocks_its_thread_is_reported_as_stalled() {
    isolate_subscribers();
    let telemetry = Telemetry::new(TelemetryConfig::local("jetq-worker", "warn")).unwrap();
    let server = NatsServer::start().await;
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    let worker = worker(&server)
        .meter(telemetry.meter("jetq-consumer"))
        .raw_handler(
            "work",
            "blocks",
            TaskOptions::default(),
            move |_body, _ctx: TaskContext| {
                let finished = finished.clone();
                async move {
                    // Wrong: a blocking call on the runtime's thread (threshold: 500 ms at a
                    // 3 s ack_wait).
                    std::thread::sleep(Duration::from_millis(1200));
                    finished.store(true, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .build()
        .await
        .unwrap();
    let health = telemetry.serve_health(Readiness::new()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    producer(&server)
        .await
        .enqueue_raw(raw("blocks"))
        .await
        .unwrap();
    let addr = health.local_addr();
    eventually(WAIT, "the stall to be counted", || async {
        let (_, body) = http_get(addr, "/metrics").await.ok()?;
        let samples = parse_prometheus(&body);
        (metric(
            &samples,
            "jetq_tasks_stalled_total",
            &[("jetq_queue", "work"), ("jetq_task_name", "blocks")],
        ) == 1.0)
            .then_some(())
    })
    .await;
    assert!(done.load(Ordering::SeqCst));
    let _ = stop.send(());
    within(WAIT, "the worker to stop", run).await.unwrap();
    health.stop().await;
}
