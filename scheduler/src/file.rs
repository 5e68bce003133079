//! The schedules file: YAML, the form a Kubernetes ConfigMap holds.
//!
//! ```yaml
//! schedules:
//!   - name: nightly-report          # [A-Za-z0-9_-]{1,64}, unique; names the fires' ids and state
//!     cron: "0 0 3 * * *"           # six fields, seconds first (or five: "0 3 * * *")
//!     timezone: Europe/Berlin       # IANA name, default UTC
//!     queue: reports
//!     task: nightly_report
//!     args: { format: csv }         # any JSON value, default {}
//!     jitter: 30s                   # optional: delay each fire by a fixed pseudo-random 0..30s
//!     enabled: true                 # default true; a disabled schedule's fires are skipped
//!     catch_up: once                # skip | once | each (default once)
//!     catch_up_window: 1h           # how far back catch-up reaches (default 1h)
//!     max_attempts: 3               # optional per-task override
//!     timeout: 10m                  # optional per-task override
//! ```
//!
//! Every problem is reported with the schedule it belongs to and the field at fault, all of them
//! at once, so a broken ConfigMap is fixed in one round.

use std::{collections::HashSet, fmt, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use jetq_contract::{
    config_file::{Entry, ListFile, Value},
    name::NameKind,
};

use crate::cron::CronSchedule;

/// The longest jitter accepted.
pub const MAX_JITTER: Duration = Duration::from_secs(3600);

/// What to do with fires that were missed: more than the misfire grace late because no
/// scheduler ran near their time. Fires at most the grace late are on time and always published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Drop missed fires; only the on-time fires after them run.
    Skip,
    /// Run the most recent missed fire once (if it is inside the catch-up window), standing for
    /// all of them.
    Once,
    /// Run every missed fire inside the catch-up window, oldest first.
    Each,
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CatchUp::Skip => "skip",
            CatchUp::Once => "once",
            CatchUp::Each => "each",
        })
    }
}

/// One validated schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Unique name: part of every fire's `Nats-Msg-Id` and of the state key.
    pub name: String,
    /// When it fires.
    pub cron: CronSchedule,
    /// Queue of the task it enqueues.
    pub queue: String,
    /// Wire name of the task it enqueues.
    pub task: String,
    /// The task's JSON arguments, serialized once.
    pub args: Bytes,
    /// Upper bound of the fixed per-fire delay (0: none).
    pub jitter: Duration,
    /// A disabled schedule publishes nothing; its fires are skipped, not missed.
    pub enabled: bool,
    /// Policy for fires missed while no scheduler ran.
    pub catch_up: CatchUp,
    /// How far back catch-up reaches.
    pub catch_up_window: Duration,
    /// Per-task override of the type's maximum attempts.
    pub max_attempts: Option<u32>,
    /// Per-task override of the type's per-attempt timeout.
    pub timeout: Option<Duration>,
}

/// A validated set of schedules, sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schedules {
    list: Vec<Arc<Schedule>>,
}

impl Schedules {
    /// No schedules.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses and validates a schedules file's text. `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Self, ScheduleFileError> {
        let entries = FILE.entries(text, origin)?;
        let mut errors = Vec::new();
        let mut list = Vec::new();
        let mut names = HashSet::new();
        for (index, entry) in entries.into_iter().enumerate() {
            if let Some(name) = entry.get("name").and_then(Value::as_str) {
                if !names.insert(name.to_owned()) {
                    errors.push(FieldError::new(
                        FILE.item,
                        name,
                        "name",
                        "is used by another schedule; names must be unique",
                    ));
                }
            }
            match parse_entry(index, entry) {
                Ok(schedule) => list.push(Arc::new(schedule)),
                Err(mut entry_errors) => errors.append(&mut entry_errors),
            }
        }
        if !errors.is_empty() {
            return Err(FILE.invalid(origin, errors));
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Schedules { list })
    }

    /// Reads, parses and validates a schedules file.
    pub fn load(path: &Path) -> Result<Self, ScheduleFileError> {
        let text = read(path)?;
        Self::from_yaml(&text, path)
    }

    /// The schedules, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Schedule>> {
        self.list.iter()
    }

    /// The schedule called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Schedule>> {
        self.list.iter().find(|s| s.name == name)
    }

    /// Number of schedules.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The warning for a schedules file at `path` that holds no schedules, or `None` if it holds
/// some.
pub(crate) fn empty_file_warning(schedules: &Schedules, path: &Path) -> Option<String> {
    schedules.is_empty().then(|| {
        format!(
            "schedules file {} holds no schedules: no periodic task will run",
            path.display()
        )
    })
}

/// One problem in a schedules file: the schedule (its name, or `#<n>` while it has none, or
/// `(file)`), the field and what is wrong.
pub use jetq_contract::config_file::FieldError;

/// A schedules file that cannot be used. The scheduler refuses to start with one, and keeps
/// its previous schedules when a reload finds one.
pub type ScheduleFileError = jetq_contract::config_file::FileError;

/// The text of the schedules file at `path`.
pub(crate) fn read(path: &Path) -> Result<String, ScheduleFileError> {
    FILE.read(path)
}

/// A schedules file: a `schedules` list, possibly empty.
const FILE: ListFile = ListFile {
    key: "schedules",
    item: "schedule",
    required: false,
};

const FIELDS: &[&str] = &[
    "name",
    "cron",
    "timezone",
    "queue",
    "task",
    "args",
    "jitter",
    "enabled",
    "catch_up",
    "catch_up_window",
    "max_attempts",
    "timeout",
];

/// Field-by-field extraction of one schedule, collecting every error.
fn parse_entry(index: usize, entry: Value) -> Result<Schedule, Vec<FieldError>> {
    let (mut ctx, unknown) = Entry::new(FILE.item, index, entry, FIELDS)?;
    // The name first: every other error is reported under it.
    if let Some(name) = ctx.name("name", NameKind::Task, true) {
        ctx.relabel(&name);
    }
    let label = ctx.label().to_owned();
    ctx.unknown_fields(unknown, FIELDS);
    let expression = ctx.string("cron", true);
    let zone = ctx.string("timezone", false);
    let queue = ctx.name("queue", NameKind::Queue, true);
    let task = ctx.name("task", NameKind::Task, true);
    let args = args(&mut ctx);
    let jitter = ctx.duration("jitter").unwrap_or_default();
    if jitter > MAX_JITTER {
        ctx.error("jitter", "must be at most 1h");
    }
    let enabled = ctx.bool("enabled").unwrap_or(true);
    let catch_up = match ctx.string("catch_up", false).as_deref() {
        None | Some("once") => CatchUp::Once,
        Some("skip") => CatchUp::Skip,
        Some("each") => CatchUp::Each,
        Some(other) => {
            ctx.error(
                "catch_up",
                format!("{other:?} is not a policy; use skip, once or each"),
            );
            CatchUp::Once
        }
    };
    let catch_up_window = ctx
        .duration("catch_up_window")
        .unwrap_or(Duration::from_secs(3600));
    let max_attempts = ctx
        .int("max_attempts", 1, u64::from(u32::MAX))
        .and_then(|n| u32::try_from(n).ok());
    let timeout = ctx.duration("timeout");
    if timeout.is_some_and(|t| t.is_zero()) {
        ctx.error("timeout", "must be greater than zero");
    }
    let cron = match expression {
        Some(expression) => {
            let zone = zone.unwrap_or_else(|| "UTC".to_owned());
            match CronSchedule::parse(&expression, &zone) {
                Ok(cron) => Some(cron),
                Err(err @ crate::cron::CronError::Zone { .. }) => {
                    ctx.error("timezone", err.to_string());
                    // Still report a bad expression in the same round.
                    if let Err(err) = CronSchedule::new(&expression, chrono_tz::UTC) {
                        ctx.error("cron", err.to_string());
                    }
                    None
                }
                Err(err) => {
                    ctx.error("cron", err.to_string());
                    None
                }
            }
        }
        None => None,
    };
    if let Some(cron) = &cron {
        if cron.next_after(chrono::Utc::now()).is_none() {
            ctx.error(
                "cron",
                format!("{:?} never fires (no matching date)", cron.expression()),
            );
        }
    }
    let errors = ctx.into_errors();
    match (cron, queue, task, errors.is_empty()) {
        (Some(cron), Some(queue), Some(task), true) => Ok(Schedule {
            name: label,
            cron,
            queue,
            task,
            args: args.unwrap_or_else(|| Bytes::from_static(b"{}")),
            jitter,
            enabled,
            catch_up,
            catch_up_window,
            max_attempts,
            timeout,
        }),
        _ => Err(errors),
    }
}

/// The `args` field: any YAML value that converts to JSON, serialized once.
fn args(ctx: &mut Entry) -> Option<Bytes> {
    let value = ctx.take("args")?;
    match serde_json::to_vec(&value) {
        Ok(json) => Some(Bytes::from(json)),
        Err(err) => {
            ctx.error("args", format!("cannot be converted to JSON: {err}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Schedules, ScheduleFileError> {
        Schedules::from_yaml(text, Path::new("schedules.yaml"))
    }

    fn errors(text: &str) -> Vec<FieldError> {
        match parse(text) {
            Err(ScheduleFileError::Invalid { errors, .. }) => errors,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn full_schedule_parses() {
        let schedules = parse(
            r#"
schedules:
  - name: nightly-report
    cron: "0 0 3 * * *"
    timezone: Europe/Berlin
    queue: reports
    task: nightly_report
    args: { format: csv, recipients: [a, b] }
    jitter: 30s
    enabled: true
    catch_up: each
    catch_up_window: 6h
    max_attempts: 3
    timeout: 10m
  - name: heartbeat
    cron: "*/5 * * * * *"
    queue: default
    task: ping
"#,
        )
        .unwrap();
        assert_eq!(schedules.len(), 2);
        let report = schedules.get("nightly-report").unwrap();
        assert_eq!(report.cron.zone(), chrono_tz::Europe::Berlin);
        assert_eq!(report.jitter, Duration::from_secs(30));
        assert_eq!(report.catch_up, CatchUp::Each);
        assert_eq!(report.catch_up_window, Duration::from_secs(6 * 3600));
        assert_eq!(report.max_attempts, Some(3));
        let args: serde_json::Value = serde_json::from_slice(&report.args).unwrap();
        assert_eq!(
            args,
            serde_json::json!({"format": "csv", "recipients": ["a", "b"]})
        );
        let ping = schedules.get("heartbeat").unwrap();
        assert_eq!(ping.cron.zone(), chrono_tz::UTC);
        assert_eq!(ping.catch_up, CatchUp::Once);
        assert!(ping.enabled);
        assert_eq!(&ping.args[..], b"{}");
        // Sorted by name.
        let names: Vec<_> = schedules.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["heartbeat", "nightly-report"]);
    }

    #[test]
    fn empty_files_hold_no_schedules() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("schedules: []").unwrap().is_empty());
        assert!(parse("schedules:").unwrap().is_empty());
    }

    #[test]
    fn an_empty_file_is_warned_about_by_name() {
        let path = Path::new("/etc/jetq/schedules.yaml");
        for text in ["", "schedules: []", "schedules:", "# all commented out\n"] {
            let warning = empty_file_warning(&Schedules::from_yaml(text, path).unwrap(), path)
                .unwrap_or_else(|| panic!("no warning for {text:?}"));
            assert!(
                warning.contains("/etc/jetq/schedules.yaml") && warning.contains("no schedules"),
                "{warning}"
            );
        }
        let one = Schedules::from_yaml(
            "schedules:\n  - {name: r, cron: \"0 0 3 * * *\", queue: q, task: t}\n",
            path,
        )
        .unwrap();
        assert_eq!(empty_file_warning(&one, path), None);
    }

    #[test]
    fn every_error_names_schedule_and_field() {
        let errors = errors(
            r#"
schedules:
  - name: report
    cron: "0 3 * *"
    timezone: Europe/Berlln
    queue: "re.ports"
    task: nightly
    jitter: soon
    catch_up: always
    max_attempts: 0
    colour: blue
  - cron: "* * * * * *"
    queue: q
    task: t
  - name: report
    cron: "* * * * * *"
    queue: q
    task: t
"#,
        );
        let found: Vec<(String, String)> = errors
            .iter()
            .map(|e| (e.item.clone(), e.field.clone()))
            .collect();
        for expected in [
            ("report", "colour"),
            ("report", "cron"),
            ("report", "timezone"),
            ("report", "queue"),
            ("report", "jitter"),
            ("report", "catch_up"),
            ("report", "max_attempts"),
            ("#2", "name"),
            ("report", "name"),
        ] {
            assert!(
                found.contains(&(expected.0.to_owned(), expected.1.to_owned())),
                "missing {expected:?} in {errors:#?}"
            );
        }
        let text = FILE.invalid(Path::new("s.yaml"), errors).to_string();
        assert!(
            text.contains("schedule report: field `timezone` unknown time zone \"Europe/Berlln\""),
            "{text}"
        );
    }

    #[test]
    fn a_bad_cron_expression_is_named() {
        let errors = errors(
            "schedules:\n  - {name: r, cron: \"0 3 * *\", queue: q, task: t}\n  - {name: s, cron: \"0 0 0 30 2 *\", queue: q, task: t}\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(
            (errors[0].item.as_str(), errors[0].field.as_str()),
            ("r", "cron")
        );
        assert!(errors[1].problem.contains("never fires"), "{errors:?}");
    }

    #[test]
    fn syntax_errors_carry_the_location() {
        let err = parse("schedules:\n  - name: [unclosed\n").unwrap_err();
        assert!(matches!(err, ScheduleFileError::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        let errors = errors("schedule:\n  - name: x\n");
        assert_eq!(errors[0].field, "schedule");
        let errors = errors_of("schedules: 3");
        assert_eq!(errors[0].field, "schedules");
        let errors = errors_of("schedules:\n  - just a string\n");
        assert_eq!(errors[0].item, "#1");
    }

    fn errors_of(text: &str) -> Vec<FieldError> {
        errors(text)
    }
}
