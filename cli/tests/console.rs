//! The operator console (issue 24) over HTTP against a real nats-server: every page for an
//! admin and a read-only token, every change refused to the read-only one; the dead-letter count
//! of the header equal to the queue table's; paged and filtered dead letters; the detail page's
//! headers wrapped; queue latency and pause/resume; bulk retry/discard as background jobs with a
//! dry-run count, progress and result.
//!
//! The scale figures of docs/CONSOLE.md come from `a_console_over_many_dead_letters_stays_fast`:
//! 2,000 letters by default (CI), `JETQ_CONSOLE_SCALE=100000` for the documented run.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jetq_cli::dashboard::DashboardConfig;
use jetq_contract::DeadReason;
use serde_json::Value;

const ADMIN: &str = "admin-s3cret";
const VIEWER: &str = "viewer-s3cret";

async fn serve(
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

fn config() -> DashboardConfig {
    DashboardConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(ADMIN.into()),
        read_only_token: Some(VIEWER.into()),
        sample_every: Duration::from_millis(200),
        ..DashboardConfig::default()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The number in the navigation's dead-letter badge.
fn nav_dead(html: &str) -> u64 {
    let start = html
        .find("id=\"nav-dead\"")
        .expect("the page has the dead-letter badge");
    let rest = &html[start..];
    let text = &rest[rest.find('>').unwrap() + 1..rest.find('<').unwrap()];
    text.replace(',', "").trim().parse().unwrap()
}

/// The dead-letter page's "matching this filter" number.
fn matching(html: &str) -> u64 {
    let start = html
        .find("id=\"dead-matching\"")
        .expect("the page has the matching count");
    let rest = &html[start..];
    let text = &rest[rest.find('>').unwrap() + 1..rest.find('<').unwrap()];
    text.replace(',', "").trim().parse().unwrap()
}

/// The sum of the queue table's Dead column.
fn table_dead(html: &str) -> u64 {
    html.match_indices("data-field=\"dead\">")
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            let rest = rest
                .strip_prefix("<a")
                .map_or(rest, |r| &r[r.find('>').unwrap() + 1..]);
            rest[..rest.find('<').unwrap()]
                .replace(',', "")
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

async fn wait_job(base: &str, id: &str) -> Value {
    let auth = bearer(ADMIN);
    eventually(
        Duration::from_secs(600),
        &format!("job {id} to finish"),
        || {
            let auth = auth.clone();
            async move {
                let job = http(
                    base,
                    "GET",
                    &format!("/api/jobs/{id}"),
                    &[("Authorization", &auth)],
                )
                .await
                .json();
                (job["state"] != "running").then_some(job)
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_read_only_token_sees_every_page_and_is_refused_every_change() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10)]).await;
    let js = raw_jetstream(&server).await;
    let seq = write_dead(&js, &Letter::new("work", "job", "w1")).await;
    let (base, _stop) = serve(&server, config()).await;
    let viewer = bearer(VIEWER);
    let admin_auth = bearer(ADMIN);

    for path in [
        "/".to_owned(),
        "/queues".to_owned(),
        "/dead".to_owned(),
        "/dead?queue=work&reason=exhausted&older_than=1s".to_owned(),
        format!("/dead/{seq}"),
        "/limits".to_owned(),
        "/catalog".to_owned(),
        "/schedules".to_owned(),
        "/tasks".to_owned(),
        "/tasks?state=dead&queue=work".to_owned(),
        "/tasks/w1".to_owned(),
        "/workers".to_owned(),
        "/api/tasks?state=dead".to_owned(),
        "/api/workers".to_owned(),
        "/api/overview".to_owned(),
        "/api/queues".to_owned(),
        "/api/dead".to_owned(),
        "/api/dead/count?queue=work".to_owned(),
        format!("/api/dead/{seq}"),
        "/api/jobs".to_owned(),
        "/api/limits".to_owned(),
        "/api/catalog".to_owned(),
    ] {
        let page = http(&base, "GET", &path, &[("Authorization", &viewer)]).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        if !path.starts_with("/api") {
            assert!(
                page.body.contains("id=\"read-only\""),
                "{path}: no read-only badge"
            );
            for button in [
                "data-action=",
                "data-bulk=",
                "data-queue-action=",
                "data-release=",
                "data-cancel=",
                "data-schedule-action=",
            ] {
                assert!(
                    !page.body.contains(button),
                    "{path}: a read-only page shows {button}"
                );
            }
            assert!(
                !page.body.contains("src=\"http") && !page.body.contains("href=\"http"),
                "{path}: no external resources"
            );
            let admin_page = http(&base, "GET", &path, &[("Authorization", &admin_auth)]).await;
            assert_eq!(admin_page.status, 200, "{path}");
            assert!(!admin_page.body.contains("id=\"read-only\""), "{path}");
        }
    }
    let whoami = http(&base, "GET", "/api/whoami", &[("Authorization", &viewer)])
        .await
        .json();
    assert_eq!(whoami["role"], "read-only");
    assert_eq!(whoami["can_act"], false);

    let changes = [
        format!("/api/dead/{seq}/replay"),
        format!("/api/dead/{seq}/discard"),
        "/api/dead/bulk?action=discard".to_owned(),
        "/api/dead/bulk?action=replay&queue=work".to_owned(),
        "/api/queues/work/pause".to_owned(),
        "/api/queues/work/resume".to_owned(),
        "/api/limits/release?entry=work.job.k".to_owned(),
        "/api/tasks/w1/cancel".to_owned(),
        "/api/schedules/nightly/pause".to_owned(),
        "/api/schedules/nightly/run".to_owned(),
    ];
    for path in &changes {
        let refused = http(
            &base,
            "POST",
            path,
            &[("Authorization", &viewer), ("X-Jetq-Request", "1")],
        )
        .await;
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
        assert!(
            refused.json()["error"]
                .as_str()
                .unwrap()
                .contains("read-only"),
            "{path}"
        );
        // Without the console's header even the admin token is refused (CSRF).
        let forged = http(&base, "POST", path, &[("Authorization", &admin_auth)]).await;
        assert_eq!(forged.status, 403, "{path}");
        let anonymous = http(&base, "POST", path, &[("X-Jetq-Request", "1")]).await;
        assert_eq!(anonymous.status, 401, "{path}");
    }
    assert_eq!(dead_sequences(&js).await, [seq], "nothing changed");
    let overview = admin(&server).await.queue_stats("work").await.unwrap();
    assert!(!overview.paused);

    // The admin token may (pause, then resume, as `jetq pause/resume`).
    let change = [
        ("Authorization", admin_auth.as_str()),
        ("X-Jetq-Request", "1"),
    ];
    let paused = http(&base, "POST", "/api/queues/work/pause", &change).await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.json()["paused"], true);
    assert!(
        admin(&server)
            .await
            .queue_stats("work")
            .await
            .unwrap()
            .paused
    );
    let page = http(&base, "GET", "/queues", &[("Authorization", &admin_auth)]).await;
    assert!(
        page.body.contains(">paused<") || page.body.contains(">paused until"),
        "{}",
        page.body
    );
    let resumed = http(&base, "POST", "/api/queues/work/resume", &change).await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert!(
        !admin(&server)
            .await
            .queue_stats("work")
            .await
            .unwrap()
            .paused
    );
}

#[tokio::test]
async fn the_header_count_of_dead_letters_is_the_queue_tables_sum() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10), ("emails", 10)]).await;
    let js = raw_jetstream(&server).await;
    write_dead_many(&js, "work", "job", "a", 37).await;
    write_dead_many(&js, "emails", "send_email", "b", 5).await;
    let (base, _stop) = serve(&server, config()).await;
    let auth = [("Authorization", bearer(ADMIN))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();

    for path in ["/", "/queues"] {
        let page = http(&base, "GET", path, &auth).await;
        assert_eq!(page.status, 200);
        assert_eq!(nav_dead(&page.body), 42, "{path}");
        assert_eq!(table_dead(&page.body), 42, "{path}");
    }
    let dead = http(&base, "GET", "/dead", &auth).await;
    assert_eq!(nav_dead(&dead.body), 42);
    assert_eq!(matching(&dead.body), 42);

    // More letters arrive: the header and the table move together (one sample).
    write_dead_many(&js, "work", "job", "c", 8).await;
    let overview = eventually(WAIT, "a sample with the new letters", || {
        let base = base.clone();
        let auth = auth.clone();
        async move {
            let body = http(&base, "GET", "/api/overview", &auth).await.json();
            (body["overview"]["dead_total"] == 50).then_some(body)
        }
    })
    .await;
    let sum: u64 = overview["overview"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["dead"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 50);
    let page = http(&base, "GET", "/", &auth).await;
    assert_eq!(nav_dead(&page.body), table_dead(&page.body));
    let work = http(&base, "GET", "/dead?queue=work", &auth).await;
    assert_eq!(matching(&work.body), 45);
}

#[tokio::test]
async fn dead_letters_page_by_sequence_filter_and_show_their_failure_wrapped() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10)]).await;
    let js = raw_jetstream(&server).await;
    let seqs = write_dead_many(&js, "work", "job", "p", 120).await;
    let long_error = format!("final attempt 3: {}", "upstream said no; ".repeat(300));
    let fatal = write_dead(
        &js,
        &Letter {
            reason: DeadReason::Fatal,
            error: &long_error,
            ..Letter::new("work", "job", "01JFATAL")
        },
    )
    .await;
    let (base, _stop) = serve(&server, config()).await;
    let auth = bearer(VIEWER);
    let auth = [("Authorization", auth.as_str())];

    let first = http(&base, "GET", "/api/dead?limit=50", &auth).await.json();
    assert_eq!(first["total"], 121);
    assert_eq!(first["shown"], 50);
    assert_eq!(first["dead_letters"][0]["sequence"], seqs[0]);
    assert_eq!(first["next_after"], seqs[49]);
    let second = http(
        &base,
        "GET",
        &format!("/api/dead?limit=50&after={}", seqs[49]),
        &auth,
    )
    .await
    .json();
    assert_eq!(second["dead_letters"][0]["sequence"], seqs[50]);
    let last = http(
        &base,
        "GET",
        &format!("/api/dead?limit=50&after={}", seqs[99]),
        &auth,
    )
    .await
    .json();
    assert_eq!(last["shown"], 21);
    assert_eq!(last["next_after"], Value::Null);

    // The page: 50 rows and a link to the next 50, from the same sequence.
    let page = http(&base, "GET", "/dead?queue=work", &auth).await;
    assert_eq!(page.body.matches("<tr id=\"dead-").count(), 50);
    assert!(
        page.body.contains(&format!("after={}", seqs[49])),
        "next-page link"
    );
    let filtered = http(&base, "GET", "/dead?reason=fatal", &auth).await;
    assert_eq!(filtered.body.matches("<tr id=\"dead-").count(), 1);
    assert!(filtered.body.contains(&format!("id=\"dead-{fatal}\"")));
    let count = http(&base, "GET", "/api/dead/count?reason=fatal", &auth)
        .await
        .json();
    assert_eq!(count["count"], 1);
    assert_eq!(count["counted_by_server"], false);
    let young = http(&base, "GET", "/api/dead/count?older_than=1h", &auth)
        .await
        .json();
    assert_eq!(young["count"], 0, "every letter is younger than an hour");
    let bad = http(&base, "GET", "/dead?older_than=soon", &auth).await;
    assert_eq!(bad.status, 200);
    assert!(bad.body.contains("id=\"dead-error\""));

    // The detail page: Jetq-Failure pretty-printed in a wrapping block, not one long line.
    let detail = http(&base, "GET", &format!("/dead/{fatal}"), &auth).await;
    assert_eq!(detail.status, 200);
    let failure = detail
        .body
        .split("<code>Jetq-Failure</code>")
        .nth(1)
        .expect("the Jetq-Failure header is shown");
    assert!(
        failure.contains("<pre class=\"header-json\">{\n"),
        "{failure:.300}"
    );
    assert!(
        failure.contains("&quot;reason&quot;: &quot;fatal&quot;"),
        "{failure:.300}"
    );
    assert_eq!(http(&base, "GET", "/dead/999999", &auth).await.status, 404);
}

#[tokio::test]
async fn queue_latency_is_the_age_of_the_oldest_pending_task() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10), ("idle", 10)]).await;
    let producer = producer(&server).await;
    let before = std::time::SystemTime::now();
    producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    let_time_pass(Duration::from_millis(300)).await;
    producer
        .enqueue(&Job {
            n: 2,
            note: String::new(),
        })
        .await
        .unwrap();
    let (base, _stop) = serve(&server, config()).await;
    let auth = bearer(VIEWER);
    let auth = [("Authorization", auth.as_str())];
    let api = http(&base, "GET", "/api/queues", &auth).await.json();
    let queues = api["queues"].as_array().unwrap();
    let work = queues.iter().find(|q| q["queue"] == "work").unwrap();
    assert!(work["latency_ms"].as_u64().unwrap() >= 300, "{work}");
    let oldest = jetq_contract::time::parse(work["oldest_pending_at"].as_str().unwrap()).unwrap();
    assert!(
        oldest + Duration::from_millis(5) >= before
            && oldest <= before + Duration::from_millis(250),
        "the first task's time"
    );
    let idle = queues.iter().find(|q| q["queue"] == "idle").unwrap();
    assert_eq!(idle["latency_ms"], 0);
    assert_eq!(idle["oldest_pending_at"], Value::Null);
    let page = http(&base, "GET", "/queues", &auth).await;
    assert!(page.body.contains("data-field=\"latency\""));
}

/// Fills the dead-letter stream with `count` letters of `work.job`, fast (pipelined raw
/// publishes, as a worker writes them).
async fn fill(js: &async_nats::jetstream::Context, prefix: &str, count: usize) -> Vec<u64> {
    let started = Instant::now();
    let mut seqs = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(10_000) {
        let n = (count - chunk * 10_000).min(10_000);
        seqs.extend(write_dead_many(js, "work", "job", &format!("{prefix}{chunk}"), n).await);
    }
    eprintln!(
        "filled {count} dead letters in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    seqs
}

/// The median of five timed GETs, in milliseconds.
async fn page_ms(base: &str, path: &str, auth: &[(&str, &str)]) -> f64 {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let page = http(base, "GET", path, auth).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times[2]
}

#[tokio::test]
async fn a_console_over_many_dead_letters_stays_fast() {
    init_logs();
    let count: usize = std::env::var("JETQ_CONSOLE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10)]).await;
    let js = raw_jetstream(&server).await;
    let seqs = fill(&js, "s", count).await;
    let (base, _stop) = serve(&server, config()).await;
    let auth = bearer(ADMIN);
    let auth = [("Authorization", auth.as_str())];
    let change = [("Authorization", auth[0].1), ("X-Jetq-Request", "1")];
    let mut figures = serde_json::Map::new();
    figures.insert("dead_letters".into(), count.into());

    figures.insert(
        "page_first_ms".into(),
        page_ms(&base, "/dead", &auth).await.into(),
    );
    figures.insert(
        "page_deep_ms".into(),
        page_ms(&base, &format!("/dead?after={}", seqs[count / 2]), &auth)
            .await
            .into(),
    );
    figures.insert(
        "page_queue_filter_ms".into(),
        page_ms(&base, "/dead?queue=work&task=job", &auth)
            .await
            .into(),
    );
    figures.insert(
        "page_reason_filter_ms".into(),
        page_ms(&base, "/dead?reason=exhausted", &auth).await.into(),
    );
    figures.insert(
        "overview_ms".into(),
        page_ms(&base, "/", &auth).await.into(),
    );
    figures.insert(
        "queues_ms".into(),
        page_ms(&base, "/queues", &auth).await.into(),
    );
    let started = Instant::now();
    let counted = http(&base, "GET", "/api/dead/count?reason=exhausted", &auth)
        .await
        .json();
    figures.insert(
        "count_reason_filter_ms".into(),
        (started.elapsed().as_secs_f64() * 1000.0).into(),
    );
    assert_eq!(counted["count"], count as u64);

    // Bulk discard with a filter the server cannot apply (reason): read every letter, purge
    // the runs of matching ones by subject.
    let started = Instant::now();
    let job = http(
        &base,
        "POST",
        &format!("/api/dead/bulk?action=discard&reason=exhausted&expected={count}"),
        &change,
    )
    .await;
    assert_eq!(job.status, 202, "{}", job.body);
    let done = wait_job(&base, job.json()["id"].as_str().unwrap()).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["succeeded"], count as u64);
    assert_eq!(done["failed"], 0);
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0);
    figures.insert("bulk_discard_by_reason_secs".into(), secs.into());
    figures.insert(
        "bulk_discard_by_reason_rate".into(),
        (count as f64 / secs).into(),
    );

    // Bulk retry of a queue: one replay (publish, ack) per letter, removed by runs.
    let replay_count = count;
    fill(&js, "r", replay_count).await;
    let started = Instant::now();
    let job = http(
        &base,
        "POST",
        "/api/dead/bulk?action=replay&queue=work",
        &change,
    )
    .await;
    assert_eq!(job.status, 202, "{}", job.body);
    let done = wait_job(&base, job.json()["id"].as_str().unwrap()).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["succeeded"], replay_count as u64);
    figures.insert("bulk_replay_letters".into(), replay_count.into());
    figures.insert("bulk_replay_secs".into(), secs.into());
    figures.insert(
        "bulk_replay_rate".into(),
        (replay_count as f64 / secs).into(),
    );
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0);

    // Bulk discard of a whole queue: the server purges the subject at once.
    fill(&js, "w", count).await;
    let started = Instant::now();
    let job = http(
        &base,
        "POST",
        "/api/dead/bulk?action=discard&queue=work",
        &change,
    )
    .await;
    let done = wait_job(&base, job.json()["id"].as_str().unwrap()).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done["succeeded"], count as u64, "{done}");
    figures.insert("bulk_discard_queue_secs".into(), secs.into());

    let figures = Value::Object(figures);
    eprintln!("console scale figures: {figures}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/jetq-cli-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("console-scale-{count}.json")),
        serde_json::to_string_pretty(&figures).unwrap(),
    )
    .unwrap();
    // Loose bounds for CI (the documented figures are the measurement).
    if count <= 2_000 {
        assert!(
            figures["page_first_ms"].as_f64().unwrap() < 2_000.0,
            "{figures}"
        );
        assert!(
            figures["page_deep_ms"].as_f64().unwrap() < 2_000.0,
            "{figures}"
        );
    }
}

/// A bulk discard by reason purges runs of matching letters per subject at once: it must
/// remove exactly the matching letters, whatever the interleaving of subjects and reasons.
#[tokio::test]
async fn a_bulk_discard_by_reason_removes_exactly_the_matching_letters() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10), ("emails", 10)]).await;
    let js = raw_jetstream(&server).await;
    let reasons = [
        ("work", "job", DeadReason::Exhausted),
        ("work", "job", DeadReason::Exhausted),
        ("emails", "send_email", DeadReason::Exhausted),
        ("work", "job", DeadReason::Fatal),
        ("work", "job", DeadReason::Exhausted),
        ("work", "other", DeadReason::Exhausted),
        ("emails", "send_email", DeadReason::Fatal),
        ("emails", "send_email", DeadReason::Exhausted),
        ("work", "job", DeadReason::Exhausted),
    ];
    let mut kept = Vec::new();
    for (i, (queue, task, reason)) in reasons.into_iter().enumerate() {
        let id = format!("t{i}");
        let seq = write_dead(
            &js,
            &Letter {
                reason,
                ..Letter::new(queue, task, &id)
            },
        )
        .await;
        if reason == DeadReason::Fatal {
            kept.push(seq);
        }
    }
    let (base, _stop) = serve(&server, config()).await;
    let auth = bearer(ADMIN);
    let change = [("Authorization", auth.as_str()), ("X-Jetq-Request", "1")];
    let job = http(
        &base,
        "POST",
        "/api/dead/bulk?action=discard&reason=exhausted",
        &change,
    )
    .await;
    assert_eq!(job.status, 202, "{}", job.body);
    let done = wait_job(&base, job.json()["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["succeeded"], 7);
    assert_eq!(done["processed"], 7);
    assert_eq!(dead_sequences(&js).await, kept);

    // Letters written after the count are not touched by a job that already ran; a new
    // job of the same filter finds nothing.
    let again = http(
        &base,
        "POST",
        "/api/dead/bulk?action=discard&reason=exhausted",
        &change,
    )
    .await;
    let again = wait_job(&base, again.json()["id"].as_str().unwrap()).await;
    assert_eq!(again["succeeded"], 0);
    assert_eq!(dead_sequences(&js).await, kept);
}

/// A bulk retry removes the replayed letters by runs per subject: a letter whose replay fails
/// (its body is missing from the body store) stays, and so does every letter that did not
/// match; exactly the others are replayed and gone.
#[tokio::test]
async fn a_bulk_retry_removes_exactly_the_replayed_letters() {
    use async_nats::HeaderMap;
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 10), ("emails", 10)]).await;
    let js = raw_jetstream(&server).await;
    let mut kept = Vec::new();
    let mut replayed = 0;
    for (i, (queue, task, reason)) in [
        ("work", "job", DeadReason::Exhausted),
        ("work", "job", DeadReason::Exhausted),
        ("emails", "send_email", DeadReason::Exhausted),
        ("work", "job", DeadReason::Exhausted), // broken below
        ("work", "job", DeadReason::Exhausted),
        ("work", "job", DeadReason::Fatal),
        ("work", "job", DeadReason::Exhausted),
        ("emails", "send_email", DeadReason::Exhausted),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("t{i}");
        let seq = if i == 3 {
            // A letter whose body is said to be in the body store, which has no such object.
            let mut map = HeaderMap::new();
            jetq_contract::DeadLetterHeaders {
                task_id: Some(id.clone()),
                reason: Some(reason.as_str().to_owned()),
                attempts: Some(3),
                payload_object: Some("missing-object".into()),
                payload_size: Some(10),
                ..jetq_contract::DeadLetterHeaders::default()
            }
            .write_to(&mut map);
            js.publish_with_headers(format!("jetq.dead.{queue}.{task}"), map, "".into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        } else {
            write_dead(
                &js,
                &Letter {
                    reason,
                    ..Letter::new(queue, task, &id)
                },
            )
            .await
        };
        if i == 3 || reason == DeadReason::Fatal {
            kept.push(seq);
        } else {
            replayed += 1;
        }
    }
    let (base, _stop) = serve(&server, config()).await;
    let auth = bearer(ADMIN);
    let change = [("Authorization", auth.as_str()), ("X-Jetq-Request", "1")];
    let job = http(
        &base,
        "POST",
        "/api/dead/bulk?action=replay&reason=exhausted",
        &change,
    )
    .await;
    assert_eq!(job.status, 202, "{}", job.body);
    let done = wait_job(&base, job.json()["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["succeeded"], replayed, "{done}");
    assert_eq!(done["failed"], 1, "{done}");
    assert_eq!(dead_sequences(&js).await, kept);
    let tasks = task_messages(&js).await;
    assert_eq!(tasks.len(), replayed as usize);
}

/// A worker of `Email` tasks whose handler holds each task until 20 s pass (untracked, and it
/// does not look at its context), with presence rewritten every 200 ms.
async fn holding_worker(server: &NatsServer) -> jetq_consumer::Worker {
    worker(server)
        .settings(jetq_consumer::WorkerSettings {
            presence_interval: Duration::from_millis(200),
            ..fast_settings()
        })
        .handler(
            |_email: Email, _ctx: jetq_consumer::TaskContext| async move {
                tokio::time::sleep(Duration::from_secs(20)).await;
                Ok::<(), jetq_consumer::TaskError>(())
            },
        )
        .build()
        .await
        .expect("worker builds")
}

#[tokio::test]
async fn tasks_page_by_state_with_detail_cancel_and_the_workers_page() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 1000), ("emails", 10)]).await;
    let producer = producer(&server).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let task = producer
            .enqueue(&Job {
                n,
                note: String::new(),
            })
            .await
            .unwrap();
        ids.push(task.id);
    }
    let later = producer
        .enqueue_in(Duration::from_secs(3600), &Email { to: "later".into() })
        .await
        .unwrap();
    let (base, _stop) = serve(&server, config()).await;
    let admin_auth = bearer(ADMIN);
    let viewer = bearer(VIEWER);
    let auth = [("Authorization", admin_auth.as_str())];
    let view = [("Authorization", viewer.as_str())];
    let change = [
        ("Authorization", admin_auth.as_str()),
        ("X-Jetq-Request", "1"),
    ];

    // Pending, 2 a page, through the page's own "Next page" link.
    let mut seen = Vec::new();
    let mut path = "/tasks?state=pending&queue=work&limit=2".to_owned();
    for _ in 0..5 {
        let page = http(&base, "GET", &path, &view).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains("id=\"read-only\""));
        for id in &ids {
            if page.body.contains(&format!("data-task=\"{id}\"")) {
                seen.push(id.clone());
            }
        }
        let Some(at) = page.body.find("id=\"next-page\"") else {
            break;
        };
        let before = &page.body[..at];
        let href = &before[before.rfind("href=\"").unwrap() + 6..];
        let href = &href[..href.find('"').unwrap()];
        path = format!("{}&limit=2", href.replace("&amp;", "&"));
    }
    assert_eq!(seen, ids, "every pending task once, in order");
    // The JSON listing and the delayed tab.
    let listed = http(&base, "GET", "/api/tasks?state=pending&queue=work", &view)
        .await
        .json();
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 5);
    let delayed = http(&base, "GET", "/tasks?state=delayed", &view).await;
    assert!(
        delayed
            .body
            .contains(&format!("data-task=\"{}\"", later.id)),
        "{}",
        delayed.body
    );
    let bad = http(&base, "GET", "/tasks?state=queued", &view).await;
    assert_eq!(bad.status, 400);

    // The search box goes to the detail page.
    let found = http(&base, "GET", &format!("/tasks?id={}", ids[0]), &view).await;
    assert_eq!(found.status, 303, "{}", found.body);
    assert_eq!(
        found.header("location"),
        Some(format!("/tasks/{}", ids[0]).as_str())
    );
    let detail = http(&base, "GET", &format!("/tasks/{}", ids[0]), &view).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert!(detail.body.contains("<b>pending</b>"), "{}", detail.body);
    assert!(detail.body.contains("JETQ_TASKS"), "where it is");
    // Its arguments (the stored body, pretty JSON) and every header of the stored message.
    let arguments = &detail.body[detail.body.find("id=\"arguments\"").expect("arguments")..];
    assert!(
        arguments[..arguments.find("</pre>").unwrap()].contains("&quot;n&quot;: 0"),
        "{}",
        detail.body
    );
    let headers = &detail.body[detail.body.find("id=\"headers\"").expect("headers")..];
    assert!(
        headers.contains("Nats-Msg-Id") && headers.contains(ids[0].as_str()),
        "{}",
        detail.body
    );
    assert!(
        !detail.body.contains("data-cancel="),
        "no button for a viewer"
    );
    let detail = http(&base, "GET", &format!("/tasks/{}", ids[0]), &auth).await;
    assert!(detail.body.contains("data-cancel="), "{}", detail.body);
    // A dead-lettered task: its dead letter's error and its trace id.
    let js = raw_jetstream(&server).await;
    write_dead(
        &js,
        &Letter {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ..Letter::new("work", "job", "01JTRACED")
        },
    )
    .await;
    let dead = http(&base, "GET", "/tasks/01JTRACED", &view).await;
    assert_eq!(dead.status, 200, "{}", dead.body);
    assert!(dead.body.contains("<b>dead</b>"), "{}", dead.body);
    assert!(dead.body.contains("smtp refused"), "the error");
    assert!(
        dead.body.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "the trace id: {}",
        dead.body
    );
    let unknown = http(&base, "GET", "/tasks/no-such-task", &view).await;
    assert_eq!(unknown.status, 404);

    // Cancel: refused to the viewer and without the console's header; done for the admin.
    let cancel = format!("/api/tasks/{}/cancel", ids[0]);
    let refused = http(
        &base,
        "POST",
        &cancel,
        &[("Authorization", viewer.as_str()), ("X-Jetq-Request", "1")],
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(http(&base, "POST", &cancel, &auth).await.status, 403);
    let done = http(&base, "POST", &cancel, &change).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let report = done.json();
    assert_eq!(report["outcome"], "deleted");
    assert_eq!(report["was"], "pending");
    assert_eq!(
        http(&base, "GET", &format!("/tasks/{}", ids[0]), &auth)
            .await
            .status,
        404
    );
    let delayed_cancel = http(
        &base,
        "POST",
        &format!("/api/tasks/{}/cancel", later.id),
        &change,
    )
    .await;
    assert_eq!(delayed_cancel.status, 200, "{}", delayed_cancel.body);
    assert_eq!(delayed_cancel.json()["was"], "delayed");

    // A running untracked task: listed as running, on the workers page, and cancelled through
    // its worker (PROTOCOL §16): the worker terminates it at once, whatever its handler does.
    let (stop_worker, run) = spawn_worker(holding_worker(&server).await);
    let hold = producer
        .enqueue(&Email { to: "hold".into() })
        .await
        .unwrap();
    eventually(WAIT, "the held task listed as running", || {
        let base = base.clone();
        let id = hold.id.clone();
        async move {
            let page = http(&base, "GET", "/tasks?state=running", &view).await;
            page.body
                .contains(&format!("data-task=\"{id}\""))
                .then_some(())
        }
    })
    .await;
    let workers = http(&base, "GET", "/workers", &view).await;
    assert_eq!(workers.status, 200);
    assert!(
        workers.body.contains("id=\"workers-table\""),
        "{}",
        workers.body
    );
    assert!(workers.body.contains(&hold.id), "running task listed");
    assert!(workers.body.contains("emails"), "its queues");
    assert!(workers.body.contains(" ago<"), "heartbeat age");
    let api = http(&base, "GET", "/api/workers", &view).await.json();
    assert_eq!(api.as_array().unwrap().len(), 1);
    let running = http(
        &base,
        "POST",
        &format!("/api/tasks/{}/cancel", hold.id),
        &change,
    )
    .await;
    assert_eq!(running.status, 200, "{}", running.body);
    let running = running.json();
    assert_eq!(running["outcome"], "requested", "{running}");
    assert_eq!(running["was"], "running", "{running}");
    assert_eq!(running["worker"], api[0]["id"], "{running}");
    eventually(WAIT, "the cancelled task leaves the task stream", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 4).then_some(()) }
    })
    .await;
    let _ = stop_worker.send(());
    let _ = within(Duration::from_secs(30), "the worker stops", run).await;
}

#[tokio::test]
async fn schedules_pause_resume_and_run_now_from_the_console() {
    init_logs();
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.yaml");
    std::fs::write(
        &file,
        "schedules:\n  - name: nightly\n    cron: \"0 0 3 * * *\"\n    queue: work\n    task: job\n    args: {\"n\": 1}\n",
    )
    .unwrap();
    let scheduler = RunningScheduler::start(scheduler(&server).schedules_file(&file)).await;
    let (base, _stop) = serve(
        &server,
        DashboardConfig {
            schedules_file: Some(file.clone()),
            ..config()
        },
    )
    .await;
    let admin_auth = bearer(ADMIN);
    let viewer = bearer(VIEWER);
    let change = [
        ("Authorization", admin_auth.as_str()),
        ("X-Jetq-Request", "1"),
    ];
    let viewer_change = [("Authorization", viewer.as_str()), ("X-Jetq-Request", "1")];

    let page = http(&base, "GET", "/schedules", &[("Authorization", &viewer)]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-schedule=\"nightly\""));
    assert!(!page.body.contains("data-schedule-action="), "no buttons");
    for action in ["pause", "resume", "run"] {
        let path = format!("/api/schedules/nightly/{action}");
        assert_eq!(http(&base, "POST", &path, &viewer_change).await.status, 403);
        assert_eq!(
            http(&base, "POST", &path, &[("Authorization", &admin_auth)])
                .await
                .status,
            403
        );
    }
    let page = http(
        &base,
        "GET",
        "/schedules",
        &[("Authorization", &admin_auth)],
    )
    .await;
    assert!(page.body.contains("data-schedule-action=\"pause\""));
    assert!(page.body.contains(">active<"), "{}", page.body);

    let paused = http(&base, "POST", "/api/schedules/nightly/pause", &change).await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.json()["paused"], true);
    let page = http(
        &base,
        "GET",
        "/schedules",
        &[("Authorization", &admin_auth)],
    )
    .await;
    assert!(page.body.contains(">paused<"), "{}", page.body);
    assert!(page.body.contains("by console:bearer"), "who paused it");
    let resumed = http(&base, "POST", "/api/schedules/nightly/resume", &change).await;
    assert_eq!(resumed.json()["paused"], false);

    let run = http(&base, "POST", "/api/schedules/nightly/run", &change).await;
    assert_eq!(run.status, 200, "{}", run.body);
    let task_id = run.json()["task_id"].as_str().unwrap().to_owned();
    assert!(task_id.starts_with("nightly:run:"));
    let js = raw_jetstream(&server).await;
    eventually(WAIT, "the run-now task", || {
        let js = js.clone();
        let task_id = task_id.clone();
        async move {
            let messages = stream_messages(&js, "JETQ_TASKS").await;
            messages
                .iter()
                .any(|m| header(m, "Nats-Msg-Id").as_deref() == Some(task_id.as_str()))
                .then_some(())
        }
    })
    .await;
    let bad = http(&base, "POST", "/api/schedules/Bad Name!/run", &change).await;
    assert!(bad.status >= 400);
    scheduler.kill().await;
}

/// The task search by unique key (`Jetq-Unique-Key`): the one holder's page; 404 for a key
/// nobody holds; a list when tasks of two types hold the same key.
#[tokio::test]
async fn a_task_is_found_by_its_unique_key() {
    use jetq_producer::{EnqueueOptions, RawTask, Unique};
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let held = producer
        .enqueue_with(
            &Job {
                n: 1,
                note: String::new(),
            },
            EnqueueOptions::new().unique(Unique::key("invoice:42")),
        )
        .await
        .unwrap();
    let (base, _stop) = serve(&server, config()).await;
    let view = [("authorization", bearer(VIEWER))];
    let view: Vec<(&str, &str)> = view.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let found = http(&base, "GET", "/tasks?key=invoice%3A42", &view).await;
    assert_eq!(found.status, 303, "{}", found.body);
    assert_eq!(
        found.header("location"),
        Some(format!("/tasks/{}", held.id).as_str())
    );
    let none = http(&base, "GET", "/tasks?key=invoice%3A43", &view).await;
    assert_eq!(none.status, 404, "{}", none.body);
    assert!(none.body.contains("invoice:43"), "{}", none.body);

    // The same key on another task type: both holders are named.
    let other = producer
        .enqueue_raw(RawTask {
            queue: "work".into(),
            task: "other_job".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            options: EnqueueOptions::new().unique(Unique::key("invoice:42")),
        })
        .await
        .unwrap();
    let both = http(&base, "GET", "/tasks?key=invoice%3A42", &view).await;
    assert_eq!(both.status, 200, "{}", both.body);
    assert!(
        both.body.contains(held.id.as_str()) && both.body.contains(other.id.as_str()),
        "{}",
        both.body
    );
}
