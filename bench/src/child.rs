//! The parent's side of a worker process: spawn this binary in `worker` mode, drive it over
//! stdin/stdout, read its memory from `/proc`.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::worker::WorkerArgs;

/// How long a worker may take to connect and provision.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a worker may take to answer `REPORT`.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker reports: tasks handled and latency percentiles (µs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Report {
    pub tasks: u64,
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// A worker child process.
pub(crate) struct ChildWorker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
    exit_grace: Duration,
}

impl ChildWorker {
    /// Spawns `<this binary> worker <args>` and waits until it printed `READY`.
    pub(crate) async fn start(args: &WorkerArgs) -> Result<ChildWorker, String> {
        let mut words = vec!["worker".to_owned()];
        words.extend(args.to_args());
        ChildWorker::spawn(words).await
    }

    /// Spawns `<this binary> scheduler --url <url>` (a jetq scheduler) and waits until it
    /// printed `READY`.
    pub(crate) async fn start_scheduler(url: &str) -> Result<ChildWorker, String> {
        ChildWorker::spawn(vec![
            "scheduler".to_owned(),
            "--url".to_owned(),
            url.to_owned(),
        ])
        .await
    }

    async fn spawn(words_after_exe: Vec<String>) -> Result<ChildWorker, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        // Profiling aid: JETQ_BENCH_WORKER_WRAPPER="perf record -g -o /tmp/w.data --" runs
        // every worker under that command (RSS figures then describe the wrapper).
        let wrapper = std::env::var("JETQ_BENCH_WORKER_WRAPPER").unwrap_or_default();
        let exit_grace = if wrapper.trim().is_empty() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(60)
        };
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .args(words_after_exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn worker: {e}"))?;
        let pid = child.id().ok_or("worker exited at once")?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut worker = ChildWorker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            pid,
            exit_grace,
        };
        worker.expect_line("READY", READY_TIMEOUT).await?;
        Ok(worker)
    }

    /// Tells the worker to start pulling.
    pub(crate) async fn go(&mut self) -> Result<(), String> {
        self.send("GO").await
    }

    /// Asks for the worker's counts and latency percentiles.
    pub(crate) async fn report(&mut self) -> Result<Report, String> {
        self.send("REPORT").await?;
        let line = self.expect_line("REPORT", REPORT_TIMEOUT).await?;
        let numbers: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().map_err(|e| format!("bad report {line:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let [tasks, samples, p50_us, p99_us, p999_us, max_us] = numbers[..] else {
            return Err(format!("bad report {line:?}"));
        };
        Ok(Report {
            tasks,
            samples,
            p50_us,
            p99_us,
            p999_us,
            max_us,
        })
    }

    /// Current resident set size (VmRSS) in KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid, "VmRSS:")
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid, "VmHWM:")
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid)
    }

    /// Ends the process: closes its stdin (it exits at end of input), then SIGKILL if it is
    /// still there after a moment, and reaps it.
    pub(crate) async fn kill(mut self) {
        drop(self.stdin);
        let exited = tokio::time::timeout(self.exit_grace, self.child.wait()).await;
        if exited.is_err() {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("write to worker {}: {e}", self.pid))?;
        self.stdin
            .flush()
            .await
            .map_err(|e| format!("flush to worker {}: {e}", self.pid))
    }

    async fn expect_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let pid = self.pid;
        let read = async {
            loop {
                match self.lines.next_line().await {
                    Ok(Some(line)) if line.starts_with(prefix) => return Ok(line),
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err(format!("worker {pid} exited before {prefix}")),
                    Err(e) => return Err(format!("read from worker {pid}: {e}")),
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| format!("worker {pid}: no {prefix} within {timeout:?}"))?
    }
}

/// A `kB` field of `/proc/<pid>/status`.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// User + system CPU time of a process (all its threads), in seconds, from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s, the value of `CLK_TCK` on Linux).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
