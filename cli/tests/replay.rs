//! Replay against a real nats-server: exactly the selected dead letters move, the replayed task
//! keeps its payload and trace link and runs from attempt 1, and a crash between re-enqueue and
//! removal leaves a duplicate at worst, never a loss.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use jetq_cli::{dead::replay_id, DeadFilter};
use jetq_consumer::TaskContext;
use jetq_contract::{headers, QueueSettings, StreamSettings};
use serde_json::Value;
use tokio::sync::mpsc;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn replay_moves_exactly_the_selected_dead_letters() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 100), ("emails", 100)]).await;
    let js = raw_jetstream(&server).await;
    let mut seqs = Vec::new();
    for (queue, task, id) in [
        ("work", "job", "w1"),
        ("work", "job", "w2"),
        ("work", "job", "w3"),
        ("work", "job", "w4"),
        ("emails", "send_email", "e1"),
        ("emails", "send_email", "e2"),
    ] {
        let letter = Letter {
            traceparent: (id == "w2").then_some(TRACEPARENT),
            payload: if queue == "work" {
                "{\"n\":2}"
            } else {
                "{\"to\":\"a@example.com\"}"
            },
            ..Letter::new(queue, task, id)
        };
        seqs.push(write_dead(&js, &letter).await);
    }

    // One, by sequence.
    let one = jetq(&server, &["--json", "dead", "replay", &seqs[1].to_string()])
        .await
        .ok_json();
    assert_eq!(one["matched"], 1);
    assert_eq!(one["replayed"], 1);
    assert_eq!(one["duplicates"], 0);
    let new_id = format!("replay:{}:w2", seqs[1]);
    assert_eq!(one["items"][0]["new_id"], new_id.as_str());
    assert_eq!(
        dead_sequences(&js).await,
        [seqs[0], seqs[2], seqs[3], seqs[4], seqs[5]]
    );
    let tasks = task_messages(&js).await;
    assert_eq!(tasks.len(), 1);
    let replayed = &tasks[0];
    assert_eq!(replayed.subject.as_str(), "jetq.task.work.job");
    assert_eq!(&replayed.payload[..], b"{\"n\":2}");
    assert_eq!(required_header(replayed, headers::MSG_ID), new_id);
    assert_eq!(required_header(replayed, headers::TRACEPARENT), TRACEPARENT);
    assert!(header(replayed, headers::ENQUEUED_AT).is_some());
    for dead_only in [
        headers::TASK_ID,
        headers::DEAD_REASON,
        headers::ATTEMPTS,
        headers::FAILURE,
        headers::TASK_SEQUENCE,
        headers::DEAD_AT,
    ] {
        assert!(header(replayed, dead_only).is_none(), "{dead_only} kept");
    }

    // Several dead letters and no terminal to ask on: refused without --yes (exit 2, naming
    // --yes and the count); nothing moves.
    for args in [
        vec!["dead", "replay", "--queue", "emails"],
        vec!["dead", "replay", "--all"],
        vec!["dead", "replay", "--task-id", "w4"],
    ] {
        let refused = jetq(&server, &args).await;
        refused.expect_code(2);
        assert!(
            refused.stderr.contains("--yes") && refused.stderr.contains("dead letter(s)"),
            "{}",
            refused.stderr
        );
    }
    let two = [seqs[0].to_string(), seqs[2].to_string()];
    let refused = jetq(&server, &["dead", "replay", &two[0], &two[1]]).await;
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("2 dead letter(s)"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        dead_sequences(&js).await,
        [seqs[0], seqs[2], seqs[3], seqs[4], seqs[5]]
    );
    assert_eq!(task_messages(&js).await.len(), 1);

    // A filter: one queue.
    let emails = jetq(
        &server,
        &["--json", "dead", "replay", "--yes", "--queue", "emails"],
    )
    .await
    .ok_json();
    assert_eq!(emails["replayed"], 2);
    assert_eq!(dead_sequences(&js).await, [seqs[0], seqs[2], seqs[3]]);
    assert_eq!(task_messages(&js).await.len(), 3);

    // By task id.
    let by_id = jetq(
        &server,
        &["--json", "dead", "replay", "--yes", "--task-id", "w4"],
    )
    .await
    .ok_json();
    assert_eq!(by_id["replayed"], 1);
    assert_eq!(by_id["items"][0]["dead_sequence"], seqs[3]);
    assert_eq!(dead_sequences(&js).await, [seqs[0], seqs[2]]);

    // Nothing changes on a dry run, a bad selection or a missing sequence.
    let dry = jetq(&server, &["--json", "dead", "replay", "--all", "--dry-run"])
        .await
        .ok_json();
    assert_eq!(dry["matched"], 2);
    assert_eq!(dry["replayed"], 0);
    assert_eq!(dry["dry_run"], true);
    jetq(&server, &["dead", "replay"]).await.expect_code(2);
    jetq(
        &server,
        &["dead", "replay", &seqs[0].to_string(), "--queue", "work"],
    )
    .await
    .expect_code(2);
    let missing = jetq(
        &server,
        &["dead", "replay", &seqs[0].to_string(), &seqs[1].to_string()],
    )
    .await;
    missing.expect_code(3);
    assert!(
        missing.stderr.contains(&format!("dead letter {}", seqs[1])),
        "{}",
        missing.stderr
    );
    jetq(&server, &["dead", "replay", "--task-id", "nobody"])
        .await
        .expect_code(3);
    assert_eq!(dead_sequences(&js).await, [seqs[0], seqs[2]]);
    assert_eq!(task_messages(&js).await.len(), 4);

    // The rest.
    let rest = jetq(&server, &["--json", "dead", "replay", "--all", "--yes"])
        .await
        .ok_json();
    assert_eq!(rest["replayed"], 2);
    assert!(dead_sequences(&js).await.is_empty());
    let ids: BTreeSet<String> = task_messages(&js)
        .await
        .iter()
        .map(|m| required_header(m, headers::MSG_ID))
        .collect();
    let expected: BTreeSet<String> = [
        (0, "w1"),
        (1, "w2"),
        (2, "w3"),
        (3, "w4"),
        (4, "e1"),
        (5, "e2"),
    ]
    .iter()
    .map(|(i, id)| replay_id(seqs[*i], id))
    .collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_replayed_task_runs_again_from_attempt_one_with_its_trace_link() {
    init_logs();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send((
                    job.n,
                    ctx.attempt(),
                    ctx.id().to_owned(),
                    ctx.header(headers::TRACEPARENT).map(str::to_owned),
                ))
                .ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    let letter = Letter {
        traceparent: Some(TRACEPARENT),
        payload: "{\"n\":7}",
        ..Letter::new("work", "job", "task-7")
    };
    let seq = write_dead(&js, &letter).await;
    let (_stop, _run) = spawn_worker(worker);

    let report = jetq(&server, &["--json", "dead", "replay", &seq.to_string()])
        .await
        .ok_json();
    assert_eq!(report["replayed"], 1);
    let (n, attempt, id, traceparent) = next(&mut rx, "the replayed task to run").await;
    assert_eq!(n, 7);
    assert_eq!(attempt, 1, "a replay starts from attempt 1");
    assert_eq!(id, replay_id(seq, "task-7"));
    assert_eq!(traceparent.as_deref(), Some(TRACEPARENT));
    eventually(WAIT, "the replayed task to be acknowledged", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
    assert!(dead_sequences(&js).await.is_empty());
}

#[tokio::test]
async fn a_crash_between_reenqueue_and_removal_leaves_no_loss_and_no_duplicate_in_the_window() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 100)]).await;
    let js = raw_jetstream(&server).await;
    let mut expected = BTreeSet::new();
    for i in 0..5 {
        let id = format!("t{i}");
        let seq = write_dead(&js, &Letter::new("work", "job", &id)).await;
        expected.insert(replay_id(seq, &id));
    }
    let admin = admin(&server).await;
    let letters = admin
        .dead_letters(&DeadFilter::default(), None)
        .await
        .unwrap()
        .dead_letters;
    assert_eq!(letters.len(), 5);
    // A replay that crashed: the first three re-enqueued, only the first removed.
    for dead in &letters[..3] {
        let replayed = admin.republish(dead).await.unwrap();
        assert!(!replayed.duplicate);
    }
    assert!(admin.remove_dead_letter(letters[0].sequence).await.unwrap());
    assert_eq!(task_messages(&js).await.len(), 3);
    assert_eq!(dead_sequences(&js).await.len(), 4);

    // Running the replay again finishes the job.
    let report = jetq(&server, &["--json", "dead", "replay", "--all", "--yes"])
        .await
        .ok_json();
    assert_eq!(report["matched"], 4);
    assert_eq!(report["replayed"], 4);
    assert_eq!(
        report["duplicates"], 2,
        "the two stored before the crash: {report}"
    );
    assert!(dead_sequences(&js).await.is_empty());
    let stored = task_messages(&js).await;
    let ids: Vec<String> = stored
        .iter()
        .map(|m| required_header(m, headers::MSG_ID))
        .collect();
    assert_eq!(ids.len(), 5, "one task per dead letter: {ids:?}");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), expected);
}

#[tokio::test]
async fn a_crash_detected_after_the_duplicate_window_leaves_a_duplicate_never_a_loss() {
    init_logs();
    let server = NatsServer::start().await;
    let window = Duration::from_millis(800);
    let topology = topology(
        &server,
        StreamSettings {
            duplicate_window: window,
            ..StreamSettings::default()
        },
    )
    .await;
    topology
        .ensure_queue("work", &QueueSettings::default())
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    let seq = write_dead(&js, &Letter::new("work", "job", "late")).await;
    let admin = admin(&server).await;
    let dead = admin.dead_letter(seq).await.unwrap();
    admin.republish(&dead).await.unwrap();
    // The server forgets the replay's id once the duplicate window has passed.
    let_time_pass(window * 2).await;

    let report = jetq(&server, &["--json", "dead", "replay", "--all", "--yes"])
        .await
        .ok_json();
    assert_eq!(report["replayed"], 1);
    assert_eq!(report["duplicates"], 0);
    assert!(dead_sequences(&js).await.is_empty());
    let copies: Vec<Value> = task_messages(&js)
        .await
        .iter()
        .map(|m| Value::String(required_header(m, headers::MSG_ID)))
        .collect();
    assert_eq!(
        copies,
        vec![Value::String(replay_id(seq, "late")); 2],
        "a duplicate at worst"
    );
}

#[tokio::test]
async fn replaying_thousands_of_dead_letters_moves_each_exactly_once() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("bulk", 10_000)]).await;
    let js = raw_jetstream(&server).await;
    const COUNT: usize = 2000;
    let seqs = write_dead_many(&js, "bulk", "job", "bulk", COUNT).await;
    // Bounded by the helper's timeout (20 s): a replay pipelines publishes and deletions.
    let started = std::time::Instant::now();
    let report = jetq(
        &server,
        &["--json", "dead", "replay", "--yes", "--queue", "bulk"],
    )
    .await
    .ok_json();
    let took = started.elapsed();
    assert_eq!(report["matched"], COUNT);
    assert_eq!(report["replayed"], COUNT);
    assert_eq!(report["failed"], 0);
    assert!(dead_sequences(&js).await.is_empty());
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, COUNT as u64);
    let ids: BTreeSet<String> = task_messages(&js)
        .await
        .iter()
        .map(|m| required_header(m, headers::MSG_ID))
        .collect();
    let expected: BTreeSet<String> = seqs
        .iter()
        .enumerate()
        .map(|(i, seq)| replay_id(*seq, &format!("bulk-{i}")))
        .collect();
    assert_eq!(ids, expected);
    eprintln!("replayed {COUNT} dead letters in {took:?}");
}
