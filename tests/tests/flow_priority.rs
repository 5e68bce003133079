//! Priorities within a queue (PROTOCOL §12, docs/FLOW_CONTROL.md "Priorities") against a real
//! nats-server with `flow_worker` processes: higher levels run first under load, a busy higher
//! level still leaves the lower ones a share, a delayed task keeps its level, and a level's
//! dead letter keeps it for replay.

use std::{collections::HashMap, process::Stdio};

use bytes::Bytes;
use futures::StreamExt;
use jetq_contract::{headers, Priority, Subjects};
use jetq_producer::{EnqueueOptions, RawTask};
use jetq_tests::*;
use tokio::process::{Child, Command};

/// Task numbers: the level is told by the range.
const HIGH: u64 = 0;
const NORMAL: u64 = 100_000;
const LOW: u64 = 200_000;

fn level_of(n: u64) -> Priority {
    match n {
        n if n >= LOW => Priority::Low,
        n if n >= NORMAL => Priority::Normal,
        _ => Priority::High,
    }
}

fn job(n: u64, sleep_ms: u64, priority: Priority) -> RawTask {
    let payload = serde_json::json!({ "n": n, "note": format!("sleep:{sleep_ms}") });
    RawTask {
        queue: "work".into(),
        task: "job".into(),
        payload: Bytes::from(payload.to_string()),
        options: EnqueueOptions::new().priority(priority),
    }
}

async fn enqueue(server: &NatsServer, tasks: Vec<RawTask>) {
    let producer = producer(server).await;
    for result in producer.enqueue_many_raw(tasks).await {
        result.expect("enqueued");
    }
}

async fn spawn(
    server: &NatsServer,
    name: &str,
    concurrency: usize,
    ready: &mut async_nats::Subscriber,
) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flow_worker"));
    command
        .env("JETQ_NATS_URL", server.url())
        .env("JETQ_ACK_WAIT", "5s")
        .env("JETQ_FETCH_EXPIRES", "1s")
        .env("JETQ_CONCURRENCY", concurrency.to_string())
        .env("TEST_WORKER_NAME", name)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let child = command.spawn().expect("flow_worker starts");
    loop {
        let message = within(WAIT, "worker ready", ready.next())
            .await
            .expect("ready subscription");
        if message.payload == name.as_bytes() {
            return child;
        }
    }
}

/// The task numbers in the order they started, until `count` distinct tasks started.
async fn starts(started: &mut async_nats::Subscriber, count: usize) -> Vec<u64> {
    let mut order = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < count {
        let message = within(WAIT, "the next start", started.next())
            .await
            .expect("started subscription");
        let text = String::from_utf8_lossy(&message.payload).to_string();
        let n: u64 = text
            .split(' ')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("malformed report {text:?}"));
        if seen.insert(n) {
            order.push(n);
        }
    }
    order
}

fn mean_rank(order: &[u64], level: Priority) -> f64 {
    let ranks: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, n)| level_of(**n) == level)
        .map(|(rank, _)| rank)
        .collect();
    ranks.iter().sum::<usize>() as f64 / ranks.len().max(1) as f64
}

#[tokio::test]
async fn higher_levels_run_first_under_load_on_two_worker_processes() {
    init_logs();
    const PER_LEVEL: u64 = 200;
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    observer.flush().await.unwrap();
    // Enqueued lowest first: in arrival order the low tasks would run first.
    let mut tasks = Vec::new();
    for (base, level) in [
        (LOW, Priority::Low),
        (NORMAL, Priority::Normal),
        (HIGH, Priority::High),
    ] {
        tasks.extend((0..PER_LEVEL).map(|i| job(base + i, 5, level)));
    }
    enqueue(&server, tasks).await;
    let js = raw_jetstream(&server).await;
    let subjects = Subjects::default();
    let stored = stream_messages(&js, &subjects.tasks_stream()).await;
    assert_eq!(
        stored
            .iter()
            .filter(|m| m.subject.as_str() == subjects.task_at("work", Priority::High, "job"))
            .count(),
        PER_LEVEL as usize,
        "high tasks wait on their level's subject"
    );

    let _a = spawn(&server, "a", 8, &mut ready).await;
    let _b = spawn(&server, "b", 8, &mut ready).await;
    let order = starts(&mut started, 3 * PER_LEVEL as usize).await;

    // Each worker's first pull, before it knows the other levels have tasks, is of `normal`
    // (up to concurrency + prefetch = 16 tasks): look past those.
    let settled = &order[50..50 + PER_LEVEL as usize];
    let high_share = settled
        .iter()
        .filter(|n| level_of(**n) == Priority::High)
        .count() as f64
        / settled.len() as f64;
    let (high, normal, low) = (
        mean_rank(&order, Priority::High),
        mean_rank(&order, Priority::Normal),
        mean_rank(&order, Priority::Low),
    );
    eprintln!(
        "starts #50-#249: {:.0} % high; mean start rank high {high:.0}, normal {normal:.0}, low {low:.0}",
        high_share * 100.0
    );
    // 7 of 8 tasks asked for come from the highest busy level.
    assert!(
        high_share >= 0.7,
        "only {:.0} % of starts #50-#249 were high",
        high_share * 100.0
    );
    assert!(
        high < normal && normal < low,
        "levels out of order: high {high:.0}, normal {normal:.0}, low {low:.0}"
    );
}

#[tokio::test]
async fn a_busy_high_level_leaves_the_low_level_a_share() {
    init_logs();
    const HIGH_TASKS: u64 = 400;
    const LOW_TASKS: u64 = 30;
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    observer.flush().await.unwrap();
    let mut tasks: Vec<RawTask> = (0..LOW_TASKS)
        .map(|i| job(LOW + i, 2, Priority::Low))
        .collect();
    tasks.extend((0..HIGH_TASKS).map(|i| job(HIGH + i, 2, Priority::High)));
    enqueue(&server, tasks).await;
    let _worker = spawn(&server, "a", 4, &mut ready).await;
    let order = starts(&mut started, (HIGH_TASKS + LOW_TASKS) as usize).await;
    let position: HashMap<u64, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let last_low = (0..LOW_TASKS)
        .map(|i| position[&(LOW + i)])
        .max()
        .unwrap_or(0);
    let last_high = (0..HIGH_TASKS)
        .map(|i| position[&(HIGH + i)])
        .max()
        .unwrap_or(0);
    let high_before_last_low = order[..last_low]
        .iter()
        .filter(|n| level_of(**n) == Priority::High)
        .count();
    eprintln!(
        "every low task had started by start #{last_low} ({high_before_last_low} high before it); the last high started at #{last_high}"
    );
    assert!(
        last_low < last_high,
        "the low level was starved until the high level ran dry (last low #{last_low}, last high #{last_high})"
    );
    // And high still went first: most of the high tasks ran before the low ones finished
    // starting would mean the share is a share, not an equal split.
    assert!(
        high_before_last_low >= 2 * LOW_TASKS as usize,
        "the low level took more than a share: only {high_before_last_low} high tasks before its last start"
    );
}

#[tokio::test]
async fn a_delayed_task_is_released_at_its_level_and_a_dead_letter_keeps_the_level() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let subjects = Subjects::default();
    // Delayed: the level travels in the delayed subject and the scheduler keeps it.
    let js = raw_jetstream(&server).await;
    let running = RunningScheduler::start(scheduler(&server).release_delayed(true)).await;
    // The release is a publish on the level's task subject: watch it on core NATS.
    let released = subjects.task_at("work", Priority::Low, "job");
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut releases = watcher.subscribe(released.clone()).await.unwrap();
    watcher.flush().await.unwrap();
    let delayed = RawTask {
        queue: "work".into(),
        task: "job".into(),
        payload: Bytes::from_static(br#"{"n":7}"#),
        options: EnqueueOptions::new().priority(Priority::Low),
    };
    producer
        .enqueue_raw_in(std::time::Duration::from_millis(300), delayed)
        .await
        .expect("delayed enqueue");
    let release = within(
        WAIT,
        "the delayed low task released to its level",
        releases.next(),
    )
    .await
    .expect("release subscription");
    assert_eq!(release.subject.as_str(), released);
    let level = release
        .headers
        .as_ref()
        .and_then(|map| map.get(headers::PRIORITY))
        .map(|value| value.as_str().to_owned());
    assert_eq!(level.as_deref(), Some("low"));
    running.stop().await;

    // Dead letter: a high task that fails for good is dead-lettered under the queue's name,
    // with its level in Jetq-Priority.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |job: Job, _ctx: jetq_consumer::TaskContext| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send(job.n);
                if job.n == 9 {
                    Err(jetq_consumer::TaskError::fatal("no such user"))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .await
        .expect("worker");
    let (stop, run) = spawn_worker(worker);
    let failing = RawTask {
        queue: "work".into(),
        task: "job".into(),
        payload: Bytes::from_static(br#"{"n":9}"#),
        options: EnqueueOptions::new().priority(Priority::High),
    };
    producer.enqueue_raw(failing).await.expect("enqueue");
    let mut ran = Vec::new();
    while !ran.contains(&9) {
        ran.push(next(&mut seen_rx, "the high task ran").await);
    }
    let letters = dead_letters(&js, 1).await;
    let letter = &letters[0];
    assert_eq!(letter.subject.as_str(), subjects.dead("work", "job"));
    assert_eq!(header(letter, headers::PRIORITY).as_deref(), Some("high"));
    stop_worker(stop, run).await;
}

#[tokio::test]
async fn a_queue_of_only_high_tasks_is_not_held_up_by_the_idle_normal_level() {
    // The worker's first pull is a waiting request on `normal` (it does not know yet that only
    // `high` has tasks). Before the fix, that request held the worker's room until it expired
    // (JETQ_FETCH_EXPIRES, here 20 s) and the high tasks waited for it.
    init_logs();
    let server = NatsServer::start().await;
    const N: u64 = 300;
    enqueue(
        &server,
        (0..N).map(|i| job(HIGH + i, 0, Priority::High)).collect(),
    )
    .await;
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let settings = jetq_consumer::WorkerSettings {
        ack_wait: std::time::Duration::from_secs(60),
        fetch_expires: std::time::Duration::from_secs(20),
        ..fast_settings()
    };
    let built = worker(&server)
        .settings(settings)
        .handler(move |job: Job, _ctx: jetq_consumer::TaskContext| {
            let done_tx = done_tx.clone();
            async move {
                let _ = done_tx.send(job.n);
                ok()
            }
        })
        .build()
        .await
        .expect("worker");
    let (stop, run) = spawn_worker(built);
    let started = std::time::Instant::now();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < N as usize {
        seen.insert(
            within(
                std::time::Duration::from_secs(10),
                "every high task within half the idle request's lifetime",
                done.recv(),
            )
            .await
            .expect("handler channel"),
        );
    }
    eprintln!("{N} high tasks in {:?}", started.elapsed());
    // Not stopped gracefully: a graceful stop waits out the open 20 s request.
    drop((stop, run));
}
