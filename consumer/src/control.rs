//! Worker control (PROTOCOL.md §16): this worker answers cancel requests for the tasks it runs
//! on `<prefix>.control.worker.<worker id>.cancel` (core NATS request/reply), the worker id
//! being its presence record's (§14), so operators find it there.
//!
//! A request names a task id (and its stream sequence). When one of this worker's running
//! attempts matches, the worker
//! 1. terminates the message (`+TERM`, flushed), so the server never delivers it again — even
//!    if this worker dies right after;
//! 2. cancels the attempt's cancel token: the handler's context sees it
//!    ([`TaskContext::is_cancelled`](crate::TaskContext::is_cancelled),
//!    [`cancelled`](crate::TaskContext::cancelled) and its `cancellation_token`), and a
//!    tracked task's tracker (its record becomes `cancelled`);
//! 3. replies `{"found":true,...}`.
//!
//! When the handler returns, whatever it returns, the attempt ends `cancelled`: no retry, no
//! dead letter ([`settle_cancelled`]). A request for a task this worker does not run is
//! answered `{"found":false}`.

use std::sync::Arc;

use async_nats::{jetstream::AckKind, Client};
use futures::StreamExt;
use jetq_contract::control::{cancel_subject, CancelReply, CancelRequest};
use tokio_util::sync::CancellationToken;

use crate::stall::StallWatch;

/// Answers cancel requests for worker `worker_id` until `stop`.
pub(crate) async fn serve(
    client: Client,
    prefix: String,
    worker_id: String,
    stall: Arc<StallWatch>,
    stop: CancellationToken,
) {
    let subject = cancel_subject(&prefix, &worker_id);
    let mut requests = match client.subscribe(subject.clone()).await {
        Ok(subscriber) => subscriber,
        Err(err) => {
            tracing::warn!(%subject, error = %err, "worker control disabled: cannot subscribe; running untracked tasks cannot be cancelled");
            return;
        }
    };
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => break,
            request = requests.next() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let Some(reply_to) = request.reply.clone() else {
            continue;
        };
        let reply = answer(&client, &request.payload, &stall).await;
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(err) = client.publish(reply_to, body.into()).await {
            tracing::warn!(error = %err, "cannot reply to a cancel request");
        }
    }
    let _ = requests.unsubscribe().await;
}

/// Cancels the attempts `payload` names, if this worker runs them.
async fn answer(client: &Client, payload: &[u8], stall: &StallWatch) -> CancelReply {
    let request: CancelRequest = match serde_json::from_slice(payload) {
        Ok(request) => request,
        Err(err) => {
            return CancelReply {
                found: false,
                sequence: 0,
                attempt: 0,
                error: Some(format!("not a cancel request: {err}")),
            }
        }
    };
    let attempts = stall.find(&request.id, request.sequence);
    let Some(first) = attempts.first() else {
        tracing::debug!(task_id = %request.id, "cancel request for a task this worker does not run");
        return CancelReply {
            found: false,
            sequence: 0,
            attempt: 0,
            error: None,
        };
    };
    let reply = CancelReply {
        found: true,
        sequence: first.sequence,
        attempt: first.attempt,
        error: None,
    };
    for attempt in &attempts {
        // Terminate first: once the reply says `found`, no redelivery can run the task again.
        if let Some(ack) = &attempt.ack {
            if let Err(err) = client.publish(ack.clone(), "+TERM".into()).await {
                tracing::warn!(task_id = %request.id, error = %err, "cannot terminate a cancelled task now; it is terminated when its handler returns");
            }
        }
    }
    if let Err(err) = client.flush().await {
        tracing::warn!(task_id = %request.id, error = %err, "cannot flush the termination of a cancelled task");
    }
    for attempt in &attempts {
        attempt.cancel.cancel();
    }
    tracing::info!(
        task_id = %request.id,
        sequence = first.sequence,
        by = request.by.as_deref().unwrap_or("-"),
        "task cancelled by request: its handler is told; it ends cancelled"
    );
    reply
}

/// Ends an untracked attempt cancelled through worker control: the message is terminated
/// (again: the request terminated it already), so it is neither retried nor dead-lettered.
pub(crate) async fn settle_cancelled(message: &async_nats::jetstream::Message) {
    tracing::info!("task cancelled");
    if let Err(err) = message.ack_with(AckKind::Term).await {
        tracing::debug!(error = %err, "could not terminate a cancelled task (terminated already)");
    }
}
