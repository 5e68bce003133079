//! Rate tokens in the limits bucket: the GCRA state of each limit updated with compare-and-set,
//! and the reservation a task that must wait keeps under its sequence, so that it runs at its
//! turn without taking a second token.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use jetq_contract::flow::{
    self,
    rate::{RateReservation, RateState},
    RateLimit,
};

use super::{
    locks::{self, EntryLocks},
    FlowTask,
};

/// A start this close to now runs now (the redelivery of a reservation is this precise).
const START_SLACK_MICROS: i64 = 5_000;

fn wait_until(start: i64, now: i64) -> Duration {
    Duration::from_micros(start.saturating_sub(now).max(0).unsigned_abs())
}

/// Takes a token for the task: `None` to run now, else how long to wait for the token it
/// reserved. A task that already holds a reservation (it waited before) uses it.
pub(super) async fn take(
    store: &kv::Store,
    entry: &str,
    limit: RateLimit,
    task: &FlowTask<'_>,
    entry_locks: &EntryLocks,
) -> Option<Duration> {
    let reservation_key = flow::keys::reservation_entry(task.sequence);
    if task.delivered > 1 {
        match store.get(&reservation_key).await {
            Ok(Some(value)) => {
                let reserved = serde_json::from_slice::<RateReservation>(&value)
                    .ok()
                    .and_then(|r| flow::parse_micros(&r.at));
                if let Some(start) = reserved {
                    let now = flow::micros(SystemTime::now());
                    if start > now + START_SLACK_MICROS {
                        return Some(wait_until(start, now));
                    }
                    if let Err(err) = store.purge(&reservation_key).await {
                        tracing::debug!(error = %err, "could not remove a used rate reservation");
                    }
                    return None;
                }
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "could not read the task's rate reservation")
            }
        }
    }
    let reserved = reserve(store, entry, limit, entry_locks).await;
    match reserved {
        Ok((start, now)) if start <= now + START_SLACK_MICROS => None,
        Ok((start, now)) => {
            let record = RateReservation {
                at: flow::format_micros(start),
                limit: entry.to_owned(),
            };
            let written = match serde_json::to_vec(&record) {
                Ok(bytes) => store.put(&reservation_key, bytes.into()).await.err(),
                Err(_) => None,
            };
            if let Some(err) = written {
                // Without the record the task takes another token when it returns: the limit
                // still holds, the wait only gets longer.
                tracing::warn!(error = %err, "could not store the task's rate reservation");
            }
            Some(wait_until(start, now))
        }
        Err(err) => {
            // The limit cannot be checked: wait one interval rather than run over it.
            tracing::warn!(entry, error = %err, "could not take a rate token; the task waits");
            Some(Duration::from_micros(
                limit.interval_micros().unsigned_abs(),
            ))
        }
    }
}

/// Reserves the next token of `entry`: `(start, now)` in microseconds.
async fn reserve(
    store: &kv::Store,
    entry: &str,
    limit: RateLimit,
    entry_locks: &EntryLocks,
) -> Result<(i64, i64), String> {
    locks::modify(store, entry, entry_locks, |value| {
        let tat = value
            .and_then(|value| serde_json::from_slice::<RateState>(value).ok())
            .and_then(|state| flow::parse_micros(&state.tat));
        let now = flow::micros(SystemTime::now());
        let reservation = limit.reserve(tat, now);
        let state = RateState {
            tat: flow::format_micros(reservation.tat),
        };
        // A struct of one string always serializes.
        let write = serde_json::to_vec(&state).unwrap_or_default();
        (Some(write), (reservation.start, now))
    })
    .await
}
