//! A **real** PostgreSQL server per test: `initdb` into a temporary directory, then `postgres`
//! on a free loopback port with its unix socket in the same directory. Nothing of the machine's
//! own PostgreSQL is used (not its port, not its data).
//!
//! ```no_run
//! # async fn demo() {
//! use jetq_harness::postgres::PostgresServer;
//!
//! let mut db = PostgresServer::start().await;
//! let url = db.url(); // "postgres://postgres@127.0.0.1:<port>/postgres"
//! db.stop().await; // the database goes away (fast shutdown: sessions are cut)
//! db.restart().await; // same port, same data
//! # let _ = url;
//! # }
//! ```
//!
//! The binaries come from `JETQ_TEST_PG_BIN` (a directory holding `initdb` and `postgres`) or
//! the newest `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package; `scripts/test.sh`
//! installs it). PostgreSQL refuses to run as root, so as root both run as the `postgres` user
//! (the package creates it) through `setpriv`, and the directory is handed to that user.
//!
//! Test-support code: setup failures panic with the server's log, every wait is bounded.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

/// How long `initdb`, a start or a stop may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running (or stopped) PostgreSQL server owned by a test. Killed, and its data removed, on
/// drop.
pub struct PostgresServer {
    bin: PathBuf,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    /// `Some((uid, gid))` when running as root: the server runs as the `postgres` user.
    run_as: Option<(u32, u32)>,
    process: Option<Child>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// The directory holding `initdb` and `postgres`: `JETQ_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
///
/// # Panics
///
/// If none is found, saying how to install one.
pub fn postgres_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("JETQ_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries: install them (`apt-get install postgresql`, as \
             scripts/test.sh does) or set JETQ_TEST_PG_BIN to a directory holding initdb and \
             postgres"
        )
    })
}

impl PostgresServer {
    /// Creates a cluster (`initdb`, trust authentication, user `postgres`) in a fresh temporary
    /// directory and starts it on a free port.
    ///
    /// # Panics
    ///
    /// If the binaries are missing, or `initdb` or the server fail; the message includes the
    /// log.
    pub async fn start() -> PostgresServer {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("jetq-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for PostgreSQL: {e}"));
        let run_as = postgres_user_if_root().await;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().to_path_buf();
        let log_file = dir.path().join("postgres.log");
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), uid, gid).await;
        }
        let mut server = PostgresServer {
            bin,
            port: crate::free_port(),
            data_dir,
            socket_dir,
            log_file,
            run_as,
            process: None,
            dir,
        };
        server.initdb().await;
        server.launch().await;
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication, no password).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Stops the server with a fast shutdown (SIGINT: every session is cut, nothing is lost)
    /// and waits for it to exit. Does nothing if it is not running.
    pub async fn stop(&mut self) {
        self.signal_and_wait("INT").await;
    }

    /// Stops the server with an immediate shutdown (SIGQUIT: a crash, recovered from the WAL
    /// at the next start). Does nothing if it is not running.
    pub async fn crash(&mut self) {
        self.signal_and_wait("QUIT").await;
    }

    /// Starts the server again on the same port with the same data, and waits until it accepts
    /// connections. A running server is first stopped.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Whether the server process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.process.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some((uid, gid)) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(path);
                command
            }
            None => Command::new(path),
        };
        command.env("LC_ALL", "C").env_remove("PGDATA");
        command
    }

    async fn initdb(&self) {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output();
        let output = tokio::time::timeout(STEP_TIMEOUT, output)
            .await
            .unwrap_or_else(|_| panic!("initdb did not finish within {STEP_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.join("initdb").display()));
        if !output.status.success() {
            panic!(
                "initdb failed ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    async fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_file.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_file.display()));
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.socket_dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e}", self.bin.join("postgres").display())
            });
        self.process = Some(child);
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            if !self.is_running() {
                panic!("postgres exited at start; log:\n{}", self.logs());
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .await
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "postgres did not accept connections within {STEP_TIMEOUT:?}; log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn signal_and_wait(&mut self, signal: &str) {
        let Some(mut child) = self.process.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status()
                .await;
        }
        match tokio::time::timeout(STEP_TIMEOUT, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            // Immediate shutdown, so the postmaster takes its backends down with it (a SIGKILL
            // would leave them running in the removed directory).
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-QUIT")
                    .arg(pid.to_string())
                    .status();
            }
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.start_kill();
        }
        let _ = &self.dir;
    }
}

/// The `postgres` user's ids when this process is root (PostgreSQL refuses to run as root).
async fn postgres_user_if_root() -> Option<(u32, u32)> {
    let me = id(&["-u"]).await?;
    if me != 0 {
        return None;
    }
    let uid = id(&["-u", "postgres"]).await;
    let gid = id(&["-g", "postgres"]).await;
    match (uid, gid) {
        (Some(uid), Some(gid)) => Some((uid, gid)),
        _ => panic!(
            "running as root and there is no `postgres` user to run PostgreSQL as: install the \
             postgresql package (it creates the user) or run the tests as another user"
        ),
    }
}

async fn id(args: &[&str]) -> Option<u32> {
    let output = Command::new("id").args(args).output().await.ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

async fn chown(path: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .await;
    if !status.is_ok_and(|s| s.success()) {
        panic!("cannot hand {} to the postgres user", path.display());
    }
}
