//! Waits shared by several integration test files (each file uses a subset, hence the allow).
#![allow(dead_code)]

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use jetq_consumer::TaskContext;
use jetq_tests::*;
use tokio::sync::mpsc::UnboundedReceiver;

/// Waits until the task stream is empty: every task acked or dead-lettered.
pub(crate) async fn await_drained(js: &jetstream::Context) {
    eventually(WAIT, "the task stream to drain", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
}

/// Receives processed task numbers until every one in `expected` was seen (or `limit` passes,
/// which fails the test naming how many are missing). Returns everything received.
pub(crate) async fn await_processed(
    expected: &HashSet<u64>,
    processed_rx: &mut UnboundedReceiver<u64>,
    limit: Duration,
) -> HashSet<u64> {
    let mut processed = HashSet::new();
    let deadline = Instant::now() + limit;
    while !expected.is_subset(&processed) {
        assert!(
            Instant::now() < deadline,
            "{} acknowledged tasks never processed",
            expected.difference(&processed).count()
        );
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(5), processed_rx.recv()).await
        {
            processed.insert(n);
        }
    }
    processed
}

/// Runs `builder` with a `Job` handler that reports each task's `n`, until the test ends.
pub(crate) async fn recording_worker(
    builder: jetq_consumer::WorkerBuilder,
) -> UnboundedReceiver<u64> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = builder
        .handler(move |job: Job, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(job.n).ok();
                ok()
            }
        })
        .build()
        .await
        .expect("worker builds");
    tokio::spawn(worker.run_until(std::future::pending()));
    rx
}

/// Spends every delivery of the next task of durable `durable` without a result (as if each
/// worker died mid-task, NAKing through the raw consumer), then pulls once more so the server
/// notices and publishes its max-deliveries advisory; returns once `JETQ_ADVISORIES` holds it.
/// The task is left stranded in the task stream for a sweeper to find.
pub(crate) async fn strand_next_task(js: &jetstream::Context, durable: &str, max_deliver: u64) {
    use async_nats::jetstream::{consumer::PullConsumer, AckKind};
    use futures::StreamExt;

    let stream = js.get_stream("JETQ_TASKS").await.expect("task stream");
    let consumer: PullConsumer = stream.get_consumer(durable).await.expect("the durable");
    let advisories_before = stream_len(js, "JETQ_ADVISORIES").await;
    for delivery in 1..=max_deliver {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("pull");
        let message = within(WAIT, "a delivery", batch.next())
            .await
            .expect("a message")
            .expect("a delivery");
        assert_eq!(
            message.info().expect("delivery info").delivered as u64,
            delivery
        );
        message.ack_with(AckKind::Nak(None)).await.expect("nak");
    }
    // The server notices the spent deliveries when the queue is next pulled (as its workers
    // always do): that pull gets nothing, and the advisory goes out.
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .expect("pull");
    let nothing = within(WAIT, "an empty pull", batch.next()).await;
    assert!(
        nothing.is_none() || nothing.as_ref().is_some_and(|r| r.is_err()),
        "no delivery beyond max_deliver: {nothing:?}"
    );
    eventually(WAIT, "the max-deliveries advisory to be captured", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_ADVISORIES").await > advisories_before).then_some(()) }
    })
    .await;
}

/// Starts the `test_worker` binary (tests/src/bin/test_worker.rs) against `server` with the
/// given `JETQ_*` variables, and waits until it announced itself on `test.ready` (so it pulls).
pub(crate) async fn start_test_worker(
    server: &NatsServer,
    name: &str,
    env: &[(&str, &str)],
    ready: &mut async_nats::Subscriber,
) -> tokio::process::Child {
    use futures::StreamExt;

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_test_worker"));
    command
        .env("JETQ_NATS_URL", server.url())
        .env("TEST_WORKER_NAME", name)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().expect("test_worker starts");
    loop {
        let message = within(WAIT, "worker process ready", ready.next())
            .await
            .expect("ready subscription");
        if message.payload == name.as_bytes() {
            return child;
        }
    }
}
