//! Provisioning against a real nats-server: stream and consumer settings as documented,
//! idempotent provisioning, existing limits left alone by everyone but the explicit
//! provisioner, and the refusal of servers that are too old.

use std::time::Duration;

use async_nats::jetstream::{
    consumer::{AckPolicy, PullConsumer},
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};
use jetq_consumer::{TaskContext, WorkerSettings};
use jetq_contract::{ConnectError, QueueSettings, StreamSettings, Subjects, Topology};
use jetq_producer::{Producer, ProducerError};
use jetq_tests::*;

#[tokio::test]
async fn streams_and_queue_consumers_are_provisioned_as_documented() {
    let server = NatsServer::start().await;
    let worker = worker(&server)
        .settings(WorkerSettings {
            ack_wait: Duration::from_secs(45),
            max_deliver: 12,
            max_in_flight: 250,
            ..fast_settings()
        })
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .handler(|_email: Email, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    let mut queues = worker.queues();
    queues.sort();
    assert_eq!(queues, vec!["emails", "work"]);

    let js = raw_jetstream(&server).await;
    let mut tasks = js.get_stream("JETQ_TASKS").await.unwrap();
    let config = tasks.info().await.unwrap().config.clone();
    assert_eq!(config.subjects, vec!["jetq.task.*.*".to_string()]);
    assert_eq!(config.retention, RetentionPolicy::WorkQueue);
    assert_eq!(config.storage, StorageType::File);
    assert_eq!(
        config.discard,
        DiscardPolicy::New,
        "a full stream must refuse, not drop"
    );
    assert_eq!(config.duplicate_window, Duration::from_secs(120));

    let mut dead = js.get_stream("JETQ_DEAD").await.unwrap();
    let dead_config = dead.info().await.unwrap().config.clone();
    assert_eq!(dead_config.retention, RetentionPolicy::Limits);
    assert_eq!(dead_config.subjects, vec!["jetq.dead.*.*".to_string()]);
    assert_eq!(dead_config.max_age, Duration::from_secs(30 * 24 * 3600));

    let advisories = js.get_stream("JETQ_ADVISORIES").await.unwrap();
    assert_eq!(
        advisories.cached_info().config.subjects,
        vec!["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JETQ_TASKS.*".to_string()]
    );

    for queue in ["work", "emails"] {
        let mut consumer: PullConsumer = tasks
            .get_consumer(&format!("worker-{queue}"))
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        let c = &info.config;
        assert_eq!(
            c.durable_name.as_deref(),
            Some(format!("worker-{queue}").as_str())
        );
        assert_eq!(c.filter_subject, format!("jetq.task.{queue}.*"));
        assert_eq!(c.ack_policy, AckPolicy::Explicit);
        assert_eq!(c.ack_wait, Duration::from_secs(45));
        assert_eq!(c.max_deliver, 12);
        assert_eq!(c.max_ack_pending, 250);
        assert_eq!(
            c.inactive_threshold,
            Duration::ZERO,
            "a durable must never expire"
        );
    }
}

#[tokio::test]
async fn provisioning_is_idempotent_and_the_provisioner_reconciles_changed_settings() {
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let topology =
        |settings: StreamSettings| Topology::new(js.clone(), Subjects::default(), settings);
    topology(StreamSettings::default())
        .ensure_streams()
        .await
        .unwrap();
    topology(StreamSettings::default())
        .ensure_streams()
        .await
        .unwrap();
    let changed = StreamSettings {
        stream_max_msgs: 10_000,
        dead_max_age: Duration::from_secs(7 * 24 * 3600),
        ..StreamSettings::default()
    };
    // Only a reconciling topology (jetq-provision's) changes existing streams.
    topology(changed.clone())
        .reconciling()
        .ensure_streams()
        .await
        .unwrap();
    let mut tasks = js.get_stream("JETQ_TASKS").await.unwrap();
    assert_eq!(tasks.info().await.unwrap().config.max_messages, 10_000);
    let mut dead = js.get_stream("JETQ_DEAD").await.unwrap();
    assert_eq!(
        dead.info().await.unwrap().config.max_age,
        Duration::from_secs(7 * 24 * 3600)
    );

    let t = topology(changed);
    t.ensure_queue("work", &QueueSettings::default())
        .await
        .unwrap();
    let mut consumer = t
        .ensure_queue(
            "work",
            &QueueSettings {
                max_in_flight: 5,
                ..QueueSettings::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(consumer.info().await.unwrap().config.max_ack_pending, 5);
    // One durable per priority level (PROTOCOL §12), each reconciled, none duplicated.
    assert_eq!(
        tasks.info().await.unwrap().state.consumer_count,
        3,
        "reconciled, not duplicated"
    );
    for level in [jetq_contract::Priority::High, jetq_contract::Priority::Low] {
        let durable = jetq_contract::Subjects::default().durable_at("work", level);
        let info = tasks
            .consumer_info(&durable)
            .await
            .unwrap_or_else(|err| panic!("{durable}: {err}"));
        assert_eq!(info.config.max_ack_pending, 5, "{durable} reconciled");
    }
}

/// Issue #17 item 6: a worker started without `JETQ_STREAM_MAX_MSGS` reset the task stream's
/// `max_msgs` from 5 to -1. Workers, schedulers and producers now leave an existing stream's
/// settings alone and report each difference (log and metric); `jetq-provision` still applies.
#[tokio::test]
async fn processes_without_stream_settings_leave_existing_limits_alone_and_report_them() {
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let limited = StreamSettings {
        stream_max_msgs: 5,
        status_ttl: Duration::from_secs(3600),
        ..StreamSettings::default()
    };
    Topology::new(js.clone(), Subjects::default(), limited.clone())
        .reconciling()
        .ensure_streams()
        .await
        .unwrap();
    Topology::new(js.clone(), Subjects::default(), limited)
        .reconciling()
        .ensure_status_stores()
        .await
        .unwrap();
    let max_msgs = || {
        let js = js.clone();
        async move {
            let mut tasks = js.get_stream("JETQ_TASKS").await.unwrap();
            tasks.info().await.unwrap().config.max_messages
        }
    };
    assert_eq!(max_msgs().await, 5);

    let telemetry = jetq_telemetry::Telemetry::new(jetq_telemetry::TelemetryConfig::local(
        "jetq-worker",
        "warn",
    ))
    .unwrap();
    let worker = worker(&server)
        .meter(telemetry.meter("jetq-consumer"))
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    assert_eq!(
        max_msgs().await,
        5,
        "a worker without JETQ_STREAM_MAX_MSGS lifted the operator's limit"
    );
    let samples = jetq_tests::otel::parse_prometheus(&telemetry.metrics_text().unwrap());
    assert_eq!(
        jetq_tests::otel::metric(
            &samples,
            "jetq_provision_mismatches_total",
            &[("jetq_stream", "JETQ_TASKS"), ("jetq_setting", "max_msgs")]
        ),
        1.0,
        "the difference is counted"
    );
    drop(worker);

    // A producer and a scheduler that provision leave it alone as well.
    let _producer = Producer::builder()
        .connection(connection(&server))
        .connect()
        .await
        .unwrap();
    let _scheduler = scheduler(&server).build().await.unwrap();
    assert_eq!(max_msgs().await, 5);
    // Buckets too: the status bucket keeps its TTL when a process with the default one (as a
    // worker of a tracked type) provisions.
    Topology::new(js.clone(), Subjects::default(), StreamSettings::default())
        .ensure_status_stores()
        .await
        .unwrap();
    let mut status = js.get_stream("KV_JETQ_STATUS").await.unwrap();
    assert_eq!(
        status.info().await.unwrap().config.max_age,
        Duration::from_secs(3600)
    );

    // The explicit provisioner applies its settings.
    Topology::new(js.clone(), Subjects::default(), StreamSettings::default())
        .reconciling()
        .ensure_streams()
        .await
        .unwrap();
    assert_eq!(max_msgs().await, -1);
}

/// A worker with provisioning off (`JETQ_PROVISION=false`, a least-privilege user) started
/// before `jetq-provision` ran waits for its durable instead of failing at once, starts once
/// the durable exists, and runs tasks (issue 19, Kubernetes: worker pods no longer provision).
#[tokio::test]
async fn a_worker_that_does_not_provision_waits_for_jetq_provision_then_starts() {
    let server = NatsServer::start().await;
    let settings = WorkerSettings {
        provision: false,
        ..fast_settings()
    };
    let runs = RunCount::new();
    let building = tokio::spawn(
        worker(&server)
            .settings(settings.clone())
            .handler(counting_handler(&runs, |_| ok()))
            .build(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !building.is_finished(),
        "a worker without its durable waits for jetq-provision"
    );

    // What jetq-provision does, as the admin user: streams and buckets first, the queue's
    // durable (with the worker's settings) last.
    let js = raw_jetstream(&server).await;
    let topology =
        Topology::new(js.clone(), Subjects::default(), StreamSettings::default()).reconciling();
    topology.ensure_streams().await.unwrap();
    topology.ensure_sweeper_consumer().await.unwrap();
    topology.ensure_status_stores().await.unwrap();
    topology
        .ensure_queue("work", &settings.queue_settings())
        .await
        .unwrap();

    let worker = within(
        Duration::from_secs(15),
        "the waiting worker to start",
        building,
    )
    .await
    .unwrap()
    .expect("the worker starts once its durable exists");
    assert_eq!(worker.queues(), vec!["work"]);
    let (stop, run) = spawn_worker(worker);
    producer(&server)
        .await
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    eventually(WAIT, "the task runs", || async {
        (runs.get() == 1).then_some(())
    })
    .await;
    stop_worker(stop, run).await;
}

/// The wait is bounded: with no jetq-provision, the worker fails after its budget, naming the
/// durable it waited for and what creates it.
#[tokio::test]
async fn a_worker_that_does_not_provision_gives_up_after_its_wait_naming_the_durable() {
    let server = NatsServer::start().await;
    let started = std::time::Instant::now();
    let result = within(
        WAIT,
        "the worker to give up",
        worker(&server)
            .settings(WorkerSettings {
                provision: false,
                ..fast_settings()
            })
            .provision_wait(Duration::from_secs(2))
            .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
            .build(),
    )
    .await;
    let waited = started.elapsed();
    let Err(err) = result else {
        panic!("no durable, no worker")
    };
    let text = err.to_string();
    assert!(
        text.contains("worker-work") && text.contains("jetq-provision"),
        "{text}"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "waited {waited:?} with a 2 s budget"
    );
}

/// Provisioning waits while JetStream does not answer, then fails naming what it provisioned,
/// how long it tried and what to check — never at once (a cluster still electing its leader
/// answers the same way) and never forever.
#[tokio::test]
async fn provisioning_gives_up_after_its_budget_when_jetstream_never_answers() {
    let server = NatsServer::builder().jetstream(false).start().await;
    let js = raw_jetstream(&server).await;
    let started = std::time::Instant::now();
    let result = within(
        WAIT,
        "provisioning to give up",
        Topology::new(js, Subjects::default(), StreamSettings::default())
            .with_budget(Duration::from_secs(2))
            .ensure_streams(),
    )
    .await;
    let waited = started.elapsed();
    match result {
        Err(err @ jetq_contract::ProvisionError::Unavailable { attempts, .. }) => {
            assert!(attempts > 1, "retried: {err}");
            let text = err.to_string();
            assert!(
                text.contains("JETQ_TASKS") && text.contains("is JetStream enabled"),
                "{text}"
            );
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(()) => panic!("no JetStream, no streams"),
    }
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "tried for {waited:?} with a 2 s budget"
    );
}

#[tokio::test]
async fn a_server_older_than_2_10_is_refused_with_both_versions_named() {
    let Some(old) = jetq_harness::old_server_binary() else {
        panic!(
            "Debian's nats-server 2.9.10 is needed for this test: run scripts/test.sh, which \
             installs it, or set JETQ_TEST_OLD_NATS_SERVER"
        );
    };
    let server = NatsServer::builder().binary(old).start().await;
    assert!(server.version().contains("2.9"), "{}", server.version());
    let result = Producer::builder()
        .connection(connection(&server))
        .connect()
        .await;
    match result {
        Err(ProducerError::Connect(ConnectError::ServerTooOld { found, required })) => {
            assert!(found.starts_with("2.9"), "{found}");
            assert_eq!(required.to_string(), "2.10.0");
        }
        Err(other) => panic!("expected ServerTooOld, got {other}"),
        Ok(_) => panic!("a 2.9 server must be refused"),
    }
    let worker = worker(&server)
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .build()
        .await;
    let message = worker.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("too old") && message.contains("2.10.0"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_startup_error() {
    let port = jetq_harness::free_port();
    let config = jetq_contract::ConnectionConfig {
        connect_timeout: Duration::from_millis(500),
        ..jetq_contract::ConnectionConfig::with_url(format!("nats://127.0.0.1:{port}"))
    };
    let result = within(
        WAIT,
        "connect to refuse",
        Producer::builder().connection(config).connect(),
    )
    .await;
    match result {
        Err(ProducerError::Connect(err @ ConnectError::Connect { .. })) => {
            assert!(err.to_string().contains(&port.to_string()), "{err}")
        }
        Err(other) => panic!("expected a connect error, got {other}"),
        Ok(_) => panic!("nothing listens there"),
    }
}
