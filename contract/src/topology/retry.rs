//! Retrying a provisioning request while JetStream is not ready yet (a fresh cluster electing
//! its leaders, a stream without a leader, a request timing out): which errors mean "not ready"
//! and are retried with jittered, doubling pauses for the budget, and which are final.

use std::{future::Future, time::Duration};

use async_nats::jetstream::{self, ErrorCode};

use super::{BoxError, ProvisionError, Topology};

/// The first pause between retries; doubled each time up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(200);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(3);
/// How long a request that keeps timing out is retried while the server answers other
/// JetStream requests (its account info): the server is up, so the silence is most likely a
/// permission the NATS user lacks (the server drops the request and only logs it), not an
/// election; waiting the whole budget would only delay the error.
const REFUSED_BUDGET: Duration = Duration::from_secs(10);

impl Topology {
    /// Runs `op` until it succeeds, fails for good, or JetStream stayed not ready for the whole
    /// budget. Only errors that mean "not ready yet" (timeouts, no responders, no leader,
    /// cluster unavailable) are retried, with doubling pauses and jitter so that processes that
    /// started together do not retry in lockstep.
    pub(super) async fn retry<T, E, F, Fut>(&self, name: &str, mut op: F) -> Result<T, Attempted<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let started = tokio::time::Instant::now();
        let mut deadline = started + self.budget;
        let mut pause = FIRST_RETRY_PAUSE;
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let err = match op().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !is_transient(&err) {
                return Err(Attempted::Final(err));
            }
            if is_timeout(&err)
                && deadline > started + REFUSED_BUDGET
                && self.js.query_account().await.is_ok()
            {
                deadline = started + REFUSED_BUDGET;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Attempted::GaveUp {
                    last: err,
                    attempts,
                    waited: started.elapsed(),
                });
            }
            // The last pause ends at the deadline, for one more try: the whole budget is used.
            let jittered = pause
                .mul_f64(rand::random_range(0.5..1.0))
                .min(deadline - now);
            tracing::info!(
                object = name,
                attempts,
                error = %err,
                retry_in = ?jittered,
                "JetStream is not ready yet; provisioning tries again"
            );
            tokio::time::sleep(jittered).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }
}

/// How a retried request ended.
pub(super) enum Attempted<E> {
    /// It failed with an error retrying does not help.
    Final(E),
    /// JetStream stayed not ready for the whole budget.
    GaveUp {
        last: E,
        attempts: u32,
        waited: Duration,
    },
}

impl<E: std::error::Error + Send + Sync + 'static> Attempted<E> {
    pub(super) fn into_provision_error(
        self,
        name: &str,
        otherwise: impl FnOnce(BoxError) -> ProvisionError,
    ) -> ProvisionError {
        match self {
            Attempted::Final(err) => otherwise(Box::new(err)),
            Attempted::GaveUp {
                last,
                attempts,
                waited,
            } => ProvisionError::Unavailable {
                name: name.to_owned(),
                attempts,
                waited,
                source: Box::new(last),
            },
        }
    }
}

/// The errors (and their sources) of one request, outermost first.
fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |err| err.source())
}

/// Whether the server answered `code` anywhere in `err`'s chain.
pub(super) fn has_code(err: &(dyn std::error::Error + 'static), code: ErrorCode) -> bool {
    use jetstream::{
        context::CreateStreamErrorKind, context::GetStreamErrorKind, stream::ConsumerErrorKind,
    };
    chain(err).any(|err| {
        if let Some(api) = err.downcast_ref::<jetstream::Error>() {
            return api.error_code() == code;
        }
        if let Some(create) = err.downcast_ref::<jetstream::context::CreateStreamError>() {
            return matches!(create.kind(), CreateStreamErrorKind::JetStream(api) if api.error_code() == code);
        }
        if let Some(get) = err.downcast_ref::<jetstream::context::GetStreamError>() {
            return matches!(get.kind(), GetStreamErrorKind::JetStream(api) if api.error_code() == code);
        }
        if let Some(consumer) = err.downcast_ref::<jetstream::stream::ConsumerError>() {
            return matches!(consumer.kind(), ConsumerErrorKind::JetStream(api) if api.error_code() == code);
        }
        false
    })
}

/// Server answers that mean "not ready yet" rather than "no": a cluster still electing its
/// leaders, or one whose peers have not all reported (insufficient resources for R3 until
/// they have).
const NOT_READY: [ErrorCode; 8] = [
    ErrorCode::CLUSTER_NOT_AVAILABLE,
    ErrorCode::CLUSTER_NOT_LEADER,
    ErrorCode::CLUSTER_NOT_ACTIVE,
    ErrorCode::CLUSTER_INCOMPLETE,
    ErrorCode::CLUSTER_NO_PEERS,
    ErrorCode::CLUSTER_NOT_ASSIGNED,
    ErrorCode::INSUFFICIENT_RESOURCES,
    ErrorCode::RAFT_GENERAL,
];

fn not_ready(api: &jetstream::Error) -> bool {
    NOT_READY.contains(&api.error_code()) || api.code() == 503
}

/// Whether `err` is a request that got no answer in time (as opposed to a "not ready" answer).
fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    use jetstream::{
        context::{CreateKeyValueErrorKind, CreateStreamErrorKind, RequestErrorKind},
        stream::ConsumerErrorKind,
    };
    chain(err).any(|err| {
        if let Some(create) = err.downcast_ref::<jetstream::context::CreateStreamError>() {
            return create.kind() == CreateStreamErrorKind::TimedOut;
        }
        if let Some(request) = err.downcast_ref::<jetstream::context::RequestError>() {
            return request.kind() == RequestErrorKind::TimedOut;
        }
        if let Some(request) = err.downcast_ref::<async_nats::RequestError>() {
            return request.kind() == async_nats::RequestErrorKind::TimedOut;
        }
        if let Some(create) = err.downcast_ref::<jetstream::context::CreateKeyValueError>() {
            return create.kind() == CreateKeyValueErrorKind::TimedOut;
        }
        if let Some(consumer) = err.downcast_ref::<jetstream::stream::ConsumerError>() {
            return consumer.kind() == ConsumerErrorKind::TimedOut;
        }
        false
    })
}

/// Whether retrying `err` later can succeed: the request timed out, nobody answered, or the
/// server said it is not ready.
fn is_transient(err: &(dyn std::error::Error + 'static)) -> bool {
    use jetstream::{
        context::{
            CreateKeyValueErrorKind, CreateStreamErrorKind, GetStreamErrorKind, RequestErrorKind,
        },
        stream::ConsumerErrorKind,
    };
    chain(err).any(|err| {
        if let Some(api) = err.downcast_ref::<jetstream::Error>() {
            return not_ready(api);
        }
        if let Some(create) = err.downcast_ref::<jetstream::context::CreateStreamError>() {
            return match create.kind() {
                CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => {
                    true
                }
                CreateStreamErrorKind::JetStream(api) => not_ready(&api),
                _ => false,
            };
        }
        if let Some(get) = err.downcast_ref::<jetstream::context::GetStreamError>() {
            return matches!(get.kind(), GetStreamErrorKind::JetStream(api) if not_ready(&api));
        }
        if let Some(request) = err.downcast_ref::<jetstream::context::RequestError>() {
            return matches!(
                request.kind(),
                RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
            );
        }
        if let Some(request) = err.downcast_ref::<async_nats::RequestError>() {
            return matches!(
                request.kind(),
                async_nats::RequestErrorKind::TimedOut | async_nats::RequestErrorKind::NoResponders
            );
        }
        if let Some(create) = err.downcast_ref::<jetstream::context::CreateKeyValueError>() {
            return create.kind() == CreateKeyValueErrorKind::TimedOut;
        }
        if let Some(consumer) = err.downcast_ref::<jetstream::stream::ConsumerError>() {
            return match consumer.kind() {
                ConsumerErrorKind::TimedOut => true,
                ConsumerErrorKind::JetStream(api) => not_ready(&api),
                _ => false,
            };
        }
        false
    })
}
