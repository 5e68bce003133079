//! `jetq limits` (docs/FLOW_CONTROL.md, PROTOCOL.md §11) against a real nats-server: the limits
//! a real worker registered, a rate bucket and a held slot, the unique keys held with their
//! holders, and `jetq limits release` freeing a stuck unique key so the next enqueue is a new
//! task.

mod common;

use std::time::Duration;

use common::*;
use jetq_consumer::{ConcurrencyLimit, Limits, RateLimit, TaskContext};
use jetq_producer::{EnqueueOptions, Unique};

#[tokio::test]
async fn limits_lists_what_the_workers_registered_and_who_holds_what() {
    let server = NatsServer::start().await;
    let (running_tx, mut running) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let worker = worker(&server)
        .handler(move |job: Job, _ctx: TaskContext| {
            let running_tx = running_tx.clone();
            async move {
                running_tx.send(job.n).ok();
                tokio::time::sleep(Duration::from_secs(if job.n == 1 { 30 } else { 0 })).await;
                ok()
            }
        })
        .limits::<Job>(
            Limits::new()
                .rate(RateLimit::new(50.0, 10).unwrap())
                .concurrency(ConcurrencyLimit::new(2).unwrap().per_key()),
        )
        .build()
        .await
        .unwrap();
    let (_stop, _run) = spawn_worker(worker);
    let producer = producer(&server).await;
    let options = EnqueueOptions::new()
        .unique(Unique::key("nightly:acme"))
        .limit_key("tenant-7");
    let held = producer
        .enqueue_with(
            &Job {
                n: 1,
                note: String::new(),
            },
            options.clone(),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut running, "the task to run").await, 1);

    let overview = admin(&server).await.limits().await.unwrap();
    assert!(overview.limits_bucket && overview.unique_bucket);
    let [config] = overview.configured.as_slice() else {
        panic!("one configured type: {overview:?}")
    };
    assert_eq!(
        (config.queue.as_str(), config.task.as_str()),
        ("work", "job")
    );
    assert_eq!(
        (config.rate, config.burst, config.rate_per_key),
        (Some(50.0), Some(10), false)
    );
    assert_eq!(
        (config.concurrency, config.concurrency_per_key),
        (Some(2), true)
    );
    assert_eq!(overview.rates.len(), 1, "{overview:?}");
    assert_eq!(overview.rates[0].entry, "rate.work.job");
    let [slots] = overview.concurrency.as_slice() else {
        panic!("one concurrency entry: {overview:?}")
    };
    assert_eq!(slots.limit_key.as_deref(), Some("tenant-7"));
    assert_eq!(slots.running.len(), 1);
    assert_eq!(
        slots.running[0].1, held.id,
        "the running task holds the slot"
    );
    let [unique] = overview.unique.as_slice() else {
        panic!("one unique key: {overview:?}")
    };
    assert_eq!(
        (unique.key.as_str(), unique.hold.task_id.as_str()),
        ("nightly:acme", held.id.as_str())
    );
    assert!(!unique.expired);
    let text = jetq_cli::limits::render(&overview);
    assert!(
        text.contains("nightly:acme") && text.contains("rate.work.job"),
        "{text}"
    );

    // Held while it runs; released by hand, the next enqueue is a new task.
    let dup = producer
        .enqueue_with(
            &Job {
                n: 2,
                note: String::new(),
            },
            options.clone(),
        )
        .await
        .unwrap();
    assert!(dup.duplicate);
    let bucket = admin(&server)
        .await
        .release_limit(&unique.entry)
        .await
        .unwrap();
    assert_eq!(bucket, "JETQ_UNIQUE");
    let fresh = producer
        .enqueue_with(
            &Job {
                n: 3,
                note: String::new(),
            },
            options,
        )
        .await
        .unwrap();
    assert!(!fresh.duplicate);
    assert!(matches!(
        admin(&server)
            .await
            .release_limit("work.job.nothing-here")
            .await,
        Err(jetq_cli::AdminError::NotFound { .. })
    ));

    // Two more long tasks of the same limit key: one takes the second slot, the other waits.
    for _ in 0..2 {
        producer
            .enqueue_with(
                &Job {
                    n: 1,
                    note: String::new(),
                },
                EnqueueOptions::new().limit_key("tenant-7"),
            )
            .await
            .unwrap();
    }
    let admin = admin(&server).await;
    let slots = eventually(WAIT, "a task to wait for a slot", || async {
        let overview = admin.limits().await.unwrap();
        let slots = overview.concurrency[0].clone();
        (slots.running.len() == 2 && slots.waiting >= 1).then_some(slots)
    })
    .await;
    assert_eq!(slots.entry, "conc.work.job.tenant-7");
    assert!(jetq_cli::limits::render(&admin.limits().await.unwrap()).contains("waiting"));
}

/// `jetq limits prune` deletes what no longer holds anything and keeps what does.
#[tokio::test]
async fn prune_deletes_only_entries_that_hold_nothing() {
    use jetq_contract::flow::{self, concurrency::Slots, unique::UniqueHold, UniqueScope};
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    // A live unique key: its task is queued.
    let live = producer
        .enqueue_with(
            &Job {
                n: 1,
                note: String::new(),
            },
            EnqueueOptions::new().unique(Unique::key("live")),
        )
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    let unique = js.get_key_value("JETQ_UNIQUE").await.unwrap();
    let now = flow::micros(std::time::SystemTime::now());
    // A producer that died before publishing, a minute and more ago.
    let dead = UniqueHold::pending(
        "01DEAD",
        "work",
        "job",
        UniqueScope::Active,
        now - 61_000_000,
    );
    unique
        .create("work.job.dead", dead.to_json().into())
        .await
        .unwrap();
    let limits = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "JETQ_LIMITS".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    // Slots whose only holder's lease ended (its worker was killed), and a live one.
    let expired = Slots::default().acquire(1, 7, "T7", now - 10_000_000, now - 5_000_000);
    let running = Slots::default().acquire(1, 8, "T8", now, now + 30_000_000);
    for (key, acquired) in [("conc.work.job", expired), ("conc.work.job.k", running)] {
        let jetq_contract::flow::concurrency::Acquire::Taken(slots) = acquired else {
            panic!()
        };
        limits.put(key, slots.to_json().into()).await.unwrap();
    }
    let pruned = admin(&server).await.prune_limits().await.unwrap();
    assert_eq!(pruned.unique, vec!["work.job.dead".to_owned()]);
    assert_eq!(pruned.limits, vec!["conc.work.job".to_owned()]);
    assert!(unique.get("work.job.live").await.unwrap().is_some());
    assert!(limits.get("conc.work.job.k").await.unwrap().is_some());
    let dup = producer
        .enqueue_with(
            &Job {
                n: 2,
                note: String::new(),
            },
            EnqueueOptions::new().unique(Unique::key("live")),
        )
        .await
        .unwrap();
    assert!(
        dup.duplicate && dup.id == live.id,
        "the live key still holds"
    );
}

/// The `jetq` binary: `limits --json` lists a held unique key, `limits release` frees it (exit
/// 0, JSON naming the bucket), releasing it again is not found (exit 3), `limits prune --json`
/// answers.
#[tokio::test]
async fn the_jetq_binary_lists_releases_and_prunes() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let held = producer
        .enqueue_with(
            &Job {
                n: 1,
                note: String::new(),
            },
            EnqueueOptions::new().unique(Unique::key("report:acme")),
        )
        .await
        .unwrap();
    let listed = jetq(&server, &["limits", "--json"]).await.ok_json();
    assert_eq!(listed["unique_bucket"], true);
    assert_eq!(listed["unique"][0]["entry"], "work.job.report=3Aacme");
    assert_eq!(listed["unique"][0]["key"], "report:acme");
    assert_eq!(listed["unique"][0]["hold"]["task_id"], held.id.as_str());
    let text = jetq(&server, &["limits"]).await;
    text.expect_code(0);
    assert!(text.stdout.contains("report:acme"), "{}", text.stdout);
    let released = jetq(
        &server,
        &["limits", "release", "work.job.report=3Aacme", "--json"],
    )
    .await
    .ok_json();
    assert_eq!(released["bucket"], "JETQ_UNIQUE");
    jetq(&server, &["limits", "release", "work.job.report=3Aacme"])
        .await
        .expect_code(3);
    let pruned = jetq(&server, &["limits", "prune", "--json"])
        .await
        .ok_json();
    assert!(pruned["unique"].is_array());
    let fresh = producer
        .enqueue_with(
            &Job {
                n: 2,
                note: String::new(),
            },
            EnqueueOptions::new().unique(Unique::key("report:acme")),
        )
        .await
        .unwrap();
    assert!(!fresh.duplicate, "released by the command");
}
