//! The task-type catalog against a real nats-server (PROTOCOL.md, Task-type catalog): workers
//! publish the types they handle, and the producer's cached reader (producer/src/catalog.rs)
//! finds which are tracked; a missing catalog changes nothing.

use std::time::Duration;

use jetq_consumer::TaskContext;
use jetq_contract::{Subjects, Task, TaskOptions};
use jetq_tests::*;
use serde::{Deserialize, Serialize};

use jetq_producer::{catalog, contract::status::TaskState, EnqueueOptions, RawTask};

/// A type its workers track.
#[derive(Debug, Serialize, Deserialize)]
struct Tracked {
    n: u64,
}

impl Task for Tracked {
    const NAME: &'static str = "tracked_job";
    const QUEUE: &'static str = "work";
    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(4)
            .timeout(Duration::from_secs(7))
            .track_status(true)
    }
}

#[tokio::test]
async fn workers_publish_their_task_types_and_producers_read_which_are_tracked() {
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let reader = catalog::Catalog::new(js.clone(), &Subjects::default())
        .with_ttl(Duration::from_millis(300));
    // No catalog yet: unknown, and nothing fails.
    assert_eq!(reader.entry("work", "tracked_job").await, None);
    assert!(!reader.tracked("work", "tracked_job").await);

    let worker = worker(&server)
        .handler(|_t: Tracked, _ctx: TaskContext| async move { ok() })
        .handler(|_j: Job, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    let store = js.get_key_value("JETQ_CATALOG").await.unwrap();
    let value = store.get("work.tracked_job").await.unwrap().expect("entry");
    let entry: jetq_contract::catalog::CatalogEntry = serde_json::from_slice(&value).unwrap();
    assert_eq!(
        (
            entry.queue.as_str(),
            entry.task.as_str(),
            entry.max_attempts
        ),
        ("work", "tracked_job", 4)
    );
    assert_eq!(entry.timeout(), Duration::from_secs(7));
    assert!(entry.tracked);

    // The reader cached "unknown" for its TTL (300 ms), then finds the entry.
    eventually(
        WAIT,
        "the reader to see the entry once its TTL passed",
        || async { reader.tracked("work", "tracked_job").await.then_some(()) },
    )
    .await;
    assert!(!reader.tracked("work", "job").await, "Job is not tracked");
    assert_eq!(
        reader.entry("work", "job").await.map(|e| e.max_attempts),
        Some(3)
    );
    assert_eq!(reader.entry("work", "nobody_handles_this").await, None);
    drop(worker);
}

#[tokio::test]
async fn a_producer_tracks_a_type_the_catalog_marks_tracked() {
    let server = NatsServer::start().await;
    let worker = worker(&server)
        .handler(|_t: Tracked, _ctx: TaskContext| async move { ok() })
        .handler(|_j: Job, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    // The worker published its types at build; the producer reads them on first enqueue.
    let producer = producer(&server).await;
    let (stop, run) = spawn_worker(worker);
    let raw = |task: &str| RawTask {
        queue: "work".into(),
        task: task.into(),
        payload: br#"{"n":1}"#.to_vec().into(),
        options: EnqueueOptions::default(),
    };

    // By raw name, without asking to track: the catalog says the type is tracked.
    let tracked = producer.enqueue_raw(raw("tracked_job")).await.unwrap();
    let queued = producer.status(&tracked.id).await.unwrap();
    assert!(queued.is_some(), "a queued record was written");
    let done = producer.wait(&tracked.id, WAIT).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);

    // Many at once: every task of the tracked type is tracked, the other type is not.
    let many = producer
        .enqueue_many_raw(vec![raw("tracked_job"), raw("job"), raw("tracked_job")])
        .await;
    let ids: Vec<String> = many.into_iter().map(|r| r.unwrap().id).collect();
    assert!(producer.status(&ids[0]).await.unwrap().is_some());
    assert!(producer.status(&ids[2]).await.unwrap().is_some());
    // An untracked type gets no record (not even once its worker ran it).
    let job = producer.enqueue_raw(raw("job")).await.unwrap();
    for id in [&ids[0], &ids[2]] {
        let done = producer.wait(id, WAIT).await.unwrap();
        assert_eq!(done.state, TaskState::Succeeded);
    }
    assert!(producer.status(&ids[1]).await.unwrap().is_none());
    assert!(producer.status(&job.id).await.unwrap().is_none());
    stop_worker(stop, run).await;
}

#[tokio::test]
async fn without_a_catalog_a_raw_enqueue_is_not_tracked() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let enqueued = producer
        .enqueue_raw(RawTask {
            queue: "work".into(),
            task: "tracked_job".into(),
            payload: br#"{"n":1}"#.to_vec().into(),
            options: EnqueueOptions::default(),
        })
        .await
        .expect("a missing catalog changes nothing");
    assert!(!enqueued.duplicate);
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 1);
    let message = stream_messages(&js, "JETQ_TASKS").await.remove(0);
    assert_eq!(header(&message, "Jetq-Track-Status"), None);
}
