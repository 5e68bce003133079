//! The contract's publish-until-acknowledged helper (`jetq_contract::publish`) against a real
//! nats-server: the sends it makes are counted by a subscriber, and its acks are the server's.

use std::time::Duration;

use async_nats::{jetstream, HeaderMap};
use futures::StreamExt;
use jetq_contract::{
    headers,
    publish::{Outgoing, PublishError, Publisher},
};
use jetq_tests::*;

const SUBJECT: &str = "jetq.task.work.job";

/// A JetStream context whose sends and acks time out after 300 ms.
async fn impatient_jetstream(server: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(server.url())
        .await
        .expect("client connects");
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_millis(300));
    js
}

fn message(id: &str) -> Outgoing {
    Outgoing::new(SUBJECT, id, HeaderMap::new(), "{\"n\":1}".into())
}

#[tokio::test]
async fn a_message_never_acknowledged_is_sent_exactly_max_sends_times_with_one_id() {
    let server = NatsServer::start().await;
    // A subscriber but no stream: every send is received and none is acknowledged.
    let listener = async_nats::connect(server.url()).await.unwrap();
    let mut sink = listener.subscribe(SUBJECT).await.unwrap();
    listener.flush().await.unwrap();
    let publisher = Publisher::new(impatient_jetstream(&server).await, 3);

    let result = within(
        Duration::from_secs(10),
        "publish",
        publisher.publish(&message("fire:a")),
    )
    .await;
    match result {
        Err(PublishError::Unacknowledged { sends, ref id, .. }) => {
            assert_eq!((sends, id.as_str()), (3, "fire:a"));
        }
        other => panic!("expected no acknowledgement after 3 sends, got {other:?}"),
    }
    // The publish is over: everything it sent has reached the subscriber or is in flight.
    let mut ids = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), sink.next()).await
    {
        ids.push(
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::MSG_ID))
                .map(|v| v.as_str().to_owned())
                .expect("every send carries the id"),
        );
    }
    assert_eq!(ids, ["fire:a"; 3], "3 sends in all, one id");
}

#[tokio::test]
async fn an_acknowledged_publish_reports_its_stream_sequence_and_a_second_copy_as_duplicate() {
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    js.create_stream(jetstream::stream::Config {
        name: "PUBLISH_TEST".into(),
        subjects: vec!["jetq.task.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let publisher = Publisher::new(js.clone(), 3);

    let first = publisher.publish(&message("task-1")).await.unwrap();
    assert_eq!(
        (
            first.stream.as_str(),
            first.sequence,
            first.duplicate,
            first.sends
        ),
        ("PUBLISH_TEST", 1, false, 1)
    );
    let again = publisher.publish(&message("task-1")).await.unwrap();
    assert_eq!((again.sequence, again.duplicate), (1, true));
    assert_eq!(stream_len(&js, "PUBLISH_TEST").await, 1, "stored once");

    // A refusal is final at once: nothing captures this subject.
    let refused = publisher
        .publish(&Outgoing::new(
            "nowhere.at.all",
            "x",
            HeaderMap::new(),
            "{}".into(),
        ))
        .await
        .expect_err("no stream captures the subject");
    assert!(
        matches!(refused, PublishError::Failed { sends: 1, .. }),
        "{refused:?}"
    );
}
