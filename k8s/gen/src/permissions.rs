//! The NATS users of a deployment, rendered from the shipped `k8s/nats/permissions.conf`.
//!
//! That file is the reference: `tests/tests/permissions.rs` starts a real nats-server with it
//! and checks that each role can do its job and nothing more. It defines one worker user per
//! example queue (`worker-emails`, `worker-exports`). Here its `worker-emails` role is the
//! template of every queue's user: the block `WORKER_EMAILS_PERMISSIONS` and the user line
//! naming it are repeated once per queue with the queue's name, every other line is kept as it
//! is. For the example's queues the result is the shipped file itself (a test checks it), so
//! the users a deployment gets are exactly the tested ones.
//!
//! With `taskRetention: limits` each worker role also gets [`limits_grants`]: the rights of
//! the purger (docs/DURABLE_DRAIN.md), inserted after the template's task-stream info line.
//! With the default `workqueue` nothing is added and the output is the same as without the
//! setting, byte for byte.

use jetq_contract::{config::TaskRetention, Subjects};

use crate::{values::upper, Error};

/// The shipped, tested permissions.
pub const SHIPPED: &str = include_str!("../../nats/permissions.conf");

/// The queue whose role is the template.
const TEMPLATE_QUEUE: &str = "emails";

/// What a worker needs beyond the shipped role on a Limits task stream
/// (`JETQ_TASK_RETENTION=limits`): purge the task stream (a purge request names its subject
/// filter in its body, so the right covers every queue of the stream), and find the stream of
/// max-deliveries advisories (its info) and read its unswept advisories by subject, the clamp
/// that keeps a stranded task until the sweeper copied it. Without the info right the worker
/// would find no advisory stream and purge without the clamp.
pub fn limits_grants() -> Vec<String> {
    let subjects = Subjects::default();
    vec![
        format!("$JS.API.STREAM.PURGE.{}", subjects.tasks_stream()),
        format!("$JS.API.STREAM.INFO.{}", subjects.advisories_stream()),
        format!("$JS.API.STREAM.MSG.GET.{}", subjects.advisories_stream()),
    ]
}

/// Batches and chains: a worker publishes the callbacks of the batches it finishes and the
/// next link of a chain to whatever queue the producer named, any deployed queue. The
/// template's `"jetq.task.<queue>.*",` lines (one per shipped queue) become one line per
/// rendered queue, where the first of them was: the task subjects of the deployed queues and
/// no other.
fn enqueue_grants(template_block: &mut Vec<String>, queues: &[&str]) -> Result<(), Error> {
    let is_grant = |line: &String| {
        let line = line.trim();
        line.starts_with("\"jetq.task.") && line.ends_with(".*\",")
    };
    let at = template_block.iter().position(is_grant).ok_or_else(|| {
        Error::Permissions(
            "WORKER_EMAILS_PERMISSIONS has no \"jetq.task.<queue>.*\" line (batch callbacks)"
                .into(),
        )
    })?;
    let indent: String = template_block[at]
        .chars()
        .take_while(|c| c.is_whitespace())
        .collect();
    template_block.retain(|line| !is_grant(line));
    for (n, queue) in queues.iter().enumerate() {
        template_block.insert(at + n, format!("{indent}\"jetq.task.{queue}.*\","));
    }
    Ok(())
}

/// The NATS users (and their permissions) for `queues`, on a task stream with `retention`.
pub fn render(queues: &[&str], retention: TaskRetention) -> Result<String, Error> {
    let lines: Vec<&str> = SHIPPED.lines().collect();
    let blocks = worker_blocks(&lines)?;
    let template = blocks
        .iter()
        .find(|block| block.queue_upper == upper(TEMPLATE_QUEUE))
        .ok_or_else(|| {
            Error::Permissions("no WORKER_EMAILS_PERMISSIONS block to use as template".into())
        })?;
    let mut template_block: Vec<String> = lines[template.start..template.end]
        .iter()
        .map(|line| (*line).to_owned())
        .collect();
    enqueue_grants(&mut template_block, queues)?;
    if retention == TaskRetention::Limits {
        let anchor = format!(
            "\"$JS.API.STREAM.INFO.{}\",",
            Subjects::default().tasks_stream()
        );
        let at = template_block
            .iter()
            .position(|line| line.trim() == anchor)
            .ok_or_else(|| {
                Error::Permissions(format!(
                    "WORKER_EMAILS_PERMISSIONS has no line {anchor} to add the purger's rights after"
                ))
            })?;
        let indent: String = template_block[at]
            .chars()
            .take_while(|c| c.is_whitespace())
            .collect();
        for (n, grant) in limits_grants().iter().enumerate() {
            template_block.insert(at + 1 + n, format!("{indent}\"{grant}\","));
        }
    }
    let template_user = lines
        .iter()
        .find(|line| {
            is_worker_user_line(line)
                && line.contains(&format!("${}", permission_name(TEMPLATE_QUEUE)))
        })
        .ok_or_else(|| {
            Error::Permissions("no user line for worker-emails to use as template".into())
        })?;

    let mut out = String::new();
    out.push_str(&format!(
        "# Generated by `jetq-k8s render` from k8s/nats/permissions.conf for the queues: {}.\n\
         # Do not edit: change k8s/values.yaml (queues) or k8s/nats/permissions.conf (roles).\n",
        queues.join(", ")
    ));
    if retention == TaskRetention::Limits {
        out.push_str(
            "# taskRetention: limits: each worker-<queue> may also purge the task stream and read the\n\
             # advisory stream (the purger of a Limits task stream, docs/DURABLE_DRAIN.md).\n",
        );
    }
    let mut i = 0;
    let mut blocks_written = false;
    let mut users_written = false;
    while i < lines.len() {
        if let Some(block) = blocks.iter().find(|block| block.start == i) {
            if !blocks_written {
                for (n, queue) in queues.iter().enumerate() {
                    if n > 0 {
                        out.push('\n');
                    }
                    for line in &template_block {
                        out.push_str(&for_queue(line, queue));
                        out.push('\n');
                    }
                }
                blocks_written = true;
            }
            i = block.end;
            // Drop the blank line that separated the removed block from the next one.
            if lines.get(i).is_some_and(|line| line.trim().is_empty())
                && blocks.iter().any(|b| b.start == i + 1)
            {
                i += 1;
            }
            continue;
        }
        let line = lines[i];
        if is_worker_user_line(line) {
            if !users_written {
                for queue in queues {
                    out.push_str(&for_queue(template_user, queue));
                    out.push('\n');
                }
                users_written = true;
            }
            i += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    if !blocks_written || !users_written {
        return Err(Error::Permissions(
            "the template role was not found in order".into(),
        ));
    }
    Ok(out)
}

/// The password variable of a queue's worker user, e.g. `JETQ_WORKER_EMAILS_PASSWORD`.
pub fn worker_password_variable(queue: &str) -> String {
    password_variable(&worker_user(queue))
}

/// The NATS user of a queue's workers, e.g. `worker-emails`.
pub fn worker_user(queue: &str) -> String {
    format!("worker-{queue}")
}

/// The variable (and Secret key) holding a user's password: `admin` → `JETQ_ADMIN_PASSWORD`,
/// `worker-emails` → `JETQ_WORKER_EMAILS_PASSWORD`.
pub fn password_variable(user: &str) -> String {
    format!("JETQ_{}_PASSWORD", upper(user))
}

/// Every user of the shipped file that is not a queue worker, with its password variable.
pub const FIXED_USERS: &[(&str, &str)] = &[
    ("admin", "JETQ_ADMIN_PASSWORD"),
    ("producer", "JETQ_PRODUCER_PASSWORD"),
    ("janitor", "JETQ_JANITOR_PASSWORD"),
    ("scheduler", "JETQ_SCHEDULER_PASSWORD"),
    ("relay", "JETQ_RELAY_PASSWORD"),
];

/// `(user, password variable)` of every user rendered for `queues`, as `user: X, password: $Y`
/// lines of the rendered text say.
pub fn users(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("{ user: ")?;
            let (user, rest) = rest.split_once(',')?;
            let rest = rest.trim().strip_prefix("password: $")?;
            let variable: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            Some((user.trim().to_owned(), variable))
        })
        .collect()
}

fn permission_name(queue: &str) -> String {
    format!("WORKER_{}_PERMISSIONS", upper(queue))
}

fn for_queue(line: &str, queue: &str) -> String {
    line.replace(&format!("worker-{TEMPLATE_QUEUE}"), &worker_user(queue))
        .replace(
            &format!(".dead.{TEMPLATE_QUEUE}."),
            &format!(".dead.{queue}."),
        )
        // Its task types in the catalog (`$KV.JETQ_CATALOG.<queue>.>`).
        .replace(
            &format!("_CATALOG.{TEMPLATE_QUEUE}."),
            &format!("_CATALOG.{queue}."),
        )
        // Its flow control: limits (`$KV.JETQ_LIMITS.{conf,rate,conc}.<queue>.>`) and unique
        // keys (`$KV.JETQ_UNIQUE.<queue>.>`), written and read by direct get.
        .replace(
            &format!(".conf.{TEMPLATE_QUEUE}."),
            &format!(".conf.{queue}."),
        )
        .replace(
            &format!(".rate.{TEMPLATE_QUEUE}."),
            &format!(".rate.{queue}."),
        )
        .replace(
            &format!(".conc.{TEMPLATE_QUEUE}."),
            &format!(".conc.{queue}."),
        )
        .replace(
            &format!("_UNIQUE.{TEMPLATE_QUEUE}."),
            &format!("_UNIQUE.{queue}."),
        )
        // Its queue's metrics history (`$KV.JETQ_METRICS.<queue>.<minute>`, PROTOCOL §15).
        .replace(
            &format!("_METRICS.{TEMPLATE_QUEUE}."),
            &format!("_METRICS.{queue}."),
        )
        .replace(
            &format!("WORKER_{}_", upper(TEMPLATE_QUEUE)),
            &format!("WORKER_{}_", upper(queue)),
        )
}

fn is_worker_user_line(line: &str) -> bool {
    line.trim_start().starts_with("{ user: worker-")
}

struct Block {
    queue_upper: String,
    start: usize,
    end: usize,
}

/// The top-level `WORKER_<QUEUE>_PERMISSIONS = { ... }` blocks, as line ranges.
fn worker_blocks(lines: &[&str]) -> Result<Vec<Block>, Error> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let Some(name) = line
            .strip_prefix("WORKER_")
            .and_then(|rest| rest.strip_suffix("_PERMISSIONS = {"))
        else {
            i += 1;
            continue;
        };
        let mut depth = 0i32;
        let mut end = None;
        for (j, line) in lines.iter().enumerate().skip(i) {
            depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
            if depth == 0 {
                end = Some(j + 1);
                break;
            }
        }
        let end = end.ok_or_else(|| {
            Error::Permissions(format!("WORKER_{name}_PERMISSIONS is not closed"))
        })?;
        blocks.push(Block {
            queue_upper: name.to_owned(),
            start: i,
            end,
        });
        i = end;
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines that matter to the server: comments and blank lines dropped.
    fn meaningful(text: &str) -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_example_queues_give_the_shipped_file() {
        let rendered = render(&["emails", "exports"], TaskRetention::WorkQueue).unwrap();
        assert_eq!(meaningful(&rendered), meaningful(SHIPPED));
    }

    #[test]
    fn other_queues_get_the_worker_role_with_their_names() {
        let rendered = render(&["reports", "bulk-mail"], TaskRetention::WorkQueue).unwrap();
        assert!(
            rendered.contains("WORKER_BULK_MAIL_PERMISSIONS = {"),
            "{rendered}"
        );
        assert!(rendered.contains("\"$JS.API.CONSUMER.MSG.NEXT.JETQ_TASKS.worker-bulk-mail\""));
        for level in ["~high", "~low"] {
            assert!(rendered.contains(&format!(
                "\"$JS.API.CONSUMER.MSG.NEXT.JETQ_TASKS.worker-bulk-mail{level}\""
            )));
            assert!(rendered.contains(&format!("\"$JS.ACK.JETQ_TASKS.worker-bulk-mail{level}.>\"")));
        }
        // Batch callbacks and chain links: the deployed queues' task subjects, in each role.
        for queue in ["reports", "bulk-mail"] {
            assert_eq!(
                rendered
                    .matches(&format!("\"jetq.task.{queue}.*\","))
                    .count(),
                2,
                "{rendered}"
            );
        }
        assert!(rendered.contains("\"$KV.JETQ_LIMITS.conc.reports.>\""));
        assert!(rendered.contains("\"$KV.JETQ_UNIQUE.bulk-mail.>\""));
        assert!(rendered.contains("\"jetq.dead.reports.*\""));
        assert!(
            meaningful(&rendered)
                .iter()
                .all(|line| !line.contains("emails")),
            "{rendered}"
        );
        let users = users(&rendered);
        assert!(users.contains(&(
            "worker-bulk-mail".into(),
            "JETQ_WORKER_BULK_MAIL_PASSWORD".into()
        )));
        assert!(users.contains(&("admin".into(), "JETQ_ADMIN_PASSWORD".into())));
        assert_eq!(users.len(), FIXED_USERS.len() + 2);
        for (user, variable) in users {
            assert_eq!(
                password_variable(&user),
                variable,
                "the Secret key of {user}"
            );
        }
    }

    /// The lines of `longer` that are not in `shorter`, which they were inserted into (trimmed).
    fn inserted<'a>(longer: &'a str, shorter: &str) -> Vec<&'a str> {
        let mut rest = shorter.lines().peekable();
        let mut added = Vec::new();
        for line in longer.lines() {
            if rest.peek() == Some(&line) {
                rest.next();
            } else {
                added.push(line.trim());
            }
        }
        assert_eq!(rest.next(), None, "a line of the shorter text is missing");
        added
    }

    #[test]
    fn limits_adds_the_purgers_rights_to_each_worker_role_only() {
        let queues = ["reports", "bulk-mail"];
        let plain = render(&queues, TaskRetention::WorkQueue).unwrap();
        let limits = render(&queues, TaskRetention::Limits).unwrap();
        let grants: Vec<String> = limits_grants()
            .iter()
            .map(|grant| format!("\"{grant}\","))
            .collect();
        for grant in &grants {
            // One more per worker role (the janitor already has the advisory stream's info).
            assert_eq!(
                limits.matches(grant.as_str()).count(),
                plain.matches(grant.as_str()).count() + queues.len(),
                "{limits}"
            );
        }
        // The rest is the workqueue rendering: the added lines are the header's note and the
        // grants, once per worker role.
        let mut expected = vec![
            "# taskRetention: limits: each worker-<queue> may also purge the task stream and read the",
            "# advisory stream (the purger of a Limits task stream, docs/DURABLE_DRAIN.md).",
        ];
        for _ in queues {
            expected.extend(grants.iter().map(String::as_str));
        }
        assert_eq!(inserted(&limits, &plain), expected);
    }
}
