//! [`ProducerSettings`]: the producer's `JETQ_*` settings.

use std::time::Duration;

use jetq_contract::ConfigError;
use serde::Deserialize;

fn default_true() -> bool {
    true
}
fn default_window() -> usize {
    256
}
fn default_attempts() -> u32 {
    3
}
fn default_max_delay() -> Duration {
    jetq_contract::delayed::DEFAULT_MAX_DELAY
}

/// When concurrent `enqueue` calls share atomic batches (group commit, `JETQ_GROUP_COMMIT`).
///
/// An atomic batch saves per-task acks and round trips, but nats-server stages each batch of a
/// one-replica file stream in a store of its own, a fixed cost of a few milliseconds. Under
/// `sync_interval: always` with many calls at once, lone publishes queue behind each other's
/// disk syncs and batches answer sooner; under the server's default lazy fsync a lone publish
/// is answered in well under a millisecond and a batch only delays its callers.
///
/// ```
/// use jetq_producer::{GroupCommit, ProducerSettings};
/// let vars = [("JETQ_GROUP_COMMIT".to_string(), "always".to_string())];
/// let settings = ProducerSettings::from_env_iter(vars).unwrap();
/// assert_eq!(settings.group_commit, GroupCommit::Always);
/// assert_eq!(ProducerSettings::default().group_commit, GroupCommit::Auto);
///
/// let vars = [("JETQ_GROUP_COMMIT".to_string(), "sometimes".to_string())];
/// let err = ProducerSettings::from_env_iter(vars).unwrap_err();
/// assert!(err.to_string().contains("JETQ_GROUP_COMMIT"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupCommit {
    /// Each call publishes alone while it is expected to be answered sooner alone than in a
    /// batch, and gathers with the calls waiting beside it otherwise; both expectations are
    /// measured by the producer as calls go (docs/OPERATIONS.md, "atomic batches").
    #[default]
    Auto,
    /// Calls that wait together always share a batch (for servers known to sync every write).
    Always,
    /// Every call publishes alone (`enqueue_many` still uses batches).
    Off,
}

/// Producer settings from the environment.
///
/// | variable | meaning |
/// |---|---|
/// | `JETQ_PROVISION` | create or reconcile the task stream at startup (default `true`; set `false` where the producer's NATS user may only publish) |
/// | `JETQ_ENQUEUE_WINDOW` | publishes `enqueue_many` keeps awaiting acks at once (default 256) |
/// | `JETQ_PUBLISH_ATTEMPTS` | attempts per task when an ack times out (default 3) |
/// | `JETQ_MAX_DELAY` | longest delay `enqueue_in`/`enqueue_at` accept (default `30days`) |
/// | `JETQ_ATOMIC_BATCHES` | store `enqueue_many` in atomic batches on nats-server 2.12+ (default `true`: one disk sync per batch, ~10x the tasks/s under `sync_interval: always`; with the server's lazy fsync, one-by-one pipelined publishes are faster — BENCHMARKS.md) |
/// | `JETQ_GROUP_COMMIT` | when concurrent `enqueue` calls share atomic batches: `auto` (default: when this producer measured batches answering sooner than lone publishes), `always` (whenever calls wait together), `off` — see [`GroupCommit`] |
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ProducerSettings {
    /// Provision the task stream at startup.
    #[serde(default = "default_true")]
    pub provision: bool,
    /// Outstanding acks in `enqueue_many`.
    #[serde(default = "default_window")]
    pub enqueue_window: usize,
    /// Publish attempts per task on ack timeout.
    #[serde(default = "default_attempts")]
    pub publish_attempts: u32,
    /// Store `enqueue_many` in atomic batches where the server can.
    #[serde(default = "default_true")]
    pub atomic_batches: bool,
    /// When concurrent `enqueue` calls share atomic batches.
    #[serde(default)]
    pub group_commit: GroupCommit,
    /// Longest accepted delay of a delayed task.
    #[serde(
        default = "default_max_delay",
        with = "jetq_contract::config::duration"
    )]
    pub max_delay: Duration,
}

impl ProducerSettings {
    /// Reads `JETQ_*` from the given variables and validates the result.
    pub fn from_env_iter<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let settings: ProducerSettings = jetq_contract::config::from_env_iter(vars)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the settings; the error names the variable to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_delay.is_zero() {
            return Err(ConfigError::Invalid {
                field: "JETQ_MAX_DELAY",
                problem: "must be greater than zero (e.g. 30days)".into(),
            });
        }
        Ok(())
    }
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            provision: true,
            enqueue_window: default_window(),
            publish_attempts: default_attempts(),
            atomic_batches: true,
            group_commit: GroupCommit::default(),
            max_delay: default_max_delay(),
        }
    }
}
