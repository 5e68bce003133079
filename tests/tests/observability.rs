//! Observability against a real nats-server: one trace from a request span through the queue
//! into every attempt and the dead letter (in-memory exporter), export to a real OTLP/HTTP
//! receiver, exact Prometheus counts after a known mix of outcomes, readiness following the
//! NATS connection, and logs that carry the task's fields but never a secret.
//!
//! Each test installs its own `tracing` subscriber with `set_default`: `#[tokio::test]` runs a
//! current-thread runtime, so every task of the test (worker loops included) sees it.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use jetq_consumer::{TaskContext, TaskError, Worker, WorkerSettings};
use jetq_contract::{headers, otel::attributes as attr, ConnectionConfig, Secret};
use jetq_producer::{EnqueueOptions, Producer};
use jetq_telemetry::{health_router, HealthServer, Readiness, Telemetry, TelemetryConfig};
use jetq_tests::{otel::*, *};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, TraceId};
use opentelemetry_sdk::trace::SpanData;
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const CALLER_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn job(n: u64) -> Job {
    Job {
        n,
        note: String::new(),
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn attempt_of(span: &SpanData) -> i64 {
    match attribute(span, attr::ATTEMPT) {
        Some(opentelemetry::Value::I64(n)) => n,
        other => panic!("process span without an integer attempt: {other:?}"),
    }
}

fn has_exception(span: &SpanData) -> bool {
    span.events.iter().any(|event| event.name == "exception")
}

#[tokio::test]
async fn one_trace_runs_from_the_request_through_the_queue_into_every_attempt_and_the_dead_letter()
{
    isolate_subscribers();
    let capture = SpanCapture::new();
    let _traced = tracing::dispatcher::set_default(&capture.dispatch());
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                // Whatever the handler does is traced under its attempt.
                let work = tracing::info_span!("handler_work");
                let trace_id = work.context().span().span_context().trace_id();
                drop(work);
                tx.send((job.n, ctx.attempt(), trace_id)).ok();
                match job.n {
                    1 if ctx.attempt() == 1 => Err(TaskError::retry("provider unavailable")),
                    2 => Err(TaskError::retry("poison")),
                    _ => ok(),
                }
            }
        })
        .build()
        .await
        .unwrap();
    let (stop, run) = spawn_worker(worker);
    let producer = producer(&server).await;

    // A web app whose handler enqueues two tasks, behind the request-span middleware, called
    // by a client that is itself traced (its traceparent header).
    let app = axum::Router::new()
        .route(
            "/signup",
            axum::routing::get(move || {
                let producer = producer.clone();
                async move {
                    let good = producer.enqueue(&job(1)).await.unwrap();
                    let poison = producer.enqueue(&job(2)).await.unwrap();
                    format!("{} {}", good.id, poison.id)
                }
            }),
        )
        .layer(axum::middleware::from_fn(jetq_telemetry::trace_requests));
    let web = HealthServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), app)
        .await
        .unwrap();
    let (code, body) = http_get_with(
        web.local_addr(),
        "/signup",
        &[("traceparent", CLIENT_TRACEPARENT)],
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let (good, poison) = body.trim().split_once(' ').expect("two task ids");
    let (good, poison) = (good.to_owned(), poison.to_owned());
    let trace = TraceId::from_hex(CLIENT_TRACE).unwrap();

    let mut seen = Vec::new();
    for _ in 0..5 {
        let (n, attempt, trace_id) = next(&mut rx, "an attempt").await;
        seen.push((n, attempt, trace_id.to_string()));
    }
    seen.sort();
    let t = trace.to_string();
    assert_eq!(
        seen,
        vec![
            (1, 1, t.clone()),
            (1, 2, t.clone()),
            (2, 1, t.clone()),
            (2, 2, t.clone()),
            (2, 3, t.clone())
        ],
        "every attempt, and what its handler calls, is in the request's trace"
    );
    let js = raw_jetstream(&server).await;
    dead_letters(&js, 1).await;
    stop_worker(stop, run).await;
    web.stop().await;

    let spans = capture.spans();
    let requests = named(&spans, "GET /signup");
    assert_eq!(requests.len(), 1);
    let request_span = requests[0];
    assert_eq!(request_span.span_kind, SpanKind::Server);
    assert_eq!(
        request_span.span_context.trace_id(),
        trace,
        "continues the client's trace"
    );
    assert_eq!(request_span.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        attribute_str(request_span, "http.route").as_deref(),
        Some("/signup")
    );

    // The producer side: one `send` span per task, a child of the request span.
    let sends = named(&spans, "send jetq.task.work.job");
    assert_eq!(
        sends.len(),
        2,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let send_of = |id: &str| {
        *sends
            .iter()
            .find(|span| attribute_str(span, attr::MESSAGING_MESSAGE_ID).as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no send span for task {id}"))
    };
    for (send, id) in [(send_of(&good), &good), (send_of(&poison), &poison)] {
        assert_eq!(send.span_kind, SpanKind::Producer);
        assert_eq!(send.span_context.trace_id(), trace);
        assert_eq!(send.parent_span_id, request_span.span_context.span_id());
        assert_eq!(
            attribute_str(send, attr::MESSAGING_SYSTEM).as_deref(),
            Some("nats")
        );
        assert_eq!(
            attribute_str(send, attr::MESSAGING_OPERATION_TYPE).as_deref(),
            Some("send")
        );
        assert_eq!(
            attribute_str(send, attr::MESSAGING_DESTINATION_NAME).as_deref(),
            Some("jetq.task.work.job")
        );
        assert_eq!(attribute_str(send, attr::QUEUE).as_deref(), Some("work"));
        assert_eq!(attribute_str(send, attr::TASK_NAME).as_deref(), Some("job"));
        assert_eq!(
            attribute_str(send, attr::MESSAGING_MESSAGE_ID).as_deref(),
            Some(id.as_str())
        );
        assert_eq!(send.status, Status::Unset);
    }

    // The consumer side: one `process` span per attempt, each a child of its task's send span.
    let processes = named(&spans, "process jetq.task.work.job");
    assert_eq!(processes.len(), 5, "one span per attempt");
    for process in &processes {
        assert_eq!(process.span_kind, SpanKind::Consumer);
        assert_eq!(process.span_context.trace_id(), trace);
        assert!(
            process.parent_span_is_remote,
            "the parent came through the headers"
        );
        assert_eq!(
            attribute_str(process, attr::MESSAGING_SYSTEM).as_deref(),
            Some("nats")
        );
        assert_eq!(
            attribute_str(process, attr::MESSAGING_OPERATION_TYPE).as_deref(),
            Some("process")
        );
        assert_eq!(
            attribute_str(process, attr::MESSAGING_DESTINATION_NAME).as_deref(),
            Some("jetq.task.work.job")
        );
        assert_eq!(
            attribute_str(process, attr::MESSAGING_CONSUMER_GROUP_NAME).as_deref(),
            Some("worker-work")
        );
        assert_eq!(attribute_str(process, attr::QUEUE).as_deref(), Some("work"));
        assert_eq!(
            attribute_str(process, attr::TASK_NAME).as_deref(),
            Some("job")
        );
    }
    let attempts_of = |task: &String| {
        let send = send_of(task);
        let mut mine: Vec<&SpanData> = processes
            .iter()
            .copied()
            .filter(|span| {
                attribute_str(span, attr::MESSAGING_MESSAGE_ID).as_deref() == Some(task.as_str())
            })
            .collect();
        mine.sort_by_key(|span| attempt_of(span));
        for span in &mine {
            assert_eq!(span.parent_span_id, send.span_context.span_id());
        }
        mine
    };
    let good_attempts = attempts_of(&good);
    assert_eq!(
        good_attempts
            .iter()
            .map(|s| attempt_of(s))
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(matches!(good_attempts[0].status, Status::Error { .. }));
    assert!(
        has_exception(good_attempts[0]),
        "the failed attempt records the error"
    );
    assert_eq!(
        attribute_str(good_attempts[0], attr::OUTCOME).as_deref(),
        Some("retried")
    );
    assert_eq!(good_attempts[1].status, Status::Unset);
    assert!(!has_exception(good_attempts[1]));
    assert_eq!(
        attribute_str(good_attempts[1], attr::OUTCOME).as_deref(),
        Some("succeeded")
    );

    let poison_attempts = attempts_of(&poison);
    assert_eq!(
        poison_attempts
            .iter()
            .map(|s| attempt_of(s))
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for span in &poison_attempts {
        assert!(
            matches!(&span.status, Status::Error { description } if description.contains("poison"))
        );
        assert!(has_exception(span));
    }
    assert_eq!(
        attribute_str(poison_attempts[2], attr::OUTCOME).as_deref(),
        Some("dead_lettered")
    );

    // The handler's own span is a child of its attempt.
    let work = named(&spans, "handler_work");
    assert_eq!(work.len(), 5);
    let process_ids: Vec<_> = processes.iter().map(|s| s.span_context.span_id()).collect();
    assert!(work
        .iter()
        .all(|span| process_ids.contains(&span.parent_span_id)));

    // The dead-letter write: a PRODUCER span under the final attempt, linked to the task's send.
    let dead = named(&spans, "send jetq.dead.work.job");
    assert_eq!(dead.len(), 1);
    let dead = dead[0];
    assert_eq!(dead.span_kind, SpanKind::Producer);
    assert_eq!(dead.span_context.trace_id(), trace);
    assert_eq!(
        dead.parent_span_id,
        poison_attempts[2].span_context.span_id()
    );
    let poison_send = send_of(&poison).span_context.clone();
    assert!(
        dead.links
            .iter()
            .any(|link| link.span_context.span_id() == poison_send.span_id()
                && link.span_context.trace_id() == trace),
        "the dead-letter span links the original send: {:?}",
        dead.links
    );
    assert_eq!(
        attribute_str(dead, attr::DEAD_REASON).as_deref(),
        Some("exhausted")
    );
}

#[tokio::test]
async fn the_wire_carries_trace_context_only_from_a_real_span_and_a_caller_value_wins() {
    isolate_subscribers();
    let server = NatsServer::start().await;
    let producer = producer(&server).await;
    let js = raw_jetstream(&server).await;

    // No OpenTelemetry layer: nothing to propagate, nothing written.
    let plain = producer.enqueue(&job(1)).await.unwrap();

    let capture = SpanCapture::new();
    let traced = tracing::dispatcher::set_default(&capture.dispatch());
    let request = tracing::info_span!("request");
    let injected = producer
        .enqueue(&job(2))
        .instrument(request.clone())
        .await
        .unwrap();
    let caller = producer
        .enqueue_with(
            &job(3),
            EnqueueOptions::new().trace_context(CALLER_TRACEPARENT, Some("vendor=1".into())),
        )
        .instrument(request.clone())
        .await
        .unwrap();
    drop(request);
    drop(traced);

    let stored = stream_messages(&js, "JETQ_TASKS").await;
    let by_id: HashMap<String, &async_nats::jetstream::message::StreamMessage> = stored
        .iter()
        .map(|m| (header(m, headers::MSG_ID).unwrap(), m))
        .collect();
    assert_eq!(header(by_id[&plain.id], headers::TRACEPARENT), None);

    let spans = capture.spans();
    let sends = named(&spans, "send jetq.task.work.job");
    let send_of = |id: &str| {
        *sends
            .iter()
            .find(|span| attribute_str(span, attr::MESSAGING_MESSAGE_ID).as_deref() == Some(id))
            .expect("send span")
    };
    let send = send_of(&injected.id).span_context.clone();
    assert_eq!(
        header(by_id[&injected.id], headers::TRACEPARENT),
        Some(format!("00-{}-{}-01", send.trace_id(), send.span_id())),
        "W3C traceparent of the send span, lower-case header name"
    );

    assert_eq!(
        header(by_id[&caller.id], headers::TRACEPARENT).as_deref(),
        Some(CALLER_TRACEPARENT),
        "a caller's traceparent is written verbatim"
    );
    assert_eq!(
        header(by_id[&caller.id], headers::TRACESTATE).as_deref(),
        Some("vendor=1")
    );
    let caller_send = send_of(&caller.id);
    assert_eq!(
        caller_send.span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c",
        "and it is the send span's parent"
    );
    assert_eq!(caller_send.parent_span_id.to_string(), "b7ad6b7169203331");
}

#[tokio::test]
async fn spans_and_metrics_reach_an_otlp_http_receiver_with_the_service_name() {
    isolate_subscribers();
    let receiver = OtlpReceiver::start().await;
    let config = TelemetryConfig::from_env_iter(
        "jetq-worker",
        "warn",
        vars(&[
            ("OTEL_SERVICE_NAME", "jetq-otlp-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
        ]),
    )
    .unwrap();
    assert!(config.traces && config.otlp_metrics);
    let telemetry = Arc::new(Telemetry::new(config).unwrap());
    let logs = LogBuffer::default();
    let traced = tracing::dispatcher::set_default(&telemetry.dispatch_with(logs, false).unwrap());

    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = worker(&server)
        .meter(telemetry.meter("jetq-consumer"))
        .handler(move |job: Job, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(job.n).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let (stop, run) = spawn_worker(worker);
    let producer = Producer::builder()
        .connection(connection(&server))
        .meter(telemetry.meter("jetq-producer"))
        .connect()
        .await
        .unwrap();
    let request = tracing::info_span!("request", otel.name = "POST /exports", otel.kind = "server");
    producer.enqueue(&job(7)).instrument(request).await.unwrap();
    assert_eq!(next(&mut rx, "the task to run").await, 7);
    stop_worker(stop, run).await;
    drop(traced);

    // Graceful shutdown flushes both pipelines to the collector (blocking: off the runtime
    // thread, which serves the receiver).
    let flushing = telemetry.clone();
    within(
        WAIT,
        "telemetry shutdown",
        tokio::task::spawn_blocking(move || flushing.shutdown()),
    )
    .await
    .expect("shutdown task")
    .expect("spans and metrics flushed");

    receiver.with(|received| {
        let resource_spans: Vec<_> = received
            .traces
            .iter()
            .flat_map(|request| request.resource_spans.iter())
            .collect();
        assert!(!resource_spans.is_empty(), "trace export arrived");
        let mut names = Vec::new();
        let mut trace_ids = std::collections::BTreeSet::new();
        for resource in &resource_spans {
            let attributes = &resource.resource.as_ref().expect("a resource").attributes;
            assert_eq!(
                proto_attribute(attributes, "service.name").as_deref(),
                Some("jetq-otlp-test")
            );
            assert_eq!(
                proto_attribute(attributes, "deployment.environment").as_deref(),
                Some("test")
            );
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    names.push(span.name.clone());
                    trace_ids.insert(span.trace_id.clone());
                }
            }
        }
        names.sort();
        assert_eq!(
            names,
            vec![
                "POST /exports",
                "process jetq.task.work.job",
                "send jetq.task.work.job"
            ]
        );
        assert_eq!(trace_ids.len(), 1, "one trace");

        let metric_names: std::collections::BTreeSet<String> = received
            .metrics
            .iter()
            .flat_map(|request| request.resource_metrics.iter())
            .flat_map(|resource| resource.scope_metrics.iter())
            .flat_map(|scope| scope.metrics.iter())
            .map(|metric| metric.name.clone())
            .collect();
        for expected in [
            "jetq.tasks.enqueued",
            "jetq.tasks.succeeded",
            "jetq.task.duration",
        ] {
            assert!(
                metric_names.contains(expected),
                "{expected} in {metric_names:?}"
            );
        }
    });
    // The exporters' HTTP clients are dropped off the runtime thread too.
    let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
}

#[tokio::test]
async fn metrics_count_a_known_mix_of_outcomes_exactly() {
    isolate_subscribers();
    let telemetry = Telemetry::new(TelemetryConfig::local("jetq-worker", "warn")).unwrap();
    let server = NatsServer::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let done = tx.clone();
    let worker = worker(&server)
        .settings(WorkerSettings {
            metrics_interval: Duration::from_millis(200),
            ..fast_settings()
        })
        .meter(telemetry.meter("jetq-consumer"))
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                let result = match job.n {
                    20 | 21 if ctx.attempt() == 1 => Err(TaskError::retry("flaky")),
                    30 => Err(TaskError::retry("always failing")),
                    40 => Err(TaskError::fatal("bad input")),
                    _ => ok(),
                };
                if result.is_ok() {
                    tx.send(job.n).ok();
                }
                result
            }
        })
        .handler(move |_email: Email, _ctx: TaskContext| {
            let done = done.clone();
            async move {
                done.send(0).ok();
                ok()
            }
        })
        .build()
        .await
        .unwrap();
    let readiness = Readiness::new();
    let health = worker.health();
    readiness.add("worker", move || health.check());
    let health = telemetry.serve_health(readiness).await.unwrap();
    let (stop, run) = spawn_worker(worker);
    let producer = Producer::builder()
        .connection(connection(&server))
        .meter(telemetry.meter("jetq-producer"))
        .connect()
        .await
        .unwrap();
    for n in [10, 11, 12, 20, 21, 30, 40] {
        producer.enqueue(&job(n)).await.unwrap();
    }
    for to in ["a@example.com", "b@example.com"] {
        producer.enqueue(&Email { to: to.into() }).await.unwrap();
    }
    // A duplicate is not a new task.
    let key = EnqueueOptions::new().key("once");
    producer
        .enqueue_with(
            &Email {
                to: "c@example.com".into(),
            },
            key.clone(),
        )
        .await
        .unwrap();
    producer
        .enqueue_with(
            &Email {
                to: "c@example.com".into(),
            },
            key,
        )
        .await
        .unwrap();
    for _ in 0..8 {
        next(&mut rx, "a successful attempt").await;
    }
    let js = raw_jetstream(&server).await;
    dead_letters(&js, 2).await;

    let addr = health.local_addr();
    let work = [("jetq_queue", "work"), ("jetq_task_name", "job")];
    let emails = [("jetq_queue", "emails"), ("jetq_task_name", "send_email")];
    // Counters land right after each ack; the queue gauges on the next poll.
    let samples = eventually(
        WAIT,
        "every outcome counted and the queues drained",
        || async {
            let (code, body) = http_get(addr, "/metrics").await.ok()?;
            let samples = parse_prometheus(&body);
            let settled = code == 200
                && metric(&samples, "jetq_tasks_succeeded_total", &[]) == 8.0
                && metric(&samples, "jetq_tasks_dead_lettered_total", &[]) == 2.0
                && metric(&samples, "jetq_tasks_in_flight", &[]) == 0.0
                && metric(
                    &samples,
                    "jetq_queue_ack_pending",
                    &[("jetq_queue", "work")],
                ) == 0.0
                && metric(&samples, "jetq_queue_pending", &[("jetq_queue", "work")]) == 0.0
                && metric(&samples, "jetq_queue_pending", &[("jetq_queue", "emails")]) == 0.0;
            settled.then_some(samples)
        },
    )
    .await;
    let count = |name: &str, labels: &[(&str, &str)]| metric(&samples, name, labels);
    assert_eq!(count("jetq_tasks_enqueued_total", &work), 7.0);
    assert_eq!(
        count("jetq_tasks_enqueued_total", &emails),
        3.0,
        "duplicate not counted"
    );
    assert_eq!(count("jetq_tasks_succeeded_total", &work), 5.0);
    assert_eq!(count("jetq_tasks_succeeded_total", &emails), 3.0);
    // 20 and 21 fail once; 30 fails all three attempts; 40 fails fatally once.
    let work_error = [work[0], work[1], ("error_type", "error")];
    let work_fatal = [work[0], work[1], ("error_type", "fatal")];
    assert_eq!(count("jetq_tasks_failed_total", &work_error), 5.0);
    assert_eq!(count("jetq_tasks_failed_total", &work_fatal), 1.0);
    assert_eq!(count("jetq_tasks_failed_total", &[]), 6.0);
    assert_eq!(count("jetq_tasks_retried_total", &work), 4.0);
    assert_eq!(count("jetq_tasks_retried_total", &[]), 4.0);
    let exhausted = [work[0], work[1], ("jetq_dead_reason", "exhausted")];
    let fatal = [work[0], work[1], ("jetq_dead_reason", "fatal")];
    assert_eq!(count("jetq_tasks_dead_lettered_total", &exhausted), 1.0);
    assert_eq!(count("jetq_tasks_dead_lettered_total", &fatal), 1.0);
    assert_eq!(
        count("jetq_task_duration_seconds_count", &work),
        11.0,
        "5 + 6 attempts"
    );
    assert_eq!(
        count(
            "jetq_task_duration_seconds_count",
            &[work[0], work[1], ("jetq_outcome", "failed")]
        ),
        6.0
    );
    assert_eq!(count("jetq_task_duration_seconds_count", &emails), 3.0);
    // The OpenTelemetry messaging metrics, beside jetq's own: one process duration per attempt
    // (error.type on those that did not succeed) and one consumed message per delivery.
    let messaging = |queue| {
        [
            ("messaging_system", "nats"),
            ("messaging_operation_name", "process"),
            ("messaging_destination_name", queue),
        ]
    };
    let [system, operation, destination] = messaging("work");
    assert_eq!(
        count(
            "messaging_process_duration_seconds_count",
            &messaging("work")
        ),
        11.0
    );
    assert_eq!(
        count(
            "messaging_process_duration_seconds_count",
            &[system, operation, destination, ("error_type", "failed")]
        ),
        6.0
    );
    assert_eq!(
        count(
            "messaging_process_duration_seconds_count",
            &messaging("emails")
        ),
        3.0
    );
    assert_eq!(
        count(
            "messaging_client_consumed_messages_total",
            &messaging("work")
        ),
        11.0
    );
    assert_eq!(
        count(
            "messaging_client_consumed_messages_total",
            &messaging("emails")
        ),
        3.0
    );
    assert_eq!(count("jetq_tasks_enqueue_failures_total", &[]), 0.0);
    assert_eq!(
        count(
            "jetq_queue_max_ack_pending",
            &[("jetq_queue", "work"), ("jetq_priority", "normal")]
        ),
        fast_settings().max_in_flight as f64
    );
    stop_worker(stop, run).await;
    health.stop().await;
}

#[tokio::test]
async fn readiness_goes_false_while_nats_is_down_and_true_after_it_restarts() {
    isolate_subscribers();
    let mut server = NatsServer::start().await;
    let worker = worker(&server)
        .settings(WorkerSettings {
            metrics_interval: Duration::from_millis(200),
            ..fast_settings()
        })
        .handler(|_job: Job, _ctx: TaskContext| async move { ok() })
        .build()
        .await
        .unwrap();
    let readiness = Readiness::new();
    let health = worker.health();
    readiness.add("worker", move || health.check());
    let health = HealthServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        health_router(readiness, None),
    )
    .await
    .unwrap();
    let addr = health.local_addr();
    let get = |path: &'static str| async move {
        http_get(addr, path).await.expect("health server answers")
    };
    let readyz = |want: u16| async move {
        let (code, body) = http_get(addr, "/readyz").await.ok()?;
        (code == want).then_some(body)
    };

    let (code, body) = get("/readyz").await;
    assert_eq!(code, 503, "not ready before it runs: {body}");
    assert!(body.contains("not running"), "{body}");
    let (stop, run) = spawn_worker(worker);
    eventually(WAIT, "ready once running", || readyz(200)).await;
    assert_eq!(get("/healthz").await.0, 200);

    server.kill().await;
    let body = eventually(WAIT, "not ready while NATS is down", || readyz(503)).await;
    assert!(body.contains("worker: not connected to NATS"), "{body}");
    assert_eq!(get("/healthz").await.0, 200, "still alive");

    server.restart().await;
    eventually(WAIT, "ready again after the restart", || readyz(200)).await;

    stop_worker(stop, run).await;
    let (code, _) = get("/readyz").await;
    assert_eq!(code, 503, "not ready once shut down");
    health.stop().await;
}

#[tokio::test]
async fn task_logs_carry_the_task_fields_and_never_a_password_or_token() {
    isolate_subscribers();
    const PASSWORD: &str = "pw-s3cr3t-7f3a9c";
    const TOKEN: &str = "tok-s3cr3t-41c2e8";
    let config = TelemetryConfig::from_env_iter(
        "jetq-worker",
        "trace",
        vars(&[("JETQ_LOG_FORMAT", "json"), ("OTEL_SDK_DISABLED", "true")]),
    )
    .unwrap();
    let telemetry = Telemetry::new(config).unwrap();
    let logs = LogBuffer::default();
    let _logging =
        tracing::dispatcher::set_default(&telemetry.dispatch_with(logs.clone(), false).unwrap());

    let password_server = NatsServer::builder()
        .extra_config(format!(
            "authorization {{\n  user: jetq-app\n  password: \"{PASSWORD}\"\n}}\n"
        ))
        .start()
        .await;
    let token_server = NatsServer::builder()
        .extra_config(format!("authorization {{\n  token: \"{TOKEN}\"\n}}\n"))
        .start()
        .await;
    let with_password = |password: &str| ConnectionConfig {
        nats_user: Some("jetq-app".into()),
        nats_password: Some(Secret::new(password)),
        connect_timeout: Duration::from_secs(2),
        ..connection(&password_server)
    };
    let with_token = |token: &str| ConnectionConfig {
        nats_token: Some(Secret::new(token)),
        connect_timeout: Duration::from_secs(2),
        ..connection(&token_server)
    };

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut enqueued = Vec::new();
    for connection in [with_password(PASSWORD), with_token(TOKEN)] {
        // What an application typically logs about its configuration.
        tracing::info!(config = ?connection, "connecting");
        let tx = tx.clone();
        let worker = Worker::builder()
            .connection(connection.clone())
            .settings(fast_settings())
            .handler(move |job: Job, ctx: TaskContext| {
                let tx = tx.clone();
                async move {
                    tracing::info!(step = "smtp", "handler working");
                    tx.send((job.n, ctx.id().to_owned())).ok();
                    ok()
                }
            })
            .build()
            .await
            .unwrap();
        let (stop, run) = spawn_worker(worker);
        let producer = Producer::builder()
            .connection(connection)
            .connect()
            .await
            .unwrap();
        let task = producer
            .enqueue_with(
                &job(enqueued.len() as u64),
                EnqueueOptions::new().trace_context(CALLER_TRACEPARENT, None),
            )
            .await
            .unwrap();
        next(&mut rx, "the task to run").await;
        enqueued.push(task.id);
        stop_worker(stop, run).await;
    }
    for wrong in [with_password("wrong-password"), with_token("wrong-token")] {
        let err = Producer::builder()
            .connection(wrong)
            .connect()
            .await
            .expect_err("a wrong credential is refused");
        tracing::error!(error = %err, debug = ?err, "cannot connect");
    }

    let text = logs.text();
    assert!(
        text.lines().count() > 50,
        "trace-level logs were captured:\n{text}"
    );
    assert!(text.contains("cannot connect"), "the failures were logged");
    for secret in [PASSWORD, TOKEN, "wrong-password", "wrong-token"] {
        assert!(!text.contains(secret), "{secret} leaked into the logs");
    }

    let handler_lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "handler working")
        .collect();
    assert_eq!(handler_lines.len(), 2);
    for (line, id) in handler_lines.iter().zip(&enqueued) {
        assert_eq!(line["messaging.message.id"], id.as_str(), "{line}");
        assert_eq!(line["jetq.queue"], "work", "{line}");
        assert_eq!(line["jetq.task.name"], "job", "{line}");
        assert_eq!(line["jetq.attempt"], 1, "{line}");
        assert_eq!(
            line["trace_id"], "0af7651916cd43dd8448eb211c80319c",
            "{line}"
        );
        assert_eq!(line["step"], "smtp", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
    }
}
