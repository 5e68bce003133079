//! Producer behaviour against a real nats-server: acked enqueue, the wire format, idempotency,
//! pipelining, typed errors for bad input, full streams and outages.

use std::time::Duration;

use bytes::Bytes;
use jetq_contract::{headers, StreamSettings, Subjects};
use jetq_producer::{EnqueueError, EnqueueOptions, Producer, RawTask};
use jetq_tests::*;

#[tokio::test]
async fn enqueue_returns_id_after_the_task_is_stored_with_documented_headers() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let enqueued = producer
        .enqueue_with(
            &Job {
                n: 7,
                note: "hi".into(),
            },
            EnqueueOptions::new()
                .max_attempts(2)
                .timeout(Duration::from_millis(1500))
                .trace_context(
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    None,
                ),
        )
        .await
        .expect("enqueue");
    assert_eq!(enqueued.id.len(), 26, "a ULID: {}", enqueued.id);
    assert!(!enqueued.duplicate);

    let js = raw_jetstream(&server).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(stored.len(), 1);
    let message = &stored[0];
    assert_eq!(message.sequence, enqueued.sequence);
    assert_eq!(message.subject.as_str(), "jetq.task.work.job");
    let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(body, serde_json::json!({"n": 7, "note": "hi"}));
    assert_eq!(
        header(message, headers::MSG_ID).as_deref(),
        Some(enqueued.id.as_str())
    );
    assert_eq!(header(message, headers::MAX_ATTEMPTS).as_deref(), Some("2"));
    assert_eq!(
        header(message, headers::TIMEOUT_MS).as_deref(),
        Some("1500")
    );
    assert!(header(message, headers::TRACEPARENT)
        .unwrap()
        .starts_with("00-0af7"));
    let enqueued_at = header(message, headers::ENQUEUED_AT).unwrap();
    let age = jetq_contract::time::age(&enqueued_at).expect("RFC 3339 enqueue time");
    assert!(age < Duration::from_secs(60), "{enqueued_at}");
}

#[tokio::test]
async fn duplicate_idempotency_key_is_reported_and_stored_once() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let options = EnqueueOptions::new().key("signup:user-42");
    let first = producer
        .enqueue_with(
            &Job {
                n: 1,
                note: String::new(),
            },
            options.clone(),
        )
        .await
        .unwrap();
    let second = producer
        .enqueue_with(
            &Job {
                n: 2,
                note: String::new(),
            },
            options,
        )
        .await
        .unwrap();
    assert_eq!(first.id, "signup:user-42");
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "the second enqueue with the same key is a duplicate"
    );
    assert_eq!(second.sequence, first.sequence);
    let js = raw_jetstream(&server).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(stored.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&stored[0].payload).unwrap();
    assert_eq!(body["n"], 1, "the first task is kept");

    let bad = producer
        .enqueue_with(
            &Job {
                n: 3,
                note: String::new(),
            },
            EnqueueOptions::new().key("has space"),
        )
        .await;
    assert!(matches!(bad, Err(EnqueueError::InvalidKey(_))), "{bad:?}");
}

#[tokio::test]
async fn enqueue_many_keeps_order_and_reports_each_task() {
    let server = NatsServer::start().await;
    let producer = Producer::builder()
        .connection(connection(&server))
        .enqueue_window(8)
        .connect()
        .await
        .unwrap();
    let jobs: Vec<Job> = (0..100)
        .map(|n| Job {
            n,
            note: String::new(),
        })
        .collect();
    let results = producer.enqueue_many(&jobs).await;
    assert_eq!(results.len(), 100);
    let sequences: Vec<u64> = results
        .iter()
        .map(|r| r.as_ref().unwrap().sequence)
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "published in input order"
    );

    let js = raw_jetstream(&server).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    let ns: Vec<u64> = stored
        .iter()
        .map(|m| serde_json::from_slice::<Job>(&m.payload).unwrap().n)
        .collect();
    assert_eq!(ns, (0..100).collect::<Vec<_>>());

    // A bad entry fails alone.
    let raw = vec![
        RawTask {
            queue: "work".into(),
            task: "job".into(),
            payload: Bytes::from_static(b"{\"n\":1}"),
            options: Default::default(),
        },
        RawTask {
            queue: "bad.queue".into(),
            task: "job".into(),
            payload: Bytes::from_static(b"{}"),
            options: Default::default(),
        },
        RawTask {
            queue: "work".into(),
            task: "job".into(),
            payload: Bytes::from_static(b"{\"n\":2}"),
            options: Default::default(),
        },
    ];
    let results = producer.enqueue_many_raw(raw).await;
    assert!(results[0].is_ok());
    assert!(
        matches!(results[1], Err(EnqueueError::InvalidName(_))),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok());
}

#[tokio::test]
async fn invalid_names_are_rejected_before_publishing() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    for (queue, task) in [
        ("a.b", "t"),
        ("q", "t*"),
        ("q", ">"),
        ("", "t"),
        ("q", "with space"),
    ] {
        let result = producer
            .enqueue_raw(RawTask {
                queue: queue.into(),
                task: task.into(),
                payload: Bytes::from_static(b"{}"),
                options: Default::default(),
            })
            .await;
        match result {
            Err(EnqueueError::InvalidName(err)) => assert!(err.to_string().contains("invalid")),
            other => panic!("{queue}/{task}: expected InvalidName, got {other:?}"),
        }
    }
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_TASKS").await, 0);
}

#[tokio::test]
async fn a_full_stream_refuses_new_tasks_and_keeps_the_old_ones() {
    let server = NatsServer::start().await;
    let producer = Producer::builder()
        .connection(connection(&server))
        .streams(StreamSettings {
            stream_max_msgs: 3,
            ..StreamSettings::default()
        })
        .connect()
        .await
        .unwrap();
    for n in 0..3 {
        producer
            .enqueue(&Job {
                n,
                note: String::new(),
            })
            .await
            .unwrap();
    }
    let refused = producer
        .enqueue(&Job {
            n: 3,
            note: String::new(),
        })
        .await;
    match refused {
        Err(EnqueueError::StreamFull { description, .. }) => {
            assert!(description.contains("maximum messages"), "{description}")
        }
        other => panic!("expected StreamFull, got {other:?}"),
    }
    let js = raw_jetstream(&server).await;
    let kept: Vec<u64> = stream_messages(&js, "JETQ_TASKS")
        .await
        .iter()
        .map(|m| serde_json::from_slice::<Job>(&m.payload).unwrap().n)
        .collect();
    assert_eq!(kept, vec![0, 1, 2], "discard: New never drops queued tasks");
}

#[tokio::test]
async fn oversized_payload_is_a_typed_error() {
    let server = NatsServer::builder().max_payload(64 * 1024).start().await;
    let producer = producer(&server).await;
    let big = Job {
        n: 1,
        note: "x".repeat(100 * 1024),
    };
    let result = producer.enqueue(&big).await;
    assert!(
        matches!(result, Err(EnqueueError::TooLarge { size, .. }) if size > 100 * 1024),
        "{result:?}"
    );
}

#[tokio::test]
async fn missing_stream_is_reported_when_provisioning_is_off() {
    let server = NatsServer::start().await;
    let producer = Producer::builder()
        .connection(connection(&server))
        .provision(false)
        .connect()
        .await
        .unwrap();
    let result = producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await;
    match result {
        Err(err @ EnqueueError::NoStream { .. }) => {
            let EnqueueError::NoStream { subject } = &err else {
                unreachable!()
            };
            assert_eq!(subject, "jetq.task.work.job");
            // The message says exactly what provisions the streams.
            let text = err.to_string();
            for hint in [
                "jetq-provision",
                "worker",
                "JETQ_PROVISION=true",
                "Producer::builder().provision(true)",
            ] {
                assert!(text.contains(hint), "{hint} missing from: {text}");
            }
        }
        other => panic!("expected NoStream, got {other:?}"),
    }
}

#[tokio::test]
async fn a_provisioning_producer_enqueues_before_any_worker_and_recreates_a_deleted_stream() {
    let server = NatsServer::start().await;
    // A fresh server, no worker, no jetq-provision: the default producer creates the task
    // stream at startup and the first enqueue is stored.
    let producer = Producer::builder()
        .connection(connection(&server))
        .connect()
        .await
        .unwrap();
    let job = Job {
        n: 1,
        note: String::new(),
    };
    producer.enqueue(&job).await.expect("first enqueue");
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_messages(&js, "JETQ_TASKS").await.len(), 1);

    // The stream is deleted while the producer runs: the next enqueue finds no responders,
    // retries, then creates the stream and is stored (within the bounded retries).
    js.delete_stream("JETQ_TASKS").await.unwrap();
    let enqueued = within(
        Duration::from_secs(10),
        "enqueue after deletion",
        producer.enqueue(&job),
    )
    .await
    .expect("the producer recreated the task stream");
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sequence, enqueued.sequence);
    assert!(!enqueued.duplicate);
}

#[tokio::test]
async fn enqueue_during_an_outage_fails_within_its_timeout_then_recovers() {
    let mut server = NatsServer::start().await;
    let producer = Producer::builder()
        .connection(connection(&server))
        .publish_attempts(2)
        .connect()
        .await
        .unwrap();
    producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    server.kill().await;
    let started = std::time::Instant::now();
    // request_timeout is 2 s and 2 attempts are allowed: never more than ~4 s plus slack.
    let result = within(
        Duration::from_secs(15),
        "enqueue during outage",
        producer.enqueue(&Job {
            n: 2,
            note: String::new(),
        }),
    )
    .await;
    assert!(
        matches!(
            result,
            Err(EnqueueError::NotConnected { .. }) | Err(EnqueueError::Timeout { .. })
        ),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.restart().await;
    let after = eventually(WAIT, "enqueue after restart", || {
        let producer = producer.clone();
        async move {
            producer
                .enqueue(&Job {
                    n: 3,
                    note: String::new(),
                })
                .await
                .ok()
        }
    })
    .await;
    assert!(!after.duplicate);
    let js = raw_jetstream(&server).await;
    let ns: Vec<u64> = stream_messages(&js, &Subjects::default().tasks_stream())
        .await
        .iter()
        .map(|m| serde_json::from_slice::<Job>(&m.payload).unwrap().n)
        .collect();
    assert!(
        ns.contains(&1) && ns.contains(&3),
        "acknowledged tasks survive the kill: {ns:?}"
    );
}

#[tokio::test]
async fn an_ack_timeout_is_retried_with_the_same_id_and_stored_once() {
    let server = NatsServer::start().await;
    let producer = Producer::builder()
        .connection(jetq_contract::ConnectionConfig {
            request_timeout: Duration::from_millis(700),
            ..connection(&server)
        })
        .publish_attempts(6)
        .connect()
        .await
        .unwrap();
    let pid = server.pid().expect("pid").to_string();
    // Freeze the server so the first publish's ack cannot arrive in time, then thaw it while
    // the producer is retrying.
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stop.success());
    let thaw = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
    });
    let enqueued = within(
        WAIT,
        "enqueue across the freeze",
        producer.enqueue(&Job {
            n: 1,
            note: String::new(),
        }),
    )
    .await
    .expect("a retry succeeds once the server thaws");
    assert!(thaw.await.unwrap().success());
    assert!(
        !enqueued.duplicate,
        "our own earlier attempt is not a duplicate of someone else's task"
    );
    let js = raw_jetstream(&server).await;
    let stored = stream_messages(&js, "JETQ_TASKS").await;
    assert_eq!(
        stored.len(),
        1,
        "every attempt carried the same id, so the task is stored once"
    );
    assert_eq!(
        header(&stored[0], headers::MSG_ID).as_deref(),
        Some(enqueued.id.as_str())
    );
}

/// A web handler awaits one `enqueue` future per request, and `enqueue_many` keeps one such
/// future per task in flight: their size is copied around per task. They once reserved room
/// for the status bucket's open and write futures (10.6 KB; pipelined enqueue spent half its
/// instructions in memcpy); those rare paths are boxed now.
#[tokio::test]
async fn enqueue_futures_stay_small() {
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let job = Job {
        n: 1,
        note: String::new(),
    };
    let one = producer.enqueue(&job);
    let many = producer.enqueue_many(std::slice::from_ref(&job));
    let (one, many) = (std::mem::size_of_val(&one), std::mem::size_of_val(&many));
    eprintln!("enqueue future: {one} bytes, enqueue_many future: {many} bytes");
    assert!(one <= 4096, "the enqueue future is {one} bytes");
    assert!(many <= 4096, "the enqueue_many future is {many} bytes");
}

/// An ack that never comes (no stream: a plain subscriber takes the publish and never answers)
/// is retried with the identical message, and `publish_attempts` bounds the sends in all —
/// for `enqueue`, whose first send happens before the retry loop, and for `enqueue_many`.
#[tokio::test]
async fn an_unacknowledged_enqueue_is_sent_exactly_publish_attempts_times_with_one_id() {
    use futures::StreamExt;

    let server = NatsServer::start().await;
    let listener = async_nats::connect(server.url()).await.unwrap();
    let mut sink = listener.subscribe("jetq.task.work.job").await.unwrap();
    listener.flush().await.unwrap();
    let mut config = connection(&server);
    config.request_timeout = Duration::from_millis(300);
    let producer = Producer::builder()
        .connection(config)
        .provision(false)
        .publish_attempts(3)
        .connect()
        .await
        .unwrap();
    let job = Job {
        n: 1,
        note: String::new(),
    };
    let one = within(Duration::from_secs(10), "enqueue", producer.enqueue(&job)).await;
    let many = within(
        Duration::from_secs(10),
        "enqueue_many",
        producer.enqueue_many(std::slice::from_ref(&job)),
    )
    .await;
    for result in [one, many.into_iter().next().expect("one result")] {
        match result {
            Err(EnqueueError::Timeout { attempts, .. }) => assert_eq!(attempts, 3),
            other => panic!("expected a timeout after 3 attempts, got {other:?}"),
        }
    }
    // Both enqueues are over: everything they sent has reached the subscriber or is in flight.
    let mut ids = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), sink.next()).await
    {
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::MSG_ID))
            .map(|v| v.as_str().to_owned())
            .expect("every send carries the task id");
        ids.push(id);
    }
    assert_eq!(ids.len(), 6, "3 sends per enqueue: {ids:?}");
    assert!(ids[..3].iter().all(|id| id == &ids[0]), "{ids:?}");
    assert!(ids[3..].iter().all(|id| id == &ids[3]), "{ids:?}");
    assert_ne!(ids[0], ids[3], "two tasks, two ids");
}
