//! Concurrency limits: at most `max` tasks of a type (or of one limit key) running at once
//! across every worker, as slots with leases in one entry of the limits bucket.
//!
//! A worker takes a slot with a compare-and-set write of the entry, renews its lease while the
//! task runs (at each third of the lease) and removes it when the task ends. A holder that was
//! killed stops renewing: its slot is free again when its lease (the queue's `ack_wait`) ends.

use serde::{Deserialize, Serialize};

use super::FlowError;

/// A concurrency limit: at most `max` tasks running at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    max: u32,
    per_key: bool,
}

impl ConcurrencyLimit {
    /// At most `max` tasks of the type running at once (at least 1).
    ///
    /// ```
    /// use jetq_contract::flow::ConcurrencyLimit;
    /// let one_export_per_user = ConcurrencyLimit::new(1).unwrap().per_key();
    /// assert!(ConcurrencyLimit::new(0).is_err());
    /// ```
    pub fn new(max: u32) -> Result<ConcurrencyLimit, FlowError> {
        if max == 0 {
            return Err(FlowError::InvalidConcurrency);
        }
        Ok(ConcurrencyLimit {
            max,
            per_key: false,
        })
    }

    /// The limit applies to each `Jetq-Limit-Key` separately (e.g. 1 export per user); tasks
    /// without the header share the type's slots.
    pub fn per_key(mut self) -> Self {
        self.per_key = true;
        self
    }

    /// Tasks allowed at once.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Whether each limit key has its own slots.
    pub fn is_per_key(&self) -> bool {
        self.per_key
    }
}

/// One held slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The running task's sequence in the task stream.
    pub sequence: u64,
    /// The task's id.
    pub task_id: String,
    /// When the lease ends unless renewed.
    pub until: String,
}

/// The value of a `wait.<sequence>` entry: a task handed back because every slot of `limit`
/// was taken, expected back `until`. Informational (what `jetq limits` counts as waiting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The concurrency entry's key.
    pub limit: String,
    /// When the task is redelivered.
    pub until: String,
}

/// The value of a concurrency entry: `{"holders":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    /// The slots held, oldest first.
    pub holders: Vec<Holder>,
}

/// The outcome of asking for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The slot is taken (or renewed): write these slots.
    Taken(Slots),
    /// Every slot is held by a live lease; the earliest ends at this instant (microseconds).
    Full {
        /// When the first lease ends unless renewed.
        earliest_end: i64,
    },
}

impl Slots {
    /// Parses an entry; an unreadable one counts as empty (its leases cannot be trusted, and an
    /// empty list errs toward running, as a lost slot would after its lease).
    pub fn from_json(bytes: &[u8]) -> Slots {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// Compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The live holders at `now` (leases not ended).
    pub fn live(&self, now: i64) -> impl Iterator<Item = &Holder> {
        self.holders.iter().filter(move |holder| {
            super::parse_micros(&holder.until).is_some_and(|until| until > now)
        })
    }

    /// Takes (or renews) the slot of task `sequence` until `until`, dropping ended leases.
    pub fn acquire(&self, max: u32, sequence: u64, task_id: &str, now: i64, until: i64) -> Acquire {
        let mut live: Vec<Holder> = self
            .live(now)
            .filter(|holder| holder.sequence != sequence)
            .cloned()
            .collect();
        let renewing = self
            .holders
            .iter()
            .any(|holder| holder.sequence == sequence);
        if !renewing && live.len() >= max as usize {
            let earliest_end = live
                .iter()
                .filter_map(|holder| super::parse_micros(&holder.until))
                .min()
                .unwrap_or(now);
            return Acquire::Full { earliest_end };
        }
        live.push(Holder {
            sequence,
            task_id: task_id.to_owned(),
            until: super::format_micros(until),
        });
        Acquire::Taken(Slots { holders: live })
    }

    /// The slots without task `sequence`'s (and without ended leases); `None` if it held none.
    pub fn release(&self, sequence: u64, now: i64) -> Option<Slots> {
        if !self
            .holders
            .iter()
            .any(|holder| holder.sequence == sequence)
        {
            return None;
        }
        Some(Slots {
            holders: self
                .live(now)
                .filter(|holder| holder.sequence != sequence)
                .cloned()
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fill_up_renew_and_free_when_a_lease_ends() {
        let empty = Slots::default();
        let Acquire::Taken(one) = empty.acquire(2, 1, "a", 0, 3_000_000) else {
            panic!()
        };
        let Acquire::Taken(two) = one.acquire(2, 2, "b", 10, 3_000_010) else {
            panic!()
        };
        assert_eq!(
            two.acquire(2, 3, "c", 20, 3_000_020),
            Acquire::Full {
                earliest_end: 3_000_000
            }
        );
        // A holder renewing is not refused because the slots are full.
        let Acquire::Taken(renewed) = two.acquire(2, 1, "a", 1_000_000, 4_000_000) else {
            panic!()
        };
        assert_eq!(renewed.holders.len(), 2);
        // Task 2's lease ended (its worker was killed): its slot is free.
        let Acquire::Taken(after) = renewed.acquire(2, 3, "c", 3_500_000, 6_500_000) else {
            panic!()
        };
        let sequences: Vec<u64> = after.holders.iter().map(|h| h.sequence).collect();
        assert_eq!(sequences, vec![1, 3]);
        assert_eq!(after.release(1, 3_600_000).unwrap().holders.len(), 1);
        assert_eq!(after.release(9, 3_600_000), None);
    }
}
