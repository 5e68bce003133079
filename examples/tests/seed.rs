//! The seed scenario end to end: a real nats-server (jetq-harness), the web app served on a
//! free port, the worker built by `jetq_examples::worker::build`, and a real SMTP receiver
//! (aiosmtpd from `$JETQ_TEST_SMTP_PYTHON` or `<repo>/.tools/venv/bin/python`; run
//! `scripts/ensure-nats-server.sh` to install it). Exports are followed through the web app
//! (status, live progress over SSE, cancellation) and downloaded from it: the worker stores the
//! CSV in the artifact store, no disk is shared.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use jetq_consumer::{Worker, WorkerSettings};
use jetq_contract::status::TaskState;
use jetq_contract::{async_nats::jetstream, StreamSettings, Subjects};
use jetq_examples::{
    demo::{self, DemoOptions},
    http_client::{self, HttpResponse},
    smtp_sink::{self, SmtpSink},
    web::{
        self, CancelResponse, ErrorBody, ExportResponse, ExportStatus, SignupResponse,
        WELCOME_SUBJECT,
    },
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
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        if with_worker {
            let config = WorkerConfig {
                smtp: SmtpConfig {
                    port: smtp_port,
                    timeout: Duration::from_secs(5),
                    ..SmtpConfig::default()
                },
                // No local copy: exports go to the artifact store only.
                exports: ExportConfig::default(),
                activity: activity.clone(),
                email_limits: jetq_examples::flow::email_limits().expect("email limits"),
                producer: Some(producer.clone()),
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

    async fn get(&self, path: &str) -> HttpResponse {
        http_client::get(self.web, path, REQUEST_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    /// `GET /exports/{id}`.
    async fn export_status(&self, export: &ExportResponse) -> ExportStatus {
        let answer = self.get(&export.status_url).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json().expect("an export status")
    }

    /// Waits until the export reaches a final state and returns that status.
    async fn export_done(&self, export: &ExportResponse, limit: Duration) -> ExportStatus {
        eventually(limit, "the export to finish", || async {
            let status = self.export_status(export).await;
            status.state.is_terminal().then_some(status)
        })
        .await
    }

    /// Enqueues an export and returns the answer.
    async fn export(&self, rows: u32, row_delay_ms: u64) -> ExportResponse {
        let (answer, took) = self
            .post(
                "/exports",
                json!({ "rows": rows, "row_delay_ms": row_delay_ms }),
            )
            .await;
        assert_eq!(answer.status, 202, "{answer:?}");
        assert!(took < QUICK, "export request took {took:?}");
        answer.json().expect("export answer")
    }

    async fn signup(&self, email: &str) -> (SignupResponse, Duration) {
        let (answer, took) = self.post("/signup", json!({ "email": email })).await;
        assert_eq!(answer.status, 202, "{answer:?}");
        (answer.json().expect("signup answer"), took)
    }

    fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.producer.client().clone())
    }

    /// The durable consumer of `queue`'s current info (its `normal` level).
    async fn consumer_info(&self, queue: &str) -> jetstream::consumer::Info {
        self.level_info(queue, jetq_contract::Priority::Normal)
            .await
    }

    /// The current info of the durable of one priority level of `queue`.
    async fn level_info(
        &self,
        queue: &str,
        level: jetq_contract::Priority,
    ) -> jetstream::consumer::Info {
        let subjects = Subjects::default();
        let stream = self
            .jetstream()
            .get_stream(subjects.tasks_stream())
            .await
            .expect("task stream");
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(&subjects.durable_at(queue, level))
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
                // Every level: the signup's welcome mail is `high`.
                for level in jetq_contract::Priority::ALL {
                    let info = app.level_info(queue, level).await;
                    if info.num_pending != 0 || info.num_ack_pending != 0 {
                        return None;
                    }
                }
                Some(())
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
async fn export_outliving_ack_wait_is_stored_once_without_redelivery() {
    let nats = NatsServer::start().await;
    let app = App::start(&nats, free_port()).await;

    let export = app.export(50, 100).await;
    assert_eq!(export.task_id, export.export_id);
    assert_eq!(export.status_url, format!("/exports/{}", export.export_id));

    let done = app.export_done(&export, Duration::from_secs(60)).await;
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.rows, Some(50));
    assert_eq!(done.percent, Some(100.0));
    let csv = app
        .get(done.csv_url.as_deref().expect("a download link"))
        .await;
    assert_eq!(csv.status, 200, "{csv:?}");
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(csv.body.lines().count(), 51, "{}", csv.body);
    assert_eq!(csv.body.lines().next(), Some(CSV_HEADER));
    assert_eq!(done.bytes, Some(csv.body.len() as u64));

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
async fn a_multi_megabyte_export_is_streamed_from_the_object_store_by_the_web_app() {
    let nats = NatsServer::start().await;
    let app = App::start(&nats, free_port()).await;
    const ROWS: u32 = 150_000;
    let export = app.export(ROWS, 0).await;
    let done = app.export_done(&export, Duration::from_secs(120)).await;
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    let expected: String = std::iter::once(format!("{CSV_HEADER}\n"))
        .chain((1..=ROWS).map(worker::csv_line))
        .collect();
    assert!(expected.len() > 3_000_000, "{} bytes", expected.len());
    assert_eq!(done.bytes, Some(expected.len() as u64));

    let csv = http_client::get(
        app.web,
        &format!("/exports/{}/csv", export.export_id),
        Duration::from_secs(60),
    )
    .await
    .expect("the download");
    assert_eq!(csv.status, 200);
    assert_eq!(
        csv.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    assert_eq!(
        csv.header("content-disposition"),
        Some(format!("attachment; filename=\"{}.csv\"", export.export_id).as_str())
    );
    assert_eq!(csv.body.len(), expected.len());
    assert!(
        csv.body == expected,
        "the download differs from the generated CSV"
    );
    app.shutdown().await;
}

/// Reads `GET path` as a server-sent-events stream, returning each `status` event with the
/// moment it arrived, until the server ends the stream.
async fn read_events(web: SocketAddr, path: &str, limit: Duration) -> Vec<(Instant, ExportStatus)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(web).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        let mut parsed = 0;
        let mut events = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            if n == 0 {
                return events;
            }
            text.push_str(&String::from_utf8_lossy(&buffer[..n]));
            // Each event is `event: status\ndata: {json}\n\n`.
            while let Some(start) = text[parsed..].find("data: ") {
                let from = parsed + start + "data: ".len();
                let Some(end) = text[from..].find('\n') else {
                    break;
                };
                let json = &text[from..from + end];
                events.push((
                    Instant::now(),
                    serde_json::from_str(json).expect("an export status"),
                ));
                parsed = from + end;
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the event stream ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_progress_is_pushed_live_over_sse_and_the_page_follows_it() {
    let nats = NatsServer::start().await;
    let app = App::start(&nats, free_port()).await;
    // 50 rows of 60 ms: about 3 s, one progress report per row (2 %).
    let export = app.export(50, 60).await;
    let page = app
        .get(&format!("/exports/{}/page", export.export_id))
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!(
            "new EventSource(\"/exports/{}/events\")",
            export.export_id
        )),
        "{}",
        page.body
    );

    let events = read_events(
        app.web,
        &format!("/exports/{}/events", export.export_id),
        Duration::from_secs(60),
    )
    .await;
    let (finished_at, last) = events.last().cloned().expect("at least the final event");
    assert_eq!(last.state, TaskState::Succeeded, "{events:#?}");
    assert_eq!(
        last.csv_url,
        Some(format!("/exports/{}/csv", export.export_id))
    );
    let progress: Vec<(Instant, f64)> = events
        .iter()
        .filter(|(_, status)| status.state == TaskState::Running)
        .filter_map(|(at, status)| status.percent.map(|p| (*at, p)))
        .collect();
    assert!(progress.len() >= 5, "progress events: {events:#?}");
    assert!(
        progress.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "progress arrives in order: {progress:?}"
    );
    // Live: the first reports arrived while the export still had seconds to run.
    let (first_at, first_percent) = progress[0];
    assert!(first_percent < 50.0, "{progress:?}");
    assert!(
        finished_at - first_at > Duration::from_secs(1),
        "progress was pushed while the export ran, not at the end: {:?}",
        finished_at - first_at
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_can_be_cancelled_while_queued_or_running() {
    let nats = NatsServer::start().await;
    // Without a worker, an export stays queued.
    let idle = App::start_with(&nats, free_port(), StreamSettings::default(), false).await;
    let queued = idle.export(10, 0).await;
    let answer = http_client::delete(idle.web, &queued.status_url, REQUEST_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.status, 202, "{answer:?}");
    let cancel: CancelResponse = answer.json().unwrap();
    assert_eq!(cancel.outcome, "cancelled");
    assert_eq!(cancel.status.state, TaskState::Cancelled);
    idle.shutdown().await;

    let app = App::start(&nats, free_port()).await;
    // The cancelled export is dropped when pulled, never run.
    let running = app.export(100, 50).await;
    let started = eventually(
        Duration::from_secs(30),
        "the export to report progress",
        || async {
            let status = app.export_status(&running).await;
            (status.percent.unwrap_or_default() > 0.0).then_some(status)
        },
    )
    .await;
    assert_eq!(started.state, TaskState::Running);
    let answer = http_client::delete(app.web, &running.status_url, REQUEST_TIMEOUT)
        .await
        .unwrap();
    let cancel: CancelResponse = answer.json().unwrap();
    assert_eq!(cancel.outcome, "cancel-requested");
    let done = app.export_done(&running, Duration::from_secs(30)).await;
    assert_eq!(done.state, TaskState::Cancelled, "{done:?}");
    assert!(
        done.percent.unwrap_or(100.0) < 100.0,
        "stopped early: {done:?}"
    );
    let csv = app
        .get(&format!("/exports/{}/csv", running.export_id))
        .await;
    assert_eq!(csv.status, 409, "{csv:?}");

    app.wait_idle("exports").await;
    assert!(
        app.activity.attempts_of(&queued.task_id).is_empty(),
        "the queued export never ran"
    );
    assert_eq!(
        app.activity.attempts_of(&running.task_id).len(),
        1,
        "not retried"
    );
    let dead = app
        .stream_messages(&Subjects::default().dead_stream())
        .await;
    assert_eq!(dead, 0, "cancelled exports are not dead letters");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_exports_are_404_and_unfinished_ones_409() {
    let nats = NatsServer::start().await;
    let app = App::start_with(&nats, free_port(), StreamSettings::default(), false).await;
    for path in [
        "/exports/01NOSUCHEXPORT",
        "/exports/01NOSUCHEXPORT/csv",
        "/exports/01NOSUCHEXPORT/events",
        "/exports/01NOSUCHEXPORT/page",
        "/exports/not..valid/csv",
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
        let error: ErrorBody = answer.json().unwrap_or_else(|err| panic!("{path}: {err}"));
        assert!(!error.error.is_empty());
    }
    let export = app.export(5, 0).await;
    let status = app.export_status(&export).await;
    assert_eq!(
        (status.state, status.attempt, status.csv_url),
        (TaskState::Queued, 0, None)
    );
    let csv = app.get(&format!("/exports/{}/csv", export.export_id)).await;
    assert_eq!(csv.status, 409, "{csv:?}");
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
        schedules_file: jetq_examples::repo_root().join("examples/schedules.yaml"),
        stay: false,
    };
    let report = demo::run(options)
        .await
        .unwrap_or_else(|err| panic!("demo failed: {err}"));
    let duplicates: Vec<bool> = report.signups.iter().map(|s| s.duplicate).collect();
    assert_eq!(duplicates, [false, false, true]);
    let with_subject = |subject: &str| {
        report
            .emails
            .iter()
            .filter(|mail| mail.header("Subject") == Some(subject))
            .count()
    };
    assert_eq!(with_subject(WELCOME_SUBJECT), 2, "{report}");
    // The periodic task: fired by the scheduler from examples/schedules.yaml (its task id is the
    // fire id `demo-digest:<fire time>`), run by the example worker, mailed to the sink.
    let digest = report
        .digests
        .iter()
        .find(|record| record.status == AttemptStatus::Succeeded)
        .unwrap_or_else(|| panic!("no periodic digest ran:\n{report}"));
    assert!(
        digest.task_id.starts_with("demo-digest:") && digest.task_id.ends_with('Z'),
        "{digest:?}"
    );
    assert!(with_subject(worker::DIGEST_SUBJECT) >= 1, "{report}");
    assert_eq!(report.csv_lines, 31);
    assert_eq!(report.export_attempts().len(), 1, "{report}");
    // The chunked export ran as a chord: 10 chunks, each by reference, assembled in order (the
    // demo compares the file with every row), and its link mailed once.
    let chunked = &report.chunked;
    let assembled = chunked.status.assembled.expect("assembled");
    assert_eq!(
        (chunked.status.chunks, chunked.status.dead),
        (10, 0),
        "{report}"
    );
    assert_eq!(
        (assembled.rows, assembled.by_reference),
        (10_000, 10),
        "{report}"
    );
    assert_eq!(chunked.csv_lines, 10_001);
    assert_eq!(
        with_subject(jetq_examples::chunked::EXPORT_MAIL_SUBJECT),
        1,
        "{report}"
    );
    let summary = report.to_string();
    assert!(summary.contains("Subject: Welcome to jetq!"), "{summary}");
    assert!(summary.contains(&report.csv_path.display().to_string()));
    // Where to look: the CLI commands and the dashboard URL.
    for hint in [
        "jetq queues",
        "jetq schedules --file",
        "jetq dashboard",
        "http://127.0.0.1:8080/",
        "JETQ_NATS_URL=nats://",
    ] {
        assert!(summary.contains(hint), "{hint} missing:\n{summary}");
    }
}
