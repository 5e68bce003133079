//! Delayed tasks against a real nats-server: due-time accuracy, ordering, survival across
//! scheduler and server restarts, and the maximum delay.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use async_nats::jetstream::{self, message::StreamMessage};
use jetq_contract::{headers, Subjects};
use jetq_producer::{DelayError, EnqueueOptions, Producer, ProducerSettings, RawTask};
use jetq_tests::{
    connection, eventually, init_logs, producer, raw_jetstream, required_header, scheduler,
    stream_len, stream_messages, Job, NatsServer, RunningScheduler, WAIT,
};

async fn tasks(js: &jetstream::Context) -> Vec<StreamMessage> {
    stream_messages(js, &Subjects::default().tasks_stream()).await
}

/// Waits until the task stream holds `count` tasks and returns them in stream order.
async fn released(js: &jetstream::Context, count: usize) -> Vec<StreamMessage> {
    eventually(WAIT, &format!("{count} released tasks"), || {
        let js = js.clone();
        async move {
            let tasks = tasks(&js).await;
            (tasks.len() >= count).then_some(tasks)
        }
    })
    .await
}

fn not_before(message: &StreamMessage) -> SystemTime {
    jetq_contract::time::parse(&required_header(message, headers::NOT_BEFORE))
        .expect("Jetq-Not-Before is RFC 3339")
}

/// How late the task became runnable: its store time in the task stream minus its due time.
fn lateness(message: &StreamMessage) -> Duration {
    let stored = SystemTime::from(message.time);
    stored
        .duration_since(not_before(message))
        .unwrap_or_else(|early| {
            panic!(
                "task {} released {:?} early",
                message.sequence,
                early.duration()
            )
        })
}

fn releasing(server: &NatsServer) -> jetq_scheduler::SchedulerBuilder {
    scheduler(server).release_delayed(true)
}

/// Publishes a delayed task that fell due at `due`, in the past, exactly as a producer would
/// have published it before then (docs/PROTOCOL.md §7), so a test can have tasks that fell due
/// while no scheduler ran without waiting for the clock. Creates the delayed stream first.
async fn publish_past_due(js: &jetstream::Context, due: SystemTime, job: &Job) {
    let subjects = Subjects::default();
    jetq_scheduler::provision(js, &subjects, &jetq_contract::StreamSettings::default())
        .await
        .expect("delayed stream");
    let mut headers = async_nats::HeaderMap::new();
    let id = format!("past-due:{}:{}", job.n, jetq_contract::time::format(due));
    headers.insert(headers::MSG_ID, id.as_str());
    headers.insert(headers::ENQUEUED_AT, jetq_contract::time::now().as_str());
    headers.insert(
        headers::NOT_BEFORE,
        jetq_contract::time::format(due).as_str(),
    );
    let subject = subjects.delayed(jetq_contract::delayed::bucket_of(due), "work", "job");
    let payload = serde_json::to_vec(job).expect("job serializes");
    js.publish_with_headers(subject, headers, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored in the delayed stream");
}

/// The documented lateness of a delayed release (docs/SCHEDULER.md "Guarantees", BENCHMARKS.md
/// "delayed tasks"): p99 116 ms — handler start minus due time with 2,000 tasks due over 6 s —
/// and 503 ms in the worst of the benchmark's runs. The guarantee is "within 1 s".
const DOCUMENTED_P99_LATENESS: Duration = Duration::from_millis(116);
/// What the test allows the p99 of its store-time lateness: over four times the documented p99
/// and about the benchmark's worst run (a busy 2-core machine), yet half of what a release one
/// second late gives the tasks due early in their second (issue #27: such a release stayed
/// within 1 s for every task here and passed).
const P99_LATENESS_LIMIT: Duration = Duration::from_millis(500);

/// The nearest-rank `p` percentile (0 < p ≤ 1) of `sorted` (ascending, not empty).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test]
async fn delayed_tasks_become_runnable_within_a_second_of_their_due_time_in_order() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let producer = producer(&server).await;
    let running = RunningScheduler::start(releasing(&server)).await;

    // Sub-second and longer delays, enqueued out of order.
    let delays_ms = [2200u64, 300, 1500, 800, 2900, 1200, 600, 2500];
    for (n, delay) in delays_ms.iter().enumerate() {
        producer
            .enqueue_in(
                Duration::from_millis(*delay),
                &Job {
                    n: n as u64,
                    note: String::new(),
                },
            )
            .await
            .expect("delayed enqueue");
    }
    // Due times at fixed points of their seconds (50, 200, 350, ... ms past the second, over
    // three seconds), so the sample always has tasks due early in a second: a release that
    // waits for the end of the due second makes those nearly a second late.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970");
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() + 2);
    let mut at: Vec<SystemTime> = (0..20u64)
        .map(|k| base + Duration::from_millis(50 + 150 * k))
        .collect();
    at.reverse();
    at.rotate_left(7);
    for (k, due) in at.iter().enumerate() {
        producer
            .enqueue_at(
                *due,
                &Job {
                    n: 100 + k as u64,
                    note: "at".into(),
                },
            )
            .await
            .expect("enqueue_at");
    }

    let count = delays_ms.len() + at.len();
    let tasks = released(&js, count).await;
    running.stop().await;
    assert_eq!(tasks.len(), count, "each task released once");
    let mut late = Vec::new();
    let mut previous = SystemTime::UNIX_EPOCH;
    for task in &tasks {
        assert_eq!(task.subject.as_str(), "jetq.task.work.job");
        let lateness = lateness(task);
        assert!(
            lateness <= Duration::from_millis(1000),
            "task {} released {lateness:?} late: the guarantee is within 1 s",
            task.sequence
        );
        late.push(lateness);
        let due = not_before(task);
        assert!(due >= previous, "released out of due order");
        previous = due;
    }
    late.sort();
    let (p50, p99) = (percentile(&late, 0.5), percentile(&late, 0.99));
    eprintln!(
        "lateness of {} delayed tasks (store time − due time): p50 {p50:?}, p99 {p99:?}, max \
         {:?}; documented p99 {DOCUMENTED_P99_LATENESS:?}",
        late.len(),
        late[late.len() - 1]
    );
    assert!(
        p99 <= P99_LATENESS_LIMIT,
        "p99 lateness {p99:?} (p50 {p50:?}) over {P99_LATENESS_LIMIT:?}: the documented p99 is \
         {DOCUMENTED_P99_LATENESS:?}; all: {late:?}"
    );
    // The delayed stream is empty again: released tasks are purged.
    assert_eq!(
        stream_len(&js, &Subjects::default().delayed_stream()).await,
        0
    );
}

#[tokio::test]
async fn a_delay_above_the_maximum_is_refused_before_anything_is_sent() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let producer = producer(&server).await;
    let job = Job {
        n: 1,
        note: String::new(),
    };

    let err = producer
        .enqueue_in(Duration::from_secs(31 * 24 * 3600), &job)
        .await
        .expect_err("31 days is over the default maximum");
    match &err {
        DelayError::TooLong { task, delay, max } => {
            assert_eq!(task, "job");
            assert_eq!(*delay, Duration::from_secs(31 * 24 * 3600));
            assert_eq!(*max, jetq_contract::delayed::DEFAULT_MAX_DELAY);
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    let short: Producer = producer.clone().with_max_delay(Duration::from_secs(3600));
    let err = short
        .enqueue_at(SystemTime::now() + Duration::from_secs(7200), &job)
        .await
        .expect_err("2 h is over a 1 h maximum");
    assert!(matches!(err, DelayError::TooLong { .. }), "{err}");
    assert!(err.to_string().contains("maximum delay"), "{err}");
    // The maximum is configuration too: JETQ_MAX_DELAY.
    let env = |value: &str| [("JETQ_MAX_DELAY".to_owned(), value.to_owned())];
    let from_env = Producer::builder()
        .connection(connection(&server))
        .settings(ProducerSettings::from_env_iter(env("1h")).expect("JETQ_MAX_DELAY=1h"))
        .connect()
        .await
        .unwrap();
    assert_eq!(from_env.max_delay(), Duration::from_secs(3600));
    let err = from_env
        .enqueue_in(Duration::from_secs(3601), &job)
        .await
        .expect_err("over JETQ_MAX_DELAY");
    assert!(matches!(err, DelayError::TooLong { .. }), "{err}");
    let invalid = ProducerSettings::from_env_iter(env("0s")).expect_err("zero maximum");
    assert!(invalid.to_string().contains("JETQ_MAX_DELAY"), "{invalid}");
    // Exactly the maximum is accepted.
    producer
        .enqueue_in(jetq_contract::delayed::DEFAULT_MAX_DELAY, &job)
        .await
        .expect("30 days is accepted");
    assert_eq!(
        stream_len(&js, &Subjects::default().delayed_stream()).await,
        1
    );
    // Invalid names are still reported as such.
    let bad = producer
        .enqueue_raw_in(
            Duration::from_secs(1),
            RawTask {
                queue: "a.b".into(),
                task: "t".into(),
                payload: "{}".into(),
                options: EnqueueOptions::new(),
            },
        )
        .await
        .expect_err("a bad queue name is refused");
    assert!(matches!(bad, DelayError::Enqueue(_)), "{bad}");
}

#[tokio::test]
async fn a_due_time_in_the_past_enqueues_at_once() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let producer = producer(&server).await;
    let enqueued = producer
        .enqueue_at(
            SystemTime::now() - Duration::from_secs(60),
            &Job {
                n: 1,
                note: String::new(),
            },
        )
        .await
        .expect("past due time");
    let tasks = tasks(&js).await;
    assert_eq!(tasks.len(), 1, "runnable at once, no scheduler needed");
    assert_eq!(required_header(&tasks[0], headers::MSG_ID), enqueued.id);
}

#[tokio::test]
async fn delayed_tasks_survive_scheduler_and_server_restarts_and_run_once() {
    init_logs();
    let mut server = NatsServer::start().await;
    let producer = producer(&server).await;
    let mut ids = BTreeMap::new();
    for (n, delay) in [1u64, 3, 5].into_iter().enumerate() {
        let enqueued = producer
            .enqueue_in_with(
                Duration::from_secs(delay),
                &Job {
                    n: n as u64,
                    note: String::new(),
                },
                EnqueueOptions::new().key(format!("restart-{n}")),
            )
            .await
            .expect("delayed enqueue");
        ids.insert(enqueued.id, delay);
    }
    // A duplicate delayed enqueue (same key) is dropped by the delayed stream.
    let again = producer
        .enqueue_in_with(
            Duration::from_secs(1),
            &Job {
                n: 0,
                note: String::new(),
            },
            EnqueueOptions::new().key("restart-0"),
        )
        .await
        .expect("duplicate enqueue");
    assert!(again.duplicate);

    // Two replicas release the first task; one is killed, then the server restarts.
    let js = raw_jetstream(&server).await;
    let a = RunningScheduler::start(releasing(&server)).await;
    let b = RunningScheduler::start(releasing(&server)).await;
    released(&js, 1).await;
    a.kill().await;
    server.restart().await;
    // The other replica rides through the restart (its client reconnects); a third starts
    // after it.
    let js = raw_jetstream(&server).await;
    let c = RunningScheduler::start(releasing(&server)).await;
    let tasks = released(&js, 3).await;
    b.stop().await;
    c.stop().await;

    let released_ids: Vec<_> = tasks
        .iter()
        .map(|t| required_header(t, headers::MSG_ID))
        .collect();
    let mut unique = released_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        released_ids.len(),
        "a task was released twice: {released_ids:?}"
    );
    assert_eq!(unique, ids.keys().cloned().collect::<Vec<_>>());
    for task in &tasks {
        // Never early; the restart may make one late.
        let _ = lateness(task);
    }
    assert_eq!(
        stream_len(&js, &Subjects::default().delayed_stream()).await,
        0
    );
}

#[tokio::test]
async fn a_large_second_is_released_whole_and_once() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let producer = producer(&server).await;
    // 300 tasks due in the same second: read past the direct-get prefix, through an ordered
    // consumer.
    let at = SystemTime::now() + Duration::from_secs(2);
    let jobs: Vec<Job> = (0..300)
        .map(|n| Job {
            n,
            note: String::new(),
        })
        .collect();
    for job in &jobs {
        producer.enqueue_at(at, job).await.expect("delayed enqueue");
    }
    let running = RunningScheduler::start(releasing(&server)).await;
    let tasks = released(&js, jobs.len()).await;
    running.stop().await;
    let mut ids: Vec<_> = tasks
        .iter()
        .map(|t| required_header(t, headers::MSG_ID))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), jobs.len());
    for task in &tasks {
        assert!(
            lateness(task) <= Duration::from_millis(1500),
            "{:?}",
            lateness(task)
        );
    }
    assert_eq!(
        stream_len(&js, &Subjects::default().delayed_stream()).await,
        0
    );
}

/// A second whose last task is due in its last millisecond keeps its release pass busy past
/// the next boundary: the following second must still be released at once, not a whole tick
/// later (seen in the benchmark: p99 lateness 1.05 s before the fix, 0.12 s after).
#[tokio::test]
async fn a_task_due_just_after_a_second_boundary_is_not_held_for_a_whole_second() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let producer = producer(&server).await;
    let running = RunningScheduler::start(releasing(&server)).await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970");
    let boundary = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() + 3);
    for (n, due) in [
        boundary - Duration::from_millis(1),
        boundary + Duration::from_millis(1),
    ]
    .into_iter()
    .enumerate()
    {
        producer
            .enqueue_at(
                due,
                &Job {
                    n: n as u64,
                    note: String::new(),
                },
            )
            .await
            .expect("delayed enqueue");
    }
    let tasks = released(&js, 2).await;
    running.stop().await;
    for task in &tasks {
        let late = lateness(task);
        assert!(
            late <= Duration::from_millis(500),
            "task {} released {late:?} after its due time",
            task.sequence
        );
    }
}

/// A scheduler that reaches a second late (here: started after the whole second fell due)
/// releases its tasks in due order, not in the order they were enqueued.
#[tokio::test]
async fn a_second_released_late_still_leaves_in_due_order() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    // A whole second that fell due five seconds ago with no scheduler running, filled
    // latest-first.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970");
    let second = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() - 5);
    let offsets_ms = [900u64, 100, 700, 300, 500, 0, 800];
    for (n, offset) in offsets_ms.iter().enumerate() {
        let job = Job {
            n: n as u64,
            note: String::new(),
        };
        publish_past_due(&js, second + Duration::from_millis(*offset), &job).await;
    }
    let running = RunningScheduler::start(releasing(&server)).await;
    let tasks = released(&js, offsets_ms.len()).await;
    running.stop().await;
    let due: Vec<SystemTime> = tasks.iter().map(not_before).collect();
    let mut sorted = due.clone();
    sorted.sort();
    assert_eq!(due, sorted, "released out of due order");
}

#[tokio::test]
async fn tasks_due_while_no_scheduler_ran_are_released_when_one_starts() {
    init_logs();
    let server = NatsServer::start().await;
    let js = raw_jetstream(&server).await;
    let producer = producer(&server).await;
    // Due two seconds ago, while no scheduler ran.
    for n in 0..3u64 {
        let job = Job {
            n,
            note: String::new(),
        };
        publish_past_due(&js, SystemTime::now() - Duration::from_secs(2), &job).await;
    }
    // Far-future tasks stay put.
    producer
        .enqueue_in(
            Duration::from_secs(3600),
            &Job {
                n: 9,
                note: String::new(),
            },
        )
        .await
        .expect("delayed enqueue");
    let running = RunningScheduler::start(releasing(&server)).await;
    let tasks = released(&js, 3).await;
    running.stop().await;
    assert_eq!(tasks.len(), 3);
    assert_eq!(
        stream_len(&js, &Subjects::default().delayed_stream()).await,
        1
    );
}
