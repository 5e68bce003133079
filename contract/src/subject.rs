//! Subjects, stream names and consumer names, all derived from one prefix.
//!
//! | what | name (prefix `jetq`) |
//! |---|---|
//! | task subject | `jetq.task.<queue>.<task>` |
//! | dead-letter subject | `jetq.dead.<queue>.<task>` |
//! | task stream | `JETQ_TASKS` (subjects `jetq.task.*.*`) |
//! | dead-letter stream | `JETQ_DEAD` (subjects `jetq.dead.*.*`) |
//! | durable consumer of a queue | `worker-<queue>` on `JETQ_TASKS` |
//! | task subject / durable of a priority level | `jetq.task.<queue>~high.<task>` / `worker-<queue>~high` (also `~low`) |
//! | advisory stream (exhausted deliveries) | `JETQ_ADVISORIES` |
//! | attempt-history KV bucket | `JETQ_ATTEMPTS` |
//! | delayed-task subject | `jetq.delayed.<due unix second>.<queue>.<task>` |
//! | delayed-task stream | `JETQ_DELAYED` (subjects `jetq.delayed.*.*.*`) |
//! | scheduler state KV bucket | `JETQ_SCHEDULER` |
//! | task status KV bucket | `JETQ_STATUS` |
//! | task artifact object store | `JETQ_ARTIFACTS` |
//! | bodies of dead letters too large to carry their own | `JETQ_DEAD_PAYLOADS` (object store) |

use crate::{
    name::{validate, NameError, NameKind},
    priority::Priority,
};

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "jetq";

/// Derives every subject and JetStream name from a validated prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
    upper: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects {
            prefix: DEFAULT_PREFIX.to_owned(),
            upper: DEFAULT_PREFIX.to_uppercase(),
        }
    }
}

impl Subjects {
    /// Subjects under `prefix`, which must be a valid name token.
    ///
    /// ```
    /// let s = jetq_contract::Subjects::new("jetq").unwrap();
    /// assert_eq!(s.task("emails", "send_email"), "jetq.task.emails.send_email");
    /// assert_eq!(s.tasks_stream(), "JETQ_TASKS");
    /// ```
    pub fn new(prefix: &str) -> Result<Self, NameError> {
        validate(NameKind::Prefix, prefix)?;
        Ok(Subjects {
            prefix: prefix.to_owned(),
            upper: prefix.to_uppercase().replace('-', "_"),
        })
    }

    /// The prefix these subjects start with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.task.<queue>.<task>`. Names are not validated here; callers validate once.
    pub fn task(&self, queue: &str, task: &str) -> String {
        // Built by hand: this runs for every enqueue, and `format!` costs about ten times as
        // much (measured with callgrind in bench/, see BENCHMARKS.md).
        let mut subject = String::with_capacity(
            self.prefix.len() + ".task.".len() + queue.len() + 1 + task.len(),
        );
        subject.push_str(&self.prefix);
        subject.push_str(".task.");
        subject.push_str(queue);
        subject.push('.');
        subject.push_str(task);
        subject
    }

    /// `<prefix>.dead.<queue>.<task>`.
    pub fn dead(&self, queue: &str, task: &str) -> String {
        format!("{}.dead.{queue}.{task}", self.prefix)
    }

    /// The filter of one queue's durable consumer: `<prefix>.task.<queue>.*`.
    pub fn queue_filter(&self, queue: &str) -> String {
        format!("{}.task.{queue}.*", self.prefix)
    }

    /// All task subjects: `<prefix>.task.*.*`. Exactly two tokens, so a publish to a malformed
    /// subject such as `jetq.task.q.a.b` (which no queue's consumer would ever see) is not
    /// captured and the publisher gets an error instead of a task stranded forever.
    pub fn all_tasks(&self) -> String {
        format!("{}.task.*.*", self.prefix)
    }

    /// All dead-letter subjects: `<prefix>.dead.*.*`.
    pub fn all_dead(&self) -> String {
        format!("{}.dead.*.*", self.prefix)
    }

    /// Name of the WorkQueue stream holding runnable tasks.
    pub fn tasks_stream(&self) -> String {
        format!("{}_TASKS", self.upper)
    }

    /// Name of the stream holding dead letters.
    pub fn dead_stream(&self) -> String {
        format!("{}_DEAD", self.upper)
    }

    /// Name of the stream that captures the server's max-deliveries advisories for the task
    /// stream, so a task whose every delivery was spent without a dead-letter write is found.
    pub fn advisories_stream(&self) -> String {
        format!("{}_ADVISORIES", self.upper)
    }

    /// The advisory subject the server publishes when a task-stream consumer gives up on a
    /// message after `max_deliver` deliveries.
    pub fn max_deliveries_advisory(&self) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
            self.tasks_stream()
        )
    }

    /// Name of the KV bucket keeping the error of each failed attempt until the task ends.
    pub fn attempts_bucket(&self) -> String {
        format!("{}_ATTEMPTS", self.upper)
    }

    /// Name of the KV bucket holding the status records of tracked tasks.
    pub fn status_bucket(&self) -> String {
        format!("{}_STATUS", self.upper)
    }

    /// Name of the object store holding the artifacts of tracked tasks.
    pub fn artifacts_bucket(&self) -> String {
        format!("{}_ARTIFACTS", self.upper)
    }

    /// Name of the object store holding the bodies of dead letters that would not fit in one
    /// message with their failure record (see `docs/PROTOCOL.md`, dead letters).
    pub fn dead_payloads_bucket(&self) -> String {
        format!("{}_DEAD_PAYLOADS", self.upper)
    }

    /// The durable pull consumer of a queue. KEDA's `consumer` field names this.
    pub fn durable(&self, queue: &str) -> String {
        format!("worker-{queue}")
    }

    /// `<prefix>.delayed.<due>.<queue>.<task>`: where a task due at unix second `due` waits
    /// until the scheduler releases it to its task subject.
    ///
    /// ```
    /// let s = jetq_contract::Subjects::default();
    /// assert_eq!(s.delayed(1_790_000_000, "emails", "send"), "jetq.delayed.1790000000.emails.send");
    /// ```
    pub fn delayed(&self, due: u64, queue: &str, task: &str) -> String {
        format!("{}.delayed.{due}.{queue}.{task}", self.prefix)
    }

    /// Every delayed task due in unix second `due`: `<prefix>.delayed.<due>.*.*`.
    pub fn delayed_bucket(&self, due: u64) -> String {
        format!("{}.delayed.{due}.*.*", self.prefix)
    }

    /// All delayed-task subjects: `<prefix>.delayed.*.*.*`.
    pub fn all_delayed(&self) -> String {
        format!("{}.delayed.*.*.*", self.prefix)
    }

    /// Name of the stream holding delayed tasks until they are due.
    pub fn delayed_stream(&self) -> String {
        format!("{}_DELAYED", self.upper)
    }

    /// Name of the KV bucket holding the scheduler's state (last fire of each schedule, last
    /// released delayed-task second).
    pub fn scheduler_bucket(&self) -> String {
        format!("{}_SCHEDULER", self.upper)
    }

    /// Splits a delayed-task subject back into `(due, queue, task)`.
    ///
    /// ```
    /// let s = jetq_contract::Subjects::default();
    /// assert_eq!(s.parse_delayed("jetq.delayed.17.q.t"), Some((17, "q", "t")));
    /// assert_eq!(s.parse_delayed("jetq.delayed.soon.q.t"), None);
    /// ```
    pub fn parse_delayed<'a>(&self, subject: &'a str) -> Option<(u64, &'a str, &'a str)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".delayed.")?;
        let (due, rest) = rest.split_once('.')?;
        if due.is_empty() || !due.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (queue, task) = rest.split_once('.')?;
        if task.contains('.') || queue.is_empty() || task.is_empty() {
            return None;
        }
        Some((due.parse().ok()?, queue, task))
    }

    /// Splits a task subject back into `(queue, task)`; `None` if it is not one of ours.
    ///
    /// ```
    /// let s = jetq_contract::Subjects::default();
    /// assert_eq!(s.parse_task("jetq.task.emails.send"), Some(("emails", "send")));
    /// assert_eq!(s.parse_task("other.task.emails.send"), None);
    /// ```
    pub fn parse_task<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        self.parse_task_level(subject)
            .map(|(queue, _, task)| (queue, task))
    }

    /// Splits a task subject into `(queue, level, task)`: a level's subject carries it in the
    /// queue token (`jetq.task.emails~high.send`, see [`Priority`]). `None` if it is not one
    /// of ours, or names a level that does not exist.
    ///
    /// ```
    /// use jetq_contract::{Priority, Subjects};
    /// let s = Subjects::default();
    /// assert_eq!(s.parse_task_level("jetq.task.emails~high.send"), Some(("emails", Priority::High, "send")));
    /// assert_eq!(s.parse_task_level("jetq.task.emails.send"), Some(("emails", Priority::Normal, "send")));
    /// assert_eq!(s.parse_task_level("jetq.task.emails~soon.send"), None);
    /// ```
    pub fn parse_task_level<'a>(&self, subject: &'a str) -> Option<(&'a str, Priority, &'a str)> {
        let (token, task) = self.parse(subject, "task")?;
        let (queue, level) = Priority::split_queue_token(token)?;
        Some((queue, level, task))
    }

    /// `<prefix>.task.<queue>~<level>.<task>` (the plain task subject for `normal`).
    ///
    /// ```
    /// use jetq_contract::{Priority, Subjects};
    /// let s = Subjects::default();
    /// assert_eq!(s.task_at("emails", Priority::Low, "send"), "jetq.task.emails~low.send");
    /// assert_eq!(s.task_at("emails", Priority::Normal, "send"), s.task("emails", "send"));
    /// ```
    pub fn task_at(&self, queue: &str, level: Priority, task: &str) -> String {
        self.task(&level.queue_token(queue), task)
    }

    /// The durable consumer of one level of a queue: `worker-<queue>` for `normal`,
    /// `worker-<queue>~<level>` for the others.
    pub fn durable_at(&self, queue: &str, level: Priority) -> String {
        self.durable(&level.queue_token(queue))
    }

    /// The filter of one level's durable consumer: `<prefix>.task.<queue>[~<level>].*`.
    pub fn queue_filter_at(&self, queue: &str, level: Priority) -> String {
        self.queue_filter(&level.queue_token(queue))
    }

    /// Splits a dead-letter subject back into `(queue, task)`.
    pub fn parse_dead<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        self.parse(subject, "dead")
    }

    fn parse<'a>(&self, subject: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let rest = rest.strip_prefix(kind)?.strip_prefix('.')?;
        let (queue, task) = rest.split_once('.')?;
        if task.contains('.') || queue.is_empty() || task.is_empty() {
            return None;
        }
        Some((queue, task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let s = Subjects::new("my-app").unwrap();
        assert_eq!(s.task("q", "t"), "my-app.task.q.t");
        assert_eq!(s.dead("q", "t"), "my-app.dead.q.t");
        assert_eq!(s.tasks_stream(), "MY_APP_TASKS");
        assert_eq!(s.dead_stream(), "MY_APP_DEAD");
        assert_eq!(s.status_bucket(), "MY_APP_STATUS");
        assert_eq!(s.artifacts_bucket(), "MY_APP_ARTIFACTS");
        assert_eq!(s.queue_filter("q"), "my-app.task.q.*");
        assert_eq!(
            s.max_deliveries_advisory(),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MY_APP_TASKS.*"
        );
    }

    #[test]
    fn parse_round_trips() {
        let s = Subjects::default();
        assert_eq!(s.parse_task(&s.task("a", "b")), Some(("a", "b")));
        assert_eq!(s.parse_dead(&s.dead("a", "b")), Some(("a", "b")));
        assert_eq!(s.parse_task("jetq.task.a.b.c"), None);
        assert_eq!(s.parse_task("jetq.dead.a.b"), None);
    }

    #[test]
    fn delayed_names_follow_the_prefix() {
        let s = Subjects::new("my-app").unwrap();
        assert_eq!(s.delayed(5, "q", "t"), "my-app.delayed.5.q.t");
        assert_eq!(s.delayed_bucket(5), "my-app.delayed.5.*.*");
        assert_eq!(s.all_delayed(), "my-app.delayed.*.*.*");
        assert_eq!(s.delayed_stream(), "MY_APP_DELAYED");
        assert_eq!(s.scheduler_bucket(), "MY_APP_SCHEDULER");
        assert_eq!(
            s.parse_delayed(&s.delayed(5, "q", "t")),
            Some((5, "q", "t"))
        );
        assert_eq!(s.parse_delayed("my-app.delayed.5.q.t.u"), None);
        assert_eq!(s.parse_delayed("my-app.task.q.t"), None);
    }

    #[test]
    fn bad_prefix_is_rejected() {
        assert!(Subjects::new("a.b").is_err());
        assert!(Subjects::new("").is_err());
    }
}
