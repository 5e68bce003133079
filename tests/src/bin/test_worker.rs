//! A worker process for crash tests: runs `Job` tasks and reports each start and finish on
//! core NATS subjects (`test.started`, `test.done`), so a test can kill it with SIGKILL mid-task
//! and watch another worker finish the task.
//!
//! The handler sleeps for the number of milliseconds in `Job::note` (`sleep:<ms>`); a note
//! `fail-once` fails the first attempt (retried), `always-fail` fails every attempt (dead after
//! the last), `fatal` fails without retry (dead at once).
//!
//! Like the real worker binaries, it exits with status 1 and a message on stderr when its
//! configuration is unusable or it cannot start, and publishes `test.ready` once it pulls.

use std::time::Duration;

use jetq_consumer::{TaskContext, TaskError, Worker};
use jetq_tests::Job;

#[tokio::main]
async fn main() {
    jetq_tests::init_logs();
    let builder = match Worker::from_env() {
        Ok(builder) => builder,
        Err(err) => {
            eprintln!("test_worker: {err}");
            std::process::exit(1);
        }
    };
    let url = std::env::var("JETQ_NATS_URL").unwrap_or_default();
    let urls: Vec<&str> = url.split(',').map(str::trim).collect();
    let reporter = match async_nats::connect(urls.as_slice()).await {
        Ok(client) => client,
        Err(err) => {
            eprintln!("test_worker: cannot connect reporter: {err}");
            std::process::exit(1);
        }
    };
    let worker_name = std::env::var("TEST_WORKER_NAME").unwrap_or_else(|_| "worker".into());
    let handler_reporter = reporter.clone();
    let name = worker_name.clone();
    let worker = builder
        .handler(move |job: Job, ctx: TaskContext| {
            let reporter = handler_reporter.clone();
            let name = name.clone();
            async move {
                let line = format!("{} {} {} {}", name, job.n, ctx.attempt(), ctx.id());
                let _ = reporter.publish("test.started", line.clone().into()).await;
                let _ = reporter.flush().await;
                if let Some(ms) = job.note.strip_prefix("sleep:").and_then(|v| v.parse().ok()) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let _ = reporter.publish("test.done", line.into()).await;
                let _ = reporter.flush().await;
                match job.note.as_str() {
                    "fail-once" if ctx.attempt() == 1 => return Err(TaskError::retry("once")),
                    "always-fail" => return Err(TaskError::retry("always")),
                    "fatal" => return Err(TaskError::fatal("fatal")),
                    _ => {}
                }
                Ok::<(), TaskError>(())
            }
        })
        .build()
        .await;
    let worker = match worker {
        Ok(worker) => worker,
        Err(err) => {
            eprintln!("test_worker: {err}");
            std::process::exit(1);
        }
    };
    let _ = reporter.publish("test.ready", worker_name.into()).await;
    let _ = reporter.flush().await;
    worker.run().await;
}
