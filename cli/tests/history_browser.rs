//! The console's History page in a real headless Chromium (`cli/tests/browser/history.mjs`,
//! playwright-core), at 1,400 px and at a phone's 390 px: the server-drawn SVG charts (tasks
//! per minute, depth, run time) render with visible lines at both widths, the range tabs and
//! the queue filter work, no page is wider than the window and nothing is loaded from
//! elsewhere. The last minutes come from a real worker; the six hours before are records
//! written per protocol (PROTOCOL.md §15), as the workers of a busy day would have merged
//! them, so the charts have a day's shape without the test waiting hours. Screenshots in
//! `target/jetq-cli-artifacts/` (and docs/console-history.png, docs/console-phone-history.png
//! with `JETQ_UPDATE_DOCS_SCREENSHOT=1`).
//!
//! Needs `chromium` and `npm ci` in `cli/tests/browser`, like `dashboard_browser.rs`;
//! `JETQ_TEST_BROWSER_REQUIRED=1` turns a missing piece into a failure instead of a skip.

mod common;

use std::time::{Duration, SystemTime};

use common::{
    browser::{artifacts_dir, assert_pages_fit, keep_in_docs, Browser},
    *,
};
use jetq_consumer::{TaskContext, TaskError};
use jetq_contract::metrics_history::{self, MinuteRecord};

const TOKEN: &str = "history-s3cret";

/// A past minute of a busy queue: a daily wave of traffic, a few failures, a slow spell.
fn past_minute(queue: &str, minute: u64, scale: f64) -> MinuteRecord {
    let phase = (minute % 360) as f64 / 360.0 * std::f64::consts::TAU;
    let mut record = MinuteRecord::new(queue, minute);
    record.succeeded = ((60.0 + 45.0 * phase.sin()) * scale) as u64;
    record.failed = minute.is_multiple_of(7) as u64 * 3 + minute.is_multiple_of(31) as u64 * 12;
    record.retried = record
        .failed
        .saturating_sub(minute.is_multiple_of(31) as u64 * 4);
    record.dead = record.failed - record.retried;
    let slow = minute % 90 < 12;
    for n in 0..record.succeeded + record.failed {
        let ms = if slow {
            400 + n * 37 % 1800
        } else {
            20 + n * 13 % 180
        };
        record.add_run(Duration::from_millis(ms));
    }
    record.sample_depth(
        ((25.0 + 20.0 * (phase * 2.0).cos()) * scale) as u64 + slow as u64 * 140,
        (4.0 * scale) as u64 + 2,
    );
    record.updated_at = jetq_contract::time::format(metrics_history::minute_start(minute + 1));
    record
}

#[tokio::test]
async fn the_history_charts_render_in_chromium_at_desktop_and_phone_width() {
    init_logs();
    let Some(browser) = Browser::or_skip("history") else {
        return;
    };
    let server = NatsServer::start().await;
    let built = worker(&server)
        .history_interval(Duration::from_millis(200))
        .handler(|email: Email, _ctx: TaskContext| async move {
            match email.to.strip_prefix("sleep-") {
                Some(ms) => {
                    let ms = ms.parse().map_err(TaskError::fatal)?;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(())
                }
                None => Err(TaskError::fatal("no such mailbox")),
            }
        })
        .build()
        .await
        .expect("worker builds");
    let (stop, run) = spawn_worker(built);
    // Six hours of both queues before this minute, as the workers merged them.
    let js = raw_jetstream(&server).await;
    let store = js.get_key_value("JETQ_METRICS").await.unwrap();
    let now = metrics_history::minute_of(SystemTime::now());
    for minute in now - 360..now {
        for (queue, scale) in [("emails", 1.0), ("exports", 0.3)] {
            let record = past_minute(queue, minute, scale);
            store
                .put(record.key(), serde_json::to_vec(&record).unwrap().into())
                .await
                .unwrap();
        }
    }
    // This minute: a real worker runs 30 emails, 3 of them die.
    let producer = producer(&server).await;
    for n in 0..30u64 {
        let to = if n % 10 == 9 {
            "nobody".to_owned()
        } else {
            format!("sleep-{}", 5 + n * 7 % 60)
        };
        producer.enqueue(&Email { to }).await.unwrap();
    }
    let admin = admin(&server).await;
    eventually(WAIT, "the worker's minute is in the history", || {
        let admin = admin.clone();
        async move {
            let listing = admin
                .metrics_history(Some("emails"), Duration::from_secs(120))
                .await
                .ok()?;
            let now = listing.records.iter().filter(|r| r.minute >= now);
            let (ok, dead) = now.fold((0, 0), |(ok, dead), r| (ok + r.succeeded, dead + r.dead));
            (ok >= 27 && dead >= 3).then_some(())
        }
    })
    .await;

    let dashboard = start_dashboard(&server, &["--token", TOKEN]).await;
    let shots = artifacts_dir();
    let seen = browser
        .run_script(
            "history.mjs",
            &dashboard,
            &shots,
            &[("DASHBOARD_TOKEN", TOKEN), ("QUEUE", "emails")],
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen:#}");
    assert_eq!(
        seen["requests"],
        serde_json::json!([]),
        "nothing from elsewhere"
    );
    assert!(seen["history_url"].as_str().unwrap().ends_with("/history"));
    assert!(seen["url_6h"].as_str().unwrap().contains("range=6h"));
    assert!(seen["url_queue"].as_str().unwrap().contains("queue=emails"));
    assert_eq!(seen["blocks_for_queue"], serde_json::json!(["emails"]));
    let totals = seen["totals"].as_str().unwrap();
    assert!(
        totals.contains("succeeded") && totals.contains("dead"),
        "{totals}"
    );

    // Three charts, each with drawn lines, at desktop and at phone width.
    for (view, max_width) in [
        ("desktop_1h", 1400),
        ("desktop_6h", 1400),
        ("phone_1h", 390),
        ("phone_24h", 390),
    ] {
        let charts = seen[view].as_array().unwrap();
        let ids: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                "history-emails-throughput",
                "history-emails-depth",
                "history-emails-runtime"
            ],
            "{view}"
        );
        for chart in charts {
            let (width, height) = (
                chart["width"].as_u64().unwrap(),
                chart["height"].as_u64().unwrap(),
            );
            assert!(width >= 250 && width <= max_width, "{view}: {chart}");
            // The SVG keeps its proportions (600 × 170): never squashed flat.
            assert!(
                height * 600 >= width * 160 && height * 600 <= width * 180,
                "{view}: {chart}"
            );
            let lines = chart["lines"].as_array().unwrap();
            assert!(!lines.is_empty(), "{view}: {chart}");
            let longest = lines
                .iter()
                .map(|l| l["length"].as_u64().unwrap())
                .max()
                .unwrap();
            assert!(
                longest as f64 >= 500.0 * 0.8,
                "{view}: lines span the chart: {chart}"
            );
            for line in lines {
                assert_ne!(line["stroke"], "none", "{view}: styled: {line}");
            }
        }
        let throughput = &charts[0]["lines"];
        let series: Vec<&str> = throughput
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["series"].as_str().unwrap())
            .collect();
        for name in ["succeeded", "failed", "dead"] {
            assert!(series.contains(&name), "{view}: {series:?}");
        }
    }
    let widths = assert_pages_fit(&seen);
    assert_eq!(widths.len(), 4, "{widths:#?}");
    for shot in ["console-history.png", "console-phone-history.png"] {
        assert!(shots.join(shot).exists(), "{shot} written");
        keep_in_docs(&shots, shot);
    }
    stop_worker(stop, run).await;
}
