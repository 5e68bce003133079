//! Periodic schedules: every replica computes the same fires and publishes each with the id
//! `<schedule>:<fire time>`, so the task stream's duplicate window drops the copies. The last
//! handled fire of each schedule is a watermark in the state bucket, advanced with
//! compare-and-set after the publish is acknowledged; it decides what was missed while no
//! scheduler ran.

use std::{sync::Arc, time::Duration};

use async_nats::HeaderMap;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use jetq_contract::{headers, Subjects};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    cron::floor_second,
    error::StepError,
    file::{CatchUp, Schedule},
    publish::{Outgoing, Publisher},
    state::{schedule_key, State},
};

/// The longest a runner sleeps before re-reading its state (and the wall clock).
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// What a schedule's runner does next, decided from its watermark and the time alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing is due before this instant.
    Wait(DateTime<Utc>),
    /// Publish this fire, then advance the watermark to it.
    Fire(DateTime<Utc>),
    /// Advance the watermark to this fire without publishing (missed fires dropped).
    Skip(DateTime<Utc>),
    /// The schedule never fires again.
    Done,
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

/// Decides the next action of a schedule whose last handled fire is `mark`.
///
/// - The next fire is not yet due → wait for it.
/// - Exactly one fire is due and it is at most `grace` late → publish it (on time).
/// - Otherwise fires were missed, and the schedule's catch-up policy decides:
///   `skip` drops them (publishing only the latest if it is still within `grace`), `once`
///   publishes the latest if it is inside the catch-up window, `each` publishes every one inside
///   the window, oldest first (one action at a time).
/// - A disabled schedule skips every due fire.
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
        return Action::Skip(latest);
    }
    let lateness = |fire: DateTime<Utc>| {
        (now - due_of(schedule, fire))
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    if latest == next && lateness(next) <= grace {
        return Action::Fire(next);
    }
    let window = schedule.catch_up_window.max(grace);
    match schedule.catch_up {
        CatchUp::Skip if lateness(latest) <= grace => Action::Fire(latest),
        CatchUp::Skip => Action::Skip(latest),
        CatchUp::Once if lateness(latest) <= window => Action::Fire(latest),
        CatchUp::Once => Action::Skip(latest),
        CatchUp::Each => {
            if lateness(next) <= window {
                return Action::Fire(next);
            }
            // Skip to just before the first fire inside the window; jump close to it first so
            // a long outage of a frequent schedule is not walked fire by fire.
            let horizon = now - TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
            let mut cursor = schedule
                .cron
                .last_at_or_before(horizon)
                .filter(|fire| *fire >= next && lateness(*fire) > window)
                .unwrap_or(next);
            while let Some(fire) = schedule.cron.next_after(cursor) {
                if fire > latest || lateness(fire) <= window {
                    break;
                }
                cursor = fire;
            }
            Action::Skip(cursor)
        }
    }
}

/// What a schedule runner needs, shared by all of them.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) subjects: Subjects,
    pub(crate) publisher: Publisher,
    pub(crate) state: State,
    pub(crate) grace: Duration,
}

/// Runs one schedule until cancelled.
pub(crate) async fn run(schedule: Arc<Schedule>, shared: Shared, cancel: CancellationToken) {
    let key = schedule_key(&schedule.name);
    let mut failures: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        match step(&schedule, &shared, &key, &cancel).await {
            Ok(true) => failures = 0,
            Ok(false) => return,
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::warn!(schedule = %schedule.name, error = %err, "schedule step failed; retrying");
                let backoff = Duration::from_millis(100u64 << failures.min(6));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff.min(Duration::from_secs(5))) => {}
                }
            }
        }
    }
}

/// One action; `Ok(false)` when the runner should stop.
async fn step(
    schedule: &Schedule,
    shared: &Shared,
    key: &str,
    cancel: &CancellationToken,
) -> Result<bool, StepError> {
    let mark = shared
        .state
        .load_or_init(key, floor_second(Utc::now()))
        .await?;
    let now = Utc::now();
    match plan(schedule, mark, now, shared.grace) {
        Action::Wait(until) => {
            let pause = (until - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = cancel.cancelled() => Ok(false),
                _ = tokio::time::sleep(pause) => Ok(true),
            }
        }
        Action::Done => {
            tracing::info!(schedule = %schedule.name, "schedule has no future fires");
            cancel.cancelled().await;
            Ok(false)
        }
        Action::Skip(to) => {
            if schedule.enabled {
                tracing::info!(
                    schedule = %schedule.name,
                    policy = %schedule.catch_up,
                    after = %mark.to_rfc3339(),
                    through = %to.to_rfc3339(),
                    "skipping missed fires"
                );
            }
            shared.state.advance(key, to).await?;
            Ok(true)
        }
        Action::Fire(fire) => {
            let fire_time = fire.to_rfc3339_opts(SecondsFormat::Secs, true);
            let span = tracing::info_span!(
                parent: None,
                "schedule",
                otel.name = %format!("schedule {}", schedule.name),
                otel.kind = "producer",
                jetq.schedule = %schedule.name,
                jetq.fire_time = %fire_time,
            );
            publish_fire(schedule, shared, fire, &fire_time, now)
                .instrument(span)
                .await?;
            shared.state.advance(key, fire).await?;
            Ok(true)
        }
    }
}

/// The `Nats-Msg-Id` of a fire: `<schedule>:<fire time, RFC 3339 UTC, seconds>`.
pub fn fire_id(schedule: &str, fire: DateTime<Utc>) -> String {
    format!(
        "{schedule}:{}",
        fire.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

async fn publish_fire(
    schedule: &Schedule,
    shared: &Shared,
    fire: DateTime<Utc>,
    fire_time: &str,
    now: DateTime<Utc>,
) -> Result<(), StepError> {
    let id = fire_id(&schedule.name, fire);
    let mut map = HeaderMap::new();
    map.insert(headers::MSG_ID, id.as_str());
    map.insert(headers::ENQUEUED_AT, jetq_contract::time::now().as_str());
    map.insert(headers::SCHEDULE, schedule.name.as_str());
    map.insert(headers::FIRE_TIME, fire_time);
    if let Some(attempts) = schedule.max_attempts {
        map.insert(headers::MAX_ATTEMPTS, attempts.to_string().as_str());
    }
    if let Some(timeout) = schedule.timeout {
        map.insert(
            headers::TIMEOUT_MS,
            timeout.as_millis().max(1).to_string().as_str(),
        );
    }
    let message = Outgoing {
        subject: shared.subjects.task(&schedule.queue, &schedule.task),
        id,
        headers: map,
        payload: schedule.args.clone(),
    };
    let ack = shared.publisher.publish(&message).await?;
    let late = (now - fire).to_std().unwrap_or(Duration::ZERO);
    tracing::debug!(
        schedule = %schedule.name,
        fire = %fire_time,
        sequence = ack.sequence,
        duplicate = ack.duplicate,
        late_ms = u64::try_from(late.as_millis()).unwrap_or(u64::MAX),
        "fired"
    );
    Ok(())
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
    }

    #[test]
    fn skip_drops_missed_fires() {
        let s = schedule("0 * * * * *", CatchUp::Skip, 3600);
        // One fire, too late.
        assert_eq!(
            plan(&s, t("07:00:00"), t("07:01:30"), GRACE),
            Action::Skip(t("07:01:00"))
        );
        // Several missed; the latest still on time runs.
        assert_eq!(
            plan(&s, t("07:00:00"), t("07:05:03"), GRACE),
            Action::Fire(t("07:05:00"))
        );
        assert_eq!(
            plan(&s, t("07:00:00"), t("07:05:30"), GRACE),
            Action::Skip(t("07:05:00"))
        );
    }

    #[test]
    fn once_runs_the_latest_inside_the_window() {
        let s = schedule("0 * * * * *", CatchUp::Once, 600);
        assert_eq!(
            plan(&s, t("07:00:00"), t("07:05:30"), GRACE),
            Action::Fire(t("07:05:00"))
        );
        // Everything missed is older than the window.
        let s = schedule("0 0 * * * *", CatchUp::Once, 600);
        assert_eq!(
            plan(&s, t("03:00:00"), t("07:30:00"), GRACE),
            Action::Skip(t("07:00:00"))
        );
    }

    #[test]
    fn each_runs_every_fire_inside_the_window_oldest_first() {
        let s = schedule("0 * * * * *", CatchUp::Each, 180);
        // 10 missed fires, window 3 minutes: skip to 07:06, then fire 07:07, 07:08, ...
        let now = t("07:10:30");
        let mut mark = t("07:00:00");
        let mut fired = Vec::new();
        for _ in 0..20 {
            match plan(&s, mark, now, GRACE) {
                Action::Fire(f) => {
                    fired.push(f);
                    mark = f;
                }
                Action::Skip(to) => {
                    assert!(fired.is_empty(), "skips come first");
                    mark = to;
                }
                Action::Wait(_) => break,
                Action::Done => unreachable!(),
            }
        }
        assert_eq!(fired, vec![t("07:08:00"), t("07:09:00"), t("07:10:00")]);
    }

    #[test]
    fn disabled_schedules_skip() {
        let mut s = schedule("* * * * * *", CatchUp::Each, 3600);
        s.enabled = false;
        assert_eq!(
            plan(&s, t("07:00:00"), t("07:00:05"), GRACE),
            Action::Skip(t("07:00:05"))
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

    #[test]
    fn fire_ids_are_utc_seconds() {
        assert_eq!(
            fire_id("nightly", t("03:00:00")),
            "nightly:2026-11-27T03:00:00Z"
        );
    }
}
