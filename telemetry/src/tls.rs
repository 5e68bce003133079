//! What an `https://` OTLP receiver is trusted by: the system's root certificates (as
//! `rustls-native-certs` finds them: `SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's
//! bundle) plus the CA certificates of `OTEL_EXPORTER_OTLP_CERTIFICATE`, for a receiver signed
//! by a private CA. Both transports use the same roots and the same crypto provider (ring,
//! which jetq already links through the NATS client).

use jetq_contract::ConfigError;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer},
    RootCertStore,
};

use crate::{otlp::OtlpTransport, TelemetryError};

/// The roots an `https://` receiver of `signal` is checked against.
pub(crate) fn roots(
    signal: &'static str,
    transport: &OtlpTransport,
) -> Result<RootCertStore, TelemetryError> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(native.certs);
    if let Some(file) = &transport.certificate {
        let unusable = |problem: String| {
            TelemetryError::Config(ConfigError::Invalid {
                field: file.variable,
                problem: format!(
                    "{problem}; write the path of a PEM file holding the CA certificate(s) that \
                     signed the receiver's certificate"
                ),
            })
        };
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&file.path)
            .and_then(|certificates| certificates.collect::<Result<_, _>>())
            .map_err(|err| unusable(format!("cannot read {}: {err}", file.path.display())))?;
        if certificates.is_empty() {
            return Err(unusable(format!(
                "{} holds no PEM certificate",
                file.path.display()
            )));
        }
        for certificate in certificates {
            store.add(certificate).map_err(|err| {
                unusable(format!(
                    "{} holds a certificate that is not a usable CA certificate ({err})",
                    file.path.display()
                ))
            })?;
        }
    }
    if store.is_empty() {
        return Err(TelemetryError::Exporter {
            signal,
            message: "no certificate to check the https:// receiver against: the system has \
                      no root certificates (install the ca-certificates package, or set \
                      SSL_CERT_FILE) and OTEL_EXPORTER_OTLP_CERTIFICATE is not set"
                .into(),
        });
    }
    Ok(store)
}
