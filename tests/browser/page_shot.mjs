// Opens one page in headless Chromium (Debian's, via playwright-core), waits for a selector, and
// screenshots the page and given elements. Prints one JSON line: console errors, per selector
// its box and screenshot file, and whatever `--eval` (a JS expression) returns.
//   node page_shot.mjs --url URL --out DIR --name NAME --wait SELECTOR --shots '{"thumb":"#thumb"}'
//        [--eval 'JS expression'] [--click SELECTOR] [--download 1] [--width 1280 --height 900]
import { cliArgs, launchBrowser } from './chromium.mjs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const args = cliArgs();
mkdirSync(args.out, { recursive: true });
const report = { console_errors: [], page_errors: [], failed_requests: [], shots: {} };
const browser = await launchBrowser();
try {
  const context = await browser.newContext({
    viewport: { width: Number(args.width || 1280), height: Number(args.height || 900) },
    deviceScaleFactor: 1, locale: 'zh-CN', acceptDownloads: true,
  });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });
  page.on('pageerror', (e) => report.page_errors.push(String(e)));
  page.on('response', (r) => { if (r.status() >= 400) report.failed_requests.push(`${r.status()} ${r.url()}`); });
  const res = await page.goto(args.url, { waitUntil: 'load', timeout: 60000 });
  report.status = res.status();
  if (args.wait) await page.waitForSelector(args.wait, { timeout: 60000 });
  if (args.click) {
    if (args.download) {
      const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 60000 }), page.click(args.click)]);
      const path = join(args.out, dl.suggestedFilename());
      await dl.saveAs(path);
      report.download = path;
    } else {
      await page.click(args.click);
    }
  }
  if (args.eval) report.eval = await page.evaluate(args.eval);
  const full = join(args.out, `${args.name}.png`);
  await page.screenshot({ path: full, fullPage: true });
  report.shots.page = full;
  for (const [name, sel] of Object.entries(JSON.parse(args.shots || '{}'))) {
    const loc = page.locator(sel).first();
    if (await loc.count() === 0) { report.shots[name] = null; continue; }
    const path = join(args.out, `${args.name}_${name}.png`);
    await loc.screenshot({ path });
    report.shots[name] = path;
  }
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(report)}\n`);
