//! Listing a batch's member markers (the truth the callbacks fire on).

use std::time::Duration;

use async_nats::jetstream::{
    consumer::{self, AckPolicy, DeliverPolicy},
    kv,
};
use futures::StreamExt;

use super::{
    batch::{self, MemberMarker},
    engine::EngineError,
};

fn fail(what: impl std::fmt::Display) -> EngineError {
    EngineError(what.to_string())
}

/// Every marker of a batch in `store`: (member id, marker), ordered by member id. Read with an
/// ephemeral consumer (last value per key), deleted afterwards.
pub(crate) async fn markers(
    store: &kv::Store,
    batch_id: &str,
) -> Result<Vec<(String, MemberMarker)>, EngineError> {
    let prefix = format!("$KV.{}.", store.name);
    let filter = format!("{prefix}{}", batch::members_filter(batch_id));
    let consumer = store
        .stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter.clone(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|err| fail(format!("cannot list {filter}: {err}")))?;
    let mut consumer = consumer;
    let pending = consumer
        .info()
        .await
        .map_err(|err| fail(format!("cannot list {filter}: {err}")))?
        .num_pending;
    let member_prefix = format!("{prefix}m.{batch_id}.");
    let mut markers = Vec::with_capacity(usize::try_from(pending).unwrap_or(0));
    if pending > 0 {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|err| fail(format!("cannot list {filter}: {err}")))?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
            let message = match next {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(err))) => return Err(fail(format!("listing {filter}: {err}"))),
                Ok(None) | Err(_) => return Err(fail(format!("listing {filter} stopped"))),
            };
            let left = message.info().map(|info| info.pending).unwrap_or(0);
            let deleted = message
                .headers
                .as_ref()
                .is_some_and(|h| h.get("KV-Operation").is_some_and(|op| op.as_str() != "PUT"));
            if !deleted {
                if let (Some(encoded), Ok(marker)) = (
                    message.subject.as_str().strip_prefix(&member_prefix),
                    MemberMarker::from_json(&message.payload),
                ) {
                    let id =
                        crate::status::id_from_key(encoded).unwrap_or_else(|| encoded.to_owned());
                    markers.push((id, marker));
                }
            }
            if left == 0 {
                break;
            }
        }
    }
    let name = consumer.cached_info().name.clone();
    if let Err(err) = store.stream.delete_consumer(&name).await {
        tracing::debug!(error = %err, "could not delete the listing consumer; it expires");
    }
    markers.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(markers)
}
