//! The dashboard's view of the task-type catalog (`docs/PROTOCOL.md` §9): the Task types page
//! (`/catalog`, template `catalog.html`) and `GET /api/catalog` (the same JSON as `jetq catalog --json`).

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};

use super::{admin_error, chrome, overview_body, page, AppState, Caller};

/// `GET /api/catalog`: every entry, and the keys that are not entries.
pub(super) async fn api_catalog(State(state): State<AppState>) -> Response {
    match state.admin.catalog(None).await {
        Ok(listing) => Json(listing).into_response(),
        Err(err) => admin_error(err),
    }
}

/// `GET /catalog`: one row per task type, then the keys producers ignore.
pub(super) async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "catalog", "Task types", &overview);
    let context = match state.admin.catalog(None).await {
        Ok(listing) => {
            let entries: Vec<serde_json::Value> = listing
                .entries
                .iter()
                .map(|entry| {
                    let mut row = serde_json::to_value(entry).unwrap_or_default();
                    if let Some(fields) = row.as_object_mut() {
                        fields.insert(
                            "timeout_text".into(),
                            humantime::format_duration(entry.timeout())
                                .to_string()
                                .into(),
                        );
                    }
                    row
                })
                .collect();
            serde_json::json!({ "listing": listing, "entries": entries })
        }
        Err(err) => serde_json::json!({ "error": err.to_string() }),
    };
    page::respond(StatusCode::OK, "catalog.html", &chrome, context)
}
