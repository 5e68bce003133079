//! The `VerifiedPush` extractor: directly, and behind a real axum server on loopback.
#![cfg(feature = "axum")]

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRef, FromRequest};
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use jetq_push_signature::{
    sign, PushRejection, SigningKeys, VerifiedPush, Verifier, VerifyError, SIGNATURE_HEADER,
    TASK_ID_HEADER, TIMESTAMP_HEADER,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TASK: &str = "01JDQ5X1ZB8Y2K3M4N5P6Q7R8S";
const BODY: &str = r#"{"to":"ada@example.com","subject":"Welcome"}"#;

#[derive(Debug, Deserialize, PartialEq)]
struct SendEmail {
    to: String,
    subject: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn keys(list: &[&str]) -> SigningKeys {
    SigningKeys::new(list.iter().copied()).expect("keys")
}

/// A request signed by `sender` at `timestamp`, carrying `body` (which may differ from the
/// signed one, to tamper with it).
fn request(sender: &[&str], timestamp: u64, signed: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/tasks/send_email")
        .header("content-type", "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(TASK_ID_HEADER, TASK)
        .header(
            SIGNATURE_HEADER,
            sign(&keys(sender), timestamp, TASK, signed.as_bytes()),
        )
        .body(Body::from(body.to_owned()))
        .expect("request")
}

async fn extract(
    verifier: &Verifier,
    req: Request<Body>,
) -> Result<VerifiedPush<SendEmail>, PushRejection> {
    VerifiedPush::<SendEmail>::from_request(req, verifier).await
}

#[tokio::test]
async fn accepts_a_signed_request_and_decodes_the_body() {
    let verifier = Verifier::new(keys(&["old"]));
    let ts = now_secs();
    let push = extract(&verifier, request(&["new", "old"], ts, BODY, BODY))
        .await
        .expect("verified");
    assert_eq!(push.task_id, TASK);
    assert_eq!(push.timestamp, ts);
    assert_eq!(
        push.args,
        SendEmail {
            to: "ada@example.com".into(),
            subject: "Welcome".into()
        }
    );
}

#[tokio::test]
async fn refusals_and_their_statuses() {
    let verifier = Verifier::new(keys(&["secret"]));
    let ts = now_secs();

    let tampered = r#"{"to":"eve@example.com","subject":"Welcome"}"#;
    let err = extract(&verifier, request(&["secret"], ts, BODY, tampered))
        .await
        .expect_err("tampered");
    assert!(matches!(
        err,
        PushRejection::Signature(VerifyError::Mismatch)
    ));
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(err.into_response().status(), StatusCode::UNAUTHORIZED);

    let err = extract(&verifier, request(&["secret"], ts - 3600, BODY, BODY))
        .await
        .expect_err("stale");
    assert!(matches!(
        err,
        PushRejection::Signature(VerifyError::Stale { age }) if age >= 3600
    ));
    assert_eq!(err.into_response().status(), StatusCode::UNAUTHORIZED);

    let err = extract(&verifier, request(&["other"], ts, BODY, BODY))
        .await
        .expect_err("wrong key");
    assert!(matches!(
        err,
        PushRejection::Signature(VerifyError::Mismatch)
    ));

    let mut missing = request(&["secret"], ts, BODY, BODY);
    missing.headers_mut().remove(SIGNATURE_HEADER);
    let err = extract(&verifier, missing).await.expect_err("missing");
    assert!(matches!(
        err,
        PushRejection::Signature(VerifyError::MissingHeader(SIGNATURE_HEADER))
    ));
    assert_eq!(err.into_response().status(), StatusCode::UNAUTHORIZED);

    let mut non_ascii = request(&["secret"], ts, BODY, BODY);
    non_ascii.headers_mut().insert(
        TASK_ID_HEADER,
        axum::http::HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header bytes"),
    );
    let err = extract(&verifier, non_ascii).await.expect_err("non-ASCII");
    assert!(matches!(
        err,
        PushRejection::Signature(VerifyError::Malformed {
            header: TASK_ID_HEADER,
            ..
        })
    ));

    // Correctly signed, but not the JSON the handler expects: 400, after verification.
    let wrong_shape = r#"{"to":"ada@example.com"}"#;
    let err = extract(
        &verifier,
        request(&["secret"], ts, wrong_shape, wrong_shape),
    )
    .await
    .expect_err("bad json");
    assert!(matches!(err, PushRejection::Json(_)));
    assert_eq!(err.into_response().status(), StatusCode::BAD_REQUEST);
}

#[derive(Clone)]
struct AppState {
    verifier: Verifier,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

async fn send_email(push: VerifiedPush<SendEmail>) -> String {
    format!("{} {}", push.task_id, push.args.to)
}

/// Sends raw HTTP/1.1 and returns the status code and the body.
async fn post_raw(
    addr: std::net::SocketAddr,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut text = format!(
        "POST /tasks/send_email HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn behind_a_real_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/tasks/send_email", post(send_email))
        .with_state(AppState {
            verifier: Verifier::new(keys(&["secret"])),
        });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let ts = now_secs();
    let signed = |body: &str, ts: u64| {
        vec![
            // Header names in other cases: HTTP header names are case-insensitive.
            ("jetq-timestamp", ts.to_string()),
            ("JETQ-TASK-ID", TASK.to_string()),
            (
                "Jetq-Signature",
                sign(&keys(&["secret"]), ts, TASK, body.as_bytes()),
            ),
        ]
    };

    let (status, text) = post_raw(addr, &signed(BODY, ts), BODY).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "01JDQ5X1ZB8Y2K3M4N5P6Q7R8S ada@example.com")
    );

    let tampered = r#"{"to":"eve@example.com","subject":"Welcome"}"#;
    let (status, text) = post_raw(addr, &signed(BODY, ts), tampered).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("does not match"), "{text}");

    let (status, text) = post_raw(addr, &signed(BODY, ts - 301), BODY).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("old"), "{text}");

    let (status, _) = post_raw(addr, &[], BODY).await;
    assert_eq!(status, 401);

    let (status, _) = post_raw(addr, &signed("not json", ts), "not json").await;
    assert_eq!(status, 400);

    server.abort();
}
