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
//! - **What it may hold.** Tasks running + tasks buffered here + tasks requested and not yet
//!   delivered never exceed `concurrency + prefetch`. A new request asks for the room left, once
//!   that room is half the total (or anything when no request is waiting), so requests are few
//!   and large and overlap: the next tasks are on their way while the current ones run. The
//!   prefetch starts at the concurrency and doubles while buffered tasks find a slot at once,
//!   up to `JETQ_PREFETCH` (default 256): a queue of short tasks is pulled in large requests, a
//!   queue of slow ones never grows it.
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
use futures::StreamExt;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use jetq_contract::Priority;

use crate::execution::Executor;

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
    /// Lifetime of one pull request.
    pub(crate) expires: Duration,
    /// See [`max_buffer_wait`].
    pub(crate) max_buffer_wait: Duration,
}

/// A pull request the server has not finished.
struct Request {
    /// Messages it may still deliver.
    remaining: usize,
    /// A request that waits for tasks (not `no_wait`), asking for more than a watch's one.
    waits: bool,
    /// When it was sent or last delivered.
    active_at: Instant,
    /// When the server ends it.
    expires_at: Instant,
    /// When it is written off if the server never says it ended.
    forgotten_at: Instant,
}

/// A delivered task waiting for a slot.
struct Buffered {
    message: jetstream::Message,
    since: Instant,
}

/// One priority level's durable and the requests open on it.
struct Level {
    priority: Priority,
    consumer: PullConsumer,
    /// Where this level's requests deliver: `<inbox>.<index>` (the loop subscribes `<inbox>.*`,
    /// and a status reply's subject says which level's request ended).
    reply: Subject,
    requests: VecDeque<Request>,
    /// Whether it is believed to have tasks: it delivered one, and no request on it came back
    /// short since.
    busy: bool,
}

impl Level {
    fn requested(&self) -> usize {
        self.requests.iter().map(|r| r.remaining).sum()
    }

    /// A delivered message used up one unit of the oldest request (the server serves waiting
    /// requests in order).
    fn delivered(&mut self, now: Instant) {
        self.busy = true;
        if let Some(front) = self.requests.front_mut() {
            front.active_at = now;
            front.remaining = front.remaining.saturating_sub(1);
            if front.remaining == 0 {
                self.requests.pop_front();
            }
        }
    }

    /// The server ended a request with `undelivered` messages not sent.
    fn ended(&mut self, undelivered: Option<usize>) {
        match undelivered {
            Some(count) => {
                // Prefer the request with exactly that many left (the oldest normally is).
                let position = self
                    .requests
                    .iter()
                    .position(|r| r.remaining == count)
                    .unwrap_or(0);
                self.requests.remove(position);
                if count > 0 {
                    // It asked for more than the level had: nothing is waiting there now.
                    self.busy = false;
                }
            }
            None => {
                self.requests.pop_front();
                self.busy = false;
            }
        }
    }
}

/// The loop's books.
struct Books {
    /// Highest first.
    levels: Vec<Level>,
    buffer: VecDeque<Buffered>,
    /// Slots taken from the semaphore and not yet given to a task.
    free: Vec<OwnedSemaphorePermit>,
    prefetch_off_until: Option<Instant>,
    prefetch: Prefetch,
    /// Until when the loop pulls by priority (see the module documentation).
    mixed_until: Option<Instant>,
    /// Tasks owed to the levels below the highest busy one (see [`LOWER_LEVEL_SHARE`]).
    lower_credit: f64,
    /// Which lower level gets the next share.
    lower_turn: usize,
}

/// How far ahead of free slots the loop fetches: from the concurrency, doubling each time as
/// many buffered tasks in a row found a slot at once (the queue's tasks are short and the
/// worker is waiting on the server, not on its handlers), up to `JETQ_PREFETCH`. Back to the
/// start after a task had to be handed back for waiting too long.
struct Prefetch {
    current: usize,
    start: usize,
    max: usize,
    /// Buffered tasks in a row that started within [`STARTED_AT_ONCE`].
    streak: usize,
}

/// A waiting request that brought nothing for this long is idle (see [`Books::idle_waiting`]).
const IDLE_REQUEST: Duration = Duration::from_millis(20);

/// A buffered task that started within this found a slot at once.
const STARTED_AT_ONCE: Duration = Duration::from_millis(5);

impl Prefetch {
    fn new(concurrency: usize, max: usize) -> Self {
        let start = concurrency.min(max);
        Prefetch {
            current: start,
            start,
            max,
            streak: 0,
        }
    }

    fn started_after(&mut self, waited: Duration) {
        if waited > STARTED_AT_ONCE {
            self.streak = 0;
            return;
        }
        self.streak += 1;
        if self.streak >= self.current.max(1) && self.current < self.max {
            self.current = (self.current * 2).clamp(1, self.max);
            self.streak = 0;
        }
    }

    fn reset(&mut self) {
        self.current = self.start;
        self.streak = 0;
    }
}

impl Books {
    fn requested(&self) -> usize {
        self.levels.iter().map(Level::requested).sum()
    }

    /// Room held by waiting requests that brought nothing for [`IDLE_REQUEST`]: while pulling
    /// by priority it is not counted as held, or a request that `normal` got before a higher
    /// level had tasks would keep the higher level from being pulled until it expired. At most
    /// one such request per level, sent before the loop pulled by priority (it sends none
    /// since), so what it may still bring is bounded.
    fn idle_waiting(&self, now: Instant) -> usize {
        self.levels
            .iter()
            .flat_map(|level| level.requests.iter())
            .filter(|r| r.waits && now.duration_since(r.active_at) > IDLE_REQUEST)
            .map(|r| r.remaining)
            .sum()
    }

    /// The level a delivered task came from: its subject carries the level (`~high`, `~low`)
    /// and nothing else in a task subject may contain `~`.
    fn level_of_task(&self, subject: &str) -> usize {
        let priority = match subject.find(jetq_contract::priority::LEVEL_SEPARATOR) {
            None => Priority::Normal,
            Some(at) if subject[at + 1..].starts_with("high") => Priority::High,
            Some(_) => Priority::Low,
        };
        self.index_of(priority)
    }

    /// The level whose request a status reply ends: the last token of its reply subject.
    fn level_of_reply(&self, subject: &str) -> usize {
        subject
            .rsplit('.')
            .next()
            .and_then(|index| index.parse::<usize>().ok())
            .filter(|index| *index < self.levels.len())
            .unwrap_or_else(|| self.index_of(Priority::Normal))
    }

    fn index_of(&self, priority: Priority) -> usize {
        self.levels
            .iter()
            .position(|level| level.priority == priority)
            .unwrap_or(0)
    }

    fn mixed(&self, now: Instant) -> bool {
        self.mixed_until.is_some_and(|until| until > now)
    }

    /// How long this loop's open requests may still deliver: a task handed back sooner could
    /// come straight back to them.
    fn open_for(&self, now: Instant) -> Option<Duration> {
        self.levels
            .iter()
            .flat_map(|level| level.requests.iter())
            .map(|r| r.expires_at.saturating_duration_since(now))
            .max()
            .filter(|left| !left.is_zero())
    }

    fn write_off_forgotten(&mut self, now: Instant) {
        for level in &mut self.levels {
            level.requests.retain(|r| r.forgotten_at > now);
        }
    }

    /// Where the next requests for `room` tasks go, as `(level, batch, no_wait)`: a request
    /// either waits for tasks (`expires`) or takes only what is there now (`no_wait`).
    fn next_requests(
        &mut self,
        room: usize,
        capacity: usize,
        now: Instant,
    ) -> Vec<(usize, usize, bool)> {
        let worth_it = room >= (capacity / 2).max(1);
        if !self.mixed(now) {
            // Only `normal` has had tasks: pull it as a single queue, waiting for tasks.
            let normal = self.index_of(Priority::Normal);
            let idle = self.levels[normal].requests.is_empty();
            return if room > 0 && (worth_it || idle) {
                vec![(normal, room, false)]
            } else {
                Vec::new()
            };
        }
        let busy: Vec<usize> = (0..self.levels.len())
            .filter(|&index| self.levels[index].busy)
            .collect();
        let Some(&highest) = busy.first() else {
            return Vec::new();
        };
        if room == 0 || (!worth_it && !self.levels[highest].requests.is_empty()) {
            return Vec::new();
        }
        let mut requests = Vec::with_capacity(2);
        let mut for_highest = room;
        if busy.len() > 1 {
            // The lower levels' share, counted in tasks: 1 of every LOWER_LEVEL_SHARE.
            self.lower_credit += room as f64 / LOWER_LEVEL_SHARE;
            let lower_batch = (self.lower_credit.floor() as usize).min(room);
            if lower_batch > 0 {
                let lower = &busy[1..];
                let target = lower[self.lower_turn % lower.len()];
                self.lower_turn = self.lower_turn.wrapping_add(1);
                self.lower_credit -= lower_batch as f64;
                for_highest -= lower_batch;
                requests.push((target, lower_batch, true));
            }
        } else {
            self.lower_credit = 0.0;
        }
        if for_highest > 0 {
            requests.insert(0, (highest, for_highest, true));
        }
        requests
    }
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
        buffer: VecDeque::new(),
        free: Vec::new(),
        prefetch_off_until: None,
        prefetch: Prefetch::new(settings.concurrency, settings.prefetch),
        mixed_until: None,
        lower_credit: 0.0,
        lower_turn: 0,
    };
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
        while !books.buffer.is_empty() {
            let Some(permit) = books.free.pop() else {
                break;
            };
            if let Some(buffered) = books.buffer.pop_front() {
                books
                    .prefetch
                    .started_after(now.duration_since(buffered.since));
                run(&executor, buffered.message, permit);
            }
        }
        // Ask for the room left, when it is worth a request: half of what this loop may hold,
        // so requests are few and large (each costs the server far more than a delivery) and
        // the next one is on its way while the last one's tasks run.
        let prefetch = match books.prefetch_off_until {
            Some(until) if until > now => 0,
            _ => books.prefetch.current,
        };
        let capacity = settings.concurrency + prefetch;
        let running = settings.concurrency - slots.available_permits() - books.free.len();
        let mut held = running + books.buffer.len() + books.requested();
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
                    return hand_back_rest(books, subscription, &executor, settings.expires).await
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                return hand_back_rest(books, subscription, &executor, settings.expires).await;
            }
            next = subscription.next() => match next {
                Some(message) => on_message(&queue, message, &js, &mut books, &slots, &executor),
                None => {
                    // The client closed the subscription (connection closed for good).
                    tracing::warn!(%queue, "pull subscription ended; subscribing again");
                    for level in &mut books.levels {
                        level.requests.clear();
                    }
                    match subscribe(&client, &inbox, &queue, &stop).await {
                        Some(again) => subscription = again,
                        None => {
                            for buffered in books.buffer.drain(..) {
                                executor.hand_back_unrun(buffered.message, None).await;
                            }
                            return;
                        }
                    }
                }
            },
            permit = slots.clone().acquire_owned(), if books.free.len() < settings.concurrency => {
                match permit {
                    Ok(permit) => books.free.push(permit),
                    Err(_) => return,
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                books.write_off_forgotten(now);
                let waited_too_long = books
                    .buffer
                    .front()
                    .is_some_and(|b| now.duration_since(b.since) > settings.max_buffer_wait);
                if waited_too_long {
                    // Redelivered once this loop's open requests are over, so it reaches
                    // another worker instead of bouncing back here.
                    let delay = books.open_for(now);
                    let mut handed_back = 0;
                    while let Some(front) = books.buffer.front() {
                        if now.duration_since(front.since) <= settings.max_buffer_wait {
                            break;
                        }
                        if let Some(buffered) = books.buffer.pop_front() {
                            executor.hand_back_unrun(buffered.message, delay).await;
                            handed_back += 1;
                        }
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

/// A message on the inbox: a task (run it or buffer it) or a status about a request.
fn on_message(
    queue: &str,
    message: async_nats::Message,
    js: &jetstream::Context,
    books: &mut Books,
    slots: &Arc<Semaphore>,
    executor: &Arc<Executor>,
) {
    match message.status {
        None | Some(StatusCode::OK) => {
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
            match books.free.pop() {
                Some(permit) => run(executor, message, permit),
                None if books.buffer.is_empty() => match slots.clone().try_acquire_owned() {
                    Ok(permit) => run(executor, message, permit),
                    Err(_) => books.buffer.push_back(Buffered {
                        message,
                        since: Instant::now(),
                    }),
                },
                None => books.buffer.push_back(Buffered {
                    message,
                    since: Instant::now(),
                }),
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

/// Runs a task in its own tokio task; the slot comes back when it ends.
fn run(executor: &Arc<Executor>, message: jetstream::Message, permit: OwnedSemaphorePermit) {
    let executor = executor.clone();
    tokio::spawn(async move {
        // Boxed: the processing future is ~4.5 KB, which tokio would otherwise copy into each
        // task's cell and again when it ends. (Its rare paths are boxed inside, or it would be
        // twice that.)
        Box::pin(executor.process(message)).await;
        drop(permit);
    });
}

/// At shutdown: hands back the buffered tasks, then whatever the open requests still deliver
/// until they end, so nothing waits out `ack_wait` in a stopped worker.
///
/// A task handed back while this worker's requests are still open would come straight back to
/// them (and be handed back again, each round a delivery of `max_deliver`): everything is
/// handed back with a delay that outlasts those requests, so another worker gets it then.
async fn hand_back_rest(
    mut books: Books,
    mut subscription: async_nats::Subscriber,
    executor: &Arc<Executor>,
    expires: Duration,
) {
    let deadline = Instant::now() + expires + Duration::from_millis(200);
    let outlast =
        |now: Instant| Some(deadline.saturating_duration_since(now) + Duration::from_millis(100));
    for buffered in books.buffer.drain(..) {
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
