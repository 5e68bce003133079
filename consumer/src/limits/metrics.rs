//! Flow control's metrics: tasks that waited for a limit and debounced tasks dropped as
//! replaced, by queue, task type and limit (docs/OBSERVABILITY.md).

use jetq_contract::otel::attributes as attr;
use opentelemetry::{
    metrics::{Counter, Meter},
    KeyValue,
};

/// `jetq.flow.waits`: deliveries handed back because a limit was reached.
pub(crate) const WAITS: &str = "jetq.flow.waits";
/// `jetq.flow.replaced`: debounced tasks dropped because a later enqueue replaced them.
pub(crate) const REPLACED: &str = "jetq.flow.replaced";
/// The attribute naming the limit a task waited for: `rate` or `concurrency`.
pub(crate) const LIMIT: &str = "jetq.flow.limit";

/// The counters.
pub(crate) struct FlowMetrics {
    waits: Counter<u64>,
    replaced: Counter<u64>,
}

impl FlowMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        FlowMetrics {
            waits: meter
                .u64_counter(WAITS)
                .with_description("Deliveries handed back because a rate or concurrency limit was reached (hand-backs, not attempts), by jetq.flow.limit")
                .build(),
            replaced: meter
                .u64_counter(REPLACED)
                .with_description("Debounced tasks dropped without running because a later enqueue of their key replaced them")
                .build(),
        }
    }

    pub(crate) fn waited(&self, queue: &str, task: &str, limit: &'static str) {
        self.waits.add(
            1,
            &[
                KeyValue::new(attr::QUEUE, queue.to_owned()),
                KeyValue::new(attr::TASK_NAME, task.to_owned()),
                KeyValue::new(LIMIT, limit),
            ],
        );
    }

    pub(crate) fn replaced(&self, queue: &str, task: &str) {
        self.replaced.add(
            1,
            &[
                KeyValue::new(attr::QUEUE, queue.to_owned()),
                KeyValue::new(attr::TASK_NAME, task.to_owned()),
            ],
        );
    }
}
