//! The chunked export end to end (docs/WORKFLOWS.md, examples/README.md): a real nats-server,
//! the web app, the worker built by `jetq_examples::worker::build` and a real SMTP receiver
//! (aiosmtpd, as in `seed.rs`). `POST /chunked-exports` enqueues a chord of chunks; the chunks'
//! results (over 16 KiB each) reach the assembler by object-store reference; the assembled file
//! has every row exactly once, in order; the mail with its link arrives once.

use std::time::Duration;

use jetq_consumer::{Worker, WorkerSettings};
use jetq_contract::async_nats::jetstream;
use jetq_examples::{
    chunked::{ChunkedExportResponse, ChunkedExportStatus, EXPORT_MAIL_SUBJECT},
    http_client,
    smtp_sink::SmtpSink,
    web,
    worker::{self, csv_line, Activity, SmtpConfig, WorkerConfig, CSV_HEADER},
};
use jetq_harness::{eventually, free_port, NatsServer};
use jetq_producer::Producer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_export_is_assembled_in_order_by_a_chord_and_its_link_is_mailed() {
    let nats = NatsServer::start().await;
    let python = jetq_examples::smtp_sink::find_python("JETQ_TEST_SMTP_PYTHON")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let sink = SmtpSink::start(&python, free_port())
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let producer = Producer::builder()
        .url(nats.url())
        .connect()
        .await
        .expect("producer connects");
    let stop = CancellationToken::new();
    let config = WorkerConfig {
        smtp: SmtpConfig {
            port: sink.port(),
            timeout: Duration::from_secs(5),
            ..SmtpConfig::default()
        },
        activity: Activity::default(),
        email_limits: jetq_examples::flow::email_limits().expect("email limits"),
        producer: Some(producer.clone()),
        ..WorkerConfig::default()
    };
    let builder = Worker::builder().url(nats.url()).settings(WorkerSettings {
        fetch_expires: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(5),
        concurrency: 4,
        ..WorkerSettings::default()
    });
    let worker = worker::build(builder, config)
        .build()
        .await
        .expect("worker builds");
    let worker = tokio::spawn(worker.run_until(stop.clone().cancelled_owned()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = listener.local_addr().unwrap();
    let serve = axum::serve(listener, web::router(producer.clone()))
        .with_graceful_shutdown(stop.clone().cancelled_owned());
    let server = tokio::spawn(async move { serve.await.expect("web app serves") });

    // 5,000 rows in chunks of 700: 7 of ~21 KiB (stored by reference) and one of 100 rows.
    let rows = 5_000u32;
    let answer = http_client::post_json(
        web,
        "/chunked-exports",
        &json!({ "rows": rows, "chunk_rows": 700, "email": "Ada@Example.com" }),
        REQUEST_TIMEOUT,
    )
    .await
    .expect("POST /chunked-exports");
    assert_eq!(answer.status, 202, "{answer:?}");
    let export: ChunkedExportResponse = answer.json().expect("an answer");
    assert_eq!(export.chunks, 8);

    let mail = eventually(Duration::from_secs(60), "the mail with the link", || {
        let mails = sink.messages_to("ada@example.com");
        async move { mails.into_iter().next() }
    })
    .await;
    assert_eq!(
        mail.header("Subject"),
        Some(EXPORT_MAIL_SUBJECT),
        "{mail:?}"
    );
    let link = format!("/chunked-exports/{}/csv", export.export_id);
    assert!(mail.body.contains(&link), "{mail:?}");

    let answer = http_client::get(web, &export.status_url, REQUEST_TIMEOUT)
        .await
        .expect("GET status");
    assert_eq!(answer.status, 200, "{answer:?}");
    let status: ChunkedExportStatus = answer.json().expect("a status");
    assert_eq!((status.chunks, status.succeeded, status.dead), (8, 8, 0));
    let assembled = status.assembled.expect("assembled");
    assert_eq!((assembled.rows, assembled.chunks), (rows, 8));
    assert_eq!(
        assembled.by_reference, 7,
        "the 700-row chunks are over 16 KiB"
    );
    assert_eq!(status.csv_url.as_deref(), Some(link.as_str()));

    let download = http_client::get(web, &link, REQUEST_TIMEOUT)
        .await
        .expect("GET csv");
    assert_eq!(download.status, 200, "{download:?}");
    let mut expected = format!("{CSV_HEADER}\n");
    expected.extend((1..=rows).map(csv_line));
    // Every row exactly once, in order.
    assert_eq!(download.body.len(), expected.len());
    assert!(download.body == expected, "the assembled file differs");
    assert_eq!(assembled.bytes, expected.len() as u64);

    // One mail, however the steps ran.
    let js = jetstream::new(producer.client().clone());
    eventually(Duration::from_secs(10), "the emails queue idle", || async {
        let stream = js.get_stream("JETQ_TASKS").await.ok()?;
        let mut consumer: jetstream::consumer::PullConsumer =
            stream.get_consumer("worker-emails").await.ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
    assert_eq!(
        sink.messages_to("ada@example.com").len(),
        1,
        "{}",
        sink.logs()
    );

    stop.cancel();
    for task in [worker, server] {
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("stops within 20 s")
            .expect("did not panic");
    }
}
