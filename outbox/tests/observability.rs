//! Traces and lag: the trace runs from the request that wrote the row, through the relay, into
//! the worker; the relay's lag is the age of the oldest row it has not relayed.

mod common;

use std::time::Duration;

use common::{eventually, Env, Job, WAIT};
use jetq_tests::otel::{isolate_subscribers, SpanCapture};
use opentelemetry::trace::{SpanKind, TraceContextExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

// `#[tokio::test]` runs every task of the test on its thread, so the thread-local subscriber
// sees the writer, the relay and the worker alike.
#[tokio::test]
async fn the_trace_runs_from_the_request_through_the_relay_into_the_task() {
    isolate_subscribers();
    let capture = SpanCapture::new();
    let _traced = tracing::dispatcher::set_default(&capture.dispatch());
    let env = Env::start(Duration::from_secs(120)).await;

    let request = tracing::info_span!("POST /signup");
    let trace_id = request.context().span().span_context().trace_id();
    async {
        let mut tx = env.pool.begin().await.expect("begin");
        env.outbox
            .enqueue(
                &mut tx,
                &Job {
                    n: 1,
                    note: String::new(),
                },
            )
            .await
            .expect("write");
        tx.commit().await.expect("commit");
    }
    .instrument(request)
    .await;
    let traceparent: String = sqlx::query_scalar("SELECT headers->>'traceparent' FROM jetq_outbox")
        .fetch_one(&env.pool)
        .await
        .expect("the row carries a traceparent");
    assert!(
        traceparent.contains(&trace_id.to_string()),
        "{traceparent} is not in trace {trace_id}"
    );

    let (tx_seen, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let worker = jetq_tests::worker(&env.nats)
        .handler(jetq_tests::recording_handler(tx_seen, |_| jetq_tests::ok()))
        .build()
        .await
        .expect("worker builds");
    let (stop_worker, worker_run) = jetq_tests::spawn_worker(worker);
    let relay = env.relay().await;
    jetq_tests::next(&mut seen, "the task to run").await;
    relay.stop().await;
    jetq_tests::stop_worker(stop_worker, worker_run).await;

    let spans = capture.spans();
    let named = |name: &str| -> Vec<_> { spans.iter().filter(|s| s.name == name).collect() };
    let sends = named("send jetq.task.work.job");
    let writer = sends
        .iter()
        .find(|s| {
            s.span_context.trace_id() == trace_id
                && s.parent_span_id != opentelemetry::trace::SpanId::INVALID
                && !s.parent_span_is_remote
        })
        .expect("the writer's send span, a child of the request");
    let relayed = sends
        .iter()
        .find(|s| s.parent_span_id == writer.span_context.span_id())
        .expect("the relay's send span, a child of the writer's");
    assert_eq!(relayed.span_kind, SpanKind::Producer);
    assert_eq!(relayed.span_context.trace_id(), trace_id);
    let process = named("process jetq.task.work.job");
    assert_eq!(
        process.len(),
        1,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert_eq!(
        process[0].span_context.trace_id(),
        trace_id,
        "the task runs in the request's trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_is_the_age_of_the_oldest_row_not_yet_relayed() {
    let mut env = Env::start(Duration::from_secs(120)).await;
    let relay = jetq_outbox::relay::Relay::connect(env.connection(), env.relay_settings())
        .await
        .expect("relay starts");
    let probe = relay.clone();
    let running = common::RunningRelay::spawn(relay);
    env.write_jobs("lag", 0, 1).await;
    env.until_relayed(1, WAIT).await;
    eventually(WAIT, "no lag with an empty table", || async {
        (probe.lag() == 0.0).then_some(())
    })
    .await;

    // NATS away: a row written 30 s ago waits, and the lag says so.
    env.nats.kill().await;
    env.write_jobs("lag", 1, 1).await;
    sqlx::query("UPDATE jetq_outbox SET created_at = now() - interval '30 seconds'")
        .execute(&env.pool)
        .await
        .expect("age the row");
    let lag = eventually(WAIT, "the lag to show the waiting row", || async {
        let lag = probe.lag();
        (lag >= 30.0).then_some(lag)
    })
    .await;
    assert!(lag < 60.0, "{lag}");
    env.nats.restart().await;
    env.until_relayed(2, Duration::from_secs(30)).await;
    eventually(WAIT, "the lag back to zero", || async {
        (probe.lag() == 0.0).then_some(())
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_binary_serves_readiness_and_its_metrics() {
    let env = Env::start(Duration::from_secs(120)).await;
    let port = jetq_harness::free_port();
    let mut vars = env.relay_env();
    vars.retain(|(name, _)| name != "JETQ_HEALTH_LISTEN");
    vars.push(("JETQ_HEALTH_LISTEN".into(), format!("127.0.0.1:{port}")));
    let mut relay = common::spawn_relay_process(&vars);
    env.write_jobs("metrics", 0, 3).await;
    env.until_relayed(3, WAIT).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, _) = eventually(WAIT, "the relay to be ready", || async {
        jetq_tests::otel::http_get(addr, "/readyz")
            .await
            .ok()
            .filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(status, 200);
    let text = eventually(WAIT, "the relayed rows in /metrics", || async {
        let (_, text) = jetq_tests::otel::http_get(addr, "/metrics").await.ok()?;
        let samples = jetq_tests::otel::parse_prometheus(&text);
        let relayed = jetq_tests::otel::metric(
            &samples,
            "jetq_outbox_relayed_total",
            &[("duplicate", "false")],
        );
        (relayed >= 3.0).then_some(text)
    })
    .await;
    assert!(text.contains("jetq_outbox_lag_seconds"), "{text}");
    let _ = relay.start_kill();
    let _ = relay.wait().await;
}
