//! The console's bulk Cancel (issue 24) over HTTP against a real nats-server: the dry-run count
//! of the Tasks page's filter, the background job with its progress and result, the page that
//! shows it, refusals to a read-only token and to a request without the console's header.

mod common;

use std::time::Duration;

use common::*;
use jetq_cli::dashboard::DashboardConfig;
use serde_json::Value;

const ADMIN: &str = "admin-s3cret";
const VIEWER: &str = "viewer-s3cret";

async fn serve(server: &NatsServer) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = DashboardConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(ADMIN.into()),
        read_only_token: Some(VIEWER.into()),
        sample_every: Duration::from_millis(200),
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

async fn wait_job(base: &str, auth: &str, id: &str) -> Value {
    eventually(WAIT, &format!("job {id} to finish"), || async move {
        let job = http(
            base,
            "GET",
            &format!("/api/jobs/{id}"),
            &[("Authorization", auth)],
        )
        .await
        .json();
        (job["state"] != "running").then_some(job)
    })
    .await
}

#[tokio::test]
async fn bulk_cancel_counts_runs_as_a_job_and_shows_its_result() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 1000)]).await;
    let producer = producer(&server).await;
    for n in 0..30 {
        producer
            .enqueue(&Job {
                n,
                note: String::new(),
            })
            .await
            .unwrap();
    }
    producer
        .enqueue_in(
            Duration::from_secs(3600),
            &Job {
                n: 99,
                note: String::new(),
            },
        )
        .await
        .unwrap();
    let (base, _stop) = serve(&server).await;
    let admin_auth = format!("Bearer {ADMIN}");
    let viewer = format!("Bearer {VIEWER}");
    let view = [("Authorization", viewer.as_str())];
    let change = [
        ("Authorization", admin_auth.as_str()),
        ("X-Jetq-Request", "1"),
    ];

    // The button is there for an admin on a cancellable tab, not for the viewer or on Dead.
    let page = http(
        &base,
        "GET",
        "/tasks?state=pending&queue=work",
        &[("Authorization", admin_auth.as_str())],
    )
    .await;
    assert!(page.body.contains("data-bulk=\"cancel\""), "{}", page.body);
    assert!(
        page.body
            .contains("data-filter=\"state=pending&amp;queue=work\""),
        "{}",
        page.body
    );
    let page = http(&base, "GET", "/tasks?state=pending&queue=work", &view).await;
    assert!(!page.body.contains("data-bulk="), "no button for a viewer");
    let page = http(
        &base,
        "GET",
        "/tasks?state=dead",
        &[("Authorization", admin_auth.as_str())],
    )
    .await;
    assert!(
        !page.body.contains("data-bulk="),
        "no bulk cancel of dead letters"
    );

    // The dry run: counted by state (a viewer may count), nothing changes.
    let count = http(
        &base,
        "GET",
        "/api/tasks/count?state=pending&queue=work",
        &view,
    )
    .await;
    assert_eq!(count.status, 200, "{}", count.body);
    let count = count.json();
    assert_eq!(count["count"], 30, "{count}");
    assert_eq!(count["by_state"]["pending"], 30, "{count}");
    assert_eq!(count["filter"], "queue=work, state=pending");
    let all = http(&base, "GET", "/api/tasks/count?queue=work", &view)
        .await
        .json();
    assert_eq!(
        all["count"], 31,
        "every cancellable state by default: {all}"
    );
    let dead = http(&base, "GET", "/api/tasks/count?state=dead", &view).await;
    assert_eq!(dead.status, 400, "{}", dead.body);

    // Refused to the viewer, and without the console's header.
    let start = "/api/tasks/bulk-cancel?state=pending&queue=work&expected=30";
    let refused = http(
        &base,
        "POST",
        start,
        &[("Authorization", viewer.as_str()), ("X-Jetq-Request", "1")],
    )
    .await;
    assert_eq!(refused.status, 403);
    let refused = http(
        &base,
        "POST",
        start,
        &[("Authorization", admin_auth.as_str())],
    )
    .await;
    assert_eq!(refused.status, 403);
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 30);

    // The job: accepted, followed to its end, every pending task cancelled.
    let started = http(&base, "POST", start, &change).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let started = started.json();
    assert_eq!(started["action"], "cancel");
    assert_eq!(started["filter"], "queue=work, state=pending");
    let id = started["id"].as_str().unwrap().to_owned();
    let job = wait_job(&base, &admin_auth, &id).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["succeeded"], 30, "{job}");
    assert_eq!(job["failed"], 0, "{job}");
    assert_eq!(job["processed"], 30, "{job}");
    assert_eq!(job["expected"], 30, "{job}");
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 0, "none left to run");
    assert_eq!(
        stream_len(&js, "JETQ_DELAYED").await,
        1,
        "the delayed one was not chosen"
    );
    // The page opened on the job shows its result.
    let page = http(
        &base,
        "GET",
        &format!("/tasks?state=pending&queue=work&job={id}"),
        &[("Authorization", admin_auth.as_str())],
    )
    .await;
    assert!(
        page.body.contains("Cancel done: 30 done, 0 failed"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"no-tasks\""), "{}", page.body);
    let jobs = http(&base, "GET", "/api/jobs", &view).await.json();
    assert_eq!(jobs[0]["id"], id.as_str());

    // The delayed one by its own tab's filter.
    let started = http(
        &base,
        "POST",
        "/api/tasks/bulk-cancel?state=delayed&expected=1",
        &change,
    )
    .await
    .json();
    let job = wait_job(&base, &admin_auth, started["id"].as_str().unwrap()).await;
    assert_eq!(job["succeeded"], 1, "{job}");
    assert_eq!(stream_len(&js, "JETQ_DELAYED").await, 0);
}
