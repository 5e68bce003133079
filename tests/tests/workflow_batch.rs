//! Batches (PROTOCOL.md §13, docs/WORKFLOWS.md) against a real nats-server with `workflow_worker`
//! processes: callbacks fire exactly once — with workers SIGKILLed while members run, and made
//! to exit (`JETQ_TEST_FAULT`) just after a member's marker, after its count, before and after
//! the callback's publish — and across a server restart; a dead-lettered member gives
//! `on_complete` without `on_success`, and its replay then gives `on_success`; chords get every
//! member's result; nested batches; bad input is refused with typed errors; a large batch.

use std::{process::Stdio, time::Duration};

use async_nats::jetstream;
use futures::StreamExt;
use jetq_producer::{BatchOptions, EnqueueError, EnqueueOptions, Producer, RawTask};
use jetq_tests::{workflow::Done, *};
use serde_json::Value;
use tokio::process::{Child, Command};

/// Waits for the worker process `name` to say it runs.
async fn spawn(
    server: &NatsServer,
    name: &str,
    env: &[(&str, &str)],
    ready: &mut async_nats::Subscriber,
) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_workflow_worker"));
    command
        .env("JETQ_NATS_URL", server.url())
        .env("JETQ_ACK_WAIT", "2s")
        .env("JETQ_FETCH_EXPIRES", "500ms")
        .env("JETQ_CONCURRENCY", "8")
        .env("TEST_WORKER_NAME", name)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().expect("workflow_worker starts");
    loop {
        let message = within(WAIT, "worker ready", ready.next())
            .await
            .expect("ready subscription");
        if message.payload == name.as_bytes() {
            return child;
        }
    }
}

struct Observer {
    client: async_nats::Client,
    ready: async_nats::Subscriber,
    callbacks: async_nats::Subscriber,
    members: async_nats::Subscriber,
    /// Callback reports received while waiting for another batch's.
    other: Vec<Value>,
}

async fn observe(server: &NatsServer) -> Observer {
    let client = async_nats::connect(server.url()).await.unwrap();
    let ready = client.subscribe("test.ready").await.unwrap();
    let callbacks = client.subscribe("test.callback").await.unwrap();
    let members = client.subscribe("test.member").await.unwrap();
    client.flush().await.unwrap();
    Observer {
        client,
        ready,
        callbacks,
        members,
        other: Vec::new(),
    }
}

fn jobs(count: u64, note: &str) -> Vec<Job> {
    (0..count)
        .map(|n| Job {
            n,
            note: note.to_owned(),
        })
        .collect()
}

fn done(which: &str) -> Done {
    Done {
        which: which.to_owned(),
        ..Default::default()
    }
}

/// Enqueues a batch of `members` with both callbacks.
async fn enqueue(producer: &Producer, id: &str, members: &[Job]) {
    let mut batch = producer.batch(BatchOptions::new().id(id));
    for (i, job) in members.iter().enumerate() {
        // Keys: a member enqueued twice is one member.
        batch = batch.add_with(job, EnqueueOptions::new().key(format!("{id}-m{i}")));
    }
    batch
        .on_success(&done("on_success"))
        .on_complete(&done("on_complete"))
        .enqueue()
        .await
        .expect("the batch is enqueued");
}

/// Waits until the queues `work` and `callbacks` have nothing queued or running.
async fn wait_idle(js: &jetstream::Context) {
    eventually(Duration::from_secs(60), "queues idle", || async {
        for queue in ["work", "callbacks"] {
            let mut consumer: jetstream::consumer::PullConsumer = js
                .get_consumer_from_stream(format!("worker-{queue}"), "JETQ_TASKS")
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Receives `count` callback reports of batch `id`, then, once the queues are idle, checks that
/// no other report of that batch came.
async fn callbacks_of(
    observer: &mut Observer,
    js: &jetstream::Context,
    id: &str,
    count: usize,
) -> Vec<Value> {
    let (mut got, other): (Vec<Value>, Vec<Value>) = std::mem::take(&mut observer.other)
        .into_iter()
        .partition(|report| report["batch"]["id"] == id);
    observer.other = other;
    let kinds = |got: &[Value]| {
        let mut which: Vec<String> = got.iter().map(|r| r["which"].to_string()).collect();
        which.sort();
        which.dedup();
        which.len()
    };
    while kinds(&got) < count {
        let message = within(
            Duration::from_secs(60),
            "a callback",
            observer.callbacks.next(),
        )
        .await
        .expect("callback subscription");
        let report: Value = serde_json::from_slice(&message.payload).unwrap();
        if report["batch"]["id"] == id {
            got.push(report);
        } else {
            observer.other.push(report);
        }
    }
    wait_idle(js).await;
    observer.client.flush().await.unwrap();
    while let Some(Some(message)) = futures::FutureExt::now_or_never(observer.callbacks.next()) {
        let report: Value = serde_json::from_slice(&message.payload).unwrap();
        if report["batch"]["id"] == id {
            got.push(report);
        } else {
            observer.other.push(report);
        }
    }
    // Exactly once: each callback was stored once (one task-stream sequence). A worker killed
    // while running a callback runs it again (a task runs at least once), from the same message.
    let mut stored: Vec<(String, u64)> = got
        .iter()
        .map(|r| {
            (
                r["which"].as_str().unwrap().to_owned(),
                r["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    stored.sort();
    stored.dedup();
    assert_eq!(
        stored.len(),
        count,
        "callbacks stored more than once: {got:?}"
    );
    got.sort_by_key(|r| {
        (
            r["which"].as_str().unwrap_or_default().to_owned(),
            r["attempt"].as_u64(),
        )
    });
    got.dedup_by_key(|r| r["which"].clone());
    got
}

fn assert_both(reports: &[Value], id: &str, total: u64) {
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0]["which"], "on_complete");
    assert_eq!(reports[0]["id"], format!("batch:{id}:on_complete"));
    assert_eq!(reports[1]["which"], "on_success");
    assert_eq!(reports[1]["id"], format!("batch:{id}:on_success"));
    for report in reports {
        assert_eq!(report["batch"]["total"], total);
        assert_eq!(report["batch"]["succeeded"], total);
        assert_eq!(report["batch"]["dead"], 0);
    }
}

#[tokio::test]
async fn callbacks_fire_once_when_every_member_succeeded() {
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let _worker = spawn(&server, "a", &[], &mut observer.ready).await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    enqueue(&producer, "plain", &jobs(20, "")).await;
    let reports = callbacks_of(&mut observer, &js, "plain", 2).await;
    assert_both(&reports, "plain", 20);
    let status = producer.batch_status("plain").await.unwrap().unwrap();
    assert_eq!(
        (status.total, status.pending, status.succeeded, status.dead),
        (20, 0, 20, 0)
    );
    assert!(status.completed && status.succeeded_all);
    // A batch with nothing but callbacks completes at once, from the producer.
    producer
        .batch(BatchOptions::new().id("empty"))
        .on_complete(&done("on_complete"))
        .on_success(&done("on_success"))
        .enqueue()
        .await
        .unwrap();
    assert_both(
        &callbacks_of(&mut observer, &js, "empty", 2).await,
        "empty",
        0,
    );
}

#[tokio::test]
async fn a_dead_member_gives_on_complete_only_and_its_replay_gives_on_success() {
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let _worker = spawn(&server, "a", &[], &mut observer.ready).await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    let mut members = jobs(5, "");
    members[2].note = "fail_unless_replayed".into();
    enqueue(&producer, "with-dead", &members).await;
    let reports = callbacks_of(&mut observer, &js, "with-dead", 1).await;
    assert_eq!(reports[0]["which"], "on_complete");
    assert_eq!(reports[0]["batch"]["succeeded"], 4);
    assert_eq!(reports[0]["batch"]["dead"], 1);
    let status = producer.batch_status("with-dead").await.unwrap().unwrap();
    assert!(status.completed && !status.succeeded_all);
    assert_eq!((status.pending, status.dead), (0, 1));

    // Replay the dead letter as `jetq dead replay` does: its payload and original headers (so
    // `Jetq-Batch` travels), id `replay:<dead-letter sequence>:<task id>`.
    let letter = dead_letters(&js, 1).await.remove(0);
    let task_id = required_header(&letter, "Jetq-Task-Id");
    let mut headers = async_nats::HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let name = name.to_string();
        if name.starts_with("Jetq-") && name != "Jetq-Batch" && name != "Jetq-Enqueued-At" {
            continue;
        }
        for value in values {
            headers.insert(name.as_str(), value.as_str());
        }
    }
    headers.insert(
        "Nats-Msg-Id",
        format!("replay:{}:{task_id}", letter.sequence).as_str(),
    );
    js.publish_with_headers("jetq.task.work.job", headers, letter.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    let reports = callbacks_of(&mut observer, &js, "with-dead", 1).await;
    assert_eq!(reports[0]["which"], "on_success");
    assert_eq!(reports[0]["batch"]["succeeded"], 5);
    assert_eq!(reports[0]["batch"]["dead"], 0);
    let status = producer.batch_status("with-dead").await.unwrap().unwrap();
    assert!(status.completed && status.succeeded_all);
    assert_eq!((status.succeeded, status.dead), (5, 0));
}

#[tokio::test]
async fn bad_batches_are_refused_with_typed_errors() {
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let _worker = spawn(&server, "a", &[], &mut observer.ready).await;
    let producer = producer(&server).await;
    enqueue(&producer, "once", &jobs(1, "")).await;
    let again = producer
        .batch(BatchOptions::new().id("once"))
        .add(&jobs(1, "")[0])
        .enqueue()
        .await;
    assert!(
        matches!(&again, Err(EnqueueError::BatchExists { id }) if id == "once"),
        "{again:?}"
    );
    let bad_id = producer
        .batch(BatchOptions::new().id("a.b"))
        .enqueue()
        .await;
    assert!(
        matches!(bad_id, Err(EnqueueError::InvalidWorkflow(_))),
        "{bad_id:?}"
    );
    // The worker published its types in the catalog: a callback nobody handles is refused.
    let unknown = producer
        .batch(BatchOptions::new().id("unknown-callback"))
        .add(&jobs(1, "")[0])
        .on_complete_raw("callbacks", "nobody_handles_this", serde_json::json!({}))
        .enqueue()
        .await;
    assert!(
        matches!(&unknown, Err(EnqueueError::UnknownCallback { task, .. }) if task == "nobody_handles_this"),
        "{unknown:?}"
    );
    assert!(producer
        .batch_status("unknown-callback")
        .await
        .unwrap()
        .is_none());
    // A closed parent refuses a child, which leaves no record behind; an unknown batch
    // cannot be closed.
    let orphan = producer
        .batch(BatchOptions::new().id("orphan").parent("once"))
        .add(&jobs(1, "")[0])
        .enqueue()
        .await;
    assert!(
        matches!(orphan, Err(EnqueueError::Workflow { .. })),
        "{orphan:?}"
    );
    assert!(producer.batch_status("orphan").await.unwrap().is_none());
    assert!(producer.batch_close("no-such-batch").await.is_err());
    let not_object = producer
        .batch(BatchOptions::new())
        .on_complete_raw("callbacks", "done", serde_json::json!([1]))
        .enqueue()
        .await;
    assert!(
        matches!(not_object, Err(EnqueueError::InvalidWorkflow(_))),
        "{not_object:?}"
    );
}

#[tokio::test]
async fn a_chord_callback_gets_every_member_result() {
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let _worker = spawn(&server, "a", &[], &mut observer.ready).await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    let mut batch = producer.batch(BatchOptions::new().id("chord").chord());
    for job in jobs(10, "result") {
        batch = batch.add(&job);
    }
    let handle = batch
        .on_success(&done("on_success"))
        .enqueue()
        .await
        .unwrap();
    let reports = callbacks_of(&mut observer, &js, "chord", 1).await;
    let results = reports[0]["batch"]["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 10);
    let mut ns: Vec<u64> = results
        .iter()
        .map(|r| r["result"]["n"].as_u64().expect("a result"))
        .collect();
    ns.sort();
    assert_eq!(ns, (0..10).collect::<Vec<_>>());
    let mut ids: Vec<String> = results
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = handle.members.iter().map(|m| m.id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_nested_batch_is_one_member_of_its_parent() {
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let _worker = spawn(&server, "a", &[], &mut observer.ready).await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    let mut parent = producer.batch(BatchOptions::new().id("parent").keep_open());
    for job in jobs(3, "") {
        parent = parent.add(&job);
    }
    parent
        .on_success(&done("on_success"))
        .on_complete(&done("on_complete"))
        .enqueue()
        .await
        .unwrap();
    let mut child = producer.batch(BatchOptions::new().id("child").parent("parent"));
    for job in jobs(4, "sleep:50") {
        child = child.add(&job);
    }
    child
        .on_complete(&done("on_complete"))
        .enqueue()
        .await
        .unwrap();
    producer.batch_close("parent").await.unwrap();
    let child_reports = callbacks_of(&mut observer, &js, "child", 1).await;
    assert_eq!(child_reports[0]["batch"]["total"], 4);
    let reports = callbacks_of(&mut observer, &js, "parent", 2).await;
    assert_both(&reports, "parent", 4);
}

#[tokio::test]
async fn a_nested_batch_reaches_its_parent_when_a_worker_dies_in_between() {
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    let mut parent = producer.batch(BatchOptions::new().id("outer").keep_open());
    for job in jobs(2, "") {
        parent = parent.add(&job);
    }
    parent
        .on_success(&done("on_success"))
        .on_complete(&done("on_complete"))
        .enqueue()
        .await
        .unwrap();
    let mut child = producer.batch(BatchOptions::new().id("inner").parent("outer"));
    for job in jobs(3, "") {
        child = child.add(&job);
    }
    child
        .on_success(&done("on_success"))
        .enqueue()
        .await
        .unwrap();
    producer.batch_close("outer").await.unwrap();
    // Started once both batches are enqueued and closed: a worker that finished the child's
    // members before the producer closed the child would leave the firing to the producer's
    // close, and never reach the fault point (seen under load).
    // Exits after the child's callbacks fired, before the parent counts the child.
    let mut a = spawn(
        &server,
        "dies",
        &[("JETQ_TEST_FAULT", "before_parent")],
        &mut observer.ready,
    )
    .await;
    let status = within(Duration::from_secs(30), "the worker to die", a.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(86));
    let _b = spawn(&server, "b", &[], &mut observer.ready).await;
    let inner = callbacks_of(&mut observer, &js, "inner", 1).await;
    assert_eq!(inner[0]["batch"]["total"], 3);
    let outer = callbacks_of(&mut observer, &js, "outer", 2).await;
    assert_both(&outer, "outer", 3);
}

#[tokio::test]
async fn members_added_to_an_open_batch_are_waited_for() {
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let _worker = spawn(&server, "a", &[], &mut observer.ready).await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    producer
        .batch(BatchOptions::new().id("growing").keep_open())
        .add(&jobs(1, "")[0])
        .on_success(&done("on_success"))
        .enqueue()
        .await
        .unwrap();
    // The first member finishes; the open batch does not fire.
    within(WAIT, "the first member", observer.members.next()).await;
    let more: Vec<RawTask> = (1..4)
        .map(|n| RawTask {
            queue: "work".into(),
            task: "job".into(),
            payload: serde_json::to_vec(&Job {
                n,
                note: String::new(),
            })
            .unwrap()
            .into(),
            options: EnqueueOptions::new(),
        })
        .collect();
    producer.batch_add("growing", more).await.unwrap();
    wait_idle(&js).await;
    let status = producer.batch_status("growing").await.unwrap().unwrap();
    assert_eq!((status.total, status.succeeded), (4, 4));
    assert!(!status.succeeded_all, "an open batch waits for its close");
    producer.batch_close("growing").await.unwrap();
    let reports = callbacks_of(&mut observer, &js, "growing", 1).await;
    assert_eq!(reports[0]["batch"]["succeeded"], 4);
    assert!(producer.batch_close("growing").await.is_ok());
    assert!(matches!(
        producer.batch_add("growing", Vec::new()).await,
        Err(EnqueueError::Workflow { .. })
    ));
}

/// One worker dies at `fault` (the n-th time it reaches it); a second one finishes the batch.
async fn die_at(
    server: &NatsServer,
    observer: &mut Observer,
    js: &jetstream::Context,
    producer: &Producer,
    fault: &str,
) {
    let id = format!("fault-{}", fault.replace([':', '_'], "-"));
    let mut a = spawn(
        server,
        &format!("dies-{id}"),
        &[("JETQ_TEST_FAULT", fault)],
        &mut observer.ready,
    )
    .await;
    enqueue(producer, &id, &jobs(12, "")).await;
    let status = within(
        Duration::from_secs(30),
        "the worker to die at the fault",
        a.wait(),
    )
    .await
    .unwrap();
    assert_eq!(status.code(), Some(86), "{fault}: exit status {status:?}");
    let _b = spawn(server, &format!("after-{id}"), &[], &mut observer.ready).await;
    let reports = callbacks_of(observer, js, &id, 2).await;
    assert_both(&reports, &id, 12);
}

#[tokio::test]
async fn callbacks_fire_once_when_a_worker_dies_at_each_step() {
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    for fault in [
        "after_marker:5",
        "after_count:7",
        "before_callback_publish",
        "after_callback_publish",
        "after_callback_publish:2",
    ] {
        die_at(&server, &mut observer, &js, &producer, fault).await;
    }
}

#[tokio::test]
async fn callbacks_fire_once_when_a_worker_is_killed_while_members_run() {
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    let mut a = spawn(&server, "a", &[], &mut observer.ready).await;
    enqueue(&producer, "killed", &jobs(40, "sleep:100")).await;
    for _ in 0..10 {
        within(WAIT, "members to run", observer.members.next()).await;
    }
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let _b = spawn(&server, "b", &[], &mut observer.ready).await;
    let reports = callbacks_of(&mut observer, &js, "killed", 2).await;
    assert_both(&reports, "killed", 40);
}

#[tokio::test]
async fn callbacks_fire_once_across_a_server_restart() {
    let mut server = NatsServer::start().await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    let mut observer = observe(&server).await;
    let _a = spawn(&server, "a", &[], &mut observer.ready).await;
    enqueue(&producer, "restart", &jobs(60, "sleep:20")).await;
    for _ in 0..15 {
        within(WAIT, "members to run", observer.members.next()).await;
    }
    server.restart().await;
    let reports = callbacks_of(&mut observer, &js, "restart", 2).await;
    assert_both(&reports, "restart", 60);
}

/// 10,000 members (about 30 s in a debug build on two cores); `JETQ_TEST_BATCH_MEMBERS` sets
/// another number.
#[tokio::test]
async fn a_large_batch_completes_with_one_callback() {
    let members: u64 = std::env::var("JETQ_TEST_BATCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let server = NatsServer::start().await;
    let mut observer = observe(&server).await;
    let _a = spawn(
        &server,
        "a",
        &[("JETQ_CONCURRENCY", "64")],
        &mut observer.ready,
    )
    .await;
    let _b = spawn(
        &server,
        "b",
        &[("JETQ_CONCURRENCY", "64")],
        &mut observer.ready,
    )
    .await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;
    let started = std::time::Instant::now();
    let mut batch = producer.batch(BatchOptions::new().id("large"));
    for job in jobs(members, "") {
        batch = batch.add(&job);
    }
    batch
        .on_success(&done("on_success"))
        .on_complete(&done("on_complete"))
        .enqueue()
        .await
        .unwrap();
    let enqueued = started.elapsed();
    let reports = callbacks_of(&mut observer, &js, "large", 2).await;
    eprintln!(
        "{members} members: enqueued in {enqueued:?}, callbacks after {:?}",
        started.elapsed()
    );
    assert_both(&reports, "large", members);
}
