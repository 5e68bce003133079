//! Atomic batch enqueue: many tasks stored with one write and one disk sync.
//!
//! With `sync_interval: always` (what docs/OPERATIONS.md recommends) JetStream syncs the disk
//! once per stored message, so tasks published one by one are bound by the disk: a few thousand
//! per second however many are in flight. An **atomic batch** (nats-server 2.12+, ADR-50, the
//! task stream's `allow_atomic`) is stored as one unit — all of its messages or none — with one
//! sync. `enqueue_many` and coalesced concurrent `enqueue` calls use it:
//!
//! 1. every message but the last is published with `Nats-Batch-Id` and `Nats-Batch-Sequence`
//!    (no reply: the server answers only the commit);
//! 2. the last also carries `Nats-Batch-Commit: 1` and a reply subject; its answer is one
//!    publish ack for the whole batch: the stream sequence of the last message and the count.
//!
//! What the batch cannot say is sorted out by sending the tasks one by one, which is always
//! correct because every task keeps its `Nats-Msg-Id`:
//!
//! - **A duplicate** (a caller's key already stored, error 10201): the server refuses the whole
//!   batch. One by one, each task gets its own answer (`duplicate: true` for the one).
//! - **Any other refusal** (a full stream, a message too large): nothing was stored; one by one,
//!   each task gets its own typed error, as without batches.
//! - **No answer** (timeout) or an answer that is not a batch ack: the batch may or may not be
//!   stored. One by one, with the same ids: a stored task comes back as a duplicate of itself,
//!   which for a generated id is this task (docs/PROTOCOL.md §3).
//! - **Atomic publish disabled** on the stream (10174, e.g. created before 2.12 and not yet
//!   reconciled by `jetq-provision`): this producer stops trying batches and says so once.
//!
//! Servers older than 2.12 would store the messages one by one without acking them: batches
//! are only sent to 2.12 or newer.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::HeaderMap;
use serde::Deserialize;

use super::{prepared::Prepared, Producer};

/// Most tasks sent in one atomic batch (the server accepts 1,000).
pub(crate) const MAX_BATCH: usize = 1000;

/// `Nats-Batch-Id`: the same on every message of one batch (at most 64 characters).
const BATCH_ID: &str = "Nats-Batch-Id";
/// `Nats-Batch-Sequence`: the message's place in its batch, from 1.
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
/// `Nats-Batch-Commit: 1` on the last message.
const BATCH_COMMIT: &str = "Nats-Batch-Commit";

/// The stream does not allow atomic publish.
const ATOMIC_DISABLED: u64 = 10174;

/// Whether this producer sends atomic batches; shared by its clones.
#[derive(Debug)]
pub(crate) struct AtomicBatches {
    enabled: AtomicBool,
}

impl AtomicBatches {
    /// Batches are tried when the server can store them (2.12+).
    pub(crate) fn new(server_supports: bool) -> Self {
        AtomicBatches {
            enabled: AtomicBool::new(server_supports),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn disable(&self, stream: &str) {
        if self.enabled.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                %stream,
                "the task stream does not allow atomic publish: enqueue_many sends tasks one by \
                 one (one disk sync each); run jetq-provision to enable it (allow_atomic)"
            );
        }
    }
}

/// How a batch ended.
pub(crate) enum Batched {
    /// Every task is stored; the last one at this stream sequence, the others just before it.
    Stored { last_sequence: u64 },
    /// Send the tasks one by one. `resend`: the batch may have been stored (no answer), so a
    /// duplicate of a generated id is the task itself.
    OneByOne { resend: bool },
}

/// The commit's answer: a publish ack for the batch, or an error.
#[derive(Deserialize)]
struct CommitAck {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    batch: Option<String>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// A batch whose messages are sent and whose commit's answer is awaited.
pub(crate) struct PendingCommit {
    answer: async_nats::Subscriber,
    batch_id: String,
    count: usize,
}

impl Producer {
    /// Sends `tasks` (at most [`MAX_BATCH`], at least two) as one atomic batch, the commit
    /// last; [`Producer::finish_batch`] awaits its answer. Splitting the two lets the next
    /// batch go out while this one's disk sync runs: batches sent in order are stored in order.
    pub(crate) async fn start_batch(&self, tasks: &[&Prepared]) -> Result<PendingCommit, Batched> {
        let batch_id = ulid::Ulid::new().to_string();
        let count = tasks.len();
        let client = self.js.client();
        let inbox = client.new_inbox();
        let answer = client.subscribe(inbox.clone()).await.map_err(|err| {
            tracing::debug!(error = %err, "cannot subscribe for a batch commit; sending one by one");
            Batched::OneByOne { resend: false }
        })?;
        for (index, task) in tasks.iter().enumerate() {
            let mut headers: HeaderMap = task.headers();
            headers.insert(BATCH_ID, batch_id.as_str());
            headers.insert(BATCH_SEQUENCE, (index + 1).to_string().as_str());
            let sent = if index + 1 < count {
                client
                    .publish_with_headers(task.subject.clone(), headers, task.payload.clone())
                    .await
            } else {
                headers.insert(BATCH_COMMIT, "1");
                client
                    .publish_with_reply_and_headers(
                        task.subject.clone(),
                        inbox.clone(),
                        headers,
                        task.payload.clone(),
                    )
                    .await
            };
            if let Err(err) = sent {
                // Not all sent: the server abandons the incomplete batch, or (the commit was
                // handed to the connection and then failed) may have it: resend settles it.
                tracing::debug!(error = %err, "batch publish failed; sending one by one");
                return Err(Batched::OneByOne {
                    resend: index + 1 == count,
                });
            }
        }
        Ok(PendingCommit {
            answer,
            batch_id,
            count,
        })
    }

    /// Awaits the answer to a batch's commit (at most the request timeout).
    pub(crate) async fn finish_batch(&self, mut pending: PendingCommit) -> Batched {
        use futures::StreamExt;
        match tokio::time::timeout(self.ack_timeout, pending.answer.next()).await {
            Ok(Some(answer)) => self.read_commit(&answer.payload, &pending.batch_id, pending.count),
            Ok(None) | Err(_) => {
                tracing::debug!("no answer to a batch commit; resending one by one");
                Batched::OneByOne { resend: true }
            }
        }
    }

    fn read_commit(&self, answer: &[u8], batch_id: &str, count: usize) -> Batched {
        let ack: CommitAck = match serde_json::from_slice(answer) {
            Ok(ack) => ack,
            Err(err) => {
                tracing::warn!(error = %err, "unreadable answer to a batch commit; resending one by one");
                return Batched::OneByOne { resend: true };
            }
        };
        if let Some(error) = ack.error {
            if error.err_code == ATOMIC_DISABLED {
                self.atomic.disable(&ack.stream);
            } else {
                tracing::debug!(code = error.err_code, description = %error.description, "batch refused; sending one by one");
            }
            // Refused as a whole: nothing was stored.
            return Batched::OneByOne { resend: false };
        }
        let whole = ack.batch.as_deref() == Some(batch_id)
            && ack.count == Some(count as u64)
            && ack.seq >= count as u64;
        if !whole {
            // Not a batch ack (a server that stored the messages one by one?): what was stored
            // is unknown; the one-by-one resend settles it with the same ids.
            tracing::warn!(
                stream = %ack.stream,
                "the answer to a batch commit was not a batch ack; resending one by one"
            );
            return Batched::OneByOne { resend: true };
        }
        Batched::Stored {
            last_sequence: ack.seq,
        }
    }
}
