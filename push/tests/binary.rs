//! The `jetq-push` binary as it is deployed: configured only by environment variables and a
//! targets file, against a real nats-server and a real axum route that verifies requests with
//! the `VerifiedPush` extractor of `jetq-push-signature`.

use std::{path::Path, process::Stdio, time::Duration};

use axum::{extract::FromRef, http::HeaderMap, routing::post, Router};
use jetq_harness::NatsServer;
use jetq_producer::{EnqueueOptions, Producer, RawTask};
use jetq_push_signature::{SigningKeys, VerifiedPush, Verifier};
use serde::Deserialize;
use tokio::{process::Command, sync::mpsc};

const KEYS: &str = "binary-test-key";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize, PartialEq)]
struct SendEmail {
    to: String,
}

#[derive(Clone)]
struct AppState {
    verifier: Verifier,
    tx: mpsc::UnboundedSender<(String, SendEmail, HeaderMap)>,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

async fn send_email(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    push: VerifiedPush<SendEmail>,
) -> axum::http::StatusCode {
    state.tx.send((push.task_id, push.args, headers)).ok();
    axum::http::StatusCode::NO_CONTENT
}

/// The binary with a clean environment: only what is given, telemetry export off.
fn jetq_push(vars: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jetq-push"));
    command
        .env_clear()
        .env("OTEL_SDK_DISABLED", "true")
        .env("JETQ_HEALTH_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("targets.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn refused(vars: &[(&str, String)]) -> String {
    let output = tokio::time::timeout(WAIT, jetq_push(vars).output())
        .await
        .expect("jetq-push exits")
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit status of a refused start"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_binary_refuses_a_bad_configuration_naming_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "targets:
  - name: billing
    queue: billing
    url: https://billing.example.com/{queue}/{taks}
    timeout: forever
",
    );
    let stderr = refused(&[
        ("JETQ_PUSH_TARGETS_FILE", file.clone()),
        ("JETQ_PUSH_SIGNING_KEYS", KEYS.to_owned()),
    ])
    .await;
    assert!(stderr.contains("target billing: field `url`"), "{stderr}");
    assert!(
        stderr.contains("target billing: field `timeout`"),
        "{stderr}"
    );

    let file = write(
        dir.path(),
        "targets:\n  - queue: q\n    url: http://127.0.0.1:9/x\n",
    );
    let stderr = refused(&[("JETQ_PUSH_TARGETS_FILE", file.clone())]).await;
    assert!(
        stderr.contains("JETQ_PUSH_SIGNING_KEYS") && stderr.contains("JETQ_PUSH_UNSIGNED=true"),
        "{stderr}"
    );
    let with_keys = |extra: &[(&'static str, &str)]| {
        let mut vars = vec![
            ("JETQ_PUSH_TARGETS_FILE", file.clone()),
            ("JETQ_PUSH_SIGNING_KEYS", KEYS.to_owned()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        vars
    };
    let stderr = refused(&with_keys(&[("JETQ_MAX_DELIVER", "5")])).await;
    assert!(
        stderr.contains("target q: field `max_attempts` is 10 but JETQ_MAX_DELIVER is 5"),
        "{stderr}"
    );
    let stderr = refused(&with_keys(&[("JETQ_QUEUES", "q,other")])).await;
    assert!(
        stderr.contains("queue other is listed in JETQ_QUEUES"),
        "{stderr}"
    );
    let stderr = refused(&[("JETQ_PUSH_SIGNING_KEYS", KEYS.to_owned())]).await;
    assert!(stderr.contains("JETQ_PUSH_TARGETS_FILE"), "{stderr}");
    assert!(!stderr.contains(KEYS), "a key leaked: {stderr}");
}

#[tokio::test]
async fn an_axum_route_receives_verified_tasks_from_the_binary_with_nothing_but_config() {
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let state = AppState {
        verifier: Verifier::new(SigningKeys::from_env_value(KEYS).unwrap()),
        tx,
    };
    let app = Router::new()
        .route("/jetq/emails/send_email", post(send_email))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        &format!("targets:\n  - queue: emails\n    url: http://{addr}/jetq/{{queue}}/{{task}}\n"),
    );
    let mut child = jetq_push(&[
        ("JETQ_NATS_URL", server.url()),
        ("JETQ_PUSH_TARGETS_FILE", file),
        ("JETQ_PUSH_SIGNING_KEYS", KEYS.to_owned()),
        ("JETQ_SHUTDOWN_GRACE", "5s".to_owned()),
    ])
    .spawn()
    .unwrap();

    let producer = Producer::builder()
        .url(server.url())
        .connect()
        .await
        .unwrap();
    let enqueued = producer
        .enqueue_raw(RawTask {
            queue: "emails".into(),
            task: "send_email".into(),
            payload: br#"{"to":"ada@example.com"}"#.to_vec().into(),
            options: EnqueueOptions::new().trace_context(TRACEPARENT, None),
        })
        .await
        .unwrap();
    let (task_id, args, headers) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the route receives the task")
        .unwrap();
    assert_eq!(task_id, enqueued.id);
    assert_eq!(
        args,
        SendEmail {
            to: "ada@example.com".into()
        }
    );
    assert_eq!(headers["jetq-attempt"], "1");
    // Telemetry export is off: the task's own trace context is passed on.
    assert_eq!(headers["traceparent"], TRACEPARENT);

    // The task was acked: the stream is empty.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    jetq_harness::eventually(WAIT, "the task to be acked", || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("JETQ_TASKS").await.ok()?;
            (stream.info().await.ok()?.state.messages == 0).then_some(())
        }
    })
    .await;

    // SIGTERM: a graceful stop with status 0.
    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("jetq-push stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}
