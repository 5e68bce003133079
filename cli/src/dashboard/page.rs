//! The dashboard's HTML: server-rendered, one inline style sheet and one inline script, no
//! external resources.

use std::fmt::Write;

use crate::{
    dead::{DeadFilter, DeadLetter, DeadPage},
    schedules::ScheduleView,
    stats::{format_rate, Overview},
    status::TaskStatus,
    text::cut,
};

/// Everything the index page shows.
pub(super) struct IndexView<'a> {
    pub overview_json: String,
    pub overview: Option<&'a Overview>,
    pub overview_error: Option<&'a str>,
    pub dead: Result<&'a DeadPage, &'a str>,
    pub filter: &'a DeadFilter,
    pub schedules: Option<Result<&'a Vec<ScheduleView>, &'a str>>,
    pub schedules_configured: bool,
    pub catalog: Result<&'a crate::catalog::CatalogListing, &'a str>,
    pub limits: Result<&'a crate::limits::LimitsOverview, &'a str>,
    pub read_only: bool,
    pub server_version: String,
}

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn esc(text: &str) -> String {
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

/// JSON made safe to embed in a `<script>` element.
fn script_json(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

const STYLE: &str = r#"
:root { --fg:#1d2330; --muted:#5f6b7a; --line:#dde3ea; --bg:#f6f8fa; --accent:#2156a5; --bad:#b42318; --ok:#067647; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { background:#18202c; color:#fff; padding:10px 20px; display:flex; gap:16px; align-items:baseline; }
header h1 { font-size:18px; margin:0; }
header .meta { color:#b8c2cf; font-size:13px; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; background:#e8eef7; color:var(--accent); }
.badge.ro { background:#fff4e5; color:#9a5b00; }
.badge.paused { background:#fff4e5; color:#9a5b00; }
.badge.idle { background:#eef1f4; color:var(--muted); }
main { padding: 16px 20px; display:grid; gap:18px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 16px; }
h2 { font-size:16px; margin:0 0 10px; }
h3 { font-size:14px; margin:12px 0 6px; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; color:var(--muted); font-weight:600; text-transform:uppercase; letter-spacing:.03em; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
th.num { text-align:right; }
td.error { color:var(--bad); max-width:420px; overflow-wrap:anywhere; }
td.nowrap { white-space:nowrap; }
.charts { display:flex; gap:16px; flex-wrap:wrap; margin-top:12px; }
figure { margin:0; flex:1 1 420px; }
figcaption { font-size:12px; color:var(--muted); margin-bottom:4px; }
svg.chart { width:100%; height:150px; background:#fbfcfd; border:1px solid var(--line); border-radius:6px; }
.legend { font-size:12px; color:var(--muted); display:flex; gap:12px; flex-wrap:wrap; margin-top:4px; }
.legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:4px; vertical-align:-1px; }
button { font:inherit; border:1px solid var(--line); background:#fff; border-radius:6px; padding:2px 10px; cursor:pointer; }
button.replay { border-color:#b6c9e8; color:var(--accent); }
button.discard { border-color:#f1c0bb; color:var(--bad); }
button:disabled { opacity:.5; cursor:default; }
form.filters { display:flex; gap:8px; flex-wrap:wrap; align-items:center; margin-bottom:10px; }
input, select { font:inherit; padding:3px 6px; border:1px solid var(--line); border-radius:6px; }
#flash, #limits-flash { min-height:1.4em; margin:4px 0 8px; }
#flash.ok, #limits-flash.ok { color:var(--ok); } #flash.bad, #limits-flash.bad { color:var(--bad); }
.muted { color:var(--muted); }
a { color:var(--accent); }
pre { background:#f3f5f8; padding:8px; border-radius:6px; overflow:auto; }
"#;

const SCRIPT: &str = r#"
(function () {
  'use strict';
  var palette = ['#2156a5', '#c2410c', '#067647', '#7c3aed', '#b42318', '#0e7490', '#a16207', '#be185d'];
  var state = window.JETQ_INITIAL || {};
  var colors = {};
  function colorOf(q) {
    if (!(q in colors)) { colors[q] = palette[Object.keys(colors).length % palette.length]; }
    return colors[q];
  }
  // As jetq_cli::stats::format_rate: whole numbers per second (805/s), <1/s for a trickle.
  function fmtRate(v) {
    if (v === null || v === undefined) { return '-'; }
    if (!isFinite(v) || v <= 0) { return '0/s'; }
    if (v < 0.5) { return '<1/s'; }
    return Math.round(v) + '/s';
  }
  function svgEl(name, attrs) {
    var el = document.createElementNS('http://www.w3.org/2000/svg', name);
    for (var k in attrs) { el.setAttribute(k, attrs[k]); }
    return el;
  }
  function drawChart(id, legendId, value) {
    var svg = document.getElementById(id);
    if (!svg) { return; }
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var points = state.history || [];
    var W = 600, H = 150, L = 40, R = 8, T = 8, B = 18;
    var queues = {};
    points.forEach(function (p) { Object.keys(p.queues).forEach(function (q) { queues[q] = true; }); });
    var names = Object.keys(queues).sort();
    var max = 0;
    points.forEach(function (p) { names.forEach(function (q) {
      var v = p.queues[q] ? value(p.queues[q]) : null; if (v !== null && v > max) { max = v; } }); });
    if (max <= 0) { max = 1; }
    var t0 = points.length ? points[0].t : 0, t1 = points.length ? points[points.length - 1].t : 1;
    var span = Math.max(t1 - t0, 1);
    svg.appendChild(svgEl('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#c9d1db'}));
    svg.appendChild(svgEl('line', {x1: L, y1: T, x2: L, y2: H - B, stroke: '#c9d1db'}));
    var top = svgEl('text', {x: L - 4, y: T + 9, 'text-anchor': 'end', 'font-size': 10, fill: '#5f6b7a'});
    top.textContent = max >= 10 ? Math.round(max) : max.toFixed(1); svg.appendChild(top);
    var zero = svgEl('text', {x: L - 4, y: H - B, 'text-anchor': 'end', 'font-size': 10, fill: '#5f6b7a'});
    zero.textContent = '0'; svg.appendChild(zero);
    var label = svgEl('text', {x: W - R, y: H - 4, 'text-anchor': 'end', 'font-size': 10, fill: '#5f6b7a'});
    label.textContent = points.length > 1 ? ('last ' + Math.round(span / 1000) + ' s') : 'collecting samples…';
    svg.appendChild(label);
    names.forEach(function (q) {
      var coords = [];
      points.forEach(function (p) {
        var v = p.queues[q] ? value(p.queues[q]) : null;
        if (v === null) { return; }
        var x = L + (W - L - R) * (points.length > 1 ? (p.t - t0) / span : 1);
        var y = (H - B) - (H - B - T) * (v / max);
        coords.push(x.toFixed(1) + ',' + y.toFixed(1));
      });
      if (coords.length === 1) { coords.push(coords[0]); }
      svg.appendChild(svgEl('polyline', {points: coords.join(' '), fill: 'none', stroke: colorOf(q), 'stroke-width': 2, 'data-queue': q}));
    });
    var legend = document.getElementById(legendId);
    if (legend) {
      legend.innerHTML = '';
      names.forEach(function (q) {
        var s = document.createElement('span');
        var i = document.createElement('i'); i.style.background = colorOf(q);
        s.appendChild(i); s.appendChild(document.createTextNode(q)); legend.appendChild(s);
      });
    }
  }
  function setCell(row, field, text) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (cell && cell.textContent !== text) { cell.textContent = text; }
  }
  function stateText(q) {
    if (q.paused) { return q.pause_until ? 'paused until ' + q.pause_until : 'paused'; }
    return q.consumer ? 'active' : 'no worker yet';
  }
  function render() {
    var ov = state.overview;
    var err = document.getElementById('overview-error');
    if (err) { err.textContent = state.error ? ('Cannot read queue counts: ' + state.error) : ''; }
    var body = document.querySelector('#queue-table tbody');
    if (ov && body) {
      ov.queues.forEach(function (q) {
        var row = body.querySelector('tr[data-queue="' + CSS.escape(q.queue) + '"]');
        if (!row) {
          row = document.createElement('tr'); row.setAttribute('data-queue', q.queue);
          ['queue', 'pending', 'in_flight', 'max_in_flight', 'redelivered', 'dead', 'delayed', 'rate', 'state'].forEach(function (f) {
            var td = document.createElement('td'); td.setAttribute('data-field', f);
            if (f !== 'queue' && f !== 'state') { td.className = 'num'; }
            row.appendChild(td);
          });
          body.appendChild(row);
          var none = document.getElementById('no-queues'); if (none) { none.remove(); }
        }
        setCell(row, 'queue', q.queue);
        setCell(row, 'pending', String(q.pending));
        setCell(row, 'in_flight', String(q.in_flight));
        setCell(row, 'max_in_flight', q.max_in_flight === null ? '-' : String(q.max_in_flight));
        setCell(row, 'redelivered', String(q.redelivered));
        setCell(row, 'dead', String(q.dead));
        setCell(row, 'delayed', String(q.delayed));
        setCell(row, 'rate', fmtRate(q.rate ? q.rate.delivered_per_sec : null));
        setCell(row, 'state', stateText(q));
      });
      var totals = document.getElementById('totals');
      if (totals) {
        var t = 'task stream: ' + ov.tasks_stored + ' stored · dead letters: ' + ov.dead_total;
        if (ov.rate) { t += ' · ' + fmtRate(ov.rate.enqueued_per_sec) + ' enqueued · ' + fmtRate(ov.rate.completed_per_sec) + ' completed'; }
        t += ' · updated ' + ov.at;
        totals.textContent = t;
      }
    }
    drawChart('chart-backlog', 'legend-backlog', function (p) { return p.pending + p.in_flight; });
    drawChart('chart-rate', 'legend-rate', function (p) { return p.rate; });
  }
  function poll() {
    fetch('/api/overview', {credentials: 'same-origin', cache: 'no-store'})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body) { state = body; render(); } })
      .catch(function () {})
      .then(function () { setTimeout(poll, state.sample_every_ms || 2000); });
  }
  function flash(text, ok, id) {
    var el = document.getElementById(id || 'flash');
    el.textContent = text; el.className = ok ? 'ok' : 'bad';
  }
  // Release of a flow-control entry (the Limits section): POST /api/limits/release?entry=.
  function release(button) {
    var entry = button.getAttribute('data-release');
    if (!window.confirm('Release ' + entry + '? (as jetq limits release)')) { return; }
    var row = button.closest('tr');
    button.disabled = true;
    fetch('/api/limits/release?entry=' + encodeURIComponent(entry), {method: 'POST', credentials: 'same-origin', headers: {'X-Jetq-Request': '1'}})
      .then(function (r) { return r.json().catch(function () { return {}; }).then(function (body) { return {ok: r.ok, status: r.status, body: body}; }); })
      .then(function (res) {
        if (res.ok) {
          if (row) { row.remove(); }
          flash('Released ' + entry + ' from ' + res.body.bucket + '.', true, 'limits-flash');
        } else {
          button.disabled = false;
          flash(entry + ': ' + (res.body.error || ('HTTP ' + res.status)), false, 'limits-flash');
        }
      })
      .catch(function (e) { flash('Request failed: ' + e, false, 'limits-flash'); });
  }
  function act(button) {
    var seq = button.getAttribute('data-seq'), action = button.getAttribute('data-action');
    if (action === 'discard' && !window.confirm('Delete dead letter ' + seq + ' for good?')) { return; }
    var row = document.getElementById('dead-' + seq);
    row.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    fetch('/api/dead/' + seq + '/' + action, {method: 'POST', credentials: 'same-origin', headers: {'X-Jetq-Request': '1'}})
      .then(function (r) { return r.json().catch(function () { return {}; }).then(function (body) { return {ok: r.ok, status: r.status, body: body}; }); })
      .then(function (res) {
        if (res.ok) {
          row.remove();
          var total = document.getElementById('dead-total');
          if (total) { total.textContent = String(Math.max(0, parseInt(total.textContent, 10) - 1)); }
          if (action === 'replay') {
            var item = (res.body.items || [])[0] || {};
            flash('Dead letter ' + seq + ' replayed as task ' + item.new_id + ' (task stream sequence ' + item.task_sequence + ').', true);
          } else {
            flash('Dead letter ' + seq + ' discarded.', true);
          }
        } else {
          row.querySelectorAll('button').forEach(function (b) { b.disabled = false; });
          flash('Dead letter ' + seq + ': ' + (res.body.error || ('HTTP ' + res.status)), false);
        }
      })
      .catch(function (e) { flash('Request failed: ' + e, false); });
  }
  document.addEventListener('click', function (e) {
    var b = e.target.closest('button[data-action]');
    if (b) { act(b); }
    var r = e.target.closest('button[data-release]');
    if (r) { release(r); }
  });
  render();
  if (document.getElementById('queue-table')) { setTimeout(poll, state.sample_every_ms || 2000); }
})();
"#;

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        esc(title)
    )
}

/// The page of a request without a valid token.
pub(super) fn unauthorized() -> String {
    layout(
        "jetq dashboard: authentication required",
        "<main><section><h2>Authentication required</h2><p>This dashboard needs its token: \
         HTTP basic auth with the token as the password, or <code>Authorization: Bearer \
         &lt;token&gt;</code>.</p></section></main>",
    )
}

/// A page with one message.
pub(super) fn message(title: &str, text: &str) -> String {
    layout(
        title,
        &format!(
            "<header><h1><a href=\"/\" style=\"color:#fff;text-decoration:none\">jetq</a></h1>\
             </header><main><section><h2>{}</h2><p id=\"message\">{}</p>\
             <p><a href=\"/\">Back to the dashboard</a></p></section></main>",
            esc(title),
            esc(text)
        ),
    )
}

/// The main page.
pub(super) fn index(view: &IndexView<'_>) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1>jetq</h1><span class=\"meta\">nats-server {}</span>{}</header><main>",
        esc(&view.server_version),
        if view.read_only {
            " <span class=\"badge ro\" id=\"read-only\">read-only</span>"
        } else {
            ""
        }
    );
    queues_section(&mut body, view);
    dead_section(&mut body, view);
    schedules_section(&mut body, view);
    super::catalog::section(&mut body, view.catalog);
    super::limits::section(&mut body, view.limits, view.read_only);
    body.push_str(
        "<section id=\"status\"><h2>Task status</h2><form action=\"/status\" method=\"get\" \
         class=\"filters\"><input name=\"id\" placeholder=\"task id\" aria-label=\"task id\">\
         <button type=\"submit\">Look up</button></form><p class=\"muted\">Tasks of types with \
         <code>track_status(true)</code> keep their state, progress and result.</p></section>",
    );
    let _ = write!(
        body,
        "</main><script>window.JETQ_INITIAL = {};</script><script>{SCRIPT}</script>",
        script_json(&view.overview_json)
    );
    layout("jetq dashboard", &body)
}

fn queues_section(body: &mut String, view: &IndexView<'_>) {
    body.push_str(
        "<section id=\"queues\"><h2>Queues</h2><p id=\"overview-error\" class=\"muted\"></p>\
         <table id=\"queue-table\"><thead><tr><th>Queue</th><th class=\"num\">Pending</th>\
         <th class=\"num\">In flight</th><th class=\"num\">Max in flight</th>\
         <th class=\"num\">Redelivered</th><th class=\"num\">Dead</th><th class=\"num\">Delayed\
         </th><th class=\"num\">Rate</th><th>State</th></tr></thead><tbody>",
    );
    match view.overview {
        Some(overview) if !overview.queues.is_empty() => {
            for q in &overview.queues {
                let state = q.state();
                let _ = write!(
                    body,
                    "<tr data-queue=\"{queue}\"><td data-field=\"queue\">{queue}</td>\
                     <td class=\"num\" data-field=\"pending\">{}</td>\
                     <td class=\"num\" data-field=\"in_flight\">{}</td>\
                     <td class=\"num\" data-field=\"max_in_flight\">{}</td>\
                     <td class=\"num\" data-field=\"redelivered\">{}</td>\
                     <td class=\"num\" data-field=\"dead\">{}</td>\
                     <td class=\"num\" data-field=\"delayed\">{}</td>\
                     <td class=\"num\" data-field=\"rate\">{}</td>\
                     <td data-field=\"state\">{}</td></tr>",
                    q.pending,
                    q.in_flight,
                    q.max_in_flight
                        .map_or_else(|| "-".into(), |m| m.to_string()),
                    q.redelivered,
                    q.dead,
                    q.delayed,
                    q.rate
                        .map_or_else(|| "-".into(), |r| format_rate(r.delivered_per_sec)),
                    esc(&state),
                    queue = esc(&q.queue),
                );
            }
        }
        _ => body.push_str(
            "<tr id=\"no-queues\"><td colspan=\"9\" class=\"muted\">No queues yet: no worker has \
             started and nothing was enqueued.</td></tr>",
        ),
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<p id=\"totals\" class=\"muted\">{}</p>",
        match (view.overview, view.overview_error) {
            (Some(o), _) => esc(&format!(
                "task stream: {} stored · dead letters: {} · updated {}",
                o.tasks_stored, o.dead_total, o.at
            )),
            (None, Some(err)) => esc(&format!("Cannot read queue counts: {err}")),
            (None, None) => String::new(),
        }
    );
    body.push_str(
        "<div class=\"charts\"><figure><figcaption>Backlog per queue (pending + in flight)\
         </figcaption><svg id=\"chart-backlog\" class=\"chart\" viewBox=\"0 0 600 150\" \
         preserveAspectRatio=\"none\" role=\"img\" aria-label=\"backlog chart\"></svg>\
         <div class=\"legend\" id=\"legend-backlog\"></div></figure><figure><figcaption>\
         Deliveries per second per queue</figcaption><svg id=\"chart-rate\" class=\"chart\" \
         viewBox=\"0 0 600 150\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"rate chart\"></svg><div class=\"legend\" id=\"legend-rate\"></div>\
         </figure></div></section>",
    );
}

fn dead_section(body: &mut String, view: &IndexView<'_>) {
    let total = match view.dead {
        Ok(page) => page.total.to_string(),
        Err(_) => "?".into(),
    };
    let _ = write!(
        body,
        "<section id=\"dead\"><h2>Dead letters (<span id=\"dead-total\">{total}</span>)</h2>"
    );
    // Filters: queue from the known queues, task and reason free or from a list.
    body.push_str("<form class=\"filters\" method=\"get\" action=\"/\"><select name=\"queue\" aria-label=\"queue\"><option value=\"\">all queues</option>");
    if let Some(overview) = view.overview {
        for q in &overview.queues {
            let selected = if view.filter.queue.as_deref() == Some(q.queue.as_str()) {
                " selected"
            } else {
                ""
            };
            let _ = write!(
                body,
                "<option value=\"{0}\"{selected}>{0}</option>",
                esc(&q.queue)
            );
        }
    }
    let _ = write!(
        body,
        "</select><input name=\"task\" placeholder=\"task\" aria-label=\"task\" value=\"{}\">\
         <select name=\"reason\" aria-label=\"reason\"><option value=\"\">any reason</option>",
        esc(view.filter.task.as_deref().unwrap_or(""))
    );
    for reason in [
        "exhausted",
        "fatal",
        "undecodable",
        "unknown-task",
        "deliveries-exhausted",
    ] {
        let selected = if view.filter.reason.as_deref() == Some(reason) {
            " selected"
        } else {
            ""
        };
        let _ = write!(body, "<option{selected}>{reason}</option>");
    }
    body.push_str(
        "</select><button type=\"submit\">Filter</button><a href=\"/\">clear</a></form>\
         <div id=\"flash\" role=\"status\"></div>",
    );
    match view.dead {
        Err(err) => {
            let _ = write!(
                body,
                "<p class=\"muted\">Cannot read dead letters: {}</p>",
                esc(err)
            );
        }
        Ok(page) if page.dead_letters.is_empty() => {
            body.push_str("<p class=\"muted\" id=\"no-dead\">No dead letters.</p>");
        }
        Ok(page) => {
            body.push_str(
                "<table id=\"dead-table\"><thead><tr><th class=\"num\">Seq</th><th>Queue</th>\
                 <th>Task</th><th>Reason</th><th class=\"num\">Attempts</th><th>Dead at</th>\
                 <th>Error</th><th></th></tr></thead><tbody>",
            );
            for d in &page.dead_letters {
                let actions = if view.read_only {
                    String::new()
                } else {
                    format!(
                        "<button class=\"replay\" data-action=\"replay\" data-seq=\"{0}\" \
                         title=\"re-enqueue with a fresh attempt count\">Replay</button> \
                         <button class=\"discard\" data-action=\"discard\" data-seq=\"{0}\" \
                         title=\"delete for good\">Discard</button>",
                        d.sequence
                    )
                };
                let _ = write!(
                    body,
                    "<tr id=\"dead-{seq}\" data-seq=\"{seq}\"><td class=\"num\"><a href=\"/dead/{seq}\">{seq}</a></td>\
                     <td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"nowrap\">{}</td>\
                     <td class=\"error\" title=\"{}\">{}</td><td class=\"nowrap\">{actions}</td></tr>",
                    esc(&d.queue),
                    esc(&d.task),
                    esc(d.reason.as_deref().unwrap_or("-")),
                    d.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
                    esc(&d.dead_at),
                    esc(d.error.as_deref().unwrap_or("")),
                    esc(&cut(d.error.as_deref().unwrap_or("-"), 120)),
                    seq = d.sequence,
                );
            }
            body.push_str("</tbody></table>");
            if (page.dead_letters.len() as u64) < page.total {
                let _ = write!(
                    body,
                    "<p class=\"muted\">Showing the oldest {} of {}; filter to narrow down, or \
                     use <code>jetq dead list</code>.</p>",
                    page.dead_letters.len(),
                    page.total
                );
            }
        }
    }
    body.push_str("</section>");
}

fn schedules_section(body: &mut String, view: &IndexView<'_>) {
    body.push_str("<section id=\"schedules\"><h2>Schedules</h2>");
    match &view.schedules {
        None if !view.schedules_configured => body.push_str(
            "<p class=\"muted\">No schedules file configured: start the dashboard with \
             <code>--schedules-file</code> or <code>JETQ_SCHEDULES_FILE</code> to show the \
             scheduler's schedules and their next fires.</p>",
        ),
        None => {}
        Some(Err(err)) => {
            let _ = write!(
                body,
                "<p class=\"muted\">Cannot read the schedules: {}</p>",
                esc(err)
            );
        }
        Some(Ok(views)) if views.is_empty() => {
            body.push_str("<p class=\"muted\">The schedules file has no schedules.</p>")
        }
        Some(Ok(views)) => {
            body.push_str(
                "<table id=\"schedule-table\"><thead><tr><th>Name</th><th>Cron</th><th>Task</th>\
                 <th>Handled until</th><th>Next fires (UTC)</th></tr></thead><tbody>",
            );
            for s in views.iter() {
                let _ = write!(
                    body,
                    "<tr><td>{}{}</td><td><code>{}</code> <span class=\"muted\">{}</span></td>\
                     <td>{}.{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&s.name),
                    if s.enabled {
                        ""
                    } else {
                        " <span class=\"badge idle\">disabled</span>"
                    },
                    esc(&s.cron),
                    esc(&s.timezone),
                    esc(&s.queue),
                    esc(&s.task),
                    esc(s.handled_until.as_deref().unwrap_or("-")),
                    esc(&s.next_fires.join(", ")),
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    body.push_str("</section>");
}

/// The status page of one tracked task.
pub(super) fn task_status(status: &TaskStatus) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1><a href=\"/\" style=\"color:#fff;text-decoration:none\">jetq</a></h1>\
         <span class=\"meta\">task {}</span></header><main><section id=\"task-status\">\
         <h2>Task {}</h2><table><tbody>",
        esc(&status.id),
        esc(&status.id)
    );
    let optional = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let rows: [(&str, String); 11] = [
        ("Queue", status.queue.clone()),
        ("Task", status.task.clone()),
        ("State", status.state.as_str().to_owned()),
        (
            "Attempt",
            match status.max_attempts {
                Some(max) => format!("{} of {max}", status.attempt),
                None => status.attempt.to_string(),
            },
        ),
        ("Enqueued at", optional(&status.enqueued_at)),
        ("Started at", optional(&status.started_at)),
        ("Finished at", optional(&status.finished_at)),
        ("Next attempt at", optional(&status.next_attempt_at)),
        (
            "Progress",
            status.progress.as_ref().map_or_else(
                || "-".into(),
                |p| format!("{:.0}% {}", p.percent, p.message),
            ),
        ),
        (
            "Result",
            status
                .result
                .as_ref()
                .map_or_else(|| "-".into(), |r| r.to_string()),
        ),
        ("Error", optional(&status.error)),
    ];
    for (name, value) in rows {
        let _ = write!(body, "<tr><th>{name}</th><td>{}</td></tr>", esc(&value));
    }
    for artifact in &status.artifacts {
        let _ = write!(
            body,
            "<tr><th>Artifact</th><td>{} ({} bytes)</td></tr>",
            esc(&artifact.name),
            artifact.size
        );
    }
    body.push_str("</tbody></table>");
    if !status.transitions.is_empty() {
        body.push_str(
            "<h2 style=\"margin-top:14px\">History</h2><table><thead><tr><th>At</th>\
             <th>State</th><th>Attempt</th></tr></thead><tbody>",
        );
        for transition in &status.transitions {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&transition.at),
                transition.state.as_str(),
                transition.attempt
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<p><a href=\"/\">Back to the dashboard</a></p></section></main>");
    layout(&format!("jetq task {}", status.id), &body)
}

/// The detail page of one dead letter.
pub(super) fn dead_letter(d: &DeadLetter, read_only: bool) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1><a href=\"/\" style=\"color:#fff;text-decoration:none\">jetq</a></h1>\
         <span class=\"meta\">dead letter {}</span></header><main><section id=\"dead\">\
         <h2>Dead letter {}</h2><div id=\"flash\" role=\"status\"></div><table><tbody>",
        d.sequence, d.sequence
    );
    let rows: [(&str, String); 9] = [
        ("Queue", d.queue.clone()),
        ("Task", d.task.clone()),
        ("Task id", d.task_id.clone().unwrap_or_else(|| "-".into())),
        ("Reason", d.reason.clone().unwrap_or_else(|| "-".into())),
        (
            "Attempts",
            d.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
        ),
        ("Dead at", d.dead_at.clone()),
        (
            "Enqueued at",
            d.enqueued_at.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "Task sequence",
            d.task_sequence
                .map_or_else(|| "-".into(), |s| s.to_string()),
        ),
        ("Error", d.error.clone().unwrap_or_else(|| "-".into())),
    ];
    for (name, value) in rows {
        let _ = write!(body, "<tr><th>{name}</th><td>{}</td></tr>", esc(&value));
    }
    body.push_str("</tbody></table>");
    if let Some(failure) = &d.failure {
        if !failure.history.is_empty() {
            body.push_str(
                "<h2 style=\"margin-top:14px\">Attempts</h2><table><thead><tr><th>#</th>\
                 <th>At</th><th>Outcome</th><th>Error</th></tr></thead><tbody>",
            );
            for a in &failure.history {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{:?}</td><td class=\"error\">{}</td></tr>",
                    a.attempt,
                    esc(&a.at),
                    a.outcome,
                    esc(&a.error)
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    let payload = match (&d.args, &d.payload_text) {
        (Some(args), _) => serde_json::to_string_pretty(args).unwrap_or_default(),
        (None, Some(text)) => text.clone(),
        _ => String::new(),
    };
    let _ = write!(
        body,
        "<h2 style=\"margin-top:14px\">Arguments</h2><pre>{}</pre>\
         <h2>Headers</h2><pre>",
        esc(&payload)
    );
    for (name, values) in &d.headers {
        for value in values {
            let _ = writeln!(body, "{}: {}", esc(name), esc(value));
        }
    }
    body.push_str("</pre>");
    if !read_only {
        let _ = write!(
            body,
            "<p id=\"dead-{0}\"><button class=\"replay\" data-action=\"replay\" data-seq=\"{0}\">\
             Replay</button> <button class=\"discard\" data-action=\"discard\" data-seq=\"{0}\">\
             Discard</button></p>",
            d.sequence
        );
    }
    let _ = write!(
        body,
        "<p><a href=\"/\">Back to the dashboard</a></p></section></main>\
         <script>window.JETQ_INITIAL = {{}};</script><script>{SCRIPT}</script>"
    );
    layout(&format!("jetq dead letter {}", d.sequence), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_script_breakouts() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
        let json = script_json(r#"{"e":"</script><script>alert(1)</script>"}"#);
        assert!(!json.contains("</script>"), "{json}");
    }
}
