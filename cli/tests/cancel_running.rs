//! Cancel of untracked running tasks through worker control (PROTOCOL.md §16) and bulk cancel
//! (`jetq cancel --all`), against a real nats-server: the CLI finds the worker from presence and
//! asks it; the worker terminates the message, tells the handler, and the attempt ends
//! cancelled — not retried, not dead-lettered.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use jetq_cli::tasks::{ListState, PageRequest, TaskFilter};
use jetq_cli::Admin;
use jetq_consumer::{TaskContext, TaskError, WorkerSettings};

/// What the `emails` handler saw.
#[derive(Debug, PartialEq)]
enum Seen {
    /// An attempt of task `id` started (attempt number).
    Started(String, u32),
    /// The handler saw the cancellation: `is_cancelled()` and the cancellation token.
    Cancelled { is_cancelled: bool, token: bool },
}

/// A worker of `Email` tasks whose handler waits for its cancellation (or 60 s) and then
/// returns a *retryable* error: a cancelled attempt must not be retried whatever it returns.
async fn holding_worker(
    server: &NatsServer,
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
) -> jetq_consumer::Worker {
    worker(server)
        .settings(WorkerSettings {
            presence_interval: Duration::from_millis(200),
            ..fast_settings()
        })
        .handler(move |_email: Email, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Seen::Started(ctx.id().to_owned(), ctx.attempt()));
                let token = ctx.cancellation_token();
                tokio::select! {
                    _ = ctx.cancelled() => {
                        let _ = tx.send(Seen::Cancelled {
                            is_cancelled: ctx.is_cancelled(),
                            token: token.is_cancelled(),
                        });
                        Err(TaskError::retry("stopped because cancelled"))
                    }
                    _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(()),
                }
            }
        })
        .build()
        .await
        .expect("worker builds")
}

/// How many tasks workers' presence lists as running (`None` while the listing fails).
async fn listed_running(admin: &Admin) -> Option<usize> {
    let running = TaskFilter {
        state: ListState::Running,
        queue: None,
        task: None,
    };
    let first_page = PageRequest {
        limit: 10,
        after: None,
    };
    let page = admin.tasks(&running, &first_page).await.ok()?;
    Some(page.tasks.len())
}

#[tokio::test]
async fn an_untracked_running_task_cancelled_from_the_cli_ends_cancelled() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("emails", 1000)]).await;
    let producer = producer(&server).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, run) = spawn_worker(holding_worker(&server, tx).await);
    let task = producer
        .enqueue(&Email { to: "hold".into() })
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx, "the task starts").await,
        Seen::Started(task.id.clone(), 1)
    );
    // The CLI asks the worker (found from presence, or by asking every worker of the queue).
    let report = jetq(&server, &["cancel", &task.id, "--yes", "--json"])
        .await
        .ok_json();
    assert_eq!(report["outcome"], "requested", "{report}");
    assert_eq!(report["was"], "running", "{report}");
    let workers = jetq(&server, &["workers", "--json"]).await.ok_json();
    assert_eq!(report["worker"], workers[0]["id"], "{report} {workers}");
    // The handler saw it, through its context and its cancellation token.
    assert_eq!(
        next(&mut rx, "the handler sees the cancellation").await,
        Seen::Cancelled {
            is_cancelled: true,
            token: true
        }
    );
    // Terminated: gone from the task stream, nothing pending or awaiting an ack, no dead
    // letter, and the handler never starts again.
    let js = raw_jetstream(&server).await;
    eventually(WAIT, "the cancelled task leaves the task stream", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
    let stream = js.get_stream("JETQ_TASKS").await.unwrap();
    let info = stream.consumer_info("worker-emails").await.unwrap().clone();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0, "no dead letter");
    // A second task on the same worker runs (the worker is fine) and is the only start seen.
    let second = producer
        .enqueue(&Email { to: "hold".into() })
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx, "the next task starts").await,
        Seen::Started(second.id.clone(), 1),
        "the cancelled task was not retried"
    );
    // A task the worker does not run (finished) is not found.
    let gone = jetq(&server, &["cancel", &task.id, "--yes", "--json"]).await;
    gone.expect_code(3);
    // Stopped gracefully, so every attempt's ending was handled: the cancelled one ended
    // cancelled, not as a failed attempt (which would have left a failure in its attempt
    // record for the next attempt).
    stop_worker(stop, run).await;
    let attempts = js.get_key_value("JETQ_ATTEMPTS").await.unwrap();
    let sequence = report["sequence"]
        .as_u64()
        .expect("the report has the sequence");
    assert!(
        attempts.get(sequence.to_string()).await.unwrap().is_none(),
        "the cancelled attempt was recorded as a failure"
    );
}

#[tokio::test]
async fn bulk_cancel_counts_then_cancels_every_matching_task() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 1000), ("emails", 1000)]).await;
    let producer = producer(&server).await;
    // 20 pending tasks of `work` (no worker pulls it) and one delayed.
    for n in 0..20 {
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
    // One running untracked `emails` task.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, run) = spawn_worker(holding_worker(&server, tx).await);
    let held = producer
        .enqueue(&Email { to: "hold".into() })
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx, "the emails task starts").await,
        Seen::Started(held.id.clone(), 1)
    );
    let admin = admin(&server).await;
    eventually(WAIT, "presence lists the running task", || {
        let admin = admin.clone();
        async move { (listed_running(&admin).await? == 1).then_some(()) }
    })
    .await;

    // The dry run counts by state; nothing changes.
    let counted = jetq(&server, &["cancel", "--all", "--dry-run", "--json"])
        .await
        .ok_json();
    assert_eq!(counted["matched"], 22, "{counted}");
    assert_eq!(counted["by_state"]["pending"], 20, "{counted}");
    assert_eq!(counted["by_state"]["delayed"], 1, "{counted}");
    assert_eq!(counted["by_state"]["running"], 1, "{counted}");
    assert_eq!(counted["dry_run"], true);
    // A filter narrows it.
    let narrowed = jetq(
        &server,
        &[
            "cancel",
            "--all",
            "--queue",
            "work",
            "--state",
            "pending",
            "--dry-run",
            "--json",
        ],
    )
    .await
    .ok_json();
    assert_eq!(narrowed["matched"], 20, "{narrowed}");
    // Without --yes (and no terminal) it asks, so it refuses; nothing changed.
    jetq(&server, &["cancel", "--all", "--queue", "work"])
        .await
        .expect_code(2);
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 21);
    // Dead letters are not tasks to cancel.
    jetq(&server, &["cancel", "--all", "--state", "dead", "--yes"])
        .await
        .expect_code(2);

    let report = jetq(&server, &["cancel", "--all", "--yes", "--json"])
        .await
        .ok_json();
    assert_eq!(report["matched"], 22, "{report}");
    assert_eq!(report["cancelled"], 22, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["by_outcome"]["deleted"], 21, "{report}");
    assert_eq!(report["by_outcome"]["requested"], 1, "{report}");
    assert_eq!(
        next(&mut rx, "the running task's handler is told").await,
        Seen::Cancelled {
            is_cancelled: true,
            token: true
        }
    );
    // None left to run: both streams empty, nothing pending.
    eventually(WAIT, "the task stream is empty", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
    assert_eq!(stream_len(&js, "JETQ_DELAYED").await, 0);
    assert_eq!(stream_len(&js, "JETQ_DEAD").await, 0);
    // The worker's presence record lists the cancelled task until its next update: a cancel
    // run before that matched it as running and failed to delete its gone message (seen once
    // in CI). Wait for presence to drop it, as the start of this test waited for it to list it.
    eventually(WAIT, "presence no longer lists the cancelled task", || {
        let admin = admin.clone();
        async move { (listed_running(&admin).await? == 0).then_some(()) }
    })
    .await;
    let again = jetq(&server, &["cancel", "--all", "--yes", "--json"])
        .await
        .ok_json();
    assert_eq!(again["matched"], 0, "{again}");
    stop_worker(stop, run).await;
}

#[tokio::test]
async fn a_delivered_task_no_worker_answers_for_is_deleted_or_refused_when_presence_lists_it() {
    init_logs();
    let server = NatsServer::start().await;
    let topology = provision(&server, &[("work", 1000)]).await;
    let producer = producer(&server).await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let task = producer
            .enqueue(&Job {
                n,
                note: String::new(),
            })
            .await
            .unwrap();
        ids.push((task.id, task.sequence));
    }
    // Both delivered on the queue's durable and never acked: in flight, with no worker that
    // could be asked (as after a worker died, or one without presence).
    let js = raw_jetstream(&server).await;
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("JETQ_TASKS")
        .await
        .unwrap()
        .get_consumer("worker-work")
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(2).messages().await.unwrap();
    let mut held = Vec::new();
    while let Some(message) = within(WAIT, "a delivery", batch.next()).await {
        held.push(message.unwrap());
    }
    assert_eq!(held.len(), 2);

    // The second is listed as running by a worker whose record is there but which does not
    // answer (stopped, hung, or older than protocol 1.10): refused, naming it.
    let presence = jetq_contract::presence::ensure_bucket(&topology)
        .await
        .unwrap();
    // Written as JSON, as any writer would (PROTOCOL §14).
    let worker_id = "gone-1-01JQ7ZQ4W0WORKER000000000";
    let now = jetq_contract::time::now();
    let record = serde_json::json!({
        "id": worker_id, "host": "gone", "pid": 1, "version": "0.1.0", "prefix": "jetq",
        "queues": ["work"], "concurrency": 1, "started_at": now, "heartbeat_at": now,
        "running": [{"id": ids[1].0, "queue": "work", "task": "job", "sequence": ids[1].1,
                     "started_at": now, "attempt": 1}],
        "running_count": 1,
    });
    presence
        .put(worker_id, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();
    let refused = jetq(&server, &["cancel", &ids[1].0, "--yes", "--json"]).await;
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("does not answer cancel requests")
            && refused.stderr.contains(worker_id),
        "{}",
        refused.stderr
    );

    // The first: delivered, no worker runs it that could be asked: deleted, marked raced.
    let report = jetq(&server, &["cancel", &ids[0].0, "--yes", "--json"])
        .await
        .ok_json();
    assert_eq!(report["outcome"], "deleted", "{report}");
    assert_eq!(report["was"], "in_flight", "{report}");
    assert_eq!(report["raced"], true, "{report}");
    let stream = js.get_stream("JETQ_TASKS").await.unwrap();
    assert!(stream.get_raw_message(ids[0].1).await.is_err(), "deleted");
    assert!(stream.get_raw_message(ids[1].1).await.is_ok(), "kept");
}
