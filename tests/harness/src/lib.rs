//! Test support for jetq: a **real** `nats-server` process per test.
//!
//! Every [`NatsServer`] runs its own `nats-server` on free loopback ports, with JetStream on
//! (by default) and a throw-away store directory, and with `sync_interval: always` (by default,
//! the durability setting jetq recommends; see `docs/` and DESIGN.md §4). The server is killed
//! and its store removed when the value is dropped, so a failing test cleans up after itself.
//!
//! ```no_run
//! # async fn demo() {
//! use jetq_harness::NatsServer;
//!
//! let mut server = NatsServer::start().await;
//! let url = server.url(); // "nats://127.0.0.1:<port>"
//! // ... connect a client to `url`, run the test ...
//! server.kill().await; // simulate a crash
//! server.restart().await; // same port, same store: JetStream state survives
//! # let _ = url;
//! # }
//! ```
//!
//! The server binary is chosen by [`pinned_server_binary`] (run `scripts/ensure-nats-server.sh`
//! to install the pinned version); [`old_server_binary`] finds Debian's 2.9 server for tests of
//! the version refusal.
//!
//! This is test-support code: setup failures panic with a message that includes the server's
//! output, and every wait is bounded by a timeout.

#![warn(missing_docs)]

pub mod postgres;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Environment variable naming the server binary to test against (see [`pinned_server_binary`]).
pub const NATS_SERVER_ENV: &str = "JETQ_TEST_NATS_SERVER";
/// Environment variable naming an old (< 2.10) server binary (see [`old_server_binary`]).
pub const OLD_NATS_SERVER_ENV: &str = "JETQ_TEST_OLD_NATS_SERVER";

/// Where Debian (bookworm) installs its `nats-server` package (2.9.10).
const DEBIAN_SERVER: &str = "/usr/sbin/nats-server";
/// The oldest server [`pinned_server_binary`] accepts from `PATH`.
const MIN_PATH_SERVER: (u32, u32, u32) = (2, 10, 0);
/// `sync_interval` is rejected as an unknown field by servers older than this.
const SYNC_INTERVAL_SINCE: (u32, u32, u32) = (2, 10, 0);

/// How long a freshly spawned server may take to log "Server is ready".
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a killed server may take to be reaped.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`NatsServer::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long `nats-server --version` (and the `kill -TERM` helper) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the output readers may take to drain after the process has exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// New port pairs tried by [`ServerBuilder::start`] when a port turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// How long [`NatsServer::restart`] retries the same ports while they are still taken.
const RESTART_PORT_WAIT: Duration = Duration::from_secs(10);
/// Pause between two restart attempts on a taken port.
const RESTART_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Polling period of [`eventually`].
const EVENTUALLY_PERIOD: Duration = Duration::from_millis(20);

/// The line `nats-server` logs once it accepts client connections.
const READY_LINE: &str = "Server is ready";
/// What the server logs when a listen port is taken.
const PORT_IN_USE: &str = "address already in use";

/// A running (or killed/stopped, restartable) `nats-server` owned by one test.
///
/// Create it with [`NatsServer::start`] or [`NatsServer::builder`]. Dropping it kills the process
/// with SIGKILL and removes its temporary directory (configuration and JetStream store).
///
/// The value must be dropped inside the tokio runtime that started it: the server's output is
/// read by tasks of that runtime.
pub struct NatsServer {
    binary: PathBuf,
    version: String,
    port: u16,
    monitor_port: u16,
    config_file: PathBuf,
    store_dir: PathBuf,
    logs: Arc<Mutex<String>>,
    process: Option<Running>,
    /// Declared last so it is removed after `Drop::drop` has killed the process.
    dir: tempfile::TempDir,
}

/// A spawned server process and the tasks draining its stdout and stderr.
struct Running {
    child: Child,
    readers: Vec<JoinHandle<()>>,
}

/// The client URL of a cluster: every server's, comma-separated (what `JETQ_URL` takes).
pub fn cluster_url(servers: &[NatsServer]) -> String {
    servers
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",")
}

/// Configures a [`NatsServer`] before it starts; obtained from [`NatsServer::builder`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    binary: Option<PathBuf>,
    sync_always: bool,
    max_payload: Option<u32>,
    extra_config: String,
    jetstream: bool,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            binary: None,
            sync_always: true,
            max_payload: None,
            extra_config: String::new(),
            jetstream: true,
        }
    }
}

impl ServerBuilder {
    /// Runs this server binary instead of the default [`pinned_server_binary`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Whether JetStream fsyncs every write (`jetstream { sync_interval: always }`); default
    /// `true`. Ignored for servers older than 2.10, which reject the field.
    pub fn sync_always(mut self, yes: bool) -> Self {
        self.sync_always = yes;
        self
    }

    /// Sets `max_payload` (bytes) in the configuration; by default the server's own default
    /// (1 MiB) applies.
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Appends `text` verbatim to the configuration file (for example `accounts { .. }` or
    /// `authorization { .. }` blocks). Several calls append in order, one per line.
    pub fn extra_config(mut self, text: impl Into<String>) -> Self {
        self.extra_config.push_str(&text.into());
        self.extra_config.push('\n');
        self
    }

    /// Whether JetStream is enabled; default `true`.
    pub fn jetstream(mut self, yes: bool) -> Self {
        self.jetstream = yes;
        self
    }

    /// Starts `size` servers of this configuration routed into one cluster (`n0`, `n1`, ...,
    /// cluster name `jetq`), each on its own free ports with its own store, and waits until
    /// each is ready. JetStream elects its meta leader after that: creating a stream may fail
    /// for a moment (retry it, as a jetq process does at startup).
    ///
    /// # Panics
    ///
    /// As [`ServerBuilder::start`].
    pub async fn start_cluster(self, size: usize) -> Vec<NatsServer> {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        // Started together: with JetStream clustered, a server is ready only once it sees
        // the others.
        let starting: Vec<_> = route_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                tokio::spawn(
                    self.clone()
                        .extra_config(format!(
                            "server_name: n{i}\ncluster {{\n  name: jetq\n  listen: \
                             127.0.0.1:{port}\n  routes: [{routes}]\n}}"
                        ))
                        .start(),
                )
            })
            .collect();
        let mut servers = Vec::with_capacity(size);
        for server in starting {
            match server.await {
                Ok(server) => servers.push(server),
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            }
        }
        servers
    }

    /// Starts the server on free ports and waits (at most 15 s) until it is ready.
    ///
    /// If a port turns out to be taken by the time the server binds it, retries a few times with
    /// new ports.
    ///
    /// # Panics
    ///
    /// If the binary cannot be found or run, if the server exits or is not ready in time, or if
    /// no free ports could be found; the message includes the server's output.
    pub async fn start(self) -> NatsServer {
        let binary = self.binary.clone().unwrap_or_else(pinned_server_binary);
        let version = server_version(&binary)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("jetq-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for nats-server: {e}"));
        let store_dir = dir.path().join("js");
        std::fs::create_dir_all(&store_dir).unwrap_or_else(|e| {
            panic!(
                "cannot create the store directory {}: {e}",
                store_dir.display()
            )
        });
        let config_file = dir.path().join("nats-server.conf");
        let logs = Arc::new(Mutex::new(String::new()));

        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let monitor_port = free_port();
            let config = self.config_text(port, monitor_port, &store_dir, &version);
            std::fs::write(&config_file, config).unwrap_or_else(|e| {
                panic!(
                    "cannot write the nats-server config {}: {e}",
                    config_file.display()
                )
            });
            if attempt > 1 {
                note(&logs, &format!("start attempt {attempt} with new ports"));
            }
            match launch(&binary, &config_file, &logs).await {
                Ok(running) => {
                    return NatsServer {
                        binary,
                        version,
                        port,
                        monitor_port,
                        config_file,
                        store_dir,
                        logs,
                        process: Some(running),
                        dir,
                    }
                }
                Err(PortInUse(output)) => last_failure = output,
            }
        }
        panic!(
            "nats-server ({}) found its ports taken {START_ATTEMPTS} times in a row; \
             output of the last attempt:\n{last_failure}",
            binary.display()
        )
    }

    /// The configuration file's text for the given ports.
    fn config_text(&self, port: u16, monitor_port: u16, store_dir: &Path, version: &str) -> String {
        let mut text = format!("listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n");
        if self.jetstream {
            text.push_str("jetstream {\n");
            text.push_str(&format!(
                "  store_dir: {}\n",
                quote(&store_dir.to_string_lossy())
            ));
            let supports_sync = version_triple(version).is_some_and(|v| v >= SYNC_INTERVAL_SINCE);
            if self.sync_always && supports_sync {
                text.push_str("  sync_interval: always\n");
            }
            text.push_str("}\n");
        }
        if let Some(bytes) = self.max_payload {
            text.push_str(&format!("max_payload: {bytes}\n"));
        }
        text.push_str(&self.extra_config);
        text
    }
}

impl NatsServer {
    /// Starts a server with the default settings: [`pinned_server_binary`], JetStream on,
    /// `sync_interval: always`. Same as `NatsServer::builder().start().await`.
    ///
    /// # Panics
    ///
    /// As [`ServerBuilder::start`].
    pub async fn start() -> NatsServer {
        NatsServer::builder().start().await
    }

    /// A builder to configure the server before starting it.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (stays the same across [`NatsServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port (`/varz`, `/jsz`, `/healthz`, ...), always enabled.
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The HTTP monitoring base URL, `http://127.0.0.1:<monitor_port>`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The JetStream `store_dir` given to the server (created before the server starts; the
    /// server keeps its data in a `jetstream` directory inside). Removed when the value drops.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The configuration file the server runs with.
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// The server binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The server version reported by `nats-server --version`, without the leading `v`
    /// (for example `2.15.1`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The process id, while the process has not been reaped (killed, stopped or exited).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|running| running.child.id())
    }

    /// Everything the server printed so far, across restarts, with lines from the harness
    /// itself prefixed by `[jetq-harness]`. Meant for failure messages.
    pub fn logs(&self) -> String {
        lock(&self.logs).clone()
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed) and waits for it to exit.
    /// Does nothing if it is not running.
    ///
    /// # Panics
    ///
    /// If the process has not exited 10 s after SIGKILL.
    pub async fn kill(&mut self) {
        let Some(mut running) = self.process.take() else {
            return;
        };
        // An error only means it has already exited; wait() below reaps it either way.
        let _ = running.child.start_kill();
        match tokio::time::timeout(EXIT_TIMEOUT, running.child.wait()).await {
            Ok(Ok(status)) => {
                drain(running.readers).await;
                note(
                    &self.logs,
                    &format!("nats-server killed (SIGKILL): {status}"),
                );
            }
            Ok(Err(e)) => panic!("waiting for the killed nats-server failed: {e}"),
            Err(_) => panic!(
                "nats-server did not exit within {EXIT_TIMEOUT:?} after SIGKILL; output:\n{}",
                self.logs()
            ),
        }
    }

    /// Stops the server gracefully: SIGTERM, then waits up to 10 s for it to exit, then
    /// SIGKILL. Does nothing if it is not running.
    ///
    /// # Panics
    ///
    /// If the process has not exited 10 s after the final SIGKILL.
    pub async fn stop(&mut self) {
        let Some(running) = self.process.as_mut() else {
            return;
        };
        if let Some(pid) = running.child.id() {
            if let Err(e) = send_sigterm(pid).await {
                note(&self.logs, &format!("{e}; killing instead"));
                return self.kill().await;
            }
        }
        match tokio::time::timeout(STOP_GRACE, running.child.wait()).await {
            Ok(Ok(status)) => {
                let running = self.process.take().expect("process is present");
                drain(running.readers).await;
                note(
                    &self.logs,
                    &format!("nats-server stopped (SIGTERM): {status}"),
                );
            }
            Ok(Err(e)) => panic!("waiting for the stopped nats-server failed: {e}"),
            Err(_) => {
                note(
                    &self.logs,
                    &format!("nats-server still running {STOP_GRACE:?} after SIGTERM; SIGKILL"),
                );
                self.kill().await;
            }
        }
    }

    /// Starts the server again on the **same** ports with the **same** configuration and store
    /// directory, and waits until it is ready. A server that is still running is first stopped
    /// gracefully ([`NatsServer::stop`]); call [`NatsServer::kill`] first to simulate a crash.
    ///
    /// If a port is still taken (a lingering socket), retries the same port for up to 10 s.
    ///
    /// # Panics
    ///
    /// If the server exits or is not ready in time, or the ports stay taken; the message
    /// includes the server's output.
    pub async fn restart(&mut self) {
        if self.is_running() {
            self.stop().await;
        }
        note(
            &self.logs,
            "restarting nats-server on the same ports and store",
        );
        let deadline = Instant::now() + RESTART_PORT_WAIT;
        loop {
            match launch(&self.binary, &self.config_file, &self.logs).await {
                Ok(running) => {
                    self.process = Some(running);
                    return;
                }
                Err(PortInUse(_)) if Instant::now() < deadline => {
                    note(&self.logs, "a port is still taken; retrying the same ports");
                    tokio::time::sleep(RESTART_RETRY_PAUSE).await;
                }
                Err(PortInUse(output)) => panic!(
                    "nats-server could not restart: port {} or monitor port {} still taken after \
                     {RESTART_PORT_WAIT:?}; output of the last attempt:\n{output}",
                    self.port, self.monitor_port
                ),
            }
        }
    }

    /// Whether the server process is alive (it may have been killed, stopped or have exited by
    /// itself).
    pub fn is_running(&mut self) -> bool {
        let Some(running) = self.process.as_mut() else {
            return false;
        };
        match running.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                note(
                    &self.logs,
                    &format!("nats-server exited by itself: {status}"),
                );
                self.process = None;
                false
            }
            Err(e) => {
                note(
                    &self.logs,
                    &format!("cannot query the nats-server process: {e}"),
                );
                self.process = None;
                false
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let Some(mut running) = self.process.take() else {
            return;
        };
        // `kill_on_drop` would also do this; killing and reaping here (bounded) makes sure the
        // process no longer writes to the store when the temporary directory is removed.
        let _ = running.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match running.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Ok(Some(_)) | Err(_) => break,
            }
        }
        for reader in running.readers {
            reader.abort();
        }
    }
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("monitor_port", &self.monitor_port)
            .field("version", &self.version)
            .field("binary", &self.binary)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// A launch that failed because a port was taken; carries that attempt's output.
struct PortInUse(String);

/// Spawns the server with `config` and waits until it is ready.
///
/// Returns `Err` if the server exited because a port is taken; panics on any other failure.
async fn launch(
    binary: &Path,
    config: &Path,
    logs: &Arc<Mutex<String>>,
) -> Result<Running, PortInUse> {
    let offset = lock(logs).len();
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));

    let (ready_tx, mut ready_rx) = watch::channel(false);
    let ready_tx = Arc::new(ready_tx);
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let readers = vec![
        tokio::spawn(pump(stdout, logs.clone(), ready_tx.clone())),
        tokio::spawn(pump(stderr, logs.clone(), ready_tx)),
    ];

    enum Outcome {
        Ready,
        Exited(std::io::Result<std::process::ExitStatus>),
        TimedOut,
    }
    let outcome = tokio::select! {
        biased;
        Ok(_) = ready_rx.wait_for(|ready| *ready) => Outcome::Ready,
        status = child.wait() => Outcome::Exited(status),
        _ = tokio::time::sleep(READY_TIMEOUT) => Outcome::TimedOut,
    };
    match outcome {
        Outcome::Ready => Ok(Running { child, readers }),
        Outcome::Exited(status) => {
            drain(readers).await;
            let output = lock(logs)[offset..].to_string();
            if output.contains(PORT_IN_USE) {
                return Err(PortInUse(output));
            }
            let status = match status {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown status ({e})"),
            };
            panic!(
                "nats-server ({}) exited before it was ready ({status}); config {}:\n{}\noutput:\n{output}",
                binary.display(),
                config.display(),
                std::fs::read_to_string(config).unwrap_or_default()
            )
        }
        Outcome::TimedOut => {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
            drain(readers).await;
            panic!(
                "nats-server ({}) was not ready after {READY_TIMEOUT:?}; output:\n{}",
                binary.display(),
                &lock(logs)[offset..]
            )
        }
    }
}

/// Copies the lines of one output stream of the server into `logs` until end of file, and
/// flags readiness when the server says so. Never blocks the server: it always reads.
async fn pump<R: AsyncRead + Unpin>(
    stream: R,
    logs: Arc<Mutex<String>>,
    ready: Arc<watch::Sender<bool>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                {
                    let mut logs = lock(&logs);
                    logs.push_str(&text);
                    if !text.ends_with('\n') {
                        logs.push('\n');
                    }
                }
                if text.contains(READY_LINE) {
                    ready.send_replace(true);
                }
            }
        }
    }
}

/// Waits (bounded) for the output readers of an exited process to reach end of file.
async fn drain(readers: Vec<JoinHandle<()>>) {
    for mut reader in readers {
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

/// Sends SIGTERM through the shell's `kill` builtin (std has no API for it).
async fn send_sigterm(pid: u32) -> Result<(), String> {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("kill -TERM {pid}"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => Err(format!(
            "`kill -TERM {pid}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(Err(e)) => Err(format!("cannot run `sh -c 'kill -TERM {pid}'`: {e}")),
        Err(_) => Err(format!(
            "`kill -TERM {pid}` took longer than {COMMAND_TIMEOUT:?}"
        )),
    }
}

/// Appends a harness line to the logs.
fn note(logs: &Mutex<String>, text: &str) {
    let mut logs = lock(logs);
    logs.push_str("[jetq-harness] ");
    logs.push_str(text);
    logs.push('\n');
}

/// Locks, ignoring poisoning (a panicking test must still be able to print the logs).
fn lock(logs: &Mutex<String>) -> MutexGuard<'_, String> {
    logs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Quotes a string for the nats-server configuration language.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `nats-server --version` of `binary`, run asynchronously with a timeout.
async fn server_version(binary: &Path) -> Result<String, String> {
    let mut command = Command::new(binary);
    command
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("cannot run `{} --version`: {e}", binary.display())),
        Err(_) => {
            return Err(format!(
                "`{} --version` took longer than {COMMAND_TIMEOUT:?}",
                binary.display()
            ))
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_version_output(&text).ok_or_else(|| {
        format!(
            "unexpected output of `{} --version`: {text:?}",
            binary.display()
        )
    })
}

/// `nats-server --version` of `binary`, run synchronously with a timeout.
fn server_version_blocking(binary: &Path) -> Result<String, String> {
    let mut child = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{} --version`: {e}", binary.display()))?;
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{} --version` took longer than {COMMAND_TIMEOUT:?}",
                    binary.display()
                ));
            }
            Err(e) => return Err(format!("waiting for `{} --version`: {e}", binary.display())),
        }
    }
    // One line of output: it fits in the pipe buffers, so reading after exit cannot block.
    let mut text = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut text);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    parse_version_output(&text).ok_or_else(|| {
        format!(
            "unexpected output of `{} --version`: {text:?}",
            binary.display()
        )
    })
}

/// Extracts `2.15.1` from `nats-server: v2.15.1`.
fn parse_version_output(text: &str) -> Option<String> {
    text.split_whitespace().find_map(|word| {
        let version = word.strip_prefix('v')?;
        version_triple(version)?;
        Some(version.to_string())
    })
}

/// `(major, minor, patch)` of a version such as `2.11.0-RC.1`.
fn version_triple(version: &str) -> Option<(u32, u32, u32)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(part) => part.parse().ok()?,
        None => 0,
    };
    Some((major, minor, patch))
}

/// The repository root (`tests/harness` → `../..`).
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// A non-empty environment variable as a path.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// Whether `path` is an executable regular file.
fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The server binary tests run against:
///
/// 1. `$JETQ_TEST_NATS_SERVER` if set (and non-empty);
/// 2. else `<repo>/.tools/venv/bin/nats-server` if it exists (installed by
///    `scripts/ensure-nats-server.sh`, the pinned 2.15.1);
/// 3. else the first `nats-server` on `PATH` whose `--version` is at least 2.10.
///
/// # Panics
///
/// If `$JETQ_TEST_NATS_SERVER` names a missing file, or no suitable binary is found; the
/// message says to run `scripts/ensure-nats-server.sh`.
pub fn pinned_server_binary() -> PathBuf {
    if let Some(path) = env_path(NATS_SERVER_ENV) {
        assert!(
            is_executable(&path),
            "${NATS_SERVER_ENV} is {}, which is not an executable file; \
             run scripts/ensure-nats-server.sh to install the pinned nats-server",
            path.display()
        );
        return path;
    }
    let venv = repo_root().join(".tools/venv/bin/nats-server");
    if is_executable(&venv) {
        return venv;
    }
    static FROM_PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    let from_path = FROM_PATH.get_or_init(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .filter(|candidate| is_executable(candidate))
            .find(|candidate| {
                server_version_blocking(candidate)
                    .ok()
                    .and_then(|version| version_triple(&version))
                    .is_some_and(|version| version >= MIN_PATH_SERVER)
            })
    });
    match from_path {
        Some(path) => path.clone(),
        None => panic!(
            "no nats-server >= 2.10 found (${NATS_SERVER_ENV} unset, {} missing, none on PATH); \
             run scripts/ensure-nats-server.sh to install the pinned nats-server 2.15.1",
            venv.display()
        ),
    }
}

/// An old (< 2.10) server binary, for tests that jetq refuses such servers:
/// `$JETQ_TEST_OLD_NATS_SERVER` if set (and non-empty), else `/usr/sbin/nats-server` (Debian
/// bookworm's 2.9.10) if it exists, else `None` (such tests should then skip).
pub fn old_server_binary() -> Option<PathBuf> {
    if let Some(path) = env_path(OLD_NATS_SERVER_ENV) {
        return Some(path);
    }
    let debian = PathBuf::from(DEBIAN_SERVER);
    is_executable(&debian).then_some(debian)
}

/// Re-evaluates `f` every 20 ms until it returns `Some`, and returns that value.
///
/// For conditions that have no event to await (a file appearing, a counter reaching a value).
/// `f` is always evaluated at least once; an evaluation still pending at the deadline is
/// abandoned.
///
/// # Panics
///
/// With `timed out after {timeout:?} waiting for {what}` when `timeout` passes first.
pub async fn eventually<F, Fut, T>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Some(value)) => return value,
            Ok(None) if Instant::now() < deadline => tokio::time::sleep(EVENTUALLY_PERIOD).await,
            Ok(None) | Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
///
/// Never returns the same port twice in one process, so servers started by parallel tests of
/// one test binary do not collide; another process may still take it, which
/// [`ServerBuilder::start`] handles by retrying.
///
/// # Panics
///
/// If no port can be bound.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot bind a TCP port on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read a bound port: {e}"))
            .port();
        drop(listener);
        let fresh = handed_out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(port);
        if fresh {
            return port;
        }
    }
    panic!("no fresh TCP port on 127.0.0.1 after 1000 attempts")
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version_output("nats-server: v2.15.1\n").as_deref(),
            Some("2.15.1")
        );
        assert_eq!(
            parse_version_output("nats-server: v2.9.10").as_deref(),
            Some("2.9.10")
        );
        assert_eq!(parse_version_output("garbage"), None);
        assert_eq!(version_triple("2.11.0-RC.1"), Some((2, 11, 0)));
        assert_eq!(version_triple("2.10"), Some((2, 10, 0)));
        assert_eq!(version_triple("x.1.2"), None);
        assert!(version_triple("2.9.10").unwrap() < SYNC_INTERVAL_SINCE);
    }

    #[test]
    fn config_text_follows_the_builder() {
        let store = Path::new("/tmp/x/js");
        let text = ServerBuilder::default().config_text(1, 2, store, "2.15.1");
        assert_eq!(
            text,
            "listen: 127.0.0.1:1\nhttp: 127.0.0.1:2\njetstream {\n  store_dir: \"/tmp/x/js\"\n  \
             sync_interval: always\n}\n"
        );
        let old = ServerBuilder::default().config_text(1, 2, store, "2.9.10");
        assert!(!old.contains("sync_interval"), "{old}");
        let lazy = ServerBuilder::default()
            .sync_always(false)
            .config_text(1, 2, store, "2.15.1");
        assert!(!lazy.contains("sync_interval"), "{lazy}");
        let custom = ServerBuilder::default()
            .jetstream(false)
            .max_payload(4096)
            .extra_config("authorization { token: \"t\" }")
            .config_text(1, 2, store, "2.15.1");
        assert_eq!(
            custom,
            "listen: 127.0.0.1:1\nhttp: 127.0.0.1:2\nmax_payload: 4096\n\
             authorization { token: \"t\" }\n"
        );
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn quotes_config_strings() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
