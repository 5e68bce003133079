//! Transactional enqueue end to end: a real PostgreSQL (initdb in a temp dir), a real
//! nats-server, the relay and a real worker.

mod common;

use std::time::Duration;

use common::{eventually, within, Env, Job, WAIT};
use jetq_contract::Subjects;
use jetq_producer::EnqueueOptions;

/// Rows the test application writes beside its tasks.
async fn create_users(env: &Env) {
    sqlx::query("CREATE TABLE users (id BIGSERIAL PRIMARY KEY, email TEXT NOT NULL)")
        .execute(&env.pool)
        .await
        .expect("users table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_enqueues_nothing_and_a_committed_one_runs_exactly_once() {
    let env = Env::start(Duration::from_secs(120)).await;
    create_users(&env).await;

    // Rolled back: the user row and the task vanish together.
    let mut tx = env.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO users (email) VALUES ('gone@example.com')")
        .execute(&mut *tx)
        .await
        .expect("insert user");
    let rolled_back_id = env
        .outbox
        .enqueue_with(
            &mut tx,
            &Job {
                n: 1,
                note: "rolled back".into(),
            },
            EnqueueOptions::new().key("signup-gone"),
        )
        .await
        .expect("outbox write");
    tx.rollback().await.expect("rollback");
    assert_eq!(rolled_back_id, "signup-gone");

    // Committed: the user row and the task together.
    let mut tx = env.pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO users (email) VALUES ('ada@example.com')")
        .execute(&mut *tx)
        .await
        .expect("insert user");
    let id = env
        .outbox
        .enqueue(
            &mut tx,
            &Job {
                n: 2,
                note: "committed".into(),
            },
        )
        .await
        .expect("outbox write");
    assert_eq!(id.len(), 26, "a generated id is a ULID: {id}");
    assert_eq!(
        env.rows().await,
        0,
        "an uncommitted row is invisible to others"
    );
    tx.commit().await.expect("commit");
    assert_eq!(env.rows().await, 1);

    let (tx_seen, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let worker = jetq_tests::worker(&env.nats)
        .handler(jetq_tests::recording_handler(tx_seen, |_| jetq_tests::ok()))
        .build()
        .await
        .expect("worker builds");
    let (stop_worker, worker_run) = jetq_tests::spawn_worker(worker);
    let relay = env.relay().await;

    let ran = jetq_tests::next(&mut seen, "the committed task to run").await;
    assert_eq!((ran.id.as_str(), ran.n, ran.attempt), (id.as_str(), 2, 1));
    eventually(WAIT, "the relayed row to be deleted", || async {
        (env.rows().await == 0).then_some(())
    })
    .await;
    // Nothing else runs: not the rolled-back task, not a second copy.
    let extra = tokio::time::timeout(Duration::from_secs(2), seen.recv()).await;
    assert!(extra.is_err(), "a second task ran: {extra:?}");

    relay.stop().await;
    jetq_tests::stop_worker(stop_worker, worker_run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_wakes_the_relay_long_before_its_poll() {
    let env = Env::start(Duration::from_secs(120)).await;
    let mut settings = env.relay_settings();
    settings.relay_poll_interval = Duration::from_secs(60);
    let relay = env.relay_with(settings).await;
    // Wait until the relay's session is listening (its last statement is the LISTEN).
    eventually(
        WAIT,
        "the relay to LISTEN on the table's channel",
        || async {
            let listening: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%jetq_outbox%'",
            )
            .fetch_one(&env.pool)
            .await
            .ok()?;
            (listening > 0).then_some(())
        },
    )
    .await;
    let started = std::time::Instant::now();
    env.write_jobs("wake", 0, 1).await;
    within(
        Duration::from_secs(10),
        "the relay to publish on NOTIFY",
        env.until_relayed(1, WAIT),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "relayed after {took:?}: not woken by NOTIFY"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_goes_to_the_delayed_stream_with_its_due_time() {
    let env = Env::start(Duration::from_secs(120)).await;
    let mut tx = env.pool.begin().await.expect("begin");
    let id = env
        .outbox
        .enqueue_in(
            &mut tx,
            Duration::from_secs(3600),
            &Job {
                n: 9,
                note: String::new(),
            },
            EnqueueOptions::new().key("later-9"),
        )
        .await
        .expect("outbox write");
    tx.commit().await.expect("commit");
    let relay = env.relay().await;
    let subjects = Subjects::default();
    let js = env.js.clone();
    let message = eventually(WAIT, "the delayed task in the delayed stream", || {
        let js = js.clone();
        let stream = subjects.delayed_stream();
        async move {
            let mut stream = js.get_stream(&stream).await.ok()?;
            let first = stream.info().await.ok()?.state.first_sequence;
            stream.get_raw_message(first).await.ok()
        }
    })
    .await;
    assert!(
        message.subject.starts_with("jetq.delayed."),
        "{}",
        message.subject
    );
    assert!(
        message.subject.ends_with(".work.job"),
        "{}",
        message.subject
    );
    assert_eq!(
        jetq_tests::header(&message, "Nats-Msg-Id").as_deref(),
        Some(id.as_str())
    );
    assert!(jetq_tests::header(&message, "Jetq-Not-Before").is_some());
    eventually(WAIT, "the row deleted", || async {
        (env.rows().await == 0).then_some(())
    })
    .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_task_is_refused_before_anything_is_written() {
    let env = Env::start(Duration::from_secs(120)).await;
    let mut tx = env.pool.begin().await.expect("begin");
    let err = env
        .outbox
        .enqueue_raw(
            &mut tx,
            jetq_producer::RawTask {
                queue: "work".into(),
                task: "bad.name".into(),
                payload: bytes::Bytes::from_static(b"{}"),
                options: EnqueueOptions::new(),
            },
        )
        .await
        .expect_err("an illegal task name is refused");
    assert!(err.to_string().contains("bad.name"), "{err}");
    let err = env
        .outbox
        .enqueue_with(
            &mut tx,
            &Job {
                n: 1,
                note: String::new(),
            },
            EnqueueOptions::new().key("dead:1"),
        )
        .await
        .expect_err("a reserved key is refused");
    assert!(err.to_string().contains("dead:"), "{err}");
    let err = env
        .outbox
        .enqueue_with(
            &mut tx,
            &Job {
                n: 1,
                note: String::new(),
            },
            EnqueueOptions::new().unique(jetq_producer::Unique::key("one-at-a-time")),
        )
        .await
        .expect_err("a unique key needs NATS at enqueue time");
    assert!(err.to_string().contains("one-at-a-time"), "{err}");
    tx.commit().await.expect("commit");
    assert_eq!(env.rows().await, 0);

    // A limit key is only a header: it is written with the row.
    let mut tx = env.pool.begin().await.expect("begin");
    env.outbox
        .enqueue_with(
            &mut tx,
            &Job {
                n: 2,
                note: String::new(),
            },
            EnqueueOptions::new().key("limited").limit_key("tenant-7"),
        )
        .await
        .expect("a limit key is accepted");
    tx.commit().await.expect("commit");
    let limit: Option<String> = sqlx::query_scalar(
        "SELECT headers->>'Jetq-Limit-Key' FROM jetq_outbox WHERE msg_id = 'limited'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("row");
    assert_eq!(limit.as_deref(), Some("tenant-7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_without_the_table_says_to_run_the_migration() {
    let env = Env::start(Duration::from_secs(120)).await;
    let outbox = jetq_outbox::Outbox::new()
        .with_table(jetq_outbox::TableName::new("not_migrated").expect("valid name"));
    let mut conn = env.pool.acquire().await.expect("connection");
    let err = outbox
        .enqueue(
            &mut conn,
            &Job {
                n: 1,
                note: String::new(),
            },
        )
        .await
        .expect_err("no table");
    assert!(
        matches!(err, jetq_outbox::OutboxError::MissingTable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("jetq-relay migrate"), "{err}");
}
