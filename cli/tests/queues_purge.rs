//! `jetq queues purge <queue>` deletes one queue's waiting tasks — only that queue's, only
//! after confirmation — against a real nats-server.

mod common;

use std::time::Duration;

use common::*;

fn job(n: u64) -> Job {
    Job {
        n,
        note: String::new(),
    }
}

fn email(to: &str) -> Email {
    Email { to: to.into() }
}

#[tokio::test]
async fn purge_deletes_only_the_named_queue_and_asks_first() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    for n in 0..5 {
        producer.enqueue(&job(n)).await.unwrap();
    }
    for to in ["a@example.com", "b@example.com"] {
        producer.enqueue(&email(to)).await.unwrap();
    }
    producer
        .enqueue_in(Duration::from_secs(3600), &job(99))
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 7);

    // Not a terminal and no --yes: refused, nothing deleted.
    let refused = jetq(&server, &["queues", "purge", "work"]).await;
    refused.expect_code(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("5 task(s) of queue work"),
        "{}",
        refused.stderr
    );
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 7);

    // A dry run counts, deletes nothing; with --delayed it counts the delayed task too.
    let dry = jetq(
        &server,
        &[
            "--json",
            "queues",
            "purge",
            "work",
            "--delayed",
            "--dry-run",
        ],
    )
    .await
    .ok_json();
    assert_eq!(
        (dry["tasks"].as_u64(), dry["delayed"].as_u64()),
        (Some(5), Some(1))
    );
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 7);

    // One task type of another queue only.
    let one_type = jetq(
        &server,
        &[
            "--json",
            "queues",
            "purge",
            "emails",
            "--task",
            "send_email",
            "--yes",
        ],
    )
    .await
    .ok_json();
    assert_eq!(one_type["tasks"], 2);
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 5);

    // The queue itself: its 5 tasks go, the delayed one stays without --delayed.
    let purged = jetq(&server, &["--json", "queues", "purge", "work", "--yes"])
        .await
        .ok_json();
    assert_eq!(
        (purged["tasks"].as_u64(), purged["delayed"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 0);
    assert_eq!(stream_len(&js, "JETQ_DELAYED").await, 1);

    // A queue nobody knows is an error (a typo must not look like an empty queue); a bad name
    // is refused before anything is asked.
    jetq(&server, &["queues", "purge", "wrok", "--yes"])
        .await
        .expect_code(3);
    let bad = jetq(&server, &["queues", "purge", "a.b", "--yes"]).await;
    bad.expect_code(2);
    assert!(bad.stderr.contains("queue"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_purged_queue_runs_nothing_it_held_and_later_tasks_normally() {
    init_logs();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    // The queue's consumer exists (a worker provisioned it) while its tasks wait.
    provision(&server, &[("work", 64)]).await;
    for n in 0..20 {
        producer.enqueue(&job(n)).await.unwrap();
    }
    let purged = jetq(&server, &["--json", "queues", "purge", "work", "--yes"])
        .await
        .ok_json();
    assert_eq!(purged["tasks"], 20);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |job: Job, _ctx: jetq_consumer::TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(job.n).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (stop, run) = spawn_worker(worker);
    producer.enqueue(&job(100)).await.unwrap();
    // The first task the worker runs is the one enqueued after the purge.
    assert_eq!(
        next(&mut rx, "the task enqueued after the purge").await,
        100
    );
    let stats = jetq(
        &server,
        &["--json", "queues", "--interval", "0", "--queue", "work"],
    )
    .await
    .ok_json();
    assert_eq!(stats["queues"][0]["pending"], 0);
    stop_worker(stop, run).await;
}
