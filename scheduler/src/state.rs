//! Scheduler state in a KV bucket: one monotonic watermark per key, advanced with
//! compare-and-set so concurrent replicas never move it backwards.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
    stream::StorageType,
};
use chrono::{DateTime, SecondsFormat, Utc};
use jetq_contract::{ProvisionError, Subjects, Topology};

use crate::error::StateError;

/// A value kept as a watermark: totally ordered, with a stable text form.
pub(crate) trait Mark: Ord + Copy + Send + Sync {
    fn encode(&self) -> String;
    fn decode(text: &str) -> Option<Self>;
}

impl Mark for DateTime<Utc> {
    fn encode(&self) -> String {
        self.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
    fn decode(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

impl Mark for u64 {
    fn encode(&self) -> String {
        self.to_string()
    }
    fn decode(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// The state key of a schedule.
pub(crate) fn schedule_key(name: &str) -> String {
    format!("schedule.{name}")
}

/// The state key of the delayed-task release watermark (last unix second released).
pub(crate) const RELEASED_KEY: &str = "delayed.released";

/// Opens the scheduler's existing state bucket (for a scheduler that does not provision).
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<kv::Store, ProvisionError> {
    let bucket = subjects.scheduler_bucket();
    js.get_key_value(&bucket)
        .await
        .map_err(|err| ProvisionError::Missing {
            name: format!("key-value bucket {bucket}"),
            source: Box::new(err),
        })
}

/// Creates the scheduler's state bucket if it is missing and opens it (an existing one is
/// verified or updated as the topology says).
pub(crate) async fn ensure_bucket(topology: &Topology) -> Result<kv::Store, ProvisionError> {
    topology
        .ensure_bucket(kv::Config {
            bucket: topology.subjects().scheduler_bucket(),
            description: "jetq scheduler: last fire of each schedule, last released second".into(),
            history: 1,
            storage: StorageType::File,
            num_replicas: topology.settings().stream_replicas,
            ..Default::default()
        })
        .await
}

/// Watermarks in the state bucket.
#[derive(Clone)]
pub(crate) struct State {
    kv: kv::Store,
}

impl State {
    pub(crate) fn new(kv: kv::Store) -> Self {
        State { kv }
    }

    /// The state bucket.
    pub(crate) fn store(&self) -> &kv::Store {
        &self.kv
    }

    /// The watermark under `key` and its revision, if set (an undecodable value is `None`).
    async fn read<T: Mark>(&self, key: &str) -> Result<Option<(Option<T>, u64)>, StateError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|err| StateError::new(key, err))?;
        Ok(entry.and_then(|entry| match entry.operation {
            Operation::Put => {
                let value = std::str::from_utf8(&entry.value).ok().and_then(T::decode);
                Some((value, entry.revision))
            }
            Operation::Delete | Operation::Purge => None,
        }))
    }

    /// The watermark under `key`.
    pub(crate) async fn load<T: Mark>(&self, key: &str) -> Result<Option<T>, StateError> {
        Ok(self.read::<T>(key).await?.and_then(|(value, _)| value))
    }

    /// The watermark under `key`, set to `initial` first if there is none. Concurrent callers
    /// all get the value that won.
    pub(crate) async fn load_or_init<T: Mark>(
        &self,
        key: &str,
        initial: T,
    ) -> Result<T, StateError> {
        for _ in 0..8 {
            if let Some(value) = self.load::<T>(key).await? {
                return Ok(value);
            }
            match self.kv.create(key, initial.encode().into()).await {
                Ok(_) => return Ok(initial),
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => continue,
                Err(err) => return Err(StateError::new(key, err)),
            }
        }
        Err(StateError::contended(key))
    }

    /// Moves the watermark under `key` forward to `to`; a no-op if it is already there or
    /// beyond. Compare-and-set: a concurrent advance by another replica is re-read, never
    /// overwritten.
    pub(crate) async fn advance<T: Mark>(&self, key: &str, to: T) -> Result<(), StateError> {
        for attempt in 0..16u32 {
            let result = match self.read::<T>(key).await? {
                Some((Some(current), _)) if current >= to => return Ok(()),
                Some((_, revision)) => self
                    .kv
                    .update(key, to.encode().into(), revision)
                    .await
                    .map(|_| ())
                    .map_err(|err| {
                        (
                            err.kind() == UpdateErrorKind::WrongLastRevision,
                            StateError::new(key, err),
                        )
                    }),
                None => self
                    .kv
                    .create(key, to.encode().into())
                    .await
                    .map(|_| ())
                    .map_err(|err| {
                        (
                            err.kind() == CreateErrorKind::AlreadyExists,
                            StateError::new(key, err),
                        )
                    }),
            };
            match result {
                Ok(()) => return Ok(()),
                Err((true, _)) => {
                    // Lost a race: re-read. Back off a little when it keeps happening.
                    if attempt > 2 {
                        tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                    }
                }
                Err((false, err)) => return Err(err),
            }
        }
        Err(StateError::contended(key))
    }

    /// Moves the watermark under `key` from `from` to `to`, only if it is still at `from`;
    /// true when this call moved it. Several replicas plan the same skip from the same
    /// watermark: exactly one of them moves it, so only that one reports the skipped fires.
    /// Any other value (moved by another replica, deleted) is left alone: the caller plans
    /// again from what is there now.
    pub(crate) async fn advance_from<T: Mark>(
        &self,
        key: &str,
        from: T,
        to: T,
    ) -> Result<bool, StateError> {
        for _ in 0..16u32 {
            let revision = match self.read::<T>(key).await? {
                Some((Some(current), revision)) if current == from => revision,
                _ => return Ok(false),
            };
            match self.kv.update(key, to.encode().into(), revision).await {
                Ok(_) => return Ok(true),
                // Changed since the read: re-read, which then finds another value.
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(StateError::new(key, err)),
            }
        }
        Err(StateError::contended(key))
    }
}
