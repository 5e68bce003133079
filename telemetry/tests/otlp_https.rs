//! OTLP/HTTP (protobuf) export to an `https://` receiver through jetq's telemetry set-up: a
//! receiver signed by a private CA trusted through `OTEL_EXPORTER_OTLP_CERTIFICATE`, the same
//! receiver untrusted, and certificate files that cannot be used.

mod common;

use common::{export, logs, span_names, within, Exporting, HttpsReceiver, Pki};
use jetq_telemetry::{Telemetry, TelemetryConfig, TelemetryError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_reaches_an_https_receiver_signed_by_a_private_ca_with_the_headers() {
    let pki = Pki::new();
    let mut receiver = HttpsReceiver::start(&pki).await;
    export(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca_path()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20t0k%25en",
            ),
            ("OTEL_METRICS_EXPORTER", "none"),
        ],
        |_| tracing::info_span!("https export test").in_scope(|| {}),
    )
    .await;
    let spans = within(10, "the span at the https receiver", receiver.spans.recv())
        .await
        .expect("a trace export");
    assert_eq!(span_names(&spans.request), ["https export test"]);
    assert_eq!(
        spans.headers["authorization"], "Bearer t0k%en",
        "percent-decoded once, a literal % kept"
    );
    assert_eq!(spans.headers["content-type"], "application/x-protobuf");
    assert!(
        receiver.handshake_errors.try_recv().is_err(),
        "the handshake succeeded"
    );
    let warnings = logs().warnings_about(&receiver.endpoint);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_signed_by_an_unknown_ca_is_refused_and_reported_once() {
    let pki = Pki::new();
    let mut receiver = HttpsReceiver::start(&pki).await;
    let exporting = Exporting::new(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            &format!("{}/v1/traces", receiver.endpoint),
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1000"),
    ]);
    for n in 0..3 {
        exporting
            .record_and_flush(|_| tracing::info_span!("refused", n).in_scope(|| {}))
            .await;
    }
    exporting.shut_down().await;
    // The exporter attempted TLS and refused the receiver's certificate.
    let refused = within(5, "the refused handshake", receiver.handshake_errors.recv())
        .await
        .expect("a handshake");
    assert!(
        refused.to_ascii_lowercase().contains("unknown"),
        "the client refused an unknown CA: {refused}"
    );
    assert!(receiver.spans.try_recv().is_err(), "nothing exported");
    let text = logs().text();
    let warnings = logs().warnings_about(&receiver.endpoint);
    assert_eq!(warnings.len(), 1, "one warning for the outage:\n{text}");
    assert!(
        warnings[0].contains("UnknownIssuer"),
        "the warning says why: {text}"
    );
    assert!(
        warnings[0].contains("cannot export to the OpenTelemetry collector"),
        "{text}"
    );
    assert!(!text.contains("Export.Failed"), "{text}");
}

fn build(pairs: &[(&str, &str)]) -> Result<Telemetry, TelemetryError> {
    let config = TelemetryConfig::from_env_iter("jetq-test", "info", common::vars(pairs))
        .expect("the variables parse; the file is read when the exporter is built");
    Telemetry::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_certificate_file_stops_startup_naming_the_variable() {
    let pki = Pki::new();
    let not_pem = pki.ca_file.with_file_name("not.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let missing = pki.ca_file.with_file_name("missing.pem");
    for (path, says) in [
        (missing.to_str().unwrap(), "cannot read"),
        (not_pem.to_str().unwrap(), "holds no PEM certificate"),
    ] {
        for protocol in ["http/protobuf", "grpc"] {
            let err = build(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:1"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", path),
                ("OTEL_TRACES_EXPORTER", "none"),
            ])
            .expect_err("an unusable certificate file is refused")
            .to_string();
            assert!(
                err.contains("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE"),
                "{err}"
            );
            assert!(err.contains(says), "{protocol}: {err}");
            assert!(err.contains("PEM file"), "says what to write: {err}");
        }
    }
    // An http:// receiver does not use the certificate: nothing to refuse.
    build(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", missing.to_str().unwrap()),
    ])
    .expect("http:// ignores the certificate");
}
