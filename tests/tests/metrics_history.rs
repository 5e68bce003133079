//! Metrics history (PROTOCOL.md §15) with real worker processes: two workers run tasks that
//! succeed, fail once, always fail and fail fatally; the per-minute records in `JETQ_METRICS`
//! add up to exactly what ran, also after both stopped (their last flush double-counts
//! nothing); the merge rule and record forms of `docs/conformance/metrics_history.json`.

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use async_nats::jetstream::kv;
use futures::{StreamExt, TryStreamExt};
use jetq_contract::metrics_history::{self, MinuteRecord};
use jetq_tests::*;
use tokio::process::{Child, Command};

async fn start_worker(
    server: &NatsServer,
    name: &str,
    ready: &mut async_nats::Subscriber,
) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_test_worker"))
        .env("JETQ_NATS_URL", server.url())
        .env("JETQ_ACK_WAIT", "3s")
        .env("JETQ_FETCH_EXPIRES", "500ms")
        .env("JETQ_CONCURRENCY", "2")
        .env("JETQ_PREFETCH", "0")
        .env("JETQ_HISTORY_INTERVAL", "200ms")
        .env("JETQ_METRICS_INTERVAL", "100ms")
        .env("JETQ_SHUTDOWN_GRACE", "10s")
        .env("TEST_WORKER_NAME", name)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("test_worker starts");
    loop {
        let message = within(WAIT, "worker process ready", ready.next())
            .await
            .expect("ready subscription");
        if message.payload == name.as_bytes() {
            return child;
        }
    }
}

/// Every record of `queue`, by key.
async fn records(store: &kv::Store, queue: &str) -> Vec<MinuteRecord> {
    let keys: Vec<String> = match store.keys().await {
        Ok(keys) => keys.try_collect().await.unwrap_or_default(),
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for key in keys {
        let Some((of, minute)) = metrics_history::parse_key(&key) else {
            panic!("a key that is not <queue>.<minute>: {key}");
        };
        if of != queue {
            continue;
        }
        if let Ok(Some(value)) = store.get(&key).await {
            let record: MinuteRecord = serde_json::from_slice(&value).expect("record parses");
            assert_eq!((record.queue.as_str(), record.minute), (queue, minute));
            out.push(record);
        }
    }
    out
}

fn total(records: &[MinuteRecord]) -> MinuteRecord {
    let mut sum = MinuteRecord::new("work", 0);
    for record in records {
        sum.merge(record);
    }
    sum
}

#[tokio::test]
async fn two_workers_merge_per_minute_records_that_add_up_to_what_ran() {
    init_logs();
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    observer.flush().await.unwrap();

    // Queued before the workers start: the first depth samples see them waiting.
    let mut first = start_worker(&server, "first", &mut ready).await;
    let producer = producer(&server).await;
    let mut jobs = Vec::new();
    for n in 0..20 {
        jobs.push((n, "sleep:100"));
    }
    for n in 20..25 {
        jobs.push((n, "fail-once"));
    }
    for n in 25..28 {
        jobs.push((n, "fatal"));
    }
    for n in 28..30 {
        jobs.push((n, "always-fail"));
    }
    for (n, note) in &jobs {
        producer
            .enqueue(&Job {
                n: *n,
                note: (*note).into(),
            })
            .await
            .unwrap();
    }
    let mut second = start_worker(&server, "second", &mut ready).await;

    // Expected: 20 + 5 succeed; failed attempts 5 (once) + 3 (fatal) + 2 × 3 (always, max 3
    // attempts); retried 5 + 2 × 2; dead 3 + 2; every attempt's run time counted.
    let expected = (25, 14, 9, 5, 39);
    let js = raw_jetstream(&server).await;
    let store = eventually(WAIT, "history bucket", || {
        let js = js.clone();
        async move { js.get_key_value("JETQ_METRICS").await.ok() }
    })
    .await;
    let sums = |records: &[MinuteRecord]| {
        let sum = total(records);
        (sum.succeeded, sum.failed, sum.retried, sum.dead, sum.runs)
    };
    let history = eventually(WAIT, "the history adds up to what ran", || {
        let store = store.clone();
        async move {
            let records = records(&store, "work").await;
            (sums(&records) == expected).then_some(records)
        }
    })
    .await;
    let sum = total(&history);
    assert_eq!(
        sum.run_ms_buckets.iter().sum::<u64>(),
        39,
        "every run in a bucket"
    );
    assert!(sum.run_ms_sum >= 20 * 100, "the 20 sleeping tasks: {sum:?}");
    assert!(sum.run_ms_max >= 100, "{sum:?}");
    assert!(
        sum.run_ms_quantile(0.95).is_some_and(|p95| p95 >= 100),
        "{sum:?}"
    );
    assert!(
        history.iter().any(|r| r.pending.is_some_and(|p| p > 0)),
        "a depth sample saw tasks waiting: {history:?}"
    );
    assert!(history
        .iter()
        .all(|r| jetq_contract::time::parse(&r.updated_at).is_some()));

    // Both workers ran tasks, so both merged into the same records.
    let mut names = BTreeSet::new();
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_millis(100), started.next()).await
    {
        let line = String::from_utf8_lossy(&line.payload).into_owned();
        names.insert(line.split(' ').next().unwrap_or_default().to_owned());
    }
    assert_eq!(
        names,
        BTreeSet::from(["first".to_owned(), "second".to_owned()])
    );

    // A graceful stop flushes once more: nothing is counted twice.
    for child in [&mut first, &mut second] {
        let pid = child.id().expect("pid");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        within(WAIT, "worker exits", child.wait()).await.unwrap();
    }
    assert_eq!(sums(&records(&store, "work").await), expected);
}

/// With `JETQ_HISTORY=false` a worker writes no history.
#[tokio::test]
async fn a_worker_with_history_off_writes_none() {
    init_logs();
    let server = NatsServer::start().await;
    let worker = worker(&server)
        .history(false)
        .history_interval(Duration::from_millis(100))
        .handler(|_job: Job, _ctx: jetq_consumer::TaskContext| async move {
            Ok::<(), jetq_consumer::TaskError>(())
        })
        .build()
        .await
        .expect("worker builds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let producer = producer(&server).await;
    producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    eventually(WAIT, "the task ran", || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("JETQ_TASKS").await.ok()?;
            (stream.info().await.ok()?.state.messages == 0).then_some(())
        }
    })
    .await;
    let _ = stop.send(());
    within(WAIT, "worker stops", running).await.unwrap();
    match js.get_key_value("JETQ_METRICS").await {
        Err(_) => {}
        Ok(store) => assert!(
            records(&store, "work").await.is_empty(),
            "no history with JETQ_HISTORY=false"
        ),
    }
}

#[test]
fn conformance_vectors_of_metrics_history() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/conformance/metrics_history.json"
    ))
    .expect("docs/conformance/metrics_history.json");
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bounds: Vec<u64> = serde_json::from_value(vectors["run_ms_bounds"].clone()).unwrap();
    assert_eq!(bounds, metrics_history::RUN_MS_BOUNDS);
    for case in vectors["buckets"].as_array().unwrap() {
        let subjects =
            jetq_contract::Subjects::new(case["prefix"].as_str().unwrap()).expect("prefix");
        assert_eq!(
            metrics_history::bucket(&subjects),
            case["bucket"].as_str().unwrap()
        );
    }
    for case in vectors["keys"].as_array().unwrap() {
        let at = jetq_contract::time::parse(case["at"].as_str().unwrap()).expect("time");
        let minute = metrics_history::minute_of(at);
        assert_eq!(minute, case["minute"].as_u64().unwrap(), "{case}");
        assert_eq!(
            metrics_history::key(case["queue"].as_str().unwrap(), minute),
            case["key"].as_str().unwrap()
        );
    }
    for case in vectors["invalid_keys"].as_array().unwrap() {
        assert_eq!(
            metrics_history::parse_key(case.as_str().unwrap()),
            None,
            "{case}"
        );
    }
    for case in vectors["run_buckets"].as_array().unwrap() {
        assert_eq!(
            metrics_history::bucket_index(case["ms"].as_u64().unwrap()),
            case["index"].as_u64().unwrap() as usize,
            "{case}"
        );
    }
    for case in vectors["merges"].as_array().unwrap() {
        let records: Vec<MinuteRecord> = case["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_value(r.clone()).expect("a record parses"))
            .collect();
        let expected: MinuteRecord =
            serde_json::from_value(case["merged"].clone()).expect("merged parses");
        // In order and in reverse: the rule does not depend on who writes first.
        for order in [records.clone(), records.iter().rev().cloned().collect()] {
            let mut merged = order[0].clone();
            for record in &order[1..] {
                merged.merge(record);
            }
            // Buckets compare with their trailing zeros dropped.
            let trim = |mut r: MinuteRecord| {
                while r.run_ms_buckets.last() == Some(&0) {
                    r.run_ms_buckets.pop();
                }
                r
            };
            assert_eq!(trim(merged), trim(expected.clone()), "{}", case["name"]);
        }
        if let Some(quantiles) = case["quantiles"].as_object() {
            for (q, ms) in quantiles {
                let q: f64 = q.parse().unwrap();
                assert_eq!(
                    expected.run_ms_quantile(q),
                    ms.as_u64(),
                    "{} q={q}",
                    case["name"]
                );
            }
        }
    }
}
