//! The dashboard in a real headless Chromium (Debian's `/usr/bin/chromium`, driven by
//! playwright-core from `cli/tests/browser`): it shows the counts, replays a dead letter by
//! clicking, discards another, shows the flow-control limits and releases a unique key by
//! clicking, and refuses without the token. Screenshots are kept in
//! `target/jetq-cli-artifacts/`.
//!
//! Needs `chromium` (Debian package) and `npm ci` in `cli/tests/browser`; `scripts/test.sh`
//! installs both and sets `JETQ_TEST_BROWSER_REQUIRED=1`, which turns a missing piece into a
//! failure instead of a skip.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::*;
use jetq_cli::dead::replay_id;
use jetq_contract::headers;
use serde_json::Value;

const TOKEN: &str = "browser-s3cret";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The Chromium binary and node, or why the test cannot run.
fn prerequisites() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("JETQ_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} not found (apt-get install chromium, or run scripts/test.sh)",
            chromium.display()
        ));
    }
    let node = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("node"))
                .find(|candidate| candidate.exists())
        })
        .ok_or_else(|| "node not found on PATH".to_owned())?;
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            browser_dir().display()
        ));
    }
    Ok((chromium, node))
}

fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/jetq-cli-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact directory");
    dir
}

#[tokio::test]
async fn the_dashboard_in_chromium_shows_counts_replays_by_click_and_refuses_without_the_token() {
    init_logs();
    let (chromium, node) = match prerequisites() {
        Ok(found) => found,
        Err(missing) if std::env::var_os("JETQ_TEST_BROWSER_REQUIRED").is_some() => {
            panic!("the browser test cannot run: {missing}")
        }
        Err(missing) => {
            eprintln!("SKIPPED the dashboard browser test: {missing}");
            return;
        }
    };
    let server = NatsServer::start().await;
    let topology = provision(&server, &[("work", 20), ("emails", 10)]).await;
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
        ("01JQ7ZQ4W0TIME0000000000C3", "attempt timed out after 30s"),
    ] {
        let letter = Letter {
            error,
            payload: "{\"n\":42,\"note\":\"monthly export\"}",
            ..Letter::new("work", "job", id)
        };
        seqs.push(write_dead(&js, &letter).await);
    }
    let email_dead = Letter {
        error: "mailbox grace@example.com does not exist",
        payload: "{\"to\":\"grace@example.com\"}",
        ..Letter::new("emails", "send_email", "01JQ7ZQ4W0MAIL0000000000D4")
    };
    write_dead(&js, &email_dead).await;

    let schedules = tempfile::tempdir().unwrap();
    let schedules_file = schedules.path().join("schedules.yaml");
    std::fs::write(
        &schedules_file,
        "schedules:\n  - name: nightly-report\n    cron: \"0 0 3 * * *\"\n    timezone: Europe/Berlin\n    \
         queue: work\n    task: job\n    args: { n: 1 }\n",
    )
    .unwrap();
    let dashboard = start_dashboard(
        &server,
        &[
            "--token",
            TOKEN,
            "--sample-every",
            "500ms",
            "--schedules-file",
            schedules_file.to_str().unwrap(),
        ],
    )
    .await;

    let shots = artifacts_dir();
    let mut command = tokio::process::Command::new(node);
    command
        .arg(browser_dir().join("dashboard.mjs"))
        .current_dir(browser_dir())
        .env("DASHBOARD_URL", &dashboard.url)
        .env("DASHBOARD_TOKEN", TOKEN)
        .env("REPLAY_SEQ", seqs[0].to_string())
        .env("DISCARD_SEQ", seqs[1].to_string())
        .env("DEAD_AFTER", "1")
        .env("RELEASE_ENTRY", unique_entry)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = within(
        Duration::from_secs(120),
        "the browser script",
        command.output(),
    )
    .await
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!("the browser script printed no JSON ({err})\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    assert!(
        output.status.success() && seen.get("failure").is_none(),
        "the browser script failed: {seen:#}\nstderr:\n{stderr}"
    );

    // Refused without the token: the page and a replay.
    assert_eq!(seen["anonymous_status"], 401);
    assert!(seen["anonymous_text"]
        .as_str()
        .unwrap()
        .contains("Authentication required"));
    assert_eq!(seen["anonymous_replay_status"], 401);
    for navigation in ["anonymous_navigation", "wrong_token_navigation"] {
        let text = seen[navigation].as_str().unwrap();
        assert!(
            text.contains("ERR_INVALID_AUTH_CREDENTIALS") || text == "HTTP 401",
            "{navigation}: {text}"
        );
    }

    // The counts as the page showed them.
    assert_eq!(seen["status"], 200);
    let work = &seen["queues"]["work"];
    assert_eq!(work["pending"], "6");
    assert_eq!(work["in_flight"], "0");
    assert_eq!(work["max_in_flight"], "20");
    assert_eq!(work["dead"], "3");
    assert_eq!(work["state"], "active");
    let emails = &seen["queues"]["emails"];
    assert_eq!(emails["pending"], "2");
    assert_eq!(emails["dead"], "1");
    assert_eq!(seen["dead_rows"].as_array().unwrap().len(), 4);
    assert!(seen["dead_rows"][0]["text"]
        .as_str()
        .unwrap()
        .contains("smtp refused"));
    assert!(seen["schedules_text"]
        .as_str()
        .unwrap()
        .contains("nightly-report"));
    let mut lines: Vec<&str> = seen["chart_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, ["emails", "work"]);

    // Replayed by a click: the dead letter is gone and the task is back in its queue.
    let new_id = replay_id(seqs[0], "01JQ7ZQ4W0SMTP0000000000A1");
    assert!(
        seen["replay_flash"].as_str().unwrap().contains(&new_id),
        "{seen:#}"
    );
    assert!(seen["discard_dialog"]
        .as_str()
        .unwrap()
        .contains(&seqs[1].to_string()));
    assert_eq!(seen["work_dead_after"], "1");
    assert_eq!(seen["forged_status"], 403);
    assert!(seen["detail_text"]
        .as_str()
        .unwrap()
        .contains("attempt timed out after 30s"));
    assert_eq!(seen["page_errors"], serde_json::json!([]));

    // The Limits section as the page showed it, and the unique key released by a click.
    let limits_text = seen["limits_text"].as_str().unwrap();
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
    assert!(
        seen["release_dialog"]
            .as_str()
            .unwrap()
            .contains(unique_entry),
        "{seen:#}"
    );
    assert!(
        seen["release_flash"]
            .as_str()
            .unwrap()
            .contains("JETQ_UNIQUE"),
        "{seen:#}"
    );
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

    let remaining = dead_sequences(&js).await;
    assert!(!remaining.contains(&seqs[0]) && !remaining.contains(&seqs[1]));
    assert_eq!(remaining.len(), 2);
    let replayed: Vec<String> = task_messages(&js)
        .await
        .iter()
        .filter_map(|m| header(m, headers::MSG_ID))
        .filter(|id| id.starts_with("replay:"))
        .collect();
    assert_eq!(replayed, [new_id], "only the clicked one was replayed");

    for shot in [
        "dashboard.png",
        "dashboard-after.png",
        "dashboard-limits.png",
    ] {
        let size = std::fs::metadata(shots.join(shot))
            .unwrap_or_else(|err| panic!("screenshot {shot} missing: {err}"))
            .len();
        assert!(size > 10_000, "{shot} is only {size} bytes");
    }
    if std::env::var_os("JETQ_UPDATE_DOCS_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::copy(shots.join("dashboard.png"), docs).expect("screenshot copied to docs/");
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard-limits.png");
        std::fs::copy(shots.join("dashboard-limits.png"), docs)
            .expect("screenshot copied to docs/");
    }
}
