//! The tasks delivered to this pod and waiting for a runner, shared between the pull loop
//! (which fills it) and the runners (which take from it, see `super::runners`).
//!
//! Why shared: a runner that finishes its task takes the next one from here itself, in the same
//! tokio task, instead of giving its slot back to the pull loop and having the loop spawn a new
//! task for the next delivery. While a queue is backlogged that removes, per task, a spawn, a
//! semaphore release that wakes the pull loop (often on the other runtime thread) and a turn of
//! the loop. The pull loop still keeps its books (what it holds counts what waits here) and is
//! woken when the backlog falls to the mark where it wants to ask for more.

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use async_nats::jetstream;
use tokio::{sync::Notify, time::Instant};

/// A delivered task waiting for a slot.
pub(super) struct Buffered {
    pub(super) message: jetstream::Message,
    pub(super) since: Instant,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct Backlog {
    state: Mutex<State>,
    /// Wakes the pull loop: the backlog fell to its low-water mark.
    low: Notify,
}

#[derive(Default)]
struct State {
    tasks: VecDeque<Buffered>,
    /// When a task was last taken from here (or the first one put into an empty backlog): how
    /// the pull loop tells that the runners are busy.
    last_taken: Option<Instant>,
    /// How long each task taken by a finishing slot had waited, in order, until the pull loop
    /// reads them (its prefetch grows while they start at once). Bounded: the loop reads them
    /// every turn, and only the recent ones matter.
    waits: Vec<Duration>,
    /// The pull loop wants to hear when the backlog is down to this many tasks.
    low_water: usize,
    /// Whether `low` was already notified since the loop last set the mark.
    told: bool,
    /// How long this queue's tasks run, as a moving average (`None` until one ended).
    typical_run: Option<Duration>,
}

/// The weight of each task's run time in [`State::typical_run`]: about the last 16 count.
const RUN_WEIGHT: f64 = 1.0 / 16.0;

/// At most this many waits are kept for the pull loop between two of its turns.
const WAITS_KEPT: usize = 1024;

impl Backlog {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind, never a broken invariant
        // worth stopping the worker for: use it as it is.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn len(&self) -> usize {
        self.state().tasks.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.state().tasks.is_empty()
    }

    pub(super) fn push(&self, message: jetstream::Message) {
        let now = Instant::now();
        let mut state = self.state();
        if state.tasks.is_empty() {
            state.last_taken = Some(now);
        }
        state.tasks.push_back(Buffered {
            message,
            since: now,
        });
    }

    /// The oldest task, taken by the pull loop for a runner it starts.
    pub(super) fn pop(&self) -> Option<Buffered> {
        let mut state = self.state();
        let buffered = state.tasks.pop_front()?;
        state.last_taken = Some(Instant::now());
        Some(buffered)
    }

    /// How long nothing was taken from a backlog that has tasks (zero when it has none).
    pub(super) fn untaken_for(&self, now: Instant) -> Duration {
        let state = self.state();
        match state.last_taken {
            Some(taken) if !state.tasks.is_empty() => now.saturating_duration_since(taken),
            _ => Duration::ZERO,
        }
    }

    /// The oldest task, taken by a slot whose task just ended after running for `ran`;
    /// recorded for the prefetch, and the pull loop is woken if the backlog reached its mark.
    pub(super) fn take_next(&self, ran: Duration) -> Option<jetstream::Message> {
        let mut state = self.state();
        state.typical_run = Some(match state.typical_run {
            None => ran,
            Some(typical) => typical.mul_f64(1.0 - RUN_WEIGHT) + ran.mul_f64(RUN_WEIGHT),
        });
        let buffered = state.tasks.pop_front()?;
        let now = Instant::now();
        state.last_taken = Some(now);
        if state.waits.len() < WAITS_KEPT {
            state
                .waits
                .push(now.saturating_duration_since(buffered.since));
        }
        if !state.told && state.tasks.len() <= state.low_water {
            state.told = true;
            drop(state);
            self.low.notify_one();
        }
        Some(buffered.message)
    }

    /// Sets the mark below which the pull loop is woken, and hands it the waits recorded since
    /// its last turn.
    pub(super) fn turn(&self, low_water: usize, waits: &mut Vec<Duration>) {
        let mut state = self.state();
        state.low_water = low_water;
        state.told = false;
        waits.append(&mut state.waits);
    }

    /// How long the queue's tasks typically run (`None` before the first one ended).
    pub(super) fn typical_run(&self) -> Option<Duration> {
        self.state().typical_run
    }

    /// The tasks that waited longer than `longest` (the oldest first), taken out.
    pub(super) fn take_waited_longer(&self, longest: Duration, now: Instant) -> Vec<Buffered> {
        let mut state = self.state();
        let mut taken = Vec::new();
        while state
            .tasks
            .front()
            .is_some_and(|b| now.duration_since(b.since) > longest)
        {
            if let Some(buffered) = state.tasks.pop_front() {
                taken.push(buffered);
            }
        }
        taken
    }

    /// Everything waiting, taken out (the worker stops).
    pub(super) fn take_all(&self) -> Vec<Buffered> {
        self.state().tasks.drain(..).collect()
    }

    /// Resolves once the backlog fell to the loop's mark (or at once if it did since the mark
    /// was set).
    pub(super) async fn low(&self) {
        self.low.notified().await
    }
}
