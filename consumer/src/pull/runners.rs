//! The tokio tasks that run a queue's tasks — *runners* — and when the pull loop starts
//! another one.
//!
//! A runner holds one of the queue's slots (`JETQ_CONCURRENCY`), runs a task, then takes the
//! next task from the [`Backlog`] itself, until the backlog is empty; then it gives its slot
//! back. The pull loop starts a new runner only when no running one will take the next task
//! soon: every runner's task is suspended (it awaits I/O: a request, a query, a timer), or
//! nothing was taken from the backlog for [`BUSY_AFTER`] (the runners are computing).
//!
//! Why not a runner per task, all slots in use at once: on a multi-thread runtime the runners
//! then run side by side on every thread, and short tasks pay for it — each task a spawn, its
//! slot's release waking the pull loop on another thread, the client's connection task
//! competing for the threads with the handlers, and acks leaving in any order (which costs
//! nats-server more per delete than acks in order). One runner chaining short tasks drained
//! 100k no-op tasks/s on the 2-core bench machine where 16 side by side drained 80k
//! (BENCHMARKS.md, session 9). Tasks that await start more runners at once, so a queue of
//! I/O-bound tasks still has `JETQ_CONCURRENCY` of them in flight. A handler that computes
//! without awaiting gets another runner behind it after [`BUSY_AFTER`] if the pull loop gets a
//! thread meanwhile; one that blocks its thread may hold the tasks behind it until it ends
//! (tokio cannot move work queued on a blocked thread). Such work belongs in
//! `tokio::task::spawn_blocking`, awaited: the task then counts as suspended.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use async_nats::jetstream;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::backlog::Backlog;
use crate::execution::Executor;

/// Nothing taken from the backlog for this long while slots are free: the runners are busy
/// computing, and another one starts.
pub(super) const BUSY_AFTER: Duration = Duration::from_millis(1);

/// One queue's runners; see the module documentation.
pub(super) struct Runners {
    executor: Arc<Executor>,
    backlog: Arc<Backlog>,
    stop: CancellationToken,
    /// Runners started and not stopped.
    active: AtomicUsize,
    /// Runners whose current task is suspended: they take no next task until it resumes and
    /// ends.
    suspended: AtomicUsize,
    /// Wakes the pull loop: a runner's task suspended while tasks wait in the backlog.
    wanted: Notify,
}

impl Runners {
    pub(super) fn new(
        executor: Arc<Executor>,
        backlog: Arc<Backlog>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Runners {
            executor,
            backlog,
            stop,
            active: AtomicUsize::new(0),
            suspended: AtomicUsize::new(0),
            wanted: Notify::new(),
        })
    }

    /// How many runners will take a next task without waiting for I/O.
    pub(super) fn ready(&self) -> usize {
        let active = self.active.load(Ordering::Acquire);
        active.saturating_sub(self.suspended.load(Ordering::Acquire))
    }

    /// Resolves when a runner's task suspended while tasks waited in the backlog.
    pub(super) async fn wanted(&self) {
        self.wanted.notified().await
    }

    /// Starts a runner on `message`, holding `permit` until it stops.
    pub(super) fn start(
        self: &Arc<Self>,
        message: jetstream::Message,
        permit: OwnedSemaphorePermit,
    ) {
        self.active.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(self.clone().run(message, permit));
    }

    async fn run(self: Arc<Self>, mut message: jetstream::Message, permit: OwnedSemaphorePermit) {
        loop {
            let started = Instant::now();
            // Boxed: the processing future is ~4.5 KB, which tokio would otherwise copy into
            // each task's cell and again when it ends. (Its rare paths are boxed inside, or it
            // would be twice that.)
            let task = Box::pin(self.executor.clone().process(message));
            Watched {
                task,
                runners: &self,
                suspended: false,
            }
            .await;
            // Once the worker stops, what waits in the backlog is handed back by the pull loop.
            if self.stop.is_cancelled() {
                break;
            }
            // Another runner is ready to take the next task: one is enough for tasks that do
            // not await (this one may have been started while the others were held up).
            if self.ready() > 1 && self.backlog.untaken_for(Instant::now()) < BUSY_AFTER {
                break;
            }
            match self.backlog.take_next(started.elapsed()) {
                Some(next) => message = next,
                None => break,
            }
            // A run of tasks that each finish at once must still let the rest of the runtime
            // (the pull loop, the connection) have their turn.
            tokio::task::coop::consume_budget().await;
        }
        self.active.fetch_sub(1, Ordering::AcqRel);
        drop(permit);
    }
}

/// A task run by a runner, counted as suspended from its first `Pending` until it ends.
struct Watched<'a, F> {
    task: F,
    runners: &'a Runners,
    suspended: bool,
}

impl<F: Future<Output = ()> + Unpin> Future for Watched<'_, F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match Pin::new(&mut this.task).poll(cx) {
            Poll::Ready(()) => {
                if this.suspended {
                    this.suspended = false;
                    this.runners.suspended.fetch_sub(1, Ordering::AcqRel);
                }
                Poll::Ready(())
            }
            // Pending because tokio's cooperative budget ran out is a yield, not a wait: the
            // task is woken at once and this runner stays ready.
            Poll::Pending if !tokio::task::coop::has_budget_remaining() => Poll::Pending,
            Poll::Pending => {
                if !this.suspended {
                    this.suspended = true;
                    this.runners.suspended.fetch_add(1, Ordering::AcqRel);
                    if !this.runners.backlog.is_empty() {
                        // The tasks behind this one would wait for its I/O: another runner.
                        this.runners.wanted.notify_one();
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<F> Drop for Watched<'_, F> {
    fn drop(&mut self) {
        // Dropped while suspended (the runtime shuts down): not counted any more.
        if self.suspended {
            self.runners.suspended.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
