//! Unique tasks: the record of a held unique key and the rule that says whether a later
//! enqueue is a duplicate of its holder or may take the key over.
//!
//! A producer takes the key (`create`, compare-and-set) with a `pending` hold before it
//! publishes, and turns it into a `queued` hold with the task's stream sequence after the ack.
//! Nothing holds a key forever: a `pending` hold whose producer vanished expires with its lease,
//! a `queued` hold whose task is no longer in the task stream is taken over, a `period` hold
//! ends at its `expires_at`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::FlowError;

/// How long a `pending` hold lasts without being confirmed: longer than any publish of the
/// producers (3 sends of 5 s and the pauses between them), short enough that a producer that
/// died between taking the key and publishing does not block the key for long.
pub const PENDING_LEASE: Duration = Duration::from_secs(60);

/// Longest `period` a unique key may be held for.
pub const MAX_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// When a unique key is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UniqueScope {
    /// Held while the task waits to run: released when a worker starts it (an enqueue while it
    /// runs makes a new task).
    Queued,
    /// Held while the task is queued or running (retries included): released when it
    /// succeeds, is dead-lettered or cancelled.
    Active,
    /// Held for a fixed period from the enqueue, whatever happens to the task (throttle: at
    /// most one task per period).
    Period(Duration),
    /// Debounce: the task runs this long after the **last** enqueue of its key, with that
    /// enqueue's arguments; each enqueue replaces the pending one and pushes the start back.
    Debounce(Duration),
}

impl UniqueScope {
    /// A period scope, checked: between 1 ms and [`MAX_PERIOD`].
    pub fn period(period: Duration) -> Result<UniqueScope, FlowError> {
        if period < Duration::from_millis(1) || period > MAX_PERIOD {
            return Err(FlowError::InvalidPeriod {
                period,
                max: MAX_PERIOD,
            });
        }
        Ok(UniqueScope::Period(period))
    }

    /// A debounce scope, checked: between 1 ms and [`MAX_PERIOD`].
    pub fn debounce(delay: Duration) -> Result<UniqueScope, FlowError> {
        UniqueScope::period(delay)?;
        Ok(UniqueScope::Debounce(delay))
    }

    /// The `Jetq-Unique-Scope` header value: `queued`, `active` or `period`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UniqueScope::Queued => "queued",
            UniqueScope::Active => "active",
            UniqueScope::Period(_) => "period",
            UniqueScope::Debounce(_) => "debounce",
        }
    }
}

/// What a worker does with a task's unique key (from its `Jetq-Unique-Scope` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseAt {
    /// When a worker starts the task.
    Start,
    /// When the task ends (succeeded, dead-lettered, cancelled).
    End,
    /// Never: the hold expires.
    Never,
    /// Debounce: when a worker starts the task, if the key still names it; a task the key no
    /// longer names was replaced by a later enqueue and is dropped without running.
    StartIfLatest,
}

/// The release point of a scope header value; `None` for a value this version does not know
/// (a worker then leaves the key alone: it expires or is taken over).
pub fn release_at(scope: &str) -> Option<ReleaseAt> {
    match scope {
        "queued" => Some(ReleaseAt::Start),
        "active" => Some(ReleaseAt::End),
        "period" => Some(ReleaseAt::Never),
        "debounce" => Some(ReleaseAt::StartIfLatest),
        _ => None,
    }
}

/// The state of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldState {
    /// Taken; the task is being published.
    Pending,
    /// The task is in the task stream at `sequence`.
    Queued,
    /// Debounce: the latest task waits in the delayed-task stream at `sequence`.
    Delayed,
}

/// The value of a unique key's entry in `<PREFIX>_UNIQUE` (compact JSON; readers ignore fields
/// they do not know).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueHold {
    /// The holder's task id (`Nats-Msg-Id`).
    pub task_id: String,
    /// The holder's queue.
    pub queue: String,
    /// The holder's task type.
    pub task: String,
    /// `queued`, `active` or `period`.
    pub scope: String,
    /// `pending`, `queued` or (debounce) `delayed`.
    pub state: HoldState,
    /// The holder's sequence in the task stream, once queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// When the key was taken.
    pub taken_at: String,
    /// A pending hold's end: after it, a producer that never confirmed has vanished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    /// A period hold's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl UniqueHold {
    /// A pending hold for `task_id`, taken at `now` (microseconds).
    pub fn pending(task_id: &str, queue: &str, task: &str, scope: UniqueScope, now: i64) -> Self {
        let lease = i64::try_from(PENDING_LEASE.as_micros()).unwrap_or(i64::MAX);
        UniqueHold {
            task_id: task_id.to_owned(),
            queue: queue.to_owned(),
            task: task.to_owned(),
            scope: scope.as_str().to_owned(),
            state: HoldState::Pending,
            sequence: None,
            taken_at: super::format_micros(now),
            lease_until: Some(super::format_micros(now.saturating_add(lease))),
            expires_at: match scope {
                UniqueScope::Period(period) => Some(super::format_micros(
                    now.saturating_add(i64::try_from(period.as_micros()).unwrap_or(i64::MAX)),
                )),
                _ => None,
            },
        }
    }

    /// The same hold, its task now queued at `sequence`.
    pub fn queued(mut self, sequence: u64) -> Self {
        self.state = HoldState::Queued;
        self.sequence = Some(sequence);
        self.lease_until = None;
        self
    }

    /// Compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored hold.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The debounce hold of task `task_id`, waiting in the delayed-task stream at `sequence`.
    pub fn debounced(
        task_id: &str,
        queue: &str,
        task: &str,
        sequence: u64,
        now: i64,
        due: i64,
    ) -> Self {
        UniqueHold {
            task_id: task_id.to_owned(),
            queue: queue.to_owned(),
            task: task.to_owned(),
            scope: "debounce".to_owned(),
            state: HoldState::Delayed,
            sequence: Some(sequence),
            taken_at: super::format_micros(now),
            lease_until: None,
            expires_at: Some(super::format_micros(due)),
        }
    }

    /// What a later enqueue makes of this hold at `now` (microseconds) — see [`Judgement`].
    pub fn judge(&self, now: i64) -> Judgement {
        if self.scope == "period" || self.scope == "debounce" {
            return match self.expires_at.as_deref().and_then(super::parse_micros) {
                Some(end) if end > now => Judgement::Held,
                _ => Judgement::Free,
            };
        }
        match (self.state, self.sequence) {
            (HoldState::Queued, Some(sequence)) => Judgement::HeldIfTaskExists(sequence),
            _ => match self.lease_until.as_deref().and_then(super::parse_micros) {
                Some(end) if end > now => Judgement::Held,
                _ => Judgement::Free,
            },
        }
    }
}

/// What a later enqueue makes of an existing hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// The key is held: the enqueue is a duplicate of the holder.
    Held,
    /// Held if the task stream still has the holder at this sequence (with the holder's id);
    /// a task that is gone ended without its worker releasing the key: the key is free.
    HeldIfTaskExists(u64),
    /// The hold ended (lease or period over): the enqueue takes the key over.
    Free,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_226_800_000_000;

    #[test]
    fn a_pending_hold_lasts_its_lease() {
        let hold = UniqueHold::pending("t1", "q", "t", UniqueScope::Active, NOW);
        assert_eq!(hold.judge(NOW + 59_000_000), Judgement::Held);
        assert_eq!(hold.judge(NOW + 60_000_001), Judgement::Free);
        let queued = hold.queued(7);
        assert_eq!(
            queued.judge(NOW + 600_000_000),
            Judgement::HeldIfTaskExists(7)
        );
    }

    #[test]
    fn a_period_hold_ends_with_its_period_whatever_the_task() {
        let scope = UniqueScope::period(Duration::from_secs(10)).unwrap();
        let hold = UniqueHold::pending("t1", "q", "t", scope, NOW).queued(3);
        assert_eq!(hold.judge(NOW + 9_000_000), Judgement::Held);
        assert_eq!(hold.judge(NOW + 10_000_001), Judgement::Free);
        assert!(UniqueScope::period(Duration::ZERO).is_err());
        assert!(UniqueScope::period(MAX_PERIOD + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn holds_round_trip_and_ignore_unknown_fields() {
        let hold = UniqueHold::pending("t1", "q", "t", UniqueScope::Queued, NOW);
        assert_eq!(UniqueHold::from_json(&hold.to_json()).unwrap(), hold);
        let mut value: serde_json::Value = serde_json::from_slice(&hold.to_json()).unwrap();
        value["later"] = serde_json::json!(1);
        assert_eq!(
            UniqueHold::from_json(value.to_string().as_bytes()).unwrap(),
            hold
        );
    }
}
