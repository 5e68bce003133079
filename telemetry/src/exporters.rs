//! Builds the OTLP span and metric exporters of one signal from its endpoint and transport:
//! OTLP/HTTP (protobuf) or OTLP/gRPC, to `http://` or `https://`.
//!
//! Everything configured is passed to the exporter builders explicitly, so what the exporter
//! does is what [`TelemetryConfig`](crate::TelemetryConfig) says (the builders would otherwise
//! read some variables from the process environment on their own).

use std::{collections::HashMap, time::Duration};

use opentelemetry_otlp::{
    tonic_types::{metadata::MetadataMap, transport::ClientTlsConfig},
    MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};

use crate::{
    http_client::{self, ExplainedClient, LastCause},
    otlp::{OtlpProtocol, OtlpTransport},
    tls, TelemetryError,
};

/// The SDK's export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One signal's exporter settings, as [`span_exporter`] and [`metric_exporter`] take them.
pub(crate) struct Target<'a> {
    /// `traces` or `metrics` (for errors).
    pub(crate) signal: &'static str,
    /// The configured endpoint; `None`: the protocol's default.
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) transport: &'a OtlpTransport,
    /// Where the OTLP/HTTP client records why a request failed.
    pub(crate) cause: LastCause,
}

impl Target<'_> {
    /// The URL exports go to: the configured one, or the protocol's default (with the
    /// signal's path for OTLP/HTTP).
    pub(crate) fn effective_endpoint(&self) -> String {
        let protocol = self.transport.protocol;
        match (self.endpoint, protocol) {
            (Some(endpoint), _) => endpoint.to_owned(),
            (None, OtlpProtocol::HttpProtobuf) => {
                format!("{}/v1/{}", protocol.default_endpoint(), self.signal)
            }
            (None, OtlpProtocol::Grpc) => protocol.default_endpoint().to_owned(),
        }
    }

    fn is_https(&self) -> bool {
        self.effective_endpoint()
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    }

    fn failed(&self, message: impl std::fmt::Display) -> TelemetryError {
        TelemetryError::Exporter {
            signal: self.signal,
            message: message.to_string(),
        }
    }

    /// The tonic channel is created on the current Tokio runtime and exports run on it.
    fn require_tokio(&self) -> Result<(), TelemetryError> {
        tokio::runtime::Handle::try_current()
            .map(drop)
            .map_err(|_| {
                self.failed(
                    "OTLP/gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc) needs a Tokio runtime: set \
                 telemetry up inside #[tokio::main] (jetq_telemetry::run_main does), or use \
                 http/protobuf",
                )
            })
    }

    /// Headers for the HTTP exporter, which percent-decodes the values it is given: ours are
    /// decoded already, so a literal `%` is escaped again.
    fn http_headers(&self) -> HashMap<String, String> {
        self.transport
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.replace('%', "%25")))
            .collect()
    }

    fn grpc_metadata(&self) -> Result<MetadataMap, TelemetryError> {
        let mut headers = axum::http::HeaderMap::new();
        for (name, value) in &self.transport.headers {
            // Checked when the configuration was read; a failure here is a bug, not input.
            let name = axum::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|err| self.failed(format!("header {name:?}: {err}")))?;
            let value = axum::http::HeaderValue::from_str(value)
                .map_err(|err| self.failed(format!("header {name:?}: {err}")))?;
            headers.append(name, value);
        }
        Ok(MetadataMap::from_headers(headers))
    }

    fn http_client(&self) -> Result<ExplainedClient, TelemetryError> {
        http_client::client(
            self.signal,
            self.transport,
            self.is_https(),
            self.timeout(),
            self.cause.clone(),
        )
    }

    fn grpc_tls(&self) -> Result<Option<ClientTlsConfig>, TelemetryError> {
        if !self.is_https() {
            return Ok(None);
        }
        let roots = tls::roots(self.signal, self.transport)?;
        Ok(Some(ClientTlsConfig::new().trust_anchors(roots.roots)))
    }

    fn timeout(&self) -> Duration {
        self.transport.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// The span exporter of `target`.
pub(crate) fn span_exporter(target: &Target<'_>) -> Result<SpanExporter, TelemetryError> {
    let built = match target.transport.protocol {
        OtlpProtocol::HttpProtobuf => http(SpanExporter::builder().with_http(), target)?.build(),
        OtlpProtocol::Grpc => grpc(SpanExporter::builder().with_tonic(), target)?.build(),
    };
    built.map_err(|err| target.failed(err))
}

/// The metric exporter of `target`.
pub(crate) fn metric_exporter(target: &Target<'_>) -> Result<MetricExporter, TelemetryError> {
    let built = match target.transport.protocol {
        OtlpProtocol::HttpProtobuf => http(MetricExporter::builder().with_http(), target)?.build(),
        OtlpProtocol::Grpc => grpc(MetricExporter::builder().with_tonic(), target)?.build(),
    };
    built.map_err(|err| target.failed(err))
}

/// An OTLP/HTTP exporter builder (spans or metrics) set up for `target`: binary protobuf, its
/// endpoint, timeout, headers and jetq's own HTTP client.
fn http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    target: &Target<'_>,
) -> Result<B, TelemetryError> {
    Ok(builder
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(target.effective_endpoint())
        .with_timeout(target.timeout())
        .with_headers(target.http_headers())
        .with_http_client(target.http_client()?))
}

/// An OTLP/gRPC exporter builder (spans or metrics) set up for `target`: its endpoint, timeout,
/// headers as metadata and, for `https://`, TLS. Refused outside a Tokio runtime.
fn grpc<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    target: &Target<'_>,
) -> Result<B, TelemetryError> {
    target.require_tokio()?;
    let builder = builder
        .with_endpoint(target.effective_endpoint())
        .with_timeout(target.timeout())
        .with_metadata(target.grpc_metadata()?);
    Ok(match target.grpc_tls()? {
        Some(tls) => builder.with_tls_config(tls),
        None => builder,
    })
}
