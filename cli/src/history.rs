//! The metrics history (PROTOCOL.md §15): per-minute records of each queue for 24 hours that the
//! workers merge into `<PREFIX>_METRICS` (`<queue>.<minute>`). [`Admin::metrics_history`] reads
//! a range of them for `jetq history` and the console's charts.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;
pub use jetq_contract::metrics_history::MinuteRecord;
use jetq_contract::metrics_history::{self, minute_of};
use serde::Serialize;

use crate::{error::AdminError, Admin};

/// The longest range kept: 24 hours.
pub const MAX_RANGE: Duration = Duration::from_secs(24 * 3600);

/// How long a read waits for the next record before it gives up.
const READ_WAIT: Duration = Duration::from_secs(10);

/// The records of a range, as `jetq history --json` and `GET /api/history` give them.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryListing {
    /// The bucket read.
    pub bucket: String,
    /// Whether it exists (no worker with history ran here, or not provisioned, if not).
    pub exists: bool,
    /// The queue asked for (`None`: every queue).
    pub queue: Option<String>,
    /// The first minute of the range (whole minutes since the Unix epoch).
    pub from_minute: u64,
    /// The last minute of the range (the current one).
    pub to_minute: u64,
    /// The records found, by queue then minute (minutes without a record are absent).
    pub records: Vec<MinuteRecord>,
}

impl HistoryListing {
    /// The queues with records, sorted.
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.records.iter().map(|r| r.queue.clone()).collect();
        queues.dedup();
        queues
    }
}

/// Parses a range such as `1h`, `6h`, `90m`, `24h`: at least a minute, at most [`MAX_RANGE`].
pub fn parse_range(text: &str) -> Result<Duration, AdminError> {
    let range = humantime::parse_duration(text.trim()).map_err(|err| {
        AdminError::Invalid(format!("invalid range {text:?} (use 1h, 6h, 24h): {err}"))
    })?;
    if range < Duration::from_secs(60) || range > MAX_RANGE {
        return Err(AdminError::Invalid(format!(
            "range {text:?} out of bounds: from 1m to 24h (the history keeps 24 hours)"
        )));
    }
    Ok(range)
}

impl Admin {
    /// The per-minute records of `queue` (every queue with `None`) over the last `range` (the
    /// current minute included), by queue then minute. One ordered read of the bucket's records
    /// written since the range began (`history: 1` keeps one message per key), no per-key get.
    pub async fn metrics_history(
        &self,
        queue: Option<&str>,
        range: Duration,
    ) -> Result<HistoryListing, AdminError> {
        if let Some(queue) = queue {
            jetq_contract::name::validate(jetq_contract::NameKind::Queue, queue)
                .map_err(|err| AdminError::Invalid(err.to_string()))?;
        }
        let range = range.min(MAX_RANGE);
        let now = SystemTime::now();
        let to_minute = minute_of(now);
        let from_minute = to_minute + 1 - (range.as_secs() / 60).max(1);
        let bucket = metrics_history::bucket(self.subjects());
        let mut listing = HistoryListing {
            bucket: bucket.clone(),
            exists: false,
            queue: queue.map(str::to_owned),
            from_minute,
            to_minute,
            records: Vec::new(),
        };
        let stream_name = format!("KV_{bucket}");
        let Some(stream) = self.optional_stream(&stream_name).await? else {
            return Ok(listing);
        };
        listing.exists = true;
        let action = format!("cannot read bucket {bucket}");
        let failed =
            |err: Box<dyn std::error::Error + Send + Sync>| AdminError::nats(action.clone(), err);
        // A record is last written after its minute began: reading from the range's first
        // minute misses none of it.
        let start_time = crate::dead::to_datetime(metrics_history::minute_start(from_minute))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("$KV.{bucket}.{}.*", queue.unwrap_or("*")),
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                description: Some("jetq: reading the metrics history".into()),
                ..Default::default()
            })
            .await
            .map_err(|err| failed(Box::new(err)))?;
        let mut remaining = consumer.cached_info().num_pending;
        if remaining == 0 {
            return Ok(listing);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|err| failed(Box::new(err)))?;
        let prefix = format!("$KV.{bucket}.");
        while remaining > 0 {
            let message = match tokio::time::timeout(READ_WAIT, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(err))) => return Err(failed(Box::new(err))),
                Ok(None) => break,
                Err(_) => {
                    return Err(failed(
                        format!("no record within {READ_WAIT:?} ({remaining} expected)").into(),
                    ))
                }
            };
            remaining = message.info().map(|info| info.pending).unwrap_or(0);
            let Some(key) = message.subject.as_str().strip_prefix(&prefix) else {
                continue;
            };
            let Some((of, minute)) = metrics_history::parse_key(key) else {
                continue;
            };
            // A delete or purge marker carries no record.
            let removed = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() != "PUT");
            if removed || minute < from_minute || minute > to_minute || message.payload.is_empty() {
                continue;
            }
            match serde_json::from_slice::<MinuteRecord>(&message.payload) {
                Ok(record) if record.queue == of && record.minute == minute => {
                    listing.records.push(record)
                }
                Ok(_) => tracing::warn!(%key, "metrics record under another key skipped"),
                Err(err) => tracing::warn!(%key, error = %err, "unreadable metrics record skipped"),
            }
        }
        listing
            .records
            .sort_by(|a, b| (a.queue.as_str(), a.minute).cmp(&(b.queue.as_str(), b.minute)));
        Ok(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_range("24h").unwrap(), MAX_RANGE);
        assert!(parse_range("25h").is_err());
        assert!(parse_range("10s").is_err());
        assert!(parse_range("soon").is_err());
    }
}
