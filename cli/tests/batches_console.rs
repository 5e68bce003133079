//! The console's Batches pages (`/batches`, `/batches/{id}`, `/chains/{id}` and their JSON
//! twins) and running members in batch status, against a real nats-server with a real worker:
//! while two members' handlers block, `Producer::batch_status`, `Admin::batch_detail`, `jetq
//! batch` and the pages count them as running (from the worker's presence records) and the
//! member the full worker cannot take as queued; the task page links to its batch and chain.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use jetq_consumer::{TaskContext, TaskError};
use jetq_producer::{BatchOptions, Chain};
use jetq_tests::workflow::Done;

#[tokio::test]
async fn batch_pages_show_running_queued_and_finished_members_and_the_callbacks() {
    init_logs();
    let server = NatsServer::start().await;
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (fired_tx, mut fired) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (blocking_tx, mut blocking) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let gate = release.clone();
    let settings = jetq_consumer::WorkerSettings {
        // Two slots: the two blocking members hold them, the last member waits in the stream.
        concurrency: 2,
        presence_interval: Duration::from_millis(200),
        ..fast_settings()
    };
    let built = worker(&server)
        .settings(settings)
        .handler(move |job: Job, _ctx: TaskContext| {
            let gate = gate.clone();
            let blocking = blocking_tx.clone();
            async move {
                match job.note.as_str() {
                    "fail" => Err(TaskError::fatal("asked to fail")),
                    "block" => {
                        let _ = blocking.send(job.n);
                        let permit = gate.acquire().await.map_err(TaskError::fatal)?;
                        permit.forget();
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        })
        .handler(move |done: Done, _ctx: TaskContext| {
            let fired = fired_tx.clone();
            async move {
                let _ = fired.send(format!("{} {}", done.batch.id, done.which));
                Ok::<(), TaskError>(())
            }
        })
        .build()
        .await
        .expect("worker builds");
    let producer = producer(&server).await;
    // Enqueued before the worker starts, so the stream order is the order they run in: two
    // that succeed, one that dies, two that block (both slots), one left queued.
    let notes = ["", "", "fail", "block", "block", ""];
    let mut batch = producer.batch(BatchOptions::new().id("console-batch"));
    for (n, note) in notes.iter().enumerate() {
        // The blocking ones outlive the test, not Job's 10 s timeout.
        batch = batch.add_with(
            &Job {
                n: n as u64,
                note: (*note).into(),
            },
            jetq_producer::EnqueueOptions::new().timeout(Duration::from_secs(300)),
        );
    }
    let handle = batch
        .on_complete(&Done {
            which: "on_complete".into(),
            ..Default::default()
        })
        .on_success(&Done {
            which: "on_success".into(),
            ..Default::default()
        })
        .enqueue()
        .await
        .expect("batch enqueued");
    let ids: Vec<String> = handle.members.iter().map(|m| m.id.clone()).collect();
    let chain = producer
        .enqueue_chain(
            Chain::new()
                .id("console-chain")
                .then(&Job {
                    n: 10,
                    note: String::new(),
                })
                .then(&Job {
                    n: 11,
                    note: "fail".into(),
                }),
        )
        .await
        .expect("chain started");
    let (stop, run) = spawn_worker(built);
    for _ in 0..2 {
        next(&mut blocking, "a blocking member started").await;
    }

    // Running while their handlers block: counted from the worker's presence record.
    let status = eventually(WAIT, "2 running, 1 queued", || async {
        producer
            .batch_status("console-batch")
            .await
            .ok()
            .flatten()
            .filter(|s| s.running == 2 && s.succeeded == 2 && s.dead == 1)
    })
    .await;
    assert_eq!(
        (status.total, status.pending, status.running, status.queued),
        (6, 3, 2, 1)
    );
    let admin = admin(&server).await;
    let detail = admin
        .batch_detail("console-batch", None, 0)
        .await
        .expect("batch detail");
    assert_eq!((detail.running, detail.queued), (2, 1));
    let mut running: Vec<&str> = detail
        .running_members
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    running.sort_unstable();
    let mut blocked = vec![ids[3].as_str(), ids[4].as_str()];
    blocked.sort_unstable();
    assert_eq!(running, blocked);
    assert!(detail
        .running_members
        .iter()
        .all(|m| m.queue == "work" && m.task == "job" && m.attempt == 1 && !m.worker.is_empty()));
    let text = jetq(&server, &["batch", "console-batch"]).await;
    text.expect_code(0);
    assert!(
        text.stdout.contains("3 pending (2 running, 1 queued)"),
        "{}",
        text.stdout
    );

    let dashboard = start_dashboard(&server, &[]).await;
    let get = |path: String| {
        let url = dashboard.url.clone();
        async move { http(&url, "GET", &path, &[]).await }
    };

    // The list: the batch with its counts; the API pages it.
    let list = get("/batches".into()).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("href=\"/batches\""), "the navigation");
    assert!(list.body.contains("data-batch=\"console-batch\""));
    assert!(list
        .body
        .contains("<td class=\"num\" data-label=\"running\">2</td>"));
    let api = get("/api/batches".into()).await.json();
    assert_eq!(api["total"], 1);
    assert_eq!(api["batches"][0]["id"], "console-batch");
    assert_eq!(api["batches"][0]["running"], 2);
    assert!(api["next"].is_null());

    // The batch: counts, running members, finished members with their links, callbacks.
    let page = get("/batches/console-batch".into()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("2 running"), "{}", page.body);
    assert!(page.body.contains("1 queued"), "{}", page.body);
    for id in &ids[3..5] {
        assert!(page.body.contains(&format!("href=\"/tasks/{id}\"")), "{id}");
    }
    assert!(page
        .body
        .contains(&format!("href=\"/dead?task_id={}\"", ids[2])));
    assert!(page.body.contains("not fired"));
    let api = get("/api/batches/console-batch?limit=2".into())
        .await
        .json();
    assert_eq!(api["running"], 2);
    assert_eq!(api["members"].as_array().map(Vec::len), Some(2));
    let after = api["next_after"].as_str().expect("a next page").to_owned();
    let rest = get(format!("/api/batches/console-batch?after={after}"))
        .await
        .json();
    assert_eq!(rest["members"].as_array().map(Vec::len), Some(1));
    let paged = get("/batches/console-batch?limit=2".into()).await;
    assert!(paged
        .body
        .contains(&format!("/batches/console-batch?after={after}")));

    // A running member's task page links to its batch.
    let task = get(format!("/tasks/{}", ids[3])).await;
    assert_eq!(task.status, 200, "{}", task.body);
    assert!(
        task.body.contains("href=\"/batches/console-batch\""),
        "{}",
        task.body
    );

    // Released: every member finishes, on_complete fires (a member died: not on_success).
    release.add_permits(2);
    assert_eq!(
        next(&mut fired, "on_complete").await,
        "console-batch on_complete"
    );
    eventually(WAIT, "on_complete recorded as fired", || async {
        admin
            .batch_detail("console-batch", None, 0)
            .await
            .ok()
            .filter(|d| d.completed.as_ref().is_some_and(|f| f.done_at.is_some()))
    })
    .await;
    let page = get("/batches/console-batch".into()).await;
    assert!(page.body.contains("fired at"), "{}", page.body);
    assert!(page
        .body
        .contains("href=\"/tasks/batch%3Aconsole-batch%3Aon_complete\""));
    assert!(page.body.contains("0 running"), "{}", page.body);
    let status = producer
        .batch_status("console-batch")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.pending, status.running, status.queued), (0, 0, 0));

    // The chain stopped at its failing link; the link's dead task links back to the chain.
    eventually(WAIT, "the chain failed", || async {
        admin
            .chain_detail(&chain.id)
            .await
            .ok()
            .filter(|c| c.failed_at == Some(1))
    })
    .await;
    let page = get("/chains/console-chain".into()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("at link 1"), "{}", page.body);
    assert!(page
        .body
        .contains("href=\"/dead?task_id=chain%3Aconsole-chain%3A1\""));
    assert!(page
        .body
        .contains("href=\"/tasks/chain%3Aconsole-chain%3A0\""));
    let api = get("/api/chains/console-chain".into()).await.json();
    assert_eq!(api["state"], "failed");
    // Listed below the batches.
    let list = get("/batches".into()).await;
    assert!(
        list.body.contains("data-chain=\"console-chain\""),
        "{}",
        list.body
    );
    assert!(list.body.contains("failed at link 1"), "{}", list.body);
    let chains = get("/api/chains".into()).await.json();
    assert_eq!(chains["total"], 1);
    assert_eq!(chains["chains"][0]["failed_at"], 1);
    assert_eq!(chains["chains"][0]["links"], 2);
    let dead_link = get("/tasks/chain%3Aconsole-chain%3A1".into()).await;
    assert_eq!(dead_link.status, 200, "{}", dead_link.body);
    assert!(
        dead_link.body.contains("href=\"/chains/console-chain\""),
        "{}",
        dead_link.body
    );

    // Unknown and invalid ids.
    assert_eq!(get("/batches/nope".into()).await.status, 404);
    assert_eq!(get("/api/batches/nope".into()).await.status, 404);
    assert_eq!(get("/chains/nope".into()).await.status, 404);
    assert_eq!(get("/batches/a.b".into()).await.status, 400);

    stop_worker(stop, run).await;
}

#[tokio::test]
async fn the_batches_page_pages_newest_first_and_says_when_there_are_none() {
    init_logs();
    let server = NatsServer::start().await;
    let dashboard = start_dashboard(&server, &[]).await;
    let empty = http(&dashboard.url, "GET", "/batches", &[]).await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert!(empty.body.contains("id=\"no-batches\""), "{}", empty.body);

    let producer = producer(&server).await;
    for id in ["b-first", "b-second", "b-third"] {
        producer
            .batch(BatchOptions::new().id(id))
            .add(&Job {
                n: 1,
                note: String::new(),
            })
            .enqueue()
            .await
            .expect("batch enqueued");
    }
    let page = http(&dashboard.url, "GET", "/api/batches?limit=2", &[])
        .await
        .json();
    let ids: Vec<&str> = page["batches"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, ["b-third", "b-second"]);
    assert_eq!(page["next"], "b-second");
    let html = http(&dashboard.url, "GET", "/batches?limit=2", &[]).await;
    assert!(
        html.body.contains("href=\"/batches?after=b-second\""),
        "{}",
        html.body
    );
    let rest = http(&dashboard.url, "GET", "/batches?after=b-second", &[]).await;
    assert!(rest.body.contains("data-batch=\"b-first\""));
    assert!(!rest.body.contains("data-batch=\"b-third\""));
    assert!(rest.body.contains("id=\"first-page\""));
}
