//! Queue statistics, read from JetStream's own state: the durable consumers of each queue
//! (pending, in flight, redelivered, paused), the per-subject message counts of the task,
//! dead-letter and delayed-task streams, and rates from two samples.
//!
//! A queue has one durable consumer per priority level (PROTOCOL §12): `worker-<queue>`
//! (`normal`), `worker-<queue>~high` and `worker-<queue>~low`, and its tasks wait on
//! `<prefix>.task.<queue>[~<level>].*`. The levels are one queue here: their numbers are summed
//! into the queue's row, with the pending tasks of each level in
//! [`QueueStats::pending_by_priority`].

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream::{consumer, stream::Stream};
use futures::TryStreamExt;
use jetq_contract::Priority;
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    admin::{format_time, Admin},
    error::AdminError,
};

/// One queue's numbers at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    /// The queue name (without a level).
    pub queue: String,
    /// The durable consumer of the queue (`worker-<queue>`, the `normal` level's), `null` if no
    /// worker created it yet. (If only a level's durable exists, that one.)
    pub consumer: Option<String>,
    /// Every durable consumer of the queue that exists, one per level, highest level first
    /// (`worker-<queue>~high`, `worker-<queue>`, `worker-<queue>~low`); empty without a
    /// worker. A worker older than priorities created only `worker-<queue>`.
    pub consumers: Vec<String>,
    /// Tasks not delivered to any worker yet, all levels together.
    pub pending: u64,
    /// The pending tasks of each level (they add up to `pending`).
    pub pending_by_priority: ByPriority,
    /// Tasks delivered and not yet acknowledged (running, or waiting for a retry's backoff).
    pub in_flight: u64,
    /// The queue's cluster-wide in-flight cap (`max_ack_pending`) of the `normal` level's
    /// consumer, `null` without a consumer. Each level's consumer has this cap of its own
    /// (workers create all three with the same settings), so up to three times as many tasks
    /// can be in flight when every level has work.
    pub max_in_flight: Option<i64>,
    /// Tasks in flight that were delivered more than once (retries, crashed workers).
    pub redelivered: u64,
    /// Pull requests from workers waiting for work right now (0: no idle worker is connected).
    pub waiting_pulls: u64,
    /// Tasks of this queue stored in the task stream (`pending + in_flight` with a consumer; on
    /// a Limits task stream also finished tasks until the next purge, at most about
    /// `JETQ_PURGE_INTERVAL` of them).
    pub stored: u64,
    /// Stored tasks that are neither pending nor in flight: every delivery was spent and the
    /// task is waiting for the sweeper to dead-letter it (on a Limits task stream, where acked
    /// tasks stay stored until the next purge, the count of unswept max-deliveries advisories) — or the dead-letter write keeps
    /// failing (see `jetq.tasks.dead_letter_failures` and the workers' logs). Such a task is in
    /// no other list; a number that stays above zero needs an operator. (Stream and consumer
    /// are read one after the other, so a task that moves in between can show here for one
    /// sample.)
    pub stranded: u64,
    /// Dead letters of this queue.
    pub dead: u64,
    /// Delayed tasks of this queue waiting for their due time.
    pub delayed: u64,
    /// Whether delivery is paused (nats-server 2.11+): true when the consumers of all levels
    /// are paused, as `jetq pause` leaves them.
    pub paused: bool,
    /// Until when, RFC 3339 UTC, while paused (the earliest end among the levels).
    pub pause_until: Option<String>,
    /// The levels whose consumer is paused (`high`, `normal`, `low`). Equal to every level
    /// the queue has a consumer for when `paused`; a non-empty list with `paused` false means
    /// the queue is only partly paused (a level's consumer was paused by other means, or was
    /// created after the pause by an older or newer worker): `jetq pause`/`resume` set all.
    pub paused_levels: Vec<String>,
    /// Deliveries made by the consumer so far, retries included.
    pub delivered_total: u64,
    /// Rates over the sampling interval, when two samples were taken.
    pub rate: Option<QueueRate>,
}

impl QueueStats {
    /// The queue's state as the CLI and the dashboard show it: `paused until <time>`, `paused`
    /// (until resumed), `no worker yet` (no durable consumer: no worker ever started), or
    /// `active`.
    ///
    /// A queue whose levels are not all paused says which are: `partly paused (high)`.
    pub fn state(&self) -> String {
        match (&self.pause_until, self.paused, &self.consumer) {
            (Some(until), true, _) => format!("paused until {until}"),
            (None, true, _) => "paused".into(),
            (_, false, _) if !self.paused_levels.is_empty() => {
                format!("partly paused ({})", self.paused_levels.join(", "))
            }
            (_, false, None) => "no worker yet".into(),
            (_, false, Some(_)) => "active".into(),
        }
    }

    /// The PENDING cell as the CLI prints it: the number, followed by the pending tasks of
    /// each level that has some when a level other than `normal` has pending tasks
    /// (`12 (high 5, normal 7)`); the number alone otherwise.
    ///
    /// ```
    /// let mut q = jetq_cli::stats::QueueStats::empty("emails");
    /// q.pending = 7;
    /// q.pending_by_priority.normal = 7;
    /// assert_eq!(q.pending_text(), "7");
    /// q.pending = 12;
    /// q.pending_by_priority.high = 5;
    /// assert_eq!(q.pending_text(), "12 (high 5, normal 7)");
    /// ```
    pub fn pending_text(&self) -> String {
        let by = &self.pending_by_priority;
        if by.high == 0 && by.low == 0 {
            return self.pending.to_string();
        }
        let levels: Vec<String> = Priority::ALL
            .into_iter()
            .filter(|level| by.get(*level) > 0)
            .map(|level| format!("{level} {}", by.get(level)))
            .collect();
        format!("{} ({})", self.pending, levels.join(", "))
    }

    /// A queue with no numbers yet.
    pub fn empty(queue: &str) -> QueueStats {
        empty(queue)
    }
}

/// A count for each priority level of a queue (pending tasks, tasks purged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByPriority {
    /// At `high`.
    pub high: u64,
    /// At `normal`.
    pub normal: u64,
    /// At `low`.
    pub low: u64,
}

impl ByPriority {
    /// The count of `level`.
    pub fn get(&self, level: Priority) -> u64 {
        match level {
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }

    pub(crate) fn slot(&mut self, level: Priority) -> &mut u64 {
        match level {
            Priority::High => &mut self.high,
            Priority::Normal => &mut self.normal,
            Priority::Low => &mut self.low,
        }
    }
}

/// Rates of one queue between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QueueRate {
    /// Deliveries to workers per second (retries included): how fast workers take tasks.
    pub delivered_per_sec: f64,
    /// Change of the stored backlog per second: positive while the queue grows.
    pub backlog_per_sec: f64,
    /// New dead letters per second.
    pub dead_per_sec: f64,
}

/// Rates of the whole installation between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TotalRate {
    /// The interval between the two samples, in seconds.
    pub interval_secs: f64,
    /// Tasks stored in the task stream per second (enqueues, replays and releases; duplicates
    /// dropped by the server are not counted).
    pub enqueued_per_sec: f64,
    /// Tasks that left the task stream per second (done, or moved to dead letters).
    pub completed_per_sec: f64,
}

/// Every queue's numbers at one moment, plus stream totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    /// When the sample was taken, RFC 3339 UTC.
    pub at: String,
    /// The server's version.
    pub server_version: String,
    /// Messages in the task stream.
    pub tasks_stored: u64,
    /// The task stream's last sequence: how many tasks were ever stored.
    pub tasks_last_sequence: u64,
    /// Messages in the dead-letter stream.
    pub dead_total: u64,
    /// Delayed tasks waiting.
    pub delayed_total: u64,
    /// Per queue, sorted by name.
    pub queues: Vec<QueueStats>,
    /// Totals' rates, when two samples were taken.
    pub rate: Option<TotalRate>,
    /// When the sample was taken, for rates.
    #[serde(skip)]
    pub taken: Option<Instant>,
}

impl Overview {
    /// The named queue's stats.
    pub fn queue(&self, name: &str) -> Option<&QueueStats> {
        self.queues.iter().find(|q| q.queue == name)
    }

    /// Fills in the rates of `self` from an earlier sample.
    pub fn rates_since(&mut self, earlier: &Overview) {
        let (Some(now), Some(then)) = (self.taken, earlier.taken) else {
            return;
        };
        let secs = now.saturating_duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let per_sec = |new: u64, old: u64| (new as f64 - old as f64) / secs;
        let enqueued = per_sec(self.tasks_last_sequence, earlier.tasks_last_sequence).max(0.0);
        let stored = per_sec(self.tasks_stored, earlier.tasks_stored);
        self.rate = Some(TotalRate {
            interval_secs: secs,
            enqueued_per_sec: enqueued,
            completed_per_sec: (enqueued - stored).max(0.0),
        });
        for queue in &mut self.queues {
            let old = earlier.queue(&queue.queue);
            let old_delivered = old.map_or(queue.delivered_total, |o| o.delivered_total);
            queue.rate = Some(QueueRate {
                // A consumer re-created in between starts counting again: no negative rates.
                delivered_per_sec: per_sec(queue.delivered_total, old_delivered).max(0.0),
                backlog_per_sec: per_sec(queue.stored, old.map_or(0, |o| o.stored)),
                dead_per_sec: per_sec(queue.dead, old.map_or(0, |o| o.dead)).max(0.0),
            });
        }
    }
}

impl Admin {
    /// Every queue's numbers now (no rates).
    ///
    /// Queues are the union of the durable consumers `worker-<queue>[~<level>]` on the task
    /// stream and the queues that have stored tasks, dead letters or delayed tasks; the levels
    /// of a queue (PROTOCOL §12) are summed into one row. A subject or consumer whose level
    /// suffix is not one of ours (no consumer ever pulls it) is shown as a queue of its own,
    /// under its raw token, so that nothing stored goes unseen.
    pub async fn overview(&self) -> Result<Overview, AdminError> {
        let subjects = self.subjects().clone();
        let mut tasks = self.tasks_stream().await?;
        let taken = Instant::now();
        let info = tasks
            .info()
            .await
            .map_err(|err| AdminError::nats("cannot read the task stream", err))?
            .clone();

        let stored = subject_counts(&tasks, &subjects.all_tasks(), |s| {
            task_token(s, subjects.prefix()).map(queue_level)
        })
        .await?;
        let dead = match self.dead_stream().await? {
            Some(stream) => {
                subject_counts(&stream, &subjects.all_dead(), |s| {
                    subjects.parse_dead(s).map(|(q, _)| q.to_owned())
                })
                .await?
            }
            None => BTreeMap::new(),
        };
        let delayed = match self.optional_stream(&subjects.delayed_stream()).await? {
            Some(stream) => {
                subject_counts(&stream, &subjects.all_delayed(), |s| {
                    subjects
                        .parse_delayed(s)
                        .map(|(_, token, _)| queue_level(token).0)
                })
                .await?
            }
            None => BTreeMap::new(),
        };

        let mut levels: BTreeMap<(String, Priority), Level> = BTreeMap::new();
        let mut consumers = tasks.consumers();
        while let Some(consumer) = consumers
            .try_next()
            .await
            .map_err(|err| AdminError::nats("cannot list the task stream's consumers", err))?
        {
            let Some(token) = consumer.name.strip_prefix("worker-") else {
                continue;
            };
            if token.is_empty() {
                continue;
            }
            let key = queue_level(token);
            levels.entry(key).or_default().consumer = Some(consumer);
        }
        for (key, count) in &stored {
            levels.entry(key.clone()).or_default().stored = *count;
        }
        // On a Limits task stream (JETQ_TASK_RETENTION=limits, docs/DURABLE_DRAIN.md) acked
        // tasks stay stored until the next purge: "stored but neither pending nor in flight"
        // is then mostly finished work. The stranded tasks are those the advisories name and
        // the sweeper has not taken yet.
        if info.config.retention == async_nats::jetstream::stream::RetentionPolicy::Limits {
            let unswept = match self.optional_stream(&subjects.advisories_stream()).await? {
                Some(stream) => {
                    subject_counts(&stream, &subjects.max_deliveries_advisory(), |s| {
                        s.rsplit('.')
                            .next()
                            .and_then(|durable| durable.strip_prefix("worker-"))
                            .filter(|token| !token.is_empty())
                            .map(queue_level)
                    })
                    .await?
                }
                None => BTreeMap::new(),
            };
            for level in levels.values_mut() {
                level.unswept = Some(0);
            }
            for (key, count) in unswept {
                levels.entry(key).or_default().unswept = Some(count);
            }
        }

        let mut queues: BTreeMap<String, QueueStats> = BTreeMap::new();
        for ((queue, level), numbers) in levels {
            let entry = queues.entry(queue.clone()).or_insert_with(|| empty(&queue));
            entry.add_level(level, numbers);
        }
        for entry in queues.values_mut() {
            entry.finish_levels();
        }
        for (queue, count) in &dead {
            queues
                .entry(queue.clone())
                .or_insert_with(|| empty(queue))
                .dead = *count;
        }
        for (queue, count) in &delayed {
            queues
                .entry(queue.clone())
                .or_insert_with(|| empty(queue))
                .delayed = *count;
        }
        Ok(Overview {
            at: jetq_contract::time::now(),
            server_version: self.server_version_text(),
            tasks_stored: info.state.messages,
            tasks_last_sequence: info.state.last_sequence,
            dead_total: dead.values().sum(),
            delayed_total: delayed.values().sum(),
            queues: queues.into_values().collect(),
            rate: None,
            taken: Some(taken),
        })
    }

    /// Two samples `interval` apart, the second with rates. A zero interval takes one sample
    /// and leaves the rates empty.
    pub async fn overview_sampled(&self, interval: Duration) -> Result<Overview, AdminError> {
        let first = self.overview().await?;
        if interval.is_zero() {
            return Ok(first);
        }
        tokio::time::sleep(interval).await;
        let mut second = self.overview().await?;
        second.rates_since(&first);
        Ok(second)
    }

    /// One queue's numbers; an error if no queue of that name is known.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, AdminError> {
        jetq_contract::name::validate(jetq_contract::NameKind::Queue, queue)?;
        self.overview()
            .await?
            .queues
            .into_iter()
            .find(|q| q.queue == queue)
            .ok_or_else(|| unknown_queue(queue))
    }
}

/// One level of one queue as read: its durable consumer, if one exists, and its stored tasks.
#[derive(Default)]
struct Level {
    consumer: Option<consumer::Info>,
    stored: u64,
    /// On a Limits task stream: the max-deliveries advisories the sweeper has not taken.
    unswept: Option<u64>,
}

impl QueueStats {
    /// Adds one level's numbers to the queue's (levels arrive highest first).
    fn add_level(&mut self, level: Priority, numbers: Level) {
        self.stored += numbers.stored;
        let Some(consumer) = numbers.consumer else {
            // No consumer of this level yet: every stored task of it waits.
            self.pending += numbers.stored;
            *self.pending_by_priority.slot(level) += numbers.stored;
            return;
        };
        let pending = consumer.num_pending;
        let in_flight = consumer.num_ack_pending as u64;
        self.pending += pending;
        *self.pending_by_priority.slot(level) += pending;
        self.in_flight += in_flight;
        self.redelivered += consumer.num_redelivered as u64;
        self.waiting_pulls += consumer.num_waiting as u64;
        self.delivered_total += consumer.delivered.consumer_sequence;
        self.stranded += match numbers.unswept {
            Some(unswept) => unswept,
            None => numbers.stored.saturating_sub(pending + in_flight),
        };
        if self.consumer.is_none() || level == Priority::Normal {
            self.consumer = Some(consumer.name.clone());
            self.max_in_flight = Some(consumer.config.max_ack_pending);
        }
        self.consumers.push(consumer.name.clone());
        if consumer.paused {
            self.paused_levels.push(level.as_str().to_owned());
            // The earliest end: when the first level delivers again.
            let earlier = self
                .pause_until
                .as_deref()
                .and_then(jetq_contract::time::parse);
            if let Some(until) = consumer.config.pause_until {
                if earlier.is_none_or(|earlier| std::time::SystemTime::from(until) < earlier) {
                    self.pause_until = Some(format_time(until));
                }
            }
        }
    }

    /// Settles the pause once every level was added: paused only if every level that has a
    /// consumer is.
    fn finish_levels(&mut self) {
        self.paused =
            !self.consumers.is_empty() && self.paused_levels.len() == self.consumers.len();
        if !self.paused {
            self.pause_until = None;
        }
    }
}

/// A subject token's queue and level; a token with a level suffix that is not one of ours is
/// kept whole (as `normal`), so its tasks show under their own name.
fn queue_level(token: &str) -> (String, Priority) {
    match Priority::split_queue_token(token) {
        Some((queue, level)) => (queue.to_owned(), level),
        None => (token.to_owned(), Priority::Normal),
    }
}

/// The queue token of a task subject `<prefix>.task.<token>.<task>`, level suffix included.
fn task_token<'a>(subject: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix(".task.")?;
    let (token, task) = rest.split_once('.')?;
    if token.is_empty() || task.is_empty() || task.contains('.') {
        return None;
    }
    Some(token)
}

/// The error for a queue nobody has heard of.
pub(crate) fn unknown_queue(queue: &str) -> AdminError {
    AdminError::not_found(
        format!("queue {queue}"),
        Some(
            "no worker has created its consumer and it has no tasks or dead letters; \
             `jetq queues` lists the known queues"
                .into(),
        ),
    )
}

fn empty(queue: &str) -> QueueStats {
    QueueStats {
        queue: queue.to_owned(),
        consumer: None,
        consumers: Vec::new(),
        pending: 0,
        pending_by_priority: ByPriority::default(),
        in_flight: 0,
        max_in_flight: None,
        redelivered: 0,
        waiting_pulls: 0,
        stored: 0,
        stranded: 0,
        dead: 0,
        delayed: 0,
        paused: false,
        pause_until: None,
        paused_levels: Vec::new(),
        delivered_total: 0,
        rate: None,
    }
}

/// Message counts per queue (or other key) of a stream, from its per-subject counts.
pub(crate) async fn subject_counts<K: Ord>(
    stream: &Stream,
    filter: &str,
    queue_of: impl Fn(&str) -> Option<K>,
) -> Result<BTreeMap<K, u64>, AdminError> {
    let name = stream.cached_info().config.name.clone();
    let mut counts = BTreeMap::new();
    let mut subjects = stream
        .info_with_subjects(filter)
        .await
        .map_err(|err| AdminError::nats(format!("cannot read stream {name}"), err))?;
    while let Some((subject, count)) = subjects
        .try_next()
        .await
        .map_err(|err| AdminError::nats(format!("cannot read the subjects of {name}"), err))?
    {
        if let Some(queue) = queue_of(&subject) {
            *counts.entry(queue).or_insert(0) += count as u64;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, last: u64, stored: u64, delivered: u64) -> Overview {
        let mut queue = empty("q");
        queue.delivered_total = delivered;
        queue.stored = stored;
        Overview {
            at: String::new(),
            server_version: String::new(),
            tasks_stored: stored,
            tasks_last_sequence: last,
            dead_total: 0,
            delayed_total: 0,
            queues: vec![queue],
            rate: None,
            taken: Some(at),
        }
    }

    #[test]
    fn a_queue_state_says_paused_until_no_worker_or_active() {
        let mut queue = empty("q");
        assert_eq!(queue.state(), "no worker yet");
        queue.consumer = Some("worker-q".into());
        assert_eq!(queue.state(), "active");
        queue.paused = true;
        assert_eq!(queue.state(), "paused");
        queue.pause_until = Some("2026-11-27T07:00:00Z".into());
        assert_eq!(queue.state(), "paused until 2026-11-27T07:00:00Z");
        queue.paused = false;
        queue.pause_until = None;
        queue.paused_levels = vec!["high".into()];
        assert_eq!(queue.state(), "partly paused (high)");
    }

    #[test]
    fn rates_from_two_samples() {
        let t0 = Instant::now();
        let first = sample(t0, 100, 50, 10);
        let mut second = sample(t0 + Duration::from_secs(2), 120, 40, 40);
        second.rates_since(&first);
        let total = second.rate.unwrap();
        assert_eq!(total.enqueued_per_sec, 10.0);
        // 20 stored, backlog fell by 10: 30 left in 2 s.
        assert_eq!(total.completed_per_sec, 15.0);
        let queue = second.queues[0].rate.unwrap();
        assert_eq!(queue.delivered_per_sec, 15.0);
        assert_eq!(queue.backlog_per_sec, -5.0);
    }
}

/// A rate as the CLI and the dashboard print it: a whole number per second (`805/s`), `<1/s`
/// for a trickle above zero, `0/s` for none. JSON output keeps the exact value.
pub fn format_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        "0/s".into()
    } else if per_sec < 0.5 {
        "<1/s".into()
    } else {
        format!("{:.0}/s", per_sec.round())
    }
}

#[cfg(test)]
mod rate_tests {
    use super::format_rate;

    #[test]
    fn rates_are_whole_numbers_per_second() {
        assert_eq!(format_rate(804.947), "805/s");
        assert_eq!(format_rate(12.4), "12/s");
        assert_eq!(format_rate(0.6), "1/s");
        assert_eq!(format_rate(0.2), "<1/s");
        assert_eq!(format_rate(0.0), "0/s");
        assert_eq!(format_rate(-1.0), "0/s");
        assert_eq!(format_rate(f64::NAN), "0/s");
    }
}
