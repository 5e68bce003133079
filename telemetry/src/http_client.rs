//! The HTTP client of the OTLP/HTTP exporter: reqwest's blocking client with rustls (ring) and
//! the roots of [`tls::roots`] for `https://`, wrapped so that why a request failed reaches
//! the log.
//!
//! jetq builds the client for `http://` endpoints too: reqwest is compiled with TLS but without
//! a crypto provider feature (ring is given here explicitly, rather than pulling in aws-lc-rs),
//! and the exporter's own default client would look for a process-wide rustls provider and
//! panic without one.
//!
//! The exporter turns every failed request into "HTTP export failed: network error", dropping
//! the cause (an unknown CA, a refused connection, a timeout). [`ExplainedClient`] keeps the
//! last cause for [`Reachability`](crate::quiet::Reachability) to log with its one warning.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use rustls::RootCertStore;

use crate::{otlp::OtlpTransport, tls, TelemetryError};

/// The cause of the last failed request, shared with the signal's reachability report.
#[derive(Debug, Clone, Default)]
pub(crate) struct LastCause(Arc<Mutex<Option<String>>>);

impl LastCause {
    fn set(&self, cause: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(cause);
    }

    /// Takes the cause recorded since the last call, if any.
    pub(crate) fn take(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// A blocking reqwest client remembering why its last request failed.
pub(crate) struct ExplainedClient {
    inner: reqwest::blocking::Client,
    cause: LastCause,
}

impl fmt::Debug for ExplainedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExplainedClient").finish_non_exhaustive()
    }
}

impl HttpClient for ExplainedClient {
    // The trait is declared with `async_trait`; this is its expansion.
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.inner.send_bytes(request).await.inspect_err(|err| {
                self.cause.set(chain(err.as_ref()));
            })
        })
    }
}

/// An error and its sources, `outer: inner: innermost`, without repeating a source that the
/// outer message already quotes.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let message = inner.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = inner.source();
    }
    text
}

/// The exporter's client for `signal`: TLS with [`tls::roots`] when `https`, the export
/// timeout; failures recorded in `cause`.
pub(crate) fn client(
    signal: &'static str,
    transport: &OtlpTransport,
    https: bool,
    timeout: Duration,
    cause: LastCause,
) -> Result<ExplainedClient, TelemetryError> {
    let roots = if https {
        tls::roots(signal, transport)?
    } else {
        RootCertStore::empty()
    };
    let failed = |message: String| TelemetryError::Exporter { signal, message };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| failed(format!("TLS set-up: {err}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // A blocking client runs its own runtime; building it on a thread of the caller's Tokio
    // runtime is refused, so build it on a thread of its own (as the exporter does for its
    // default client).
    let inner = std::thread::Builder::new()
        .name("jetq-otlp-client".into())
        .spawn(move || {
            reqwest::blocking::Client::builder()
                .tls_backend_preconfigured(tls)
                .timeout(timeout)
                .build()
        })
        .map_err(|err| failed(format!("cannot start a thread: {err}")))?
        .join()
        .map_err(|_| failed("building the HTTP client panicked".into()))?
        .map_err(|err| failed(format!("cannot build the HTTP client: {err}")))?;
    Ok(ExplainedClient { inner, cause })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|inner| inner as _)
        }
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let err = Layer(
            "error sending request",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer(
                    "invalid peer certificate: UnknownIssuer",
                    None,
                ))),
            ))),
        );
        assert_eq!(
            chain(&err),
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        );
        let quoted = Layer("refused (io: reset)", Some(Box::new(Layer("reset", None))));
        assert_eq!(chain(&quoted), "refused (io: reset)");
    }
}
