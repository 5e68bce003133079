//! Output of `jetq batches`, `jetq batch <id>` and `jetq chain <id>`.

use std::io::Write;

use jetq_cli::workflows::{BatchDetail, BatchRow, ChainRow};
use jetq_contract::workflow::{batch::Callback, ChainRecord, ChainState};
use serde::Serialize;

fn print_json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header.iter().copied())
        .add_rows(rows);
    println!("{table}");
}

fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

pub(crate) fn print_batches(batches: &[BatchRow], json: bool) {
    if json {
        print_json(&batches);
        return;
    }
    if batches.is_empty() {
        println!("no batches (none made, or their records expired after 7 days)");
        return;
    }
    let rows = batches
        .iter()
        .map(|b| {
            let mut fired = Vec::new();
            if b.completed_fired {
                fired.push("on_complete");
            }
            if b.success_fired {
                fired.push("on_success");
            }
            vec![
                b.id.clone(),
                json_text(&b.state).trim_matches('"').to_owned(),
                b.total.to_string(),
                b.succeeded.to_string(),
                b.dead.to_string(),
                b.pending.to_string(),
                b.running.to_string(),
                if fired.is_empty() {
                    "-".to_owned()
                } else {
                    fired.join(",")
                },
                if b.chord { "chord" } else { "" }.to_owned(),
                b.parent.clone().unwrap_or_default(),
                b.created_at.clone(),
            ]
        })
        .collect();
    table(
        &[
            "BATCH",
            "STATE",
            "TOTAL",
            "SUCCEEDED",
            "DEAD",
            "PENDING",
            "RUNNING",
            "FIRED",
            "KIND",
            "PARENT",
            "CREATED",
        ],
        rows,
    );
}

pub(crate) fn print_chains(chains: &[ChainRow], json: bool) {
    if json {
        print_json(&chains);
        return;
    }
    if chains.is_empty() {
        println!("no chains (none made, or their records expired after 7 days)");
        return;
    }
    let rows = chains
        .iter()
        .map(|c| {
            let state = json_text(&c.state).trim_matches('"').to_owned();
            let at = match c.failed_at {
                Some(failed) => format!("failed at link {failed}"),
                None if state == "succeeded" => "done".to_owned(),
                None => format!("link {}", c.at),
            };
            vec![
                c.id.clone(),
                state,
                c.links.to_string(),
                at,
                c.created_at.clone(),
            ]
        })
        .collect();
    table(&["CHAIN", "STATE", "LINKS", "WHERE", "CREATED"], rows);
}

fn callback_text(callback: &Option<Callback>) -> String {
    match callback {
        Some(c) => format!("{}.{} {}", c.queue, c.task, json_text(&c.args)),
        None => "-".to_owned(),
    }
}

pub(crate) fn print_batch(detail: &BatchDetail, json: bool) {
    if json {
        print_json(detail);
        return;
    }
    println!("batch       {}", detail.id);
    println!("state       {}", json_text(&detail.state).trim_matches('"'));
    println!(
        "members     {} total, {} succeeded, {} dead, {} pending ({} running, {} queued)",
        detail.total, detail.succeeded, detail.dead, detail.pending, detail.running, detail.queued
    );
    println!("chord       {}", yes_no(detail.chord));
    if let Some(parent) = &detail.parent {
        println!("parent      {parent}");
    }
    println!("created     {}", detail.created_at);
    let firing = |fire: &Option<jetq_contract::workflow::Fire>| match fire {
        Some(f) => match &f.done_at {
            Some(done) => format!("fired at {done}"),
            None => format!("firing since {}", f.started_at),
        },
        None => "not fired".to_owned(),
    };
    println!(
        "on_complete {} ({})",
        callback_text(&detail.on_complete),
        firing(&detail.completed)
    );
    println!(
        "on_success  {} ({})",
        callback_text(&detail.on_success),
        firing(&detail.succeeded_all)
    );
    if !detail.running_members.is_empty() {
        println!();
        let rows = detail
            .running_members
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    format!("{}.{}", m.queue, m.task),
                    m.attempt.to_string(),
                    m.started_at.clone(),
                    m.worker.clone(),
                ]
            })
            .collect();
        table(&["RUNNING", "TASK", "ATTEMPT", "STARTED", "WORKER"], rows);
    }
    println!();
    if detail.members.is_empty() {
        println!("no finished members on this page");
    } else {
        let rows = detail
            .members
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    json_text(&m.outcome).trim_matches('"').to_owned(),
                    m.at.clone(),
                    m.result.as_ref().map(json_text).unwrap_or_default(),
                ]
            })
            .collect();
        table(&["MEMBER", "OUTCOME", "AT", "RESULT"], rows);
    }
    if let Some(next) = &detail.next_after {
        println!();
        println!("more: jetq batch {} --after {next}", detail.id);
    }
}

pub(crate) fn print_chain(chain: &ChainRecord, json: bool) {
    if json {
        print_json(chain);
        return;
    }
    println!("chain    {}", chain.id);
    println!("state    {}", json_text(&chain.state).trim_matches('"'));
    println!("created  {}", chain.created_at);
    println!();
    let rows = chain
        .links
        .iter()
        .enumerate()
        .map(|(index, link)| {
            let where_ = match (chain.state, chain.failed_at) {
                (ChainState::Failed, Some(failed)) if failed == index => "failed (dead-lettered)",
                (ChainState::Failed, Some(failed)) if index > failed => "not run",
                (ChainState::Succeeded, _) => "succeeded",
                (_, _) if index < chain.at => "succeeded",
                (ChainState::Running, _) if index == chain.at => "enqueued / running",
                _ => "waiting",
            };
            vec![
                index.to_string(),
                format!("{}.{}", link.queue, link.task),
                json_text(&link.args),
                yes_no(link.with_previous).to_owned(),
                where_.to_owned(),
            ]
        })
        .collect();
    table(&["LINK", "TYPE", "ARGS", "PREVIOUS", "STATE"], rows);
}
