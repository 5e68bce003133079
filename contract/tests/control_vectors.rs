//! Worker control (PROTOCOL.md §16) against `docs/conformance/control.json`: the cancel
//! subject, the request bodies written, the replies read.

use std::path::PathBuf;

use jetq_contract::control::{cancel_subject, CancelReply, CancelRequest};
use serde_json::Value;

fn vectors() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/conformance/control.json");
    let text = std::fs::read_to_string(&path).expect("docs/conformance/control.json");
    serde_json::from_str(&text).expect("the vectors parse")
}

#[test]
fn subjects() {
    for case in vectors()["subjects"].as_array().unwrap() {
        assert_eq!(
            cancel_subject(
                case["prefix"].as_str().unwrap(),
                case["worker_id"].as_str().unwrap()
            ),
            case["subject"].as_str().unwrap()
        );
    }
}

#[test]
fn requests_are_written_and_read_as_pinned() {
    for case in vectors()["requests"].as_array().unwrap() {
        let request = CancelRequest {
            id: case["id"].as_str().unwrap().to_owned(),
            sequence: case["sequence"].as_u64().unwrap(),
            by: case["by"].as_str().map(str::to_owned),
        };
        let body = case["body"].as_str().unwrap();
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            body,
            "{}",
            case["name"]
        );
        let read: CancelRequest = serde_json::from_str(body).unwrap();
        assert_eq!(read, request, "{}", case["name"]);
    }
}

#[test]
fn replies_are_read_as_pinned() {
    let vectors = vectors();
    for case in vectors["replies"].as_array().unwrap() {
        let reply: CancelReply = serde_json::from_str(case["body"].as_str().unwrap())
            .unwrap_or_else(|err| panic!("{}: {err}", case["name"]));
        assert_eq!(reply.found, case["found"].as_bool().unwrap());
        assert_eq!(reply.sequence, case["sequence"].as_u64().unwrap());
        assert_eq!(u64::from(reply.attempt), case["attempt"].as_u64().unwrap());
        assert_eq!(reply.error.as_deref(), case["error"].as_str());
    }
    for bad in vectors["bad_replies"].as_array().unwrap() {
        assert!(
            serde_json::from_str::<CancelReply>(bad.as_str().unwrap()).is_err(),
            "{bad}"
        );
    }
}
