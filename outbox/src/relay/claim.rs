//! One claim: mark → lock → publish → delete → commit (PROTOCOL.md §10).
//!
//! 1. **Mark** (its own committed statement): the oldest unlocked rows get `attempts + 1` and,
//!    unless an earlier attempt left one, the time of this first attempt. From here on, a
//!    crash cannot hide that the row may have been published.
//! 2. **Lock** the marked rows with `FOR UPDATE SKIP LOCKED` in a transaction: a row another
//!    relay took in between is skipped, so no two relays publish a row at once.
//! 3. **Publish** each with `Nats-Msg-Id` = `msg_id` (pipelined, resent while acks time out).
//!    A row whose first attempt is older than the stream's duplicate window (minus a margin)
//!    is not published again: a copy may be stored and the server would no longer drop a
//!    second one. It is dead-lettered as `unconfirmed` for an operator to decide.
//! 4. **Delete** acknowledged and dead-lettered rows, record the errors of the others, and
//!    commit. A crash before the commit releases the locks (the connection dies), and the rows
//!    are published again with the same ids within seconds: the server drops the copies.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::context::PublishErrorKind;
use jetq_contract::publish::{Outgoing, PublishError};
use sqlx::Row;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    dead,
    row::{self, OutboxRow, Unpublishable, FIRST_ATTEMPT_KEY},
    sql, CycleError, Relay,
};

/// What one claim did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    /// Rows marked (the claim was full when this equals the batch size).
    pub(crate) marked: usize,
    /// Rows published and deleted.
    pub(crate) relayed: usize,
    /// Rows dead-lettered and deleted.
    pub(crate) dead: usize,
    /// Rows left for a later attempt.
    pub(crate) failed: usize,
    /// A delayed task found no stream: the delayed-task stream should be created.
    pub(crate) no_delayed_stream: bool,
}

/// A row about to be published or dead-lettered.
enum Plan {
    Publish(OutboxRow, Outgoing),
    Dead(OutboxRow, Unpublishable),
}

impl Relay {
    /// One claim of up to a batch of rows.
    pub(crate) async fn claim(&self) -> Result<Claimed, CycleError> {
        let mark = jetq_contract::time::now();
        let ids: Vec<i64> = sqlx::query_scalar(&sql::mark(&self.table))
            .bind(i64::try_from(self.settings.relay_batch_size).unwrap_or(100))
            .bind(&mark)
            .fetch_all(&self.pool)
            .await
            .map_err(CycleError::Database)?;
        if ids.is_empty() {
            return Ok(Claimed::default());
        }
        let marked = ids.len();
        let claim = self.publish_marked(ids, &mark);
        match tokio::time::timeout(self.settings.relay_claim_timeout, claim).await {
            Ok(result) => result.map(|claimed| Claimed { marked, ..claimed }),
            // Dropping the transaction rolls it back; the server ends a session idle in a
            // transaction after the same timeout (set at connect), so the locks are gone soon.
            Err(_) => Err(CycleError::ClaimTimeout(self.settings.relay_claim_timeout)),
        }
    }

    async fn publish_marked(&self, ids: Vec<i64>, mark: &str) -> Result<Claimed, CycleError> {
        let mut tx = self.pool.begin().await.map_err(CycleError::Database)?;
        let rows = sqlx::query(&sql::lock(&self.table))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(CycleError::Database)?;
        let max_payload = self.client.server_info().max_payload;
        let mut plans = Vec::with_capacity(rows.len());
        for row in rows {
            let row = read_row(&row).map_err(CycleError::Database)?;
            let plan = match row::message(&self.subjects, &row, max_payload) {
                Err(why) => Plan::Dead(row, why),
                Ok(message) => match self.unconfirmed(&row, mark) {
                    Some(why) => Plan::Dead(row, why),
                    None => Plan::Publish(row, message),
                },
            };
            plans.push(plan);
        }

        let mut done: Vec<i64> = Vec::new();
        let mut failed: Vec<(i64, String, bool)> = Vec::new();
        let mut claimed = Claimed::default();

        // Send every message first (pipelined), then await the acks in order.
        let mut sent = Vec::new();
        for plan in &plans {
            if let Plan::Publish(row, message) = plan {
                let span = publish_span(row, &message.subject);
                let first = self.publisher.send(message).instrument(span.clone()).await;
                tracing::debug!(row = row.id, subject = %message.subject, ok = first.is_ok(), "sent");
                sent.push((row, message, span, first));
            }
        }
        let mut no_stream_delayed = false;
        for (row, message, span, first) in sent {
            let outcome = self
                .publisher
                .confirm(message, first)
                .instrument(span.clone())
                .await;
            match outcome {
                Ok(ack) => {
                    span.set_attribute("jetq.outbox.duplicate", ack.duplicate);
                    self.metrics.relayed(1, ack.duplicate);
                    done.push(row.id);
                    claimed.relayed += 1;
                }
                Err(err) => {
                    span.set_status(opentelemetry::trace::Status::error(err.to_string()));
                    tracing::debug!(row = row.id, error = %err, "publish failed");
                    self.metrics.failed(error_type(&err));
                    if err.send_error().kind() == PublishErrorKind::StreamNotFound
                        && self.subjects.parse_delayed(&message.subject).is_some()
                    {
                        no_stream_delayed = true;
                    }
                    // Nothing was stored by the only send, and no earlier attempt left a
                    // mark: this row has never been published.
                    let stored_nothing = matches!(err, PublishError::Failed { sends: 1, .. });
                    let our_mark = first_attempt(row).as_deref() == Some(mark);
                    failed.push((row.id, err.to_string(), stored_nothing && our_mark));
                    claimed.failed += 1;
                }
            }
        }
        claimed.no_delayed_stream = no_stream_delayed;

        for plan in &plans {
            if let Plan::Dead(row, why) = plan {
                match self.dead_letter(row, why).await {
                    Ok(()) => {
                        tracing::warn!(
                            row = row.id, msg_id = %row.msg_id, reason = why.code,
                            "outbox row cannot be published: dead-lettered ({})", why.error
                        );
                        self.metrics.dead_lettered(why.code);
                        done.push(row.id);
                        claimed.dead += 1;
                    }
                    Err(err) => {
                        tracing::warn!(
                            row = row.id, msg_id = %row.msg_id, reason = why.code, error = %err,
                            "outbox row cannot be published and its dead letter failed; retrying"
                        );
                        self.metrics.failed("dead_letter");
                        failed.push((
                            row.id,
                            format!("{}; and the dead letter failed: {err}", why.error),
                            false,
                        ));
                        claimed.failed += 1;
                    }
                }
            }
        }

        if !done.is_empty() {
            sqlx::query(&sql::delete(&self.table))
                .bind(&done)
                .execute(&mut *tx)
                .await
                .map_err(CycleError::Database)?;
        }
        if !failed.is_empty() {
            let ids: Vec<i64> = failed.iter().map(|f| f.0).collect();
            let errors: Vec<String> = failed.iter().map(|f| f.1.clone()).collect();
            let forget: Vec<bool> = failed.iter().map(|f| f.2).collect();
            sqlx::query(&sql::record_failures(&self.table))
                .bind(&ids)
                .bind(&errors)
                .bind(&forget)
                .execute(&mut *tx)
                .await
                .map_err(CycleError::Database)?;
        }
        if let Err(err) = tx.commit().await {
            // The publishes are acknowledged: remember to delete these rows rather than
            // publish them again (which would be dropped inside the window, but be a duplicate
            // past it).
            self.remember_acked(&done);
            return Err(CycleError::Database(err));
        }
        Ok(claimed)
    }

    /// `Some` when the row's earlier attempt may have stored it longer ago than the stream
    /// still remembers its id: publishing again could enqueue it twice.
    fn unconfirmed(&self, row: &OutboxRow, mark: &str) -> Option<Unpublishable> {
        let first = first_attempt(row)?;
        if first == mark {
            return None; // this attempt is the first
        }
        let age = jetq_contract::time::parse(&first).map(|at| {
            SystemTime::now()
                .duration_since(at)
                .unwrap_or(Duration::ZERO)
        });
        let safe = self.window.saturating_sub(self.margin);
        match age {
            Some(age) if age < safe => None,
            _ => Some(Unpublishable {
                code: "unconfirmed",
                reason: jetq_contract::DeadReason::Fatal,
                error: format!(
                    "a relay began publishing this task at {first} and never confirmed it; the \
                     task stream's duplicate window ({}) has passed since, so publishing it again \
                     could run it twice. It may already have run: check (jetq status, your \
                     data) and replay it with `jetq dead replay` only if it did not",
                    humantime_secs(self.window)
                ),
            }),
        }
    }

    /// Publishes a dead letter for `row` (its body to the body store when it does not fit).
    async fn dead_letter(&self, row: &OutboxRow, why: &Unpublishable) -> Result<(), String> {
        let mut letter = dead::letter(&self.subjects, row, why, &jetq_contract::time::now());
        let max_payload = self.client.server_info().max_payload;
        if row::wire_size(&letter) > max_payload {
            let bucket = self.subjects.dead_payloads_bucket();
            let object = jetq_contract::dead::payload_object_name(
                u64::try_from(row.id).unwrap_or(0),
                &row.msg_id,
            );
            let store = self
                .publisher
                .jetstream()
                .get_object_store(&bucket)
                .await
                .map_err(|err| format!("dead-letter body store {bucket}: {err}"))?;
            let mut body: &[u8] = &letter.payload;
            // Chunks well inside the server's limit (the store's default, 128 KiB, is larger
            // than a small max_payload).
            let meta = async_nats::jetstream::object_store::ObjectMetadata {
                name: object.clone(),
                chunk_size: Some(jetq_contract::dead::body_chunk_size(max_payload)),
                ..Default::default()
            };
            store
                .put(meta, &mut body)
                .await
                .map_err(|err| format!("dead-letter body store {bucket}: {err}"))?;
            letter
                .headers
                .insert(jetq_contract::headers::PAYLOAD_OBJECT, object.as_str());
            letter.headers.insert(
                jetq_contract::headers::PAYLOAD_SIZE,
                letter.payload.len().to_string().as_str(),
            );
            letter.payload = bytes::Bytes::new();
        }
        self.publisher
            .publish(&letter)
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}

fn read_row(row: &sqlx::postgres::PgRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        id: row.try_get("id")?,
        msg_id: row.try_get("msg_id")?,
        subject: row.try_get("subject")?,
        headers: row
            .try_get::<sqlx::types::Json<serde_json::Value>, _>("headers")?
            .0,
        payload: row.try_get("payload")?,
        attempts: row.try_get("attempts")?,
    })
}

/// The row's first-attempt time, as the relay wrote it.
fn first_attempt(row: &OutboxRow) -> Option<String> {
    row.headers
        .get(FIRST_ATTEMPT_KEY)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// A `send <subject>` span for one row, a child of the trace context the writer stored in the
/// row (`traceparent`), so the trace runs from the request that wrote the row through the relay
/// into the task.
fn publish_span(row: &OutboxRow, subject: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "relay",
        otel.name = %format_args!("send {subject}"),
        otel.kind = "producer",
        messaging.message.id = %row.msg_id,
        jetq.outbox.row = row.id,
    );
    if !span.is_disabled() {
        if let Ok(headers) = row::row_headers(row) {
            let parent = jetq_contract::otel::extract(Some(&headers));
            let _ = span.set_parent(parent);
        }
        span.set_attribute("messaging.system", "nats");
        span.set_attribute("messaging.destination.name", subject.to_owned());
    }
    span
}

fn error_type(err: &PublishError) -> &'static str {
    match err {
        PublishError::Unacknowledged { .. } => "unacknowledged",
        PublishError::Failed { source, .. } => match source.kind() {
            PublishErrorKind::StreamNotFound => "no_stream",
            PublishErrorKind::BrokenPipe => "not_connected",
            _ => "rejected",
        },
        _ => "publish",
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}
