//! One arm per command: turns parsed arguments into calls on the `jetq_cli` library, asks for
//! confirmation before destructive dead-letter commands, and hands results to [`crate::output`].

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    time::SystemTime,
};

use jetq_cli::{
    dashboard::{self, DashboardConfig},
    dead::{DeadLetter, ReplayOptions, Selection},
    schedules::schedules_path,
    Admin, AdminError,
};

use crate::{
    args::{
        enqueue_request, Cli, Command, DeadActionArgs, DeadCommand, QueuesAction, QueuesArgs,
        SchedulesAction, TasksCommand,
    },
    output::{
        cut, levels_text, print_cancel, print_catalog, print_dead_letters, print_dead_list,
        print_enqueued, print_pause, print_purge, print_queue_purge, print_queues, print_replay,
        print_schedule_control, print_schedule_run, print_schedules, print_task_detail,
        print_task_page, print_task_status, print_workers, Bar,
    },
};

pub(crate) async fn run(cli: Cli) -> Result<(), AdminError> {
    let json = cli.json;
    // `schedules` works without NATS too.
    if let Command::Schedules(args) = &cli.command {
        if let Some(action) = &args.action {
            let admin = Admin::from_env().await?;
            return schedule_action(&admin, action, json).await;
        }
        let path = schedules_path(args.file.as_deref())?;
        // The last fires need NATS; the schedules themselves do not.
        let views = match Admin::from_env().await {
            Ok(admin) => admin.schedules(&path, args.count).await?,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the last fires from NATS");
                jetq_cli::schedules::load_schedules(&path, args.count, chrono::Utc::now())?
            }
        };
        print_schedules(&views, json);
        return Ok(());
    }
    let admin = Admin::from_env().await?;
    match cli.command {
        Command::Queues(QueuesArgs {
            action: Some(QueuesAction::Purge(args)),
            ..
        }) => {
            let task = args.task.as_deref();
            let found = admin
                .count_queue(&args.queue, task, args.priority, args.delayed)
                .await?;
            if args.dry_run || found.total() == 0 {
                print_queue_purge(&found, true, json);
                return Ok(());
            }
            if !args.yes {
                let what = format!(
                    "`jetq queues purge` would delete {} task(s) of queue {}{}{}{}{}",
                    found.total(),
                    args.queue,
                    task.map(|t| format!(" (task {t})")).unwrap_or_default(),
                    args.priority
                        .map(|level| format!(" at priority {level}"))
                        .unwrap_or_default(),
                    levels_text(&found),
                    if found.delayed > 0 {
                        format!(", {} of them delayed", found.delayed)
                    } else {
                        String::new()
                    }
                );
                ask(what).await?;
            }
            let purged = admin
                .purge_queue(&args.queue, task, args.priority, args.delayed)
                .await?;
            print_queue_purge(&purged, false, json);
        }
        Command::Queues(args) => {
            let mut overview = admin.overview_sampled(args.interval).await?;
            if let Some(queue) = &args.queue {
                jetq_contract::name::validate(jetq_contract::NameKind::Queue, queue)?;
                overview.queues.retain(|q| &q.queue == queue);
                if overview.queues.is_empty() {
                    return Err(AdminError::NotFound {
                        what: format!("queue {queue}"),
                        hint: Some("`jetq queues` lists the known queues".into()),
                    });
                }
            }
            print_queues(&overview, json);
        }
        Command::Enqueue(args) => {
            let outcome = admin.enqueue(enqueue_request(args)?).await?;
            print_enqueued(&outcome, json);
        }
        Command::Dead(DeadCommand::List(args)) => {
            let filter = args.filter.filter(args.task_id.clone());
            let limit = (args.limit > 0).then_some(args.limit);
            let page = admin.dead_letters(&filter, limit).await?;
            print_dead_list(&page, json);
        }
        Command::Dead(DeadCommand::Show(args)) => {
            let letters = match (args.sequence, &args.task_id) {
                (Some(sequence), _) => vec![admin.dead_letter(sequence).await?],
                (None, Some(id)) => admin.dead_letters_of_task(id).await?,
                (None, None) => unreachable_usage()?,
            };
            print_dead_letters(&letters, json);
        }
        Command::Dead(DeadCommand::Replay(args)) => {
            let selection = args.selection()?;
            let single = matches!(&selection, Selection::Sequences(s) if s.len() == 1);
            if !args.dry_run && !args.yes && !single {
                confirm(&admin, &selection, &args, "replay", "re-enqueue").await?;
            }
            let bar = Bar::new("replaying", json);
            let options = ReplayOptions {
                dry_run: args.dry_run,
                ..ReplayOptions::default()
            };
            let report = admin.replay(&selection, &options, &bar).await;
            bar.finish();
            let report = report?;
            print_replay(&report, json);
            if let Some(err) = report.error() {
                return Err(err);
            }
        }
        Command::Dead(DeadCommand::Purge(args)) => {
            let selection = args.selection()?;
            if !args.dry_run && !args.yes {
                confirm(&admin, &selection, &args, "purge", "delete for good").await?;
            }
            let bar = Bar::new("purging", json);
            let report = admin.purge(&selection, args.dry_run, &bar).await;
            bar.finish();
            let report = report?;
            print_purge(&report, json);
            if let Some(first) = report.failures.first() {
                return Err(AdminError::Partial {
                    operation: "deletions",
                    failed: report.failed,
                    total: report.matched,
                    first: format!("dead letter {}: {}", first.dead_sequence, first.error),
                });
            }
        }
        Command::Pause(args) => {
            let until = match (args.for_, args.until) {
                (Some(duration), _) => Some(SystemTime::now() + duration),
                (None, until) => until,
            };
            let state = admin.pause(&args.queue, until).await?;
            print_pause(&state, json);
        }
        Command::Resume(args) => {
            let state = admin.resume(&args.queue).await?;
            print_pause(&state, json);
        }
        Command::Dashboard(args) => {
            let schedules_file = args.schedules_file.clone().or_else(|| {
                std::env::var_os(jetq_cli::schedules::SCHEDULES_FILE_ENV)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
            });
            let config = DashboardConfig {
                listen: args.listen,
                token: args.token.filter(|t| !t.is_empty()),
                read_only_token: args.read_only_token.filter(|t| !t.is_empty()),
                read_only: args.read_only,
                allow_no_auth: args.no_auth,
                sample_every: args.sample_every,
                history: args.history,
                schedules_file,
            };
            dashboard::run(admin, config, jetq_contract::bootstrap::shutdown_signal()).await?;
        }
        Command::Catalog(args) => {
            let listing = admin.catalog(args.queue.as_deref()).await?;
            print_catalog(&listing, args.queue.as_deref(), json);
        }
        Command::Limits(args) => jetq_cli::limits::run(&admin, &args, json).await?,
        Command::Status(args) => {
            let status = match args.wait {
                Some(timeout) => admin.wait_for_task(&args.task_id, timeout).await?,
                None => admin.task_status(&args.task_id).await?,
            };
            print_task_status(&status, json);
        }
        Command::Workers => {
            let workers = admin.workers().await?;
            print_workers(&workers, json);
        }
        Command::History(args) => {
            let range = jetq_cli::history::parse_range(&args.since)?;
            let listing = admin.metrics_history(args.queue.as_deref(), range).await?;
            crate::history::print_history(&listing, json);
        }
        Command::Batches => {
            let batches = admin.batches().await?;
            crate::workflows::print_batches(&batches, json);
        }
        Command::Chains => {
            let chains = admin.chains().await?;
            crate::workflows::print_chains(&chains, json);
        }
        Command::Batch(args) => {
            let detail = admin
                .batch_detail(&args.id, args.after.as_deref(), args.limit)
                .await?;
            crate::workflows::print_batch(&detail, json);
        }
        Command::Chain(args) => {
            let chain = admin.chain_detail(&args.id).await?;
            crate::workflows::print_chain(&chain, json);
        }
        Command::Tasks(TasksCommand::List(args)) => {
            let filter = jetq_cli::tasks::TaskFilter {
                state: args.state,
                queue: args.queue,
                task: args.task,
            };
            let page = jetq_cli::tasks::PageRequest {
                limit: args.limit,
                after: args.after,
            };
            let page = admin.tasks(&filter, &page).await?;
            print_task_page(&page, json);
        }
        Command::Tasks(TasksCommand::Show(args)) => {
            let detail = admin
                .task_detail(&args.task_id, args.queue.as_deref())
                .await?;
            print_task_detail(&detail, json);
        }
        Command::Cancel(args) => match args.task_id {
            Some(task_id) => {
                if !args.yes {
                    ask(format!("`jetq cancel` would cancel task {task_id}")).await?;
                }
                let report = admin.cancel_task(&task_id, args.queue.as_deref()).await?;
                print_cancel(&report, json);
            }
            None => {
                let filter = jetq_cli::cancel::bulk::CancelFilter {
                    queue: args.queue,
                    task: args.task,
                    states: args.state,
                };
                // The dry run first: the confirmation quotes its count.
                let counted = admin.cancel_matching(&filter, true, &()).await?;
                if args.dry_run || counted.matched == 0 {
                    crate::operator::print_bulk_cancel(&counted, json);
                    return Ok(());
                }
                if !args.yes {
                    ask(format!(
                        "`jetq cancel --all` would cancel {} task(s) matching {}",
                        counted.matched, counted.filter
                    ))
                    .await?;
                }
                let report = admin.cancel_matching(&filter, false, &()).await?;
                crate::operator::print_bulk_cancel(&report, json);
            }
        },
        Command::Schedules(_) => {}
    }
    Ok(())
}

/// `jetq schedules pause|resume|run <name>`.
async fn schedule_action(
    admin: &Admin,
    action: &SchedulesAction,
    json: bool,
) -> Result<(), AdminError> {
    let who = |by: &Option<String>| {
        by.clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "jetq-cli".into())
    };
    match action {
        SchedulesAction::Pause(args) | SchedulesAction::Resume(args) => {
            let paused = matches!(action, SchedulesAction::Pause(_));
            let control = admin
                .set_schedule_paused(&args.name, paused, &who(&args.by))
                .await?;
            print_schedule_control(&args.name, &control, json);
        }
        SchedulesAction::Run(args) => {
            let request = admin.run_schedule(&args.name, &who(&args.by)).await?;
            print_schedule_run(&args.name, &request, json);
        }
    }
    Ok(())
}

/// Asks on the terminal before a destructive command, showing how many dead letters it affects;
/// refuses (usage error naming `--yes`) when standard input is not a terminal. Nothing to do
/// (no match) needs no confirmation.
async fn confirm(
    admin: &Admin,
    selection: &Selection,
    args: &DeadActionArgs,
    command: &str,
    effect: &str,
) -> Result<(), AdminError> {
    let count = admin.count_selected(selection).await?;
    if count == 0 {
        return Ok(());
    }
    let scope = describe_selection(selection, args);
    ask(format!(
        "`jetq dead {command}` would {effect} {count} dead letter(s) ({scope})"
    ))
    .await
}

/// Asks `what. Continue? [y/N]` on the terminal; refuses (usage error naming `--yes`) when
/// standard input is not a terminal.
async fn ask(what: String) -> Result<(), AdminError> {
    if !std::io::stdin().is_terminal() {
        return Err(AdminError::ConfirmationRequired { what });
    }
    let prompt = format!("{what}. Continue? [y/N] ");
    let answer = tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{prompt}");
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|err| AdminError::Invalid(format!("cannot read the confirmation: {err}")))?
    .map_err(|err| AdminError::Invalid(format!("cannot read the confirmation: {err}")))?;
    if confirmed(&answer) {
        Ok(())
    } else {
        Err(AdminError::NotConfirmed)
    }
}

/// `y` or `yes` (any case) confirms; anything else, an empty line included, does not.
pub(crate) fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn describe_selection(selection: &Selection, args: &DeadActionArgs) -> String {
    match selection {
        Selection::Sequences(sequences) => {
            let list: Vec<String> = sequences.iter().map(u64::to_string).collect();
            format!("sequences {}", cut(&list.join(" "), 80))
        }
        Selection::Filter(_) if args.all => "all queues".into(),
        Selection::Filter(filter) => {
            let mut parts = Vec::new();
            if let Some(queue) = &filter.queue {
                parts.push(format!("queue {queue}"));
            }
            if let Some(task) = &filter.task {
                parts.push(format!("task {task}"));
            }
            if let Some(id) = &filter.task_id {
                parts.push(format!("task id {id}"));
            }
            if let Some(reason) = &filter.reason {
                parts.push(format!("reason {reason}"));
            }
            if let Some(age) = filter.older_than {
                parts.push(format!("older than {}", humantime::format_duration(age)));
            }
            if let Some(age) = filter.newer_than {
                parts.push(format!("newer than {}", humantime::format_duration(age)));
            }
            parts.join(", ")
        }
    }
}

fn unreachable_usage() -> Result<Vec<DeadLetter>, AdminError> {
    Err(AdminError::Invalid(
        "give a dead-letter sequence or --task-id".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::confirmed;

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y\n", "Y\n", "yes\n", " YES \r\n"] {
            assert!(confirmed(yes), "{yes:?}");
        }
        for no in ["\n", "", "n\n", "no\n", "yep\n", "sure\n"] {
            assert!(!confirmed(no), "{no:?}");
        }
    }
}
