//! What the telemetry of a binary is configured by: the standard `OTEL_*` variables, `RUST_LOG`,
//! and a few `JETQ_*` ones.

use std::{collections::HashMap, net::SocketAddr};

use jetq_contract::ConfigError;

use crate::otlp::{self, OtlpTransport, Signal};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event, span fields in front (the default).
    #[default]
    Human,
    /// One JSON object per line; span fields (task id, queue, task, attempt, trace id) are
    /// top-level keys next to the event's own fields.
    Json,
}

/// The telemetry configuration of one binary.
///
/// | variable | meaning |
/// |---|---|
/// | `OTEL_SERVICE_NAME` | `service.name` of traces and metrics (default: the binary's name, e.g. `jetq-worker`) |
/// | `OTEL_RESOURCE_ATTRIBUTES` | more resource attributes, `key=value,…` |
/// | `OTEL_SDK_DISABLED` | `true`: no OpenTelemetry traces and no OTLP metrics (logs and `/metrics` stay) |
/// | `OTEL_TRACES_EXPORTER` | `otlp` or `none`; unset: `otlp` when an OTLP endpoint is configured, else nothing is exported |
/// | `OTEL_METRICS_EXPORTER` | `otlp`, `prometheus` or `none`: whether metrics are also pushed over OTLP (`/metrics` always serves them); unset: `otlp` when an endpoint is configured |
/// | `OTEL_EXPORTER_OTLP_ENDPOINT` | receiver base URL, `http://` or `https://`; for `http/protobuf` `/v1/traces` and `/v1/metrics` are appended, for `grpc` it is used as given. Unset (and no per-signal endpoint): no OTLP export, unless an `OTEL_*_EXPORTER` says `otlp` (then `http://localhost:4318`, or `:4317` for `grpc`) |
/// | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` | full per-signal URLs, used as given |
/// | `OTEL_EXPORTER_OTLP_PROTOCOL` (and `…_TRACES_…`, `…_METRICS_…`) | `http/protobuf` (default) or `grpc` |
/// | `OTEL_EXPORTER_OTLP_HEADERS` (and per-signal) | request headers, `name=value,…`, values percent-encoded (a vendor's API key) |
/// | `OTEL_EXPORTER_OTLP_CERTIFICATE` (and per-signal) | PEM file of CA certificates trusted for `https://` besides the system's roots |
/// | `OTEL_EXPORTER_OTLP_TIMEOUT` (and per-signal) | per-export timeout in milliseconds (default 10000) |
/// | `OTEL_EXPORTER_OTLP_COMPRESSION`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL` | read by the OpenTelemetry SDK itself from the process environment |
/// | `RUST_LOG` | log filter (default given by the binary, e.g. `info`) |
/// | `JETQ_LOG_FORMAT` | `human` (default) or `json` |
/// | `JETQ_TRACE_FILTER` | which spans are traced, same syntax as `RUST_LOG` (default `info`) |
/// | `JETQ_HEALTH_LISTEN` | address of `/healthz`, `/readyz` and `/metrics` (default `0.0.0.0:8459`) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `service.name`.
    pub service_name: String,
    /// Resource attributes from `OTEL_RESOURCE_ATTRIBUTES` (the SDK also reads them itself).
    pub resource_attributes: Vec<(String, String)>,
    /// Export traces over OTLP.
    pub traces: bool,
    /// Push metrics over OTLP as well as serving them on `/metrics`.
    pub otlp_metrics: bool,
    /// Traces endpoint, when configured (else the protocol's default, see
    /// [`OtlpProtocol::default_endpoint`]).
    pub traces_endpoint: Option<String>,
    /// Metrics endpoint, when configured (else the protocol's default).
    pub metrics_endpoint: Option<String>,
    /// How traces are sent: protocol, headers, CA certificate, timeout.
    pub traces_transport: OtlpTransport,
    /// How metrics are sent.
    pub metrics_transport: OtlpTransport,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` syntax).
    pub log_filter: String,
    /// Span filter for tracing (`RUST_LOG` syntax).
    pub trace_filter: String,
    /// Where the health server listens.
    pub health_listen: SocketAddr,
}

/// The default health server address of binaries. Port 8459 is used by nothing common: not
/// Prometheus (9090) nor its exporters (9091–9999), not NATS (4222, 6222, 8222), OTLP (4317,
/// 4318) or the usual application ports (3000, 8000, 8080).
pub const DEFAULT_HEALTH_LISTEN: &str = "0.0.0.0:8459";

impl TelemetryConfig {
    /// Reads the configuration from the process environment. `service_name` and `log_filter`
    /// are the binary's defaults for `OTEL_SERVICE_NAME` and `RUST_LOG`.
    pub fn from_env(service_name: &str, log_filter: &str) -> Result<Self, ConfigError> {
        Self::from_env_iter(service_name, log_filter, std::env::vars())
    }

    /// Reads the configuration from the given variables (tests pass their own).
    ///
    /// ```
    /// use jetq_telemetry::{LogFormat, TelemetryConfig};
    /// let vars = [
    ///     ("OTEL_SERVICE_NAME".to_string(), "shop-worker".to_string()),
    ///     ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), "http://collector:4318/".to_string()),
    ///     ("JETQ_LOG_FORMAT".to_string(), "json".to_string()),
    /// ];
    /// let config = TelemetryConfig::from_env_iter("jetq-worker", "info", vars).unwrap();
    /// assert_eq!(config.service_name, "shop-worker");
    /// assert_eq!(config.traces_endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
    /// assert_eq!(config.log_format, LogFormat::Json);
    /// ```
    pub fn from_env_iter<I>(
        service_name: &str,
        log_filter: &str,
        vars: I,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let get = |name: &str| {
            vars.get(name)
                .map(|value| value.trim())
                .filter(|value| !value.is_empty())
        };
        let disabled = match get("OTEL_SDK_DISABLED") {
            None => false,
            Some(value) => parse_bool("OTEL_SDK_DISABLED", value)?,
        };
        let traces = exporter(
            "OTEL_TRACES_EXPORTER",
            get("OTEL_TRACES_EXPORTER"),
            &["otlp"],
        )?;
        let otlp_metrics = exporter(
            "OTEL_METRICS_EXPORTER",
            get("OTEL_METRICS_EXPORTER"),
            &["otlp", "prometheus"],
        )?;
        let traces_transport = otlp::transport(&get, Signal::Traces)?;
        let metrics_transport = otlp::transport(&get, Signal::Metrics)?;
        let traces_endpoint = otlp::endpoint(&get, Signal::Traces, traces_transport.protocol)?;
        let metrics_endpoint = otlp::endpoint(&get, Signal::Metrics, metrics_transport.protocol)?;
        // Quiet by default: with no collector configured nothing is exported (a worker with no
        // collector would otherwise log an export error every few seconds). An explicit
        // `OTEL_*_EXPORTER=otlp` exports to the protocol's default endpoint.
        let traces = !disabled && traces.unwrap_or(traces_endpoint.is_some());
        let otlp_metrics = !disabled && otlp_metrics.unwrap_or(metrics_endpoint.is_some());
        let resource_attributes = get("OTEL_RESOURCE_ATTRIBUTES")
            .map(parse_resource_attributes)
            .unwrap_or_default();
        let service_name = get("OTEL_SERVICE_NAME")
            .map(str::to_owned)
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(key, _)| key == "service.name")
                    .map(|(_, value)| value.clone())
            })
            .unwrap_or_else(|| service_name.to_owned());
        let log_format = match get("JETQ_LOG_FORMAT")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("human") | Some("text") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "JETQ_LOG_FORMAT",
                    format!("{other:?} is not a log format; use human or json"),
                ))
            }
        };
        let health_listen = get("JETQ_HEALTH_LISTEN")
            .unwrap_or(DEFAULT_HEALTH_LISTEN)
            .parse::<SocketAddr>()
            .map_err(|err| {
                invalid(
                    "JETQ_HEALTH_LISTEN",
                    format!("not a socket address ({err}); expected e.g. 0.0.0.0:8459"),
                )
            })?;
        Ok(TelemetryConfig {
            service_name,
            resource_attributes,
            traces,
            otlp_metrics,
            traces_endpoint,
            metrics_endpoint,
            traces_transport,
            metrics_transport,
            log_format,
            log_filter: get("RUST_LOG").unwrap_or(log_filter).to_owned(),
            trace_filter: get("JETQ_TRACE_FILTER").unwrap_or("info").to_owned(),
            health_listen,
        })
    }

    /// A configuration for tests and embedding: human logs at `log_filter`, no OTLP export,
    /// health server on an ephemeral loopback port.
    pub fn local(service_name: &str, log_filter: &str) -> Self {
        TelemetryConfig {
            service_name: service_name.to_owned(),
            resource_attributes: Vec::new(),
            traces: false,
            otlp_metrics: false,
            traces_endpoint: None,
            metrics_endpoint: None,
            traces_transport: OtlpTransport::default(),
            metrics_transport: OtlpTransport::default(),
            log_format: LogFormat::Human,
            log_filter: log_filter.to_owned(),
            trace_filter: "info".to_owned(),
            health_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        problem: problem.into(),
    }
}

fn parse_bool(field: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(invalid(field, format!("{other:?} is not true or false"))),
    }
}

/// Whether an `OTEL_*_EXPORTER` list asks for OTLP export (`None` when unset: then an
/// endpoint decides): `none` turns it off, other supported names are accepted, anything else is
/// an error rather than silently exporting nothing.
fn exporter(
    field: &'static str,
    value: Option<&str>,
    supported: &[&str],
) -> Result<Option<bool>, ConfigError> {
    let Some(list) = value else { return Ok(None) };
    let items: Vec<String> = list
        .split(',')
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect();
    if items.iter().any(|item| item == "none") {
        return Ok(Some(false));
    }
    for item in &items {
        if !supported.contains(&item.as_str()) {
            return Err(invalid(
                field,
                format!(
                    "{item:?} is not supported; use {} or none",
                    supported.join(", ")
                ),
            ));
        }
    }
    Ok(Some(items.iter().any(|item| item == "otlp")))
}

/// `key1=value1,key2=value2` with percent-encoded values, as the OpenTelemetry spec defines it.
fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

/// `%XX` escapes decoded (a malformed one is kept as written), invalid UTF-8 replaced.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OtlpProtocol;

    fn config(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        TelemetryConfig::from_env_iter(
            "jetq-worker",
            "info",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_export_nothing_without_a_collector() {
        let c = config(&[]).unwrap();
        assert_eq!(c.service_name, "jetq-worker");
        assert!(!c.traces && !c.otlp_metrics, "no endpoint: no OTLP export");
        assert_eq!(c.traces_endpoint, None);
        assert_eq!(c.log_format, LogFormat::Human);
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.health_listen.to_string(), "0.0.0.0:8459");
        // An explicit exporter uses the SDK's default endpoint.
        let c = config(&[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap();
        assert!(c.traces && !c.otlp_metrics);
        assert_eq!(c.traces_endpoint, None, "the SDK's default endpoint");
        let c = config(&[("OTEL_METRICS_EXPORTER", "otlp")]).unwrap();
        assert!(!c.traces && c.otlp_metrics);
        // A per-signal endpoint turns on that signal only.
        let c = config(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://t:4318/v1/traces",
        )])
        .unwrap();
        assert!(c.traces && !c.otlp_metrics);
    }

    #[test]
    fn switches_and_endpoints() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let c = config(&[endpoint]).unwrap();
        assert!(c.traces && c.otlp_metrics, "an endpoint turns export on");
        let c = config(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap();
        assert!(!c.traces && !c.otlp_metrics);
        let c = config(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap();
        assert!(!c.traces && c.otlp_metrics);
        let c = config(&[endpoint, ("OTEL_METRICS_EXPORTER", "prometheus")]).unwrap();
        assert!(c.traces && !c.otlp_metrics);
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9000/x"),
        ])
        .unwrap();
        assert_eq!(
            c.traces_endpoint.as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(c.metrics_endpoint.as_deref(), Some("http://m:9000/x"));
        let c = config(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=shop%20web,team=a")]).unwrap();
        assert_eq!(c.service_name, "shop web");
        assert_eq!(c.resource_attributes.len(), 2);
        let c = config(&[("RUST_LOG", "debug"), ("JETQ_HEALTH_LISTEN", "127.0.0.1:0")]).unwrap();
        assert_eq!(c.log_filter, "debug");
        assert_eq!(c.health_listen.port(), 0);
    }

    #[test]
    fn errors_name_the_variable() {
        for (pairs, field) in [
            (
                vec![("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "api-key")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (vec![("OTEL_SDK_DISABLED", "yes")], "OTEL_SDK_DISABLED"),
            (vec![("JETQ_LOG_FORMAT", "xml")], "JETQ_LOG_FORMAT"),
            (vec![("JETQ_HEALTH_LISTEN", "9090")], "JETQ_HEALTH_LISTEN"),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "grpc://c:4317")],
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            ),
        ] {
            let err = config(&pairs).unwrap_err();
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn https_and_grpc_endpoints_for_a_vendor() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.vendor.example"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k%2Cey"),
        ])
        .unwrap();
        assert!(c.traces && c.otlp_metrics);
        assert_eq!(
            c.traces_endpoint.as_deref(),
            Some("https://otlp.vendor.example"),
            "gRPC: the base URL as given"
        );
        assert_eq!(c.traces_transport.protocol, OtlpProtocol::Grpc);
        assert_eq!(c.metrics_transport.protocol, OtlpProtocol::Grpc);
        assert_eq!(
            c.metrics_transport.headers,
            [("x-api-key".to_owned(), "k,ey".to_owned())]
        );
        let c = config(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://otlp.vendor.example/otlp/",
        )])
        .unwrap();
        assert_eq!(
            c.metrics_endpoint.as_deref(),
            Some("https://otlp.vendor.example/otlp/v1/metrics")
        );
        assert_eq!(c.metrics_transport.protocol, OtlpProtocol::HttpProtobuf);
        // No endpoint but an explicit exporter: the protocol's default endpoint.
        let c = config(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ])
        .unwrap();
        assert!(c.traces && c.traces_endpoint.is_none());
        assert_eq!(c.traces_transport.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Cc"), "a b,c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
