//! `jetq pause` stops delivery of a queue to its running workers and `jetq resume` restores it,
//! against a real nats-server (2.11+ consumer pause API).

mod common;

use std::time::Duration;

use common::*;
use jetq_consumer::TaskContext;
use tokio::sync::mpsc;

fn job(n: u64) -> Job {
    Job {
        n,
        note: String::new(),
    }
}

async fn recording_worker(
    server: &NatsServer,
    tx: mpsc::UnboundedSender<u64>,
) -> jetq_consumer::Worker {
    worker(server)
        .handler(move |job: Job, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(job.n).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn pause_stops_delivery_to_a_worker_and_resume_restores_it() {
    init_logs();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop, run) = spawn_worker(recording_worker(&server, tx.clone()).await);
    let producer = producer(&server).await;
    producer.enqueue(&job(1)).await.unwrap();
    assert_eq!(next(&mut rx, "the first task").await, 1);

    let paused = jetq(&server, &["--json", "pause", "work"]).await.ok_json();
    assert_eq!(paused["queue"], "work");
    assert_eq!(paused["consumer"], "worker-work");
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["until_resumed"], true);

    for n in 2..=4 {
        producer.enqueue(&job(n)).await.unwrap();
    }
    // The worker keeps pulling (every 500 ms in tests) but gets nothing: watch six pull cycles.
    let quiet = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
    assert!(
        quiet.is_err(),
        "a task was delivered while paused: {quiet:?}"
    );
    let stats = jetq(
        &server,
        &["--json", "queues", "--interval", "0", "--queue", "work"],
    )
    .await
    .ok_json();
    let work = &stats["queues"][0];
    assert_eq!(work["paused"], true);
    assert!(work["pause_until"].is_string());
    assert_eq!(work["pending"], 3);
    assert_eq!(work["in_flight"], 0);

    let resumed = jetq(&server, &["--json", "resume", "work"]).await.ok_json();
    assert_eq!(resumed["paused"], false);
    let mut got = Vec::new();
    for _ in 2..=4 {
        got.push(next(&mut rx, "tasks after resume").await);
    }
    got.sort_unstable();
    assert_eq!(got, [2, 3, 4]);

    // A pause with an end resumes by itself.
    let timed = jetq(&server, &["--json", "pause", "work", "--for", "1s"])
        .await
        .ok_json();
    assert_eq!(timed["paused"], true);
    assert_eq!(timed["until_resumed"], false);
    producer.enqueue(&job(5)).await.unwrap();
    assert_eq!(next(&mut rx, "the task after the pause ran out").await, 5);

    let text = jetq(&server, &["pause", "work"]).await;
    text.expect_code(0);
    assert!(
        text.stdout.contains("paused until `jetq resume work`"),
        "{}",
        text.stdout
    );
    jetq(&server, &["resume", "work"]).await.expect_code(0);

    jetq(&server, &["pause", "no-such-queue"])
        .await
        .expect_code(3);
    jetq(&server, &["pause", "bad.name"]).await.expect_code(2);
    drop(stop);
    within(WAIT, "worker stop", run).await.unwrap();
}

/// What happens to a pause when a worker of the queue restarts and reconciles its consumer.
#[tokio::test]
async fn a_pause_survives_a_worker_restart() {
    init_logs();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop, run) = spawn_worker(recording_worker(&server, tx.clone()).await);
    jetq(&server, &["pause", "work"]).await.expect_code(0);
    drop(stop);
    within(WAIT, "worker stop", run).await.unwrap();

    // A new worker reconciles the durable consumer at startup.
    let (stop, run) = spawn_worker(recording_worker(&server, tx).await);
    let stats = jetq(
        &server,
        &["--json", "queues", "--interval", "0", "--queue", "work"],
    )
    .await
    .ok_json();
    assert_eq!(
        stats["queues"][0]["paused"], true,
        "the restarted worker lifted the pause: {stats}"
    );
    producer(&server).await.enqueue(&job(1)).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert!(quiet.is_err(), "delivered while paused: {quiet:?}");
    jetq(&server, &["resume", "work"]).await.expect_code(0);
    assert_eq!(next(&mut rx, "the task after resume").await, 1);
    drop(stop);
    within(WAIT, "worker stop", run).await.unwrap();
}

/// nats-server 2.10 (the oldest supported line, installed by scripts/test.sh) has no pause API:
/// `jetq pause` says so with exit code 4, and everything else still works there.
#[tokio::test]
async fn pause_on_nats_server_2_10_is_refused_with_the_reason() {
    init_logs();
    let binary = match std::env::var_os("JETQ_TEST_MIN_NATS_SERVER") {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.tools/venv-nats-2.10/bin/nats-server");
            if !venv.exists() {
                eprintln!(
                    "SKIPPED: no nats-server 2.10 (JETQ_TEST_MIN_NATS_SERVER unset; run \
                     scripts/test.sh, which installs it)"
                );
                return;
            }
            venv
        }
    };
    let server = NatsServer::builder().binary(binary).start().await;
    assert!(
        server.version().starts_with("2.10."),
        "{}",
        server.version()
    );
    provision(&server, &[("work", 10)]).await;

    let refused = jetq(&server, &["--json", "pause", "work"]).await;
    refused.expect_code(4);
    let error = refused.json()["error"].clone();
    assert_eq!(error["kind"], "not_supported");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("2.11") && message.contains(server.version()),
        "{message}"
    );
    assert!(
        message.contains("scaling the queue's workers to zero"),
        "{message}"
    );
    jetq(&server, &["resume", "work"]).await.expect_code(4);

    let stats = jetq(&server, &["--json", "queues", "--interval", "0"])
        .await
        .ok_json();
    assert_eq!(stats["queues"][0]["queue"], "work");
    assert_eq!(stats["queues"][0]["paused"], false);
}
