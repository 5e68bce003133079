//! Tests of the harness itself, against real `nats-server` processes, with raw TCP only.

use std::io::ErrorKind;
use std::time::Duration;

use jetq_harness::{eventually, old_server_binary, pinned_server_binary, NatsServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to a client port and returns the server's first line (`INFO {...}`).
async fn info_line(port: u16) -> String {
    let stream = timeout(IO_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    let mut line = String::new();
    timeout(IO_TIMEOUT, BufReader::new(stream).read_line(&mut line))
        .await
        .expect("reading INFO timed out")
        .expect("reading INFO");
    assert!(
        line.starts_with("INFO {"),
        "unexpected first line: {line:?}"
    );
    line
}

/// A plain HTTP/1.0 GET on the monitoring port; returns the whole response.
async fn http_get(port: u16, path: &str) -> String {
    let mut stream = timeout(IO_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect to monitor port {port}: {e}"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send GET");
    let mut response = String::new();
    timeout(IO_TIMEOUT, stream.read_to_string(&mut response))
        .await
        .expect("reading the HTTP response timed out")
        .expect("reading the HTTP response");
    response
}

async fn assert_refused(port: u16) {
    match timeout(IO_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect timed out")
    {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("port {port} still accepts connections"),
    }
}

#[tokio::test]
async fn start_serves_jetstream_and_monitoring() {
    let server = NatsServer::start().await;
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert_ne!(server.port(), server.monitor_port());
    let info = info_line(server.port()).await;
    assert!(info.contains("\"jetstream\":true"), "{info}");
    assert!(
        info.contains(&format!("\"version\":\"{}\"", server.version())),
        "{info}"
    );
    assert!(server.version().starts_with("2."), "{}", server.version());

    let health = http_get(server.monitor_port(), "/healthz").await;
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");
    let varz = http_get(server.monitor_port(), "/varz").await;
    let compact: String = varz.split_whitespace().collect();
    assert!(
        compact.contains("\"sync_always\":true"),
        "sync_always expected in {varz}"
    );

    assert!(server.store_dir().is_dir());
    assert!(server.store_dir().join("jetstream").is_dir());
    let config = std::fs::read_to_string(server.config_file()).unwrap();
    assert!(config.contains("sync_interval: always"), "{config}");
    assert!(
        server.logs().contains("Server is ready"),
        "{}",
        server.logs()
    );
    assert_eq!(server.binary(), pinned_server_binary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_refuses_connections_and_restart_reuses_port_and_store() {
    let mut server = NatsServer::start().await;
    let port = server.port();
    let monitor_port = server.monitor_port();
    let store = server.store_dir().to_path_buf();
    info_line(port).await;
    assert!(server.is_running());

    server.kill().await;
    assert!(!server.is_running());
    assert!(server.pid().is_none());
    assert_refused(port).await;
    server.kill().await; // no-op once dead

    server.restart().await;
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(server.monitor_port(), monitor_port);
    assert_eq!(server.store_dir(), store);
    assert!(store.join("jetstream").is_dir());
    let info = info_line(port).await;
    assert!(info.contains("\"jetstream\":true"), "{info}");
    assert_eq!(server.logs().matches("Server is ready").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_waits_for_a_port_that_is_still_taken() {
    let mut server = NatsServer::start().await;
    let port = server.port();
    server.kill().await;

    // Someone holds the client port for a while after the crash.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the freed port");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(squatter);
    });
    server.restart().await;
    release.await.unwrap();

    assert_eq!(server.port(), port);
    info_line(port).await;
    let logs = server.logs();
    assert!(logs.contains("retrying the same ports"), "{logs}");
}

#[tokio::test]
async fn stop_is_graceful_and_restart_of_a_running_server_works() {
    let mut server = NatsServer::start().await;
    let port = server.port();

    server.restart().await; // running: stopped gracefully, then started again
    info_line(port).await;

    server.stop().await;
    assert!(!server.is_running());
    assert_refused(port).await;
    let logs = server.logs();
    assert!(logs.contains("Server Exiting"), "{logs}");
    assert!(logs.contains("stopped (SIGTERM)"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_servers_get_distinct_ports_and_stores() {
    let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.monitor_port(), b.monitor_port());
    assert_ne!(a.port(), b.monitor_port());
    assert_ne!(a.store_dir(), b.store_dir());
    info_line(a.port()).await;
    info_line(b.port()).await;
}

#[tokio::test]
async fn drop_kills_the_server_and_removes_the_store() {
    let server = NatsServer::start().await;
    let port = server.port();
    let store = server.store_dir().to_path_buf();
    assert!(store.is_dir());
    drop(server);
    assert!(!store.exists(), "{} survived the drop", store.display());
    assert_refused(port).await;
}

#[tokio::test]
async fn builder_options_reach_the_server() {
    let server = NatsServer::builder()
        .jetstream(false)
        .max_payload(4096)
        .extra_config("authorization { token: \"s3cret\" }")
        .start()
        .await;
    let info = info_line(server.port()).await;
    assert!(!info.contains("\"jetstream\":true"), "{info}");
    assert!(info.contains("\"max_payload\":4096"), "{info}");
    assert!(info.contains("\"auth_required\":true"), "{info}");

    let lazy = NatsServer::builder().sync_always(false).start().await;
    let config = std::fs::read_to_string(lazy.config_file()).unwrap();
    assert!(!config.contains("sync_interval"), "{config}");
    assert!(info_line(lazy.port()).await.contains("\"jetstream\":true"));
    let varz = http_get(lazy.monitor_port(), "/varz").await;
    let compact: String = varz.split_whitespace().collect();
    assert!(!compact.contains("\"sync_always\":true"), "{varz}");
}

#[tokio::test]
#[should_panic(expected = "exited before it was ready")]
async fn a_bad_config_panics_with_the_server_output() {
    NatsServer::builder()
        .extra_config("this_is_not_a_known_field: {")
        .start()
        .await;
}

#[tokio::test]
async fn old_server_starts_with_the_same_config() {
    let Some(binary) = old_server_binary() else {
        eprintln!("no old nats-server (set JETQ_TEST_OLD_NATS_SERVER); skipping");
        return;
    };
    let mut server = NatsServer::builder().binary(&binary).start().await;
    assert!(server.version().starts_with("2.9."), "{}", server.version());
    let info = info_line(server.port()).await;
    assert!(info.contains("\"jetstream\":true"), "{info}");
    server.kill().await;
    server.restart().await;
    info_line(server.port()).await;
}

#[tokio::test]
async fn eventually_returns_the_first_some() {
    let mut calls = 0;
    let value = eventually(Duration::from_secs(5), "the third call", || {
        calls += 1;
        let now = calls;
        async move { (now >= 3).then_some(now) }
    })
    .await;
    assert_eq!(value, 3);
}

#[tokio::test]
#[should_panic(expected = "timed out after 100ms waiting for never")]
async fn eventually_panics_after_the_timeout() {
    eventually(Duration::from_millis(100), "never", || async { None::<()> }).await;
}

#[tokio::test]
#[should_panic(expected = "timed out after 100ms waiting for a hung check")]
async fn eventually_bounds_a_hung_evaluation() {
    eventually(Duration::from_millis(100), "a hung check", || {
        std::future::pending::<Option<()>>()
    })
    .await;
}
