//! HTTP push dispatch (`jetq-push`) against a real nats-server and real HTTP endpoints: axum
//! servers on loopback ports inside the test, which record every request they get (arrival
//! time, headers, body, requests in flight) and answer as the test says.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use common::await_drained;
use jetq_contract::{DeadReason, FailureRecord, Subjects, Task};
use jetq_push::{PushConfig, PushError};
use jetq_push_signature::{SigningKeys, Verifier, VerifyError};
use jetq_tests::{otel::*, *};
use opentelemetry::trace::TraceContextExt;
use serde::{Deserialize, Serialize};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What the push worker signs with (new key first, old key second: a rotation).
const KEYS: &str = "push-test-key-new,push-test-key-old";

/// A task of the `hooks` queue; the push worker has no Rust type for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Notify {
    n: u64,
    #[serde(default)]
    note: String,
}

impl Task for Notify {
    const NAME: &'static str = "notify";
    const QUEUE: &'static str = "hooks";
}

/// A task of the `bursts` queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Burst {
    n: u64,
}

impl Task for Burst {
    const NAME: &'static str = "burst";
    const QUEUE: &'static str = "bursts";
}

fn notify(n: u64) -> Notify {
    Notify {
        n,
        note: format!("task {n}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The test endpoint.

/// One request as the endpoint received it.
#[derive(Debug, Clone)]
struct Received {
    /// 1-based arrival order.
    n: usize,
    at: Instant,
    wall: SystemTime,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn attempt(&self) -> u32 {
        self.header("jetq-attempt")
            .and_then(|v| v.parse().ok())
            .expect("Jetq-Attempt header")
    }
}

/// How the endpoint answers one request.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    timing: Timing,
}

/// When the endpoint answers.
enum Timing {
    AtOnce,
    /// After this service time: a slow endpoint, whose requests overlap.
    After(Duration),
    /// Never: the client has to give up.
    Never,
}

impl Reply {
    fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            timing: Timing::AtOnce,
        }
    }

    fn ok() -> Self {
        Reply::status(200)
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    fn after(mut self, service_time: Duration) -> Self {
        self.timing = Timing::After(service_time);
        self
    }

    fn never(mut self) -> Self {
        self.timing = Timing::Never;
        self
    }
}

type Behaviour = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

#[derive(Clone)]
struct EndpointState {
    behaviour: Behaviour,
    count: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Received>,
}

/// Counts a request in flight until it is answered or abandoned by the client.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    State(state): State<EndpointState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _in_flight = InFlight(state.in_flight.clone());
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let received = Received {
        n: state.count.fetch_add(1, Ordering::SeqCst) + 1,
        at: Instant::now(),
        wall: SystemTime::now(),
        path: uri.path().to_owned(),
        headers,
        body,
    };
    let reply = (state.behaviour)(&received);
    state.tx.send(received).ok();
    match reply.timing {
        Timing::AtOnce => {}
        // The simulated endpoint's own work, not a wait for an event: it is what makes the
        // requests of the concurrency test overlap.
        Timing::After(service_time) => tokio::time::sleep(service_time).await,
        Timing::Never => std::future::pending::<()>().await,
    }
    let mut response = (
        StatusCode::from_u16(reply.status).expect("valid test status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("valid test header"));
    }
    response
}

/// An HTTP server on a loopback port that records every request.
struct Endpoint {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Received>,
    max_in_flight: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Endpoint {
    async fn start(behaviour: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Endpoint::serve(listener, behaviour)
    }

    fn serve(
        listener: TcpListener,
        behaviour: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> Endpoint {
        let (tx, requests) = mpsc::unbounded_channel();
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let state = EndpointState {
            behaviour: Arc::new(behaviour),
            count: Arc::new(AtomicUsize::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: max_in_flight.clone(),
            tx,
        };
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Endpoint {
            addr,
            requests,
            max_in_flight,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn next(&mut self, what: &str) -> Received {
        next(&mut self.requests, what).await
    }

    /// Everything received and not yet taken.
    fn drain(&mut self) -> Vec<Received> {
        let mut all = Vec::new();
        while let Ok(received) = self.requests.try_recv() {
            all.push(received);
        }
        all
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The push worker under test.

/// A running push worker; stopped gracefully by [`PushWorker::stop`].
struct PushWorker {
    stop: oneshot::Sender<()>,
    run: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl PushWorker {
    /// Writes `targets` to a file, reads the configuration through the variables the binary
    /// reads, and runs the worker with the tests' fast settings.
    async fn start(server: &NatsServer, targets: &str) -> PushWorker {
        PushWorker::start_with(server, targets, |builder| builder).await
    }

    async fn start_with(
        server: &NatsServer,
        targets: &str,
        tweak: impl FnOnce(jetq_consumer::WorkerBuilder) -> jetq_consumer::WorkerBuilder,
    ) -> PushWorker {
        PushWorker::start_full(server, targets, tweak, None).await
    }

    async fn start_full(
        server: &NatsServer,
        targets: &str,
        tweak: impl FnOnce(jetq_consumer::WorkerBuilder) -> jetq_consumer::WorkerBuilder,
        meter: Option<opentelemetry::metrics::Meter>,
    ) -> PushWorker {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.yaml");
        std::fs::write(&path, targets).unwrap();
        let config = PushConfig::from_env_iter(vec![
            (
                "JETQ_PUSH_TARGETS_FILE".to_owned(),
                path.display().to_string(),
            ),
            ("JETQ_PUSH_SIGNING_KEYS".to_owned(), KEYS.to_owned()),
        ])
        .expect("the targets file is valid");
        let builder = match meter {
            Some(meter) => jetq_push::register_with_meter(tweak(worker(server)), &config, &meter),
            None => jetq_push::register(tweak(worker(server)), &config),
        }
        .unwrap();
        let worker = builder.build().await.expect("the push worker builds");
        let (stop, stopped) = oneshot::channel();
        let run = tokio::spawn(worker.run_until(async {
            stopped.await.ok();
        }));
        PushWorker {
            stop,
            run,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.stop.send(()).ok();
        within(WAIT, "the push worker to stop", self.run)
            .await
            .unwrap();
    }
}

/// The failure record of a dead letter.
fn failure_record(message: &async_nats::jetstream::message::StreamMessage) -> FailureRecord {
    serde_json::from_str(&required_header(message, "Jetq-Failure")).expect("failure record JSON")
}

/// A target for the `hooks` queue at `url` with short backoffs, plus `extra` YAML lines.
fn hooks_target(url: &str, extra: &str) -> String {
    format!(
        "targets:\n  - name: hooks\n    queue: hooks\n    url: {url}\n    backoff: 100ms\n    \
         backoff_max: 200ms\n{extra}"
    )
}

/// Logs for the test; tests here run next to one that sets its own subscriber.
fn setup() {
    isolate_subscribers();
    init_logs();
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn a_2xx_answer_acks_the_task_and_the_request_carries_every_header_and_a_valid_signature() {
    setup();
    let server = NatsServer::start().await;
    let mut endpoint = Endpoint::start(|_| Reply::ok()).await;
    let push = PushWorker::start(
        &server,
        &hooks_target(&endpoint.url("/jetq/{queue}/{task}"), ""),
    )
    .await;
    let producer = producer(&server).await;
    let enqueued = producer.enqueue(&notify(7)).await.unwrap();

    let request = endpoint.next("the pushed task").await;
    assert_eq!(request.path, "/jetq/hooks/notify");
    let args: Notify = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(args, notify(7), "the body is the task's JSON arguments");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("jetq-task-id"), Some(enqueued.id.as_str()));
    assert_eq!(request.attempt(), 1);
    assert_eq!(request.header("jetq-queue"), Some("hooks"));
    assert_eq!(request.header("jetq-task"), Some("notify"));
    let enqueued_at = request
        .header("jetq-enqueued-at")
        .expect("Jetq-Enqueued-At");
    let enqueued_at = jetq_contract::time::parse(enqueued_at).expect("RFC 3339 enqueue time");
    assert!(enqueued_at <= request.wall);

    // The endpoint holds only the old key of the rotation and still accepts.
    let verifier = Verifier::new(SigningKeys::new(["push-test-key-old"]).unwrap());
    let (ts, id, signature) = (
        request.header("jetq-timestamp"),
        request.header("jetq-task-id"),
        request.header("jetq-signature"),
    );
    assert!(signature.is_some_and(|s| s.starts_with("v1=")));
    verifier
        .verify(ts, id, signature, &request.body, SystemTime::now())
        .expect("the signature verifies at the endpoint");
    let tampered = br#"{"n":8,"note":"task 7"}"#;
    assert_eq!(
        verifier.verify(ts, id, signature, tampered, SystemTime::now()),
        Err(VerifyError::Mismatch),
        "a tampered body is refused"
    );
    let other = Verifier::new(SigningKeys::new(["not-the-key"]).unwrap());
    assert!(other
        .verify(ts, id, signature, &request.body, SystemTime::now())
        .is_err());

    await_drained(&raw_jetstream(&server).await).await;
    push.stop().await;
    assert!(endpoint.drain().is_empty(), "one request, acked");
}

#[tokio::test]
async fn a_4xx_answer_dead_letters_the_task_with_the_status_and_a_bounded_body_excerpt() {
    setup();
    let server = NatsServer::start().await;
    let long_body = format!("invalid address: {}", "x".repeat(4000));
    let mut endpoint = Endpoint::start({
        let long_body = long_body.clone();
        move |_| Reply::status(422).body(long_body.clone())
    })
    .await;
    let push = PushWorker::start(&server, &hooks_target(&endpoint.url("/hook"), "")).await;
    let enqueued = producer(&server).await.enqueue(&notify(1)).await.unwrap();

    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], "Jetq-Task-Id").as_deref(),
        Some(enqueued.id.as_str())
    );
    let record = failure_record(&dead[0]);
    assert_eq!(record.reason, DeadReason::Fatal);
    assert_eq!(record.attempts, 1, "a 4xx is not retried");
    let http = record.http.expect("the HTTP failure record");
    assert_eq!(http.status, 422);
    assert!(http.body.starts_with("invalid address: xxx"));
    assert!(http.body.len() <= jetq_contract::failure::MAX_HTTP_BODY_EXCERPT);
    assert!(http.body_truncated);
    assert!(record.error.contains("422"), "{}", record.error);
    let payload: Notify = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(payload, notify(1), "the dead letter keeps the task");

    await_drained(&js).await;
    push.stop().await;
    assert_eq!(endpoint.drain().len(), 1, "exactly one request");
}

#[tokio::test]
async fn a_5xx_answer_is_retried_with_backoff_until_the_endpoint_recovers() {
    setup();
    let telemetry =
        jetq_telemetry::Telemetry::new(jetq_telemetry::TelemetryConfig::local("jetq-push", "warn"))
            .unwrap();
    let server = NatsServer::start().await;
    let mut endpoint = Endpoint::start(|request| match request.n {
        1 => Reply::status(500).body("database down"),
        2 => Reply::status(502),
        _ => Reply::ok(),
    })
    .await;
    // Backoffs long enough that the second is told from the first despite the ±20 % jitter
    // (PUSH.md): 300 ms ± 60, then 600 ms ± 120.
    let targets = format!(
        "targets:\n  - name: hooks\n    queue: hooks\n    url: {}\n    backoff: 300ms\n    \
         backoff_max: 10s\n",
        endpoint.url("/hook")
    );
    let push = PushWorker::start_full(
        &server,
        &targets,
        |builder| builder,
        Some(telemetry.meter("jetq-push")),
    )
    .await;
    let enqueued = producer(&server).await.enqueue(&notify(1)).await.unwrap();

    let mut attempts = Vec::new();
    let mut arrivals = Vec::new();
    for what in ["attempt 1", "attempt 2", "attempt 3"] {
        let request = endpoint.next(what).await;
        assert_eq!(request.header("jetq-task-id"), Some(enqueued.id.as_str()));
        attempts.push(request.attempt());
        arrivals.push(request.at);
    }
    assert_eq!(attempts, vec![1, 2, 3]);
    // Each gap follows the target's backoff for that attempt (issue #27: a worker that used the
    // first attempt's delay every time passed this test): at least the delay less its jitter,
    // and not far beyond it (a NAK without delay is early, an ack_wait expiry — 3 s — late).
    let retry = jetq_push::Targets::from_yaml(&targets, std::path::Path::new("targets.yaml"))
        .unwrap()
        .find("hooks", "notify")
        .expect("the hooks target")
        .retry
        .clone();
    let slack = Duration::from_millis(900);
    for (attempt, pair) in (1u32..).zip(arrivals.windows(2)) {
        let gap = pair[1] - pair[0];
        let base = retry
            .initial
            .mul_f64(retry.multiplier.powi(attempt as i32 - 1))
            .min(retry.max);
        let (shortest, longest) = (
            base.mul_f64(1.0 - retry.jitter),
            base.mul_f64(1.0 + retry.jitter),
        );
        assert!(
            gap >= shortest,
            "retry after attempt {attempt} came after {gap:?}, before its backoff \
             ({base:?} ± {} %)",
            retry.jitter * 100.0
        );
        assert!(
            gap <= longest + slack && longest + slack < fast_settings().ack_wait,
            "retry after attempt {attempt} came after {gap:?}, far beyond its backoff \
             ({base:?} ± {} %)",
            retry.jitter * 100.0
        );
    }
    let js = raw_jetstream(&server).await;
    await_drained(&js).await;
    push.stop().await;
    assert_eq!(stream_len(&js, &Subjects::default().dead_stream()).await, 0);
    assert!(endpoint.drain().is_empty());

    // Each answer is counted per target and status; nothing waits any more.
    let samples = parse_prometheus(&telemetry.metrics_text().unwrap());
    let port = endpoint.addr.port().to_string();
    for (status, error) in [("500", Some("500")), ("502", Some("502")), ("200", None)] {
        let mut labels = vec![
            ("jetq_push_target", "hooks"),
            ("http_request_method", "POST"),
            ("http_response_status_code", status),
            ("server_address", "127.0.0.1"),
            ("server_port", port.as_str()),
        ];
        if let Some(error) = error {
            labels.push(("error_type", error));
        }
        assert_eq!(
            metric(
                &samples,
                "http_client_request_duration_seconds_count",
                &labels
            ),
            1.0,
            "{status}: {samples:#?}"
        );
    }
    let target = [("jetq_push_target", "hooks")];
    assert_eq!(
        metric(&samples, "jetq_push_wait_duration_seconds_count", &target),
        3.0
    );
    assert_eq!(metric(&samples, "jetq_push_waiting", &target), 0.0);
}

#[tokio::test]
async fn retry_after_of_a_429_and_a_503_is_honoured_in_seconds_and_as_a_date() {
    setup();
    let server = NatsServer::start().await;
    let retry_at = Arc::new(std::sync::Mutex::new(None::<SystemTime>));
    let mut endpoint = Endpoint::start({
        let retry_at = retry_at.clone();
        move |request| match request.n {
            1 => Reply::status(429).header("retry-after", "2"),
            2 => {
                let at = request.wall + Duration::from_secs(3);
                let date = httpdate::fmt_http_date(at);
                *retry_at.lock().unwrap() = Some(httpdate::parse_http_date(&date).unwrap());
                Reply::status(503).header("retry-after", date)
            }
            _ => Reply::ok(),
        }
    })
    .await;
    // The backoff (100 ms) would retry much sooner: only Retry-After explains the gaps.
    let push = PushWorker::start(&server, &hooks_target(&endpoint.url("/hook"), "")).await;
    producer(&server).await.enqueue(&notify(1)).await.unwrap();

    let first = endpoint.next("the first request").await;
    let second = endpoint.next("the retry after Retry-After: 2").await;
    let gap = second.at - first.at;
    assert!(
        gap >= Duration::from_millis(1990),
        "retried after {gap:?}, not 2 s"
    );
    assert!(gap < Duration::from_secs(6), "retried after {gap:?}");
    let third = endpoint.next("the retry after the Retry-After date").await;
    let due = retry_at.lock().unwrap().expect("the date was sent");
    assert!(
        third.wall + Duration::from_millis(10) >= due,
        "retried {:?} before the Retry-After date",
        due.duration_since(third.wall).unwrap_or_default()
    );
    assert_eq!(third.attempt(), 3);
    await_drained(&raw_jetstream(&server).await).await;
    push.stop().await;
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_the_task_is_retried() {
    setup();
    let server = NatsServer::start().await;
    let mut endpoint = Endpoint::start(|request| match request.n {
        1 => Reply::ok().never(),
        _ => Reply::ok(),
    })
    .await;
    let push = PushWorker::start(
        &server,
        &hooks_target(&endpoint.url("/hook"), "    timeout: 400ms\n"),
    )
    .await;
    producer(&server).await.enqueue(&notify(1)).await.unwrap();

    let slow = endpoint.next("the request that hangs").await;
    let retry = endpoint.next("the retry after the timeout").await;
    assert_eq!((slow.attempt(), retry.attempt()), (1, 2));
    let gap = retry.at - slow.at;
    assert!(
        gap >= Duration::from_millis(400),
        "retried after {gap:?}, before the timeout"
    );
    assert!(
        gap < Duration::from_secs(5),
        "the retry came {gap:?} after a 400 ms timeout"
    );
    await_drained(&raw_jetstream(&server).await).await;
    push.stop().await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_endpoint_is_up() {
    setup();
    let server = NatsServer::start().await;
    let port = jetq_harness::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let push = PushWorker::start(&server, &hooks_target(&url, "")).await;
    producer(&server).await.enqueue(&notify(1)).await.unwrap();

    // Nothing listens yet: wait until the server delivered the task a second time, i.e. the
    // first attempt failed and was NAK'd with the backoff.
    let js = raw_jetstream(&server).await;
    let subjects = Subjects::default();
    eventually(WAIT, "a second delivery after a refused connection", || {
        let js = js.clone();
        let subjects = subjects.clone();
        async move {
            let stream = js.get_stream(subjects.tasks_stream()).await.ok()?;
            let info = stream.consumer_info(subjects.durable("hooks")).await.ok()?;
            (info.delivered.consumer_sequence >= 2).then_some(())
        }
    })
    .await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let mut endpoint = Endpoint::serve(listener, |_| Reply::ok());
    let request = endpoint.next("the task once the endpoint is up").await;
    assert!(request.attempt() >= 2, "attempt {}", request.attempt());
    await_drained(&js).await;
    push.stop().await;
    assert_eq!(stream_len(&js, &subjects.dead_stream()).await, 0);
}

#[tokio::test]
async fn concurrency_and_rate_limits_hold_under_a_burst_and_waiting_tasks_are_not_redelivered() {
    setup();
    let server = NatsServer::start().await;
    // Slow answers: only the concurrency limit bounds the requests in flight.
    let mut slow = Endpoint::start(|_| Reply::ok().after(Duration::from_millis(200))).await;
    // Fast answers: only the rate limit bounds the requests per second.
    let mut fast = Endpoint::start(|_| Reply::ok()).await;
    let targets = format!(
        "targets:
  - name: slow
    queue: hooks
    url: {}
    concurrency: 3
  - name: fast
    queue: bursts
    url: {}
    rate: 10
    burst: 2
",
        slow.url("/slow"),
        fast.url("/fast")
    );
    // 16 tasks per queue run at once in this process; ack_wait (3 s) is shorter than the
    // rate-limited queue's drain (~3 s), so waiting tasks live on the worker's heartbeats.
    let push = PushWorker::start_with(&server, &targets, |builder| builder.concurrency(16)).await;
    let producer = producer(&server).await;
    let (slow_count, fast_count) = (18, 32);
    for n in 0..slow_count {
        producer.enqueue(&notify(n)).await.unwrap();
    }
    for n in 0..fast_count {
        producer.enqueue(&Burst { n }).await.unwrap();
    }

    let mut fast_requests = Vec::new();
    for _ in 0..fast_count {
        fast_requests.push(fast.next("a rate-limited request").await);
    }
    let mut slow_requests = Vec::new();
    for _ in 0..slow_count {
        slow_requests.push(slow.next("a concurrency-limited request").await);
    }
    let js = raw_jetstream(&server).await;
    await_drained(&js).await;
    push.stop().await;

    let max_in_flight = slow.max_in_flight.load(Ordering::SeqCst);
    assert_eq!(max_in_flight, 3, "requests in flight at the slow endpoint");
    let times: Vec<Instant> = fast_requests.iter().map(|r| r.at).collect();
    // A bucket of 2 refilled at 10/s lets at most 2 + 10 requests leave in any second. They
    // are timed on arrival here, a little after they left: the window is 950 ms so that
    // 50 ms of scheduling delay on one arrival cannot make a held limit look broken.
    let window = Duration::from_millis(950);
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t < *start + window)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= 12,
        "{busiest} requests within {window:?} at 10/s"
    );
    let span = times
        .iter()
        .max()
        .unwrap()
        .duration_since(*times.iter().min().unwrap());
    assert!(
        span >= Duration::from_millis(2900),
        "{fast_count} requests at 10/s after a burst of 2 took only {span:?}"
    );
    for requests in [&fast_requests, &slow_requests] {
        assert!(
            requests.iter().all(|r| r.attempt() == 1),
            "a waiting task was redelivered"
        );
    }
    assert!(
        slow.drain().is_empty() && fast.drain().is_empty(),
        "one request per task"
    );
}

#[tokio::test]
async fn the_request_carries_the_trace_context_of_the_task_continuing_the_producers_trace() {
    isolate_subscribers();
    let capture = SpanCapture::new();
    let _traced = tracing::dispatcher::set_default(&capture.dispatch());
    let server = NatsServer::start().await;
    let mut endpoint = Endpoint::start(|_| Reply::ok()).await;
    let push = PushWorker::start(&server, &hooks_target(&endpoint.url("/hook"), "")).await;
    let producer = producer(&server).await;
    let request_span = tracing::info_span!("web_request");
    let trace = request_span.context().span().span_context().trace_id();
    producer
        .enqueue(&notify(1))
        .instrument(request_span)
        .await
        .unwrap();

    let request = endpoint.next("the pushed task").await;
    let traceparent = request
        .header("traceparent")
        .expect("traceparent")
        .to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        parts[1],
        trace.to_string(),
        "the producer's trace continues"
    );
    await_drained(&raw_jetstream(&server).await).await;
    push.stop().await;

    // The parent is the attempt's `process` span, a child of the producer's `send` span.
    let process = eventually(WAIT, "the process span", || {
        let spans = capture.spans();
        async move {
            spans.into_iter().find(|span| {
                span.name.starts_with("process ") && span.span_context.trace_id() == trace
            })
        }
    })
    .await;
    assert_eq!(parts[2], process.span_context.span_id().to_string());
    let send = capture
        .spans()
        .into_iter()
        .find(|span| span.name.starts_with("send ") && span.span_context.trace_id() == trace)
        .expect("the producer's send span");
    assert_eq!(process.parent_span_id, send.span_context.span_id());
}

#[tokio::test]
async fn redirects_are_not_followed_unless_the_target_allows_them() {
    setup();
    let server = NatsServer::start().await;
    let mut endpoint = Endpoint::start(|request| match request.path.as_str() {
        "/hook" | "/moved" => Reply::status(307).header("location", "/elsewhere"),
        _ => Reply::ok(),
    })
    .await;
    let targets = format!(
        "{}  - name: follows\n    queue: bursts\n    url: {}\n    follow_redirects: true\n",
        hooks_target(&endpoint.url("/hook"), ""),
        endpoint.url("/moved")
    );
    let push = PushWorker::start(&server, &targets).await;
    let producer = producer(&server).await;
    producer.enqueue(&notify(1)).await.unwrap();

    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    let record = failure_record(&dead[0]);
    assert_eq!(record.reason, DeadReason::Fatal);
    assert_eq!(record.http.map(|http| http.status), Some(307));
    assert!(record.error.contains("/elsewhere"), "{}", record.error);
    await_drained(&js).await;
    let paths: Vec<String> = endpoint.drain().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        vec!["/hook".to_owned()],
        "the redirect was not followed"
    );

    // A target that follows redirects sends the same signed POST to the new location.
    producer.enqueue(&Burst { n: 2 }).await.unwrap();
    let first = endpoint.next("the request to the old location").await;
    let moved = endpoint.next("the request to the new location").await;
    assert_eq!(
        (first.path.as_str(), moved.path.as_str()),
        ("/moved", "/elsewhere")
    );
    assert_eq!(moved.body, first.body);
    let verifier = Verifier::new(SigningKeys::from_env_value(KEYS).unwrap());
    verifier
        .verify(
            moved.header("jetq-timestamp"),
            moved.header("jetq-task-id"),
            moved.header("jetq-signature"),
            &moved.body,
            SystemTime::now(),
        )
        .expect("the redirected request is still signed");
    await_drained(&js).await;
    push.stop().await;
    assert_eq!(stream_len(&js, &Subjects::default().dead_stream()).await, 1);
}

#[tokio::test]
async fn a_bad_targets_file_or_missing_keys_are_refused_at_startup_naming_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("targets.yaml");
    std::fs::write(
        &path,
        "targets:
  - name: billing
    queue: billing
    url: https://billing.example.com/jetq/{task}
    rate: fast
    concurrency: 0
  - name: reports
    queue: reports
    url: https://reports.example.com/{queue}/{tasks}
",
    )
    .unwrap();
    let vars = |extra: &[(&str, &str)]| {
        let mut vars = vec![(
            "JETQ_PUSH_TARGETS_FILE".to_owned(),
            path.display().to_string(),
        )];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        vars
    };
    let err = PushConfig::from_env_iter(vars(&[("JETQ_PUSH_SIGNING_KEYS", KEYS)])).unwrap_err();
    assert!(matches!(err, PushError::Targets(_)), "{err:?}");
    let text = err.to_string();
    for expected in [
        "target billing: field `rate`",
        "target billing: field `concurrency`",
        "target reports: field `url`",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in: {text}");
    }
    assert!(text.contains(&path.display().to_string()), "{text}");

    // Unsigned requests need an explicit opt-in; the refusal says how to fix it.
    std::fs::write(
        &path,
        "targets:\n  - queue: q\n    url: http://127.0.0.1:1/x\n",
    )
    .unwrap();
    let err = PushConfig::from_env_iter(vars(&[])).unwrap_err();
    assert!(matches!(err, PushError::SigningRequired), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("JETQ_PUSH_SIGNING_KEYS") && text.contains("JETQ_PUSH_UNSIGNED=true"));
    assert!(PushConfig::from_env_iter(vars(&[("JETQ_PUSH_UNSIGNED", "true")])).is_ok());
    let err = PushConfig::from_env_iter(vars(&[("JETQ_PUSH_SIGNING_KEYS", "a,,b")])).unwrap_err();
    assert!(err.to_string().contains("JETQ_PUSH_SIGNING_KEYS"), "{err}");
    let missing = PushConfig::from_env_iter(Vec::new()).unwrap_err();
    assert!(
        missing.to_string().contains("JETQ_PUSH_TARGETS_FILE"),
        "{missing}"
    );
}

#[tokio::test]
async fn tls_is_verified_and_an_endpoint_with_an_untrusted_certificate_gets_no_request() {
    setup();
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    };
    let server = NatsServer::start().await;
    // A TLS endpoint whose certificate no trust store knows (self-signed, for 127.0.0.1).
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (handshakes, mut handshake_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let handshakes = handshakes.clone();
            tokio::spawn(async move {
                handshakes.send(acceptor.accept(tcp).await.is_ok()).ok();
            });
        }
    });

    let url = format!("https://{addr}/hook");
    let push = PushWorker::start(&server, &hooks_target(&url, "    max_attempts: 2\n")).await;
    producer(&server).await.enqueue(&notify(1)).await.unwrap();

    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    let record = failure_record(&dead[0]);
    assert_eq!(
        record.reason,
        DeadReason::Exhausted,
        "TLS failures are retried"
    );
    assert_eq!(record.http, None, "no HTTP answer: the handshake failed");
    assert!(
        record.error.to_lowercase().contains("certificate"),
        "{}",
        record.error
    );
    await_drained(&js).await;
    push.stop().await;
    let mut completed = Vec::new();
    while let Ok(done) = handshake_rx.try_recv() {
        completed.push(done);
    }
    assert!(!completed.is_empty(), "the client connected");
    assert!(
        completed.iter().all(|done| !done),
        "the client completed a handshake with an untrusted certificate"
    );
}
