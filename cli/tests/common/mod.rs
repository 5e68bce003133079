//! Shared helpers of the CLI and dashboard tests: the built `jetq` binary run against a real
//! nats-server, provisioning, and dead letters made by a real worker or written per protocol.

#![allow(dead_code)]

pub(crate) mod browser;

use std::{process::Stdio, time::Duration};

use async_nats::{jetstream, HeaderMap};
use bytes::Bytes;
use jetq_cli::Admin;
use jetq_consumer::{TaskContext, TaskError, Worker};
use jetq_contract::{
    dead_letter::dead_letter_id, headers, AttemptFailure, AttemptOutcome, DeadLetterHeaders,
    DeadReason, FailureRecord, QueueSettings, StreamSettings, Subjects, Topology,
};
#[allow(unused_imports)]
pub(crate) use jetq_harness::free_port;
pub(crate) use jetq_tests::*;
use serde_json::Value;

/// A finished `jetq` run.
#[derive(Debug)]
pub(crate) struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output parsed as JSON (fails the test with the output if it is not).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "jetq printed no JSON ({err}); exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    /// Fails the test unless the exit code is `code`.
    pub(crate) fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Fails unless the run succeeded, and returns its JSON output.
    pub(crate) fn ok_json(&self) -> Value {
        self.expect_code(0);
        self.json()
    }
}

/// Runs the built `jetq` binary with `JETQ_NATS_URL` set to `url` (and nothing else from the
/// environment but `extra`), bounded by [`WAIT`].
pub(crate) async fn jetq_with(url: &str, extra: &[(&str, &str)], args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetq"));
    command
        .env_clear()
        .env("JETQ_NATS_URL", url)
        .env("JETQ_REQUEST_TIMEOUT", "3s")
        .env("RUST_LOG", "warn")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in extra {
        command.env(name, value);
    }
    let output = within(WAIT, &format!("jetq {}", args.join(" ")), command.output())
        .await
        .expect("the jetq binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `jetq` against a test server.
pub(crate) async fn jetq(server: &NatsServer, args: &[&str]) -> Run {
    jetq_with(&server.url(), &[], args).await
}

/// An admin handle on a test server.
pub(crate) async fn admin(server: &NatsServer) -> Admin {
    Admin::connect(connection(server))
        .await
        .expect("admin connects to the test server")
}

/// The topology of a test server with default stream settings.
pub(crate) async fn topology(server: &NatsServer, settings: StreamSettings) -> Topology {
    let js = raw_jetstream(server).await;
    let topology = Topology::new(js, Subjects::default(), settings);
    topology
        .ensure_streams()
        .await
        .expect("streams are provisioned");
    topology
}

/// Provisions the streams and the durable consumer of each queue (with the in-flight cap
/// given), as a worker would at startup, without running a worker.
pub(crate) async fn provision(server: &NatsServer, queues: &[(&str, i64)]) -> Topology {
    let topology = topology(server, StreamSettings::default()).await;
    for (queue, max_in_flight) in queues {
        topology
            .ensure_queue(
                queue,
                &QueueSettings {
                    max_in_flight: *max_in_flight,
                    ..QueueSettings::default()
                },
            )
            .await
            .expect("queue consumer is provisioned");
    }
    topology
}

/// A dead letter to write per `docs/PROTOCOL.md` §5.
#[derive(Debug, Clone)]
pub(crate) struct Letter<'a> {
    pub queue: &'a str,
    pub task: &'a str,
    pub task_id: &'a str,
    pub reason: DeadReason,
    pub error: &'a str,
    pub payload: &'a str,
    pub traceparent: Option<&'a str>,
    /// The HTTP answer in the failure record (as the push worker writes it).
    pub http: Option<jetq_contract::HttpFailure>,
}

impl<'a> Letter<'a> {
    pub(crate) fn new(queue: &'a str, task: &'a str, task_id: &'a str) -> Self {
        Letter {
            queue,
            task,
            task_id,
            reason: DeadReason::Exhausted,
            error: "smtp refused",
            payload: "{\"n\":1}",
            traceparent: None,
            http: None,
        }
    }
}

/// Writes a dead letter exactly as a worker would and returns its dead-letter sequence.
pub(crate) async fn write_dead(js: &jetstream::Context, letter: &Letter<'_>) -> u64 {
    let subjects = Subjects::default();
    let now = jetq_contract::time::now();
    let record = FailureRecord {
        reason: letter.reason,
        attempts: 3,
        error: letter.error.to_owned(),
        history: vec![AttemptFailure {
            attempt: 1,
            outcome: AttemptOutcome::Error,
            error: letter.error.to_owned(),
            at: now.clone(),
        }],
        enqueued_at: Some(now.clone()),
        dead_at: now.clone(),
        http: letter.http.clone(),
    };
    let mut map = HeaderMap::new();
    // A distinct task-stream sequence per letter keeps the dedup ids distinct.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let task_sequence = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    DeadLetterHeaders::new(letter.task_id, task_sequence, record).write_to(&mut map);
    map.insert(headers::ENQUEUED_AT, now.as_str());
    if let Some(parent) = letter.traceparent {
        map.insert(headers::TRACEPARENT, parent);
    }
    js.publish_with_headers(
        subjects.dead(letter.queue, letter.task),
        map,
        Bytes::from(letter.payload.to_owned()),
    )
    .await
    .expect("dead letter published")
    .await
    .expect("dead letter acknowledged")
    .sequence
}

/// Writes `count` dead letters of `queue`/`task` (task ids `<prefix>-<i>`) with pipelined
/// publishes, and returns their sequences in order.
pub(crate) async fn write_dead_many(
    js: &jetstream::Context,
    queue: &str,
    task: &str,
    prefix: &str,
    count: usize,
) -> Vec<u64> {
    let subjects = Subjects::default();
    let mut sequences = Vec::with_capacity(count);
    let mut acks = Vec::new();
    for i in 0..count {
        // At most 256 acks outstanding, so none waits past the client's timeout.
        if acks.len() == 256 {
            for ack in acks.drain(..) {
                let ack: jetstream::context::PublishAckFuture = ack;
                sequences.push(ack.await.expect("dead letter acknowledged").sequence);
            }
        }
        let id = format!("{prefix}-{i}");
        let mut map = HeaderMap::new();
        map.insert(headers::MSG_ID, dead_letter_id(i as u64, &id).as_str());
        // Only the headers a listing shows: the lightest letter the CLI reads.
        let dead = DeadLetterHeaders {
            task_id: Some(id.clone()),
            reason: Some(DeadReason::Exhausted.as_str().to_owned()),
            attempts: Some(3),
            ..DeadLetterHeaders::default()
        };
        dead.write_to(&mut map);
        acks.push(
            js.publish_with_headers(
                subjects.dead(queue, task),
                map,
                Bytes::from(format!("{{\"n\":{i}}}")),
            )
            .await
            .expect("dead letter published"),
        );
    }
    for ack in acks {
        sequences.push(ack.await.expect("dead letter acknowledged").sequence);
    }
    sequences
}

/// A worker whose handlers fail every task fatally (so each is dead-lettered at once), for
/// `Job` (queue `work`) and `Email` (queue `emails`).
pub(crate) async fn fatal_worker(server: &NatsServer) -> Worker {
    worker(server)
        .handler(|job: Job, _ctx: TaskContext| async move {
            Err::<(), _>(TaskError::fatal(format!("job {} cannot be done", job.n)))
        })
        .handler(|email: Email, _ctx: TaskContext| async move {
            Err::<(), _>(TaskError::fatal(format!(
                "mailbox {} does not exist",
                email.to
            )))
        })
        .build()
        .await
        .expect("worker builds")
}

/// Waits until the dead-letter stream holds exactly `count` messages.
pub(crate) async fn wait_dead_count(js: &jetstream::Context, count: u64) {
    let name = Subjects::default().dead_stream();
    eventually(WAIT, &format!("{count} dead letters"), || {
        let js = js.clone();
        let name = name.clone();
        async move { (stream_len(&js, &name).await == count).then_some(()) }
    })
    .await;
}

/// The task stream's messages.
pub(crate) async fn task_messages(
    js: &jetstream::Context,
) -> Vec<jetstream::message::StreamMessage> {
    stream_messages(js, &Subjects::default().tasks_stream()).await
}

/// The dead-letter stream's sequences, in order.
pub(crate) async fn dead_sequences(js: &jetstream::Context) -> Vec<u64> {
    stream_messages(js, &Subjects::default().dead_stream())
        .await
        .iter()
        .map(|m| m.sequence)
        .collect()
}

/// A short pause used only where a test needs wall-clock time to pass (ages, windows), never
/// to wait for an event.
pub(crate) async fn let_time_pass(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// A `jetq dashboard` process; killed when dropped.
pub(crate) struct DashboardProcess {
    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub url: String,
    _child: tokio::process::Child,
    _stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
}

/// Starts `jetq dashboard --listen 127.0.0.1:0 <args>` against a test server and waits (bounded)
/// for the address it prints.
pub(crate) async fn start_dashboard(server: &NatsServer, args: &[&str]) -> DashboardProcess {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetq"))
        .env_clear()
        .env("JETQ_NATS_URL", server.url())
        .env("RUST_LOG", "warn")
        .args(["dashboard", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("jetq dashboard starts");
    let stdout = child.stdout.take().expect("dashboard stdout is piped");
    let mut stdout = tokio::io::BufReader::new(stdout);
    let mut line = String::new();
    within(WAIT, "the dashboard's address", stdout.read_line(&mut line))
        .await
        .expect("dashboard prints its address");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the dashboard: {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    DashboardProcess {
        url,
        _child: child,
        _stdout: stdout,
    }
}

/// An HTTP response read by [`http`].
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// A header by name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.body))
    }
}

/// One HTTP/1.0 request over a fresh connection (enough for the dashboard's own tests, with no
/// HTTP client dependency).
pub(crate) async fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut stream = within(
        WAIT,
        "connect to the dashboard",
        tokio::net::TcpStream::connect(host),
    )
    .await
    .expect("dashboard accepts connections");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    within(
        WAIT,
        "the dashboard's response",
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("response read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}
