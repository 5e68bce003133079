//! Unique tasks and limit keys on the producer side (PROTOCOL §11, docs/FLOW_CONTROL.md).
//!
//! A task with a unique key is enqueued in three steps: take the key in `<PREFIX>_UNIQUE` with
//! a compare-and-set `create` (a `pending` hold with a short lease), publish the task, then
//! confirm the hold with the task's stream sequence. An enqueue that finds the key held gets
//! the holder's task id back with `duplicate: true`; one that finds a hold whose holder is gone
//! (a lease or period over, or a task no longer in the task stream) takes the key over with a
//! compare-and-set `update`. Tasks without flow options never reach this module: they cost
//! nothing more than before.

use std::{sync::Arc, time::SystemTime};

use async_nats::{
    jetstream::{
        kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
        stream::LastRawMessageErrorKind,
    },
    HeaderMap,
};
use jetq_contract::{
    flow::{
        self, keys,
        unique::{Judgement, UniqueHold},
        FlowError, UniqueScope, CAS_ROUNDS,
    },
    Topology,
};

use super::{prepared::Prepared, Producer};
use crate::{EnqueueError, Enqueued};

/// Where a unique key comes from.
#[derive(Debug, Clone, PartialEq)]
enum KeySource {
    Given(String),
    Arguments(Vec<String>),
}

/// A task's unique key and scope: while it is held, enqueueing the same key for the same task
/// type returns the holder's id with `duplicate: true` instead of a second task.
///
/// ```
/// use jetq_producer::{EnqueueOptions, Unique, UniqueScope};
/// // At most one welcome email per user until it is sent (the default scope, `Active`).
/// let options = EnqueueOptions::new().unique(Unique::key("welcome:user-42"));
/// // At most one report per (team, day) argument pair per hour, whatever happens to it.
/// let period = UniqueScope::period(std::time::Duration::from_secs(3600)).unwrap();
/// let options = EnqueueOptions::new().unique(Unique::args(["team", "day"]).scope(period));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Unique {
    source: KeySource,
    scope: UniqueScope,
}

impl Unique {
    /// An explicit key (1–256 bytes of printable ASCII without spaces), scope
    /// [`UniqueScope::Active`].
    pub fn key(key: impl Into<String>) -> Unique {
        Unique {
            source: KeySource::Given(key.into()),
            scope: UniqueScope::Active,
        }
    }

    /// A key derived from these fields of the task's JSON arguments (`args:<sha-256>`, see
    /// [`jetq_contract::flow::keys::derive_unique_key`]), scope [`UniqueScope::Active`].
    pub fn args<I, S>(fields: I) -> Unique
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Unique {
            source: KeySource::Arguments(fields.into_iter().map(Into::into).collect()),
            scope: UniqueScope::Active,
        }
    }

    /// When the key is released (default [`UniqueScope::Active`]).
    pub fn scope(mut self, scope: UniqueScope) -> Unique {
        self.scope = scope;
        self
    }
}

/// The flow options of one enqueue, boxed in [`crate::EnqueueOptions`] so that options without
/// them stay small.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FlowOptions {
    pub(crate) unique: Option<Unique>,
    pub(crate) limit_key: Option<String>,
}

/// The unique scope of options that carry a unique key (checked before the task is prepared).
pub(crate) fn unique_scope(flow: Option<&FlowOptions>) -> Option<UniqueScope> {
    flow.and_then(|flow| flow.unique.as_ref())
        .map(|unique| unique.scope)
}

/// Adds the flow headers (`Jetq-Unique-Key`, `Jetq-Unique-Scope`, `Jetq-Limit-Key`) of a task
/// being prepared, refusing unusable keys and scopes.
pub(crate) fn add_headers(
    flow: &FlowOptions,
    payload: &[u8],
    headers: &mut HeaderMap,
) -> Result<(), FlowError> {
    if let Some(unique) = &flow.unique {
        let key = match &unique.source {
            KeySource::Given(key) => key.clone(),
            KeySource::Arguments(fields) => {
                let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
                keys::derive_unique_key(payload, &fields)?
            }
        };
        flow::validate_unique_key(&key)?;
        match unique.scope {
            UniqueScope::Period(period) => drop(UniqueScope::period(period)?),
            UniqueScope::Debounce(delay) => drop(UniqueScope::debounce(delay)?),
            _ => {}
        }
        headers.insert(flow::UNIQUE_KEY, key.as_str());
        headers.insert(flow::UNIQUE_SCOPE, unique.scope.as_str());
    }
    if let Some(key) = &flow.limit_key {
        flow::validate_limit_key(key)?;
        headers.insert(flow::LIMIT_KEY, key.as_str());
    }
    Ok(())
}

/// The unique-key bucket, opened (or created, where the producer may provision) on first use.
#[derive(Debug, Clone)]
pub(crate) struct UniqueStore {
    topology: Topology,
    provision: bool,
    store: Arc<tokio::sync::OnceCell<kv::Store>>,
    /// The delayed-task stream is known to exist (checked before the first debounce).
    delayed_ready: Arc<std::sync::atomic::AtomicBool>,
}

impl UniqueStore {
    pub(crate) fn new(topology: Topology, provision: bool) -> Self {
        UniqueStore {
            topology,
            provision,
            store: Arc::new(tokio::sync::OnceCell::new()),
            delayed_ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    async fn open(&self) -> Result<&kv::Store, String> {
        self.store
            .get_or_try_init(|| async {
                let bucket = flow::unique_bucket(self.topology.subjects());
                match self
                    .topology
                    .jetstream()
                    .get_key_value(bucket.clone())
                    .await
                {
                    Ok(store) => Ok(store),
                    Err(_) if self.provision => self
                        .topology
                        .ensure_bucket(flow::unique_bucket_config(&self.topology))
                        .await
                        .map_err(|err| err.to_string()),
                    Err(err) => Err(format!(
                        "bucket {bucket} is missing and this producer may not create it \
                         (run jetq-provision, or start a worker): {err}"
                    )),
                }
            })
            .await
    }
}

impl Producer {
    /// Enqueues a prepared task that carries a unique key: take the key, publish, confirm.
    pub(crate) async fn enqueue_unique(
        &self,
        prepared: Prepared,
        scope: UniqueScope,
    ) -> Result<Enqueued, EnqueueError> {
        let key = prepared
            .extra_headers
            .get(flow::UNIQUE_KEY)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        let failed = |reason: String| EnqueueError::Unique {
            task: prepared.task.to_string(),
            key: key.clone(),
            reason,
        };
        let store = self.unique.open().await.map_err(failed)?.clone();
        let entry = keys::unique_entry(&prepared.queue, &prepared.task, &key);
        if let UniqueScope::Debounce(delay) = scope {
            return self.enqueue_debounced(prepared, delay, store, entry).await;
        }
        let now = flow::micros(SystemTime::now());
        let hold = UniqueHold::pending(&prepared.id, &prepared.queue, &prepared.task, scope, now);
        let mut taken = None;
        for _ in 0..CAS_ROUNDS {
            match store.create(&entry, hold.to_json().into()).await {
                Ok(revision) => {
                    taken = Some(revision);
                    break;
                }
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {}
                Err(err) => return Err(failed(format!("cannot take the key: {err}"))),
            }
            let current = match store.entry(&entry).await {
                Ok(Some(current)) => current,
                // Released between the two reads: try to take it again.
                Ok(None) => continue,
                Err(err) => return Err(failed(format!("cannot read the key's holder: {err}"))),
            };
            if matches!(current.operation, Operation::Delete | Operation::Purge) {
                continue;
            }
            if let Some(holder) = self.live_holder(&current.value, now).await {
                tracing::debug!(key, holder = %holder.task_id, "unique key held: a duplicate");
                return Ok(Enqueued {
                    id: holder.task_id,
                    sequence: holder.sequence.unwrap_or(0),
                    duplicate: true,
                });
            }
            match store
                .update(&entry, hold.to_json().into(), current.revision)
                .await
            {
                Ok(revision) => {
                    taken = Some(revision);
                    break;
                }
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(failed(format!("cannot take the key over: {err}"))),
            }
        }
        let Some(revision) = taken else {
            return Err(failed(format!(
                "the key changed hands {CAS_ROUNDS} times while taking it; try again"
            )));
        };
        let result = self.publish_coalesced(prepared).await;
        match &result {
            Ok(enqueued) => {
                let queued = hold.queued(enqueued.sequence).to_json();
                if let Err(err) = store.update(&entry, queued.into(), revision).await {
                    // The pending hold's lease ends in a minute; the key is then free again.
                    tracing::warn!(key, error = %err, "could not confirm the unique key's hold");
                }
            }
            // The task may be queued: keep the pending hold until its lease ends.
            Err(EnqueueError::Timeout { .. } | EnqueueError::NotConnected { .. }) => {}
            Err(_) => {
                if let Err(err) = store.delete_expect_revision(&entry, Some(revision)).await {
                    tracing::warn!(key, error = %err, "could not release the unique key of a task that was not enqueued; it is free when its lease ends");
                }
            }
        }
        result
    }

    /// The hold in `value` if it still holds the key at `now`; `None` when the key is free
    /// (an unreadable value, a lease or period over, a holder no longer in the task stream).
    async fn live_holder(&self, value: &[u8], now: i64) -> Option<UniqueHold> {
        let holder = UniqueHold::from_json(value).ok()?;
        match holder.judge(now) {
            Judgement::Held => Some(holder),
            Judgement::Free => None,
            Judgement::HeldIfTaskExists(sequence) => self
                .task_in_stream(sequence, &holder.task_id)
                .await
                .then_some(holder),
        }
    }

    /// True if the task stream holds task `id` at `sequence`. A read that fails for another
    /// reason than "no message" counts as present: a key is never taken over on a guess.
    async fn task_in_stream(&self, sequence: u64, id: &str) -> bool {
        let stream = match self
            .js
            .get_stream_no_info(self.subjects.tasks_stream())
            .await
        {
            Ok(stream) => stream,
            Err(_) => return true,
        };
        match stream.get_raw_message(sequence).await {
            Ok(message) => message
                .headers
                .get(jetq_contract::headers::names::MSG_ID)
                .is_none_or(|stored| stored.as_str() == id),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => false,
            Err(err) => {
                tracing::warn!(sequence, error = %err, "could not check the unique key's holder; treating it as present");
                true
            }
        }
    }
}

/// True if any of these tasks carries a unique key.
pub(crate) fn any_unique(tasks: &[crate::RawTask]) -> bool {
    tasks
        .iter()
        .any(|task| unique_scope(task.options.flow.as_deref()).is_some())
}

impl Producer {
    /// `enqueue_many_raw` of tasks some of which carry unique keys: those are enqueued one by
    /// one (each key is taken before its task is published), the others together as usual.
    /// Results in input order.
    pub(crate) async fn enqueue_many_unique(
        &self,
        tasks: Vec<crate::RawTask>,
    ) -> Vec<Result<Enqueued, EnqueueError>> {
        let (unique, plain): (Vec<_>, Vec<_>) = tasks
            .into_iter()
            .enumerate()
            .partition(|(_, task)| unique_scope(task.options.flow.as_deref()).is_some());
        let (plain_indexes, plain): (Vec<usize>, Vec<crate::RawTask>) = plain.into_iter().unzip();
        let mut results: Vec<Option<Result<Enqueued, EnqueueError>>> = (0..plain_indexes.len()
            + unique.len())
            .map(|_| None)
            .collect();
        for (index, result) in plain_indexes
            .into_iter()
            .zip(self.enqueue_many_raw(plain).await)
        {
            results[index] = Some(result);
        }
        let unique_results = futures::future::join_all(
            unique
                .into_iter()
                .map(|(index, task)| async move { (index, self.enqueue_raw(task).await) }),
        )
        .await;
        for (index, result) in unique_results {
            results[index] = Some(result);
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(EnqueueError::Unique {
                        task: String::new(),
                        key: String::new(),
                        reason: "internal error: missing result".into(),
                    })
                })
            })
            .collect()
    }
}

impl Producer {
    /// Debounce (PROTOCOL §11): publish the task as a delayed task due `delay` from now, then
    /// make the key name it unless a later enqueue already did. Earlier tasks of the key stay in
    /// the delayed stream; the worker drops each one the key no longer names.
    async fn enqueue_debounced(
        &self,
        mut prepared: Prepared,
        delay: std::time::Duration,
        store: kv::Store,
        entry: String,
    ) -> Result<Enqueued, EnqueueError> {
        let key = prepared
            .extra_headers
            .get(flow::UNIQUE_KEY)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        let task_name = prepared.task.to_string();
        let failed = |reason: String| EnqueueError::Unique {
            task: task_name.clone(),
            key: key.clone(),
            reason,
        };
        let now = SystemTime::now();
        let due = now + delay;
        let due_second = due
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0);
        prepared.subject = async_nats::Subject::from(self.subjects.delayed(
            due_second,
            &prepared.priority.queue_token(&prepared.queue),
            &prepared.task,
        ));
        prepared.extra_headers.insert(
            jetq_contract::headers::NOT_BEFORE,
            jetq_contract::time::format(due).as_str(),
        );
        let (id, queue, task) = (
            prepared.id.clone(),
            prepared.queue.to_string(),
            prepared.task.to_string(),
        );
        // The first debounce of a producer that may provision makes sure the delayed-task stream
        // exists (as the first delayed enqueue does).
        let ready = &self.unique.delayed_ready;
        if self.unique.provision
            && !ready.load(std::sync::atomic::Ordering::Relaxed)
            && Box::pin(self.ensure_delayed_stream()).await
        {
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let enqueued = Box::pin(self.publish(prepared)).await?;
        let (now, due) = (flow::micros(now), flow::micros(due));
        let hold = UniqueHold::debounced(&id, &queue, &task, enqueued.sequence, now, due);
        for _ in 0..CAS_ROUNDS {
            let current = store
                .entry(&entry)
                .await
                .map_err(|err| failed(format!("cannot read the key: {err}")))?;
            let written = match current {
                Some(current)
                    if !matches!(current.operation, Operation::Delete | Operation::Purge) =>
                {
                    let newer = UniqueHold::from_json(&current.value)
                        .ok()
                        .and_then(|other| flow::parse_micros(&other.taken_at))
                        .is_some_and(|taken| taken > now);
                    if newer {
                        // A later enqueue already named its task: this one is replaced.
                        return Ok(enqueued);
                    }
                    store
                        .update(&entry, hold.to_json().into(), current.revision)
                        .await
                        .map(drop)
                        .map_err(|err| err.kind() == UpdateErrorKind::WrongLastRevision)
                }
                _ => store
                    .create(&entry, hold.to_json().into())
                    .await
                    .map(drop)
                    .map_err(|err| err.kind() == CreateErrorKind::AlreadyExists),
            };
            match written {
                Ok(()) => return Ok(enqueued),
                Err(true) => continue,
                Err(false) => break,
            }
        }
        Err(failed(
            "the task is in the delayed stream but the key could not be pointed at it; it will \
             be dropped as replaced (enqueue again)"
                .into(),
        ))
    }
}
