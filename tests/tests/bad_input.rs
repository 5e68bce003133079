//! Bad input never crashes a worker: malformed, mis-shaped, empty and non-UTF-8 payloads,
//! garbage headers and malformed subjects each end in a dead letter with its reason, in a normal
//! run, or in a refused publish. A generated corpus (proptest, fixed seed) fuzzes the
//! decode-and-dispatch path through a real server.

mod common;

use std::{collections::HashMap, time::Duration};

use async_nats::HeaderMap;
use jetq_contract::{headers, FailureRecord};
use jetq_tests::*;
use proptest::{
    strategy::{Strategy, ValueTree},
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};

async fn running_worker(server: &NatsServer, runs: &RunCount) {
    let worker = worker(server)
        .unknown_task_grace(Duration::ZERO)
        .handler(counting_handler(runs, |_| ok()))
        .build()
        .await
        .expect("worker builds");
    tokio::spawn(worker.run_until(std::future::pending()));
}

async fn publish(
    js: &async_nats::jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: Vec<u8>,
) {
    js.publish_with_headers(subject.to_owned(), headers, payload.into())
        .await
        .expect("publish sent")
        .await
        .expect("publish acked");
}

fn headers_of(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, *value);
    }
    map
}

#[tokio::test]
async fn each_kind_of_bad_input_reaches_dead_letters_with_its_reason() {
    let server = NatsServer::start().await;
    let runs = RunCount::new();
    running_worker(&server, &runs).await;
    let js = raw_jetstream(&server).await;
    let cases: Vec<(&str, HeaderMap, Vec<u8>, &str, &str)> = vec![
        (
            "malformed",
            headers_of(&[("Nats-Msg-Id", "malformed")]),
            b"{\"n\": 1".to_vec(),
            "undecodable",
            "EOF",
        ),
        (
            "wrong-shape",
            headers_of(&[("Nats-Msg-Id", "wrong-shape")]),
            b"{\"x\": \"y\"}".to_vec(),
            "undecodable",
            "missing field `n`",
        ),
        (
            "empty",
            headers_of(&[("Nats-Msg-Id", "empty")]),
            Vec::new(),
            "undecodable",
            "EOF",
        ),
        (
            "not-utf8",
            headers_of(&[("Nats-Msg-Id", "not-utf8")]),
            vec![0xff, 0xfe, 0x00, 0x80],
            "undecodable",
            "expected value",
        ),
        (
            "bad-attempts",
            headers_of(&[
                ("Nats-Msg-Id", "bad-attempts"),
                (headers::MAX_ATTEMPTS, "lots"),
            ]),
            b"{\"n\":1}".to_vec(),
            "undecodable",
            "Jetq-Max-Attempts",
        ),
        (
            "zero-timeout",
            headers_of(&[("Nats-Msg-Id", "zero-timeout"), (headers::TIMEOUT_MS, "0")]),
            b"{\"n\":1}".to_vec(),
            "undecodable",
            "Jetq-Timeout-Ms",
        ),
    ];
    for (_, map, payload, _, _) in &cases {
        publish(&js, "jetq.task.work.job", map.clone(), payload.clone()).await;
    }
    // Tolerated: a garbage enqueue time falls back to the server's timestamp; a missing id
    // gets one derived from the sequence.
    publish(
        &js,
        "jetq.task.work.job",
        headers_of(&[(headers::ENQUEUED_AT, "yesterday-ish")]),
        b"{\"n\":2}".to_vec(),
    )
    .await;
    // An unknown task name (here not even ASCII) is dead-lettered after its grace (zero here).
    publish(
        &js,
        "jetq.task.work.t\u{e9}l\u{e9}phone",
        HeaderMap::new(),
        b"{}".to_vec(),
    )
    .await;

    let dead = dead_letters(&js, cases.len() as u64 + 1).await;
    let by_id: HashMap<String, &async_nats::jetstream::message::StreamMessage> = dead
        .iter()
        .map(|m| (header(m, headers::TASK_ID).unwrap_or_default(), m))
        .collect();
    for (id, _, payload, reason, fragment) in &cases {
        let letter = by_id
            .get(*id)
            .unwrap_or_else(|| panic!("no dead letter for {id}"));
        assert_eq!(
            header(letter, headers::DEAD_REASON).as_deref(),
            Some(*reason),
            "{id}"
        );
        assert_eq!(
            &letter.payload[..],
            &payload[..],
            "{id}: payload kept byte for byte"
        );
        let record: FailureRecord =
            serde_json::from_str(&header(letter, headers::FAILURE).unwrap()).unwrap();
        assert!(
            record.error.contains(fragment),
            "{id}: {:?} should mention {fragment:?}",
            record.error
        );
    }
    let unknown = dead
        .iter()
        .find(|m| header(m, headers::DEAD_REASON).as_deref() == Some("unknown-task"));
    assert!(unknown.is_some(), "the unknown task is dead-lettered");
    eventually(WAIT, "the tolerated task to run", || {
        let runs = runs.clone();
        async move { (runs.get() == 1).then_some(()) }
    })
    .await;
    common::await_drained(&js).await;
}

#[tokio::test]
async fn a_subject_with_extra_tokens_is_refused_at_publish_not_stranded() {
    let server = NatsServer::start().await;
    running_worker(&server, &RunCount::new()).await;
    let js = raw_jetstream(&server).await;
    let ack = js
        .publish("jetq.task.work.send.email", "{}".into())
        .await
        .expect("sent")
        .await;
    assert!(
        ack.is_err(),
        "no stream may capture a malformed task subject: {ack:?}"
    );
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 0);
}

/// One generated delivery: task name, payload bytes and optional header values.
type Generated = (
    String,
    Vec<u8>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn corpus(size: usize) -> Vec<Generated> {
    let strategy = (
        proptest::prop_oneof![proptest::strategy::Just("job".to_owned()), "[a-z_-]{1,12}",],
        proptest::prop_oneof![
            proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            "\\{\"n\":[0-9]{1,20}(,\"note\":\"[ -~]{0,8}\")?\\}".prop_map(String::into_bytes),
            "[ -~]{0,40}".prop_map(String::into_bytes),
        ],
        proptest::option::of("[ -~]{0,12}"),
        proptest::option::of("[ -~]{0,12}"),
        proptest::option::of("[ -~]{0,30}"),
    );
    // Fixed seed: the same corpus on every run, so a failure reproduces.
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    (0..size)
        .map(|_| strategy.new_tree(&mut runner).expect("strategy").current())
        .collect()
}

#[tokio::test]
async fn fuzzed_deliveries_each_end_in_a_run_or_a_dead_letter_and_never_crash_the_worker() {
    let server = NatsServer::start().await;
    let runs = RunCount::new();
    running_worker(&server, &runs).await;
    let js = raw_jetstream(&server).await;
    let cases = corpus(150);
    for (task, payload, attempts, timeout, enqueued_at) in &cases {
        let mut map = HeaderMap::new();
        // Header values must be valid on the wire; what a client can send is what we fuzz.
        let clean = |v: &str| v.replace(['\r', '\n'], "");
        if let Some(v) = attempts {
            map.insert(headers::MAX_ATTEMPTS, clean(v).as_str());
        }
        if let Some(v) = timeout {
            map.insert(headers::TIMEOUT_MS, clean(v).as_str());
        }
        if let Some(v) = enqueued_at {
            map.insert(headers::ENQUEUED_AT, clean(v).as_str());
        }
        publish(&js, &format!("jetq.task.work.{task}"), map, payload.clone()).await;
    }
    let total = cases.len() as u64;
    eventually(
        Duration::from_secs(60),
        "every fuzzed delivery to end",
        || {
            let js = js.clone();
            let runs = runs.clone();
            async move {
                let dead = stream_len(&js, "JETQ_DEAD").await;
                let pending = stream_len(&js, "JETQ_TASKS").await;
                (pending == 0 && dead + runs.get() == total).then_some(())
            }
        },
    )
    .await;
    // Still alive and serving.
    producer(&server)
        .await
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    eventually(
        WAIT,
        "the worker to run a normal task after the fuzz",
        || {
            let runs = runs.clone();
            let before = total;
            let js = js.clone();
            async move {
                let dead = stream_len(&js, "JETQ_DEAD").await;
                (dead + runs.get() == before + 1).then_some(())
            }
        },
    )
    .await;
}
