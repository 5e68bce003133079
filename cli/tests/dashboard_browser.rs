//! The console in a real headless Chromium (Debian's `/usr/bin/chromium`, driven by
//! playwright-core from `cli/tests/browser`), at 1,400 px and at a phone's 390 px: every page
//! (overview, queues, dead letters, a dead letter, limits, task types, schedules, tasks, a task,
//! workers) fits the window; it finds a delayed task by the search box and cancels it, pauses,
//! resumes and runs a schedule now, pauses and resumes a queue, replays and discards a dead letter, filters and pages,
//! retries and discards every letter of a filter in bulk and cancels every task of a filter in
//! bulk (confirmation with the count, progress, result) and releases a unique key, by clicking; a read-only token sees every page without a
//! button and is refused every change; without the token everything is refused. Screenshots
//! are kept in `target/jetq-cli-artifacts/` (and docs/console-*.png with
//! `JETQ_UPDATE_DOCS_SCREENSHOT=1`).
//!
//! Needs `chromium` (Debian package) and `npm ci` in `cli/tests/browser`; `scripts/test.sh`
//! installs both and sets `JETQ_TEST_BROWSER_REQUIRED=1`, which turns a missing piece into a
//! failure instead of a skip.

mod common;

use std::time::Duration;

use common::{
    browser::{
        artifacts_dir, assert_desktop_and_phone_windows, assert_pages_fit, keep_in_docs,
        screenshot_size, Browser,
    },
    *,
};
use jetq_cli::dead::replay_id;
use jetq_contract::headers;
use serde_json::Value;

const TOKEN: &str = "browser-s3cret";
const VIEWER: &str = "browser-viewer";

#[tokio::test]
async fn the_dashboard_in_chromium_shows_counts_replays_by_click_and_refuses_without_the_token() {
    init_logs();
    let Some(browser) = Browser::or_skip("dashboard") else {
        return;
    };
    let server = NatsServer::start().await;
    let topology = provision(
        &server,
        &[
            ("work", 20),
            ("emails", 10),
            ("reports", 10),
            ("mobile", 10),
        ],
    )
    .await;
    let producer = producer(&server).await;
    // The first one holds a unique key (the Limits section lists it, and releases it).
    let unique =
        jetq_producer::EnqueueOptions::new().unique(jetq_producer::Unique::key("report:acme"));
    let mut unique_holder = String::new();
    for n in 0..6 {
        let job = Job {
            n,
            note: String::new(),
        };
        if n == 0 {
            unique_holder = producer
                .enqueue_with(&job, unique.clone())
                .await
                .unwrap()
                .id;
        } else {
            producer.enqueue(&job).await.unwrap();
        }
    }
    let unique_entry = "work.job.report=3Aacme";
    // A limit as a worker registers it and a slot held by a running task (the KV writes of
    // cli/tests/limits.rs), so the section shows each table.
    let limits = topology
        .ensure_bucket(jetq_contract::flow::limits_bucket_config(&topology))
        .await
        .unwrap();
    {
        use jetq_contract::flow::{self, concurrency::Acquire, concurrency::Slots};
        let config = flow::LimitsConfig::new(
            "emails",
            "send_email",
            Some(flow::rate::RateLimit::new(14.0, 14).unwrap()),
            Some(flow::ConcurrencyLimit::new(3).unwrap()),
        );
        limits
            .put(config.entry(), serde_json::to_vec(&config).unwrap().into())
            .await
            .unwrap();
        let now = flow::micros(std::time::SystemTime::now());
        let Acquire::Taken(slots) =
            Slots::default().acquire(3, 7, "01JQ7ZQ4W0SLOT0000000000E5", now, now + 600_000_000)
        else {
            panic!("a slot is free")
        };
        limits
            .put("conc.emails.send_email", slots.to_json().into())
            .await
            .unwrap();
        let tat = flow::format_micros(now + 2_000_000);
        limits
            .put(
                "rate.emails.send_email",
                serde_json::to_vec(&flow::rate::RateState { tat })
                    .unwrap()
                    .into(),
            )
            .await
            .unwrap();
    }
    for to in ["ada@example.com", "grace@example.com"] {
        producer.enqueue(&Email { to: to.into() }).await.unwrap();
    }
    let js = raw_jetstream(&server).await;
    let mut seqs = Vec::new();
    for (id, error) in [
        (
            "01JQ7ZQ4W0SMTP0000000000A1",
            "final attempt 3: smtp refused: 554 5.7.1 relay denied",
        ),
        (
            "01JQ7ZQ4W0CSV00000000000B2",
            "final attempt 3: export bucket not found",
        ),
        ("01JQ7ZQ4W0PHONE000000000F6", "attempt timed out after 30s"),
    ] {
        let letter = Letter {
            error,
            payload: "{\"n\":42,\"note\":\"monthly export\"}",
            ..Letter::new("work", "job", id)
        };
        seqs.push(write_dead(&js, &letter).await);
    }
    // The letter whose Jetq-Failure header made the old detail page 8,457 px wide.
    let long_error = format!(
        "final attempt 3: {}",
        "connection reset by peer while reading the response of \
         https://exports.example.com/api/v2/monthly?tenant=acme&format=csv; "
            .repeat(12)
    );
    let detail_seq = write_dead(
        &js,
        &Letter {
            reason: jetq_contract::DeadReason::Fatal,
            error: &long_error,
            payload: "{\"n\":7,\"note\":\"a very long export\"}",
            ..Letter::new("work", "job", "01JQ7ZQ4W0LONG0000000000C3")
        },
    )
    .await;
    let email_dead = Letter {
        error: "mailbox grace@example.com does not exist",
        payload: "{\"to\":\"grace@example.com\"}",
        ..Letter::new("emails", "send_email", "01JQ7ZQ4W0MAIL0000000000D4")
    };
    let email_seq = write_dead(&js, &email_dead).await;
    // Letters for the bulk actions: retried (reports), discarded one by one (work.cleanup,
    // a reason filter), discarded at phone width (mobile).
    write_dead_many(&js, "reports", "job", "rep", 40).await;
    write_dead_many(&js, "work", "cleanup", "cln", 25).await;
    write_dead_many(&js, "mobile", "job", "mob", 15).await;
    // Pending tasks of mobile for the bulk Cancel: 12 `render` (desktop) and 8 `resize` (phone).
    for (task, count) in [("render", 12), ("resize", 8)] {
        for n in 0..count {
            producer
                .enqueue_raw(jetq_producer::RawTask {
                    queue: "mobile".into(),
                    task: task.into(),
                    payload: format!("{{\"page\":{n}}}").into(),
                    options: jetq_producer::EnqueueOptions::new(),
                })
                .await
                .unwrap();
        }
    }

    let schedules = tempfile::tempdir().unwrap();
    let schedules_file = schedules.path().join("schedules.yaml");
    std::fs::write(
        &schedules_file,
        "schedules:\n  - name: nightly-report\n    cron: \"0 0 3 * * *\"\n    timezone: Europe/Berlin\n    \
         queue: work\n    task: job\n    args: { n: 1 }\n",
    )
    .unwrap();
    // The Schedules page's Pause/Resume/Run now need a scheduler (its state bucket).
    let scheduler =
        RunningScheduler::start(scheduler(&server).schedules_file(&schedules_file)).await;
    // A delayed task, found by the search box and cancelled by clicking.
    let delayed = producer
        .enqueue_in(
            Duration::from_secs(3600),
            &Email {
                to: "later@example.com".into(),
            },
        )
        .await
        .unwrap();
    // A live worker as the Workers page shows it: its presence record written per protocol
    // (PROTOCOL §14) and rewritten every second while the browser runs.
    let presence = topology
        .ensure_bucket(jetq_contract::presence::bucket_config(&topology))
        .await
        .unwrap();
    let started =
        jetq_contract::time::format(std::time::SystemTime::now() - Duration::from_secs(75));
    let heartbeat = tokio::spawn(async move {
        loop {
            let record = jetq_contract::presence::WorkerRecord {
                id: "web-7f9c-4242-01JQ7ZQ4W0WORKER000000000".into(),
                host: "web-7f9c".into(),
                pid: 4242,
                version: "0.1.0".into(),
                prefix: "jetq".into(),
                queues: vec!["work".into(), "emails".into()],
                concurrency: 8,
                started_at: started.clone(),
                heartbeat_at: jetq_contract::time::now(),
                running: vec![jetq_contract::presence::RunningTask {
                    id: "01JQ7ZQ4W0RUN00000000000R7".into(),
                    queue: "work".into(),
                    task: "job".into(),
                    sequence: 999_999,
                    started_at: started.clone(),
                    attempt: 2,
                    batch: None,
                }],
                running_count: 1,
            };
            let _ = presence
                .put(&record.id, serde_json::to_vec(&record).unwrap().into())
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let dashboard = start_dashboard(
        &server,
        &[
            "--token",
            TOKEN,
            "--read-only-token",
            VIEWER,
            "--sample-every",
            "500ms",
            "--schedules-file",
            schedules_file.to_str().unwrap(),
        ],
    )
    .await;

    let shots = artifacts_dir();
    let seen = browser
        .run_script(
            "dashboard.mjs",
            &dashboard,
            &shots,
            &[
                ("DASHBOARD_TOKEN", TOKEN),
                ("VIEWER_TOKEN", VIEWER),
                ("REPLAY_SEQ", &seqs[0].to_string()),
                ("DISCARD_SEQ", &seqs[1].to_string()),
                ("PHONE_DISCARD_SEQ", &seqs[2].to_string()),
                ("DETAIL_SEQ", &detail_seq.to_string()),
                ("RELEASE_ENTRY", unique_entry),
                ("BULK_RETRY_QUERY", "queue=reports"),
                (
                    "BULK_DISCARD_QUERY",
                    "queue=work&task=cleanup&reason=exhausted",
                ),
                ("PHONE_BULK_QUERY", "queue=mobile"),
                (
                    "BULK_CANCEL_QUERY",
                    "state=pending&queue=mobile&type=render",
                ),
                (
                    "PHONE_CANCEL_QUERY",
                    "state=pending&queue=mobile&type=resize",
                ),
                ("PAUSE_QUEUE", "work"),
                ("CANCEL_TASK", &delayed.id),
                ("DEAD_TASK", "01JQ7ZQ4W0LONG0000000000C3"),
                ("SCHEDULE", "nightly-report"),
            ],
            Duration::from_secs(240),
        )
        .await;
    let text = |key: &str| {
        seen[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing: {seen:#}"))
            .to_owned()
    };

    // Refused without the token: the page and a replay.
    assert_eq!(seen["anonymous_status"], 401);
    assert!(text("anonymous_text").contains("Authentication required"));
    assert_eq!(seen["anonymous_replay_status"], 401);
    for navigation in ["anonymous_navigation", "wrong_token_navigation"] {
        let text = text(navigation);
        assert!(
            text.contains("ERR_INVALID_AUTH_CREDENTIALS") || text == "HTTP 401",
            "{navigation}: {text}"
        );
    }
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen:#}");

    // Overview: the counts as the page showed them; the header's dead-letter count is the
    // table's sum, at load and after polls.
    assert_eq!(seen["status"], 200);
    let work = &seen["queues"]["work"];
    assert_eq!(work["pending"], "6");
    assert_eq!(work["in_flight"], "0");
    assert_eq!(work["max_in_flight"], "20");
    assert_eq!(work["dead"], "29");
    assert_eq!(work["state"], "active");
    assert_eq!(seen["queues"]["emails"]["pending"], "2");
    assert_eq!(seen["queues"]["emails"]["dead"], "1");
    assert_eq!(seen["queues"]["reports"]["dead"], "40");
    assert_eq!(seen["nav_dead"], "85");
    assert_eq!(seen["polled_nav_dead"], seen["polled_table_dead"]);
    let mut lines: Vec<&str> = seen["chart_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, ["emails", "mobile", "reports", "work"]);

    // Queues: latency of the pending tasks; paused and resumed by clicking (desktop, phone).
    let latency = seen["queues_page"]["work"]["latency"].as_str().unwrap();
    assert!(latency != "-" && latency != "?", "{latency}");
    assert_eq!(seen["queues_page"]["reports"]["latency"], "-");
    for key in ["desktop", "phone"] {
        assert!(text(&format!("{key}_pause_dialog")).contains("Pause queue work"));
        assert!(text(&format!("{key}_paused_flash")).contains("work paused"));
        assert!(text(&format!("{key}_resumed_flash")).contains("work resumed"));
    }
    assert!(
        !admin(&server)
            .await
            .queue_stats("work")
            .await
            .unwrap()
            .paused
    );

    // Dead letters: replayed and discarded by a click; filter and paging.
    assert!(seen["dead_rows"].as_array().unwrap().len() >= 50);
    assert!(
        text("dead_counts").contains("85"),
        "{}",
        text("dead_counts")
    );
    let new_id = replay_id(seqs[0], "01JQ7ZQ4W0SMTP0000000000A1");
    assert!(text("replay_flash").contains(&new_id), "{seen:#}");
    assert!(text("discard_dialog").contains(&seqs[1].to_string()));
    assert_eq!(
        seen["fatal_rows"],
        serde_json::json!([detail_seq.to_string()])
    );
    assert_eq!(seen["first_page_rows"], 5);
    assert!(
        seen["second_page_first"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > seqs[2]
    );

    // Bulk: a confirmation with the count, a progress bar, the result.
    assert!(
        text("bulk_retry_dialog").starts_with("Retry 40 dead letters matching queue=reports"),
        "{seen:#}"
    );
    assert!(
        text("bulk_retry_result").contains("40 done, 0 failed"),
        "{seen:#}"
    );
    assert_eq!(seen["bulk_retry_state"], "done");
    assert!(
        text("bulk_discard_dialog").starts_with(
            "Discard 25 dead letters matching queue=work, task=cleanup, reason=exhausted"
        ),
        "{seen:#}"
    );
    assert!(
        text("bulk_discard_result").contains("25 done, 0 failed"),
        "{seen:#}"
    );
    assert_eq!(
        seen["bulk_discard_progress"]["value"],
        seen["bulk_discard_progress"]["max"]
    );
    assert!(
        text("phone_bulk_dialog").starts_with("Discard 15 dead letters"),
        "{seen:#}"
    );
    assert!(
        text("phone_bulk_result").contains("15 done, 0 failed"),
        "{seen:#}"
    );
    assert!(text("phone_discard_flash").contains(&format!("{} discarded", seqs[2])));
    assert_eq!(seen["forged_status"], 403);

    // Bulk Cancel of the tasks matching the Tasks page's filter, at 1,400 and 390 px: the count
    // in the confirmation, the job's progress and result, no task left.
    for (key, count, filter) in [
        (
            "bulk_cancel",
            12,
            "queue=mobile, type=render, state=pending",
        ),
        (
            "phone_cancel",
            8,
            "queue=mobile, type=resize, state=pending",
        ),
    ] {
        assert_eq!(seen[format!("{key}_rows_before")], count, "{seen:#}");
        assert!(
            text(&format!("{key}_dialog"))
                .starts_with(&format!("Cancel {count} pending tasks matching {filter}?")),
            "{seen:#}"
        );
        let result = text(&format!("{key}_result"));
        assert!(
            result.starts_with("Cancel done:")
                && result.contains(&format!("{count} done, 0 failed")),
            "{result}"
        );
        assert_eq!(seen[format!("{key}_state")], "done");
        assert_eq!(
            seen[format!("{key}_progress")]["value"],
            seen[format!("{key}_progress")]["max"]
        );
        assert_eq!(seen[format!("{key}_rows_after")], 0, "{seen:#}");
    }
    for task in ["render", "resize"] {
        let left = admin(&server)
            .await
            .tasks(
                &jetq_cli::tasks::TaskFilter {
                    state: jetq_cli::tasks::ListState::Pending,
                    queue: Some("mobile".into()),
                    task: Some(task.into()),
                },
                &jetq_cli::tasks::PageRequest {
                    limit: 10,
                    after: None,
                },
            )
            .await
            .unwrap();
        assert!(left.tasks.is_empty(), "{task}: {left:?}");
    }

    // The detail page shows the whole error, and no page is wider than the window, at 1,400
    // px and at 390 px.
    assert!(text("detail_text").contains("tenant=acme&format=csv"));
    let widths = assert_pages_fit(&seen);
    assert!(widths.len() >= 15, "{widths:#?}");
    assert_desktop_and_phone_windows(widths);
    assert!(text("schedules_text").contains("nightly-report"));
    assert!(text("catalog_text").contains("Task types"));

    // Tasks: listed by state, found by id, cancelled by clicking.
    let listed: Vec<&str> = seen["tasks_rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(listed.len() >= 6, "{seen:#}");
    assert!(listed.contains(&unique_holder.as_str()));
    assert_eq!(seen["delayed_rows"], serde_json::json!([delayed.id]));
    assert!(text("task_detail_text").contains("delayed"), "{seen:#}");
    assert!(text("cancel_dialog").contains(&delayed.id));
    let cancelled = text("cancel_flash");
    assert!(
        cancelled.contains("deleted") && cancelled.contains("was delayed"),
        "{cancelled}"
    );
    assert!(
        admin(&server)
            .await
            .tasks(
                &jetq_cli::tasks::TaskFilter {
                    state: jetq_cli::tasks::ListState::Delayed,
                    queue: None,
                    task: None,
                },
                &jetq_cli::tasks::PageRequest {
                    limit: 10,
                    after: None
                },
            )
            .await
            .unwrap()
            .tasks
            .is_empty(),
        "the delayed task is gone"
    );
    let dead_task = text("dead_task_text");
    assert!(dead_task.contains("dead"), "{dead_task}");
    assert!(
        dead_task.contains("connection reset by peer"),
        "{dead_task}"
    );
    // Workers.
    let workers = text("workers_text");
    for expected in [
        "web-7f9c",
        "pid 4242",
        "0.1.0",
        "work, emails",
        "01JQ7ZQ4W0RUN00000000000R7",
        "attempt 2",
        "ago",
    ] {
        assert!(workers.contains(expected), "{expected}: {workers}");
    }
    // Schedules: paused (who and when shown), resumed, run now once.
    assert!(text("schedule_pause_dialog").contains("nightly-report"));
    assert!(text("schedule_paused_row").contains("paused"), "{seen:#}");
    assert!(
        text("schedule_paused_row").contains("by console:ops"),
        "{seen:#}"
    );
    assert!(text("schedule_resumed_flash").contains("resumed"));
    let run = text("schedule_run_flash");
    let run_id = run
        .split("task ")
        .nth(1)
        .unwrap_or_else(|| panic!("{run}"))
        .trim()
        .to_owned();
    assert!(run_id.starts_with("nightly-report:run:"), "{run}");
    eventually(WAIT, "the run-now task", || {
        let js = js.clone();
        let run_id = run_id.clone();
        async move {
            task_messages(&js)
                .await
                .iter()
                .any(|m| header(m, headers::MSG_ID).as_deref() == Some(run_id.as_str()))
                .then_some(())
        }
    })
    .await;
    heartbeat.abort();
    scheduler.kill().await;

    // The read-only token: every page, no button, every change refused.
    let viewer = seen["viewer"].as_object().unwrap();
    assert_eq!(viewer.len(), 11);
    for (page, seen_page) in viewer {
        assert_eq!(seen_page["status"], 200, "{page}");
        assert_eq!(seen_page["badge"], 1, "{page}");
        assert_eq!(seen_page["buttons"], 0, "{page}");
    }
    for (path, answer) in seen["viewer_posts"].as_object().unwrap() {
        assert_eq!(answer["status"], 403, "{path}");
        assert!(
            answer["body"].as_str().unwrap().contains("read-only"),
            "{path}"
        );
    }

    // The Limits page as the page showed it, and the unique key released by a click.
    let limits_text = text("limits_text");
    for shown in [
        "report:acme",
        unique_holder.as_str(),
        "conc.emails.send_email",
        "01JQ7ZQ4W0SLOT0000000000E5",
        "rate.emails.send_email",
        "14/s",
    ] {
        assert!(limits_text.contains(shown), "{shown} not in {limits_text}");
    }
    assert!(text("release_dialog").contains(unique_entry), "{seen:#}");
    assert!(text("release_flash").contains("JETQ_UNIQUE"), "{seen:#}");
    let unique_kv = js.get_key_value("JETQ_UNIQUE").await.unwrap();
    assert!(
        unique_kv.get(unique_entry).await.unwrap().is_none(),
        "released by the click"
    );
    assert!(limits
        .get("conc.emails.send_email")
        .await
        .unwrap()
        .is_some());

    // What the clicks did, in JetStream.
    assert_eq!(dead_sequences(&js).await, [detail_seq, email_seq]);
    let replayed: Vec<String> = task_messages(&js)
        .await
        .iter()
        .filter_map(|m| header(m, headers::MSG_ID))
        .filter(|id| id.starts_with("replay:"))
        .collect();
    assert_eq!(replayed.len(), 41, "one by click, 40 in bulk");
    assert!(replayed.contains(&new_id));

    for shot in SCREENSHOTS {
        let size = screenshot_size(&shots, shot);
        assert!(size > 10_000, "{shot} is only {size} bytes");
        keep_in_docs(&shots, shot);
    }
}

/// The screenshots the script takes (kept in docs/ with `JETQ_UPDATE_DOCS_SCREENSHOT=1`).
const SCREENSHOTS: [&str; 21] = [
    "console-overview.png",
    "console-queues.png",
    "console-dead.png",
    "console-bulk.png",
    "console-dead-detail.png",
    "console-limits.png",
    "console-schedules.png",
    "console-phone-overview.png",
    "console-phone-queues.png",
    "console-phone-dead.png",
    "console-phone-dead-detail.png",
    "console-tasks.png",
    "console-task-detail.png",
    "console-workers.png",
    "console-schedules-paused.png",
    "console-phone-tasks.png",
    "console-phone-task-detail.png",
    "console-phone-workers.png",
    "console-phone-schedules.png",
    "console-tasks-bulk-cancel.png",
    "console-phone-tasks-bulk-cancel.png",
];
