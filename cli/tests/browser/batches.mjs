// Drives the console's Batches pages in Debian's headless Chromium with playwright-core, and
// prints what it saw as one JSON object on stdout. The Rust test (cli/tests/batches_browser.rs)
// starts the nats-server, a worker whose two members block, and the dashboard, runs this
// script, and checks the observations. Every wait here is bounded.
//
// Environment:
//   DASHBOARD_URL   e.g. http://127.0.0.1:41234
//   DASHBOARD_TOKEN the admin token (basic-auth password)
//   VIEWER_TOKEN    the read-only token
//   BATCH           the batch with running, queued, succeeded and dead members
//   CHAIN           a chain that stopped at a failed link
//   SCREENSHOT_DIR  where to write console-*.png
//   CHROMIUM        the browser (default /usr/bin/chromium)

import { DESKTOP, WAIT, env, observe, openWidths, phoneContext, watchedPage, widths } from './support.mjs';

const url = env('DASHBOARD_URL');
const token = env('DASHBOARD_TOKEN');
const viewerToken = env('VIEWER_TOKEN');
const batch = env('BATCH');
const chain = env('CHAIN');
const shots = env('SCREENSHOT_DIR');
const PAGES = ['/batches', `/batches/${batch}`, `/chains/${chain}`];

const out = { widths: {}, page_errors: [] };
await observe(out, async (browser) => {
  // The admin at desktop width: from the navigation to the list, to the batch, to a member.
  const context = await browser.newContext({ httpCredentials: { username: 'ops', password: token }, viewport: DESKTOP });
  const page = await watchedPage(context, out, 'desktop');
  await page.goto(`${url}/`, { timeout: WAIT });
  await page.click('nav a[data-nav="batches"]', { timeout: WAIT });
  await page.locator('#batches-table').waitFor({ timeout: WAIT });
  out.list_url = page.url();
  out.list_rows = await page.$$eval('#batches-table tbody tr', (rows) =>
    rows.map((row) => ({
      id: row.getAttribute('data-batch'),
      cells: Object.fromEntries([...row.querySelectorAll('td[data-label]')].map((td) => [td.getAttribute('data-label'), td.textContent.trim()])),
    })),
  );
  out.widths['desktop /batches'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-batches.png`, fullPage: true });

  await page.click(`#batches-table tr[data-batch="${batch}"] a[href="/batches/${batch}"]`, { timeout: WAIT });
  await page.locator('#batch-detail').waitFor({ timeout: WAIT });
  out.detail_url = page.url();
  out.counts = await page.locator('#batch-counts').innerText();
  out.running_rows = await page.$$eval('#running-members tbody tr', (rows) => rows.map((r) => r.getAttribute('data-member')));
  out.member_rows = await page.$$eval('#members tbody tr', (rows) =>
    rows.map((r) => ({ id: r.getAttribute('data-member'), outcome: r.querySelector('td[data-label="outcome"]').textContent.trim() })),
  );
  out.callbacks = await page.locator('#callbacks').innerText();
  out.widths['desktop /batches/id'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-batch-detail.png`, fullPage: true });

  // A dead member: its task page, which links back to the batch.
  const dead = out.member_rows.find((m) => m.outcome.startsWith('dead'));
  if (dead) {
    await page.click(`#members tr[data-member="${dead.id}"] td.wide a`, { timeout: WAIT });
    await page.locator('#task-detail').waitFor({ timeout: WAIT });
    out.dead_task_url = page.url();
    out.dead_task_batch = await page.locator('#task-batch').innerText();
    await page.click('#task-batch a', { timeout: WAIT });
    await page.locator('#batch-detail').waitFor({ timeout: WAIT });
    out.back_url = page.url();
  }

  // The chain, from its row below the batches.
  await page.goto(`${url}/batches`, { timeout: WAIT });
  await page.click(`#chains-table tr[data-chain="${chain}"] a`, { timeout: WAIT });
  await page.locator('#chain-detail').waitFor({ timeout: WAIT });
  out.chain_url = page.url();
  out.chain_state = await page.locator('#chain-state').innerText();
  out.chain_links = await page.$$eval('#links tbody tr', (rows) =>
    rows.map((r) => r.querySelector('td[data-label="state"]').textContent.trim()),
  );
  out.widths['desktop /chains/id'] = await widths(page);
  await page.screenshot({ path: `${shots}/console-chain.png`, fullPage: true });
  await context.close();

  // At phone width: every page fits.
  const phone = await phoneContext(browser, 'ops', token);
  const mobile = await watchedPage(phone, out, 'phone');
  for (const path of PAGES) {
    out.widths[`phone ${path}`] = await openWidths(mobile, `${url}${path}`);
    if (path === '/batches') {
      await mobile.screenshot({ path: `${shots}/console-phone-batches.png`, fullPage: true });
    } else if (path.startsWith('/batches/')) {
      await mobile.screenshot({ path: `${shots}/console-phone-batch-detail.png`, fullPage: true });
    }
  }
  await phone.close();

  // The read-only token sees the pages.
  const viewer = await browser.newContext({ httpCredentials: { username: 'viewer', password: viewerToken }, viewport: DESKTOP });
  const view = await viewer.newPage();
  out.viewer = {};
  for (const path of PAGES) {
    const response = await view.goto(`${url}${path}`, { timeout: WAIT });
    out.viewer[path] = { status: response.status(), badge: await view.locator('#read-only').count() };
  }
  await viewer.close();
});
