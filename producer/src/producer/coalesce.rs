//! Group commit: concurrent `enqueue` calls share atomic batches.
//!
//! A web app enqueues from many requests at once, each awaiting its own task. Published one by
//! one, each task costs the server a write and — under `sync_interval: always` — a disk sync,
//! so the enqueue rate is bound by the disk whatever the concurrency. Here every `enqueue` hands
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
//! Used only where atomic batches are (nats-server 2.12+, `JETQ_ATOMIC_BATCHES`).

use futures::{stream::FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::{atomic, prepared::Prepared, Producer};
use crate::{EnqueueError, Enqueued};

/// Batches of coalesced calls whose commits are awaited at once.
const BATCHES_IN_FLIGHT: usize = 4;

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
}

impl Coalescer {
    /// Starts the coalescing task of `producer` (a clone without a coalescer of its own).
    pub(crate) fn start(producer: Producer) -> Self {
        let (calls, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run(producer, waiting));
        Coalescer { calls }
    }

    /// Enqueues `prepared` in the next batch and waits for its result. `Err(prepared)` when
    /// the coalescing task is gone (its runtime shut down): the caller publishes it alone.
    pub(crate) async fn enqueue(
        &self,
        prepared: Prepared,
    ) -> Result<Result<Enqueued, EnqueueError>, Prepared> {
        let (reply, result) = oneshot::channel();
        if let Err(mpsc::error::SendError(waiting)) = self.calls.send(Waiting { prepared, reply }) {
            return Err(waiting.prepared);
        }
        match result.await {
            Ok(result) => Ok(result),
            Err(_) => {
                // The task dropped the call without answering (its runtime is shutting down):
                // the outcome is unknown, as with a lost connection; a retry with the same key
                // is safe.
                tracing::warn!("the enqueue coalescer stopped before answering");
                Ok(Err(EnqueueError::NotConnected {
                    task: "(coalesced enqueue)".into(),
                    attempts: 1,
                }))
            }
        }
    }
}

/// Gathers waiting calls into batches until every handle is gone.
async fn run(producer: Producer, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
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
                committing.push(producer.enqueue_group(group));
            }
            Some(()) = committing.next(), if !committing.is_empty() => {}
        }
    }
    while committing.next().await.is_some() {}
}

impl Producer {
    /// Stores a group of coalesced calls and answers each.
    async fn enqueue_group(&self, group: Vec<Waiting>) {
        if group.len() == 1 || !self.atomic.enabled() {
            let answers = group.into_iter().map(|call| async move {
                let result = self.publish(call.prepared).await;
                let _ = call.reply.send(result);
            });
            futures::future::join_all(answers).await;
            return;
        }
        if group.iter().any(|call| call.prepared.tracked) {
            Box::pin(self.status.open_before_tracked_publish()).await;
        }
        let batched = {
            let tasks: Vec<&Prepared> = group.iter().map(|call| &call.prepared).collect();
            match self.start_batch(&tasks).await {
                Ok(pending) => self.finish_batch(pending).await,
                Err(batched) => batched,
            }
        };
        match batched {
            atomic::Batched::Stored { last_sequence } => {
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
