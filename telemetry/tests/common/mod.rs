//! In-process OTLP receivers for the transport tests: an OTLP/gRPC server (the generated tonic
//! service traits of `opentelemetry-proto`, optionally over TLS) and an OTLP/HTTP server over
//! TLS (axum behind tokio-rustls), with a private CA made at test time by `rcgen`.

#![allow(dead_code, unreachable_pub)] // a module of each test binary, each using part of it

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post, Router};
use jetq_telemetry::{Telemetry, TelemetryConfig, DEFAULT_LOG_FILTER};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
};
use prost::Message;
use tokio::sync::mpsc;
use tracing_subscriber::fmt::MakeWriter;

/// Waits for `future`, failing the test loudly after `seconds`.
pub async fn within<T>(
    seconds: u64,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {seconds} s waiting for {what}"))
}

/// Variables for `TelemetryConfig::from_env_iter`.
pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Log lines of the test process. The exporters run on the SDK's own threads and log through
/// the global dispatcher, so every test logs here; a test picks its lines out by its
/// receiver's endpoint (each has its own port).
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The warnings that mention `needle` (a receiver's endpoint).
    pub fn warnings_about(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains("WARN") && line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// The process's log buffer, behind jetq's own log layer (as `Telemetry::install` sets it up,
/// with the binaries' default filter) installed as the global dispatcher on first use.
pub fn logs() -> LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let telemetry = Telemetry::new(TelemetryConfig::local("jetq-test", DEFAULT_LOG_FILTER))
            .expect("local telemetry");
        let dispatch = telemetry.dispatch_with(logs.clone(), false).unwrap();
        tracing::dispatcher::set_global_default(dispatch).expect("the only global dispatcher");
        logs
    })
    .clone()
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

/// A private CA and a server certificate it signed for `127.0.0.1`, as PEM (the CA also as a
/// file, for `OTEL_EXPORTER_OTLP_CERTIFICATE`).
pub struct Pki {
    pub ca_file: PathBuf,
    pub server_cert: String,
    pub server_key: String,
    dir: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "jetq telemetry test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "otlp receiver");
        let server_cert = params.signed_by(&server_key, &issuer).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "jetq-telemetry-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        Pki {
            ca_file,
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            dir,
        }
    }

    pub fn ca_path(&self) -> &str {
        self.ca_file.to_str().unwrap()
    }

    fn rustls_server_config(&self) -> tokio_rustls::rustls::ServerConfig {
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(self.server_cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.server_key.as_bytes()).unwrap();
        tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One export as the receiver saw it: its headers (gRPC metadata) and its decoded request.
#[derive(Debug)]
pub struct Received<T> {
    pub headers: HeaderMap,
    pub request: T,
}

/// An OTLP/gRPC receiver (trace and metrics services) on a free loopback port.
pub struct GrpcReceiver {
    /// `http://127.0.0.1:<port>` or `https://…` with TLS.
    pub endpoint: String,
    pub spans: mpsc::UnboundedReceiver<Received<ExportTraceServiceRequest>>,
    pub metrics: mpsc::UnboundedReceiver<Received<ExportMetricsServiceRequest>>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct GrpcServices {
    spans: mpsc::UnboundedSender<Received<ExportTraceServiceRequest>>,
    metrics: mpsc::UnboundedSender<Received<ExportMetricsServiceRequest>>,
}

#[tonic::async_trait]
impl TraceService for GrpcServices {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        let _ = self.spans.send(Received {
            headers,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcServices {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        let _ = self.metrics.send(Received {
            headers,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl GrpcReceiver {
    /// Starts the receiver in a task of the current runtime; over TLS with `pki`'s server
    /// certificate when given.
    pub async fn start(pki: Option<&Pki>) -> GrpcReceiver {
        let (spans_tx, spans) = mpsc::unbounded_channel();
        let (metrics_tx, metrics) = mpsc::unbounded_channel();
        let services = GrpcServices {
            spans: spans_tx,
            metrics: metrics_tx,
        };
        let incoming =
            tonic::transport::server::TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .expect("gRPC receiver binds");
        let addr = incoming.local_addr().expect("gRPC receiver address");
        let mut server = tonic::transport::Server::builder();
        let scheme = match pki {
            Some(pki) => {
                let identity =
                    tonic::transport::Identity::from_pem(&pki.server_cert, &pki.server_key);
                server = server
                    .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                    .expect("gRPC receiver TLS");
                "https"
            }
            None => "http",
        };
        let router = server
            .add_service(TraceServiceServer::new(services.clone()))
            .add_service(MetricsServiceServer::new(services));
        let server = tokio::spawn(async move {
            let _ = router.serve_with_incoming(incoming).await;
        });
        GrpcReceiver {
            endpoint: format!("{scheme}://{addr}"),
            spans,
            metrics,
            _server: server,
        }
    }
}

/// An OTLP/HTTP receiver over TLS (`/v1/traces`) on a free loopback port, reporting failed
/// handshakes too.
pub struct HttpsReceiver {
    /// `https://127.0.0.1:<port>`.
    pub endpoint: String,
    pub spans: mpsc::UnboundedReceiver<Received<ExportTraceServiceRequest>>,
    /// Why each refused TLS handshake failed, as the server saw it.
    pub handshake_errors: mpsc::UnboundedReceiver<String>,
    _server: tokio::task::JoinHandle<()>,
}

impl HttpsReceiver {
    pub async fn start(pki: &Pki) -> HttpsReceiver {
        let (spans_tx, spans) = mpsc::unbounded_channel();
        let (errors_tx, handshake_errors) = mpsc::unbounded_channel();
        let router = Router::new()
            .route("/v1/traces", post(receive_spans))
            .with_state(spans_tx);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.rustls_server_config()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("https receiver binds");
        let addr = listener.local_addr().expect("https receiver address");
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let router = router.clone();
                let errors = errors_tx.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(err) => {
                            let _ = errors.send(err.to_string());
                            return;
                        }
                    };
                    let service = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HttpsReceiver {
            endpoint: format!("https://{addr}"),
            spans,
            handshake_errors,
            _server: server,
        }
    }
}

async fn receive_spans(
    State(spans): State<mpsc::UnboundedSender<Received<ExportTraceServiceRequest>>>,
    headers: HeaderMap,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    if let Ok(request) = ExportTraceServiceRequest::decode(body) {
        let _ = spans.send(Received { headers, request });
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// The names of the spans in an export.
pub fn span_names(request: &ExportTraceServiceRequest) -> Vec<String> {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
        .map(|span| span.name.clone())
        .collect()
}

/// The `service.name` of the first resource of an export.
pub fn service_name<'a>(
    resources: impl IntoIterator<Item = &'a opentelemetry_proto::tonic::resource::v1::Resource>,
) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    resources
        .into_iter()
        .flat_map(|resource| &resource.attributes)
        .find(|attribute| attribute.key == "service.name")
        .and_then(
            |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                Value::StringValue(name) => Some(name.clone()),
                _ => None,
            },
        )
}

/// Telemetry built from a test's variables (log filter: the binaries' default), logging to a
/// buffer.
pub struct Exporting {
    telemetry: Arc<Telemetry>,
    dispatch: tracing::Dispatch,
}

impl Exporting {
    pub fn new(pairs: &[(&str, &str)]) -> Exporting {
        let config = TelemetryConfig::from_env_iter("jetq-test", DEFAULT_LOG_FILTER, vars(pairs))
            .expect("valid configuration");
        let telemetry = Arc::new(Telemetry::new(config).expect("exporters build"));
        let dispatch = telemetry.dispatch_with(logs(), false).unwrap();
        Exporting {
            telemetry,
            dispatch,
        }
    }

    /// Runs `record` under the telemetry's dispatcher, then flushes (off the runtime: a
    /// flush blocks until the exporters answer).
    pub async fn record_and_flush(&self, record: impl FnOnce(&Telemetry)) {
        tracing::dispatcher::with_default(&self.dispatch, || record(&self.telemetry));
        let telemetry = self.telemetry.clone();
        within(
            20,
            "the flush",
            tokio::task::spawn_blocking(move || telemetry.flush()),
        )
        .await
        .unwrap()
        .expect("flush reports success (failures are logged, not returned)");
    }

    /// Shuts the exporters down (off the runtime).
    pub async fn shut_down(self) {
        let telemetry = self.telemetry;
        within(
            20,
            "the shutdown",
            tokio::task::spawn_blocking(move || drop(telemetry)),
        )
        .await
        .unwrap();
    }
}

/// [`Exporting`] once: record, flush, shut down.
pub async fn export(pairs: &[(&str, &str)], record: impl FnOnce(&Telemetry)) {
    let exporting = Exporting::new(pairs);
    exporting.record_and_flush(record).await;
    exporting.shut_down().await;
}
