//! Configuration shared by every jetq component, read from `JETQ_*` environment variables, or
//! built in code.
//!
//! Settings are flat structs, so each concern is its own struct read from the same environment:
//! [`ConnectionConfig`] (where NATS is and how to log in) and [`StreamSettings`] (how the task
//! and dead-letter streams are provisioned); every component's own settings are read the same
//! way with [`from_env_iter`]. Durations use humantime (`30s`, `5m`, `30days`) through
//! [`duration`]. A value that cannot be read is an error naming the variable and the form it
//! accepts: `invalid JETQ_ACK_WAIT: "banana" is not a duration like 30s, 5m or 1h30m`.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use serde::Deserialize;

use crate::subject::{Subjects, DEFAULT_PREFIX};

mod env;

/// The prefix of every jetq environment variable.
pub const ENV_PREFIX: &str = "JETQ_";

/// A configuration value that must never appear in logs or error messages.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for handing to the NATS client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A configuration that cannot work, with a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable could not be read (wrong type or format).
    #[error("invalid {variable}: {problem}")]
    Variable {
        /// The variable, e.g. `JETQ_ACK_WAIT`.
        variable: String,
        /// Its value and the form that is accepted, e.g. `"banana" is not a duration like 30s`.
        problem: String,
    },
    /// A required environment variable is not set.
    #[error("{variable} is required")]
    Missing {
        /// The variable, e.g. `JETQ_PUSH_TARGETS_FILE`.
        variable: String,
    },
    /// The environment could not be read for a reason no single variable explains.
    #[error("invalid jetq configuration in the environment: {0}")]
    Env(String),
    /// A value parsed but is not usable.
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// The environment variable (or builder field) at fault, e.g. `JETQ_NATS_URL`.
        field: &'static str,
        /// What is wrong with it and what is expected.
        problem: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field,
            problem: problem.into(),
        }
    }
}

/// Reads a config struct from `JETQ_*` variables of the given environment: the one reader of
/// every jetq settings struct (connection, streams, worker, producer, scheduler, push).
///
/// `JETQ_ACK_WAIT` fills the field `ack_wait`. Numbers and booleans are parsed here; duration
/// fields use [`duration`]. Every error names the variable and what it accepts. Tests pass
/// their own iterator instead of mutating the process environment.
///
/// ```
/// use jetq_contract::{ConfigError, StreamSettings};
/// let vars = [("JETQ_DUPLICATE_WINDOW".to_string(), "soon".to_string())];
/// let err = jetq_contract::config::from_env_iter::<StreamSettings, _>(vars).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid JETQ_DUPLICATE_WINDOW: \"soon\" is not a duration like 30s, 5m or 1h30m"
/// );
/// ```
pub fn from_env_iter<T, I>(vars: I) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    env::from_iter(ENV_PREFIX, vars)
}

/// Serde adapter of a `Duration` setting (`#[serde(with = "jetq_contract::config::duration")]`):
/// humantime text (`30s`, `5m`, `1h30m`, `30days`), with an error that shows the accepted form.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// The accepted form, as errors name it.
    pub const EXPECTED: &str = "a duration like 30s, 5m or 1h30m";

    /// Reads humantime text.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        // Parsed inside the visitor, so the refusal comes out of the deserializer of the value
        // (which knows its variable) rather than after it.
        deserializer.deserialize_str(HumanDuration)
    }

    struct HumanDuration;

    impl serde::de::Visitor<'_> for HumanDuration {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text.trim())
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))
        }
    }

    /// Writes humantime text.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(value, serializer)
    }
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}
fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
/// How long a JetStream request (a publish's ack included) may take unless
/// `JETQ_REQUEST_TIMEOUT` says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

/// Where the NATS servers are and how to authenticate.
///
/// | variable | meaning |
/// |---|---|
/// | `JETQ_NATS_URL` | one or more server URLs, comma separated (default `nats://127.0.0.1:4222`) |
/// | `JETQ_NATS_TOKEN` | token authentication |
/// | `JETQ_NATS_USER`, `JETQ_NATS_PASSWORD` | user/password authentication |
/// | `JETQ_NATS_NKEY_SEED` | nkey seed (`SU…`) |
/// | `JETQ_NATS_CREDS_FILE` | path to a `.creds` file (JWT + nkey) |
/// | `JETQ_NATS_TLS_CA` | CA certificate (PEM) to verify the server |
/// | `JETQ_NATS_TLS_CERT`, `JETQ_NATS_TLS_KEY` | client certificate and key (PEM) |
/// | `JETQ_NATS_TLS_REQUIRED` | require TLS even for `nats://` URLs |
/// | `JETQ_PREFIX` | subject prefix (default `jetq`) |
/// | `JETQ_CONNECT_TIMEOUT` | connect timeout (default `5s`) |
/// | `JETQ_REQUEST_TIMEOUT` | JetStream API and publish-ack timeout (default `5s`) |
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConnectionConfig {
    /// Server URLs, comma separated.
    #[serde(default = "default_url")]
    pub nats_url: String,
    /// Token authentication.
    #[serde(default)]
    pub nats_token: Option<Secret>,
    /// User name for user/password authentication.
    #[serde(default)]
    pub nats_user: Option<String>,
    /// Password for user/password authentication.
    #[serde(default)]
    pub nats_password: Option<Secret>,
    /// nkey seed.
    #[serde(default)]
    pub nats_nkey_seed: Option<Secret>,
    /// Credentials file (JWT and nkey seed).
    #[serde(default)]
    pub nats_creds_file: Option<PathBuf>,
    /// CA certificate for verifying the server.
    #[serde(default)]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate.
    #[serde(default)]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key.
    #[serde(default)]
    pub nats_tls_key: Option<PathBuf>,
    /// Require TLS.
    #[serde(default)]
    pub nats_tls_required: bool,
    /// Subject prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Connect timeout.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// JetStream request and publish-ack timeout.
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            nats_url: default_url(),
            nats_token: None,
            nats_user: None,
            nats_password: None,
            nats_nkey_seed: None,
            nats_creds_file: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_tls_required: false,
            prefix: default_prefix(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
        }
    }
}

impl ConnectionConfig {
    /// Reads `JETQ_*` from the process environment and validates the result.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_iter(std::env::vars())
    }

    /// Reads `JETQ_*` from the given variables and validates the result.
    ///
    /// ```
    /// use jetq_contract::ConnectionConfig;
    /// let vars = [("JETQ_NATS_URL".to_string(), "nats://a:4222,nats://b:4222".to_string())];
    /// let config = ConnectionConfig::from_env_iter(vars).unwrap();
    /// assert_eq!(config.server_urls().len(), 2);
    /// ```
    pub fn from_env_iter<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let config: ConnectionConfig = from_env_iter(vars)?;
        config.validate()?;
        Ok(config)
    }

    /// Connection settings for one server URL, defaults for the rest.
    pub fn with_url(url: impl Into<String>) -> Self {
        ConnectionConfig {
            nats_url: url.into(),
            ..ConnectionConfig::default()
        }
    }

    /// The server URLs, trimmed, empty entries dropped.
    pub fn server_urls(&self) -> Vec<&str> {
        self.nats_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// The subjects under the configured prefix.
    pub fn subjects(&self) -> Result<Subjects, ConfigError> {
        Subjects::new(&self.prefix)
            .map_err(|err| ConfigError::invalid("JETQ_PREFIX", err.to_string()))
    }

    /// Checks that the settings can work together; the error names the variable to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let urls = self.server_urls();
        if urls.is_empty() {
            return Err(ConfigError::invalid(
                "JETQ_NATS_URL",
                "no server URL given (expected e.g. nats://127.0.0.1:4222)",
            ));
        }
        for url in urls {
            async_nats::ServerAddr::from_str(url).map_err(|err| {
                ConfigError::invalid(
                    "JETQ_NATS_URL",
                    format!("{url:?} is not a NATS URL ({err}); expected e.g. nats://host:4222"),
                )
            })?;
        }
        self.subjects()?;
        let methods = [
            self.nats_token.is_some(),
            self.nats_user.is_some() || self.nats_password.is_some(),
            self.nats_nkey_seed.is_some(),
            self.nats_creds_file.is_some(),
        ];
        if methods.iter().filter(|set| **set).count() > 1 {
            return Err(ConfigError::invalid(
                "JETQ_NATS_TOKEN/USER/NKEY_SEED/CREDS_FILE",
                "more than one authentication method is set; keep exactly one",
            ));
        }
        if self.nats_user.is_some() != self.nats_password.is_some() {
            return Err(ConfigError::invalid(
                "JETQ_NATS_USER/JETQ_NATS_PASSWORD",
                "set both the user and the password, or neither",
            ));
        }
        if self.nats_tls_cert.is_some() != self.nats_tls_key.is_some() {
            return Err(ConfigError::invalid(
                "JETQ_NATS_TLS_CERT/JETQ_NATS_TLS_KEY",
                "a client certificate needs its key and a key needs its certificate",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "JETQ_REQUEST_TIMEOUT",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

fn default_replicas() -> usize {
    1
}
fn default_limit() -> i64 {
    -1
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}
fn default_dead_max_age() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_status_ttl() -> Duration {
    crate::status::DEFAULT_STATUS_TTL
}

/// How the task and dead-letter streams are provisioned.
///
/// These settings apply when a process creates a missing stream or bucket. An existing one is
/// updated to them only by the explicit provisioner (`jetq-provision`); workers, schedulers and
/// producers leave it unchanged and warn for each difference, naming the variable (see
/// [`crate::topology`] and `docs/OPERATIONS.md`, "Who provisions what").
///
/// | variable | meaning |
/// |---|---|
/// | `JETQ_STREAM_REPLICAS` | replicas of every jetq stream (1 in dev, 3 in production) |
/// | `JETQ_STREAM_MAX_MSGS` | task stream message limit (-1: none); when full, enqueue is refused |
/// | `JETQ_STREAM_MAX_BYTES` | task stream byte limit (-1: none); when full, enqueue is refused |
/// | `JETQ_DUPLICATE_WINDOW` | idempotency-key dedup window (default `2m`) |
/// | `JETQ_DEAD_MAX_AGE` | how long dead letters are kept (default `30days`) |
/// | `JETQ_DEAD_MAX_BYTES` | dead-letter stream byte limit (-1: none; oldest dropped first) |
/// | `JETQ_STATUS_TTL` | how long status records and artifacts of tracked tasks are kept after their last write (default `24h`) |
/// | `JETQ_ARTIFACTS_MAX_BYTES` | artifact store byte limit (-1: none; when full, new artifacts are refused) |
/// | `JETQ_TASK_RETENTION` | `workqueue` (default: an acked task is deleted at once) or `limits` (acked tasks are purged in bulk below each durable's ack floor: the fast durable drain, docs/DURABLE_DRAIN.md) |
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StreamSettings {
    /// Replicas of every jetq stream.
    #[serde(default = "default_replicas")]
    pub stream_replicas: usize,
    /// Task stream message limit.
    #[serde(default = "default_limit")]
    pub stream_max_msgs: i64,
    /// Task stream byte limit.
    #[serde(default = "default_limit")]
    pub stream_max_bytes: i64,
    /// Dedup window for `Nats-Msg-Id`.
    #[serde(default = "default_duplicate_window", with = "duration")]
    pub duplicate_window: Duration,
    /// Dead-letter retention.
    #[serde(default = "default_dead_max_age", with = "duration")]
    pub dead_max_age: Duration,
    /// Dead-letter stream byte limit.
    #[serde(default = "default_limit")]
    pub dead_max_bytes: i64,
    /// Retention of status records and artifacts after their last write.
    #[serde(default = "default_status_ttl", with = "duration")]
    pub status_ttl: Duration,
    /// Artifact store byte limit.
    #[serde(default = "default_limit")]
    pub artifacts_max_bytes: i64,
    /// How the task stream removes finished tasks.
    #[serde(default)]
    pub task_retention: TaskRetention,
}

/// How the task stream removes finished tasks (`JETQ_TASK_RETENTION`).
///
/// ```
/// use jetq_contract::config::TaskRetention;
/// assert_eq!("limits".parse::<TaskRetention>().unwrap(), TaskRetention::Limits);
/// assert!("interest".parse::<TaskRetention>().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskRetention {
    /// WorkQueue retention: the server deletes a task when it is acked — one write and, under
    /// `sync_interval: always`, one fsync per task.
    #[default]
    WorkQueue,
    /// Limits retention: an ack only moves the durable's ack floor (memory), and workers purge
    /// each queue's tasks below its floor in bulk every `JETQ_PURGE_INTERVAL` — one fsync per
    /// purge. The durable mode's fast drain (docs/DURABLE_DRAIN.md).
    Limits,
}

impl std::str::FromStr for TaskRetention {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "workqueue" => Ok(TaskRetention::WorkQueue),
            "limits" => Ok(TaskRetention::Limits),
            other => Err(format!(
                "unknown task retention {other:?}: use \"workqueue\" or \"limits\""
            )),
        }
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            stream_replicas: default_replicas(),
            stream_max_msgs: default_limit(),
            stream_max_bytes: default_limit(),
            duplicate_window: default_duplicate_window(),
            dead_max_age: default_dead_max_age(),
            dead_max_bytes: default_limit(),
            status_ttl: default_status_ttl(),
            artifacts_max_bytes: default_limit(),
            task_retention: TaskRetention::default(),
        }
    }
}

impl StreamSettings {
    /// Reads `JETQ_*` from the process environment and validates the result.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_iter(std::env::vars())
    }

    /// Reads `JETQ_*` from the given variables and validates the result.
    pub fn from_env_iter<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let settings: StreamSettings = from_env_iter(vars)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the settings; the error names the variable to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=5).contains(&self.stream_replicas) {
            return Err(ConfigError::invalid(
                "JETQ_STREAM_REPLICAS",
                format!("{} is outside 1..=5", self.stream_replicas),
            ));
        }
        if self.duplicate_window.is_zero() {
            return Err(ConfigError::invalid(
                "JETQ_DUPLICATE_WINDOW",
                "must be greater than zero, or idempotency keys do nothing",
            ));
        }
        if self.dead_max_age < self.duplicate_window {
            return Err(ConfigError::invalid(
                "JETQ_DEAD_MAX_AGE",
                "must be at least JETQ_DUPLICATE_WINDOW",
            ));
        }
        if self.status_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "JETQ_STATUS_TTL",
                "must be at least 1s (status records would expire before anyone reads them)",
            ));
        }
        for (field, value) in [
            ("JETQ_STREAM_MAX_MSGS", self.stream_max_msgs),
            ("JETQ_STREAM_MAX_BYTES", self.stream_max_bytes),
            ("JETQ_DEAD_MAX_BYTES", self.dead_max_bytes),
            ("JETQ_ARTIFACTS_MAX_BYTES", self.artifacts_max_bytes),
        ] {
            if value == 0 || value < -1 {
                return Err(ConfigError::invalid(
                    field,
                    format!("{value} is not a limit; use a positive number or -1 for none"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_variables() {
        let config = ConnectionConfig::from_env_iter(vars(&[])).unwrap();
        assert_eq!(config, ConnectionConfig::default());
        let settings = StreamSettings::from_env_iter(vars(&[])).unwrap();
        assert_eq!(settings, StreamSettings::default());
    }

    #[test]
    fn reads_every_field() {
        let config = ConnectionConfig::from_env_iter(vars(&[
            ("JETQ_NATS_URL", "nats://a:4222, nats://b:4223"),
            ("JETQ_NATS_USER", "app"),
            ("JETQ_NATS_PASSWORD", "hunter2"),
            ("JETQ_PREFIX", "shop"),
            ("JETQ_REQUEST_TIMEOUT", "750ms"),
            ("OTHER", "ignored"),
        ]))
        .unwrap();
        assert_eq!(config.server_urls(), vec!["nats://a:4222", "nats://b:4223"]);
        assert_eq!(config.nats_password.as_ref().unwrap().expose(), "hunter2");
        assert_eq!(config.request_timeout, Duration::from_millis(750));
        assert_eq!(config.subjects().unwrap().tasks_stream(), "SHOP_TASKS");
    }

    #[test]
    fn secrets_never_print() {
        let config =
            ConnectionConfig::from_env_iter(vars(&[("JETQ_NATS_TOKEN", "s3cr3t")])).unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("JETQ_NATS_URL", "http://[::")], "JETQ_NATS_URL"),
            (&[("JETQ_NATS_URL", " , ")], "JETQ_NATS_URL"),
            (
                &[("JETQ_NATS_USER", "u")],
                "JETQ_NATS_USER/JETQ_NATS_PASSWORD",
            ),
            (
                &[("JETQ_NATS_TOKEN", "t"), ("JETQ_NATS_NKEY_SEED", "SU")],
                "JETQ_NATS_TOKEN/USER/NKEY_SEED/CREDS_FILE",
            ),
            (&[("JETQ_PREFIX", "a.b")], "JETQ_PREFIX"),
            (
                &[("JETQ_NATS_TLS_CERT", "/c.pem")],
                "JETQ_NATS_TLS_CERT/JETQ_NATS_TLS_KEY",
            ),
        ];
        for (input, field) in cases {
            let err = ConnectionConfig::from_env_iter(vars(input)).unwrap_err();
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
        let err =
            ConnectionConfig::from_env_iter(vars(&[("JETQ_CONNECT_TIMEOUT", "soon")])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Variable { variable, .. } if variable == "JETQ_CONNECT_TIMEOUT"),
            "{err}"
        );
        let err =
            StreamSettings::from_env_iter(vars(&[("JETQ_STREAM_REPLICAS", "7")])).unwrap_err();
        assert!(err.to_string().contains("JETQ_STREAM_REPLICAS"), "{err}");
        let err =
            StreamSettings::from_env_iter(vars(&[("JETQ_STREAM_MAX_MSGS", "0")])).unwrap_err();
        assert!(err.to_string().contains("JETQ_STREAM_MAX_MSGS"), "{err}");
        let err = StreamSettings::from_env_iter(vars(&[("JETQ_STATUS_TTL", "0s")])).unwrap_err();
        assert!(err.to_string().contains("JETQ_STATUS_TTL"), "{err}");
        let settings = StreamSettings::from_env_iter(vars(&[("JETQ_STATUS_TTL", "2h")])).unwrap();
        assert_eq!(settings.status_ttl, Duration::from_secs(7200));
        assert_eq!(settings.task_retention, TaskRetention::WorkQueue);
        let settings =
            StreamSettings::from_env_iter(vars(&[("JETQ_TASK_RETENTION", "limits")])).unwrap();
        assert_eq!(settings.task_retention, TaskRetention::Limits);
        let err = StreamSettings::from_env_iter(vars(&[("JETQ_TASK_RETENTION", "interest")]))
            .unwrap_err();
        assert!(err.to_string().contains("JETQ_TASK_RETENTION"), "{err}");
        assert!(
            err.to_string().contains(r#""workqueue", "limits""#),
            "{err}"
        );
    }

    /// Every primitive type's error names the variable, the refused value and the accepted
    /// form (envy 0.4.2 named neither for durations and dropped the prefix for numbers).
    #[test]
    fn parse_errors_name_the_variable_and_the_accepted_form() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct All {
            #[serde(default)]
            flag: bool,
            #[serde(default)]
            count: usize,
            #[serde(default)]
            small: u32,
            #[serde(default)]
            limit: i64,
            #[serde(default, with = "duration")]
            wait: Duration,
            #[serde(default)]
            path: Option<PathBuf>,
            #[serde(default)]
            list: Vec<u16>,
        }
        for (name, value, expected) in [
            (
                "JETQ_FLAG",
                "yes",
                "invalid JETQ_FLAG: \"yes\" is not true or false",
            ),
            (
                "JETQ_COUNT",
                "many",
                "invalid JETQ_COUNT: \"many\" is not a whole number (0 or more)",
            ),
            (
                "JETQ_COUNT",
                "-1",
                "invalid JETQ_COUNT: \"-1\" is not a whole number (0 or more)",
            ),
            (
                "JETQ_SMALL",
                "5000000000",
                "invalid JETQ_SMALL: \"5000000000\" is not a whole number from 0 to 4294967295",
            ),
            (
                "JETQ_LIMIT",
                "1.5",
                "invalid JETQ_LIMIT: \"1.5\" is not a whole number",
            ),
            (
                "JETQ_WAIT",
                "banana",
                "invalid JETQ_WAIT: \"banana\" is not a duration like 30s, 5m or 1h30m",
            ),
            (
                "JETQ_WAIT",
                "30",
                "invalid JETQ_WAIT: \"30\" is not a duration like 30s, 5m or 1h30m",
            ),
            (
                "JETQ_LIST",
                "1,x",
                "invalid JETQ_LIST: \"x\" is not a whole number from 0 to 65535",
            ),
        ] {
            let err = from_env_iter::<All, _>(vars(&[(name, value)])).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        let all: All = from_env_iter(vars(&[
            ("JETQ_FLAG", " TRUE "),
            ("JETQ_COUNT", "7"),
            ("JETQ_LIMIT", "-1"),
            ("JETQ_WAIT", "1h30m"),
            ("JETQ_PATH", "/x"),
            ("JETQ_LIST", "1,2"),
            ("OTHER_COUNT", "ignored"),
        ]))
        .unwrap();
        assert!(all.flag);
        assert_eq!((all.count, all.limit, all.list), (7, -1, vec![1, 2]));
        assert_eq!(all.wait, Duration::from_secs(5400));
        let long = "x".repeat(500);
        let err = from_env_iter::<All, _>(vars(&[("JETQ_COUNT", &long)])).unwrap_err();
        assert!(
            err.to_string().len() < 200,
            "a long value is cut short: {err}"
        );
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Needs {
            targets_file: PathBuf,
        }
        let err = from_env_iter::<Needs, _>(vars(&[])).unwrap_err();
        assert_eq!(err.to_string(), "JETQ_TARGETS_FILE is required");
    }
}
