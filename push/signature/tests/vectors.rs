//! The shared test vectors, `docs/push/signature-vectors.json`.
//!
//! The vectors are generated from this implementation (`JETQ_REGENERATE_VECTORS=1 cargo test -p
//! jetq-push-signature --test vectors`), every verification case with the outcome the scheme
//! intends written down here, so generation fails if the implementation disagrees. Without the
//! variable the test reads the file and (1) checks every case against this implementation, as
//! the Python client's tests do against theirs, and (2) checks that the file is exactly what the
//! generator produces, so the file cannot drift from the code.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use jetq_push_signature::{
    sign, SigningKeys, Verifier, VerifyError, DEFAULT_TOLERANCE, SIGNATURE_HEADER, TASK_ID_HEADER,
    TIMESTAMP_HEADER,
};
use serde_json::{json, Value};
use sha2::Sha256;

const TS: u64 = 1_764_240_000;
const TASK: &str = "01JDQ5X1ZB8Y2K3M4N5P6Q7R8S";
const BODY: &str = r#"{"to":"ada@example.com","subject":"Welcome"}"#;
const KEY: &str = "whsec_test_2026_current";
const NEW: &str = "whsec_test_2026_new";
const OLD: &str = "whsec_test_2025_old";

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/push/signature-vectors.json")
}

fn keys(list: &[&str]) -> SigningKeys {
    SigningKeys::new(list.iter().copied()).expect("vector keys are valid")
}

fn body_fields(body: &[u8]) -> (Value, Value) {
    let utf8 = match std::str::from_utf8(body) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => Value::Null,
    };
    (Value::String(BASE64.encode(body)), utf8)
}

/// The signed bytes, spelled out from the spec (independently of the crate).
fn signed_bytes(timestamp: &str, task_id: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("v1:{timestamp}:{task_id}:").into_bytes();
    out.extend_from_slice(body);
    out
}

fn hex_hmac(key: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sign_case(name: &str, key_list: &[&str], timestamp: u64, task_id: &str, body: &[u8]) -> Value {
    let signature = sign(&keys(key_list), timestamp, task_id, body);
    let message = signed_bytes(&timestamp.to_string(), task_id, body);
    // The crate's output is the spec's formula, one entry per key.
    let spelled: Vec<String> = key_list
        .iter()
        .map(|k| format!("v1={}", hex_hmac(k, &message)))
        .collect();
    assert_eq!(signature, spelled.join(","), "{name}");
    let (body_base64, body_utf8) = body_fields(body);
    json!({
        "name": name,
        "keys": key_list,
        "timestamp": timestamp,
        "task_id": task_id,
        "body_base64": body_base64,
        "body_utf8": body_utf8,
        "signed_bytes_base64": BASE64.encode(&message),
        "signature": signature,
    })
}

/// What a verification case expects.
enum Expect {
    Ok,
    Missing(&'static str),
    Malformed(&'static str),
    Stale(i64),
    Mismatch,
}

struct VerifyCase {
    name: &'static str,
    receiver: Vec<&'static str>,
    tolerance_secs: u64,
    now: f64,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    expect: Expect,
}

impl VerifyCase {
    fn to_json(&self) -> Value {
        let headers: BTreeMap<&str, &str> =
            self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (body_base64, body_utf8) = body_fields(&self.body);
        let mut case = json!({
            "name": self.name,
            "keys": self.receiver,
            "tolerance_secs": self.tolerance_secs,
            "now": self.now,
            "headers": headers,
            "body_base64": body_base64,
            "body_utf8": body_utf8,
        });
        let expect = match self.expect {
            Expect::Ok => json!({"result": "ok"}),
            Expect::Missing(h) => json!({"result": "missing_header", "header": h}),
            Expect::Malformed(h) => json!({"result": "malformed", "header": h}),
            Expect::Stale(age) => json!({"result": "stale", "age": age}),
            Expect::Mismatch => json!({"result": "mismatch"}),
        };
        case["expect"] = expect;
        case
    }
}

/// A verification case: headers signed by `sender` over (TS, TASK, BODY), then edited by `edit`.
#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    sender: &[&str],
    receiver: &[&'static str],
    now: f64,
    tolerance_secs: u64,
    edit: impl FnOnce(&mut Vec<(&'static str, String)>, &mut Vec<u8>),
    expect: Expect,
) -> VerifyCase {
    let mut body = BODY.as_bytes().to_vec();
    let mut headers = vec![
        (TIMESTAMP_HEADER, TS.to_string()),
        (TASK_ID_HEADER, TASK.to_string()),
        (SIGNATURE_HEADER, sign(&keys(sender), TS, TASK, &body)),
    ];
    edit(&mut headers, &mut body);
    VerifyCase {
        name,
        receiver: receiver.to_vec(),
        tolerance_secs,
        now,
        headers,
        body,
        expect,
    }
}

fn set(headers: &mut [(&'static str, String)], name: &str, value: String) {
    for (k, v) in headers.iter_mut() {
        if *k == name {
            *v = value;
            return;
        }
    }
    panic!("no header {name}");
}

fn remove(headers: &mut Vec<(&'static str, String)>, name: &str) {
    headers.retain(|(k, _)| *k != name);
}

fn get(headers: &[(&'static str, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
        .expect("header present")
}

fn verify_cases() -> Vec<VerifyCase> {
    let t = TS as f64;
    let tol = DEFAULT_TOLERANCE.as_secs();
    let same = |_: &mut Vec<(&'static str, String)>, _: &mut Vec<u8>| {};
    let hex_of = |h: &[(&'static str, String)]| get(h, SIGNATURE_HEADER)[3..].to_string();
    let mut cases = vec![
        case("valid, one key", &[KEY], &[KEY], t, tol, same, Expect::Ok),
        case(
            "rotation: sender [new, old], receiver knows only the old key",
            &[NEW, OLD],
            &[OLD],
            t,
            tol,
            same,
            Expect::Ok,
        ),
        case(
            "rotation: sender [new, old], receiver knows only the new key",
            &[NEW, OLD],
            &[NEW],
            t,
            tol,
            same,
            Expect::Ok,
        ),
        case(
            "rotation: receiver [new, old], sender still signs with the old key only",
            &[OLD],
            &[NEW, OLD],
            t,
            tol,
            same,
            Expect::Ok,
        ),
        case(
            "rotation: sender [new, old], receiver with an unrelated key",
            &[NEW, OLD],
            &[KEY],
            t,
            tol,
            same,
            Expect::Mismatch,
        ),
        case(
            "two unrelated receiver keys",
            &[KEY],
            &[NEW, OLD],
            t,
            tol,
            same,
            Expect::Mismatch,
        ),
        case(
            "timestamp exactly 300 s old",
            &[KEY],
            &[KEY],
            t + 300.0,
            tol,
            same,
            Expect::Ok,
        ),
        case(
            "timestamp exactly 300 s in the future",
            &[KEY],
            &[KEY],
            t - 300.0,
            tol,
            same,
            Expect::Ok,
        ),
        case(
            "clock 300.75 s after the timestamp (rounded down to 300)",
            &[KEY],
            &[KEY],
            t + 300.75,
            tol,
            same,
            Expect::Ok,
        ),
        case(
            "timestamp 301 s old",
            &[KEY],
            &[KEY],
            t + 301.0,
            tol,
            same,
            Expect::Stale(301),
        ),
        case(
            "timestamp 301 s in the future",
            &[KEY],
            &[KEY],
            t - 301.0,
            tol,
            same,
            Expect::Stale(-301),
        ),
        case(
            "a day old and the wrong key: stale is reported first",
            &[KEY],
            &[NEW],
            t + 86_400.0,
            tol,
            same,
            Expect::Stale(86_400),
        ),
        case(
            "tolerance 60 s, 60 s old",
            &[KEY],
            &[KEY],
            t + 60.0,
            60,
            same,
            Expect::Ok,
        ),
        case(
            "tolerance 60 s, 61 s old",
            &[KEY],
            &[KEY],
            t + 61.0,
            60,
            same,
            Expect::Stale(61),
        ),
        case(
            "tampered body",
            &[KEY],
            &[KEY],
            t,
            tol,
            |_, b| *b = br#"{"to":"eve@example.com","subject":"Welcome"}"#.to_vec(),
            Expect::Mismatch,
        ),
        case(
            "body with an added trailing newline",
            &[KEY],
            &[KEY],
            t,
            tol,
            |_, b| b.push(b'\n'),
            Expect::Mismatch,
        ),
        case(
            "empty body instead of the signed one",
            &[KEY],
            &[KEY],
            t,
            tol,
            |_, b| b.clear(),
            Expect::Mismatch,
        ),
        case(
            "wrong task id",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| set(h, TASK_ID_HEADER, "01JDQ5X1ZB8Y2K3M4N5P6Q7R8T".into()),
            Expect::Mismatch,
        ),
        case(
            "timestamp changed by one second",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| set(h, TIMESTAMP_HEADER, (TS + 1).to_string()),
            Expect::Mismatch,
        ),
        case(
            "timestamp with a leading zero (signed without)",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| set(h, TIMESTAMP_HEADER, format!("0{TS}")),
            Expect::Mismatch,
        ),
        case(
            "spaces and tabs around header values and entries are ignored",
            &[NEW, OLD],
            &[OLD],
            t,
            tol,
            |h, _| {
                let sig = get(h, SIGNATURE_HEADER).replace(',', " ,\t");
                set(h, SIGNATURE_HEADER, format!(" {sig}\t"));
                set(h, TIMESTAMP_HEADER, format!(" {TS}"));
                set(h, TASK_ID_HEADER, format!("{TASK}\t"));
            },
            Expect::Ok,
        ),
        case(
            "entries of other schemes are ignored",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| {
                let sig = get(h, SIGNATURE_HEADER);
                set(h, SIGNATURE_HEADER, format!("v0=deadbeef,{sig},v2=not-hex"));
            },
            Expect::Ok,
        ),
        case(
            "uppercase hex is accepted",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| {
                let upper = hex_of(h).to_uppercase();
                set(h, SIGNATURE_HEADER, format!("v1={upper}"));
            },
            Expect::Ok,
        ),
        case(
            "Jetq-Timestamp missing",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| remove(h, TIMESTAMP_HEADER),
            Expect::Missing(TIMESTAMP_HEADER),
        ),
        case(
            "Jetq-Task-Id missing",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| remove(h, TASK_ID_HEADER),
            Expect::Missing(TASK_ID_HEADER),
        ),
        case(
            "Jetq-Signature missing",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| remove(h, SIGNATURE_HEADER),
            Expect::Missing(SIGNATURE_HEADER),
        ),
        case(
            "all headers missing: Jetq-Timestamp is reported",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| h.clear(),
            Expect::Missing(TIMESTAMP_HEADER),
        ),
        case(
            "Jetq-Task-Id empty",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| set(h, TASK_ID_HEADER, String::new()),
            Expect::Malformed(TASK_ID_HEADER),
        ),
        case(
            "Jetq-Signature empty",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| set(h, SIGNATURE_HEADER, String::new()),
            Expect::Malformed(SIGNATURE_HEADER),
        ),
        case(
            "Jetq-Signature v1= without a value",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| set(h, SIGNATURE_HEADER, "v1=".into()),
            Expect::Malformed(SIGNATURE_HEADER),
        ),
        case(
            "Jetq-Signature hex too short",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| {
                let short = hex_of(h)[..62].to_string();
                set(h, SIGNATURE_HEADER, format!("v1={short}"));
            },
            Expect::Malformed(SIGNATURE_HEADER),
        ),
        case(
            "Jetq-Signature hex too long",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| {
                let long = format!("{}00", hex_of(h));
                set(h, SIGNATURE_HEADER, format!("v1={long}"));
            },
            Expect::Malformed(SIGNATURE_HEADER),
        ),
        case(
            "Jetq-Signature not hex",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| set(h, SIGNATURE_HEADER, format!("v1={}", "g".repeat(64))),
            Expect::Malformed(SIGNATURE_HEADER),
        ),
        case(
            "Jetq-Signature with spaces inside the hex",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| {
                let hex = hex_of(h);
                set(
                    h,
                    SIGNATURE_HEADER,
                    format!("v1={} {}", &hex[..32], &hex[32..62]),
                );
            },
            Expect::Malformed(SIGNATURE_HEADER),
        ),
        case(
            "Jetq-Signature without a v1 entry",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| {
                let hex = hex_of(h);
                set(h, SIGNATURE_HEADER, format!("sha256={hex}"));
            },
            Expect::Malformed(SIGNATURE_HEADER),
        ),
        case(
            "Jetq-Signature bare hex without the v1= tag",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| {
                let hex = hex_of(h);
                set(h, SIGNATURE_HEADER, hex);
            },
            Expect::Malformed(SIGNATURE_HEADER),
        ),
        case(
            "Jetq-Signature with a trailing comma",
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| {
                let sig = get(h, SIGNATURE_HEADER);
                set(h, SIGNATURE_HEADER, format!("{sig},"));
            },
            Expect::Malformed(SIGNATURE_HEADER),
        ),
    ];
    for (label, value) in [
        ("Jetq-Timestamp empty", ""),
        ("Jetq-Timestamp not a number", "yesterday"),
        ("Jetq-Timestamp negative", "-1764240000"),
        ("Jetq-Timestamp with a plus sign", "+1764240000"),
        ("Jetq-Timestamp with a fraction", "1764240000.0"),
        ("Jetq-Timestamp in exponent notation", "1.76424e9"),
        ("Jetq-Timestamp with an underscore", "1_764_240_000"),
        (
            "Jetq-Timestamp in milliseconds beyond 64 bits",
            "17642400000000000000000",
        ),
        (
            "Jetq-Timestamp with non-ASCII digits",
            "\u{0661}\u{0667}\u{0666}\u{0664}",
        ),
    ] {
        cases.push(case(
            label,
            &[KEY],
            &[KEY],
            t,
            tol,
            |h, _| set(h, TIMESTAMP_HEADER, value.to_string()),
            Expect::Malformed(TIMESTAMP_HEADER),
        ));
    }
    // A task id like the scheduler's (`<schedule>:<fire time>`) and a binary body.
    let binary: Vec<u8> = vec![0x00, 0xff, 0x01, 0xfe, 0x80, b'\n'];
    let sched = "nightly-report:2026-11-27T02:00:00Z";
    cases.push(VerifyCase {
        name: "binary body, task id with colons",
        receiver: vec![KEY],
        tolerance_secs: tol,
        now: t,
        headers: vec![
            (TIMESTAMP_HEADER, TS.to_string()),
            (TASK_ID_HEADER, sched.to_string()),
            (SIGNATURE_HEADER, sign(&keys(&[KEY]), TS, sched, &binary)),
        ],
        body: binary,
        expect: Expect::Ok,
    });
    cases.push(VerifyCase {
        name: "empty body, signed as empty",
        receiver: vec![KEY],
        tolerance_secs: tol,
        now: t,
        headers: vec![
            (TIMESTAMP_HEADER, TS.to_string()),
            (TASK_ID_HEADER, TASK.to_string()),
            (SIGNATURE_HEADER, sign(&keys(&[KEY]), TS, TASK, b"")),
        ],
        body: Vec::new(),
        expect: Expect::Ok,
    });
    cases
}

fn now_from(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs)
}

/// Runs one verification case (from JSON) through the crate; returns the outcome as JSON.
fn run_verify(case: &Value) -> Value {
    let receiver: Vec<String> = case["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("key").to_owned())
        .collect();
    let verifier = Verifier::new(SigningKeys::new(receiver).expect("receiver keys")).tolerance(
        Duration::from_secs(case["tolerance_secs"].as_u64().expect("tolerance")),
    );
    let header = |name: &str| {
        case["headers"]
            .get(name)
            .map(|v| v.as_str().expect("header"))
    };
    let body = BASE64
        .decode(case["body_base64"].as_str().expect("body"))
        .expect("base64");
    if let Some(text) = case["body_utf8"].as_str() {
        assert_eq!(text.as_bytes(), &body[..], "{}", case["name"]);
    }
    let result = verifier.verify(
        header(TIMESTAMP_HEADER),
        header(TASK_ID_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        now_from(case["now"].as_f64().expect("now")),
    );
    match result {
        Ok(()) => json!({"result": "ok"}),
        Err(VerifyError::MissingHeader(h)) => json!({"result": "missing_header", "header": h}),
        Err(VerifyError::Malformed { header, .. }) => {
            json!({"result": "malformed", "header": header})
        }
        Err(VerifyError::Stale { age }) => json!({"result": "stale", "age": age}),
        Err(VerifyError::Mismatch) => json!({"result": "mismatch"}),
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fn generate() -> Value {
    let sign_cases = vec![
        sign_case("one key, JSON body", &[KEY], TS, TASK, BODY.as_bytes()),
        sign_case(
            "two keys during a rotation: [new, old]",
            &[NEW, OLD],
            TS,
            TASK,
            BODY.as_bytes(),
        ),
        sign_case("empty body", &[KEY], TS, TASK, b""),
        sign_case(
            "task id with colons (a scheduler fire), non-ASCII JSON body",
            &[KEY],
            TS,
            "nightly-report:2026-11-27T02:00:00Z",
            "{\"name\":\"Zoë\",\"note\":\"naïve — ✓\"}".as_bytes(),
        ),
        sign_case(
            "binary body, non-ASCII key (its UTF-8 bytes)",
            &["clé-secrète-ü"],
            4_102_444_800,
            "01JDQ5X1ZB8Y2K3M4N5P6Q7R8S",
            &[0x00, 0xff, 0x01, 0xfe, 0x80, b'\n'],
        ),
    ];
    let verify: Vec<Value> = verify_cases()
        .iter()
        .map(|c| {
            let json = c.to_json();
            // Generation fails when the implementation disagrees with the intended outcome.
            assert_eq!(run_verify(&json), json["expect"], "{}", c.name);
            json
        })
        .collect();
    json!({
        "about": "Test vectors of jetq's signed push requests (scheme v1, docs/PUSH-SIGNATURES.md). \
                  Generated by push/signature/tests/vectors.rs (JETQ_REGENERATE_VECTORS=1); \
                  asserted by the Rust crate jetq-push-signature and the Python client (jetq.push). \
                  Bodies are base64 (body_utf8 repeats them as text when they are UTF-8). \
                  sign: keys, timestamp, task_id and body give signed_bytes and the Jetq-Signature value. \
                  verify: a receiver with keys and tolerance_secs, whose clock reads now (Unix seconds), \
                  gets the request headers and body; expect.result is ok, missing_header, malformed \
                  (with the header), stale (with age = now rounded down - timestamp) or mismatch.",
        "scheme": "v1",
        "headers": {
            "timestamp": TIMESTAMP_HEADER,
            "task_id": TASK_ID_HEADER,
            "signature": SIGNATURE_HEADER,
        },
        "default_tolerance_secs": DEFAULT_TOLERANCE.as_secs(),
        "sign": sign_cases,
        "verify": verify,
    })
}

#[test]
fn shared_vectors() {
    let generated = generate();
    if std::env::var_os("JETQ_REGENERATE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&generated).expect("json") + "\n";
        std::fs::write(path(), text).expect("write the vectors");
    }
    let text = std::fs::read_to_string(path()).expect("docs/push/signature-vectors.json");
    let file: Value = serde_json::from_str(&text).expect("vectors are JSON");

    // 1. Every case of the file holds for this implementation.
    let sign_cases = file["sign"].as_array().expect("sign cases");
    assert!(sign_cases.len() >= 5);
    for case in sign_cases {
        let key_list: Vec<&str> = case["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k.as_str().expect("key"))
            .collect();
        let body = BASE64
            .decode(case["body_base64"].as_str().expect("body"))
            .expect("base64");
        let timestamp = case["timestamp"].as_u64().expect("timestamp");
        let task_id = case["task_id"].as_str().expect("task id");
        assert_eq!(
            BASE64.encode(signed_bytes(&timestamp.to_string(), task_id, &body)),
            case["signed_bytes_base64"].as_str().expect("signed bytes"),
            "{}",
            case["name"]
        );
        assert_eq!(
            sign(&keys(&key_list), timestamp, task_id, &body),
            case["signature"].as_str().expect("signature"),
            "{}",
            case["name"]
        );
    }
    let verify = file["verify"].as_array().expect("verify cases");
    assert!(verify.len() >= 40);
    for case in verify {
        assert_eq!(run_verify(case), case["expect"], "{}", case["name"]);
    }

    // 2. The file is exactly what the generator produces.
    assert!(
        file == generated,
        "docs/push/signature-vectors.json differs from the generator: regenerate with \
         JETQ_REGENERATE_VECTORS=1 cargo test -p jetq-push-signature --test vectors"
    );
}
