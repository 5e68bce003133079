//! The Rust side of docs/conformance/flow_control.json (PROTOCOL §11): the flow headers a
//! producer stores, the input it refuses, derived unique keys, KV keys and bucket names, how a
//! stored hold is judged, the rate algorithm's starts and the concurrency slots. The Python
//! client is held to the same file by clients/python/tests/test_flow.py.

use std::time::Duration;

use bytes::Bytes;
use jetq_contract::flow::{
    self,
    concurrency::{Acquire, Slots},
    keys,
    unique::{Judgement, UniqueHold},
    FlowError, RateLimit,
};
use jetq_producer::{EnqueueError, EnqueueOptions, RawTask, Unique, UniqueScope};
use jetq_tests::*;
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/conformance/flow_control.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("JSON")
}

fn micros(text: &str) -> i64 {
    flow::parse_micros(text).expect("a timestamp")
}

/// The vector's flow options as enqueue options.
fn options(vector: &Value) -> EnqueueOptions {
    let mut options = EnqueueOptions::new();
    if let Some(unique) = vector.get("unique") {
        let mut spec = match unique.get("key") {
            Some(key) => Unique::key(key.as_str().unwrap()),
            None => Unique::args(
                unique["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_owned()),
            ),
        };
        spec = match unique
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or("active")
        {
            "queued" => spec.scope(UniqueScope::Queued),
            "active" => spec.scope(UniqueScope::Active),
            "period" => spec.scope(UniqueScope::Period(Duration::from_millis(
                unique["period_ms"].as_u64().unwrap(),
            ))),
            "debounce" => spec.scope(UniqueScope::Debounce(Duration::from_millis(
                unique["period_ms"].as_u64().unwrap(),
            ))),
            other => panic!("scope {other}"),
        };
        options = options.unique(spec);
    }
    if let Some(key) = vector.get("limit_key").and_then(Value::as_str) {
        options = options.limit_key(key);
    }
    options
}

fn raw(vector: &Value) -> RawTask {
    RawTask {
        queue: vector
            .get("queue")
            .and_then(Value::as_str)
            .unwrap_or("emails")
            .into(),
        task: vector
            .get("task")
            .and_then(Value::as_str)
            .unwrap_or("send_welcome")
            .into(),
        payload: Bytes::from(serde_json::to_vec(&vector["args"]).unwrap()),
        options: options(vector),
    }
}

#[tokio::test]
async fn valid_vectors_are_stored_with_exactly_their_flow_headers() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    let vectors = vectors();
    for vector in vectors["valid"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let enqueued = producer.enqueue_raw(raw(vector)).await.expect(name);
        assert!(!enqueued.duplicate, "{name}");
        let stream = vector
            .get("stream")
            .and_then(Value::as_str)
            .unwrap_or("JETQ_TASKS");
        let stored = js
            .get_stream(stream)
            .await
            .unwrap()
            .get_raw_message(enqueued.sequence)
            .await
            .unwrap();
        let mut flow_headers: Vec<(String, String)> = stored
            .headers
            .iter()
            .filter(|(name, _)| {
                let name: &str = name.as_ref();
                name.starts_with("Jetq-Unique") || name.starts_with("Jetq-Limit")
            })
            .map(|(name, values)| (name.to_string(), values[0].as_str().to_owned()))
            .collect();
        flow_headers.sort();
        let mut expected: Vec<(String, String)> = vector["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        expected.sort();
        assert_eq!(flow_headers, expected, "{name}");
    }
}

#[tokio::test]
async fn invalid_vectors_are_refused_before_anything_is_sent() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let vectors = vectors();
    for vector in vectors["invalid"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let result = match vector.get("delay_ms").and_then(Value::as_u64) {
            Some(ms) => producer
                .enqueue_raw_in(Duration::from_millis(ms), raw(vector))
                .await
                .map_err(|err| match err {
                    jetq_producer::DelayError::Enqueue(err) => err,
                    other => panic!("{name}: {other}"),
                }),
            None => producer.enqueue_raw(raw(vector)).await,
        };
        let err = match result {
            Err(EnqueueError::Flow(err)) => err,
            other => panic!("{name}: {other:?}"),
        };
        match (vector["error"].as_str().unwrap(), err) {
            ("invalid_key", FlowError::InvalidKey { what, reason, .. }) => {
                assert_eq!(what, vector["what"].as_str().unwrap(), "{name}");
                assert_eq!(reason, vector["reason"].as_str().unwrap(), "{name}");
            }
            ("missing_argument", FlowError::MissingArgument { .. })
            | ("invalid_period", FlowError::InvalidPeriod { .. })
            | ("unsupported", FlowError::Unsupported(_)) => {}
            (kind, err) => panic!("{name}: expected {kind}, got {err:?}"),
        }
    }
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 0);
}

#[test]
fn derived_keys_entries_and_buckets_match() {
    let vectors = vectors();
    for vector in vectors["derived_keys"].as_array().unwrap() {
        let fields: Vec<&str> = vector["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let args = serde_json::to_vec(&vector["args"]).unwrap();
        assert_eq!(
            keys::derive_unique_key(&args, &fields).unwrap(),
            vector["key"].as_str().unwrap(),
            "{vector}"
        );
    }
    for vector in vectors["entries"].as_array().unwrap() {
        let s = |name: &str| vector[name].as_str().unwrap();
        let limit_key = vector.get("limit_key").and_then(Value::as_str);
        let entry = match s("kind") {
            "unique" => keys::unique_entry(s("queue"), s("task"), s("key")),
            "rate" => keys::rate_entry(s("queue"), s("task"), limit_key),
            "concurrency" => keys::concurrency_entry(s("queue"), s("task"), limit_key),
            "reservation" => keys::reservation_entry(vector["sequence"].as_u64().unwrap()),
            other => panic!("kind {other}"),
        };
        assert_eq!(entry, s("entry"), "{vector}");
    }
    for vector in vectors["buckets"].as_array().unwrap() {
        let subjects = jetq_contract::Subjects::new(vector["prefix"].as_str().unwrap()).unwrap();
        assert_eq!(
            flow::unique_bucket(&subjects),
            vector["unique"].as_str().unwrap()
        );
        assert_eq!(
            flow::limits_bucket(&subjects),
            vector["limits"].as_str().unwrap()
        );
    }
}

#[test]
fn holds_are_judged_alike() {
    for vector in vectors()["holds"].as_array().unwrap() {
        let now = micros(vector["now"].as_str().unwrap());
        let bytes = serde_json::to_vec(&vector["hold"]).unwrap();
        let judged = match UniqueHold::from_json(&bytes) {
            Ok(hold) => match hold.judge(now) {
                Judgement::Held => "held".to_owned(),
                Judgement::Free => "free".to_owned(),
                Judgement::HeldIfTaskExists(seq) => format!("held_if_task_exists:{seq}"),
            },
            // An unreadable hold is taken over.
            Err(_) => "free".to_owned(),
        };
        assert_eq!(
            judged,
            vector["judgement"].as_str().unwrap(),
            "{}",
            vector["name"]
        );
    }
    // The pending hold a producer writes has the vector's fields and values.
    let first = &vectors()["holds"][0]["hold"];
    let pending = UniqueHold::pending(
        "01J9ZQ5W3V7ZB4M8K2N6P0R1S3",
        "emails",
        "send_welcome",
        UniqueScope::Active,
        micros(first["taken_at"].as_str().unwrap()),
    );
    assert_eq!(
        &serde_json::from_slice::<Value>(&pending.to_json()).unwrap(),
        first
    );
}

#[test]
fn the_rate_algorithm_gives_the_same_starts() {
    for vector in vectors()["rate"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let limit = RateLimit::new(
            vector["rate"].as_f64().unwrap(),
            vector["burst"].as_u64().unwrap() as u32,
        )
        .unwrap();
        assert_eq!(
            limit.interval_micros(),
            vector["interval_us"].as_i64().unwrap(),
            "{name}"
        );
        let mut tat = vector["tat_us"].as_i64();
        let mut starts = Vec::new();
        for arrival in vector["arrivals_us"].as_array().unwrap() {
            let reservation = limit.reserve(tat, arrival.as_i64().unwrap());
            tat = Some(reservation.tat);
            starts.push(Value::from(reservation.start));
        }
        assert_eq!(Value::from(starts), vector["starts_us"], "{name}");
        assert_eq!(tat, vector["tat_after_us"].as_i64(), "{name}");
    }
}

#[test]
fn slots_are_taken_alike() {
    for vector in vectors()["slots"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let slots = Slots::from_json(&serde_json::to_vec(&vector["slots"]).unwrap());
        let result = slots.acquire(
            vector["max"].as_u64().unwrap() as u32,
            vector["sequence"].as_u64().unwrap(),
            vector["task_id"].as_str().unwrap(),
            micros(vector["now"].as_str().unwrap()),
            micros(vector["until"].as_str().unwrap()),
        );
        let got = match result {
            Acquire::Taken(slots) => serde_json::from_slice::<Value>(&slots.to_json()).unwrap(),
            Acquire::Full { .. } => Value::Null,
        };
        assert_eq!(got, vector["result"], "{name}");
    }
}
