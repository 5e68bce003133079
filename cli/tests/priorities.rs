//! The CLI treats a queue's three priority levels (PROTOCOL §12: `<queue>~high`, `<queue>`,
//! `<queue>~low`, one durable consumer each) as one queue, against a real nats-server:
//! `jetq queues` shows one row with the levels summed and a per-level breakdown, `jetq pause`
//! and `resume` act on every level's consumer, `jetq queues purge` removes the level tasks,
//! a dead letter is replayed at its level, and `jetq enqueue --priority` publishes to it.

mod common;

use std::time::Duration;

use async_nats::{
    jetstream::{self, consumer::PullConsumer},
    HeaderMap,
};
use bytes::Bytes;
use common::*;
use futures::StreamExt;
use jetq_contract::{headers, DeadLetterHeaders, DeadReason, Priority, Subjects};
use jetq_producer::EnqueueOptions;
use serde_json::{json, Value};

fn job(n: u64) -> Job {
    Job {
        n,
        note: String::new(),
    }
}

/// Enqueues `count` tasks of `work` at `level`, numbered from `first`.
async fn enqueue_at(server: &NatsServer, level: Priority, first: u64, count: u64) {
    let producer = producer(server).await;
    for n in first..first + count {
        producer
            .enqueue_with(&job(n), EnqueueOptions::new().priority(level))
            .await
            .unwrap();
    }
}

/// The subjects of the task stream's messages, in order.
async fn task_subjects(js: &jetstream::Context) -> Vec<String> {
    stream_messages(js, "JETQ_TASKS")
        .await
        .into_iter()
        .map(|m| m.subject.to_string())
        .collect()
}

async fn consumer_paused(js: &jetstream::Context, durable: &str) -> bool {
    let mut consumer: PullConsumer = js
        .get_stream("JETQ_TASKS")
        .await
        .unwrap()
        .get_consumer(durable)
        .await
        .unwrap_or_else(|err| panic!("consumer {durable}: {err}"));
    consumer.info().await.unwrap().paused
}

fn levels(value: &Value) -> (u64, u64, u64) {
    let by = &value["pending_by_priority"];
    (
        by["high"].as_u64().unwrap(),
        by["normal"].as_u64().unwrap(),
        by["low"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn a_queue_with_levels_is_one_row_with_the_levels_summed() {
    init_logs();
    let server = NatsServer::start().await;
    // A worker's provisioning: the three durables of `work` (cap 7 each).
    provision(&server, &[("work", 7)]).await;
    enqueue_at(&server, Priority::High, 0, 3).await;
    enqueue_at(&server, Priority::Normal, 10, 2).await;
    enqueue_at(&server, Priority::Low, 20, 1).await;
    // A queue without levels, whose row must read as before priorities.
    producer(&server)
        .await
        .enqueue(&Email {
            to: "a@example.com".into(),
        })
        .await
        .unwrap();
    // One `high` task delivered and not acknowledged: in flight.
    let js = raw_jetstream(&server).await;
    let high: PullConsumer = js
        .get_stream("JETQ_TASKS")
        .await
        .unwrap()
        .get_consumer("worker-work~high")
        .await
        .unwrap();
    let mut batch = high
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let held = within(WAIT, "one delivery", batch.next())
        .await
        .expect("a high task")
        .unwrap();
    // A delayed `low` task, through the CLI.
    let delayed = jetq(
        &server,
        &[
            "--json",
            "enqueue",
            "work",
            "job",
            "--args",
            r#"{"n":99}"#,
            "--delay",
            "1h",
            "--priority",
            "low",
        ],
    )
    .await
    .ok_json();
    assert_eq!(delayed["stream"], "JETQ_DELAYED");
    assert_eq!(delayed["priority"], "low");

    let out = jetq(&server, &["--json", "queues", "--interval", "0"])
        .await
        .ok_json();
    let queues = out["queues"].as_array().unwrap();
    let names: Vec<&str> = queues
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["emails", "work"], "{out:#}");
    let work = &queues[1];
    assert_eq!(work["consumer"], "worker-work");
    assert_eq!(
        work["consumers"],
        json!(["worker-work~high", "worker-work", "worker-work~low"])
    );
    assert_eq!(work["pending"], 5);
    assert_eq!(levels(work), (2, 2, 1));
    assert_eq!(work["in_flight"], 1);
    assert_eq!(work["max_in_flight"], 7);
    assert_eq!(work["stored"], 6);
    assert_eq!(work["stranded"], 0);
    assert_eq!(work["delayed"], 1);
    assert_eq!(work["delivered_total"], 1);
    assert_eq!(work["paused"], false);
    assert_eq!(work["paused_levels"], json!([]));
    let emails = &queues[0];
    assert_eq!(emails["pending"], 1);
    assert_eq!(levels(emails), (0, 1, 0));
    assert_eq!(out["delayed_total"], 1);

    // The text table: the breakdown follows the number only where a level has tasks.
    let text = jetq(&server, &["queues", "--interval", "0"]).await;
    text.expect_code(0);
    let row = |name: &str| {
        text.stdout
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{}", text.stdout))
            .to_owned()
    };
    assert!(
        row("work").contains(" 5 (high 2, normal 2, low 1) "),
        "{}",
        text.stdout
    );
    assert!(!row("emails").contains('('), "{}", text.stdout);
    assert!(!text.stdout.contains('~'), "{}", text.stdout);
    held.ack().await.unwrap();
}

#[tokio::test]
async fn enqueue_priority_publishes_to_the_level_subject() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10)]).await;
    let js = raw_jetstream(&server).await;
    let high = jetq(
        &server,
        &[
            "--json",
            "enqueue",
            "work",
            "job",
            "--args",
            r#"{"n":1}"#,
            "--priority",
            "high",
        ],
    )
    .await
    .ok_json();
    assert_eq!(high["priority"], "high");
    assert_eq!(high["subject"], "jetq.task.work~high.job");
    let normal = jetq(&server, &["--json", "enqueue", "work", "job"])
        .await
        .ok_json();
    assert_eq!(normal["priority"], "normal");
    assert_eq!(normal["subject"], "jetq.task.work.job");
    let messages = stream_messages(&js, "JETQ_TASKS").await;
    let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["jetq.task.work~high.job", "jetq.task.work.job"]);
    assert_eq!(
        header(&messages[0], headers::PRIORITY).as_deref(),
        Some("high")
    );
    assert_eq!(header(&messages[1], headers::PRIORITY), None);

    let text = jetq(&server, &["enqueue", "work", "job", "--priority", "low"]).await;
    text.expect_code(0);
    assert!(text.stdout.contains("at priority low"), "{}", text.stdout);

    // Not a level: a usage error naming the levels, nothing published.
    let bad = jetq(&server, &["enqueue", "work", "job", "--priority", "urgent"]).await;
    bad.expect_code(2);
    assert!(
        bad.stderr.contains("\"high\", \"normal\" and \"low\""),
        "{}",
        bad.stderr
    );
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 3);
}

#[tokio::test]
async fn pause_and_resume_act_on_every_level_and_skip_a_missing_one() {
    init_logs();
    let server = NatsServer::start().await;
    let topology = provision(&server, &[("work", 10)]).await;
    let js = raw_jetstream(&server).await;
    let durables = ["worker-work~high", "worker-work", "worker-work~low"];

    let paused = jetq(&server, &["--json", "pause", "work"]).await.ok_json();
    assert_eq!(paused["consumer"], "worker-work");
    assert_eq!(paused["consumers"], json!(durables));
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["until_resumed"], true);
    for durable in durables {
        assert!(consumer_paused(&js, durable).await, "{durable} not paused");
    }
    let stats = jetq(
        &server,
        &["--json", "queues", "--interval", "0", "--queue", "work"],
    )
    .await
    .ok_json();
    assert_eq!(stats["queues"][0]["paused"], true);
    assert_eq!(
        stats["queues"][0]["paused_levels"],
        json!(["high", "normal", "low"])
    );

    let resumed = jetq(&server, &["--json", "resume", "work"]).await.ok_json();
    assert_eq!(resumed["paused"], false);
    for durable in durables {
        assert!(
            !consumer_paused(&js, durable).await,
            "{durable} still paused"
        );
    }

    // A level's durable that does not exist (a worker older than priorities) is skipped.
    js.get_stream("JETQ_TASKS")
        .await
        .unwrap()
        .delete_consumer("worker-work~low")
        .await
        .unwrap();
    let text = jetq(&server, &["pause", "work"]).await;
    text.expect_code(0);
    assert!(
        text.stdout
            .contains("(consumers worker-work~high, worker-work)"),
        "{}",
        text.stdout
    );
    assert!(consumer_paused(&js, "worker-work~high").await);
    assert!(consumer_paused(&js, "worker-work").await);
    let stats = jetq(
        &server,
        &["--json", "queues", "--interval", "0", "--queue", "work"],
    )
    .await
    .ok_json();
    assert_eq!(stats["queues"][0]["paused"], true);

    // The level's durable comes back (a newer worker starts) unpaused: partly paused, and
    // the table says which levels are.
    topology
        .ensure_queue("work", &jetq_contract::QueueSettings::default())
        .await
        .unwrap();
    let stats = jetq(
        &server,
        &["--json", "queues", "--interval", "0", "--queue", "work"],
    )
    .await
    .ok_json();
    assert_eq!(stats["queues"][0]["paused"], false);
    assert_eq!(
        stats["queues"][0]["paused_levels"],
        json!(["high", "normal"])
    );
    let text = jetq(&server, &["queues", "--interval", "0"]).await;
    assert!(
        text.stdout.contains("partly paused (high, normal)"),
        "{}",
        text.stdout
    );
    // `jetq pause` again pauses all three.
    jetq(&server, &["pause", "work"]).await.expect_code(0);
    assert!(consumer_paused(&js, "worker-work~low").await);
    jetq(&server, &["resume", "work"]).await.expect_code(0);
    for durable in durables {
        assert!(
            !consumer_paused(&js, durable).await,
            "{durable} still paused"
        );
    }
}

#[tokio::test]
async fn purge_removes_the_level_tasks_or_one_level() {
    init_logs();
    let server = NatsServer::start().await;
    enqueue_at(&server, Priority::High, 0, 3).await;
    enqueue_at(&server, Priority::Normal, 10, 2).await;
    enqueue_at(&server, Priority::Low, 20, 1).await;
    producer(&server)
        .await
        .enqueue_in_with(
            Duration::from_secs(3600),
            &job(99),
            EnqueueOptions::new().priority(Priority::High),
        )
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 6);

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
    assert_eq!(dry["tasks"], 6);
    assert_eq!(dry["delayed"], 1);
    assert_eq!(
        dry["tasks_by_priority"],
        json!({"high": 3, "normal": 2, "low": 1})
    );
    let text = jetq(&server, &["queues", "purge", "work", "--dry-run"]).await;
    text.expect_code(0);
    assert_eq!(
        text.stdout.trim(),
        "queue work: would delete 6 task(s) (high 3, normal 2, low 1)"
    );
    // The confirmation counts the levels too.
    let refused = jetq(&server, &["queues", "purge", "work"]).await;
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("6 task(s) of queue work"),
        "{}",
        refused.stderr
    );

    // One level only.
    let high = jetq(
        &server,
        &[
            "--json",
            "queues",
            "purge",
            "work",
            "--priority",
            "high",
            "--yes",
        ],
    )
    .await
    .ok_json();
    assert_eq!(high["priority"], "high");
    assert_eq!(high["tasks"], 3);
    let mut left = task_subjects(&js).await;
    left.sort();
    assert_eq!(
        left,
        [
            "jetq.task.work.job",
            "jetq.task.work.job",
            "jetq.task.work~low.job"
        ]
    );
    let bad = jetq(
        &server,
        &["queues", "purge", "work", "--priority", "urgent", "--yes"],
    )
    .await;
    bad.expect_code(2);
    assert!(bad.stderr.contains("\"low\""), "{}", bad.stderr);

    // All levels, the delayed `high` task too.
    let all = jetq(
        &server,
        &["--json", "queues", "purge", "work", "--delayed", "--yes"],
    )
    .await
    .ok_json();
    assert_eq!(
        (all["tasks"].as_u64(), all["delayed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 0);
    assert_eq!(stream_len(&js, "JETQ_DELAYED").await, 0);
}

/// Writes a dead letter of `work`/`job` as a worker would, with `Jetq-Priority: <priority>`
/// when given; returns its sequence.
async fn write_dead_at(js: &jetstream::Context, task_id: &str, priority: Option<&str>) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
    let task_sequence = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut map = HeaderMap::new();
    let dead = DeadLetterHeaders {
        task_id: Some(task_id.to_owned()),
        task_sequence: Some(task_sequence),
        reason: Some(DeadReason::Exhausted.as_str().to_owned()),
        attempts: Some(3),
        ..DeadLetterHeaders::default()
    };
    dead.write_to(&mut map);
    map.insert(headers::ENQUEUED_AT, jetq_contract::time::now().as_str());
    if let Some(priority) = priority {
        map.insert(headers::PRIORITY, priority);
    }
    js.publish_with_headers(
        Subjects::default().dead("work", "job"),
        map,
        Bytes::from_static(b"{\"n\":1}"),
    )
    .await
    .expect("dead letter published")
    .await
    .expect("dead letter acknowledged")
    .sequence
}

#[tokio::test]
async fn a_dead_letter_is_replayed_at_its_level() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10)]).await;
    let js = raw_jetstream(&server).await;
    let high = write_dead_at(&js, "t-high", Some("high")).await;
    let normal = write_dead_at(&js, "t-normal", None).await;
    let odd = write_dead_at(&js, "t-odd", Some("urgent")).await;

    // A dry run says where each would go.
    let dry = jetq(&server, &["--json", "dead", "replay", "--all", "--dry-run"])
        .await
        .ok_json();
    let subjects: Vec<&str> = dry["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "jetq.task.work~high.job",
            "jetq.task.work.job",
            "jetq.task.work.job"
        ]
    );

    let report = jetq(&server, &["--json", "dead", "replay", "--all", "--yes"])
        .await
        .ok_json();
    assert_eq!(report["replayed"], 3, "{report:#}");
    assert_eq!(report["failed"], 0);
    let items = report["items"].as_array().unwrap();
    let item = |sequence: u64| {
        items
            .iter()
            .find(|i| i["dead_sequence"] == sequence)
            .unwrap_or_else(|| panic!("no item {sequence} in {report:#}"))
    };
    assert_eq!(item(high)["priority"], "high");
    assert_eq!(item(high)["subject"], "jetq.task.work~high.job");
    assert!(item(high).get("warning").is_none());
    assert_eq!(item(normal)["priority"], "normal");
    assert_eq!(item(normal)["subject"], "jetq.task.work.job");
    // Not a level: replayed at normal, with a warning naming the value.
    assert_eq!(item(odd)["priority"], "normal");
    let warning = item(odd)["warning"].as_str().unwrap();
    assert!(
        warning.contains("urgent") && warning.contains("normal"),
        "{warning}"
    );

    let messages = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(messages.len(), 3);
    let by_id = |id: &str| {
        messages
            .iter()
            .find(|m| {
                header(m, headers::MSG_ID).is_some_and(|msg_id| msg_id.ends_with(&format!(":{id}")))
            })
            .unwrap_or_else(|| panic!("no replay of {id}"))
    };
    assert_eq!(by_id("t-high").subject.as_str(), "jetq.task.work~high.job");
    assert_eq!(
        header(by_id("t-high"), headers::PRIORITY).as_deref(),
        Some("high")
    );
    assert_eq!(by_id("t-normal").subject.as_str(), "jetq.task.work.job");
    assert_eq!(by_id("t-odd").subject.as_str(), "jetq.task.work.job");
    assert_eq!(header(by_id("t-odd"), headers::PRIORITY), None);
    // The level's consumer has it: a worker pulls it from `high`.
    let stats = jetq(
        &server,
        &["--json", "queues", "--interval", "0", "--queue", "work"],
    )
    .await
    .ok_json();
    assert_eq!(levels(&stats["queues"][0]), (1, 2, 0));

    // The text report shows the warning.
    let odd_again = write_dead_at(&js, "t-odd-2", Some("urgent")).await;
    let text = jetq(&server, &["dead", "replay", &odd_again.to_string()]).await;
    text.expect_code(0);
    assert!(
        text.stdout
            .contains(&format!("dead letter {odd_again} (warning)")),
        "{}",
        text.stdout
    );
}
