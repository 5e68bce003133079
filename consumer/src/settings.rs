//! Worker settings, read from `JETQ_*` variables or set on the builder.

use std::time::Duration;

use jetq_contract::{name, ConfigError, NameKind, QueueSettings};
use serde::{Deserialize, Deserializer};

fn default_concurrency() -> usize {
    16
}
fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_max_deliver() -> i64 {
    26
}
fn default_max_in_flight() -> i64 {
    1000
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(25)
}
fn default_unknown_task_grace() -> Duration {
    Duration::from_secs(300)
}
/// The longest pull request lifetime by default.
const MAX_DEFAULT_FETCH_EXPIRES: Duration = Duration::from_secs(5);

fn default_fetch_expires() -> Duration {
    WorkerSettings::default_fetch_expires(default_ack_wait())
}
fn default_metrics_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}

/// `emails, exports` → `["emails", "exports"]`; empty pieces are dropped, so an empty variable
/// means "not set".
fn comma_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(text
        .split(',')
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The most tasks of one queue a worker fetches ahead of its free slots by default: enough that
/// a worker of short tasks pulls in requests of a few hundred (each pull request costs the
/// server about as much as dozens of deliveries). 512 rather than 256: a drain of no-op tasks
/// ran 8-9% faster (BENCHMARKS.md "Session 8").
pub const DEFAULT_PREFETCH: usize = 512;

/// The bytes of one queue's tasks a worker fetches ahead of its free slots by default
/// (16 MiB): each request's prefetch is cut to what fits at the queue's recent task size, so a
/// queue of large tasks does not ask for hundreds of them.
pub const DEFAULT_PREFETCH_BYTES: u64 = 16 * 1024 * 1024;

/// How a worker pulls and runs tasks.
///
/// | variable | meaning |
/// |---|---|
/// | `JETQ_CONCURRENCY` | tasks of one queue this pod runs at once (default 16) |
/// | `JETQ_ACK_WAIT` | redelivery after silence; heartbeats go out at a third of it (default `30s`) |
/// | `JETQ_MAX_DELIVER` | deliveries per task, must exceed every type's attempts (default 26) |
/// | `JETQ_MAX_IN_FLIGHT` | cluster-wide cap of in-flight tasks per queue (default 1000) |
/// | `JETQ_SHUTDOWN_GRACE` | time in-flight tasks get to finish on SIGTERM (default `25s`) |
/// | `JETQ_UNKNOWN_TASK_GRACE` | how long a task of an unknown type is handed back before it is dead-lettered (default `5m`) |
/// | `JETQ_FETCH_EXPIRES` | lifetime of one pull request (default: a third of `JETQ_ACK_WAIT`, at most `5s`; if set, at least `100ms` and shorter than `JETQ_ACK_WAIT`) |
/// | `JETQ_PREFETCH` | most tasks of one queue fetched ahead of free slots, so the next ones are on their way while the current ones run (default 512; `0` fetches only for free slots). The prefetch starts at `JETQ_CONCURRENCY` and doubles while fetched tasks find a slot at once. A fetched task waits at most 500 ms (a quarter of `JETQ_ACK_WAIT` if shorter) for a slot, else it is handed back for another worker and prefetching pauses for 30 s |
/// | `JETQ_PREFETCH_BYTES` | bytes of one queue's tasks fetched ahead of free slots (default 16 MiB = `16777216`; `0` prefetches nothing): each request's prefetch is cut to as many tasks as fit at the queue's recent task size (the larger of a moving average and a decaying peak of its deliveries). A request already sent brings its count whatever the sizes |
/// | `JETQ_PROVISION` | create or reconcile streams and consumers at startup (default `true`) |
/// | `JETQ_SWEEPER` | run the sweeper that dead-letters tasks whose deliveries ran out (default `true`) |
/// | `JETQ_PURGE_INTERVAL` | on a task stream with Limits retention (`JETQ_TASK_RETENTION=limits`), how often this worker purges its queues' finished tasks below their durables' ack floors (default `1s`, at least `10ms`; docs/DURABLE_DRAIN.md) |
/// | `JETQ_PRESENCE_INTERVAL` | how often this worker rewrites its presence record in `<PREFIX>_WORKERS` (`jetq workers`; default `10s`, at least `100ms`; PROTOCOL.md §14) |
/// | `JETQ_HISTORY` | keep the per-minute metrics history of this worker's queues in `<PREFIX>_METRICS` (the console's charts, `jetq history`; default `true`; PROTOCOL.md §15) |
/// | `JETQ_HISTORY_INTERVAL` | how often this worker merges its counts into the metrics history (default `60s`, at least `100ms`; a killed worker loses at most this much) |
/// | `JETQ_METRICS_INTERVAL` | how often queue lag is read from consumer info for the metrics and readiness (default `10s`) |
/// | `JETQ_QUEUES` | the queues this process pulls, comma separated (default: every queue it has a handler for) |
/// | `JETQ_JANITOR` | pull no queue and only run the sweeper (default `false`; needs `JETQ_SWEEPER=true`) |
///
/// `JETQ_QUEUES` lets one worker binary that registers handlers for several queues run as one
/// Deployment per queue (each scaled on its own lag, each with its own least-privilege NATS
/// user). `JETQ_JANITOR` runs the same binary as the single sweeper of a deployment whose
/// workers run with `JETQ_SWEEPER=false`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WorkerSettings {
    /// Tasks of one queue run at once by this process, at most: tasks that await run side by
    /// side up to this many, short ones are chained on fewer tokio tasks (docs/OPERATIONS.md,
    /// "Sizing a queue").
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Redelivery timeout of the queue's durable consumer.
    #[serde(default = "default_ack_wait", with = "jetq_contract::config::duration")]
    pub ack_wait: Duration,
    /// Deliveries per task.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: i64,
    /// Cluster-wide in-flight cap per queue.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: i64,
    /// Shutdown grace period.
    #[serde(
        default = "default_shutdown_grace",
        with = "jetq_contract::config::duration"
    )]
    pub shutdown_grace: Duration,
    /// Unknown task grace period.
    #[serde(
        default = "default_unknown_task_grace",
        with = "jetq_contract::config::duration"
    )]
    pub unknown_task_grace: Duration,
    /// Pull request lifetime.
    #[serde(
        default = "default_fetch_expires",
        with = "jetq_contract::config::duration"
    )]
    pub fetch_expires: Duration,
    /// Most tasks fetched ahead of free slots; `None`: [`DEFAULT_PREFETCH`].
    #[serde(default)]
    pub prefetch: Option<usize>,
    /// Most bytes of tasks fetched ahead of free slots; `None`: [`DEFAULT_PREFETCH_BYTES`].
    #[serde(default)]
    pub prefetch_bytes: Option<u64>,
    /// Provision at startup.
    #[serde(default = "default_true")]
    pub provision: bool,
    /// Run the max-deliveries sweeper.
    #[serde(default = "default_true")]
    pub sweeper: bool,
    /// How often queue lag (pending, ack pending) is polled from consumer info.
    #[serde(
        default = "default_metrics_interval",
        with = "jetq_contract::config::duration"
    )]
    pub metrics_interval: Duration,
    /// The queues to pull; empty: every queue with a registered handler.
    #[serde(default, deserialize_with = "comma_list")]
    pub queues: Vec<String>,
    /// Pull no queue; run only the sweeper.
    #[serde(default)]
    pub janitor: bool,
    /// How often finished tasks are purged from a Limits task stream.
    #[serde(
        default = "default_purge_interval",
        with = "jetq_contract::config::duration"
    )]
    pub purge_interval: Duration,
    /// How often this worker rewrites its presence record (`JETQ_PRESENCE_INTERVAL`).
    #[serde(
        default = "default_presence_interval",
        with = "jetq_contract::config::duration"
    )]
    pub presence_interval: Duration,
    /// Keep the per-minute metrics history (`JETQ_HISTORY`).
    #[serde(default = "default_true")]
    pub history: bool,
    /// How often this worker merges its counts into the history (`JETQ_HISTORY_INTERVAL`).
    #[serde(
        default = "default_history_interval",
        with = "jetq_contract::config::duration"
    )]
    pub history_interval: Duration,
}

fn default_history_interval() -> Duration {
    jetq_contract::metrics_history::DEFAULT_INTERVAL
}

fn default_presence_interval() -> Duration {
    jetq_contract::presence::DEFAULT_INTERVAL
}

fn default_purge_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: default_concurrency(),
            ack_wait: default_ack_wait(),
            max_deliver: default_max_deliver(),
            max_in_flight: default_max_in_flight(),
            shutdown_grace: default_shutdown_grace(),
            unknown_task_grace: default_unknown_task_grace(),
            fetch_expires: default_fetch_expires(),
            prefetch: None,
            prefetch_bytes: None,
            provision: true,
            sweeper: true,
            metrics_interval: default_metrics_interval(),
            queues: Vec::new(),
            janitor: false,
            purge_interval: default_purge_interval(),
            presence_interval: default_presence_interval(),
            history: true,
            history_interval: default_history_interval(),
        }
    }
}

impl WorkerSettings {
    /// Reads `JETQ_*` from the given variables and validates the result.
    ///
    /// Without `JETQ_FETCH_EXPIRES`, the pull request lifetime follows `JETQ_ACK_WAIT`
    /// ([`WorkerSettings::default_fetch_expires`]); a value that is set is checked as given.
    pub fn from_env_iter<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut settings: WorkerSettings =
            jetq_contract::config::from_env_iter(vars.iter().cloned())?;
        let fetch_expires_set = vars
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("JETQ_FETCH_EXPIRES"));
        if !fetch_expires_set {
            settings.fetch_expires = Self::default_fetch_expires(settings.ack_wait);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// The pull request lifetime when none is configured: a third of `ack_wait`, at most 5 s.
    ///
    /// A pull request must end well inside `ack_wait` (it is checked to be shorter): the
    /// shutdown drain waits out one open request, and a request that outlived `ack_wait` would
    /// hold deliveries the server already considers late. A third is the heartbeat interval, so
    /// a request never outlives two missed heartbeats; 5 s caps the idle request rate at the
    /// default `ack_wait` of 30 s. `JETQ_ACK_WAIT=1s` (the minimum) gives 333 ms, above the
    /// 100 ms floor. A fixed 5 s default made every `JETQ_ACK_WAIT` of 5 s or less fail to start.
    pub fn default_fetch_expires(ack_wait: Duration) -> Duration {
        (ack_wait / 3).min(MAX_DEFAULT_FETCH_EXPIRES)
    }

    /// Most tasks of one queue fetched ahead of free slots (`JETQ_PREFETCH`, default
    /// [`DEFAULT_PREFETCH`]).
    pub fn prefetch(&self) -> usize {
        self.prefetch.unwrap_or(DEFAULT_PREFETCH)
    }

    /// Most bytes of one queue's tasks fetched ahead of free slots (`JETQ_PREFETCH_BYTES`,
    /// default [`DEFAULT_PREFETCH_BYTES`]).
    pub fn prefetch_bytes(&self) -> u64 {
        self.prefetch_bytes.unwrap_or(DEFAULT_PREFETCH_BYTES)
    }

    /// Checks the settings; the error names the variable to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: &str| ConfigError::Invalid {
            field,
            problem: problem.to_owned(),
        };
        if self.concurrency == 0 {
            return Err(invalid("JETQ_CONCURRENCY", "must be at least 1"));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(invalid("JETQ_ACK_WAIT", "must be at least 1s"));
        }
        if self.max_deliver < 2 {
            return Err(invalid(
                "JETQ_MAX_DELIVER",
                "must be at least 2 (one attempt plus the delivery that dead-letters it)",
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight < -1 {
            return Err(invalid(
                "JETQ_MAX_IN_FLIGHT",
                "use a positive number or -1 for none",
            ));
        }
        if self.fetch_expires < Duration::from_millis(100) || self.fetch_expires >= self.ack_wait {
            return Err(invalid(
                "JETQ_FETCH_EXPIRES",
                "must be at least 100ms and shorter than JETQ_ACK_WAIT",
            ));
        }
        if self.metrics_interval < Duration::from_millis(100) {
            return Err(invalid("JETQ_METRICS_INTERVAL", "must be at least 100ms"));
        }
        for queue in &self.queues {
            if let Err(err) = name::validate(NameKind::Queue, queue) {
                return Err(ConfigError::Invalid {
                    field: "JETQ_QUEUES",
                    problem: err.to_string(),
                });
            }
        }
        if self.purge_interval < Duration::from_millis(10) {
            return Err(invalid(
                "JETQ_PURGE_INTERVAL",
                "must be at least 10ms (each purge is two requests to the server)",
            ));
        }
        if self.presence_interval < Duration::from_millis(100) {
            return Err(invalid("JETQ_PRESENCE_INTERVAL", "must be at least 100ms"));
        }
        if self.history_interval < Duration::from_millis(100) {
            return Err(invalid("JETQ_HISTORY_INTERVAL", "must be at least 100ms"));
        }
        if self.janitor && !self.sweeper {
            return Err(invalid(
                "JETQ_JANITOR",
                "a janitor only runs the sweeper: set JETQ_SWEEPER=true (or unset JETQ_JANITOR)",
            ));
        }
        if self.janitor && !self.queues.is_empty() {
            return Err(invalid(
                "JETQ_JANITOR",
                "a janitor pulls no queue: unset JETQ_QUEUES (or unset JETQ_JANITOR)",
            ));
        }
        Ok(())
    }

    /// The durable consumer settings these worker settings imply.
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            max_in_flight: self.max_in_flight,
        }
    }

    /// How often a running task tells the server it is alive: a third of `ack_wait`, so two
    /// heartbeats can be lost before the server redelivers.
    pub fn heartbeat_interval(&self) -> Duration {
        self.ack_wait / 3
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
    fn reads_and_defaults() {
        let s = WorkerSettings::from_env_iter(vars(&[
            ("JETQ_CONCURRENCY", "4"),
            ("JETQ_ACK_WAIT", "1m"),
            ("JETQ_SHUTDOWN_GRACE", "10s"),
        ]))
        .unwrap();
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.ack_wait, Duration::from_secs(60));
        assert_eq!(s.heartbeat_interval(), Duration::from_secs(20));
        assert_eq!(s.max_deliver, 26);
        assert!(s.queues.is_empty(), "every registered queue by default");
        assert!(!s.janitor);
    }

    #[test]
    fn a_short_ack_wait_gets_a_shorter_fetch_expires() {
        for (ack_wait, expires) in [
            ("1s", Duration::from_millis(333)),
            ("5s", Duration::from_millis(1666)),
            ("6s", Duration::from_secs(2)),
            ("15s", Duration::from_secs(5)),
            ("30s", Duration::from_secs(5)),
            ("10m", Duration::from_secs(5)),
        ] {
            let s = WorkerSettings::from_env_iter(vars(&[("JETQ_ACK_WAIT", ack_wait)]))
                .unwrap_or_else(|err| panic!("JETQ_ACK_WAIT={ack_wait}: {err}"));
            assert_eq!(
                s.fetch_expires.as_millis(),
                expires.as_millis(),
                "{ack_wait}"
            );
            assert!(s.fetch_expires < s.ack_wait);
        }
        assert_eq!(
            WorkerSettings::default().fetch_expires,
            Duration::from_secs(5)
        );
        // Set explicitly, it is checked as given.
        let s = WorkerSettings::from_env_iter(vars(&[
            ("JETQ_ACK_WAIT", "2s"),
            ("JETQ_FETCH_EXPIRES", "1s"),
        ]))
        .unwrap();
        assert_eq!(s.fetch_expires, Duration::from_secs(1));
        for expires in ["2s", "5s", "50ms"] {
            let err = WorkerSettings::from_env_iter(vars(&[
                ("JETQ_ACK_WAIT", "2s"),
                ("JETQ_FETCH_EXPIRES", expires),
            ]))
            .unwrap_err();
            assert!(err.to_string().contains("JETQ_FETCH_EXPIRES"), "{err}");
        }
    }

    #[test]
    fn queues_are_a_comma_separated_list() {
        let s =
            WorkerSettings::from_env_iter(vars(&[("JETQ_QUEUES", " emails, exports ,")])).unwrap();
        assert_eq!(s.queues, ["emails", "exports"]);
        let s = WorkerSettings::from_env_iter(vars(&[("JETQ_QUEUES", "")])).unwrap();
        assert!(s.queues.is_empty(), "empty means not set");
        let s = WorkerSettings::from_env_iter(vars(&[("JETQ_JANITOR", "true")])).unwrap();
        assert!(s.janitor && s.sweeper);
    }

    #[test]
    fn rejects_unworkable_values_by_name() {
        for (pairs, field) in [
            (vars(&[("JETQ_CONCURRENCY", "0")]), "JETQ_CONCURRENCY"),
            (vars(&[("JETQ_MAX_DELIVER", "1")]), "JETQ_MAX_DELIVER"),
            (vars(&[("JETQ_ACK_WAIT", "10ms")]), "JETQ_ACK_WAIT"),
            (vars(&[("JETQ_FETCH_EXPIRES", "40s")]), "JETQ_FETCH_EXPIRES"),
        ] {
            let err = WorkerSettings::from_env_iter(pairs).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
        assert!(WorkerSettings::from_env_iter(vars(&[("JETQ_CONCURRENCY", "many")])).is_err());
        for (pairs, field) in [
            (vars(&[("JETQ_QUEUES", "emails,bad queue")]), "JETQ_QUEUES"),
            (vars(&[("JETQ_QUEUES", "a.b")]), "JETQ_QUEUES"),
            (
                vars(&[("JETQ_JANITOR", "true"), ("JETQ_SWEEPER", "false")]),
                "JETQ_JANITOR",
            ),
            (
                vars(&[("JETQ_JANITOR", "true"), ("JETQ_QUEUES", "emails")]),
                "JETQ_JANITOR",
            ),
        ] {
            let err = WorkerSettings::from_env_iter(pairs).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
