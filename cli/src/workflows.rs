//! Batches and chains (PROTOCOL.md §13, docs/WORKFLOWS.md) as `jetq batches`, `jetq batch <id>`,
//! `jetq chain <id>` and the console show them: read from the workflow bucket
//! `<PREFIX>_BATCHES` (batch records `b.<id>`, member markers `m.<id>.<member>`, chain records
//! `c.<id>`). Reading only: nothing here writes.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{self, AckPolicy, DeliverPolicy},
    kv,
};
use futures::StreamExt;
use jetq_contract::presence;
use jetq_contract::workflow::{
    self,
    batch::{BatchRecord, BatchState, Callback, Fire},
    engine::Workflows,
    ChainRecord, ChainState, MemberOutcome,
};
use serde::Serialize;

use crate::{error::AdminError, Admin};

/// One batch as `jetq batches` lists it. The counts are the record's counters: a hint that a
/// crash may have counted a member twice (capped at the total here); `jetq batch <id>` counts
/// the markers, which are exact.
#[derive(Debug, Clone, Serialize)]
pub struct BatchRow {
    /// The batch id.
    pub id: String,
    /// `enqueuing`, `open` or `closed`.
    pub state: BatchState,
    /// Members.
    pub total: u64,
    /// Members counted as succeeded.
    pub succeeded: u64,
    /// Members counted as dead-lettered or cancelled.
    pub dead: u64,
    /// Members not counted as finished.
    pub pending: u64,
    /// Of the pending members, those live workers run now (their presence records,
    /// PROTOCOL.md §14; as fresh as the presence interval).
    pub running: u64,
    /// `on_complete` fired (its publish acknowledged).
    pub completed_fired: bool,
    /// `on_success` fired.
    pub success_fired: bool,
    /// A chord (members' results go to the callbacks).
    pub chord: bool,
    /// The parent batch, if nested.
    pub parent: Option<String>,
    /// When it was created.
    pub created_at: String,
}

/// One chain as the console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ChainRow {
    /// The chain id.
    pub id: String,
    /// `running`, `succeeded` or `failed`.
    pub state: ChainState,
    /// How many links it has.
    pub links: usize,
    /// The index of the last link enqueued.
    pub at: usize,
    /// The link that failed.
    pub failed_at: Option<usize>,
    /// When it was created.
    pub created_at: String,
}

/// A finished member of a batch (from its marker).
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// The member id: the task id (`batch:<child>` for a nested batch).
    pub id: String,
    /// `succeeded` or `dead`.
    pub outcome: MemberOutcome,
    /// When it finished.
    pub at: String,
    /// A chord member's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// A member a live worker runs now.
#[derive(Debug, Clone, Serialize)]
pub struct RunningMember {
    /// The member id (the task id).
    pub id: String,
    /// The id of the message that runs (differs from `id` for a replay).
    pub task_id: String,
    /// Its queue and task type.
    pub queue: String,
    /// Its task type.
    pub task: String,
    /// The worker running it.
    pub worker: String,
    /// When this attempt started.
    pub started_at: String,
    /// The attempt, 1-based.
    pub attempt: u32,
}

/// One batch with its finished members, a page of them at a time.
#[derive(Debug, Clone, Serialize)]
pub struct BatchDetail {
    /// The batch id.
    pub id: String,
    /// `enqueuing`, `open` or `closed`.
    pub state: BatchState,
    /// Members.
    pub total: u64,
    /// Members that succeeded (counted from the markers: exact).
    pub succeeded: u64,
    /// Members dead-lettered or cancelled (from the markers).
    pub dead: u64,
    /// Members not finished (queued, running or retrying): `running` + `queued`.
    pub pending: u64,
    /// Of the pending members, those live workers run now (from their presence records,
    /// PROTOCOL.md §14: as fresh as the presence interval).
    pub running: u64,
    /// Of the pending members, those not running (queued, or waiting for a retry).
    pub queued: u64,
    /// The running members (by member id), with the worker running each.
    pub running_members: Vec<RunningMember>,
    /// The callbacks.
    pub on_success: Option<Callback>,
    /// With `on_success`.
    pub on_complete: Option<Callback>,
    /// `on_complete`'s firing (`started_at`, `done_at`).
    pub completed: Option<Fire>,
    /// `on_success`'s firing.
    pub succeeded_all: Option<Fire>,
    /// A chord.
    pub chord: bool,
    /// The parent batch.
    pub parent: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// The trace of the enqueue that created it.
    pub traceparent: Option<String>,
    /// Finished members on this page, ordered by member id (members not finished have no
    /// marker and are not listed).
    pub members: Vec<MemberView>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next_after: Option<String>,
}

/// Members per page of [`Admin::batch_detail`] by default.
pub const DEFAULT_MEMBER_PAGE: usize = 100;

impl Admin {
    /// The workflow bucket, `None` when no batch or chain was ever made (or not provisioned).
    async fn workflow_store(&self) -> Result<Option<kv::Store>, AdminError> {
        self.optional_bucket(&workflow::bucket(self.subjects()))
            .await
    }

    /// Every batch record, newest first (by `created_at`). Reads one message per batch.
    pub async fn batches(&self) -> Result<Vec<BatchRow>, AdminError> {
        let Some(store) = self.workflow_store().await? else {
            return Ok(Vec::new());
        };
        let workers = self.presence_records().await;
        let mut rows = Vec::new();
        for (key, value) in last_values(&store, "b.>").await? {
            let record = match BatchRecord::from_json(&value) {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(%key, error = %err, "unreadable batch record skipped");
                    continue;
                }
            };
            let succeeded = record.succeeded.min(record.total);
            let dead = record.dead.min(record.total - succeeded);
            let pending = record.total - succeeded - dead;
            let running = if pending == 0 {
                0
            } else {
                let none = std::collections::HashSet::new();
                (presence::running_members(&workers, &record.id, &none).len() as u64).min(pending)
            };
            rows.push(BatchRow {
                pending,
                running,
                completed_fired: fired(&record.completed),
                success_fired: fired(&record.succeeded_all),
                id: record.id,
                state: record.state,
                total: record.total,
                succeeded,
                dead,
                chord: record.chord,
                parent: record.parent,
                created_at: record.created_at,
            });
        }
        rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(rows)
    }

    /// Every chain record, newest first (by `created_at`). Reads one message per chain.
    pub async fn chains(&self) -> Result<Vec<ChainRow>, AdminError> {
        let Some(store) = self.workflow_store().await? else {
            return Ok(Vec::new());
        };
        let mut rows = Vec::new();
        for (key, value) in last_values(&store, "c.>").await? {
            match ChainRecord::from_json(&value) {
                Ok(record) => rows.push(ChainRow {
                    links: record.links.len(),
                    id: record.id,
                    state: record.state,
                    at: record.at,
                    failed_at: record.failed_at,
                    created_at: record.created_at,
                }),
                Err(err) => tracing::warn!(%key, error = %err, "unreadable chain record skipped"),
            }
        }
        rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(rows)
    }

    /// One batch with its counts from the markers (exact) and a page of its finished members:
    /// at most `limit` (0: [`DEFAULT_MEMBER_PAGE`]) with ids after `after`. `NotFound` if there
    /// is no such batch (or its record expired).
    pub async fn batch_detail(
        &self,
        id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<BatchDetail, AdminError> {
        workflow::validate_id("batch", id).map_err(|err| AdminError::Invalid(err.to_string()))?;
        let not_found = || AdminError::NotFound {
            what: format!("batch {id}"),
            hint: Some("batch records live 7 days after their last write".into()),
        };
        let store = self.workflow_store().await?.ok_or_else(not_found)?;
        let key = workflow::batch::record_key(id);
        let record = match store.get(&key).await {
            Ok(Some(value)) => BatchRecord::from_json(&value).map_err(|err| {
                AdminError::Invalid(format!("{key} is not a batch record: {err}"))
            })?,
            Ok(None) => return Err(not_found()),
            Err(err) => return Err(AdminError::nats(format!("cannot read {key}"), err)),
        };
        let engine = Workflows::new(
            store,
            jetq_contract::publish::Publisher::new(self.jetstream().clone(), 1),
            self.subjects().clone(),
            Duration::from_secs(120),
        );
        let markers = engine.markers(id).await.map_err(|err| {
            AdminError::nats(format!("cannot list the members of batch {id}"), err)
        })?;
        let succeeded = markers
            .iter()
            .filter(|(_, m)| m.outcome == MemberOutcome::Succeeded)
            .count() as u64;
        let dead = markers.len() as u64 - succeeded;
        let markers_ids: Vec<String> = markers.iter().map(|(member, _)| member.clone()).collect();
        let limit = if limit == 0 {
            DEFAULT_MEMBER_PAGE
        } else {
            limit
        };
        let mut page: Vec<MemberView> = markers
            .into_iter()
            .filter(|(member, _)| after.is_none_or(|after| member.as_str() > after))
            .take(limit + 1)
            .map(|(member, marker)| MemberView {
                id: member,
                outcome: marker.outcome,
                at: marker.at,
                result: marker.result,
            })
            .collect();
        let next_after = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|m| m.id.clone())
        } else {
            None
        };
        let pending = record.total.saturating_sub(succeeded + dead);
        let running_members: Vec<RunningMember> = if pending == 0 {
            Vec::new()
        } else {
            let workers = self.presence_records().await;
            let finished = markers_ids.iter().map(String::as_str).collect();
            presence::running_members(&workers, id, &finished)
                .into_iter()
                .take(usize::try_from(pending).unwrap_or(usize::MAX))
                .map(|(member, (worker, task))| RunningMember {
                    id: member,
                    task_id: task.id.clone(),
                    queue: task.queue.clone(),
                    task: task.task.clone(),
                    worker: worker.id.clone(),
                    started_at: task.started_at.clone(),
                    attempt: task.attempt,
                })
                .collect()
        };
        let running = running_members.len() as u64;
        Ok(BatchDetail {
            id: record.id,
            state: record.state,
            total: record.total,
            succeeded,
            dead,
            pending,
            running,
            queued: pending - running,
            running_members,
            on_success: record.on_success,
            on_complete: record.on_complete,
            completed: record.completed,
            succeeded_all: record.succeeded_all,
            chord: record.chord,
            parent: record.parent,
            created_at: record.created_at,
            traceparent: record.traceparent,
            members: page,
            next_after,
        })
    }

    /// A chain's record: its links, how far it got (`at`), where it stopped (`failed_at`).
    /// `NotFound` if there is none.
    pub async fn chain_detail(&self, id: &str) -> Result<ChainRecord, AdminError> {
        workflow::validate_id("chain", id).map_err(|err| AdminError::Invalid(err.to_string()))?;
        let not_found = || AdminError::NotFound {
            what: format!("chain {id}"),
            hint: Some("chain records live 7 days after their last write".into()),
        };
        let store = self.workflow_store().await?.ok_or_else(not_found)?;
        let key = workflow::chain::record_key(id);
        match store.get(&key).await {
            Ok(Some(value)) => ChainRecord::from_json(&value)
                .map_err(|err| AdminError::Invalid(format!("{key} is not a chain record: {err}"))),
            Ok(None) => Err(not_found()),
            Err(err) => Err(AdminError::nats(format!("cannot read {key}"), err)),
        }
    }
}

impl Admin {
    /// The live workers' presence records for batch status; none (with a debug log) when
    /// they cannot be read: running members are then counted as queued.
    async fn presence_records(&self) -> Vec<presence::WorkerRecord> {
        presence::read_records(self.jetstream(), self.subjects())
            .await
            .unwrap_or_else(|err| {
                tracing::debug!(error = %err, "batch status without worker presence");
                Vec::new()
            })
    }
}

fn fired(fire: &Option<Fire>) -> bool {
    fire.as_ref().is_some_and(|f| f.done_at.is_some())
}

/// The current value of every key of `store` matching `filter` (a KV key wildcard): one
/// ephemeral consumer delivering the last message per subject; deleted keys skipped.
async fn last_values(
    store: &kv::Store,
    filter: &str,
) -> Result<Vec<(String, bytes::Bytes)>, AdminError> {
    let prefix = format!("$KV.{}.", store.name);
    let subject = format!("{prefix}{filter}");
    let failed = |err: &dyn std::fmt::Display| {
        AdminError::nats(format!("cannot list {subject}"), err.to_string())
    };
    let mut consumer: jetstream::consumer::PullConsumer = store
        .stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|err| failed(&err))?;
    let pending = consumer
        .info()
        .await
        .map_err(|err| failed(&err))?
        .num_pending;
    let mut values = Vec::new();
    if pending > 0 {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|err| failed(&err))?;
        loop {
            let message = match tokio::time::timeout(Duration::from_secs(10), messages.next()).await
            {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(err))) => return Err(failed(&err)),
                Ok(None) | Err(_) => return Err(failed(&"the listing stopped")),
            };
            let left = message.info().map(|info| info.pending).unwrap_or(0);
            let deleted = message
                .headers
                .as_ref()
                .is_some_and(|h| h.get("KV-Operation").is_some_and(|op| op.as_str() != "PUT"));
            if !deleted {
                if let Some(key) = message.subject.as_str().strip_prefix(&prefix) {
                    values.push((key.to_owned(), message.payload.clone()));
                }
            }
            if left == 0 {
                break;
            }
        }
    }
    let name = consumer.cached_info().name.clone();
    if let Err(err) = store.stream.delete_consumer(&name).await {
        tracing::debug!(error = %err, "could not delete the listing consumer; it expires");
    }
    Ok(values)
}
