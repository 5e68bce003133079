//! The delayed-task part of the wire contract: where a task waits until it is due, and the
//! stream that holds it.
//!
//! A producer publishes a delayed task to `<prefix>.delayed.<due unix second>.<queue>.<task>`
//! with the header `Jetq-Not-Before` (the exact due time) and otherwise exactly the headers and
//! payload of an immediate task. The scheduler walks these per-second buckets in time order and
//! republishes each task, headers and payload unchanged, to `<prefix>.task.<queue>.<task>` at
//! (never before) its due time, then purges what it released. See `docs/SCHEDULER.md`.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{
    self,
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};

use crate::{
    config::StreamSettings,
    subject::Subjects,
    topology::{ProvisionError, Topology},
};

/// The longest delay a producer accepts unless configured otherwise: 30 days (as Cloud Tasks).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The per-second bucket of a due time: its unix second, rounded down. A time before the epoch
/// is bucket 0.
pub fn bucket_of(due: SystemTime) -> u64 {
    due.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The delayed-task stream's configuration.
///
/// Limits retention (the scheduler purges what it released), file storage, `discard: New` so a
/// full stream refuses a delayed enqueue instead of dropping waiting tasks, and **no `max_age`**:
/// a waiting task is never expired by the server. Direct get is on: the scheduler reads buckets
/// with `next_by_subj` direct gets, one message at a time.
pub fn delayed_stream_config(
    subjects: &Subjects,
    settings: &StreamSettings,
) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: subjects.delayed_stream(),
        description: Some("jetq delayed tasks waiting for their due time".into()),
        subjects: vec![subjects.all_delayed()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        discard: DiscardPolicy::New,
        max_messages: settings.stream_max_msgs,
        max_bytes: settings.stream_max_bytes,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.stream_replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the delayed-task stream if it is missing; an existing one is left unchanged and
/// compared (see [`Topology::ensure_delayed_stream`], which also reconciles).
pub async fn ensure_delayed_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
    settings: &StreamSettings,
) -> Result<(), ProvisionError> {
    Topology::new(js.clone(), subjects.clone(), settings.clone())
        .ensure_delayed_stream()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_down() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_999);
        assert_eq!(bucket_of(at), 1_790_000_000);
        assert_eq!(bucket_of(SystemTime::UNIX_EPOCH), 0);
    }

    #[test]
    fn stream_never_expires_waiting_tasks() {
        let config = delayed_stream_config(&Subjects::default(), &StreamSettings::default());
        assert_eq!(config.name, "JETQ_DELAYED");
        assert_eq!(config.subjects, vec!["jetq.delayed.*.*.*".to_owned()]);
        assert_eq!(config.max_age, Duration::ZERO);
        assert_eq!(config.discard, DiscardPolicy::New);
        assert!(config.allow_direct);
    }
}
