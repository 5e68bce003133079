//! A worker process for the workflow tests (tests/tests/workflow_*.rs). It runs:
//!
//! - `Job` (batch members): `note` = `fail` dead-letters it at once (fatal), `sleep:<ms>` sleeps,
//!   `result` leaves the result `{"n": n}`, `fail_unless_replayed` dead-letters it unless it is
//!   a replay (id `replay:…`); reports `"<worker> <n> <attempt>"` on `test.member`
//!   when it starts;
//! - `Done` (callbacks): reports `{"id","which","batch","sequence","attempt"}` on
//!   `test.callback`;
//! - `Step` (chain links): reports `{"name","previous","attempt"}` on `test.step`.
//!
//! `JETQ_TEST_FAULT=<point>[:<n>]` makes it exit at the n-th time it reaches a fault point of
//! the workflow engine (`after_marker`, `after_count`, `before_callback_publish`,
//! `after_callback_publish`, `before_parent`, `after_link_publish`), as if killed. It says `test.ready` with its name when running.

use std::time::Duration;

use jetq_consumer::{TaskContext, TaskError, Worker};
use jetq_tests::{
    workflow::{Done, Step},
    Job,
};

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("workflow_worker: {message}");
    std::process::exit(1);
}

#[tokio::main]
async fn main() {
    jetq_tests::init_logs();
    let builder = Worker::from_env().unwrap_or_else(|err| fail(err));
    let url = std::env::var("JETQ_NATS_URL").unwrap_or_default();
    let reporter = async_nats::connect(url.as_str())
        .await
        .unwrap_or_else(|err| fail(format!("cannot connect reporter: {err}")));
    let name = std::env::var("TEST_WORKER_NAME").unwrap_or_else(|_| "worker".into());
    let (members, callbacks, steps) = (reporter.clone(), reporter.clone(), reporter.clone());
    let member_name = name.clone();
    let worker = builder
        .handler(move |job: Job, ctx: TaskContext| {
            let reporter = members.clone();
            let name = member_name.clone();
            async move {
                let report = format!("{name} {} {}", job.n, ctx.attempt());
                let _ = reporter.publish("test.member", report.into()).await;
                let _ = reporter.flush().await;
                if let Some(ms) = job.note.strip_prefix("sleep:").and_then(|v| v.parse().ok()) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                match job.note.as_str() {
                    "fail" => return Err(TaskError::fatal("asked to fail")),
                    "fail_unless_replayed" if !ctx.id().starts_with("replay:") => {
                        return Err(TaskError::fatal("asked to fail until replayed"))
                    }
                    "result" => ctx
                        .set_result(&serde_json::json!({ "n": job.n }))
                        .map_err(TaskError::fatal)?,
                    _ => {}
                }
                Ok::<(), TaskError>(())
            }
        })
        .handler(move |done: Done, ctx: TaskContext| {
            let reporter = callbacks.clone();
            async move {
                let report = serde_json::json!({"id": ctx.id(), "which": done.which, "batch": done.batch, "sequence": ctx.sequence(), "attempt": ctx.attempt()});
                let _ = reporter
                    .publish("test.callback", report.to_string().into())
                    .await;
                let _ = reporter.flush().await;
                Ok::<(), TaskError>(())
            }
        })
        .handler(move |step: Step, ctx: TaskContext| {
            let reporter = steps.clone();
            async move {
                let report = serde_json::json!({"name": step.name, "previous": step.previous, "attempt": ctx.attempt()});
                let _ = reporter.publish("test.step", report.to_string().into()).await;
                let _ = reporter.flush().await;
                if step.fail {
                    return Err(TaskError::fatal("asked to fail"));
                }
                if ctx.is_tracked() {
                    ctx.set_result(&serde_json::json!({ "from": step.name }))
                        .map_err(TaskError::fatal)?;
                }
                Ok::<(), TaskError>(())
            }
        })
        .build()
        .await
        .unwrap_or_else(|err| fail(err));
    let _ = reporter.publish("test.ready", name.into()).await;
    let _ = reporter.flush().await;
    worker.run().await;
}
