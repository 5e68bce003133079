//! The Rust side of docs/conformance/priorities.json (PROTOCOL §12): the subject and the
//! `Jetq-Priority` header of a task at each level (built without a connection by
//! `TaskMessage`, and stored by a connected producer in a real nats-server), the level parsed
//! back from a subject, each level's durable consumer, and the priorities a producer refuses.
//! The Python and Node.js clients are held to the same file by
//! clients/python/tests/test_conformance.py and clients/node/test/conformance.test.js.

use std::collections::HashMap;

use bytes::Bytes;
use jetq_contract::{ConnectionConfig, Priority, Subjects};
use jetq_producer::{message::TaskMessage, EnqueueOptions, Producer, RawTask};
use jetq_tests::*;
use serde::Deserialize;

const HEADER: &str = "Jetq-Priority";

#[derive(Debug, Deserialize)]
struct Vectors {
    header: String,
    levels: Vec<String>,
    messages: Vec<MessageVector>,
    tokens: Vec<TokenVector>,
    subjects: Vec<SubjectVector>,
    consumers: Vec<ConsumerVector>,
    invalid: Vec<InvalidVector>,
}

/// A task at a level and where it goes.
#[derive(Debug, Deserialize)]
struct MessageVector {
    name: String,
    prefix: String,
    queue: String,
    task: String,
    priority: Option<String>,
    due: Option<String>,
    subject: String,
    header: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenVector {
    queue: String,
    level: String,
    token: String,
}

#[derive(Debug, Deserialize)]
struct Parsed {
    queue: String,
    level: String,
    task: String,
}

#[derive(Debug, Deserialize)]
struct SubjectVector {
    prefix: String,
    subject: String,
    parsed: Option<Parsed>,
}

#[derive(Debug, Deserialize)]
struct ConsumerVector {
    prefix: String,
    queue: String,
    level: String,
    durable: String,
    filter: String,
}

#[derive(Debug, Deserialize)]
struct InvalidVector {
    name: String,
    priority: String,
    reason: String,
}

fn vectors() -> Vectors {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/conformance/priorities.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is malformed: {e}"))
}

fn level(name: &str) -> Priority {
    name.parse()
        .unwrap_or_else(|e| panic!("the vectors name a level that does not parse: {e}"))
}

fn options(vector: &MessageVector) -> EnqueueOptions {
    match &vector.priority {
        Some(name) => EnqueueOptions::new().priority(level(name)),
        None => EnqueueOptions::new(),
    }
}

/// Every value of `Jetq-Priority` among (name, value) pairs.
fn priority_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    headers
        .into_iter()
        .filter(|(name, _)| *name == HEADER)
        .map(|(_, value)| value.to_owned())
        .collect()
}

#[test]
fn the_header_and_the_levels_are_the_contracts() {
    let v = vectors();
    assert_eq!(v.header, HEADER);
    assert_eq!(v.header, jetq_contract::headers::PRIORITY);
    let ours: Vec<&str> = Priority::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(v.levels, ours, "highest first");
}

#[test]
fn task_messages_have_the_level_subject_and_header_of_the_vectors() {
    let v = vectors();
    assert!(v.messages.iter().any(|m| m.due.is_some()));
    for vector in &v.messages {
        let subjects = Subjects::new(&vector.prefix).unwrap();
        let due = vector.due.as_deref().map(|at| {
            jetq_contract::time::parse(at).unwrap_or_else(|| panic!("{}: due", vector.name))
        });
        let message = TaskMessage::raw(
            &subjects,
            &vector.queue,
            &vector.task,
            Bytes::from_static(b"{}"),
            options(vector),
            due,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", vector.name));
        assert_eq!(message.subject, vector.subject, "{}", vector.name);
        let found = priority_headers(
            message
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        let want: Vec<String> = vector.header.iter().cloned().collect();
        assert_eq!(found, want, "{}: {HEADER}", vector.name);
        if due.is_none() {
            let level = vector.priority.as_deref().map_or(Priority::Normal, level);
            assert_eq!(
                subjects.task_at(&vector.queue, level, &vector.task),
                vector.subject,
                "{}: Subjects::task_at",
                vector.name
            );
        }
    }
}

#[tokio::test]
async fn a_connected_producer_stores_the_tasks_of_the_vectors_on_their_level_subjects() {
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let mut producers: HashMap<String, Producer> = HashMap::new();
    let v = vectors();
    // A delayed task's subject depends on its due time, which a connected producer refuses
    // this far ahead; `TaskMessage` checks those vectors above.
    let immediate: Vec<&MessageVector> = v.messages.iter().filter(|m| m.due.is_none()).collect();
    assert!(!immediate.is_empty());
    for vector in immediate {
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
        let enqueued = within(
            WAIT,
            &vector.name,
            producer.enqueue_raw(RawTask {
                queue: vector.queue.clone(),
                task: vector.task.clone(),
                payload: Bytes::from_static(b"{}"),
                options: options(vector),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: enqueue: {e}", vector.name));
        let stream = js
            .get_stream(producer.subjects().tasks_stream())
            .await
            .expect("the task stream exists");
        let stored = stream
            .get_raw_message(enqueued.sequence)
            .await
            .unwrap_or_else(|e| panic!("{}: stored message: {e}", vector.name));
        assert_eq!(stored.subject.as_str(), vector.subject, "{}", vector.name);
        let found =
            priority_headers(stored.headers.iter().flat_map(|(name, values)| {
                values.iter().map(move |v| (name.as_ref(), v.as_str()))
            }));
        let want: Vec<String> = vector.header.iter().cloned().collect();
        assert_eq!(found, want, "{}: stored {HEADER}", vector.name);
    }
}

#[test]
fn queue_tokens_match_the_vectors() {
    for vector in &vectors().tokens {
        let level = level(&vector.level);
        assert_eq!(level.queue_token(&vector.queue), vector.token.as_str());
        assert_eq!(
            Priority::split_queue_token(&vector.token),
            Some((vector.queue.as_str(), level))
        );
    }
}

#[test]
fn subjects_split_into_queue_level_and_task_as_the_vectors_say() {
    let v = vectors();
    assert!(v.subjects.iter().any(|s| s.parsed.is_none()));
    for vector in &v.subjects {
        let subjects = Subjects::new(&vector.prefix).unwrap();
        let got = subjects.parse_task_level(&vector.subject);
        let want = vector
            .parsed
            .as_ref()
            .map(|p| (p.queue.as_str(), level(&p.level), p.task.as_str()));
        assert_eq!(got, want, "{}", vector.subject);
        if let Some((queue, level, task)) = want {
            assert_eq!(subjects.task_at(queue, level, task), vector.subject);
        }
    }
}

#[test]
fn each_level_has_the_durable_and_filter_of_the_vectors() {
    for vector in &vectors().consumers {
        let subjects = Subjects::new(&vector.prefix).unwrap();
        let level = level(&vector.level);
        assert_eq!(subjects.durable_at(&vector.queue, level), vector.durable);
        assert_eq!(
            subjects.queue_filter_at(&vector.queue, level),
            vector.filter
        );
    }
}

#[test]
fn unknown_priorities_are_refused_with_the_reason_of_the_vectors() {
    let v = vectors();
    assert!(!v.invalid.is_empty());
    for vector in &v.invalid {
        let err = vector.priority.parse::<Priority>().expect_err(&vector.name);
        assert_eq!(err.to_string(), vector.reason, "{}", vector.name);
        assert_eq!(err.value, vector.priority, "{}", vector.name);
    }
}
