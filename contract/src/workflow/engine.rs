//! The round trips of batches and chains on `<PREFIX>_BATCHES`, shared by the producer (which
//! creates and closes batches and starts chains) and the worker (which finishes members and
//! links before it acknowledges them). See docs/WORKFLOWS.md for the guarantees.
//!
//! Every write is a compare-and-set; a conflict reads again. Callbacks and chain links are
//! published with deterministic ids (`batch:<id>:on_complete`, `chain:<id>:<index>`), so two
//! processes firing the same callback, or one firing it again after a crash, store it once
//! within the task stream's duplicate window.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_nats::{
    jetstream::{
        self,
        kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
    },
    HeaderMap,
};
use bytes::Bytes;

use super::{
    batch::{self, BatchRecord, BatchSummary, Fire, MemberMarker, MemberOutcome, Which},
    chain::{self, ChainRecord, ChainState},
    fault,
    results::{self, ChordResults},
};
use crate::{
    headers,
    publish::{Outgoing, Publisher},
    Subjects,
};

/// Compare-and-set rounds on one record before a writer gives up (many workers may count
/// members of one batch at once; each round pauses a random 0–4 ms).
pub const CAS_ROUNDS: u32 = 200;

/// A batch or chain operation that could not be done (the bucket unreachable, a write that
/// kept conflicting, a callback that could not be published). The member is then not
/// acknowledged: its redelivery tries again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

fn fail(what: impl std::fmt::Display) -> EngineError {
    EngineError(what.to_string())
}

/// What [`Workflows::create_batch`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The record was created.
    New,
    /// A record in state `enqueuing` was there (an earlier enqueue with this id stopped
    /// half-way): it was replaced, and this enqueue completes the batch.
    TakenOver,
    /// A batch with this id exists (open or closed).
    Exists(Box<BatchRecord>),
}

/// The last record this process wrote per key, with its revision: the next write of the same
/// key tries that revision first and saves a read.
type Cached = Arc<tokio::sync::Mutex<Option<(u64, Vec<u8>)>>>;

/// Batches and chains on one bucket.
#[derive(Clone)]
pub struct Workflows {
    store: kv::Store,
    publisher: Publisher,
    subjects: Subjects,
    duplicate_window: Duration,
    /// One local writer per record at a time (the others of this process wait instead of
    /// conflicting), and its last revision.
    records: Arc<Mutex<HashMap<String, Cached>>>,
    /// Counts waiting to be written, per batch (see [`Workflows::count`]).
    counters: Arc<Mutex<HashMap<String, Arc<Mutex<Pending>>>>>,
    /// Where large member results go (opened on the first one), and the topology to create
    /// it with when this process provisions.
    results: Arc<tokio::sync::OnceCell<ChordResults>>,
    results_topology: Option<(crate::Topology, bool)>,
}

/// Counts of one batch waiting for the write under way.
#[derive(Default)]
struct Pending {
    delta: (i64, i64),
    waiters: Vec<tokio::sync::oneshot::Sender<Result<Option<BatchRecord>, EngineError>>>,
    /// A writer is running: new counts join the next write.
    leading: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflows")
            .field("bucket", &self.store.name)
            .finish_non_exhaustive()
    }
}

impl Workflows {
    /// Batches and chains on `store`, publishing callbacks and links with `publisher` to the
    /// task subjects of `subjects`. `duplicate_window` is the task stream's: a callback whose
    /// firing started longer ago may be stored twice if fired again (logged).
    pub fn new(
        store: kv::Store,
        publisher: Publisher,
        subjects: Subjects,
        duplicate_window: Duration,
    ) -> Self {
        Workflows {
            store,
            publisher,
            subjects,
            duplicate_window,
            records: Arc::default(),
            counters: Arc::default(),
            results: Arc::default(),
            results_topology: None,
        }
    }

    /// Opens the results store (`<PREFIX>_RESULTS`) through `topology`, creating it when
    /// `provision` is true, on the first member result too large for its marker. Without this
    /// the store is opened, never created.
    #[must_use]
    pub fn with_results_store(mut self, topology: crate::Topology, provision: bool) -> Self {
        self.results_topology = Some((topology, provision));
        self
    }

    async fn results_store(&self) -> Result<&ChordResults, EngineError> {
        self.results
            .get_or_try_init(|| async {
                match &self.results_topology {
                    Some((topology, provision)) => {
                        ChordResults::open_or_create(topology, *provision).await
                    }
                    None => ChordResults::open(self.publisher.jetstream(), &self.subjects).await,
                }
                .map_err(fail)
            })
            .await
    }

    /// The bucket.
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    fn slot(&self, key: &str) -> Cached {
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if records.len() > 10_000 {
            records.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        records.entry(key.to_owned()).or_default().clone()
    }

    /// Reads a JSON record; `None` when the key has no value.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(u64, T)>, EngineError> {
        match self.store.entry(key).await {
            Ok(Some(entry)) if entry.operation == Operation::Put => {
                let value = serde_json::from_slice(&entry.value)
                    .map_err(|err| fail(format!("{key} is not a record: {err}")))?;
                Ok(Some((entry.revision, value)))
            }
            Ok(_) => Ok(None),
            Err(err) => Err(fail(format!("cannot read {key}: {err}"))),
        }
    }

    /// Changes the record at `key` by compare-and-set: `change` returns false to write nothing.
    /// Returns the record as stored (changed or not); `None` when there is no record.
    async fn update<T, F>(&self, key: &str, mut change: F) -> Result<Option<T>, EngineError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnMut(&mut T) -> bool,
    {
        let slot = self.slot(key);
        let mut cached = slot.lock().await;
        for round in 0..CAS_ROUNDS {
            let (revision, mut record): (u64, T) = match cached.take() {
                Some((revision, bytes)) => match serde_json::from_slice(&bytes) {
                    Ok(record) => (revision, record),
                    Err(_) => continue,
                },
                None => match self.read(key).await? {
                    Some(found) => found,
                    None => return Ok(None),
                },
            };
            if !change(&mut record) {
                return Ok(Some(record));
            }
            let bytes = serde_json::to_vec(&record).map_err(fail)?;
            match self
                .store
                .update(key, Bytes::from(bytes.clone()), revision)
                .await
            {
                Ok(revision) => {
                    *cached = Some((revision, bytes));
                    return Ok(Some(record));
                }
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                    if round > 2 {
                        let pause = rand::random::<u64>() % 4_000;
                        tokio::time::sleep(Duration::from_micros(pause)).await;
                    }
                }
                Err(err) => return Err(fail(format!("cannot write {key}: {err}"))),
            }
        }
        Err(fail(format!(
            "{key}: gave up after {CAS_ROUNDS} conflicting writes"
        )))
    }

    /// Reads a batch's record.
    pub async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, EngineError> {
        Ok(self
            .read::<BatchRecord>(&batch::record_key(id))
            .await?
            .map(|(_, record)| record))
    }

    /// Creates a batch's record (state `enqueuing`), or takes over one left `enqueuing` by an
    /// enqueue that stopped half-way.
    pub async fn create_batch(&self, record: &BatchRecord) -> Result<Created, EngineError> {
        let key = batch::record_key(&record.id);
        match self.store.create(&key, Bytes::from(record.to_json())).await {
            Ok(_) => return Ok(Created::New),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {}
            Err(err) => return Err(fail(format!("cannot create {key}: {err}"))),
        }
        let Some((revision, existing)) = self.read::<BatchRecord>(&key).await? else {
            return Err(fail(format!("{key} exists and does not: try again")));
        };
        if existing.state != batch::BatchState::Enqueuing {
            return Ok(Created::Exists(Box::new(existing)));
        }
        match self
            .store
            .update(&key, Bytes::from(record.to_json()), revision)
            .await
        {
            Ok(_) => Ok(Created::TakenOver),
            Err(err) => Err(fail(format!("cannot take over {key}: {err}"))),
        }
    }

    /// Sets a batch's state (`open` or `closed`) after its members were published, and fires
    /// its callbacks if its members are already done.
    pub async fn set_state(&self, id: &str, state: batch::BatchState) -> Result<(), EngineError> {
        let key = batch::record_key(id);
        let record = self
            .update(&key, |record: &mut BatchRecord| {
                if record.state == state || record.state == batch::BatchState::Closed {
                    return false;
                }
                record.state = state;
                true
            })
            .await?;
        let record = record.ok_or_else(|| fail(format!("no batch {id}")))?;
        if record.may_be_complete() {
            Box::pin(self.complete(id)).await?;
        }
        Ok(())
    }

    /// Deletes a batch record this enqueue created and could not complete before publishing
    /// anything (its parent refused it), so that the same enqueue can be tried again.
    pub async fn abandon(&self, id: &str) -> Result<(), EngineError> {
        self.store
            .delete(batch::record_key(id))
            .await
            .map_err(|err| fail(format!("cannot delete batch {id}: {err}")))
    }

    /// Adds `members` to an open batch's total (before they are published, so that the batch
    /// cannot complete without them). Refused on a closed batch.
    pub async fn grow(&self, id: &str, members: u64) -> Result<BatchRecord, EngineError> {
        let mut closed = false;
        let record = self
            .update(&batch::record_key(id), |record: &mut BatchRecord| {
                closed = record.state == batch::BatchState::Closed;
                if closed {
                    return false;
                }
                record.total += members;
                true
            })
            .await?
            .ok_or_else(|| fail(format!("no batch {id}")))?;
        if closed {
            return Err(fail(format!(
                "batch {id} is closed: no member can be added"
            )));
        }
        Ok(record)
    }

    /// Records that `member` of `batch` ended with `outcome` (and its result, for a chord), counts
    /// it, and fires the batch's callbacks if it was the last. Call it before acknowledging the
    /// member: after a crash, the member's redelivery calls it again, and a marker already there
    /// with the same outcome counts it again (the counters are a hint: the markers decide).
    pub async fn finish_member(
        &self,
        batch_id: &str,
        member: &str,
        outcome: MemberOutcome,
        result: Option<serde_json::Value>,
    ) -> Result<(), EngineError> {
        self.finish_member_traced(batch_id, member, outcome, result, None)
            .await
    }

    /// [`Workflows::finish_member`], recording in the marker the `traceparent` of the attempt
    /// that finished the member (the callback's span links to it). A result over
    /// [`results::MAX_MARKER_RESULT`] bytes is first stored in `<PREFIX>_RESULTS` (replacing
    /// what an earlier delivery stored) and the marker names it.
    pub async fn finish_member_traced(
        &self,
        batch_id: &str,
        member: &str,
        outcome: MemberOutcome,
        result: Option<serde_json::Value>,
        traceparent: Option<String>,
    ) -> Result<(), EngineError> {
        let key = batch::member_key(batch_id, member);
        let mut marker = MemberMarker::new(outcome, None);
        marker.traceparent = traceparent;
        if let Some(value) = result {
            let json = serde_json::to_vec(&value).map_err(fail)?;
            if json.len() > results::MAX_MARKER_RESULT {
                let name = results::object_name(batch_id, member);
                self.results_store()
                    .await?
                    .put(&name, &json)
                    .await
                    .map_err(fail)?;
                marker.result_ref = Some(name);
            } else {
                marker.result = Some(value);
            }
        }
        // (succeeded, dead) to add to the counters.
        let delta: (i64, i64) = match self.store.create(&key, Bytes::from(marker.to_json())).await {
            Ok(_) => count(outcome),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                match self.read::<MemberMarker>(&key).await {
                    Ok(Some((revision, existing))) => match (existing.outcome, outcome) {
                        // A replayed member that now succeeded.
                        (MemberOutcome::Dead, MemberOutcome::Succeeded) => {
                            self.store
                                .update(&key, Bytes::from(marker.to_json()), revision)
                                .await
                                .map_err(|err| fail(format!("cannot update {key}: {err}")))?;
                            (1, -1)
                        }
                        // A redelivery: counted again (perhaps twice; a hint).
                        (was, now) if was == now => count(outcome),
                        // Succeeded before: it stays succeeded.
                        _ => (0, 0),
                    },
                    Ok(None) => count(outcome),
                    Err(err) => return Err(err),
                }
            }
            Err(err) => return Err(fail(format!("cannot create {key}: {err}"))),
        };
        fault("after_marker");
        let record = self.count(batch_id, delta).await?;
        fault("after_count");
        match record {
            None => {
                tracing::warn!(
                    batch = batch_id,
                    member,
                    "member of a batch with no record (expired or never created): not counted"
                );
                Ok(())
            }
            Some(record) if record.may_be_complete() => Box::pin(self.complete(batch_id)).await,
            Some(_) => Ok(()),
        }
    }

    /// Adds `delta` (succeeded, dead) to a batch's counters and returns the record as written.
    /// Group commit: the members of one batch that finish in this process while a write is
    /// under way are added up and written together by one compare-and-set, so a busy batch
    /// costs one write per round trip, not one per member.
    async fn count(
        &self,
        batch_id: &str,
        delta: (i64, i64),
    ) -> Result<Option<BatchRecord>, EngineError> {
        let counter = {
            let mut counters = self
                .counters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if counters.len() > 10_000 {
                counters.retain(|_, counter| Arc::strong_count(counter) > 1);
            }
            counters.entry(batch_id.to_owned()).or_default().clone()
        };
        let (done, result) = tokio::sync::oneshot::channel();
        let lead = {
            let mut pending = lock(&counter);
            pending.delta.0 += delta.0;
            pending.delta.1 += delta.1;
            pending.waiters.push(done);
            !std::mem::replace(&mut pending.leading, true)
        };
        if lead {
            // Spawned: a caller that stops waiting must not leave the others without a writer.
            let engine = self.clone();
            let key = batch::record_key(batch_id);
            tokio::spawn(async move {
                loop {
                    let (delta, waiters) = {
                        let mut pending = lock(&counter);
                        if pending.waiters.is_empty() {
                            pending.leading = false;
                            break;
                        }
                        (
                            std::mem::take(&mut pending.delta),
                            std::mem::take(&mut pending.waiters),
                        )
                    };
                    let written = engine
                        .update(&key, |record: &mut BatchRecord| {
                            if delta == (0, 0) {
                                return false;
                            }
                            record.succeeded = add(record.succeeded, delta.0);
                            record.dead = add(record.dead, delta.1);
                            true
                        })
                        .await;
                    for waiter in waiters {
                        let _ = waiter.send(written.clone());
                    }
                }
            });
        }
        result
            .await
            .map_err(|_| fail(format!("the count of batch {batch_id} was abandoned")))?
    }

    /// Every marker of a batch: (member id, marker), ordered by member id.
    pub async fn markers(
        &self,
        batch_id: &str,
    ) -> Result<Vec<(String, MemberMarker)>, EngineError> {
        super::listing::markers(&self.store, batch_id).await
    }

    /// Checks a batch whose counters say it may be complete: counts its markers, and if every
    /// member finished, fires `on_complete` (and `on_success` if every member succeeded), then
    /// finishes the batch as a member of its parent.
    pub async fn complete(&self, batch_id: &str) -> Result<(), EngineError> {
        // One check of a batch at a time in this process: listing the markers of a large batch
        // is the costly step, and once a check fired the callbacks the next ones see it in
        // the record and stop there.
        let turn = self.slot(&format!("complete {batch_id}"));
        let _turn = turn.lock().await;
        let Some(record) = self.batch(batch_id).await? else {
            return Ok(());
        };
        if !record.may_be_complete() {
            return Ok(());
        }
        let markers = self.markers(batch_id).await?;
        if (markers.len() as u64) < record.total {
            // Counted twice after a crash: the last member's finish will see them all.
            return Ok(());
        }
        let summary = BatchSummary::from_markers(&record, &markers);
        let links = results::links_header(&markers);
        let all_succeeded = summary.dead == 0;
        self.fire(batch_id, Which::OnComplete, &summary, links.as_deref())
            .await?;
        if all_succeeded {
            self.fire(batch_id, Which::OnSuccess, &summary, links.as_deref())
                .await?;
        }
        if let Some(parent) = &record.parent {
            let outcome = if all_succeeded {
                MemberOutcome::Succeeded
            } else {
                MemberOutcome::Dead
            };
            let member = batch::child_member_id(batch_id);
            fault("before_parent");
            Box::pin(self.finish_member(parent, &member, outcome, None)).await?;
        }
        Ok(())
    }

    /// Fires one callback exactly once: marks it firing (compare-and-set), publishes it with
    /// its deterministic id, marks it done. A batch without this callback only records when
    /// its condition held.
    async fn fire(
        &self,
        batch_id: &str,
        which: Which,
        summary: &BatchSummary,
        links: Option<&str>,
    ) -> Result<(), EngineError> {
        let key = batch::record_key(batch_id);
        let now = crate::time::now();
        let Some(record) = self
            .update(&key, |record: &mut BatchRecord| {
                if record.fire(which).is_some() {
                    return false;
                }
                *record.fire_mut(which) = Some(Fire {
                    started_at: now.clone(),
                    done_at: None,
                });
                true
            })
            .await?
        else {
            return Ok(());
        };
        let Some(fire) = record.fire(which) else {
            return Ok(());
        };
        if fire.done_at.is_some() {
            return Ok(());
        }
        if let Some(callback) = record.callback(which) {
            let started = crate::time::parse(&fire.started_at).unwrap_or_else(SystemTime::now);
            if SystemTime::now()
                .duration_since(started)
                .is_ok_and(|age| age >= self.duplicate_window)
            {
                tracing::warn!(
                    batch = batch_id,
                    callback = which.as_str(),
                    "firing a callback whose first firing began longer ago than the duplicate \
                     window: if that one was stored, the callback runs twice"
                );
            }
            fault("before_callback_publish");
            let mut headers = HeaderMap::new();
            headers.insert(headers::ENQUEUED_AT, crate::time::now().as_str());
            trace_headers(&mut headers, &record.traceparent, &record.tracestate);
            if let Some(links) = links {
                headers.insert(results::LINKS, links);
            }
            let id = batch::callback_id(batch_id, which);
            self.publish(
                &callback.queue,
                &callback.task,
                &id,
                headers,
                callback.body(summary),
            )
            .await?;
            fault("after_callback_publish");
        }
        let done = crate::time::now();
        self.update(&key, |record: &mut BatchRecord| {
            match record.fire_mut(which) {
                Some(fire) if fire.done_at.is_none() => {
                    fire.done_at = Some(done.clone());
                    true
                }
                _ => false,
            }
        })
        .await?;
        Ok(())
    }

    async fn publish(
        &self,
        queue: &str,
        task: &str,
        id: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(), EngineError> {
        let subject = self.subjects.task(queue, task);
        let message = Outgoing::new(subject, id, headers, Bytes::from(body));
        self.publisher
            .publish(&message)
            .await
            .map(|_| ())
            .map_err(|err| fail(format!("cannot enqueue {task} ({id}): {err}")))
    }

    /// Reads a chain's record.
    pub async fn chain(&self, id: &str) -> Result<Option<ChainRecord>, EngineError> {
        Ok(self
            .read::<ChainRecord>(&chain::record_key(id))
            .await?
            .map(|(_, record)| record))
    }

    /// Creates a chain's record (`false` when one with this id exists) and enqueues its first
    /// link.
    pub async fn start_chain(&self, record: &ChainRecord) -> Result<bool, EngineError> {
        let key = chain::record_key(&record.id);
        match self.store.create(&key, Bytes::from(record.to_json())).await {
            Ok(_) => {}
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => return Ok(false),
            Err(err) => return Err(fail(format!("cannot create {key}: {err}"))),
        }
        self.publish_link(record, 0, None).await?;
        Ok(true)
    }

    async fn publish_link(
        &self,
        record: &ChainRecord,
        index: usize,
        previous: Option<&serde_json::Value>,
    ) -> Result<(), EngineError> {
        let Some(link) = record.links.get(index) else {
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        headers.insert(headers::ENQUEUED_AT, crate::time::now().as_str());
        headers.insert(
            super::CHAIN,
            chain::header_value(&record.id, index).as_str(),
        );
        if record.tracks(index) {
            headers.insert(crate::status::TRACK_STATUS, "1");
        }
        trace_headers(&mut headers, &record.traceparent, &record.tracestate);
        let id = chain::link_id(&record.id, index);
        self.publish(
            &link.queue,
            &link.task,
            &id,
            headers,
            record.body(index, previous),
        )
        .await
    }

    /// Link `index` of a chain ended: a success enqueues the next link (with this one's result
    /// if it asks for it) or ends the chain; a dead link stops it there. Call it before
    /// acknowledging the link (a redelivery calls it again: the next link's id deduplicates).
    pub async fn finish_link(
        &self,
        chain_id: &str,
        index: usize,
        outcome: MemberOutcome,
        result: Option<&serde_json::Value>,
    ) -> Result<(), EngineError> {
        let Some(record) = self.chain(chain_id).await? else {
            tracing::warn!(
                chain = chain_id,
                "link of a chain with no record: nothing follows"
            );
            return Ok(());
        };
        let key = chain::record_key(chain_id);
        let last = index + 1 >= record.links.len();
        if outcome == MemberOutcome::Succeeded && !last {
            self.publish_link(&record, index + 1, result).await?;
            fault("after_link_publish");
        }
        self.update(&key, |record: &mut ChainRecord| {
            if record.state != ChainState::Running {
                // A replayed link that now succeeded carries the chain on.
                if !(record.state == ChainState::Failed
                    && record.failed_at == Some(index)
                    && outcome == MemberOutcome::Succeeded)
                {
                    return false;
                }
            }
            match outcome {
                MemberOutcome::Succeeded if last => {
                    record.state = ChainState::Succeeded;
                    record.failed_at = None;
                }
                MemberOutcome::Succeeded => {
                    record.state = ChainState::Running;
                    record.failed_at = None;
                    record.at = record.at.max(index + 1);
                }
                MemberOutcome::Dead => {
                    record.state = ChainState::Failed;
                    record.failed_at = Some(index);
                }
            }
            true
        })
        .await?;
        Ok(())
    }
}

fn trace_headers(headers: &mut HeaderMap, parent: &Option<String>, state: &Option<String>) {
    if let Some(parent) = parent {
        headers.insert(headers::TRACEPARENT, parent.as_str());
        if let Some(state) = state.as_deref().filter(|s| !s.is_empty()) {
            headers.insert(headers::TRACESTATE, state);
        }
    }
}

fn count(outcome: MemberOutcome) -> (i64, i64) {
    match outcome {
        MemberOutcome::Succeeded => (1, 0),
        MemberOutcome::Dead => (0, 1),
    }
}

fn add(counter: u64, delta: i64) -> u64 {
    if delta >= 0 {
        counter.saturating_add(delta.unsigned_abs())
    } else {
        counter.saturating_sub(delta.unsigned_abs())
    }
}

/// Opens (or, where allowed, creates) the workflow bucket.
pub async fn open_bucket(
    topology: &crate::Topology,
    provision: bool,
) -> Result<kv::Store, crate::ProvisionError> {
    if provision {
        topology.ensure_bucket(super::bucket_config(topology)).await
    } else {
        let bucket = super::bucket(topology.subjects());
        topology
            .jetstream()
            .get_key_value(bucket.clone())
            .await
            .map_err(|err| crate::ProvisionError::Bucket {
                bucket,
                source: Box::new(err),
            })
    }
}

/// The duplicate window of the task stream (2 minutes when it cannot be read).
pub async fn duplicate_window(js: &jetstream::Context, subjects: &Subjects) -> Duration {
    match js.get_stream(subjects.tasks_stream()).await {
        Ok(stream) => stream.cached_info().config.duplicate_window,
        Err(_) => Duration::from_secs(120),
    }
}
