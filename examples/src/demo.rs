//! The quickstart: runs the whole seed scenario on one machine and reports what happened.
//!
//! 1. a local `nats-server` with JetStream (unless `JETQ_NATS_URL` names one) and an SMTP sink
//!    (aiosmtpd, printing what it receives);
//! 2. the web app, the worker and a scheduler on `examples/schedules.yaml`, in this process;
//! 3. two signups (one repeated, to show the idempotency key), and one export that takes longer
//!    than the worker's `ack_wait` (heartbeats keep it from being redelivered);
//! 4. waits, bounded, for both emails at the SMTP sink and the export to succeed (its status,
//!    from `GET /exports/{id}`), downloads the CSV the worker stored in the artifact store through
//!    the web app (`GET /exports/{id}/csv`), then shuts everything down and returns a
//!    [`DemoReport`];
//! 5. runs the chunked export: `POST /chunked-exports` splits a 10,000-row export into 10 chunk
//!    tasks run as a chord, whose callback assembles the file and enqueues the mail with its
//!    link; waits for that mail, downloads the file and checks every row is there once, in
//!    order;
//! 6. also waits for the periodic `send_digest` task (schedule `demo-digest`, every 5 s), fired by
//!    the scheduler and run by the worker: the crontab replacement. The report ends with where to
//!    look: `jetq queues`, `jetq schedules`, `jetq dashboard` (with `stay`, the stack keeps running
//!    for them until Ctrl-C).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use jetq_consumer::{Worker, WorkerSettings};
use jetq_contract::{ConnectionConfig, StreamSettings, Task};
use jetq_producer::Producer;
use jetq_scheduler::Scheduler;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    http_client::{self, HttpResponse},
    local_nats::LocalNats,
    smtp_sink::{ReceivedMail, SmtpSink},
    tasks::SendDigest,
    web::{ExportRequest, ExportResponse, ExportStatus, SignupRequest, SignupResponse},
    worker::{
        self, Activity, AttemptRecord, AttemptStatus, ExportConfig, SmtpConfig, WorkerConfig,
    },
    SetupError,
};

mod chunked_step;
mod report;

pub use chunked_step::ChunkedReport;

/// Environment variable naming the Python (with aiosmtpd) the demo's SMTP sink runs on.
pub const PYTHON_ENV: &str = "JETQ_DEMO_PYTHON";
/// Timeout of each HTTP request the demo sends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Polling period while waiting for results.
const POLL: Duration = Duration::from_millis(50);

/// Why the demo failed; the message says what went wrong and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(String);

impl From<SetupError> for DemoError {
    fn from(err: SetupError) -> Self {
        DemoError(err.0)
    }
}

fn fail(message: impl Into<String>) -> DemoError {
    DemoError(message.into())
}

/// What the demo runs against and how.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Connection settings (`JETQ_*`); `nats_url` is replaced by the local server's unless
    /// `external_nats` is set.
    pub connection: ConnectionConfig,
    /// True to use `connection.nats_url` as is instead of starting a local server.
    pub external_nats: bool,
    /// The nats-server binary (default: [`crate::local_nats::find_server_binary`]).
    pub nats_server: Option<PathBuf>,
    /// The local server's JetStream store, wiped at start (default `<repo>/.jetq/demo-data`).
    pub data_dir: PathBuf,
    /// Where the exported CSV is downloaded to, wiped at start (default
    /// `<repo>/.jetq/demo-exports`).
    pub export_dir: PathBuf,
    /// Python with aiosmtpd (default: [`crate::smtp_sink::find_python`] with `JETQ_DEMO_PYTHON`).
    pub python: Option<PathBuf>,
    /// Rows of the export (default 40).
    pub export_rows: u32,
    /// Pause per row (default 100 ms).
    pub row_delay: Duration,
    /// The worker's `ack_wait` (default 2 s: shorter than the export).
    pub ack_wait: Duration,
    /// How long to wait for the emails and the export (default 60 s).
    pub timeout: Duration,
    /// Print progress lines while running.
    pub verbose: bool,
    /// The schedules file the demo's scheduler runs (default `<repo>/examples/schedules.yaml`).
    pub schedules_file: PathBuf,
    /// After the scenario, print the report and keep everything running until Ctrl-C (or
    /// SIGTERM), so `jetq queues`, `jetq schedules` and `jetq dashboard` can look at it.
    pub stay: bool,
}

impl DemoOptions {
    /// Defaults, with `JETQ_*` read from the environment; a set `JETQ_NATS_URL` means "use that
    /// server".
    pub fn from_env() -> Result<Self, DemoError> {
        let connection = ConnectionConfig::from_env()
            .map_err(|err| fail(format!("JETQ_* configuration: {err}")))?;
        let external_nats = std::env::var_os("JETQ_NATS_URL").is_some_and(|url| !url.is_empty());
        let root = crate::repo_root();
        Ok(DemoOptions {
            connection,
            external_nats,
            nats_server: None,
            data_dir: root.join(".jetq/demo-data"),
            export_dir: root.join(".jetq/demo-exports"),
            python: None,
            export_rows: 40,
            row_delay: Duration::from_millis(100),
            ack_wait: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            verbose: true,
            schedules_file: root.join("examples/schedules.yaml"),
            stay: false,
        })
    }
}

/// One HTTP request the demo sent.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// `POST /signup` etc.
    pub request: String,
    /// The JSON body sent.
    pub body: String,
    /// The answer's status.
    pub status: u16,
    /// How long the answer took.
    pub latency: Duration,
    /// The answer's body.
    pub answer: String,
}

/// What happened, for the summary.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The NATS server used, and whether the demo started it.
    pub nats: String,
    /// Its URL (for `JETQ_NATS_URL`).
    pub nats_url: String,
    /// The SMTP sink's address.
    pub smtp: String,
    /// The web app's address.
    pub web: SocketAddr,
    /// The worker's `ack_wait`.
    pub ack_wait: Duration,
    /// The requests, in order.
    pub requests: Vec<RequestRecord>,
    /// The answers of the three signups (first, second, repeat of the first).
    pub signups: Vec<SignupResponse>,
    /// The emails as the SMTP sink printed them.
    pub emails: Vec<ReceivedMail>,
    /// Every handler invocation of the worker.
    pub attempts: Vec<AttemptRecord>,
    /// The export's answer.
    pub export: ExportResponse,
    /// Rows and pause of the export.
    pub export_rows: u32,
    /// Pause per row of the export.
    pub row_delay: Duration,
    /// The export's final status, from `GET /exports/{id}`.
    pub export_status: ExportStatus,
    /// The CSV, as downloaded from the web app.
    pub csv_path: PathBuf,
    /// Its number of lines.
    pub csv_lines: usize,
    /// The schedules file the scheduler ran.
    pub schedules_file: PathBuf,
    /// The attempts of the periodic `send_digest` tasks the scheduler fired (at least one
    /// succeeded).
    pub digests: Vec<AttemptRecord>,
    /// The chunked export (a chord, then the mail with its link).
    pub chunked: ChunkedReport,
}

impl DemoReport {
    /// The attempts of the export task.
    pub fn export_attempts(&self) -> Vec<&AttemptRecord> {
        self.attempts
            .iter()
            .filter(|record| record.task_id == self.export.task_id)
            .collect()
    }
}

/// Everything started, so it can be stopped whatever happens.
#[derive(Default)]
struct Running {
    nats: Option<LocalNats>,
    sink: Option<SmtpSink>,
    stop: CancellationToken,
    web: Option<JoinHandle<std::io::Result<()>>>,
    worker: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops the web app and the worker (bounded), then the sink and the server.
    async fn shutdown(mut self, grace: Duration) -> Result<(), DemoError> {
        self.stop.cancel();
        let mut problems = Vec::new();
        if let Some(web) = self.web.take() {
            match tokio::time::timeout(Duration::from_secs(10), web).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => problems.push(format!("the web app failed: {err}")),
                Ok(Err(err)) => problems.push(format!("the web app task failed: {err}")),
                Err(_) => problems.push("the web app did not stop within 10 s".into()),
            }
        }
        if let Some(scheduler) = self.scheduler.take() {
            match tokio::time::timeout(Duration::from_secs(10), scheduler).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => problems.push(format!("the scheduler task failed: {err}")),
                Err(_) => problems.push("the scheduler did not stop within 10 s".into()),
            }
        }
        if let Some(worker) = self.worker.take() {
            let limit = grace + Duration::from_secs(10);
            match tokio::time::timeout(limit, worker).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => problems.push(format!("the worker task failed: {err}")),
                Err(_) => problems.push(format!("the worker did not stop within {limit:?}")),
            }
        }
        if let Some(mut sink) = self.sink.take() {
            sink.stop().await;
        }
        if let Some(mut nats) = self.nats.take() {
            nats.stop().await;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(fail(format!("shutdown: {}", problems.join("; "))))
        }
    }
}

/// Runs the demo; everything it started is stopped before it returns.
pub async fn run(options: DemoOptions) -> Result<DemoReport, DemoError> {
    let mut running = Running::default();
    let grace = Duration::from_secs(10);
    let result = run_scenario(&options, &mut running, grace).await;
    if let (Ok(report), true) = (&result, options.stay) {
        println!("{report}");
        println!("The stack keeps running for the commands above; Ctrl-C stops it.");
        jetq_consumer::shutdown_signal().await;
    }
    say(&options, "shutting down");
    let stopped = running.shutdown(grace).await;
    let report = result?;
    stopped?;
    Ok(report)
}

fn say(options: &DemoOptions, text: &str) {
    if options.verbose {
        println!("[demo] {text}");
    }
}

async fn run_scenario(
    options: &DemoOptions,
    running: &mut Running,
    grace: Duration,
) -> Result<DemoReport, DemoError> {
    // 1. NATS and the SMTP sink.
    let mut connection = options.connection.clone();
    let nats = if options.external_nats {
        say(options, &format!("using NATS at {}", connection.nats_url));
        format!("{} (from JETQ_NATS_URL)", connection.nats_url)
    } else {
        let binary = match &options.nats_server {
            Some(binary) => binary.clone(),
            None => crate::local_nats::find_server_binary()?,
        };
        wipe(&options.data_dir)?;
        say(
            options,
            &format!(
                "starting {} (store {})",
                binary.display(),
                options.data_dir.display()
            ),
        );
        let server = running
            .nats
            .insert(LocalNats::start(&binary, &options.data_dir).await?);
        connection.nats_url = server.url();
        format!(
            "{} (local nats-server with JetStream, store {})",
            server.url(),
            options.data_dir.display()
        )
    };
    let python = match &options.python {
        Some(python) => python.clone(),
        None => crate::smtp_sink::find_python(PYTHON_ENV).await?,
    };
    let smtp_port =
        crate::free_port().map_err(|err| fail(format!("cannot find a free port: {err}")))?;
    say(
        options,
        &format!("starting the SMTP sink on 127.0.0.1:{smtp_port}"),
    );
    running.sink = Some(SmtpSink::start(&python, smtp_port).await?);
    wipe(&options.export_dir)?;

    // 2. The web app and the worker.
    let streams =
        StreamSettings::from_env().map_err(|err| fail(format!("JETQ_* stream settings: {err}")))?;
    let producer = Producer::builder()
        .connection(connection.clone())
        .streams(streams.clone())
        .connect()
        .await
        .map_err(|err| fail(format!("the web app's producer cannot start: {err}")))?;
    let activity = Activity::default();
    let settings = WorkerSettings {
        ack_wait: options.ack_wait,
        fetch_expires: (options.ack_wait / 2).max(Duration::from_millis(100)),
        concurrency: 4,
        shutdown_grace: grace,
        ..WorkerSettings::default()
    };
    let config = WorkerConfig {
        smtp: SmtpConfig {
            host: "127.0.0.1".into(),
            port: smtp_port,
            ..SmtpConfig::default()
        },
        // No local copy: the CSV goes to the artifact store and the web app serves it.
        exports: ExportConfig::default(),
        activity: activity.clone(),
        // 14 mails a second across workers (docs/FLOW_CONTROL.md).
        email_limits: crate::flow::email_limits().map_err(|err| SetupError(err.to_string()))?,
        // The chunked export's assembler reads chunk results and enqueues the mail with it.
        producer: Some(producer.clone()),
    };
    let nats_url = connection.nats_url.clone();
    let scheduler = Scheduler::builder()
        .connection(connection.clone())
        .streams(streams.clone())
        .schedules_file(options.schedules_file.clone())
        .build()
        .await
        .map_err(|err| fail(format!("the scheduler cannot start: {err}")))?;
    running.scheduler = Some(tokio::spawn(
        scheduler.run_until(running.stop.clone().cancelled_owned()),
    ));
    let worker = worker::build(
        Worker::builder()
            .connection(connection)
            .streams(streams)
            .settings(settings),
        config,
    )
    .build()
    .await
    .map_err(|err| fail(format!("the worker cannot start: {err}")))?;
    running.worker = Some(tokio::spawn(
        worker.run_until(running.stop.clone().cancelled_owned()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|err| fail(format!("the web app cannot listen: {err}")))?;
    let web = listener
        .local_addr()
        .map_err(|err| fail(format!("the web app's address: {err}")))?;
    let serve = axum::serve(listener, crate::web::router(producer))
        .with_graceful_shutdown(running.stop.clone().cancelled_owned());
    running.web = Some(tokio::spawn(async move { serve.await }));
    say(
        options,
        &format!(
            "web app on http://{web}, worker and scheduler ({}) running",
            options.schedules_file.display()
        ),
    );

    // 3. The requests.
    let mut requests = Vec::new();
    let tag = if options.external_nats {
        // A shared server may remember earlier runs' idempotency keys: use fresh addresses.
        format!(
            "+{}",
            ulid::Ulid::new()
                .to_string()
                .to_lowercase()
                .get(20..)
                .unwrap_or("x")
        )
    } else {
        String::new()
    };
    let ada = format!("ada{tag}@example.com");
    let grace_hopper = format!("grace{tag}@example.com");
    let mut signups = Vec::new();
    for (email, expect_duplicate) in [(&ada, false), (&grace_hopper, false), (&ada, true)] {
        let (answer, record) = send(
            web,
            "/signup",
            &SignupRequest {
                email: email.clone(),
            },
        )
        .await?;
        say(
            options,
            &format!(
                "POST /signup {email} -> {} {}",
                record.status, record.answer
            ),
        );
        requests.push(record);
        let signup: SignupResponse = accepted(&answer, "POST /signup")?;
        if signup.duplicate != expect_duplicate {
            return Err(fail(format!(
                "signup of {email} answered duplicate={} (expected {expect_duplicate})",
                signup.duplicate
            )));
        }
        signups.push(signup);
    }
    let (answer, record) = send(
        web,
        "/exports",
        &ExportRequest {
            rows: options.export_rows,
            row_delay_ms: u64::try_from(options.row_delay.as_millis()).unwrap_or(u64::MAX),
        },
    )
    .await?;
    say(
        options,
        &format!("POST /exports -> {} {}", record.status, record.answer),
    );
    requests.push(record);
    let export: ExportResponse = accepted(&answer, "POST /exports")?;

    // 4. Wait for the results.
    let csv_path = worker::export_path(&options.export_dir, &export.export_id);
    say(
        options,
        &format!(
            "waiting (at most {:?}) for 2 emails at the SMTP sink, the export (follow it at \
             http://{web}/exports/{}/page) and a periodic digest fired by the scheduler",
            options.timeout, export.export_id
        ),
    );
    let deadline = Instant::now() + options.timeout;
    let sink = running
        .sink
        .as_ref()
        .ok_or_else(|| fail("the SMTP sink is gone"))?;
    loop {
        let ada_mails = sink.messages_to(&ada).len();
        let grace_mails = sink.messages_to(&grace_hopper).len();
        let export_done = activity
            .attempts_of(&export.task_id)
            .iter()
            .any(|record| record.status == AttemptStatus::Succeeded);
        let export_status = if export_done {
            Some(export_status(web, &export.status_url).await?)
        } else {
            None
        };
        let stored = export_status
            .as_ref()
            .is_some_and(|status| status.csv_url.is_some());
        let digest_done = activity.attempts().iter().any(|record| {
            record.task == SendDigest::NAME && record.status == AttemptStatus::Succeeded
        });
        if ada_mails >= 1 && grace_mails >= 1 && stored && digest_done {
            break;
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "timed out after {:?}: emails to {ada}: {ada_mails}, to {grace_hopper}: \
                 {grace_mails}, export finished: {export_done}, status: {export_status:?}, \
                 periodic digest run: {digest_done}\n\
                 worker attempts: {:#?}\nSMTP sink:\n{}",
                options.timeout,
                activity.attempts(),
                sink.logs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    let export_attempts = activity.attempts_of(&export.task_id);
    if export_attempts.len() != 1 {
        return Err(fail(format!(
            "the export ran {} times (expected once: heartbeats should prevent redelivery): \
             {export_attempts:#?}",
            export_attempts.len()
        )));
    }
    let status_answer = get(web, &export.status_url).await?;
    requests.push(status_answer.1);
    let export_status = export_status(web, &export.status_url).await?;
    let csv_url = export_status.csv_url.clone().unwrap_or_default();
    let (download, record) = get(web, &csv_url).await?;
    requests.push(RequestRecord {
        answer: format!("{} bytes of text/csv", download.body.len()),
        ..record
    });
    if download.status != 200 {
        return Err(fail(format!(
            "GET {csv_url} answered {}: {}",
            download.status, download.body
        )));
    }
    tokio::fs::write(&csv_path, download.body.as_bytes())
        .await
        .map_err(|err| fail(format!("cannot write {}: {err}", csv_path.display())))?;
    let csv = download.body;
    let csv_lines = csv.lines().count();
    let expected_lines = usize::try_from(options.export_rows).unwrap_or(usize::MAX) + 1;
    if csv_lines != expected_lines {
        return Err(fail(format!(
            "{} has {csv_lines} lines, expected {expected_lines}",
            csv_path.display()
        )));
    }
    let ada_mails = sink.messages_to(&ada).len();
    if ada_mails != 1 {
        return Err(fail(format!(
            "{ada} received {ada_mails} welcome mails (expected 1: the repeat is a duplicate)"
        )));
    }
    // 5. The chunked export: a chord of chunks, assembled in order, then the mail with the link.
    let chunked = chunked_step::run(options, web, sink, &grace_hopper, &mut requests).await?;
    let digests = activity
        .attempts()
        .into_iter()
        .filter(|record| record.task == SendDigest::NAME)
        .collect();
    Ok(DemoReport {
        nats,
        nats_url,
        smtp: format!("127.0.0.1:{smtp_port}"),
        web,
        ack_wait: options.ack_wait,
        requests,
        signups,
        emails: sink.messages(),
        attempts: activity.attempts(),
        export,
        export_status,
        export_rows: options.export_rows,
        row_delay: options.row_delay,
        csv_path,
        csv_lines,
        schedules_file: options.schedules_file.clone(),
        digests,
        chunked,
    })
}

/// Sends one JSON request and records it.
async fn send<T: serde::Serialize>(
    web: SocketAddr,
    path: &str,
    body: &T,
) -> Result<(HttpResponse, RequestRecord), DemoError> {
    let body_text = serde_json::to_string(body)
        .map_err(|err| fail(format!("cannot encode a request: {err}")))?;
    let started = Instant::now();
    let answer = http_client::post(web, path, "application/json", &body_text, REQUEST_TIMEOUT)
        .await
        .map_err(|err| fail(format!("POST {path}: {err}")))?;
    let record = RequestRecord {
        request: format!("POST {path}"),
        body: body_text,
        status: answer.status,
        latency: started.elapsed(),
        answer: answer.body.clone(),
    };
    Ok((answer, record))
}

/// Sends one GET request and records it.
async fn get(web: SocketAddr, path: &str) -> Result<(HttpResponse, RequestRecord), DemoError> {
    let started = Instant::now();
    let answer = http_client::get(web, path, REQUEST_TIMEOUT)
        .await
        .map_err(|err| fail(format!("GET {path}: {err}")))?;
    let record = RequestRecord {
        request: format!("GET {path}"),
        body: String::new(),
        status: answer.status,
        latency: started.elapsed(),
        answer: answer.body.clone(),
    };
    Ok((answer, record))
}

/// The export's status from the web app.
async fn export_status(web: SocketAddr, path: &str) -> Result<ExportStatus, DemoError> {
    let (answer, _) = get(web, path).await?;
    if answer.status != 200 {
        return Err(fail(format!(
            "GET {path} answered {} {}",
            answer.status, answer.body
        )));
    }
    answer
        .json()
        .map_err(|err| fail(format!("GET {path} answered {:?}: {err}", answer.body)))
}

/// Decodes a 202 answer, or fails with the answer.
fn accepted<T: serde::de::DeserializeOwned>(
    answer: &HttpResponse,
    request: &str,
) -> Result<T, DemoError> {
    if answer.status != 202 {
        return Err(fail(format!(
            "{request} answered {} {} (expected 202)",
            answer.status, answer.body
        )));
    }
    answer
        .json()
        .map_err(|err| fail(format!("{request} answered {:?}: {err}", answer.body)))
}

/// Removes a directory the demo owns (if present) and creates it empty.
fn wipe(dir: &Path) -> Result<(), DemoError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|err| fail(format!("cannot clear {}: {err}", dir.display())))?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|err| fail(format!("cannot create {}: {err}", dir.display())))
}
