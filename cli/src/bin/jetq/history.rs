//! `jetq history`: the per-minute metrics history (PROTOCOL.md §15), one row per queue and
//! minute with a record.

use jetq_cli::history::HistoryListing;
use jetq_contract::metrics_history::minute_start;

use crate::output::{print_json, table};

fn minute_text(minute: u64) -> String {
    let secs = minute_start(minute)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|at| at.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| minute.to_string())
}

fn opt(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

pub(crate) fn print_history(listing: &HistoryListing, json: bool) {
    if json {
        print_json(listing);
        return;
    }
    if !listing.exists {
        println!(
            "no metrics history: bucket {} does not exist (workers write it with JETQ_HISTORY on, the default; jetq-provision creates it)",
            listing.bucket
        );
        return;
    }
    if listing.records.is_empty() {
        println!(
            "no records from {} to {} UTC{}",
            minute_text(listing.from_minute),
            minute_text(listing.to_minute),
            listing
                .queue
                .as_deref()
                .map(|q| format!(" for queue {q}"))
                .unwrap_or_default()
        );
        return;
    }
    let rows = listing
        .records
        .iter()
        .map(|r| {
            vec![
                minute_text(r.minute),
                r.queue.clone(),
                r.succeeded.to_string(),
                r.failed.to_string(),
                r.retried.to_string(),
                r.dead.to_string(),
                r.runs.to_string(),
                opt(r.run_ms_quantile(0.5)),
                opt(r.run_ms_quantile(0.95)),
                if r.runs > 0 {
                    r.run_ms_max.to_string()
                } else {
                    "-".into()
                },
                opt(r.pending),
                opt(r.in_flight),
            ]
        })
        .collect();
    table(
        &[
            "MINUTE (UTC)",
            "QUEUE",
            "SUCCEEDED",
            "FAILED",
            "RETRIED",
            "DEAD",
            "RUNS",
            "P50 MS",
            "P95 MS",
            "MAX MS",
            "PENDING",
            "IN FLIGHT",
        ],
        rows,
    );
}
