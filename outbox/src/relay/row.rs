//! One outbox row and the message it becomes, or why it can never be published.
//!
//! Everything here is a pure function of the row (and the server's `max_payload`), so the
//! conformance vectors in `docs/conformance/outbox.json` pin it down byte for byte.

use async_nats::{header::HeaderName, HeaderMap};
use bytes::Bytes;
use jetq_contract::{headers, name, publish::Outgoing, DeadReason, NameKind, Priority, Subjects};
use serde_json::Value;

/// The header key the relay adds to a row's `headers` column before its first publish attempt
/// (the time, RFC 3339 UTC). It is relay bookkeeping, never published (PROTOCOL.md §10).
pub const FIRST_ATTEMPT_KEY: &str = "Jetq-Outbox-First-Attempt";

/// A row read from the outbox table.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// `id`: relay order.
    pub id: i64,
    /// `msg_id`: the task id, published as `Nats-Msg-Id`.
    pub msg_id: String,
    /// `subject`.
    pub subject: String,
    /// `headers` (a JSON object of string values).
    pub headers: Value,
    /// `payload`: the JSON arguments.
    pub payload: Vec<u8>,
    /// `attempts`: publish attempts begun before this one.
    pub attempts: i32,
}

/// Why a row can never be published. It goes to the dead-letter stream instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpublishable {
    /// Machine-readable cause, the `Jetq-Outbox-Reason` header of the dead letter:
    /// `invalid-subject`, `invalid-msg-id`, `invalid-headers`, `invalid-payload`, `too-large`,
    /// `unconfirmed`.
    pub code: &'static str,
    /// The `Jetq-Dead-Reason` it is filed under (`undecodable` for a payload that is not JSON,
    /// else `fatal`).
    pub reason: DeadReason,
    /// A sentence saying what is wrong.
    pub error: String,
}

impl Unpublishable {
    fn fatal(code: &'static str, error: String) -> Unpublishable {
        Unpublishable {
            code,
            reason: DeadReason::Fatal,
            error,
        }
    }
}

/// The queue and task a row's subject names (a task subject or a delayed one), if it is a
/// valid jetq subject with legal names. The queue token may carry a priority level
/// (`emails~high`, PROTOCOL.md §12): the queue is named without it, and a level that does not
/// exist (`emails~urgent`) makes the subject invalid. The relay publishes the subject as
/// written, so the level a writer put there is the level the task waits at.
pub fn queue_and_task<'a>(subjects: &Subjects, subject: &'a str) -> Option<(&'a str, &'a str)> {
    let (queue, task) = match subjects.parse_task(subject) {
        Some(names) => names,
        None => {
            let (_, token, task) = subjects.parse_delayed(subject)?;
            let (queue, _level) = Priority::split_queue_token(token)?;
            (queue, task)
        }
    };
    let legal = name::validate(NameKind::Queue, queue).is_ok()
        && name::validate(NameKind::Task, task).is_ok();
    legal.then_some((queue, task))
}

/// True when `value` can travel as a header value in every NATS client.
fn is_header_value(value: &str) -> bool {
    !value.contains(['\r', '\n'])
}

/// True when `name` is a header name (`!`..`~` except `:`).
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// The headers a row carries, as published: every entry of its `headers` column but
/// `Nats-Msg-Id` (the `msg_id` column wins) and the relay's own [`FIRST_ATTEMPT_KEY`].
/// Only the entries that are valid headers when the row is not publishable (for its dead letter).
pub fn row_headers(row: &OutboxRow) -> Result<HeaderMap, (HeaderMap, String)> {
    let mut map = HeaderMap::new();
    let Some(object) = row.headers.as_object() else {
        return Err((map, "the headers column is not a JSON object".into()));
    };
    let mut problem = None;
    for (key, value) in object {
        if key == headers::MSG_ID || key == FIRST_ATTEMPT_KEY {
            continue;
        }
        match value.as_str() {
            Some(text) if is_header_name(key) && is_header_value(text) => {
                match key.parse::<HeaderName>() {
                    Ok(header) => map.insert(header, text),
                    Err(_) => {
                        problem.get_or_insert(format!("header name {key:?} is not valid"));
                    }
                }
            }
            Some(_) => {
                problem.get_or_insert(format!(
                    "header {key:?} has an invalid name or a value with a line break"
                ));
            }
            None => {
                problem.get_or_insert(format!("header {key:?} is not a string"));
            }
        }
    }
    match problem {
        None => Ok(map),
        Some(problem) => Err((map, problem)),
    }
}

/// The message the relay publishes for `row`, or why it never can be. `max_payload` is the
/// server's limit on a whole message (headers included).
pub fn message(
    subjects: &Subjects,
    row: &OutboxRow,
    max_payload: usize,
) -> Result<Outgoing, Unpublishable> {
    if queue_and_task(subjects, &row.subject).is_none() {
        return Err(Unpublishable::fatal(
            "invalid-subject",
            format!(
                "subject {:?} is not a jetq task subject ({}.task.<queue>.<task> or \
                 {}.delayed.<second>.<queue>.<task>) with legal queue and task names \
                 (1-64 characters of A-Z a-z 0-9 _ -), the queue optionally followed by a \
                 level ~high or ~low",
                row.subject,
                subjects.prefix(),
                subjects.prefix()
            ),
        ));
    }
    if row.msg_id.is_empty()
        || row.msg_id.len() > 256
        || !row.msg_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Unpublishable::fatal(
            "invalid-msg-id",
            format!(
                "msg_id {:?} is not a task id (1-256 printable ASCII characters, no spaces)",
                row.msg_id
            ),
        ));
    }
    let headers = row_headers(row)
        .map_err(|(_, problem)| Unpublishable::fatal("invalid-headers", problem))?;
    if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(&row.payload) {
        return Err(Unpublishable {
            code: "invalid-payload",
            reason: DeadReason::Undecodable,
            error: format!("the payload is not JSON: {err}"),
        });
    }
    let outgoing = Outgoing::new(
        row.subject.clone(),
        row.msg_id.clone(),
        headers,
        Bytes::from(row.payload.clone()),
    );
    let size = wire_size(&outgoing);
    if size > max_payload {
        return Err(Unpublishable::fatal(
            "too-large",
            format!(
                "the message is {size} bytes with its headers, over the server's max_payload \
                 ({max_payload} bytes)"
            ),
        ));
    }
    Ok(outgoing)
}

/// A message's size as the server counts it against `max_payload`: the body plus the header
/// block.
pub fn wire_size(message: &Outgoing) -> usize {
    message.payload.len() + jetq_contract::dead::headers_wire_len(&message.headers)
}
