//! `k8s/values.yaml`: the one file a user edits — images, queues, schedules.

use std::{collections::BTreeMap, time::Duration};

use jetq_consumer::WorkerSettings;
use jetq_contract::{config::TaskRetention, name, NameKind, Subjects};
use serde::Deserialize;
use serde_json::Value;

use crate::Error;

/// The whole values file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Values {
    /// Subject prefix (only the default `jetq` is supported by the generated permissions).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Container images.
    pub images: Images,
    /// Where NATS is and how jetq logs in.
    pub nats: NatsValues,
    /// Defaults of every queue's worker.
    #[serde(default)]
    pub worker: WorkerDefaults,
    /// The queues: one worker Deployment, autoscaler and NATS user each.
    pub queues: Vec<Queue>,
    /// The scheduler Deployment.
    #[serde(default)]
    pub scheduler: Component,
    /// The example web app (a producer); absent: not deployed.
    #[serde(default)]
    pub web: Option<Component>,
    /// `jetq-relay`, the transactional outbox's relay (docs/OUTBOX.md); absent: not deployed.
    #[serde(default)]
    pub relay: Option<RelayValues>,
    /// The schedules, verbatim as the scheduler's schedules file holds them.
    #[serde(default)]
    pub schedules: Vec<Value>,
    /// How the task stream removes finished tasks: `workqueue` (default) or `limits`
    /// (`JETQ_TASK_RETENTION`, docs/DURABLE_DRAIN.md); anything else is refused at load.
    #[serde(default = "default_task_retention")]
    pub task_retention: String,
}

/// The `taskRetention` values the renderer accepts.
pub const TASK_RETENTIONS: &[&str] = &["workqueue", "limits"];

fn default_task_retention() -> String {
    TASK_RETENTIONS[0].to_owned()
}

fn default_prefix() -> String {
    jetq_contract::subject::DEFAULT_PREFIX.to_owned()
}

/// Container images.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Images {
    /// The worker binary serving the queues.
    pub worker: String,
    /// `jetq-scheduler`.
    pub scheduler: String,
    /// `jetq` and `jetq-provision`.
    pub cli: String,
    /// The example web app.
    #[serde(default)]
    pub web: Option<String>,
    /// `jetq-relay` (needed with `relay:`).
    #[serde(default)]
    pub relay: Option<String>,
}

/// The relay Deployment: replicas, where its database URL is, the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RelayValues {
    /// Replicas (default 2: any number is safe, each claims other rows).
    #[serde(default = "two")]
    pub replicas: u32,
    /// The Secret and key holding `JETQ_DATABASE_URL` (never put the URL here).
    pub database_secret: SecretKey,
    /// `JETQ_OUTBOX_TABLE` (default `jetq_outbox`).
    #[serde(default)]
    pub table: Option<String>,
    /// Container resources.
    #[serde(default)]
    pub resources: Option<Value>,
}

/// A key of a Secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    /// The Secret's name.
    pub name: String,
    /// The key.
    pub key: String,
}

/// NATS endpoints and credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsValues {
    /// `host:port` of the monitoring endpoint KEDA reads (the headless service, port 8222).
    pub monitoring_endpoint: String,
    /// NATS account of the users (`$G` without accounts).
    #[serde(default = "default_account")]
    pub account: String,
    /// Name of the Secret with one password per NATS user.
    #[serde(default = "default_secret")]
    pub passwords_secret: String,
    /// JetStream volume size per server in production.
    #[serde(default = "default_storage")]
    pub storage: String,
}

fn default_account() -> String {
    "$G".to_owned()
}
fn default_secret() -> String {
    "jetq-nats-passwords".to_owned()
}
fn default_storage() -> String {
    "10Gi".to_owned()
}

/// Defaults for every queue.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkerDefaults {
    /// `JETQ_SHUTDOWN_GRACE`.
    #[serde(default)]
    pub shutdown_grace: Option<String>,
    /// Container resources.
    #[serde(default)]
    pub resources: Option<Value>,
    /// Extra environment of every worker.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// One queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Queue {
    /// Queue name (a name token).
    pub name: String,
    /// `JETQ_CONCURRENCY`.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// `JETQ_ACK_WAIT`.
    #[serde(default)]
    pub ack_wait: Option<String>,
    /// `JETQ_MAX_DELIVER`.
    #[serde(default)]
    pub max_deliver: Option<i64>,
    /// `JETQ_MAX_IN_FLIGHT`.
    #[serde(default)]
    pub max_in_flight: Option<i64>,
    /// `JETQ_PREFETCH` (default: the worker's, 512 tasks).
    #[serde(default)]
    pub prefetch: Option<usize>,
    /// `JETQ_PREFETCH_BYTES` (default: the worker's, 16 MiB).
    #[serde(default)]
    pub prefetch_bytes: Option<u64>,
    /// `JETQ_SHUTDOWN_GRACE` (default: the worker default's).
    #[serde(default)]
    pub shutdown_grace: Option<String>,
    /// Autoscaling bounds and targets.
    #[serde(default)]
    pub autoscaling: Autoscaling,
    /// Container resources (default: the worker default's).
    #[serde(default)]
    pub resources: Option<Value>,
    /// Directories that get a writable emptyDir.
    #[serde(default)]
    pub writable_dirs: Vec<String>,
    /// The application's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Autoscaling of one queue's workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Autoscaling {
    /// 0 lets the queue sleep (KEDA only; the HPA keeps at least one).
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Upper bound.
    #[serde(default = "ten")]
    pub max_replicas: u32,
    /// Target lag (pending + ack pending) per pod.
    #[serde(default = "default_lag")]
    pub lag_threshold: u64,
    /// Lag above which a sleeping queue wakes.
    #[serde(default)]
    pub activation_lag_threshold: u64,
}

impl Default for Autoscaling {
    fn default() -> Self {
        Autoscaling {
            min_replicas: 1,
            max_replicas: 10,
            lag_threshold: default_lag(),
            activation_lag_threshold: 0,
        }
    }
}

fn one() -> u32 {
    1
}
fn ten() -> u32 {
    10
}
fn default_lag() -> u64 {
    32
}

/// A Deployment's size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Replicas in the base (overlays may change them).
    #[serde(default = "two")]
    pub replicas: u32,
    /// Container resources.
    #[serde(default)]
    pub resources: Option<Value>,
}

impl Default for Component {
    fn default() -> Self {
        Component {
            replicas: 2,
            resources: None,
        }
    }
}

fn two() -> u32 {
    2
}

impl Values {
    /// Parses and validates a values file.
    pub fn from_yaml(text: &str) -> Result<Values, Error> {
        let values: Values =
            serde_norway::from_str(text).map_err(|err| Error::Values(err.to_string()))?;
        values.validate()?;
        Ok(values)
    }

    /// The task stream's retention (`taskRetention`, validated at load).
    pub fn task_retention(&self) -> TaskRetention {
        if self.task_retention == "limits" {
            TaskRetention::Limits
        } else {
            TaskRetention::WorkQueue
        }
    }

    /// The subjects under the configured prefix.
    pub fn subjects(&self) -> Subjects {
        Subjects::new(&self.prefix).expect("validated prefix")
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |what: String| Err(Error::Values(what));
        if self.prefix != jetq_contract::subject::DEFAULT_PREFIX {
            return invalid(format!(
                "prefix {:?}: only the default prefix `jetq` is supported by the generated NATS permissions",
                self.prefix
            ));
        }
        if !TASK_RETENTIONS.contains(&self.task_retention.as_str()) {
            return invalid(format!(
                "taskRetention {:?}: use `workqueue` (the default) or `limits`",
                self.task_retention
            ));
        }
        if self.queues.is_empty() {
            return invalid("queues: list at least one queue".into());
        }
        let mut users = std::collections::BTreeSet::new();
        for queue in &self.queues {
            name::validate(NameKind::Queue, &queue.name)
                .map_err(|err| Error::Values(format!("queue {:?}: {err}", queue.name)))?;
            if !users.insert(upper(&queue.name)) {
                return invalid(format!(
                    "queue {:?}: its NATS password variable collides with another queue's",
                    queue.name
                ));
            }
            let env: Vec<(String, String)> = self.worker_jetq_env(queue);
            WorkerSettings::from_env_iter(env)
                .map_err(|err| Error::Values(format!("queue {:?}: {err}", queue.name)))?;
            let scaling = &queue.autoscaling;
            if scaling.max_replicas == 0 || scaling.max_replicas < scaling.min_replicas {
                return invalid(format!(
                    "queue {:?}: autoscaling.maxReplicas must be at least 1 and minReplicas",
                    queue.name
                ));
            }
            if scaling.lag_threshold == 0 {
                return invalid(format!(
                    "queue {:?}: autoscaling.lagThreshold must be at least 1",
                    queue.name
                ));
            }
            for (key, _) in queue.env.iter().chain(&self.worker.env) {
                if key.starts_with("JETQ_") || key.starts_with("OTEL_") {
                    return invalid(format!(
                        "queue {:?}: env {key}: JETQ_* and OTEL_* are set by the generator from the queue's fields",
                        queue.name
                    ));
                }
            }
            for dir in &queue.writable_dirs {
                if !dir.starts_with('/') || dir == "/tmp" {
                    return invalid(format!(
                        "queue {:?}: writableDirs entry {dir:?} must be an absolute path other than /tmp",
                        queue.name
                    ));
                }
            }
        }
        if let Some(relay) = &self.relay {
            if self.images.relay.is_none() {
                return invalid("relay: set images.relay (the jetq-relay image)".into());
            }
            // The rule of jetq_outbox::TableName (not a dependency: it would pull the database
            // driver into jetq-provision).
            let table = relay.table.as_deref().unwrap_or("jetq_outbox");
            let mut chars = table.chars();
            let plain = chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && table.len() <= 63;
            if !plain {
                return invalid(format!(
                    "relay.table {table:?}: use 1-63 characters of a-z 0-9 _, not starting with a digit"
                ));
            }
        }
        for (i, schedule) in self.schedules.iter().enumerate() {
            let queue = schedule
                .get("queue")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !self.queues.iter().any(|q| q.name == queue) {
                return invalid(format!(
                    "schedules[{i}]: queue {queue:?} is not in `queues`: its tasks would wait forever"
                ));
            }
        }
        Ok(())
    }

    /// The `JETQ_*` worker settings of a queue, as the Deployment sets them.
    pub fn worker_jetq_env(&self, queue: &Queue) -> Vec<(String, String)> {
        let defaults = WorkerSettings::default();
        let grace = queue
            .shutdown_grace
            .clone()
            .or_else(|| self.worker.shutdown_grace.clone())
            .unwrap_or_else(|| humantime::format_duration(defaults.shutdown_grace).to_string());
        let mut env = vec![
            (
                "JETQ_CONCURRENCY".into(),
                queue
                    .concurrency
                    .unwrap_or(defaults.concurrency)
                    .to_string(),
            ),
            (
                "JETQ_ACK_WAIT".into(),
                queue
                    .ack_wait
                    .clone()
                    .unwrap_or_else(|| humantime::format_duration(defaults.ack_wait).to_string()),
            ),
            (
                "JETQ_MAX_DELIVER".into(),
                queue
                    .max_deliver
                    .unwrap_or(defaults.max_deliver)
                    .to_string(),
            ),
            (
                "JETQ_MAX_IN_FLIGHT".into(),
                queue
                    .max_in_flight
                    .unwrap_or(defaults.max_in_flight)
                    .to_string(),
            ),
            ("JETQ_SHUTDOWN_GRACE".into(), grace),
        ];
        // Only when set: the worker's defaults stay the worker's.
        if let Some(prefetch) = queue.prefetch {
            env.push(("JETQ_PREFETCH".into(), prefetch.to_string()));
        }
        if let Some(bytes) = queue.prefetch_bytes {
            env.push(("JETQ_PREFETCH_BYTES".into(), bytes.to_string()));
        }
        env
    }

    /// The queue's parsed worker settings (validated at load).
    pub fn worker_settings(&self, queue: &Queue) -> WorkerSettings {
        WorkerSettings::from_env_iter(self.worker_jetq_env(queue)).expect("validated at load")
    }

    /// `terminationGracePeriodSeconds` of a queue's pods: the shutdown grace, plus the 5 s
    /// the worker takes to hand running tasks back, plus margin for the final flush.
    pub fn termination_grace(&self, queue: &Queue) -> u64 {
        let grace: Duration = self.worker_settings(queue).shutdown_grace;
        grace.as_secs() + u64::from(grace.subsec_nanos() > 0) + HAND_BACK_AND_FLUSH.as_secs()
    }
}

/// What a worker needs after its shutdown grace: up to 5 s handing tasks back, then a flush.
pub const HAND_BACK_AND_FLUSH: Duration = Duration::from_secs(15);

/// `emails` → `EMAILS`, as the password variables and permission names spell a queue.
pub fn upper(queue: &str) -> String {
    queue.to_uppercase().replace('-', "_")
}
