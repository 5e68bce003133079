//! The jetq consumer: workers that pull tasks from JetStream and run them with retries,
//! timeouts, heartbeats and dead letters.
//!
//! # Guarantees
//! - **At least once.** A task is acked only after its handler returned `Ok`. A worker killed
//!   mid-task loses nothing: the server redelivers after `ack_wait`.
//! - **One retry authority.** A failed attempt is NAK'd with the type's backoff delay (or the
//!   handler's `retry_after`); the server redelivers it then. `ack_wait` only covers silence.
//! - **Nothing stranded.** On the final attempt a failure writes the dead letter *before* the
//!   task is terminated. One delivery is kept in reserve so a task whose final attempt crashed
//!   its worker is dead-lettered on that reserve delivery, and the sweeper catches tasks whose
//!   deliveries ran out anyway.
//! - **Bounded buffering.** A worker holds at most its concurrency plus a prefetch per queue
//!   (`JETQ_PREFETCH` tasks, cut to `JETQ_PREFETCH_BYTES` at the recent task size); a
//!   prefetched task waits at most 500 ms for a slot before it is handed back.
//! - **Graceful shutdown.** Stop pulling, let running tasks finish within the grace period,
//!   hand the rest back at once. A hand-back is not an attempt: rolling deploys never use up a
//!   task's attempts (`jetq_contract::attempts`).
//! - **Dead letters that fit.** A task accepted near the server's `max_payload` is still
//!   dead-lettered: its body goes to the dead-letter body store (`jetq_contract::dead`).
//! - **Blocking work is visible.** A handler must not block its thread (its heartbeats and
//!   timeout share it): blocking work goes to `spawn_blocking` with
//!   [`TaskContext::cancellation_token`]; a poll that holds its thread too long is logged and
//!   counted (`jetq.tasks.stalled`).
//! - **Observable.** Every attempt runs in a `process <subject>` span (kind CONSUMER) that
//!   continues the producer's trace from the task's `traceparent`; outcomes, durations, in-flight
//!   tasks and queue lag are OpenTelemetry metrics; [`Worker::health`] feeds `/readyz`
//!   (see `docs/OBSERVABILITY.md`).
//! - **Status on request.** Types with `TaskOptions::track_status` keep a status record; their
//!   handlers report progress, keep results, store artifacts and see cancellations through the
//!   [`TaskContext`] (see `docs/STATUS.md`).

mod attempts;
mod context;
mod control;
mod dead_letter;
mod error;
mod execution;
mod handler;
mod history;
mod limits;
mod presence;
mod pull;
mod purger;
mod settings;
mod stall;
mod status;
mod sweeper;
mod telemetry;
mod worker;
mod workflow;

pub use context::TaskContext;
pub use error::{error_chain, FailureKind, TaskError, WorkerError};
pub use handler::ANY_TASK;
pub use jetq_contract::flow::{ConcurrencyLimit, FlowError, RateLimit};
pub use jetq_contract::{self as contract, RetryPolicy, Task, TaskOptions};
pub use limits::Limits;
pub use settings::{WorkerSettings, DEFAULT_PREFETCH, DEFAULT_PREFETCH_BYTES};
pub use status::{ArtifactWriter, StatusError};
pub use telemetry::{NotReady, WorkerHealth};
pub use worker::{existing_consumer, existing_consumers, shutdown_signal, Worker, WorkerBuilder};

/// The token type of [`TaskContext::cancellation_token`], re-exported so handlers need not
/// depend on `tokio-util` themselves.
pub use tokio_util::sync::CancellationToken;
