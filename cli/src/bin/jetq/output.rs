//! What the command line prints: aligned tables, detail views, reports, the progress bar on
//! stderr, and `--json` output (one JSON document on stdout per command).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use jetq_cli::{
    catalog::CatalogListing,
    dead::{DeadLetter, Progress, PurgeReport, ReplayReport},
    pause::PauseState,
    purge::QueuePurge,
    schedules::ScheduleView,
    stats::{format_rate, Overview},
    EnqueueOutcome,
};
use serde::Serialize;

// What operators list and act on (workers, tasks, cancel, schedule controls), printed there.
pub(crate) use crate::operator::*;

// The library's, shared with the dashboard; `dispatch` takes it from here.
pub(crate) use jetq_cli::text::cut;

/// An indicatif progress bar on stderr, shown only on a terminal and without `--json` (it has no
/// colour, so `NO_COLOR` changes nothing).
pub(crate) struct Bar(Option<ProgressBar>);

impl Bar {
    pub(crate) fn new(verb: &str, json: bool) -> Bar {
        if json || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(&format!(
            "{verb} {{bar:40}} {{pos}}/{{len}} dead letters ({{rate}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        // indicatif's own {per_sec} prints four decimals (804.9470/s).
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&format_rate(state.per_sec()));
            },
        );
        bar.set_style(style);
        Bar(Some(bar))
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn set_total(&self, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total);
        }
    }
    fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
}

pub(crate) fn print_json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// Prints rows as aligned columns.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header.iter().copied())
        .add_rows(rows);
    // Columns two spaces apart and flush left, as `ls -l` and kubectl print them; widths are
    // display widths, so wide (CJK) names stay aligned.
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = std::io::stdout().lock();
    for line in table.lines() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), format_rate)
}

pub(crate) fn print_queues(overview: &Overview, json: bool) {
    if json {
        print_json(overview);
        return;
    }
    if overview.queues.is_empty() {
        println!("no queues yet: no worker has started and nothing was enqueued");
    } else {
        let rows = overview
            .queues
            .iter()
            .map(|q| {
                let state = q.state();
                vec![
                    q.queue.clone(),
                    q.pending_text(),
                    q.in_flight.to_string(),
                    q.max_in_flight
                        .map_or_else(|| "-".into(), |m| m.to_string()),
                    q.redelivered.to_string(),
                    q.stranded.to_string(),
                    q.dead.to_string(),
                    q.delayed.to_string(),
                    rate(q.rate.map(|r| r.delivered_per_sec)),
                    state,
                ]
            })
            .collect();
        table(
            &[
                "QUEUE",
                "PENDING",
                "IN FLIGHT",
                "MAX IN FLIGHT",
                "REDELIVERED",
                "STRANDED",
                "DEAD",
                "DELAYED",
                "RATE",
                "STATE",
            ],
            rows,
        );
    }
    match overview.rate {
        Some(rate) => println!(
            "\ntask stream: {} stored; {} enqueued, {} completed (over {:.1}s); RATE = \
             deliveries to workers per second",
            overview.tasks_stored,
            format_rate(rate.enqueued_per_sec),
            format_rate(rate.completed_per_sec),
            rate.interval_secs
        ),
        None => println!("\ntask stream: {} stored", overview.tasks_stored),
    }
}

pub(crate) fn print_task_status(status: &jetq_cli::status::TaskStatus, json: bool) {
    if json {
        print_json(status);
        return;
    }
    let attempts = match status.max_attempts {
        Some(max) => format!("{}/{max}", status.attempt),
        None => status.attempt.to_string(),
    };
    println!(
        "task        {} ({}.{})",
        status.id, status.queue, status.task
    );
    println!("state       {}", status.state.as_str());
    println!("attempt     {attempts}");
    let times = [
        ("enqueued", &status.enqueued_at),
        ("started", &status.started_at),
        ("finished", &status.finished_at),
        ("next try", &status.next_attempt_at),
        ("cancel req", &status.cancel_requested_at),
    ];
    for (label, at) in times {
        if let Some(at) = at {
            println!("{label:<11} {at}");
        }
    }
    println!("updated     {}", status.updated_at);
    if let Some(progress) = &status.progress {
        println!("progress    {:.0}% {}", progress.percent, progress.message);
    }
    if let Some(result) = &status.result {
        println!("result      {result}");
    }
    if let Some(reason) = &status.dead_reason {
        println!("dead        {}", reason.as_str());
    }
    if let Some(error) = &status.error {
        println!("error       {error}");
    }
    for artifact in &status.artifacts {
        println!("artifact    {} ({} bytes)", artifact.name, artifact.size);
    }
}

pub(crate) fn print_enqueued(outcome: &EnqueueOutcome, json: bool) {
    if json {
        print_json(outcome);
        return;
    }
    let duplicate = if outcome.duplicate {
        " (duplicate: a task with this id was already stored; nothing new was queued)"
    } else {
        ""
    };
    // `normal` is not named: the line reads as it did before priorities.
    let level = match outcome.priority {
        jetq_contract::Priority::Normal => String::new(),
        level => format!(" at priority {level}"),
    };
    match &outcome.not_before {
        Some(at) => println!(
            "enqueued task {} ({}.{}){level} to run at {at}, sequence {} in {}{duplicate}",
            outcome.id, outcome.queue, outcome.task, outcome.sequence, outcome.stream
        ),
        None => println!(
            "enqueued task {} ({}.{}){level}, sequence {} in {}{duplicate}",
            outcome.id, outcome.queue, outcome.task, outcome.sequence, outcome.stream
        ),
    }
}

pub(crate) fn print_dead_list(page: &jetq_cli::dead::DeadPage, json: bool) {
    if json {
        #[derive(Serialize)]
        struct Listing {
            total: u64,
            shown: usize,
            dead_letters: Vec<jetq_cli::dead::DeadSummary>,
        }
        print_json(&Listing {
            total: page.total,
            shown: page.dead_letters.len(),
            dead_letters: page.dead_letters.iter().map(DeadLetter::summary).collect(),
        });
        return;
    }
    if page.total == 0 {
        println!("no dead letters match");
        return;
    }
    let rows = page
        .dead_letters
        .iter()
        .map(|d| {
            vec![
                d.sequence.to_string(),
                d.queue.clone(),
                d.task.clone(),
                d.reason.clone().unwrap_or_else(|| "-".into()),
                d.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
                d.dead_at.clone(),
                d.task_id.clone().unwrap_or_else(|| "-".into()),
                cut(d.error.as_deref().unwrap_or("-"), 60),
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "QUEUE", "TASK", "REASON", "ATTEMPTS", "DEAD AT", "TASK ID", "ERROR",
        ],
        rows,
    );
    if (page.dead_letters.len() as u64) < page.total {
        println!(
            "\nshowing {} of {} (--limit 0 shows all)",
            page.dead_letters.len(),
            page.total
        );
    } else {
        println!("\n{} dead letter(s)", page.total);
    }
}

pub(crate) fn print_dead_letters(letters: &[DeadLetter], json: bool) {
    if json {
        if let [one] = letters {
            print_json(one);
        } else {
            print_json(&letters);
        }
        return;
    }
    for (i, d) in letters.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("dead letter {}", d.sequence);
        println!("  queue        {}", d.queue);
        println!("  task         {}", d.task);
        println!("  task id      {}", d.task_id.as_deref().unwrap_or("-"));
        println!("  reason       {}", d.reason.as_deref().unwrap_or("-"));
        println!(
            "  attempts     {}",
            d.attempts.map_or_else(|| "-".into(), |a| a.to_string())
        );
        println!("  dead at      {}", d.dead_at);
        println!("  enqueued at  {}", d.enqueued_at.as_deref().unwrap_or("-"));
        println!(
            "  task seq     {}",
            d.task_sequence
                .map_or_else(|| "-".into(), |s| s.to_string())
        );
        println!("  error        {}", d.error.as_deref().unwrap_or("-"));
        if let Some(failure) = &d.failure {
            if let Some(http) = &failure.http {
                let more = if http.body_truncated { " (cut)" } else { "" };
                println!("  http status  {}", http.status);
                println!("  http body    {}{more}", cut(&http.body, 500));
            }
            if !failure.history.is_empty() {
                println!("  history");
                for attempt in &failure.history {
                    println!(
                        "    #{} {} {:?}: {}",
                        attempt.attempt,
                        attempt.at,
                        attempt.outcome,
                        cut(&attempt.error, 200)
                    );
                }
            }
        }
        match (&d.args, &d.payload_text) {
            (Some(args), _) => println!(
                "  args         {}",
                serde_json::to_string(args).unwrap_or_default()
            ),
            (None, Some(text)) => println!("  payload      {} (not JSON)", cut(text, 500)),
            _ => {}
        }
        println!("  headers");
        for (name, values) in &d.headers {
            for value in values {
                println!("    {name}: {}", cut(value, 200));
            }
        }
    }
}

pub(crate) fn print_replay(report: &ReplayReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    if report.dry_run {
        println!(
            "dry run: {} dead letter(s) would be replayed",
            report.matched
        );
        for item in &report.items {
            let level = match item.priority.as_str() {
                "normal" => String::new(),
                level => format!(" at priority {level}"),
            };
            println!(
                "  {} {}.{} task {} -> {}{level}",
                item.dead_sequence,
                item.queue,
                item.task,
                item.task_id.as_deref().unwrap_or("-"),
                item.new_id
            );
        }
        print_replay_warnings(report);
        return;
    }
    println!(
        "replayed {} of {} dead letter(s){}{}",
        report.replayed,
        report.matched,
        if report.duplicates > 0 {
            format!(
                " ({} had already been re-enqueued by an earlier run; not stored twice)",
                report.duplicates
            )
        } else {
            String::new()
        },
        if report.failed > 0 {
            format!("; {} failed and were kept", report.failed)
        } else {
            String::new()
        }
    );
    for failure in &report.failures {
        println!("  dead letter {}: {}", failure.dead_sequence, failure.error);
    }
    print_replay_warnings(report);
}

/// Replays that went ahead with a warning (a `Jetq-Priority` that is not a level).
fn print_replay_warnings(report: &ReplayReport) {
    for item in &report.items {
        if let Some(warning) = &item.warning {
            println!("  dead letter {} (warning): {warning}", item.dead_sequence);
        }
    }
}

pub(crate) fn print_purge(report: &PurgeReport, json: bool) {
    if json {
        print_json(report);
        return;
    }
    if report.dry_run {
        println!(
            "dry run: {} dead letter(s) would be deleted",
            report.matched
        );
        if !report.sequences.is_empty() {
            let list: Vec<String> = report.sequences.iter().map(u64::to_string).collect();
            println!("  {}", cut(&list.join(" "), 2000));
        }
        return;
    }
    println!(
        "deleted {} of {} dead letter(s)",
        report.deleted, report.matched
    );
    for failure in &report.failures {
        println!("  dead letter {}: {}", failure.dead_sequence, failure.error);
    }
}

pub(crate) fn print_pause(state: &PauseState, json: bool) {
    if json {
        print_json(state);
        return;
    }
    // One consumer per priority level (`worker-q~high`, `worker-q`, `worker-q~low`).
    let consumers = match state.consumers.as_slice() {
        [] => format!("consumer {}", state.consumer),
        [one] => format!("consumer {one}"),
        many => format!("consumers {}", many.join(", ")),
    };
    match (&state.pause_until, state.paused, state.until_resumed) {
        (_, false, _) => println!("queue {} is delivering ({consumers})", state.queue),
        (_, true, true) | (None, true, _) => println!(
            "queue {} is paused until `jetq resume {}` ({consumers}); running tasks finish, new \
             tasks wait",
            state.queue, state.queue
        ),
        (Some(until), true, false) => println!(
            "queue {} is paused until {until} ({consumers}); running tasks finish, new tasks wait",
            state.queue
        ),
    }
}

/// What `jetq queues purge` found (`dry_run`: would delete) or deleted.
pub(crate) fn print_queue_purge(purge: &QueuePurge, dry_run: bool, json: bool) {
    if json {
        print_json(purge);
        return;
    }
    let scope = match (&purge.task, &purge.priority) {
        (Some(task), None) => format!("queue {} (task {task})", purge.queue),
        (None, None) => format!("queue {}", purge.queue),
        (Some(task), Some(level)) => {
            format!("queue {} (task {task}, priority {level})", purge.queue)
        }
        (None, Some(level)) => format!("queue {} (priority {level})", purge.queue),
    };
    let verb = if dry_run { "would delete" } else { "deleted" };
    let delayed = if purge.delayed > 0 {
        format!(" ({} delayed)", purge.delayed)
    } else {
        String::new()
    };
    println!(
        "{scope}: {verb} {} task(s){}{delayed}",
        purge.total(),
        levels_text(purge)
    );
}

/// The task-stream tasks of a queue purge per level, ` (high 2, normal 5)`, when a level other
/// than `normal` has some; empty otherwise (the text is then as before priorities).
pub(crate) fn levels_text(purge: &QueuePurge) -> String {
    let by = &purge.tasks_by_priority;
    // One level asked for: the scope already names it.
    if purge.priority.is_some() || (by.high == 0 && by.low == 0) {
        return String::new();
    }
    let levels: Vec<String> = jetq_contract::Priority::ALL
        .into_iter()
        .filter(|level| by.get(*level) > 0)
        .map(|level| format!("{level} {}", by.get(level)))
        .collect();
    format!(" ({})", levels.join(", "))
}

pub(crate) fn print_catalog(listing: &CatalogListing, queue: Option<&str>, json: bool) {
    if json {
        print_json(listing);
        return;
    }
    if !listing.exists {
        println!(
            "no task-type catalog yet (bucket {}): workers publish their task types at startup",
            listing.bucket
        );
        return;
    }
    if listing.is_empty() {
        match queue {
            Some(queue) => println!("no task types of queue {queue} in the catalog"),
            None => println!("the catalog {} is empty", listing.bucket),
        }
        return;
    }
    if !listing.entries.is_empty() {
        let rows = listing
            .entries
            .iter()
            .map(|e| {
                vec![
                    e.queue.clone(),
                    e.task.clone(),
                    e.max_attempts.to_string(),
                    humantime::format_duration(e.timeout()).to_string(),
                    if e.tracked { "yes".into() } else { "no".into() },
                    e.updated_at.clone(),
                ]
            })
            .collect();
        table(
            &[
                "QUEUE",
                "TASK",
                "ATTEMPTS",
                "TIMEOUT",
                "TRACKED",
                "UPDATED AT",
            ],
            rows,
        );
    }
    if !listing.unreadable.is_empty() {
        println!("\nnot task types (producers ignore them):");
        for entry in &listing.unreadable {
            println!("  {}: {}", entry.key, cut(&entry.error, 200));
        }
    }
}

pub(crate) fn print_schedules(views: &[ScheduleView], json: bool) {
    if json {
        print_json(&views);
        return;
    }
    if views.is_empty() {
        println!("the schedules file has no schedules");
        return;
    }
    let rows = views
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                format!("{} ({})", s.cron, s.timezone),
                format!("{}.{}", s.queue, s.task),
                if s.enabled { "yes".into() } else { "no".into() },
                match &s.control {
                    Some(c) if c.paused => format!("yes (by {} at {})", c.by, c.at),
                    _ => "no".into(),
                },
                s.handled_until.clone().unwrap_or_else(|| "-".into()),
                if s.next_fires.is_empty() {
                    "-".into()
                } else {
                    s.next_fires.join(", ")
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "CRON",
            "TASK",
            "ENABLED",
            "PAUSED",
            "LAST FIRE (HANDLED UNTIL)",
            "NEXT FIRES (UTC)",
        ],
        rows,
    );
}
