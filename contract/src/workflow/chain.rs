//! A chain's record in `<PREFIX>_BATCHES` (PROTOCOL.md §13): `c.<chain id>`, the links in order,
//! how far the chain got and where it stopped. Link `i` carries `Jetq-Chain: <chain id>:<i>`;
//! when it succeeds, the worker enqueues link `i + 1` (id `chain:<chain id>:<i + 1>`) before it
//! acknowledges link `i`. Links are a list: a cycle cannot be written.

use serde::{Deserialize, Serialize};

use super::WorkflowError;

/// The KV key of a chain's record: `c.<chain id>`.
pub fn record_key(chain: &str) -> String {
    format!("c.{chain}")
}

/// The `Nats-Msg-Id` of link `index`: `chain:<chain id>:<index>`.
pub fn link_id(chain: &str, index: usize) -> String {
    format!("chain:{chain}:{index}")
}

/// The `Jetq-Chain` header value of link `index`: `<chain id>:<index>`.
pub fn header_value(chain: &str, index: usize) -> String {
    format!("{chain}:{index}")
}

/// Reads a `Jetq-Chain` header: the chain id and the link's index.
pub fn parse_header(value: &str) -> Option<(&str, usize)> {
    let (chain, index) = value.rsplit_once(':')?;
    super::validate_id("chain", chain).ok()?;
    Some((chain, index.parse().ok()?))
}

/// One link: a task and whether it receives the previous link's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainLink {
    /// Its queue.
    pub queue: String,
    /// Its task type.
    pub task: String,
    /// Its arguments (a JSON object when it takes the previous result).
    pub args: serde_json::Value,
    /// Add the previous link's result to the arguments as field `previous`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_previous: bool,
}

/// Where a chain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainState {
    /// A link is queued or running.
    Running,
    /// Every link succeeded.
    Succeeded,
    /// A link was dead-lettered (or cancelled): the chain stopped there (`failed_at`).
    Failed,
}

/// The value of `c.<chain id>` (compact JSON; readers ignore unknown fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainRecord {
    /// The chain id.
    pub id: String,
    /// Where it is.
    pub state: ChainState,
    /// The links, in order.
    pub links: Vec<ChainLink>,
    /// The index of the last link enqueued.
    pub at: usize,
    /// The link that failed (with state `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<usize>,
    /// When it was created.
    pub created_at: String,
    /// The trace context of the enqueue that created it: every link continues this trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// With `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl ChainRecord {
    /// A new chain at its first link; refused without links, or with a link that takes the
    /// previous result but has no JSON object as arguments (or is the first).
    pub fn new(id: &str, links: Vec<ChainLink>) -> Result<Self, WorkflowError> {
        super::validate_id("chain", id)?;
        if links.is_empty() {
            return Err(WorkflowError::InvalidChain("it has no link".into()));
        }
        if links.first().is_some_and(|link| link.with_previous) {
            return Err(WorkflowError::InvalidChain(
                "the first link has no previous result to take".into(),
            ));
        }
        if let Some(link) = links
            .iter()
            .find(|l| l.with_previous && !l.args.is_object())
        {
            return Err(WorkflowError::InvalidChain(format!(
                "link {} takes the previous result but its arguments are not a JSON object",
                link.task
            )));
        }
        Ok(ChainRecord {
            id: id.to_owned(),
            state: ChainState::Running,
            links,
            at: 0,
            failed_at: None,
            created_at: crate::time::now(),
            traceparent: None,
            tracestate: None,
        })
    }

    /// Compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored record.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Link `index`'s body: its arguments, with `"previous": <result>` when it asks for it.
    pub fn body(&self, index: usize, previous: Option<&serde_json::Value>) -> Vec<u8> {
        let Some(link) = self.links.get(index) else {
            return b"{}".to_vec();
        };
        let mut args = link.args.clone();
        if link.with_previous {
            if let Some(object) = args.as_object_mut() {
                object.insert(
                    "previous".to_owned(),
                    previous.cloned().unwrap_or(serde_json::Value::Null),
                );
            }
        }
        serde_json::to_vec(&args).unwrap_or_default()
    }

    /// Whether link `index` must be tracked: the next link takes its result.
    pub fn tracks(&self, index: usize) -> bool {
        self.links.get(index + 1).is_some_and(|l| l.with_previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(task: &str, with_previous: bool) -> ChainLink {
        ChainLink {
            queue: "q".into(),
            task: task.into(),
            args: serde_json::json!({"n": 1}),
            with_previous,
        }
    }

    #[test]
    fn headers_and_bodies() {
        assert_eq!(parse_header(&header_value("c1", 3)), Some(("c1", 3)));
        assert_eq!(parse_header("c.1:3"), None);
        let record = ChainRecord::new("c1", vec![link("a", false), link("b", true)]).unwrap();
        assert!(record.tracks(0) && !record.tracks(1));
        let body: serde_json::Value =
            serde_json::from_slice(&record.body(1, Some(&serde_json::json!(42)))).unwrap();
        assert_eq!(body, serde_json::json!({"n": 1, "previous": 42}));
        assert!(ChainRecord::new("c1", vec![]).is_err());
        assert!(ChainRecord::new("c1", vec![link("a", true)]).is_err());
    }
}
