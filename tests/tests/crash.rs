//! Crashes: a worker process killed with SIGKILL mid-task, a crash during the final attempt,
//! deliveries exhausted without any worker recording a result, and the server killed during
//! enqueue. Nothing acknowledged is lost.

mod common;

use std::{collections::HashSet, time::Duration};

use futures::StreamExt;
use jetq_consumer::{TaskContext, WorkerSettings};
use jetq_contract::{headers, FailureRecord, QueueSettings, StreamSettings, Subjects, Topology};
use jetq_producer::EnqueueOptions;
use jetq_tests::*;
use tokio::process::Child;

/// Starts the `test_worker` binary against the server and waits until it is pulling.
async fn start_worker_process(
    server: &NatsServer,
    name: &str,
    ready: &mut async_nats::Subscriber,
) -> Child {
    let env = [
        ("JETQ_ACK_WAIT", "2s"),
        ("JETQ_FETCH_EXPIRES", "500ms"),
        ("JETQ_CONCURRENCY", "2"),
    ];
    common::start_test_worker(server, name, &env, ready).await
}

/// Parses `"<worker> <n> <attempt> <id>"` reports.
fn report(message: &async_nats::Message) -> (String, u64, u32) {
    let text = String::from_utf8_lossy(&message.payload).to_string();
    let parts: Vec<&str> = text.split(' ').collect();
    (
        parts[0].to_owned(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    )
}

#[tokio::test]
async fn a_worker_killed_mid_task_loses_nothing_and_another_worker_finishes_it() {
    init_logs();
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    let mut done = observer.subscribe("test.done").await.unwrap();
    observer.flush().await.unwrap();

    let mut first = start_worker_process(&server, "first", &mut ready).await;
    producer(&server)
        .await
        .enqueue(&Job {
            n: 1,
            note: "sleep:2000".into(),
        })
        .await
        .unwrap();
    let (who, n, attempt) = report(
        &within(WAIT, "first worker to start the task", started.next())
            .await
            .unwrap(),
    );
    assert_eq!((who.as_str(), n, attempt), ("first", 1, 1));
    first.start_kill().expect("SIGKILL");
    within(WAIT, "first worker to die", first.wait())
        .await
        .unwrap();

    let _second = start_worker_process(&server, "second", &mut ready).await;
    let (who, n, attempt) = report(
        &within(WAIT, "redelivery to the second worker", started.next())
            .await
            .unwrap(),
    );
    assert_eq!((who.as_str(), n, attempt), ("second", 1, 2));
    let (who, n, _) = report(
        &within(WAIT, "second worker to finish", done.next())
            .await
            .unwrap(),
    );
    assert_eq!(
        (who.as_str(), n),
        ("second", 1),
        "the killed worker never finished it"
    );
    let js = raw_jetstream(&server).await;
    common::await_drained(&js).await;
}

#[tokio::test]
async fn a_crash_during_the_final_attempt_ends_in_dead_letters() {
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    observer.flush().await.unwrap();

    let mut first = start_worker_process(&server, "first", &mut ready).await;
    let enqueued = producer(&server)
        .await
        .enqueue_with(
            &Job {
                n: 5,
                note: "sleep:60000".into(),
            },
            EnqueueOptions::new().max_attempts(1),
        )
        .await
        .unwrap();
    within(WAIT, "the final attempt to start", started.next())
        .await
        .unwrap();
    first.start_kill().expect("SIGKILL");
    within(WAIT, "first worker to die", first.wait())
        .await
        .unwrap();

    let _second = start_worker_process(&server, "second", &mut ready).await;
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    assert_eq!(
        header(&dead[0], headers::TASK_ID).as_deref(),
        Some(enqueued.id.as_str())
    );
    assert_eq!(
        header(&dead[0], headers::DEAD_REASON).as_deref(),
        Some("exhausted")
    );
    let record: FailureRecord =
        serde_json::from_str(&header(&dead[0], headers::FAILURE).unwrap()).unwrap();
    assert!(record.error.contains("worker stopped"), "{}", record.error);
    // The reserve delivery dead-lettered it without running it again.
    let rerun = tokio::time::timeout(Duration::from_millis(500), started.next()).await;
    assert!(rerun.is_err(), "the task ran again: {rerun:?}");
}

#[tokio::test]
async fn the_sweeper_dead_letters_a_task_whose_deliveries_ran_out() {
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let topology = Topology::new(js.clone(), Subjects::default(), StreamSettings::default());
    topology.ensure_streams().await.unwrap();
    topology
        .ensure_queue(
            "work",
            &QueueSettings {
                max_deliver: 2,
                ..QueueSettings::default()
            },
        )
        .await
        .unwrap();
    let enqueued = producer(&server)
        .await
        .enqueue(&Job {
            n: 3,
            note: "stranded".into(),
        })
        .await
        .unwrap();

    // Two deliveries that never produce a result (as if each worker died), via the raw durable.
    common::strand_next_task(&js, "worker-work", 2).await;
    assert_eq!(
        stream_len(&js, "JETQ_TASKS").await,
        1,
        "the server leaves it stranded"
    );

    // Any worker runs the sweeper; this one serves another queue and leaves worker-work alone.
    let worker = worker(&server)
        .settings(WorkerSettings { ..fast_settings() })
        .handler(|_e: Email, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let dead = dead_letters(&js, 1).await;
    assert_eq!(
        header(&dead[0], headers::DEAD_REASON).as_deref(),
        Some("deliveries-exhausted")
    );
    assert_eq!(
        header(&dead[0], headers::TASK_ID).as_deref(),
        Some(enqueued.id.as_str())
    );
    assert_eq!(header(&dead[0], headers::ATTEMPTS).as_deref(), Some("2"));
    let job: Job = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(job.note, "stranded");
    common::await_drained(&js).await;
    let _ = stop.send(());
}

#[tokio::test]
async fn no_acknowledged_task_is_lost_when_the_server_is_killed_during_enqueue() {
    let mut server = NatsServer::start().await;
    let producer = jetq_producer::Producer::builder()
        .connection(connection(&server))
        .publish_attempts(1)
        .connect()
        .await
        .unwrap();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let enqueuer = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut errors = 0;
            for n in 0..400u64 {
                match producer
                    .enqueue(&Job {
                        n,
                        note: String::new(),
                    })
                    .await
                {
                    Ok(enqueued) => acked_tx.send(enqueued.id).unwrap(),
                    Err(_) => errors += 1,
                }
            }
            errors
        })
    };
    let mut acked = HashSet::new();
    while acked.len() < 50 {
        acked.insert(next(&mut acked_rx, "acks before the kill").await);
    }
    server.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await;
    let errors = within(
        Duration::from_secs(120),
        "the enqueue loop to finish",
        enqueuer,
    )
    .await
    .unwrap();
    while let Ok(id) = acked_rx.try_recv() {
        acked.insert(id);
    }
    assert!(
        acked.len() > 50,
        "enqueue recovered after the restart ({} acked, {errors} errors)",
        acked.len()
    );
    let js = raw_jetstream(&server).await;
    let stored: HashSet<String> = stream_messages(&js, "JETQ_TASKS")
        .await
        .iter()
        .filter_map(|m| header(m, headers::MSG_ID))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged tasks lost: {lost:?}",
        lost.len()
    );
}
