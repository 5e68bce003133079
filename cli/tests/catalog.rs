//! `jetq catalog` and the dashboard's "Task types" against a real nats-server, with the catalog
//! written by a real worker (PROTOCOL.md §9): what a missing catalog prints, every type the worker
//! handles with its attempts, timeout and tracking, the `--queue` filter, `--json` (the entries
//! exactly as the contract reads them from the bucket), a value producers ignore listed apart.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use jetq_cli::dashboard::DashboardConfig;
use jetq_consumer::{TaskContext, Worker};
use jetq_contract::{catalog::CatalogEntry, Task, TaskOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A type its workers track.
#[derive(Debug, Serialize, Deserialize)]
struct Tracked {
    n: u64,
}

impl Task for Tracked {
    const NAME: &'static str = "tracked_job";
    const QUEUE: &'static str = "work";
    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(4)
            .timeout(Duration::from_secs(7))
            .track_status(true)
    }
}

/// A worker handling `Tracked`, `Job` (work: 3 attempts, 10 s) and `Email` (emails: defaults);
/// building it writes the catalog.
async fn catalog_worker(server: &NatsServer) -> Worker {
    worker(server)
        .handler(|_t: Tracked, _ctx: TaskContext| async move { ok() })
        .handler(|_j: Job, _ctx: TaskContext| async move { ok() })
        .handler(|_e: Email, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .expect("worker builds")
}

/// The entries of the catalog bucket as the contract reads them (what producers see).
async fn entries_in_bucket(server: &NatsServer) -> Vec<Value> {
    let js = raw_jetstream(server).await;
    let store = js
        .get_key_value("JETQ_CATALOG")
        .await
        .expect("catalog bucket");
    let mut entries = Vec::new();
    for key in ["emails.send_email", "work.job", "work.tracked_job"] {
        let value = store.get(key).await.unwrap().expect("entry written");
        let entry: CatalogEntry = serde_json::from_slice(&value).expect("an entry");
        entries.push(serde_json::to_value(entry).unwrap());
    }
    entries
}

fn keys(listing: &Value) -> Vec<String> {
    listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            format!(
                "{}.{}",
                e["queue"].as_str().unwrap(),
                e["task"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn jetq_catalog_lists_the_task_types_a_worker_published() {
    init_logs();
    let server = NatsServer::start().await;

    // Before any worker: no bucket is an answer, not an error.
    let none = jetq(&server, &["catalog"]).await;
    none.expect_code(0);
    assert!(
        none.stdout
            .contains("no task-type catalog yet (bucket JETQ_CATALOG)"),
        "{}",
        none.stdout
    );
    let none = jetq(&server, &["catalog", "--json"]).await.ok_json();
    assert_eq!(none["exists"], false);
    assert_eq!(none["entries"], serde_json::json!([]));
    let other = jetq_with(
        &server.url(),
        &[("JETQ_PREFIX", "my-app")],
        &["catalog", "--json"],
    )
    .await
    .ok_json();
    assert_eq!(
        other["bucket"], "MY_APP_CATALOG",
        "the bucket follows the prefix"
    );

    let started = SystemTime::now();
    let worker = catalog_worker(&server).await;
    let (stop, run) = spawn_worker(worker);

    let listing = jetq(&server, &["catalog", "--json"]).await.ok_json();
    assert_eq!(listing["bucket"], "JETQ_CATALOG");
    assert_eq!(listing["exists"], true);
    // Another prefix's catalog is another bucket: still none there.
    let other = jetq_with(
        &server.url(),
        &[("JETQ_PREFIX", "my-app")],
        &["catalog", "--json"],
    )
    .await
    .ok_json();
    assert_eq!(other["exists"], false);
    assert_eq!(
        keys(&listing),
        ["emails.send_email", "work.job", "work.tracked_job"],
        "every type, ordered by queue then task"
    );
    // Exactly what the contract reads from the bucket, field for field.
    assert_eq!(
        listing["entries"].as_array().unwrap(),
        &entries_in_bucket(&server).await
    );
    let tracked = &listing["entries"][2];
    assert_eq!(
        (
            &tracked["max_attempts"],
            &tracked["timeout_ms"],
            &tracked["tracked"]
        ),
        (&Value::from(4), &Value::from(7000), &Value::from(true))
    );
    let email = &listing["entries"][0];
    assert_eq!(
        (
            &email["max_attempts"],
            &email["timeout_ms"],
            &email["tracked"]
        ),
        (&Value::from(10), &Value::from(300_000), &Value::from(false)),
        "Email has the default options"
    );
    let written = jetq_contract::time::parse(tracked["updated_at"].as_str().unwrap())
        .expect("updated_at is a timestamp");
    assert!(
        written + Duration::from_secs(1) >= started,
        "written by this worker"
    );
    assert_eq!(listing["unreadable"], serde_json::json!([]));

    // The table: one row per type with its attempts, timeout, tracking and write time.
    let table = jetq(&server, &["catalog"]).await;
    table.expect_code(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["QUEUE", "TASK", "ATTEMPTS", "TIMEOUT", "TRACKED", "UPDATED", "AT"]
    );
    let row = |queue: &str, task: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().take(2).eq([queue, task]))
            .unwrap_or_else(|| panic!("no row for {queue}.{task} in\n{}", table.stdout));
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(
        row("work", "tracked_job"),
        [
            "work",
            "tracked_job",
            "4",
            "7s",
            "yes",
            tracked["updated_at"].as_str().unwrap()
        ]
    );
    assert_eq!(row("work", "job")[2..5], ["3", "10s", "no"]);
    assert_eq!(row("emails", "send_email")[2..5], ["10", "5m", "no"]);
    assert_eq!(lines.len(), 4, "a header and three rows:\n{}", table.stdout);

    // --queue: only that queue's types.
    let work = jetq(&server, &["catalog", "--queue", "work", "--json"])
        .await
        .ok_json();
    assert_eq!(keys(&work), ["work.job", "work.tracked_job"]);
    let emails = jetq(&server, &["catalog", "--queue", "emails"]).await;
    emails.expect_code(0);
    assert!(emails.stdout.contains("send_email") && !emails.stdout.contains("tracked_job"));
    let nobody = jetq(&server, &["catalog", "--queue", "nobody"]).await;
    nobody.expect_code(0);
    assert!(nobody
        .stdout
        .contains("no task types of queue nobody in the catalog"));
    jetq(&server, &["catalog", "--queue", "bad.name"])
        .await
        .expect_code(2);

    // A value producers ignore is listed apart with the reason, not as a type.
    let js = raw_jetstream(&server).await;
    let store = js.get_key_value("JETQ_CATALOG").await.unwrap();
    store.put("work.broken", "{not json".into()).await.unwrap();
    store
        .put("work.half", r#"{"queue":"work","task":"half"}"#.into())
        .await
        .unwrap();
    let listing = jetq(&server, &["catalog", "--json"]).await.ok_json();
    assert_eq!(
        keys(&listing),
        ["emails.send_email", "work.job", "work.tracked_job"]
    );
    let unreadable = listing["unreadable"].as_array().unwrap();
    assert_eq!(
        unreadable
            .iter()
            .map(|u| u["key"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["work.broken", "work.half"]
    );
    assert!(
        unreadable[1]["error"]
            .as_str()
            .unwrap()
            .contains("missing field"),
        "{unreadable:?}"
    );
    let table = jetq(&server, &["catalog", "--queue", "work"]).await;
    table.expect_code(0);
    assert!(
        table
            .stdout
            .contains("not task types (producers ignore them):\n  work.broken: "),
        "{}",
        table.stdout
    );

    stop_worker(stop, run).await;
}

async fn serve_in_process(
    server: &NatsServer,
    token: Option<&str>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = DashboardConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_owned),
        ..DashboardConfig::default()
    };
    let dashboard = jetq_cli::dashboard::Dashboard::bind(admin(server).await, config)
        .await
        .expect("dashboard binds");
    let addr = dashboard.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dashboard.serve(async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), stop)
}

#[tokio::test]
async fn the_dashboard_shows_the_task_types() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10)]).await;
    let (base, _stop) = serve_in_process(&server, Some("s3cret")).await;
    let bearer = [("Authorization", "Bearer s3cret")];
    assert_eq!(
        http(&base, "GET", "/api/catalog", &[]).await.status,
        401,
        "the catalog needs the token like everything else"
    );

    let page = http(&base, "GET", "/catalog", &bearer).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("No task-type catalog yet"),
        "{}",
        page.body
    );
    assert_eq!(
        http(&base, "GET", "/api/catalog", &bearer).await.json()["exists"],
        false
    );

    let worker = catalog_worker(&server).await;
    let (stop, run) = spawn_worker(worker);
    let api = http(&base, "GET", "/api/catalog", &bearer).await;
    assert_eq!(api.status, 200);
    // The same listing as `jetq catalog --json`.
    let cli = jetq(&server, &["catalog", "--json"]).await.ok_json();
    assert_eq!(api.json(), cli);
    assert_eq!(
        keys(&cli),
        ["emails.send_email", "work.job", "work.tracked_job"]
    );

    let page = http(&base, "GET", "/catalog", &bearer).await;
    assert_eq!(page.status, 200);
    assert!(page
        .body
        .contains("<section id=\"catalog\"><h2>Task types</h2>"));
    let updated = cli["entries"][2]["updated_at"].as_str().unwrap();
    let tracked_row = format!(
        "<tr><td>work</td><td>tracked_job</td><td class=\"num\">4</td><td class=\"num\">7s</td>\
         <td><span class=\"badge\">tracked</span></td><td>{updated}</td></tr>"
    );
    assert!(page.body.contains(&tracked_row), "{}", page.body);
    assert!(page.body.contains(
        "<tr><td>work</td><td>job</td><td class=\"num\">3</td><td class=\"num\">10s</td><td>no</td>"
    ));
    assert!(page
        .body
        .contains("<td>emails</td><td>send_email</td><td class=\"num\">10</td>"));
    stop_worker(stop, run).await;
}
