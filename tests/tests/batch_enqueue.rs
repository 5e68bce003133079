//! `enqueue_many` in atomic batches against a real nats-server 2.15: every task stored once,
//! in order, at the sequence reported; a caller's key already used, a stream that does not
//! allow atomic publish and a stream that fills up all fall back to task-by-task answers
//! without losing or doubling a task.

use std::collections::BTreeSet;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy};
use jetq_contract::StreamSettings;
use jetq_producer::{EnqueueError, EnqueueOptions, GroupCommit, Producer};
use jetq_tests::*;

fn jobs(range: std::ops::Range<u64>) -> Vec<Job> {
    range
        .map(|n| Job {
            n,
            note: String::new(),
        })
        .collect()
}

fn stored_ns(messages: &[async_nats::jetstream::message::StreamMessage]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| serde_json::from_slice::<Job>(&m.payload).unwrap().n)
        .collect()
}

#[tokio::test]
async fn enqueue_many_stores_large_batches_whole_in_order_at_the_reported_sequences() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    let info = js
        .get_stream("JETQ_TASKS")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert!(
        info.config.allow_atomic_publish,
        "the task stream allows atomic publish on 2.12+"
    );
    // 2,500 tasks: batches of 1,000, 1,000 and 500.
    let tasks = jobs(0..2500);
    let results = producer.enqueue_many(&tasks).await;
    let enqueued: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert!(enqueued.iter().all(|e| !e.duplicate));
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(
        stored_ns(&stored),
        (0..2500).collect::<Vec<_>>(),
        "each once, in order"
    );
    for (task, message) in enqueued.iter().zip(&stored) {
        assert_eq!(
            task.sequence, message.sequence,
            "reported sequence is the stored one"
        );
        assert_eq!(
            header(message, "Nats-Msg-Id").as_deref(),
            Some(task.id.as_str())
        );
    }
    // Stored as batches: the batch headers travel with the messages.
    assert!(
        stored.iter().all(|m| header(m, "Nats-Batch-Id").is_some()),
        "every task went in an atomic batch"
    );
    let batches: BTreeSet<String> = stored
        .iter()
        .filter_map(|m| header(m, "Nats-Batch-Id"))
        .collect();
    assert_eq!(batches.len(), 3, "2,500 tasks in batches of at most 1,000");
}

#[tokio::test]
async fn a_used_key_in_a_batch_is_a_duplicate_and_the_rest_are_stored() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    producer
        .enqueue_with(
            &Job {
                n: 99,
                note: String::new(),
            },
            EnqueueOptions::new().key("welcome-ada"),
        )
        .await
        .unwrap();
    let raw: Vec<jetq_producer::RawTask> = (0..10u64)
        .map(|n| jetq_producer::RawTask {
            queue: "work".into(),
            task: "job".into(),
            payload: format!("{{\"n\":{n}}}").into(),
            options: if n == 4 {
                EnqueueOptions::new().key("welcome-ada")
            } else {
                EnqueueOptions::default()
            },
        })
        .collect();
    let results = producer.enqueue_many_raw(raw).await;
    for (n, result) in results.iter().enumerate() {
        let enqueued = result.as_ref().unwrap();
        assert_eq!(enqueued.duplicate, n == 4, "task {n}");
    }
    let js = raw_jetstream(&server).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(stored_ns(&stored), [99, 0, 1, 2, 3, 5, 6, 7, 8, 9]);
}

#[tokio::test]
async fn a_stream_without_atomic_publish_gets_the_tasks_one_by_one() {
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    // Created as before 2.12 (or by an older jetq): no allow_atomic.
    js.create_stream(Config {
        name: "JETQ_TASKS".into(),
        subjects: vec!["jetq.task.*.*".into()],
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    let producer = Producer::builder()
        .connection(connection(&server))
        .provision(false)
        .connect()
        .await
        .unwrap();
    for round in 0..2u64 {
        let results = producer
            .enqueue_many(&jobs(round * 50..round * 50 + 50))
            .await;
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    }
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(stored_ns(&stored), (0..100).collect::<Vec<_>>());
    assert!(stored.iter().all(|m| header(m, "Nats-Batch-Id").is_none()));
}

#[tokio::test]
async fn a_batch_that_would_overflow_the_stream_stores_what_fits_and_refuses_the_rest() {
    let server = NatsServer::start().await;
    let producer = Producer::builder()
        .connection(connection(&server))
        .streams(StreamSettings {
            stream_max_msgs: 25,
            ..StreamSettings::default()
        })
        .connect()
        .await
        .unwrap();
    let results = producer.enqueue_many(&jobs(0..40)).await;
    let (ok, full): (Vec<_>, Vec<_>) = results.iter().partition(|r| r.is_ok());
    assert_eq!(ok.len(), 25);
    assert_eq!(full.len(), 15);
    assert!(full
        .iter()
        .all(|r| matches!(r, Err(EnqueueError::StreamFull { .. }))));
    let js = raw_jetstream(&server).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(
        stored_ns(&stored),
        (0..25).collect::<Vec<_>>(),
        "none lost, none doubled"
    );
}

#[tokio::test]
async fn atomic_batches_can_be_turned_off() {
    let server = NatsServer::start().await;
    let producer = Producer::builder()
        .connection(connection(&server))
        .atomic_batches(false)
        .connect()
        .await
        .unwrap();
    let results = producer.enqueue_many(&jobs(0..30)).await;
    assert!(results.iter().all(|r| r.is_ok()));
    let js = raw_jetstream(&server).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(stored_ns(&stored), (0..30).collect::<Vec<_>>());
    assert!(
        stored.iter().all(|m| header(m, "Nats-Batch-Id").is_none()),
        "sent one by one"
    );
}

/// Concurrent `enqueue` calls (web requests at once) share atomic batches, and each still gets
/// its own task's answer: a caller whose key was used gets `duplicate: true`, the others their
/// sequences.
#[tokio::test]
async fn concurrent_enqueue_calls_share_batches_and_each_gets_its_own_answer() {
    let server = NatsServer::start().await;
    // Forced: whether `auto` gathers 64 calls depends on what it measured (group_commit.rs).
    let producer = Producer::builder()
        .connection(connection(&server))
        .group_commit(GroupCommit::Always)
        .connect()
        .await
        .unwrap();
    producer
        .enqueue_with(
            &Job {
                n: 1000,
                note: String::new(),
            },
            EnqueueOptions::new().key("taken"),
        )
        .await
        .unwrap();
    let calls = (0..64u64).map(|n| {
        let producer = producer.clone();
        tokio::spawn(async move {
            let options = if n == 7 {
                EnqueueOptions::new().key("taken")
            } else {
                EnqueueOptions::default()
            };
            let job = Job {
                n,
                note: String::new(),
            };
            (n, producer.enqueue_with(&job, options).await)
        })
    });
    let results = futures::future::join_all(calls).await;
    let mut sequences = BTreeSet::new();
    for joined in results {
        let (n, result) = joined.unwrap();
        let enqueued = result.unwrap();
        assert_eq!(enqueued.duplicate, n == 7, "call {n}");
        if n != 7 {
            assert!(sequences.insert(enqueued.sequence), "one sequence per task");
        }
    }
    let js = raw_jetstream(&server).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    let mut ns = stored_ns(&stored);
    ns.sort_unstable();
    let mut expected: Vec<u64> = (0..64).filter(|n| *n != 7).collect();
    expected.push(1000);
    expected.sort_unstable();
    assert_eq!(ns, expected, "every task once, the duplicate not at all");
    let stored_sequences: BTreeSet<u64> = stored
        .iter()
        .filter(|m| serde_json::from_slice::<Job>(&m.payload).unwrap().n != 1000)
        .map(|m| m.sequence)
        .collect();
    assert_eq!(
        stored_sequences, sequences,
        "each caller got its task's sequence"
    );
}
