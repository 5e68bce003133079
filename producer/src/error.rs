//! Typed errors of the producer. Callers match on [`EnqueueError`] to decide what to tell the
//! user: a full queue (try later), an invalid task (a bug), an unknown outcome (retry with the
//! same idempotency key).

use std::time::Duration;

use jetq_contract::{ConfigError, ConnectError, KeyError, NameError, ProvisionError};

/// Why a producer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// The configuration is unusable; the message names the variable to fix.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The connection failed or the server is too old.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The task stream could not be created or reconciled.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
}

/// Why a task was not enqueued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The queue or task name cannot be a subject token.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The idempotency key cannot be a `Nats-Msg-Id`.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// A unique key, limit key or unique scope is unusable (nothing was sent).
    #[error(transparent)]
    Flow(#[from] jetq_contract::flow::FlowError),
    /// The unique key could not be taken or its holder checked (the `<PREFIX>_UNIQUE` bucket is
    /// missing or unreachable). Nothing was enqueued.
    #[error("cannot hold unique key {key:?} for task {task}: {reason}")]
    Unique {
        /// The task's wire name.
        task: String,
        /// The unique key.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The arguments could not be serialized to JSON.
    #[error("cannot serialize the arguments of task {task} to JSON: {source}")]
    Serialize {
        /// The task's wire name.
        task: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The message (arguments plus headers) is larger than the server accepts.
    #[error("task {task} is {size} bytes, over the server's limit ({source})")]
    TooLarge {
        /// The task's wire name.
        task: String,
        /// Payload size in bytes.
        size: usize,
        /// The client's or server's error.
        source: async_nats::jetstream::context::PublishError,
    },
    /// The task stream is at its configured message or byte limit and refused the task
    /// (`discard: New`): nothing was queued and nothing already queued was dropped.
    #[error("the task stream is full and refused task {task}: {description}")]
    StreamFull {
        /// The task's wire name.
        task: String,
        /// The server's description (`maximum messages exceeded`, `maximum bytes exceeded`).
        description: String,
    },
    /// No stream captured the task's subject on any attempt (the server answered "no
    /// responders", 503, to each; the producer pauses 250 ms, doubling, between them): the
    /// stream was never provisioned, was deleted, or has had no leader for longer than the
    /// attempts lasted. A producer with provisioning on (`JETQ_PROVISION=true`, the default)
    /// has then tried to create the stream and send once more; this error means it was not
    /// allowed to, or provisioning is off. The message says which commands provision. Nothing
    /// was stored; enqueueing again later with the same key is safe.
    #[error(
        "no stream accepts subject {subject}: the jetq task stream does not exist (or has had no \
         leader for a while). Create it with any of: `jetq-provision` (run once as a NATS user \
         allowed to manage streams; the Kubernetes provisioning Job does this); starting a \
         worker (workers create it at startup unless JETQ_PROVISION=false); or this producer \
         itself with JETQ_PROVISION=true (the default) or Producer::builder().provision(true), \
         if its NATS user may create streams. See docs/OPERATIONS.md, \"Who provisions what\""
    )]
    NoStream {
        /// The subject that nothing captured.
        subject: String,
    },
    /// The client is not connected to any server; the task was not acknowledged.
    #[error("not connected to NATS; task {task} was not acknowledged after {attempts} attempt(s)")]
    NotConnected {
        /// The task's wire name.
        task: String,
        /// Publish attempts made.
        attempts: u32,
    },
    /// No publish acknowledgement arrived in time, after every retry. The outcome is unknown:
    /// the task may be queued. Enqueueing again with the same idempotency key is safe inside
    /// the stream's duplicate window.
    #[error(
        "no acknowledgement for task {task} (id {id}) within {timeout:?} after {attempts} \
         attempt(s): it may or may not be queued; retry with the same key"
    )]
    Timeout {
        /// The task's wire name.
        task: String,
        /// The id (`Nats-Msg-Id`) used for every attempt.
        id: String,
        /// Per-attempt timeout.
        timeout: Duration,
        /// Publish attempts made.
        attempts: u32,
    },
    /// A batch with this id exists (PROTOCOL §13): nothing was enqueued. (A batch left
    /// `enqueuing` by an enqueue that stopped half-way is taken over instead.)
    #[error("batch {id} exists: a batch id is used once")]
    BatchExists {
        /// The batch id.
        id: String,
    },
    /// A chain with this id exists: nothing was enqueued.
    #[error("chain {id} exists: a chain id is used once")]
    ChainExists {
        /// The chain id.
        id: String,
    },
    /// A batch callback's type has no entry in the task-type catalog although the catalog
    /// exists: no worker handles it, and it would wait in its queue until dead-lettered as
    /// `unknown-task`. Nothing was enqueued. Start its workers first, or
    /// `BatchOptions::skip_callback_check`.
    #[error(
        "no worker handles callback {task} on queue {queue} (the task-type catalog has no \
         entry {queue}.{task}): start its workers first, or skip the check"
    )]
    UnknownCallback {
        /// The callback's queue.
        queue: String,
        /// The callback's task type.
        task: String,
    },
    /// Some members of a batch were not enqueued (the others were): the batch cannot complete
    /// until they are. Enqueue the batch again with the same id and member keys (it is taken
    /// over), or `Producer::batch_retry_members`.
    #[error("{failed} member(s) of batch {id} were not enqueued (the first: {first})")]
    MembersNotEnqueued {
        /// The batch id.
        id: String,
        /// How many members failed.
        failed: usize,
        /// The first member's error.
        first: Box<EnqueueError>,
    },
    /// A batch or chain that cannot be made (a bad id, callback arguments that are not a JSON
    /// object, a chain without links): nothing was sent.
    #[error(transparent)]
    InvalidWorkflow(jetq_contract::workflow::WorkflowError),
    /// The workflow bucket (`<PREFIX>_BATCHES`) could not be read or written.
    #[error("batch or chain bookkeeping failed: {reason}")]
    Workflow {
        /// What failed.
        reason: String,
    },
    /// The server rejected the task for another reason.
    #[error("the server rejected task {task}: {source}")]
    Rejected {
        /// The task's wire name.
        task: String,
        /// The error, with the server's error code where it sent one.
        source: async_nats::jetstream::context::PublishError,
    },
}
