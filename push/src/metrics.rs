//! The push worker's own metrics, next to the worker's per-task ones: how each target answers
//! and how long tasks wait for its limits.
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `http.client.request.duration` (s) | histogram | `jetq.push.target`, `http.request.method`, `server.address`, `server.port`, `http.response.status_code` (when answered), `error.type` (status code ≥ 400, or `timeout`, `connect`, `request`) |
//! | `jetq.push.wait.duration` (s) | histogram | `jetq.push.target`: time a task waited for a slot and a token |
//! | `jetq.push.waiting` | up-down counter | `jetq.push.target`: tasks waiting for a slot or token now |

use std::time::Duration;

use opentelemetry::{
    metrics::{Histogram, Meter, UpDownCounter},
    KeyValue,
};

/// Attribute naming the target.
pub const TARGET: &str = "jetq.push.target";
/// The request duration histogram (OpenTelemetry HTTP client semantic conventions).
pub const REQUEST_DURATION: &str = "http.client.request.duration";
/// The wait for a slot and a token.
pub const WAIT_DURATION: &str = "jetq.push.wait.duration";
/// Tasks waiting for a slot or a token.
pub const WAITING: &str = "jetq.push.waiting";

/// Seconds, from 5 ms to 5 minutes.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The default meter: the global provider's `jetq-push` meter.
pub(crate) fn meter() -> Meter {
    jetq_contract::bootstrap::meter("jetq-push", env!("CARGO_PKG_VERSION"))
}

#[derive(Clone)]
pub(crate) struct PushMetrics {
    request: Histogram<f64>,
    wait: Histogram<f64>,
    waiting: UpDownCounter<i64>,
}

/// How a request ended, for the metrics.
pub(crate) enum Answer {
    Status(u16),
    Error(&'static str),
}

impl PushMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        PushMetrics {
            request: meter
                .f64_histogram(REQUEST_DURATION)
                .with_description("Duration of push requests, by target and answer")
                .with_unit("s")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            wait: meter
                .f64_histogram(WAIT_DURATION)
                .with_description(
                    "Time tasks waited for a target's concurrency slot and rate token",
                )
                .with_unit("s")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            waiting: meter
                .i64_up_down_counter(WAITING)
                .with_description("Tasks waiting now for a target's concurrency slot or rate token")
                .build(),
        }
    }

    /// Counts a task as waiting until the returned guard is dropped.
    pub(crate) fn waiting(&self, target: &str) -> Waiting {
        let attributes = vec![KeyValue::new(TARGET, target.to_owned())];
        self.waiting.add(1, &attributes);
        Waiting {
            counter: self.waiting.clone(),
            attributes,
        }
    }

    pub(crate) fn waited(&self, target: &str, waited: Duration) {
        self.wait.record(
            waited.as_secs_f64(),
            &[KeyValue::new(TARGET, target.to_owned())],
        );
    }

    /// The attributes every request to a target carries.
    pub(crate) fn target_attributes(target: &str, url: &str) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new(TARGET, target.to_owned()),
            KeyValue::new("http.request.method", "POST"),
        ];
        if let Ok(url) = url::Url::parse(url) {
            if let Some(host) = url.host_str() {
                attributes.push(KeyValue::new("server.address", host.to_owned()));
            }
            if let Some(port) = url.port_or_known_default() {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        attributes
    }

    pub(crate) fn request(&self, base: &[KeyValue], answer: Answer, took: Duration) {
        let mut attributes = base.to_vec();
        match answer {
            Answer::Status(status) => {
                attributes.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 400 {
                    attributes.push(KeyValue::new("error.type", status.to_string()));
                }
            }
            Answer::Error(kind) => attributes.push(KeyValue::new("error.type", kind)),
        }
        self.request.record(took.as_secs_f64(), &attributes);
    }
}

/// A task counted as waiting.
pub(crate) struct Waiting {
    counter: UpDownCounter<i64>,
    attributes: Vec<KeyValue>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.counter.add(-1, &self.attributes);
    }
}
