//! One measurement each: a fresh nats-server (fresh store), one implementation, one figure.

use std::{
    cell::Cell,
    future::IntoFuture,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy},
    context::PublishAckFuture,
    stream::Stream,
};
use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};
use jetq_contract::{config::TaskRetention, StreamSettings, Subjects, Topology};
use jetq_harness::NatsServer;
use jetq_producer::{EnqueueError, Enqueued, Producer};
use tokio::{task::JoinSet, time::Instant};

use crate::{
    child::{cpu_seconds, ChildWorker},
    worker::WorkerArgs,
    workload::{stream_name, subject, SendEmail, QUEUE, RAW_DURABLE, WARMUP_USER},
    Impl,
};

/// Result type of a measurement; the error says what went wrong.
pub(crate) type Outcome<T> = Result<T, String>;

/// Where and how servers are started.
#[derive(Debug, Clone)]
pub(crate) struct ServerSpec {
    /// The nats-server binary; `None`: the harness's pinned binary.
    pub binary: Option<PathBuf>,
}

impl ServerSpec {
    /// A fresh server with an empty store.
    pub(crate) async fn start(&self, sync_always: bool) -> NatsServer {
        let mut builder = NatsServer::builder().sync_always(sync_always);
        if let Some(binary) = &self.binary {
            builder = builder.binary(binary);
        }
        builder.start().await
    }

    /// Three fresh servers routed into one JetStream cluster, each with `sync_interval:
    /// always`.
    pub(crate) async fn start_cluster(&self) -> Vec<NatsServer> {
        let mut builder = NatsServer::builder().sync_always(true);
        if let Some(binary) = &self.binary {
            builder = builder.binary(binary);
        }
        builder.start_cluster(3).await
    }
}

/// Tasks enqueued untimed before a timed enqueue run, so connection setup and the stream's
/// first block are not part of the figure.
const WARMUP_TASKS: u64 = 200;
/// How often the parent polls the stream while waiting for it to drain.
const POLL: Duration = Duration::from_millis(10);

async fn raw_context(url: &str) -> Outcome<jetstream::Context> {
    // One URL, or several separated by commas (a cluster).
    let addresses = url
        .split(',')
        .map(|one| {
            one.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("server URL {one}: {e}"))
        })
        .collect::<Outcome<Vec<_>>>()?;
    let client = async_nats::connect(addresses)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(jetstream::new(client))
}

/// The task stream, created with exactly the configuration jetq provisions (WorkQueue, file
/// storage, `discard: New`, 2-minute duplicate window), so both twins write to the same kind of
/// stream.
async fn create_task_stream(js: &jetstream::Context) -> Outcome<Stream> {
    create_task_stream_with(js, StreamSettings::default()).await
}

/// [`create_task_stream`] with other settings (Limits retention: the durable drain; three
/// replicas: the cluster rows).
async fn create_task_stream_with(
    js: &jetstream::Context,
    settings: StreamSettings,
) -> Outcome<Stream> {
    let config = Topology::new(js.clone(), Subjects::default(), settings).tasks_stream_config();
    js.get_or_create_stream(config)
        .await
        .map_err(|e| format!("create stream: {e}"))
}

/// The task stream a worker twin pulls from, with the raw twin's durable when it is raw's turn
/// (jetq's worker creates its own).
async fn stream_for(url: &str, imp: Impl) -> Outcome<Stream> {
    let stream = create_task_stream(&raw_context(url).await?).await?;
    if imp == Impl::Raw {
        create_raw_consumer(&stream).await?;
    }
    Ok(stream)
}

/// The raw twin's durable: a plain pull consumer with explicit acks on the email subject.
async fn create_raw_consumer(stream: &Stream) -> Outcome<()> {
    stream
        .create_consumer(pull::Config {
            durable_name: Some(RAW_DURABLE.to_owned()),
            filter_subject: Subjects::default().queue_filter(QUEUE),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("create raw consumer: {e}"))?;
    Ok(())
}

/// Queues `n` email tasks exactly as jetq's producer writes them (same subject, JSON body and
/// the two headers `Nats-Msg-Id` and `Jetq-Enqueued-At`), so jetq and the raw twin drain the
/// very same messages. Published raw (pipelined) because it is the fastest way to fill a
/// stream: the fill is not part of any figure.
async fn prefill(url: &str, n: u64) -> Outcome<()> {
    const CHUNK: u64 = 50_000;
    let js = raw_context(url).await?;
    create_task_stream(&js).await?;
    let subject = subject();
    let mut done = 0;
    while done < n {
        let chunk: Vec<SendEmail> = (done + 1..=(done + CHUNK).min(n))
            .map(SendEmail::new)
            .collect();
        raw_pipelined(&js, &subject, &chunk, 256, true).await?;
        done += chunk.len() as u64;
    }
    Ok(())
}

/// Enqueue, one producer, one at a time, each awaited: tasks/s over `duration`.
pub(crate) async fn enqueue_sequential(
    spec: &ServerSpec,
    sync: bool,
    imp: Impl,
    duration: Duration,
) -> Outcome<f64> {
    let server = spec.start(sync).await;
    let url = server.url();
    let rate = match imp {
        Impl::Jetq => {
            let producer = Producer::builder()
                .url(url.as_str())
                .connect()
                .await
                .map_err(|e| format!("producer: {e}"))?;
            let enqueue = |user| {
                let producer = &producer;
                async move {
                    producer
                        .enqueue(&SendEmail::new(user))
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("enqueue: {e}"))
                }
            };
            for _ in 0..WARMUP_TASKS {
                enqueue(WARMUP_USER).await?;
            }
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < duration {
                n += 1;
                enqueue(n).await?;
            }
            n as f64 / start.elapsed().as_secs_f64()
        }
        Impl::Raw => {
            let js = raw_context(&url).await?;
            create_task_stream(&js).await?;
            let subject = subject();
            // One id per message, warm-up included (the warm-up repeats a user).
            let next_id = std::cell::Cell::new(crate::workload::now_us() << 20);
            let publish = |user| {
                let (js, subject) = (&js, &subject);
                let unique = next_id.get();
                next_id.set(unique + 1);
                async move {
                    let payload = Bytes::from(SendEmail::new(user).to_json());
                    let headers = jetq_headers(unique);
                    js.publish_with_headers(subject.clone(), headers, payload)
                        .await
                        .map_err(|e| format!("publish: {e}"))?
                        .await
                        .map_err(|e| format!("publish ack: {e}"))
                        .map(|_| ())
                }
            };
            for _ in 0..WARMUP_TASKS {
                publish(WARMUP_USER).await?;
            }
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < duration {
                n += 1;
                publish(n).await?;
            }
            n as f64 / start.elapsed().as_secs_f64()
        }
    };
    drop(server);
    Ok(rate)
}

/// What a pipelined enqueue run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piped {
    /// Tasks acked per second.
    pub rate: f64,
    /// CPU of this (the producing) process per task, µs.
    pub client_cpu_us: f64,
    /// CPU of nats-server per task, µs.
    pub server_cpu_us: f64,
}

/// Enqueue, one producer, pipelined with `window` acks outstanding: tasks/s for `n` tasks.
/// `raw_headers` (raw twin only): publish the very message jetq does, with [`jetq_headers`];
/// without them the raw twin publishes the bare body, which costs the server less.
pub(crate) async fn enqueue_pipelined(
    spec: &ServerSpec,
    sync: bool,
    imp: Impl,
    n: u64,
    window: usize,
    raw_headers: bool,
) -> Outcome<Piped> {
    let server = spec.start(sync).await;
    let url = server.url();
    let warmup: Vec<SendEmail> = (0..WARMUP_TASKS)
        .map(|_| SendEmail::new(WARMUP_USER))
        .collect();
    let tasks: Vec<SendEmail> = (1..=n).map(SendEmail::new).collect();
    let server_cpu = || server.pid().and_then(cpu_seconds).unwrap_or(0.0);
    let client_cpu = || cpu_seconds(std::process::id()).unwrap_or(0.0);
    let (elapsed, client, server_used) = match imp {
        Impl::Jetq => {
            let producer = Producer::builder()
                .url(url.as_str())
                .enqueue_window(window)
                .connect()
                .await
                .map_err(|e| format!("producer: {e}"))?;
            let failed = |results: Vec<Result<Enqueued, EnqueueError>>| {
                results.iter().filter(|r| r.is_err()).count()
            };
            if failed(producer.enqueue_many(&warmup).await) > 0 {
                return Err("warm-up enqueue failed".into());
            }
            let (client_before, server_before) = (client_cpu(), server_cpu());
            let start = Instant::now();
            let failures = failed(producer.enqueue_many(&tasks).await);
            let elapsed = start.elapsed();
            if failures > 0 {
                return Err(format!("{failures} of {n} enqueues failed"));
            }
            (
                elapsed,
                client_cpu() - client_before,
                server_cpu() - server_before,
            )
        }
        Impl::Raw => {
            let js = raw_context(&url).await?;
            create_task_stream(&js).await?;
            let subject = subject();
            raw_pipelined(&js, &subject, &warmup, window, raw_headers).await?;
            let (client_before, server_before) = (client_cpu(), server_cpu());
            let start = Instant::now();
            raw_pipelined(&js, &subject, &tasks, window, raw_headers).await?;
            (
                start.elapsed(),
                client_cpu() - client_before,
                server_cpu() - server_before,
            )
        }
    };
    drop(server);
    let per_task = |seconds: f64| seconds * 1e6 / n.max(1) as f64;
    Ok(Piped {
        rate: n as f64 / elapsed.as_secs_f64(),
        client_cpu_us: per_task(client),
        server_cpu_us: per_task(server_used),
    })
}

/// Diagnostic: jetq's producer with `window` concurrent `enqueue` calls instead of one
/// `enqueue_many`: tasks/s for `n` tasks. Tells the cost of the pipeline loop from the cost of
/// preparing and publishing each task.
pub(crate) async fn enqueue_concurrent(
    spec: &ServerSpec,
    sync: bool,
    n: u64,
    window: usize,
) -> Outcome<f64> {
    enqueue_callers(spec, sync, Impl::Jetq, n, window).await
}

/// Concurrent callers each awaiting its own task, as web requests enqueue: `callers` at a time,
/// `n` tasks in all. jetq: `Producer::enqueue` (coalesced into atomic batches on 2.12+). Raw:
/// each caller publishes jetq's very message and awaits its ack.
pub(crate) async fn enqueue_callers(
    spec: &ServerSpec,
    sync: bool,
    imp: Impl,
    n: u64,
    callers: usize,
) -> Outcome<f64> {
    let server = spec.start(sync).await;
    let rate = callers_on(&server.url(), StreamSettings::default(), imp, n, callers).await;
    drop(server);
    rate
}

/// [`enqueue_callers`] on a cluster of three servers on this machine (`sync_interval: always`),
/// the task stream replicated three times: what docs/OPERATIONS.md recommends in production.
/// There the sync is the Raft log's, and the leader writes a batch's proposals as one entry.
pub(crate) async fn enqueue_callers_replicated(
    spec: &ServerSpec,
    imp: Impl,
    n: u64,
    callers: usize,
) -> Outcome<f64> {
    let servers = spec.start_cluster().await;
    let urls = jetq_harness::cluster_url(&servers);
    let settings = StreamSettings {
        stream_replicas: 3,
        ..StreamSettings::default()
    };
    // The cluster elects its meta leader after start: creating the stream fails (or is not
    // answered) until then. jetq's provisioning retry gives up early on a request that times
    // out while the server answers others, so this waits on its own.
    let js = raw_context(&urls).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match create_task_stream_with(&js, settings.clone()).await {
            Ok(_) => break,
            Err(err) if Instant::now() > deadline => {
                return Err(format!("create the replicated stream: {err}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let rate = callers_on(&urls, settings, imp, n, callers).await;
    drop(servers);
    rate
}

/// `callers` concurrent enqueuers each awaiting its task, against the servers at `url`.
async fn callers_on(
    url: &str,
    settings: StreamSettings,
    imp: Impl,
    n: u64,
    callers: usize,
) -> Outcome<f64> {
    let elapsed = match imp {
        Impl::Jetq => {
            let producer = Producer::builder()
                .url(url)
                .streams(settings)
                .connect()
                .await
                .map_err(|e| format!("producer: {e}"))?;
            let run = |users: Vec<u64>| {
                let producer = &producer;
                futures::stream::iter(users)
                    .map(move |user| async move { producer.enqueue(&SendEmail::new(user)).await })
                    .buffer_unordered(callers)
                    .filter(|result| futures::future::ready(result.is_err()))
                    .count()
            };
            if run(vec![WARMUP_USER; WARMUP_TASKS as usize]).await > 0 {
                return Err("warm-up enqueue failed".into());
            }
            let start = Instant::now();
            let failed = run((1..=n).collect()).await;
            if failed > 0 {
                return Err(format!("{failed} of {n} enqueues failed"));
            }
            start.elapsed()
        }
        Impl::Raw => {
            let js = raw_context(url).await?;
            create_task_stream_with(&js, settings).await?;
            let subject = subject();
            let id_base = crate::workload::now_us() << 20;
            let run = |users: Vec<u64>| {
                let (js, subject) = (&js, &subject);
                futures::stream::iter(users.into_iter().enumerate())
                    .map(move |(i, user)| async move {
                        let body = serde_json::to_vec(&SendEmail::new(user)).unwrap_or_default();
                        let ack = js
                            .publish_with_headers(
                                subject.clone(),
                                jetq_headers(id_base + i as u64),
                                body.into(),
                            )
                            .await;
                        match ack {
                            Ok(ack) => ack.await.is_ok(),
                            Err(_) => false,
                        }
                    })
                    .buffer_unordered(callers)
                    .filter(|ok| futures::future::ready(!ok))
                    .count()
            };
            if run(vec![WARMUP_USER; WARMUP_TASKS as usize]).await > 0 {
                return Err("warm-up publish failed".into());
            }
            let start = Instant::now();
            let failed = run((1..=n).collect()).await;
            if failed > 0 {
                return Err(format!("{failed} of {n} publishes failed"));
            }
            start.elapsed()
        }
    };
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// The two headers jetq's producer puts on every task: `Nats-Msg-Id` (the task id, a fresh
/// unique one here) and `Jetq-Enqueued-At` (now). A raw twin sending them publishes the very
/// message jetq does, so the server does the same work for both (its duplicate check and
/// header parsing cost it about a third more than a header-less publish: see BENCHMARKS.md).
fn jetq_headers(unique: u64) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    let id = format!("{unique:026X}");
    map.insert(jetq_contract::headers::MSG_ID, id.as_str());
    map.insert(
        jetq_contract::headers::ENQUEUED_AT,
        jetq_contract::time::now().as_str(),
    );
    map
}

/// The raw twin of `enqueue_many`: serialize, publish, keep at most `window` ack futures
/// outstanding, await every one. With `headers`, each message carries [`jetq_headers`].
async fn raw_pipelined(
    js: &jetstream::Context,
    subject: &str,
    tasks: &[SendEmail],
    window: usize,
    headers: bool,
) -> Outcome<()> {
    let mut in_flight: FuturesUnordered<<PublishAckFuture as IntoFuture>::IntoFuture> =
        FuturesUnordered::new();
    let id_base = crate::workload::now_us() << 20;
    for (i, task) in tasks.iter().enumerate() {
        while in_flight.len() >= window {
            if let Some(ack) = in_flight.next().await {
                ack.map_err(|e| format!("publish ack: {e}"))?;
            }
        }
        let payload = Bytes::from(task.to_json());
        let ack = if headers {
            let map = jetq_headers(id_base + i as u64);
            js.publish_with_headers(subject.to_owned(), map, payload)
                .await
        } else {
            js.publish(subject.to_owned(), payload).await
        }
        .map_err(|e| format!("publish: {e}"))?;
        in_flight.push(ack.into_future());
    }
    while let Some(ack) = in_flight.next().await {
        ack.map_err(|e| format!("publish ack: {e}"))?;
    }
    Ok(())
}

/// What a drain run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drained {
    /// Tasks acked per second, from `GO` until the stream was empty.
    pub rate: f64,
    /// Peak resident set (VmHWM) of the largest worker process, KiB.
    pub peak_rss_kib: u64,
    /// Pull requests (`$JS.API.CONSUMER.MSG.NEXT`) the workers sent, if counted.
    pub pulls: Option<u64>,
    /// CPU seconds of all worker processes (whole life: start-up included).
    pub worker_cpu: f64,
    /// CPU seconds of nats-server from `GO` until the stream was empty.
    pub server_cpu: f64,
}

/// Counts pull requests on the task stream by listening to the API subject they are sent to.
/// Diagnostic only: the server then copies every pull request to this subscriber too.
async fn count_pulls(url: &str) -> Outcome<(Arc<AtomicU64>, tokio::task::JoinHandle<()>)> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut requests = client
        .subscribe(format!("$JS.API.CONSUMER.MSG.NEXT.{}.*", stream_name()))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    client.flush().await.map_err(|e| format!("flush: {e}"))?;
    let pulls = Arc::new(AtomicU64::new(0));
    let counter = pulls.clone();
    let task = tokio::spawn(async move {
        let _client = client;
        while requests.next().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok((pulls, task))
}

/// Drain: `n` tasks queued, `workers` worker processes, timed from `GO` until the stream is
/// empty (every task acked and, on a Limits stream, purged by jetq's workers every 100 ms).
/// `double_ack` (raw twin only): confirmed acks.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn drain(
    spec: &ServerSpec,
    sync: bool,
    imp: Impl,
    workers: usize,
    n: u64,
    concurrency: usize,
    diagnose: bool,
    double_ack: bool,
    retention: TaskRetention,
) -> Outcome<Drained> {
    let server = spec.start(sync).await;
    let url = server.url();
    // The stream first, with its retention; the fill and the twins then find it.
    let settings = StreamSettings {
        task_retention: retention,
        ..StreamSettings::default()
    };
    create_task_stream_with(&raw_context(&url).await?, settings).await?;
    prefill(&url, n).await?;
    let pull_counter = match diagnose {
        true => Some(count_pulls(&url).await?),
        false => None,
    };
    let stream = stream_for(&url, imp).await?;
    let args = WorkerArgs {
        imp,
        url: url.clone(),
        concurrency,
        latency: false,
        hold: Duration::ZERO,
        double_ack,
    };
    let mut children = Vec::new();
    for _ in 0..workers {
        children.push(ChildWorker::start(&args).await?);
    }
    let server_cpu = || server.pid().and_then(cpu_seconds).unwrap_or(0.0);
    let server_cpu_before = server_cpu();
    let start = Instant::now();
    for child in &mut children {
        child.go().await?;
    }
    let timeout = Duration::from_secs(60 + n / 500);
    let result = wait_empty(&stream, &children, start, timeout).await;
    let server_cpu = server_cpu() - server_cpu_before;
    let mut handled = 0;
    let mut peak_rss_kib = 0;
    let mut worker_cpu = 0.0;
    for child in &mut children {
        handled += child.report().await.map(|r| r.tasks).unwrap_or(0);
        peak_rss_kib = peak_rss_kib.max(child.peak_rss_kib().unwrap_or(0));
        worker_cpu += child.cpu_seconds().unwrap_or(0.0);
    }
    for child in children {
        child.kill().await;
    }
    let pulls = match pull_counter {
        Some((pulls, task)) => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            task.abort();
            Some(pulls.load(Ordering::Relaxed))
        }
        None => None,
    };
    drop(server);
    let elapsed = result?;
    if handled < n {
        return Err(format!(
            "stream empty but workers report {handled} of {n} tasks"
        ));
    }
    Ok(Drained {
        rate: n as f64 / elapsed.as_secs_f64(),
        peak_rss_kib,
        pulls,
        worker_cpu,
        server_cpu,
    })
}

/// Polls until the stream holds no message; returns the time since `start`.
async fn wait_empty(
    stream: &Stream,
    children: &[ChildWorker],
    start: Instant,
    timeout: Duration,
) -> Outcome<Duration> {
    loop {
        let info = stream
            .get_info()
            .await
            .map_err(|e| format!("stream info: {e}"))?;
        if info.state.messages == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "{} tasks still queued after {timeout:?}",
                info.state.messages
            ));
        }
        if children.iter().any(|c| c.rss_kib().is_none()) {
            return Err("a worker process died".into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What a latency run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Enqueues completed per second over the sending period.
    pub achieved_rate: f64,
    pub samples: u64,
    /// Enqueues that returned an error (ack timeout under overload).
    pub failed: u64,
}

/// End-to-end latency at a steady `rate` for `duration`: handler start minus the time taken
/// just before the enqueue call, measured in one worker process; open-loop sending (each
/// enqueue is its own tokio task, as concurrent web requests would be).
pub(crate) async fn latency(
    spec: &ServerSpec,
    sync: bool,
    imp: Impl,
    rate: f64,
    duration: Duration,
    concurrency: usize,
) -> Outcome<Latency> {
    let server = spec.start(sync).await;
    let url = server.url();
    let stream = stream_for(&url, imp).await?;
    let args = WorkerArgs {
        imp,
        url: url.clone(),
        concurrency,
        latency: true,
        hold: Duration::ZERO,
        double_ack: false,
    };
    let mut child = ChildWorker::start(&args).await?;
    child.go().await?;
    let sender = match imp {
        Impl::Jetq => Sender::Jetq(Arc::new(
            Producer::builder()
                .url(url.as_str())
                .connect()
                .await
                .map_err(|e| format!("producer: {e}"))?,
        )),
        Impl::Raw => Sender::Raw(Arc::new((raw_context(&url).await?, subject()))),
    };
    // Warm-up traffic at the same rate, not recorded by the worker.
    let warmup = send_paced(&sender, rate, Duration::from_millis(500), false).await;
    let (sent, failed, send_time) = send_paced(&sender, rate, duration, true).await;
    let drained = wait_empty(
        &stream,
        std::slice::from_ref(&child),
        Instant::now(),
        Duration::from_secs(120),
    )
    .await;
    let report = child.report().await;
    child.kill().await;
    drop(server);
    drained?;
    let report = report?;
    // A failed enqueue (ack timeout) may still have been stored: only fewer samples than
    // successful enqueues means tasks went missing.
    if report.samples < sent - failed {
        return Err(format!(
            "{} enqueued but {} recorded",
            sent - failed,
            report.samples
        ));
    }
    let failed = failed + warmup.1;
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Latency {
        p50_ms: ms(report.p50_us),
        p99_ms: ms(report.p99_us),
        p999_ms: ms(report.p999_us),
        max_ms: ms(report.max_us),
        achieved_rate: (sent - failed.min(sent)) as f64 / send_time.as_secs_f64(),
        samples: report.samples,
        failed,
    })
}

#[derive(Clone)]
enum Sender {
    Jetq(Arc<Producer>),
    Raw(Arc<(jetstream::Context, String)>),
}

impl Sender {
    async fn send(self, user: u64) -> bool {
        let email = SendEmail::new(user);
        match self {
            Sender::Jetq(producer) => producer.enqueue(&email).await.is_ok(),
            Sender::Raw(raw) => match raw.0.publish(raw.1.clone(), email.to_json().into()).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// Starts one enqueue every `1/rate` s for `duration`, each in its own task, and waits for all.
/// Returns (sent, failed, time from the first send to the last completion).
async fn send_paced(
    sender: &Sender,
    rate: f64,
    duration: Duration,
    measured: bool,
) -> (u64, u64, Duration) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut sends = JoinSet::new();
    let mut failed = 0;
    let mut i: u64 = 0;
    loop {
        let due = start + period.mul_f64(i as f64);
        if due >= start + duration {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        i += 1;
        let user = if measured { i } else { WARMUP_USER };
        sends.spawn(sender.clone().send(user));
        while let Some(done) = sends.try_join_next() {
            failed += u64::from(!done.unwrap_or(false));
        }
    }
    while let Some(done) = sends.join_next().await {
        failed += u64::from(!done.unwrap_or(false));
    }
    (i, failed, start.elapsed())
}

/// What a memory run measured, KiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// VmRSS of a running worker with nothing to do, 2 s after it started pulling.
    pub idle_kib: u64,
    /// Highest VmRSS sampled while every slot was busy with a `hold`-long task.
    pub busy_kib: u64,
}

/// Worker RSS idle, then at full concurrency (tasks that take `hold` each, `n` of them).
pub(crate) async fn memory(
    spec: &ServerSpec,
    imp: Impl,
    concurrency: usize,
    hold: Duration,
    n: u64,
) -> Outcome<Memory> {
    let server = spec.start(true).await;
    let url = server.url();
    let stream = stream_for(&url, imp).await?;
    let args = WorkerArgs {
        imp,
        url: url.clone(),
        concurrency,
        latency: false,
        hold,
        double_ack: false,
    };
    let mut child = ChildWorker::start(&args).await?;
    child.go().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = child.rss_kib().ok_or("worker died")?;
    let filled = Cell::new(false);
    let fill = async {
        let result = prefill(&url, n).await;
        filled.set(true);
        result
    };
    let sample = async {
        let mut busy_kib = 0;
        let deadline = Instant::now() + Duration::from_secs(120 + n / 100);
        loop {
            busy_kib = child.rss_kib().ok_or("worker died")?.max(busy_kib);
            if filled.get() && stream.get_info().await.is_ok_and(|i| i.state.messages == 0) {
                return Ok::<u64, String>(busy_kib);
            }
            if Instant::now() > deadline {
                return Err("memory run did not finish in time".to_owned());
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let (filled, busy_kib) = tokio::join!(fill, sample);
    let busy_kib = busy_kib?;
    let report = child.report().await;
    child.kill().await;
    drop(server);
    filled?;
    let tasks = report?.tasks;
    if tasks < n {
        return Err(format!("{tasks} of {n} tasks handled"));
    }
    Ok(Memory { idle_kib, busy_kib })
}

/// How late delayed tasks started, relative to their due time, in ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lateness {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

/// Delayed-task fire accuracy: `n` tasks enqueued with `Producer::enqueue_in`, due between
/// `lead` and `lead + spread` from now, released by a jetq scheduler process and run by a jetq
/// worker process; handler start minus due time (a task never starts early: those count 0).
pub(crate) async fn delayed_accuracy(
    spec: &ServerSpec,
    sync: bool,
    n: u64,
    lead: Duration,
    spread: Duration,
    concurrency: usize,
) -> Outcome<Lateness> {
    let server = spec.start(sync).await;
    let url = server.url();
    let mut scheduler = ChildWorker::start_scheduler(&url).await?;
    scheduler.go().await?;
    let args = WorkerArgs {
        imp: Impl::Jetq,
        url: url.clone(),
        concurrency,
        latency: true,
        hold: Duration::ZERO,
        double_ack: false,
    };
    let mut worker = ChildWorker::start(&args).await?;
    worker.go().await?;
    let producer = Producer::builder()
        .url(url.as_str())
        .connect()
        .await
        .map_err(|e| format!("producer: {e}"))?;
    let start = Instant::now();
    let enqueue_all = futures::stream::iter(0..n)
        .map(|i| {
            let producer = &producer;
            async move {
                let delay = lead + spread.mul_f64(i as f64 / n.max(1) as f64);
                let mut email = SendEmail::new(i + 1);
                // The worker reports handler start minus this: the due time.
                email.sent_at_us = crate::workload::now_us() + delay.as_micros() as u64;
                producer
                    .enqueue_in(delay, &email)
                    .await
                    .map(drop)
                    .map_err(|e| format!("enqueue_in: {e}"))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<Result<(), String>>>();
    // A server that stops answering publishes (its store full) must not hang the run.
    let enqueued = tokio::time::timeout(lead + Duration::from_secs(30), enqueue_all)
        .await
        .map_err(|_| format!("enqueueing {n} delayed tasks did not finish"))?;
    if let Some(Err(err)) = enqueued.into_iter().find(Result::is_err) {
        return Err(err);
    }
    if start.elapsed() > lead {
        return Err(format!(
            "enqueueing {n} delayed tasks took {:?}, longer than the lead {lead:?}",
            start.elapsed()
        ));
    }
    let deadline = start + lead + spread + Duration::from_secs(30);
    let report = loop {
        let report = worker.report().await?;
        if report.samples >= n {
            break report;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {n} delayed tasks ran within 30 s of the last due time",
                report.samples
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    worker.kill().await;
    scheduler.kill().await;
    drop(server);
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Lateness {
        p50_ms: ms(report.p50_us),
        p99_ms: ms(report.p99_us),
        max_ms: ms(report.max_us),
        samples: report.samples,
    })
}

/// What the scheduler-memory run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchedulerMemory {
    /// VmRSS of the scheduler process 2 s after it started, nothing pending, KiB.
    pub idle_kib: u64,
    /// VmRSS with every task pending, 5 s after the last enqueue, KiB.
    pub pending_kib: u64,
    /// Peak VmRSS (VmHWM) over the whole run, KiB.
    pub peak_kib: u64,
    /// Delayed enqueues per second (`enqueue_in`, 256 at once).
    pub enqueue_rate: f64,
}

/// The scheduler's memory with `n` delayed tasks pending (due within the next hour, spread
/// over its seconds), enqueued while it runs.
pub(crate) async fn scheduler_memory(spec: &ServerSpec, n: u64) -> Outcome<SchedulerMemory> {
    let server = spec.start(false).await;
    let url = server.url();
    let mut scheduler = ChildWorker::start_scheduler(&url).await?;
    scheduler.go().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = scheduler.rss_kib().ok_or("scheduler died")?;
    let producer = Producer::builder()
        .url(url.as_str())
        .connect()
        .await
        .map_err(|e| format!("producer: {e}"))?;
    let start = Instant::now();
    let hour = Duration::from_secs(3600);
    let enqueue_all = futures::stream::iter(0..n)
        .map(|i| {
            let producer = &producer;
            async move {
                let delay = Duration::from_secs(60) + hour.mul_f64(i as f64 / n.max(1) as f64);
                producer.enqueue_in(delay, &SendEmail::new(i + 1)).await
            }
        })
        .buffer_unordered(256)
        .filter(|result| futures::future::ready(result.is_err()))
        .count();
    // A server that stops answering publishes (its store full: JetStream's default limit is
    // 75% of the disk space free at its start) must not hang the run.
    let limit = Duration::from_secs(60 + n / 10_000);
    let failed = tokio::time::timeout(limit, enqueue_all)
        .await
        .map_err(|_| {
            format!("enqueueing {n} delayed tasks did not finish within {limit:?} (store full?)")
        })?;
    let enqueue_rate = n as f64 / start.elapsed().as_secs_f64();
    if failed > 0 {
        return Err(format!("{failed} of {n} delayed enqueues failed"));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pending_kib = scheduler.rss_kib().ok_or("scheduler died")?;
    let peak_kib = scheduler.peak_rss_kib().unwrap_or(0);
    let js = raw_context(&url).await?;
    let pending = js
        .get_stream(Subjects::default().delayed_stream())
        .await
        .map_err(|e| format!("delayed stream: {e}"))?
        .get_info()
        .await
        .map_err(|e| format!("delayed stream info: {e}"))?
        .state
        .messages;
    scheduler.kill().await;
    drop(server);
    if pending < n {
        return Err(format!("only {pending} of {n} delayed tasks pending"));
    }
    Ok(SchedulerMemory {
        idle_kib,
        pending_kib,
        peak_kib,
        enqueue_rate,
    })
}
