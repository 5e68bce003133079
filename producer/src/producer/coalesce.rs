//! Group commit: concurrent `enqueue` calls share atomic batches — where that is faster.
//!
//! A web app enqueues from many requests at once, each awaiting its own task. Published one by
//! one, each task costs the server a write and — under `sync_interval: always` — a disk sync,
//! so the enqueue rate is bound by the disk whatever the concurrency. Here an `enqueue` can hand
//! its prepared task to one coalescing task per producer, which takes whatever tasks are waiting
//! at that moment (no timer: a lone call goes out at once, alone) and stores them as one atomic
//! batch (`atomic.rs`); while that batch's sync runs, the next calls gather into the next batch.
//! Each caller still awaits its own task's result:
//!
//! - a batch stored whole gives each caller its task's sequence;
//! - a batch the server refuses or does not answer (one caller's key already used, a full
//!   stream, a timeout) is sent again task by task, concurrently, with the same ids, so each
//!   caller gets the answer its task alone would have had: one caller's duplicate or oversized
//!   task never fails another's.
//!
//! **When calls gather** ([`GroupCommit::Auto`], the default) is decided from what this
//! producer measured, not from settings it cannot see. An atomic batch has a fixed cost on the
//! server: on a one-replica file stream nats-server stages every batch in a file store of its
//! own, created and deleted per batch — about 5 ms on the VM of BENCHMARKS.md ("Session 10"),
//! whatever the batch's size and the fsync setting. Under the server's default lazy fsync a
//! lone publish is answered in a fraction of a millisecond, so a batch only delays its callers
//! (at 5,000 enqueues/s: 5.8 ms p50 batched against 0.4 ms alone). Under `sync_interval:
//! always` with many calls at once, lone publishes queue behind each other's disk syncs and a
//! batch answers its callers sooner. So each call predicts when it would be answered alone —
//! the answer time of a lone publish sent with nothing else in flight (round trip and one
//! publish's work), plus, for each lone publish already in flight, the time one such publish
//! recently added (microseconds without disk syncs, a sync each under `sync_interval: always`)
//! — and gathers only when the producer's recent batches were answered sooner than that. Under
//! load this settles where lone and batched callers wait about as long. Lone publishes are
//! judged by their quick answers ([`LowWater`]: a stalled process or a page fault does not
//! count against them) and batches by their mean, so calls gather only where batches are
//! clearly faster; a lone publish that overlapped a batch is not measured (it waited for the
//! batch's commit). A batch estimate older than a second is measured again when the two are
//! within 2×.
//!
//! What `Auto` gives up: under `sync_interval: always` with dozens of callers it settles on a
//! split between lone and batched calls, and the two slow each other down on the server —
//! measured 0.9–1.1× raw with 64 callers where gathering every call ([`GroupCommit::Always`])
//! gave 1.5–1.6× (BENCHMARKS.md, "Session 10"). Holding calls in batches while a pile lasts
//! was tried and not kept: after a stall under lazy fsync it kept calls batched, the costlier
//! mistake (a batch's 5 ms against a lone publish's half millisecond). Deployments that sync
//! every write set `JETQ_GROUP_COMMIT=always`.
//!
//! Used only where atomic batches are (nats-server 2.12+, `JETQ_ATOMIC_BATCHES`), and not with
//! `JETQ_GROUP_COMMIT=off`.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    Arc,
};
use std::time::{Duration, Instant};

use futures::{stream::FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::{atomic, prepared::Prepared, Producer};
use crate::{settings::GroupCommit, EnqueueError, Enqueued};

/// Batches of coalesced calls whose commits are awaited at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// What a batch is taken to cost before one was measured (its staging store cost about this on
/// the design VM): a lone call expected to wait longer (calls queued behind each other's disk
/// syncs) makes the producer try one.
const UNMEASURED_BATCH: Duration = Duration::from_millis(5);

/// Batches after which their moving average gives each new one this share (1/N) of the
/// weight; before, it is the plain mean of them, so a warm-up outlier does not linger.
const BATCH_WINDOW: u64 = 4;

/// How much a lone-publish estimate may rise per sample (1/N of itself): answer times on a
/// busy machine have long tails (a stalled process, a page fault), and a lone publish is
/// judged by what it costs when nothing stalls — batches are judged by their mean, so calls
/// gather only where batches are clearly faster.
const LOW_WATER_RISE: u64 = 10;

/// A batch estimate older than this is measured again when lone publishes come within 2× of
/// it: the server's load and disk change, and an estimate is only refreshed by using it.
const BATCH_ESTIMATE_FRESH_FOR: Duration = Duration::from_secs(1);

/// Longer samples (a reconnect, a server restart) count as this long, so one outage does not
/// decide the next thousand calls.
const LONGEST_SAMPLE: Duration = Duration::from_millis(100);

/// One `enqueue` call waiting for its task's result.
struct Waiting {
    prepared: Prepared,
    reply: oneshot::Sender<Result<Enqueued, EnqueueError>>,
}

/// The handle `enqueue` calls go through; the coalescing task ends when the last handle is
/// dropped.
#[derive(Debug)]
pub(crate) struct Coalescer {
    calls: mpsc::UnboundedSender<Waiting>,
    mode: GroupCommit,
    costs: Arc<Costs>,
}

impl Coalescer {
    /// Starts the coalescing task of `producer` (a clone without a coalescer of its own).
    pub(crate) fn start(producer: Producer, mode: GroupCommit) -> Self {
        let (calls, waiting) = mpsc::unbounded_channel();
        let costs = Arc::new(Costs::new());
        tokio::spawn(run(producer, waiting, costs.clone()));
        Coalescer { calls, mode, costs }
    }

    /// Stores `prepared` — alone, or in the next batch where batches answer sooner — and
    /// returns its result.
    pub(crate) async fn enqueue(
        &self,
        producer: &Producer,
        prepared: Prepared,
    ) -> Result<Enqueued, EnqueueError> {
        let gather = match self.mode {
            GroupCommit::Always => true,
            GroupCommit::Off => false,
            GroupCommit::Auto => self.costs.batches_pay(),
        };
        if !gather {
            return producer.publish_timed(prepared, &self.costs).await;
        }
        let (reply, result) = oneshot::channel();
        if let Err(mpsc::error::SendError(waiting)) = self.calls.send(Waiting { prepared, reply }) {
            // The coalescing task is gone (its runtime shut down): publish alone.
            return producer.publish(waiting.prepared).await;
        }
        match result.await {
            Ok(result) => result,
            Err(_) => {
                // The task dropped the call without answering (its runtime is shutting down):
                // the outcome is unknown, as with a lost connection; a retry with the same key
                // is safe.
                tracing::warn!("the enqueue coalescer stopped before answering");
                Err(EnqueueError::NotConnected {
                    task: "(coalesced enqueue)".into(),
                    attempts: 1,
                })
            }
        }
    }
}

/// Gathers waiting calls into batches until every handle is gone.
async fn run(producer: Producer, mut waiting: mpsc::UnboundedReceiver<Waiting>, costs: Arc<Costs>) {
    let mut committing = FuturesUnordered::new();
    loop {
        tokio::select! {
            first = waiting.recv(), if committing.len() < BATCHES_IN_FLIGHT => {
                let Some(first) = first else { break };
                let mut group = vec![first];
                while group.len() < atomic::MAX_BATCH {
                    match waiting.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                committing.push(producer.enqueue_group(group, &costs));
            }
            Some(()) = committing.next(), if !committing.is_empty() => {}
        }
    }
    while committing.next().await.is_some() {}
}

impl Producer {
    /// Publishes one task alone and adds how long its answer took to `costs`.
    async fn publish_timed(
        &self,
        prepared: Prepared,
        costs: &Costs,
    ) -> Result<Enqueued, EnqueueError> {
        // A tracked task's status record follows its ack: not a cost of storing it.
        let measured = !prepared.tracked;
        // A lone publish that overlapped a batch waited for the batch's commit on the server:
        // its time says nothing of lone publishing (and would make batches look better).
        let quiet = costs.batches_quiet_since();
        let in_flight = costs.lone_publish_starts();
        let started = Instant::now();
        let result = self.publish(prepared).await;
        let took = started.elapsed();
        if measured && result.is_ok() && quiet.is_some() && costs.batches_quiet_since() == quiet {
            costs.lone_answered_in(took, in_flight.alongside);
        }
        result
    }

    /// Stores a group of coalesced calls and answers each.
    async fn enqueue_group(&self, group: Vec<Waiting>, costs: &Costs) {
        if group.len() == 1 || !self.atomic.enabled() {
            let answers = group.into_iter().map(|call| async move {
                let result = self.publish_timed(call.prepared, costs).await;
                let _ = call.reply.send(result);
            });
            futures::future::join_all(answers).await;
            return;
        }
        if group.iter().any(|call| call.prepared.tracked) {
            Box::pin(self.status.open_before_tracked_publish()).await;
        }
        let in_flight = costs.batch_starts();
        let started = Instant::now();
        let batched = {
            let tasks: Vec<&Prepared> = group.iter().map(|call| &call.prepared).collect();
            match self.start_batch(&tasks).await {
                Ok(pending) => self.finish_batch(pending).await,
                Err(batched) => batched,
            }
        };
        match batched {
            atomic::Batched::Stored { last_sequence } => {
                costs.batch_answered_in(started.elapsed());
                drop(in_flight);
                let first = last_sequence + 1 - group.len() as u64;
                for (offset, call) in group.into_iter().enumerate() {
                    let result = self
                        .acked(call.prepared, first + offset as u64, false)
                        .await;
                    let _ = call.reply.send(result);
                }
            }
            atomic::Batched::OneByOne { resend } => {
                let answers = group.into_iter().map(|mut call| async move {
                    call.prepared.resent = resend;
                    let result = self.publish(call.prepared).await;
                    let _ = call.reply.send(result);
                });
                futures::future::join_all(answers).await;
            }
        }
    }
}

/// How long this producer's recent lone publishes and batches took to be answered, in
/// microseconds: low estimates for lone publishes, a moving average for batches. Shared by the
/// calls (which read them) and the coalescing task.
#[derive(Debug)]
pub(crate) struct Costs {
    started: Instant,
    /// Lone publishes awaiting their answer now.
    lone_in_flight: AtomicU64,
    /// The answer time of a lone publish sent with no other in flight: the round trip and
    /// one publish's work on the server.
    alone_floor: LowWater,
    /// What each lone publish already in flight added to a lone publish's answer time (its
    /// time over [`Costs::alone_floor`], divided by those ahead of it): the server's time per
    /// publish — microseconds without disk syncs, a sync each under `sync_interval: always`.
    per_ahead: LowWater,
    /// Batches' answer time.
    batch: Average,
    /// Batches of coalesced calls awaiting their commit now, and ever started.
    batches_in_flight: AtomicU64,
    batches_started: AtomicU64,
    /// When `batch` was last measured: milliseconds since `started`, plus one; 0 never.
    batch_measured_at: AtomicU64,
    /// Whether calls gathered at the last decision (to log the changes).
    gathering: AtomicBool,
}

/// A batch counted in [`Costs::batches_in_flight`] until dropped.
pub(crate) struct BatchInFlight<'a> {
    costs: &'a Costs,
}

impl Drop for BatchInFlight<'_> {
    fn drop(&mut self) {
        self.costs.batches_in_flight.fetch_sub(1, Relaxed);
    }
}

/// A lone publish counted in [`Costs::lone_in_flight`] until dropped (answered or abandoned).
pub(crate) struct LoneInFlight<'a> {
    costs: &'a Costs,
    /// Lone publishes in flight when this one went out, itself included.
    alongside: u64,
}

impl Drop for LoneInFlight<'_> {
    fn drop(&mut self) {
        self.costs.lone_in_flight.fetch_sub(1, Relaxed);
    }
}

impl Costs {
    pub(crate) fn new() -> Self {
        Costs {
            started: Instant::now(),
            lone_in_flight: AtomicU64::new(0),
            alone_floor: LowWater::new(),
            per_ahead: LowWater::new(),
            batch: Average::new(BATCH_WINDOW),
            batches_in_flight: AtomicU64::new(0),
            batches_started: AtomicU64::new(0),
            batch_measured_at: AtomicU64::new(0),
            gathering: AtomicBool::new(false),
        }
    }

    /// Whether the next call would be answered sooner in a batch than alone: alone, it is
    /// expected in [`Costs::alone_floor`] plus [`Costs::per_ahead`] for each lone publish in
    /// flight; in a batch, in the recent batches' time.
    pub(crate) fn batches_pay(&self) -> bool {
        // Alone until a lone publish was measured.
        let Some(floor) = self.alone_floor.micros() else {
            return false;
        };
        let ahead = self.lone_in_flight.load(Relaxed);
        let per_ahead = self.per_ahead.micros().unwrap_or(0);
        let alone = floor.saturating_add(per_ahead.saturating_mul(ahead));
        let batch = self.batch.micros().unwrap_or(micros(UNMEASURED_BATCH));
        let gather =
            batch < alone || (alone.saturating_mul(2) > batch && self.batch_estimate_is_old());
        if self.gathering.swap(gather, Relaxed) != gather {
            tracing::debug!(
                expected_alone_us = alone,
                batch_us = batch,
                "concurrent enqueues now {}",
                if gather {
                    "share atomic batches"
                } else {
                    "publish alone"
                }
            );
        }
        gather
    }

    /// Counts a batch as in flight until the returned guard is dropped.
    pub(crate) fn batch_starts(&self) -> BatchInFlight<'_> {
        self.batches_in_flight.fetch_add(1, Relaxed);
        self.batches_started.fetch_add(1, Relaxed);
        BatchInFlight { costs: self }
    }

    /// `Some(batches started so far)` while no batch is in flight: a lone publish whose start
    /// and answer see the same value overlapped no batch.
    pub(crate) fn batches_quiet_since(&self) -> Option<u64> {
        let started = self.batches_started.load(Relaxed);
        (self.batches_in_flight.load(Relaxed) == 0).then_some(started)
    }

    /// Counts a lone publish as in flight until the returned guard is dropped.
    pub(crate) fn lone_publish_starts(&self) -> LoneInFlight<'_> {
        let before = self.lone_in_flight.fetch_add(1, Relaxed);
        LoneInFlight {
            costs: self,
            alongside: before + 1,
        }
    }

    /// A lone publish sent while `alongside` were in flight (itself included) was answered.
    pub(crate) fn lone_answered_in(&self, took: Duration, alongside: u64) {
        let ahead = alongside.saturating_sub(1);
        if ahead == 0 {
            self.alone_floor.add(took);
            return;
        }
        // Before any publish went out alone there is no floor: the whole time counts.
        let floor = Duration::from_micros(self.alone_floor.micros().unwrap_or(0));
        let ahead = u32::try_from(ahead).unwrap_or(u32::MAX);
        self.per_ahead.add(took.saturating_sub(floor) / ahead);
    }

    pub(crate) fn batch_answered_in(&self, took: Duration) {
        self.batch.add(took);
        self.batch_measured_at.store(self.now(), Relaxed);
    }

    /// Milliseconds since the costs were created, plus one (0 stands for never).
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn batch_estimate_is_old(&self) -> bool {
        match self.batch_measured_at.load(Relaxed) {
            0 => true,
            at => {
                let fresh_for = BATCH_ESTIMATE_FRESH_FOR.as_millis() as u64;
                self.now().saturating_sub(at) > fresh_for
            }
        }
    }
}

/// A robust low estimate of durations in microseconds: falls to any lower sample at once,
/// rises towards higher ones by at most 1/[`LOW_WATER_RISE`] of itself per sample — so a
/// stall's long samples lift it only gradually, and the next quick answer brings it back.
#[derive(Debug)]
struct LowWater {
    /// 0 until a sample was added.
    micros: AtomicU64,
}

impl LowWater {
    fn new() -> Self {
        LowWater {
            micros: AtomicU64::new(0),
        }
    }

    fn add(&self, took: Duration) {
        let sample = micros(took.min(LONGEST_SAMPLE)).max(1);
        let _ = self.micros.fetch_update(Relaxed, Relaxed, |old| {
            Some(match old {
                0 => sample,
                old => sample.min(old + old / LOW_WATER_RISE + 1),
            })
        });
    }

    /// `None` until a sample was added.
    fn micros(&self) -> Option<u64> {
        Some(self.micros.load(Relaxed)).filter(|&micros| micros > 0)
    }
}

/// A moving average of durations in microseconds: the plain mean of its first `window`
/// samples, then an exponential average giving each new sample 1/`window` of the weight.
#[derive(Debug)]
struct Average {
    micros: AtomicU64,
    samples: AtomicU64,
    window: u64,
}

impl Average {
    fn new(window: u64) -> Self {
        Average {
            micros: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            window,
        }
    }

    fn add(&self, took: Duration) {
        let sample = micros(took.min(LONGEST_SAMPLE)).max(1);
        let weight = (self.samples.fetch_add(1, Relaxed) + 1).min(self.window);
        let _ = self.micros.fetch_update(Relaxed, Relaxed, |old| {
            Some((old.saturating_mul(weight - 1).saturating_add(sample)) / weight)
        });
    }

    /// `None` until a sample was added.
    fn micros(&self) -> Option<u64> {
        (self.samples.load(Relaxed) > 0).then(|| self.micros.load(Relaxed))
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Costs with lone publishes and one batch measured (just now): alone they were answered
    /// in `floor_us`, each one ahead added `per_ahead_us`; `in_flight` are in flight now.
    fn costs_with(floor_us: u64, per_ahead_us: u64, in_flight: u64, batch_us: u64) -> Costs {
        let costs = Costs::new();
        costs.lone_answered_in(Duration::from_micros(floor_us), 1);
        costs.lone_answered_in(Duration::from_micros(floor_us + 9 * per_ahead_us), 10);
        costs.batch_answered_in(Duration::from_micros(batch_us));
        costs.lone_in_flight.store(in_flight, Relaxed);
        costs
    }

    #[test]
    fn calls_publish_alone_until_a_lone_publish_was_measured() {
        let costs = Costs::new();
        costs.lone_in_flight.store(1_000, Relaxed);
        assert!(!costs.batches_pay());
    }

    #[test]
    fn a_lone_publish_measures_the_floor_alone_and_the_time_per_publish_ahead_otherwise() {
        let costs = Costs::new();
        costs.lone_answered_in(Duration::from_micros(300), 1);
        assert_eq!(costs.alone_floor.micros(), Some(300));
        assert_eq!(costs.per_ahead.micros(), None);
        // 64 in flight (itself included) answered in 0.93 ms: 10 µs for each of 63 ahead.
        costs.lone_answered_in(Duration::from_micros(930), 64);
        assert_eq!(costs.per_ahead.micros(), Some(10));
        costs.lone_answered_in(Duration::from_micros(500), 1);
        assert_eq!(
            costs.alone_floor.micros(),
            Some(331),
            "rises by a tenth at most"
        );
        costs.lone_answered_in(Duration::from_micros(250), 1);
        assert_eq!(costs.alone_floor.micros(), Some(250), "falls at once");
    }

    #[test]
    fn a_stall_lifts_a_low_water_mark_gradually_and_one_quick_answer_brings_it_back() {
        let low = LowWater::new();
        low.add(Duration::from_micros(10));
        for _ in 0..5 {
            low.add(Duration::from_millis(50));
        }
        assert!(low.micros().is_some_and(|m| m <= 20), "{:?}", low.micros());
        low.add(Duration::from_micros(12));
        assert_eq!(low.micros(), Some(12));
    }

    #[test]
    fn an_average_settles_into_a_moving_average_after_its_window() {
        let average = Average::new(4);
        for _ in 0..4 {
            average.add(Duration::from_micros(3_000));
        }
        assert_eq!(average.micros(), Some(3_000));
        average.add(Duration::from_micros(7_000));
        assert_eq!(
            average.micros(),
            Some(4_000),
            "a quarter of the way to 7 ms"
        );
    }

    #[test]
    fn in_flight_counts_until_the_publish_is_answered_or_abandoned() {
        let costs = Costs::new();
        let first = costs.lone_publish_starts();
        let second = costs.lone_publish_starts();
        assert_eq!((first.alongside, second.alongside), (1, 2));
        assert_eq!(costs.lone_in_flight.load(Relaxed), 2);
        drop(first);
        drop(second);
        assert_eq!(costs.lone_in_flight.load(Relaxed), 0);
    }

    #[test]
    fn a_batch_in_flight_marks_lone_publishes_beside_it() {
        let costs = Costs::new();
        let quiet = costs.batches_quiet_since();
        assert_eq!(quiet, Some(0));
        let batch = costs.batch_starts();
        assert_eq!(costs.batches_quiet_since(), None, "during the batch");
        drop(batch);
        assert_eq!(costs.batches_quiet_since(), Some(1));
        assert_ne!(costs.batches_quiet_since(), quiet, "a batch came and went");
    }

    #[test]
    fn lazy_fsync_publishes_alone_even_with_many_in_flight() {
        // A 0.3 ms round trip, 10 µs per publish ahead (no disk sync), 63 in flight: answered
        // in under a millisecond alone, against batches answered in 5 ms.
        let costs = costs_with(300, 10, 63, 5_000);
        assert!(!costs.batches_pay());
        // A 20-publish hiccup of an open-loop sender does not tip it either.
        let costs = costs_with(300, 30, 20, 5_000);
        assert!(!costs.batches_pay());
    }

    #[test]
    fn sync_always_gathers_once_lone_publishes_queue_behind_each_others_syncs() {
        // 280 µs per publish ahead (an fsync each): the first alone is answered in 0.7 ms,
        // sooner than an 8 ms batch; with 63 ahead, in 18 ms, later.
        let costs = costs_with(700, 280, 0, 8_000);
        assert!(!costs.batches_pay(), "alone");
        costs.lone_in_flight.store(63, Relaxed);
        assert!(costs.batches_pay(), "63 ahead");
    }

    #[test]
    fn an_old_batch_estimate_is_tried_again_only_near_the_crossover() {
        let costs = Costs {
            started: Instant::now() - Duration::from_secs(5),
            ..costs_with(300, 300, 9, 5_000)
        };
        costs.batch_measured_at.store(costs.now(), Relaxed);
        assert!(
            !costs.batches_pay(),
            "3 ms alone against 5 ms batches measured just now"
        );
        // Measured when the producer started, five seconds ago.
        costs.batch_measured_at.store(1, Relaxed);
        assert!(
            costs.batches_pay(),
            "3 ms alone is within 2x of an old 5 ms estimate"
        );
        costs.lone_in_flight.store(2, Relaxed);
        assert!(
            !costs.batches_pay(),
            "0.9 ms alone is far from an old 5 ms estimate"
        );
    }

    #[test]
    fn an_outage_counts_as_a_long_sample_not_as_a_minute() {
        let costs = Costs::new();
        costs.lone_answered_in(Duration::from_secs(60), 1);
        assert_eq!(costs.alone_floor.micros(), Some(micros(LONGEST_SAMPLE)));
    }
}
