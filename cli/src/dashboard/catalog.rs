//! The dashboard's view of the task-type catalog (`docs/PROTOCOL.md` §9): the "Task types"
//! section of the main page and `GET /api/catalog` (the same JSON as `jetq catalog --json`).

use std::fmt::Write;

use axum::{
    extract::State,
    response::{IntoResponse, Response},
    Json,
};

use super::{admin_error, page::esc, AppState};
use crate::catalog::CatalogListing;

/// `GET /api/catalog`: every entry, and the keys that are not entries.
pub(super) async fn api_catalog(State(state): State<AppState>) -> Response {
    match state.admin.catalog(None).await {
        Ok(listing) => Json(listing).into_response(),
        Err(err) => admin_error(err),
    }
}

/// The "Task types" section: one row per type, then the keys producers ignore.
pub(super) fn section(body: &mut String, catalog: Result<&CatalogListing, &str>) {
    body.push_str("<section id=\"catalog\"><h2>Task types</h2>");
    match catalog {
        Err(err) => {
            let _ = write!(
                body,
                "<p class=\"muted\">Cannot read the task-type catalog: {}</p>",
                esc(err)
            );
        }
        Ok(listing) if !listing.exists => {
            let _ = write!(
                body,
                "<p class=\"muted\">No task-type catalog yet (bucket <code>{}</code>): workers \
                 publish their task types when they start.</p>",
                esc(&listing.bucket)
            );
        }
        Ok(listing) if listing.is_empty() => {
            body.push_str("<p class=\"muted\">The task-type catalog is empty.</p>")
        }
        Ok(listing) => {
            body.push_str(
                "<table id=\"catalog-table\"><thead><tr><th>Queue</th><th>Task</th>\
                 <th class=\"num\">Attempts</th><th class=\"num\">Timeout</th><th>Tracked</th>\
                 <th>Updated at</th></tr></thead><tbody>",
            );
            for entry in &listing.entries {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                     <td>{}</td><td>{}</td></tr>",
                    esc(&entry.queue),
                    esc(&entry.task),
                    entry.max_attempts,
                    esc(&humantime::format_duration(entry.timeout()).to_string()),
                    if entry.tracked {
                        "<span class=\"badge\">tracked</span>"
                    } else {
                        "no"
                    },
                    esc(&entry.updated_at),
                );
            }
            body.push_str("</tbody></table>");
            if !listing.unreadable.is_empty() {
                body.push_str(
                    "<p class=\"muted\">Not task types (producers ignore them):</p><ul \
                     id=\"catalog-unreadable\">",
                );
                for entry in &listing.unreadable {
                    let _ = write!(
                        body,
                        "<li><code>{}</code>: {}</li>",
                        esc(&entry.key),
                        esc(&entry.error)
                    );
                }
                body.push_str("</ul>");
            }
            body.push_str(
                "<p class=\"muted\">Published by the workers at startup; producers in every \
                 language track a <em>tracked</em> type's tasks without being asked.</p>",
            );
        }
    }
    body.push_str("</section>");
}
