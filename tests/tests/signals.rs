//! Issue #27: the real shutdown path of the binaries. Every other shutdown test calls
//! `run_until` with a future of its own; here the processes are started as they are deployed
//! and stopped by SIGTERM (Kubernetes) or SIGINT (Ctrl-C), sent with `kill`, so
//! `shutdown_signal()`, the grace period, the hand-back and the exit status are what is tested.
//!
//! - `test_worker` (this package's worker binary, `Worker::run()`): exits 0; a short task
//!   finishes during the grace; a long one is handed back when the grace ends, and another
//!   worker process runs it at once — long before `ack_wait` — as attempt 1 again (a hand-back is
//!   no attempt, docs/PROTOCOL.md §4).
//! - `jetq-push` mid-request: the same, seen from the HTTP endpoint (`Jetq-Attempt: 1` again).
//!   `push/tests/binary.rs` covers SIGTERM of an idle `jetq-push`.
//! - `jetq-scheduler`: exits 0 on either signal while firing a schedule.
//!
//! `jetq-push` and `jetq-scheduler` belong to other packages, so cargo builds them for
//! `cargo test --workspace` (their packages have tests) but not for `cargo test -p jetq-tests`:
//! they are taken from `JETQ_TEST_PUSH_BIN` / `JETQ_TEST_SCHEDULER_BIN` when set, else from the
//! target directory of this test binary (build them with `cargo build -p jetq-push --bin
//! jetq-push -p jetq-scheduler --bin jetq-scheduler`; a missing one fails the test saying so).

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{extract::State, http::HeaderMap, routing::post, Router};
use futures::StreamExt;
use jetq_contract::Subjects;
use jetq_tests::{otel::http_get, *};
use tokio::{
    process::{Child, Command},
    sync::mpsc,
};

/// The processes' `JETQ_ACK_WAIT`: a task not handed back would return only after this.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// The processes' `JETQ_SHUTDOWN_GRACE`.
const GRACE: Duration = Duration::from_millis(1500);
/// How long a stopping process may take beyond its grace: hand the task back (an attempt-record
/// write and a NAK), flush, end its pull loops (`JETQ_FETCH_EXPIRES` is 500 ms), exit.
const STOP_SLACK: Duration = Duration::from_secs(3);

/// A binary of another workspace package: `$var`, else next to this test binary's directory
/// (`target/<profile>/deps/signals-<hash>` → `target/<profile>/<name>`).
fn workspace_binary(var: &str, package: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p {package} --bin {name}` (cargo test \
         --workspace does) or point {var} at it",
        path.display()
    );
    path
}

/// Sends `SIGTERM` or `SIGINT` (`signal` is `TERM` or `INT`) with `kill`; returns when it was
/// sent.
async fn send(child: &Child, signal: &str) -> Instant {
    let pid = child.id().expect("the process is running").to_string();
    let sent = Instant::now();
    let status = within(
        WAIT,
        "kill",
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status(),
    )
    .await
    .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}: {status:?}");
    sent
}

/// Waits for `child` to exit after a signal sent at `sent`; it must exit with status 0 (what
/// `Worker::run` and `jetq_telemetry::run_main` return after a graceful stop), within `limit`.
/// Returns how long it took.
async fn exits_cleanly(child: &mut Child, what: &str, sent: Instant, limit: Duration) -> Duration {
    let status: ExitStatus = within(limit, &format!("{what} to exit"), child.wait())
        .await
        .expect("wait for the process");
    let took = sent.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "{what} ended with {status:?} (signal {:?}) {took:?} after the signal: a graceful stop \
         exits 0; death by the signal itself means no handler was installed",
        status.signal()
    );
    took
}

/// Asserts that a process that held a task past its grace stopped after the grace (it waited
/// for the task) and within its slack.
fn stopped_after_the_grace(what: &str, took: Duration) {
    eprintln!("{what} exited {took:?} after the signal (grace {GRACE:?})");
    assert!(
        took >= GRACE,
        "{what} exited {took:?} after the signal, before its grace of {GRACE:?} was over"
    );
    assert!(
        took <= GRACE + STOP_SLACK,
        "{what} took {took:?} to stop: more than its grace ({GRACE:?}) + {STOP_SLACK:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// test_worker

fn spawn_test_worker(server: &NatsServer, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_test_worker"))
        .env("JETQ_NATS_URL", server.url())
        .env("JETQ_ACK_WAIT", format!("{}s", ACK_WAIT.as_secs()))
        .env("JETQ_SHUTDOWN_GRACE", format!("{}ms", GRACE.as_millis()))
        .env("JETQ_FETCH_EXPIRES", "500ms")
        .env("JETQ_CONCURRENCY", "2")
        .env("TEST_WORKER_NAME", name)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("test_worker starts")
}

/// Starts a `test_worker` process and waits for its `test.ready`.
async fn start_test_worker(
    server: &NatsServer,
    name: &str,
    ready: &mut async_nats::Subscriber,
) -> Child {
    let child = spawn_test_worker(server, name);
    loop {
        let message = within(WAIT, &format!("worker {name} to be ready"), ready.next())
            .await
            .expect("ready subscription");
        if message.payload == name.as_bytes() {
            return child;
        }
    }
}

/// A `test.started`/`test.done` report: `"<worker> <n> <attempt> <id>"`.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    worker: String,
    n: u64,
    attempt: u32,
    id: String,
}

async fn next_report(subscriber: &mut async_nats::Subscriber, what: &str) -> Report {
    let message = within(WAIT, what, subscriber.next())
        .await
        .expect("report subscription");
    let text = String::from_utf8_lossy(&message.payload).to_string();
    let parts: Vec<&str> = text.split(' ').collect();
    assert_eq!(parts.len(), 4, "malformed report {text:?}");
    Report {
        worker: parts[0].to_owned(),
        n: parts[1].parse().expect("task number"),
        attempt: parts[2].parse().expect("attempt"),
        id: parts[3].to_owned(),
    }
}

#[tokio::test]
async fn sigterm_and_sigint_stop_a_worker_process_within_its_grace_and_hand_its_long_task_on_at_once(
) {
    init_logs();
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    let mut done = observer.subscribe("test.done").await.unwrap();
    observer.flush().await.unwrap();

    let mut first = start_test_worker(&server, "first", &mut ready).await;
    let producer = producer(&server).await;
    // A task far longer than any grace, and one that ends within the grace.
    for (n, note) in [(1, "sleep:60000"), (2, "sleep:700")] {
        producer
            .enqueue(&Job {
                n,
                note: note.into(),
            })
            .await
            .unwrap();
    }
    let mut running = HashMap::new();
    while running.len() < 2 {
        let report = next_report(&mut started, "the first worker to start both tasks").await;
        assert_eq!((report.worker.as_str(), report.attempt), ("first", 1));
        running.insert(report.n, report.id);
    }
    let long_id = running[&1].clone();

    // SIGTERM: the short task finishes within the grace, the long one is handed back when the
    // grace is over, the process exits 0.
    let sent = send(&first, "TERM").await;
    let finished = tokio::select! {
        report = next_report(&mut done, "the short task to finish during the grace") => report,
        status = first.wait() => panic!(
            "the first worker ended ({status:?}) {:?} after SIGTERM with its short task unfinished",
            sent.elapsed()
        ),
    };
    assert_eq!((finished.worker.as_str(), finished.n), ("first", 2));
    let took = exits_cleanly(&mut first, "the first worker", sent, WAIT).await;
    stopped_after_the_grace("the first worker (SIGTERM)", took);
    // A worker started only now finds the task waiting (as after a rolling deploy's restart).
    let mut second = start_test_worker(&server, "second", &mut ready).await;
    let second_ready = Instant::now();
    let resumed = next_report(
        &mut started,
        "the second worker to get the handed-back task (without a hand-back: after ack_wait)",
    )
    .await;
    let waited = sent.elapsed();
    eprintln!("handed-back task running again {waited:?} after the signal");
    let after_ready = second_ready.elapsed();
    assert_eq!(
        resumed,
        Report {
            worker: "second".into(),
            n: 1,
            attempt: 1,
            id: long_id.clone(),
        },
        "handed back at the end of the grace: the same task, and still attempt 1"
    );
    assert!(
        after_ready < Duration::from_secs(2) && waited < ACK_WAIT / 4,
        "the second worker got the task {after_ready:?} after it was ready, {waited:?} after \
         SIGTERM: not handed back at once (grace {GRACE:?}, ack_wait {ACK_WAIT:?})"
    );

    // SIGINT (Ctrl-C) does the same: a third worker gets it, attempt 1 after two hand-backs.
    let _third = start_test_worker(&server, "third", &mut ready).await;
    let sent = send(&second, "INT").await;
    let took = exits_cleanly(&mut second, "the second worker", sent, WAIT).await;
    stopped_after_the_grace("the second worker (SIGINT)", took);
    let resumed = next_report(&mut started, "the third worker to get the task").await;
    let waited = sent.elapsed();
    eprintln!("handed-back task running again {waited:?} after the signal");
    assert_eq!(
        resumed,
        Report {
            worker: "third".into(),
            n: 1,
            attempt: 1,
            id: long_id,
        }
    );
    assert!(
        waited <= GRACE + STOP_SLACK && waited < ACK_WAIT / 4,
        "the third worker got the task {waited:?} after SIGINT (grace {GRACE:?}, ack_wait \
         {ACK_WAIT:?})"
    );
    // The stopped workers never finished the long task.
    let extra = tokio::time::timeout(Duration::from_millis(200), done.next()).await;
    assert!(
        extra.is_err(),
        "a stopped worker finished a task: {extra:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// jetq-push

/// The `jetq-push` binary against `server`, unsigned, for the targets file `targets`, with its
/// health endpoint on `health`.
fn spawn_push(server: &NatsServer, targets: &Path, health: SocketAddr) -> Child {
    Command::new(workspace_binary(
        "JETQ_TEST_PUSH_BIN",
        "jetq-push",
        "jetq-push",
    ))
    .env_clear()
    .env("JETQ_NATS_URL", server.url())
    .env("JETQ_PUSH_TARGETS_FILE", targets)
    .env("JETQ_PUSH_UNSIGNED", "true")
    .env("JETQ_ACK_WAIT", format!("{}s", ACK_WAIT.as_secs()))
    .env("JETQ_SHUTDOWN_GRACE", format!("{}ms", GRACE.as_millis()))
    .env("JETQ_FETCH_EXPIRES", "500ms")
    .env("JETQ_HEALTH_LISTEN", health.to_string())
    .env("OTEL_SDK_DISABLED", "true")
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .expect("jetq-push starts")
}

/// Starts `jetq-push` and waits until its `/readyz` says it is running and pulling.
async fn start_push(server: &NatsServer, targets: &Path) -> Child {
    let health: SocketAddr = ([127, 0, 0, 1], jetq_harness::free_port()).into();
    let child = spawn_push(server, targets, health);
    eventually(WAIT, "jetq-push to be ready", || async move {
        matches!(http_get(health, "/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    child
}

/// What the endpoint saw of one request.
#[derive(Debug)]
struct Request {
    task_id: String,
    attempt: u32,
}

#[derive(Clone)]
struct Hook {
    /// Requests answered with 200; earlier ones are never answered.
    hang_first: usize,
    count: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Request>,
}

async fn hook(State(hook): State<Hook>, headers: HeaderMap) -> axum::http::StatusCode {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let n = hook.count.fetch_add(1, Ordering::SeqCst) + 1;
    hook.tx
        .send(Request {
            task_id: header("jetq-task-id"),
            attempt: header("jetq-attempt").parse().unwrap_or(0),
        })
        .ok();
    if n <= hook.hang_first {
        // A request still in flight when its process is told to stop.
        std::future::pending::<()>().await;
    }
    axum::http::StatusCode::NO_CONTENT
}

#[tokio::test]
async fn sigterm_and_sigint_stop_jetq_push_mid_request_and_hand_the_task_on_at_once() {
    init_logs();
    let server = NatsServer::start().await;
    let (tx, mut requests) = mpsc::unbounded_channel();
    let app = Router::new().route("/hook", post(hook)).with_state(Hook {
        hang_first: 2,
        count: Arc::new(AtomicUsize::new(0)),
        tx,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.yaml");
    std::fs::write(
        &targets,
        format!("targets:\n  - queue: hooks\n    url: http://{addr}/hook\n    timeout: 60s\n"),
    )
    .unwrap();

    let mut first = start_push(&server, &targets).await;
    let enqueued = producer(&server)
        .await
        .enqueue_raw(jetq_producer::RawTask {
            queue: "hooks".into(),
            task: "notify".into(),
            payload: br#"{"n":1}"#.to_vec().into(),
            options: jetq_producer::EnqueueOptions::new(),
        })
        .await
        .unwrap();
    let request = next(&mut requests, "the first jetq-push to POST the task").await;
    assert_eq!(
        (request.task_id.as_str(), request.attempt),
        (enqueued.id.as_str(), 1)
    );
    let mut second = start_push(&server, &targets).await;

    let sent = send(&first, "TERM").await;
    let took = exits_cleanly(&mut first, "the first jetq-push", sent, WAIT).await;
    stopped_after_the_grace("the first jetq-push (SIGTERM)", took);
    let request = next(
        &mut requests,
        "the second jetq-push to POST the handed-back task (without a hand-back: after ack_wait)",
    )
    .await;
    let waited = sent.elapsed();
    eprintln!("handed-back task running again {waited:?} after the signal");
    assert_eq!(
        (request.task_id.as_str(), request.attempt),
        (enqueued.id.as_str(), 1),
        "a hand-back is no attempt"
    );
    assert!(
        waited <= GRACE + STOP_SLACK && waited < ACK_WAIT / 4,
        "the second jetq-push got the task {waited:?} after SIGTERM (grace {GRACE:?}, ack_wait \
         {ACK_WAIT:?})"
    );

    let mut third = start_push(&server, &targets).await;
    let sent = send(&second, "INT").await;
    let took = exits_cleanly(&mut second, "the second jetq-push", sent, WAIT).await;
    stopped_after_the_grace("the second jetq-push (SIGINT)", took);
    let request = next(&mut requests, "the third jetq-push to POST the task").await;
    let waited = sent.elapsed();
    eprintln!("handed-back task running again {waited:?} after the signal");
    assert_eq!(
        (request.task_id.as_str(), request.attempt),
        (enqueued.id.as_str(), 1)
    );
    assert!(
        waited <= GRACE + STOP_SLACK && waited < ACK_WAIT / 4,
        "the third jetq-push got the task {waited:?} after SIGINT (grace {GRACE:?}, ack_wait \
         {ACK_WAIT:?})"
    );
    // Answered this time: acked, the task stream drains.
    let js = raw_jetstream(&server).await;
    eventually(WAIT, "the task to be acked", || {
        let js = js.clone();
        async move { (stream_len(&js, &Subjects::default().tasks_stream()).await == 0).then_some(()) }
    })
    .await;
    // Idle, it stops at once: no grace to wait out.
    let sent = send(&third, "TERM").await;
    let took = exits_cleanly(&mut third, "the idle third jetq-push", sent, WAIT).await;
    assert!(
        took < GRACE + STOP_SLACK,
        "an idle jetq-push took {took:?} to stop"
    );
}

// ---------------------------------------------------------------------------------------------
// jetq-scheduler

#[tokio::test]
async fn sigterm_and_sigint_stop_the_scheduler_binary_with_status_0() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let schedules = dir.path().join("schedules.yaml");
    std::fs::write(
        &schedules,
        "schedules:\n  - name: every-second\n    cron: \"* * * * * *\"\n    queue: work\n    \
         task: job\n    args: { n: 1 }\n",
    )
    .unwrap();
    let binary = workspace_binary(
        "JETQ_TEST_SCHEDULER_BIN",
        "jetq-scheduler",
        "jetq-scheduler",
    );
    for signal in ["TERM", "INT"] {
        let health: SocketAddr = ([127, 0, 0, 1], jetq_harness::free_port()).into();
        let mut child = Command::new(&binary)
            .env_clear()
            .env("JETQ_NATS_URL", server.url())
            .env("JETQ_SCHEDULES_FILE", &schedules)
            .env("JETQ_HEALTH_LISTEN", health.to_string())
            .env("OTEL_SDK_DISABLED", "true")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("jetq-scheduler starts");
        // Running: ready, and it fires (its main loop, which listens for the signals, is on).
        eventually(WAIT, "jetq-scheduler to be ready", || async move {
            matches!(http_get(health, "/readyz").await, Ok((200, _))).then_some(())
        })
        .await;
        let before = stream_len(&js, &Subjects::default().tasks_stream()).await;
        eventually(WAIT, "jetq-scheduler to fire its schedule", || {
            let js = js.clone();
            async move {
                (stream_len(&js, &Subjects::default().tasks_stream()).await > before).then_some(())
            }
        })
        .await;
        let sent = send(&child, signal).await;
        let took = exits_cleanly(&mut child, "jetq-scheduler", sent, WAIT).await;
        assert!(
            took < STOP_SLACK,
            "jetq-scheduler took {took:?} to stop on SIG{signal}"
        );
    }
}
