//! What every jetq builder and binary does before its own work, written once: get a client
//! (connect with a [`ConnectionConfig`], or adopt the caller's after checking its server), pick
//! the default OpenTelemetry meter, and wait for the signal to stop.
//!
//! The producer, the worker, the scheduler, jetq-push and the CLI all start here, so a rule
//! about starting (the oldest server jetq accepts, the signals that stop a process) changes in
//! one place.

use async_nats::Client;
use opentelemetry::{metrics::Meter, InstrumentationScope};

use crate::{
    config::ConnectionConfig,
    connect::{check_server_version, connect, ConnectError},
};

/// Adopts a client the caller connected itself: checks its server version as [`connect`] does
/// for a client it makes, so an adopted client cannot bring in a server too old for jetq.
pub fn adopt(client: Client) -> Result<Client, ConnectError> {
    check_server_version(&client.server_info().version)?;
    Ok(client)
}

/// The client a builder runs on: `client` if the caller gave one ([`adopt`]ed), else a new
/// connection made with `config` under the name `client_name` (what the server's monitoring
/// shows, e.g. `jetq-worker`).
pub async fn connect_or_adopt(
    config: &ConnectionConfig,
    client: Option<Client>,
    client_name: &str,
) -> Result<Client, ConnectError> {
    match client {
        Some(client) => adopt(client),
        None => connect(config, client_name).await,
    }
}

/// A component's default meter: the global meter provider's meter named `scope` (the crate
/// name, e.g. `jetq-consumer`) with the crate's `version`. Taken when the builder builds, so a
/// provider installed before that (by `jetq-telemetry` or the application) is the one used.
pub fn meter(scope: &'static str, version: &'static str) -> Meter {
    opentelemetry::global::meter_with_scope(
        InstrumentationScope::builder(scope)
            .with_version(version)
            .build(),
    )
}

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C). If SIGTERM cannot be
/// listened for, says so once and waits for Ctrl-C alone.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
