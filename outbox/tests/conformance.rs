//! `docs/conformance/outbox.json`: the rows a writer makes, the messages the relay publishes and
//! the dead letters it writes, checked against the Rust writer and relay functions (the Python
//! writer's tests read the same file).

use std::time::SystemTime;

use async_nats::HeaderMap;
use jetq_contract::{publish::Outgoing, FailureRecord, Priority, PriorityError, Subjects};
use jetq_outbox::relay::{dead, row};
use jetq_producer::{message::TaskMessage, EnqueueError, EnqueueOptions};
use serde_json::{Map, Value};

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/conformance/outbox.json"
    );
    let text = std::fs::read_to_string(path).expect("outbox.json is readable");
    serde_json::from_str(&text).expect("outbox.json is JSON")
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A vector's payload bytes: `payload` (UTF-8 text) or `payload_hex`.
fn payload(object: &Value) -> Vec<u8> {
    match (object.get("payload"), object.get("payload_hex")) {
        (Some(Value::String(text)), _) => text.as_bytes().to_vec(),
        (_, Some(Value::String(h))) => hex(h),
        _ => panic!("no payload in {object}"),
    }
}

fn is_rfc3339(value: &str) -> bool {
    jetq_contract::time::parse(value).is_some() && value.ends_with('Z')
}

fn vector_row(value: &Value) -> row::OutboxRow {
    row::OutboxRow {
        id: value["id"].as_i64().expect("id"),
        msg_id: value["msg_id"].as_str().expect("msg_id").to_owned(),
        subject: value["subject"].as_str().expect("subject").to_owned(),
        headers: value["headers"].clone(),
        payload: payload(value),
        attempts: value["attempts"].as_i64().expect("attempts") as i32,
    }
}

fn header_map(headers: &HeaderMap) -> Map<String, Value> {
    headers
        .iter()
        .map(|(name, values)| {
            let value = values.iter().next().map(|v| v.as_str()).unwrap_or("");
            (name.to_string(), Value::String(value.to_owned()))
        })
        .collect()
}

fn options(enqueue: &Value) -> EnqueueOptions {
    let mut options = EnqueueOptions::new();
    if let Some(key) = enqueue.get("key").and_then(Value::as_str) {
        options = options.key(key);
    }
    if let Some(n) = enqueue.get("max_attempts").and_then(Value::as_u64) {
        options = options.max_attempts(n as u32);
    }
    if let Some(ms) = enqueue.get("timeout_ms").and_then(Value::as_u64) {
        options = options.timeout(std::time::Duration::from_millis(ms));
    }
    if enqueue.get("track_status").and_then(Value::as_bool) == Some(true) {
        options = options.track_status();
    }
    if let Some(level) = priority(enqueue).expect("a writes vector names a level") {
        options = options.priority(level);
    }
    options
}

/// The vector's `priority` (PROTOCOL §12): the Rust writer takes a [`Priority`], so a name that
/// does not parse is refused before anything is built.
fn priority(enqueue: &Value) -> Result<Option<Priority>, PriorityError> {
    enqueue
        .get("priority")
        .and_then(Value::as_str)
        .map(str::parse)
        .transpose()
}

fn write(enqueue: &Value) -> Result<TaskMessage, EnqueueError> {
    let due: Option<SystemTime> = enqueue
        .get("due")
        .and_then(Value::as_str)
        .map(|at| jetq_contract::time::parse(at).expect("due parses"));
    TaskMessage::raw(
        &Subjects::default(),
        enqueue["queue"].as_str().expect("queue"),
        enqueue["task"].as_str().expect("task"),
        serde_json::to_vec(&enqueue["args"]).expect("args").into(),
        options(enqueue),
        due,
    )
}

#[test]
fn the_migration_file_is_the_one_the_vectors_name() {
    let v = vectors();
    let path = format!(
        "{}/../{}",
        env!("CARGO_MANIFEST_DIR"),
        v["schema_file"].as_str().expect("schema_file")
    );
    let text = std::fs::read_to_string(path).expect("schema file");
    assert_eq!(text, jetq_outbox::MIGRATION_0001);
    assert!(text.contains(&format!(
        "CREATE TABLE IF NOT EXISTS {} (",
        v["table"].as_str().unwrap()
    )));
    assert!(text.contains(&format!(
        "pg_notify('{}'",
        v["notify_channel"].as_str().unwrap()
    )));
}

#[test]
fn writers_write_the_rows_of_the_vectors() {
    let v = vectors();
    for vector in v["writes"].as_array().expect("writes") {
        let name = vector["name"].as_str().unwrap();
        let message = write(&vector["enqueue"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = &vector["row"];
        match expected["msg_id"].as_str().unwrap() {
            "ulid" => assert!(
                message.id.parse::<ulid::Ulid>().is_ok(),
                "{name}: {}",
                message.id
            ),
            id => assert_eq!(message.id, id, "{name}"),
        }
        assert_eq!(
            message.subject,
            expected["subject"].as_str().unwrap(),
            "{name}"
        );
        let got: Map<String, Value> = message
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let want = expected["headers"].as_object().unwrap();
        for (key, value) in want {
            let actual = got.get(key).and_then(Value::as_str);
            match value.as_str().unwrap() {
                "<rfc3339>" => assert!(actual.is_some_and(is_rfc3339), "{name}: {key}: {actual:?}"),
                exact => assert_eq!(actual, Some(exact), "{name}: {key}"),
            }
        }
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k) && *k != "traceparent" && *k != "tracestate")
            .collect();
        assert!(extra.is_empty(), "{name}: unexpected headers {extra:?}");
        let payload: Value = serde_json::from_slice(&message.payload).unwrap();
        let want_payload: Value =
            serde_json::from_str(expected["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload, want_payload, "{name}");
    }
}

#[test]
fn writers_refuse_the_invalid_writes() {
    let v = vectors();
    for vector in v["invalid_writes"].as_array().expect("invalid_writes") {
        let name = vector["name"].as_str().unwrap();
        if let Err(err) = priority(&vector["enqueue"]) {
            assert_eq!(
                vector["error"].as_str().unwrap(),
                "InvalidPriority",
                "{name}: {err}"
            );
            continue;
        }
        let err = write(&vector["enqueue"]).expect_err(name);
        let kind = match err {
            EnqueueError::InvalidName(_) => "InvalidName",
            EnqueueError::InvalidKey(_) => "InvalidKey",
            other => panic!("{name}: unexpected error {other:?}"),
        };
        assert_eq!(kind, vector["error"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn the_relay_publishes_the_messages_of_the_vectors() {
    let v = vectors();
    let max_payload = v["max_payload"].as_u64().unwrap() as usize;
    for vector in v["relayed"].as_array().expect("relayed") {
        let name = vector["name"].as_str().unwrap();
        let row = vector_row(&vector["row"]);
        let message: Outgoing = row::message(&Subjects::default(), &row, max_payload)
            .unwrap_or_else(|why| panic!("{name}: {why:?}"));
        let expected = &vector["message"];
        assert_eq!(
            message.subject,
            expected["subject"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            Value::Object(header_map(&message.headers)),
            expected["headers"],
            "{name}"
        );
        assert_eq!(
            message.payload.as_ref(),
            payload(expected).as_slice(),
            "{name}"
        );
    }
}

#[test]
fn the_relay_dead_letters_the_rows_of_the_vectors() {
    let v = vectors();
    let max_payload = v["max_payload"].as_u64().unwrap() as usize;
    let subjects = Subjects::default();
    for vector in v["dead_lettered"].as_array().expect("dead_lettered") {
        let name = vector["name"].as_str().unwrap();
        let row = vector_row(&vector["row"]);
        let why = row::message(&subjects, &row, max_payload)
            .expect_err(&format!("{name} cannot be published"));
        let dead_at = jetq_contract::time::now();
        let letter = dead::letter(&subjects, &row, &why, &dead_at);
        let expected = &vector["dead_letter"];
        assert_eq!(
            letter.subject,
            expected["subject"].as_str().unwrap(),
            "{name}"
        );
        let got = header_map(&letter.headers);
        let want = expected["headers"].as_object().unwrap();
        assert_eq!(
            got.keys().collect::<std::collections::BTreeSet<_>>(),
            want.keys().collect::<std::collections::BTreeSet<_>>(),
            "{name}: header names"
        );
        for (key, value) in want {
            let actual = got[key].as_str().unwrap();
            match value.as_str().unwrap() {
                "<rfc3339>" => assert!(is_rfc3339(actual), "{name}: {key}: {actual}"),
                "<json>" => {
                    let record: FailureRecord = serde_json::from_str(actual)
                        .unwrap_or_else(|e| panic!("{name}: {key}: {e}: {actual}"));
                    let failure = &expected["failure"];
                    assert_eq!(
                        record.reason.as_str(),
                        failure["reason"].as_str().unwrap(),
                        "{name}"
                    );
                    assert_eq!(
                        u64::from(record.attempts),
                        failure["attempts"].as_u64().unwrap(),
                        "{name}"
                    );
                    let prefix = failure["error_prefix"].as_str().unwrap();
                    assert!(
                        record.error.starts_with(prefix),
                        "{name}: {:?} !~ {prefix:?}",
                        record.error
                    );
                }
                exact => assert_eq!(actual, exact, "{name}: {key}"),
            }
        }
        assert_eq!(
            letter.payload.as_ref(),
            payload(expected).as_slice(),
            "{name}"
        );
    }
}
