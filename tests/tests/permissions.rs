//! The least-privilege users shipped in `k8s/nats/permissions.conf`, enforced by a real
//! nats-server started with that file: each role can do its job and nothing more.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use jetq_consumer::{TaskContext, Worker, WorkerSettings};
use jetq_contract::{ConnectionConfig, Secret, StreamSettings, Subjects, Task, Topology};
use jetq_producer::Producer;
use jetq_tests::*;
use serde::{Deserialize, Serialize};

const SHIPPED: &str = include_str!("../../k8s/nats/permissions.conf");

#[derive(Serialize, Deserialize)]
struct Export {
    rows: u32,
}
impl Task for Export {
    const NAME: &'static str = "generate_csv";
    const QUEUE: &'static str = "exports";
}

async fn server() -> NatsServer {
    let passwords = [
        "JETQ_ADMIN_PASSWORD",
        "JETQ_PRODUCER_PASSWORD",
        "JETQ_WORKER_EMAILS_PASSWORD",
        "JETQ_WORKER_EXPORTS_PASSWORD",
        "JETQ_JANITOR_PASSWORD",
    ]
    .iter()
    .map(|name| format!("{name}: \"{}\"\n", password(name)))
    .collect::<String>();
    NatsServer::builder()
        .extra_config(format!("{passwords}\n{SHIPPED}"))
        .start()
        .await
}

fn password(variable: &str) -> String {
    format!("pw-{}", variable.to_lowercase())
}

fn as_user(server: &NatsServer, user: &str, variable: &str) -> ConnectionConfig {
    ConnectionConfig {
        nats_user: Some(user.to_owned()),
        nats_password: Some(Secret::new(password(variable))),
        request_timeout: Duration::from_secs(1),
        ..ConnectionConfig::with_url(server.url())
    }
}

async fn client(config: &ConnectionConfig) -> async_nats::jetstream::Context {
    let client = jetq_contract::connect(config, "permissions-test")
        .await
        .expect("connects");
    jetq_contract::jetstream(client, config)
}

#[tokio::test]
async fn each_role_can_do_its_job_and_nothing_more() {
    let server = server().await;
    // admin provisions everything.
    let admin = client(&as_user(&server, "admin", "JETQ_ADMIN_PASSWORD")).await;
    let topology = Topology::new(
        admin.clone(),
        Subjects::default(),
        StreamSettings::default(),
    );
    topology.ensure_streams().await.unwrap();
    for queue in ["emails", "exports"] {
        topology
            .ensure_queue(queue, &Default::default())
            .await
            .unwrap();
    }

    // producer: enqueues to any queue...
    let producer = Producer::builder()
        .connection(as_user(&server, "producer", "JETQ_PRODUCER_PASSWORD"))
        .provision(false)
        .publish_attempts(1)
        .connect()
        .await
        .expect("producer connects without provisioning rights");
    producer
        .enqueue(&Email {
            to: "ada@example.com".into(),
        })
        .await
        .expect("producer enqueues an email");
    producer
        .enqueue(&Export { rows: 3 })
        .await
        .expect("producer enqueues an export");
    // ...but cannot consume: the JetStream API is closed to it.
    let producer_js = client(&as_user(&server, "producer", "JETQ_PRODUCER_PASSWORD")).await;
    assert!(
        producer_js.get_stream("JETQ_TASKS").await.is_err(),
        "a producer must not read streams"
    );
    assert!(
        producer_js.get_stream("JETQ_DEAD").await.is_err(),
        "a producer must not read dead letters"
    );

    // worker-emails: runs email tasks.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder()
        .connection(as_user(
            &server,
            "worker-emails",
            "JETQ_WORKER_EMAILS_PASSWORD",
        ))
        .settings(WorkerSettings {
            provision: false,
            sweeper: false,
            ..fast_settings()
        })
        .handler(move |email: Email, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(email.to).ok();
                ok()
            }
        })
        .build()
        .await
        .expect("an emails worker starts with its own permissions");
    tokio::spawn(worker.run_until(std::future::pending()));
    assert_eq!(
        next(&mut rx, "the emails worker to run the email").await,
        "ada@example.com"
    );

    // ...but cannot pull another queue, publish tasks or write other queues' dead letters.
    let worker_js = client(&as_user(
        &server,
        "worker-emails",
        "JETQ_WORKER_EMAILS_PASSWORD",
    ))
    .await;
    let tasks = worker_js
        .get_stream("JETQ_TASKS")
        .await
        .expect("stream info is allowed");
    let other: Result<PullConsumer, _> = tasks.get_consumer("worker-exports").await;
    assert!(
        other.is_err(),
        "an emails worker must not bind the exports durable"
    );
    let publish = worker_js
        .publish("jetq.task.exports.generate_csv", "{}".into())
        .await;
    let acked = match publish {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!acked, "a worker must not enqueue tasks");
    let dead = worker_js
        .publish("jetq.dead.exports.generate_csv", "{}".into())
        .await;
    let acked = match dead {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !acked,
        "an emails worker must not write exports dead letters"
    );

    // The export is still queued, untouched, for its own worker.
    let exports: PullConsumer = admin
        .get_stream("JETQ_TASKS")
        .await
        .unwrap()
        .get_consumer("worker-exports")
        .await
        .unwrap();
    let mut batch = exports.fetch().max_messages(1).messages().await.unwrap();
    let message = within(WAIT, "the export", batch.next())
        .await
        .expect("export still queued")
        .unwrap();
    assert_eq!(message.subject.as_str(), "jetq.task.exports.generate_csv");
}

#[tokio::test]
async fn the_janitor_can_run_the_sweeper_and_workers_cannot() {
    let server = server().await;
    let admin = client(&as_user(&server, "admin", "JETQ_ADMIN_PASSWORD")).await;
    let topology = Topology::new(admin, Subjects::default(), StreamSettings::default());
    topology.ensure_streams().await.unwrap();
    topology
        .ensure_queue("emails", &Default::default())
        .await
        .unwrap();

    let janitor = Worker::builder()
        .connection(as_user(&server, "janitor", "JETQ_JANITOR_PASSWORD"))
        .settings(WorkerSettings {
            provision: false,
            sweeper: true,
            ..fast_settings()
        });
    // A janitor needs a queue to build; it takes none of the worker roles' durables, so it
    // serves a queue of its own name for housekeeping tasks only if one is provisioned. Here it
    // must fail to bind the emails durable (not its job) — proving the split is enforced — while
    // its sweeper consumer is allowed.
    let janitor_js = client(&as_user(&server, "janitor", "JETQ_JANITOR_PASSWORD")).await;
    let sweeper = Topology::new(janitor_js, Subjects::default(), StreamSettings::default())
        .ensure_sweeper_consumer()
        .await;
    assert!(
        sweeper.is_ok(),
        "the janitor may create the sweeper durable: {:?}",
        sweeper.err()
    );
    let bound = janitor
        .handler(|_e: Email, _ctx: TaskContext| async move { ok() })
        .build()
        .await;
    assert!(
        bound.is_err(),
        "the janitor must not bind a queue's durable"
    );

    let worker_js = client(&as_user(
        &server,
        "worker-emails",
        "JETQ_WORKER_EMAILS_PASSWORD",
    ))
    .await;
    let denied = Topology::new(worker_js, Subjects::default(), StreamSettings::default())
        .ensure_sweeper_consumer()
        .await;
    assert!(denied.is_err(), "a queue worker must not run the sweeper");
}
