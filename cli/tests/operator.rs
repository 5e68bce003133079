//! The operator commands of issue #24 against a real nats-server: `jetq workers`, `jetq tasks
//! list|show` in every state with paging, `jetq cancel` of queued, delayed, retrying and running
//! tasks, and `jetq schedules pause|resume|run` with two scheduler replicas.

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use jetq_cli::tasks::{ListState, PageRequest, TaskFilter};
use jetq_consumer::{TaskContext, TaskError, WorkerSettings};
use jetq_producer::EnqueueOptions;

/// A worker of `Email` tasks: `hold` waits until cancelled (tracked) or 20 s, `fail` fails with
/// an hour's backoff, `fatal` is dead-lettered; presence is rewritten every 200 ms.
async fn email_worker(server: &NatsServer) -> jetq_consumer::Worker {
    worker(server)
        .settings(WorkerSettings {
            presence_interval: Duration::from_millis(200),
            ..fast_settings()
        })
        .handler(|email: Email, ctx: TaskContext| async move {
            match email.to.as_str() {
                "fail" => Err(TaskError::retry_after(
                    Duration::from_secs(3600),
                    "smtp down",
                )),
                "fatal" => Err(TaskError::fatal("no such mailbox")),
                _ => {
                    tokio::select! {
                        _ = ctx.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(20)) => {}
                    }
                    Ok(())
                }
            }
        })
        .build()
        .await
        .expect("worker builds")
}

fn filter(state: ListState, queue: &str) -> TaskFilter {
    TaskFilter {
        state,
        queue: Some(queue.into()),
        task: None,
    }
}

fn first_page(limit: usize) -> PageRequest {
    PageRequest { limit, after: None }
}

#[tokio::test]
async fn tasks_list_pages_pending_tasks_and_shows_every_state() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 1000)]).await;
    let producer = producer(&server).await;
    let mut enqueued = HashSet::new();
    for n in 0..500 {
        let task = producer
            .enqueue(&Job {
                n,
                note: String::new(),
            })
            .await
            .unwrap();
        enqueued.insert(task.id);
    }

    // 500 pending tasks, 100 a page, through the CLI's cursor.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec![
            "tasks", "list", "--state", "pending", "--queue", "work", "--limit", "100", "--json",
        ];
        if let Some(cursor) = &after {
            args.push("--after");
            args.push(cursor);
        }
        let page = jetq(&server, &args).await.ok_json();
        pages += 1;
        for task in page["tasks"].as_array().unwrap() {
            assert_eq!(task["state"], "pending");
            assert_eq!(task["queue"], "work");
            seen.push(task["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(pages <= 6, "too many pages");
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 500);
    let unique: HashSet<String> = seen.into_iter().collect();
    assert_eq!(unique, enqueued, "every pending task once");

    // Delayed.
    let delayed = producer
        .enqueue_in(Duration::from_secs(3600), &Email { to: "later".into() })
        .await
        .unwrap();
    let admin = admin(&server).await;
    let page = admin
        .tasks(&filter(ListState::Delayed, "emails"), &first_page(10))
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 1);
    assert_eq!(page.tasks[0].id.as_deref(), Some(delayed.id.as_str()));
    assert!(page.tasks[0].not_before.is_some());

    // Running, retrying and dead, from a real worker.
    let (stop, run) = spawn_worker(email_worker(&server).await);
    let hold = producer
        .enqueue(&Email { to: "hold".into() })
        .await
        .unwrap();
    let fail = producer
        .enqueue(&Email { to: "fail".into() })
        .await
        .unwrap();
    let fatal = producer
        .enqueue(&Email { to: "fatal".into() })
        .await
        .unwrap();
    let running = eventually(WAIT, "the held task listed as running", || {
        let admin = admin.clone();
        async move {
            let page = admin
                .tasks(&filter(ListState::Running, "emails"), &first_page(10))
                .await
                .ok()?;
            (!page.tasks.is_empty()).then_some(page)
        }
    })
    .await;
    assert_eq!(running.tasks[0].id.as_deref(), Some(hold.id.as_str()));
    assert!(running.tasks[0].worker.is_some());
    assert_eq!(running.tasks[0].attempt, Some(1));
    let retrying = eventually(WAIT, "the failed task listed as retrying", || {
        let admin = admin.clone();
        async move {
            let page = admin
                .tasks(&filter(ListState::Retrying, "emails"), &first_page(10))
                .await
                .ok()?;
            (!page.tasks.is_empty()).then_some(page)
        }
    })
    .await;
    assert_eq!(retrying.tasks.len(), 1, "{retrying:?}");
    assert_eq!(retrying.tasks[0].id.as_deref(), Some(fail.id.as_str()));
    assert_eq!(retrying.tasks[0].error.as_deref(), Some("smtp down"));
    let dead = eventually(WAIT, "the fatal task listed as dead", || {
        let admin = admin.clone();
        async move {
            let page = admin
                .tasks(&filter(ListState::Dead, "emails"), &first_page(10))
                .await
                .ok()?;
            (!page.tasks.is_empty()).then_some(page)
        }
    })
    .await;
    assert_eq!(dead.tasks[0].id.as_deref(), Some(fatal.id.as_str()));
    assert_eq!(dead.tasks[0].reason.as_deref(), Some("fatal"));
    // The pending listing of emails has none of them (each was delivered).
    let pending = admin
        .tasks(&filter(ListState::Pending, "emails"), &first_page(10))
        .await
        .unwrap();
    assert!(pending.tasks.is_empty(), "{pending:?}");

    // jetq workers shows the worker and its running task.
    let workers = jetq(&server, &["workers", "--json"]).await.ok_json();
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["queues"][0], "emails");
    assert_eq!(workers[0]["running_count"], 1);
    assert_eq!(workers[0]["running"][0]["id"], hold.id.as_str());
    assert!(workers[0]["heartbeat_age_secs"].as_f64().unwrap() < 5.0);
    let text = jetq(&server, &["workers"]).await;
    text.expect_code(0);
    assert!(text.stdout.contains(&hold.id), "{}", text.stdout);

    // tasks show of a retrying task: where it is and its failed attempt.
    let shown = jetq(&server, &["tasks", "show", &fail.id, "--json"])
        .await
        .ok_json();
    assert_eq!(shown["location"]["place"], "in_flight");
    assert_eq!(shown["attempts"]["failures"][0]["error"], "smtp down");

    // Cancel the retrying (untracked) task: deleted from the task stream.
    let cancelled = jetq(
        &server,
        &["cancel", &fail.id, "--queue", "emails", "--yes", "--json"],
    )
    .await
    .ok_json();
    assert_eq!(cancelled["outcome"], "deleted");
    assert_eq!(cancelled["was"], "retrying");
    // The running untracked task: its worker is asked (PROTOCOL §16) and stops it
    // (cli/tests/cancel_running.rs covers what the handler sees and that it is not retried).
    let requested = jetq(&server, &["cancel", &hold.id, "--yes", "--json"])
        .await
        .ok_json();
    assert_eq!(requested["outcome"], "requested", "{requested}");
    assert_eq!(requested["was"], "running", "{requested}");
    assert_eq!(requested["worker"], workers[0]["id"], "{requested}");
    stop_worker(stop, run).await;
    // Stopped gracefully: no worker left.
    let workers = jetq(&server, &["workers", "--json"]).await.ok_json();
    assert_eq!(workers.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn cancel_removes_queued_and_delayed_tasks_and_stops_tracked_running_ones() {
    init_logs();
    let server = NatsServer::start().await;
    provision(&server, &[("work", 1000)]).await;
    let producer = producer(&server).await;
    let doomed = producer
        .enqueue(&Job {
            n: 7,
            note: String::new(),
        })
        .await
        .unwrap();
    let kept = producer
        .enqueue(&Job {
            n: 8,
            note: String::new(),
        })
        .await
        .unwrap();
    let later = producer
        .enqueue_in(
            Duration::from_secs(3600),
            &Job {
                n: 9,
                note: String::new(),
            },
        )
        .await
        .unwrap();

    // A high-priority task is listed at its level and cancelled there.
    let urgent = producer
        .enqueue_with(
            &Job {
                n: 10,
                note: String::new(),
            },
            EnqueueOptions::default().priority(jetq_contract::Priority::High),
        )
        .await
        .unwrap();
    let pending = jetq(
        &server,
        &[
            "tasks", "list", "--state", "pending", "--queue", "work", "--json",
        ],
    )
    .await
    .ok_json();
    let listed: Vec<(String, String)> = pending["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["priority"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (doomed.id.clone(), "normal".to_owned()),
            (kept.id.clone(), "normal".to_owned()),
            (urgent.id.clone(), "high".to_owned()),
        ]
    );
    let report = jetq(
        &server,
        &["cancel", &urgent.id, "--queue", "work", "--yes", "--json"],
    )
    .await
    .ok_json();
    assert_eq!(report["was"], "pending");

    // Without --yes and no terminal: refused, nothing changed.
    jetq(&server, &["cancel", &doomed.id]).await.expect_code(2);
    let report = jetq(&server, &["cancel", &doomed.id, "--yes", "--json"])
        .await
        .ok_json();
    assert_eq!(report["outcome"], "deleted");
    assert_eq!(report["was"], "pending");
    assert_eq!(report["sequence"], doomed.sequence);
    let report = jetq(&server, &["cancel", &later.id, "--yes", "--json"])
        .await
        .ok_json();
    assert_eq!(report["was"], "delayed");
    let js = raw_jetstream(&server).await;
    assert_eq!(stream_len(&js, "JETQ_DELAYED").await, 0);
    // Gone: a second cancel finds nothing.
    jetq(&server, &["cancel", &doomed.id, "--yes"])
        .await
        .expect_code(3);

    // A worker started afterwards runs the kept task and never the cancelled one.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let built = worker(&server)
        .handler(move |job: Job, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(job.n);
                Ok::<(), TaskError>(())
            }
        })
        .build()
        .await
        .unwrap();
    let (stop, run) = spawn_worker(built);
    assert_eq!(next(&mut rx, "the kept task runs").await, 8);
    eventually(WAIT, "the task stream drained", || {
        let js = js.clone();
        async move { (stream_len(&js, "JETQ_TASKS").await == 0).then_some(()) }
    })
    .await;
    assert!(rx.try_recv().is_err(), "the cancelled task never ran");
    stop_worker(stop, run).await;
    let _ = kept;

    // A tracked running task: the status path tells its handler, it ends cancelled.
    let (stop, run) = spawn_worker(email_worker(&server).await);
    let tracked = producer
        .enqueue_with(
            &Email { to: "hold".into() },
            EnqueueOptions::default().track_status(),
        )
        .await
        .unwrap();
    let admin = admin(&server).await;
    eventually(WAIT, "the tracked task runs", || {
        let admin = admin.clone();
        let id = tracked.id.clone();
        async move {
            let status = admin.task_status(&id).await.ok()?;
            (status.state == jetq_contract::TaskState::Running).then_some(())
        }
    })
    .await;
    let report = jetq(&server, &["cancel", &tracked.id, "--yes", "--json"])
        .await
        .ok_json();
    assert_eq!(report["outcome"], "requested");
    assert_eq!(report["was"], "tracked");
    let status = admin
        .wait_for_task(&tracked.id, WAIT)
        .await
        .expect("the task ends");
    assert_eq!(status.state, jetq_contract::TaskState::Cancelled);
    stop_worker(stop, run).await;
}

/// The number of tasks schedule `name` published on the task stream (no worker runs them).
async fn fires(js: &async_nats::jetstream::Context) -> u64 {
    stream_len(js, "JETQ_TASKS").await
}

#[tokio::test]
async fn schedules_pause_resume_and_run_once_with_two_replicas() {
    init_logs();
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.yaml");
    std::fs::write(
        &file,
        "schedules:\n  - name: tick\n    cron: \"* * * * * *\"\n    queue: work\n    task: job\n    args: {\"n\": 1}\n",
    )
    .unwrap();
    let replicas = [
        RunningScheduler::start(scheduler(&server).schedules_file(&file)).await,
        RunningScheduler::start(scheduler(&server).schedules_file(&file)).await,
    ];
    let js = raw_jetstream(&server).await;
    eventually(WAIT, "the schedule fires", || {
        let js = js.clone();
        async move { (fires(&js).await >= 2).then_some(()) }
    })
    .await;
    let file_arg = file.to_str().unwrap();

    // Pause: the count stops changing for several periods.
    let paused = jetq(
        &server,
        &["schedules", "pause", "tick", "--by", "ops", "--json"],
    )
    .await
    .ok_json();
    assert_eq!(paused["control"]["paused"], true);
    assert_eq!(paused["control"]["by"], "ops");
    // A fire planned before the pause was seen may still land: let it.
    let_time_pass(Duration::from_millis(1500)).await;
    let before = fires(&js).await;
    let_time_pass(Duration::from_secs(4)).await;
    assert_eq!(fires(&js).await, before, "no fire while paused");
    let listed = jetq(&server, &["schedules", "--file", file_arg, "--json"])
        .await
        .ok_json();
    assert_eq!(listed[0]["paused"], true);
    assert!(listed[0]["handled_until"].is_string());

    // Run now while paused: exactly one task, with the request's id, despite two replicas.
    let run = jetq(&server, &["schedules", "run", "tick", "--json"])
        .await
        .ok_json();
    let task_id = run["task_id"].as_str().unwrap().to_owned();
    assert!(task_id.starts_with("tick:run:"));
    eventually(WAIT, "the run-now task", || {
        let js = js.clone();
        async move { (fires(&js).await == before + 1).then_some(()) }
    })
    .await;
    let messages = stream_messages(&js, "JETQ_TASKS").await;
    let ids: Vec<String> = messages
        .iter()
        .filter_map(|m| header(m, "Nats-Msg-Id"))
        .filter(|id| *id == task_id)
        .collect();
    assert_eq!(ids.len(), 1);
    let kv = js.get_key_value("JETQ_SCHEDULER").await.unwrap();
    let request_key = format!("run.tick.{}", run["request"].as_str().unwrap());
    eventually(WAIT, "the run request deleted", || {
        let kv = kv.clone();
        let key = request_key.clone();
        async move { kv.get(&key).await.ok()?.is_none().then_some(()) }
    })
    .await;
    let_time_pass(Duration::from_secs(2)).await;
    assert_eq!(fires(&js).await, before + 1, "run now fired once");

    // Resume: fires again.
    let resumed = jetq(&server, &["schedules", "resume", "tick", "--json"])
        .await
        .ok_json();
    assert_eq!(resumed["control"]["paused"], false);
    eventually(WAIT, "fires after resume", || {
        let js = js.clone();
        async move { (fires(&js).await >= before + 3).then_some(()) }
    })
    .await;
    for replica in replicas {
        replica.stop().await;
    }
}
