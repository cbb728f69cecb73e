// Drives Debian's headless Chromium (never a downloaded browser) through the scenarios that
// tests/it/browser.rs describes, and prints one JSON line with what each page recorded.
//
// Input: the BROWSER_TEST environment variable (or the first argument), JSON:
//   { "spki": ["<base64 sha256 of a server's SubjectPublicKeyInfo>", ...],
//     "scenarios": [{ "name": "...", "url": "https://.../ui/#..." }, ...] }
// Chromium trusts the test servers through --ignore-certificate-errors-spki-list.
// A Basic challenge the page can read makes Chromium prompt for a password; the prompt is
// cancelled through the DevTools protocol, as a user would, so the page sees the 401.
// No page.route(): Playwright would then answer CORS preflights itself and hide the gate's.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 15_000;

const input = JSON.parse(process.env.BROWSER_TEST ?? process.argv[2] ?? 'null');
if (!input || !Array.isArray(input.spki) || !Array.isArray(input.scenarios)) {
  console.error('usage: BROWSER_TEST=\'{"spki":[...],"scenarios":[{"name","url"}]}\' node cors.mjs');
  process.exit(2);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'registry-gate-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--ignore-certificate-errors-spki-list=${input.spki.join(',')}`,
    ],
  });
  const out = { browser: context.browser()?.version() ?? null, scenarios: {} };
  for (const scenario of input.scenarios) {
    const page = await context.newPage();
    // Preflights never reach page events; the DevTools protocol reports them.
    const preflights = [];
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    cdp.on('Network.requestWillBeSent', (e) => {
      if (e.request.method === 'OPTIONS') preflights.push(e.request.url);
    });
    // A readable 401 with a Basic challenge makes Chromium ask the user for a password, and
    // wait. Answer as a user who presses Cancel: the page then gets the 401 itself. Requests
    // paused for this go on unchanged; nothing is answered on the gate's behalf.
    const authPrompts = [];
    await cdp.send('Fetch.enable', { handleAuthRequests: true, patterns: [{ urlPattern: '*/v2/*' }] });
    cdp.on('Fetch.requestPaused', (e) => {
      cdp.send('Fetch.continueRequest', { requestId: e.requestId }).catch(() => {});
    });
    cdp.on('Fetch.authRequired', (e) => {
      authPrompts.push(e.request.url);
      cdp
        .send('Fetch.continueWithAuth', {
          requestId: e.requestId,
          authChallengeResponse: { response: 'CancelAuth' },
        })
        .catch(() => {});
    });
    const consoleLines = [];
    page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
    const response = await page.goto(scenario.url, { timeout: STEP_TIMEOUT_MS });
    let results = null;
    let error = null;
    try {
      await page.waitForFunction(() => window.done === true, null, { timeout: STEP_TIMEOUT_MS });
    } catch (e) {
      error = String(e);
    }
    // Partial results too, so a step that hangs is named in the report.
    results = await page.evaluate(() => window.results ?? null).catch(() => null);
    out.scenarios[scenario.name] = {
      pageStatus: response?.status() ?? null,
      results,
      error,
      preflights,
      authPrompts,
      console: consoleLines,
    };
    await page.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
} finally {
  await context?.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
