//! Faults: worker processes killed with SIGKILL over and over while draining, the server killed
//! during concurrent enqueue and processing, and a hung (SIGSTOP'd) server. Nothing acknowledged
//! is lost; duplicates stay within what was in flight at the kills.
//!
//! The CI run uses small sizes; the long soak is
//! `JETQ_SOAK_TASKS=20000 cargo test -p jetq-tests --test reliability crash_soak -- --nocapture`.

mod common;

use std::{
    collections::{HashMap, HashSet},
    process::Stdio,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use jetq_producer::{EnqueueError, EnqueueOptions, Producer, RawTask};
use jetq_tests::*;
use tokio::process::{Child, Command};

const SOAK_WORKERS: usize = 3;
const SOAK_CONCURRENCY: usize = 8;

fn spawn_test_worker(server: &NatsServer, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_test_worker"))
        .env("JETQ_NATS_URL", server.url())
        .env("JETQ_ACK_WAIT", "2s")
        .env("JETQ_FETCH_EXPIRES", "500ms")
        .env("JETQ_CONCURRENCY", SOAK_CONCURRENCY.to_string())
        .env("TEST_WORKER_NAME", name)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("test_worker starts")
}

/// Tasks delivered to the queue's workers and not yet acknowledged, as the server counts them.
async fn ack_pending(server: &NatsServer) -> u64 {
    let js = raw_jetstream(server).await;
    let stream = js.get_stream("JETQ_TASKS").await.expect("task stream");
    // A kill can land before any worker process created the durable: nothing was in flight.
    let consumer: Result<async_nats::jetstream::consumer::PullConsumer, _> =
        stream.get_consumer("worker-work").await;
    match consumer {
        Ok(mut consumer) => consumer
            .info()
            .await
            .map_or(0, |info| info.num_ack_pending as u64),
        Err(_) => 0,
    }
}

fn soak_tasks() -> u64 {
    std::env::var("JETQ_SOAK_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_soak_workers_killed_repeatedly_lose_nothing() {
    init_logs();
    let tasks = soak_tasks();
    let server = NatsServer::start().await;
    let observer = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(server.url())
        .await
        .unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    let mut done = observer.subscribe("test.done").await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    observer.flush().await.unwrap();

    let producer = producer(&server).await;
    // Every task may be hit by several kills in a row: allow enough attempts that none is
    // dead-lettered for it (the queue's max_deliver is 26).
    let batch: Vec<RawTask> = (0..tasks)
        .map(|n| RawTask {
            queue: "work".into(),
            task: "job".into(),
            payload: Bytes::from(format!("{{\"n\":{n},\"note\":\"sleep:3\"}}")),
            options: EnqueueOptions::new().max_attempts(25),
        })
        .collect();
    for result in producer.enqueue_many_raw(batch).await {
        result.expect("enqueue");
    }

    let mut workers: Vec<Child> = (0..SOAK_WORKERS)
        .map(|i| spawn_test_worker(&server, &format!("w{i}-0")))
        .collect();
    let mut generation = [0u32; SOAK_WORKERS];
    let mut in_flight: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut completions: HashMap<u64, u32> = HashMap::new();
    let mut kills = 0u32;
    let mut in_flight_at_kills = 0usize;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut next_kill = Instant::now() + Duration::from_millis(400);
    let mut victim = 0usize;

    while (completions.len() as u64) < tasks {
        assert!(
            Instant::now() < deadline,
            "soak did not finish: {} of {tasks} done",
            completions.len()
        );
        tokio::select! {
            Some(message) = started.next() => {
                let text = String::from_utf8_lossy(&message.payload).to_string();
                let mut parts = text.split(' ');
                let (who, n) = (parts.next().unwrap_or_default().to_owned(), parts.next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX));
                in_flight.entry(who).or_default().insert(n);
            }
            Some(message) = done.next() => {
                let text = String::from_utf8_lossy(&message.payload).to_string();
                let mut parts = text.split(' ');
                let (who, n) = (parts.next().unwrap_or_default().to_owned(), parts.next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX));
                if let Some(set) = in_flight.get_mut(&who) { set.remove(&n); }
                *completions.entry(n).or_default() += 1;
            }
            Some(_) = ready.next() => {}
            _ = tokio::time::sleep_until(next_kill.into()) => {
                let name = format!("w{victim}-{}", generation[victim]);
                workers[victim].start_kill().expect("SIGKILL");
                within(WAIT, "killed worker to exit", workers[victim].wait()).await.unwrap();
                kills += 1;
                in_flight.remove(&name);
                // What the server saw in flight right after the kill: the dead worker's
                // unacknowledged tasks (finished ones whose acks died in its socket included)
                // stay ack-pending until ack_wait, so this bounds what the kill can duplicate.
                in_flight_at_kills += ack_pending(&server).await as usize;
                generation[victim] += 1;
                workers[victim] = spawn_test_worker(&server, &format!("w{victim}-{}", generation[victim]));
                victim = (victim + 1) % SOAK_WORKERS;
                next_kill = Instant::now() + Duration::from_millis(400 + 200 * u64::from(kills % 3));
            }
        }
    }
    let lost = (0..tasks).filter(|n| !completions.contains_key(n)).count();
    let duplicates: u32 = completions.values().map(|c| c - 1).sum();
    println!("crash soak: tasks={tasks} workers={SOAK_WORKERS} kills={kills} lost={lost} duplicates={duplicates} in_flight_at_kills={in_flight_at_kills}");
    assert_eq!(lost, 0);
    assert!(kills >= 1, "the soak must actually kill workers");
    assert!(
        duplicates as usize <= in_flight_at_kills,
        "duplicates {duplicates} exceed what was in flight at the kills ({in_flight_at_kills})"
    );
    let js = raw_jetstream(&server).await;
    common::await_drained(&js).await;
    assert_eq!(
        stream_len(&js, "JETQ_DEAD").await,
        0,
        "no task exhausted its attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_concurrent_enqueue_and_processing_loses_no_acknowledged_task() {
    init_logs();
    let mut server = NatsServer::start().await;
    let mut done_rx = common::recording_worker(worker(&server)).await;
    let producer = Producer::builder()
        .connection(connection(&server))
        .publish_attempts(2)
        .connect()
        .await
        .unwrap();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let enqueuer = tokio::spawn(async move {
        let mut slowest = Duration::ZERO;
        let mut errors = Vec::new();
        for n in 0..1500u64 {
            let started = Instant::now();
            match producer
                .enqueue(&Job {
                    n,
                    note: String::new(),
                })
                .await
            {
                Ok(_) => acked_tx.send(n).unwrap(),
                Err(err) => errors.push(err),
            }
            slowest = slowest.max(started.elapsed());
        }
        (slowest, errors)
    });
    let mut acked = HashSet::new();
    while acked.len() < 300 {
        acked.insert(next(&mut acked_rx, "acks before the kill").await);
    }
    server.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;
    let (slowest, errors) = within(Duration::from_secs(180), "the enqueue loop", enqueuer)
        .await
        .unwrap();
    while let Ok(n) = acked_rx.try_recv() {
        acked.insert(n);
    }
    // 2 attempts × 2 s request timeout: no enqueue may hang past that (plus scheduling slack).
    assert!(
        slowest < Duration::from_secs(6),
        "an enqueue hung for {slowest:?}"
    );
    for err in &errors {
        assert!(
            matches!(
                err,
                EnqueueError::Timeout { .. } | EnqueueError::NotConnected { .. }
            ),
            "outage errors must be clear: {err}"
        );
    }
    let processed = common::await_processed(&acked, &mut done_rx, Duration::from_secs(60)).await;
    println!(
        "server crash: acked={} errors={} processed={}",
        acked.len(),
        errors.len(),
        processed.len()
    );
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_makes_calls_time_out_cleanly_and_everything_recovers() {
    let server = NatsServer::start().await;
    let mut done_rx = common::recording_worker(worker(&server)).await;
    let producer = Producer::builder()
        .connection(connection(&server))
        .publish_attempts(1)
        .connect()
        .await
        .unwrap();
    producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut done_rx, "task before the hang").await, 1);

    let pid = server.pid().expect("server pid");
    signal(pid, "STOP");
    let started = Instant::now();
    let result = within(
        WAIT,
        "enqueue against a hung server",
        producer.enqueue(&Job {
            n: 2,
            note: String::new(),
        }),
    )
    .await;
    let took = started.elapsed();
    signal(pid, "CONT");
    assert!(
        matches!(
            result,
            Err(EnqueueError::Timeout { .. }) | Err(EnqueueError::NotConnected { .. })
        ),
        "{result:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "request timeout is 2 s, the call took {took:?}"
    );

    // After SIGCONT both sides recover without intervention.
    let after = eventually(WAIT, "enqueue after the hang", || {
        let producer = producer.clone();
        async move {
            producer
                .enqueue(&Job {
                    n: 3,
                    note: String::new(),
                })
                .await
                .ok()
        }
    })
    .await;
    assert!(!after.duplicate);
    let mut seen = HashSet::new();
    while !seen.contains(&3) {
        seen.insert(next(&mut done_rx, "the worker to process after the hang").await);
    }
}
