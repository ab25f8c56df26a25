// Opens the OGC HTML pages and /docs in headless Chromium (Debian's, via playwright-core) with the
// network cut off: every request to a host other than 127.0.0.1/localhost is aborted and listed.
// Prints one JSON line: per page its status, what it shows, console errors and blocked requests.
//   node ogc_pages_check.mjs --base http://127.0.0.1:PORT --out DIR
import { cliArgs, launchBrowser } from './chromium.mjs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const args = cliArgs();
mkdirSync(args.out, { recursive: true });
const report = { blocked: [], pages: {} };
const browser = await launchBrowser();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'zh-CN' });
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === '127.0.0.1' || host === 'localhost') return route.continue();
    report.blocked.push(route.request().url());
    return route.abort('internetdisconnected');
  });
  const visit = async (name, path, wait, evaluate) => {
    const page = await context.newPage();
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    const res = await page.goto(args.base + path, { waitUntil: 'load', timeout: 60000 });
    let shown = null;
    try {
      await page.waitForSelector(wait, { timeout: 30000 });
      shown = await page.evaluate(evaluate);
    } catch (e) {
      errors.push(`waiting for ${wait}: ${e}`);
    }
    await page.screenshot({ path: join(args.out, `${name}.png`), fullPage: false });
    report.pages[name] = { status: res.status(), type: res.headers()['content-type'], shown, errors };
    await page.close();
  };
  await visit('items', '/collections/parcels/items?limit=10', 'tr.feature', `({
    rows: [...document.querySelectorAll('tr.feature')].map(r => r.dataset.id),
    headers: [...document.querySelectorAll('#features th')].map(th => th.title || th.textContent),
    matched: document.querySelector('#number-matched').textContent,
    mapLinks: [...document.querySelectorAll('a')].filter(a => new URL(a.href).pathname.startsWith('/map')).map(a => a.href),
    next: document.querySelector('#next-page')?.href || null })`);
  await visit('landing', '/?f=html', 'a.map-link', `({
    mapLinks: [...document.querySelectorAll('a.map-link')].map(a => a.href), title: document.title })`);
  await visit('docs', '/docs', '.opblock', `({
    operations: [...document.querySelectorAll('.opblock')].map(o =>
      (o.querySelector('.opblock-summary-method')?.textContent || '') + ' ' +
      (o.querySelector('.opblock-summary-path')?.getAttribute('data-path') || o.querySelector('.opblock-summary-path')?.textContent || '')),
    version: document.querySelector('.version-stamp, .version')?.textContent || null,
    title: document.querySelector('.info .title')?.textContent || null })`);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(report)}\n`);
