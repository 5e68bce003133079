//! When concurrent `enqueue` calls share atomic batches (group commit, `JETQ_GROUP_COMMIT`),
//! against real nats-servers: under the server's default lazy fsync a batch's fixed cost (a
//! staging store per batch, milliseconds) makes lone publishes the faster way, and the default
//! `auto` mode publishes alone where `always` would gather; under `sync_interval: always` with
//! many callers lone publishes queue behind each other's disk syncs and `auto` gathers.
//!
//! A stored task keeps the `Nats-Batch-Id` header it was published with, so the stream shows
//! which tasks travelled in a batch.

use std::time::Duration;

use jetq_producer::{GroupCommit, Producer};
use jetq_tests::*;

/// `callers` concurrent callers, each enqueueing `per_caller` tasks one after the other and
/// awaiting each (web requests at once); the tasks are numbered from `first`.
async fn enqueue_from_callers(producer: &Producer, first: u64, callers: u64, per_caller: u64) {
    let calls = (0..callers).map(|caller| {
        let producer = producer.clone();
        tokio::spawn(async move {
            for round in 0..per_caller {
                let job = Job {
                    n: first + caller * per_caller + round,
                    note: String::new(),
                };
                producer.enqueue(&job).await.expect("enqueue succeeds");
            }
        })
    });
    within(
        Duration::from_secs(60),
        "every caller's enqueues",
        futures::future::join_all(calls),
    )
    .await
    .into_iter()
    .for_each(|joined| joined.expect("caller task"));
}

async fn producer_with(server: &NatsServer, mode: GroupCommit) -> Producer {
    Producer::builder()
        .connection(connection(server))
        .group_commit(mode)
        .connect()
        .await
        .expect("producer connects")
}

/// How many of the stored tasks numbered in `range` were stored by an atomic batch, and how
/// many there are (each exactly once, checked).
async fn batched_in(server: &NatsServer, range: std::ops::Range<u64>) -> (usize, usize) {
    let js = raw_jetstream(server).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    let mut ns = Vec::new();
    let mut batched = 0;
    for message in &stored {
        let job: Job = serde_json::from_slice(&message.payload).expect("a Job payload");
        if range.contains(&job.n) {
            ns.push(job.n);
            batched += usize::from(header(message, "Nats-Batch-Id").is_some());
        }
    }
    ns.sort_unstable();
    assert_eq!(ns, range.collect::<Vec<_>>(), "every task stored once");
    (batched, ns.len())
}

#[tokio::test]
async fn under_lazy_fsync_concurrent_enqueues_publish_alone_where_forced_batches_would_gather() {
    let server = NatsServer::builder().sync_always(false).start().await;

    // The same load with group commit forced: callers pile up behind the batches' commits.
    let forced = producer_with(&server, GroupCommit::Always).await;
    enqueue_from_callers(&forced, 0, 8, 40).await;
    let (batched, total) = batched_in(&server, 0..320).await;
    assert!(
        batched * 2 >= total,
        "forced group commit gathers this load: {batched} of {total} batched"
    );

    // Measured: a lone publish is answered sooner than a batch, so calls go alone — once the
    // producer has measured a few (a connection's first publishes are slow).
    let measured = producer_with(&server, GroupCommit::Auto).await;
    enqueue_from_callers(&measured, 500, 8, 10).await;
    enqueue_from_callers(&measured, 1000, 8, 40).await;
    let (batched, total) = batched_in(&server, 1000..1320).await;
    assert!(
        batched * 10 <= total,
        "under lazy fsync at most a probing batch: {batched} of {total} batched"
    );
}

/// Test servers sync every write (`sync_interval: always`) to this machine's disk, where an
/// fsync takes a fraction of a millisecond or more: 64 lone publishes at once wait for each
/// other's syncs for several milliseconds, longer than a batch takes.
#[tokio::test]
async fn under_sync_always_many_concurrent_enqueues_share_batches() {
    let server = NatsServer::start().await;
    let producer = producer_with(&server, GroupCommit::Auto).await;
    enqueue_from_callers(&producer, 0, 64, 20).await;
    let (batched, total) = batched_in(&server, 0..1280).await;
    // `auto` settles on a split between lone and batched calls (a quarter or more batched
    // here when idle, 23% in a loaded CI run); never gathering batches none.
    assert!(
        batched * 10 >= total,
        "64 callers under sync always share batches: {batched} of {total} batched"
    );
}

#[tokio::test]
async fn group_commit_off_publishes_every_call_alone() {
    let server = NatsServer::start().await;
    let producer = producer_with(&server, GroupCommit::Off).await;
    enqueue_from_callers(&producer, 0, 64, 5).await;
    let (batched, total) = batched_in(&server, 0..320).await;
    assert_eq!((batched, total), (0, 320), "no call gathered");
}
