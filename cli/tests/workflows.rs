//! `jetq batches`, `jetq batch <id>` and `jetq chain <id>` (Admin::batches, batch_detail,
//! chain_detail) against a real nats-server, with real batches and a chain run by a worker:
//! a chord of 150 members (paged), a batch with a dead member (on_complete only), a chain.

mod common;

use std::time::Duration;

use common::*;
use jetq_consumer::{TaskContext, TaskError};
use jetq_producer::{BatchOptions, Chain};
use jetq_tests::workflow::{Done, Step};

#[tokio::test]
async fn batches_and_chains_are_listed_and_shown_with_their_members_paged() {
    init_logs();
    let server = NatsServer::start().await;
    let (fired_tx, mut fired) = tokio::sync::mpsc::unbounded_channel::<String>();
    let built = worker(&server)
        .handler(|job: Job, ctx: TaskContext| async move {
            match job.note.as_str() {
                "fail" => Err(TaskError::fatal("asked to fail")),
                _ => {
                    // Chord members are tracked; the other batch's are not.
                    if ctx.is_tracked() {
                        ctx.set_result(&serde_json::json!({ "n": job.n }))
                            .map_err(TaskError::fatal)?;
                    }
                    Ok(())
                }
            }
        })
        .handler(move |done: Done, _ctx: TaskContext| {
            let fired = fired_tx.clone();
            async move {
                let _ = fired.send(format!("{} {}", done.batch.id, done.which));
                Ok::<(), TaskError>(())
            }
        })
        .handler(|step: Step, ctx: TaskContext| async move {
            if ctx.is_tracked() {
                ctx.set_result(&serde_json::json!({ "from": step.name }))
                    .map_err(TaskError::fatal)?;
            }
            Ok::<(), TaskError>(())
        })
        .build()
        .await
        .expect("worker builds");
    let (stop, run) = spawn_worker(built);
    let producer = producer(&server).await;

    let mut chord = producer.batch(BatchOptions::new().id("cli-chord").chord());
    for n in 0..150 {
        chord = chord.add(&Job {
            n,
            note: String::new(),
        });
    }
    chord
        .on_success(&Done {
            which: "on_success".into(),
            ..Default::default()
        })
        .on_complete(&Done {
            which: "on_complete".into(),
            ..Default::default()
        })
        .enqueue()
        .await
        .expect("chord enqueued");
    producer
        .batch(BatchOptions::new().id("cli-dead"))
        .add(&Job {
            n: 1,
            note: String::new(),
        })
        .add(&Job {
            n: 2,
            note: "fail".into(),
        })
        .on_success(&Done {
            which: "on_success".into(),
            ..Default::default()
        })
        .on_complete(&Done {
            which: "on_complete".into(),
            ..Default::default()
        })
        .enqueue()
        .await
        .expect("batch enqueued");
    let chain = producer
        .enqueue_chain(
            Chain::new()
                .id("cli-chain")
                .then(&Step {
                    name: "a".into(),
                    ..Default::default()
                })
                .then_with_previous(&Step {
                    name: "b".into(),
                    ..Default::default()
                }),
        )
        .await
        .expect("chain started");

    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut fired, "a callback").await);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "cli-chord on_complete",
            "cli-chord on_success",
            "cli-dead on_complete"
        ]
    );
    let admin = admin(&server).await;
    eventually(Duration::from_secs(10), "the chain succeeded", || async {
        admin
            .chain_detail(&chain.id)
            .await
            .ok()
            .filter(|c| c.state == jetq_contract::workflow::ChainState::Succeeded)
    })
    .await;
    // The firing's done_at is written after the callback's publish: wait for it.
    eventually(Duration::from_secs(10), "both batches fired", || async {
        let rows = admin.batches().await.ok()?;
        rows.iter()
            .all(|r| r.completed_fired)
            .then_some(rows)
            .filter(|rows| rows.len() == 2)
    })
    .await;

    // jetq batches --json
    let list = jetq(&server, &["--json", "batches"]).await.ok_json();
    let rows = list.as_array().expect("an array");
    assert_eq!(rows.len(), 2);
    let row = |id: &str| {
        rows.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed: {list}"))
            .clone()
    };
    let chord_row = row("cli-chord");
    assert_eq!(chord_row["state"], "closed");
    assert_eq!(chord_row["total"], 150);
    assert_eq!(chord_row["succeeded"], 150);
    assert_eq!(chord_row["dead"], 0);
    assert_eq!(chord_row["pending"], 0);
    assert_eq!(chord_row["completed_fired"], true);
    assert_eq!(chord_row["success_fired"], true);
    assert_eq!(chord_row["chord"], true);
    let dead_row = row("cli-dead");
    assert_eq!(
        (
            &dead_row["total"],
            &dead_row["succeeded"],
            &dead_row["dead"]
        ),
        (&2.into(), &1.into(), &1.into())
    );
    assert_eq!(dead_row["completed_fired"], true);
    assert_eq!(dead_row["success_fired"], false);
    let text = jetq(&server, &["batches"]).await;
    text.expect_code(0);
    assert!(text.stdout.contains("cli-chord") && text.stdout.contains("on_complete,on_success"));

    // jetq batch <id>: exact counts and the members in pages of 100.
    let first = jetq(&server, &["--json", "batch", "cli-chord"])
        .await
        .ok_json();
    assert_eq!(first["succeeded"], 150);
    assert_eq!(first["pending"], 0);
    assert_eq!(first["on_success"]["task"], "done");
    assert!(first["succeeded_all"]["done_at"].is_string());
    let members = first["members"].as_array().expect("members");
    assert_eq!(members.len(), 100);
    assert!(members.iter().all(|m| m["outcome"] == "succeeded"));
    assert!(members.iter().all(|m| m["result"]["n"].is_u64()));
    let after = first["next_after"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = jetq(
        &server,
        &["--json", "batch", "cli-chord", "--after", &after],
    )
    .await
    .ok_json();
    let rest = second["members"].as_array().expect("members");
    assert_eq!(rest.len(), 50);
    assert!(second["next_after"].is_null());
    let mut ids: Vec<&str> = members
        .iter()
        .chain(rest)
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 150, "no member twice across the pages");
    let dead = admin
        .batch_detail("cli-dead", None, 0)
        .await
        .expect("batch detail");
    assert_eq!((dead.succeeded, dead.dead, dead.pending), (1, 1, 0));
    assert!(dead.succeeded_all.is_none(), "on_success never fires");
    let text = jetq(&server, &["batch", "cli-dead"]).await;
    text.expect_code(0);
    assert!(
        text.stdout.contains("1 succeeded, 1 dead"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("dead"));

    // jetq chain <id>
    let chain_json = jetq(&server, &["--json", "chain", "cli-chain"])
        .await
        .ok_json();
    assert_eq!(chain_json["state"], "succeeded");
    assert_eq!(chain_json["at"], 1);
    assert_eq!(chain_json["links"][1]["with_previous"], true);
    let text = jetq(&server, &["chain", "cli-chain"]).await;
    text.expect_code(0);
    assert!(text.stdout.contains("work.step"));
    // jetq chains
    let chains = jetq(&server, &["--json", "chains"]).await.ok_json();
    assert_eq!(chains[0]["id"], "cli-chain");
    assert_eq!(chains[0]["state"], "succeeded");
    assert_eq!(chains[0]["links"], 2);
    let text = jetq(&server, &["chains"]).await;
    text.expect_code(0);
    assert!(
        text.stdout.contains("cli-chain") && text.stdout.contains("done"),
        "{}",
        text.stdout
    );

    // Unknown and invalid ids.
    jetq(&server, &["batch", "nope"]).await.expect_code(3);
    jetq(&server, &["chain", "nope"]).await.expect_code(3);
    jetq(&server, &["batch", "a.b"]).await.expect_code(2);

    stop_worker(stop, run).await;
}

#[tokio::test]
async fn an_installation_without_batches_lists_none() {
    init_logs();
    let server = NatsServer::start().await;
    let list = jetq(&server, &["--json", "batches"]).await.ok_json();
    assert_eq!(list, serde_json::json!([]));
    let chains = jetq(&server, &["--json", "chains"]).await.ok_json();
    assert_eq!(chains, serde_json::json!([]));
    jetq(&server, &["batch", "b1"]).await.expect_code(3);
}
