//! Helpers for the child processes of the demo and the tests (nats-server, the SMTP sink).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Child,
    sync::watch,
    task::JoinHandle,
};

/// Output captured from a child process, line by line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<String>>);

impl Captured {
    pub(crate) fn lock(&self) -> MutexGuard<'_, String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn text(&self) -> String {
        self.lock().clone()
    }
}

/// Copies the lines of `stream` into `captured` until end of file; flags `ready` when a line
/// contains `ready_line`.
pub(crate) fn pump<R>(
    stream: R,
    captured: Captured,
    ready: Option<(Arc<watch::Sender<bool>>, &'static str)>,
) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    {
                        let mut captured = captured.lock();
                        captured.push_str(&text);
                        if !text.ends_with('\n') {
                            captured.push('\n');
                        }
                    }
                    if let Some((ready, marker)) = &ready {
                        if text.contains(marker) {
                            ready.send_replace(true);
                        }
                    }
                }
            }
        }
    })
}

/// Kills `child` and waits (bounded) for it and its output readers to finish.
pub(crate) async fn kill(child: &mut Child, readers: &mut Vec<JoinHandle<()>>) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    for mut reader in readers.drain(..) {
        if tokio::time::timeout(Duration::from_secs(2), &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

/// Whether `path` is an executable file.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// A non-empty environment variable as a path.
pub(crate) fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
