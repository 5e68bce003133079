//! The console's HTML: minijinja templates (`cli/templates/*.html`), embedded in the binary at
//! build time, rendered on the server with HTML auto-escaping. One base layout
//! (`base.html`: navigation, the read-only badge, the dead-letter count) is extended by one
//! template per page. The style sheet and the script are served by the dashboard itself
//! (`/static/console.css`, `/static/console.js`): no external resources, so the console works
//! offline.

use std::sync::OnceLock;

use axum::{
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
};
use minijinja::{Environment, Value};
use serde::Serialize;

/// The templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("message.html", include_str!("../../templates/message.html")),
    (
        "unauthorized.html",
        include_str!("../../templates/unauthorized.html"),
    ),
    (
        "overview.html",
        include_str!("../../templates/overview.html"),
    ),
    ("queues.html", include_str!("../../templates/queues.html")),
    (
        "dead_list.html",
        include_str!("../../templates/dead_list.html"),
    ),
    (
        "dead_detail.html",
        include_str!("../../templates/dead_detail.html"),
    ),
    ("limits.html", include_str!("../../templates/limits.html")),
    ("catalog.html", include_str!("../../templates/catalog.html")),
    (
        "schedules.html",
        include_str!("../../templates/schedules.html"),
    ),
    ("status.html", include_str!("../../templates/status.html")),
    ("tasks.html", include_str!("../../templates/tasks.html")),
    (
        "task_detail.html",
        include_str!("../../templates/task_detail.html"),
    ),
    ("workers.html", include_str!("../../templates/workers.html")),
    ("history.html", include_str!("../../templates/history.html")),
    ("batches.html", include_str!("../../templates/batches.html")),
    (
        "batch_detail.html",
        include_str!("../../templates/batch_detail.html"),
    ),
    (
        "chain_detail.html",
        include_str!("../../templates/chain_detail.html"),
    ),
];

/// The style sheet, served at `/static/console.css`.
pub(super) const CSS: &str = include_str!("../../templates/static/console.css");
/// The script, served at `/static/console.js`.
pub(super) const JS: &str = include_str!("../../templates/static/console.js");

/// One entry of the navigation.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct NavItem {
    page: &'static str,
    href: &'static str,
    label: &'static str,
}

/// The pages, in the navigation's order.
pub(super) const NAV: &[NavItem] = &[
    NavItem {
        page: "overview",
        href: "/",
        label: "Overview",
    },
    NavItem {
        page: "queues",
        href: "/queues",
        label: "Queues",
    },
    NavItem {
        page: "tasks",
        href: "/tasks",
        label: "Tasks",
    },
    NavItem {
        page: "dead",
        href: "/dead",
        label: "Dead letters",
    },
    NavItem {
        page: "history",
        href: "/history",
        label: "History",
    },
    NavItem {
        page: "batches",
        href: "/batches",
        label: "Batches",
    },
    NavItem {
        page: "workers",
        href: "/workers",
        label: "Workers",
    },
    NavItem {
        page: "limits",
        href: "/limits",
        label: "Limits",
    },
    NavItem {
        page: "catalog",
        href: "/catalog",
        label: "Task types",
    },
    NavItem {
        page: "schedules",
        href: "/schedules",
        label: "Schedules",
    },
];

/// What every page shows around its content (the base layout's context).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Chrome {
    /// The page's key in [`NAV`] (marks the current entry).
    pub page: &'static str,
    /// The title, before `· jetq`.
    pub title: String,
    /// The server's version, in the header.
    pub server_version: String,
    /// Who is looking (token user and role, or remote address).
    pub who: Option<String>,
    /// False for a read-only dashboard or token: no buttons.
    pub can_act: bool,
    /// Dead letters in all, from the same overview sample as the queue counts.
    pub dead_total: Option<u64>,
    /// The navigation.
    pub nav: &'static [NavItem],
    /// The overview JSON the script starts from (`/api/overview`'s body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<serde_json::Value>,
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are part of the binary; the unit test below parses every one.
            if let Err(err) = env.add_template(name, source) {
                tracing::error!(template = name, error = %err, "dashboard template does not parse");
            }
        }
        env.add_filter("thousands", thousands);
        env.set_formatter(|out, state, value| {
            // minijinja's HTML escaping also writes `/` as `&#x2f;`; these five are enough
            // for element content and quoted attributes, and keep paths and rates readable.
            match value.as_str() {
                Some(text)
                    if !value.is_safe()
                        && matches!(state.auto_escape(), minijinja::AutoEscape::Html) =>
                {
                    out.write_str(&esc(text))?;
                    Ok(())
                }
                _ => minijinja::escape_formatter(out, state, value),
            }
        });
        env
    })
}

/// Escapes text for HTML element content and quoted attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole number with thousands separators (`3,177`); anything else as is.
fn thousands(value: Value) -> String {
    match i64::try_from(value.clone()) {
        Ok(n) => group(n),
        Err(_) => value.to_string(),
    }
}

/// `1234567` as `1,234,567`.
pub(super) fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Renders `template` with the chrome and the page's own context (its fields win).
pub(super) fn render(
    template: &str,
    chrome: &Chrome,
    page: impl Serialize,
) -> Result<String, String> {
    let mut context = serde_json::to_value(chrome).map_err(|err| err.to_string())?;
    let own = serde_json::to_value(page).map_err(|err| err.to_string())?;
    if let (Some(into), serde_json::Value::Object(from)) = (context.as_object_mut(), own) {
        into.extend(from);
    }
    environment()
        .get_template(template)
        .and_then(|t| t.render(Value::from_serialize(&context)))
        .map_err(|err| {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(inner) = source {
                text.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            text
        })
}

/// [`render`] as a response: 200 with the page, or 500 saying which template failed.
pub(super) fn respond(
    status: StatusCode,
    template: &str,
    chrome: &Chrome,
    page: impl Serialize,
) -> Response {
    match render(template, chrome, page) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(template, error = %err, "dashboard page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the page could not be rendered ({template}): {err}"),
            )
                .into_response()
        }
    }
}

/// A page with one message (an error, a missing dead letter).
pub(super) fn message(status: StatusCode, chrome: &Chrome, heading: &str, text: &str) -> Response {
    respond(
        status,
        "message.html",
        chrome,
        serde_json::json!({ "heading": heading, "message": text }),
    )
}

/// The page of a request without a valid token (no chrome: nothing about the installation).
pub(super) fn unauthorized() -> String {
    environment()
        .get_template("unauthorized.html")
        .and_then(|t| t.render(()))
        .unwrap_or_else(|_| "Authentication required".to_owned())
}

/// A static asset's response, cached by the browser for an hour.
pub(super) fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Percent-encodes a query value or path segment (everything but unreserved characters).
pub(super) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A query field trimmed; `None` when absent or blank.
pub(super) fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|err| panic!("{name}: {err}"));
        }
    }

    #[test]
    fn values_are_escaped_and_numbers_grouped() {
        let chrome = Chrome {
            page: "overview",
            title: "t".into(),
            server_version: "2.11".into(),
            who: None,
            can_act: true,
            dead_total: Some(3177),
            nav: NAV,
            initial: Some(serde_json::json!({"e": "</script><script>alert(1)</script>"})),
        };
        let html = render(
            "message.html",
            &chrome,
            serde_json::json!({"heading": "<b>x</b>", "message": "a & b"}),
        )
        .unwrap();
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "{html}");
        assert!(html.contains("href=\"/dead\""), "{html}");
        assert!(html.contains("a &amp; b"));
        assert!(html.contains(">3,177<"), "{html}");
        assert!(!html.contains("</script><script>alert"), "{html}");
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(-1234567), "-1,234,567");
    }
}
