//! The relay's metrics (OpenTelemetry, exported like every jetq binary's): lag, rows relayed,
//! failures and dead letters.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use opentelemetry::{
    metrics::{Counter, Meter},
    InstrumentationScope, KeyValue,
};

/// `jetq.outbox.lag`: age in seconds of the oldest row not yet relayed (0 when empty).
pub const LAG: &str = "jetq.outbox.lag";
/// `jetq.outbox.relayed`: rows published and deleted (`duplicate` = the stream already had it).
pub const RELAYED: &str = "jetq.outbox.relayed";
/// `jetq.outbox.failures`: publish or database failures, by `error.type`.
pub const FAILURES: &str = "jetq.outbox.failures";
/// `jetq.outbox.dead_lettered`: rows moved to the dead-letter stream, by `jetq.outbox.reason`.
pub const DEAD_LETTERED: &str = "jetq.outbox.dead_lettered";

/// The relay's instruments.
#[derive(Clone)]
pub(crate) struct RelayMetrics {
    relayed: Counter<u64>,
    failures: Counter<u64>,
    dead: Counter<u64>,
    /// The last measured lag, in milliseconds, read by the gauge's callback.
    lag_ms: Arc<AtomicU64>,
}

impl std::fmt::Debug for RelayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayMetrics")
    }
}

/// The instrumentation scope of the relay's spans and metrics.
pub(crate) fn meter() -> Meter {
    opentelemetry::global::meter_with_scope(
        InstrumentationScope::builder("jetq-relay")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    )
}

impl RelayMetrics {
    pub(crate) fn new(meter: &Meter, table: &str) -> RelayMetrics {
        let lag_ms = Arc::new(AtomicU64::new(0));
        let read = Arc::clone(&lag_ms);
        let table_label = KeyValue::new("jetq.outbox.table", table.to_owned());
        let labels = [table_label.clone()];
        meter
            .f64_observable_gauge(LAG)
            .with_unit("s")
            .with_description("Age of the oldest outbox row not yet relayed")
            .with_callback(move |gauge| {
                gauge.observe(read.load(Ordering::Relaxed) as f64 / 1000.0, &labels);
            })
            .build();
        RelayMetrics {
            relayed: meter
                .u64_counter(RELAYED)
                .with_description("Outbox rows published to JetStream and deleted")
                .build(),
            failures: meter
                .u64_counter(FAILURES)
                .with_description("Relay failures (publish, database), by error.type")
                .build(),
            dead: meter
                .u64_counter(DEAD_LETTERED)
                .with_description("Outbox rows that could never be published, dead-lettered")
                .build(),
            lag_ms,
        }
    }

    pub(crate) fn relayed(&self, rows: u64, duplicate: bool) {
        if rows > 0 {
            self.relayed
                .add(rows, &[KeyValue::new("duplicate", duplicate)]);
        }
    }

    pub(crate) fn failed(&self, error_type: &'static str) {
        self.failures
            .add(1, &[KeyValue::new("error.type", error_type)]);
    }

    pub(crate) fn dead_lettered(&self, code: &'static str) {
        self.dead
            .add(1, &[KeyValue::new("jetq.outbox.reason", code)]);
    }

    pub(crate) fn set_lag(&self, seconds: f64) {
        let ms = (seconds.max(0.0) * 1000.0) as u64;
        self.lag_ms.store(ms, Ordering::Relaxed);
    }

    /// The last measured lag in seconds.
    pub(crate) fn lag(&self) -> f64 {
        self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }
}
