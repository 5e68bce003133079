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

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use jetq_contract::{
    config_file::{Entry, ListFile, Value},
    name::NameKind,
    RetryPolicy,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

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
        let entries = FILE.entries(text, origin)?;
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
                    FILE.item,
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
                    FILE.item,
                    name,
                    "name",
                    "is used by another target; names must be unique",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(FILE.invalid(origin, errors));
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Targets { list })
    }

    /// Reads, parses and validates a targets file.
    pub fn load(path: &Path) -> Result<Self, TargetsFileError> {
        let text = FILE.read(path)?;
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

/// One problem in a targets file: the target (its name, or `#<n>` while it has none, or
/// `(file)`), the field and what is wrong.
pub use jetq_contract::config_file::FieldError;

/// A targets file that cannot be used: `jetq-push` refuses to start with one.
pub type TargetsFileError = jetq_contract::config_file::FileError;

/// A targets file: a non-empty `targets` list.
const FILE: ListFile = ListFile {
    key: "targets",
    item: "target",
    required: true,
};

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

fn parse_entry(index: usize, entry: Value) -> Result<Target, Vec<FieldError>> {
    let (mut ctx, unknown) = Entry::new(FILE.item, index, entry, FIELDS)?;
    // The label first, so every other error is reported under it.
    let queue = ctx.name("queue", NameKind::Queue, true);
    let task = ctx.name("task", NameKind::Task, false);
    let explicit = ctx.name("name", NameKind::Task, false);
    let label = match (&explicit, &queue, &task) {
        (Some(name), _, _) => Some(name.clone()),
        (None, Some(queue), Some(task)) => Some(format!("{queue}/{task}")),
        (None, Some(queue), None) => Some(queue.clone()),
        (None, None, _) => None,
    };
    if let Some(label) = &label {
        ctx.relabel(label);
    }
    ctx.unknown_fields(unknown, FIELDS);
    let url = url(&mut ctx);
    let timeout = positive_duration(&mut ctx, "timeout", DEFAULT_TIMEOUT);
    let concurrency = ctx
        .int("concurrency", 1, MAX_CONCURRENCY as u64)
        .unwrap_or(DEFAULT_CONCURRENCY as u64);
    let rate = rate(&mut ctx);
    if rate.is_none() && ctx.has("burst") {
        ctx.error(
            "burst",
            "needs `rate`: the bucket refills at `rate` per second",
        );
    }
    let burst = ctx.int("burst", 1, u64::from(u32::MAX)).unwrap_or(1);
    let max_attempts = ctx
        .int("max_attempts", 1, 1000)
        .unwrap_or(u64::from(DEFAULT_MAX_ATTEMPTS));
    let backoff = positive_duration(&mut ctx, "backoff", DEFAULT_BACKOFF);
    let backoff_max = positive_duration(&mut ctx, "backoff_max", DEFAULT_BACKOFF_MAX);
    if backoff_max < backoff {
        ctx.error("backoff_max", "must not be shorter than `backoff`");
    }
    let max_wait = positive_duration(&mut ctx, "max_wait", DEFAULT_MAX_WAIT);
    let follow_redirects = ctx.bool("follow_redirects").unwrap_or(false);
    let label = ctx.label().to_owned();
    let errors = ctx.into_errors();
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(queue), Some(url)) = (queue, url) else {
        // Missing required fields were reported above.
        return Err(vec![FieldError::new(
            FILE.item,
            &label,
            "(entry)",
            "is incomplete",
        )]);
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

/// The `url` field: http(s), a host without placeholders, no credentials, only the known
/// placeholders.
fn url(ctx: &mut Entry) -> Option<String> {
    let text = ctx.string("url", true)?;
    let authority = text
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    if authority.is_empty() && text.contains("://") {
        ctx.error("url", format!("{text:?} has no host"));
        return None;
    }
    if authority.contains(['{', '}']) {
        ctx.error(
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
        ctx.error(
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
            ctx.error(
                "url",
                format!("{text:?} has scheme {:?}; use http or https", url.scheme()),
            );
            None
        }
        Ok(url) if url.host_str().is_none_or(str::is_empty) => {
            ctx.error("url", format!("{text:?} has no host"));
            None
        }
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            ctx.error(
                "url",
                format!("{text:?} holds credentials; endpoints authenticate jetq by the request signature"),
            );
            None
        }
        Ok(_) => Some(text),
        Err(err) => {
            ctx.error("url", format!("{text:?} is not a valid URL: {err}"));
            None
        }
    }
}

/// A duration field that must be greater than zero; `default` when absent or invalid.
fn positive_duration(ctx: &mut Entry, field: &str, default: Duration) -> Duration {
    match ctx.duration(field) {
        None => default,
        Some(duration) if duration.is_zero() => {
            ctx.error(field, "must be greater than zero");
            default
        }
        Some(duration) => duration,
    }
}

/// The `rate` field: requests per second above 0.
fn rate(ctx: &mut Entry) -> Option<f64> {
    match ctx.take("rate") {
        None => None,
        Some(Value::Number(number)) => match number.as_f64() {
            Some(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => Some(rate),
            _ => {
                ctx.error(
                    "rate",
                    "must be a number of requests per second above 0 (e.g. 50 or 0.5)",
                );
                None
            }
        },
        Some(_) => {
            ctx.error(
                "rate",
                "must be a number of requests per second above 0 (e.g. 50 or 0.5)",
            );
            None
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
        let has =
            |target: &str, field: &str| found.iter().any(|e| e.item == target && e.field == field);
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
                .any(|e| e.item == "second" && e.field == "name"),
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
