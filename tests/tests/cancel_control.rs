//! Worker control (PROTOCOL.md §16) with a real worker process: a cancel request for the
//! untracked task it runs is answered `found` only after the task was terminated, so the task is
//! gone for good even when the worker is killed right after it answered (the redelivery race).
//! The handler of `test_worker` ignores its context (it sleeps), as a handler may.

use std::process::Stdio;

use futures::{StreamExt, TryStreamExt};
use jetq_contract::{
    control::{cancel_subject, CancelReply, CancelRequest},
    presence::WorkerRecord,
};
use jetq_tests::*;
use tokio::process::Command;

#[tokio::test]
async fn a_cancelled_task_is_not_redelivered_when_its_worker_is_killed_after_answering() {
    init_logs();
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    observer.flush().await.unwrap();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_test_worker"))
        .env("JETQ_NATS_URL", server.url())
        .env("JETQ_ACK_WAIT", "2s")
        .env("JETQ_FETCH_EXPIRES", "500ms")
        .env("JETQ_CONCURRENCY", "2")
        .env("JETQ_PRESENCE_INTERVAL", "300ms")
        .env("TEST_WORKER_NAME", "doomed")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("test_worker starts");
    within(WAIT, "the worker pulls", ready.next()).await;

    let producer = producer(&server).await;
    let task = producer
        .enqueue(&Job {
            n: 1,
            note: "sleep:60000".into(),
        })
        .await
        .unwrap();
    let line = within(WAIT, "the task starts", started.next())
        .await
        .expect("started");
    assert!(
        String::from_utf8_lossy(&line.payload).ends_with(&task.id),
        "{line:?}"
    );
    let js = raw_jetstream(&server).await;
    let store = js.get_key_value("JETQ_WORKERS").await.unwrap();
    let record: WorkerRecord = eventually(WAIT, "presence lists the task", || {
        let store = store.clone();
        let id = task.id.clone();
        async move {
            let keys: Vec<String> = store.keys().await.ok()?.try_collect().await.ok()?;
            for key in keys {
                let value = store.get(&key).await.ok()??;
                let record: WorkerRecord = serde_json::from_slice(&value).ok()?;
                if record.running.iter().any(|t| t.id == id) {
                    return Some(record);
                }
            }
            None
        }
    })
    .await;

    // A request for a task it does not run: not found.
    let ask = |id: &str, sequence: u64| {
        let body = serde_json::to_vec(&CancelRequest {
            id: id.to_owned(),
            sequence,
            by: Some("test".into()),
        })
        .unwrap();
        let subject = cancel_subject("jetq", &record.id);
        let observer = observer.clone();
        async move {
            let reply = within(
                WAIT,
                "the worker answers",
                observer.request(subject, body.into()),
            )
            .await
            .expect("a reply");
            serde_json::from_slice::<CancelReply>(&reply.payload).expect("a reply body")
        }
    };
    assert!(!ask("no-such-task", 0).await.found);
    let reply = ask(&task.id, task.sequence).await;
    assert!(reply.found, "{reply:?}");
    assert_eq!(reply.sequence, task.sequence);
    assert_eq!(reply.attempt, 1);
    // Killed right after it answered, its handler still sleeping.
    worker.kill().await.expect("SIGKILL");

    // The task was terminated before the answer: gone from the work-queue stream, nothing
    // awaiting an ack, so no redelivery can run it again.
    let stream = js.get_stream("JETQ_TASKS").await.unwrap();
    eventually(WAIT, "the task leaves the task stream", || {
        let stream = stream.clone();
        async move {
            stream
                .get_raw_message(task.sequence)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    let mut stream = stream;
    let info = stream.consumer_info("worker-work").await.unwrap().clone();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
}
