//! Priority levels within a queue (PROTOCOL §12).
//!
//! A queue has three levels: `high`, `normal` (the default) and `low`. A level is told apart by
//! the *subject*, because that is the only thing a JetStream consumer can select on: a task of
//! level `high` in queue `emails` is published to `<prefix>.task.emails~high.<task>` and pulled
//! through its own durable consumer `worker-emails~high`; a `normal` task keeps the subject it
//! always had (`<prefix>.task.emails.<task>`), so producers and workers that know nothing of
//! priorities keep working unchanged. `~` is outside the characters a queue name may use, so a
//! level's token can never be another queue's name.
//!
//! Which level runs first is the worker's policy (see `consumer/src/pull.rs` and
//! `docs/FLOW_CONTROL.md`, "Priorities"): higher levels are pulled first, and a lower level that
//! has tasks still gets a share, so it is never starved.

use std::{borrow::Cow, fmt, str::FromStr};

/// The separator between a queue's name and its level in a subject token (`emails~high`).
pub const LEVEL_SEPARATOR: char = '~';

/// How urgent a task is within its queue. The default is [`Priority::Normal`].
///
/// ```
/// use jetq_contract::Priority;
/// assert_eq!("high".parse::<Priority>().unwrap(), Priority::High);
/// assert_eq!(Priority::High.queue_token("emails"), "emails~high");
/// assert_eq!(Priority::Normal.queue_token("emails"), "emails");
/// assert_eq!(Priority::split_queue_token("emails~low"), Some(("emails", Priority::Low)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Pulled before every other level.
    High,
    /// The default: the subject every task had before levels existed.
    #[default]
    Normal,
    /// Pulled after the others, with a share of its own while they are busy.
    Low,
}

/// A priority name that is not one of the levels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {value:?}: the levels are \"high\", \"normal\" and \"low\"")]
pub struct PriorityError {
    /// The rejected name, verbatim.
    pub value: String,
}

impl Priority {
    /// Every level, highest first: the order in which a worker pulls them.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The level's wire name: `high`, `normal` or `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The subject token of `queue` at this level: the queue itself for `normal`,
    /// `<queue>~<level>` otherwise.
    pub fn queue_token(self, queue: &str) -> Cow<'_, str> {
        match self {
            Priority::Normal => Cow::Borrowed(queue),
            level => Cow::Owned(format!("{queue}{LEVEL_SEPARATOR}{}", level.as_str())),
        }
    }

    /// Splits a subject's queue token into the queue and its level; `None` for a level suffix
    /// that is not one of ours (such a subject belongs to no consumer).
    pub fn split_queue_token(token: &str) -> Option<(&str, Priority)> {
        match token.split_once(LEVEL_SEPARATOR) {
            None => Some((token, Priority::Normal)),
            Some((queue, "high")) if !queue.is_empty() => Some((queue, Priority::High)),
            Some((queue, "low")) if !queue.is_empty() => Some((queue, Priority::Low)),
            Some(_) => None,
        }
    }
}

impl FromStr for Priority {
    type Err = PriorityError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            _ => Err(PriorityError {
                value: value.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_unknown_levels_are_refused() {
        for level in Priority::ALL {
            let token = level.queue_token("emails");
            assert_eq!(Priority::split_queue_token(&token), Some(("emails", level)));
            assert_eq!(level.as_str().parse::<Priority>(), Ok(level));
        }
        assert_eq!(Priority::split_queue_token("emails~urgent"), None);
        assert_eq!(Priority::split_queue_token("~high"), None);
        assert_eq!(Priority::split_queue_token("emails~normal"), None);
        let err = "urgent".parse::<Priority>().unwrap_err();
        assert!(err.to_string().contains("\"high\""), "{err}");
    }

    #[test]
    fn levels_are_ordered_highest_first() {
        assert!(Priority::High < Priority::Normal && Priority::Normal < Priority::Low);
        assert_eq!(Priority::ALL[0], Priority::High);
    }
}
