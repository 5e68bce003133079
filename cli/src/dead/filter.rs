//! Which dead letters an operation acts on: a [`DeadFilter`] (queue, task, age, reason, task id)
//! or a [`Selection`] of sequences or a filter.

use std::time::{Duration, SystemTime};

use jetq_contract::{NameKind, Subjects};

use super::DeadLetter;
use crate::error::AdminError;

/// Which dead letters: every field set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this task type.
    pub task: Option<String>,
    /// Only dead letters stored at least this long ago.
    pub older_than: Option<Duration>,
    /// Only dead letters stored at most this long ago.
    pub newer_than: Option<Duration>,
    /// Only this dead reason (`exhausted`, `fatal`, `undecodable`, `unknown-task`,
    /// `deliveries-exhausted`).
    pub reason: Option<String>,
    /// Only dead letters of this task id (`Jetq-Task-Id`).
    pub task_id: Option<String>,
}

impl DeadFilter {
    /// True if no field is set: every dead letter matches.
    pub fn is_everything(&self) -> bool {
        self == &DeadFilter::default()
    }

    /// Checks the names in the filter.
    pub fn validate(&self) -> Result<(), AdminError> {
        if let Some(queue) = &self.queue {
            jetq_contract::name::validate(NameKind::Queue, queue)?;
        }
        if let Some(task) = &self.task {
            jetq_contract::name::validate(NameKind::Task, task)?;
        }
        if let (Some(older), Some(newer)) = (self.older_than, self.newer_than) {
            if older >= newer {
                return Err(AdminError::Invalid(format!(
                    "--older-than {} and --newer-than {} select nothing: the first must be \
                     shorter than the second",
                    humantime::format_duration(older),
                    humantime::format_duration(newer)
                )));
            }
        }
        Ok(())
    }

    /// The subject filter on the dead-letter stream.
    pub fn subject(&self, subjects: &Subjects) -> String {
        subjects.dead(
            self.queue.as_deref().unwrap_or("*"),
            self.task.as_deref().unwrap_or("*"),
        )
    }

    pub(crate) fn matches(&self, dead: &DeadLetter, cutoffs: &Cutoffs) -> bool {
        if let Some(before) = cutoffs.older {
            if dead.stored > before {
                return false;
            }
        }
        if let Some(after) = cutoffs.newer {
            if dead.stored < after {
                return false;
            }
        }
        if let Some(reason) = &self.reason {
            if dead.reason.as_deref() != Some(reason.as_str()) {
                return false;
            }
        }
        if let Some(id) = &self.task_id {
            if dead.task_id.as_deref() != Some(id.as_str()) {
                return false;
            }
        }
        true
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Cutoffs {
    pub(crate) older: Option<SystemTime>,
    pub(crate) newer: Option<SystemTime>,
}

/// What a replay or purge acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// These dead letters, by sequence. Every one must exist.
    Sequences(Vec<u64>),
    /// Every dead letter matching the filter (an empty filter: all of them).
    Filter(DeadFilter),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_validate_names_and_ages() {
        let bad = DeadFilter {
            queue: Some("a.b".into()),
            ..DeadFilter::default()
        };
        assert!(bad.validate().is_err());
        let empty_window = DeadFilter {
            older_than: Some(Duration::from_secs(60)),
            newer_than: Some(Duration::from_secs(10)),
            ..DeadFilter::default()
        };
        assert!(empty_window.validate().is_err());
        let subject = DeadFilter {
            task: Some("t".into()),
            ..DeadFilter::default()
        }
        .subject(&Subjects::default());
        assert_eq!(subject, "jetq.dead.*.t");
    }
}
