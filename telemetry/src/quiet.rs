//! OTLP exporters that report an unreachable collector once, not at every export.
//!
//! The SDK logs every failed export (a worker with an unreachable collector logged 95 warnings
//! in 5 minutes). These wrappers log the first failure as one warning naming the signal and the
//! endpoint, stay silent while the failures go on, and log once more when an export succeeds
//! again. A failed export's data is dropped either way (the SDK does not retry it).

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::http_client::LastCause;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{data::ResourceMetrics, exporter::PushMetricExporter, Temporality},
    trace::{SpanData, SpanExporter},
    Resource,
};

/// Whether a log event is the exporter's own report of one failed export (`Export.Failed.*`
/// events of `opentelemetry-otlp`, one per failed export: the spam this module exists to
/// prevent). The quiet exporters report those failures instead, once per outage, so the log
/// layer leaves these events out; the exporter's other warnings (e.g. a receiver rejecting
/// part of a batch) still show.
pub(crate) fn is_export_failure_report(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "opentelemetry-otlp" && meta.name().starts_with("Export.Failed.")
}

/// Whether one signal's collector answered its last export.
#[derive(Debug)]
pub(crate) struct Reachability {
    signal: &'static str,
    endpoint: String,
    failing: AtomicBool,
    /// Why the last request failed, when the exporter's error leaves it out (OTLP/HTTP).
    cause: LastCause,
}

impl Reachability {
    pub(crate) fn new(signal: &'static str, endpoint: String, cause: LastCause) -> Self {
        Reachability {
            signal,
            endpoint,
            failing: AtomicBool::new(false),
            cause,
        }
    }

    /// Logs a change between reachable and unreachable; swallows the error (already reported).
    pub(crate) fn record(&self, result: OTelSdkResult) -> OTelSdkResult {
        let cause = self.cause.take();
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        signal = self.signal,
                        endpoint = %self.endpoint,
                        "the OpenTelemetry collector is reachable again"
                    );
                }
            }
            Err(err) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    let error = match cause {
                        Some(cause) => format!("{err} ({cause})"),
                        None => err.to_string(),
                    };
                    tracing::warn!(
                        signal = self.signal,
                        endpoint = %self.endpoint,
                        error,
                        "cannot export to the OpenTelemetry collector; further failures are not \
                         logged until it answers again (unset OTEL_EXPORTER_OTLP_ENDPOINT, or \
                         set OTEL_SDK_DISABLED=true, to export nothing)"
                    );
                }
            }
        }
        Ok(())
    }
}

/// A span exporter reporting an unreachable collector once.
pub(crate) struct QuietSpans<E> {
    pub(crate) inner: E,
    pub(crate) reach: Reachability,
}

impl<E: fmt::Debug> fmt::Debug for QuietSpans<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuietSpans")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<E: SpanExporter> SpanExporter for QuietSpans<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.reach.record(self.inner.export(batch).await)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

/// A metric exporter reporting an unreachable collector once.
pub(crate) struct QuietMetrics<E> {
    pub(crate) inner: E,
    pub(crate) reach: Reachability,
}

impl<E: PushMetricExporter> PushMetricExporter for QuietMetrics<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.reach.record(self.inner.export(metrics).await)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkError;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Scripted(Mutex<Vec<bool>>);

    impl SpanExporter for Scripted {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.0.lock().unwrap().remove(0) {
                Ok(())
            } else {
                Err(OTelSdkError::InternalFailure(
                    "connection refused (127.0.0.1:4318)".into(),
                ))
            }
        }
    }

    #[tokio::test]
    async fn an_unreachable_collector_is_reported_once_and_its_return_once() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        // 30 failed exports, one success, 5 failures again.
        let script = [vec![false; 30], vec![true], vec![false; 5]].concat();
        let exporter = QuietSpans {
            inner: Scripted(Mutex::new(script.clone())),
            reach: Reachability::new(
                "traces",
                "http://collector:4318/v1/traces".into(),
                LastCause::default(),
            ),
        };
        for _ in &script {
            assert!(exporter.export(Vec::new()).await.is_ok());
        }
        let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 2, "one per outage:\n{logs}");
        assert!(
            warnings[0].contains("http://collector:4318/v1/traces"),
            "{logs}"
        );
        assert!(warnings[0].contains("connection refused"), "{logs}");
        assert_eq!(logs.matches("reachable again").count(), 1, "{logs}");
    }
}
