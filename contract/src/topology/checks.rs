//! Comparing an existing stream or bucket with this process's settings: which settings are
//! checked for each object, and the [`Mismatch`]es reported (or, for `jetq-provision`, applied).

use std::time::Duration;

use async_nats::jetstream;

use super::Mismatch;

/// A setting compared between an existing stream and this process's configuration, with the
/// variable that sets it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Check {
    Subjects,
    Retention,
    Storage,
    Discard,
    MaxMsgs(Option<&'static str>),
    MaxBytes(Option<&'static str>),
    MaxAge(Option<&'static str>),
    DuplicateWindow,
    Replicas,
    History,
    AtomicPublish,
}

pub(super) const TASK_CHECKS: &[Check] = &[
    Check::Subjects,
    Check::Retention,
    Check::Storage,
    Check::Discard,
    Check::MaxMsgs(Some("JETQ_STREAM_MAX_MSGS")),
    Check::MaxBytes(Some("JETQ_STREAM_MAX_BYTES")),
    Check::DuplicateWindow,
    Check::Replicas,
    Check::AtomicPublish,
];
pub(super) const DELAYED_CHECKS: &[Check] = &[
    Check::Subjects,
    Check::Retention,
    Check::Storage,
    Check::Discard,
    Check::MaxMsgs(Some("JETQ_STREAM_MAX_MSGS")),
    Check::MaxBytes(Some("JETQ_STREAM_MAX_BYTES")),
    Check::MaxAge(None),
    Check::DuplicateWindow,
    Check::Replicas,
];
pub(super) const DEAD_CHECKS: &[Check] = &[
    Check::Subjects,
    Check::Retention,
    Check::Storage,
    Check::MaxAge(Some("JETQ_DEAD_MAX_AGE")),
    Check::MaxBytes(Some("JETQ_DEAD_MAX_BYTES")),
    Check::DuplicateWindow,
    Check::Replicas,
];
pub(super) const ADVISORY_CHECKS: &[Check] = &[
    Check::Subjects,
    Check::Retention,
    Check::Storage,
    Check::MaxAge(None),
    Check::Replicas,
];
pub(crate) const ARTIFACT_CHECKS: &[Check] = &[
    Check::Subjects,
    Check::Storage,
    Check::Discard,
    Check::MaxAge(Some("JETQ_STATUS_TTL")),
    Check::MaxBytes(Some("JETQ_ARTIFACTS_MAX_BYTES")),
    Check::Replicas,
];
pub(crate) const DEAD_PAYLOAD_CHECKS: &[Check] = &[
    Check::Subjects,
    Check::Storage,
    Check::Discard,
    Check::MaxAge(Some("JETQ_DEAD_MAX_AGE")),
    Check::MaxBytes(Some("JETQ_DEAD_MAX_BYTES")),
    Check::Replicas,
];
pub(crate) const BUCKET_CHECKS: &[Check] = &[Check::MaxAge(None), Check::Replicas, Check::History];
pub(crate) const STATUS_BUCKET_CHECKS: &[Check] = &[
    Check::MaxAge(Some("JETQ_STATUS_TTL")),
    Check::Replicas,
    Check::History,
];

pub(super) fn limit(value: i64) -> String {
    if value < 0 {
        "-1 (no limit)".to_owned()
    } else {
        value.to_string()
    }
}

pub(super) fn age(value: Duration) -> String {
    if value.is_zero() {
        "0s (no limit)".to_owned()
    } else {
        humantime::format_duration(value).to_string()
    }
}

/// The settings among `checks` in which `existing` (as the server holds it) differs from
/// `wanted`.
pub(crate) fn differences(
    stream: &str,
    existing: &jetstream::stream::Config,
    wanted: &jetstream::stream::Config,
    checks: &[Check],
) -> Vec<Mismatch> {
    let mut found = Vec::new();
    let mut compare = |setting: &'static str, has: String, wants: String, variable| {
        if has != wants {
            found.push(Mismatch {
                stream: stream.to_owned(),
                setting,
                existing: has,
                configured: wants,
                variable,
            });
        }
    };
    for check in checks {
        match *check {
            Check::Subjects => {
                let mut has = existing.subjects.clone();
                has.sort();
                let mut wants = wanted.subjects.clone();
                wants.sort();
                compare("subjects", format!("{has:?}"), format!("{wants:?}"), None);
            }
            Check::Retention => compare(
                "retention",
                format!("{:?}", existing.retention),
                format!("{:?}", wanted.retention),
                // Only the task stream's retention is a setting.
                wanted
                    .description
                    .as_deref()
                    .filter(|d| d.starts_with("jetq tasks waiting"))
                    .map(|_| "JETQ_TASK_RETENTION"),
            ),
            Check::Storage => compare(
                "storage",
                format!("{:?}", existing.storage),
                format!("{:?}", wanted.storage),
                None,
            ),
            Check::Discard => compare(
                "discard",
                format!("{:?}", existing.discard),
                format!("{:?}", wanted.discard),
                None,
            ),
            Check::MaxMsgs(variable) => compare(
                "max_msgs",
                limit(existing.max_messages),
                limit(wanted.max_messages),
                variable,
            ),
            Check::MaxBytes(variable) => compare(
                "max_bytes",
                limit(existing.max_bytes),
                limit(wanted.max_bytes),
                variable,
            ),
            Check::MaxAge(variable) => compare(
                "max_age",
                age(existing.max_age),
                age(wanted.max_age),
                variable,
            ),
            // Unset, the server picks its default (2 min, or less with a short max age).
            Check::DuplicateWindow if wanted.duplicate_window.is_zero() => {}
            Check::DuplicateWindow => compare(
                "duplicate_window",
                age(existing.duplicate_window),
                age(wanted.duplicate_window),
                Some("JETQ_DUPLICATE_WINDOW"),
            ),
            Check::Replicas => compare(
                "num_replicas",
                existing.num_replicas.max(1).to_string(),
                wanted.num_replicas.max(1).to_string(),
                Some("JETQ_STREAM_REPLICAS"),
            ),
            Check::AtomicPublish => compare(
                "allow_atomic",
                existing.allow_atomic_publish.to_string(),
                wanted.allow_atomic_publish.to_string(),
                None,
            ),
            Check::History => compare(
                "max_msgs_per_subject",
                existing.max_messages_per_subject.max(1).to_string(),
                wanted.max_messages_per_subject.max(1).to_string(),
                None,
            ),
        }
    }
    found
}

pub(super) fn report_updated(mismatches: &[Mismatch]) {
    for mismatch in mismatches {
        tracing::info!(
            stream = %mismatch.stream,
            setting = mismatch.setting,
            from = %mismatch.existing,
            to = %mismatch.configured,
            "existing stream updated"
        );
    }
}
