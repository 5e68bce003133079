//! The worker side of task status: records each transition of a tracked task, and gives its
//! handler progress, results, artifacts and cancellation through the [`TaskContext`].
//!
//! A task is tracked when its type opts in ([`jetq_contract::TaskOptions::track_status`]) or its
//! message carries `Jetq-Track-Status: 1`. Untracked tasks never touch the status bucket.
//!
//! Every write is a compare-and-set on the revision last read, and a record in a terminal state
//! is never replaced: a stale worker (one whose task was cancelled, or redelivered elsewhere and
//! finished) cannot overwrite the outcome. A running tracked task learns of a cancellation from a
//! plain subscription to its own key's subject (the producer's cancel write arrives there), with a
//! re-read of the record at every heartbeat in case that message was missed.
use async_nats::{jetstream::AckKind, HeaderMap};
use jetq_contract::{
    headers,
    status::{ArtifactNameError, TaskState, MAX_RESULT_BYTES},
};

mod artifact;
mod recorder;
mod tracker;

pub use artifact::ArtifactWriter;
pub(crate) use artifact::{artifact_info, object_meta};
pub(crate) use recorder::{ContextStatus, Dead, Start, Started, StatusRecorder};
pub(crate) use tracker::Tracker;

/// A boxed error from the NATS client.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a status operation of a handler failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The task is not tracked: its type does not opt in and its message did not ask.
    #[error(
        "task {task} does not track its status; enable TaskOptions::track_status for its type"
    )]
    NotTracked {
        /// The task's wire name.
        task: String,
    },
    /// The task's type tracks its status, but the status store could not be opened (missing,
    /// or the worker's NATS user may not use it; see `docs/STATUS.md`).
    #[error(
        "task {task} tracks its status but the status store is unavailable (missing, or not \
         permitted for this worker's NATS user)"
    )]
    Unavailable {
        /// The task's wire name.
        task: String,
    },
    /// The result is larger than a status record may hold.
    #[error(
        "the result of task {id} is {size} bytes, over the {MAX_RESULT_BYTES}-byte limit; \
         store it as an artifact instead"
    )]
    ResultTooLarge {
        /// The task id.
        id: String,
        /// The result's size as JSON.
        size: usize,
    },
    /// The result cannot be serialized to JSON.
    #[error("cannot encode the result of task {id} as JSON: {source}")]
    Encode {
        /// The task id.
        id: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The artifact name is not usable.
    #[error(transparent)]
    ArtifactName(#[from] ArtifactNameError),
    /// The artifact store does not exist (provision it: a worker with a tracked type and
    /// `JETQ_PROVISION=true` creates it).
    #[error("the artifact store is not provisioned; task {id} cannot store {name}")]
    NoArtifactStore {
        /// The task id.
        id: String,
        /// The artifact's name.
        name: String,
    },
    /// Storing the artifact failed (the reader failed, the store is full or unreachable).
    #[error("cannot store artifact {name} of task {id}: {source}")]
    Artifact {
        /// The task id.
        id: String,
        /// The artifact's name.
        name: String,
        /// The object store's or the reader's error.
        source: BoxError,
    },
    /// The status record could not be written.
    #[error("cannot write the status of task {id}: {source}")]
    Write {
        /// The task id.
        id: String,
        /// The KV store's error.
        source: BoxError,
    },
}

/// True if the message asks for its status to be tracked (`Jetq-Track-Status: 1` or `true`).
pub(crate) fn has_track_header(headers: Option<&HeaderMap>) -> bool {
    headers
        .and_then(|map| map.get(jetq_contract::headers::names::TRACK_STATUS))
        .map(|value| {
            let value = value.as_str().trim();
            value == "1" || value.eq_ignore_ascii_case("true")
        })
        .unwrap_or(false)
}

/// Settles a delivery whose record says it is over: `succeeded` is acked (an earlier delivery
/// did the work but its ack was lost), anything else is terminated.
pub(crate) async fn settle_skipped(message: &async_nats::jetstream::Message, state: TaskState) {
    let (kind, what) = if state == TaskState::Succeeded {
        (AckKind::Ack, "already succeeded; acking the redelivery")
    } else {
        (AckKind::Term, "not running it: its status is final")
    };
    tracing::info!(state = state.as_str(), "{what}");
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(error = %err, "could not settle a finished task");
    }
}

/// Ends a cancelled attempt: the record becomes `cancelled` and the message is terminated, so it
/// is neither retried nor dead-lettered.
pub(crate) async fn settle_cancelled(message: &async_nats::jetstream::Message, tracker: &Tracker) {
    tracker.cancelled().await;
    tracker.close();
    tracing::info!("task cancelled");
    if let Err(err) = message.ack_with(AckKind::Term).await {
        tracing::warn!(error = %err, "could not terminate a cancelled task");
    }
}

/// The id of a task message (`Nats-Msg-Id`), for the sweeper's dead letters.
pub(crate) fn message_id(headers: &HeaderMap) -> String {
    headers
        .get(headers::MSG_ID)
        .map(|value| value.as_str().to_owned())
        .unwrap_or_default()
}
