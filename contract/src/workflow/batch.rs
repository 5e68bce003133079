//! A batch's records in `<PREFIX>_BATCHES` (PROTOCOL.md §13): the batch record `b.<batch>` and
//! one marker per finished member `m.<batch>.<encoded member id>`, and the summary its callbacks
//! receive. Pure: the round trips are in [`super::engine`].

use serde::{Deserialize, Serialize};

use super::WorkflowError;

/// Results of a chord inlined in its callback, in bytes of JSON at most: the rest of the
/// members are listed without their result and the summary says `results_truncated`.
pub const MAX_INLINE_RESULTS: usize = 256 * 1024;

/// The KV key of a batch's record: `b.<batch id>`.
pub fn record_key(batch: &str) -> String {
    format!("b.{batch}")
}

/// The KV key of a finished member's marker: `m.<batch id>.<member task id, encoded as a status
/// key>` (PROTOCOL §8 key encoding).
pub fn member_key(batch: &str, member: &str) -> String {
    format!("m.{batch}.{}", crate::status::key(member))
}

/// The member id of a task with `Jetq-Batch`: its task id, or for a replayed dead letter
/// (`replay:<dead-letter sequence>:<task id>`, PROTOCOL §5) the original task's id, so that the
/// replay finishes the same member. (A replay id too long to carry the task id,
/// `replay:<sequence>`, is its own member.)
pub fn member_id(task_id: &str) -> &str {
    task_id
        .strip_prefix("replay:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, original)| original)
        .filter(|original| !original.is_empty())
        .unwrap_or(task_id)
}

/// The KV keys of every marker of a batch (a wildcard): `m.<batch id>.>`.
pub fn members_filter(batch: &str) -> String {
    format!("m.{batch}.>")
}

/// The member id a nested batch has in its parent: `batch:<child id>`.
pub fn child_member_id(child: &str) -> String {
    format!("batch:{child}")
}

/// The `Nats-Msg-Id` of a batch's callback: `batch:<id>:on_success` / `batch:<id>:on_complete`
/// (a re-publish after a crash is deduplicated by the task stream).
pub fn callback_id(batch: &str, which: Which) -> String {
    format!("batch:{batch}:{}", which.as_str())
}

/// Which callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Every member succeeded.
    OnSuccess,
    /// Every member finished (succeeded or dead-lettered).
    OnComplete,
}

impl Which {
    /// `on_success` or `on_complete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Which::OnSuccess => "on_success",
            Which::OnComplete => "on_complete",
        }
    }
}

/// The life of a batch record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    /// Being enqueued: its producer has not published every member yet. An enqueue with the
    /// same id takes it over (the first one crashed).
    Enqueuing,
    /// Members may still be added; callbacks wait until it is closed.
    Open,
    /// No more members: the callbacks fire when the members are done.
    Closed,
}

/// A callback: the task enqueued when the batch is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// Its queue.
    pub queue: String,
    /// Its task type.
    pub task: String,
    /// Its arguments, a JSON object; the batch summary is added as field `batch`.
    pub args: serde_json::Value,
}

impl Callback {
    /// A callback, its arguments checked to be a JSON object.
    pub fn new(queue: &str, task: &str, args: serde_json::Value) -> Result<Self, WorkflowError> {
        if !args.is_object() {
            return Err(WorkflowError::CallbackArgsNotAnObject {
                task: task.to_owned(),
            });
        }
        Ok(Callback {
            queue: queue.to_owned(),
            task: task.to_owned(),
            args,
        })
    }

    /// The callback task's body: its arguments with `"batch": <summary>`.
    pub fn body(&self, summary: &BatchSummary) -> Vec<u8> {
        let mut args = self.args.clone();
        if let Some(object) = args.as_object_mut() {
            object.insert(
                "batch".to_owned(),
                serde_json::to_value(summary).unwrap_or_default(),
            );
        }
        serde_json::to_vec(&args).unwrap_or_default()
    }
}

/// The firing of one callback: `started_at` is written (compare-and-set) before the callback is
/// published, `done_at` after its publish was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fire {
    /// When a process first decided to fire it.
    pub started_at: String,
    /// When it was stored in the task stream (absent while firing, and for a batch without
    /// this callback: then `started_at` = `done_at` records the moment the condition held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
}

/// A batch record, the value of `b.<batch id>` (compact JSON; readers ignore unknown fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// The batch id.
    pub id: String,
    /// `enqueuing`, `open` or `closed`.
    pub state: BatchState,
    /// Members it has (tasks, and nested batches counted as one each).
    pub total: u64,
    /// Members counted as succeeded. A hint: a crash may count a member twice; the markers
    /// decide.
    #[serde(default)]
    pub succeeded: u64,
    /// Members counted as dead-lettered (or cancelled). A hint, as `succeeded`.
    #[serde(default)]
    pub dead: u64,
    /// Enqueued once when every member succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Callback>,
    /// Enqueued once when every member finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<Callback>,
    /// A chord: members' results go to the callbacks (members are tracked).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chord: bool,
    /// The batch this one is a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// The trace context of the enqueue that created it: its callbacks continue this trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// With `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// `on_complete`'s firing: present once every member finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Fire>,
    /// `on_success`'s firing: present once every member succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded_all: Option<Fire>,
}

impl BatchRecord {
    /// A new record in state `enqueuing`.
    pub fn new(id: &str, total: u64) -> Self {
        BatchRecord {
            id: id.to_owned(),
            state: BatchState::Enqueuing,
            total,
            succeeded: 0,
            dead: 0,
            on_success: None,
            on_complete: None,
            chord: false,
            parent: None,
            created_at: crate::time::now(),
            traceparent: None,
            tracestate: None,
            completed: None,
            succeeded_all: None,
        }
    }

    /// Compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored record.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The counters say every member may be done (closed, and as many outcomes as members)
    /// and something is left to do — a callback to fire, or a parent to tell (done again on a
    /// redelivery, in case the process that fired died before telling it): time to count the
    /// markers.
    pub fn may_be_complete(&self) -> bool {
        self.state == BatchState::Closed
            && self.succeeded.saturating_add(self.dead) >= self.total
            && (self.completed_pending() || self.success_pending() || self.parent.is_some())
    }

    /// `on_complete` has not fired (or not finished firing).
    pub fn completed_pending(&self) -> bool {
        self.completed.as_ref().is_none_or(|f| f.done_at.is_none())
    }

    /// `on_success` has not fired (or not finished firing).
    pub fn success_pending(&self) -> bool {
        self.succeeded_all
            .as_ref()
            .is_none_or(|f| f.done_at.is_none())
    }

    /// The firing of `which`.
    pub fn fire(&self, which: Which) -> Option<&Fire> {
        match which {
            Which::OnComplete => self.completed.as_ref(),
            Which::OnSuccess => self.succeeded_all.as_ref(),
        }
    }

    /// The firing of `which`, to change.
    pub fn fire_mut(&mut self, which: Which) -> &mut Option<Fire> {
        match which {
            Which::OnComplete => &mut self.completed,
            Which::OnSuccess => &mut self.succeeded_all,
        }
    }

    /// The callback of `which`, if the batch has one.
    pub fn callback(&self, which: Which) -> Option<&Callback> {
        match which {
            Which::OnComplete => self.on_complete.as_ref(),
            Which::OnSuccess => self.on_success.as_ref(),
        }
    }
}

/// How a member ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberOutcome {
    /// Its handler succeeded (or, for a nested batch, every one of its members did).
    Succeeded,
    /// Dead-lettered or cancelled (or, for a nested batch, some of its members were).
    Dead,
}

/// A finished member's marker, the value of `m.<batch>.<member>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberMarker {
    /// How it ended.
    pub outcome: MemberOutcome,
    /// When.
    pub at: String,
    /// A chord member's result (its handler's `ctx.set_result`), if it has one and it is at
    /// most [`super::results::MAX_MARKER_RESULT`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// A larger result: the name of the object holding it in `<PREFIX>_RESULTS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<String>,
    /// The W3C `traceparent` of the attempt that finished the member (the callback's span
    /// links to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl MemberMarker {
    /// A marker stamped now.
    pub fn new(outcome: MemberOutcome, result: Option<serde_json::Value>) -> Self {
        MemberMarker {
            outcome,
            at: crate::time::now(),
            result,
            result_ref: None,
            traceparent: None,
        }
    }

    /// Compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored marker.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// One member's result in a chord's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberResult {
    /// The member's task id (a nested batch: `batch:<id>`).
    pub id: String,
    /// How it ended.
    pub outcome: MemberOutcome,
    /// Its result; absent when it had none, when it is stored (`result_ref`) or when the
    /// inline bound was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// A result too large to inline: the object holding it in `<PREFIX>_RESULTS` (read it with
    /// [`super::results::ChordResults::resolve`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<String>,
}

/// What a callback receives (field `batch` of its arguments).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    /// The batch id.
    #[serde(default)]
    pub id: String,
    /// Its members.
    #[serde(default)]
    pub total: u64,
    /// Members that succeeded.
    #[serde(default)]
    pub succeeded: u64,
    /// Members dead-lettered (or cancelled).
    #[serde(default)]
    pub dead: u64,
    /// A chord's members with their results, ordered by member id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<MemberResult>,
    /// Some results were left out (over [`MAX_INLINE_RESULTS`] bytes in all).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub results_truncated: bool,
}

impl BatchSummary {
    /// The summary of a batch from its markers (member id, marker), with results if a chord.
    pub fn from_markers(record: &BatchRecord, markers: &[(String, MemberMarker)]) -> Self {
        let mut summary = BatchSummary {
            id: record.id.clone(),
            total: record.total,
            ..Default::default()
        };
        let mut budget = MAX_INLINE_RESULTS;
        for (id, marker) in markers {
            match marker.outcome {
                MemberOutcome::Succeeded => summary.succeeded += 1,
                MemberOutcome::Dead => summary.dead += 1,
            }
            if record.chord {
                let mut result = marker.result.clone();
                if let Some(value) = &result {
                    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0);
                    if size > budget {
                        summary.results_truncated = true;
                        result = None;
                    } else {
                        budget -= size;
                    }
                }
                summary.results.push(MemberResult {
                    id: id.clone(),
                    outcome: marker.outcome,
                    result,
                    result_ref: marker.result_ref.clone(),
                });
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids() {
        assert_eq!(record_key("b1"), "b.b1");
        assert_eq!(
            member_key("b1", "01J9ZQ5W3V7ZB4M8K2N6P0R1S3"),
            "m.b1.01J9ZQ5W3V7ZB4M8K2N6P0R1S3"
        );
        assert_eq!(member_key("b1", "batch:child"), "m.b1.batch=3Achild");
        assert_eq!(callback_id("b1", Which::OnComplete), "batch:b1:on_complete");
    }

    #[test]
    fn a_record_may_be_complete_only_when_closed_and_counted() {
        let mut record = BatchRecord::new("b", 2);
        record.succeeded = 2;
        assert!(!record.may_be_complete(), "enqueuing");
        record.state = BatchState::Closed;
        assert!(record.may_be_complete());
        let back = BatchRecord::from_json(&record.to_json()).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn callbacks_get_the_summary_beside_their_arguments() {
        let callback = Callback::new("q", "t", serde_json::json!({"export": 7})).unwrap();
        let summary = BatchSummary {
            id: "b".into(),
            total: 2,
            succeeded: 2,
            ..Default::default()
        };
        let body: serde_json::Value = serde_json::from_slice(&callback.body(&summary)).unwrap();
        assert_eq!(body["export"], 7);
        assert_eq!(body["batch"]["total"], 2);
        assert!(Callback::new("q", "t", serde_json::json!([1])).is_err());
    }
}
