//! Telemetry of the jetq binaries, in one call: logs, OpenTelemetry traces and metrics, and the
//! health server (`/healthz`, `/readyz`, `/metrics`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // First thing in main: logs, trace export and metrics, configured by OTEL_* and JETQ_*.
//! let telemetry = jetq_telemetry::init("jetq-worker")?;
//! let readiness = jetq_telemetry::Readiness::new();
//! // ... build the worker, then: readiness.add("worker", move || health.check());
//! let health = telemetry.serve_health(readiness).await?; // JETQ_HEALTH_LISTEN
//! // ... worker.run().await;
//! health.stop().await;
//! drop(telemetry); // flushes spans and metrics
//! # Ok(()) }
//! ```
//!
//! - **Logs** go to stderr through `tracing-subscriber`, filtered by `RUST_LOG`; human-readable
//!   by default, one flat JSON object per line with `JETQ_LOG_FORMAT=json`.
//! - **Traces**: the `tracing` spans of jetq (and of the application) are exported over
//!   OTLP — http/protobuf or gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL`), to `http://` or `https://`
//!   (straight to a vendor, with `OTEL_EXPORTER_OTLP_HEADERS` for its API key) — when a
//!   receiver is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`);
//!   with none, nothing is exported and nothing is logged about it. An unreachable receiver is
//!   reported once (and once more when it answers again), not at every export.
//!   `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export off. The global
//!   propagator is set to W3C TraceContext.
//! - **Metrics**: the global meter provider feeds a Prometheus registry served on `/metrics`,
//!   and is also pushed over OTLP when a collector is configured, unless
//!   `OTEL_METRICS_EXPORTER` says otherwise.
//! - The returned [`TelemetryGuard`] flushes and shuts everything down when dropped.
//!
//! Libraries never depend on this crate: jetq's producer and consumer only use `tracing` and the
//! OpenTelemetry API. Tests build a [`Telemetry`] without installing it globally.

mod config;
mod exporters;
mod filter;
mod health;
mod http_client;
mod logs;
mod otlp;
mod quiet;
mod tls;

use std::{
    io::IsTerminal,
    ops::Deref,
    sync::atomic::{AtomicBool, Ordering},
};

use jetq_contract::ConfigError;
use opentelemetry::{metrics::MeterProvider as _, trace::TracerProvider as _, KeyValue};
use opentelemetry_sdk::{
    metrics::SdkMeterProvider, propagation::TraceContextPropagator, trace::SdkTracerProvider,
    Resource,
};
use tracing::Dispatch;
use tracing_subscriber::{
    filter::{filter_fn, FilterExt},
    fmt::{format::JsonFields, MakeWriter},
    layer::SubscriberExt,
    EnvFilter, Layer, Registry,
};

pub use config::{LogFormat, TelemetryConfig, DEFAULT_HEALTH_LISTEN};
use exporters::Target;
use filter::Fresh;
pub use health::{health_router, trace_requests, HealthServer, Readiness};
pub use logs::FlatJson;
pub use otlp::{CertificateFile, OtlpProtocol, OtlpTransport};

/// Targets never traced: the exporter's own HTTP stack and the SDK (tracing them would feed
/// the exporter its own spans).
const NEVER_TRACED: &str =
    "hyper=off,hyper_util=off,reqwest=off,h2=off,tower=off,tonic=off,rustls=off,\
                            opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
                            opentelemetry_http=off";

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A variable is unusable; the message names it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP {signal} exporter: {message}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's error.
        message: String,
    },
    /// The Prometheus registry could not be set up or rendered.
    #[error("metrics: {0}")]
    Metrics(String),
    /// Another global `tracing` subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    /// The health server could not listen.
    #[error("cannot listen on {addr} for /healthz, /readyz and /metrics: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Flushing or shutting down an exporter failed.
    #[error("cannot flush {signal}: {message}")]
    Shutdown {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's error.
        message: String,
    },
}

/// Sets up telemetry from the environment and installs it process-wide: global `tracing`
/// subscriber, OpenTelemetry tracer and meter providers, W3C propagator. `service_name` is the
/// default `service.name`; without `RUST_LOG` the log filter is [`DEFAULT_LOG_FILTER`]. Call it
/// first in `main`, before building producers and workers (they take the global meter when
/// built).
pub fn init(service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    Telemetry::new(TelemetryConfig::from_env(service_name, DEFAULT_LOG_FILTER)?)?.install()
}

/// What a binary's `run` returns to [`run_main`]: a future borrowing the installed telemetry.
pub type RunFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + 'a>>;

/// The `main` of a jetq binary: installs telemetry for `service_name` ([`init`]), runs `run`
/// with it, and exits with status 1 — the error on stderr prefixed with `program`, and in the
/// logs — when either fails. The last spans and metrics are flushed before it returns (off the
/// runtime's threads: the exporters block).
///
/// ```no_run
/// use jetq_telemetry::{RunFuture, TelemetryGuard};
///
/// fn run(telemetry: &TelemetryGuard) -> RunFuture<'_> {
///     Box::pin(async move {
///         let _health = telemetry.serve_health(jetq_telemetry::Readiness::new()).await;
///         Ok(())
///     })
/// }
///
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     jetq_telemetry::run_main("my-worker", "my-worker", run).await
/// }
/// ```
pub async fn run_main<F>(service_name: &str, program: &str, run: F) -> std::process::ExitCode
where
    F: for<'a> FnOnce(&'a TelemetryGuard) -> RunFuture<'a>,
{
    let telemetry = match init(service_name) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("{program}: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match run(&telemetry).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("{program}: {err}");
            std::process::ExitCode::FAILURE
        }
    };
    let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
    code
}

/// The log filter of [`init`] when `RUST_LOG` is not set: `info`, without the OpenTelemetry
/// API's own start-up notices (export failures are warnings and still show).
pub const DEFAULT_LOG_FILTER: &str = "info,opentelemetry=warn";

/// The telemetry pipelines of one process, not yet (or never) installed globally.
pub struct Telemetry {
    config: TelemetryConfig,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: SdkMeterProvider,
    registry: prometheus::Registry,
    shut_down: AtomicBool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("service_name", &self.config.service_name)
            .field("traces", &self.tracer_provider.is_some())
            .field("otlp_metrics", &self.config.otlp_metrics)
            .finish()
    }
}

impl Telemetry {
    /// Builds the tracer provider (when traces are exported), the meter provider with its
    /// Prometheus registry (and OTLP push when configured), without installing anything.
    pub fn new(config: TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        let resource = Resource::builder()
            .with_attributes(
                config
                    .resource_attributes
                    .iter()
                    .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
            )
            .with_service_name(config.service_name.clone())
            .build();
        let tracer_provider = if config.traces {
            let target = Target {
                signal: "traces",
                endpoint: config.traces_endpoint.as_deref(),
                transport: &config.traces_transport,
                cause: http_client::LastCause::default(),
            };
            let exporter = quiet::QuietSpans {
                inner: exporters::span_exporter(&target)?,
                reach: quiet::Reachability::new(
                    "traces",
                    target.effective_endpoint(),
                    target.cause.clone(),
                ),
            };
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.clone())
                    .build(),
            )
        } else {
            None
        };
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .map_err(|err| TelemetryError::Metrics(err.to_string()))?;
        let mut meters = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(prometheus);
        if config.otlp_metrics {
            let target = Target {
                signal: "metrics",
                endpoint: config.metrics_endpoint.as_deref(),
                transport: &config.metrics_transport,
                cause: http_client::LastCause::default(),
            };
            let exporter = quiet::QuietMetrics {
                inner: exporters::metric_exporter(&target)?,
                reach: quiet::Reachability::new(
                    "metrics",
                    target.effective_endpoint(),
                    target.cause.clone(),
                ),
            };
            meters = meters.with_periodic_exporter(exporter);
        }
        Ok(Telemetry {
            config,
            tracer_provider,
            meter_provider: meters.build(),
            registry,
            shut_down: AtomicBool::new(false),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &TelemetryConfig {
        &self.config
    }

    /// A `tracing` dispatcher logging to stderr and (when enabled) tracing to OpenTelemetry.
    pub fn dispatch(&self) -> Result<Dispatch, TelemetryError> {
        let ansi = std::io::stderr().is_terminal();
        self.dispatch_with(std::io::stderr, ansi)
    }

    /// [`Telemetry::dispatch`] writing logs to `writer` (e.g. a buffer in tests).
    pub fn dispatch_with<W>(&self, writer: W, ansi: bool) -> Result<Dispatch, TelemetryError>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let log_filter =
            EnvFilter::try_new(&self.config.log_filter).map_err(|err| ConfigError::Invalid {
                field: "RUST_LOG",
                problem: err.to_string(),
            })?;
        let log_filter =
            Fresh(log_filter.and(filter_fn(|meta| !quiet::is_export_failure_report(meta))));
        let logs = match self.config.log_format {
            LogFormat::Human => tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi)
                .with_filter(log_filter)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .with_writer(writer)
                .with_filter(log_filter)
                .boxed(),
        };
        let traces = match &self.tracer_provider {
            Some(provider) => {
                let filter =
                    EnvFilter::try_new(format!("{},{NEVER_TRACED}", self.config.trace_filter))
                        .map_err(|err| ConfigError::Invalid {
                            field: "JETQ_TRACE_FILTER",
                            problem: err.to_string(),
                        })?;
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(provider.tracer("jetq"))
                        .with_filter(Fresh(filter))
                        .boxed(),
                )
            }
            None => None,
        };
        Ok(Dispatch::new(Registry::default().with(logs).with(traces)))
    }

    /// The tracer provider, when traces are exported.
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.tracer_provider.as_ref()
    }

    /// The meter provider (Prometheus registry, plus OTLP when configured).
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.meter_provider
    }

    /// A meter of this provider, e.g. to hand to a producer or worker builder explicitly.
    pub fn meter(&self, name: &'static str) -> opentelemetry::metrics::Meter {
        self.meter_provider.meter(name)
    }

    /// The Prometheus registry behind `/metrics`.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// The current metrics as Prometheus text.
    pub fn metrics_text(&self) -> Result<String, TelemetryError> {
        health::render(&self.registry)
    }

    /// `/healthz`, `/readyz` and `/metrics` of this process, as a router.
    pub fn health_router(&self, readiness: Readiness) -> axum::Router {
        health_router(readiness, Some(self.registry.clone()))
    }

    /// Serves [`Telemetry::health_router`] on `JETQ_HEALTH_LISTEN`.
    pub async fn serve_health(&self, readiness: Readiness) -> Result<HealthServer, TelemetryError> {
        HealthServer::bind(self.config.health_listen, self.health_router(readiness)).await
    }

    /// Exports everything still buffered (spans, metrics) without shutting down. Blocks until
    /// the exporters answer: from async code call it through `spawn_blocking`.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        if let Some(provider) = &self.tracer_provider {
            provider
                .force_flush()
                .map_err(|err| TelemetryError::Shutdown {
                    signal: "traces",
                    message: err.to_string(),
                })?;
        }
        self.meter_provider
            .force_flush()
            .map_err(|err| TelemetryError::Shutdown {
                signal: "metrics",
                message: err.to_string(),
            })
    }

    /// Flushes and shuts the exporters down; later calls do nothing. Blocks like
    /// [`Telemetry::flush`].
    pub fn shutdown(&self) -> Result<(), TelemetryError> {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let traces = match &self.tracer_provider {
            Some(provider) => provider.shutdown().map_err(|err| TelemetryError::Shutdown {
                signal: "traces",
                message: err.to_string(),
            }),
            None => Ok(()),
        };
        let metrics = self
            .meter_provider
            .shutdown()
            .map_err(|err| TelemetryError::Shutdown {
                signal: "metrics",
                message: err.to_string(),
            });
        traces.and(metrics)
    }

    /// Installs this telemetry process-wide (see [`init`]); the guard shuts it down on drop.
    pub fn install(self) -> Result<TelemetryGuard, TelemetryError> {
        let dispatch = self.dispatch()?;
        tracing::dispatcher::set_global_default(dispatch)
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        if let Some(provider) = &self.tracer_provider {
            opentelemetry::global::set_tracer_provider(provider.clone());
        }
        opentelemetry::global::set_meter_provider(self.meter_provider.clone());
        tracing::debug!(
            service = %self.config.service_name,
            traces = self.tracer_provider.is_some(),
            otlp_metrics = self.config.otlp_metrics,
            "telemetry installed"
        );
        Ok(TelemetryGuard { telemetry: self })
    }
}

/// Installed telemetry; flushes and shuts down the exporters when dropped (at the end of
/// `main`, after a graceful shutdown).
#[derive(Debug)]
pub struct TelemetryGuard {
    telemetry: Telemetry,
}

impl Deref for TelemetryGuard {
    type Target = Telemetry;

    fn deref(&self) -> &Telemetry {
        &self.telemetry
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(err) = self.telemetry.shutdown() {
            tracing::warn!(
                error = %err,
                "telemetry not fully flushed at shutdown (no OTLP collector reachable? \
                 OTEL_SDK_DISABLED=true or OTEL_*_EXPORTER=none turn export off)"
            );
        }
    }
}
