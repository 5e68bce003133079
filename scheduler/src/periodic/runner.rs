//! Running one schedule: the loop that plans a step ([`super::plan`]), publishes a due fire
//! until acknowledged, and then moves the watermark in the state bucket with compare-and-set.

use std::{sync::Arc, time::Duration};

use async_nats::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use jetq_contract::{
    headers,
    publish::{Outgoing, Publisher},
    Subjects,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::plan::{plan, Action, SkipReason, Skipped};
use crate::{
    control::Controls,
    cron::floor_second,
    error::StepError,
    file::Schedule,
    metrics::SchedulerMetrics,
    state::{schedule_key, State},
};

/// The longest a runner sleeps before re-reading its state (and the wall clock).
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// What a schedule runner needs, shared by all of them.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) subjects: Subjects,
    pub(crate) publisher: Publisher,
    pub(crate) state: State,
    pub(crate) grace: Duration,
    pub(crate) metrics: SchedulerMetrics,
    /// Runtime pauses (`control.<schedule>` keys).
    pub(crate) controls: Controls,
}

/// Runs one schedule until cancelled.
pub(crate) async fn run(schedule: Arc<Schedule>, shared: Shared, cancel: CancellationToken) {
    let key = schedule_key(&schedule.name);
    let mut failures: u32 = 0;
    // A disabled schedule skips every fire by design: the first skip is a warning, the rest
    // are counted and logged at debug so a disabled every-second schedule does not flood the
    // log with warnings.
    let mut warned_disabled = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        match step(&schedule, &shared, &key, &cancel, &mut warned_disabled).await {
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
    warned_disabled: &mut bool,
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
        Action::Skip(skipped) => {
            // Every replica plans the same skip; only the one that moves the watermark logs and
            // counts it, so the metric summed over replicas counts each fire once.
            if shared.state.advance_from(key, mark, skipped.last).await? {
                report_skip(schedule, &skipped, mark, warned_disabled);
                shared
                    .metrics
                    .skipped(&schedule.name, skipped.reason, skipped.count);
            }
            Ok(true)
        }
        Action::Fire(fire) if shared.controls.is_paused(&schedule.name) => {
            // Paused at runtime: the fire is handled as skipped, once (the replica that moves
            // the watermark logs and counts it).
            if shared.state.advance_from(key, mark, fire).await? {
                tracing::info!(
                    schedule = %schedule.name,
                    fire = %fire.to_rfc3339_opts(SecondsFormat::Secs, true),
                    reason = %SkipReason::Paused,
                    "schedule is paused; fire skipped"
                );
                shared
                    .metrics
                    .skipped(&schedule.name, SkipReason::Paused, 1);
            }
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

/// Logs dropped fires: a warning naming the schedule, the fires, how many and why.
fn report_skip(
    schedule: &Schedule,
    skipped: &Skipped,
    mark: DateTime<Utc>,
    warned_disabled: &mut bool,
) {
    let first = skipped.first.to_rfc3339_opts(SecondsFormat::Secs, true);
    let last = skipped.last.to_rfc3339_opts(SecondsFormat::Secs, true);
    let count = if skipped.count_is_lower_bound() {
        format!("at least {}", skipped.count)
    } else {
        skipped.count.to_string()
    };
    if skipped.reason == SkipReason::Disabled && *warned_disabled {
        tracing::debug!(
            schedule = %schedule.name,
            first_fire = %first,
            last_fire = %last,
            count = %count,
            reason = %skipped.reason,
            "schedule is disabled; fires skipped"
        );
        return;
    }
    let message = match skipped.reason {
        SkipReason::CatchUpSkip => "fires missed by more than the misfire grace skipped (catch_up: skip)",
        SkipReason::CatchUpOnce => {
            "fires missed by more than the misfire grace skipped; the latest missed fire runs in their stead (catch_up: once)"
        }
        SkipReason::CatchUpWindow => "missed fires older than the catch-up window skipped",
        SkipReason::Paused => "schedule is paused; fires skipped",
        SkipReason::Disabled => {
            *warned_disabled = true;
            "schedule is disabled; fires skipped (further skips of this schedule are logged at debug level and counted in jetq.scheduler.fires.skipped)"
        }
    };
    tracing::warn!(
        schedule = %schedule.name,
        first_fire = %first,
        last_fire = %last,
        count = %count,
        reason = %skipped.reason,
        policy = %schedule.catch_up,
        last_handled = %mark.to_rfc3339_opts(SecondsFormat::Secs, true),
        "{message}"
    );
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

    fn t(text: &str) -> DateTime<Utc> {
        format!("2026-11-27T{text}Z").parse().unwrap()
    }

    #[test]
    fn fire_ids_are_utc_seconds() {
        assert_eq!(
            fire_id("nightly", t("03:00:00")),
            "nightly:2026-11-27T03:00:00Z"
        );
    }
}
