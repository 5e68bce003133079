//! OTLP/gRPC export (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`) through jetq's telemetry set-up, to
//! an in-process gRPC receiver: plain, over TLS with a private CA, and unreachable.

mod common;

use common::{export, logs, service_name, span_names, vars, within, Exporting, GrpcReceiver, Pki};
use jetq_telemetry::{OtlpProtocol, TelemetryConfig};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_and_a_metric_reach_a_grpc_receiver_with_the_configured_headers() {
    let mut receiver = GrpcReceiver::start(None).await;
    let pairs = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=s3cr3t%20key,x-team=shop",
        ),
        ("OTEL_SERVICE_NAME", "jetq-grpc-test"),
    ];
    let config =
        TelemetryConfig::from_env_iter("jetq-test", "info", vars(&pairs)).expect("valid config");
    assert_eq!(config.traces_transport.protocol, OtlpProtocol::Grpc);
    assert_eq!(
        config.traces_endpoint.as_deref(),
        Some(receiver.endpoint.as_str()),
        "gRPC takes the base endpoint as given (no /v1/traces)"
    );
    export(&pairs, |telemetry| {
        tracing::info_span!("grpc export test", jetq.queue = "emails").in_scope(|| {});
        telemetry
            .meter("jetq-test")
            .u64_counter("jetq.test.grpc_exports")
            .build()
            .add(3, &[]);
    })
    .await;

    let spans = within(10, "the span at the gRPC receiver", receiver.spans.recv())
        .await
        .expect("a trace export");
    assert_eq!(span_names(&spans.request), ["grpc export test"]);
    assert_eq!(
        service_name(
            spans
                .request
                .resource_spans
                .iter()
                .filter_map(|r| r.resource.as_ref())
        )
        .as_deref(),
        Some("jetq-grpc-test")
    );
    assert_eq!(spans.headers["x-api-key"], "s3cr3t key", "percent-decoded");
    assert_eq!(spans.headers["x-team"], "shop");

    // Metrics are exported per flush; find the counter (other exports may be empty).
    let value = within(10, "the metric at the gRPC receiver", async {
        loop {
            let export = receiver.metrics.recv().await.expect("a metrics export");
            assert_eq!(export.headers["x-api-key"], "s3cr3t key");
            let found = export
                .request
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .find(|m| m.name == "jetq.test.grpc_exports")
                .cloned();
            if let Some(metric) = found {
                break metric;
            }
        }
    })
    .await;
    let Some(Data::Sum(sum)) = value.data else {
        panic!("a counter is a sum: {value:?}")
    };
    assert_eq!(sum.data_points[0].value, Some(Value::AsInt(3)));
    let warnings = logs().warnings_about(&receiver.endpoint);
    assert!(
        warnings.is_empty(),
        "a reachable receiver: no warning: {warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_reaches_a_grpc_receiver_over_tls_signed_by_a_private_ca() {
    let pki = Pki::new();
    let mut receiver = GrpcReceiver::start(Some(&pki)).await;
    assert!(receiver.endpoint.starts_with("https://"));
    export(
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                receiver.endpoint.as_str(),
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", pki.ca_path()),
        ],
        |_| tracing::info_span!("grpc over tls").in_scope(|| {}),
    )
    .await;
    let spans = within(
        10,
        "the span at the gRPC TLS receiver",
        receiver.spans.recv(),
    )
    .await
    .expect("a trace export");
    assert_eq!(span_names(&spans.request), ["grpc over tls"]);
    let warnings = logs().warnings_about(&receiver.endpoint);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_receiver_signed_by_an_unknown_ca_is_refused_and_reported_once() {
    let pki = Pki::new();
    let mut receiver = GrpcReceiver::start(Some(&pki)).await;
    let pairs = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            receiver.endpoint.as_str(),
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1000"),
    ];
    // Three exports, each refused: the CA is not among the system's roots.
    let exporting = Exporting::new(&pairs);
    for n in 0..3 {
        exporting
            .record_and_flush(|_| tracing::info_span!("refused", n).in_scope(|| {}))
            .await;
    }
    exporting.shut_down().await;
    assert!(
        receiver.spans.try_recv().is_err(),
        "nothing may be exported to an untrusted receiver"
    );
    let text = logs().text();
    let warnings = logs().warnings_about(&receiver.endpoint);
    assert_eq!(warnings.len(), 1, "one warning for the outage:\n{text}");
    assert!(
        warnings[0].contains("cannot export to the OpenTelemetry collector"),
        "{text}"
    );
    assert!(
        warnings[0].contains("UnknownIssuer"),
        "the warning says why: {text}"
    );
    // The exporter's own report of each failed export is left out (no test here fails one
    // otherwise, so any such line is this test's).
    assert!(!text.contains("Export.Failed"), "{text}");
}

#[test]
fn grpc_outside_a_tokio_runtime_is_refused_with_a_message() {
    let config = TelemetryConfig::from_env_iter(
        "jetq-test",
        "info",
        vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]),
    )
    .unwrap();
    let err = jetq_telemetry::Telemetry::new(config)
        .expect_err("the gRPC channel needs a runtime")
        .to_string();
    assert!(err.contains("needs a Tokio runtime"), "{err}");
    assert!(err.contains("http/protobuf"), "says the alternative: {err}");
}
