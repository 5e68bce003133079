//! Attempt accounting: which deliveries of a task were real attempts.
//!
//! JetStream counts every delivery of a message (`delivered`, 1-based), whatever ended it. jetq
//! counts *attempts*: a delivery that a worker gave back without running it to an outcome — at
//! shutdown when the grace period ran out, or because no handler of its type was there yet — is
//! a **hand-back** and does not use up an attempt. Workers of any language keep this rule:
//!
//! ```text
//! attempt = delivered − hand_backs        (never below 1)
//! ```
//!
//! where `hand_backs` is read from the task's [`AttemptRecord`] in the attempt-history bucket
//! (`<PREFIX>_ATTEMPTS`, key = the task's stream sequence in decimal). A worker increments
//! `hand_backs` **before** it sends the NAK that hands the task back, so the next delivery sees
//! it. A delivery that ended without any record (the worker was killed, lost its connection or
//! blocked past `ack_wait`) is counted as an attempt: a task that crashes its worker every time
//! still ends in dead letters after `max_attempts`. `max_deliver` on the durable stays the
//! server-side safety net for a task that is handed back forever.
//!
//! The record is JSON. Records written before hand-backs were counted are a bare array of
//! failures; they read as a record with no hand-backs.
//!
//! ```
//! use jetq_contract::attempts::AttemptRecord;
//!
//! let record = AttemptRecord::from_json(br#"{"hand_backs":2,"failures":[]}"#).unwrap();
//! assert_eq!(record.attempt(5), 3);
//! let old = AttemptRecord::from_json(b"[]").unwrap();
//! assert_eq!(old.attempt(2), 2);
//! ```

use serde::{Deserialize, Serialize};

use crate::failure::{AttemptFailure, MAX_KEPT_ATTEMPTS};

/// What workers remember about a task between its deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Deliveries handed back without an outcome (shutdown, unknown type): not attempts.
    #[serde(default)]
    pub hand_backs: u32,
    /// Errors of failed attempts, oldest first (at most [`MAX_KEPT_ATTEMPTS`]).
    #[serde(default)]
    pub failures: Vec<AttemptFailure>,
}

/// The record's JSON: the current object form, or the older bare array of failures.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Record(AttemptRecord),
    Failures(Vec<AttemptFailure>),
}

impl AttemptRecord {
    /// Parses a stored record (either form).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match serde_json::from_slice(bytes)? {
            Stored::Record(record) => record,
            Stored::Failures(failures) => AttemptRecord {
                hand_backs: 0,
                failures,
            },
        })
    }

    /// The record as compact JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// The attempt number of a delivery whose JetStream delivery count is `delivered`.
    pub fn attempt(&self, delivered: u64) -> u32 {
        let attempt = delivered.saturating_sub(u64::from(self.hand_backs)).max(1);
        u32::try_from(attempt).unwrap_or(u32::MAX)
    }

    /// Adds a failed attempt, dropping the oldest beyond [`MAX_KEPT_ATTEMPTS`].
    pub fn push_failure(&mut self, failure: AttemptFailure) {
        self.failures.push(failure);
        if self.failures.len() > MAX_KEPT_ATTEMPTS {
            self.failures
                .drain(..self.failures.len() - MAX_KEPT_ATTEMPTS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::AttemptOutcome;

    fn failure(attempt: u32) -> AttemptFailure {
        AttemptFailure {
            attempt,
            outcome: AttemptOutcome::Error,
            error: "boom".into(),
            at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn hand_backs_do_not_count_as_attempts() {
        let record = AttemptRecord {
            hand_backs: 3,
            failures: vec![failure(1)],
        };
        assert_eq!(record.attempt(5), 2, "5 deliveries, 3 handed back");
        assert_eq!(record.attempt(1), 1, "never below 1");
        assert_eq!(AttemptRecord::default().attempt(4), 4);
    }

    #[test]
    fn reads_both_forms_and_round_trips() {
        let old = serde_json::to_vec(&vec![failure(1), failure(2)]).unwrap();
        let record = AttemptRecord::from_json(&old).unwrap();
        assert_eq!(record.hand_backs, 0);
        assert_eq!(record.failures.len(), 2);
        let mut record = record;
        record.hand_backs = 4;
        let back = AttemptRecord::from_json(&record.to_json().unwrap()).unwrap();
        assert_eq!(back, record);
        assert!(AttemptRecord::from_json(b"{\"hand_backs\":-1}").is_err());
    }

    #[test]
    fn keeps_the_newest_failures() {
        let mut record = AttemptRecord::default();
        for attempt in 1..=(MAX_KEPT_ATTEMPTS as u32 + 5) {
            record.push_failure(failure(attempt));
        }
        assert_eq!(record.failures.len(), MAX_KEPT_ATTEMPTS);
        assert_eq!(record.failures[0].attempt, 6);
    }
}
