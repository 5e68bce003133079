//! Transactional enqueue (docs/OUTBOX.md) against a plain enqueue, on the same nats-server in
//! the same run, with a fresh PostgreSQL (initdb in a temporary directory, `fsync` off as in the
//! tests: the figures are jetq's work, not this machine's disk under PostgreSQL).
//!
//! - **latency**: one task at a time. Plain: from calling `Producer::enqueue` until a core
//!   subscriber sees the message on its subject. Outbox: from the return of the transaction's
//!   `COMMIT` (when the request handler is done) until the subscriber sees the message the relay
//!   published (woken by `NOTIFY`). p50 and p99 of each.
//! - **throughput**: `n` tasks. Plain: `enqueue_many`. Outbox: `n` rows already committed (in
//!   transactions of 1,000), then one relay drains the table (default batch 100), rows/s until
//!   the table is empty and the stream holds them all.

use std::time::Duration;

use futures::StreamExt;
use jetq_contract::{ConnectionConfig, StreamSettings, Subjects, Topology};
use jetq_harness::postgres::PostgresServer;
use jetq_outbox::{
    relay::{Relay, RelaySettings},
    Outbox, TableName,
};
use jetq_producer::{EnqueueOptions, Producer};
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use crate::{
    measure::{Outcome, ServerSpec},
    stats::percentile,
    workload::SendEmail,
};

/// One outbox run's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboxCosts {
    pub plain_p50_ms: f64,
    pub plain_p99_ms: f64,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub plain_rate: f64,
    pub relay_rate: f64,
}

/// Runs both measurements on one fresh nats-server and PostgreSQL: `samples` one-at-a-time
/// tasks for the latencies, `n` tasks for the throughputs.
pub(crate) async fn measure(spec: &ServerSpec, samples: u64, n: u64) -> Outcome<OutboxCosts> {
    let server = spec.start(false).await;
    let pg = PostgresServer::start().await;
    let url = server.url();
    let connection = ConnectionConfig::with_url(url.as_str());
    let client = async_nats::connect(url.as_str())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let js = async_nats::jetstream::new(client.clone());
    Topology::new(js.clone(), Subjects::default(), StreamSettings::default())
        .ensure_streams()
        .await
        .map_err(|e| format!("provision: {e}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg.url())
        .await
        .map_err(|e| format!("postgres: {e}"))?;
    jetq_outbox::migrate(&pool, &TableName::default())
        .await
        .map_err(|e| format!("migrate: {e}"))?;
    let producer = Producer::builder()
        .connection(connection.clone())
        .connect()
        .await
        .map_err(|e| format!("producer: {e}"))?;
    let outbox = Outbox::new();

    // Every publish on the task subjects, with the time it was seen.
    let mut wire = client
        .subscribe("jetq.task.>")
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    client.flush().await.map_err(|e| format!("flush: {e}"))?;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let observer = tokio::spawn(async move {
        while let Some(message) = wire.next().await {
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let _ = seen_tx.send((id, Instant::now()));
        }
    });
    // Plain enqueue latency.
    let mut plain = Vec::new();
    for i in 0..samples {
        let id = format!("plain-{i}");
        let start = Instant::now();
        producer
            .enqueue_with(&SendEmail::new(i), EnqueueOptions::new().key(id.clone()))
            .await
            .map_err(|e| format!("enqueue: {e}"))?;
        plain.push(wait_for(&mut seen, &id).await?.duration_since(start));
    }

    // Commit → stream latency, one relay woken by NOTIFY.
    let relay = Relay::connect(connection.clone(), RelaySettings::new(pg.url()))
        .await
        .map_err(|e| format!("relay: {e}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let relay = relay.clone();
        tokio::spawn(async move {
            relay
                .run(async move {
                    let _ = stopped.await;
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the relay's LISTEN is up
    let mut committed = Vec::new();
    for i in 0..samples {
        let id = format!("outbox-{i}");
        let mut tx = pool.begin().await.map_err(|e| format!("begin: {e}"))?;
        outbox
            .enqueue_with(
                &mut tx,
                &SendEmail::new(i),
                EnqueueOptions::new().key(id.clone()),
            )
            .await
            .map_err(|e| format!("outbox: {e}"))?;
        tx.commit().await.map_err(|e| format!("commit: {e}"))?;
        let start = Instant::now();
        committed.push(wait_for(&mut seen, &id).await?.duration_since(start));
    }
    let _ = stop.send(());
    let _ = running.await;
    observer.abort();

    // Throughput: enqueue_many against a relay draining a full table.
    purge(&js).await?;
    let tasks: Vec<SendEmail> = (0..n).map(SendEmail::new).collect();
    let start = Instant::now();
    for result in producer.enqueue_many(&tasks).await {
        result.map_err(|e| format!("enqueue_many: {e}"))?;
    }
    let plain_rate = n as f64 / start.elapsed().as_secs_f64();
    purge(&js).await?;
    for chunk in tasks.chunks(1_000) {
        let mut tx = pool.begin().await.map_err(|e| format!("begin: {e}"))?;
        for task in chunk {
            outbox
                .enqueue(&mut tx, task)
                .await
                .map_err(|e| format!("outbox: {e}"))?;
        }
        tx.commit().await.map_err(|e| format!("commit: {e}"))?;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let running = tokio::spawn(async move {
        relay
            .run(async move {
                let _ = stopped.await;
            })
            .await
    });
    let deadline = start + Duration::from_secs(120 + n / 100);
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jetq_outbox")
            .fetch_one(&pool)
            .await
            .map_err(|e| format!("count: {e}"))?;
        if rows == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the relay left {rows} of {n} rows"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relay_rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = running.await;

    let ms = |samples: &mut Vec<Duration>, q: f64| -> f64 {
        let mut micros: Vec<u64> = samples.iter().map(|d| d.as_micros() as u64).collect();
        micros.sort_unstable();
        percentile(&micros, q).unwrap_or(0) as f64 / 1000.0
    };
    drop(pg);
    drop(server);
    Ok(OutboxCosts {
        plain_p50_ms: ms(&mut plain, 0.5),
        plain_p99_ms: ms(&mut plain, 0.99),
        commit_p50_ms: ms(&mut committed, 0.5),
        commit_p99_ms: ms(&mut committed, 0.99),
        plain_rate,
        relay_rate,
    })
}

/// When the observer saw the task `id` (tasks are sent one at a time: any other is skipped).
async fn wait_for(
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    id: &str,
) -> Outcome<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some((seen_id, at))) if seen_id == id => return Ok(at),
            Ok(Some(_)) => {}
            _ => return Err(format!("task {id} never reached the stream")),
        }
    }
}

async fn purge(js: &async_nats::jetstream::Context) -> Outcome<()> {
    let stream = js
        .get_stream(Subjects::default().tasks_stream())
        .await
        .map_err(|e| format!("stream: {e}"))?;
    stream.purge().await.map_err(|e| format!("purge: {e}"))?;
    Ok(())
}
