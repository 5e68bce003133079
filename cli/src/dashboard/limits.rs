//! The dashboard's view of flow control (docs/FLOW_CONTROL.md, PROTOCOL.md §11): the "Limits"
//! section of the main page, `GET /api/limits` (the JSON of `jetq limits --json`, read by the
//! same [`Admin::limits`](crate::Admin::limits)) and `POST /api/limits/release?entry=<entry>`
//! (what `jetq limits release <entry>` does, through the same
//! [`limits::release`](crate::limits::release)). The release is a change: the guard in `mod.rs`
//! applies the token, read-only, `X-Jetq-Request` and same-origin checks to it as to replay and
//! discard.

use std::fmt::Write;

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;

use super::{admin_error, error_response, page::esc, AppState};
use crate::limits::{self, LimitsOverview, UniqueKeyHeld};

/// `GET /api/limits`: the configured limits, rate buckets, slots and unique keys held.
pub(super) async fn api_limits(State(state): State<AppState>) -> Response {
    match state.admin.limits().await {
        Ok(overview) => Json(overview).into_response(),
        Err(err) => admin_error(err),
    }
}

/// Query of a release.
#[derive(Debug, Deserialize)]
pub(super) struct ReleaseQuery {
    entry: Option<String>,
}

/// `POST /api/limits/release?entry=<entry>`: deletes one entry as listed (a unique key, a rate
/// bucket, a slot entry, a reservation); 404 when it does not exist.
pub(super) async fn api_release(
    State(state): State<AppState>,
    Query(query): Query<ReleaseQuery>,
) -> Response {
    let Some(entry) = query.entry.filter(|e| !e.trim().is_empty()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "name the entry to release: ?entry=<entry as listed>",
        );
    };
    match limits::release(&state.admin, &entry).await {
        Ok(released) => {
            tracing::info!(
                entry = %released.released,
                bucket = %released.bucket,
                "dashboard: flow-control entry released"
            );
            Json(released).into_response()
        }
        Err(err) => admin_error(err),
    }
}

fn release_button(entry: &str, read_only: bool) -> String {
    if read_only {
        String::new()
    } else {
        format!(
            "<button class=\"discard\" data-release=\"{0}\" title=\"delete this entry by hand \
             (jetq limits release)\">Release</button>",
            esc(entry)
        )
    }
}

/// When a unique key stops holding, as the hold says.
fn unique_until(u: &UniqueKeyHeld) -> String {
    let hold = &u.hold;
    if let Some(end) = &hold.expires_at {
        return format!("until {end}");
    }
    match hold.sequence {
        Some(seq) if hold.scope == "queued" => format!("while task seq {seq} waits"),
        Some(seq) => format!("until task seq {seq} ends"),
        None => match &hold.lease_until {
            Some(end) => format!("pending, lease until {end}"),
            None => "pending".to_owned(),
        },
    }
}

/// The "Limits" section: the limits the workers registered, the rate buckets (rate, burst, next
/// free time, tasks waiting), the concurrency entries (slots held, by whom, lease ends, tasks
/// waiting) and the unique keys held, each entry with a Release button.
pub(super) fn section(body: &mut String, overview: Result<&LimitsOverview, &str>, read_only: bool) {
    body.push_str(
        "<section id=\"limits\"><h2>Limits</h2><div id=\"limits-flash\" role=\"status\"></div>",
    );
    let overview = match overview {
        Err(err) => {
            let _ = write!(
                body,
                "<p class=\"muted\">Cannot read the flow-control state: {}</p></section>",
                esc(err)
            );
            return;
        }
        Ok(overview) if !overview.limits_bucket && !overview.unique_bucket => {
            body.push_str(
                "<p class=\"muted\" id=\"no-limits\">No flow control in use: neither rate or \
                 concurrency limits nor unique keys (docs/FLOW_CONTROL.md).</p></section>",
            );
            return;
        }
        Ok(overview) => overview,
    };
    let config = |queue: &str, task: &str| {
        overview
            .configured
            .iter()
            .find(|c| c.queue == queue && c.task == task)
    };

    body.push_str("<h3>Registered by the workers</h3>");
    if overview.configured.is_empty() {
        body.push_str("<p class=\"muted\">No worker registered a limit.</p>");
    } else {
        body.push_str(
            "<table id=\"limits-configured\"><thead><tr><th>Queue</th><th>Task</th>\
             <th class=\"num\">Rate</th><th class=\"num\">Burst</th><th class=\"num\">\
             Concurrency</th><th>Updated at</th></tr></thead><tbody>",
        );
        for c in &overview.configured {
            let per_key = |yes: bool| if yes { " per key" } else { "" };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"nowrap\">{}</td></tr>",
                esc(&c.queue),
                esc(&c.task),
                c.rate.map_or_else(
                    || "-".to_owned(),
                    |r| format!("{r}/s{}", per_key(c.rate_per_key))
                ),
                c.rate
                    .map_or_else(|| "-".to_owned(), |_| c.burst.unwrap_or(1).to_string()),
                c.concurrency.map_or_else(
                    || "-".to_owned(),
                    |n| format!("{n}{}", per_key(c.concurrency_per_key))
                ),
                esc(&c.updated_at),
            );
        }
        body.push_str("</tbody></table>");
    }

    body.push_str("<h3>Rate limits</h3>");
    if overview.rates.is_empty() {
        body.push_str("<p class=\"muted\">No rate bucket in use.</p>");
    } else {
        body.push_str(
            "<table id=\"limits-rate\"><thead><tr><th>Entry</th><th>Limit key</th>\
             <th class=\"num\">Rate</th><th class=\"num\">Burst</th><th>Next free</th>\
             <th class=\"num\">Reserved ahead</th><th class=\"num\">Waiting</th><th></th></tr>\
             </thead><tbody>",
        );
        for r in &overview.rates {
            let c = config(&r.queue, &r.task);
            let _ = write!(
                body,
                "<tr data-entry=\"{}\"><td><code>{}</code></td><td>{}</td><td class=\"num\">{}\
                 </td><td class=\"num\">{}</td><td class=\"nowrap\">{}</td><td class=\"num\">{} ms\
                 </td><td class=\"num\">{}</td><td class=\"nowrap\">{}</td></tr>",
                esc(&r.entry),
                esc(&r.entry),
                esc(r.limit_key.as_deref().unwrap_or("-")),
                c.and_then(|c| c.rate)
                    .map_or_else(|| "-".to_owned(), |rate| format!("{rate}/s")),
                c.and_then(|c| c.rate.map(|_| c.burst.unwrap_or(1)))
                    .map_or_else(|| "-".to_owned(), |b| b.to_string()),
                if r.reserved_ahead_ms == 0 && c.is_some() {
                    "now".to_owned()
                } else {
                    esc(&r.next_free_at)
                },
                r.reserved_ahead_ms,
                r.waiting,
                release_button(&r.entry, read_only),
            );
        }
        body.push_str("</tbody></table>");
    }

    body.push_str("<h3>Concurrency limits</h3>");
    if overview.concurrency.is_empty() {
        body.push_str("<p class=\"muted\">No concurrency entry in use.</p>");
    } else {
        body.push_str(
            "<table id=\"limits-concurrency\"><thead><tr><th>Entry</th><th>Limit key</th>\
             <th class=\"num\">Held</th><th>Held by (task, stream seq, lease until)</th>\
             <th class=\"num\">Waiting</th><th></th></tr></thead><tbody>",
        );
        for slots in &overview.concurrency {
            let max = config(&slots.queue, &slots.task)
                .and_then(|c| c.concurrency)
                .map_or_else(String::new, |max| format!(" of {max}"));
            let holders: Vec<String> = slots
                .running
                .iter()
                .map(|(seq, id, until)| {
                    format!("<code>{}</code> (seq {seq}) until {}", esc(id), esc(until))
                })
                .collect();
            let _ = write!(
                body,
                "<tr data-entry=\"{}\"><td><code>{}</code></td><td>{}</td>\
                 <td class=\"num\">{}{}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"nowrap\">{}</td></tr>",
                esc(&slots.entry),
                esc(&slots.entry),
                esc(slots.limit_key.as_deref().unwrap_or("-")),
                slots.running.len(),
                max,
                if holders.is_empty() {
                    "-".to_owned()
                } else {
                    holders.join("<br>")
                },
                slots.waiting,
                release_button(&slots.entry, read_only),
            );
        }
        body.push_str("</tbody></table>");
    }

    body.push_str("<h3>Unique keys held</h3>");
    if overview.unique.is_empty() {
        body.push_str("<p class=\"muted\">No unique key held.</p>");
    } else {
        body.push_str(
            "<table id=\"limits-unique\"><thead><tr><th>Key</th><th>Queue</th><th>Task</th>\
             <th>Held by task</th><th>Scope</th><th>Holds</th><th></th></tr></thead><tbody>",
        );
        for u in &overview.unique {
            let _ = write!(
                body,
                "<tr data-entry=\"{}\"><td><code>{}</code></td><td>{}</td><td>{}</td>\
                 <td><code>{}</code></td><td>{}</td><td>{}{}</td><td class=\"nowrap\">{}</td>\
                 </tr>",
                esc(&u.entry),
                esc(&u.key),
                esc(&u.queue),
                esc(&u.task),
                esc(&u.hold.task_id),
                esc(&u.hold.scope),
                esc(&unique_until(u)),
                if u.expired {
                    " <span class=\"badge idle\">expired</span>"
                } else {
                    ""
                },
                release_button(&u.entry, read_only),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(
        "<p class=\"muted\">Release deletes the entry as <code>jetq limits release</code> does: \
         a unique key lets the next enqueue with it be a new task (its holder keeps running); \
         a rate bucket's tokens are full again; a concurrency entry frees every slot of its \
         limit. <code>jetq limits prune</code> deletes every entry that holds nothing any more.\
         </p></section>",
    );
}
