//! Shared fixtures of the integration tests: task types, a worker/producer factory bound to a
//! test server, and bounded waits. Everything here talks to a real nats-server started by
//! `jetq-harness`.

use std::{
    future::{Future, Ready},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream::{self, message::StreamMessage};
use jetq_consumer::{TaskContext, TaskError, Worker, WorkerBuilder, WorkerSettings};
use jetq_contract::{ConnectionConfig, RetryPolicy, StreamSettings, Subjects, Task, TaskOptions};
use jetq_producer::Producer;
use serde::{Deserialize, Serialize};

pub use jetq_harness::{eventually, NatsServer};

pub mod otel;
pub mod workflow;

/// The longest any single awaited event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test loudly if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Receives the next value from a channel within [`WAIT`].
pub async fn next<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>, what: &str) -> T {
    within(WAIT, what, rx.recv())
        .await
        .unwrap_or_else(|| panic!("channel closed while waiting for {what}"))
}

/// Installs a test log subscriber once (`RUST_LOG` controls it).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A task whose handler behaviour the test decides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    /// A number the test picks (often the handler's instruction or the task's index).
    pub n: u64,
    /// Free text, e.g. to make a payload larger or say what the task is for.
    #[serde(default)]
    pub note: String,
}

impl Task for Job {
    const NAME: &'static str = "job";
    const QUEUE: &'static str = "work";
    fn options() -> TaskOptions {
        TaskOptions::default()
            .max_attempts(3)
            .timeout(Duration::from_secs(10))
            .retry(RetryPolicy::constant(Duration::from_millis(50)).jitter(0.0))
    }
}

/// A second type on another queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Email {
    /// The recipient.
    pub to: String,
}

impl Task for Email {
    const NAME: &'static str = "send_email";
    const QUEUE: &'static str = "emails";
}

/// Connection settings for a test server.
pub fn connection(server: &NatsServer) -> ConnectionConfig {
    ConnectionConfig {
        request_timeout: Duration::from_secs(2),
        ..ConnectionConfig::with_url(server.url())
    }
}

/// Worker settings suited to tests: short ack_wait and pull expiry so redeliveries and
/// shutdowns happen in seconds.
pub fn fast_settings() -> WorkerSettings {
    WorkerSettings {
        concurrency: 4,
        ack_wait: Duration::from_secs(3),
        fetch_expires: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerSettings::default()
    }
}

/// A producer connected to the test server.
pub async fn producer(server: &NatsServer) -> Producer {
    Producer::builder()
        .connection(connection(server))
        .connect()
        .await
        .expect("producer connects to the test server")
}

/// A worker builder connected to the test server with [`fast_settings`].
pub fn worker(server: &NatsServer) -> WorkerBuilder {
    Worker::builder()
        .connection(connection(server))
        .streams(StreamSettings::default())
        .settings(fast_settings())
}

/// Runs a worker in a task of this runtime until the sender is used or dropped; the handle
/// ends when the worker has stopped (see [`stop_worker`]).
pub fn spawn_worker(
    worker: Worker,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}

/// Stops a worker started by [`spawn_worker`] and waits (within [`WAIT`]) until every attempt
/// has finished.
pub async fn stop_worker(stop: tokio::sync::oneshot::Sender<()>, run: tokio::task::JoinHandle<()>) {
    let _ = stop.send(());
    within(WAIT, "the worker to stop", run)
        .await
        .expect("worker task ends without panicking");
}

/// How many times a handler ran; clones share one count.
#[derive(Debug, Clone, Default)]
pub struct RunCount(Arc<AtomicU64>);

impl RunCount {
    /// A count at zero.
    pub fn new() -> RunCount {
        RunCount::default()
    }

    /// Counts one run.
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// The runs counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A [`Job`] handler that counts each run in `runs` and ends the attempt with what `outcome`
/// returns for its context (`|_| ok()` to succeed, `|_| Err(TaskError::retry(..))` to fail).
pub fn counting_handler<O>(
    runs: &RunCount,
    outcome: O,
) -> impl Fn(Job, TaskContext) -> Ready<Result<(), TaskError>> + Send + Sync + 'static
where
    O: Fn(&TaskContext) -> Result<(), TaskError> + Send + Sync + 'static,
{
    let runs = runs.clone();
    move |_job: Job, ctx: TaskContext| {
        runs.add();
        std::future::ready(outcome(&ctx))
    }
}

/// A [`Job`] handler that sends what it saw ([`seen`]) on `tx` and ends the attempt with what
/// `outcome` returns for its context.
pub fn recording_handler<O>(
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
    outcome: O,
) -> impl Fn(Job, TaskContext) -> Ready<Result<(), TaskError>> + Send + Sync + 'static
where
    O: Fn(&TaskContext) -> Result<(), TaskError> + Send + Sync + 'static,
{
    move |job: Job, ctx: TaskContext| {
        tx.send(seen(&job, &ctx)).ok();
        std::future::ready(outcome(&ctx))
    }
}

/// What a handler saw, sent to the test through a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The task id.
    pub id: String,
    /// The task's [`Job::n`].
    pub n: u64,
    /// The attempt number (1 for the first).
    pub attempt: u32,
    /// When the handler saw it.
    pub at: std::time::Instant,
}

/// A handler context summary.
pub fn seen(job: &Job, ctx: &TaskContext) -> Seen {
    Seen {
        id: ctx.id().to_owned(),
        n: job.n,
        attempt: ctx.attempt(),
        at: std::time::Instant::now(),
    }
}

/// A raw JetStream context on the test server.
pub async fn raw_jetstream(server: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(server.url())
        .await
        .expect("raw client connects");
    jetstream::new(client)
}

/// Every message currently in a stream, in sequence order.
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<StreamMessage> {
    let mut stream = js.get_stream(stream).await.expect("stream exists");
    let info = stream.info().await.expect("stream info").clone();
    let mut messages = Vec::new();
    if info.state.messages == 0 {
        return messages;
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            messages.push(message);
        }
    }
    messages
}

/// Number of messages in a stream.
pub async fn stream_len(js: &jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("stream exists");
    stream.info().await.expect("stream info").state.messages
}

/// Waits until the dead-letter stream holds `count` messages and returns them.
pub async fn dead_letters(js: &jetstream::Context, count: u64) -> Vec<StreamMessage> {
    let subjects = Subjects::default();
    let name = subjects.dead_stream();
    eventually(WAIT, "dead letters", || {
        let js = js.clone();
        let name = name.clone();
        async move { (stream_len(&js, &name).await >= count).then_some(()) }
    })
    .await;
    stream_messages(js, &name).await
}

/// A header of a stream message as a string.
pub fn header(message: &StreamMessage, name: &str) -> Option<String> {
    message.headers.get(name).map(|v| v.as_str().to_owned())
}

/// A handler result that never fails, for type inference in closures.
pub fn ok() -> Result<(), TaskError> {
    Ok(())
}

/// A scheduler builder bound to the test server: no delayed-task release unless asked, a
/// one-second misfire grace and a fast file poll.
pub fn scheduler(server: &NatsServer) -> jetq_scheduler::SchedulerBuilder {
    jetq_scheduler::Scheduler::builder()
        .connection(connection(server))
        .streams(StreamSettings::default())
        .release_delayed(false)
        .misfire_grace(Duration::from_secs(1))
        .schedules_poll(Duration::from_millis(100))
}

/// A scheduler running in a task of this runtime. Aborting the task drops everything the
/// scheduler owns at once, as a crash would; [`RunningScheduler::stop`] shuts it down cleanly.
pub struct RunningScheduler {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// Triggers a reload of the schedules file (as SIGHUP does).
    pub reload: jetq_scheduler::ReloadHandle,
}

impl RunningScheduler {
    /// Builds and starts a scheduler.
    pub async fn start(builder: jetq_scheduler::SchedulerBuilder) -> RunningScheduler {
        Self::run(builder.build().await.expect("scheduler builds"))
    }

    /// Starts a scheduler that is already built (connected and provisioned).
    pub fn run(scheduler: jetq_scheduler::Scheduler) -> RunningScheduler {
        let reload = scheduler.reload_handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(scheduler.run_until(async move {
            let _ = stopped.await;
        }));
        RunningScheduler {
            stop: Some(stop),
            task,
            reload,
        }
    }

    /// Kills it: the task is aborted mid-whatever.
    pub async fn kill(mut self) {
        self.stop.take();
        self.task.abort();
        let _ = self.task.await;
    }

    /// Stops it cleanly and waits (bounded) until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within(WAIT, "scheduler shutdown", &mut self.task)
            .await
            .expect("scheduler task ends without panicking");
    }
}

/// The value of a header of a stream message, or a test failure naming it.
pub fn required_header(message: &StreamMessage, name: &str) -> String {
    header(message, name).unwrap_or_else(|| panic!("message {} lacks {name}", message.sequence))
}
