// Drives Ocelot's dashboard in headless Chromium (Debian's /usr/bin/chromium through playwright-core):
// node dashboard.mjs <base url> <project> <artifact dir> [user:password]
// Loads the overview, checks it shows the pools and the traffic charts, follows the project's link, checks the
// drift charts have drawn bars, saves a screenshot of each page, and fails on any console error, page error or
// failed request. Prints what it found as one JSON line.
import { chromium } from 'playwright-core';

const [base, project, outDir, credentials] = process.argv.slice(2);
if (!base || !project || !outDir) {
  console.error('usage: node dashboard.mjs <base url> <project> <artifact dir> [user:password]');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
  ],
});
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };
try {
  const options = { viewport: { width: 1400, height: 1000 } };
  if (credentials) {
    const [username, password] = credentials.split(':');
    options.httpCredentials = { username, password };
  }
  const context = await browser.newContext(options);
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page error: ${e}`));
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()}`));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`); });

  const overview = await page.goto(`${base}/`, { waitUntil: 'load' });
  check(overview.status() === 200, `overview answered ${overview.status()}`);
  const poolRows = await page.locator('#pools table tbody tr').count();
  check(poolRows >= 1, 'the overview shows no pool');
  const serverRows = await page.locator('#servers table tbody tr').count();
  const lines = await page.locator('#throughput polyline').count();
  check(lines >= 1, 'the throughput chart has no line');
  const link = page.locator(`#models a[href="/models/${encodeURIComponent(project)}"]`).first();
  check(await link.count() === 1, `no link to ${project} in the models table`);
  await page.screenshot({ path: `${outDir}/dashboard-overview.png`, fullPage: true });

  await link.click();
  await page.waitForURL(`**/models/${encodeURIComponent(project)}`);
  const charts = await page.locator('svg.drift-chart').count();
  check(charts >= 1, 'the project page has no drift chart');
  const drawn = await page.locator('svg.drift-chart').first().evaluate((svg) => {
    const box = svg.getBoundingClientRect();
    const live = [...svg.querySelectorAll('rect.live')].map((r) => r.getBoundingClientRect().height);
    const train = [...svg.querySelectorAll('rect.train')].map((r) => r.getBoundingClientRect().height);
    return {
      width: box.width, height: box.height, live: live.filter((h) => h > 0).length,
      train: train.filter((h) => h > 0).length,
    };
  });
  check(drawn.width > 200 && drawn.height > 50, `the drift chart is ${drawn.width}x${drawn.height}`);
  check(drawn.live > 0 && drawn.train > 0, `the drift chart drew ${drawn.live} live and ${drawn.train} training bars`);
  const metricsRows = await page.locator('#live-metrics table tbody tr').count();
  const captions = await page.locator('svg.drift-chart').evaluateAll(
    (svgs) => svgs.map((s) => s.closest('figure').querySelector('figcaption').textContent),
  );
  await page.screenshot({ path: `${outDir}/dashboard-model.png`, fullPage: true });

  for (const e of errors) failures.push(e);
  console.log(JSON.stringify({
    poolRows, serverRows, lines, charts, drawn, metricsRows, captions, failures,
  }));
} finally {
  await browser.close();
}
process.exit(failures.length ? 1 : 0);
