//! Pulling one queue's tasks: overlapping pull requests sized to the free slots plus a small,
//! bounded prefetch.
//!
//! Why not one pull request per free slot, waited for before the next: every request is a round
//! trip, and with short tasks the slots sat idle for it — a worker of 16 slots drained a quarter
//! of what the server can deliver. Why not async-nats's `messages()` stream: it buffers whatever
//! it fetched, out of the worker's sight, and a task that waits in a buffer while slow tasks
//! hold every slot has its `ack_wait` running out — it is redelivered elsewhere while it still
//! waits here.
//!
//! So this loop keeps its own books, on one inbox subscription:
//!
//! - **What it may hold.** Tasks running + tasks waiting in the [`backlog`] + tasks requested
//!   and not yet delivered never exceed `concurrency + prefetch`. A new request asks for the
//!   room left, once that room is half the total (or anything when no request is waiting), so
//!   requests are few and large and overlap: the next tasks are on their way while the current
//!   ones run. The prefetch starts at the concurrency and doubles while backlog tasks start at
//!   once, or while deliveries find no runner busy and the queue's tasks run for under 5 ms, up
//!   to `JETQ_PREFETCH` (default 512): a queue of short tasks is pulled in large requests
//!   (whatever its concurrency), a queue of slow ones never grows it. It is also cut to what
//!   fits in `JETQ_PREFETCH_BYTES`
//!   (default 16 MiB) at the queue's recent task size (`books::DeliverySizes`), so a queue of
//!   large tasks does not ask for hundreds of them.
//! - **Who runs them.** A delivery starts a new runner (a tokio task holding one of the
//!   `concurrency` slots, see [`runners`]) only when no running one will take it soon; else it
//!   waits in the backlog, and the next runner to finish its task takes it.
//! - **How long a buffered task may wait.** At most [`max_buffer_wait`] — far below `ack_wait`.
//!   A task that waited longer is handed back (no attempt used, see `jetq_contract::attempts`),
//!   redelivered once this loop's open requests are over (at most `JETQ_FETCH_EXPIRES`) so it
//!   goes to an idle pod instead of bouncing back here, and prefetching stops for
//!   [`PREFETCH_COOL_DOWN`]: this queue's tasks are slow, and a pod of slow tasks must not sit on
//!   work that another pod could run (what KEDA scales out for).
//! - **Priority levels.** A queue has one durable per level (`jetq_contract::Priority`), all
//!   filling the same slots. While only `normal` has tasks, the loop pulls it exactly as above,
//!   and keeps one *watch* (a request for a single task) open on each other level. When a
//!   watch brings a task, the loop pulls by priority for [`MIXED_FOR`]: each request asks the
//!   highest level that has tasks, without waiting (`no_wait`), but 1 of every
//!   [`LOWER_LEVEL_SHARE`] tasks it asks for is asked of the lower levels that have tasks, in
//!   turn, so a busy higher level slows the lower ones but never stops them. A level whose request
//!   came back short has no tasks: it gets a watch until it has some again.
//! - **Requests the server forgot.** Each request is expected to end by its `expires` (the
//!   server then says how many it did not deliver, status 408); one not heard of by its expiry
//!   plus a margin (a server restart, a lost connection) is written off.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use async_nats::{
    jetstream::{
        self,
        consumer::{pull::BatchConfig, PullConsumer},
    },
    StatusCode, Subject,
};
use futures::{FutureExt, StreamExt};
use tokio::{sync::Semaphore, time::Instant};
use tokio_util::sync::{CancellationToken, PollSemaphore};

use jetq_contract::Priority;

use crate::execution::Executor;

mod backlog;
mod books;
mod runners;
use backlog::Backlog;
use books::{Books, DeliverySizes, Level, Prefetch, Request};
use runners::Runners;

/// How long the loop keeps pulling by priority after a level other than `normal` delivered a
/// task.
pub(crate) const MIXED_FOR: Duration = Duration::from_secs(30);

/// While several levels have tasks, 1 of every this-many tasks requested goes to the levels
/// below the highest busy one (to each in turn).
pub(crate) const LOWER_LEVEL_SHARE: f64 = 8.0;

/// How long prefetching stays off after a buffered task had to be handed back.
pub(crate) const PREFETCH_COOL_DOWN: Duration = Duration::from_secs(30);

/// The margin after a request's `expires` before it is written off as forgotten.
const FORGOTTEN_AFTER: Duration = Duration::from_secs(2);

/// Deliveries booked in one turn of the loop after the one that woke it, when they have
/// already arrived.
const READY_AT_ONCE: usize = 64;

/// The header of a 408/409 status that says how many messages of the request were not sent.
const PENDING_MESSAGES: &str = "Nats-Pending-Messages";

/// The longest a task may wait in this pod's buffer for a slot: 500 ms, or a quarter of
/// `ack_wait` if that is shorter (a buffered task gets no heartbeats).
pub(crate) fn max_buffer_wait(ack_wait: Duration) -> Duration {
    (ack_wait / 4).min(Duration::from_millis(500))
}

/// How one queue is pulled.
#[derive(Debug, Clone)]
pub(crate) struct PullSettings {
    /// Tasks of the queue run at once.
    pub(crate) concurrency: usize,
    /// Tasks fetched ahead of free slots.
    pub(crate) prefetch: usize,
    /// Bytes of tasks fetched ahead of free slots (the prefetch is cut to what fits).
    pub(crate) prefetch_bytes: usize,
    /// Lifetime of one pull request.
    pub(crate) expires: Duration,
    /// See [`max_buffer_wait`].
    pub(crate) max_buffer_wait: Duration,
}

/// Pulls one queue's levels (`consumers`, one durable per [`Priority`]) into `slots` until
/// `stop`, then hands back whatever arrives.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pull_loop(
    queue: String,
    consumers: Vec<(Priority, PullConsumer)>,
    js: jetstream::Context,
    slots: Arc<Semaphore>,
    settings: PullSettings,
    executor: Arc<Executor>,
    stop: CancellationToken,
) {
    let client = js.client();
    let inbox = client.new_inbox();
    let mut subscription = match subscribe(&client, &inbox, &queue, &stop).await {
        Some(subscription) => subscription,
        None => return,
    };
    let mut consumers = consumers;
    consumers.sort_by_key(|(priority, _)| *priority);
    let mut books = Books {
        levels: consumers
            .into_iter()
            .enumerate()
            .map(|(index, (priority, consumer))| Level {
                priority,
                consumer,
                reply: Subject::from(format!("{inbox}.{index}")),
                requests: VecDeque::new(),
                busy: priority == Priority::Normal,
            })
            .collect(),
        free: Vec::new(),
        prefetch_off_until: None,
        prefetch: Prefetch::new(settings.concurrency, settings.prefetch),
        sizes: DeliverySizes::default(),
        mixed_until: None,
        lower_credit: 0.0,
        lower_turn: 0,
    };
    let backlog = Arc::new(Backlog::default());
    let runners = Runners::new(executor.clone(), backlog.clone(), stop.clone());
    // While tasks wait in the backlog and slots are free: how often the loop checks that the
    // runners still take them (see `runners::BUSY_AFTER`).
    let mut busy_check = tokio::time::interval(runners::BUSY_AFTER);
    busy_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Slots are awaited through one long-lived acquire, not a new one each turn of the loop.
    let mut slot_freed = PollSemaphore::new(slots.clone());
    let mut waits = Vec::new();
    let mut failures: u32 = 0;
    let mut tick = tokio::time::interval(settings.max_buffer_wait / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Take every slot that came free (without waiting), and give buffered tasks theirs.
        while books.free.len() < settings.concurrency {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => books.free.push(permit),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        for waited in waits.drain(..) {
            books.prefetch.started_after(waited);
        }
        // Tasks waiting in the backlog get a new runner when no running one will take them
        // soon (see `runners`): all are suspended, or they have taken nothing for a while.
        while !backlog.is_empty() && !books.free.is_empty() {
            let stalled = backlog.untaken_for(now) >= runners::BUSY_AFTER;
            if runners.ready() > 0 && !stalled {
                break;
            }
            let (Some(permit), Some(buffered)) = (books.free.pop(), backlog.pop()) else {
                break;
            };
            books
                .prefetch
                .started_after(now.duration_since(buffered.since));
            runners.start(buffered.message, permit);
        }
        // Ask for the room left, when it is worth a request: half of what this loop may hold,
        // so requests are few and large (each costs the server far more than a delivery) and
        // the next one is on its way while the last one's tasks run.
        let prefetch = match books.prefetch_off_until {
            Some(until) if until > now => 0,
            _ => books
                .prefetch
                .current
                .min(books.sizes.tasks_within(settings.prefetch_bytes)),
        };
        let capacity = settings.concurrency + prefetch;
        let running = settings.concurrency - slots.available_permits() - books.free.len();
        let mut held = running + backlog.len() + books.requested();
        if books.mixed(now) {
            held = held.saturating_sub(books.idle_waiting(now));
        }
        let room = capacity.saturating_sub(held);
        let mut wanted = books.next_requests(room, capacity, now);
        // A watch on every level not pulled: one task, so the loop learns that it has some.
        let mixed = books.mixed(now);
        let normal = books.index_of(Priority::Normal);
        for (index, level) in books.levels.iter().enumerate() {
            let pulled = if mixed { level.busy } else { index == normal };
            if !pulled && level.requests.is_empty() && !wanted.iter().any(|w| w.0 == index) {
                wanted.push((index, 1, false));
            }
        }
        let mut failed = None;
        for (index, batch, no_wait) in wanted {
            let level = &mut books.levels[index];
            let request = BatchConfig {
                batch,
                expires: (!no_wait).then_some(settings.expires),
                no_wait,
                ..Default::default()
            };
            match level
                .consumer
                .request_batch(request, level.reply.clone())
                .await
            {
                Ok(()) => {
                    failures = 0;
                    // A `no_wait` request ends at once; the margin covers a slow reply.
                    let lifetime = if no_wait {
                        Duration::ZERO
                    } else {
                        settings.expires
                    };
                    level.requests.push_back(Request {
                        remaining: batch,
                        waits: !no_wait && batch > 1,
                        active_at: now,
                        expires_at: now + lifetime,
                        forgotten_at: now + lifetime + FORGOTTEN_AFTER,
                    });
                }
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        if let Some(err) = failed {
            failures = failures.saturating_add(1);
            let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
            tracing::warn!(%queue, error = %err, retry_in = ?pause, "pull request failed");
            tokio::select! {
                _ = tokio::time::sleep(pause) => continue,
                _ = stop.cancelled() => {
                    return hand_back_rest(books, &backlog, subscription, &executor, settings.expires).await
                }
            }
        }
        // Woken when the backlog is down to where a request is worth it: the room this loop
        // asks for once (half its capacity while a request is open, any room otherwise).
        let threshold = if books.requested() > 0 {
            (capacity / 2).max(1)
        } else {
            1
        };
        let low_water = capacity
            .saturating_sub(threshold)
            .saturating_sub(running + books.requested());
        backlog.turn(low_water, &mut waits);
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                return hand_back_rest(books, &backlog, subscription, &executor, settings.expires).await;
            }
            next = subscription.next() => match next {
                Some(message) => {
                    let mut on_message = |message| {
                        on_message(&queue, message, &js, &mut books, &backlog, &runners, &slots)
                    };
                    on_message(message);
                    // Deliveries come in bursts: book what else has arrived before the next
                    // turn of the loop.
                    for _ in 0..READY_AT_ONCE {
                        match subscription.next().now_or_never() {
                            Some(Some(message)) => on_message(message),
                            _ => break,
                        }
                    }
                }
                None => {
                    // The client closed the subscription (connection closed for good).
                    tracing::warn!(%queue, "pull subscription ended; subscribing again");
                    for level in &mut books.levels {
                        level.requests.clear();
                    }
                    match subscribe(&client, &inbox, &queue, &stop).await {
                        Some(again) => subscription = again,
                        None => {
                            for buffered in backlog.take_all() {
                                executor.hand_back_unrun(buffered.message, None).await;
                            }
                            return;
                        }
                    }
                }
            },
            permit = std::future::poll_fn(|cx| slot_freed.poll_acquire(cx)), if books.free.len() < settings.concurrency => {
                match permit {
                    Some(permit) => books.free.push(permit),
                    None => return,
                }
            }
            () = backlog.low() => {}
            () = runners.wanted() => {}
            _ = busy_check.tick(), if !backlog.is_empty() && !books.free.is_empty() => {}
            _ = tick.tick() => {
                let now = Instant::now();
                books.write_off_forgotten(now);
                let waited_too_long = backlog.take_waited_longer(settings.max_buffer_wait, now);
                if !waited_too_long.is_empty() {
                    // Redelivered once this loop's open requests are over, so it reaches
                    // another worker instead of bouncing back here.
                    let delay = books.open_for(now);
                    let handed_back = waited_too_long.len();
                    for buffered in waited_too_long {
                        executor.hand_back_unrun(buffered.message, delay).await;
                    }
                    books.prefetch_off_until = Some(now + PREFETCH_COOL_DOWN);
                    books.prefetch.reset();
                    tracing::info!(%queue, handed_back, cool_down = ?PREFETCH_COOL_DOWN, "tasks waited too long for a slot: handed back for other workers, prefetch paused");
                }
            }
        }
    }
}

/// Subscribes the loop's inbox, retrying until it works or the worker stops.
async fn subscribe(
    client: &async_nats::Client,
    inbox: &str,
    queue: &str,
    stop: &CancellationToken,
) -> Option<async_nats::Subscriber> {
    let mut failures: u32 = 0;
    // Every level's requests reply to `<inbox>.<index>`.
    let replies = Subject::from(format!("{inbox}.*"));
    loop {
        match client.subscribe(replies.clone()).await {
            Ok(subscription) => return Some(subscription),
            Err(err) => {
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tracing::warn!(%queue, error = %err, retry_in = ?pause, "cannot subscribe the pull inbox");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return None,
                }
            }
        }
    }
}

/// A message on the inbox: a task (run it or put it in the backlog) or a status about a
/// request.
fn on_message(
    queue: &str,
    message: async_nats::Message,
    js: &jetstream::Context,
    books: &mut Books,
    backlog: &Backlog,
    runners: &Arc<Runners>,
    slots: &Arc<Semaphore>,
) {
    match message.status {
        None | Some(StatusCode::OK) => {
            books.sizes.observe(message.length);
            let level = books.level_of_task(message.subject.as_str());
            let now = Instant::now();
            books.levels[level].delivered(now);
            if books.levels[level].priority != Priority::Normal {
                books.mixed_until = Some(now + MIXED_FOR);
            }
            let message = jetstream::Message {
                message,
                context: js.clone(),
            };
            // A new runner only if none running will take this task soon (see `runners`);
            // otherwise it waits in the backlog for the next runner that finishes its task.
            let permit = if !backlog.is_empty() || runners.ready() > 0 {
                None
            } else {
                match books.free.pop() {
                    Some(permit) => Some(permit),
                    None => slots.clone().try_acquire_owned().ok(),
                }
            };
            match permit {
                Some(permit) => {
                    // No runner was ready for this delivery: if the queue's tasks are short, the
                    // worker waits on the server, and prefetching more is what helps (a queue
                    // run one task at a time would otherwise ask for one or two tasks per round
                    // trip: 5,000 tasks/s).
                    if backlog
                        .typical_run()
                        .is_some_and(|typical| typical <= books::STARTED_AT_ONCE)
                    {
                        books.prefetch.started_after(Duration::ZERO);
                    }
                    runners.start(message, permit)
                }
                None => backlog.push(message),
            }
        }
        // Idle heartbeat: nothing to book.
        Some(StatusCode::IDLE_HEARTBEAT) => {}
        Some(status) => {
            // 408 request expired, 409 max waiting / leadership change / consumer deleted, 404
            // no messages: the request is over; the header says what it did not deliver.
            let undelivered = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(PENDING_MESSAGES))
                .and_then(|value| value.as_str().trim().parse::<usize>().ok());
            let level = books.level_of_reply(message.subject.as_str());
            books.levels[level].ended(undelivered);
            if status != StatusCode::TIMEOUT && status != StatusCode::NOT_FOUND {
                tracing::debug!(%queue, %status, description = ?message.description, "pull request ended with a status");
            }
        }
    }
}

/// At shutdown: hands back the buffered tasks, then whatever the open requests still deliver
/// until they end, so nothing waits out `ack_wait` in a stopped worker.
///
/// A task handed back while this worker's requests are still open would come straight back to
/// them (and be handed back again, each round a delivery of `max_deliver`): everything is
/// handed back with a delay that outlasts those requests, so another worker gets it then.
async fn hand_back_rest(
    mut books: Books,
    backlog: &Backlog,
    mut subscription: async_nats::Subscriber,
    executor: &Arc<Executor>,
    expires: Duration,
) {
    let deadline = Instant::now() + expires + Duration::from_millis(200);
    let outlast =
        |now: Instant| Some(deadline.saturating_duration_since(now) + Duration::from_millis(100));
    for buffered in backlog.take_all() {
        executor
            .hand_back_unrun(buffered.message, outlast(Instant::now()))
            .await;
    }
    let js_context = executor.jetstream().clone();
    while books.requested() > 0 {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, subscription.next()).await else {
            break;
        };
        if message.status.is_some() && message.status != Some(StatusCode::OK) {
            if message.status != Some(StatusCode::IDLE_HEARTBEAT) {
                let level = books.level_of_reply(message.subject.as_str());
                books.levels[level].ended(None);
            }
            continue;
        }
        let level = books.level_of_task(message.subject.as_str());
        books.levels[level].delivered(Instant::now());
        let message = jetstream::Message {
            message,
            context: js_context.clone(),
        };
        executor
            .hand_back_unrun(message, outlast(Instant::now()))
            .await;
    }
}
