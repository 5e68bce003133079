//! The least-privilege users shipped in `k8s/nats/permissions.conf`, enforced by a real
//! nats-server started with that file: each role can do its job and nothing more.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use jetq_consumer::{TaskContext, Worker, WorkerSettings};
use jetq_contract::{
    headers, ConnectionConfig, QueueSettings, Secret, StreamSettings, Subjects, Task, Topology,
};
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
            queues: vec!["emails".into()],
            ..fast_settings()
        })
        .handler(move |email: Email, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(email.to).ok();
                ok()
            }
        })
        // One binary handles both queues, as the example worker does; JETQ_QUEUES=emails makes
        // this process bind only the emails durable, the only one its login may use.
        .handler(|_export: Export, _ctx: TaskContext| async move {
            panic!("an export ran in the emails pod")
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
    let topology = Topology::new(
        admin.clone(),
        Subjects::default(),
        StreamSettings::default(),
    );
    topology.ensure_streams().await.unwrap();
    topology
        .ensure_queue(
            "emails",
            &QueueSettings {
                max_deliver: 2,
                ..QueueSettings::default()
            },
        )
        .await
        .unwrap();
    Producer::builder()
        .connection(as_user(&server, "producer", "JETQ_PRODUCER_PASSWORD"))
        .provision(false)
        .connect()
        .await
        .unwrap()
        .enqueue(&Email {
            to: "stranded@example.com".into(),
        })
        .await
        .unwrap();
    // Every delivery spent with no worker recording a result.
    common::strand_next_task(&admin, "worker-emails", 2).await;

    // The janitor deployment: the worker binary with JETQ_JANITOR=true, no queue, its own login.
    let janitor_settings = WorkerSettings::from_env_iter([
        ("JETQ_JANITOR".to_owned(), "true".to_owned()),
        ("JETQ_PROVISION".to_owned(), "false".to_owned()),
        ("JETQ_FETCH_EXPIRES".to_owned(), "500ms".to_owned()),
    ])
    .expect("janitor settings");
    let janitor = Worker::builder()
        .connection(as_user(&server, "janitor", "JETQ_JANITOR_PASSWORD"))
        .settings(janitor_settings)
        .build()
        .await
        .expect("the janitor starts with its own permissions and no handlers");
    assert!(janitor.queues().is_empty(), "a janitor pulls no queue");
    tokio::spawn(janitor.run_until(std::future::pending()));
    let dead = dead_letters(&admin, 1).await;
    assert_eq!(
        required_header(&dead[0], headers::DEAD_REASON),
        "deliveries-exhausted"
    );
    assert_eq!(dead[0].subject.as_str(), "jetq.dead.emails.send_email");
    common::await_drained(&admin).await;

    // The janitor's login cannot serve a queue.
    let bound = Worker::builder()
        .connection(as_user(&server, "janitor", "JETQ_JANITOR_PASSWORD"))
        .settings(WorkerSettings {
            provision: false,
            sweeper: false,
            ..fast_settings()
        })
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
