//! docs/PROTOCOL.md is enough to enqueue: a task published with a plain async-nats client and no
//! jetq code runs in a jetq worker, with its id, attempt overrides and enqueue time honoured.

use std::time::Duration;

use async_nats::HeaderMap;
use jetq_consumer::TaskContext;
use jetq_tests::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn a_raw_async_nats_publish_is_run_by_a_jetq_worker() {
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The worker provisions the streams, as it does in production.
    let worker = worker(&server)
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send((
                    job,
                    ctx.id().to_owned(),
                    ctx.max_attempts(),
                    ctx.timeout(),
                    ctx.enqueued_at(),
                ))
                .ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    // What another language would do, following docs/PROTOCOL.md only.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "order-1234-confirmation");
    headers.insert("Jetq-Enqueued-At", "2026-11-27T07:00:00.000000Z");
    headers.insert("Jetq-Max-Attempts", "2");
    headers.insert("Jetq-Timeout-Ms", "1500");
    let ack = js
        .publish_with_headers(
            "jetq.task.work.job",
            headers,
            r#"{"n": 42, "note": "from python"}"#.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, "JETQ_TASKS");

    let (job, id, max_attempts, timeout, enqueued_at) = next(&mut rx, "the raw task to run").await;
    assert_eq!(
        job,
        Job {
            n: 42,
            note: "from python".into()
        }
    );
    assert_eq!(id, "order-1234-confirmation");
    assert_eq!(max_attempts, 2);
    assert_eq!(timeout, Duration::from_millis(1500));
    assert_eq!(
        enqueued_at,
        jetq_contract::time::parse("2026-11-27T07:00:00Z").unwrap()
    );
    let _ = stop.send(());
}
