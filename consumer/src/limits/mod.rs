//! Flow control on the worker side (PROTOCOL §11, docs/FLOW_CONTROL.md): rate and concurrency
//! limits registered per task type, and the release of unique keys.
//!
//! Before a task of a limited type runs, the worker takes a concurrency slot and a rate token
//! in the `<PREFIX>_LIMITS` bucket (compare-and-set writes shared by every worker of every
//! pod). A task over a limit is handed back with a delay — recorded as a hand-back, so waiting
//! never uses up an attempt. Tasks of types without limits and without a unique key never
//! reach this module: the check is one map lookup and one header lookup.

mod locks;
mod metrics;
mod rate;
mod slots;
mod unique;

use std::{collections::HashMap, time::Duration};

use async_nats::{jetstream::kv, HeaderMap};
use jetq_contract::{
    flow::{self, unique::ReleaseAt, ConcurrencyLimit, FlowError, RateLimit},
    Topology,
};

pub(crate) use self::unique::UniqueKeys;

/// The limits of one task type: a rate limit, a concurrency limit, or both.
///
/// ```
/// use jetq_consumer::{ConcurrencyLimit, Limits, RateLimit};
/// // send_email: at most 14 per second across every pod, 14 at once after a quiet time.
/// let email = Limits::new().rate(RateLimit::new(14.0, 14).unwrap());
/// // export_csv: at most 1 running per user (`EnqueueOptions::limit_key`), 3 per type.
/// let export = Limits::new().concurrency(ConcurrencyLimit::new(1).unwrap().per_key());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    rate: Option<RateLimit>,
    concurrency: Option<ConcurrencyLimit>,
}

impl Limits {
    /// No limits.
    pub fn new() -> Self {
        Limits::default()
    }

    /// A rate limit (per type, or per limit key with [`RateLimit::per_key`]).
    pub fn rate(mut self, rate: RateLimit) -> Self {
        self.rate = Some(rate);
        self
    }

    /// A concurrency limit (per type, or per limit key with [`ConcurrencyLimit::per_key`]).
    pub fn concurrency(mut self, concurrency: ConcurrencyLimit) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// The rate limit, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate
    }

    /// The concurrency limit, if any.
    pub fn concurrency_limit(&self) -> Option<ConcurrencyLimit> {
        self.concurrency
    }

    fn is_empty(&self) -> bool {
        self.rate.is_none() && self.concurrency.is_none()
    }
}

/// The limits of every limited type, by queue then task.
pub(crate) type LimitTable = HashMap<String, HashMap<String, Limits>>;

/// A delivery as flow control sees it.
pub(crate) struct FlowTask<'a> {
    pub(crate) queue: &'a str,
    pub(crate) task: &'a str,
    pub(crate) id: &'a str,
    pub(crate) sequence: u64,
    pub(crate) delivered: u64,
    pub(crate) headers: &'a HeaderMap,
}

impl FlowTask<'_> {
    fn limit_key(&self) -> Option<&str> {
        self.headers
            .get(flow::names::LIMIT_KEY)
            .map(|value| value.as_str())
            .filter(|key| flow::limit_key_header_ok(key))
    }
}

/// Whether a delivery may run now.
pub(crate) enum Admission {
    /// Run it; the permit holds its slot (renewed while it runs) until [`FlowControl::settle`].
    Run(Permit),
    /// Over a limit: hand it back, redelivered after this delay.
    Wait(Duration),
    /// A debounced task a later enqueue replaced: acknowledge it without running it.
    Replaced,
}

/// Rate and concurrency limits, and unique keys, for one worker.
pub(crate) struct FlowControl {
    limits: LimitTable,
    store: Option<kv::Store>,
    unique: UniqueKeys,
    /// A slot's lease: the queue's `ack_wait`, renewed at each third of it.
    lease: Duration,
    /// One local writer per entry at a time (see `locks.rs`).
    entry_locks: locks::EntryLocks,
    /// Waits and debounce drops (see `metrics.rs`).
    metrics: metrics::FlowMetrics,
}

impl FlowControl {
    /// Opens the limits bucket (created where the worker provisions) when any type is limited.
    pub(crate) async fn new(
        topology: &Topology,
        limits: LimitTable,
        provision: bool,
        lease: Duration,
        meter: &opentelemetry::metrics::Meter,
    ) -> Result<FlowControl, crate::WorkerError> {
        let any = limits
            .values()
            .flat_map(HashMap::values)
            .any(|l| !l.is_empty());
        let store = if !any {
            None
        } else if provision {
            Some(
                topology
                    .ensure_bucket(flow::limits_bucket_config(topology))
                    .await?,
            )
        } else {
            let bucket = flow::limits_bucket(topology.subjects());
            let (queue, task) = limits
                .iter()
                .flat_map(|(queue, tasks)| tasks.keys().map(move |task| (queue, task)))
                .next()
                .map(|(queue, task)| (queue.clone(), task.clone()))
                .unwrap_or_default();
            Some(
                topology
                    .jetstream()
                    .get_key_value(bucket.clone())
                    .await
                    .map_err(|err| FlowError::LimitsBucketUnavailable {
                        bucket,
                        queue,
                        task,
                        reason: err.to_string(),
                    })?,
            )
        };
        if let Some(store) = &store {
            publish_configs(store, &limits).await;
        }
        Ok(FlowControl {
            limits,
            store,
            unique: UniqueKeys::new(topology.clone()),
            lease,
            entry_locks: locks::EntryLocks::new(),
            metrics: metrics::FlowMetrics::new(meter),
        })
    }

    /// True when a delivery needs flow control: its type is limited or it holds a unique key.
    /// The cost for every other task: a lookup in an empty map and one header lookup.
    pub(crate) fn applies(&self, queue: &str, task: &str, headers: &HeaderMap) -> bool {
        self.limits_of(queue, task).is_some() || headers.get(flow::names::UNIQUE_KEY).is_some()
    }

    /// True when a task's end must release something (a unique key of scope `active`).
    pub(crate) fn releases_at_end(&self, headers: &HeaderMap) -> bool {
        unique::release_point(headers) == Some(ReleaseAt::End)
    }

    /// The limits of a task type: its own, else its queue's catch-all's
    /// ([`ANY_TASK`](crate::ANY_TASK), each type of the queue limited apart).
    fn limits_of(&self, queue: &str, task: &str) -> Option<&Limits> {
        if self.limits.is_empty() {
            return None;
        }
        let tasks = self.limits.get(queue)?;
        tasks
            .get(task)
            .or_else(|| tasks.get(crate::ANY_TASK))
            .filter(|l| !l.is_empty())
    }

    /// Takes the delivery's slot and token, or says how long it must wait.
    pub(crate) async fn admit(&self, task: FlowTask<'_>) -> Admission {
        let release = unique::release_point(task.headers);
        // A debounced task a later enqueue replaced is dropped before it takes a slot or a
        // token it would waste.
        if release == Some(ReleaseAt::StartIfLatest) && self.unique.replaced(&task).await {
            self.metrics.replaced(task.queue, task.task);
            return Admission::Replaced;
        }
        let mut permit = Permit::default();
        if let (Some(limits), Some(store)) = (self.limits_of(task.queue, task.task), &self.store) {
            if let Some(concurrency) = limits.concurrency {
                let key = task.limit_key().filter(|_| concurrency.is_per_key());
                let entry = flow::keys::concurrency_entry(task.queue, task.task, key);
                match slots::acquire(
                    store,
                    &entry,
                    concurrency,
                    &task,
                    self.lease,
                    &self.entry_locks,
                )
                .await
                {
                    slots::Taken::Yes => {
                        permit.slot = Some(Box::new(slots::HeldSlot::renewing(
                            store.clone(),
                            entry,
                            concurrency,
                            task.sequence,
                            task.id.to_owned(),
                            self.lease,
                            self.entry_locks.clone(),
                        )));
                    }
                    slots::Taken::No { retry_in } => {
                        self.metrics.waited(task.queue, task.task, "concurrency");
                        slots::note_waiting(store, &entry, task.sequence, retry_in).await;
                        return Admission::Wait(retry_in);
                    }
                }
            }
            if let Some(rate) = limits.rate {
                let key = task.limit_key().filter(|_| rate.is_per_key());
                let entry = flow::keys::rate_entry(task.queue, task.task, key);
                if let Some(wait) = rate::take(store, &entry, rate, &task, &self.entry_locks).await
                {
                    // Waiting for a token must not hold a slot someone else could use.
                    permit.release().await;
                    self.metrics.waited(task.queue, task.task, "rate");
                    return Admission::Wait(wait);
                }
            }
        }
        if matches!(release, Some(ReleaseAt::Start | ReleaseAt::StartIfLatest)) {
            self.unique.release(&task).await;
        }
        Admission::Run(permit)
    }

    /// After the outcome: frees the slot, and releases an `active` unique key if the task
    /// `ended` (succeeded, dead-lettered, cancelled).
    pub(crate) async fn settle(&self, permit: Option<&Permit>, ended: bool, task: FlowTask<'_>) {
        if let Some(permit) = permit {
            permit.release().await;
        }
        if ended && unique::release_point(task.headers) == Some(ReleaseAt::End) {
            self.unique.release(&task).await;
        }
    }
}

/// What a running task holds: its concurrency slot (renewed in the background).
#[derive(Default)]
pub(crate) struct Permit {
    slot: Option<Box<slots::HeldSlot>>,
}

impl Permit {
    /// Frees the slot (a failure leaves it to its lease).
    async fn release(&self) {
        if let Some(slot) = &self.slot {
            slot.release().await;
        }
    }
}

/// Writes each limited type's limits under `conf.<queue>.<task>` for operators (best effort).
async fn publish_configs(store: &kv::Store, limits: &LimitTable) {
    for (queue, tasks) in limits {
        for (task, type_limits) in tasks {
            let config =
                flow::LimitsConfig::new(queue, task, type_limits.rate, type_limits.concurrency);
            let written = match serde_json::to_vec(&config) {
                Ok(bytes) => store
                    .put(config.entry(), bytes.into())
                    .await
                    .err()
                    .map(|e| e.to_string()),
                Err(err) => Some(err.to_string()),
            };
            if let Some(err) = written {
                tracing::warn!(queue, task, error = %err, "limits not published for operators");
            }
        }
    }
}

/// Builds the limit table from the builder's registrations, refusing limits of types this
/// worker has no handler for.
pub(crate) fn table(
    limits: &[(String, String, Limits)],
    has_handler: impl Fn(&str, &str) -> bool,
) -> Result<LimitTable, FlowError> {
    let mut table = LimitTable::new();
    for (queue, task, type_limits) in limits {
        if !has_handler(queue, task) {
            return Err(FlowError::LimitWithoutHandler {
                queue: queue.clone(),
                task: task.clone(),
            });
        }
        table
            .entry(queue.clone())
            .or_default()
            .insert(task.clone(), *type_limits);
    }
    Ok(table)
}

/// The delay before a task that found every slot taken comes back: growing with its
/// deliveries (200 ms × 1.5ⁿ, at most the lease), never past the earliest lease's end, with
/// ±25 % jitter so waiting tasks do not return together.
fn slot_wait(delivered: u64, earliest_end_in: Duration, lease: Duration) -> Duration {
    let exponent = i32::try_from(delivered.saturating_sub(1).min(30)).unwrap_or(30);
    let backoff = Duration::from_millis(200).mul_f64(1.5f64.powi(exponent));
    let base = backoff
        .min(lease)
        .min(earliest_end_in.max(Duration::from_millis(50)));
    base.mul_f64(rand::random_range(0.75..1.25))
}
