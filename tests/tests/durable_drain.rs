//! The durable drain (`JETQ_TASK_RETENTION=limits`, docs/DURABLE_DRAIN.md) against a real
//! nats-server: a Limits task stream whose finished tasks the workers purge below each
//! durable's ack floor. Every task runs, acked tasks are purged, a slow task holds the purge
//! without being lost, a task whose deliveries ran out is kept until the sweeper dead-letters
//! it, and neither a SIGKILLed worker nor a killed server loses a task.

mod common;

use std::{collections::HashSet, time::Duration};

use async_nats::jetstream::{self, stream::RetentionPolicy};
use futures::StreamExt;
use jetq_consumer::{TaskContext, WorkerSettings};
use jetq_contract::{
    config::TaskRetention, headers, QueueSettings, StreamSettings, Subjects, Topology,
};
use jetq_producer::Producer;
use jetq_tests::*;
use tokio::process::Child;

fn limits() -> StreamSettings {
    StreamSettings {
        task_retention: TaskRetention::Limits,
        ..StreamSettings::default()
    }
}

fn purging() -> WorkerSettings {
    WorkerSettings {
        purge_interval: Duration::from_millis(100),
        ..fast_settings()
    }
}

async fn limits_producer(server: &NatsServer) -> Producer {
    Producer::builder()
        .connection(connection(server))
        .streams(limits())
        .connect()
        .await
        .expect("producer")
}

async fn enqueue(producer: &Producer, range: std::ops::Range<u64>, note: &str) {
    let jobs: Vec<Job> = range
        .map(|n| Job {
            n,
            note: note.to_owned(),
        })
        .collect();
    for result in producer.enqueue_many(&jobs).await {
        result.expect("enqueued");
    }
}

/// The task stream's message count reaches `count` (the purge ran) within [`WAIT`].
async fn await_stored(js: &jetstream::Context, count: u64, what: &str) {
    eventually(WAIT, what, || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == count).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn every_task_runs_once_and_acked_tasks_are_purged() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = limits_producer(&server).await;
    let js = raw_jetstream(&server).await;
    let mut tasks = js.get_stream("JETQ_TASKS").await.expect("task stream");
    assert_eq!(
        tasks.info().await.expect("info").config.retention,
        RetentionPolicy::Limits
    );
    const N: u64 = 1_000;
    enqueue(&producer, 0..N, "").await;
    let mut processed =
        common::recording_worker(worker(&server).streams(limits()).settings(purging())).await;
    let mut seen = HashSet::new();
    while seen.len() < N as usize {
        let n = next(&mut processed, "the next task").await;
        assert!(seen.insert(n), "task {n} ran twice");
    }
    // Acked tasks stay stored until a purge removes them in bulk.
    await_stored(&js, 0, "the purge to remove every acked task").await;
    let stream = js.get_stream("JETQ_TASKS").await.expect("task stream");
    let durable = stream
        .consumer_info("worker-work")
        .await
        .expect("durable info");
    assert_eq!((durable.num_pending, durable.num_ack_pending), (0, 0));
}

#[tokio::test]
async fn a_slow_task_holds_the_purge_and_is_not_lost() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = limits_producer(&server).await;
    let js = raw_jetstream(&server).await;
    enqueue(&producer, 0..3, "").await;
    // Task 3 outlives ack_wait (3 s) on heartbeats; the tasks after it finish at once.
    enqueue(&producer, 3..4, "sleep:4000").await;
    enqueue(&producer, 4..10, "").await;
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let built = worker(&server)
        .streams(limits())
        .settings(purging())
        .handler(move |job: Job, _ctx: TaskContext| {
            let (started_tx, done_tx) = (started_tx.clone(), done_tx.clone());
            async move {
                started_tx.send(job.n).ok();
                if let Some(ms) = job.note.strip_prefix("sleep:").and_then(|v| v.parse().ok()) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                done_tx.send(job.n).ok();
                ok()
            }
        })
        .build()
        .await
        .expect("worker");
    let (stop, run) = spawn_worker(built);
    let mut finished = HashSet::new();
    while finished.len() < 9 {
        finished.insert(next(&mut done, "the quick tasks").await);
    }
    assert!(!finished.contains(&3), "the slow task is still running");
    // Tasks 0-2 are below the floor and purged; the slow task and everything after it stay.
    await_stored(&js, 7, "the purge below the slow task").await;
    assert_eq!(next(&mut done, "the slow task").await, 3);
    await_stored(&js, 0, "the purge once the slow task finished").await;
    let mut starts = Vec::new();
    while let Ok(n) = started.try_recv() {
        starts.push(n);
    }
    assert_eq!(
        starts.iter().filter(|n| **n == 3).count(),
        1,
        "the slow task ran once: {starts:?}"
    );
    stop_worker(stop, run).await;
}

#[tokio::test]
async fn a_task_whose_deliveries_ran_out_is_kept_until_the_sweeper_dead_letters_it() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let topology = Topology::new(js.clone(), Subjects::default(), limits());
    topology.ensure_streams().await.expect("streams");
    let queue = QueueSettings {
        max_deliver: 2,
        ..QueueSettings::default()
    };
    topology.ensure_queue("work", &queue).await.expect("queue");
    let producer = limits_producer(&server).await;
    let stranded = producer
        .enqueue(&Job {
            n: 100,
            note: "stranded".into(),
        })
        .await
        .expect("enqueue");
    common::strand_next_task(&js, "worker-work", 2).await;
    enqueue(&producer, 0..5, "").await;

    // A worker without the sweeper acks the five later tasks: the floor passes the stranded
    // task (its deliveries are over), but the purge must stop below it.
    // Not provisioning: the durable keeps max_deliver 2 (raising it would hand the stranded
    // task out again).
    let no_sweeper = WorkerSettings {
        sweeper: false,
        provision: false,
        ..purging()
    };
    let mut processed =
        common::recording_worker(worker(&server).streams(limits()).settings(no_sweeper)).await;
    let mut seen = HashSet::new();
    while seen.len() < 5 {
        seen.insert(next(&mut processed, "the later tasks").await);
    }
    eventually(WAIT, "the floor to pass the stranded task", || {
        let js = js.clone();
        async move {
            let stream = js.get_stream("JETQ_TASKS").await.ok()?;
            let info = stream.consumer_info("worker-work").await.ok()?;
            (info.ack_floor.stream_sequence >= 6).then_some(())
        }
    })
    .await;
    // Ten purge intervals with the floor past it: the stranded task is still stored.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert!(
        stored.iter().any(|m| m.sequence == 1),
        "the stranded task was purged before the sweeper saw it"
    );

    // Now a sweeper: the task is dead-lettered with its body, and the purge resumes.
    let _sweeping =
        common::recording_worker(worker(&server).streams(limits()).settings(WorkerSettings {
            provision: false,
            ..purging()
        }))
        .await;
    let dead = dead_letters(&js, 1).await;
    assert_eq!(
        header(&dead[0], headers::DEAD_REASON).as_deref(),
        Some("deliveries-exhausted")
    );
    assert_eq!(
        header(&dead[0], headers::TASK_ID).as_deref(),
        Some(stranded.id.as_str())
    );
    let job: Job = serde_json::from_slice(&dead[0].payload).expect("the task's body");
    assert_eq!(job.note, "stranded");
    await_stored(&js, 0, "the purge after the sweep").await;
}

async fn start_worker_process(
    server: &NatsServer,
    name: &str,
    ready: &mut async_nats::Subscriber,
) -> Child {
    let env = [
        ("JETQ_TASK_RETENTION", "limits"),
        ("JETQ_PURGE_INTERVAL", "100ms"),
        ("JETQ_ACK_WAIT", "2s"),
        ("JETQ_FETCH_EXPIRES", "500ms"),
        ("JETQ_CONCURRENCY", "4"),
    ];
    common::start_test_worker(server, name, &env, ready).await
}

fn reported(message: &async_nats::Message) -> u64 {
    let text = String::from_utf8_lossy(&message.payload).to_string();
    text.split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("malformed report {text:?}"))
}

#[tokio::test]
async fn a_worker_killed_mid_drain_loses_nothing() {
    init_logs();
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut done = observer.subscribe("test.done").await.unwrap();
    observer.flush().await.unwrap();
    let producer = limits_producer(&server).await;
    const N: u64 = 200;
    enqueue(&producer, 0..N, "sleep:20").await;
    let mut first = start_worker_process(&server, "first", &mut ready).await;
    let mut finished = HashSet::new();
    while finished.len() < 50 {
        let message = within(WAIT, "tasks done before the kill", done.next())
            .await
            .unwrap();
        finished.insert(reported(&message));
    }
    first.start_kill().expect("SIGKILL");
    within(WAIT, "the first worker to die", first.wait())
        .await
        .unwrap();
    let _second = start_worker_process(&server, "second", &mut ready).await;
    while finished.len() < N as usize {
        let message = within(WAIT, "the rest of the tasks", done.next())
            .await
            .unwrap();
        finished.insert(reported(&message));
    }
    let js = raw_jetstream(&server).await;
    await_stored(&js, 0, "every finished task purged").await;
}

#[tokio::test]
async fn a_server_killed_mid_drain_loses_nothing() {
    init_logs();
    let mut server = NatsServer::start().await;
    let producer = limits_producer(&server).await;
    const N: u64 = 600;
    enqueue(&producer, 0..N, "sleep:5").await;
    let mut processed =
        common::recording_worker(worker(&server).streams(limits()).settings(purging())).await;
    let mut seen = HashSet::new();
    while seen.len() < 150 {
        seen.insert(next(&mut processed, "tasks before the kill").await);
    }
    server.kill().await;
    server.restart().await;
    let missing: HashSet<u64> = (0..N).filter(|n| !seen.contains(n)).collect();
    common::await_processed(&missing, &mut processed, Duration::from_secs(90)).await;
    let js = raw_jetstream(&server).await;
    await_stored(&js, 0, "every finished task purged after the restart").await;
}
