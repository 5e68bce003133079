//! The console's metrics history (PROTOCOL.md §15): the History page (`/history?queue=&range=`,
//! template `history.html`) with per-queue charts of the last 1 h, 6 h or 24 h — tasks
//! succeeded, failed and dead per minute, queue depth, run time p50/p95 — drawn on the server
//! as inline SVG (no script, no chart library), and `GET /api/history?queue=&range=` (the
//! records as JSON, as `jetq history --json`).

use std::collections::BTreeMap;

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use jetq_contract::metrics_history::{minute_start, MinuteRecord};
use serde::{Deserialize, Serialize};

use super::{admin_error, chrome, overview_body, page, AppState, Caller};
use crate::history::{parse_range, HistoryListing};

/// The ranges the page offers.
const RANGES: [&str; 3] = ["1h", "6h", "24h"];

/// Chart geometry, in the SVG's own units (it scales to the page's width).
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 50.0;
const RIGHT: f64 = 592.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 146.0;

/// `?queue=&range=` of the page and the API.
#[derive(Debug, Default, Deserialize)]
pub(super) struct HistoryQuery {
    queue: Option<String>,
    range: Option<String>,
}

impl HistoryQuery {
    fn queue(&self) -> Option<&str> {
        self.queue.as_deref().filter(|q| !q.is_empty())
    }

    fn range(&self) -> &str {
        self.range
            .as_deref()
            .filter(|r| !r.is_empty())
            .unwrap_or("1h")
    }
}

async fn read(state: &AppState, query: &HistoryQuery) -> Result<HistoryListing, Response> {
    let range = parse_range(query.range()).map_err(admin_error)?;
    state
        .admin
        .metrics_history(query.queue(), range)
        .await
        .map_err(admin_error)
}

/// `GET /api/history?queue=&range=`: the records of the range (400 for a bad queue or range).
pub(super) async fn api_history(
    State(state): State<AppState>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    match read(&state, &query).await {
        Ok(listing) => Json(listing).into_response(),
        Err(response) => response,
    }
}

/// `GET /history?queue=&range=`: one block of charts per queue.
pub(super) async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let overview = overview_body(&state).await;
    let chrome = chrome(&state, &caller, "history", "History", &overview);
    let known: Vec<String> = overview
        .overview
        .as_ref()
        .map(|o| o.queues.iter().map(|q| q.queue.clone()).collect())
        .unwrap_or_default();
    let (status, context) = match read(&state, &query).await {
        Ok(listing) => {
            let mut queues = known.clone();
            queues.extend(listing.queues());
            queues.sort();
            queues.dedup();
            let blocks: Vec<QueueBlock> = group(&listing)
                .into_iter()
                .map(|(queue, records)| {
                    QueueBlock::new(queue, &records, listing.from_minute, listing.to_minute)
                })
                .collect();
            (
                StatusCode::OK,
                serde_json::json!({
                    "listing": { "bucket": listing.bucket, "exists": listing.exists },
                    "blocks": blocks,
                    "queues": queues,
                    "queue": query.queue(),
                    "range": query.range(),
                    "ranges": RANGES,
                    "from": clock(listing.from_minute, true),
                    "to": clock(listing.to_minute, true),
                }),
            )
        }
        Err(response) => {
            let status = response.status();
            (
                status,
                serde_json::json!({
                    "error": format!("cannot read the history (queue {:?}, range {:?})", query.queue().unwrap_or("all"), query.range()),
                    "queues": known,
                    "queue": query.queue(),
                    "range": query.range(),
                    "ranges": RANGES,
                }),
            )
        }
    };
    page::respond(status, "history.html", &chrome, context)
}

fn group(listing: &HistoryListing) -> BTreeMap<String, Vec<MinuteRecord>> {
    let mut queues: BTreeMap<String, Vec<MinuteRecord>> = BTreeMap::new();
    for record in &listing.records {
        queues
            .entry(record.queue.clone())
            .or_default()
            .push(record.clone());
    }
    queues
}

/// `HH:MM` (UTC) of a minute, with the date when `date`.
fn clock(minute: u64, date: bool) -> String {
    let secs = minute_start(minute)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|at| {
            at.format(if date { "%Y-%m-%d %H:%M UTC" } else { "%H:%M" })
                .to_string()
        })
        .unwrap_or_default()
}

/// One queue's charts and totals.
#[derive(Debug, Serialize)]
struct QueueBlock {
    queue: String,
    totals: Totals,
    charts: Vec<Chart>,
}

#[derive(Debug, Serialize)]
struct Totals {
    succeeded: u64,
    failed: u64,
    retried: u64,
    dead: u64,
    runs: u64,
    run_ms_mean: Option<u64>,
    run_ms_p50: Option<u64>,
    run_ms_p95: Option<u64>,
    run_ms_max: u64,
    minutes: usize,
    pending_last: Option<u64>,
}

/// One chart: its series as polylines, the y axis's top value, the x axis's time labels.
#[derive(Debug, Serialize)]
struct Chart {
    id: String,
    title: &'static str,
    unit: &'static str,
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    y_max: String,
    y_mid: String,
    y_mid_at: f64,
    x_labels: Vec<XLabel>,
    series: Vec<Series>,
}

#[derive(Debug, Serialize)]
struct XLabel {
    x: f64,
    text: String,
    /// `start`, `middle` or `end`: the first and last labels stay inside the chart.
    anchor: &'static str,
}

#[derive(Debug, Serialize)]
struct Series {
    name: &'static str,
    class: &'static str,
    /// Polylines (`x,y x,y …`); a minute without a value breaks the line.
    segments: Vec<String>,
    /// The series' largest value in the range.
    max: u64,
}

impl QueueBlock {
    fn new(queue: String, records: &[MinuteRecord], from: u64, to: u64) -> QueueBlock {
        let mut total = MinuteRecord::new(&queue, 0);
        for record in records {
            total.merge(record);
        }
        let by_minute: BTreeMap<u64, &MinuteRecord> =
            records.iter().map(|r| (r.minute, r)).collect();
        let minutes: Vec<u64> = (from..=to).collect();
        let value = |f: &dyn Fn(&MinuteRecord) -> Option<u64>, zero: bool| -> Vec<Option<u64>> {
            minutes
                .iter()
                .map(|m| match by_minute.get(m) {
                    Some(record) => f(record).or(zero.then_some(0)),
                    None => zero.then_some(0),
                })
                .collect()
        };
        let id = |what: &str| format!("history-{queue}-{what}");
        let charts = vec![
            chart(
                id("throughput"),
                "Tasks per minute",
                "",
                &minutes,
                vec![
                    ("succeeded", "ok", value(&|r| Some(r.succeeded), true)),
                    ("failed", "warn", value(&|r| Some(r.failed), true)),
                    ("dead", "bad", value(&|r| Some(r.dead), true)),
                ],
            ),
            chart(
                id("depth"),
                "Queue depth (highest sample of each minute)",
                "",
                &minutes,
                vec![
                    ("pending", "accent", value(&|r| r.pending, false)),
                    ("in flight", "violet", value(&|r| r.in_flight, false)),
                ],
            ),
            chart(
                id("runtime"),
                "Run time per minute (ms)",
                "ms",
                &minutes,
                vec![
                    ("p50", "accent", value(&|r| r.run_ms_quantile(0.5), false)),
                    ("p95", "warn", value(&|r| r.run_ms_quantile(0.95), false)),
                ],
            ),
        ];
        QueueBlock {
            totals: Totals {
                succeeded: total.succeeded,
                failed: total.failed,
                retried: total.retried,
                dead: total.dead,
                runs: total.runs,
                run_ms_mean: total.run_ms_mean(),
                run_ms_p50: total.run_ms_quantile(0.5),
                run_ms_p95: total.run_ms_quantile(0.95),
                run_ms_max: total.run_ms_max,
                minutes: records.len(),
                pending_last: records.iter().rev().find_map(|r| r.pending),
            },
            charts,
            queue,
        }
    }
}

/// The smallest 1, 2 or 5 × 10ⁿ at least `max` (at least 1).
fn nice_ceiling(max: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if candidate >= max || candidate == u64::MAX {
                return candidate;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// An axis label: short enough for the chart's left margin at phone width (the unit is in the
/// chart's title).
fn short(value: u64) -> String {
    if value >= 1_000_000 {
        format!("{}M", value / 1_000_000)
    } else if value >= 10_000 {
        format!("{}k", value / 1_000)
    } else {
        value.to_string()
    }
}

fn chart(
    id: String,
    title: &'static str,
    unit: &'static str,
    minutes: &[u64],
    series: Vec<(&'static str, &'static str, Vec<Option<u64>>)>,
) -> Chart {
    let top_value = series
        .iter()
        .flat_map(|(_, _, values)| values.iter().flatten())
        .copied()
        .max()
        .unwrap_or(0);
    let y_max = nice_ceiling(top_value.max(1));
    let count = minutes.len().max(2) as f64;
    let x = |index: usize| LEFT + (RIGHT - LEFT) * index as f64 / (count - 1.0);
    let y = |value: u64| BOTTOM - (BOTTOM - TOP) * (value as f64 / y_max as f64);
    let series = series
        .into_iter()
        .map(|(name, class, values)| {
            let mut segments = Vec::new();
            let mut current = String::new();
            for (index, value) in values.iter().enumerate() {
                match value {
                    Some(value) => {
                        if !current.is_empty() {
                            current.push(' ');
                        }
                        current.push_str(&format!("{:.1},{:.1}", x(index), y(*value)));
                    }
                    None if !current.is_empty() => segments.push(std::mem::take(&mut current)),
                    None => {}
                }
            }
            if !current.is_empty() {
                segments.push(current);
            }
            // A single point draws nothing as a polyline: widen it to a short dash.
            for segment in &mut segments {
                if !segment.contains(' ') {
                    if let Some((px, py)) = segment.split_once(',') {
                        let px: f64 = px.parse().unwrap_or(LEFT);
                        *segment = format!("{:.1},{py} {:.1},{py}", px - 2.0, px + 2.0);
                    }
                }
            }
            Series {
                name,
                class,
                max: values.iter().flatten().copied().max().unwrap_or(0),
                segments,
            }
        })
        .collect();
    let ticks = 4usize;
    let x_labels = (0..=ticks)
        .map(|tick| {
            let index = (minutes.len().saturating_sub(1)) * tick / ticks;
            XLabel {
                x: x(index),
                text: minutes
                    .get(index)
                    .map(|m| clock(*m, false))
                    .unwrap_or_default(),
                anchor: match tick {
                    0 => "start",
                    t if t == ticks => "end",
                    _ => "middle",
                },
            }
        })
        .collect();
    Chart {
        id,
        title,
        unit,
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        right: RIGHT,
        top: TOP,
        bottom: BOTTOM,
        y_max: short(y_max),
        y_mid: short(y_max / 2),
        y_mid_at: (TOP + BOTTOM) / 2.0,
        x_labels,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_and_gaps() {
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(101), 200);
        let chart = chart(
            "c".into(),
            "t",
            "",
            &[1, 2, 3, 4],
            vec![("a", "ok", vec![Some(1), None, Some(4), Some(2)])],
        );
        assert_eq!(chart.y_max, "5");
        assert_eq!(chart.series[0].segments.len(), 2, "the gap breaks the line");
        assert_eq!(chart.series[0].max, 4);
        assert!(
            chart.series[0].segments[0].contains(' '),
            "a lone point is a dash"
        );
    }
}
