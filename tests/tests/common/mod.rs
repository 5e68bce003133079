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
pub async fn await_drained(js: &jetstream::Context) {
    eventually(WAIT, "the task stream to drain", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
}

/// Receives processed task numbers until every one in `expected` was seen (or `limit` passes,
/// which fails the test naming how many are missing). Returns everything received.
pub async fn await_processed(
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
pub async fn recording_worker(builder: jetq_consumer::WorkerBuilder) -> UnboundedReceiver<u64> {
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
