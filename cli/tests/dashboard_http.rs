//! The dashboard's HTTP surface against a real nats-server: token (bearer and basic), read-only
//! mode, POST-only changes with the dashboard's own header, exact counts in its JSON.

mod common;

use base64::Engine;
use common::*;
use jetq_cli::{dashboard::DashboardConfig, dead::replay_id};
use jetq_contract::headers;

async fn serve_in_process(
    server: &NatsServer,
    config: DashboardConfig,
) -> (String, tokio::sync::oneshot::Sender<()>) {
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

fn config(token: Option<&str>, read_only: bool) -> DashboardConfig {
    DashboardConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_owned),
        read_only,
        ..DashboardConfig::default()
    }
}

#[tokio::test]
async fn every_endpoint_needs_the_token_and_changes_need_post_and_the_dashboard_header() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 50)]).await;
    let js = raw_jetstream(&server).await;
    let first = write_dead(&js, &Letter::new("work", "job", "w1")).await;
    let second = write_dead(&js, &Letter::new("work", "job", "w2")).await;
    let (base, _stop) = serve_in_process(&server, config(Some("s3cret"), false)).await;
    let bearer = [("Authorization", "Bearer s3cret")];

    let health = http(&base, "GET", "/healthz", &[]).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    let anonymous = http(&base, "GET", "/", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic"));
    assert!(anonymous.body.contains("Authentication required"));
    assert_eq!(
        http(
            &base,
            "GET",
            "/api/overview",
            &[("Authorization", "Bearer wrong")]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        http(
            &base,
            "POST",
            &format!("/api/dead/{first}/replay"),
            &[("X-Jetq-Request", "1")]
        )
        .await
        .status,
        401
    );

    let overview = http(&base, "GET", "/api/overview", &bearer).await;
    assert_eq!(overview.status, 200);
    let body = overview.json();
    let work = &body["overview"]["queues"][0];
    assert_eq!(work["queue"], "work");
    assert_eq!(work["dead"], 2);
    assert_eq!(work["max_in_flight"], 50);
    assert_eq!(body["read_only"], false);

    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ops:s3cret")
    );
    let page = http(&base, "GET", "/dead", &[("Authorization", &basic)]).await;
    assert_eq!(page.status, 200);
    assert!(page
        .body
        .contains(&format!("data-action=\"replay\" data-seq=\"{first}\"")));
    assert!(
        !page.body.contains("src=\"http") && !page.body.contains("href=\"http"),
        "no external resources"
    );

    let dead = http(&base, "GET", "/api/dead?queue=work", &bearer)
        .await
        .json();
    assert_eq!(dead["total"], 2);
    let one = http(&base, "GET", &format!("/api/dead/{second}"), &bearer)
        .await
        .json();
    assert_eq!(one["task_id"], "w2");

    // Changes: not by GET, not without the dashboard's header, not from another origin.
    let path = format!("/api/dead/{first}/replay");
    assert_eq!(http(&base, "GET", &path, &bearer).await.status, 405);
    assert_eq!(http(&base, "POST", &path, &bearer).await.status, 403);
    let cross = http(
        &base,
        "POST",
        &path,
        &[
            ("Authorization", "Bearer s3cret"),
            ("X-Jetq-Request", "1"),
            ("Origin", "http://evil.example"),
        ],
    )
    .await;
    assert_eq!(cross.status, 403);
    assert_eq!(dead_sequences(&js).await, [first, second]);

    let replayed = http(
        &base,
        "POST",
        &path,
        &[("Authorization", "Bearer s3cret"), ("X-Jetq-Request", "1")],
    )
    .await;
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(
        replayed.json()["items"][0]["new_id"],
        replay_id(first, "w1").as_str()
    );
    assert_eq!(dead_sequences(&js).await, [second]);
    let tasks = task_messages(&js).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        required_header(&tasks[0], headers::MSG_ID),
        replay_id(first, "w1")
    );

    let discarded = http(
        &base,
        "POST",
        &format!("/api/dead/{second}/discard"),
        &[("Authorization", &basic), ("X-Jetq-Request", "1")],
    )
    .await;
    assert_eq!(discarded.status, 200, "{}", discarded.body);
    assert!(dead_sequences(&js).await.is_empty());
    assert_eq!(
        task_messages(&js).await.len(),
        1,
        "a discard enqueues nothing"
    );

    let gone = http(
        &base,
        "POST",
        &format!("/api/dead/{second}/replay"),
        &[("Authorization", "Bearer s3cret"), ("X-Jetq-Request", "1")],
    )
    .await;
    assert_eq!(gone.status, 404);

    // Status: a task without a record is 404 (JSON and page); a tracked one shows its record.
    let unknown = http(&base, "GET", "/api/status/01JABC", &bearer).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.body.contains("track_status"), "{}", unknown.body);
    assert_eq!(
        http(&base, "GET", "/status?id=01JABC", &bearer)
            .await
            .status,
        404
    );
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Tracked {
        n: u32,
    }
    impl jetq_contract::Task for Tracked {
        const NAME: &'static str = "tracked";
        fn options() -> jetq_contract::TaskOptions {
            jetq_contract::TaskOptions::default().track_status(true)
        }
    }
    let enqueued = producer(&server)
        .await
        .enqueue(&Tracked { n: 1 })
        .await
        .unwrap();
    let record = http(
        &base,
        "GET",
        &format!("/api/status/{}", enqueued.id),
        &bearer,
    )
    .await;
    assert_eq!(record.status, 200, "{}", record.body);
    assert_eq!(record.json()["state"], "queued");
    assert_eq!(record.json()["task"], "tracked");
    let page = http(
        &base,
        "GET",
        &format!("/status?id={}", enqueued.id),
        &bearer,
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("queued") && page.body.contains(&enqueued.id));
    assert_eq!(
        http(&base, "GET", "/api/schedules", &bearer).await.status,
        404
    );
}

#[tokio::test]
async fn a_read_only_dashboard_shows_but_refuses_every_change() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10)]).await;
    let js = raw_jetstream(&server).await;
    let seq = write_dead(&js, &Letter::new("work", "job", "w1")).await;
    let (base, _stop) = serve_in_process(&server, config(None, true)).await;

    let page = http(&base, "GET", "/dead", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("read-only"));
    assert!(page.body.contains(&format!("id=\"dead-{seq}\"")));
    assert!(
        !page.body.contains("data-action=\"replay\""),
        "no buttons when read-only"
    );
    assert!(
        !page.body.contains("data-release="),
        "no release buttons when read-only"
    );
    for path in [
        format!("/api/dead/{seq}/replay"),
        format!("/api/dead/{seq}/discard"),
        "/api/limits/release?entry=work.job.k".to_owned(),
    ] {
        let refused = http(&base, "POST", &path, &[("X-Jetq-Request", "1")]).await;
        assert_eq!(refused.status, 403);
        assert!(refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("read-only"));
    }
    assert_eq!(dead_sequences(&js).await, [seq]);
}

#[tokio::test]
async fn the_dashboard_binary_refuses_a_public_address_without_a_token() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[]).await;
    let refused = jetq(&server, &["dashboard", "--listen", "0.0.0.0:0"]).await;
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("without a token"),
        "{}",
        refused.stderr
    );

    // On loopback it serves (and prints where).
    let dashboard = start_dashboard(&server, &["--read-only"]).await;
    let health = http(&dashboard.url, "GET", "/healthz", &[]).await;
    assert_eq!(health.status, 200);
}

/// The Limits view (issue 21 part 6): a real worker's concurrency slot and rate bucket and a
/// real producer's unique key are listed on the page and by `GET /api/limits` (the JSON of
/// `jetq limits --json`); `POST /api/limits/release` deletes the unique key from KV, guarded as
/// replay and discard are.
#[tokio::test]
async fn the_limits_view_lists_what_holds_and_releases_a_unique_key_by_post() {
    use jetq_consumer::{ConcurrencyLimit, Limits, RateLimit, TaskContext};
    use jetq_producer::{EnqueueOptions, Unique};
    init_logs();
    let server = NatsServer::start().await;
    let (running_tx, mut running) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let worker = worker(&server)
        .handler(move |job: Job, _ctx: TaskContext| {
            let running_tx = running_tx.clone();
            async move {
                running_tx.send(job.n).ok();
                // Holds its slot while the test looks (the worker is dropped with the test).
                tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                ok()
            }
        })
        .limits::<Job>(
            Limits::new()
                .rate(RateLimit::new(50.0, 10).unwrap())
                .concurrency(ConcurrencyLimit::new(2).unwrap()),
        )
        .build()
        .await
        .unwrap();
    let (_stop_worker, _run) = spawn_worker(worker);
    let held = producer(&server)
        .await
        .enqueue_with(
            &Job {
                n: 1,
                note: String::new(),
            },
            EnqueueOptions::new().unique(Unique::key("export:acme")),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut running, "the task to run").await, 1);
    let (base, _stop) = serve_in_process(&server, config(Some("s3cret"), false)).await;
    let bearer = [("Authorization", "Bearer s3cret")];
    let unique_entry = "work.job.export=3Aacme";

    assert_eq!(http(&base, "GET", "/api/limits", &[]).await.status, 401);
    let listed = http(&base, "GET", "/api/limits", &bearer).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let api = listed.json();
    assert_eq!(api["configured"][0]["rate"], 50.0);
    assert_eq!(api["configured"][0]["burst"], 10);
    assert_eq!(api["configured"][0]["concurrency"], 2);
    assert_eq!(api["rates"][0]["entry"], "rate.work.job");
    assert!(api["rates"][0]["next_free_at"].is_string(), "{api:#}");
    let slots = &api["concurrency"][0];
    assert_eq!(slots["entry"], "conc.work.job");
    assert_eq!(slots["running"].as_array().unwrap().len(), 1, "{api:#}");
    assert_eq!(
        slots["running"][0][1],
        held.id.as_str(),
        "the running task holds the slot"
    );
    let unique = &api["unique"][0];
    assert_eq!(unique["entry"], unique_entry);
    assert_eq!(unique["key"], "export:acme");
    assert_eq!(unique["hold"]["task_id"], held.id.as_str());
    assert_eq!(unique["hold"]["scope"], "active");
    // The same reading as `jetq limits`.
    let cli = admin(&server).await.limits().await.unwrap();
    assert_eq!(api["unique"], serde_json::to_value(&cli.unique).unwrap());
    assert_eq!(
        api["configured"],
        serde_json::to_value(&cli.configured).unwrap()
    );

    let page = http(&base, "GET", "/limits", &bearer).await;
    assert_eq!(page.status, 200);
    for shown in [
        "id=\"limits\"",
        "export:acme",
        held.id.as_str(),
        "50/s",
        "data-release=\"conc.work.job\"",
        "data-release=\"rate.work.job\"",
        "data-release=\"work.job.export=3Aacme\"",
    ] {
        assert!(
            page.body.contains(shown),
            "the page lacks {shown}: {}",
            page.body
        );
    }

    // A release is a change: POST only, the token, the dashboard's header, its own origin.
    let path = "/api/limits/release?entry=work.job.export%3D3Aacme";
    let js = raw_jetstream(&server).await;
    let kv = js.get_key_value("JETQ_UNIQUE").await.unwrap();
    assert_eq!(
        http(&base, "POST", path, &[("X-Jetq-Request", "1")])
            .await
            .status,
        401
    );
    assert_eq!(http(&base, "GET", path, &bearer).await.status, 405);
    assert_eq!(http(&base, "POST", path, &bearer).await.status, 403);
    let cross = http(
        &base,
        "POST",
        path,
        &[
            ("Authorization", "Bearer s3cret"),
            ("X-Jetq-Request", "1"),
            ("Origin", "http://evil.example"),
        ],
    )
    .await;
    assert_eq!(cross.status, 403);
    assert!(kv.get(unique_entry).await.unwrap().is_some(), "still held");

    let change = [("Authorization", "Bearer s3cret"), ("X-Jetq-Request", "1")];
    let released = http(&base, "POST", path, &change).await;
    assert_eq!(released.status, 200, "{}", released.body);
    assert_eq!(released.json()["released"], unique_entry);
    assert_eq!(released.json()["bucket"], "JETQ_UNIQUE");
    assert!(
        kv.get(unique_entry).await.unwrap().is_none(),
        "gone from KV"
    );
    assert_eq!(http(&base, "POST", path, &change).await.status, 404);
    assert_eq!(
        http(&base, "POST", "/api/limits/release", &change)
            .await
            .status,
        400
    );
    let api = http(&base, "GET", "/api/limits", &bearer).await.json();
    assert_eq!(api["unique"], serde_json::json!([]));
    assert_eq!(api["concurrency"][0]["running"][0][1], held.id.as_str());
    let page = http(&base, "GET", "/limits", &bearer).await;
    assert!(!page.body.contains("export:acme"));
}
