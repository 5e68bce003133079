//! The scheduler's metrics, recorded through the OpenTelemetry API as the worker's are: the
//! binary's `jetq-telemetry` setup exports them over OTLP and serves them on `/metrics`.

use opentelemetry::{
    metrics::{Counter, Meter},
    KeyValue,
};

use crate::periodic::SkipReason;

/// Counter: fires dropped without publishing, by `jetq.schedule` and `reason`.
pub const FIRES_SKIPPED: &str = "jetq.scheduler.fires.skipped";

/// The scheduler's default meter: the global provider's `jetq-scheduler` meter.
pub(crate) fn meter() -> Meter {
    jetq_contract::bootstrap::meter("jetq-scheduler", env!("CARGO_PKG_VERSION"))
}

/// The scheduler's instruments.
#[derive(Clone)]
pub(crate) struct SchedulerMetrics {
    skipped: Counter<u64>,
}

impl SchedulerMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        SchedulerMetrics {
            skipped: meter
                .u64_counter(FIRES_SKIPPED)
                .with_description(
                    "Fires of periodic schedules dropped without publishing, by schedule and \
                     reason (catch_up_skip, catch_up_once, catch_up_window, disabled)",
                )
                .build(),
        }
    }

    pub(crate) fn skipped(&self, schedule: &str, reason: SkipReason, count: u64) {
        self.skipped.add(
            count,
            &[
                KeyValue::new("jetq.schedule", schedule.to_owned()),
                KeyValue::new("reason", reason.as_str()),
            ],
        );
    }
}
