//! Failover in a 3-node JetStream cluster on loopback ports with replicated (R3) streams: the
//! stream leader is killed under load, then a second node, then both come back. No
//! acknowledged task is lost and processing resumes without operator action. While only one
//! node is up there is no quorum: enqueues fail with a clear error (never hang) and nothing is
//! delivered until a second node returns.

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use jetq_consumer::Worker;
use jetq_contract::{ConnectionConfig, StreamSettings};
use jetq_producer::{EnqueueError, Producer};
use jetq_tests::*;

async fn cluster() -> Vec<NatsServer> {
    let route_ports: Vec<u16> = (0..3).map(|_| jetq_harness::free_port()).collect();
    let routes = route_ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(", ");
    let builders = (0..3).map(|i| {
        NatsServer::builder().extra_config(format!(
            "server_name: n{i}\ncluster {{\n  name: jetq\n  listen: 127.0.0.1:{}\n  routes: [{routes}]\n}}\n",
            route_ports[i]
        ))
    });
    futures::future::join_all(builders.map(|b| b.start())).await
}

fn urls(servers: &[NatsServer]) -> String {
    servers
        .iter()
        .map(|s| s.url())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_and_a_second_node_loses_no_acknowledged_task() {
    init_logs();
    let mut servers = cluster().await;
    let connection = ConnectionConfig {
        request_timeout: Duration::from_secs(2),
        ..ConnectionConfig::with_url(urls(&servers))
    };
    let streams = StreamSettings {
        stream_replicas: 3,
        ..StreamSettings::default()
    };
    // The cluster elects its meta leader after startup: provisioning succeeds once it has.
    let producer = eventually(
        Duration::from_secs(30),
        "the cluster to accept R3 streams",
        || {
            let connection = connection.clone();
            let streams = streams.clone();
            async move {
                Producer::builder()
                    .connection(connection)
                    .streams(streams)
                    .publish_attempts(3)
                    .connect()
                    .await
                    .ok()
            }
        },
    )
    .await;
    let mut done_rx = common::recording_worker(
        Worker::builder()
            .connection(connection.clone())
            .streams(streams.clone())
            .settings(fast_settings()),
    )
    .await;

    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let enqueuer = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut errors = 0u32;
            let mut slowest = Duration::ZERO;
            for n in 0..600u64 {
                let started = Instant::now();
                match producer
                    .enqueue(&Job {
                        n,
                        note: String::new(),
                    })
                    .await
                {
                    Ok(_) => acked_tx.send(n).unwrap(),
                    Err(err) => {
                        assert!(
                            matches!(
                                err,
                                EnqueueError::Timeout { .. }
                                    | EnqueueError::NotConnected { .. }
                                    | EnqueueError::NoStream { .. }
                                    | EnqueueError::Rejected { .. }
                            ),
                            "unexpected error kind: {err}"
                        );
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                slowest = slowest.max(started.elapsed());
            }
            (errors, slowest)
        })
    };
    let mut acked = HashSet::new();
    while acked.len() < 100 {
        acked.insert(next(&mut acked_rx, "acks before the failover").await);
    }

    // Kill the task stream's leader.
    let js = raw_jetstream(&servers[0]).await;
    let mut stream = js.get_stream("JETQ_TASKS").await.unwrap();
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("a leader");
    let leader_index: usize = leader.trim_start_matches('n').parse().unwrap();
    servers[leader_index].kill().await;
    let killed_at = Instant::now();
    while acked.len() < 250 {
        acked.insert(
            next(
                &mut acked_rx,
                "acks after the leader died (new leader elected)",
            )
            .await,
        );
    }
    let leader_recovery = killed_at.elapsed();

    // Kill a second node: no quorum.
    let second = (leader_index + 1) % 3;
    servers[second].kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = acked.len();
    while let Ok(n) = acked_rx.try_recv() {
        acked.insert(n);
    }
    let during_outage = acked.len() - before;

    servers[leader_index].restart().await;
    servers[second].restart().await;
    let restored_at = Instant::now();
    let (errors, slowest) = within(Duration::from_secs(120), "the enqueue loop", enqueuer)
        .await
        .unwrap();
    while let Ok(n) = acked_rx.try_recv() {
        acked.insert(n);
    }
    assert!(
        slowest < Duration::from_secs(8),
        "an enqueue hung for {slowest:?} (3 attempts × 2 s)"
    );

    let processed = common::await_processed(&acked, &mut done_rx, Duration::from_secs(90)).await;
    println!(
        "cluster failover: acked={} errors={errors} processed={} leader_recovery={leader_recovery:?} \
         acked_with_one_node={during_outage} resumed_after_restore={:?}",
        acked.len(),
        processed.len(),
        restored_at.elapsed()
    );
}
