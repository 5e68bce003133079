//! The console's Batches pages in a real headless Chromium (`cli/tests/browser/batches.mjs`,
//! playwright-core), at 1,400 px and at a phone's 390 px, with a real worker: a chord whose
//! members succeeded (with results), died, run now (their handlers block) and wait queued, an
//! older batch whose callbacks fired, a chain stopped at a failed link. The script follows the
//! navigation to the list, the batch, a dead member's task page and back; every page fits the
//! window; the read-only token sees them. Screenshots in `target/jetq-cli-artifacts/` (and
//! docs/console-batches.png, docs/console-batch-detail.png with
//! `JETQ_UPDATE_DOCS_SCREENSHOT=1`).
//!
//! Needs `chromium` and `npm ci` in `cli/tests/browser`, like `dashboard_browser.rs`;
//! `JETQ_TEST_BROWSER_REQUIRED=1` turns a missing piece into a failure instead of a skip.

mod common;

use std::{sync::Arc, time::Duration};

use common::{
    browser::{
        artifacts_dir, assert_desktop_and_phone_windows, assert_pages_fit, keep_in_docs,
        screenshot_size, Browser,
    },
    *,
};
use jetq_consumer::{TaskContext, TaskError};
use jetq_producer::{BatchOptions, Chain};
use jetq_tests::workflow::Done;

const TOKEN: &str = "batches-s3cret";
const VIEWER: &str = "batches-viewer";

#[tokio::test]
async fn the_batch_pages_in_chromium_fit_desktop_and_phone_and_link_members_both_ways() {
    init_logs();
    let Some(browser) = Browser::or_skip("batches") else {
        return;
    };
    let server = NatsServer::start().await;
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let (blocking_tx, mut blocking) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let built = worker(&server)
        .settings(jetq_consumer::WorkerSettings {
            concurrency: 2,
            presence_interval: Duration::from_millis(200),
            ..fast_settings()
        })
        .handler(move |job: Job, ctx: TaskContext| {
            let gate = gate.clone();
            let blocking = blocking_tx.clone();
            async move {
                match job.note.as_str() {
                    "fail" => Err(TaskError::fatal(
                        "export bucket not found: s3://exports/acme/2026-12",
                    )),
                    "block" => {
                        let _ = blocking.send(job.n);
                        let permit = gate.acquire().await.map_err(TaskError::fatal)?;
                        permit.forget();
                        Ok(())
                    }
                    _ => {
                        if ctx.is_tracked() {
                            ctx.set_result(&serde_json::json!({
                                "object": format!("exports/42/part-{}.csv", job.n),
                                "rows": 10_000,
                            }))
                            .map_err(TaskError::fatal)?;
                        }
                        Ok(())
                    }
                }
            }
        })
        .handler(|_done: Done, _ctx: TaskContext| async move { Ok::<(), TaskError>(()) })
        .build()
        .await
        .expect("worker builds");
    let producer = producer(&server).await;
    // An older batch that is done, both callbacks fired.
    let mut older = producer.batch(BatchOptions::new().id("nightly-cleanup"));
    for n in 0..3 {
        older = older.add(&Job {
            n,
            note: String::new(),
        });
    }
    older
        .on_complete(&Done {
            which: "on_complete".into(),
            ..Default::default()
        })
        .on_success(&Done {
            which: "on_success".into(),
            ..Default::default()
        })
        .enqueue()
        .await
        .unwrap();
    producer
        .enqueue_chain(
            Chain::new()
                .id("report-chain")
                .then(&Job {
                    n: 100,
                    note: String::new(),
                })
                .then(&Job {
                    n: 101,
                    note: "fail".into(),
                })
                .then(&Job {
                    n: 102,
                    note: String::new(),
                }),
        )
        .await
        .unwrap();
    let (stop, run) = spawn_worker(built);
    let admin = admin(&server).await;
    eventually(WAIT, "the chain failed, the older batch fired", || async {
        let chain = admin.chain_detail("report-chain").await.ok()?;
        let older = admin.batch_detail("nightly-cleanup", None, 0).await.ok()?;
        (chain.failed_at == Some(1) && older.succeeded_all.and_then(|f| f.done_at).is_some())
            .then_some(())
    })
    .await;
    // The chord: five parts succeed, one dies, two block (both slots), one waits.
    let notes = ["", "", "", "", "", "fail", "block", "block", ""];
    let mut chord = producer.batch(BatchOptions::new().id("export-42").chord());
    for (n, note) in notes.iter().enumerate() {
        // The blocking ones outlive the test, not Job's 10 s timeout.
        chord = chord.add_with(
            &Job {
                n: n as u64,
                note: (*note).into(),
            },
            jetq_producer::EnqueueOptions::new().timeout(Duration::from_secs(300)),
        );
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
        .unwrap();

    for _ in 0..2 {
        next(&mut blocking, "a blocking member started").await;
    }
    eventually(WAIT, "2 running, 6 finished", || async {
        let detail = admin.batch_detail("export-42", None, 0).await.ok()?;
        (detail.running == 2 && detail.succeeded + detail.dead == 6).then_some(())
    })
    .await;

    let dashboard =
        start_dashboard(&server, &["--token", TOKEN, "--read-only-token", VIEWER]).await;
    let shots = artifacts_dir();
    let seen = browser
        .run_script(
            "batches.mjs",
            &dashboard,
            &shots,
            &[
                ("DASHBOARD_TOKEN", TOKEN),
                ("VIEWER_TOKEN", VIEWER),
                ("BATCH", "export-42"),
                ("CHAIN", "report-chain"),
            ],
            Duration::from_secs(180),
        )
        .await;
    release.add_permits(2);
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen:#}");

    // The list, newest first, with the counts.
    assert!(seen["list_url"].as_str().unwrap().ends_with("/batches"));
    let rows = seen["list_rows"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["export-42", "nightly-cleanup"], "{seen:#}");
    assert_eq!(rows[0]["cells"]["total"], "9");
    assert_eq!(rows[0]["cells"]["running"], "2");
    assert_eq!(rows[1]["cells"]["fired"], "on_complete, on_success");

    // The batch: exact counts, the two running members, the finished ones with their outcome.
    assert!(seen["detail_url"]
        .as_str()
        .unwrap()
        .ends_with("/batches/export-42"));
    let counts = seen["counts"].as_str().unwrap();
    for expected in [
        "9 total",
        "5 succeeded",
        "1 dead",
        "3 pending",
        "2 running",
        "1 queued",
    ] {
        assert!(counts.contains(expected), "{expected}: {counts}");
    }
    assert_eq!(seen["running_rows"].as_array().unwrap().len(), 2);
    let members = seen["member_rows"].as_array().unwrap();
    assert_eq!(members.len(), 6);
    assert_eq!(
        members
            .iter()
            .filter(|m| m["outcome"].as_str().unwrap().starts_with("dead"))
            .count(),
        1
    );
    assert!(seen["callbacks"].as_str().unwrap().contains("not fired"));
    // From the dead member to its task page and back.
    assert!(seen["dead_task_url"].as_str().unwrap().contains("/tasks/"));
    assert_eq!(seen["dead_task_batch"], "export-42");
    assert!(seen["back_url"]
        .as_str()
        .unwrap()
        .ends_with("/batches/export-42"));
    // The chain, reached from its row on /batches.
    assert!(seen["chain_url"]
        .as_str()
        .unwrap()
        .ends_with("/chains/report-chain"));
    assert!(seen["chain_state"]
        .as_str()
        .unwrap()
        .contains("failed at link 1"));
    assert_eq!(
        seen["chain_links"],
        serde_json::json!(["succeeded", "failed dead letters", "not started"])
    );

    // Nothing wider than the window.
    let widths = assert_pages_fit(&seen);
    assert_eq!(widths.len(), 6, "{widths:#?}");
    assert_desktop_and_phone_windows(widths);
    for (page, seen_page) in seen["viewer"].as_object().unwrap() {
        assert_eq!(seen_page["status"], 200, "{page}");
        assert_eq!(seen_page["badge"], 1, "{page}");
    }

    for shot in [
        "console-batches.png",
        "console-batch-detail.png",
        "console-chain.png",
        "console-phone-batches.png",
        "console-phone-batch-detail.png",
    ] {
        let size = screenshot_size(&shots, shot);
        assert!(size > 10_000, "{shot} is only {size} bytes");
        if shot != "console-phone-batches.png" {
            keep_in_docs(&shots, shot);
        }
    }
    stop_worker(stop, run).await;
}
