//! Dead letters for rows that can never be published (PROTOCOL.md §5 and §10): the row's
//! payload and valid headers on `<prefix>.dead.<queue>.<task>`, with the §5 headers and the
//! outbox's own, so `jetq dead` shows the reason and nothing is lost.

use async_nats::HeaderMap;
use bytes::Bytes;
use jetq_contract::{failure::truncate_error, headers, publish::Outgoing, FailureRecord, Subjects};

use super::row::{self, OutboxRow, Unpublishable};

/// On a dead letter written by the relay: the machine-readable cause
/// ([`Unpublishable::code`]).
pub const OUTBOX_REASON: &str = "Jetq-Outbox-Reason";
/// On a dead letter written by the relay: the outbox row's `id`.
pub const OUTBOX_ROW: &str = "Jetq-Outbox-Row";
/// On a dead letter written by the relay: the row's `subject`, when it is a valid header value.
pub const OUTBOX_SUBJECT: &str = "Jetq-Outbox-Subject";

/// The queue and task of the dead-letter subject of a row whose subject names no legal queue
/// and task.
pub const INVALID_QUEUE: &str = "_outbox";
/// See [`INVALID_QUEUE`].
pub const INVALID_TASK: &str = "_invalid";

/// The dead letter of `row`. `dead_at` is RFC 3339 UTC (passed in so vectors are exact). The
/// body is the row's payload; the caller moves a body that does not fit to the dead-letter body
/// store.
pub fn letter(
    subjects: &Subjects,
    row: &OutboxRow,
    why: &Unpublishable,
    dead_at: &str,
) -> Outgoing {
    let (queue, task) =
        row::queue_and_task(subjects, &row.subject).unwrap_or((INVALID_QUEUE, INVALID_TASK));
    let mut map: HeaderMap = match row::row_headers(row) {
        Ok(map) => map,
        Err((valid, _)) => valid,
    };
    let id_ok = !row.msg_id.is_empty()
        && row.msg_id.len() <= 256
        && row.msg_id.bytes().all(|b| b.is_ascii_graphic());
    let id = if id_ok {
        map.insert(headers::TASK_ID, row.msg_id.as_str());
        format!("dead:outbox:{}:{}", row.id, row.msg_id)
    } else {
        format!("dead:outbox:{}", row.id)
    };
    let attempts = u32::try_from(row.attempts.max(0)).unwrap_or(0);
    let record = FailureRecord {
        reason: why.reason,
        attempts,
        error: truncate_error(&format!("outbox relay: {}", why.error)),
        history: Vec::new(),
        enqueued_at: map
            .get(headers::ENQUEUED_AT)
            .map(|value| value.as_str().to_owned()),
        dead_at: dead_at.to_owned(),
        http: None,
    };
    let record = serde_json::to_string(&record).unwrap_or_default();
    map.insert(headers::DEAD_REASON, why.reason.as_str());
    map.insert(headers::ATTEMPTS, attempts.to_string().as_str());
    map.insert(headers::DEAD_AT, dead_at);
    map.insert(headers::TASK_SEQUENCE, "0");
    map.insert(headers::FAILURE, record.as_str());
    map.insert(OUTBOX_REASON, why.code);
    map.insert(OUTBOX_ROW, row.id.to_string().as_str());
    if !row.subject.contains(['\r', '\n']) && !row.subject.is_empty() {
        map.insert(OUTBOX_SUBJECT, row.subject.as_str());
    }
    Outgoing::new(
        subjects.dead(queue, task),
        id,
        map,
        Bytes::from(row.payload.clone()),
    )
}
