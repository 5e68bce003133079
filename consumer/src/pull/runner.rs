//! Starting a delivered task: its first poll inline in the pull loop, the rest (if any) in a
//! tokio task of its own.
//!
//! Why: a short task — a no-op, a cache write, anything that finishes without waiting — is
//! done within its first poll, ack included (an ack is queued on the connection, not awaited).
//! Spawning it cost a tokio task, a heap cell for its future, a wake-up of another thread and
//! the hand-over of every message between threads; at tens of thousands of tasks a second that
//! was most of what separated the worker from a raw pull-and-ack loop. A task that waits
//! (I/O, a timer, a lock) returns `Pending` from that first poll and is moved, as it is, into
//! its own tokio task, which polls it again at once with a real waker: nothing is lost (a
//! future must accept a new waker on every poll), and it then runs exactly as before.
//!
//! The cost of polling inline is that the loop is busy while it polls: a handler that computes
//! for a long time before its first `.await` would hold up the loop (and every other task it
//! delivers). So the first poll is timed: one that took longer than [`INLINE_BUDGET`] turns
//! inline polling off for [`INLINE_PAUSE`], during which every task is spawned at once, as
//! before this existed.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Waker},
    time::Duration,
};

use async_nats::jetstream;
use futures::FutureExt;
use tokio::{sync::OwnedSemaphorePermit, time::Instant};

use crate::execution::Executor;

/// The longest a task's first poll may take in the loop before inline polling is paused.
pub(crate) const INLINE_BUDGET: Duration = Duration::from_micros(500);

/// How long inline polling stays off after a first poll ran over [`INLINE_BUDGET`].
pub(crate) const INLINE_PAUSE: Duration = Duration::from_secs(5);

/// A task's processing future, boxed: it is ~4.5 KB, which tokio would otherwise copy into its
/// task cell and again when it ends.
type Processing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts one queue's delivered tasks.
pub(crate) struct Runner {
    executor: Arc<Executor>,
    /// Inline polling is off until then (a first poll ran long).
    inline_off_until: Option<Instant>,
}

impl Runner {
    pub(crate) fn new(executor: Arc<Executor>) -> Self {
        Runner {
            executor,
            inline_off_until: None,
        }
    }

    /// Runs `message` in `permit`'s slot; the slot comes back when the task ends. True when
    /// the task ended within its first poll, here: the queue's tasks are short.
    pub(crate) fn start(
        &mut self,
        message: jetstream::Message,
        permit: OwnedSemaphorePermit,
    ) -> bool {
        let executor = self.executor.clone();
        let mut processing: Processing = Box::pin(async move { executor.process(message).await });
        let inline = match self.inline_off_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                self.inline_off_until = None;
                true
            }
            None => true,
        };
        if inline {
            let began = Instant::now();
            // A waker that does nothing: if the task is not done, it is spawned below and
            // polled again at once with its own waker, which replaces this one.
            let mut context = Context::from_waker(Waker::noop());
            // Outside tokio's cooperative budget: the loop's own budget (spent on its
            // subscription) would otherwise make the task's first channel send or lock return
            // `Pending` after a few dozen tasks, and spawn it for nothing.
            let done = tokio::task::coop::unconstrained(processing.as_mut())
                .poll_unpin(&mut context)
                .is_ready();
            let took = began.elapsed();
            if took > INLINE_BUDGET {
                tracing::debug!(
                    ?took,
                    pause = ?INLINE_PAUSE,
                    "a task's first poll held the pull loop: spawning tasks for a while"
                );
                self.inline_off_until = Some(Instant::now() + INLINE_PAUSE);
            }
            if done {
                drop(permit);
                return true;
            }
        }
        tokio::spawn(async move {
            processing.await;
            drop(permit);
        });
        false
    }
}

/// Whether a future is done at its first poll is all that decides inline or spawned: these
/// tests check that both paths run the future to its end and give the slot back.
#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    fn poll_once(future: &mut Processing) -> Poll<()> {
        future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_future_pending_at_its_first_poll_finishes_after_a_new_poll() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let mut future: Processing = Box::pin(async move {
            let _ = rx.await;
            let _ = done_tx.send(());
        });
        assert!(poll_once(&mut future).is_pending());
        tokio::spawn(future);
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(5), done_rx)
            .await
            .expect("the moved future was woken through its new waker")
            .expect("it ran to its end");
    }
}
