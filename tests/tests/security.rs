//! Authentication and TLS against nats-servers configured for each method: token,
//! user/password, nkey, TLS and mutual TLS (certificates generated at test time). Wrong
//! credentials give a clear error that never contains the secret.

use std::path::{Path, PathBuf};

use jetq_contract::{ConnectError, ConnectionConfig, Secret};
use jetq_producer::{Producer, ProducerError};
use jetq_tests::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

async fn connect(config: ConnectionConfig) -> Result<Producer, ProducerError> {
    let config = ConnectionConfig {
        connect_timeout: std::time::Duration::from_secs(2),
        ..config
    };
    within(
        WAIT,
        "connect",
        Producer::builder().connection(config).connect(),
    )
    .await
}

/// Asserts the producer works end to end: enqueue is acknowledged.
async fn assert_enqueues(producer: &Producer) {
    let enqueued = producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .expect("enqueue");
    assert!(enqueued.sequence >= 1);
}

/// Asserts an authentication failure that names the problem and hides the secret.
fn assert_auth_error(result: Result<Producer, ProducerError>, secret: &str) {
    match result {
        Err(ProducerError::Connect(err @ ConnectError::Connect { .. })) => {
            let text = err.to_string();
            assert!(
                text.to_lowercase().contains("auth"),
                "should say authorization failed: {text}"
            );
            assert!(
                !text.contains(secret),
                "the secret leaked into the error: {text}"
            );
            assert!(
                !format!("{err:?}").contains(secret),
                "the secret leaked into Debug: {err:?}"
            );
        }
        Err(other) => panic!("expected an authentication error, got {other}"),
        Ok(_) => panic!("a wrong credential must be refused"),
    }
}

#[tokio::test]
async fn token_authentication() {
    let server = NatsServer::builder()
        .extra_config("authorization { token: \"t0ken-right\" }")
        .start()
        .await;
    let good = ConnectionConfig {
        nats_token: Some(Secret::new("t0ken-right")),
        ..ConnectionConfig::with_url(server.url())
    };
    assert_enqueues(&connect(good).await.expect("right token")).await;
    let bad = ConnectionConfig {
        nats_token: Some(Secret::new("t0ken-wrong")),
        ..ConnectionConfig::with_url(server.url())
    };
    assert_auth_error(connect(bad).await, "t0ken-wrong");
}

#[tokio::test]
async fn user_password_authentication() {
    let server = NatsServer::builder()
        .extra_config("authorization { user: app, password: \"pa55-right\" }")
        .start()
        .await;
    let with = |password: &str| ConnectionConfig {
        nats_user: Some("app".into()),
        nats_password: Some(Secret::new(password)),
        ..ConnectionConfig::with_url(server.url())
    };
    assert_enqueues(&connect(with("pa55-right")).await.expect("right password")).await;
    assert_auth_error(connect(with("pa55-wrong")).await, "pa55-wrong");
}

#[tokio::test]
async fn nkey_authentication() {
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let server = NatsServer::builder()
        .extra_config(format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}",
            user.public_key()
        ))
        .start()
        .await;
    let with = |seed: String| ConnectionConfig {
        nats_nkey_seed: Some(Secret::new(seed)),
        ..ConnectionConfig::with_url(server.url())
    };
    assert_enqueues(
        &connect(with(user.seed().unwrap()))
            .await
            .expect("known nkey"),
    )
    .await;
    let stranger_seed = stranger.seed().unwrap();
    assert_auth_error(connect(with(stranger_seed.clone())).await, &stranger_seed);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, written as PEM files.
struct Pki {
    _dir: tempfile_dir::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

mod tempfile_dir {
    /// A directory removed on drop (std only, to keep test dependencies small).
    pub(crate) struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!(
        "jetq-pki-{}-{}",
        std::process::id(),
        jetq_harness::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "jetq test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key_pem) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "nats test server",
    );
    let (client_pem, client_key_pem) = leaf(vec!["jetq-worker".into()], "jetq-worker");
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server_pem),
        server_key: write("server-key.pem", server_key_pem),
        client_cert: write("client.pem", client_pem),
        client_key: write("client-key.pem", client_key_pem),
        _dir: tempfile_dir::TempDir(dir),
    }
}

fn tls_block(pki: &Pki, verify_clients: bool) -> String {
    let quote = |p: &Path| format!("\"{}\"", p.display());
    let mut block = format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n",
        quote(&pki.server_cert),
        quote(&pki.server_key)
    );
    if verify_clients {
        block.push_str(&format!("  ca_file: {}\n  verify: true\n", quote(&pki.ca)));
    }
    block.push_str("}\n");
    block
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let pki = pki();
    let server = NatsServer::builder()
        .extra_config(tls_block(&pki, false))
        .start()
        .await;
    let url = format!("tls://127.0.0.1:{}", server.port());
    let trusted = ConnectionConfig {
        nats_tls_ca: Some(pki.ca.clone()),
        ..ConnectionConfig::with_url(url.clone())
    };
    assert_enqueues(&connect(trusted).await.expect("TLS with the CA")).await;
    // Without the CA the server's certificate is not trusted.
    let untrusted = connect(ConnectionConfig::with_url(url)).await;
    assert!(
        matches!(
            untrusted,
            Err(ProducerError::Connect(ConnectError::Connect { .. }))
        ),
        "an unknown CA must be refused"
    );
}

#[tokio::test]
async fn mutual_tls_requires_the_client_certificate() {
    let pki = pki();
    let server = NatsServer::builder()
        .extra_config(tls_block(&pki, true))
        .start()
        .await;
    let url = format!("tls://127.0.0.1:{}", server.port());
    let with_cert = ConnectionConfig {
        nats_tls_ca: Some(pki.ca.clone()),
        nats_tls_cert: Some(pki.client_cert.clone()),
        nats_tls_key: Some(pki.client_key.clone()),
        ..ConnectionConfig::with_url(url.clone())
    };
    assert_enqueues(
        &connect(with_cert)
            .await
            .expect("mTLS with a client certificate"),
    )
    .await;
    let without_cert = ConnectionConfig {
        nats_tls_ca: Some(pki.ca.clone()),
        ..ConnectionConfig::with_url(url)
    };
    let refused = connect(without_cert).await;
    assert!(
        matches!(
            refused,
            Err(ProducerError::Connect(ConnectError::Connect { .. }))
        ),
        "a client without a certificate must be refused"
    );
}
