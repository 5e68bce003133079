//! Chords (PROTOCOL.md §13, docs/WORKFLOWS.md "Chords" and "Tracing") against a real
//! nats-server with an in-process worker: member results too large to inline reach the callback
//! intact by object-store reference (`<PREFIX>_RESULTS`), small ones inline; the callback's
//! `process` span links to its members' `process` spans.

use std::collections::HashSet;

use jetq_consumer::TaskContext;
use jetq_contract::{
    workflow::{results, BatchSummary, MemberOutcome},
    Task, TaskOptions,
};
use jetq_producer::BatchOptions;
use jetq_tests::{otel::*, *};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// A member whose result is a string of `size` bytes that starts with its index.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Piece {
    i: u64,
    size: usize,
}

impl Task for Piece {
    const NAME: &'static str = "piece";
    const QUEUE: &'static str = "chords";
}

/// The callback: reports its summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Gather {
    #[serde(default)]
    batch: BatchSummary,
}

impl Task for Gather {
    const NAME: &'static str = "gather";
    const QUEUE: &'static str = "chords";

    fn options() -> TaskOptions {
        TaskOptions::default().max_attempts(1)
    }
}

fn piece_result(piece: &Piece) -> String {
    let head = format!("{}:", piece.i);
    let fill = char::from(b'a' + (piece.i % 26) as u8);
    let mut text = head.clone();
    text.extend(std::iter::repeat_n(
        fill,
        piece.size.saturating_sub(head.len()),
    ));
    text
}

/// A worker running [`Piece`] (result set) and [`Gather`] (summary sent to the channel).
async fn start_worker(
    server: &NatsServer,
) -> (
    mpsc::UnboundedReceiver<BatchSummary>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = worker(server)
        .handler(|piece: Piece, ctx: TaskContext| async move {
            ctx.set_result(&piece_result(&piece))?;
            ok()
        })
        .handler(move |gather: Gather, _ctx: TaskContext| {
            let tx = tx.clone();
            async move {
                tx.send(gather.batch).ok();
                ok()
            }
        })
        .build()
        .await
        .expect("worker builds");
    let (stop, run) = spawn_worker(worker);
    (rx, stop, run)
}

#[tokio::test]
async fn member_results_over_the_inline_limit_reach_the_callback_by_reference() {
    isolate_subscribers();
    let server = NatsServer::start().await;
    let (mut summaries, stop, run) = start_worker(&server).await;
    let producer = producer(&server).await;
    // Two results over 256 KiB each, one just over the marker limit, one small.
    let pieces = [
        Piece {
            i: 0,
            size: 300 * 1024,
        },
        Piece { i: 1, size: 100 },
        Piece {
            i: 2,
            size: 400 * 1024,
        },
        Piece {
            i: 3,
            size: results::MAX_MARKER_RESULT + 10,
        },
    ];
    let mut batch = producer.batch(BatchOptions::new().id("big").chord());
    for piece in &pieces {
        batch = batch.add(piece);
    }
    let handle = batch
        .on_success(&Gather::default())
        .enqueue()
        .await
        .expect("the chord is enqueued");
    let summary = next(&mut summaries, "the callback").await;
    assert_eq!((summary.total, summary.succeeded, summary.dead), (4, 4, 0));
    assert!(!summary.results_truncated);
    assert_eq!(summary.results.len(), 4);
    for (member, piece) in handle.members.iter().zip(&pieces) {
        let entry = summary
            .results
            .iter()
            .find(|r| r.id == member.id)
            .expect("every member is listed");
        assert_eq!(entry.outcome, MemberOutcome::Succeeded);
        let expected = serde_json::Value::String(piece_result(piece));
        if piece.size > results::MAX_MARKER_RESULT {
            assert_eq!(entry.result, None, "{} is not inline", piece.size);
            assert_eq!(
                entry.result_ref.as_deref(),
                Some(results::object_name("big", &member.id).as_str())
            );
        } else {
            assert_eq!(entry.result.as_ref(), Some(&expected));
            assert_eq!(entry.result_ref, None);
        }
        let resolved = producer
            .chord_result(entry)
            .await
            .expect("the result resolves");
        assert_eq!(resolved, Some(expected), "member {}", piece.i);
    }
    // The status record keeps what fits it (64 KiB), not the larger results.
    let status = producer
        .status(&handle.members[0].id)
        .await
        .unwrap()
        .expect("a record");
    assert_eq!(status.result, None);
    let status = producer
        .status(&handle.members[3].id)
        .await
        .unwrap()
        .expect("a record");
    assert!(status.result.is_some());
    stop_worker(stop, run).await;
}

#[tokio::test]
async fn the_callback_span_links_to_its_members_spans() {
    isolate_subscribers();
    let capture = SpanCapture::new();
    let _traced = tracing::dispatcher::set_default(&capture.dispatch());
    let server = NatsServer::start().await;
    let (mut summaries, stop, run) = start_worker(&server).await;
    let producer = producer(&server).await;
    let mut batch = producer.batch(BatchOptions::new().id("traced").chord());
    for i in 0..3 {
        batch = batch.add(&Piece { i, size: 10 });
    }
    batch
        .on_success(&Gather::default())
        .enqueue()
        .await
        .expect("the chord is enqueued");
    next(&mut summaries, "the callback").await;
    let callback = eventually(WAIT, "the callback's process span", || async {
        capture
            .spans()
            .into_iter()
            .find(|span| span.name == "process jetq.task.chords.gather")
    })
    .await;
    let members = eventually(WAIT, "the members' process spans", || async {
        let members: Vec<_> = capture
            .spans()
            .into_iter()
            .filter(|span| span.name == "process jetq.task.chords.piece")
            .collect();
        (members.len() >= 3).then_some(members)
    })
    .await;
    let names: Vec<String> = capture
        .spans()
        .iter()
        .map(|span| span.name.to_string())
        .collect();
    assert_eq!(members.len(), 3, "one attempt per member: {names:?}");
    let linked: HashSet<(String, String)> = callback
        .links
        .iter()
        .map(|link| {
            (
                link.span_context.trace_id().to_string(),
                link.span_context.span_id().to_string(),
            )
        })
        .collect();
    for member in &members {
        let id = (
            member.span_context.trace_id().to_string(),
            member.span_context.span_id().to_string(),
        );
        assert!(linked.contains(&id), "{id:?} not in {linked:?}");
    }
    assert_eq!(callback.links.len(), 3);
    stop_worker(stop, run).await;
}
