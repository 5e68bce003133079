//! Scheduler settings from `JETQ_*` environment variables (envy) or code.

use std::{path::PathBuf, time::Duration};

use jetq_contract::ConfigError;
use serde::Deserialize;

fn default_poll() -> Duration {
    Duration::from_secs(2)
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_lookback() -> Duration {
    Duration::from_secs(60)
}
fn default_window() -> usize {
    256
}

/// How the scheduler runs.
///
/// | variable | meaning |
/// |---|---|
/// | `JETQ_SCHEDULES_FILE` | path of the YAML schedules file (none: only delayed tasks are released) |
/// | `JETQ_SCHEDULES_POLL` | how often the file is checked for changes (default `2s`; SIGHUP reloads at once) |
/// | `JETQ_MISFIRE_GRACE` | how late a fire may be published and still count as on time (default `10s`; must stay below the stream's duplicate window) |
/// | `JETQ_RELEASE_DELAYED` | release delayed tasks (default `true`) |
/// | `JETQ_DELAYED_LOOKBACK` | how far back already-released seconds are re-checked for late arrivals (default `60s`) |
/// | `JETQ_RELEASE_WINDOW` | delayed-task publishes awaiting their ack at once (default 256) |
/// | `JETQ_PROVISION` | create or reconcile the task and delayed-task streams and the state bucket at startup (default `true`; `false` for a least-privilege `scheduler` NATS user, with `jetq-provision` run as admin) |
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SchedulerSettings {
    /// The schedules file.
    #[serde(default)]
    pub schedules_file: Option<PathBuf>,
    /// File change check period.
    #[serde(default = "default_poll", with = "jetq_contract::config::duration")]
    pub schedules_poll: Duration,
    /// Lateness still counted as on time.
    #[serde(default = "default_grace", with = "jetq_contract::config::duration")]
    pub misfire_grace: Duration,
    /// Whether this process releases delayed tasks.
    #[serde(default = "default_true")]
    pub release_delayed: bool,
    /// Re-check period of released seconds for late arrivals.
    #[serde(default = "default_lookback", with = "jetq_contract::config::duration")]
    pub delayed_lookback: Duration,
    /// Outstanding publish acks while releasing delayed tasks.
    #[serde(default = "default_window")]
    pub release_window: usize,
    /// Whether to create the streams and the state bucket at startup (else they must exist).
    #[serde(default = "default_true")]
    pub provision: bool,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            schedules_file: None,
            schedules_poll: default_poll(),
            misfire_grace: default_grace(),
            release_delayed: true,
            delayed_lookback: default_lookback(),
            release_window: default_window(),
            provision: true,
        }
    }
}

impl SchedulerSettings {
    /// Reads `JETQ_*` from the process environment and validates the result.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_iter(std::env::vars())
    }

    /// Reads `JETQ_*` from the given variables and validates the result.
    pub fn from_env_iter<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let settings: SchedulerSettings = jetq_contract::config::from_env_iter(vars)?;
        settings.validate(None)?;
        Ok(settings)
    }

    /// Checks the settings; `duplicate_window` (the task stream's) bounds the misfire grace.
    pub fn validate(&self, duplicate_window: Option<Duration>) -> Result<(), ConfigError> {
        let invalid =
            |field: &'static str, problem: String| ConfigError::Invalid { field, problem };
        if self.schedules_poll < Duration::from_millis(50) {
            return Err(invalid(
                "JETQ_SCHEDULES_POLL",
                "must be at least 50ms".into(),
            ));
        }
        if self.misfire_grace.is_zero() {
            return Err(invalid(
                "JETQ_MISFIRE_GRACE",
                "must be greater than zero".into(),
            ));
        }
        if let Some(window) = duplicate_window {
            if self.misfire_grace * 2 > window {
                return Err(invalid(
                    "JETQ_MISFIRE_GRACE",
                    format!(
                        "{} is more than half the task stream's duplicate window ({}): late \
                         fires could no longer be deduplicated",
                        humantime::format_duration(self.misfire_grace),
                        humantime::format_duration(window)
                    ),
                ));
            }
        }
        if self.release_window == 0 {
            return Err(invalid("JETQ_RELEASE_WINDOW", "must be at least 1".into()));
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
    fn defaults_and_overrides() {
        assert_eq!(
            SchedulerSettings::from_env_iter(vars(&[])).unwrap(),
            SchedulerSettings::default()
        );
        let s = SchedulerSettings::from_env_iter(vars(&[
            ("JETQ_SCHEDULES_FILE", "/etc/jetq/schedules.yaml"),
            ("JETQ_MISFIRE_GRACE", "30s"),
            ("JETQ_RELEASE_DELAYED", "false"),
        ]))
        .unwrap();
        assert_eq!(
            s.schedules_file.as_deref(),
            Some(std::path::Path::new("/etc/jetq/schedules.yaml"))
        );
        assert_eq!(s.misfire_grace, Duration::from_secs(30));
        assert!(!s.release_delayed);
    }

    #[test]
    fn errors_name_the_variable() {
        let err =
            SchedulerSettings::from_env_iter(vars(&[("JETQ_MISFIRE_GRACE", "0s")])).unwrap_err();
        assert!(err.to_string().contains("JETQ_MISFIRE_GRACE"), "{err}");
        let err = SchedulerSettings::default()
            .validate(Some(Duration::from_secs(10)))
            .unwrap_err();
        assert!(err.to_string().contains("duplicate window"), "{err}");
    }
}
