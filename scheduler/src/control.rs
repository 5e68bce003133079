//! Runtime control of periodic schedules (PROTOCOL.md §7, "Controlling schedules at runtime"),
//! through keys of the scheduler's state bucket `<PREFIX>_SCHEDULER`:
//!
//! - `control.<schedule>` = `{"paused":true,"by":"ops","at":"<RFC 3339>"}`: while `paused` is
//!   true, every fire of the schedule is skipped (the watermark still moves, the skip is logged
//!   and counted with reason `paused`); `jetq schedules resume` writes `paused: false`.
//! - `run.<schedule>.<request id>` = `{"by":"ops","at":"<RFC 3339>"}`: a one-shot "run now".
//!   Every replica watching the bucket publishes the schedule's task once with
//!   `Nats-Msg-Id` = `<schedule>:run:<request id>` (the duplicate window keeps one copy when
//!   replicas race) and then deletes the request.
//!
//! Each replica watches both prefixes (history first, then updates), so a pause written while a
//! replica was down is seen when it starts.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use async_nats::{
    jetstream::kv::{self, Operation},
    HeaderMap,
};
use futures::StreamExt;
use jetq_contract::{
    headers,
    publish::{Outgoing, Publisher},
    Subjects,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::file::Schedule;

/// The value of `control.<schedule>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleControl {
    /// Fires are skipped while true.
    pub paused: bool,
    /// Who wrote it (free text, e.g. a user name).
    #[serde(default)]
    pub by: String,
    /// When, RFC 3339 UTC.
    #[serde(default)]
    pub at: String,
}

/// The value of `run.<schedule>.<request id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Who asked.
    #[serde(default)]
    pub by: String,
    /// When, RFC 3339 UTC.
    #[serde(default)]
    pub at: String,
}

/// The control key of a schedule: `control.<schedule>`.
pub fn control_key(schedule: &str) -> String {
    format!("control.{schedule}")
}

/// The key of a run-now request: `run.<schedule>.<request id>`.
pub fn run_key(schedule: &str, request: &str) -> String {
    format!("run.{schedule}.{request}")
}

/// The `Nats-Msg-Id` of a run-now request's task: `<schedule>:run:<request id>`.
pub fn run_id(schedule: &str, request: &str) -> String {
    format!("{schedule}:run:{request}")
}

/// Writes `control.<schedule>` (paused or not) in the state bucket.
pub async fn set_paused(
    store: &kv::Store,
    schedule: &str,
    paused: bool,
    by: &str,
) -> Result<ScheduleControl, kv::PutError> {
    let control = ScheduleControl {
        paused,
        by: by.to_owned(),
        at: jetq_contract::time::now(),
    };
    let value = serde_json::to_vec(&control).unwrap_or_default();
    store.put(control_key(schedule), value.into()).await?;
    Ok(control)
}

/// Writes a run-now request for `schedule`; returns its request id (a ULID).
pub async fn request_run(
    store: &kv::Store,
    schedule: &str,
    by: &str,
) -> Result<String, kv::PutError> {
    let request = ulid::Ulid::new().to_string();
    let value = serde_json::to_vec(&RunRequest {
        by: by.to_owned(),
        at: jetq_contract::time::now(),
    })
    .unwrap_or_default();
    store.put(run_key(schedule, &request), value.into()).await?;
    Ok(request)
}

/// Reads `control.<schedule>`; `None` when unset or unreadable.
pub async fn read_control(store: &kv::Store, schedule: &str) -> Option<ScheduleControl> {
    let value = store.get(control_key(schedule)).await.ok()??;
    serde_json::from_slice(&value).ok()
}

/// The paused schedules as this replica last saw them, and the schedules it runs (for run-now
/// requests).
#[derive(Clone, Default)]
pub(crate) struct Controls {
    paused: Arc<RwLock<HashMap<String, ScheduleControl>>>,
    schedules: Arc<RwLock<HashMap<String, Arc<Schedule>>>>,
}

impl Controls {
    /// Whether `schedule` is paused now.
    pub(crate) fn is_paused(&self, schedule: &str) -> bool {
        self.paused
            .read()
            .map(|paused| paused.get(schedule).is_some_and(|c| c.paused))
            .unwrap_or(false)
    }

    /// The schedules run now (after a reload).
    pub(crate) fn set_schedules<'a>(&self, schedules: impl Iterator<Item = &'a Arc<Schedule>>) {
        if let Ok(mut map) = self.schedules.write() {
            *map = schedules.map(|s| (s.name.clone(), s.clone())).collect();
        }
    }

    fn schedule(&self, name: &str) -> Option<Arc<Schedule>> {
        self.schedules.read().ok()?.get(name).cloned()
    }

    /// Follows `control.>` until cancelled (restarting the watch after an error).
    pub(crate) async fn watch_controls(self, store: kv::Store, cancel: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let mut watch = match store.watch_with_history("control.>").await {
                Ok(watch) => {
                    failures = 0;
                    watch
                }
                Err(err) => {
                    report_watch_failure("schedule controls (pause/resume)", &err, failures);
                    failures = failures.saturating_add(1);
                    if pause(&cancel, failures).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let entry = tokio::select! {
                    _ = cancel.cancelled() => return,
                    entry = watch.next() => entry,
                };
                let Some(Ok(entry)) = entry else { break };
                let Some(name) = entry.key.strip_prefix("control.") else {
                    continue;
                };
                let control = match entry.operation {
                    Operation::Put => serde_json::from_slice::<ScheduleControl>(&entry.value).ok(),
                    Operation::Delete | Operation::Purge => None,
                };
                if let Ok(mut paused) = self.paused.write() {
                    match control {
                        Some(control) => {
                            tracing::info!(schedule = %name, paused = control.paused, by = %control.by, "schedule control");
                            paused.insert(name.to_owned(), control);
                        }
                        None => {
                            paused.remove(name);
                        }
                    }
                }
            }
            if pause(&cancel, 1).await {
                return;
            }
        }
    }

    /// Follows `run.>` until cancelled: publishes each request's task once and deletes it.
    pub(crate) async fn watch_runs(
        self,
        store: kv::Store,
        subjects: Subjects,
        publisher: Publisher,
        cancel: CancellationToken,
    ) {
        let mut failures = 0u32;
        loop {
            let mut watch = match store.watch_with_history("run.>").await {
                Ok(watch) => {
                    failures = 0;
                    watch
                }
                Err(err) => {
                    report_watch_failure("run-now requests", &err, failures);
                    failures = failures.saturating_add(1);
                    if pause(&cancel, failures).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let entry = tokio::select! {
                    _ = cancel.cancelled() => return,
                    entry = watch.next() => entry,
                };
                let Some(Ok(entry)) = entry else { break };
                if entry.operation != Operation::Put {
                    continue;
                }
                let Some((name, request)) = entry
                    .key
                    .strip_prefix("run.")
                    .and_then(|rest| rest.split_once('.'))
                else {
                    continue;
                };
                let Some(schedule) = self.schedule(name) else {
                    tracing::warn!(schedule = %name, %request, "run-now request for a schedule this scheduler does not run; left for another replica");
                    continue;
                };
                match run_now(&schedule, request, &subjects, &publisher).await {
                    Ok(()) => {
                        let by = serde_json::from_slice::<RunRequest>(&entry.value)
                            .map(|r| r.by)
                            .unwrap_or_default();
                        tracing::info!(schedule = %name, %request, %by, "schedule run now");
                        // Another replica may have deleted it first: fine.
                        let _ = store.delete(&entry.key).await;
                    }
                    Err(err) => {
                        tracing::warn!(schedule = %name, %request, error = %err, "run-now publish failed; the request stays for the next start");
                    }
                }
            }
            if pause(&cancel, 1).await {
                return;
            }
        }
    }
}

/// A watch that cannot start (e.g. a NATS user without the right to create a consumer on the
/// state bucket): a warning the first time, then debug, so a scheduler without the feature does
/// not flood its log.
fn report_watch_failure(what: &str, err: &dyn std::fmt::Display, failures: u32) {
    if failures == 0 {
        tracing::warn!(error = %err, "cannot watch {what} in the scheduler state bucket; retrying with backoff (up to a minute)");
    } else {
        tracing::debug!(error = %err, failures, "cannot watch {what}");
    }
}

/// Waits 1 s after a first failure, doubling up to a minute; true if cancelled meanwhile.
async fn pause(cancel: &CancellationToken, failures: u32) -> bool {
    let wait =
        Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60));
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

/// Publishes the schedule's task for run-now request `request`.
async fn run_now(
    schedule: &Schedule,
    request: &str,
    subjects: &Subjects,
    publisher: &Publisher,
) -> Result<(), jetq_contract::publish::PublishError> {
    let id = run_id(&schedule.name, request);
    let mut map = HeaderMap::new();
    map.insert(headers::MSG_ID, id.as_str());
    map.insert(headers::ENQUEUED_AT, jetq_contract::time::now().as_str());
    map.insert(headers::SCHEDULE, schedule.name.as_str());
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
        subject: subjects.task(&schedule.queue, &schedule.task),
        id,
        headers: map,
        payload: schedule.args.clone(),
    };
    publisher.publish(&message).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids() {
        assert_eq!(control_key("nightly"), "control.nightly");
        assert_eq!(run_key("nightly", "01J9"), "run.nightly.01J9");
        assert_eq!(run_id("nightly", "01J9"), "nightly:run:01J9");
        let control: ScheduleControl =
            serde_json::from_str(r#"{"paused":true,"by":"ops","at":"2026-11-27T07:00:00Z","x":1}"#)
                .unwrap();
        assert!(control.paused);
    }
}
