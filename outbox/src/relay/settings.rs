//! [`RelaySettings`]: the relay's `JETQ_*` settings.

use std::{str::FromStr, time::Duration};

use jetq_contract::{ConfigError, Secret};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

use crate::TableName;

fn default_table() -> String {
    crate::table::DEFAULT_TABLE.to_owned()
}
fn default_batch() -> usize {
    100
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_claim_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_attempts() -> u32 {
    jetq_contract::publish::DEFAULT_MAX_SENDS
}

/// Relay settings from the environment (besides the usual `JETQ_NATS_URL`, credentials and
/// `JETQ_PREFIX` of [`jetq_contract::ConnectionConfig`]).
///
/// | variable | meaning |
/// |---|---|
/// | `JETQ_DATABASE_URL` | **required**: `postgres://user:password@host:5432/db` (libpq URL; `?host=/socket/dir` for a unix socket) |
/// | `JETQ_OUTBOX_TABLE` | the outbox table and NOTIFY channel (default `jetq_outbox`) |
/// | `JETQ_RELAY_BATCH_SIZE` | rows claimed per transaction (default 100) |
/// | `JETQ_RELAY_POLL_INTERVAL` | how often to look for rows without a notification (default `1s`) |
/// | `JETQ_RELAY_CLAIM_TIMEOUT` | longest a claim (lock → publish → delete → commit) may last before it is abandoned and the database ends the session's transaction (default `30s`; keep it far below the task stream's duplicate window) |
/// | `JETQ_RELAY_PUBLISH_ATTEMPTS` | sends per row while acks time out (default 3) |
#[derive(Debug, Clone, Deserialize)]
pub struct RelaySettings {
    /// The database URL.
    pub database_url: Secret,
    /// The outbox table.
    #[serde(default = "default_table")]
    pub outbox_table: String,
    /// Rows per claim.
    #[serde(default = "default_batch")]
    pub relay_batch_size: usize,
    /// Poll interval without notifications.
    #[serde(default = "default_poll", with = "jetq_contract::config::duration")]
    pub relay_poll_interval: Duration,
    /// Longest claim transaction.
    #[serde(
        default = "default_claim_timeout",
        with = "jetq_contract::config::duration"
    )]
    pub relay_claim_timeout: Duration,
    /// Sends per row while acks time out.
    #[serde(default = "default_attempts")]
    pub relay_publish_attempts: u32,
}

impl RelaySettings {
    /// Settings for `database_url` with every default.
    pub fn new(database_url: impl Into<String>) -> RelaySettings {
        RelaySettings {
            database_url: Secret::new(database_url),
            outbox_table: default_table(),
            relay_batch_size: default_batch(),
            relay_poll_interval: default_poll(),
            relay_claim_timeout: default_claim_timeout(),
            relay_publish_attempts: default_attempts(),
        }
    }

    /// Reads `JETQ_*` from the given variables and validates the result.
    pub fn from_env_iter<I>(vars: I) -> Result<RelaySettings, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let settings: RelaySettings = jetq_contract::config::from_env_iter(vars)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every setting; the error names the variable to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connect_options()?;
        TableName::new(&self.outbox_table).map_err(|err| ConfigError::Invalid {
            field: "JETQ_OUTBOX_TABLE",
            problem: err.to_string(),
        })?;
        if self.relay_batch_size == 0 || self.relay_batch_size > 10_000 {
            return Err(ConfigError::Invalid {
                field: "JETQ_RELAY_BATCH_SIZE",
                problem: "must be between 1 and 10000 (e.g. 100)".into(),
            });
        }
        if self.relay_poll_interval.is_zero() {
            return Err(ConfigError::Invalid {
                field: "JETQ_RELAY_POLL_INTERVAL",
                problem: "must be greater than zero (e.g. 1s)".into(),
            });
        }
        if self.relay_claim_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                field: "JETQ_RELAY_CLAIM_TIMEOUT",
                problem: "must be at least 1s (e.g. 30s)".into(),
            });
        }
        Ok(())
    }

    /// The parsed database URL.
    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        let url = self.database_url.expose();
        let looks_like_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let parsed = if looks_like_url {
            PgConnectOptions::from_str(url).map_err(|err| err.to_string())
        } else {
            Err("it does not start with postgres:// or postgresql://".to_owned())
        };
        parsed.map_err(|problem| ConfigError::Invalid {
            field: "JETQ_DATABASE_URL",
            problem: format!(
                "{problem} (expected a URL like postgres://user:password@host:5432/dbname, \
                 or postgres:///dbname?host=/run/postgresql for a unix socket)"
            ),
        })
    }

    /// The validated table name.
    pub fn table(&self) -> Result<TableName, ConfigError> {
        TableName::new(&self.outbox_table).map_err(|err| ConfigError::Invalid {
            field: "JETQ_OUTBOX_TABLE",
            problem: err.to_string(),
        })
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
    fn the_database_url_is_required_and_checked() {
        let err = RelaySettings::from_env_iter(vars(&[])).unwrap_err();
        assert!(err.to_string().contains("JETQ_DATABASE_URL"), "{err}");
        let err = RelaySettings::from_env_iter(vars(&[("JETQ_DATABASE_URL", "mysql://x/y")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("postgres://user:password@host"),
            "{err}"
        );
        let ok = RelaySettings::from_env_iter(vars(&[(
            "JETQ_DATABASE_URL",
            "postgres://app:secret@db:5432/app",
        )]))
        .unwrap();
        assert_eq!(ok.relay_batch_size, 100);
        assert!(!format!("{ok:?}").contains("secret"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let base = ("JETQ_DATABASE_URL", "postgres://db/app");
        for (var, value) in [
            ("JETQ_OUTBOX_TABLE", "Bad-Name"),
            ("JETQ_RELAY_BATCH_SIZE", "0"),
            ("JETQ_RELAY_POLL_INTERVAL", "soon"),
            ("JETQ_RELAY_CLAIM_TIMEOUT", "0s"),
        ] {
            let err = RelaySettings::from_env_iter(vars(&[base, (var, value)])).unwrap_err();
            assert!(err.to_string().contains(var), "{var}: {err}");
        }
    }
}
