//! The schedules file: YAML, the form a Kubernetes ConfigMap holds.
//!
//! ```yaml
//! schedules:
//!   - name: nightly-report          # [A-Za-z0-9_-]{1,64}, unique; names the fires' ids and state
//!     cron: "0 0 3 * * *"           # six fields, seconds first
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

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use jetq_contract::name::{self, NameKind};
use serde_norway::Value;

use crate::cron::CronSchedule;

/// The longest jitter accepted.
pub const MAX_JITTER: Duration = Duration::from_secs(3600);

/// What to do with fires that were missed because no scheduler ran at their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Drop missed fires; only the next regular fire runs.
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
        let document: Value =
            serde_norway::from_str(text).map_err(|err| ScheduleFileError::Syntax {
                path: origin.to_owned(),
                message: err.to_string(),
            })?;
        let entries = match document {
            Value::Null => return Ok(Self::empty()),
            Value::Mapping(mut top) => {
                let mut errors = Vec::new();
                for key in top.keys() {
                    if key.as_str() != Some("schedules") {
                        errors.push(FieldError::new(
                            "(file)",
                            &describe_key(key),
                            "unknown top-level key; the file holds one key, `schedules`",
                        ));
                    }
                }
                if !errors.is_empty() {
                    return Err(ScheduleFileError::Invalid {
                        path: origin.to_owned(),
                        errors,
                    });
                }
                match top.remove("schedules") {
                    None | Some(Value::Null) => return Ok(Self::empty()),
                    Some(Value::Sequence(entries)) => entries,
                    Some(_) => {
                        return Err(ScheduleFileError::Invalid {
                            path: origin.to_owned(),
                            errors: vec![FieldError::new(
                                "(file)",
                                "schedules",
                                "must be a list of schedules",
                            )],
                        })
                    }
                }
            }
            _ => {
                return Err(ScheduleFileError::Invalid {
                    path: origin.to_owned(),
                    errors: vec![FieldError::new(
                        "(file)",
                        "schedules",
                        "the file must be a mapping with a `schedules` list",
                    )],
                })
            }
        };
        let mut errors = Vec::new();
        let mut list = Vec::new();
        let mut names = HashSet::new();
        for (index, entry) in entries.into_iter().enumerate() {
            if let Some(name) = entry.get("name").and_then(Value::as_str) {
                if !names.insert(name.to_owned()) {
                    errors.push(FieldError::new(
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
            return Err(ScheduleFileError::Invalid {
                path: origin.to_owned(),
                errors,
            });
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Schedules { list })
    }

    /// Reads, parses and validates a schedules file.
    pub fn load(path: &Path) -> Result<Self, ScheduleFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScheduleFileError::Read {
            path: path.to_owned(),
            source: Arc::new(source),
        })?;
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

/// One problem in a schedules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The schedule's name, or `#<n>` (1-based position) if it has no usable name, or `(file)`.
    pub schedule: String,
    /// The field at fault.
    pub field: String,
    /// What is wrong and what is expected.
    pub problem: String,
}

impl FieldError {
    fn new(schedule: &str, field: &str, problem: impl Into<String>) -> Self {
        FieldError {
            schedule: schedule.to_owned(),
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schedule {}: field `{}` {}",
            self.schedule, self.field, self.problem
        )
    }
}

/// A schedules file that cannot be used. The scheduler refuses to start with one, and keeps
/// its previous schedules when a reload finds one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScheduleFileError {
    /// The file could not be read.
    #[error("cannot read schedules file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// The file is not valid YAML.
    #[error("schedules file {} is not valid YAML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more schedules are invalid.
    #[error("invalid schedules file {}: {}", path.display(), join(errors))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: Vec<FieldError>,
    },
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

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

fn describe_key(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into()),
    }
}

/// Field-by-field extraction of one schedule, collecting every error.
fn parse_entry(index: usize, entry: Value) -> Result<Schedule, Vec<FieldError>> {
    let position = format!("#{}", index + 1);
    let Value::Mapping(mapping) = entry else {
        return Err(vec![FieldError::new(
            &position,
            "(entry)",
            "must be a mapping with name, cron, queue and task",
        )]);
    };
    let mut fields = BTreeMap::new();
    let mut errors = Vec::new();
    let mut unknown = Vec::new();
    for (key, value) in mapping {
        let key = describe_key(&key);
        if FIELDS.contains(&key.as_str()) {
            fields.insert(key, value);
        } else {
            unknown.push(key);
        }
    }
    // The name first: every other error is reported under it.
    let label = match fields.get("name") {
        Some(Value::String(name)) if name::validate(NameKind::Task, name).is_ok() => name.clone(),
        Some(Value::String(name)) => {
            errors.push(FieldError::new(
                &position,
                "name",
                format!("{name:?} is not a valid name: use 1-64 characters of A-Z a-z 0-9 _ -"),
            ));
            position.clone()
        }
        Some(_) => {
            errors.push(FieldError::new(&position, "name", "must be a string"));
            position.clone()
        }
        None => {
            errors.push(FieldError::new(&position, "name", "is required"));
            position.clone()
        }
    };
    for key in unknown {
        errors.push(FieldError::new(
            &label,
            &key,
            format!("is not a schedule field (known: {})", FIELDS.join(", ")),
        ));
    }
    let mut ctx = Fields {
        label: &label,
        fields,
        errors,
    };
    let expression = ctx.string("cron", true);
    let zone = ctx.string("timezone", false);
    let queue = ctx.name("queue", NameKind::Queue);
    let task = ctx.name("task", NameKind::Task);
    let args = ctx.args();
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
    let max_attempts = ctx.positive_int("max_attempts");
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
    let errors = ctx.errors;
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

struct Fields<'a> {
    label: &'a str,
    fields: BTreeMap<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields<'_> {
    fn error(&mut self, field: &str, problem: impl Into<String>) {
        self.errors
            .push(FieldError::new(self.label, field, problem.into()));
    }

    fn string(&mut self, field: &str, required: bool) -> Option<String> {
        match self.fields.remove(field) {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => {
                if required {
                    self.error(field, "is required");
                }
                None
            }
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    fn name(&mut self, field: &str, kind: NameKind) -> Option<String> {
        let value = self.string(field, true)?;
        match name::validate(kind, &value) {
            Ok(()) => Some(value),
            Err(err) => {
                self.error(field, err.to_string());
                None
            }
        }
    }

    fn args(&mut self) -> Option<Bytes> {
        let value = self.fields.remove("args")?;
        match serde_json::to_vec(&value) {
            Ok(json) => Some(Bytes::from(json)),
            Err(err) => {
                self.error("args", format!("cannot be converted to JSON: {err}"));
                None
            }
        }
    }

    fn duration(&mut self, field: &str) -> Option<Duration> {
        match self.fields.remove(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => match humantime::parse_duration(text.trim()) {
                Ok(duration) => Some(duration),
                Err(err) => {
                    self.error(
                        field,
                        format!("{text:?} is not a duration ({err}); use e.g. 30s, 5m, 1h"),
                    );
                    None
                }
            },
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Some(Duration::ZERO),
            Some(_) => {
                self.error(field, "must be a duration with a unit, e.g. 30s, 5m, 1h");
                None
            }
        }
    }

    fn bool(&mut self, field: &str) -> Option<bool> {
        match self.fields.remove(field) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => {
                self.error(field, "must be true or false");
                None
            }
        }
    }

    fn positive_int(&mut self, field: &str) -> Option<u32> {
        match self.fields.remove(field) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n >= 1 => Some(n),
                _ => {
                    self.error(field, format!("{n} is not a whole number ≥ 1"));
                    None
                }
            },
            Some(_) => {
                self.error(field, "must be a whole number ≥ 1");
                None
            }
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
    fn every_error_names_schedule_and_field() {
        let errors = errors(
            r#"
schedules:
  - name: report
    cron: "0 0 3 * *"
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
            .map(|e| (e.schedule.clone(), e.field.clone()))
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
        let text = ScheduleFileError::Invalid {
            path: "s.yaml".into(),
            errors,
        }
        .to_string();
        assert!(
            text.contains("schedule report: field `timezone` unknown time zone \"Europe/Berlln\""),
            "{text}"
        );
    }

    #[test]
    fn a_bad_cron_expression_is_named() {
        let errors = errors(
            "schedules:\n  - {name: r, cron: \"0 0 3 * *\", queue: q, task: t}\n  - {name: s, cron: \"0 0 0 30 2 *\", queue: q, task: t}\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(
            (errors[0].schedule.as_str(), errors[0].field.as_str()),
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
        assert_eq!(errors[0].schedule, "#1");
    }

    fn errors_of(text: &str) -> Vec<FieldError> {
        errors(text)
    }
}
