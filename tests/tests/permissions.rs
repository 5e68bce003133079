//! The least-privilege users shipped in `k8s/nats/permissions.conf`, enforced by a real
//! nats-server started with that file: each role can do its job and nothing more.

mod common;

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use jetq_consumer::{TaskContext, Worker, WorkerSettings};
use jetq_contract::{
    headers, ConnectionConfig, QueueSettings, Secret, StreamSettings, Subjects, Task, TaskOptions,
    TaskState, Topology,
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

/// An export whose status, result and artifact the web app follows.
#[derive(Serialize, Deserialize)]
struct TrackedExport {
    rows: u32,
}
impl Task for TrackedExport {
    const NAME: &'static str = "tracked_csv";
    const QUEUE: &'static str = "exports";
    fn options() -> TaskOptions {
        TaskOptions::default().track_status(true)
    }
}

/// Everything jetq-provision creates, as the admin user.
async fn provision_as_admin(server: &NatsServer) -> async_nats::jetstream::Context {
    let admin = client(&as_user(server, "admin", "JETQ_ADMIN_PASSWORD")).await;
    let topology = Topology::new(
        admin.clone(),
        Subjects::default(),
        StreamSettings::default(),
    );
    topology.ensure_streams().await.unwrap();
    topology.ensure_status_stores().await.unwrap();
    jetq_contract::presence::ensure_bucket(&topology)
        .await
        .unwrap();
    jetq_contract::metrics_history::ensure_bucket(&topology)
        .await
        .unwrap();
    jetq_scheduler::provision(&admin, &Subjects::default(), &StreamSettings::default())
        .await
        .unwrap();
    for queue in ["emails", "exports"] {
        topology
            .ensure_queue(queue, &Default::default())
            .await
            .unwrap();
    }
    admin
}

async fn start_server() -> NatsServer {
    let passwords = [
        "JETQ_ADMIN_PASSWORD",
        "JETQ_PRODUCER_PASSWORD",
        "JETQ_WORKER_EMAILS_PASSWORD",
        "JETQ_WORKER_EXPORTS_PASSWORD",
        "JETQ_JANITOR_PASSWORD",
        "JETQ_SCHEDULER_PASSWORD",
        "JETQ_RELAY_PASSWORD",
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
    let server = start_server().await;
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

    // ...but cannot pull another queue, publish tasks on a queue that is not deployed (it may
    // on the deployed ones: batch callbacks and chain links, docs/WORKFLOWS.md) or write other
    // queues' dead letters.
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
        .publish("jetq.task.billing.charge", "{}".into())
        .await;
    let acked = match publish {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !acked,
        "a worker must not enqueue tasks on a queue that is not deployed"
    );
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
    let server = start_server().await;
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

#[tokio::test]
async fn a_tracked_task_reports_its_status_result_and_artifact_through_least_privilege_users() {
    let server = start_server().await;
    provision_as_admin(&server).await;
    let producer = Producer::builder()
        .connection(as_user(&server, "producer", "JETQ_PRODUCER_PASSWORD"))
        .provision(false)
        .connect()
        .await
        .unwrap();
    let worker = Worker::builder()
        .connection(as_user(
            &server,
            "worker-exports",
            "JETQ_WORKER_EXPORTS_PASSWORD",
        ))
        .settings(WorkerSettings {
            provision: false,
            sweeper: false,
            queues: vec!["exports".into()],
            ..fast_settings()
        })
        .handler(|export: TrackedExport, ctx: TaskContext| async move {
            ctx.progress(50.0, "half way").await?;
            ctx.put_artifact("export.csv", &mut &b"id\n1\n"[..]).await?;
            ctx.set_result(&serde_json::json!({ "rows": export.rows }))?;
            ok()
        })
        .build()
        .await
        .expect("the exports worker starts with its own user");
    tokio::spawn(worker.run_until(std::future::pending()));

    let enqueued = producer
        .enqueue(&TrackedExport { rows: 2 })
        .await
        .expect("the producer enqueues a tracked task");
    let done = producer
        .wait(&enqueued.id, WAIT)
        .await
        .expect("the producer may read the task's status");
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.result, Some(serde_json::json!({ "rows": 2 })));
    let mut artifact = producer
        .artifact(&enqueued.id, "export.csv")
        .await
        .expect("the producer may read artifacts");
    let mut csv = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut artifact, &mut csv)
        .await
        .expect("artifact readable");
    assert_eq!(csv, b"id\n1\n");
}

#[tokio::test]
async fn the_scheduler_fires_schedules_and_releases_delayed_tasks_with_its_own_user() {
    let server = start_server().await;
    let admin = provision_as_admin(&server).await;
    // The producer may enqueue delayed tasks. More than the scheduler reads with direct gets
    // (32) in one second, so its ordered-consumer path runs with this user too.
    let producer = Producer::builder()
        .connection(as_user(&server, "producer", "JETQ_PRODUCER_PASSWORD"))
        .provision(false)
        .connect()
        .await
        .unwrap();
    let due = SystemTime::now() + Duration::from_millis(300);
    for n in 0..40 {
        producer
            .enqueue_at(
                due,
                &Email {
                    to: format!("later-{n}@example.com"),
                },
            )
            .await
            .expect("the producer enqueues a delayed task");
    }

    let schedules = jetq_scheduler::Schedules::from_yaml(
        "schedules:\n  - name: every-second\n    cron: \"* * * * * *\"\n    queue: emails\n    task: send_email\n    args: {to: cron@example.com}\n    catch_up: skip\n",
        std::path::Path::new("schedules.yaml"),
    )
    .unwrap();
    let running = RunningScheduler::start(
        jetq_scheduler::Scheduler::builder()
            .connection(as_user(&server, "scheduler", "JETQ_SCHEDULER_PASSWORD"))
            .provision(false)
            .release_delayed(true)
            .misfire_grace(Duration::from_secs(1))
            .schedules(schedules),
    )
    .await;
    let tasks = eventually(WAIT, "a fired and a released task", || {
        let admin = admin.clone();
        async move {
            let tasks = stream_messages(&admin, "JETQ_TASKS").await;
            let fired = tasks
                .iter()
                .any(|t| t.headers.get(headers::SCHEDULE).is_some());
            let released = tasks
                .iter()
                .filter(|t| t.headers.get(headers::NOT_BEFORE).is_some())
                .count()
                == 40;
            (fired && released).then_some(tasks)
        }
    })
    .await;
    assert!(tasks
        .iter()
        .all(|t| t.subject.as_str() == "jetq.task.emails.send_email"));
    eventually(WAIT, "the released task purged from JETQ_DELAYED", || {
        let admin = admin.clone();
        async move { (stream_len(&admin, "JETQ_DELAYED").await == 0).then_some(()) }
    })
    .await;
    // It watches run-now requests (PROTOCOL §7) with its own user.
    let state = admin.get_key_value("JETQ_SCHEDULER").await.unwrap();
    state
        .put("run.every-second.perm1", "{}".into())
        .await
        .unwrap();
    eventually(WAIT, "the run-now task", || {
        let admin = admin.clone();
        async move {
            stream_messages(&admin, "JETQ_TASKS")
                .await
                .iter()
                .any(|t| {
                    t.headers.get(headers::MSG_ID).map(|v| v.as_str())
                        == Some("every-second:run:perm1")
                })
                .then_some(())
        }
    })
    .await;
    running.stop().await;

    // ...and nothing more: it cannot consume tasks nor change streams.
    let scheduler_js = client(&as_user(&server, "scheduler", "JETQ_SCHEDULER_PASSWORD")).await;
    assert!(
        scheduler_js.get_stream("JETQ_TASKS").await.is_err(),
        "the scheduler must not read the task stream"
    );
    let created = scheduler_js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ROGUE".into(),
            subjects: vec!["rogue.>".into()],
            ..Default::default()
        })
        .await;
    assert!(created.is_err(), "the scheduler must not create streams");
    // Without provisioning rights, a missing bucket is a clear startup error.
    let fresh = start_server().await;
    let err = jetq_scheduler::Scheduler::builder()
        .connection(as_user(&fresh, "scheduler", "JETQ_SCHEDULER_PASSWORD"))
        .provision(false)
        .build()
        .await
        .expect_err("nothing provisioned");
    assert!(err.to_string().contains("jetq-provision"), "{err}");
}

/// A task too large for its dead letter, run by a least-privilege worker that provisions
/// nothing: its body goes to the dead-letter body store that jetq-provision created.
#[tokio::test]
async fn a_least_privilege_worker_dead_letters_a_task_too_large_for_its_letter() {
    let server = start_server().await;
    let admin = provision_as_admin(&server).await;
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
            history_interval: Duration::from_millis(200),
            ..fast_settings()
        })
        .handler(|_email: Email, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .expect("an emails worker starts with its own permissions");
    tokio::spawn(worker.run_until(std::future::pending()));
    // Not an Email: undecodable, and 16 bytes under max_payload with its headers.
    let mut map = async_nats::HeaderMap::new();
    map.insert(headers::MSG_ID, "huge-not-an-email-0000000000");
    let max = admin.client().server_info().max_payload;
    let body = vec![b'z'; max - jetq_contract::dead::headers_wire_len(&map) - 16];
    admin
        .publish_with_headers("jetq.task.emails.send_email", map, body.clone().into())
        .await
        .unwrap()
        .await
        .expect("the task fits");
    let letter = eventually(WAIT, "the dead letter", || {
        let admin = admin.clone();
        async move {
            stream_messages(&admin, "JETQ_DEAD")
                .await
                .into_iter()
                .next()
        }
    })
    .await;
    assert_eq!(
        header(&letter, headers::DEAD_REASON).as_deref(),
        Some("undecodable")
    );
    let object = header(&letter, headers::PAYLOAD_OBJECT).expect("the body went to the store");
    let store = admin
        .get_object_store(Subjects::default().dead_payloads_bucket())
        .await
        .unwrap();
    let mut stored = Vec::new();
    use tokio::io::AsyncReadExt;
    store
        .get(&object)
        .await
        .unwrap()
        .read_to_end(&mut stored)
        .await
        .unwrap();
    assert_eq!(stored, body);
    // Its presence record (PROTOCOL §14), written with its own user.
    let presence = admin.get_key_value("JETQ_WORKERS").await.unwrap();
    eventually(WAIT, "the worker's presence record", || {
        let presence = presence.clone();
        async move {
            use futures::TryStreamExt;
            let keys: Vec<String> = presence.keys().await.ok()?.try_collect().await.ok()?;
            (!keys.is_empty()).then_some(())
        }
    })
    .await;
    // Its queue's metrics history (PROTOCOL §15), merged with its own user: the dead letter.
    let history = admin.get_key_value("JETQ_METRICS").await.unwrap();
    eventually(WAIT, "the worker's metrics history", || {
        let history = history.clone();
        async move {
            use futures::TryStreamExt;
            let keys: Vec<String> = history.keys().await.ok()?.try_collect().await.ok()?;
            let key = keys.iter().find(|key| key.starts_with("emails."))?;
            let value = history.get(key).await.ok()??;
            let record: jetq_contract::metrics_history::MinuteRecord =
                serde_json::from_slice(&value).ok()?;
            (record.dead == 1).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn the_relay_publishes_tasks_and_dead_letters_and_cannot_consume() {
    let server = start_server().await;
    let admin = client(&as_user(&server, "admin", "JETQ_ADMIN_PASSWORD")).await;
    let topology = Topology::new(
        admin.clone(),
        Subjects::default(),
        StreamSettings::default(),
    );
    topology.ensure_streams().await.unwrap();
    topology.ensure_delayed_stream().await.unwrap();
    let relay = client(&as_user(&server, "relay", "JETQ_RELAY_PASSWORD")).await;
    // What jetq-relay does: read the streams' duplicate window, publish tasks, delayed tasks
    // and dead letters (and a too-large letter's body).
    for stream in ["JETQ_TASKS", "JETQ_DELAYED"] {
        let mut stream = relay
            .get_stream(stream)
            .await
            .expect("relay reads stream info");
        stream.info().await.expect("relay reads stream info");
    }
    for subject in [
        "jetq.task.emails.send_email",
        "jetq.delayed.4102444800.emails.send_email",
        "jetq.dead.emails.send_email",
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("relay-{subject}").as_str());
        relay
            .publish_with_headers(subject, headers, "{}".into())
            .await
            .unwrap_or_else(|e| panic!("relay sends to {subject}: {e}"))
            .await
            .unwrap_or_else(|e| panic!("relay publishes to {subject}: {e}"));
    }
    let store = relay
        .get_object_store("JETQ_DEAD_PAYLOADS")
        .await
        .expect("relay opens the dead-letter body store");
    store
        .put("0-6869", &mut &b"body"[..])
        .await
        .expect("relay stores a dead letter's body");
    // ...and nothing else: no consuming, no reading dead letters, no changing streams.
    assert!(
        relay.get_stream("JETQ_DEAD").await.is_err(),
        "the relay must not read dead letters"
    );
    let tasks = relay.get_stream("JETQ_TASKS").await.unwrap();
    assert!(
        tasks
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("relay-reads".into()),
                ..Default::default()
            })
            .await
            .is_err(),
        "the relay must not consume tasks"
    );
    assert!(
        relay
            .create_stream(async_nats::jetstream::stream::Config {
                name: "RELAY_OWN".into(),
                subjects: vec!["relay.own".into()],
                ..Default::default()
            })
            .await
            .is_err(),
        "the relay must not create streams"
    );
}

/// Worker control (PROTOCOL.md §16) through the least-privilege users: a worker logged in as
/// `worker-emails` takes a cancel request for the untracked task it runs — sent as the admin
/// user, as `jetq cancel` and the console send it — on `jetq.control.worker.<id>.cancel` and
/// answers `found` to the requester's inbox; the task ends cancelled: its handler is told, the
/// task is gone from the task stream, nothing awaits an ack and nothing is dead-lettered.
/// Without the worker role's subscribe grant the request finds no responder; without its
/// `allow_responses` the reply is refused and the request times out.
#[tokio::test]
async fn a_least_privilege_worker_answers_a_cancel_request_for_the_task_it_runs() {
    let server = start_server().await;
    let admin = provision_as_admin(&server).await;
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (told_tx, mut told) = tokio::sync::mpsc::unbounded_channel::<()>();
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
            presence_interval: Duration::from_millis(200),
            ..fast_settings()
        })
        .handler(move |_email: Email, ctx: TaskContext| {
            let started = started_tx.clone();
            let told = told_tx.clone();
            async move {
                let _ = started.send(());
                ctx.cancelled().await;
                let _ = told.send(());
                ok()
            }
        })
        .build()
        .await
        .expect("the emails worker starts with its own user");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    let producer = Producer::builder()
        .connection(as_user(&server, "producer", "JETQ_PRODUCER_PASSWORD"))
        .provision(false)
        .connect()
        .await
        .unwrap();
    let task = producer
        .enqueue(&Email {
            to: "cancel-me@example.com".into(),
        })
        .await
        .expect("the producer enqueues an untracked task");
    within(WAIT, "the task starts", started.recv())
        .await
        .expect("started");

    // The operator finds the worker in the presence records, as `jetq cancel` does.
    let workers = admin.get_key_value("JETQ_WORKERS").await.unwrap();
    let worker_id = eventually(WAIT, "presence lists the task", || {
        let workers = workers.clone();
        let id = task.id.clone();
        async move {
            let keys: Vec<String> = futures::TryStreamExt::try_collect(workers.keys().await.ok()?)
                .await
                .ok()?;
            for key in keys {
                let value = workers.get(&key).await.ok()??;
                let record: jetq_contract::presence::WorkerRecord =
                    serde_json::from_slice(&value).ok()?;
                if record.running.iter().any(|t| t.id == id) {
                    return Some(record.id);
                }
            }
            None
        }
    })
    .await;
    let operator = jetq_contract::connect(
        &as_user(&server, "admin", "JETQ_ADMIN_PASSWORD"),
        "operator",
    )
    .await
    .unwrap();
    let body = serde_json::to_vec(&jetq_contract::control::CancelRequest {
        id: task.id.clone(),
        sequence: task.sequence,
        by: Some("ops".into()),
    })
    .unwrap();
    let reply = within(
        WAIT,
        "the worker answers",
        operator.request(
            jetq_contract::control::cancel_subject("jetq", &worker_id),
            body.into(),
        ),
    )
    .await
    .expect("the worker's user may take cancel requests and reply to them");
    let reply: jetq_contract::control::CancelReply =
        serde_json::from_slice(&reply.payload).expect("a reply body");
    assert!(reply.found, "{reply:?}");
    assert_eq!(reply.sequence, task.sequence);
    assert_eq!(reply.attempt, 1);
    within(WAIT, "the handler is told", told.recv())
        .await
        .expect("told");

    // The attempt ended before the worker stops (shutdown waits for running tasks).
    let _ = stop.send(());
    within(WAIT, "the worker stops", running)
        .await
        .expect("the worker task");
    let subjects = Subjects::default();
    let stream = admin.get_stream(subjects.tasks_stream()).await.unwrap();
    assert!(
        stream.get_raw_message(task.sequence).await.is_err(),
        "a cancelled task leaves the task stream"
    );
    let info = stream.consumer_info("worker-emails").await.unwrap().clone();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    assert_eq!(
        stream_len(&admin, &subjects.dead_stream()).await,
        0,
        "a cancelled task is not dead-lettered"
    );
}
