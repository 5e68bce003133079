// Drives the jetq console in Debian's headless Chromium with playwright-core, and prints what
// it saw as one JSON object on stdout. The Rust test (cli/tests/dashboard_browser.rs) starts the
// nats-server and the dashboard, runs this script, and checks the observations against the
// server's state. Every wait here is bounded.
//
// Environment:
//   DASHBOARD_URL     e.g. http://127.0.0.1:41234
//   DASHBOARD_TOKEN   the admin token (basic-auth password)
//   VIEWER_TOKEN      the read-only token
//   REPLAY_SEQ        the dead letter to replay by clicking (desktop)
//   DISCARD_SEQ       the dead letter to discard by clicking (desktop)
//   PHONE_DISCARD_SEQ the dead letter to discard by clicking at phone width
//   DETAIL_SEQ        a dead letter with a long Jetq-Failure header (the detail page's width)
//   RELEASE_ENTRY     the flow-control entry (a unique key) to release by clicking
//   BULK_RETRY_QUERY  the /dead filter whose letters are retried in bulk (desktop)
//   BULK_DISCARD_QUERY the /dead filter whose letters are discarded in bulk (desktop)
//   PHONE_BULK_QUERY  the /dead filter whose letters are discarded in bulk at phone width
//   BULK_CANCEL_QUERY the /tasks filter whose tasks are cancelled in bulk (desktop)
//   PHONE_CANCEL_QUERY the /tasks filter whose tasks are cancelled in bulk at phone width
//   PAUSE_QUEUE       the queue paused and resumed by clicking
//   CANCEL_TASK       a delayed task: found by the search box, cancelled by clicking
//   DEAD_TASK         the id of a dead-lettered task (its detail page)
//   SCHEDULE          the schedule paused, resumed and run now by clicking
//   SCREENSHOT_DIR    where to write console-*.png
//   CHROMIUM          the browser (default /usr/bin/chromium)

import { DESKTOP, WAIT, env, observe, openWidths, phoneContext, watchedPage, widths } from './support.mjs';

const url = env('DASHBOARD_URL');
const token = env('DASHBOARD_TOKEN');
const viewerToken = env('VIEWER_TOKEN');
const replaySeq = env('REPLAY_SEQ');
const discardSeq = env('DISCARD_SEQ');
const phoneDiscardSeq = env('PHONE_DISCARD_SEQ');
const detailSeq = env('DETAIL_SEQ');
const releaseEntry = env('RELEASE_ENTRY');
const bulkRetryQuery = env('BULK_RETRY_QUERY');
const bulkDiscardQuery = env('BULK_DISCARD_QUERY');
const phoneBulkQuery = env('PHONE_BULK_QUERY');
const bulkCancelQuery = env('BULK_CANCEL_QUERY');
const phoneCancelQuery = env('PHONE_CANCEL_QUERY');
const pauseQueue = env('PAUSE_QUEUE');
const cancelTask = env('CANCEL_TASK');
const deadTask = env('DEAD_TASK');
const schedule = env('SCHEDULE');
const shots = env('SCREENSHOT_DIR');
const PAGES = ['/', '/queues', '/dead', `/dead/${detailSeq}`, '/limits', '/catalog', '/schedules',
  '/tasks', '/tasks?state=dead', `/tasks/${deadTask}`, '/workers'];
const pageKey = (path) => (path === `/dead/${detailSeq}` ? '/dead/detail' : path === `/tasks/${deadTask}` ? '/tasks/detail' : path);

const navDead = (page) =>
  page.evaluate(() => {
    const el = document.getElementById('nav-dead');
    return el ? el.textContent.trim().replace(/,/g, '') : null;
  });

// Bulk action from a /dead page: click, accept the confirmation (kept), wait for the result.
async function bulk(page, action, out, key) {
  const dialog = new Promise((resolve) => {
    page.once('dialog', (d) => {
      resolve(d.message());
      d.accept();
    });
  });
  await page.click(`button[data-bulk="${action}"]`, { timeout: WAIT });
  out[`${key}_dialog`] = await dialog;
  await page.locator('#bulk-status[data-state]').waitFor({ timeout: WAIT });
  out[`${key}_result`] = await page.locator('#bulk-status').innerText();
  out[`${key}_state`] = await page.locator('#bulk-status').getAttribute('data-state');
  out[`${key}_progress`] = await page.$eval('#bulk-progress', (p) => ({ value: p.value, max: p.max, hidden: p.hidden }));
}

// Pause then resume a queue by clicking on /queues.
async function pauseResume(page, out, key) {
  const row = `#queues-table tr[data-queue="${pauseQueue}"]`;
  page.once('dialog', (d) => {
    out[`${key}_pause_dialog`] = d.message();
    d.accept();
  });
  await page.click(`${row} button[data-queue-action="pause"]`, { timeout: WAIT });
  await page.waitForFunction(
    (sel) => document.querySelector(`${sel} [data-field="state"]`).textContent.trim() === 'paused',
    row,
    { timeout: WAIT },
  );
  out[`${key}_paused_flash`] = await page.locator('#flash').innerText();
  await page.click(`${row} button[data-queue-action="resume"]`, { timeout: WAIT });
  await page.waitForFunction(
    (sel) => document.querySelector(`${sel} [data-field="state"]`).textContent.trim() === 'active',
    row,
    { timeout: WAIT },
  );
  out[`${key}_resumed_flash`] = await page.locator('#flash').innerText();
}

const out = { widths: {}, page_errors: [] };
await observe(out, async (browser) => {
  // 1. Without the token: the page and the change endpoints refuse.
  const anonymous = await browser.newContext();
  const page0 = await anonymous.newPage();
  // Chromium answers the 401 with a credentials prompt, which headless Playwright cancels.
  try {
    const refused = await page0.goto(`${url}/`, { timeout: WAIT });
    out.anonymous_navigation = `HTTP ${refused.status()}`;
  } catch (err) {
    out.anonymous_navigation = String(err.message).split('\n')[0];
  }
  const get0 = await anonymous.request.get(`${url}/`, { timeout: WAIT });
  out.anonymous_status = get0.status();
  out.anonymous_text = await get0.text();
  const post0 = await anonymous.request.post(`${url}/api/dead/${replaySeq}/replay`, {
    headers: { 'X-Jetq-Request': '1' },
    timeout: WAIT,
  });
  out.anonymous_replay_status = post0.status();
  await anonymous.close();
  const wrong = await browser.newContext({ httpCredentials: { username: 'ops', password: 'wrong' } });
  const wrongPage = await wrong.newPage();
  try {
    const r = await wrongPage.goto(`${url}/`, { timeout: WAIT });
    out.wrong_token_navigation = `HTTP ${r.status()}`;
  } catch (err) {
    out.wrong_token_navigation = String(err.message).split('\n')[0];
  }
  await wrong.close();

  // 2. The admin at desktop width (basic auth, as a person's browser would send it).
  const context = await browser.newContext({
    httpCredentials: { username: 'ops', password: token },
    viewport: DESKTOP,
  });
  const page = await watchedPage(context, out, 'desktop');
  const response = await page.goto(`${url}/`, { timeout: WAIT });
  out.status = response.status();
  await page.locator('#queue-table tr[data-queue="work"]').waitFor({ timeout: WAIT });
  const queueCells = () =>
    page.$$eval('#queue-table tbody tr[data-queue]', (rows) =>
      Object.fromEntries(
        rows.map((row) => [
          row.getAttribute('data-queue'),
          Object.fromEntries(
            [...row.querySelectorAll('[data-field]')].map((cell) => [
              cell.getAttribute('data-field'),
              cell.textContent.trim(),
            ]),
          ),
        ]),
      ),
    );
  out.queues = await queueCells();
  out.nav_dead = await navDead(page);
  // The chart fills in as the page polls: wait for a line per queue over at least two samples.
  await page.waitForFunction(
    () => {
      const lines = document.querySelectorAll('#chart-backlog polyline');
      return lines.length >= 2 && [...lines].every((l) => l.getAttribute('points').split(' ').length >= 2);
    },
    null,
    { timeout: WAIT },
  );
  out.chart_lines = await page.$$eval('#chart-backlog polyline', (lines) =>
    lines.map((l) => l.getAttribute('data-queue')),
  );
  // After polls: the header's count is still the table's sum (one sample).
  out.polled_nav_dead = await navDead(page);
  out.polled_table_dead = String(
    Object.values(await queueCells()).reduce((sum, q) => sum + Number(q.dead), 0),
  );
  out.widths['desktop /'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-overview.png`, fullPage: true });

  // Queues: latency, pause and resume by clicking.
  await page.goto(`${url}/queues`, { timeout: WAIT });
  out.queues_page = await page.$$eval('#queues-table tbody tr[data-queue]', (rows) =>
    Object.fromEntries(
      rows.map((row) => [
        row.getAttribute('data-queue'),
        Object.fromEntries(
          [...row.querySelectorAll('[data-field]')].map((cell) => [cell.getAttribute('data-field'), cell.textContent.trim()]),
        ),
      ]),
    ),
  );
  out.widths['desktop /queues'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-queues.png`, fullPage: true });
  await pauseResume(page, out, 'desktop');

  // Dead letters: one replayed, one discarded (it asks first).
  await page.goto(`${url}/dead`, { timeout: WAIT });
  out.dead_rows = await page.$$eval('#dead-table tbody tr', (rows) =>
    rows.map((row) => ({ seq: row.getAttribute('data-seq'), text: row.innerText })),
  );
  out.dead_counts = await page.locator('.counts').innerText();
  out.widths['desktop /dead'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-dead.png`, fullPage: true });
  await page.click(`button[data-action="replay"][data-seq="${replaySeq}"]`, { timeout: WAIT });
  await page.locator('#flash.ok').waitFor({ timeout: WAIT });
  out.replay_flash = await page.locator('#flash').innerText();
  await page.locator(`#dead-${replaySeq}`).waitFor({ state: 'detached', timeout: WAIT });
  page.once('dialog', (dialog) => {
    out.discard_dialog = dialog.message();
    dialog.accept();
  });
  await page.click(`button[data-action="discard"][data-seq="${discardSeq}"]`, { timeout: WAIT });
  await page.waitForFunction((seq) => !document.getElementById(`dead-${seq}`), discardSeq, { timeout: WAIT });
  out.discard_flash = await page.locator('#flash').innerText();

  // Filters and paging: the filter form applied by submitting it.
  await page.selectOption('select[name="reason"]', 'fatal');
  await Promise.all([page.waitForURL(/reason=fatal/, { timeout: WAIT }), page.click('form.filters button[type="submit"]')]);
  out.fatal_rows = await page.$$eval('#dead-table tbody tr', (rows) => rows.map((r) => r.getAttribute('data-seq')));
  await page.goto(`${url}/dead?limit=5`, { timeout: WAIT });
  out.first_page_rows = await page.$$eval('#dead-table tbody tr', (rows) => rows.length);
  await Promise.all([page.waitForURL(/after=/, { timeout: WAIT }), page.click('#next-page')]);
  out.second_page_first = await page.$eval('#dead-table tbody tr', (r) => r.getAttribute('data-seq'));

  // Bulk: retry every letter of one filter, discard every letter of another.
  await page.goto(`${url}/dead?${bulkRetryQuery}`, { timeout: WAIT });
  await bulk(page, 'replay', out, 'bulk_retry');
  await page.goto(`${url}/dead?${bulkDiscardQuery}`, { timeout: WAIT });
  await bulk(page, 'discard', out, 'bulk_discard');
  out.widths['desktop bulk'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-bulk.png`, fullPage: true });

  // Detail page: the long Jetq-Failure header wraps.
  await page.goto(`${url}/dead/${detailSeq}`, { timeout: WAIT });
  out.detail_text = await page.locator('main').innerText({ timeout: WAIT });
  out.widths['desktop /dead/detail'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-dead-detail.png`, fullPage: true });

  // Limits: a unique key released by clicking (it asks first).
  await page.goto(`${url}/limits`, { timeout: WAIT });
  const releaseRow = `#limits tr[data-entry="${releaseEntry}"]`;
  await page.locator(releaseRow).waitFor({ timeout: WAIT });
  out.limits_text = await page.locator('#limits').innerText({ timeout: WAIT });
  out.widths['desktop /limits'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-limits.png`, fullPage: true });
  page.once('dialog', (dialog) => {
    out.release_dialog = dialog.message();
    dialog.accept();
  });
  await page.click(`button[data-release="${releaseEntry}"]`, { timeout: WAIT });
  await page.locator('#limits-flash.ok').waitFor({ timeout: WAIT });
  out.release_flash = await page.locator('#limits-flash').innerText();
  await page.locator(releaseRow).waitFor({ state: 'detached', timeout: WAIT });

  // Task types and schedules.
  await page.goto(`${url}/catalog`, { timeout: WAIT });
  out.catalog_text = await page.locator('#catalog').innerText();
  out.widths['desktop /catalog'] = await widths(page);
  await page.goto(`${url}/schedules`, { timeout: WAIT });
  out.schedules_text = await page.locator('#schedules').innerText();
  out.widths['desktop /schedules'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-schedules.png`, fullPage: true });

  // Tasks: the state tabs, the search box, a task's detail and its Cancel (it asks first).
  await page.goto(`${url}/tasks?state=pending`, { timeout: WAIT });
  out.tasks_rows = await page.$$eval('#tasks-table tbody tr', (rows) => rows.map((r) => r.getAttribute('data-task')));
  out.widths['desktop /tasks'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-tasks.png`, fullPage: true });
  await Promise.all([page.waitForURL(/state=delayed/, { timeout: WAIT }), page.click('nav.tabs a[data-state="delayed"]')]);
  out.delayed_rows = await page.$$eval('#tasks-table tbody tr', (rows) => rows.map((r) => r.getAttribute('data-task')));
  await page.fill('#task-search input[name="id"]', cancelTask);
  await Promise.all([page.waitForURL(new RegExp(`/tasks/${cancelTask}$`), { timeout: WAIT }), page.click('#task-search button[type="submit"]')]);
  out.task_detail_text = await page.locator('#task-detail').innerText();
  out.widths['desktop /tasks/id'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-task-detail.png`, fullPage: true });
  page.once('dialog', (dialog) => {
    out.cancel_dialog = dialog.message();
    dialog.accept();
  });
  await page.click(`button[data-cancel="${cancelTask}"]`, { timeout: WAIT });
  await page.locator('#flash.ok').waitFor({ timeout: WAIT });
  out.cancel_flash = await page.locator('#flash').innerText();
  // Bulk Cancel of the tasks matching the page's filter: the count in the confirmation, the
  // job's progress, its result on the reloaded page.
  await page.goto(`${url}/tasks?${bulkCancelQuery}`, { timeout: WAIT });
  out.bulk_cancel_rows_before = await page.locator('#tasks-table tbody tr').count();
  await bulk(page, 'cancel', out, 'bulk_cancel');
  out.bulk_cancel_rows_after = await page.locator('#tasks-table tbody tr').count();
  out.widths['desktop /tasks bulk cancel'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-tasks-bulk-cancel.png`, fullPage: true });
  await page.goto(`${url}/tasks/${deadTask}`, { timeout: WAIT });
  out.dead_task_text = await page.locator('#task-detail').innerText();
  out.widths['desktop /tasks/dead'] = await widths(page);

  // Workers.
  await page.goto(`${url}/workers`, { timeout: WAIT });
  out.workers_text = await page.locator('#workers').innerText();
  out.widths['desktop /workers'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-workers.png`, fullPage: true });

  // Schedules: pause, resume and run now by clicking.
  await page.goto(`${url}/schedules`, { timeout: WAIT });
  const srow = `#schedule-table tr[data-schedule="${schedule}"]`;
  page.once('dialog', (d) => {
    out.schedule_pause_dialog = d.message();
    d.accept();
  });
  await page.click(`${srow} button[data-schedule-action="pause"]`, { timeout: WAIT });
  await page.waitForFunction((sel) => document.querySelector(`${sel} [data-field="state"]`).textContent.trim() === 'paused', srow, { timeout: WAIT });
  out.schedule_paused_flash = await page.locator('#flash').innerText();
  await page.reload({ timeout: WAIT });
  out.schedule_paused_row = await page.locator(srow).innerText();
  await page.screenshot({ path: `${shots}/console-schedules-paused.png`, fullPage: true });
  await page.click(`${srow} button[data-schedule-action="resume"]`, { timeout: WAIT });
  await page.waitForFunction((sel) => document.querySelector(`${sel} [data-field="state"]`).textContent.trim() === 'active', srow, { timeout: WAIT });
  out.schedule_resumed_flash = await page.locator('#flash').innerText();
  page.once('dialog', (d) => {
    out.schedule_run_dialog = d.message();
    d.accept();
  });
  await page.click(`${srow} button[data-schedule-action="run"]`, { timeout: WAIT });
  await page.waitForFunction(() => document.getElementById('flash').textContent.indexOf('Run now requested') === 0, null, { timeout: WAIT });
  out.schedule_run_flash = await page.locator('#flash').innerText();

  // Even with the token, a change without the console's own header is refused.
  const forged = await context.request.post(`${url}/api/dead/${detailSeq}/replay`, { timeout: WAIT });
  out.forged_status = forged.status();
  await context.close();

  // 3. The admin at phone width: every page fits, and the actions work.
  const phone = await phoneContext(browser, 'ops', token);
  const mobile = await watchedPage(phone, out, 'phone');
  for (const path of PAGES) {
    out.widths[`phone ${pageKey(path)}`] = await openWidths(mobile, `${url}${path}`);
  }
  await mobile.goto(`${url}/`, { timeout: WAIT });
  await mobile.waitForFunction(() => document.querySelectorAll('#chart-backlog polyline').length >= 2, null, { timeout: WAIT });
  await mobile.screenshot({ path: `${shots}/console-phone-overview.png`, fullPage: true });
  await mobile.goto(`${url}/dead/${detailSeq}`, { timeout: WAIT });
  await mobile.screenshot({ path: `${shots}/console-phone-dead-detail.png`, fullPage: true });
  await mobile.screenshot({ path: `${shots}/phone-dead-detail-top.png` });
  await mobile.locator('#attempts').screenshot({ path: `${shots}/phone-dead-detail-attempts.png` });
  await mobile.locator('#headers').screenshot({ path: `${shots}/phone-dead-detail-headers.png` });
  await mobile.goto(`${url}/queues`, { timeout: WAIT });
  await mobile.screenshot({ path: `${shots}/console-phone-queues.png`, fullPage: true });
  await pauseResume(mobile, out, 'phone');
  await mobile.goto(`${url}/tasks?state=dead`, { timeout: WAIT });
  await mobile.screenshot({ path: `${shots}/console-phone-tasks.png`, fullPage: true });
  await mobile.goto(`${url}/tasks/${deadTask}`, { timeout: WAIT });
  await mobile.screenshot({ path: `${shots}/console-phone-task-detail.png`, fullPage: true });
  await mobile.goto(`${url}/workers`, { timeout: WAIT });
  await mobile.screenshot({ path: `${shots}/console-phone-workers.png`, fullPage: true });
  await mobile.goto(`${url}/schedules`, { timeout: WAIT });
  await mobile.screenshot({ path: `${shots}/console-phone-schedules.png`, fullPage: true });
  await mobile.goto(`${url}/dead`, { timeout: WAIT });
  await mobile.screenshot({ path: `${shots}/console-phone-dead.png`, fullPage: true });
  await mobile.screenshot({ path: `${shots}/phone-dead-top.png` });
  mobile.once('dialog', (dialog) => dialog.accept());
  await mobile.tap(`button[data-action="discard"][data-seq="${phoneDiscardSeq}"]`, { timeout: WAIT });
  await mobile.waitForFunction((seq) => !document.getElementById(`dead-${seq}`), phoneDiscardSeq, { timeout: WAIT });
  out.phone_discard_flash = await mobile.locator('#flash').innerText();
  await mobile.goto(`${url}/dead?${phoneBulkQuery}`, { timeout: WAIT });
  await bulk(mobile, 'discard', out, 'phone_bulk');
  out.widths['phone bulk'] = await widths(mobile);
  await mobile.goto(`${url}/tasks?${phoneCancelQuery}`, { timeout: WAIT });
  out.phone_cancel_rows_before = await mobile.locator('#tasks-table tbody tr').count();
  await bulk(mobile, 'cancel', out, 'phone_cancel');
  out.phone_cancel_rows_after = await mobile.locator('#tasks-table tbody tr').count();
  out.widths['phone /tasks bulk cancel'] = await widths(mobile);
  await mobile.screenshot({ path: `${shots}/console-phone-tasks-bulk-cancel.png`, fullPage: true });
  await phone.close();

  // 4. A read-only token: every page, no button, every change refused.
  const viewer = await browser.newContext({
    httpCredentials: { username: 'auditor', password: viewerToken },
    viewport: DESKTOP,
  });
  const view = await watchedPage(viewer, out, 'viewer');
  out.viewer = {};
  for (const path of PAGES) {
    const r = await view.goto(`${url}${path}`, { timeout: WAIT });
    out.viewer[pageKey(path)] = {
      status: r.status(),
      badge: await view.locator('#read-only').count(),
      buttons: await view.locator('button[data-action], button[data-bulk], button[data-queue-action], button[data-release], button[data-cancel], button[data-schedule-action]').count(),
    };
  }
  await view.goto(`${url}/dead`, { timeout: WAIT });
  await view.screenshot({ path: `${shots}/console-read-only.png`, fullPage: true });
  out.viewer_posts = await view.evaluate(async (seq) => {
    const paths = [
      `/api/dead/${seq}/replay`,
      `/api/dead/${seq}/discard`,
      '/api/dead/bulk?action=discard',
      '/api/queues/work/pause',
      '/api/limits/release?entry=x',
      `/api/tasks/${seq}/cancel`,
      '/api/tasks/bulk-cancel?state=pending',
      '/api/schedules/nightly-report/pause',
      '/api/schedules/nightly-report/run',
    ];
    const seen = {};
    for (const p of paths) {
      const r = await fetch(p, { method: 'POST', headers: { 'X-Jetq-Request': '1' }, credentials: 'same-origin' });
      seen[p] = { status: r.status, body: await r.text() };
    }
    return seen;
  }, detailSeq);
  await viewer.close();
});
