//! The relay under concurrency, crashes and outages, against a real PostgreSQL and a real
//! nats-server: every committed row reaches the task stream exactly once.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use common::{eventually, spawn_relay_process, within, Env, NatsServer, WAIT};
use futures::StreamExt;

/// Every key `<prefix>-<n>` for n in 0..count, once each, and nothing else.
fn assert_exactly_once(ids: &HashMap<String, usize>, prefix: &str, count: u64) {
    let mut problems = Vec::new();
    for n in 0..count {
        let id = format!("{prefix}-{n}");
        match ids.get(&id) {
            Some(1) => {}
            Some(k) => problems.push(format!("{id} stored {k} times")),
            None => problems.push(format!("{id} missing")),
        }
    }
    let extra: Vec<_> = ids
        .keys()
        .filter(|id| !id.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(extra.is_empty(), "unexpected tasks: {extra:?}");
    assert!(
        problems.is_empty(),
        "{} problems: {:?}",
        problems.len(),
        &problems[..problems.len().min(20)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_never_publish_a_row_twice() {
    let env = Env::start(Duration::from_secs(120)).await;
    // Every publish on the wire, duplicates included (the stream would hide them).
    let client = async_nats::connect(env.nats.url()).await.expect("connect");
    let mut wire = client.subscribe("jetq.task.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let sent: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counter = Arc::clone(&sent);
    let reader = tokio::spawn(async move {
        while let Some(message) = wire.next().await {
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            *counter.lock().unwrap().entry(id).or_insert(0) += 1;
        }
    });

    let mut settings = env.relay_settings();
    settings.relay_batch_size = 5;
    let first = env.relay_with(settings.clone()).await;
    let second = env.relay_with(settings).await;
    // Written while both relays run, so they compete for the same rows.
    let count = 200;
    env.write_jobs("pair", 0, count).await;
    env.until_relayed(count as usize, Duration::from_secs(60))
        .await;
    first.stop().await;
    second.stop().await;
    // Draining delivers every message the server sent before it, then ends the reader: no
    // late duplicate can be missed.
    client.drain().await.expect("drain the wire subscriber");
    within(WAIT, "the wire reader to see every send", reader)
        .await
        .expect("the wire reader ends");

    assert_exactly_once(&sent.lock().unwrap(), "pair", count);
    assert_exactly_once(&env.stream_ids().await, "pair", count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_repeatedly_and_a_nats_restart_still_store_every_row_once() {
    let mut env = Env::start(Duration::from_secs(120)).await;
    let relay_env = env.relay_env();
    // Every send on the wire: a row published again after a kill shows up here twice (the
    // stream drops the copy); reported, since whether a kill lands between ack and commit is luck.
    let client = async_nats::connect(env.nats.url()).await.expect("connect");
    let mut wire = client.subscribe("jetq.task.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let sends = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sends_seen = Arc::clone(&sends);
    let reader = tokio::spawn(async move {
        while wire.next().await.is_some() {
            sends_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let mut relays = vec![
        spawn_relay_process(&relay_env),
        spawn_relay_process(&relay_env),
    ];
    let count: u64 = 300;

    // Rows keep flowing from another task while relays are killed.
    let pool = env.pool.clone();
    let writer = tokio::spawn(async move {
        let outbox = jetq_outbox::Outbox::new();
        for n in 0..count {
            let mut tx = pool.begin().await.expect("begin");
            outbox
                .enqueue_with(
                    &mut tx,
                    &common::Job {
                        n,
                        note: String::new(),
                    },
                    jetq_producer::EnqueueOptions::new().key(format!("kill-{n}")),
                )
                .await
                .expect("write");
            tx.commit().await.expect("commit");
            // About 6 s of rows: they keep coming through every kill below.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let mut kills = 0;
    let mut stored_at_kills = Vec::new();
    for round in 0..12 {
        tokio::time::sleep(Duration::from_millis(250 + (round % 4) * 150)).await;
        stored_at_kills.push(
            jetq_tests::stream_len(&env.js, &jetq_contract::Subjects::default().tasks_stream())
                .await,
        );
        let victim = (round % 2) as usize;
        let _ = relays[victim].start_kill(); // SIGKILL
        let _ = relays[victim].wait().await;
        kills += 1;
        relays[victim] = spawn_relay_process(&relay_env);
        if round == 5 {
            env.nats.kill().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            env.nats.restart().await;
        }
    }
    within(WAIT, "the writer to finish", writer)
        .await
        .expect("writer");
    // The relays did their work between the kills, not only after them.
    let progressed = stored_at_kills.windows(2).filter(|w| w[1] > w[0]).count();
    eprintln!("tasks stored at each kill: {stored_at_kills:?}");
    assert!(
        progressed >= 6,
        "relays made progress between only {progressed} kills: {stored_at_kills:?}"
    );
    env.until_relayed(count as usize, Duration::from_secs(60))
        .await;
    for relay in &mut relays {
        let _ = relay.start_kill();
        let _ = relay.wait().await;
    }
    reader.abort();
    eprintln!(
        "{} sends on the wire for {count} rows",
        sends.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(kills, 12);
    assert_exactly_once(&env.stream_ids().await, "kill", count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_working_when_postgres_or_nats_goes_away_and_comes_back() {
    let mut env = Env::start(Duration::from_secs(120)).await;
    let relay = env.relay().await;
    env.write_jobs("outage", 0, 5).await;
    env.until_relayed(5, WAIT).await;

    // The database goes away (every session cut) and comes back on the same port.
    env.pg.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.pg.restart().await;
    eventually(WAIT, "the test pool to reconnect", || async {
        env.pool.acquire().await.ok().map(|_| ())
    })
    .await;
    env.write_jobs("outage", 5, 5).await;
    env.until_relayed(10, WAIT).await;

    // NATS goes away while rows are written; they are relayed once it is back.
    env.nats.kill().await;
    env.write_jobs("outage", 10, 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.rows().await,
        5,
        "rows wait in the table while NATS is down"
    );
    env.nats.restart().await;
    env.until_relayed(15, Duration::from_secs(30)).await;

    relay.stop().await;
    assert_exactly_once(&env.stream_ids().await, "outage", 15);
}

/// Sets a row's relay bookkeeping as an earlier attempt that began `ago` would have left it.
async fn pretend_attempted(env: &Env, msg_id: &str, ago: Duration) {
    let mark = jetq_contract::time::format(SystemTime::now() - ago);
    sqlx::query(
        "UPDATE jetq_outbox SET attempts = 1, \
         headers = headers || jsonb_build_object('Jetq-Outbox-First-Attempt', $1::text) \
         WHERE msg_id = $2",
    )
    .bind(mark)
    .bind(msg_id)
    .execute(&env.pool)
    .await
    .expect("update row");
}

/// Publishes a row's message to the stream, as the lost attempt did.
async fn publish_as_the_lost_attempt(env: &Env, msg_id: &str) {
    let (subject, payload): (String, Vec<u8>) =
        sqlx::query_as("SELECT subject, payload FROM jetq_outbox WHERE msg_id = $1")
            .bind(msg_id)
            .fetch_one(&env.pool)
            .await
            .expect("row");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    env.js
        .publish_with_headers(subject, headers, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_lost_attempt_is_past_the_duplicate_window_is_dead_lettered_not_published_twice(
) {
    // A short duplicate window on the test stream: 6 s. The relay's margin is its publish
    // time (1 s request timeout x 1 send) + 1 s, so an attempt older than 4 s is too old.
    let env = Env::start(Duration::from_secs(6)).await;
    env.write_jobs("window", 0, 3).await;
    // window-0: stored by an attempt 30 s ago whose ack was lost, and the relay died before
    // deleting the row. The stream no longer remembers its id: publishing again would store a
    // second copy.
    publish_as_the_lost_attempt(&env, "window-0").await;
    pretend_attempted(&env, "window-0", Duration::from_secs(30)).await;
    // window-1: stored by an attempt just now: still inside the window, so publishing again
    // is dropped by the server.
    publish_as_the_lost_attempt(&env, "window-1").await;
    pretend_attempted(&env, "window-1", Duration::ZERO).await;
    // window-2: never attempted.

    let mut settings = env.relay_settings();
    settings.relay_publish_attempts = 1;
    settings.relay_poll_interval = Duration::from_millis(100);
    let mut connection = env.connection();
    connection.request_timeout = Duration::from_secs(1);
    let relay = jetq_outbox::relay::Relay::connect(connection, settings)
        .await
        .expect("relay starts");
    assert_eq!(relay.duplicate_window(), Duration::from_secs(6));
    let relay = common::RunningRelay::spawn(relay);

    eventually(WAIT, "every row handled", || async {
        (env.rows().await == 0).then_some(())
    })
    .await;
    relay.stop().await;

    let ids = env.stream_ids().await;
    assert_eq!(
        ids.get("window-0"),
        Some(&1),
        "the past-window row was published again: {ids:?}"
    );
    assert_eq!(ids.get("window-1"), Some(&1), "{ids:?}");
    assert_eq!(ids.get("window-2"), Some(&1), "{ids:?}");
    let letters = jetq_tests::dead_letters(&env.js, 1).await;
    assert_eq!(
        letters.len(),
        1,
        "only the past-window row is dead-lettered"
    );
    let letter = &letters[0];
    assert_eq!(
        jetq_tests::header(letter, "Jetq-Task-Id").as_deref(),
        Some("window-0")
    );
    assert_eq!(
        jetq_tests::header(letter, "Jetq-Outbox-Reason").as_deref(),
        Some("unconfirmed")
    );
    assert_eq!(
        jetq_tests::header(letter, "Jetq-Dead-Reason").as_deref(),
        Some("fatal")
    );
    let failure = jetq_tests::header(letter, "Jetq-Failure").expect("failure record");
    assert!(failure.contains("duplicate window"), "{failure}");
    assert_eq!(letter.subject.as_str(), "jetq.dead.work.job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_can_never_be_published_are_dead_lettered_with_their_reason() {
    let env = Env::start(Duration::from_secs(120)).await;
    let insert =
        "INSERT INTO jetq_outbox (msg_id, subject, headers, payload) VALUES ($1, $2, $3, $4)";
    for (id, subject, payload) in [
        ("bad-args", "jetq.task.work.job", &b"{not json"[..]),
        ("bad-name", "jetq.task.work.no such task", &b"{}"[..]),
        ("good", "jetq.task.work.job", &br#"{"n":1}"#[..]),
    ] {
        sqlx::query(insert)
            .bind(id)
            .bind(subject)
            .bind(sqlx::types::Json(
                serde_json::json!({"Jetq-Enqueued-At": "2026-12-07T06:00:00.000000Z"}),
            ))
            .bind(payload)
            .execute(&env.pool)
            .await
            .expect("insert");
    }
    let relay = env.relay().await;
    let letters = jetq_tests::dead_letters(&env.js, 2).await;
    eventually(WAIT, "every row handled", || async {
        (env.rows().await == 0).then_some(())
    })
    .await;
    relay.stop().await;

    let by_id: HashMap<String, _> = letters
        .iter()
        .map(|l| (jetq_tests::header(l, "Jetq-Task-Id").unwrap_or_default(), l))
        .collect();
    let args = by_id.get("bad-args").expect("dead letter of bad-args");
    assert_eq!(
        jetq_tests::header(args, "Jetq-Dead-Reason").as_deref(),
        Some("undecodable")
    );
    assert_eq!(
        jetq_tests::header(args, "Jetq-Outbox-Reason").as_deref(),
        Some("invalid-payload")
    );
    assert_eq!(
        args.payload.as_ref(),
        b"{not json",
        "the payload is kept byte for byte"
    );
    assert_eq!(args.subject.as_str(), "jetq.dead.work.job");
    let name = by_id.get("bad-name").expect("dead letter of bad-name");
    assert_eq!(
        jetq_tests::header(name, "Jetq-Outbox-Reason").as_deref(),
        Some("invalid-subject")
    );
    assert_eq!(name.subject.as_str(), "jetq.dead._outbox._invalid");
    assert_eq!(
        jetq_tests::header(name, "Jetq-Outbox-Subject").as_deref(),
        Some("jetq.task.work.no such task")
    );
    let ids = env.stream_ids().await;
    assert_eq!(ids.len(), 1, "only the good row is a task: {ids:?}");
    assert_eq!(ids.get("good"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_refuses_a_missing_table_and_a_bad_url_saying_what_to_fix() {
    let env = Env::start(Duration::from_secs(120)).await;
    let mut settings = env.relay_settings();
    settings.outbox_table = "not_migrated".into();
    let err = jetq_outbox::relay::Relay::connect(env.connection(), settings)
        .await
        .expect_err("a missing table is refused");
    let text = err.to_string();
    assert!(
        text.contains("not_migrated") && text.contains("jetq-relay migrate"),
        "{text}"
    );

    // The binary: exit status 1 and the message on stderr.
    let mut vars = env.relay_env();
    vars.push(("JETQ_OUTBOX_TABLE".into(), "not_migrated".into()));
    let (code, stderr) = common::run_relay_command(&vars, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("jetq-relay migrate"), "{stderr}");

    let mut vars = env.relay_env();
    vars.retain(|(k, _)| k != "JETQ_DATABASE_URL");
    vars.push(("JETQ_DATABASE_URL".into(), "mysql://nope".into()));
    let (code, stderr) = common::run_relay_command(&vars, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("JETQ_DATABASE_URL") && stderr.contains("postgres://"),
        "{stderr}"
    );

    // `jetq-relay migrate` creates the table it is pointed at; the relay then starts.
    let (code, stderr) =
        common::run_relay_command(&vars_with_table(&env, "not_migrated"), &["migrate"]).await;
    assert_eq!(code, 0, "{stderr}");
    let mut settings = env.relay_settings();
    settings.outbox_table = "not_migrated".into();
    jetq_outbox::relay::Relay::connect(env.connection(), settings)
        .await
        .expect("the relay starts once the table exists");
}

fn vars_with_table(env: &Env, table: &str) -> Vec<(String, String)> {
    let mut vars = env.relay_env();
    vars.push(("JETQ_OUTBOX_TABLE".into(), table.into()));
    vars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_too_large_for_the_server_is_dead_lettered_with_its_body_in_the_body_store() {
    let env = Env::start_with(
        Duration::from_secs(120),
        NatsServer::builder().max_payload(4096),
    )
    .await;
    let big = format!("{{\"note\":\"{}\"}}", "x".repeat(6000));
    sqlx::query(
        "INSERT INTO jetq_outbox (msg_id, subject, headers, payload) VALUES ($1, $2, '{}', $3)",
    )
    .bind("too-big")
    .bind("jetq.task.work.job")
    .bind(big.as_bytes())
    .execute(&env.pool)
    .await
    .expect("insert");
    let relay = env.relay().await;
    let letters = jetq_tests::dead_letters(&env.js, 1).await;
    eventually(WAIT, "the row deleted", || async {
        (env.rows().await == 0).then_some(())
    })
    .await;
    relay.stop().await;
    let letter = &letters[0];
    assert_eq!(
        jetq_tests::header(letter, "Jetq-Outbox-Reason").as_deref(),
        Some("too-large")
    );
    assert!(letter.payload.is_empty(), "the body went to the body store");
    let object = jetq_tests::header(letter, "Jetq-Payload-Object").expect("object name");
    assert_eq!(
        jetq_tests::header(letter, "Jetq-Payload-Size").as_deref(),
        Some(big.len().to_string().as_str())
    );
    let store = env
        .js
        .get_object_store("JETQ_DEAD_PAYLOADS")
        .await
        .expect("body store");
    let mut body = Vec::new();
    let mut reader = store.get(&object).await.expect("the body is stored");
    tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut body)
        .await
        .expect("read body");
    assert_eq!(body, big.as_bytes(), "the body is kept byte for byte");
    assert!(
        env.stream_ids().await.is_empty(),
        "nothing reached the task stream"
    );
}
