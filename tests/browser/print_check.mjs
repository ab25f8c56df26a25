// The map's 导出与打印 tab in headless Chromium: 导出 Excel, the printed map as PNG (A4) and PDF (A3).
// Prints one JSON line: downloads, the print layout (window.mujun.lastPrint), the legend's stats.
//   node print_check.mjs --base URL --key KEY --out DIR
import { cliArgs, launchBrowser } from './chromium.mjs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const args = cliArgs();
mkdirSync(args.out, { recursive: true });
const report = { console_errors: [], page_errors: [], failed_requests: [] };
const browser = await launchBrowser();
try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, deviceScaleFactor: 1,
                                              locale: 'zh-CN', acceptDownloads: true });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });
  page.on('pageerror', (e) => report.page_errors.push(String(e)));
  page.on('response', (r) => { if (r.status() >= 400) report.failed_requests.push(`${r.status()} ${r.url()}`); });
  await page.goto(`${args.base}/map?api_key=${args.key}`, { waitUntil: 'load', timeout: 60000 });
  await page.waitForFunction(() => window.mujun?.map && document.body.dataset.stats === 'ready', null, { timeout: 60000 });
  await page.evaluate(() => new Promise((resolve) => {
    const m = window.mujun.map;
    if (m.loaded() && m.areTilesLoaded()) { resolve(); return; }
    const t = setTimeout(resolve, 20000);
    m.once('idle', () => { clearTimeout(t); resolve(); });
  }));
  await page.click('button[data-tab="export"]');
  const grab = async (selector) => {
    const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 90000 }), page.click(selector)]);
    const path = join(args.out, `print_${dl.suggestedFilename()}`);
    await dl.saveAs(path);
    return path;
  };
  report.xlsx = await grab('#export-xlsx');
  report.export_message = await page.textContent('#export-message');
  await page.selectOption('#print-paper', 'A4');
  report.png = await grab('#print-png');
  report.png_layout = await page.evaluate(() => window.mujun.lastPrint);
  await page.selectOption('#print-paper', 'A3');
  report.pdf = await grab('#print-pdf');
  report.pdf_layout = await page.evaluate(() => window.mujun.lastPrint);
  report.stats = await page.evaluate(() => window.mujun.state.lastStats);
  report.run_id = await page.evaluate(() => window.mujun.state.runId);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(report)}\n`);
