//! Chains (PROTOCOL.md §13, docs/WORKFLOWS.md) against a real nats-server with a
//! `workflow_worker` process: links run in order, a link gets the previous link's result, a
//! failed link stops the chain where its record says, and a worker killed between a link's
//! success and its ack enqueues the next link once.

use std::{process::Stdio, time::Duration};

use futures::StreamExt;
use jetq_contract::workflow::{chain::ChainRecord, ChainState};
use jetq_producer::{Chain, EnqueueError};
use jetq_tests::{workflow::Step, *};
use serde_json::Value;
use tokio::process::{Child, Command};

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

fn step(name: &str) -> Step {
    Step {
        name: name.to_owned(),
        ..Default::default()
    }
}

async fn next_step(steps: &mut async_nats::Subscriber) -> Value {
    let message = within(WAIT, "a chain link", steps.next())
        .await
        .expect("step subscription");
    serde_json::from_slice(&message.payload).unwrap()
}

async fn chain_state(
    producer: &jetq_producer::Producer,
    id: &str,
    state: ChainState,
) -> ChainRecord {
    eventually(WAIT, "the chain's state", || async {
        producer
            .chain_status(id)
            .await
            .ok()
            .flatten()
            .filter(|record| record.state == state)
    })
    .await
}

#[tokio::test]
async fn links_run_in_order_with_the_previous_result() {
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut steps = observer.subscribe("test.step").await.unwrap();
    observer.flush().await.unwrap();
    let _worker = spawn(&server, "a", &[], &mut ready).await;
    let producer = producer(&server).await;
    let handle = producer
        .enqueue_chain(
            Chain::new()
                .id("export-then-mail")
                .then(&step("a"))
                .then_with_previous(&step("b"))
                .then(&step("c")),
        )
        .await
        .unwrap();
    assert_eq!(handle.id, "export-then-mail");
    let a = next_step(&mut steps).await;
    let b = next_step(&mut steps).await;
    let c = next_step(&mut steps).await;
    assert_eq!(
        (a["name"].as_str(), b["name"].as_str(), c["name"].as_str()),
        (Some("a"), Some("b"), Some("c"))
    );
    assert_eq!(b["previous"], serde_json::json!({"from": "a"}));
    assert_eq!(c["previous"], Value::Null, "c did not ask for b's result");
    let record = chain_state(&producer, "export-then-mail", ChainState::Succeeded).await;
    assert_eq!((record.at, record.failed_at), (2, None));

    let again = producer
        .enqueue_chain(Chain::new().id("export-then-mail").then(&step("a")))
        .await;
    assert!(
        matches!(&again, Err(EnqueueError::ChainExists { id }) if id == "export-then-mail"),
        "{again:?}"
    );
    let empty = producer.enqueue_chain(Chain::new()).await;
    assert!(
        matches!(empty, Err(EnqueueError::InvalidWorkflow(_))),
        "{empty:?}"
    );
}

#[tokio::test]
async fn a_failed_link_stops_the_chain_and_says_where() {
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut steps = observer.subscribe("test.step").await.unwrap();
    observer.flush().await.unwrap();
    let _worker = spawn(&server, "a", &[], &mut ready).await;
    let producer = producer(&server).await;
    let failing = Step {
        name: "b".into(),
        fail: true,
        ..Default::default()
    };
    producer
        .enqueue_chain(
            Chain::new()
                .id("stops")
                .then(&step("a"))
                .then(&failing)
                .then(&step("c")),
        )
        .await
        .unwrap();
    let record = chain_state(&producer, "stops", ChainState::Failed).await;
    assert_eq!((record.at, record.failed_at), (1, Some(1)));
    assert_eq!(next_step(&mut steps).await["name"], "a");
    assert_eq!(next_step(&mut steps).await["name"], "b");
    // The failed link is dead-lettered; c never runs.
    let js = raw_jetstream(&server).await;
    let letters = dead_letters(&js, 1).await;
    assert_eq!(required_header(&letters[0], "Jetq-Chain"), "stops:1");
    observer.flush().await.unwrap();
    assert!(
        futures::FutureExt::now_or_never(steps.next()).is_none(),
        "no link after the failed one"
    );
}

#[tokio::test]
async fn a_worker_killed_after_a_link_succeeded_enqueues_the_next_once() {
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut steps = observer.subscribe("test.step").await.unwrap();
    observer.flush().await.unwrap();
    // Exits after link a's next link (b) was published, before a is acknowledged.
    let mut a = spawn(
        &server,
        "dies",
        &[("JETQ_TEST_FAULT", "after_link_publish")],
        &mut ready,
    )
    .await;
    let producer = producer(&server).await;
    producer
        .enqueue_chain(
            Chain::new()
                .id("killed")
                .then(&step("a"))
                .then_with_previous(&step("b")),
        )
        .await
        .unwrap();
    let status = within(Duration::from_secs(30), "the worker to die", a.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(86));
    let _b = spawn(&server, "b", &[], &mut ready).await;
    chain_state(&producer, "killed", ChainState::Succeeded).await;
    let mut runs = Vec::new();
    while runs.iter().filter(|s: &&Value| s["name"] == "b").count() < 1 {
        runs.push(next_step(&mut steps).await);
    }
    let js = raw_jetstream(&server).await;
    // b was stored once: a's redelivery published it again with the same id.
    let info = js
        .get_stream("JETQ_TASKS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    let stored = info.state.last_sequence;
    assert_eq!(stored, 2, "the chain stored a and b once each");
}
