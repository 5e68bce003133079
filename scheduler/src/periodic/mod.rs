//! Periodic schedules: every replica computes the same fires and publishes each with the id
//! `<schedule>:<fire time>`, so the task stream's duplicate window drops the copies. The last
//! handled fire of each schedule is a watermark in the state bucket, advanced with
//! compare-and-set after the publish is acknowledged; it decides what was missed while no
//! scheduler ran.
//!
//! [`plan`] decides (pure); [`runner`] acts (publishes and moves the watermark).

mod plan;
mod runner;

pub(crate) use plan::SkipReason;
pub use runner::fire_id;
pub(crate) use runner::{run, Shared};
