//! Detecting handlers that block their thread.
//!
//! An attempt's handler, its heartbeats and its timeout share one async task: a handler that
//! runs CPU-bound code or a blocking call without yielding stops all three. Its heartbeats stop,
//! so the server redelivers it to another worker while it still runs, and its timeout cannot
//! fire. The supported way is `tokio::task::spawn_blocking` with the context's
//! [`cancellation_token`](crate::TaskContext::cancellation_token) (see `docs/RELIABILITY.md`).
//!
//! This module makes the mistake visible. Every poll of a handler's future marks the time it
//! started in a [`Slot`]; a watchdog thread (a plain OS thread, so a blocked async runtime
//! cannot stop it) looks at the running slots a few times per threshold and reports a poll that
//! has held its thread longer than the threshold — once per poll, with the task's id and type —
//! as an error log and the `jetq.tasks.stalled` counter.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use crate::telemetry::{TaskLabels, WorkerMetrics};

/// The longest a handler's poll may hold its thread before it is reported.
const MAX_THRESHOLD: Duration = Duration::from_secs(1);

/// The running attempts of one worker and the watchdog that looks at them.
pub(crate) struct StallWatch {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_key: AtomicU64,
    /// Time base of [`Slot::polling_since`].
    epoch: Instant,
    threshold: Duration,
    metrics: WorkerMetrics,
}

/// One running attempt.
pub(crate) struct Slot {
    /// Milliseconds after the epoch at which the current poll started, plus one; 0 when the
    /// handler is not being polled.
    polling_since: AtomicU64,
    /// The current poll was reported already.
    reported: AtomicBool,
    names: TaskNames,
    labels: TaskLabels,
    /// When the attempt started (for worker presence).
    started_at: SystemTime,
}

/// Which task a slot runs, for the report.
pub(crate) struct TaskNames {
    pub(crate) id: Arc<str>,
    pub(crate) queue: Arc<str>,
    pub(crate) task: Arc<str>,
    /// The attempt number and the task's stream sequence (for worker presence).
    pub(crate) attempt: u32,
    pub(crate) sequence: u64,
    /// The batch the task is a member of (a valid `Jetq-Batch`), for worker presence.
    pub(crate) batch: Option<Arc<str>>,
    /// Cancelled to cancel the task (worker control, `crate::control`): the tracker's token
    /// for a tracked task, the attempt's own otherwise.
    pub(crate) cancel: tokio_util::sync::CancellationToken,
    /// Where the message is acknowledged (`+TERM` of a cancel).
    pub(crate) ack: Option<async_nats::Subject>,
}

/// A running attempt cancelled through worker control.
pub(crate) struct CancelledAttempt {
    pub(crate) sequence: u64,
    pub(crate) attempt: u32,
    pub(crate) ack: Option<async_nats::Subject>,
    pub(crate) cancel: tokio_util::sync::CancellationToken,
}

/// One running attempt as worker presence lists it.
pub(crate) struct RunningAttempt {
    pub(crate) id: Arc<str>,
    pub(crate) queue: Arc<str>,
    pub(crate) task: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) sequence: u64,
    pub(crate) started_at: SystemTime,
    pub(crate) batch: Option<Arc<str>>,
}

impl StallWatch {
    /// A watch reporting polls longer than half the heartbeat interval (at most 1 s): by then a
    /// blocked handler has put its next heartbeat at risk. Starts the watchdog thread, which
    /// ends when the watch is dropped.
    pub(crate) fn start(heartbeat_interval: Duration, metrics: WorkerMetrics) -> Arc<Self> {
        let threshold = (heartbeat_interval / 2).clamp(Duration::from_millis(50), MAX_THRESHOLD);
        let watch = Arc::new(StallWatch {
            slots: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            epoch: Instant::now(),
            threshold,
            metrics,
        });
        let weak = Arc::downgrade(&watch);
        let spawned = std::thread::Builder::new()
            .name("jetq-stall-watch".into())
            .spawn(move || watchdog(weak, threshold / 4));
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "could not start the stall watchdog; blocked handlers are reported only when they yield");
        }
        watch
    }

    /// Wraps a handler's future so its polls are watched while it runs.
    pub(crate) fn watch<F: Future>(
        self: &Arc<Self>,
        names: TaskNames,
        labels: TaskLabels,
        future: F,
    ) -> Watched<F> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            polling_since: AtomicU64::new(0),
            reported: AtomicBool::new(false),
            names,
            labels,
            started_at: SystemTime::now(),
        });
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert(key, slot.clone());
        }
        Watched {
            future,
            slot,
            watch: self.clone(),
            _registered: Registered {
                key,
                watch: Arc::downgrade(self),
            },
        }
    }

    /// The attempts running now, oldest first.
    pub(crate) fn running(&self) -> Vec<RunningAttempt> {
        let mut running: Vec<RunningAttempt> = match self.slots.lock() {
            Ok(slots) => slots
                .values()
                .map(|slot| RunningAttempt {
                    id: slot.names.id.clone(),
                    queue: slot.names.queue.clone(),
                    task: slot.names.task.clone(),
                    attempt: slot.names.attempt,
                    sequence: slot.names.sequence,
                    started_at: slot.started_at,
                    batch: slot.names.batch.clone(),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        running.sort_by_key(|attempt| attempt.started_at);
        running
    }

    /// The running attempts of task `id` (only the one at `sequence` unless it is 0), for
    /// worker control to cancel.
    pub(crate) fn find(&self, id: &str, sequence: u64) -> Vec<CancelledAttempt> {
        match self.slots.lock() {
            Ok(slots) => slots
                .values()
                .filter(|slot| {
                    &*slot.names.id == id && (sequence == 0 || slot.names.sequence == sequence)
                })
                .map(|slot| CancelledAttempt {
                    sequence: slot.names.sequence,
                    attempt: slot.names.attempt,
                    ack: slot.names.ack.clone(),
                    cancel: slot.names.cancel.clone(),
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn now_mark(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Reports `slot` if its current poll has run past the threshold and was not reported.
    fn check(&self, slot: &Slot, now_mark: u64) {
        let since = slot.polling_since.load(Ordering::Acquire);
        if since == 0 {
            return;
        }
        let held = Duration::from_millis(now_mark.saturating_sub(since));
        if held > self.threshold && !slot.reported.swap(true, Ordering::AcqRel) {
            self.report(slot, held, "is still running");
        }
    }

    fn report(&self, slot: &Slot, held: Duration, state: &str) {
        tracing::error!(
            task_id = %slot.names.id,
            queue = %slot.names.queue,
            task = %slot.names.task,
            held = ?held,
            threshold = ?self.threshold,
            "a handler blocked its thread for {held:?} in one poll and {state}: heartbeats and \
             the timeout of its attempt cannot run meanwhile, so the task may be redelivered \
             while it runs. Run blocking or CPU-bound work with tokio::task::spawn_blocking \
             and the context's cancellation_token()"
        );
        self.metrics.stalled(&slot.labels);
    }
}

/// The watchdog thread: looks at every running slot each `period` until the watch is gone.
fn watchdog(watch: Weak<StallWatch>, period: Duration) {
    loop {
        std::thread::sleep(period);
        let Some(watch) = watch.upgrade() else { return };
        let now = watch.now_mark();
        let slots: Vec<Arc<Slot>> = match watch.slots.lock() {
            Ok(slots) => slots.values().cloned().collect(),
            Err(_) => return,
        };
        for slot in slots {
            watch.check(&slot, now);
        }
    }
}

pin_project_lite::pin_project! {
    /// A handler's future whose polls are timed.
    pub(crate) struct Watched<F> {
        #[pin]
        future: F,
        slot: Arc<Slot>,
        watch: Arc<StallWatch>,
        _registered: Registered,
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let started = this.watch.now_mark();
        this.slot.reported.store(false, Ordering::Release);
        this.slot.polling_since.store(started, Ordering::Release);
        let result = this.future.poll(cx);
        this.slot.polling_since.store(0, Ordering::Release);
        let held = Duration::from_millis(this.watch.now_mark().saturating_sub(started));
        if held > this.watch.threshold && !this.slot.reported.swap(true, Ordering::AcqRel) {
            this.watch.report(this.slot, held, "has yielded since");
        }
        result
    }
}

/// Removes a slot from the watch when its attempt's future is dropped.
struct Registered {
    key: u64,
    watch: Weak<StallWatch>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.upgrade() {
            if let Ok(mut slots) = watch.slots.lock() {
                slots.remove(&self.key);
            }
        }
    }
}
