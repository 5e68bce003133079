//! Queue statistics, read from JetStream's own state: the durable consumer `worker-<queue>` of
//! each queue (pending, in flight, redelivered, paused), the per-subject message counts of the
//! task, dead-letter and delayed-task streams, and rates from two samples.

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream::stream::Stream;
use futures::TryStreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    admin::{format_time, Admin},
    error::AdminError,
};

/// One queue's numbers at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    /// The queue name.
    pub queue: String,
    /// The durable consumer of the queue (`worker-<queue>`), `null` if no worker created it yet.
    pub consumer: Option<String>,
    /// Tasks not delivered to any worker yet.
    pub pending: u64,
    /// Tasks delivered and not yet acknowledged (running, or waiting for a retry's backoff).
    pub in_flight: u64,
    /// The queue's cluster-wide in-flight cap (`max_ack_pending`), `null` without a consumer.
    pub max_in_flight: Option<i64>,
    /// Tasks in flight that were delivered more than once (retries, crashed workers).
    pub redelivered: u64,
    /// Pull requests from workers waiting for work right now (0: no idle worker is connected).
    pub waiting_pulls: u64,
    /// Tasks of this queue stored in the task stream (`pending + in_flight` with a consumer).
    pub stored: u64,
    /// Stored tasks that are neither pending nor in flight: every delivery was spent and the
    /// task is waiting for the sweeper to dead-letter it — or the dead-letter write keeps
    /// failing (see `jetq.tasks.dead_letter_failures` and the workers' logs). Such a task is in
    /// no other list; a number that stays above zero needs an operator. (Stream and consumer
    /// are read one after the other, so a task that moves in between can show here for one
    /// sample.)
    pub stranded: u64,
    /// Dead letters of this queue.
    pub dead: u64,
    /// Delayed tasks of this queue waiting for their due time.
    pub delayed: u64,
    /// Whether delivery is paused (nats-server 2.11+).
    pub paused: bool,
    /// Until when, RFC 3339 UTC, while paused.
    pub pause_until: Option<String>,
    /// Deliveries made by the consumer so far, retries included.
    pub delivered_total: u64,
    /// Rates over the sampling interval, when two samples were taken.
    pub rate: Option<QueueRate>,
}

impl QueueStats {
    /// The queue's state as the CLI and the dashboard show it: `paused until <time>`, `paused`
    /// (until resumed), `no worker yet` (no durable consumer: no worker ever started), or
    /// `active`.
    pub fn state(&self) -> String {
        match (&self.pause_until, self.paused, &self.consumer) {
            (Some(until), true, _) => format!("paused until {until}"),
            (None, true, _) => "paused".into(),
            (_, false, None) => "no worker yet".into(),
            (_, false, Some(_)) => "active".into(),
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
    /// Queues are the union of the durable consumers `worker-<queue>` on the task stream and the
    /// queues that have stored tasks, dead letters or delayed tasks.
    pub async fn overview(&self) -> Result<Overview, AdminError> {
        let subjects = self.subjects().clone();
        let mut tasks = self.tasks_stream().await?;
        let taken = Instant::now();
        let info = tasks
            .info()
            .await
            .map_err(|err| AdminError::nats("cannot read the task stream", err))?
            .clone();
        let mut queues: BTreeMap<String, QueueStats> = BTreeMap::new();

        let stored = subject_counts(&tasks, &subjects.all_tasks(), |s| {
            subjects.parse_task(s).map(|(q, _)| q.to_owned())
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
                    subjects.parse_delayed(s).map(|(_, q, _)| q.to_owned())
                })
                .await?
            }
            None => BTreeMap::new(),
        };

        let mut consumers = tasks.consumers();
        while let Some(consumer) = consumers
            .try_next()
            .await
            .map_err(|err| AdminError::nats("cannot list the task stream's consumers", err))?
        {
            let Some(queue) = consumer.name.strip_prefix("worker-") else {
                continue;
            };
            if consumer.name != subjects.durable(queue) {
                continue;
            }
            let entry = queues
                .entry(queue.to_owned())
                .or_insert_with(|| empty(queue));
            entry.consumer = Some(consumer.name.clone());
            entry.pending = consumer.num_pending;
            entry.in_flight = consumer.num_ack_pending as u64;
            entry.max_in_flight = Some(consumer.config.max_ack_pending);
            entry.redelivered = consumer.num_redelivered as u64;
            entry.waiting_pulls = consumer.num_waiting as u64;
            entry.delivered_total = consumer.delivered.consumer_sequence;
            entry.paused = consumer.paused;
            if consumer.paused {
                entry.pause_until = consumer.config.pause_until.map(format_time);
            }
        }
        for (queue, count) in &stored {
            let entry = queues.entry(queue.clone()).or_insert_with(|| empty(queue));
            entry.stored = *count;
            if entry.consumer.is_none() {
                entry.pending = *count;
            }
        }
        for entry in queues.values_mut() {
            if entry.consumer.is_some() {
                entry.stranded = entry.stored.saturating_sub(entry.pending + entry.in_flight);
            }
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
        pending: 0,
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
        delivered_total: 0,
        rate: None,
    }
}

/// Message counts per queue of a stream, from its per-subject counts.
pub(crate) async fn subject_counts(
    stream: &Stream,
    filter: &str,
    queue_of: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, u64>, AdminError> {
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
