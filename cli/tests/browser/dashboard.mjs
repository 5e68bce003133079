// Drives the jetq dashboard in Debian's headless Chromium with playwright-core, and prints what
// it saw as one JSON object on stdout. The Rust test (cli/tests/dashboard_browser.rs) starts the
// nats-server and the dashboard, runs this script, and checks the observations against the
// server's state. Every wait here is bounded.
//
// Environment:
//   DASHBOARD_URL     e.g. http://127.0.0.1:41234
//   DASHBOARD_TOKEN   the dashboard's token (basic-auth password)
//   REPLAY_SEQ        the dead letter to replay by clicking
//   DISCARD_SEQ       the dead letter to discard by clicking
//   DEAD_AFTER        the `work` queue's dead count expected once both are gone
//   RELEASE_ENTRY     the flow-control entry (a unique key) to release by clicking
//   SCREENSHOT_DIR    where to write dashboard.png, dashboard-after.png and dashboard-limits.png
//   CHROMIUM          the browser (default /usr/bin/chromium)

import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    throw new Error(`${name} is not set`);
  }
  return value;
};

const url = env('DASHBOARD_URL');
const token = env('DASHBOARD_TOKEN');
const replaySeq = env('REPLAY_SEQ');
const discardSeq = env('DISCARD_SEQ');
const deadAfter = env('DEAD_AFTER');
const releaseEntry = env('RELEASE_ENTRY');
const shots = env('SCREENSHOT_DIR');
const WAIT = 20000;

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  timeout: WAIT,
});

const out = {};
try {
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

  // 2. With the token (basic auth, as a person's browser would send it).
  const context = await browser.newContext({
    httpCredentials: { username: 'ops', password: token },
    viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  const response = await page.goto(`${url}/`, { timeout: WAIT });
  out.status = response.status();
  await page.locator('#queue-table tr[data-queue="work"]').waitFor({ timeout: WAIT });
  out.queues = await page.$$eval('#queue-table tbody tr[data-queue]', (rows) =>
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
  out.dead_rows = await page.$$eval('#dead-table tbody tr', (rows) =>
    rows.map((row) => ({
      seq: row.getAttribute('data-seq'),
      text: row.innerText,
    })),
  );
  out.schedules_text = await page.locator('#schedules').innerText({ timeout: WAIT });
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
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  // 3. Replay one dead letter by clicking.
  await page.click(`button[data-action="replay"][data-seq="${replaySeq}"]`, { timeout: WAIT });
  await page.locator('#flash.ok').waitFor({ timeout: WAIT });
  out.replay_flash = await page.locator('#flash').innerText();
  await page.locator(`#dead-${replaySeq}`).waitFor({ state: 'detached', timeout: WAIT });

  // 4. Discard another (it asks first).
  page.once('dialog', (dialog) => {
    out.discard_dialog = dialog.message();
    dialog.accept();
  });
  await page.click(`button[data-action="discard"][data-seq="${discardSeq}"]`, { timeout: WAIT });
  await page.waitForFunction(
    (seq) => !document.getElementById(`dead-${seq}`),
    discardSeq,
    { timeout: WAIT },
  );
  out.discard_flash = await page.locator('#flash').innerText();

  // 5. The live counts follow (polling /api/overview).
  await page.waitForFunction(
    (expected) => {
      const cell = document.querySelector('#queue-table tr[data-queue="work"] [data-field="dead"]');
      return cell && cell.textContent.trim() === expected;
    },
    deadAfter,
    { timeout: WAIT },
  );
  out.work_dead_after = await page
    .locator('#queue-table tr[data-queue="work"] [data-field="dead"]')
    .innerText();

  // 6. Even with the token, a change without the dashboard's own header is refused.
  const forged = await context.request.post(`${url}/api/dead/${replaySeq}/replay`, { timeout: WAIT });
  out.forged_status = forged.status();

  // 7. The detail page of a dead letter still there.
  const remaining = out.dead_rows.map((r) => r.seq).filter((s) => s !== replaySeq && s !== discardSeq);
  if (remaining.length > 0) {
    await page.goto(`${url}/dead/${remaining[0]}`, { timeout: WAIT });
    out.detail_text = await page.locator('main').innerText({ timeout: WAIT });
  }
  await page.goto(`${url}/`, { timeout: WAIT });
  await page.locator('#queue-table tr[data-queue="work"]').waitFor({ timeout: WAIT });
  await page.waitForFunction(
    () => document.querySelectorAll('#chart-backlog polyline').length >= 2,
    null,
    { timeout: WAIT },
  );
  await page.screenshot({ path: `${shots}/dashboard-after.png`, fullPage: true });

  // 8. The Limits section: what holds, and a unique key released by clicking (it asks first).
  const limits = page.locator('#limits');
  const releaseRow = `#limits tr[data-entry="${releaseEntry}"]`;
  await page.locator(releaseRow).waitFor({ timeout: WAIT });
  out.limits_text = await limits.innerText({ timeout: WAIT });
  await limits.screenshot({ path: `${shots}/dashboard-limits.png` });
  page.once('dialog', (dialog) => {
    out.release_dialog = dialog.message();
    dialog.accept();
  });
  await page.click(`button[data-release="${releaseEntry}"]`, { timeout: WAIT });
  await page.locator('#limits-flash.ok').waitFor({ timeout: WAIT });
  out.release_flash = await page.locator('#limits-flash').innerText();
  await page.locator(releaseRow).waitFor({ state: 'detached', timeout: WAIT });
  out.page_errors = errors;
  await context.close();
} catch (err) {
  out.failure = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(out.failure ? 1 : 0);
