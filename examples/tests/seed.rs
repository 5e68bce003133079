//! The seed scenario end to end: a real nats-server (jetq-harness), the web app served on a
//! free port, the worker built by `jetq_examples::worker::build`, and a real SMTP receiver
//! (aiosmtpd from `$JETQ_TEST_SMTP_PYTHON` or `<repo>/.tools/venv/bin/python`; run
//! `scripts/ensure-nats-server.sh` to install it).

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use jetq_consumer::{Worker, WorkerSettings};
use jetq_contract::{async_nats::jetstream, StreamSettings, Subjects};
use jetq_examples::{
    demo::{self, DemoOptions},
    http_client::{self, HttpResponse},
    smtp_sink::{self, SmtpSink},
    web::{self, ErrorBody, ExportResponse, SignupResponse, WELCOME_SUBJECT},
    worker::{self, Activity, AttemptStatus, ExportConfig, SmtpConfig, WorkerConfig, CSV_HEADER},
};
use jetq_harness::{eventually, free_port, NatsServer};
use jetq_producer::Producer;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An enqueue is one acked publish: far below this even on a loaded machine.
const QUICK: Duration = Duration::from_secs(2);
const ACK_WAIT: Duration = Duration::from_secs(2);

/// The Python that runs aiosmtpd; fails the test loudly if there is none.
async fn smtp_python() -> PathBuf {
    smtp_sink::find_python("JETQ_TEST_SMTP_PYTHON")
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

async fn start_sink(port: u16) -> SmtpSink {
    SmtpSink::start(&smtp_python().await, port)
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

/// The web app and the worker of the scenario, against one nats-server.
struct App {
    web: SocketAddr,
    producer: Producer,
    activity: Activity,
    exports: tempfile::TempDir,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    async fn start(nats: &NatsServer, smtp_port: u16) -> App {
        Self::start_with(nats, smtp_port, StreamSettings::default(), true).await
    }

    async fn start_with(
        nats: &NatsServer,
        smtp_port: u16,
        streams: StreamSettings,
        with_worker: bool,
    ) -> App {
        let producer = Producer::builder()
            .url(nats.url())
            .streams(streams.clone())
            .connect()
            .await
            .expect("producer connects");
        let activity = Activity::default();
        let exports = tempfile::tempdir().expect("export dir");
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        if with_worker {
            let config = WorkerConfig {
                smtp: SmtpConfig {
                    port: smtp_port,
                    timeout: Duration::from_secs(5),
                    ..SmtpConfig::default()
                },
                exports: ExportConfig {
                    dir: exports.path().to_path_buf(),
                },
                activity: activity.clone(),
            };
            let settings = WorkerSettings {
                ack_wait: ACK_WAIT,
                fetch_expires: Duration::from_secs(1),
                shutdown_grace: Duration::from_secs(5),
                concurrency: 4,
                ..WorkerSettings::default()
            };
            let builder = Worker::builder()
                .url(nats.url())
                .streams(streams)
                .settings(settings);
            let worker = worker::build(builder, config)
                .build()
                .await
                .expect("worker builds");
            tasks.push(tokio::spawn(
                worker.run_until(stop.clone().cancelled_owned()),
            ));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let web = listener.local_addr().unwrap();
        let serve = axum::serve(listener, web::router(producer.clone()))
            .with_graceful_shutdown(stop.clone().cancelled_owned());
        tasks.push(tokio::spawn(async move {
            serve.await.expect("web app serves");
        }));
        App {
            web,
            producer,
            activity,
            exports,
            stop,
            tasks,
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> (HttpResponse, Duration) {
        let started = Instant::now();
        let answer = http_client::post_json(self.web, path, &body, REQUEST_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("POST {path}: {err}"));
        (answer, started.elapsed())
    }

    async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> HttpResponse {
        http_client::post(self.web, path, content_type, body, REQUEST_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("POST {path}: {err}"))
    }

    async fn signup(&self, email: &str) -> (SignupResponse, Duration) {
        let (answer, took) = self.post("/signup", json!({ "email": email })).await;
        assert_eq!(answer.status, 202, "{answer:?}");
        (answer.json().expect("signup answer"), took)
    }

    fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.producer.client().clone())
    }

    /// The durable consumer of `queue`'s current info.
    async fn consumer_info(&self, queue: &str) -> jetstream::consumer::Info {
        let subjects = Subjects::default();
        let stream = self
            .jetstream()
            .get_stream(subjects.tasks_stream())
            .await
            .expect("task stream");
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(&subjects.durable(queue))
            .await
            .expect("queue consumer");
        consumer.info().await.expect("consumer info").clone()
    }

    /// Waits until every task of `queue` has been acked (none pending, none in flight).
    async fn wait_idle(&self, queue: &str) {
        let app = self;
        eventually(
            Duration::from_secs(30),
            &format!("queue {queue} idle"),
            move || async move {
                let info = app.consumer_info(queue).await;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            },
        )
        .await
    }

    async fn stream_messages(&self, name: &str) -> u64 {
        let mut stream = self.jetstream().get_stream(name).await.expect("stream");
        stream.info().await.expect("stream info").state.messages
    }

    async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the web app and the worker stop within 20 s")
                .expect("task did not panic");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_answers_at_once_and_the_worker_mails_exactly_once() {
    let nats = NatsServer::start().await;
    let sink = start_sink(free_port()).await;
    let app = App::start(&nats, sink.port()).await;

    let (first, took) = app.signup("Ada@Example.com").await;
    assert!(took < QUICK, "signup took {took:?}");
    assert_eq!(first.task_id, "signup:ada@example.com");
    assert!(!first.duplicate);
    // Repeated at once: the server drops it inside the duplicate window.
    let (repeat, _) = app.signup("ada@example.com").await;
    assert!(repeat.duplicate, "{repeat:?}");
    assert_eq!(repeat.task_id, first.task_id);

    let mail = eventually(
        Duration::from_secs(30),
        "the welcome mail at the SMTP sink",
        || {
            let mails = sink.messages_to("ada@example.com");
            async move { mails.into_iter().next() }
        },
    )
    .await;
    assert_eq!(mail.header("Subject"), Some(WELCOME_SUBJECT), "{mail:?}");
    assert!(
        mail.header("To")
            .is_some_and(|to| to.contains("ada@example.com")),
        "{mail:?}"
    );
    let output = sink.output();
    assert!(output.contains("ada@example.com"), "{output}");
    assert!(output.contains(WELCOME_SUBJECT), "{output}");

    // Repeated after delivery: still a duplicate of the acked task.
    let (late, _) = app.signup("ada@example.com").await;
    assert!(late.duplicate, "{late:?}");

    app.wait_idle("emails").await;
    assert_eq!(
        sink.messages_to("ada@example.com").len(),
        1,
        "{}",
        sink.logs()
    );
    let attempts = app.activity.attempts_of(&first.task_id);
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].status, AttemptStatus::Succeeded);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_outliving_ack_wait_is_written_once_without_redelivery() {
    let nats = NatsServer::start().await;
    let app = App::start(&nats, free_port()).await;

    let (answer, took) = app
        .post("/exports", json!({ "rows": 50, "row_delay_ms": 100 }))
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert!(took < QUICK, "export request took {took:?}");
    let export: ExportResponse = answer.json().unwrap();

    let path = worker::export_path(app.exports.path(), &export.export_id);
    eventually(Duration::from_secs(60), "the CSV export", || {
        let exists = path.exists();
        async move { exists.then_some(()) }
    })
    .await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 51, "{text}");
    assert_eq!(text.lines().next(), Some(CSV_HEADER));
    let leftovers: Vec<_> = std::fs::read_dir(app.exports.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");

    app.wait_idle("exports").await;
    let attempts = app.activity.attempts_of(&export.task_id);
    assert_eq!(attempts.len(), 1, "ran more than once: {attempts:#?}");
    assert_eq!(attempts[0].attempt, 1);
    assert_eq!(attempts[0].status, AttemptStatus::Succeeded);
    assert!(
        attempts[0].duration > 2 * ACK_WAIT,
        "the export must outlive ack_wait: {attempts:#?}"
    );
    let info = app.consumer_info("exports").await;
    assert_eq!(info.num_redelivered, 0, "{info:#?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_is_retried_while_smtp_is_down_and_delivered_once_it_is_up() {
    let nats = NatsServer::start().await;
    let smtp_port = free_port();
    let app = App::start(&nats, smtp_port).await;

    // The request does not depend on SMTP: it answers while the server is down.
    let (signup, took) = app.signup("grace@example.com").await;
    assert!(took < QUICK, "signup took {took:?}");

    let failed = eventually(
        Duration::from_secs(30),
        "a failed second attempt while SMTP is down",
        || {
            let attempts = app.activity.attempts_of(&signup.task_id);
            async move {
                attempts
                    .into_iter()
                    .find(|a| a.attempt >= 2 && matches!(a.status, AttemptStatus::Failed { .. }))
            }
        },
    )
    .await;
    let AttemptStatus::Failed { error, fatal } = &failed.status else {
        unreachable!()
    };
    assert!(!fatal, "a refused connection must be retryable: {error}");

    let sink = start_sink(smtp_port).await;
    eventually(Duration::from_secs(60), "the mail once SMTP is up", || {
        let count = sink.messages_to("grace@example.com").len();
        async move { (count >= 1).then_some(()) }
    })
    .await;
    app.wait_idle("emails").await;

    let attempts = app.activity.attempts_of(&signup.task_id);
    let succeeded: Vec<_> = attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Succeeded)
        .collect();
    assert_eq!(succeeded.len(), 1, "{attempts:#?}");
    assert!(succeeded[0].attempt >= 3, "{attempts:#?}");
    assert_eq!(sink.messages_to("grace@example.com").len(), 1);
    let mail = &sink.messages_to("grace@example.com")[0];
    assert_eq!(mail.header("Subject"), Some(WELCOME_SUBJECT));
    let dead = app
        .stream_messages(&Subjects::default().dead_stream())
        .await;
    assert_eq!(dead, 0, "nothing may be dead-lettered");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_json_errors_and_enqueue_nothing() {
    let nats = NatsServer::start().await;
    let app = App::start_with(&nats, free_port(), StreamSettings::default(), false).await;

    let cases: Vec<(&str, &str, &str, u16)> = vec![
        ("/signup", "application/json", "{\"email\": ", 400),
        (
            "/signup",
            "text/plain",
            "{\"email\": \"a@example.com\"}",
            415,
        ),
        ("/signup", "application/json", "{\"email\": 42}", 422),
        ("/signup", "application/json", "{}", 422),
        (
            "/signup",
            "application/json",
            "{\"email\": \"not-an-email\"}",
            422,
        ),
        ("/exports", "application/json", "[1, 2", 400),
        ("/exports", "application/json", "{\"rows\": \"many\"}", 422),
        ("/exports", "application/json", "{\"rows\": 0}", 422),
        (
            "/exports",
            "application/json",
            "{\"rows\": 100000, \"row_delay_ms\": 100000}",
            422,
        ),
    ];
    for (path, content_type, body, status) in cases {
        let answer = app.post_raw(path, content_type, body).await;
        assert_eq!(answer.status, status, "{path} {body}: {answer:?}");
        let error: ErrorBody = answer
            .json()
            .unwrap_or_else(|err| panic!("{path} {body}: not a JSON error ({err}): {answer:?}"));
        assert!(!error.error.is_empty());
    }
    let queued = app
        .stream_messages(&Subjects::default().tasks_stream())
        .await;
    assert_eq!(queued, 0, "an invalid request enqueued a task");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_task_stream_answers_503_with_retry_after() {
    let nats = NatsServer::start().await;
    let streams = StreamSettings {
        stream_max_msgs: 1,
        ..StreamSettings::default()
    };
    // No worker: the first export stays queued and fills the stream.
    let app = App::start_with(&nats, free_port(), streams, false).await;
    let (first, _) = app.post("/exports", json!({ "rows": 1 })).await;
    assert_eq!(first.status, 202, "{first:?}");
    let (full, _) = app.post("/exports", json!({ "rows": 1 })).await;
    assert_eq!(full.status, 503, "{full:?}");
    assert_eq!(
        full.header("retry-after"),
        Some(web::RETRY_AFTER_SECS.to_string().as_str())
    );
    let error: ErrorBody = full.json().unwrap();
    assert!(error.error.contains("full"), "{error:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_whole_scenario() {
    let data = tempfile::tempdir().unwrap();
    let python = smtp_python().await;
    let options = DemoOptions {
        connection: Default::default(),
        external_nats: false,
        nats_server: Some(jetq_harness::pinned_server_binary()),
        data_dir: data.path().join("nats"),
        export_dir: data.path().join("exports"),
        python: Some(python),
        export_rows: 30,
        row_delay: Duration::from_millis(100),
        ack_wait: Duration::from_secs(2),
        timeout: Duration::from_secs(60),
        verbose: false,
    };
    let report = demo::run(options)
        .await
        .unwrap_or_else(|err| panic!("demo failed: {err}"));
    let duplicates: Vec<bool> = report.signups.iter().map(|s| s.duplicate).collect();
    assert_eq!(duplicates, [false, false, true]);
    assert_eq!(report.emails.len(), 2, "{report}");
    assert_eq!(report.csv_lines, 31);
    assert_eq!(report.export_attempts().len(), 1, "{report}");
    let summary = report.to_string();
    assert!(summary.contains("Subject: Welcome to jetq!"), "{summary}");
    assert!(summary.contains(&report.csv_path.display().to_string()));
}
