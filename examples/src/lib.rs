//! The jetq seed scenario as a runnable example.
//!
//! A web app ([`web`]) enqueues a welcome email on signup and a CSV export on request, and
//! answers at once; a worker ([`worker`]) sends the email over SMTP and writes the export.
//! [`demo`] runs the whole thing on one machine: a local `nats-server` ([`local_nats`]), an SMTP
//! sink ([`smtp_sink`]), the web app and the worker, driven by a few HTTP requests
//! ([`http_client`]).
//!
//! Binaries: `web`, `worker` (configured from the environment) and `demo` (the quickstart:
//! `scripts/demo.sh`).

#![warn(missing_docs)]

pub mod chunked;
pub mod demo;
pub mod flow;
pub mod http_client;
pub mod local_nats;
mod process;
pub mod smtp_sink;
pub mod tasks;
pub mod web;
pub mod worker;

use std::path::PathBuf;

pub use process::free_port;

/// A process or file the demo or a test needs could not be set up; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// A configuration value of the example that cannot work; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable could not be parsed.
    #[error("invalid configuration in the environment ({prefix}*): {message}")]
    Env {
        /// The variable prefix read, e.g. `SMTP_`.
        prefix: &'static str,
        /// envy's message.
        message: String,
    },
    /// A value parsed but is not usable.
    #[error("invalid {variable}: {problem}")]
    Invalid {
        /// The variable at fault.
        variable: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl ConfigError {
    pub(crate) fn from_envy(prefix: &'static str, err: envy::Error) -> Self {
        let message = match err {
            envy::Error::MissingValue(field) => {
                format!("{prefix}{} is required", field.to_uppercase())
            }
            envy::Error::Custom(message) => message,
        };
        ConfigError::Env { prefix, message }
    }
}

/// The repository root (the parent of this crate's directory, as built).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Initializes logging for the binaries: `RUST_LOG` if set, else `default_filter`.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
