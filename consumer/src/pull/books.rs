//! The pull loop's books: the requests open on each priority level, the slots it holds, the
//! prefetch, and where the next requests go (see the parent module for why). The tasks waiting
//! for a slot are in the shared [`super::backlog::Backlog`].

use std::{collections::VecDeque, time::Duration};

use async_nats::{jetstream::consumer::PullConsumer, Subject};
use jetq_contract::Priority;
use tokio::{sync::OwnedSemaphorePermit, time::Instant};

use super::LOWER_LEVEL_SHARE;

/// A pull request the server has not finished.
pub(super) struct Request {
    /// Messages it may still deliver.
    pub(super) remaining: usize,
    /// A request that waits for tasks (not `no_wait`), asking for more than a watch's one.
    pub(super) waits: bool,
    /// When it was sent or last delivered.
    pub(super) active_at: Instant,
    /// When the server ends it.
    pub(super) expires_at: Instant,
    /// When it is written off if the server never says it ended.
    pub(super) forgotten_at: Instant,
}

/// One priority level's durable and the requests open on it.
pub(super) struct Level {
    pub(super) priority: Priority,
    pub(super) consumer: PullConsumer,
    /// Where this level's requests deliver: `<inbox>.<index>` (the loop subscribes `<inbox>.*`,
    /// and a status reply's subject says which level's request ended).
    pub(super) reply: Subject,
    pub(super) requests: VecDeque<Request>,
    /// Whether it is believed to have tasks: it delivered one, and no request on it came back
    /// short since.
    pub(super) busy: bool,
}

impl Level {
    pub(super) fn requested(&self) -> usize {
        self.requests.iter().map(|r| r.remaining).sum()
    }

    /// A delivered message used up one unit of the oldest request (the server serves waiting
    /// requests in order).
    pub(super) fn delivered(&mut self, now: Instant) {
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
    pub(super) fn ended(&mut self, undelivered: Option<usize>) {
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
pub(super) struct Books {
    /// Highest first.
    pub(super) levels: Vec<Level>,
    /// Slots taken from the semaphore and not yet given to a task.
    pub(super) free: Vec<OwnedSemaphorePermit>,
    pub(super) prefetch_off_until: Option<Instant>,
    pub(super) prefetch: Prefetch,
    /// The size of the queue's recent deliveries, which bounds the prefetch in bytes.
    pub(super) sizes: DeliverySizes,
    /// Until when the loop pulls by priority (see the module documentation).
    pub(super) mixed_until: Option<Instant>,
    /// Tasks owed to the levels below the highest busy one (see [`LOWER_LEVEL_SHARE`]).
    pub(super) lower_credit: f64,
    /// Which lower level gets the next share.
    pub(super) lower_turn: usize,
}

/// How far ahead of free slots the loop fetches: from the concurrency, doubling each time as
/// many buffered tasks in a row found a slot at once (the queue's tasks are short and the
/// worker is waiting on the server, not on its handlers), up to `JETQ_PREFETCH`. Back to the
/// start after a task had to be handed back for waiting too long.
pub(super) struct Prefetch {
    pub(super) current: usize,
    pub(super) start: usize,
    pub(super) max: usize,
    /// Buffered tasks in a row that started within [`STARTED_AT_ONCE`].
    pub(super) streak: usize,
}

/// The size of a queue's recent deliveries (subject, headers and body), so the prefetch stays
/// within `JETQ_PREFETCH_BYTES`: a queue of 200-byte tasks may prefetch all of
/// `JETQ_PREFETCH`, one of 1 MiB tasks a handful.
///
/// The size counted is the larger of a moving average and a decaying peak: one large task
/// among small ones cuts the prefetch at once (the average alone would barely move), and the
/// cut wears off over the next few dozen deliveries if no other large one comes. A request
/// already sent still brings what it asked for: the bound applies from the next request.
#[derive(Debug, Default)]
pub(super) struct DeliverySizes {
    /// Bytes; `None` until the first delivery.
    average: Option<f64>,
    /// The largest recent delivery, decaying with every delivery.
    peak: f64,
}

impl DeliverySizes {
    /// The weight of each delivery in the moving average: about the last 32 count.
    const WEIGHT: f64 = 1.0 / 32.0;
    /// How much of the peak is left after each delivery (half of it after ~22 deliveries).
    const PEAK_DECAY: f64 = 31.0 / 32.0;

    pub(super) fn observe(&mut self, bytes: usize) {
        let bytes = bytes as f64;
        self.average = Some(match self.average {
            None => bytes,
            Some(average) => average + (bytes - average) * Self::WEIGHT,
        });
        self.peak = (self.peak * Self::PEAK_DECAY).max(bytes);
    }

    /// How many deliveries of the recent size fit in `budget` bytes: unbounded before the
    /// first delivery (the prefetch starts at the concurrency and grows only with deliveries).
    pub(super) fn tasks_within(&self, budget: usize) -> usize {
        match self.average {
            None => usize::MAX,
            Some(average) => (budget as f64 / average.max(self.peak).max(1.0)) as usize,
        }
    }
}

/// A waiting request that brought nothing for this long is idle (see [`Books::idle_waiting`]).
pub(super) const IDLE_REQUEST: Duration = Duration::from_millis(20);

/// A buffered task that started within this found a slot at once.
pub(super) const STARTED_AT_ONCE: Duration = Duration::from_millis(5);

impl Prefetch {
    pub(super) fn new(concurrency: usize, max: usize) -> Self {
        let start = concurrency.min(max);
        Prefetch {
            current: start,
            start,
            max,
            streak: 0,
        }
    }

    pub(super) fn started_after(&mut self, waited: Duration) {
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

    pub(super) fn reset(&mut self) {
        self.current = self.start;
        self.streak = 0;
    }
}

impl Books {
    pub(super) fn requested(&self) -> usize {
        self.levels.iter().map(Level::requested).sum()
    }

    /// Room held by waiting requests that brought nothing for [`IDLE_REQUEST`]: while pulling
    /// by priority it is not counted as held, or a request that `normal` got before a higher
    /// level had tasks would keep the higher level from being pulled until it expired. At most
    /// one such request per level, sent before the loop pulled by priority (it sends none
    /// since), so what it may still bring is bounded.
    pub(super) fn idle_waiting(&self, now: Instant) -> usize {
        self.levels
            .iter()
            .flat_map(|level| level.requests.iter())
            .filter(|r| r.waits && now.duration_since(r.active_at) > IDLE_REQUEST)
            .map(|r| r.remaining)
            .sum()
    }

    /// The level a delivered task came from: its subject carries the level (`~high`, `~low`)
    /// and nothing else in a task subject may contain `~`.
    pub(super) fn level_of_task(&self, subject: &str) -> usize {
        let priority = match subject.find(jetq_contract::priority::LEVEL_SEPARATOR) {
            None => Priority::Normal,
            Some(at) if subject[at + 1..].starts_with("high") => Priority::High,
            Some(_) => Priority::Low,
        };
        self.index_of(priority)
    }

    /// The level whose request a status reply ends: the last token of its reply subject.
    pub(super) fn level_of_reply(&self, subject: &str) -> usize {
        subject
            .rsplit('.')
            .next()
            .and_then(|index| index.parse::<usize>().ok())
            .filter(|index| *index < self.levels.len())
            .unwrap_or_else(|| self.index_of(Priority::Normal))
    }

    pub(super) fn index_of(&self, priority: Priority) -> usize {
        self.levels
            .iter()
            .position(|level| level.priority == priority)
            .unwrap_or(0)
    }

    pub(super) fn mixed(&self, now: Instant) -> bool {
        self.mixed_until.is_some_and(|until| until > now)
    }

    /// How long this loop's open requests may still deliver: a task handed back sooner could
    /// come straight back to them.
    pub(super) fn open_for(&self, now: Instant) -> Option<Duration> {
        self.levels
            .iter()
            .flat_map(|level| level.requests.iter())
            .map(|r| r.expires_at.saturating_duration_since(now))
            .max()
            .filter(|left| !left.is_zero())
    }

    pub(super) fn write_off_forgotten(&mut self, now: Instant) {
        for level in &mut self.levels {
            level.requests.retain(|r| r.forgotten_at > now);
        }
    }

    /// Where the next requests for `room` tasks go, as `(level, batch, no_wait)`: a request
    /// either waits for tasks (`expires`) or takes only what is there now (`no_wait`).
    pub(super) fn next_requests(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_in_bytes_follows_the_recent_delivery_size() {
        let mut sizes = DeliverySizes::default();
        assert_eq!(sizes.tasks_within(16 << 20), usize::MAX, "nothing seen yet");
        sizes.observe(200);
        assert_eq!(sizes.tasks_within(16 << 20), (16 << 20) / 200);
        // A queue whose tasks grow to 1 MiB: the bound follows at once.
        sizes.observe(1 << 20);
        assert_eq!(sizes.tasks_within(16 << 20), 16);
        for _ in 0..200 {
            sizes.observe(1 << 20);
        }
        assert_eq!(sizes.tasks_within(16 << 20), 16);
        // One small task among large ones barely moves it.
        sizes.observe(100);
        assert!(sizes.tasks_within(16 << 20) <= 17);
        assert_eq!(sizes.tasks_within(0), 0, "a zero budget prefetches nothing");
    }

    #[test]
    fn one_large_task_among_small_ones_cuts_the_prefetch_at_once_and_wears_off() {
        let mut sizes = DeliverySizes::default();
        for _ in 0..100 {
            sizes.observe(200);
        }
        sizes.observe(1 << 20);
        assert_eq!(sizes.tasks_within(16 << 20), 16, "cut at once by the peak");
        for _ in 0..300 {
            sizes.observe(200);
        }
        assert!(
            sizes.tasks_within(16 << 20) > 10_000,
            "back to small-task prefetch: {}",
            sizes.tasks_within(16 << 20)
        );
    }
}
