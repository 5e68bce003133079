// What the console's browser scripts share: reading the environment the Rust tests set,
// launching Debian's headless Chromium with playwright-core, the desktop and phone windows,
// the page-width probe, and printing the observations as one JSON object on stdout.

import { chromium } from 'playwright-core';

/** Every wait in the scripts is bounded by this many milliseconds. */
export const WAIT = 30000;
/** The desktop window. */
export const DESKTOP = { width: 1400, height: 900 };
/** A phone's window. */
export const PHONE = { width: 390, height: 844 };

/** The environment variable `name`, or `fallback`; throws if neither is set. */
export const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    throw new Error(`${name} is not set`);
  }
  return value;
};

/** Launches headless Chromium (`CHROMIUM`, default /usr/bin/chromium) with no background traffic. */
export const launch = () =>
  chromium.launch({
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

/** A context logged in as `username`/`password` at phone width, with touch. */
export const phoneContext = (browser, username, password) =>
  browser.newContext({
    httpCredentials: { username, password },
    viewport: PHONE,
    isMobile: true,
    hasTouch: true,
  });

/** The page's width against the viewport's: nothing may stick out sideways. */
export const widths = (page) =>
  page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
  }));

/** A new page of `context` whose errors go to `out.page_errors` as `<label>: <error>`. */
export async function watchedPage(context, out, label) {
  const page = await context.newPage();
  page.on('pageerror', (err) => out.page_errors.push(`${label}: ${err}`));
  return page;
}

/** Opens `href` in `page`, waits for its first section and returns its widths. */
export async function openWidths(page, href) {
  await page.goto(href, { timeout: WAIT });
  await page.locator('main section').first().waitFor({ timeout: WAIT });
  return widths(page);
}

/**
 * Runs `steps(browser)` in a launched Chromium; an error becomes `out.failure`. Then closes
 * the browser, prints `out` as one line of JSON and exits (1 after a failure).
 */
export async function observe(out, steps) {
  const browser = await launch();
  try {
    await steps(browser);
  } catch (err) {
    out.failure = String(err && err.stack ? err.stack : err);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(out.failure ? 1 : 0);
}
