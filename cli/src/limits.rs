//! Flow control as an operator sees it (docs/FLOW_CONTROL.md, PROTOCOL.md §11): the limits the
//! workers registered, their live state in `<PREFIX>_LIMITS` (rate buckets, running slots,
//! tasks waiting on a reservation) and the unique keys held in `<PREFIX>_UNIQUE`; and releasing
//! a stuck entry by hand (`jetq limits`, `jetq limits release <entry>`).

use std::time::SystemTime;

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;
use jetq_contract::{
    flow::{
        self,
        concurrency::Slots,
        rate::{RateLimit, RateReservation, RateState},
        unique::UniqueHold,
        LimitsConfig,
    },
    status::id_from_key,
};
use serde::Serialize;

use crate::{admin::Admin, error::AdminError};

/// Most entries of each bucket read for one listing.
pub const MAX_ENTRIES: usize = 10_000;

/// Everything `jetq limits` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LimitsOverview {
    /// The limits bucket exists.
    pub limits_bucket: bool,
    /// The unique-key bucket exists.
    pub unique_bucket: bool,
    /// The limits each task type's workers registered.
    pub configured: Vec<LimitsConfig>,
    /// Rate buckets in use.
    pub rates: Vec<RateBucket>,
    /// Concurrency entries with their live holders.
    pub concurrency: Vec<ConcurrencySlots>,
    /// Unique keys held.
    pub unique: Vec<UniqueKeyHeld>,
}

/// One rate bucket (`rate.<queue>.<task>[.<key>]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateBucket {
    /// The entry's key, as `jetq limits release` takes it.
    pub entry: String,
    /// The queue.
    pub queue: String,
    /// The task type.
    pub task: String,
    /// The limit key of a per-key bucket.
    pub limit_key: Option<String>,
    /// Milliseconds of tokens reserved ahead of now (0: tokens are free now).
    pub reserved_ahead_ms: i64,
    /// When the next task of this bucket may start (the protocol's timestamp form; now when a
    /// token is free). Computed with the registered rate and burst; without them (no `conf.`
    /// entry), the bucket's theoretical arrival time.
    pub next_free_at: String,
    /// Tasks handed back until their reserved token (reservations still in the future).
    pub waiting: usize,
}

/// One concurrency entry (`conc.<queue>.<task>[.<key>]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConcurrencySlots {
    /// The entry's key.
    pub entry: String,
    /// The queue.
    pub queue: String,
    /// The task type.
    pub task: String,
    /// The limit key of a per-key limit.
    pub limit_key: Option<String>,
    /// The running tasks holding a live slot: (task stream sequence, task id, lease end).
    pub running: Vec<(u64, String, String)>,
    /// Tasks handed back because every slot was taken, not yet back (approximate: one that
    /// found a slot early is counted until its expected return).
    pub waiting: usize,
}

/// One unique key held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UniqueKeyHeld {
    /// The entry's key.
    pub entry: String,
    /// The queue.
    pub queue: String,
    /// The task type.
    pub task: String,
    /// The unique key.
    pub key: String,
    /// The hold as stored (holder task id, scope, state, sequence, times).
    pub hold: UniqueHold,
    /// Whether the hold still holds by its own times (a `queued` hold also needs its task in
    /// the stream, which this listing does not check).
    pub expired: bool,
}

/// `<kind>.<queue>.<task>[.<encoded key>]` split.
fn split_entry(entry: &str) -> Option<(&str, &str, &str, Option<String>)> {
    let mut parts = entry.splitn(4, '.');
    let kind = parts.next()?;
    let queue = parts.next()?;
    let task = parts.next()?;
    let key = parts.next().and_then(id_from_key);
    Some((kind, queue, task, key))
}

async fn open(admin: &Admin, bucket: &str) -> Result<Option<kv::Store>, AdminError> {
    match admin.jetstream().get_key_value(bucket).await {
        Ok(store) => Ok(Some(store)),
        Err(err) if err.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket => {
            Ok(None)
        }
        Err(err) => Err(AdminError::Nats {
            action: format!("cannot open bucket {bucket}"),
            source: Box::new(err),
        }),
    }
}

/// Every live entry of `store` (key, value), at most [`MAX_ENTRIES`].
async fn entries(store: &kv::Store, bucket: &str) -> Result<Vec<(String, Vec<u8>)>, AdminError> {
    let nats = |action: String| {
        move |err: Box<dyn std::error::Error + Send + Sync>| AdminError::Nats {
            action,
            source: err,
        }
    };
    let mut keys = store
        .keys()
        .await
        .map_err(|e| nats(format!("cannot list bucket {bucket}"))(Box::new(e)))?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| nats(format!("cannot list bucket {bucket}"))(Box::new(e)))?;
        if let Ok(Some(entry)) = store.entry(&key).await {
            if !matches!(entry.operation, Operation::Delete | Operation::Purge) {
                out.push((key, entry.value.to_vec()));
            }
        }
        if out.len() >= MAX_ENTRIES {
            break;
        }
    }
    out.sort();
    Ok(out)
}

impl Admin {
    /// The flow-control state: configured limits, rate buckets, slots, unique keys.
    pub async fn limits(&self) -> Result<LimitsOverview, AdminError> {
        let now = flow::micros(SystemTime::now());
        let mut overview = LimitsOverview::default();
        let limits_bucket = flow::limits_bucket(self.subjects());
        if let Some(store) = open(self, &limits_bucket).await? {
            overview.limits_bucket = true;
            let all = entries(&store, &limits_bucket).await?;
            let waiting: Vec<flow::concurrency::Waiting> = all
                .iter()
                .filter(|(key, _)| key.starts_with("wait."))
                .filter_map(|(_, value)| serde_json::from_slice(value).ok())
                .filter(|w: &flow::concurrency::Waiting| {
                    flow::parse_micros(&w.until).is_some_and(|until| until > now)
                })
                .collect();
            let reservations: Vec<RateReservation> = all
                .iter()
                .filter(|(key, _)| key.starts_with("resv."))
                .filter_map(|(_, value)| serde_json::from_slice(value).ok())
                .filter(|r: &RateReservation| flow::parse_micros(&r.at).is_some_and(|at| at > now))
                .collect();
            for (key, value) in &all {
                let Some((kind, queue, task, limit_key)) = split_entry(key) else {
                    continue;
                };
                match kind {
                    "conf" => {
                        if let Ok(config) = serde_json::from_slice::<LimitsConfig>(value) {
                            overview.configured.push(config);
                        }
                    }
                    "rate" => {
                        let tat = serde_json::from_slice::<RateState>(value)
                            .ok()
                            .and_then(|state| flow::parse_micros(&state.tat))
                            .unwrap_or(now);
                        // When the next token comes, as a worker would reserve it (the
                        // registered limit; `conf.` entries sort before `rate.` ones).
                        let next_free = overview
                            .configured
                            .iter()
                            .find(|c| c.queue == queue && c.task == task)
                            .and_then(|c| RateLimit::new(c.rate?, c.burst.unwrap_or(1)).ok())
                            .map_or(now.max(tat), |limit| limit.reserve(Some(tat), now).start);
                        overview.rates.push(RateBucket {
                            entry: key.clone(),
                            queue: queue.to_owned(),
                            task: task.to_owned(),
                            limit_key,
                            reserved_ahead_ms: (tat - now).max(0) / 1000,
                            next_free_at: flow::format_micros(next_free),
                            waiting: reservations.iter().filter(|r| r.limit == *key).count(),
                        });
                    }
                    "conc" => {
                        let slots = Slots::from_json(value);
                        overview.concurrency.push(ConcurrencySlots {
                            entry: key.clone(),
                            queue: queue.to_owned(),
                            task: task.to_owned(),
                            limit_key,
                            running: slots
                                .live(now)
                                .map(|h| (h.sequence, h.task_id.clone(), h.until.clone()))
                                .collect(),
                            waiting: waiting.iter().filter(|w| w.limit == *key).count(),
                        });
                    }
                    _ => {}
                }
            }
        }
        let unique_bucket = flow::unique_bucket(self.subjects());
        if let Some(store) = open(self, &unique_bucket).await? {
            overview.unique_bucket = true;
            for (key, value) in entries(&store, &unique_bucket).await? {
                let Ok(hold) = UniqueHold::from_json(&value) else {
                    continue;
                };
                let Some((queue, task, encoded)) = key.splitn(3, '.').collect_tuple3() else {
                    continue;
                };
                let expired = hold.judge(now) == flow::unique::Judgement::Free;
                overview.unique.push(UniqueKeyHeld {
                    entry: key.clone(),
                    queue: queue.to_owned(),
                    task: task.to_owned(),
                    key: id_from_key(encoded).unwrap_or_else(|| encoded.to_owned()),
                    hold,
                    expired,
                });
            }
        }
        Ok(overview)
    }

    /// Every unique-key hold whose key is `key`, in any queue and task type: what a search by
    /// key finds (the console's task search). Reads the whole unique-key listing, as
    /// [`Admin::limits`] does: a search, not a page view.
    pub async fn holders_of_unique_key(&self, key: &str) -> Result<Vec<UniqueKeyHeld>, AdminError> {
        let overview = self.limits().await?;
        Ok(overview
            .unique
            .into_iter()
            .filter(|held| held.key == key)
            .collect())
    }

    /// Deletes the flow-control entries that no longer hold anything (see
    /// [`LimitsAction::Prune`]).
    pub async fn prune_limits(&self) -> Result<Pruned, AdminError> {
        /// A reservation or waiting note this long past is left by a task that never came back.
        const STALE_MICROS: i64 = 3_600_000_000;
        let now = flow::micros(SystemTime::now());
        let mut pruned = Pruned::default();
        let unique_bucket = flow::unique_bucket(self.subjects());
        if let Some(store) = open(self, &unique_bucket).await? {
            for (key, value) in entries(&store, &unique_bucket).await? {
                let free = match UniqueHold::from_json(&value) {
                    Err(_) => true,
                    Ok(hold) => match hold.judge(now) {
                        flow::unique::Judgement::Held => false,
                        flow::unique::Judgement::Free => true,
                        flow::unique::Judgement::HeldIfTaskExists(sequence) => {
                            !self.task_in_stream(sequence, &hold.task_id).await?
                        }
                    },
                };
                if free && delete_unchanged(&store, &key, &value).await? {
                    pruned.unique.push(key);
                }
            }
        }
        let limits_bucket = flow::limits_bucket(self.subjects());
        if let Some(store) = open(self, &limits_bucket).await? {
            for (key, value) in entries(&store, &limits_bucket).await? {
                let stale = |text: Option<String>| {
                    text.and_then(|t| flow::parse_micros(&t))
                        .is_none_or(|at| at < now - STALE_MICROS)
                };
                let idle = match key.split('.').next() {
                    Some("conc") => Slots::from_json(&value).live(now).next().is_none(),
                    // A bucket whose tokens are all back is the same as no entry.
                    Some("rate") => serde_json::from_slice::<RateState>(&value)
                        .ok()
                        .and_then(|state| flow::parse_micros(&state.tat))
                        .is_none_or(|tat| tat < now - STALE_MICROS),
                    Some("resv") => stale(
                        serde_json::from_slice::<RateReservation>(&value)
                            .ok()
                            .map(|r| r.at),
                    ),
                    Some("wait") => stale(
                        serde_json::from_slice::<flow::concurrency::Waiting>(&value)
                            .ok()
                            .map(|w| w.until),
                    ),
                    _ => false,
                };
                if idle && delete_unchanged(&store, &key, &value).await? {
                    pruned.limits.push(key);
                }
            }
        }
        Ok(pruned)
    }

    /// True if the task stream holds task `id` at `sequence` (as a producer checks a holder).
    async fn task_in_stream(&self, sequence: u64, id: &str) -> Result<bool, AdminError> {
        let stream = self.tasks_stream().await?;
        match stream.get_raw_message(sequence).await {
            Ok(message) => Ok(message
                .headers
                .get(jetq_contract::headers::names::MSG_ID)
                .is_none_or(|stored| stored.as_str() == id)),
            Err(err)
                if err.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(false)
            }
            Err(err) => Err(AdminError::Nats {
                action: format!("cannot read task stream message {sequence}"),
                source: Box::new(err),
            }),
        }
    }

    /// Deletes one flow-control entry by hand: a unique key (`<queue>.<task>.<key>` as listed)
    /// or a limits entry (`rate.…`, `conc.…`, `resv.…`). Returns the bucket it was in.
    pub async fn release_limit(&self, entry: &str) -> Result<String, AdminError> {
        let limits = ["rate.", "conc.", "resv.", "conf.", "wait."]
            .iter()
            .any(|prefix| entry.starts_with(prefix));
        let bucket = if limits {
            flow::limits_bucket(self.subjects())
        } else {
            flow::unique_bucket(self.subjects())
        };
        let store = open(self, &bucket)
            .await?
            .ok_or_else(|| AdminError::NotFound {
                what: format!("bucket {bucket}"),
                hint: Some("nothing uses flow control on this installation yet".into()),
            })?;
        let current = store.entry(entry).await.map_err(|err| AdminError::Nats {
            action: format!("cannot read {entry} in {bucket}"),
            source: Box::new(err),
        })?;
        match current {
            Some(current) if !matches!(current.operation, Operation::Delete | Operation::Purge) => {
                store
                    .delete_expect_revision(entry, Some(current.revision))
                    .await
                    .map_err(|err| AdminError::Nats {
                        action: format!(
                            "cannot release {entry} in {bucket} (it changed meanwhile?)"
                        ),
                        source: Box::new(err),
                    })?;
                Ok(bucket)
            }
            _ => Err(AdminError::NotFound {
                what: format!("entry {entry} in {bucket}"),
                hint: Some("`jetq limits` lists the entries".into()),
            }),
        }
    }
}

/// Deletes `key` if it still holds `value` (a delete on the revision just read); false if it
/// changed meanwhile (a live writer won).
async fn delete_unchanged(store: &kv::Store, key: &str, value: &[u8]) -> Result<bool, AdminError> {
    let current = store.entry(key).await.map_err(|err| AdminError::Nats {
        action: format!("cannot read {key}"),
        source: Box::new(err),
    })?;
    match current {
        Some(entry)
            if !matches!(entry.operation, Operation::Delete | Operation::Purge)
                && entry.value.as_ref() == value =>
        {
            Ok(store
                .delete_expect_revision(key, Some(entry.revision))
                .await
                .is_ok())
        }
        _ => Ok(false),
    }
}

trait Tuple3<'a> {
    fn collect_tuple3(self) -> Option<(&'a str, &'a str, &'a str)>;
}

impl<'a, I: Iterator<Item = &'a str>> Tuple3<'a> for I {
    fn collect_tuple3(mut self) -> Option<(&'a str, &'a str, &'a str)> {
        Some((self.next()?, self.next()?, self.next()?))
    }
}

/// The overview as text tables.
pub fn render(overview: &LimitsOverview) -> String {
    let mut out = String::new();
    if !overview.limits_bucket && !overview.unique_bucket {
        return "no flow control in use (neither limits nor unique keys)\n".to_owned();
    }
    out.push_str("LIMITS (as the workers registered them)\n");
    for c in &overview.configured {
        let rate = c
            .rate
            .map(|r| format!("{r}/s burst {}", c.burst.unwrap_or(1)))
            .unwrap_or_else(|| "-".into());
        let conc = c
            .concurrency
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "  {}.{}  rate {rate}{}  concurrency {conc}{}\n",
            c.queue,
            c.task,
            if c.rate_per_key { " per key" } else { "" },
            if c.concurrency_per_key {
                " per key"
            } else {
                ""
            },
        ));
    }
    out.push_str("RATE BUCKETS\n");
    for r in &overview.rates {
        out.push_str(&format!(
            "  {}  reserved ahead {} ms  next free {}  waiting {}\n",
            r.entry, r.reserved_ahead_ms, r.next_free_at, r.waiting
        ));
    }
    out.push_str("CONCURRENCY\n");
    for c in &overview.concurrency {
        let running: Vec<String> = c
            .running
            .iter()
            .map(|(seq, id, _)| format!("{id} (seq {seq})"))
            .collect();
        out.push_str(&format!(
            "  {}  running {}: {}  waiting {}\n",
            c.entry,
            c.running.len(),
            running.join(", "),
            c.waiting
        ));
    }
    out.push_str("UNIQUE KEYS\n");
    for u in &overview.unique {
        out.push_str(&format!(
            "  {}  key {}  held by {}  scope {}  {}{}\n",
            u.entry,
            u.key,
            u.hold.task_id,
            u.hold.scope,
            match u.hold.sequence {
                Some(seq) => format!("queued at seq {seq}"),
                None => "pending".to_owned(),
            },
            if u.expired { "  (expired)" } else { "" }
        ));
    }
    out
}

/// The arguments of `jetq limits` (registered by the `jetq` binary).
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LimitsArgs {
    /// What to do instead of listing.
    #[command(subcommand)]
    pub action: Option<LimitsAction>,
}

/// `jetq limits` actions.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LimitsAction {
    /// Delete one entry by hand: a unique key as listed (`<queue>.<task>.<key>`, the task
    /// keeps running; the next enqueue with the key is a new task) or a limits entry
    /// (`rate.…` resets a rate bucket, `conc.…` frees every slot of a limit, `resv.<seq>`
    /// drops a waiting task's reservation).
    Release {
        /// The entry, as `jetq limits` lists it.
        entry: String,
    },
    /// Delete the entries that no longer hold anything: unique keys whose lease or period is
    /// over or whose task left the task stream, slot entries with no live lease, full rate
    /// buckets, reservations and waiting notes long past. Each is deleted only if unchanged
    /// since it was read, so a live writer always wins.
    Prune,
}

/// What `jetq limits prune` deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pruned {
    /// The unique keys deleted (as listed).
    pub unique: Vec<String>,
    /// The limits entries deleted.
    pub limits: Vec<String>,
}

/// What `jetq limits release` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Released {
    /// The entry deleted.
    pub released: String,
    /// The bucket it was in.
    pub bucket: String,
}

/// Releases one entry by hand (`jetq limits release`, the dashboard's Release button).
pub async fn release(admin: &Admin, entry: &str) -> Result<Released, AdminError> {
    let bucket = admin.release_limit(entry).await?;
    Ok(Released {
        released: entry.to_owned(),
        bucket,
    })
}

/// Runs `jetq limits` (list, or release) and prints the result as text or JSON.
pub async fn run(admin: &Admin, args: &LimitsArgs, json: bool) -> Result<(), AdminError> {
    let text = match &args.action {
        None => {
            let overview = admin.limits().await?;
            if json {
                serde_json::to_string_pretty(&overview)
            } else {
                Ok(render(&overview))
            }
        }
        Some(LimitsAction::Prune) => {
            let pruned = admin.prune_limits().await?;
            if json {
                serde_json::to_string_pretty(&pruned)
            } else {
                Ok(format!(
                    "pruned {} unique key(s) and {} limits entr(ies)\n",
                    pruned.unique.len(),
                    pruned.limits.len()
                ))
            }
        }
        Some(LimitsAction::Release { entry }) => {
            let released = release(admin, entry).await?;
            if json {
                serde_json::to_string_pretty(&released)
            } else {
                Ok(format!(
                    "released {} from {}\n",
                    released.released, released.bucket
                ))
            }
        }
    };
    let text = text.map_err(|err| AdminError::Invalid(format!("cannot print JSON: {err}")))?;
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = std::io::Write::write_all(&mut out, text.as_bytes());
    if json {
        let _ = std::io::Write::write_all(&mut out, b"\n");
    }
    Ok(())
}
