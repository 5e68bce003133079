//! The [`Admin`] handle: one connection to NATS and the jetq names of one installation.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream::Stream, ErrorCode};
use jetq_contract::{connect::Version, ConnectionConfig, Subjects};
use jetq_producer::Producer;

use crate::error::AdminError;

/// The operator's handle on a jetq installation: queue statistics, dead letters, replay, purge,
/// pause and resume, enqueue. Both the `jetq` CLI and the dashboard are built on it. Cheap to
/// clone: clones share one connection.
#[derive(Debug, Clone)]
pub struct Admin {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    config: ConnectionConfig,
    producer: Producer,
}

impl Admin {
    /// Connects with `JETQ_*` settings from the environment (`JETQ_NATS_URL`, credentials, TLS,
    /// `JETQ_PREFIX`, timeouts), as every jetq binary does.
    pub async fn from_env() -> Result<Admin, AdminError> {
        Admin::connect(ConnectionConfig::from_env()?).await
    }

    /// Connects with the given configuration and checks the server version.
    pub async fn connect(config: ConnectionConfig) -> Result<Admin, AdminError> {
        config.validate()?;
        let client = jetq_contract::connect(&config, "jetq-cli").await?;
        Admin::with_client(client, config).await
    }

    /// Uses an existing client (its server version is still checked). `config` supplies the
    /// prefix and the request timeout.
    pub async fn with_client(
        client: async_nats::Client,
        config: ConnectionConfig,
    ) -> Result<Admin, AdminError> {
        let client = jetq_contract::bootstrap::adopt(client)?;
        let subjects = config.subjects()?;
        let js = jetq_contract::jetstream(client.clone(), &config);
        // The CLI never creates the task stream: enqueueing into an unprovisioned installation
        // is reported instead.
        let producer = Producer::builder()
            .connection(config.clone())
            .client(client.clone())
            .provision(false)
            .connect()
            .await
            .map_err(|err| AdminError::nats("cannot set up the producer", err))?;
        Ok(Admin {
            client,
            js,
            subjects,
            config,
            producer,
        })
    }

    /// The subjects and stream names of this installation.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context (with the configured request timeout).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The producer used by [`Admin::enqueue`].
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The configured JetStream request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// The version of the server this client is connected to now.
    pub fn server_version(&self) -> Option<Version> {
        Version::parse(&self.client.server_info().version)
    }

    /// The server's version as it reported it.
    pub fn server_version_text(&self) -> String {
        self.client.server_info().version
    }

    /// The task stream; an error that says what to do if this installation is not provisioned.
    pub(crate) async fn tasks_stream(&self) -> Result<Stream, AdminError> {
        let name = self.subjects.tasks_stream();
        self.optional_stream(&name).await?.ok_or_else(|| {
            AdminError::not_found(
                format!("task stream {name}"),
                Some(format!(
                    "jetq is not provisioned on this server with prefix {:?}: start a worker \
                     (or a producer with JETQ_PROVISION=true), or set JETQ_PREFIX",
                    self.subjects.prefix()
                )),
            )
        })
    }

    /// The dead-letter stream, if it exists.
    pub(crate) async fn dead_stream(&self) -> Result<Option<Stream>, AdminError> {
        self.optional_stream(&self.subjects.dead_stream()).await
    }

    /// The dead-letter stream, or an error naming it.
    pub(crate) async fn required_dead_stream(&self) -> Result<Stream, AdminError> {
        let name = self.subjects.dead_stream();
        self.dead_stream().await?.ok_or_else(|| {
            AdminError::not_found(
                format!("dead-letter stream {name}"),
                Some("no worker has provisioned this installation yet".into()),
            )
        })
    }

    /// A stream by name, `None` if it does not exist.
    pub(crate) async fn optional_stream(&self, name: &str) -> Result<Option<Stream>, AdminError> {
        match self.js.get_stream(name).await {
            Ok(stream) => Ok(Some(stream)),
            Err(err) => match err.kind() {
                GetStreamErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(AdminError::nats(format!("cannot read stream {name}"), err)),
            },
        }
    }
}

/// Formats a client timestamp as RFC 3339 UTC with microseconds.
pub(crate) fn format_time(at: async_nats::datetime::DateTime) -> String {
    jetq_contract::time::format(SystemTime::from(at))
}
