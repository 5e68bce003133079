//! Task types of the workflow tests (tests/tests/workflow_*.rs) and their worker process
//! (`workflow_worker`): batch members are [`crate::Job`]s; callbacks are [`Done`]; chain links
//! are [`Step`].

use std::time::Duration;

use jetq_contract::{workflow::BatchSummary, RetryPolicy, Task, TaskOptions};
use serde::{Deserialize, Serialize};

/// A batch callback: reports itself on `test.callback` as JSON `{"id","which","batch"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Done {
    /// Which callback the test made it (`on_success`, `on_complete`).
    pub which: String,
    /// The batch summary, filled in when the callback fires.
    #[serde(default)]
    pub batch: BatchSummary,
}

impl Task for Done {
    const NAME: &'static str = "done";
    const QUEUE: &'static str = "callbacks";
}

/// A chain link: reports itself on `test.step` as JSON `{"name","previous","attempt"}`, fails
/// (fatally: dead-lettered at once) when `fail`, and leaves the result `{"from": name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// The link's name.
    pub name: String,
    /// Fail this link.
    #[serde(default)]
    pub fail: bool,
    /// The previous link's result, when the chain passes it.
    #[serde(default)]
    pub previous: serde_json::Value,
}

impl Task for Step {
    const NAME: &'static str = "step";
    const QUEUE: &'static str = "work";
    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(2)
            .timeout(Duration::from_secs(10))
            .retry(RetryPolicy::constant(Duration::from_millis(50)).jitter(0.0))
    }
}
