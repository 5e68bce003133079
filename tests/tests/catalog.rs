//! The task-type catalog against a real nats-server (PROTOCOL.md, Task-type catalog): workers
//! publish the types they handle, and the producer's cached reader (producer/src/catalog.rs)
//! finds which are tracked; a missing catalog changes nothing.

use std::time::Duration;

use jetq_consumer::TaskContext;
use jetq_contract::{Subjects, Task, TaskOptions};
use jetq_tests::*;
use serde::{Deserialize, Serialize};

// The producer's reader, compiled here until producer/src/lib.rs declares the module.
#[allow(unreachable_pub)]
#[path = "../../producer/src/catalog.rs"]
mod catalog;

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

    // The reader cached "unknown" for its TTL, then finds the entry.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(reader.tracked("work", "tracked_job").await);
    assert!(!reader.tracked("work", "job").await, "Job is not tracked");
    assert_eq!(
        reader.entry("work", "job").await.map(|e| e.max_attempts),
        Some(3)
    );
    assert_eq!(reader.entry("work", "nobody_handles_this").await, None);
    drop(worker);
}
