//! The jetq scheduler: periodic (cron) tasks and the release of delayed tasks.
//!
//! - **Periodic.** Every replica computes the same fire times from the schedules file (cron
//!   with seconds, IANA time zones, see [`CronSchedule`]) and publishes each fire with
//!   `Nats-Msg-Id` = `<schedule>:<fire time>`: the task stream's duplicate window keeps one
//!   copy, so any number of replicas run with no leader and no double fire. The last handled
//!   fire of each schedule lives in the `JETQ_SCHEDULER` KV bucket (compare-and-set), which
//!   decides what a restart catches up ([`CatchUp`]).
//! - **Delayed.** Tasks enqueued with `Producer::enqueue_in`/`enqueue_at` wait in per-second
//!   buckets of the `JETQ_DELAYED` stream; replicas release due buckets in time order,
//!   republishing each task with its own id, then purge them. Memory is bounded by one message
//!   plus a window of acks, whatever the number of waiting tasks.
//! - **Reload.** The schedules file is re-read when it changes (polling, which also sees
//!   Kubernetes ConfigMap symlink swaps) or on SIGHUP; an invalid file is rejected with every
//!   error naming its schedule and field, and the previous schedules keep running.
//!
//! See `docs/SCHEDULER.md` for the guarantees and `docs/PROTOCOL.md` for the wire format.

pub mod control;
mod cron;
mod error;
mod file;
mod metrics;
mod periodic;
mod release;
mod scheduler;
mod settings;
mod state;

pub use cron::{CronError, CronSchedule};
pub use error::{PublishFailed, SchedulerError, StateError};
pub use file::{CatchUp, FieldError, Schedule, ScheduleFileError, Schedules, MAX_JITTER};
pub use jetq_contract::{self as contract};
pub use metrics::FIRES_SKIPPED;
pub use periodic::fire_id;
pub use scheduler::{
    provision, provision_with, shutdown_signal, ReloadHandle, Scheduler, SchedulerBuilder,
};
pub use settings::SchedulerSettings;
