//! What the operator commands print: `jetq workers`, `jetq tasks list|show`, `jetq cancel`,
//! `jetq schedules pause|resume|run` (tables, detail views, `--json`).

use jetq_cli::text::cut;

use crate::output::{print_json, table};

/// Seconds as a short age: `42s`, `3m12s`, `2h5m`.
fn age_text(secs: Option<f64>) -> String {
    let Some(secs) = secs else { return "-".into() };
    let secs = secs.max(0.0) as u64;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
    }
}

pub(crate) fn print_workers(workers: &[jetq_cli::workers::WorkerView], json: bool) {
    if json {
        print_json(&workers);
        return;
    }
    if workers.is_empty() {
        println!("no live workers (none wrote a presence record in the last 30 s)");
        return;
    }
    let rows = workers
        .iter()
        .map(|w| {
            vec![
                w.record.id.clone(),
                w.record.host.clone(),
                w.record.version.clone(),
                w.record.queues.join(","),
                w.record.concurrency.to_string(),
                w.record.running_count.to_string(),
                format!("{} ago", age_text(w.heartbeat_age_secs)),
            ]
        })
        .collect();
    table(
        &[
            "WORKER",
            "HOST",
            "VERSION",
            "QUEUES",
            "CONCURRENCY",
            "RUNNING",
            "HEARTBEAT",
        ],
        rows,
    );
    for w in workers.iter().filter(|w| !w.record.running.is_empty()) {
        println!();
        println!("{} runs:", w.record.id);
        let rows = w
            .record
            .running
            .iter()
            .zip(&w.running_for_secs)
            .map(|(task, secs)| {
                vec![
                    task.id.clone(),
                    format!("{}.{}", task.queue, task.task),
                    task.attempt.to_string(),
                    age_text(*secs),
                ]
            })
            .collect();
        table(&["  TASK ID", "TYPE", "ATTEMPT", "RUNNING FOR"], rows);
        let hidden = w
            .record
            .running_count
            .saturating_sub(w.record.running.len() as u64);
        if hidden > 0 {
            println!("  ... and {hidden} more");
        }
    }
}

pub(crate) fn print_task_page(page: &jetq_cli::tasks::TaskPage, json: bool) {
    if json {
        print_json(page);
        return;
    }
    if page.tasks.is_empty() {
        println!("no {} tasks", page.state);
        return;
    }
    let rows = page
        .tasks
        .iter()
        .map(|t| {
            let detail = match page.state {
                jetq_cli::tasks::ListState::Delayed => {
                    format!("due {}", t.not_before.clone().unwrap_or_else(|| "-".into()))
                }
                jetq_cli::tasks::ListState::Running => format!(
                    "attempt {} for {} on {}",
                    t.attempt.unwrap_or(0),
                    age_text(t.started_at.as_deref().and_then(jetq_cli::tasks::age_secs)),
                    t.worker.clone().unwrap_or_default()
                ),
                jetq_cli::tasks::ListState::Retrying => format!(
                    "attempt {} failed: {}",
                    t.attempt.unwrap_or(0),
                    cut(t.error.as_deref().unwrap_or(""), 60)
                ),
                jetq_cli::tasks::ListState::Dead => format!(
                    "{}: {}",
                    t.reason.clone().unwrap_or_else(|| "-".into()),
                    cut(t.error.as_deref().unwrap_or(""), 60)
                ),
                jetq_cli::tasks::ListState::Pending => format!(
                    "enqueued {}",
                    t.enqueued_at.clone().unwrap_or_else(|| "-".into())
                ),
            };
            vec![
                t.sequence.to_string(),
                t.id.clone().unwrap_or_else(|| "-".into()),
                t.queue.clone(),
                t.task.clone(),
                t.priority.clone(),
                detail,
            ]
        })
        .collect();
    table(
        &["SEQ", "TASK ID", "QUEUE", "TYPE", "PRIORITY", "DETAIL"],
        rows,
    );
    if let Some(next) = &page.next {
        println!("more: --after {next}");
    }
}

pub(crate) fn print_task_detail(detail: &jetq_cli::tasks::TaskDetail, json: bool) {
    if json {
        print_json(detail);
        return;
    }
    println!("task {}", detail.id);
    match &detail.location {
        Some(found) => println!(
            "  where:    {} ({} sequence {}, {}.{}, priority {})",
            found.place,
            found.task.stream,
            found.task.sequence,
            found.task.queue,
            found.task.task,
            found.task.priority
        ),
        None => println!("  where:    not waiting in a stream"),
    }
    if let Some(worker) = &detail.worker {
        println!("  running:  on {worker}");
    }
    if let Some(status) = &detail.status {
        println!(
            "  status:   {} (attempt {}/{})",
            status.state,
            status.attempt,
            status
                .max_attempts
                .map(|m| m.to_string())
                .unwrap_or_else(|| "?".into())
        );
    }
    if let Some(attempts) = &detail.attempts {
        println!("  hand-backs: {}", attempts.hand_backs);
        for failure in &attempts.failures {
            println!(
                "  attempt {} failed at {}: {}",
                failure.attempt, failure.at, failure.error
            );
        }
    }
    for dead in &detail.dead_letters {
        println!(
            "  dead letter {}: {} {}",
            dead.sequence,
            dead.reason.clone().unwrap_or_default(),
            dead.error.clone().unwrap_or_default()
        );
    }
}

pub(crate) fn print_cancel(report: &jetq_cli::cancel::CancelReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    match report.outcome.as_str() {
        "deleted" => println!(
            "task {} ({}) deleted from {} (sequence {}){}",
            report.id,
            report.was,
            report.stream.clone().unwrap_or_default(),
            report.sequence.unwrap_or(0),
            if report.raced {
                "; a worker took it meanwhile, so it may run once"
            } else {
                ""
            }
        ),
        "requested" => println!(
            "task {} is running{}: its handler was told to stop; it ends cancelled when it returns",
            report.id,
            report
                .worker
                .as_ref()
                .map(|w| format!(
                    " on worker {w} (its message is terminated: it will not run again)"
                ))
                .unwrap_or_default()
        ),
        "cancelled" => println!("task {} cancelled: it will not run", report.id),
        _ => println!(
            "task {} already finished ({}): nothing changed",
            report.id,
            report.state.clone().unwrap_or_default()
        ),
    }
}

pub(crate) fn print_bulk_cancel(report: &jetq_cli::cancel::bulk::BulkCancelReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    let states: Vec<String> = report
        .by_state
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    if report.dry_run || report.matched == 0 {
        println!(
            "{} task(s) match {}{}{}",
            report.matched,
            report.filter,
            if states.is_empty() { "" } else { ": " },
            states.join(", ")
        );
        return;
    }
    let outcomes: Vec<String> = report
        .by_outcome
        .iter()
        .map(|(outcome, n)| format!("{n} {outcome}"))
        .collect();
    println!(
        "{} of {} task(s) matching {} cancelled ({}); {} gone meanwhile, {} failed",
        report.cancelled,
        report.matched,
        report.filter,
        outcomes.join(", "),
        report.gone,
        report.failed
    );
    for failure in &report.failures {
        println!(
            "  failed: task {} (sequence {}): {}",
            failure.id.as_deref().unwrap_or("-"),
            failure.sequence,
            failure.error
        );
    }
}

pub(crate) fn print_schedule_control(
    name: &str,
    control: &jetq_cli::schedules::ScheduleControl,
    json: bool,
) {
    if json {
        print_json(&serde_json::json!({ "schedule": name, "control": control }));
        return;
    }
    println!(
        "schedule {name} {} (by {} at {})",
        if control.paused { "paused" } else { "resumed" },
        control.by,
        control.at
    );
}

pub(crate) fn print_schedule_run(name: &str, request: &str, json: bool) {
    let id = jetq_scheduler_run_id(name, request);
    if json {
        print_json(&serde_json::json!({ "schedule": name, "request": request, "task_id": id }));
        return;
    }
    println!("schedule {name}: run requested (request {request}); the task id is {id}");
}

fn jetq_scheduler_run_id(name: &str, request: &str) -> String {
    format!("{name}:run:{request}")
}
