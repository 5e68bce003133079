//! The Rust producer against the shared vectors of `docs/conformance/vectors.json` (the Python
//! producer is held to the same file by `clients/python/tests/test_conformance.py`), and a
//! cross-language round trip: the Python client enqueues, a Rust worker runs the task.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use bytes::Bytes;
use jetq_consumer::TaskContext;
use jetq_contract::{ConfigError, ConnectionConfig, NameKind, Subjects};
use jetq_producer::{EnqueueError, EnqueueOptions, Producer, ProducerError, RawTask};
use jetq_tests::*;
use serde::Deserialize;
use tokio::sync::mpsc;

/// docs/conformance/vectors.json, as far as these tests read it.
#[derive(Debug, Deserialize)]
struct Vectors {
    patterns: BTreeMap<String, String>,
    valid: Vec<Valid>,
    invalid: Vec<Invalid>,
    invalid_prefixes: Vec<InvalidPrefix>,
    delayed: Vec<Delayed>,
    status_keys: Vec<StatusKey>,
    dead_payload_objects: Vec<DeadPayloadObject>,
    attempts: Vec<AttemptVector>,
}

/// Where a dead letter's body is stored when it does not fit (PROTOCOL §5).
#[derive(Debug, Deserialize)]
struct DeadPayloadObject {
    sequence: u64,
    task_id: String,
    object: String,
}

/// An attempt record and a delivery count, and the attempt number (PROTOCOL §4).
#[derive(Debug, Deserialize)]
struct AttemptVector {
    name: String,
    record: Option<String>,
    delivered: u64,
    attempt: u32,
}

/// A due time and where a delayed task due then is published (PROTOCOL §7).
#[derive(Debug, Deserialize)]
struct Delayed {
    name: String,
    due: String,
    queue: String,
    task: String,
    subject: String,
    not_before: String,
}

/// A task id and its key in the status bucket (PROTOCOL §8).
#[derive(Debug, Deserialize)]
struct StatusKey {
    id: String,
    key: String,
}

#[derive(Debug, Deserialize, Default)]
struct Options {
    key: Option<String>,
    max_attempts: Option<u32>,
    timeout_us: Option<u64>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Options {
    fn to_enqueue_options(&self) -> EnqueueOptions {
        let mut options = EnqueueOptions::new();
        if let Some(key) = &self.key {
            options = options.key(key.clone());
        }
        if let Some(attempts) = self.max_attempts {
            options = options.max_attempts(attempts);
        }
        if let Some(micros) = self.timeout_us {
            options = options.timeout(Duration::from_micros(micros));
        }
        if let Some(traceparent) = &self.traceparent {
            options = options.trace_context(traceparent.clone(), self.tracestate.clone());
        }
        options
    }
}

#[derive(Debug, Deserialize)]
struct Valid {
    name: String,
    prefix: String,
    queue: String,
    task: String,
    args: serde_json::Value,
    options: Options,
    subject: String,
    stream: String,
    payload: String,
    headers: BTreeMap<String, String>,
    header_patterns: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Invalid {
    name: String,
    queue: String,
    task: String,
    args: serde_json::Value,
    options: Options,
    error: String,
    name_kind: Option<String>,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct InvalidPrefix {
    name: String,
    prefix: String,
    error: String,
    field: String,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn vectors() -> Vectors {
    let path = repo_root().join("docs/conformance/vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is malformed: {e}", path.display()))
}

/// Checks a header value against a named pattern of the vectors file. The patterns are
/// regular expressions for other languages; here each name has a hand-written matcher, and an
/// unknown name fails the test so a new pattern cannot go unchecked.
fn matches_pattern(name: &str, value: &str, patterns: &BTreeMap<String, String>) -> bool {
    assert!(patterns.contains_key(name), "unknown pattern {name:?}");
    match name {
        "ulid" => {
            value.len() == 26
                && value
                    .bytes()
                    .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
        }
        "enqueued_at" => {
            // ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$
            let shape = "dddd-dd-ddTdd:dd:dd.ddddddZ";
            value.len() == shape.len()
                && value.bytes().zip(shape.bytes()).all(|(v, s)| match s {
                    b'd' => v.is_ascii_digit(),
                    other => v == other,
                })
                && jetq_contract::time::parse(value).is_some()
        }
        other => panic!("pattern {other:?} has no matcher in tests/tests/conformance.rs; add one"),
    }
}

#[test]
fn delayed_subjects_and_not_before_headers_match_the_vectors() {
    let vectors = vectors();
    assert!(!vectors.delayed.is_empty());
    for vector in &vectors.delayed {
        let due = jetq_contract::time::parse(&vector.due)
            .unwrap_or_else(|| panic!("{}: unparsable due time", vector.name));
        let second = jetq_contract::delayed::bucket_of(due);
        assert_eq!(
            Subjects::default().delayed(second, &vector.queue, &vector.task),
            vector.subject,
            "{}",
            vector.name
        );
        assert_eq!(
            jetq_contract::time::format(due),
            vector.not_before,
            "{}",
            vector.name
        );
    }
}

#[test]
fn dead_payload_objects_and_attempt_numbers_match_the_vectors() {
    let vectors = vectors();
    assert!(!vectors.dead_payload_objects.is_empty() && !vectors.attempts.is_empty());
    for vector in &vectors.dead_payload_objects {
        assert_eq!(
            jetq_contract::dead::payload_object_name(vector.sequence, &vector.task_id),
            vector.object,
            "{vector:?}"
        );
    }
    for vector in &vectors.attempts {
        // An unreadable record counts as none, as the worker reads it.
        let record = vector
            .record
            .as_deref()
            .and_then(|json| {
                jetq_contract::attempts::AttemptRecord::from_json(json.as_bytes()).ok()
            })
            .unwrap_or_default();
        assert_eq!(
            record.attempt(vector.delivered),
            vector.attempt,
            "{}",
            vector.name
        );
    }
}

#[test]
fn status_keys_match_the_vectors_and_decode_back() {
    let vectors = vectors();
    assert!(!vectors.status_keys.is_empty());
    for vector in &vectors.status_keys {
        assert_eq!(
            jetq_contract::status::key(&vector.id),
            vector.key,
            "{:?}",
            vector.id
        );
        assert_eq!(
            jetq_contract::status::id_from_key(&vector.key).as_deref(),
            Some(vector.id.as_str())
        );
    }
}

#[test]
fn vector_payloads_are_what_serde_json_writes_for_the_args() {
    // The Python producer writes `args` as compact JSON; these bytes are what serde_json
    // writes for the same value, so a Rust task type serialized by the producer and a Python
    // dict give the same payload.
    for vector in vectors().valid {
        let written = serde_json::to_string(&vector.args).unwrap();
        assert_eq!(written, vector.payload, "{}", vector.name);
    }
}

#[tokio::test]
async fn every_valid_vector_is_stored_exactly() {
    let server = NatsServer::start().await;
    let vectors = vectors();
    let js = raw_jetstream(&server).await;
    let mut producers: HashMap<String, Producer> = HashMap::new();
    for vector in &vectors.valid {
        if !producers.contains_key(&vector.prefix) {
            let producer = Producer::builder()
                .connection(ConnectionConfig {
                    prefix: vector.prefix.clone(),
                    ..connection(&server)
                })
                .connect()
                .await
                .unwrap_or_else(|e| panic!("{}: producer: {e}", vector.name));
            producers.insert(vector.prefix.clone(), producer);
        }
        let producer = &producers[&vector.prefix];
        assert_eq!(
            producer.subjects().tasks_stream(),
            vector.stream,
            "{}",
            vector.name
        );
        let enqueued = within(
            WAIT,
            &vector.name,
            producer.enqueue_raw(RawTask {
                queue: vector.queue.clone(),
                task: vector.task.clone(),
                payload: Bytes::from(vector.payload.clone()),
                options: vector.options.to_enqueue_options(),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: enqueue: {e}", vector.name));
        assert!(!enqueued.duplicate, "{}", vector.name);

        let stream = js.get_stream(&vector.stream).await.expect("stream exists");
        let message = stream
            .get_raw_message(enqueued.sequence)
            .await
            .unwrap_or_else(|e| panic!("{}: stored message: {e}", vector.name));
        assert_eq!(message.subject.as_str(), vector.subject, "{}", vector.name);
        assert_eq!(
            message.payload.as_ref(),
            vector.payload.as_bytes(),
            "{}",
            vector.name
        );
        let names: BTreeSet<String> = message
            .headers
            .iter()
            .map(|(name, _)| name.to_string())
            .collect();
        let expected: BTreeSet<String> = vector
            .headers
            .keys()
            .chain(vector.header_patterns.keys())
            .cloned()
            .collect();
        assert_eq!(names, expected, "{}: header names", vector.name);
        for (name, value) in &vector.headers {
            assert_eq!(
                header(&message, name).as_deref(),
                Some(value.as_str()),
                "{}: {name}",
                vector.name
            );
        }
        for (name, pattern) in &vector.header_patterns {
            let value = header(&message, name).unwrap();
            assert!(
                matches_pattern(pattern, &value, &vectors.patterns),
                "{}: {name}={value:?} does not match {pattern}",
                vector.name
            );
        }
        assert_eq!(
            header(&message, "Nats-Msg-Id").as_deref(),
            Some(enqueued.id.as_str())
        );
    }
}

#[tokio::test]
async fn every_invalid_vector_is_refused_with_the_documented_error() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    for vector in vectors().invalid {
        let result = producer
            .enqueue_raw(RawTask {
                queue: vector.queue.clone(),
                task: vector.task.clone(),
                payload: Bytes::from(serde_json::to_vec(&vector.args).unwrap()),
                options: vector.options.to_enqueue_options(),
            })
            .await;
        match (vector.error.as_str(), result) {
            ("InvalidName", Err(EnqueueError::InvalidName(err))) => {
                let kind = match err.kind {
                    NameKind::Queue => "queue",
                    NameKind::Task => "task",
                    NameKind::Prefix => "prefix",
                };
                assert_eq!(
                    Some(kind),
                    vector.name_kind.as_deref(),
                    "{}: name kind",
                    vector.name
                );
                assert_eq!(err.reason, vector.reason, "{}: reason", vector.name);
            }
            ("InvalidKey", Err(EnqueueError::InvalidKey(err))) => {
                assert_eq!(err.reason, vector.reason, "{}: reason", vector.name);
            }
            (expected, other) => panic!("{}: expected {expected}, got {other:?}", vector.name),
        }
    }
    let js = raw_jetstream(&server).await;
    assert_eq!(
        stream_len(&js, "JETQ_TASKS").await,
        0,
        "nothing was published"
    );
}

#[tokio::test]
async fn every_invalid_prefix_is_a_configuration_error() {
    let server = NatsServer::start().await;
    for vector in vectors().invalid_prefixes {
        assert_eq!(vector.error, "Config", "{}", vector.name);
        let result = Producer::builder()
            .connection(ConnectionConfig {
                prefix: vector.prefix.clone(),
                ..connection(&server)
            })
            .connect()
            .await;
        match result {
            Err(ProducerError::Config(ConfigError::Invalid { field, .. })) => {
                assert_eq!(field, vector.field, "{}", vector.name)
            }
            other => panic!(
                "{}: expected a configuration error, got {:?}",
                vector.name,
                other.map(|_| "a producer")
            ),
        }
    }
}

/// The interpreter of `.tools/venv` (or `$JETQ_TEST_SMTP_PYTHON`), which has nats-py and the
/// OpenTelemetry SDK; `scripts/ensure-nats-server.sh` installs them.
fn python() -> PathBuf {
    let path = std::env::var_os("JETQ_TEST_SMTP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/venv/bin/python"));
    assert!(
        path.exists(),
        "no Python interpreter at {} for the cross-language test: run scripts/ensure-nats-server.sh \
         (it creates .tools/venv with nats-py) or set JETQ_TEST_SMTP_PYTHON",
        path.display()
    );
    path
}

/// What the Python script reports on its last line of output.
#[derive(Debug, Deserialize)]
struct PythonReport {
    /// Task id per `n` it enqueued.
    ids: BTreeMap<u64, String>,
    /// The traceparent of the span the traced task was enqueued in.
    traceparent: String,
    /// The `n` of the traced task.
    traced: u64,
}

#[tokio::test]
async fn a_task_enqueued_by_the_python_client_is_run_by_a_rust_worker() {
    init_logs();
    let python = python();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The worker provisions the streams at startup, as in production.
    let worker = worker(&server)
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send((
                    job,
                    ctx.id().to_owned(),
                    ctx.header("traceparent").map(str::to_owned),
                    ctx.max_attempts(),
                ))
                .ok();
                ok()
            }
        })
        .build()
        .await
        .expect("worker starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    let script = repo_root().join("clients/python/tests/interop/enqueue_for_rust.py");
    let output = within(
        Duration::from_secs(60),
        "the Python producer script",
        tokio::process::Command::new(&python)
            .arg(&script)
            .env("JETQ_NATS_URL", server.url())
            .env("PYTHONPATH", repo_root().join("clients/python/src"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let report: PythonReport = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("unreadable report ({e}):\n{stdout}\nstderr:\n{stderr}"));
    assert_eq!(report.ids.len(), 4, "{report:?}");

    let mut seen = BTreeMap::new();
    while seen.len() < report.ids.len() {
        let (job, id, traceparent, max_attempts) = next(&mut rx, "tasks from Python").await;
        seen.insert(job.n, (job, id, traceparent, max_attempts));
    }
    for (n, id) in &report.ids {
        let (job, seen_id, traceparent, max_attempts) = &seen[n];
        assert_eq!(
            seen_id, id,
            "task {n}: the worker sees the id Python returned"
        );
        assert_eq!(
            job.note,
            format!("from python: Grüße #{n}"),
            "task {n}: args"
        );
        if *n == report.traced {
            assert_eq!(
                traceparent.as_deref(),
                Some(report.traceparent.as_str()),
                "the task continues the Python span's trace"
            );
            assert_eq!(
                *max_attempts, 2,
                "the Jetq-Max-Attempts override is honoured"
            );
        } else {
            assert_eq!(*traceparent, None, "task {n} was enqueued outside any span");
        }
    }
    assert_eq!(
        report.ids[&report.traced], "py-signup-42",
        "the idempotency key is the id"
    );
    let _ = stop.send(());
    within(WAIT, "worker shutdown", running)
        .await
        .expect("worker task");
}

/// A timestamp and the instant every reader takes it for, or `None` (PROTOCOL §3, Timestamps).
#[derive(Debug, Deserialize)]
struct TimestampVector {
    name: String,
    text: String,
    utc: Option<String>,
}

/// A publish reply and what the producer makes of it (PROTOCOL §3, Publish errors).
#[derive(Debug, Deserialize)]
struct PublishAckVector {
    name: String,
    status: Option<String>,
    body: String,
    outcome: String,
    sequence: Option<u64>,
    duplicate: Option<bool>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LaterSections {
    timestamps: Vec<TimestampVector>,
    publish_acks: Vec<PublishAckVector>,
    retry_pauses: Vec<RetryPausesVector>,
}

/// The pauses between sends after retryable replies, for one retry budget (PROTOCOL.md §3).
#[derive(Debug, Deserialize)]
struct RetryPausesVector {
    budget_ms: u64,
    pauses_ms: Vec<u64>,
}

fn later_sections() -> LaterSections {
    let path = repo_root().join("docs/conformance/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn timestamps_are_read_as_the_vectors_say() {
    let vectors = later_sections().timestamps;
    assert!(!vectors.is_empty());
    for vector in vectors {
        assert_eq!(
            jetq_contract::time::parse(&vector.text).map(jetq_contract::time::format),
            vector.utc,
            "{}: {:?}",
            vector.name,
            vector.text
        );
    }
}

/// Answers every publish on `jetq.task.acks.<vector>` with the vector's reply, written on a raw
/// connection so a status line (`NATS/1.0 408`) can be sent as a server would; counts the sends.
/// A `503` vector gets no answer: the server itself says "no responders".
async fn ack_responder(
    server: &NatsServer,
    vectors: &[PublishAckVector],
) -> std::sync::Arc<std::sync::Mutex<HashMap<String, u32>>> {
    use tokio::io::AsyncWriteExt;
    let replies: HashMap<String, (Option<String>, String)> = vectors
        .iter()
        .map(|v| (v.name.clone(), (v.status.clone(), v.body.clone())))
        .collect();
    let sends = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut subscriptions = Vec::new();
    for name in replies.keys() {
        subscriptions.push(
            client
                .subscribe(format!("jetq.task.acks.{name}"))
                .await
                .unwrap(),
        );
    }
    let mut subscriber = futures::stream::select_all(subscriptions);
    client.flush().await.unwrap();
    let address = server.url().trim_start_matches("nats://").to_owned();
    let mut raw = tokio::net::TcpStream::connect(address).await.unwrap();
    raw.write_all(b"CONNECT {\"verbose\":false,\"headers\":true}\r\n")
        .await
        .unwrap();
    let counted = sends.clone();
    tokio::spawn(async move {
        while let Some(message) = futures::StreamExt::next(&mut subscriber).await {
            let name = message
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .unwrap()
                .to_owned();
            *counted.lock().unwrap().entry(name.clone()).or_insert(0) += 1;
            let (Some(reply), Some((status, body))) = (message.reply, replies.get(&name)) else {
                continue;
            };
            let head = match status {
                Some(code) => format!("NATS/1.0 {code}\r\n\r\n"),
                None => "NATS/1.0\r\n\r\n".to_owned(),
            };
            let frame = format!(
                "HPUB {reply} {} {}\r\n{head}{body}\r\n",
                head.len(),
                head.len() + body.len()
            );
            raw.write_all(frame.as_bytes()).await.unwrap();
        }
    });
    sends
}

#[tokio::test]
async fn publish_replies_are_retried_or_reported_as_the_vectors_say() {
    let vectors = later_sections().publish_acks;
    let server = NatsServer::start().await;
    // A 503 vector must find nobody listening: only the other vectors are answered.
    let answered: Vec<PublishAckVector> = vectors
        .iter()
        .filter(|v| v.status.as_deref() != Some("503"))
        .map(|v| PublishAckVector {
            name: v.name.clone(),
            status: v.status.clone(),
            body: v.body.clone(),
            outcome: v.outcome.clone(),
            sequence: v.sequence,
            duplicate: v.duplicate,
            error: v.error.clone(),
        })
        .collect();
    let sends = ack_responder(&server, &answered).await;
    // A retry budget of 1 s × 2 attempts = 2 s: the `retry_pauses` vector for 2,000 ms says how
    // many sends a retryable reply gets (replies here come back at once).
    let attempts = 2;
    let retry_sends = later_sections()
        .retry_pauses
        .iter()
        .find(|schedule| schedule.budget_ms == 2000)
        .map(|schedule| schedule.pauses_ms.len() as u32 + 1)
        .expect("a retry_pauses vector for a 2 s budget");
    let producer = Producer::builder()
        .connection(ConnectionConfig {
            request_timeout: Duration::from_secs(1),
            ..connection(&server)
        })
        .provision(false)
        .publish_attempts(attempts)
        .connect()
        .await
        .unwrap();
    for vector in &vectors {
        let subscribed = vector.status.as_deref() != Some("503");
        let result = within(
            Duration::from_secs(20),
            &vector.name,
            producer.enqueue_raw(RawTask {
                queue: "acks".into(),
                task: vector.name.clone(),
                payload: Bytes::from_static(b"{}"),
                options: EnqueueOptions::new().key(format!("ack-{}", vector.name)),
            }),
        )
        .await;
        let sent = sends
            .lock()
            .unwrap()
            .get(&vector.name)
            .copied()
            .unwrap_or(0);
        match (vector.outcome.as_str(), result) {
            ("stored", Ok(enqueued)) => {
                assert_eq!(Some(enqueued.sequence), vector.sequence, "{}", vector.name);
                assert_eq!(
                    Some(enqueued.duplicate),
                    vector.duplicate,
                    "{}",
                    vector.name
                );
                assert_eq!(sent, 1, "{}: sends", vector.name);
            }
            (outcome @ ("retry" | "give_up"), Err(err)) => {
                let kind = match &err {
                    EnqueueError::NoStream { .. } => "NoStream",
                    EnqueueError::StreamFull { .. } => "StreamFull",
                    EnqueueError::TooLarge { .. } => "TooLarge",
                    EnqueueError::Rejected { .. } => "Rejected",
                    other => panic!("{}: unexpected {other:?}", vector.name),
                };
                assert_eq!(
                    Some(kind),
                    vector.error.as_deref(),
                    "{}: {err}",
                    vector.name
                );
                // (A 503 vector finds no stream at all here: the producer asks whether the
                // stream exists, hears "not found" and reports NoStream after one send.)
                if subscribed {
                    let expected = if outcome == "retry" { retry_sends } else { 1 };
                    assert_eq!(sent, expected, "{}: sends", vector.name);
                }
            }
            (expected, other) => panic!("{}: expected {expected}, got {other:?}", vector.name),
        }
    }
}

/// A task-type catalog entry (PROTOCOL.md, Task-type catalog).
#[derive(Debug, Deserialize)]
struct CatalogVector {
    name: String,
    key: String,
    exact: bool,
    value: String,
    entry: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct CatalogSection {
    bucket: String,
    entries: Vec<CatalogVector>,
}

#[derive(Debug, Deserialize)]
struct CatalogVectors {
    catalog: CatalogSection,
}

#[test]
fn catalog_entries_are_written_and_read_as_the_vectors_say() {
    let path = repo_root().join("docs/conformance/vectors.json");
    let vectors: CatalogVectors =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let section = vectors.catalog;
    assert_eq!(
        jetq_contract::catalog::bucket(&jetq_contract::Subjects::default()),
        section.bucket
    );
    assert!(section.entries.len() >= 4);
    for vector in section.entries {
        let name = &vector.name;
        let read: Option<jetq_contract::catalog::CatalogEntry> =
            serde_json::from_str(&vector.value).ok();
        match (&read, &vector.entry) {
            (None, None) => continue,
            (Some(entry), Some(expected)) => {
                assert_eq!(entry.queue, expected["queue"], "{name}");
                assert_eq!(entry.task, expected["task"], "{name}");
                assert_eq!(entry.max_attempts, expected["max_attempts"], "{name}");
                assert_eq!(entry.timeout_ms, expected["timeout_ms"], "{name}");
                assert_eq!(entry.tracked, expected["tracked"], "{name}");
                assert_eq!(entry.key(), vector.key, "{name}");
                if vector.exact {
                    assert_eq!(
                        serde_json::to_string(entry).unwrap(),
                        vector.value,
                        "{name}"
                    );
                }
            }
            (read, expected) => panic!("{name}: read {read:?}, expected {expected:?}"),
        }
    }
}
