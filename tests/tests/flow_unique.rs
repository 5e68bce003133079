//! Unique tasks (PROTOCOL §11, docs/FLOW_CONTROL.md) against a real nats-server: one task per
//! key under concurrent enqueues, each scope's release point, holders that vanished (a producer
//! that died before publishing, a worker SIGKILLed mid-task) never keeping a key forever, and
//! bad input refused before anything is sent.

use std::{process::Stdio, time::Duration};

use futures::StreamExt;
use jetq_consumer::TaskContext;
use jetq_contract::flow::{self, unique::UniqueHold, FlowError, UniqueScope};
use jetq_producer::{EnqueueError, EnqueueOptions, Unique};
use jetq_tests::*;
use tokio::{process::Command, sync::mpsc};

fn job(n: u64, note: &str) -> Job {
    Job {
        n,
        note: note.into(),
    }
}

fn unique(key: &str) -> EnqueueOptions {
    EnqueueOptions::new().unique(Unique::key(key))
}

async fn unique_bucket(server: &NatsServer) -> async_nats::jetstream::kv::Store {
    raw_jetstream(server)
        .await
        .get_key_value("JETQ_UNIQUE")
        .await
        .expect("the unique bucket exists after a unique enqueue")
}

#[tokio::test]
async fn fifty_concurrent_enqueues_of_one_key_make_one_task() {
    init_logs();
    let server = NatsServer::start().await;
    // Five producers (five connections), ten concurrent enqueues each.
    let mut producers = Vec::new();
    for _ in 0..5 {
        producers.push(producer(&server).await);
    }
    let calls = producers.iter().flat_map(|producer| {
        (0..10).map(move |i| async move {
            producer
                .enqueue_with(&job(i, ""), unique("welcome:user-42"))
                .await
        })
    });
    let results = within(WAIT, "50 enqueues", futures::future::join_all(calls)).await;
    let results: Vec<_> = results
        .into_iter()
        .map(|result| result.expect("a duplicate is no error"))
        .collect();
    let first: Vec<_> = results.iter().filter(|r| !r.duplicate).collect();
    assert_eq!(
        first.len(),
        1,
        "exactly one enqueue took the key: {results:?}"
    );
    assert!(
        results.iter().all(|r| r.id == first[0].id),
        "every duplicate names the holder's task id"
    );
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 1, "one task stored");
}

#[tokio::test]
async fn an_active_key_is_held_while_the_task_runs_and_released_when_it_succeeds() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<u64>();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let worker = worker(&server)
        .handler(move |job: Job, _ctx: TaskContext| {
            let started_tx = started_tx.clone();
            let mut release = release_rx.clone();
            async move {
                started_tx.send(job.n).ok();
                let _ = release.wait_for(|go| *go).await;
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let first = producer
        .enqueue_with(&job(1, ""), unique("export:7"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(next(&mut started, "the first task to start").await, 1);
    // Running: scope active still holds the key.
    let again = producer
        .enqueue_with(&job(2, ""), unique("export:7"))
        .await
        .unwrap();
    assert!(again.duplicate, "held while running");
    assert_eq!(
        (again.id.as_str(), again.sequence),
        (first.id.as_str(), first.sequence)
    );
    release_tx.send(true).unwrap();
    // Succeeded: the key is free and the next enqueue is a new task.
    let kv = unique_bucket(&server).await;
    eventually(WAIT, "the key to be released", || async {
        kv.get("work.job.export=3A7")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let later = producer
        .enqueue_with(&job(3, ""), unique("export:7"))
        .await
        .unwrap();
    assert!(!later.duplicate);
    assert_ne!(later.id, first.id);
    assert_eq!(next(&mut started, "the new task to start").await, 3);
}

#[tokio::test]
async fn a_queued_key_is_released_when_the_task_starts() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<u64>();
    let worker = worker(&server)
        .handler(move |job: Job, _ctx: TaskContext| {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(job.n).ok();
                tokio::time::sleep(Duration::from_secs(30)).await;
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let queued = || EnqueueOptions::new().unique(Unique::key("refresh").scope(UniqueScope::Queued));
    // Enqueued before any worker runs it: held.
    let first = producer.enqueue_with(&job(1, ""), queued()).await.unwrap();
    let again = producer.enqueue_with(&job(2, ""), queued()).await.unwrap();
    assert!(again.duplicate && again.id == first.id, "held while queued");
    let (_stop, _run) = spawn_worker(worker);
    assert_eq!(next(&mut started, "the task to start").await, 1);
    // Running: the key was released at the start.
    let kv = unique_bucket(&server).await;
    eventually(WAIT, "the key to be released at start", || async {
        kv.get("work.job.refresh")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let during = producer.enqueue_with(&job(3, ""), queued()).await.unwrap();
    assert!(!during.duplicate, "a new task while the first runs");
}

#[tokio::test]
async fn a_period_key_throttles_whatever_happens_to_the_task() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let scope = UniqueScope::period(Duration::from_millis(1500)).unwrap();
    let options = || EnqueueOptions::new().unique(Unique::args(["n"]).scope(scope));
    let first = producer
        .enqueue_with(&job(5, "a"), options())
        .await
        .unwrap();
    // Different note, same `n`: the derived key is the same.
    let second = producer
        .enqueue_with(&job(5, "b"), options())
        .await
        .unwrap();
    assert!(second.duplicate && second.id == first.id);
    let other = producer
        .enqueue_with(&job(6, "a"), options())
        .await
        .unwrap();
    assert!(!other.duplicate, "another argument value is another key");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let after = producer
        .enqueue_with(&job(5, "c"), options())
        .await
        .unwrap();
    assert!(!after.duplicate, "free once the period is over");
}

#[tokio::test]
async fn a_holder_that_vanished_never_keeps_the_key() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    // Creates the bucket.
    producer
        .enqueue_with(&job(0, ""), unique("warm-up"))
        .await
        .unwrap();
    let kv = unique_bucket(&server).await;
    let now = flow::micros(std::time::SystemTime::now());
    // A producer took the key and died before publishing; its lease ended.
    let dead = UniqueHold::pending(
        "01DEADPRODUCER",
        "work",
        "job",
        UniqueScope::Active,
        now - 61_000_000,
    );
    kv.create("work.job.k1", dead.to_json().into())
        .await
        .unwrap();
    let taken = producer
        .enqueue_with(&job(1, ""), unique("k1"))
        .await
        .unwrap();
    assert!(!taken.duplicate, "an expired pending hold is taken over");
    // A producer that is publishing right now (live lease): a duplicate of it.
    let live = UniqueHold::pending("01LIVEPRODUCER", "work", "job", UniqueScope::Active, now);
    kv.create("work.job.k2", live.to_json().into())
        .await
        .unwrap();
    let dup = producer
        .enqueue_with(&job(2, ""), unique("k2"))
        .await
        .unwrap();
    assert!(dup.duplicate && dup.id == "01LIVEPRODUCER" && dup.sequence == 0);
    // A queued holder whose task left the stream without a release (e.g. purged by hand).
    let gone = producer
        .enqueue_with(&job(3, ""), unique("k3"))
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    js.get_stream("JETQ_TASKS")
        .await
        .unwrap()
        .delete_message(gone.sequence)
        .await
        .unwrap();
    let retaken = producer
        .enqueue_with(&job(3, ""), unique("k3"))
        .await
        .unwrap();
    assert!(
        !retaken.duplicate,
        "a holder gone from the task stream frees the key"
    );
    assert_ne!(retaken.id, gone.id);
}

#[tokio::test]
async fn a_key_held_by_a_sigkilled_worker_is_released_when_its_task_ends() {
    init_logs();
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    let mut done = observer.subscribe("test.done").await.unwrap();
    observer.flush().await.unwrap();
    let spawn = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_flow_worker"))
            .env("JETQ_NATS_URL", server.url())
            .env("JETQ_ACK_WAIT", "2s")
            .env("JETQ_FETCH_EXPIRES", "500ms")
            .env("TEST_WORKER_NAME", name)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("flow_worker starts")
    };
    let mut first = spawn("first");
    within(WAIT, "first worker ready", ready.next()).await;
    let producer = producer(&server).await;
    let held = producer
        .enqueue_with(&job(1, "sleep:1500"), unique("report:acme"))
        .await
        .unwrap();
    within(WAIT, "the task to start", started.next()).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    // The worker is gone mid-task; the task is still queued (redelivered after ack_wait), so
    // the key still holds — no second report.
    let dup = producer
        .enqueue_with(&job(2, "sleep:1500"), unique("report:acme"))
        .await
        .unwrap();
    assert!(
        dup.duplicate && dup.id == held.id,
        "held while its task is still to finish"
    );
    let _second = spawn("second");
    let finished = within(WAIT, "the task to finish on the second worker", done.next())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&finished.payload).to_string();
    assert!(
        text.starts_with("second 1 "),
        "the same task, finished elsewhere: {text}"
    );
    let kv = unique_bucket(&server).await;
    eventually(WAIT, "the key to be released", || async {
        kv.get("work.job.report=3Aacme")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let fresh = producer
        .enqueue_with(&job(3, ""), unique("report:acme"))
        .await
        .unwrap();
    assert!(!fresh.duplicate);
}

#[tokio::test]
async fn bad_flow_input_is_refused_before_anything_is_sent() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    for key in ["", "two words", "ünïcode", &"k".repeat(257)] {
        match producer.enqueue_with(&job(1, ""), unique(key)).await {
            Err(EnqueueError::Flow(FlowError::InvalidKey {
                what: "unique key", ..
            })) => {}
            other => panic!("{key:?}: {other:?}"),
        }
    }
    match producer
        .enqueue_with(&job(1, ""), EnqueueOptions::new().limit_key("tenant 1"))
        .await
    {
        Err(EnqueueError::Flow(FlowError::InvalidKey {
            what: "limit key", ..
        })) => {}
        other => panic!("{other:?}"),
    }
    match producer
        .enqueue_with(
            &job(1, ""),
            EnqueueOptions::new().unique(Unique::args(["missing"])),
        )
        .await
    {
        Err(EnqueueError::Flow(FlowError::MissingArgument { field })) => {
            assert_eq!(field, "missing")
        }
        other => panic!("{other:?}"),
    }
    let zero = Unique::key("k").scope(UniqueScope::Period(Duration::ZERO));
    assert!(matches!(
        producer
            .enqueue_with(&job(1, ""), EnqueueOptions::new().unique(zero))
            .await,
        Err(EnqueueError::Flow(FlowError::InvalidPeriod { .. }))
    ));
    match producer
        .enqueue_in_with(Duration::from_secs(60), &job(1, ""), unique("later"))
        .await
    {
        Err(jetq_producer::DelayError::Enqueue(EnqueueError::Flow(FlowError::Unsupported(_)))) => {}
        other => panic!("{other:?}"),
    }
    assert!(jetq_consumer::RateLimit::new(-14.0, 14).is_err());
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 0, "nothing was sent");
}

/// `enqueue_many_raw` with unique keys among plain tasks: each key is taken before its task is
/// published, results come back in input order, and a repeated key is a duplicate.
#[tokio::test]
async fn enqueue_many_takes_each_unique_key_and_keeps_the_order() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let raw = |n: u64, options: EnqueueOptions| jetq_producer::RawTask {
        queue: "work".into(),
        task: "job".into(),
        payload: bytes::Bytes::from(serde_json::to_vec(&job(n, "")).unwrap()),
        options,
    };
    let results = producer
        .enqueue_many_raw(vec![
            raw(1, EnqueueOptions::new()),
            raw(2, unique("batch:a")),
            raw(3, EnqueueOptions::new().limit_key("tenant-1")),
            raw(4, unique("batch:a")),
            raw(5, unique("batch:b")),
        ])
        .await;
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    let duplicates: Vec<bool> = results.iter().map(|r| r.duplicate).collect();
    let a = [&results[1], &results[3]];
    assert_eq!(
        duplicates.iter().filter(|d| **d).count(),
        1,
        "one of the two batch:a tasks is a duplicate: {results:?}"
    );
    assert_eq!(a[0].id, a[1].id, "both name the holder");
    assert!(!results[0].duplicate && !results[2].duplicate && !results[4].duplicate);
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 4);
}
