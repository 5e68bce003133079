// The jetq console's one script, served by the dashboard itself (no CDN, no framework).
// Every page: keeps the navigation's dead-letter count live by polling /api/overview.
// Overview and queues pages: the queue table and the charts, from the same poll (one snapshot,
// so the header's count and the table's column are always the same sample).
// Actions (POST with X-Jetq-Request: 1): replay/discard one dead letter, bulk retry/discard
// with a dry-run count, a background job and its progress, pause/resume a queue, release a
// flow-control entry.
(function () {
  'use strict';
  var palette = ['#2156a5', '#c2410c', '#067647', '#7c3aed', '#b42318', '#0e7490', '#a16207', '#be185d'];
  var initial = document.getElementById('jetq-initial');
  var state = {};
  try { state = initial ? JSON.parse(initial.textContent) : {}; } catch (e) { state = {}; }
  var colors = {};
  function colorOf(q) {
    if (!(q in colors)) { colors[q] = palette[Object.keys(colors).length % palette.length]; }
    return colors[q];
  }
  function num(n) { return (n === null || n === undefined) ? '-' : Number(n).toLocaleString('en-US'); }
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
    if (q.paused_levels && q.paused_levels.length) { return 'partly paused (' + q.paused_levels.join(', ') + ')'; }
    return q.consumer ? 'active' : 'no worker yet';
  }
  function render() {
    var ov = state.overview;
    var err = document.getElementById('overview-error');
    if (err) { err.textContent = state.error ? ('Cannot read queue counts: ' + state.error) : ''; }
    if (!ov) { return; }
    // One snapshot for every dead-letter figure on the page.
    document.querySelectorAll('[data-dead-total]').forEach(function (el) { el.textContent = num(ov.dead_total); });
    var navCount = document.getElementById('nav-dead');
    if (navCount) { navCount.className = ov.dead_total > 0 ? 'count bad' : 'count'; }
    var body = document.querySelector('#queue-table tbody');
    if (body) {
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
    }
    var totals = document.getElementById('totals');
    if (totals) {
      var t = 'task stream: ' + num(ov.tasks_stored) + ' stored · dead letters: ' + num(ov.dead_total);
      if (ov.rate) { t += ' · ' + fmtRate(ov.rate.enqueued_per_sec) + ' enqueued · ' + fmtRate(ov.rate.completed_per_sec) + ' completed'; }
      t += ' · updated ' + ov.at;
      totals.textContent = t;
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
    if (!el) { return; }
    el.textContent = text; el.className = 'flash ' + (ok ? 'ok' : 'bad');
  }
  // A change: POST with the console's header; resolves to {ok, status, body}.
  function post(path) {
    return fetch(path, {method: 'POST', credentials: 'same-origin', headers: {'X-Jetq-Request': '1'}})
      .then(function (r) { return r.json().catch(function () { return {}; }).then(function (body) { return {ok: r.ok, status: r.status, body: body}; }); });
  }
  function getJson(path) {
    return fetch(path, {credentials: 'same-origin', cache: 'no-store'})
      .then(function (r) { return r.json().catch(function () { return {}; }).then(function (body) { return {ok: r.ok, status: r.status, body: body}; }); });
  }
  // Release of a flow-control entry (the Limits page): POST /api/limits/release?entry=.
  function release(button) {
    var entry = button.getAttribute('data-release');
    if (!window.confirm('Release ' + entry + '? (as jetq limits release)')) { return; }
    var row = button.closest('tr');
    button.disabled = true;
    post('/api/limits/release?entry=' + encodeURIComponent(entry)).then(function (res) {
      if (res.ok) {
        if (row) { row.remove(); }
        flash('Released ' + entry + ' from ' + res.body.bucket + '.', true, 'limits-flash');
      } else {
        button.disabled = false;
        flash(entry + ': ' + (res.body.error || ('HTTP ' + res.status)), false, 'limits-flash');
      }
    }).catch(function (e) { flash('Request failed: ' + e, false, 'limits-flash'); });
  }
  // Replay or discard of one dead letter.
  function act(button) {
    var seq = button.getAttribute('data-seq'), action = button.getAttribute('data-action');
    if (action === 'discard' && !window.confirm('Delete dead letter ' + seq + ' for good?')) { return; }
    var row = document.getElementById('dead-' + seq);
    row.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    post('/api/dead/' + seq + '/' + action).then(function (res) {
      if (res.ok) {
        row.remove();
        var matching = document.getElementById('dead-matching');
        if (matching && /^[0-9,]+$/.test(matching.textContent)) {
          matching.textContent = num(Math.max(0, parseInt(matching.textContent.replace(/,/g, ''), 10) - 1));
        }
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
    }).catch(function (e) { flash('Request failed: ' + e, false); });
  }
  // Pause or resume a queue (as jetq pause/resume).
  function pauseResume(button) {
    var queue = button.getAttribute('data-queue'), action = button.getAttribute('data-queue-action');
    if (action === 'pause' && !window.confirm('Pause queue ' + queue + '? Workers stop receiving its tasks until it is resumed.')) { return; }
    button.disabled = true;
    post('/api/queues/' + encodeURIComponent(queue) + '/' + action).then(function (res) {
      button.disabled = false;
      if (res.ok) {
        var row = button.closest('tr');
        if (row) {
          setCell(row, 'state', res.body.paused ? 'paused' : 'active');
          row.querySelectorAll('button[data-queue-action]').forEach(function (b) {
            b.hidden = (b.getAttribute('data-queue-action') === 'pause') === res.body.paused;
          });
        }
        flash('Queue ' + queue + (res.body.paused ? ' paused' : ' resumed') + ' (' + (res.body.consumers || []).join(', ') + ').', true);
      } else {
        flash(queue + ': ' + (res.body.error || ('HTTP ' + res.status)), false);
      }
    }).catch(function (e) { button.disabled = false; flash('Request failed: ' + e, false); });
  }
  // Bulk retry/discard of every dead letter matching the page's filter: count first (a dry
  // run), confirm with the number, start a job, poll its progress, show the result.
  // The Tasks page's bulk Cancel uses the same flow with its own endpoints (data-count,
  // data-start, data-list, data-noun on the button).
  function bulk(button) {
    var action = button.getAttribute('data-bulk');
    var query = button.getAttribute('data-filter') || '';
    var verb = action === 'replay' ? 'Retry' : action === 'cancel' ? 'Cancel' : 'Discard';
    var countUrl = button.getAttribute('data-count') || '/api/dead/count';
    var startUrl = button.getAttribute('data-start') || ('/api/dead/bulk?action=' + action);
    var listUrl = button.getAttribute('data-list') || '/dead';
    var noun = button.getAttribute('data-noun') || 'dead letter';
    var bar = document.getElementById('bulk-progress'), status = document.getElementById('bulk-status');
    document.querySelectorAll('button[data-bulk]').forEach(function (b) { b.disabled = true; });
    function done() { document.querySelectorAll('button[data-bulk]').forEach(function (b) { b.disabled = false; }); }
    status.textContent = 'Counting the matching ' + noun + 's…'; status.className = 'flash';
    getJson(countUrl + '?' + query).then(function (res) {
      if (!res.ok) { done(); flash('Cannot count: ' + (res.body.error || ('HTTP ' + res.status)), false, 'bulk-status'); return; }
      var count = res.body.count;
      if (count === 0) { done(); flash('No ' + noun + ' matches this filter.', true, 'bulk-status'); return; }
      var what = action === 'replay' ? 're-enqueue them with a fresh attempt count'
        : action === 'cancel' ? 'stop them: waiting ones are deleted, running ones are told to stop and end cancelled'
        : 'delete them for good';
      if (!window.confirm(verb + ' ' + num(count) + ' ' + noun + (count === 1 ? '' : 's') + ' matching ' + (res.body.filter || 'everything') + '? This will ' + what + '.')) {
        done(); status.textContent = ''; return;
      }
      post(startUrl + (startUrl.indexOf('?') < 0 ? '?' : '&') + (query ? query + '&' : '') + 'expected=' + count).then(function (started) {
        if (!started.ok) { done(); flash(verb + ': ' + (started.body.error || ('HTTP ' + started.status)), false, 'bulk-status'); return; }
        watchJob(started.body.id, verb, query, count, listUrl);
      });
    }).catch(function (e) { done(); flash('Request failed: ' + e, false, 'bulk-status'); });
  }
  // Follows a job's progress until it ends, then shows the list with its result.
  function watchJob(id, verb, query, count, listUrl) {
    var bar = document.getElementById('bulk-progress'), status = document.getElementById('bulk-status');
    function done() { document.querySelectorAll('button[data-bulk]').forEach(function (b) { b.disabled = false; }); }
    document.querySelectorAll('button[data-bulk]').forEach(function (b) { b.disabled = true; });
    bar.hidden = false; bar.max = Math.max(1, count || 1); bar.value = 0;
    status.setAttribute('data-job', id);
        (function watch() {
          getJson('/api/jobs/' + encodeURIComponent(id)).then(function (job) {
            var j = job.body;
            if (!job.ok) { done(); flash('Job ' + id + ': ' + (j.error || ('HTTP ' + job.status)), false, 'bulk-status'); return; }
            bar.max = Math.max(1, j.expected || count); bar.value = j.processed;
            if (j.state === 'running') {
              status.textContent = verb + ' in progress: ' + num(j.processed) + ' of ' + num(j.expected || count) + '…';
              status.className = 'flash';
              setTimeout(watch, 400);
              return;
            }
            // Finished: show the list as it is now, with the job's result (rendered by the
            // server from the job, at /dead?<filter>&job=<id>).
            bar.value = bar.max;
            status.textContent = verb + ' ' + j.state + ': ' + num(j.succeeded) + ' done, ' + num(j.failed) + ' failed; reloading the list…';
            window.location.assign((listUrl || '/dead') + '?' + (query ? query + '&' : '') + 'job=' + encodeURIComponent(id));
          }).catch(function (e) { done(); flash('Request failed: ' + e, false, 'bulk-status'); });
        })();
  }
  // Cancel of one task (the task detail page): POST /api/tasks/<id>/cancel, then its outcome.
  function cancelTask(button) {
    var id = button.getAttribute('data-cancel');
    if (!window.confirm('Cancel task ' + id + '? A queued, delayed or retrying task will not run; a running one is told to stop and ends cancelled.')) { return; }
    button.disabled = true;
    post('/api/tasks/' + encodeURIComponent(id) + '/cancel').then(function (res) {
      if (res.ok) {
        var b = res.body, text = 'Cancel: ' + b.outcome + ' (was ' + b.was + ')';
        if (b.state) { text += ', state ' + b.state; }
        if (b.stream) { text += ', deleted from ' + b.stream + ' sequence ' + b.sequence; }
        if (b.raced) { text += ' — a worker took it meanwhile: it may run once'; }
        if (b.worker) { text += ', on worker ' + b.worker; }
        flash(text, true);
        var st = document.getElementById('task-status');
        if (st) { st.textContent = b.state || b.outcome; }
      } else {
        button.disabled = false;
        flash((res.status === 409 ? 'Refused: ' : 'Cancel failed (' + res.status + '): ') + (res.body.error || ''), false);
      }
    }).catch(function (e) { button.disabled = false; flash('Request failed: ' + e, false); });
  }
  // Pause/Resume/Run now of a schedule (the Schedules page).
  function scheduleAction(button) {
    var name = button.getAttribute('data-schedule'), action = button.getAttribute('data-schedule-action');
    var question = action === 'pause' ? 'Pause schedule ' + name + ' on every scheduler replica?'
      : action === 'run' ? 'Run schedule ' + name + ' once now?' : null;
    if (question && !window.confirm(question)) { return; }
    button.disabled = true;
    post('/api/schedules/' + encodeURIComponent(name) + '/' + action).then(function (res) {
      button.disabled = false;
      if (!res.ok) { flash(action + ' ' + name + ' failed (' + res.status + '): ' + (res.body.error || ''), false); return; }
      if (action === 'run') { flash('Run now requested for ' + name + ': task ' + res.body.task_id, true); return; }
      var row = button.closest('tr');
      row.querySelectorAll('button[data-schedule-action]').forEach(function (b) {
        var a = b.getAttribute('data-schedule-action');
        if (a !== 'run') { b.hidden = (a === 'pause') === res.body.paused; }
      });
      var cell = row.querySelector('[data-field="state"]');
      if (cell) { cell.textContent = res.body.paused ? 'paused' : 'active'; }
      flash('Schedule ' + name + (res.body.paused ? ' paused' : ' resumed'), true);
    }).catch(function (e) { button.disabled = false; flash('Request failed: ' + e, false); });
  }
  document.addEventListener('click', function (e) {
    var c = e.target.closest('button[data-cancel]');
    if (c) { cancelTask(c); return; }
    var s = e.target.closest('button[data-schedule-action]');
    if (s) { scheduleAction(s); return; }
    var b = e.target.closest('button[data-action]');
    if (b) { act(b); return; }
    var r = e.target.closest('button[data-release]');
    if (r) { release(r); return; }
    var q = e.target.closest('button[data-queue-action]');
    if (q) { pauseResume(q); return; }
    var k = e.target.closest('button[data-bulk]');
    if (k) { bulk(k); }
  });
  // A page opened on a running job (/dead?job=<id>) follows it.
  var running = document.querySelector('#bulk-status[data-job]:not([data-state])');
  var bulkButton = document.querySelector('button[data-bulk]');
  if (running && bulkButton) {
    var words = running.textContent.trim();
    watchJob(running.getAttribute('data-job'), words.indexOf('Retry') === 0 ? 'Retry' : words.indexOf('Cancel') === 0 ? 'Cancel' : 'Discard',
      bulkButton.getAttribute('data-filter') || '', 0, bulkButton.getAttribute('data-list') || '/dead');
  }
  render();
  setTimeout(poll, state.sample_every_ms || 2000);
})();
