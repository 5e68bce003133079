//! The cost per task of flow control (docs/FLOW_CONTROL.md) against a plain queue, on the same
//! server in the same run: enqueue one by one with and without a unique key (and with a
//! debounce key: a delayed publish plus the key's read and write), and drain in one
//! in-process worker with no limit, a rate limit and a concurrency limit set so high that no
//! task ever waits — so the figures are the bookkeeping alone (the KV round trips); and drain
//! the same tasks spread over the three priority levels (PROTOCOL §12: three durables pulled by
//! priority) and all at `high`.

use std::time::{Duration, Instant};

use jetq_consumer::{ConcurrencyLimit, Limits, RateLimit, TaskContext, TaskError, Worker};
use jetq_producer::{EnqueueOptions, Priority, Producer, RawTask, Unique, UniqueScope};

use crate::{
    measure::{Outcome, ServerSpec},
    workload::SendEmail,
};

/// One flow-control run's figures, tasks per second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowCosts {
    pub enqueue_plain: f64,
    pub enqueue_unique: f64,
    pub enqueue_debounced: f64,
    pub drain_plain: f64,
    pub drain_rate_limited: f64,
    pub drain_concurrency_limited: f64,
    /// Tasks at high, normal and low in turn.
    pub drain_three_levels: f64,
    /// Every task at high.
    pub drain_high: f64,
}

/// Runs every flow measurement on one fresh server: sequential enqueues for `duration` each,
/// drains of `n` tasks each.
pub(crate) async fn measure(
    spec: &ServerSpec,
    sync: bool,
    duration: Duration,
    n: u64,
) -> Outcome<FlowCosts> {
    let server = spec.start(sync).await;
    let url = server.url();
    let producer = Producer::builder()
        .url(url.as_str())
        .connect()
        .await
        .map_err(|e| format!("producer: {e}"))?;
    let enqueue_plain = enqueue_rate(&producer, duration, |_| EnqueueOptions::new()).await?;
    let enqueue_unique = enqueue_rate(&producer, duration, |i| {
        EnqueueOptions::new().unique(Unique::key(format!("bench:{i}")))
    })
    .await?;
    let debounce = UniqueScope::debounce(Duration::from_secs(3600)).map_err(|e| e.to_string())?;
    let enqueue_debounced = enqueue_rate(&producer, duration, |i| {
        EnqueueOptions::new().unique(Unique::key(format!("debounce:{i}")).scope(debounce))
    })
    .await?;
    purge(&url).await?;
    let drain_plain = drain_rate(&producer, &url, n, Limits::new(), |_| Priority::Normal).await?;
    let drain_three_levels = drain_rate(&producer, &url, n, Limits::new(), |i| {
        Priority::ALL[(i % 3) as usize]
    })
    .await?;
    let drain_high = drain_rate(&producer, &url, n, Limits::new(), |_| Priority::High).await?;
    let generous = RateLimit::new(1e9, u32::MAX).map_err(|e| e.to_string())?;
    let drain_rate_limited = drain_rate(&producer, &url, n, Limits::new().rate(generous), |_| {
        Priority::Normal
    })
    .await?;
    let wide = ConcurrencyLimit::new(u32::MAX).map_err(|e| e.to_string())?;
    let drain_concurrency_limited =
        drain_rate(&producer, &url, n, Limits::new().concurrency(wide), |_| {
            Priority::Normal
        })
        .await?;
    drop(server);
    Ok(FlowCosts {
        enqueue_plain,
        enqueue_unique,
        enqueue_debounced,
        drain_plain,
        drain_rate_limited,
        drain_concurrency_limited,
        drain_three_levels,
        drain_high,
    })
}

async fn enqueue_rate(
    producer: &Producer,
    duration: Duration,
    options: impl Fn(u64) -> EnqueueOptions,
) -> Outcome<f64> {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < duration {
        n += 1;
        producer
            .enqueue_with(&SendEmail::new(n), options(n))
            .await
            .map_err(|e| format!("enqueue: {e}"))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn purge(url: &str) -> Outcome<()> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(jetq_contract::Subjects::default().tasks_stream())
        .await
        .map_err(|e| format!("stream: {e}"))?;
    stream.purge().await.map_err(|e| format!("purge: {e}"))?;
    Ok(())
}

/// Queues `n` tasks at the levels `level` picks, then drains them with one in-process worker
/// under `limits`.
async fn drain_rate(
    producer: &Producer,
    url: &str,
    n: u64,
    limits: Limits,
    level: impl Fn(u64) -> Priority,
) -> Outcome<f64> {
    if (1..=n).all(|i| level(i) == Priority::Normal) {
        let tasks: Vec<SendEmail> = (1..=n).map(SendEmail::new).collect();
        for result in producer.enqueue_many(&tasks).await {
            result.map_err(|e| format!("prefill: {e}"))?;
        }
    } else {
        let mut tasks = Vec::with_capacity(n as usize);
        for i in 1..=n {
            let payload = serde_json::to_vec(&SendEmail::new(i)).map_err(|e| e.to_string())?;
            tasks.push(RawTask {
                queue: <SendEmail as jetq_contract::Task>::QUEUE.into(),
                task: <SendEmail as jetq_contract::Task>::NAME.into(),
                payload: payload.into(),
                options: EnqueueOptions::new().priority(level(i)),
            });
        }
        for result in producer.enqueue_many_raw(tasks).await {
            result.map_err(|e| format!("prefill: {e}"))?;
        }
    }
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let worker = Worker::builder()
        .url(url)
        .concurrency(64)
        .handler(move |_email: SendEmail, _ctx: TaskContext| {
            let done_tx = done_tx.clone();
            async move {
                done_tx.send(()).ok();
                Ok::<(), TaskError>(())
            }
        })
        .limits::<SendEmail>(limits)
        .build()
        .await
        .map_err(|e| format!("worker: {e}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let start = Instant::now();
    let timeout = Duration::from_secs(60 + n / 200);
    for i in 0..n {
        match tokio::time::timeout(timeout.saturating_sub(start.elapsed()), done_rx.recv()).await {
            Ok(Some(())) => {}
            _ => {
                return Err(format!(
                    "drain of {n} tasks did not finish in {timeout:?} ({i} done)"
                ))
            }
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = run.await;
    purge(url).await?;
    Ok(rate)
}
