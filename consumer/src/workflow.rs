//! The worker's side of batches and chains (PROTOCOL.md §13, docs/WORKFLOWS.md): when a task
//! carrying `Jetq-Batch` or `Jetq-Chain` reaches its end (succeeded, dead-lettered, cancelled),
//! its outcome is recorded — the batch's member marker and counters, callbacks fired if it was
//! the last; the chain's next link enqueued — **before** the task is acknowledged. A failure
//! here leaves the task unacknowledged (the caller NAKs it with a delay), and its redelivery
//! finishes the job.
//!
//! Tasks without these headers cost one header lookup each.

use std::time::Duration;

use async_nats::HeaderMap;
use jetq_contract::{
    publish::Publisher,
    workflow::{self, chain, engine::EngineError, engine::Workflows, MemberOutcome},
    Topology,
};

/// How long a task whose workflow bookkeeping failed waits before it is redelivered.
pub(crate) const RETRY_DELAY: Duration = Duration::from_secs(2);

/// True if the task is a member of a batch or a link of a chain.
pub(crate) fn applies(headers: &HeaderMap) -> bool {
    headers.get(workflow::names::BATCH).is_some() || headers.get(workflow::names::CHAIN).is_some()
}

/// The batch a task is a member of: its `Jetq-Batch` header when it is a valid id (worker
/// presence lists it with the running task, PROTOCOL.md §14).
pub(crate) fn batch_of(headers: &HeaderMap) -> Option<std::sync::Arc<str>> {
    let batch = headers.get(workflow::names::BATCH)?.as_str();
    workflow::validate_id("batch", batch).ok()?;
    Some(std::sync::Arc::from(batch))
}

/// The workflow bucket, opened (or created, where the worker provisions) on the first task that
/// needs it.
pub(crate) struct WorkflowHooks {
    topology: Topology,
    provision: bool,
    engine: tokio::sync::OnceCell<Workflows>,
}

impl WorkflowHooks {
    pub(crate) fn new(topology: Topology, provision: bool) -> Self {
        WorkflowHooks {
            topology,
            provision,
            engine: tokio::sync::OnceCell::new(),
        }
    }

    async fn engine(&self) -> Result<&Workflows, EngineError> {
        self.engine
            .get_or_try_init(|| async {
                let store = workflow::engine::open_bucket(&self.topology, self.provision)
                    .await
                    .map_err(|err| EngineError(format!("workflow bucket unavailable: {err}")))?;
                let js = self.topology.jetstream().clone();
                let window =
                    workflow::engine::duplicate_window(&js, self.topology.subjects()).await;
                Ok(Workflows::new(
                    store,
                    Publisher::new(js, 3),
                    self.topology.subjects().clone(),
                    window,
                )
                .with_results_store(self.topology.clone(), self.provision))
            })
            .await
    }

    /// Records the end of task `id` in its batch and chain, if it has them. `result` is the
    /// handler's result (a tracked task's), for chords and chains that pass it on.
    pub(crate) async fn finished(
        &self,
        headers: &HeaderMap,
        id: &str,
        outcome: MemberOutcome,
        result: Option<&serde_json::Value>,
    ) -> Result<(), EngineError> {
        let batch = headers
            .get(workflow::names::BATCH)
            .map(|v| v.as_str().to_owned());
        let link = headers
            .get(workflow::names::CHAIN)
            .and_then(|v| chain::parse_header(v.as_str()).map(|(c, i)| (c.to_owned(), i)));
        if batch.is_none() && link.is_none() {
            return Ok(());
        }
        let engine = self.engine().await?;
        if let Some((chain_id, index)) = link {
            engine
                .finish_link(&chain_id, index, outcome, result)
                .await?;
        }
        if let Some(batch) = batch {
            if workflow::validate_id("batch", &batch).is_err() {
                tracing::warn!(batch, "malformed Jetq-Batch header: the task is no member");
                return Ok(());
            }
            engine
                .finish_member_traced(
                    &batch,
                    workflow::batch::member_id(id),
                    outcome,
                    result.cloned(),
                    current_traceparent(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The W3C `traceparent` of the current span (the attempt's `process` span), recorded in the
/// member's marker so that the callback's span can link to it; `None` without OpenTelemetry.
fn current_traceparent() -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut headers = HeaderMap::new();
    if !jetq_contract::otel::inject(&tracing::Span::current().context(), &mut headers) {
        return None;
    }
    headers
        .get(jetq_contract::headers::TRACEPARENT)
        .map(|value| value.as_str().to_owned())
}

/// Logs a failed bookkeeping step: the task is redelivered after [`RETRY_DELAY`].
pub(crate) fn log_failure(err: &EngineError) {
    tracing::warn!(error = %err, retry_in = ?RETRY_DELAY, "could not record the task's end in its batch or chain; it is not acknowledged and comes back");
}
