//! A local SMTP sink: `python -m aiosmtpd` with the `Debugging` handler, which prints every
//! message it receives to its standard output. The demo and the tests read that output to see
//! what the worker sent.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};

use crate::{
    process::{self, Captured},
    SetupError,
};

/// How long `python -c "import aiosmtpd"` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the sink may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness probes.
const PROBE_PERIOD: Duration = Duration::from_millis(50);

const BEGIN: &str = "---------- MESSAGE FOLLOWS ----------";
const END: &str = "------------ END MESSAGE ------------";

/// Finds a Python that can run aiosmtpd: `$<override_var>` if set, else
/// `<repo>/.tools/venv/bin/python` (installed by `scripts/ensure-nats-server.sh`), else
/// `python3` on `PATH` if it has aiosmtpd.
pub async fn find_python(override_var: &str) -> Result<PathBuf, SetupError> {
    let venv = crate::repo_root().join(".tools/venv/bin/python");
    let candidates: Vec<PathBuf> = match process::env_path(override_var) {
        Some(path) => vec![path],
        None => [Some(venv.clone()), process::on_path("python3")]
            .into_iter()
            .flatten()
            .collect(),
    };
    let mut problems = Vec::new();
    for candidate in candidates {
        match has_aiosmtpd(&candidate).await {
            Ok(()) => return Ok(candidate),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        problems.push(format!("{} does not exist", venv.display()));
    }
    Err(SetupError(format!(
        "no Python with aiosmtpd for the SMTP sink ({}); run scripts/ensure-nats-server.sh, \
         which installs it into .tools/venv, or set ${override_var} to a python that has it",
        problems.join("; ")
    )))
}

async fn has_aiosmtpd(python: &Path) -> Result<(), String> {
    let mut command = Command::new(python);
    command
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(PROBE_TIMEOUT, command.output()).await {
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => Err(format!(
            "{} cannot import aiosmtpd: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(Err(err)) => Err(format!("cannot run {}: {err}", python.display())),
        Err(_) => Err(format!(
            "{} -c 'import aiosmtpd' took over {PROBE_TIMEOUT:?}",
            python.display()
        )),
    }
}

/// One message as the sink printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Header lines, in order (folded lines joined).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl ReceivedMail {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Splits the sink's output into messages.
pub fn parse_messages(output: &str) -> Vec<ReceivedMail> {
    let mut messages = Vec::new();
    let mut lines = output.lines();
    while lines.by_ref().any(|line| line.trim() == BEGIN) {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut body = String::new();
        let mut in_body = false;
        let mut complete = false;
        for line in lines.by_ref() {
            if line.trim() == END {
                complete = true;
                break;
            }
            if in_body {
                body.push_str(line);
                body.push('\n');
            } else if line.is_empty() {
                in_body = true;
            } else if line.starts_with(' ') || line.starts_with('\t') {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((key, value)) = line.split_once(':') {
                // aiosmtpd prints the envelope's options before the headers.
                if !key.ends_with(" options") {
                    headers.push((key.trim().to_owned(), value.trim().to_owned()));
                }
            }
        }
        if complete {
            messages.push(ReceivedMail { headers, body });
        }
    }
    messages
}

/// A running aiosmtpd process on `127.0.0.1:<port>`. Killed when dropped.
pub struct SmtpSink {
    child: Child,
    port: u16,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
}

impl SmtpSink {
    /// Starts aiosmtpd with `python` on `127.0.0.1:<port>` and waits (at most 30 s) until it
    /// greets like an SMTP server.
    pub async fn start(python: &Path, port: u16) -> Result<SmtpSink, SetupError> {
        let mut child = Command::new(python)
            .args(["-u", "-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Debugging"])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                SetupError(format!(
                    "cannot start the SMTP sink ({} -m aiosmtpd): {err}",
                    python.display()
                ))
            })?;
        let stdout = Captured::default();
        let stderr = Captured::default();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(process::pump(out, stdout.clone(), None));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(process::pump(err, stderr.clone(), None));
        }
        let mut sink = SmtpSink {
            child,
            port,
            stdout,
            stderr,
            readers,
        };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = sink.child.try_wait() {
                let message = format!(
                    "the SMTP sink exited before it was ready ({status}); its output:\n{}",
                    sink.logs()
                );
                sink.stop().await;
                return Err(SetupError(message));
            }
            if greets(port).await {
                return Ok(sink);
            }
            if tokio::time::Instant::now() >= deadline {
                let message = format!(
                    "the SMTP sink did not accept connections on port {port} within \
                     {READY_TIMEOUT:?}; its output:\n{}",
                    sink.logs()
                );
                sink.stop().await;
                return Err(SetupError(message));
            }
            tokio::time::sleep(PROBE_PERIOD).await;
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything it printed to standard output: the received messages.
    pub fn output(&self) -> String {
        self.stdout.text()
    }

    /// Standard output and standard error, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout.text(),
            self.stderr.text()
        )
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        parse_messages(&self.output())
    }

    /// The messages received so far for `address` (in their `To` header).
    pub fn messages_to(&self, address: &str) -> Vec<ReceivedMail> {
        self.messages()
            .into_iter()
            .filter(|mail| mail.header("To").is_some_and(|to| to.contains(address)))
            .collect()
    }

    /// Kills the sink and waits for it to exit.
    pub async fn stop(&mut self) {
        process::kill(&mut self.child, &mut self.readers).await;
    }
}

/// Whether something on the port answers with an SMTP greeting (`220 ...`).
async fn greets(port: u16) -> bool {
    let probe = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let (read, mut write) = stream.into_split();
        let mut greeting = String::new();
        BufReader::new(read).read_line(&mut greeting).await.ok()?;
        let _ = write.write_all(b"QUIT\r\n").await;
        Some(greeting.starts_with("220"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debugging_output() {
        let output = "---------- MESSAGE FOLLOWS ----------\n\
                      mail options: ['SIZE=300']\n\
                      From: jetq demo <noreply@jetq.example>\n\
                      To: ada@example.com\n\
                      Subject: Welcome\n \tto jetq\n\
                      X-Peer: ('127.0.0.1', 1)\n\
                      \n\
                      Hello\n\
                      ------------ END MESSAGE ------------\n\
                      ---------- MESSAGE FOLLOWS ----------\n\
                      To: cut@example.com\n";
        let messages = parse_messages(output);
        assert_eq!(messages.len(), 1, "{messages:?}");
        let mail = &messages[0];
        assert_eq!(mail.header("to"), Some("ada@example.com"));
        assert_eq!(mail.header("Subject"), Some("Welcome to jetq"));
        assert_eq!(mail.header("mail options"), None);
        assert_eq!(mail.body, "Hello\n");
    }
}
