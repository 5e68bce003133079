//! How each signal reaches its OTLP receiver: protocol (`grpc` or `http/protobuf`), request
//! headers (a vendor's API key), the CA certificate that signs an `https://` receiver, and the
//! request timeout — read from the standard `OTEL_EXPORTER_OTLP_*` variables.
//!
//! jetq reads these itself rather than leaving them to the SDK so that a bad value stops the
//! process at startup with a message naming the variable (the SDK silently skips a header it
//! cannot parse and falls back to a default protocol), and so that the values can come from a
//! test's variables instead of the process environment.

use std::{fmt, path::PathBuf, time::Duration};

use jetq_contract::ConfigError;

/// The OTLP protocol one signal is exported with (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default): one POST per batch to `<endpoint>/v1/traces` or
    /// `/v1/metrics`; collectors listen on port 4318.
    #[default]
    HttpProtobuf,
    /// `grpc`: the OTLP gRPC services over HTTP/2; collectors listen on port 4317.
    Grpc,
}

impl OtlpProtocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` that selects it.
    pub fn name(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }

    /// The endpoint used when none is configured, as the OpenTelemetry spec defines it.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http://localhost:4318",
            OtlpProtocol::Grpc => "http://localhost:4317",
        }
    }

    fn parse(variable: &'static str, value: &str) -> Result<Self, ConfigError> {
        match value.to_ascii_lowercase().as_str() {
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            "grpc" => Ok(OtlpProtocol::Grpc),
            _ => Err(invalid(
                variable,
                format!(
                    "{value:?} is not an OTLP protocol jetq exports; write grpc (port 4317) or \
                     http/protobuf (port 4318, the default); http/json is not built in"
                ),
            )),
        }
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A PEM file of CA certificates to trust for an `https://` receiver, and the variable that
/// named it (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFile {
    /// The file, as given.
    pub path: PathBuf,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` or its per-signal form.
    pub variable: &'static str,
}

/// How one signal is sent: everything but the endpoint.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct OtlpTransport {
    /// `grpc` or `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// Request headers (gRPC metadata), values percent-decoded, e.g. a vendor's API key.
    pub headers: Vec<(String, String)>,
    /// CA certificates trusted for `https://` besides the system's roots.
    pub certificate: Option<CertificateFile>,
    /// Per-export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, milliseconds); `None`: the SDK's 10 s.
    pub timeout: Option<Duration>,
}

/// Header values are API keys: only their names are shown.
impl fmt::Debug for OtlpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OtlpTransport")
            .field("protocol", &self.protocol)
            .field("headers", &names)
            .field("certificate", &self.certificate)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The two exported signals and the names of their variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Traces,
    Metrics,
}

/// One setting's general and per-signal variable.
struct Variables {
    general: &'static str,
    traces: &'static str,
    metrics: &'static str,
}

const PROTOCOL: Variables = Variables {
    general: "OTEL_EXPORTER_OTLP_PROTOCOL",
    traces: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
};
const HEADERS: Variables = Variables {
    general: "OTEL_EXPORTER_OTLP_HEADERS",
    traces: "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
};
const CERTIFICATE: Variables = Variables {
    general: "OTEL_EXPORTER_OTLP_CERTIFICATE",
    traces: "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
};
const TIMEOUT: Variables = Variables {
    general: "OTEL_EXPORTER_OTLP_TIMEOUT",
    traces: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
};
const ENDPOINT: Variables = Variables {
    general: "OTEL_EXPORTER_OTLP_ENDPOINT",
    traces: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    metrics: "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
};

impl Signal {
    /// The path appended to `OTEL_EXPORTER_OTLP_ENDPOINT` for OTLP/HTTP.
    fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "v1/traces",
            Signal::Metrics => "v1/metrics",
        }
    }

    fn variable(self, variables: &Variables) -> &'static str {
        match self {
            Signal::Traces => variables.traces,
            Signal::Metrics => variables.metrics,
        }
    }
}

/// The per-signal variable when set, else the general one; with the name of the one used.
fn lookup<'a>(
    get: &dyn Fn(&str) -> Option<&'a str>,
    signal: Signal,
    variables: &Variables,
) -> Option<(&'static str, &'a str)> {
    let specific = signal.variable(variables);
    get(specific)
        .map(|value| (specific, value))
        .or_else(|| get(variables.general).map(|value| (variables.general, value)))
}

/// Reads one signal's transport from the variables `get` returns (trimmed, non-empty).
pub(crate) fn transport<'a>(
    get: &dyn Fn(&str) -> Option<&'a str>,
    signal: Signal,
) -> Result<OtlpTransport, ConfigError> {
    let protocol = match lookup(get, signal, &PROTOCOL) {
        Some((variable, value)) => OtlpProtocol::parse(variable, value)?,
        None => OtlpProtocol::default(),
    };
    let headers = match lookup(get, signal, &HEADERS) {
        Some((variable, value)) => parse_headers(variable, value)?,
        None => Vec::new(),
    };
    let certificate = lookup(get, signal, &CERTIFICATE).map(|(variable, path)| CertificateFile {
        path: PathBuf::from(path),
        variable,
    });
    let timeout = match lookup(get, signal, &TIMEOUT) {
        Some((variable, value)) => Some(Duration::from_millis(value.parse().map_err(|_| {
            invalid(
                variable,
                format!("{value:?} is not a number of milliseconds; write e.g. 10000"),
            )
        })?)),
        None => None,
    };
    Ok(OtlpTransport {
        protocol,
        headers,
        certificate,
        timeout,
    })
}

/// The configured endpoint of one signal (`None`: the protocol's default), checked to be an
/// `http://` or `https://` URL. The per-signal variable is used as given; the general one gets
/// `/v1/traces` or `/v1/metrics` appended for OTLP/HTTP and is used as given for gRPC (whose
/// paths are the service's method names).
pub(crate) fn endpoint<'a>(
    get: &dyn Fn(&str) -> Option<&'a str>,
    signal: Signal,
    protocol: OtlpProtocol,
) -> Result<Option<String>, ConfigError> {
    let Some((variable, url)) = lookup(get, signal, &ENDPOINT) else {
        return Ok(None);
    };
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(
        scheme.map(str::to_ascii_lowercase).as_deref(),
        Some("http" | "https")
    ) {
        return Err(invalid(
            variable,
            format!(
                "{url:?} is neither an http:// nor an https:// URL; write e.g. \
                 http://otel-collector:4318 (a collector next to the process) or \
                 https://otlp.vendor.example (a vendor's OTLP endpoint)"
            ),
        ));
    }
    let general = variable == ENDPOINT.general;
    Ok(Some(match protocol {
        OtlpProtocol::HttpProtobuf if general => {
            format!("{}/{}", url.trim_end_matches('/'), signal.http_path())
        }
        _ => url.to_owned(),
    }))
}

/// `key1=value1,key2=value2`, values percent-decoded (the W3C baggage format the OpenTelemetry
/// spec prescribes for `OTEL_EXPORTER_OTLP_HEADERS`). Each name and value must be usable as an
/// HTTP header (and gRPC metadata, whose names are lowercase ASCII).
fn parse_headers(variable: &'static str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let example = "write name=value pairs separated by commas, values percent-encoded, e.g. \
                   api-key=abc123,authorization=Bearer%20abc123";
    let mut headers = Vec::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(invalid(variable, format!("{pair:?} has no '='; {example}")));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = percent_decode(value.trim()).ok_or_else(|| {
            invalid(
                variable,
                format!("the value of {name:?} is not valid percent-encoded UTF-8; {example}"),
            )
        })?;
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(
                variable,
                format!("{name:?} is not a header name; {example}"),
            ));
        }
        if axum::http::HeaderValue::from_str(&value).is_err() {
            return Err(invalid(
                variable,
                format!(
                    "the value of {name:?} has characters a header cannot carry (control \
                     characters or non-ASCII); {example}"
                ),
            ));
        }
        headers.push((name, value));
    }
    Ok(headers)
}

/// Decodes `%XX` escapes; `None` when an escape is malformed or the result is not UTF-8.
/// (`percent-encoding` keeps a malformed escape as written; a header value with one is refused
/// instead, so the check comes first.)
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, byte)| {
        *byte != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with<'a>(vars: &'a HashMap<&'a str, &'a str>) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| vars.get(name).copied()
    }

    #[test]
    fn per_signal_variables_win_over_the_general_ones() {
        let vars = HashMap::from([
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=general"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=traces"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]);
        let get = with(&vars);
        let traces = transport(&get, Signal::Traces).unwrap();
        let metrics = transport(&get, Signal::Metrics).unwrap();
        assert_eq!(traces.protocol, OtlpProtocol::Grpc);
        assert_eq!(metrics.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(traces.headers, [("api-key".into(), "traces".into())]);
        assert_eq!(metrics.headers, [("api-key".into(), "general".into())]);
        let certificate = metrics.certificate.unwrap();
        assert_eq!(certificate.path, PathBuf::from("/etc/ca.pem"));
        assert_eq!(certificate.variable, "OTEL_EXPORTER_OTLP_CERTIFICATE");
        assert_eq!(traces.timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn headers_are_percent_decoded_and_their_values_never_debug_printed() {
        let headers = parse_headers(
            "OTEL_EXPORTER_OTLP_HEADERS",
            " Authorization = Bearer%20s3cr3t%3D%3D , x-team=shop,,",
        )
        .unwrap();
        assert_eq!(
            headers,
            [
                ("authorization".to_owned(), "Bearer s3cr3t==".to_owned()),
                ("x-team".to_owned(), "shop".to_owned()),
            ]
        );
        let transport = OtlpTransport {
            headers,
            ..OtlpTransport::default()
        };
        let printed = format!("{transport:?}");
        assert!(printed.contains("authorization"), "{printed}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
    }

    #[test]
    fn bad_headers_name_the_variable_and_the_format() {
        for (text, says) in [
            ("api-key", "has no '='"),
            ("api key=1", "is not a header name"),
            ("api-key=%zz", "percent-encoded"),
            ("api-key=a%0Ab", "cannot carry"),
        ] {
            let err = parse_headers("OTEL_EXPORTER_OTLP_TRACES_HEADERS", text)
                .unwrap_err()
                .to_string();
            assert!(err.contains("OTEL_EXPORTER_OTLP_TRACES_HEADERS"), "{err}");
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.contains("api-key=abc123"), "{err}");
        }
    }

    #[test]
    fn grpc_uses_the_general_endpoint_as_given_and_http_appends_the_signal_path() {
        let vars = HashMap::from([("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example:443/")]);
        let get = with(&vars);
        assert_eq!(
            endpoint(&get, Signal::Traces, OtlpProtocol::Grpc).unwrap(),
            Some("https://otlp.example:443/".to_owned())
        );
        assert_eq!(
            endpoint(&get, Signal::Metrics, OtlpProtocol::HttpProtobuf).unwrap(),
            Some("https://otlp.example:443/v1/metrics".to_owned())
        );
        let vars = HashMap::from([("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "HTTPS://t.example/x")]);
        let get = with(&vars);
        assert_eq!(
            endpoint(&get, Signal::Traces, OtlpProtocol::HttpProtobuf).unwrap(),
            Some("HTTPS://t.example/x".to_owned()),
            "a per-signal URL is used as given"
        );
        assert_eq!(
            OtlpProtocol::Grpc.default_endpoint(),
            "http://localhost:4317"
        );
        assert_eq!(
            OtlpProtocol::HttpProtobuf.default_endpoint(),
            "http://localhost:4318"
        );
    }

    #[test]
    fn bad_protocols_timeouts_and_schemes_name_the_variable_and_what_to_write() {
        let vars = HashMap::from([("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")]);
        let err = transport(&with(&vars), Signal::Metrics)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"), "{err}");
        assert!(
            err.contains("write grpc") && err.contains("http/protobuf"),
            "{err}"
        );
        let vars = HashMap::from([("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]);
        let err = transport(&with(&vars), Signal::Traces)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{err}");
        assert!(err.contains("milliseconds"), "{err}");
        for url in ["collector:4317", "grpc://collector:4317", "ftp://c"] {
            let vars = HashMap::from([("OTEL_EXPORTER_OTLP_ENDPOINT", url)]);
            let err = endpoint(&with(&vars), Signal::Traces, OtlpProtocol::Grpc)
                .unwrap_err()
                .to_string();
            assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
            assert!(err.contains("neither an http:// nor an https://"), "{err}");
        }
    }
}
