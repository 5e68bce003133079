//! jetq HTTP push dispatch: run tasks by calling HTTP endpoints, with no worker code.
//!
//! `jetq-push` is a jetq worker whose handlers are HTTP requests. For every task of a configured
//! queue it POSTs the task's JSON arguments to the target URL configured for the queue or the
//! task type, signed with HMAC-SHA256 (`jetq-push-signature`), and maps the answer onto jetq's
//! outcomes: 2xx acks, 429/503 with `Retry-After` retry after that delay, other 5xx, timeouts
//! and connection errors retry with the target's backoff, other 4xx (and 3xx, unless the
//! target follows redirects) dead-letter the task with the status and a bounded excerpt of the
//! body in the failure record. Everything else — attempts, dead letters, the sweeper, graceful
//! shutdown, traces and metrics — is the jetq worker's (`jetq-consumer`).
//!
//! Configuration: the worker's `JETQ_*` variables, the targets file named by
//! `JETQ_PUSH_TARGETS_FILE` ([`Targets`]), and [`PushSettings`]. See `docs/PUSH.md`.
//!
//! ```no_run
//! # async fn run() -> Result<(), jetq_push::PushError> {
//! // What the `jetq-push` binary does:
//! let worker = jetq_push::from_env()?.build().await?;
//! worker.run().await; // until SIGTERM
//! # Ok(()) }
//! ```
//!
//! Or, with the configuration in code:
//!
//! ```no_run
//! use jetq_push::{PushConfig, Signing, Targets};
//! use jetq_push_signature::SigningKeys;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let targets = Targets::from_yaml(
//!     "targets:\n  - queue: emails\n    url: https://app.example.com/jetq/{task}\n    rate: 20\n",
//!     std::path::Path::new("inline"),
//! )?;
//! let config = PushConfig::new(targets, Signing::Keys(SigningKeys::new(["a-long-secret"])?));
//! let worker = jetq_push::register(jetq_consumer::Worker::builder(), &config)?
//!     .url("nats://127.0.0.1:4222")
//!     .build()
//!     .await?;
//! worker.run().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod dispatch;
mod flow;
pub mod metrics;
mod targets;

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use jetq_consumer::{TaskOptions, Worker, WorkerBuilder, WorkerError, WorkerSettings, ANY_TASK};
use jetq_contract::ConfigError;
use jetq_push_signature::SigningKeys;
use serde::Deserialize;

pub use dispatch::{
    Signing, ATTEMPT_HEADER, ENQUEUED_AT_HEADER, MAX_ATTEMPTS_HEADER, MAX_REDIRECTS,
    MAX_RETRY_AFTER, QUEUE_HEADER, TASK_HEADER,
};
pub use jetq_push_signature::{SIGNATURE_HEADER, TASK_ID_HEADER, TIMESTAMP_HEADER};
pub use targets::{
    FieldError, Target, Targets, TargetsFileError, MAX_CONCURRENCY, QUEUE_PLACEHOLDER,
    TASK_PLACEHOLDER,
};

use dispatch::{Dispatcher, LiveTarget};

/// Default of `JETQ_PUSH_MAX_RESPONSE_BYTES`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;

fn default_max_response_bytes() -> usize {
    DEFAULT_MAX_RESPONSE_BYTES
}

/// The push worker's own variables (the worker's `JETQ_*` settings apply as well).
///
/// | variable | meaning |
/// |---|---|
/// | `JETQ_PUSH_TARGETS_FILE` | the targets file (required; see [`Targets`]) |
/// | `JETQ_PUSH_SIGNING_KEYS` | `key1[,key2]`: requests are signed with each (required unless unsigned) |
/// | `JETQ_PUSH_UNSIGNED` | `true` sends requests without a signature (default `false`; development only) |
/// | `JETQ_PUSH_MAX_RESPONSE_BYTES` | most bytes of a response body read (default 65536); 1 KiB of it goes into a failure record |
#[derive(Clone, Deserialize)]
pub struct PushSettings {
    /// The targets file.
    pub push_targets_file: PathBuf,
    /// The signing keys, as in the variable (secret: never shown by `Debug`).
    #[serde(default)]
    pub push_signing_keys: Option<String>,
    /// Send unsigned requests.
    #[serde(default)]
    pub push_unsigned: bool,
    /// Most bytes of a response body read.
    #[serde(default = "default_max_response_bytes")]
    pub push_max_response_bytes: usize,
}

impl fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushSettings")
            .field("push_targets_file", &self.push_targets_file)
            .field(
                "push_signing_keys",
                &self.push_signing_keys.as_ref().map(|_| "(redacted)"),
            )
            .field("push_unsigned", &self.push_unsigned)
            .field("push_max_response_bytes", &self.push_max_response_bytes)
            .finish()
    }
}

/// Everything the push handlers need: the targets, the signing and the response limit.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The validated targets.
    pub targets: Targets,
    /// How requests are signed.
    pub signing: Signing,
    /// Most bytes of a response body read.
    pub max_response_bytes: usize,
}

impl PushConfig {
    /// A configuration with the default response limit.
    pub fn new(targets: Targets, signing: Signing) -> Self {
        PushConfig {
            targets,
            signing,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Reads [`PushSettings`] from the given variables, loads the targets file and the keys.
    /// Every error names the variable, or the target and field, at fault.
    ///
    /// ```
    /// let vars = vec![("JETQ_PUSH_TARGETS_FILE".to_owned(), "/nonexistent.yaml".to_owned())];
    /// let err = jetq_push::PushConfig::from_env_iter(vars).unwrap_err();
    /// assert!(err.to_string().contains("JETQ_PUSH_SIGNING_KEYS"), "{err}");
    /// ```
    pub fn from_env_iter<I>(vars: I) -> Result<Self, PushError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let settings: PushSettings = jetq_contract::config::from_env_iter(vars)?;
        let signing = match (&settings.push_signing_keys, settings.push_unsigned) {
            (Some(keys), false) => {
                Signing::Keys(SigningKeys::from_env_value(keys).map_err(|err| {
                    PushError::SigningKeys {
                        problem: err.to_string(),
                    }
                })?)
            }
            (None, true) => Signing::Unsigned,
            (Some(_), true) => return Err(PushError::SigningConflict),
            (None, false) => return Err(PushError::SigningRequired),
        };
        if settings.push_max_response_bytes < dispatch_excerpt_floor() {
            return Err(PushError::Config(ConfigError::Invalid {
                field: "JETQ_PUSH_MAX_RESPONSE_BYTES",
                problem: format!("must be at least {}", dispatch_excerpt_floor()),
            }));
        }
        let targets = Targets::load(&settings.push_targets_file)?;
        Ok(PushConfig {
            targets,
            signing,
            max_response_bytes: settings.push_max_response_bytes,
        })
    }
}

impl PushConfig {
    /// Checks the targets against the worker settings they will run under: every target's
    /// `max_attempts` below `JETQ_MAX_DELIVER`, and a target for every queue in `JETQ_QUEUES`.
    /// The worker checks both too, but cannot name the target.
    ///
    /// ```
    /// use jetq_consumer::WorkerSettings;
    /// use jetq_push::{PushConfig, Signing, Targets};
    ///
    /// let targets = Targets::from_yaml(
    ///     "targets:\n  - queue: emails\n    url: https://a.example/x\n    max_attempts: 40\n",
    ///     std::path::Path::new("inline"),
    /// ).unwrap();
    /// let config = PushConfig::new(targets, Signing::Unsigned);
    /// let err = config.check_worker(&WorkerSettings::default()).unwrap_err();
    /// assert!(err.to_string().contains("target emails"), "{err}");
    /// ```
    pub fn check_worker(&self, settings: &WorkerSettings) -> Result<(), PushError> {
        for target in self.targets.iter() {
            if i64::from(target.max_attempts) >= settings.max_deliver {
                return Err(PushError::AttemptsExceedDeliveries {
                    target: target.name.clone(),
                    max_attempts: target.max_attempts,
                    max_deliver: settings.max_deliver,
                });
            }
        }
        if !settings.janitor {
            for queue in &settings.queues {
                if !self.targets.iter().any(|target| &target.queue == queue) {
                    return Err(PushError::QueueWithoutTarget {
                        queue: queue.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn dispatch_excerpt_floor() -> usize {
    jetq_contract::failure::MAX_HTTP_BODY_EXCERPT
}

/// Why the push worker cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A variable is missing or unusable; the message names it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The targets file is unusable; the message names each target and field at fault.
    #[error(transparent)]
    Targets(#[from] TargetsFileError),
    /// No signing keys and unsigned requests were not asked for.
    #[error(
        "JETQ_PUSH_SIGNING_KEYS is not set: jetq-push signs every request so endpoints can \
         verify it comes from jetq (docs/PUSH-SIGNATURES.md). Set it to a secret shared with \
         the endpoints (two, comma separated, during a rotation), or set JETQ_PUSH_UNSIGNED=true \
         to send unsigned requests (development only)"
    )]
    SigningRequired,
    /// Both keys and `JETQ_PUSH_UNSIGNED=true` were given.
    #[error("JETQ_PUSH_UNSIGNED=true and JETQ_PUSH_SIGNING_KEYS are both set; unset one of them")]
    SigningConflict,
    /// The keys are unusable (the message never holds a key).
    #[error("invalid JETQ_PUSH_SIGNING_KEYS: {problem}")]
    SigningKeys {
        /// What is wrong.
        problem: String,
    },
    /// A target allows more attempts than the queue delivers a task.
    #[error(
        "target {target}: field `max_attempts` is {max_attempts} but JETQ_MAX_DELIVER is \
         {max_deliver}; a task is delivered at most JETQ_MAX_DELIVER times (one delivery is kept \
         to dead-letter a crashed final attempt): raise JETQ_MAX_DELIVER above {max_attempts} \
         or lower max_attempts"
    )]
    AttemptsExceedDeliveries {
        /// The target.
        target: String,
        /// Its attempts.
        max_attempts: u32,
        /// `JETQ_MAX_DELIVER`.
        max_deliver: i64,
    },
    /// A queue in `JETQ_QUEUES` has no target.
    #[error(
        "queue {queue} is listed in JETQ_QUEUES but the targets file has no target for it; \
         add a target or fix JETQ_QUEUES"
    )]
    QueueWithoutTarget {
        /// The queue.
        queue: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The worker could not be built.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// The worker's builder from `JETQ_*` (connection, streams, worker settings) with one push
/// handler per target registered: what the `jetq-push` binary runs.
pub fn from_env() -> Result<WorkerBuilder, PushError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let config = PushConfig::from_env_iter(vars.clone())?;
    config.check_worker(&WorkerSettings::from_env_iter(vars)?)?;
    register(Worker::from_env()?, &config)
}

/// Registers one raw handler per target on `builder`: a queue-wide target takes every task
/// type of its queue ([`ANY_TASK`]) that has no target of its own.
///
/// The handlers' [`TaskOptions`]: the target's `max_attempts` and backoff, and an attempt
/// timeout of the target's `max_wait + timeout` (waiting for a slot or token is part of the
/// attempt; the worker heartbeats it, so a waiting task is not redelivered). A task's own
/// timeout (`Jetq-Timeout-Ms`) replaces the attempt timeout and so caps the request's.
pub fn register(builder: WorkerBuilder, config: &PushConfig) -> Result<WorkerBuilder, PushError> {
    register_with_meter(builder, config, &metrics::meter())
}

/// [`register`], recording the push metrics ([`metrics`]) with `meter` instead of the global
/// meter provider's `jetq-push` meter.
pub fn register_with_meter(
    builder: WorkerBuilder,
    config: &PushConfig,
    meter: &opentelemetry::metrics::Meter,
) -> Result<WorkerBuilder, PushError> {
    let dispatcher = Arc::new(Dispatcher {
        client: http_client()?,
        signing: config.signing.clone(),
        max_response_bytes: config.max_response_bytes,
        metrics: metrics::PushMetrics::new(meter),
    });
    let mut builder = builder;
    for target in config.targets.iter() {
        let live = Arc::new(LiveTarget::new(target.clone()));
        let options = TaskOptions::default()
            .max_attempts(target.max_attempts)
            .timeout(target.max_wait + target.timeout)
            .retry(target.retry.clone());
        let task = target.task.clone().unwrap_or_else(|| ANY_TASK.to_owned());
        let dispatcher = dispatcher.clone();
        builder = builder.raw_handler(target.queue.clone(), task, options, move |payload, ctx| {
            let dispatcher = dispatcher.clone();
            let live = live.clone();
            async move { dispatcher.deliver(&live, payload, ctx).await }
        });
        tracing::info!(
            target = %target.name,
            queue = %target.queue,
            task = target.task.as_deref().unwrap_or(ANY_TASK),
            url = %target.url,
            concurrency = target.concurrency,
            rate = ?target.rate,
            "push target"
        );
    }
    if matches!(config.signing, Signing::Unsigned) {
        tracing::warn!("JETQ_PUSH_UNSIGNED=true: requests are not signed; endpoints cannot tell them from forgeries");
    }
    Ok(builder)
}

/// One pooled client for HTTP/1.1 and HTTP/2 (over TLS by ALPN), verifying TLS with rustls
/// (ring) against the system's trust store. It never follows redirects itself.
fn http_client() -> Result<dispatch::HttpClient, PushError> {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "could not load some system CA certificates");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        tracing::warn!(
            ignored,
            "no usable system CA certificates: https targets will fail their TLS handshakes \
             (install the CA bundle, e.g. ca-certificates, or use a base image that has it)"
        );
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| PushError::Client(err.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https),
    )
}
