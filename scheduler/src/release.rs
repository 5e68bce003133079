//! Releasing delayed tasks: walk the per-second buckets of the delayed stream in time order,
//! republish each task (headers and payload unchanged, so its own `Nats-Msg-Id` dedups the
//! copies other replicas publish) to its task subject at its due time, then purge what was
//! released. The last released second is a watermark in the state bucket.
//!
//! Memory stays bounded whatever the number of waiting tasks: a bucket is read one message at a
//! time (direct get, `next_by_subj`), with at most `release_window` publishes awaiting acks.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use async_nats::{
    jetstream::{
        self,
        consumer::{pull, DeliverPolicy},
        stream::DirectGetErrorKind,
    },
    HeaderMap,
};
use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt, TryStreamExt};
use jetq_contract::{
    headers,
    publish::{self, Outgoing, PublishError, Publisher},
    Subjects,
};
use tokio_util::sync::CancellationToken;

use crate::{
    error::{PublishFailed, StepError},
    state::{State, RELEASED_KEY},
};

/// Late arrivals in the last few released seconds are looked for on every tick.
const RECENT: u64 = 2;
/// The whole lookback is re-checked every this many ticks.
const LOOKBACK_EVERY: u64 = 10;
/// Messages of a bucket read with direct gets before switching to an ordered consumer.
const DIRECT_READS: usize = 32;
/// How long an ordered consumer may stay silent before its bucket counts as done.
const ORDERED_SILENCE: Duration = Duration::from_secs(1);
/// A released task's publish, awaiting its ack.
type Confirmation = futures::future::BoxFuture<'static, Result<(), PublishFailed>>;

/// Due tasks of a pass are released sorted by due time in batches of up to this many, so a
/// scheduler that reaches a bucket late (load, a pause) still releases it in due order rather
/// than in enqueue order. Bounds the memory a pass holds.
const SORT_BATCH: usize = 1024;
/// Shortest pause between two passes over one bucket.
const MIN_PASS_GAP: Duration = Duration::from_millis(100);
/// Beyond this many not-yet-due tasks in a pass, the bucket's next pass waits for its second to
/// end instead of following each due time.
const MANY_WAITING: u64 = 1000;
/// Beyond this many seconds behind, the due buckets are found from the stream's subject list
/// rather than probed one second at a time.
const SCAN_AFTER: u64 = 3600;

pub(crate) struct Releaser {
    pub(crate) subjects: Subjects,
    pub(crate) stream: jetstream::stream::Stream,
    pub(crate) publisher: Publisher,
    pub(crate) state: State,
    pub(crate) lookback: Duration,
    pub(crate) window: usize,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

impl Releaser {
    /// Releases due tasks every second until cancelled.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut tick: u64 = 0;
        let mut swept = false;
        let mut failures: u32 = 0;
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                result = self.tick(tick, !swept) => result,
            };
            let pause = match result {
                Ok(through) => {
                    swept = true;
                    failures = 0;
                    tick = tick.wrapping_add(1);
                    let now = unix_now();
                    if now.as_secs() > through {
                        // The tick ran into a new second (its last pass followed due times to
                        // the end of the second): that second's tasks are due now, not after
                        // the next boundary.
                        Duration::ZERO
                    } else {
                        // Wake just after the next whole second.
                        Duration::from_millis(u64::from(1000 - now.subsec_millis()) + 2)
                    }
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %err, "releasing delayed tasks failed; retrying");
                    Duration::from_millis(100u64 << failures.min(5)).min(Duration::from_secs(3))
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Releases every due second up to now; returns the last second released.
    async fn tick(&self, tick: u64, startup: bool) -> Result<u64, StepError> {
        let now = unix_now().as_secs();
        let mark = match self.state.load::<u64>(RELEASED_KEY).await? {
            Some(mark) => mark,
            None => {
                let initial = self.initial_mark(now).await?;
                self.state.load_or_init(RELEASED_KEY, initial).await?
            }
        };
        if startup {
            // Tasks that reached already-released seconds while no scheduler looked (a producer
            // whose clock is far behind): release them now.
            for bucket in self.buckets_through(mark).await? {
                self.release_bucket(bucket).await?;
            }
        }
        // Late arrivals in recently released seconds.
        let lookback = if tick.checked_rem(LOOKBACK_EVERY) == Some(0) {
            self.lookback.as_secs().max(RECENT)
        } else {
            RECENT
        };
        for bucket in mark.saturating_sub(lookback - 1)..=mark {
            self.release_bucket(bucket).await?;
        }
        if now > mark.saturating_add(SCAN_AFTER) {
            // Far behind (a long outage): release only the buckets that hold tasks.
            for bucket in self.buckets_through(now).await? {
                if bucket > mark {
                    self.release_bucket(bucket).await?;
                    self.state.advance(RELEASED_KEY, bucket).await?;
                }
            }
            self.state.advance(RELEASED_KEY, now).await?;
            return Ok(now);
        }
        let mut bucket = mark + 1;
        while bucket <= now {
            let released = self.release_bucket(bucket).await?;
            if released > 0 || bucket == now || (bucket - mark) % 256 == 0 {
                self.state.advance(RELEASED_KEY, bucket).await?;
            }
            bucket += 1;
        }
        Ok(now)
    }

    /// Where a fresh installation starts: just before its earliest waiting task, or now.
    async fn initial_mark(&self, now: u64) -> Result<u64, StepError> {
        let mut earliest = now.saturating_sub(1);
        self.for_each_bucket(|due| earliest = earliest.min(due.saturating_sub(1)))
            .await?;
        Ok(earliest)
    }

    /// The non-empty buckets at or before `limit`, from the stream's subject list (streamed:
    /// only the buckets at or before `limit` are kept).
    async fn buckets_through(&self, limit: u64) -> Result<BTreeSet<u64>, StepError> {
        let mut buckets = BTreeSet::new();
        self.for_each_bucket(|due| {
            if due <= limit {
                buckets.insert(due);
            }
        })
        .await?;
        Ok(buckets)
    }

    /// Calls `each` with the due second of every subject of the delayed stream that holds
    /// tasks, as the server lists them (streamed, not collected: a stream may hold tasks for
    /// millions of distinct seconds).
    async fn for_each_bucket(&self, mut each: impl FnMut(u64)) -> Result<(), StepError> {
        let mut subjects = self
            .stream
            .info_with_subjects(self.subjects.all_delayed())
            .await
            .map_err(|err| StepError::Stream(Box::new(err)))?;
        while let Some((subject, _)) = subjects
            .try_next()
            .await
            .map_err(|err| StepError::Stream(Box::new(err)))?
        {
            if let Some((due, _, _)) = self.subjects.parse_delayed(&subject) {
                each(due);
            }
        }
        Ok(())
    }

    /// Releases every task in the bucket of unix second `bucket`, each at (never before) its
    /// `Jetq-Not-Before`, then purges what was released. Returns how many were released.
    ///
    /// The bucket is walked in passes: a pass releases, in due order, every task already
    /// due and notes the earliest one that is not; the next pass starts then (at most 10 passes
    /// a second; a bucket with many not-yet-due tasks waits for its second to end instead).
    /// The due tasks of a pass leave sorted by due time (in batches of [`SORT_BATCH`]), so
    /// tasks leave in due order even when the pass starts late, and memory stays one batch plus
    /// the ack window. A task is skipped in a later pass only if an earlier pass saw it already
    /// due, so a late arrival is never purged unreleased.
    async fn release_bucket(&self, bucket: u64) -> Result<u64, StepError> {
        let filter = self.subjects.delayed_bucket(bucket);
        let bucket_end = Duration::from_secs(bucket + 1);
        let mut released = 0;
        let mut in_flight: FuturesUnordered<Confirmation> = FuturesUnordered::new();
        // (last sequence seen, time) of the previous pass.
        let mut previous: Option<(u64, Duration)> = None;
        let mut last = None;
        loop {
            let pass_time = unix_now();
            let mut reader = BucketReader::new(&self.stream, &filter);
            let mut waiting = 0u64;
            let mut earliest_waiting = bucket_end;
            let mut due = Vec::new();
            while let Some(message) = reader.next().await? {
                last = Some(last.unwrap_or(0).max(message.sequence));
                let not_before = message
                    .headers
                    .get(headers::NOT_BEFORE)
                    .and_then(|value| jetq_contract::time::parse(value.as_str()))
                    .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .unwrap_or(Duration::from_secs(bucket))
                    .min(bucket_end);
                if previous.is_some_and(|(seen, at)| message.sequence <= seen && not_before <= at) {
                    continue; // released by an earlier pass
                }
                if not_before > pass_time {
                    waiting += 1;
                    earliest_waiting = earliest_waiting.min(not_before);
                    continue;
                }
                due.push((not_before, message));
                if due.len() >= SORT_BATCH {
                    released += self.release_sorted(&mut due, &mut in_flight).await?;
                }
            }
            released += self.release_sorted(&mut due, &mut in_flight).await?;
            if waiting == 0 {
                break;
            }
            previous = Some((last.unwrap_or(0), pass_time));
            let next_pass = if waiting > MANY_WAITING {
                bucket_end
            } else {
                earliest_waiting.max(pass_time + MIN_PASS_GAP)
            };
            // Acks of this pass complete meanwhile.
            let pause = next_pass.saturating_sub(unix_now());
            let sleep = tokio::time::sleep(pause);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    Some(result) = in_flight.next() => { result?; }
                }
            }
        }
        while let Some(result) = in_flight.next().await {
            result?;
        }
        if let Some(last) = last {
            // Only what was read: a task that arrived meanwhile stays for the next look.
            self.stream
                .purge()
                .filter(filter)
                .sequence(last + 1)
                .await
                .map_err(|err| StepError::Stream(Box::new(err)))?;
            tracing::debug!(bucket, released, "released delayed tasks");
        }
        Ok(released)
    }
}

impl Releaser {
    /// Publishes `due` (emptied) in due-time order, stream order among equal times, keeping at
    /// most `window` publishes awaiting their acks. Returns how many were published.
    async fn release_sorted(
        &self,
        due: &mut Vec<(Duration, Record)>,
        in_flight: &mut FuturesUnordered<Confirmation>,
    ) -> Result<u64, StepError> {
        due.sort_by_key(|(not_before, message)| (*not_before, message.sequence));
        let mut released = 0;
        for (_, message) in due.drain(..) {
            let Some((_, queue, task)) = self.subjects.parse_delayed(&message.subject) else {
                continue;
            };
            let (headers, id) = task_headers(&message.headers, message.sequence);
            let outgoing = Outgoing {
                subject: self.subjects.task(queue, task),
                id,
                headers,
                payload: message.payload,
            };
            let first = match self.publisher.send(&outgoing).await {
                // Refused before it was sent: this step fails now, not after the window.
                Err(source) if !publish::is_unknown_outcome(&source) => {
                    return Err(PublishError::Failed {
                        subject: outgoing.subject,
                        id: outgoing.id,
                        sends: 1,
                        source,
                    }
                    .into());
                }
                first => first,
            };
            let publisher = self.publisher.clone();
            in_flight.push(Box::pin(async move {
                publisher
                    .confirm(&outgoing, first)
                    .await
                    .map(drop)
                    .map_err(PublishFailed::from)
            }));
            released += 1;
            while in_flight.len() >= self.window {
                if let Some(result) = in_flight.next().await {
                    result?;
                }
            }
        }
        Ok(released)
    }
}

/// One message of a bucket.
struct Record {
    sequence: u64,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

/// Reads a bucket in stream order: direct gets for the first few messages (cheap for the
/// usual empty or small bucket), then an ordered consumer filtered on the bucket, which fetches
/// in batches (bounded by the client's batch size) for a large one.
struct BucketReader<'a> {
    stream: &'a jetstream::stream::Stream,
    filter: &'a str,
    from: Option<u64>,
    direct_reads: usize,
    ordered: Option<pull::Ordered>,
    done: bool,
}

impl<'a> BucketReader<'a> {
    fn new(stream: &'a jetstream::stream::Stream, filter: &'a str) -> Self {
        BucketReader {
            stream,
            filter,
            from: None,
            direct_reads: 0,
            ordered: None,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<Record>, StepError> {
        if self.done {
            return Ok(None);
        }
        if self.ordered.is_none() && self.direct_reads >= DIRECT_READS {
            let consumer = self
                .stream
                .create_consumer(pull::OrderedConfig {
                    filter_subject: self.filter.to_owned(),
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: self.from.unwrap_or(1),
                    },
                    ..Default::default()
                })
                .await
                .map_err(|err| StepError::Stream(Box::new(err)))?;
            if consumer.cached_info().num_pending == 0 {
                self.done = true;
                return Ok(None);
            }
            self.ordered = Some(
                consumer
                    .messages()
                    .await
                    .map_err(|err| StepError::Stream(Box::new(err)))?,
            );
        }
        if let Some(ordered) = &mut self.ordered {
            // A message the consumer counted may be purged by another replica before it is
            // delivered: silence means the bucket is done.
            let next = match tokio::time::timeout(ORDERED_SILENCE, ordered.next()).await {
                Ok(Some(next)) => next.map_err(|err| StepError::Stream(Box::new(err)))?,
                Ok(None) | Err(_) => {
                    self.done = true;
                    return Ok(None);
                }
            };
            let info = next.info().map_err(StepError::Stream)?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if pending == 0 {
                self.done = true;
            }
            let message = next.split().0;
            return Ok(Some(Record {
                sequence,
                subject: message.subject.to_string(),
                headers: message.headers.unwrap_or_default(),
                payload: message.payload,
            }));
        }
        match self
            .stream
            .direct_get_next_for_subject(self.filter.to_owned(), self.from)
            .await
        {
            Ok(message) => {
                self.direct_reads += 1;
                self.from = Some(message.sequence + 1);
                Ok(Some(Record {
                    sequence: message.sequence,
                    subject: message.subject.to_string(),
                    headers: message.headers,
                    payload: message.payload,
                }))
            }
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => {
                self.done = true;
                Ok(None)
            }
            Err(err) => Err(StepError::Stream(Box::new(err))),
        }
    }
}

/// The headers a released task carries: the delayed message's, minus any `Nats-Expected-*`
/// (meant for the delayed stream), with a `Nats-Msg-Id` derived from the delayed-stream
/// sequence if the producer sent none.
fn task_headers(original: &HeaderMap, sequence: u64) -> (HeaderMap, String) {
    let mut map = HeaderMap::new();
    for (name, values) in original.iter() {
        let name: &str = name.as_ref();
        if name.starts_with("Nats-Expected") {
            continue;
        }
        for value in values {
            map.append(name, value.as_str());
        }
    }
    let id = match original.get(headers::MSG_ID) {
        Some(id) if !id.as_str().is_empty() => id.as_str().to_owned(),
        _ => {
            let id = format!("delayed:{sequence}");
            map.insert(headers::MSG_ID, id.as_str());
            id
        }
    };
    (map, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_kept_except_expectations() {
        let mut original = HeaderMap::new();
        original.insert(headers::MSG_ID, "task-1");
        original.insert(headers::NOT_BEFORE, "2026-11-27T07:00:00Z");
        original.insert("Nats-Expected-Stream", "JETQ_DELAYED");
        original.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let (map, id) = task_headers(&original, 9);
        assert_eq!(id, "task-1");
        assert!(map.get("Nats-Expected-Stream").is_none());
        assert_eq!(
            map.get(headers::NOT_BEFORE).unwrap().as_str(),
            "2026-11-27T07:00:00Z"
        );
        assert!(map.get("traceparent").is_some());
        let (map, id) = task_headers(&HeaderMap::new(), 9);
        assert_eq!(id, "delayed:9");
        assert_eq!(map.get(headers::MSG_ID).unwrap().as_str(), "delayed:9");
    }
}
