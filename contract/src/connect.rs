//! Connecting to NATS with a [`ConnectionConfig`], refusing servers too old for jetq.

use std::fmt;

use crate::config::{ConfigError, ConnectionConfig};

/// The oldest server jetq runs on. Older servers silently ignore consumer and stream fields
/// jetq relies on (multiple filters, metadata, strict create), which would give wrong
/// behaviour with no error.
pub const MIN_SERVER_VERSION: Version = Version::new(2, 10, 0);

/// The oldest server recommended in production: 2.10.20–2.10.22 could lose whole streams on
/// a process crash.
pub const PRODUCTION_FLOOR: Version = Version::new(2, 10, 23);

/// A server version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
}

impl Version {
    /// A version from its parts.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `2.15.1`, `v2.10.0-beta.1` and similar; pre-release suffixes are ignored.
    pub fn parse(text: &str) -> Option<Version> {
        let core = text.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(Version::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is unusable; the message names the variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file {path}: {source}")]
    CredsFile {
        /// The configured path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No server accepted the connection (unreachable, TLS or authentication failure).
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect {
        /// The configured URLs.
        urls: String,
        /// The client's error.
        source: async_nats::ConnectError,
    },
    /// The server is older than jetq supports.
    #[error(
        "nats-server {found} is too old for jetq: {required} or newer is required \
         (2.10.23 or newer in production); older servers silently ignore settings jetq relies on"
    )]
    ServerTooOld {
        /// The version the server reported.
        found: String,
        /// The minimum version.
        required: Version,
    },
}

/// Checks a server's reported version against [`MIN_SERVER_VERSION`].
pub fn check_server_version(reported: &str) -> Result<Version, ConnectError> {
    match Version::parse(reported) {
        Some(version) if version >= MIN_SERVER_VERSION => Ok(version),
        _ => Err(ConnectError::ServerTooOld {
            found: reported.to_owned(),
            required: MIN_SERVER_VERSION,
        }),
    }
}

/// Connects with the given configuration and checks the server version.
///
/// The client reconnects on its own afterwards; a failure here is a startup error the caller
/// should report and exit on.
pub async fn connect(
    config: &ConnectionConfig,
    client_name: &str,
) -> Result<async_nats::Client, ConnectError> {
    config.validate()?;
    let mut options = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .require_tls(config.nats_tls_required);
    if let Some(token) = &config.nats_token {
        options = options.token(token.expose().to_owned());
    }
    if let (Some(user), Some(password)) = (&config.nats_user, &config.nats_password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(seed) = &config.nats_nkey_seed {
        options = options.nkey(seed.expose().to_owned());
    }
    if let Some(path) = &config.nats_creds_file {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::CredsFile {
                    path: path.display().to_string(),
                    source,
                })?;
    }
    if let Some(ca) = &config.nats_tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.nats_tls_cert, &config.nats_tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let urls = config.server_urls();
    let client =
        options
            .connect(urls.as_slice())
            .await
            .map_err(|source| ConnectError::Connect {
                urls: urls.join(","),
                source,
            })?;
    check_server_version(&client.server_info().version)?;
    Ok(client)
}

/// A JetStream context whose API and publish-ack timeout is the configured request timeout.
pub fn jetstream(
    client: async_nats::Client,
    config: &ConnectionConfig,
) -> async_nats::jetstream::Context {
    let mut context = async_nats::jetstream::new(client);
    context.set_timeout(config.request_timeout);
    context
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(Version::parse("2.15.1"), Some(Version::new(2, 15, 1)));
        assert_eq!(
            Version::parse("v2.10.0-beta.3"),
            Some(Version::new(2, 10, 0))
        );
        assert_eq!(Version::parse("2.11"), Some(Version::new(2, 11, 0)));
        assert_eq!(Version::parse("garbage"), None);
    }

    #[test]
    fn refuses_old_servers_by_name() {
        let err = check_server_version("2.9.10").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("2.9.10") && text.contains("2.10.0"), "{text}");
        assert!(check_server_version("2.10.0").is_ok());
        assert!(check_server_version("2.15.1").is_ok());
        assert!(check_server_version("").is_err());
    }
}
