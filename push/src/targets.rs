//! The targets file: which HTTP endpoint runs the tasks of which queue or task type, and how
//! hard it may be pushed. YAML, the form a Kubernetes ConfigMap holds.
//!
//! ```yaml
//! targets:
//!   - name: emails                # optional, unique; names the target in errors and logs
//!                                 # (default: the queue, or queue/task)
//!     queue: emails               # required: the queue whose tasks go to this target
//!     task: send_email            # optional: only this task type (an exact match wins over
//!                                 # a queue-wide target of the same queue)
//!     url: https://app.example.com/jetq/{queue}/{task}   # {queue} and {task} are replaced
//!     timeout: 30s                # per request (default 30s); the task's timeout caps it
//!     concurrency: 16             # requests in flight from this process (default 16)
//!     rate: 50                    # requests per second from this process (default: no limit)
//!     burst: 1                    # token bucket size (default 1; needs `rate`)
//!     max_attempts: 10            # attempts before the task is dead-lettered (default 10)
//!     backoff: 1s                 # delay after the first failed attempt, doubling (default 1s)
//!     backoff_max: 1h             # upper bound of the backoff (default 1h)
//!     max_wait: 5m                # longest wait for a free slot or token (default 5m)
//!     follow_redirects: false     # 3xx answers are permanent failures unless true
//! ```
//!
//! Every problem is reported with the target it belongs to and the field at fault, all at
//! once, so a broken file is fixed in one round. URLs come only from this file, never from a
//! task.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use jetq_contract::{
    name::{self, NameKind},
    RetryPolicy,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_norway::Value;

/// Placeholder replaced by the task's queue.
pub const QUEUE_PLACEHOLDER: &str = "{queue}";
/// Placeholder replaced by the task's wire name.
pub const TASK_PLACEHOLDER: &str = "{task}";

/// Characters left as they are when a name is substituted into a URL: names are already
/// restricted to `[A-Za-z0-9_-]`, so this encodes nothing today, but a future, looser name
/// rule can never change the URL's structure.
const NAME_SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONCURRENCY: usize = 16;
const DEFAULT_MAX_ATTEMPTS: u32 = 10;
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);
/// The most requests in flight one target may allow.
pub const MAX_CONCURRENCY: usize = 10_000;

/// One validated target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Unique name, used in errors and logs.
    pub name: String,
    /// The queue whose tasks it runs.
    pub queue: String,
    /// The one task type it runs; `None`: every task type of the queue without its own target.
    pub task: Option<String>,
    /// The URL, with `{queue}`/`{task}` placeholders still in it.
    pub url: String,
    /// Per-request timeout (the task's own timeout can only shorten it).
    pub timeout: Duration,
    /// Requests in flight at once from this process.
    pub concurrency: usize,
    /// Requests per second from this process; `None`: no limit.
    pub rate: Option<f64>,
    /// Token bucket size: requests that may go at once after an idle period.
    pub burst: u32,
    /// Attempts before the task is dead-lettered.
    pub max_attempts: u32,
    /// Backoff between attempts (exponential with jitter).
    pub retry: RetryPolicy,
    /// Longest a task waits for a free slot or a token before its attempt fails and is retried.
    pub max_wait: Duration,
    /// Follow 3xx answers (at most 5 hops) instead of failing the task.
    pub follow_redirects: bool,
}

impl Target {
    /// The URL for one task: placeholders replaced by the (validated, percent-encoded) names.
    ///
    /// ```
    /// use jetq_push::Targets;
    ///
    /// let targets = Targets::from_yaml(
    ///     "targets:\n  - queue: emails\n    url: https://app.example.com/jetq/{queue}/{task}\n",
    ///     std::path::Path::new("targets.yaml"),
    /// ).unwrap();
    /// let target = targets.find("emails", "send_email").unwrap();
    /// assert_eq!(target.url_for("emails", "send_email"), "https://app.example.com/jetq/emails/send_email");
    /// ```
    pub fn url_for(&self, queue: &str, task: &str) -> String {
        self.url
            .replace(
                QUEUE_PLACEHOLDER,
                &utf8_percent_encode(queue, NAME_SAFE).to_string(),
            )
            .replace(
                TASK_PLACEHOLDER,
                &utf8_percent_encode(task, NAME_SAFE).to_string(),
            )
    }
}

/// A validated set of targets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    list: Vec<Arc<Target>>,
}

impl Targets {
    /// Parses and validates a targets file's text. `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Self, TargetsFileError> {
        let invalid = |errors| TargetsFileError::Invalid {
            path: origin.to_owned(),
            errors,
        };
        let document: Value =
            serde_norway::from_str(text).map_err(|err| TargetsFileError::Syntax {
                path: origin.to_owned(),
                message: err.to_string(),
            })?;
        let entries = match document {
            Value::Mapping(mut top) => {
                let mut errors = Vec::new();
                for key in top.keys() {
                    if key.as_str() != Some("targets") {
                        errors.push(FieldError::new(
                            "(file)",
                            &describe_key(key),
                            "unknown top-level key; the file holds one key, `targets`",
                        ));
                    }
                }
                if !errors.is_empty() {
                    return Err(invalid(errors));
                }
                match top.remove("targets") {
                    Some(Value::Sequence(entries)) => entries,
                    _ => {
                        return Err(invalid(vec![FieldError::new(
                            "(file)",
                            "targets",
                            "must be a non-empty list of targets",
                        )]))
                    }
                }
            }
            _ => {
                return Err(invalid(vec![FieldError::new(
                    "(file)",
                    "targets",
                    "the file must be a mapping with a `targets` list",
                )]))
            }
        };
        if entries.is_empty() {
            return Err(invalid(vec![FieldError::new(
                "(file)",
                "targets",
                "must be a non-empty list of targets",
            )]));
        }
        let mut errors = Vec::new();
        let mut list: Vec<Arc<Target>> = Vec::new();
        for (index, entry) in entries.into_iter().enumerate() {
            match parse_entry(index, entry) {
                Ok(target) => list.push(Arc::new(target)),
                Err(mut entry_errors) => errors.append(&mut entry_errors),
            }
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut routes: HashMap<(&str, Option<&str>), &str> = HashMap::new();
        for target in &list {
            *names.entry(target.name.as_str()).or_default() += 1;
            if let Some(other) = routes.insert(
                (target.queue.as_str(), target.task.as_deref()),
                target.name.as_str(),
            ) {
                let what = match &target.task {
                    Some(task) => format!("task {task} of queue {}", target.queue),
                    None => format!("every task of queue {}", target.queue),
                };
                errors.push(FieldError::new(
                    &target.name,
                    if target.task.is_some() {
                        "task"
                    } else {
                        "queue"
                    },
                    format!("target {other} already takes {what}; each route has one target"),
                ));
            }
        }
        for (name, count) in names {
            if count > 1 {
                errors.push(FieldError::new(
                    name,
                    "name",
                    "is used by another target; names must be unique",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Targets { list })
    }

    /// Reads, parses and validates a targets file.
    pub fn load(path: &Path) -> Result<Self, TargetsFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TargetsFileError::Read {
            path: path.to_owned(),
            source: Arc::new(source),
        })?;
        Self::from_yaml(&text, path)
    }

    /// The targets, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Target>> {
        self.list.iter()
    }

    /// The target of a task: its task type's own target, else its queue's.
    pub fn find(&self, queue: &str, task: &str) -> Option<&Arc<Target>> {
        self.list
            .iter()
            .find(|t| t.queue == queue && t.task.as_deref() == Some(task))
            .or_else(|| {
                self.list
                    .iter()
                    .find(|t| t.queue == queue && t.task.is_none())
            })
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True if there are none (never for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// One problem in a targets file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The target's name, or `#<n>` (1-based position) if it has none yet, or `(file)`.
    pub target: String,
    /// The field at fault.
    pub field: String,
    /// What is wrong and what is expected.
    pub problem: String,
}

impl FieldError {
    fn new(target: &str, field: &str, problem: impl Into<String>) -> Self {
        FieldError {
            target: target.to_owned(),
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "target {}: field `{}` {}",
            self.target, self.field, self.problem
        )
    }
}

/// A targets file that cannot be used: `jetq-push` refuses to start with one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetsFileError {
    /// The file could not be read.
    #[error("cannot read targets file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// The file is not valid YAML.
    #[error("targets file {} is not valid YAML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more targets are invalid.
    #[error("invalid targets file {}: {}", path.display(), join(errors))]
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
    "queue",
    "task",
    "url",
    "timeout",
    "concurrency",
    "rate",
    "burst",
    "max_attempts",
    "backoff",
    "backoff_max",
    "max_wait",
    "follow_redirects",
];

fn describe_key(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into()),
    }
}

fn parse_entry(index: usize, entry: Value) -> Result<Target, Vec<FieldError>> {
    let position = format!("#{}", index + 1);
    let Value::Mapping(mapping) = entry else {
        return Err(vec![FieldError::new(
            &position,
            "(entry)",
            "must be a mapping with queue and url",
        )]);
    };
    let mut fields = BTreeMap::new();
    let mut unknown = Vec::new();
    for (key, value) in mapping {
        let key = describe_key(&key);
        if FIELDS.contains(&key.as_str()) {
            fields.insert(key, value);
        } else {
            unknown.push(key);
        }
    }
    let mut ctx = Fields {
        label: position.clone(),
        fields,
        errors: Vec::new(),
    };
    // The label first, so every other error is reported under it.
    let queue = ctx.name("queue", NameKind::Queue, true);
    let task = ctx.name("task", NameKind::Task, false);
    let explicit = ctx.string("name", false);
    let label = match (&explicit, &queue, &task) {
        (Some(name), _, _) if name::validate(NameKind::Task, name).is_ok() => name.clone(),
        (Some(name), _, _) => {
            ctx.error(
                "name",
                format!("{name:?} is not a valid name: use 1-64 characters of A-Z a-z 0-9 _ -"),
            );
            position.clone()
        }
        (None, Some(queue), Some(task)) => format!("{queue}/{task}"),
        (None, Some(queue), None) => queue.clone(),
        (None, None, _) => position.clone(),
    };
    for error in &mut ctx.errors {
        error.target = label.clone();
    }
    ctx.label = label;
    for key in unknown {
        ctx.error(
            &key,
            format!("is not a target field (known: {})", FIELDS.join(", ")),
        );
    }
    let url = ctx.url();
    let timeout = ctx.duration("timeout", DEFAULT_TIMEOUT);
    let concurrency = ctx.int(
        "concurrency",
        DEFAULT_CONCURRENCY as u64,
        MAX_CONCURRENCY as u64,
    );
    let rate = ctx.rate();
    let burst = ctx.int("burst", 1, u64::from(u32::MAX));
    if rate.is_none() && ctx.fields.contains_key("burst") {
        ctx.error(
            "burst",
            "needs `rate`: the bucket refills at `rate` per second",
        );
    }
    let max_attempts = ctx.int("max_attempts", u64::from(DEFAULT_MAX_ATTEMPTS), 1000);
    let backoff = ctx.duration("backoff", DEFAULT_BACKOFF);
    let backoff_max = ctx.duration("backoff_max", DEFAULT_BACKOFF_MAX);
    if backoff_max < backoff {
        ctx.error("backoff_max", "must not be shorter than `backoff`");
    }
    let max_wait = ctx.duration("max_wait", DEFAULT_MAX_WAIT);
    let follow_redirects = ctx.bool("follow_redirects", false);
    let Fields { label, errors, .. } = ctx;
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(queue), Some(url)) = (queue, url) else {
        // Missing required fields were reported above.
        return Err(vec![FieldError::new(&label, "(entry)", "is incomplete")]);
    };
    Ok(Target {
        name: label,
        queue,
        task,
        url,
        timeout,
        concurrency: concurrency as usize,
        rate,
        burst: burst as u32,
        max_attempts: max_attempts as u32,
        retry: RetryPolicy::exponential(backoff).max(backoff_max),
        max_wait,
        follow_redirects,
    })
}

/// Field-by-field extraction of one target, collecting every error.
struct Fields {
    label: String,
    fields: BTreeMap<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    fn error(&mut self, field: &str, problem: impl Into<String>) {
        self.errors
            .push(FieldError::new(&self.label, field, problem.into()));
    }

    fn string(&mut self, field: &str, required: bool) -> Option<String> {
        match self.fields.get(field) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Null) | None if !required => None,
            None | Some(Value::Null) => {
                self.error(field, "is required");
                None
            }
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    fn name(&mut self, field: &str, kind: NameKind, required: bool) -> Option<String> {
        let text = self.string(field, required)?;
        match name::validate(kind, &text) {
            Ok(()) => Some(text),
            Err(err) => {
                self.error(field, err.to_string());
                None
            }
        }
    }

    fn url(&mut self) -> Option<String> {
        let text = self.string("url", true)?;
        let authority = text
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default())
            .unwrap_or_default();
        if authority.is_empty() && text.contains("://") {
            self.error("url", format!("{text:?} has no host"));
            return None;
        }
        if authority.contains(['{', '}']) {
            self.error(
                "url",
                format!("{text:?} may not have a placeholder in its host"),
            );
            return None;
        }
        // Any other `{...}` would be sent literally: almost certainly a typo.
        let rest = text
            .replace(QUEUE_PLACEHOLDER, "")
            .replace(TASK_PLACEHOLDER, "");
        if rest.contains(['{', '}']) {
            self.error(
                "url",
                format!(
                    "{text:?} has an unknown placeholder; only {{queue}} and {{task}} are replaced"
                ),
            );
            return None;
        }
        let sample = text
            .replace(QUEUE_PLACEHOLDER, "queue")
            .replace(TASK_PLACEHOLDER, "task");
        match url::Url::parse(&sample) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                self.error(
                    "url",
                    format!("{text:?} has scheme {:?}; use http or https", url.scheme()),
                );
                None
            }
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                self.error("url", format!("{text:?} has no host"));
                None
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                self.error(
                    "url",
                    format!("{text:?} holds credentials; endpoints authenticate jetq by the request signature"),
                );
                None
            }
            Ok(_) => Some(text),
            Err(err) => {
                self.error("url", format!("{text:?} is not a valid URL: {err}"));
                None
            }
        }
    }

    fn duration(&mut self, field: &str, default: Duration) -> Duration {
        match self.fields.get(field) {
            None | Some(Value::Null) => default,
            Some(Value::String(text)) => match humantime::parse_duration(text) {
                Ok(duration) if duration.is_zero() => {
                    self.error(field, "must be greater than zero");
                    default
                }
                Ok(duration) => duration,
                Err(err) => {
                    self.error(
                        field,
                        format!("{text:?} is not a duration (e.g. 500ms, 30s, 5m): {err}"),
                    );
                    default
                }
            },
            Some(_) => {
                self.error(field, "must be a duration such as 30s or 5m");
                default
            }
        }
    }

    fn int(&mut self, field: &str, default: u64, max: u64) -> u64 {
        match self.fields.get(field) {
            None | Some(Value::Null) => default,
            Some(Value::Number(number)) => match number.as_u64() {
                Some(n) if (1..=max).contains(&n) => n,
                _ => {
                    self.error(field, format!("must be an integer from 1 to {max}"));
                    default
                }
            },
            Some(_) => {
                self.error(field, format!("must be an integer from 1 to {max}"));
                default
            }
        }
    }

    fn rate(&mut self) -> Option<f64> {
        match self.fields.get("rate") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) => match number.as_f64() {
                Some(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => Some(rate),
                _ => {
                    self.error(
                        "rate",
                        "must be a number of requests per second above 0 (e.g. 50 or 0.5)",
                    );
                    None
                }
            },
            Some(_) => {
                self.error(
                    "rate",
                    "must be a number of requests per second above 0 (e.g. 50 or 0.5)",
                );
                None
            }
        }
    }

    fn bool(&mut self, field: &str, default: bool) -> bool {
        match self.fields.get(field) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(value)) => *value,
            Some(_) => {
                self.error(field, "must be true or false");
                default
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Targets, TargetsFileError> {
        Targets::from_yaml(text, Path::new("targets.yaml"))
    }

    fn errors(text: &str) -> Vec<FieldError> {
        match parse(text) {
            Err(TargetsFileError::Invalid { errors, .. }) => errors,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn a_full_target_parses_with_defaults_filled_in() {
        let targets = parse(
            "targets:
  - queue: emails
    url: https://app.example.com/jetq/{queue}/{task}
  - name: exports-fast
    queue: exports
    task: build_csv
    url: http://127.0.0.1:8080/csv
    timeout: 2s
    concurrency: 3
    rate: 0.5
    burst: 2
    max_attempts: 4
    backoff: 100ms
    backoff_max: 1s
    max_wait: 10s
    follow_redirects: true
",
        )
        .unwrap();
        assert_eq!(targets.len(), 2);
        let emails = targets.find("emails", "send_email").unwrap();
        assert_eq!(emails.name, "emails");
        assert_eq!(emails.timeout, DEFAULT_TIMEOUT);
        assert_eq!(emails.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(emails.rate, None);
        assert!(!emails.follow_redirects);
        let csv = targets.find("exports", "build_csv").unwrap();
        assert_eq!(csv.name, "exports-fast");
        assert_eq!(csv.rate, Some(0.5));
        assert_eq!(csv.burst, 2);
        assert_eq!(csv.retry.initial, Duration::from_millis(100));
        assert_eq!(csv.retry.max, Duration::from_secs(1));
        assert!(targets.find("exports", "other").is_none());
        assert!(targets.find("nope", "x").is_none());
    }

    #[test]
    fn a_task_target_wins_over_its_queue_target() {
        let targets = parse(
            "targets:
  - queue: q
    url: https://a.example/{task}
  - queue: q
    task: special
    url: https://b.example/special
",
        )
        .unwrap();
        assert_eq!(targets.find("q", "special").unwrap().name, "q/special");
        assert_eq!(targets.find("q", "plain").unwrap().name, "q");
    }

    #[test]
    fn names_are_percent_encoded_into_the_url() {
        let targets =
            parse("targets:\n  - queue: q\n    url: https://a.example/x/{queue}/{task}?t={task}\n")
                .unwrap();
        let target = targets.find("q", "t").unwrap();
        assert_eq!(
            target.url_for("q", "a b/c"),
            "https://a.example/x/q/a%20b%2Fc?t=a%20b%2Fc"
        );
        assert_eq!(
            target.url_for("q", "send_email-2"),
            "https://a.example/x/q/send_email-2?t=send_email-2"
        );
    }

    #[test]
    fn every_error_names_its_target_and_field() {
        let found = errors(
            "targets:
  - name: billing
    queue: billing
    url: ftp://billing.example/hook
    timeout: soon
    concurrency: 0
    rate: -3
    colour: blue
  - queue: bad.queue
    url: https://x.example/{queue}/{tsk}
  - queue: mail
",
        );
        let has = |target: &str, field: &str| {
            found.iter().any(|e| e.target == target && e.field == field)
        };
        for field in ["url", "timeout", "concurrency", "rate", "colour"] {
            assert!(
                has("billing", field),
                "billing/{field} missing in {found:?}"
            );
        }
        assert!(has("#2", "queue"), "{found:?}");
        assert!(has("#2", "url"), "{found:?}");
        assert!(has("mail", "url"), "{found:?}");
        let text = parse("targets:\n  - name: billing\n    queue: billing\n    url: https://x.example\n    timeout: soon\n")
            .unwrap_err()
            .to_string();
        assert!(text.contains("target billing: field `timeout`"), "{text}");
    }

    #[test]
    fn duplicate_routes_and_names_are_refused() {
        let found = errors(
            "targets:
  - queue: q
    url: https://a.example
  - name: second
    queue: q
    url: https://b.example
  - name: second
    queue: r
    url: https://c.example
",
        );
        assert!(
            found
                .iter()
                .any(|e| e.field == "queue"
                    && e.problem.contains("already takes every task of queue q")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|e| e.target == "second" && e.field == "name"),
            "{found:?}"
        );
    }

    #[test]
    fn urls_without_host_or_with_credentials_are_refused() {
        for url in [
            "https://user:pw@a.example/x",
            "https:///x",
            "not a url",
            "https://{queue}.example/x",
        ] {
            let found = errors(&format!("targets:\n  - queue: q\n    url: \"{url}\"\n"));
            assert!(found.iter().any(|e| e.field == "url"), "{url}: {found:?}");
        }
    }

    #[test]
    fn an_empty_or_foreign_file_is_refused() {
        assert!(matches!(parse(""), Err(TargetsFileError::Invalid { .. })));
        assert!(matches!(
            parse("targets: []"),
            Err(TargetsFileError::Invalid { .. })
        ));
        assert!(matches!(
            parse("schedules: []"),
            Err(TargetsFileError::Invalid { .. })
        ));
        assert!(matches!(
            parse("targets: ["),
            Err(TargetsFileError::Syntax { .. })
        ));
    }
}
