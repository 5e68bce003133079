//! Tasks that cannot fit in a dead letter and tasks that are stranded, against a real
//! nats-server: a task accepted at `max_payload` minus a few bytes ends in dead letters (its body
//! in the dead-letter body store) whether it is undecodable, exhausted or fatal, and replays
//! whole; a task whose deliveries ran out shows as STRANDED in `jetq queues`.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use common::*;
use jetq_consumer::{TaskContext, TaskError};
use jetq_contract::{
    dead::{headers_wire_len, payload_object_name},
    headers, QueueSettings, RetryPolicy, StreamSettings, Subjects, TaskOptions,
};
use tokio::{io::AsyncReadExt, sync::mpsc};

/// Publishes a task the way a producer does (id and enqueue time), with a body that leaves
/// `slack` bytes of the server's `max_payload`; returns the body.
async fn publish_near_max(
    js: &async_nats::jetstream::Context,
    task: &str,
    id: &str,
    fill: u8,
    slack: usize,
) -> Bytes {
    let mut map = HeaderMap::new();
    map.insert(headers::MSG_ID, id);
    map.insert(headers::ENQUEUED_AT, jetq_contract::time::now().as_str());
    let max = js.client().server_info().max_payload;
    let body = Bytes::from(vec![fill; max - headers_wire_len(&map) - slack]);
    js.publish_with_headers(Subjects::default().task("work", task), map, body.clone())
        .await
        .expect("publish")
        .await
        .expect("the task stream accepts a task just under max_payload");
    body
}

async fn read_object(js: &async_nats::jetstream::Context, name: &str) -> Vec<u8> {
    let store = js
        .get_object_store(Subjects::default().dead_payloads_bucket())
        .await
        .expect("the dead-letter body store exists");
    let mut object = store.get(name).await.expect("the body object exists");
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.expect("object reads");
    bytes
}

#[tokio::test]
async fn tasks_at_max_payload_are_dead_lettered_with_their_body_stored_beside_and_replay_whole() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, usize)>();
    let options = TaskOptions::default()
        .max_attempts(2)
        .retry(RetryPolicy::constant(Duration::from_millis(50)).jitter(0.0));
    let (fatal_tx, flaky_tx) = (tx.clone(), tx);
    let worker = worker(&server)
        // A typed handler: a body of 0x01 bytes is not a Job.
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .raw_handler("work", "fatal_job", options.clone(), move |body, _ctx| {
            let tx = fatal_tx.clone();
            async move {
                tx.send(("fatal", body.len())).ok();
                Err(TaskError::fatal(
                    "the provider rejected this export for good",
                ))
            }
        })
        .raw_handler("work", "flaky_job", options, move |body, _ctx| {
            let tx = flaky_tx.clone();
            async move {
                tx.send(("flaky", body.len())).ok();
                Err::<(), _>(TaskError::retry("the provider timed out"))
            }
        })
        .build()
        .await
        .expect("worker builds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    let mut sent = Vec::new();
    for (task, id, fill) in [
        // Ids as long as a ULID, as a producer's are.
        ("job", "undecodable-01JEW0000000000000000", 1u8),
        ("fatal_job", "fatal-01JEW000000000000000000000", 2u8),
        ("flaky_job", "flaky-01JEW000000000000000000000", 3u8),
    ] {
        // Eight bytes under the limit: the task fits, its dead letter cannot.
        sent.push((task, id, publish_near_max(&js, task, id, fill, 8).await));
    }
    let letters = dead_letters(&js, 3).await;
    assert_eq!(letters.len(), 3, "one dead letter per task");
    assert_eq!(
        stream_len(&js, "JETQ_TASKS").await,
        0,
        "no task left stranded in the task stream"
    );
    for (task, id, body) in &sent {
        let letter = letters
            .iter()
            .find(|l| header(l, headers::TASK_ID).as_deref() == Some(*id))
            .unwrap_or_else(|| panic!("no dead letter for {id}"));
        let reason = header(letter, headers::DEAD_REASON);
        let expected = match *task {
            "job" => "undecodable",
            "fatal_job" => "fatal",
            _ => "exhausted",
        };
        assert_eq!(reason.as_deref(), Some(expected), "{id}");
        assert!(
            letter.payload.is_empty(),
            "{id}: the body is not in the letter"
        );
        let object = header(letter, headers::PAYLOAD_OBJECT).expect("names its body object");
        let sequence: u64 = header(letter, headers::TASK_SEQUENCE)
            .and_then(|s| s.parse().ok())
            .expect("task sequence");
        assert_eq!(object, payload_object_name(sequence, id));
        assert_eq!(
            header(letter, headers::PAYLOAD_SIZE),
            Some(body.len().to_string())
        );
        assert_eq!(
            read_object(&js, &object).await,
            body.as_ref(),
            "{id}: body kept byte for byte"
        );
        if *task == "flaky_job" {
            let failure: jetq_contract::FailureRecord =
                serde_json::from_str(&header(letter, headers::FAILURE).expect("failure record"))
                    .expect("record parses");
            assert_eq!(failure.attempts, 2);
            assert!(
                !failure.history.is_empty(),
                "the attempt history still fits"
            );
        }
    }

    // `jetq dead show` reads the body from the store.
    let fatal_letter = letters
        .iter()
        .find(|l| {
            header(l, headers::TASK_ID).as_deref() == Some("fatal-01JEW000000000000000000000")
        })
        .expect("fatal letter");
    let shown = jetq(
        &server,
        &["--json", "dead", "show", &fatal_letter.sequence.to_string()],
    )
    .await
    .ok_json();
    assert_eq!(shown["payload_size"], sent[1].2.len());
    assert!(
        shown["payload_text"]
            .as_str()
            .is_some_and(|t| t.len() == sent[1].2.len()),
        "the body is shown: {}",
        &shown.to_string()[..200.min(shown.to_string().len())]
    );

    // Drain what the handlers saw so far, then replay the fatal one: it runs with its whole body.
    while rx.try_recv().is_ok() {}
    let replay = jetq(
        &server,
        &[
            "--json",
            "dead",
            "replay",
            &fatal_letter.sequence.to_string(),
        ],
    )
    .await;
    let report = replay.ok_json();
    assert_eq!(report["replayed"], 1, "{report}");
    assert_eq!(
        report["items"][0]["new_id"],
        format!("replay:{}", fatal_letter.sequence),
        "the short replay id made room for the body"
    );
    let (who, len) = next(&mut rx, "the replayed task to run").await;
    assert_eq!(
        (who, len),
        ("fatal", sent[1].2.len()),
        "replayed with its whole body"
    );
    // It dies again, as a new dead letter whose body is stored again.
    eventually(WAIT, "the replay's own dead letter", || {
        let js = js.clone();
        async move {
            let letters = stream_messages(&js, "JETQ_DEAD").await;
            letters
                .iter()
                .any(|l| {
                    header(l, headers::TASK_ID).is_some_and(|id| id.starts_with("replay:"))
                        && header(l, headers::PAYLOAD_OBJECT).is_some()
                })
                .then_some(())
        }
    })
    .await;
    let _ = stop.send(());
    within(WAIT, "the worker to stop", run)
        .await
        .expect("worker task");
}

#[tokio::test]
async fn a_task_whose_deliveries_ran_out_shows_as_stranded() {
    let server = NatsServer::start().await;
    let topology = common::topology(&server, StreamSettings::default()).await;
    let consumer = topology
        .ensure_queue(
            "work",
            &QueueSettings {
                ack_wait: Duration::from_secs(1),
                max_deliver: 1,
                max_in_flight: 100,
            },
        )
        .await
        .expect("queue provisioned");
    let js = raw_jetstream(&server).await;
    publish_near_max(&js, "job", "stranded-1", b'x', 100_000).await;
    // A "worker" that takes the task and dies silently: its only delivery is spent.
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    use futures::StreamExt;
    let delivered = within(WAIT, "the delivery", batch.next())
        .await
        .expect("one message")
        .expect("delivered");
    drop(delivered);
    eventually(WAIT, "the queue to show one stranded task", || {
        let server = &server;
        async move {
            let out = jetq(server, &["--json", "queues"]).await.ok_json();
            let work = out["queues"]
                .as_array()?
                .iter()
                .find(|q| q["queue"] == "work")?
                .clone();
            (work["stranded"] == 1 && work["pending"] == 0 && work["in_flight"] == 0).then_some(())
        }
    })
    .await;
    let table = jetq(&server, &["queues"]).await;
    table.expect_code(0);
    assert!(table.stdout.contains("STRANDED"), "{}", table.stdout);
}
