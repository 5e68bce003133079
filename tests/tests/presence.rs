//! Worker presence (PROTOCOL.md §14) with real worker processes: the record appears with the
//! tasks the worker runs, is deleted on SIGTERM, and expires after SIGKILL; conformance of the
//! record and key forms with `docs/conformance/workers.json`.

use std::{process::Stdio, time::Duration};

use async_nats::jetstream::kv;
use futures::{StreamExt, TryStreamExt};
use jetq_contract::presence::{self, WorkerRecord};
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
        .env("JETQ_CONCURRENCY", "3")
        .env("JETQ_PRESENCE_INTERVAL", "300ms")
        .env("JETQ_SHUTDOWN_GRACE", "10s")
        .env("TEST_WORKER_NAME", name)
        .env("HOSTNAME", format!("host-{name}"))
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

async fn records(store: &kv::Store) -> Vec<WorkerRecord> {
    let keys: Vec<String> = match store.keys().await {
        Ok(keys) => keys.try_collect().await.unwrap_or_default(),
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for key in keys {
        if let Ok(Some(value)) = store.get(&key).await {
            let record: WorkerRecord = serde_json::from_slice(&value).expect("record parses");
            assert_eq!(record.id, key, "the key is the worker id");
            out.push(record);
        }
    }
    out
}

async fn store(server: &NatsServer) -> kv::Store {
    let js = raw_jetstream(server).await;
    eventually(WAIT, "presence bucket", || {
        let js = js.clone();
        async move { js.get_key_value("JETQ_WORKERS").await.ok() }
    })
    .await
}

#[tokio::test]
async fn presence_lists_running_tasks_and_goes_away_on_sigterm_and_after_sigkill() {
    init_logs();
    let server = NatsServer::start().await;
    let observer = async_nats::connect(server.url()).await.unwrap();
    let mut ready = observer.subscribe("test.ready").await.unwrap();
    let mut started = observer.subscribe("test.started").await.unwrap();
    observer.flush().await.unwrap();

    let first = start_worker(&server, "first", &mut ready).await;
    let pid = first.id().expect("pid");
    let store = store(&server).await;
    let producer = producer(&server).await;
    let id = producer
        .enqueue(&Job {
            n: 1,
            note: "sleep:2500".into(),
        })
        .await
        .unwrap()
        .id;
    within(WAIT, "task started", started.next()).await.unwrap();
    let record = eventually(WAIT, "presence lists the running task", || {
        let store = store.clone();
        let id = id.clone();
        async move {
            records(&store)
                .await
                .into_iter()
                .find(|r| r.pid == pid && r.running.iter().any(|t| t.id == id))
        }
    })
    .await;
    assert_eq!(record.host, "host-first");
    assert!(record.id.starts_with(&format!("host-first-{pid}-")));
    assert_eq!(record.queues, vec!["work".to_owned()]);
    assert_eq!(record.concurrency, 3);
    assert_eq!(record.running_count, 1);
    assert_eq!(record.running[0].task, "job");
    assert_eq!(record.running[0].attempt, 1);
    assert!(record.running[0].sequence > 0);
    assert_eq!(record.version, env!("CARGO_PKG_VERSION"));
    assert!(jetq_contract::time::parse(&record.heartbeat_at).is_some());

    // SIGTERM: the running task finishes within the grace, then the record is deleted.
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let mut first = first;
    within(WAIT, "first worker exits", first.wait())
        .await
        .unwrap();
    assert!(
        records(&store).await.iter().all(|r| r.pid != pid),
        "a worker that stopped gracefully has no record"
    );

    // SIGKILL: the record stays until the bucket's max_age (3 × 300 ms, at least 3 s) expires it.
    let mut second = start_worker(&server, "second", &mut ready).await;
    let pid = second.id().expect("pid");
    eventually(WAIT, "second worker's record", || {
        let store = store.clone();
        async move { records(&store).await.into_iter().find(|r| r.pid == pid) }
    })
    .await;
    second.start_kill().expect("SIGKILL");
    within(WAIT, "second worker dies", second.wait())
        .await
        .unwrap();
    assert!(
        records(&store).await.iter().any(|r| r.pid == pid),
        "still there right after"
    );
    eventually(
        Duration::from_secs(15),
        "the killed worker's record expires",
        || {
            let store = store.clone();
            async move {
                records(&store)
                    .await
                    .iter()
                    .all(|r| r.pid != pid)
                    .then_some(())
            }
        },
    )
    .await;
}

#[test]
fn conformance_vectors_of_worker_records() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/conformance/workers.json"
    ))
    .expect("docs/conformance/workers.json");
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    for case in vectors["buckets"].as_array().unwrap() {
        let subjects =
            jetq_contract::Subjects::new(case["prefix"].as_str().unwrap()).expect("prefix");
        assert_eq!(
            presence::bucket(&subjects),
            case["bucket"].as_str().unwrap()
        );
    }
    for case in vectors["worker_ids"].as_array().unwrap() {
        assert_eq!(
            presence::worker_id(
                case["host"].as_str().unwrap(),
                case["pid"].as_u64().unwrap() as u32,
                case["ulid"].as_str().unwrap()
            ),
            case["id"].as_str().unwrap()
        );
    }
    for case in vectors["records"].as_array().unwrap() {
        let record: WorkerRecord =
            serde_json::from_value(case["value"].clone()).expect("a valid record parses");
        assert_eq!(
            record.running_count,
            case["running_count"].as_u64().unwrap()
        );
        assert_eq!(
            record.running.len() as u64,
            case["listed"].as_u64().unwrap()
        );
        // Written back, it has every field the vector names.
        let written = serde_json::to_value(&record).unwrap();
        for field in case["value"].as_object().unwrap().keys() {
            if written.get(field).is_none() {
                assert!(
                    ![
                        "id",
                        "host",
                        "pid",
                        "version",
                        "prefix",
                        "queues",
                        "concurrency",
                        "started_at",
                        "heartbeat_at",
                        "running",
                        "running_count"
                    ]
                    .contains(&field.as_str()),
                    "field {field} is written"
                );
            }
        }
    }
    assert_eq!(
        vectors["max_running"].as_u64().unwrap() as usize,
        presence::MAX_RUNNING
    );
    let control = &vectors["schedule_control"];
    for action in ["pause", "resume"] {
        let case = &control[action];
        let name = case["schedule"].as_str().unwrap();
        assert_eq!(
            jetq_scheduler::control::control_key(name),
            case["key"].as_str().unwrap()
        );
        let value: jetq_scheduler::control::ScheduleControl =
            serde_json::from_value(case["value"].clone()).unwrap();
        assert_eq!(value.paused, action == "pause");
    }
    let run = &control["run"];
    let (name, request) = (
        run["schedule"].as_str().unwrap(),
        run["request"].as_str().unwrap(),
    );
    assert_eq!(
        jetq_scheduler::control::run_key(name, request),
        run["key"].as_str().unwrap()
    );
    assert_eq!(
        jetq_scheduler::control::run_id(name, request),
        run["msg_id"].as_str().unwrap()
    );
}

/// The rule batch status counts running members by (`docs/conformance/workers.json`
/// `batch_running`): by member id, once, finished ones left out, other batches ignored.
#[test]
fn conformance_vectors_of_running_batch_members() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/conformance/workers.json"
    ))
    .expect("docs/conformance/workers.json");
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = &vectors["batch_running"];
    let records: Vec<WorkerRecord> =
        serde_json::from_value(case["records"].clone()).expect("records parse");
    let finished: std::collections::HashSet<&str> = case["finished"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let found = presence::running_members(&records, case["batch"].as_str().unwrap(), &finished);
    let found: Vec<serde_json::Value> = found
        .iter()
        .map(|(member, (record, _))| serde_json::json!({"member": member, "worker": record.id}))
        .collect();
    assert_eq!(serde_json::Value::from(found), case["running"]);
    // A record's batch field is written back as read (and absent when there is none).
    let listed: WorkerRecord =
        serde_json::from_value(vectors["records"][3]["value"].clone()).unwrap();
    assert_eq!(listed.running[0].batch.as_deref(), Some("export-42"));
    let written = serde_json::to_value(&listed).unwrap();
    assert_eq!(written["running"][0]["batch"], "export-42");
    assert!(written["running"][1].get("batch").is_none());
}
