//! Publishing to the task stream: await every ack, resend with the same `Nats-Msg-Id` while
//! acks time out (the duplicate window makes that safe).

use async_nats::{
    jetstream::{
        self,
        context::{PublishAckFuture, PublishErrorKind},
        message::PublishMessage,
        publish::PublishAck,
    },
    HeaderMap,
};
use bytes::Bytes;

use crate::error::PublishFailed;

/// Attempts per publish while acks time out.
const ATTEMPTS: u32 = 3;

/// A message ready to publish, resent unchanged on timeout.
#[derive(Clone)]
pub(crate) struct Outgoing {
    pub(crate) subject: String,
    pub(crate) id: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

#[derive(Clone)]
pub(crate) struct Publisher {
    js: jetstream::Context,
}

impl Publisher {
    pub(crate) fn new(js: jetstream::Context) -> Self {
        Publisher { js }
    }

    /// Sends without waiting for the ack (pipelining); await it with [`Publisher::confirm`].
    pub(crate) async fn send(&self, message: &Outgoing) -> Result<PublishAckFuture, PublishFailed> {
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(message.headers.clone());
        self.js
            .send_publish(message.subject.clone(), publish)
            .await
            .map_err(|source| failed(message, source))
    }

    /// Awaits the ack of a sent message, resending on timeout.
    pub(crate) async fn confirm(
        &self,
        message: &Outgoing,
        first: PublishAckFuture,
    ) -> Result<PublishAck, PublishFailed> {
        let mut pending = Some(first);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let future = match pending.take() {
                Some(future) => future,
                None => match self.send(message).await {
                    Ok(future) => future,
                    Err(err) if timed_out(&err) && attempt < ATTEMPTS => continue,
                    Err(err) => return Err(err),
                },
            };
            match future.await {
                Ok(ack) => return Ok(ack),
                Err(source)
                    if source.kind() == PublishErrorKind::TimedOut && attempt < ATTEMPTS =>
                {
                    continue
                }
                Err(source) => return Err(failed(message, source)),
            }
        }
    }

    /// Publishes and awaits the ack.
    pub(crate) async fn publish(&self, message: &Outgoing) -> Result<PublishAck, PublishFailed> {
        let first = match self.send(message).await {
            Ok(future) => future,
            Err(err) if timed_out(&err) => self.send(message).await?,
            Err(err) => return Err(err),
        };
        self.confirm(message, first).await
    }
}

fn timed_out(err: &PublishFailed) -> bool {
    err.source.kind() == PublishErrorKind::TimedOut
}

fn failed(message: &Outgoing, source: jetstream::context::PublishError) -> PublishFailed {
    PublishFailed {
        subject: message.subject.clone(),
        id: message.id.clone(),
        source,
    }
}
