//! The stored message of a task, as the task page shows it: its arguments, every header (JSON
//! headers pretty-printed), the trace id of its `traceparent`, and the batch and chain it
//! belongs to (`Jetq-Batch`, `Jetq-Chain`). Read once per page view by sequence (a direct get),
//! from the task stream or, for a dead task, from its dead letter.

use jetq_contract::workflow;
use serde::Serialize;

use super::AppState;

/// One header line.
#[derive(Debug, Serialize)]
pub(super) struct HeaderLine {
    name: String,
    value: String,
    /// The value is JSON, pretty-printed.
    pretty: bool,
}

/// What the task page shows of a stored message.
#[derive(Debug, Default, Serialize)]
pub(super) struct StoredTask {
    /// The body: pretty JSON, or the text as stored when it is not JSON.
    pub(super) arguments: String,
    pub(super) headers: Vec<HeaderLine>,
    /// The trace id of its `traceparent` (`version-traceid-spanid-flags`).
    pub(super) trace_id: Option<String>,
    pub(super) batch: Option<String>,
    /// The chain and the link's index.
    pub(super) chain: Option<(String, usize)>,
}

/// Message `sequence` of `stream`; `None` when it cannot be read (gone meanwhile, no rights).
pub(super) async fn read(state: &AppState, stream: &str, sequence: u64) -> Option<StoredTask> {
    let stream = state.admin.jetstream().get_stream(stream).await.ok()?;
    let message = stream.get_raw_message(sequence).await.ok()?;
    let arguments = match serde_json::from_slice::<serde_json::Value>(&message.payload) {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&message.payload).into_owned(),
    };
    let mut headers = Vec::new();
    for (name, values) in message.headers.iter() {
        for value in values {
            let value = value.as_str();
            let json = value
                .trim_start()
                .starts_with(['{', '['])
                .then(|| serde_json::from_str::<serde_json::Value>(value).ok())
                .flatten();
            headers.push(match json {
                Some(json) => HeaderLine {
                    name: name.to_string(),
                    value: serde_json::to_string_pretty(&json).unwrap_or_else(|_| value.into()),
                    pretty: true,
                },
                None => HeaderLine {
                    name: name.to_string(),
                    value: value.to_owned(),
                    pretty: false,
                },
            });
        }
    }
    headers.sort_by(|a, b| a.name.cmp(&b.name));
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    let trace_id = header("traceparent").and_then(|v| v.split('-').nth(1).map(str::to_owned));
    let batch =
        header(workflow::BATCH).filter(|batch| workflow::validate_id("batch", batch).is_ok());
    let chain = header(workflow::CHAIN).and_then(|v| {
        workflow::chain::parse_header(&v).map(|(chain, index)| (chain.to_owned(), index))
    });
    Some(StoredTask {
        arguments,
        headers,
        trace_id,
        batch,
        chain,
    })
}
