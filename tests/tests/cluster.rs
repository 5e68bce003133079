//! Failover in a 3-node JetStream cluster on loopback ports with replicated (R3) streams: the
//! stream leader is killed under load, then a second node, then both come back. No
//! acknowledged task is lost and processing resumes without operator action. While only one
//! node is up there is no quorum: enqueues fail with a clear error (never hang) and nothing is
//! delivered until a second node returns.
//!
//! A cold start: on a fresh cluster, four worker processes, a scheduler and the provisioner
//! started at the same instant all become ready (issue #26 item 1: workers used to crash-loop,
//! one stream further on each restart).

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures::StreamExt;
use jetq_consumer::Worker;
use jetq_contract::{ConnectionConfig, StreamSettings, Topology};
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

/// A `test_worker` process against the cluster; its stderr is collected, and its exit (if it
/// ever exits) is reported on `exits` with that output.
fn spawn_cluster_worker(
    urls: &str,
    name: String,
    exits: tokio::sync::mpsc::UnboundedSender<(String, String)>,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_test_worker"))
        .env("JETQ_NATS_URL", urls)
        .env("JETQ_STREAM_REPLICAS", "3")
        .env("JETQ_REQUEST_TIMEOUT", "2s")
        .env("TEST_WORKER_NAME", &name)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("test_worker starts");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    tokio::spawn(async move {
        let mut output = String::new();
        // Reading to the end also keeps the pipe from filling up while the worker runs.
        let _ = stderr.read_to_string(&mut output).await;
        let status = child.wait().await;
        let _ = exits.send((name, format!("{status:?}\n{output}")));
    })
}

/// Issue #26 item 1: two workers started together on a fresh cluster both exited with
/// `cannot create or update stream JETQ_DEAD: jetstream request timed out` (the client's update
/// and another's create left both unanswered; no retry). Now provisioning is create-first and
/// waits for the cluster: everything started at once becomes ready, nothing exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_scheduler_and_provisioner_started_together_on_a_fresh_cluster_all_become_ready() {
    init_logs();
    let servers = cluster().await;
    let urls = urls(&servers);
    let watcher = async_nats::connect(servers[0].url()).await.unwrap();
    let mut ready = watcher.subscribe("test.ready").await.unwrap();
    watcher.flush().await.unwrap();
    let connection = ConnectionConfig {
        request_timeout: Duration::from_secs(2),
        ..ConnectionConfig::with_url(urls.clone())
    };
    let streams = StreamSettings {
        stream_replicas: 3,
        ..StreamSettings::default()
    };
    let started = Instant::now();

    let (exits_tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
    let workers: Vec<_> = (0..4)
        .map(|i| spawn_cluster_worker(&urls, format!("w{i}"), exits_tx.clone()))
        .collect();
    let scheduler = tokio::spawn({
        let connection = connection.clone();
        let streams = streams.clone();
        async move {
            jetq_scheduler::Scheduler::builder()
                .connection(connection)
                .streams(streams)
                .build()
                .await
                .map_err(|err| err.to_string())
        }
    });
    // What jetq-provision does, as the admin would run it next to the first pods.
    let provisioner = tokio::spawn({
        let connection = connection.clone();
        let streams = streams.clone();
        async move {
            let client = jetq_contract::connect(&connection, "jetq-provision")
                .await
                .map_err(|err| err.to_string())?;
            let js = jetq_contract::jetstream(client, &connection);
            let topology = Topology::new(js, connection.subjects().unwrap(), streams).reconciling();
            topology
                .ensure_streams()
                .await
                .map_err(|err| err.to_string())?;
            topology
                .ensure_sweeper_consumer()
                .await
                .map_err(|err| err.to_string())?;
            topology
                .ensure_status_stores()
                .await
                .map_err(|err| err.to_string())?;
            jetq_scheduler::provision_with(&topology)
                .await
                .map_err(|err| err.to_string())
        }
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(50);
    let mut ready_workers = HashSet::new();
    while ready_workers.len() < 4 {
        tokio::select! {
            message = ready.next() => {
                let message = message.expect("the readiness subscription stays open");
                ready_workers.insert(String::from_utf8_lossy(&message.payload).into_owned());
            }
            Some((name, output)) = exits.recv() => {
                panic!("worker {name} exited instead of waiting for the cluster: {output}");
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("only {ready_workers:?} of 4 workers ready after 50 s");
            }
        }
    }
    let scheduler = within(Duration::from_secs(30), "the scheduler to build", scheduler)
        .await
        .unwrap();
    if let Err(err) = &scheduler {
        panic!("the scheduler did not start: {err}");
    }
    within(Duration::from_secs(30), "the provisioner", provisioner)
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("the provisioner failed: {err}"));
    // Still running: no worker exited after saying it was ready either.
    assert!(exits.try_recv().is_err(), "a worker exited");
    println!(
        "cold start of a 3-node cluster: everything ready after {:?}",
        started.elapsed()
    );
    for worker in workers {
        worker.abort();
    }
}
