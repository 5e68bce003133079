//! What a schedule's runner does next, decided from its watermark, the time and the schedule
//! alone ([`plan`]): fire, skip missed fires (and why), wait, or stop. Pure, so that every
//! replica decides the same and the tests can step through outages with a frozen clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::file::{CatchUp, Schedule};

/// What a schedule's runner does next, decided from its watermark and the time alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing is due before this instant.
    Wait(DateTime<Utc>),
    /// Publish this fire, then advance the watermark to it.
    Fire(DateTime<Utc>),
    /// Advance the watermark through these fires without publishing them.
    Skip(Skipped),
    /// The schedule never fires again.
    Done,
}

/// Fires a step drops, and why: what the runner logs and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// The oldest fire dropped.
    pub(crate) first: DateTime<Utc>,
    /// The newest fire dropped: the watermark moves here.
    pub(crate) last: DateTime<Utc>,
    /// How many fires `first..=last` holds, counted up to [`SKIP_COUNT_LIMIT`].
    pub(crate) count: u64,
    pub(crate) reason: SkipReason,
}

impl Skipped {
    /// True when `count` stopped at [`SKIP_COUNT_LIMIT`] (the real number is larger).
    pub(crate) fn count_is_lower_bound(&self) -> bool {
        self.count >= SKIP_COUNT_LIMIT
    }
}

/// Counting skipped fires walks the cron expression fire by fire; a frequent schedule down for
/// days would make that walk long, so the count stops here (and the log says "at least").
pub(crate) const SKIP_COUNT_LIMIT: u64 = 10_000;

/// Why fires were dropped: the `reason` attribute of `jetq.scheduler.fires.skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// `catch_up: skip`: missed fires (more than the grace late) are dropped.
    CatchUpSkip,
    /// `catch_up: once`: the missed fires before the latest one, which runs in their stead.
    CatchUpOnce,
    /// `catch_up: once` or `each`: missed fires older than the catch-up window.
    CatchUpWindow,
    /// The schedule is disabled (`enabled: false`).
    Disabled,
    /// The schedule is paused at runtime (`jetq schedules pause`, key `control.<schedule>`).
    Paused,
}

impl SkipReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SkipReason::CatchUpSkip => "catch_up_skip",
            SkipReason::CatchUpOnce => "catch_up_once",
            SkipReason::CatchUpWindow => "catch_up_window",
            SkipReason::Disabled => "disabled",
            SkipReason::Paused => "paused",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fixed delay of one fire: a pseudo-random offset below the schedule's jitter, the same on
/// every replica (FNV-1a of `<name>:<unix second>`, stable across builds).
pub(crate) fn jitter_of(schedule: &Schedule, fire: DateTime<Utc>) -> TimeDelta {
    let millis = u64::try_from(schedule.jitter.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return TimeDelta::zero();
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let key = format!("{}:{}", schedule.name, fire.timestamp());
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    TimeDelta::milliseconds(i64::try_from(hash % millis).unwrap_or(0))
}

/// When a fire is due: its time plus its jitter.
fn due_of(schedule: &Schedule, fire: DateTime<Utc>) -> DateTime<Utc> {
    fire + jitter_of(schedule, fire)
}

/// The latest fire after `mark` that is due at `now` (there is one: `first`).
fn latest_due(schedule: &Schedule, first: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let mut latest = schedule.cron.last_at_or_before(now).unwrap_or(first);
    while latest > first && due_of(schedule, latest) > now {
        match schedule
            .cron
            .last_at_or_before(latest - TimeDelta::seconds(1))
        {
            Some(earlier) if earlier >= first => latest = earlier,
            _ => return first,
        }
    }
    latest.max(first)
}

/// How long before `now` a fire was due (zero if it is not due yet).
fn lateness(schedule: &Schedule, fire: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - due_of(schedule, fire))
        .to_std()
        .unwrap_or(Duration::ZERO)
}

/// The last fire of the run of fires from `first` (itself more than `grace` late) up to
/// `latest` that are each more than `limit` late: where a policy's drop ends.
///
/// Every fire at or before `now - limit - jitter - 1 s` is more than `limit` late whatever its
/// jitter, so the walk jumps there first and only checks the fires after it one by one: a long
/// outage of a frequent schedule is not walked fire by fire.
fn last_later_than(
    schedule: &Schedule,
    first: DateTime<Utc>,
    latest: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: Duration,
) -> DateTime<Utc> {
    let margin = TimeDelta::from_std(limit + schedule.jitter)
        .ok()
        .and_then(|margin| margin.checked_add(&TimeDelta::seconds(1)));
    let mut end = margin
        .and_then(|margin| now.checked_sub_signed(margin))
        .and_then(|horizon| schedule.cron.last_at_or_before(horizon))
        .filter(|fire| *fire >= first && *fire <= latest)
        .unwrap_or(first);
    while let Some(fire) = schedule.cron.next_after(end) {
        if fire > latest || lateness(schedule, fire, now) <= limit {
            break;
        }
        end = fire;
    }
    end
}

/// The fires in `first..=last`, counted up to [`SKIP_COUNT_LIMIT`].
fn count_fires(schedule: &Schedule, first: DateTime<Utc>, last: DateTime<Utc>) -> u64 {
    let mut count = 1;
    let mut cursor = first;
    while count < SKIP_COUNT_LIMIT {
        match schedule.cron.next_after(cursor) {
            Some(fire) if fire <= last => {
                count += 1;
                cursor = fire;
            }
            _ => break,
        }
    }
    count
}

fn skip(
    schedule: &Schedule,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    reason: SkipReason,
) -> Action {
    Action::Skip(Skipped {
        first,
        last,
        count: count_fires(schedule, first, last),
        reason,
    })
}

/// Decides the next action of a schedule whose last handled fire is `mark`. Fires are handled
/// oldest first, one action at a time.
///
/// - The next fire is not yet due → wait for it.
/// - A disabled schedule skips every due fire.
/// - The next fire is at most `grace` late → publish it. Every fire within the grace is on
///   time and published, each once with its own fire time, however many came due together
///   (a replica frozen for a few seconds, a slow step, a starved CPU).
/// - Otherwise it was *missed* (no scheduler ran within the grace of its time), together with
///   the fires after it that are also more than `grace` late, and the schedule's catch-up
///   policy decides about those missed fires only:
///   `skip` drops them; `once` publishes the latest of them if it is inside the catch-up
///   window (dropping the others); `each` publishes every one inside the window, oldest first.
///   Missed fires older than the window are dropped. The on-time fires after them are then
///   published as above.
///
/// Every drop is an [`Action::Skip`] naming its fires and [`SkipReason`].
pub(crate) fn plan(
    schedule: &Schedule,
    mark: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Action {
    let Some(next) = schedule.cron.next_after(mark) else {
        return Action::Done;
    };
    if due_of(schedule, next) > now {
        return Action::Wait(due_of(schedule, next));
    }
    let latest = latest_due(schedule, next, now);
    if !schedule.enabled {
        return skip(schedule, next, latest, SkipReason::Disabled);
    }
    let late = |fire: DateTime<Utc>| lateness(schedule, fire, now);
    if late(next) <= grace {
        return Action::Fire(next);
    }
    let window = schedule.catch_up_window.max(grace);
    match schedule.catch_up {
        CatchUp::Skip => {
            let missed_end = last_later_than(schedule, next, latest, now, grace);
            skip(schedule, next, missed_end, SkipReason::CatchUpSkip)
        }
        CatchUp::Once => {
            let missed_end = last_later_than(schedule, next, latest, now, grace);
            if late(missed_end) > window {
                skip(schedule, next, missed_end, SkipReason::CatchUpWindow)
            } else if missed_end == next {
                Action::Fire(next)
            } else {
                // Drop the missed fires before the latest; the next step publishes it.
                let before = schedule
                    .cron
                    .last_at_or_before(missed_end - TimeDelta::seconds(1))
                    .filter(|fire| *fire >= next)
                    .unwrap_or(next);
                skip(schedule, next, before, SkipReason::CatchUpOnce)
            }
        }
        CatchUp::Each if late(next) <= window => Action::Fire(next),
        CatchUp::Each => {
            // Drop up to just before the first fire inside the window (all of them are missed:
            // the window is at least the grace).
            let outside_end = last_later_than(schedule, next, latest, now, window);
            skip(schedule, next, outside_end, SkipReason::CatchUpWindow)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::CronSchedule;
    use bytes::Bytes;

    fn schedule(cron: &str, catch_up: CatchUp, window: u64) -> Schedule {
        Schedule {
            name: "s".into(),
            cron: CronSchedule::parse(cron, "UTC").unwrap(),
            queue: "q".into(),
            task: "t".into(),
            args: Bytes::from_static(b"{}"),
            jitter: Duration::ZERO,
            enabled: true,
            catch_up,
            catch_up_window: Duration::from_secs(window),
            max_attempts: None,
            timeout: None,
        }
    }

    fn t(text: &str) -> DateTime<Utc> {
        format!("2026-11-27T{text}Z").parse().unwrap()
    }

    const GRACE: Duration = Duration::from_secs(10);

    /// What the runner would do, step by step, at a frozen `now`, until it has to wait.
    #[derive(Debug, PartialEq)]
    enum Step {
        Fire(DateTime<Utc>),
        Skip(DateTime<Utc>, DateTime<Utc>, u64, SkipReason),
    }

    fn steps(s: &Schedule, mut mark: DateTime<Utc>, now: DateTime<Utc>) -> Vec<Step> {
        let mut out = Vec::new();
        for _ in 0..100 {
            match plan(s, mark, now, GRACE) {
                Action::Fire(fire) => {
                    assert!(fire > mark, "fires move forward");
                    out.push(Step::Fire(fire));
                    mark = fire;
                }
                Action::Skip(skipped) => {
                    assert!(skipped.first > mark && skipped.last >= skipped.first);
                    out.push(Step::Skip(
                        skipped.first,
                        skipped.last,
                        skipped.count,
                        skipped.reason,
                    ));
                    mark = skipped.last;
                }
                Action::Wait(until) => {
                    assert!(until > now);
                    return out;
                }
                Action::Done => return out,
            }
        }
        panic!("no wait after 100 steps: {out:?}");
    }

    fn fires(from: DateTime<Utc>, to: DateTime<Utc>, every: i64) -> Vec<Step> {
        let mut out = Vec::new();
        let mut fire = from;
        while fire <= to {
            out.push(Step::Fire(fire));
            fire += TimeDelta::seconds(every);
        }
        out
    }

    #[test]
    fn waits_then_fires_on_time() {
        let s = schedule("0 * * * * *", CatchUp::Skip, 3600);
        assert_eq!(
            plan(&s, t("07:00:00"), t("07:00:30"), GRACE),
            Action::Wait(t("07:01:00"))
        );
        assert_eq!(
            plan(&s, t("07:00:00"), t("07:01:00.2"), GRACE),
            Action::Fire(t("07:01:00"))
        );
        assert_eq!(
            plan(&s, t("07:00:00"), t("07:01:09"), GRACE),
            Action::Fire(t("07:01:00"))
        );
        // Exactly the grace late is still on time.
        assert_eq!(
            plan(&s, t("07:00:00"), t("07:01:10"), GRACE),
            Action::Fire(t("07:01:00"))
        );
    }

    #[test]
    fn a_stall_within_the_grace_publishes_every_fire_oldest_first_whatever_the_policy() {
        // A replica frozen from 07:00:00.5 to 07:00:03.5 finds three fires due, the oldest
        // 3.5 s late: all on time. (The old plan published only 07:00:03 and dropped two.)
        for policy in [CatchUp::Skip, CatchUp::Once, CatchUp::Each] {
            let s = schedule("* * * * * *", policy, 3600);
            let (mark, now) = (t("07:00:00"), t("07:00:03.5"));
            assert_eq!(
                plan(&s, mark, now, GRACE),
                Action::Fire(t("07:00:01")),
                "{policy}"
            );
            assert_eq!(
                plan(&s, t("07:00:01"), now, GRACE),
                Action::Fire(t("07:00:02"))
            );
            assert_eq!(
                plan(&s, t("07:00:02"), now, GRACE),
                Action::Fire(t("07:00:03"))
            );
            assert_eq!(
                plan(&s, t("07:00:03"), now, GRACE),
                Action::Wait(t("07:00:04"))
            );
            // A stall as long as the grace loses nothing either.
            assert_eq!(
                steps(&s, mark, t("07:00:11")),
                fires(t("07:00:01"), t("07:00:11"), 1),
                "{policy}"
            );
        }
    }

    /// Every second, 15.5 s after the watermark: 07:00:01..05 are more than the 10 s grace late
    /// (missed), 07:00:06..15 within it (on time).
    const MIX_MARK: &str = "07:00:00";
    const MIX_NOW: &str = "07:00:15.5";

    fn mix(policy: CatchUp, window: u64) -> Vec<Step> {
        steps(
            &schedule("* * * * * *", policy, window),
            t(MIX_MARK),
            t(MIX_NOW),
        )
    }

    fn then_on_time(mut head: Vec<Step>) -> Vec<Step> {
        head.extend(fires(t("07:00:06"), t("07:00:15"), 1));
        head
    }

    #[test]
    fn skip_drops_only_the_fires_beyond_the_grace() {
        assert_eq!(
            mix(CatchUp::Skip, 3600),
            then_on_time(vec![Step::Skip(
                t("07:00:01"),
                t("07:00:05"),
                5,
                SkipReason::CatchUpSkip
            )])
        );
        let s = schedule("0 * * * * *", CatchUp::Skip, 3600);
        // One fire, too late.
        assert_eq!(
            steps(&s, t("07:00:00"), t("07:01:30")),
            vec![Step::Skip(
                t("07:01:00"),
                t("07:01:00"),
                1,
                SkipReason::CatchUpSkip
            )]
        );
        // Several missed; the latest is still on time and runs.
        assert_eq!(
            steps(&s, t("07:00:00"), t("07:05:03")),
            vec![
                Step::Skip(t("07:01:00"), t("07:04:00"), 4, SkipReason::CatchUpSkip),
                Step::Fire(t("07:05:00")),
            ]
        );
    }

    #[test]
    fn once_runs_the_latest_fire_beyond_the_grace_then_every_fire_within_it() {
        let mut expected = vec![
            Step::Skip(t("07:00:01"), t("07:00:04"), 4, SkipReason::CatchUpOnce),
            Step::Fire(t("07:00:05")),
        ];
        assert_eq!(mix(CatchUp::Once, 3600), then_on_time(expected));
        // A window as short as the grace: the latest missed fire is outside it too.
        expected = vec![Step::Skip(
            t("07:00:01"),
            t("07:00:05"),
            5,
            SkipReason::CatchUpWindow,
        )];
        assert_eq!(mix(CatchUp::Once, 0), then_on_time(expected));

        let s = schedule("0 * * * * *", CatchUp::Once, 600);
        assert_eq!(
            steps(&s, t("07:00:00"), t("07:05:30")),
            vec![
                Step::Skip(t("07:01:00"), t("07:04:00"), 4, SkipReason::CatchUpOnce),
                Step::Fire(t("07:05:00")),
            ]
        );
        // Everything missed is older than the window.
        let s = schedule("0 0 * * * *", CatchUp::Once, 600);
        assert_eq!(
            steps(&s, t("03:00:00"), t("07:30:00")),
            vec![Step::Skip(
                t("04:00:00"),
                t("07:00:00"),
                4,
                SkipReason::CatchUpWindow
            )]
        );
    }

    #[test]
    fn each_runs_every_missed_fire_inside_the_window_oldest_first() {
        assert_eq!(
            mix(CatchUp::Each, 3600),
            fires(t("07:00:01"), t("07:00:15"), 1)
        );
        // A 12 s window: 07:00:01..03 are older (12.5 s and more late) and dropped.
        assert_eq!(
            mix(CatchUp::Each, 12),
            then_on_time(
                [Step::Skip(
                    t("07:00:01"),
                    t("07:00:03"),
                    3,
                    SkipReason::CatchUpWindow
                )]
                .into_iter()
                .chain(fires(t("07:00:04"), t("07:00:05"), 1))
                .collect()
            )
        );
        // 10 missed fires, window 3 minutes: skip to 07:07, then fire 07:08, 07:09, 07:10.
        let s = schedule("0 * * * * *", CatchUp::Each, 180);
        assert_eq!(
            steps(&s, t("07:00:00"), t("07:10:30")),
            vec![
                Step::Skip(t("07:01:00"), t("07:07:00"), 7, SkipReason::CatchUpWindow),
                Step::Fire(t("07:08:00")),
                Step::Fire(t("07:09:00")),
                Step::Fire(t("07:10:00")),
            ]
        );
    }

    #[test]
    fn a_long_outage_is_skipped_in_one_step_with_a_bounded_count() {
        // Every second, down for two days: one skip, then the on-time fires.
        for policy in [CatchUp::Skip, CatchUp::Each] {
            let s = schedule("* * * * * *", policy, 60);
            let now = t("07:00:00.5") + TimeDelta::days(2);
            let Action::Skip(skipped) = plan(&s, t("07:00:00"), now, GRACE) else {
                panic!("{policy}: expected a skip");
            };
            assert_eq!(skipped.first, t("07:00:01"));
            assert_eq!(skipped.count, SKIP_COUNT_LIMIT);
            assert!(skipped.count_is_lower_bound());
            let limit = if policy == CatchUp::Each { 60 } else { 10 };
            assert_eq!(
                skipped.last,
                now - TimeDelta::seconds(limit) - TimeDelta::milliseconds(500),
                "{policy}"
            );
        }
    }

    #[test]
    fn jitter_does_not_reorder_or_lose_fires_within_the_grace() {
        // Fires delayed by up to 5 s each, a stall of 4 s: every fire is still published once,
        // in fire order, and none is called missed.
        let mut s = schedule("* * * * * *", CatchUp::Skip, 3600);
        s.jitter = Duration::from_secs(5);
        let mut mark = t("07:00:00");
        let mut published = Vec::new();
        let mut now = t("07:00:00");
        while now < t("07:01:00") {
            // The runner looks every 4 s (a replica stalled again and again).
            now += TimeDelta::seconds(4);
            for step in steps(&s, mark, now) {
                match step {
                    Step::Fire(fire) => {
                        published.push(fire);
                        mark = fire;
                    }
                    skip => panic!("nothing is missed: {skip:?}"),
                }
            }
        }
        let expected: Vec<_> = (1..published.len() as i64 + 1)
            .map(|n| t("07:00:00") + TimeDelta::seconds(n))
            .collect();
        assert_eq!(published, expected);
        assert!(published.len() > 50, "{}", published.len());
    }

    #[test]
    fn disabled_schedules_skip() {
        let mut s = schedule("* * * * * *", CatchUp::Each, 3600);
        s.enabled = false;
        assert_eq!(
            steps(&s, t("07:00:00"), t("07:00:05")),
            vec![Step::Skip(
                t("07:00:01"),
                t("07:00:05"),
                5,
                SkipReason::Disabled
            )]
        );
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let mut s = schedule("0 * * * * *", CatchUp::Skip, 3600);
        s.jitter = Duration::from_secs(20);
        let a = jitter_of(&s, t("07:00:00"));
        assert_eq!(a, jitter_of(&s, t("07:00:00")));
        let spread: std::collections::HashSet<_> = (0..30)
            .map(|m| jitter_of(&s, t("07:00:00") + TimeDelta::minutes(m)))
            .collect();
        assert!(spread.len() > 20, "{spread:?}");
        assert!(spread
            .iter()
            .all(|j| *j >= TimeDelta::zero() && *j < TimeDelta::seconds(20)));
        // The fire is due at its time plus its jitter.
        assert_eq!(
            plan(&s, t("06:59:00"), t("07:00:00"), GRACE),
            Action::Wait(t("07:00:00") + a)
        );
    }
}
