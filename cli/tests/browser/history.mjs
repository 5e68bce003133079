// Drives the console's History page in Debian's headless Chromium with playwright-core and
// prints what it saw as one JSON object on stdout. The Rust test (cli/tests/history_browser.rs)
// starts the nats-server, a worker that writes the metrics history, and the dashboard, runs
// this script, and checks the observations. Every wait here is bounded.
//
// Environment:
//   DASHBOARD_URL   e.g. http://127.0.0.1:41234
//   DASHBOARD_TOKEN the admin token (basic-auth password)
//   QUEUE           the queue whose charts are checked
//   SCREENSHOT_DIR  where to write console-*.png
//   CHROMIUM        the browser (default /usr/bin/chromium)

import { DESKTOP, WAIT, env, observe, phoneContext, watchedPage, widths } from './support.mjs';

const url = env('DASHBOARD_URL');
const token = env('DASHBOARD_TOKEN');
const queue = env('QUEUE');
const shots = env('SCREENSHOT_DIR');

// What a chart looks like on screen: its box, its lines (with their drawn length) and labels.
const charts = (page, q) =>
  page.$$eval(`#history-${q} svg.history-chart`, (svgs) =>
    svgs.map((svg) => {
      const box = svg.getBoundingClientRect();
      return {
        id: svg.id,
        width: Math.round(box.width),
        height: Math.round(box.height),
        lines: [...svg.querySelectorAll('polyline')].map((line) => ({
          series: line.getAttribute('data-series'),
          length: Math.round(line.getTotalLength()),
          stroke: getComputedStyle(line).stroke,
        })),
        labels: [...svg.querySelectorAll('text')].map((t) => t.textContent),
      };
    }),
  );

const out = { widths: {}, page_errors: [], requests: [] };
await observe(out, async (browser) => {
  const context = await browser.newContext({ httpCredentials: { username: 'ops', password: token }, viewport: DESKTOP });
  const page = await watchedPage(context, out, 'desktop');
  page.on('request', (request) => {
    if (!request.url().startsWith(url)) out.requests.push(request.url());
  });
  await page.goto(`${url}/`, { timeout: WAIT });
  await page.click('nav a[data-nav="history"]', { timeout: WAIT });
  await page.locator(`#history-${queue}`).waitFor({ timeout: WAIT });
  out.history_url = page.url();
  out.totals = await page.locator(`#history-${queue} .totals`).innerText();
  out.desktop_1h = await charts(page, queue);
  out.widths['desktop /history'] = await widths(page);
  await page.click('nav.tabs a:has-text("6h")', { timeout: WAIT });
  await page.locator(`#history-${queue}`).waitFor({ timeout: WAIT });
  out.url_6h = page.url();
  out.desktop_6h = await charts(page, queue);
  out.widths['desktop /history?range=6h'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-history.png`, fullPage: true });
  await page.selectOption('#history-form select[name="queue"]', queue);
  await page.click('#history-form button[type="submit"]', { timeout: WAIT });
  await page.locator(`#history-${queue}`).waitFor({ timeout: WAIT });
  out.url_queue = page.url();
  out.blocks_for_queue = await page.$$eval('article.history-queue', (blocks) => blocks.map((b) => b.getAttribute('data-queue')));
  await context.close();

  const phone = await phoneContext(browser, 'ops', token);
  const mobile = await watchedPage(phone, out, 'phone');
  for (const range of ['1h', '24h']) {
    await mobile.goto(`${url}/history?range=${range}`, { timeout: WAIT });
    await mobile.locator(`#history-${queue}`).waitFor({ timeout: WAIT });
    out.widths[`phone /history?range=${range}`] = await widths(mobile);
    out[`phone_${range}`] = await charts(mobile, queue);
  }
  await mobile.goto(`${url}/history?range=6h`, { timeout: WAIT });
  await mobile.locator(`#history-${queue}`).waitFor({ timeout: WAIT });
  await mobile.screenshot({ path: `${shots}/console-phone-history.png`, fullPage: true });
  await phone.close();
});
