//! The `jetq` binary against a real nats-server with known state: exact counts in `--json`
//! output, enqueue, dead-letter listing and filters, exit codes.

mod common;

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::PullConsumer;
use common::*;
use futures::StreamExt;
use jetq_contract::{headers, DeadReason, Subjects};
use serde_json::{json, Value};

fn queue<'a>(overview: &'a Value, name: &str) -> &'a Value {
    overview["queues"]
        .as_array()
        .expect("queues is a list")
        .iter()
        .find(|q| q["queue"] == name)
        .unwrap_or_else(|| panic!("queue {name} missing in {overview:#}"))
}

#[tokio::test]
async fn queues_json_reports_exact_counts() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 7)]).await;
    let producer = producer(&server).await;
    for n in 0..5 {
        producer
            .enqueue(&Job {
                n,
                note: String::new(),
            })
            .await
            .unwrap();
    }
    for i in 0..2 {
        producer
            .enqueue(&Email {
                to: format!("u{i}@example.com"),
            })
            .await
            .unwrap();
    }
    // Two tasks of `work` delivered and not acknowledged: in flight.
    let js = raw_jetstream(&server).await;
    let consumer: PullConsumer = js
        .get_stream("JETQ_TASKS")
        .await
        .unwrap()
        .get_consumer("worker-work")
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(2)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut held = Vec::new();
    while let Some(message) = within(WAIT, "two deliveries", batch.next()).await {
        held.push(message.unwrap());
    }
    assert_eq!(held.len(), 2);
    for (queue, task, id) in [
        ("work", "job", "w1"),
        ("work", "job", "w2"),
        ("work", "job", "w3"),
        ("emails", "send_email", "e1"),
    ] {
        write_dead(&js, &Letter::new(queue, task, id)).await;
    }
    // One delayed task, through the CLI.
    let delayed = jetq(
        &server,
        &[
            "--json",
            "enqueue",
            "work",
            "job",
            "--args",
            r#"{"n":9}"#,
            "--delay",
            "1h",
        ],
    )
    .await
    .ok_json();
    assert_eq!(delayed["stream"], "JETQ_DELAYED");
    assert!(delayed["not_before"].is_string());

    let out = jetq(&server, &["--json", "queues", "--interval", "0"])
        .await
        .ok_json();
    assert_eq!(out["tasks_stored"], 7);
    assert_eq!(out["dead_total"], 4);
    assert_eq!(out["delayed_total"], 1);
    assert_eq!(out["rate"], Value::Null);
    let work = queue(&out, "work");
    assert_eq!(work["consumer"], "worker-work");
    assert_eq!(work["pending"], 3);
    assert_eq!(work["in_flight"], 2);
    assert_eq!(work["max_in_flight"], 7);
    assert_eq!(work["redelivered"], 0);
    assert_eq!(work["stored"], 5);
    assert_eq!(work["dead"], 3);
    assert_eq!(work["delayed"], 1);
    assert_eq!(work["paused"], false);
    assert_eq!(work["delivered_total"], 2);
    let emails = queue(&out, "emails");
    assert_eq!(emails["consumer"], Value::Null);
    assert_eq!(emails["pending"], 2);
    assert_eq!(emails["in_flight"], 0);
    assert_eq!(emails["max_in_flight"], Value::Null);
    assert_eq!(emails["dead"], 1);
    assert_eq!(out["queues"].as_array().unwrap().len(), 2);

    // Rates from two samples: nothing moved in between.
    let out = jetq(
        &server,
        &["--json", "queues", "--interval", "300ms", "--queue", "work"],
    )
    .await
    .ok_json();
    assert_eq!(out["queues"].as_array().unwrap().len(), 1);
    let rate = &queue(&out, "work")["rate"];
    assert_eq!(rate["delivered_per_sec"], 0.0);
    assert_eq!(rate["backlog_per_sec"], 0.0);
    assert_eq!(out["rate"]["enqueued_per_sec"], 0.0);

    // The human table has every column.
    let text = jetq(&server, &["queues", "--interval", "0"]).await;
    text.expect_code(0);
    for column in [
        "QUEUE",
        "PENDING",
        "IN FLIGHT",
        "MAX IN FLIGHT",
        "REDELIVERED",
        "DEAD",
    ] {
        assert!(text.stdout.contains(column), "{}", text.stdout);
    }
    assert!(text.stdout.contains("no worker yet"), "{}", text.stdout);

    // Rates print as whole numbers per second, not 0.0 or 804.947.
    let rates = jetq(
        &server,
        &["queues", "--interval", "300ms", "--queue", "work"],
    )
    .await;
    rates.expect_code(0);
    let row = rates
        .stdout
        .lines()
        .find(|line| line.starts_with("work "))
        .unwrap_or_else(|| panic!("no row for work:\n{}", rates.stdout));
    assert!(row.contains(" 0/s "), "{row}");
    assert!(
        rates.stdout.contains("0/s enqueued, 0/s completed"),
        "{}",
        rates.stdout
    );
    assert!(!rates.stdout.contains(".0 "), "{}", rates.stdout);

    let unknown = jetq(&server, &["--json", "queues", "--queue", "nope"]).await;
    unknown.expect_code(3);
    assert_eq!(unknown.json()["error"]["kind"], "not_found");
    drop(held);
}

#[tokio::test]
async fn enqueue_command_stores_the_task_with_its_options() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 100)]).await;
    let first = jetq(
        &server,
        &[
            "--json",
            "enqueue",
            "work",
            "job",
            "--args",
            r#"{"n":4,"note":"from the cli"}"#,
            "--key",
            "order-4",
            "--max-attempts",
            "2",
            "--timeout",
            "5s",
        ],
    )
    .await
    .ok_json();
    assert_eq!(first["id"], "order-4");
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["stream"], "JETQ_TASKS");
    assert_eq!(first["sequence"], 1);
    let again = jetq(
        &server,
        &[
            "--json",
            "enqueue",
            "work",
            "job",
            "--args",
            r#"{"n":4}"#,
            "--key",
            "order-4",
        ],
    )
    .await
    .ok_json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["sequence"], 1);

    let js = raw_jetstream(&server).await;
    let stored = task_messages(&js).await;
    assert_eq!(stored.len(), 1);
    let message = &stored[0];
    assert_eq!(message.subject.as_str(), "jetq.task.work.job");
    let payload: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(payload, json!({"n": 4, "note": "from the cli"}));
    assert_eq!(required_header(message, headers::MSG_ID), "order-4");
    assert_eq!(required_header(message, headers::MAX_ATTEMPTS), "2");
    assert_eq!(required_header(message, headers::TIMEOUT_MS), "5000");
    assert!(header(message, headers::ENQUEUED_AT).is_some());

    // Without a key: a fresh id each time.
    let plain = jetq(
        &server,
        &[
            "--json",
            "enqueue",
            "emails",
            "send_email",
            "--args",
            r#"{"to":"a@example.com"}"#,
        ],
    )
    .await
    .ok_json();
    assert_eq!(plain["id"].as_str().unwrap().len(), 26, "a ULID: {plain}");

    let bad_json = jetq(&server, &["enqueue", "work", "job", "--args", "{n:"]).await;
    bad_json.expect_code(2);
    assert!(
        bad_json.stderr.contains("not valid JSON"),
        "{}",
        bad_json.stderr
    );
    let bad_name = jetq(&server, &["enqueue", "a.b", "job"]).await;
    bad_name.expect_code(2);
    assert!(
        bad_name.stderr.contains("invalid queue name"),
        "{}",
        bad_name.stderr
    );

    // A server where jetq was never provisioned: not found, nothing created.
    let bare = NatsServer::start().await;
    let missing = jetq(&bare, &["enqueue", "work", "job"]).await;
    missing.expect_code(3);
    assert!(
        missing.stderr.contains("does not exist"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn dead_list_and_show_filter_dead_letters_made_by_a_real_worker() {
    init_logs();
    let server = NatsServer::start().await;
    let (stop, run) = spawn_worker(fatal_worker(&server).await);
    let producer = producer(&server).await;
    let mut job_ids = Vec::new();
    for n in 1..=3 {
        let enqueued = producer
            .enqueue(&Job {
                n,
                note: String::new(),
            })
            .await
            .unwrap();
        job_ids.push(enqueued.id);
    }
    for to in ["a@example.com", "b@example.com"] {
        producer.enqueue(&Email { to: to.into() }).await.unwrap();
    }
    let js = raw_jetstream(&server).await;
    wait_dead_count(&js, 5).await;
    drop(stop);
    within(WAIT, "worker stop", run).await.unwrap();

    let all = jetq(&server, &["--json", "dead", "list"]).await.ok_json();
    assert_eq!(all["total"], 5);
    assert_eq!(all["shown"], 5);
    let letters = all["dead_letters"].as_array().unwrap();
    let sequences: Vec<u64> = letters
        .iter()
        .map(|d| d["sequence"].as_u64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {sequences:?}"
    );
    assert!(letters
        .iter()
        .all(|d| d["reason"] == "fatal" && d["attempts"] == 1));

    let count = |value: Value| value["total"].as_u64().unwrap();
    assert_eq!(
        count(
            jetq(&server, &["--json", "dead", "list", "--queue", "work"])
                .await
                .ok_json()
        ),
        3
    );
    assert_eq!(
        count(
            jetq(&server, &["--json", "dead", "list", "--task", "send_email"])
                .await
                .ok_json()
        ),
        2
    );
    assert_eq!(
        count(
            jetq(
                &server,
                &["--json", "dead", "list", "--queue", "emails", "--task", "job"]
            )
            .await
            .ok_json()
        ),
        0
    );
    assert_eq!(
        count(
            jetq(&server, &["--json", "dead", "list", "--reason", "fatal"])
                .await
                .ok_json()
        ),
        5
    );
    assert_eq!(
        count(
            jetq(
                &server,
                &["--json", "dead", "list", "--reason", "exhausted"]
            )
            .await
            .ok_json()
        ),
        0
    );
    let limited = jetq(&server, &["--json", "dead", "list", "--limit", "2"])
        .await
        .ok_json();
    assert_eq!(limited["total"], 5);
    assert_eq!(limited["shown"], 2);
    assert_eq!(limited["dead_letters"][0]["sequence"], sequences[0]);

    let by_id = jetq(
        &server,
        &["--json", "dead", "list", "--task-id", &job_ids[1]],
    )
    .await
    .ok_json();
    assert_eq!(by_id["total"], 1);
    assert_eq!(by_id["dead_letters"][0]["task_id"], job_ids[1].as_str());
    assert_eq!(by_id["dead_letters"][0]["error"], "job 2 cannot be done");
    let seq = by_id["dead_letters"][0]["sequence"]
        .as_u64()
        .unwrap()
        .to_string();

    let shown = jetq(&server, &["--json", "dead", "show", &seq])
        .await
        .ok_json();
    assert_eq!(shown["queue"], "work");
    assert_eq!(shown["task"], "job");
    assert_eq!(shown["task_id"], job_ids[1].as_str());
    assert_eq!(shown["args"], json!({"n": 2, "note": ""}));
    assert_eq!(shown["failure"]["reason"], "fatal");
    assert_eq!(shown["failure"]["error"], "job 2 cannot be done");
    assert_eq!(shown["headers"][headers::TASK_ID][0], job_ids[1].as_str());
    let same = jetq(
        &server,
        &["--json", "dead", "show", "--task-id", &job_ids[1]],
    )
    .await
    .ok_json();
    assert_eq!(same["sequence"], shown["sequence"]);

    let text = jetq(&server, &["dead", "show", &seq]).await;
    text.expect_code(0);
    assert!(
        text.stdout.contains("job 2 cannot be done"),
        "{}",
        text.stdout
    );
    let table = jetq(&server, &["dead", "list"]).await;
    table.expect_code(0);
    assert!(
        table.stdout.contains("SEQ") && table.stdout.contains("5 dead letter(s)"),
        "{}",
        table.stdout
    );

    let missing = jetq(&server, &["--json", "dead", "show", "9999"]).await;
    missing.expect_code(3);
    assert_eq!(missing.json()["error"]["exit_code"], 3);
    jetq(&server, &["dead", "show", "--task-id", "no-such-task"])
        .await
        .expect_code(3);
}

#[tokio::test]
async fn dead_list_filters_by_age() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[]).await;
    let js = raw_jetstream(&server).await;
    for id in ["old-1", "old-2"] {
        write_dead(&js, &Letter::new("work", "job", id)).await;
    }
    let dead = stream_messages(&js, &Subjects::default().dead_stream()).await;
    let last_old = SystemTime::from(dead[1].time);
    // Ages need wall-clock time between the two batches.
    let_time_pass(Duration::from_secs(2)).await;
    for id in ["new-1", "new-2", "new-3"] {
        write_dead(&js, &Letter::new("work", "job", id)).await;
    }
    // A cutoff half a second after the last old letter: the CLI starts within the remaining
    // second and a half, so its own "now" still puts the cutoff inside the gap.
    let cutoff = last_old + Duration::from_millis(500);
    let age = SystemTime::now().duration_since(cutoff).unwrap();
    let age = format!("{}ms", age.as_millis());
    let older = jetq(&server, &["--json", "dead", "list", "--older-than", &age])
        .await
        .ok_json();
    let ids: Vec<&str> = older["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["old-1", "old-2"]);
    let newer = jetq(&server, &["--json", "dead", "list", "--newer-than", &age])
        .await
        .ok_json();
    assert_eq!(newer["total"], 3);
    assert_eq!(newer["dead_letters"][0]["task_id"], "new-1");
    let contradictory = jetq(
        &server,
        &["dead", "list", "--older-than", "1h", "--newer-than", "1m"],
    )
    .await;
    contradictory.expect_code(2);
    let bad = jetq(&server, &["dead", "list", "--older-than", "soon"]).await;
    bad.expect_code(2);
    assert!(bad.stderr.contains("30s, 5m"), "{}", bad.stderr);
}

#[tokio::test]
async fn purge_deletes_exactly_the_selected_dead_letters() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[]).await;
    let js = raw_jetstream(&server).await;
    let mut seqs = Vec::new();
    for (queue, task, id) in [
        ("work", "job", "w1"),
        ("work", "job", "w2"),
        ("emails", "send_email", "e1"),
        ("emails", "send_email", "e2"),
        ("work", "job", "w3"),
    ] {
        seqs.push(write_dead(&js, &Letter::new(queue, task, id)).await);
    }
    let fatal = Letter {
        reason: DeadReason::Fatal,
        ..Letter::new("work", "job", "w4")
    };
    seqs.push(write_dead(&js, &fatal).await);

    let dry = jetq(&server, &["--json", "dead", "purge", "--all", "--dry-run"])
        .await
        .ok_json();
    assert_eq!(dry["matched"], 6);
    assert_eq!(dry["deleted"], 0);
    assert_eq!(dead_sequences(&js).await, seqs);

    // No terminal to ask on and no --yes: refused with the count and the way out; nothing is
    // deleted. The same for one sequence (a purge always asks).
    let refused = jetq(&server, &["--json", "dead", "purge", "--queue", "emails"]).await;
    refused.expect_code(2);
    assert_eq!(refused.json()["error"]["kind"], "usage");
    assert!(
        refused.stderr.contains("--yes")
            && refused.stderr.contains("2 dead letter(s)")
            && refused.stderr.contains("not a terminal"),
        "{}",
        refused.stderr
    );
    jetq(&server, &["dead", "purge", &seqs[1].to_string()])
        .await
        .expect_code(2);
    let all = jetq(&server, &["dead", "purge", "--all"]).await;
    all.expect_code(2);
    assert!(all.stderr.contains("6 dead letter(s)"), "{}", all.stderr);
    assert_eq!(dead_sequences(&js).await, seqs);

    let emails = jetq(
        &server,
        &["--json", "dead", "purge", "--yes", "--queue", "emails"],
    )
    .await
    .ok_json();
    assert_eq!(emails["deleted"], 2);
    assert_eq!(
        dead_sequences(&js).await,
        [seqs[0], seqs[1], seqs[4], seqs[5]]
    );

    let one = jetq(
        &server,
        &["--json", "dead", "purge", "-y", &seqs[1].to_string()],
    )
    .await
    .ok_json();
    assert_eq!(one["deleted"], 1);
    assert_eq!(one["sequences"], json!([seqs[1]]));
    let by_reason = jetq(
        &server,
        &["--json", "dead", "purge", "--yes", "--reason", "fatal"],
    )
    .await
    .ok_json();
    assert_eq!(by_reason["deleted"], 1);
    assert_eq!(dead_sequences(&js).await, [seqs[0], seqs[4]]);

    jetq(&server, &["dead", "purge", "--yes", "9999"])
        .await
        .expect_code(3);
    jetq(&server, &["dead", "purge"]).await.expect_code(2);
    assert_eq!(dead_sequences(&js).await, [seqs[0], seqs[4]]);

    let rest = jetq(&server, &["--json", "dead", "purge", "--all", "--yes"])
        .await
        .ok_json();
    assert_eq!(rest["deleted"], 2);
    assert!(dead_sequences(&js).await.is_empty());
}

#[tokio::test]
async fn status_schedules_and_exit_codes() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[]).await;

    // No status record (no tracked task ever ran here): not found, with what to do about it.
    let status = jetq(&server, &["--json", "status", "01JABC"]).await;
    status.expect_code(3);
    assert_eq!(status.json()["error"]["kind"], "not_found");
    assert!(status.stderr.contains("track_status"), "{}", status.stderr);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.yaml");
    std::fs::write(
        &file,
        "schedules:\n  - name: nightly-report\n    cron: \"0 0 3 * * *\"\n    timezone: Europe/Berlin\n    \
         queue: reports\n    task: nightly_report\n    args: { format: csv }\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let schedules = jetq(
        &server,
        &["--json", "schedules", "--file", path, "--count", "2"],
    )
    .await
    .ok_json();
    let nightly = &schedules[0];
    assert_eq!(nightly["name"], "nightly-report");
    assert_eq!(nightly["timezone"], "Europe/Berlin");
    assert_eq!(nightly["args"], json!({"format": "csv"}));
    let fires = nightly["next_fires"].as_array().unwrap();
    assert_eq!(fires.len(), 2);
    // 03:00 in Berlin is 01:00 or 02:00 UTC.
    for fire in fires {
        let text = fire.as_str().unwrap();
        assert!(
            text.ends_with("T01:00:00Z") || text.ends_with("T02:00:00Z"),
            "{text}"
        );
    }
    let from_env = jetq_with(
        &server.url(),
        &[("JETQ_SCHEDULES_FILE", path)],
        &["schedules"],
    )
    .await;
    from_env.expect_code(0);
    assert!(
        from_env.stdout.contains("nightly-report"),
        "{}",
        from_env.stdout
    );
    jetq(
        &server,
        &["schedules", "--file", "/nonexistent/schedules.yaml"],
    )
    .await
    .expect_code(3);
    let none = jetq(&server, &["schedules"]).await;
    none.expect_code(2);
    assert!(
        none.stderr.contains("JETQ_SCHEDULES_FILE"),
        "{}",
        none.stderr
    );

    // Usage errors from the argument parser are exit code 2 as well.
    jetq(&server, &["dead", "replay", "--bogus"])
        .await
        .expect_code(2);
    jetq(&server, &["frobnicate"]).await.expect_code(2);
    let help = jetq(&server, &["--help"]).await;
    help.expect_code(0);
    assert!(
        help.stdout.contains("Exit codes") && help.stdout.contains("JETQ_NATS_URL"),
        "{}",
        help.stdout
    );

    // NATS unreachable: exit code 5.
    let closed = format!("nats://127.0.0.1:{}", free_port());
    let down = jetq_with(
        &closed,
        &[("JETQ_CONNECT_TIMEOUT", "1s")],
        &["--json", "queues"],
    )
    .await;
    down.expect_code(5);
    assert_eq!(down.json()["error"]["kind"], "unavailable");

    // No colour on a pipe: the warning about the unreachable server is plain text.
    let plain = jetq_with(
        &closed,
        &[("JETQ_CONNECT_TIMEOUT", "1s")],
        &["schedules", "--file", path],
    )
    .await;
    plain.expect_code(0);
    assert!(
        plain.stderr.contains("cannot read the last fires"),
        "{}",
        plain.stderr
    );
    assert!(
        !plain.stderr.contains('\u{1b}') && !plain.stdout.contains('\u{1b}'),
        "ANSI escapes on a pipe:\n{:?}",
        plain.stderr
    );
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    rows: u32,
}
impl jetq_contract::Task for Report {
    const NAME: &'static str = "report";
    const QUEUE: &'static str = "reports";
    fn options() -> jetq_contract::TaskOptions {
        jetq_contract::TaskOptions::default().track_status(true)
    }
}

#[tokio::test]
async fn status_shows_a_tracked_task_and_waits_for_it_to_finish() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[]).await;
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let worker = worker(&server)
        .handler(move |report: Report, ctx: jetq_consumer::TaskContext| {
            let mut release = release_rx.clone();
            async move {
                ctx.progress(40.0, "row 4 of 10").await?;
                // Hold the task until the test has seen it running.
                let _ = release.wait_for(|go| *go).await;
                ctx.set_result(&json!({ "rows": report.rows }))?;
                Ok::<(), jetq_consumer::TaskError>(())
            }
        })
        .build()
        .await
        .unwrap();
    let (_stop, _handle) = spawn_worker(worker);
    let enqueued = producer(&server)
        .await
        .enqueue(&Report { rows: 10 })
        .await
        .unwrap();
    let id = enqueued.id.as_str();

    // Running, with its progress, in both output forms.
    let running = eventually(WAIT, "the task running with progress", || async {
        let run = jetq(&server, &["--json", "status", id]).await;
        let record = run.ok_json();
        (record["state"] == "running" && record["progress"]["percent"] == 40.0).then_some(record)
    })
    .await;
    assert_eq!(running["queue"], "reports");
    assert_eq!(running["attempt"], 1);
    let human = jetq(&server, &["status", id]).await;
    human.expect_code(0);
    assert!(
        human.stdout.contains("state       running"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("40% row 4 of 10"), "{}", human.stdout);

    // --wait times out cleanly while it runs (exit 1, naming the last state)...
    let timed_out = jetq(&server, &["--json", "status", id, "--wait", "300ms"]).await;
    timed_out.expect_code(1);
    assert!(timed_out.stderr.contains("running"), "{}", timed_out.stderr);
    // ...and returns the final record once it finishes.
    let waiting = {
        let url = server.url();
        let id = id.to_owned();
        tokio::spawn(async move {
            jetq_with(&url, &[], &["--json", "status", &id, "--wait", "30s"]).await
        })
    };
    release_tx.send(true).unwrap();
    let done = within(WAIT, "status --wait to return", waiting)
        .await
        .unwrap()
        .ok_json();
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["result"], json!({ "rows": 10 }));
}

#[tokio::test]
async fn dead_show_prints_the_http_answer_of_a_pushed_task() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[]).await;
    let js = raw_jetstream(&server).await;
    let letter = Letter {
        reason: DeadReason::Fatal,
        error: "target hooks: POST https://app.example/hook answered 422 Unprocessable Entity",
        http: Some(jetq_contract::HttpFailure::new(
            422,
            b"{\"error\":\"unknown address\"}",
        )),
        ..Letter::new("hooks", "notify", "pushed-1")
    };
    let seq = write_dead(&js, &letter).await.to_string();
    let shown = jetq(&server, &["--json", "dead", "show", &seq])
        .await
        .ok_json();
    assert_eq!(shown["failure"]["http"]["status"], 422);
    assert_eq!(
        shown["failure"]["http"]["body"],
        "{\"error\":\"unknown address\"}"
    );
    let text = jetq(&server, &["dead", "show", &seq]).await;
    text.expect_code(0);
    assert!(
        text.stdout.contains("http status  422")
            && text
                .stdout
                .contains("http body    {\"error\":\"unknown address\"}"),
        "{}",
        text.stdout
    );
}
