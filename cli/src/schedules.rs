//! Periodic schedules: the scheduler's schedules file (parsed and validated by `jetq-scheduler`
//! itself, so the CLI shows exactly what the scheduler runs) with each schedule's next fires,
//! and the last handled fire from the scheduler's state bucket when it is readable.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
pub use jetq_scheduler::control::ScheduleControl;
use jetq_scheduler::{Schedule, Schedules};
use serde::Serialize;

use crate::{admin::Admin, error::AdminError};

/// The variable the scheduler reads its schedules file from.
pub const SCHEDULES_FILE_ENV: &str = "JETQ_SCHEDULES_FILE";

/// One schedule with its next fire times.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleView {
    /// Schedule name.
    pub name: String,
    /// Cron expression (five fields as in a crontab, or six with seconds first).
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// Queue of the task it enqueues.
    pub queue: String,
    /// Task wire name.
    pub task: String,
    /// The task's arguments.
    pub args: serde_json::Value,
    /// Disabled schedules fire nothing.
    pub enabled: bool,
    /// Upper bound of the per-fire delay, e.g. `30s` (`0s`: none).
    pub jitter: String,
    /// Catch-up policy (`skip`, `once`, `each`).
    pub catch_up: String,
    /// The next fire times, RFC 3339 UTC, before jitter; empty when disabled.
    pub next_fires: Vec<String>,
    /// The scheduler's watermark from its state bucket: every fire up to this time has been
    /// handled (published, or skipped by the catch-up policy); `null` if unknown.
    pub handled_until: Option<String>,
    /// Paused at runtime (`jetq schedules pause`): fires are skipped until it is resumed.
    pub paused: bool,
    /// Who paused or resumed it last, and when (`null`: never).
    pub control: Option<ScheduleControl>,
}

/// The schedules file to read: `explicit`, else `$JETQ_SCHEDULES_FILE`.
pub fn schedules_path(explicit: Option<&Path>) -> Result<PathBuf, AdminError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    match std::env::var_os(SCHEDULES_FILE_ENV) {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(AdminError::Invalid(format!(
            "no schedules file: pass --file or set {SCHEDULES_FILE_ENV} (the file the scheduler \
             reads, e.g. its mounted ConfigMap)"
        ))),
    }
}

/// Reads the schedules file and computes the next `count` fires of each schedule after `now`.
pub fn load_schedules(
    path: &Path,
    count: usize,
    now: DateTime<Utc>,
) -> Result<Vec<ScheduleView>, AdminError> {
    let schedules = Schedules::load(path)?;
    Ok(schedules
        .iter()
        .map(|schedule| view(schedule, count, now))
        .collect())
}

fn view(schedule: &Schedule, count: usize, now: DateTime<Utc>) -> ScheduleView {
    let mut next_fires = Vec::new();
    if schedule.enabled {
        let mut cursor = now;
        while next_fires.len() < count {
            let Some(next) = schedule.cron.next_after(cursor) else {
                break;
            };
            next_fires.push(next.to_rfc3339_opts(SecondsFormat::Secs, true));
            cursor = next;
        }
    }
    ScheduleView {
        name: schedule.name.clone(),
        cron: schedule.cron.expression().to_owned(),
        timezone: schedule.cron.zone().name().to_owned(),
        queue: schedule.queue.clone(),
        task: schedule.task.clone(),
        args: serde_json::from_slice(&schedule.args).unwrap_or(serde_json::Value::Null),
        enabled: schedule.enabled,
        jitter: humantime::format_duration(schedule.jitter).to_string(),
        catch_up: schedule.catch_up.to_string(),
        next_fires,
        handled_until: None,
        paused: false,
        control: None,
    }
}

impl Admin {
    /// [`load_schedules`], plus each schedule's watermark from the scheduler's state bucket
    /// (left empty when the bucket does not exist or cannot be read).
    pub async fn schedules(
        &self,
        path: &Path,
        count: usize,
    ) -> Result<Vec<ScheduleView>, AdminError> {
        let mut views = load_schedules(path, count, Utc::now())?;
        if let Ok(bucket) = self
            .jetstream()
            .get_key_value(self.subjects().scheduler_bucket())
            .await
        {
            for view in &mut views {
                // The scheduler's state key of a schedule (see jetq-scheduler's state module).
                let key = format!("schedule.{}", view.name);
                if let Ok(Some(value)) = bucket.get(&key).await {
                    view.handled_until = std::str::from_utf8(&value).ok().map(str::to_owned);
                }
                view.control = jetq_scheduler::control::read_control(&bucket, &view.name).await;
                view.paused = view.control.as_ref().is_some_and(|c| c.paused);
            }
        }
        Ok(views)
    }

    /// The scheduler's state bucket, or an error saying no scheduler provisioned it.
    async fn scheduler_bucket(&self) -> Result<async_nats::jetstream::kv::Store, AdminError> {
        let bucket = self.subjects().scheduler_bucket();
        self.optional_bucket(&bucket).await?.ok_or_else(|| {
            AdminError::not_found(
                format!("scheduler state bucket {bucket}"),
                Some("start jetq-scheduler (or run jetq-provision) first".into()),
            )
        })
    }

    /// Pauses (`paused = true`) or resumes schedule `name` at runtime for every scheduler
    /// replica: writes `control.<name>` in the state bucket (PROTOCOL §7). `by` says who.
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        by: &str,
    ) -> Result<ScheduleControl, AdminError> {
        jetq_contract::name::validate(jetq_contract::NameKind::Task, name)?;
        let store = self.scheduler_bucket().await?;
        jetq_scheduler::control::set_paused(&store, name, paused, by)
            .await
            .map_err(|err| AdminError::nats(format!("cannot write control.{name}"), err))
    }

    /// Asks the schedulers to run schedule `name` once now: writes `run.<name>.<request id>`;
    /// returns the request id. The task's id is `<name>:run:<request id>`.
    pub async fn run_schedule(&self, name: &str, by: &str) -> Result<String, AdminError> {
        jetq_contract::name::validate(jetq_contract::NameKind::Task, name)?;
        let store = self.scheduler_bucket().await?;
        jetq_scheduler::control::request_run(&store, name, by)
            .await
            .map_err(|err| AdminError::nats(format!("cannot write a run request for {name}"), err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_fires_follow_the_cron_expression() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.yaml");
        std::fs::write(
            &path,
            "schedules:\n  - name: nightly\n    cron: \"0 0 3 * * *\"\n    queue: reports\n    \
             task: nightly_report\n  - name: off\n    cron: \"0 * * * * *\"\n    queue: q\n    \
             task: t\n    enabled: false\n",
        )
        .unwrap();
        let now: DateTime<Utc> = "2026-03-28T12:00:00Z".parse().unwrap();
        let views = load_schedules(&path, 2, now).unwrap();
        assert_eq!(views.len(), 2);
        let nightly = views.iter().find(|v| v.name == "nightly").unwrap();
        assert_eq!(
            nightly.next_fires,
            vec!["2026-03-29T03:00:00Z", "2026-03-30T03:00:00Z"]
        );
        assert_eq!(nightly.timezone, "UTC");
        let off = views.iter().find(|v| v.name == "off").unwrap();
        assert!(off.next_fires.is_empty());
    }

    #[test]
    fn a_missing_file_is_not_found() {
        let err =
            load_schedules(Path::new("/nonexistent/schedules.yaml"), 1, Utc::now()).unwrap_err();
        assert_eq!(err.exit_code(), 3);
    }
}
