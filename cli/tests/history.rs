//! The metrics history (PROTOCOL.md §15) in the console and the CLI, against a real
//! nats-server and a real worker: the per-minute records the worker merges are on the History
//! page (server-drawn SVG charts) and `GET /api/history`, still there after the dashboard
//! restarts (they live in NATS, not in the dashboard), and printed by `jetq history`.

mod common;

use std::time::Duration;

use common::*;
use jetq_consumer::{TaskContext, TaskError};
use serde_json::Value;

/// Sums of a `/api/history` (or `jetq history --json`) body: succeeded, failed, dead, runs.
fn sums(body: &Value) -> (u64, u64, u64, u64) {
    let records = body["records"].as_array().cloned().unwrap_or_default();
    let sum = |field: &str| records.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum();
    (sum("succeeded"), sum("failed"), sum("dead"), sum("runs"))
}

#[tokio::test]
async fn the_history_survives_a_dashboard_restart_and_is_printed_by_the_cli() {
    init_logs();
    let server = NatsServer::start().await;
    let worker = worker(&server)
        .history_interval(Duration::from_millis(200))
        .handler(|email: Email, _ctx: TaskContext| async move {
            if email.to == "fatal" {
                return Err(TaskError::fatal("no such mailbox"));
            }
            Ok::<(), TaskError>(())
        })
        .build()
        .await
        .expect("worker builds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let producer = producer(&server).await;
    for n in 0..8 {
        let to = if n < 2 { "fatal" } else { "ok" };
        producer.enqueue(&Email { to: to.into() }).await.unwrap();
    }
    let expected = (6, 2, 2, 8);

    let first = start_dashboard(&server, &[]).await;
    let base = first.url.clone();
    eventually(WAIT, "the history API adds up to what ran", || {
        let base = base.clone();
        async move {
            let response = http(&base, "GET", "/api/history?queue=emails&range=1h", &[]).await;
            assert_eq!(response.status, 200, "{}", response.body);
            (sums(&response.json()) == expected).then_some(())
        }
    })
    .await;
    let _ = stop.send(());
    within(WAIT, "worker stops", running).await.unwrap();
    drop(first);

    // A new dashboard process: nothing in memory, the history still there.
    let second = start_dashboard(&server, &[]).await;
    let api = http(
        &second.url,
        "GET",
        "/api/history?queue=emails&range=24h",
        &[],
    )
    .await;
    assert_eq!(api.status, 200);
    let body = api.json();
    assert_eq!(sums(&body), expected);
    assert_eq!(body["bucket"], "JETQ_METRICS");
    assert_eq!(body["exists"], true);
    assert_eq!(
        body["to_minute"].as_u64().unwrap() + 1 - body["from_minute"].as_u64().unwrap(),
        24 * 60
    );
    for range in ["1h", "6h", "24h"] {
        let page = http(
            &second.url,
            "GET",
            &format!("/history?queue=emails&range={range}"),
            &[],
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.body);
        for chart in ["throughput", "depth", "runtime"] {
            assert!(
                page.body
                    .contains(&format!("id=\"history-emails-{chart}\"")),
                "{range}: chart {chart} missing"
            );
        }
        assert!(page
            .body
            .contains("<polyline class=\"series ok\" data-series=\"succeeded\""));
        assert!(page.body.contains("data-total=\"succeeded\">6<"), "{range}");
        assert!(page.body.contains("data-total=\"dead\">2<"), "{range}");
        assert!(
            !page.body.contains("<script src=\"http"),
            "no external script"
        );
    }
    let all = http(&second.url, "GET", "/history", &[]).await;
    assert_eq!(all.status, 200);
    assert!(all.body.contains("id=\"history-emails\""));
    assert!(http(&second.url, "GET", "/", &[])
        .await
        .body
        .contains("href=\"/history\""));
    for bad in ["/api/history?range=2d", "/api/history?queue=bad.queue"] {
        assert_eq!(
            http(&second.url, "GET", bad, &[]).await.status,
            400,
            "{bad}"
        );
    }

    // The CLI reads the same records.
    let json = jetq(
        &server,
        &["history", "--queue", "emails", "--since", "24h", "--json"],
    )
    .await
    .ok_json();
    assert_eq!(sums(&json), expected);
    let text = jetq(&server, &["history", "--since", "1h"]).await;
    text.expect_code(0);
    assert!(text.stdout.contains("SUCCEEDED"), "{}", text.stdout);
    assert!(text.stdout.contains("emails"), "{}", text.stdout);
    jetq(&server, &["history", "--since", "2d"])
        .await
        .expect_code(2);
}

#[tokio::test]
async fn without_a_bucket_the_history_is_empty_not_an_error() {
    let server = NatsServer::start().await;
    let api = jetq(&server, &["history", "--json"]).await.ok_json();
    assert_eq!(api["exists"], false);
    assert_eq!(api["records"], Value::Array(Vec::new()));
    let dashboard = start_dashboard(&server, &[]).await;
    let page = http(&dashboard.url, "GET", "/history", &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("No metrics history yet"),
        "{}",
        page.body
    );
}
