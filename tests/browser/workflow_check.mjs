// The yearly cycle in headless Chromium (issue 15): sign in, upload with progress, rejects, confirm,
// match, evaluate, review differences, publish; 纠偏 by a township officer; appeals; saved groups.
// One phase per run; prints one JSON line.  node workflow_check.mjs --base URL --phase P --out DIR [--...]
import { cliArgs, launchBrowser } from './chromium.mjs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const args = cliArgs();
mkdirSync(args.out, { recursive: true });
const report = { console_errors: [], page_errors: [], failed_requests: [] };
const browser = await launchBrowser();
const T = 240000;
const shot = (page, name) => page.screenshot({ path: join(args.out, `workflow_${name}.png`), fullPage: true });
const text = (page, sel) => page.textContent(sel);
const waitJob = async (page, kindStatus) => {
  await page.waitForFunction((want) => {
    const j = document.body.dataset.job || '';
    return j === want || /:(failed|refused)$/.test(j);
  }, kindStatus, { timeout: T });
  const got = await page.evaluate(() => document.body.dataset.job);
  if (got !== kindStatus) throw new Error(`${kindStatus} expected, got ${got}: ${await text(page, '#job-error')}`);
};

async function signIn(context, user, password) {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });
  page.on('pageerror', (e) => report.page_errors.push(String(e)));
  page.on('response', (r) => { if (r.status() >= 500) report.failed_requests.push(`${r.status()} ${r.url()}`); });
  page.on('dialog', (d) => d.accept(d.defaultValue()));
  await page.goto(`${args.base}/workflow`, { waitUntil: 'load' });
  await page.waitForURL(/\/login/);  // not signed in: to the login page
  await page.fill('#username', user);
  await page.fill('#password', 'wrong-password');
  await page.click('#login-btn');
  await page.waitForFunction(() => document.getElementById('login-message').textContent.length > 0);
  report.wrong_password_message = await text(page, '#login-message');
  await page.fill('#password', password);
  await page.click('#login-btn');
  await page.waitForURL(/\/workflow/);
  await page.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 60000 });
  report.who = await text(page, '#who');
  return page;
}

try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: 'zh-CN' });
  if (args.phase === 'import') {
    const page = await signIn(context, args.user, args.password);
    await page.setInputFiles('#upload-files', args.zip);
    await page.click('#upload-btn');
    // progress while it runs: the stage and rows read change
    const seen = new Set();
    const t0 = Date.now();
    while (Date.now() - t0 < T) {
      const s = await page.evaluate(() => [document.body.dataset.job || '', document.getElementById('job-stage').textContent,
                                           document.getElementById('job-rows').textContent]);
      seen.add(`${s[1]}|${s[2]}`);
      if (/^validate:(done|failed|refused)$/.test(s[0])) break;
      await page.waitForTimeout(100);
    }
    report.progress_seen = [...seen];
    await waitJob(page, 'validate:done');
    report.rejects_title = await text(page, '#rejects-title');
    report.reject_rows = await page.$$eval('#rejects tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    report.column_map_rows = await page.$$eval('#column-map tbody tr', (trs) => trs.length);
    await shot(page, 'validated');
    // the report survives a reload (the job is in the URL, polled again)
    await page.reload({ waitUntil: 'load' });
    await waitJob(page, 'validate:done');
    report.after_reload_rejects_title = await text(page, '#rejects-title');
    report.after_reload_rows = await text(page, '#job-rows');
    if (args.partial === '1') await page.check('#confirm-partial');
    await page.click('#confirm-btn');
    await waitJob(page, 'import:done');
    report.import_done = await text(page, '#import-done');
    await page.click('#match-btn');
    await waitJob(page, 'match:done');
    await page.fill('#eval-year', args.year);
    await page.click('#eval-btn');
    await waitJob(page, 'evaluate:done');
    await page.waitForFunction(() => /draft/.test(document.body.dataset.runs || ''), null, { timeout: 30000 });
    report.runs = await page.evaluate(() => document.body.dataset.runs);
    await page.click('.diff-btn');
    await page.waitForSelector('#diff-summary');
    report.diff_summary = await text(page, '#diff-summary');
    await shot(page, 'review');
    await page.click('#publish-btn');
    await page.waitForFunction(() => document.getElementById('publish-message').textContent === '已发布');
    await page.waitForFunction(() => !/:draft/.test(document.body.dataset.runs || ''), null, { timeout: 30000 });
    report.published_runs = await page.evaluate(() => document.body.dataset.runs);
  } else if (args.phase === 'officer') {
    const page = await signIn(context, args.user, args.password);
    report.officer_hidden = await page.evaluate(() => ({ upload: document.getElementById('upload').hidden, run: document.getElementById('run').hidden }));
    const propose = async (parcel, uscc, action, share) => {
      await page.goto(`${args.base}/workflow?parcel=${encodeURIComponent(parcel)}&uscc=${encodeURIComponent(uscc)}`, { waitUntil: 'load' });
      await page.waitForFunction(() => document.body.dataset.ready === '1');
      await page.selectOption('#c-action', action);
      if (share) await page.fill('#c-share', share);
      await page.fill('#c-reason', '现场核实');
      await page.click('#c-submit');
      await page.waitForFunction(() => document.getElementById('c-message').textContent.length > 0);
      return text(page, '#c-message');
    };
    if (!args.appeal_run) {
      report.other_township = await propose(args.other_parcel, args.uscc, 'add', '1');
      // from the parcel's archive page (一地一档): its link opens the form with the land filled in
      await page.goto(`${args.base}/map/parcel/${encodeURIComponent(args.parcel_id)}`, { waitUntil: 'load' });
      await page.waitForFunction(() => document.body.dataset.archive === 'ready', null, { timeout: 60000 });
      await page.click('#propose-link');
      await page.waitForFunction(() => document.body.dataset.ready === '1');
      report.prefilled_parcel = await page.inputValue('#c-parcel');
      await page.fill('#c-uscc', args.uscc);
      await page.selectOption('#c-action', 'add');
      await page.fill('#c-share', '1');
      await page.fill('#c-reason', '现场核实');
      await page.click('#c-submit');
      await page.waitForFunction(() => document.getElementById('c-message').textContent.length > 0);
      report.own_add = await text(page, '#c-message');
      report.own_remove = await propose(args.old_parcel, args.uscc, 'remove', '');
      await page.waitForFunction(() => document.querySelectorAll('#c-list tbody tr').length >= 2, null, { timeout: 10000 })
        .catch(() => {});
      report.proposals = await page.$$eval('#c-list tbody tr', (trs) => trs.length);
      await shot(page, 'officer');
    } else {
      await page.fill('#a-run', args.appeal_run);
      await page.fill('#a-uscc', args.appeal_uscc);
      await page.fill('#a-reason', '企业称 2024 年税收有一笔未计入');
      await page.setInputFiles('#a-file', { name: '完税证明.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4 test') });
      await page.click('#a-submit');
      await page.waitForFunction(() => document.getElementById('a-message').textContent.length > 0);
      report.appeal_message = await text(page, '#a-message');
      await page.waitForFunction(() => /完税证明/.test(document.getElementById('a-list').textContent), null, { timeout: 10000 }).catch(() => {});
      report.appeal_attachment_link = await page.$eval('#a-list tbody tr a', (a) => a.getAttribute('href')).catch(() => null);
    }
  } else if (args.phase === 'decide') {
    const page = await signIn(context, args.user, args.password);
    const n = await page.$$eval('.c-accept', (bs) => bs.length);
    for (let i = 0; i < n; i += 1) {
      await page.click('.c-accept');
      await page.waitForFunction((left) => document.querySelectorAll('.c-accept').length === left, n - i - 1);
    }
    report.accepted = n;
    await page.click('#match-btn');
    await waitJob(page, 'match:done');
    report.match_done = await text(page, '#match-done');
    await page.fill('#eval-year', args.year);
    await page.click('#eval-btn');
    await waitJob(page, 'evaluate:done');
    await page.waitForFunction(() => /draft/.test(document.body.dataset.runs || ''), null, { timeout: 30000 });
    report.runs = await page.evaluate(() => document.body.dataset.runs);
    await page.click('.diff-btn');
    await page.waitForSelector('#diff-summary');
    report.diff_summary = await text(page, '#diff-summary');
  } else if (args.phase === 'appeal') {
    const page = await signIn(context, args.user, args.password);
    const states = [];
    for (const s of ['under_review', 'accepted']) {
      await page.waitForSelector(`.a-state[data-s="${s}"]`);
      await page.click(`.a-state[data-s="${s}"]`);
      await page.waitForFunction((st) => !document.querySelector(`.a-state[data-s="${st}"]`), s);
      states.push(await page.$$eval('#a-list tbody tr', (trs) => [...trs[0].children].map((td) => td.textContent)));
    }
    report.appeal_states = states;
    // publish the reviewed draft
    await page.click('.diff-btn');
    await page.waitForSelector('#publish-btn');
    await page.click('#publish-btn');
    await page.waitForFunction(() => document.getElementById('publish-message').textContent === '已发布');
    await page.waitForFunction(() => !/:draft/.test(document.body.dataset.runs || ''), null, { timeout: 30000 });
    report.published_runs = await page.evaluate(() => document.body.dataset.runs);
    // a saved group: D land of a township
    await page.fill('#g-name', '低效宗地');
    await page.selectOption('#g-kind', 'parcels');
    await page.fill('#g-township', args.township);
    await page.selectOption('#g-grade', 'D');
    await page.fill('#g-year', args.year);
    await page.check('#g-shared');
    await page.click('#g-submit');
    await page.waitForSelector('#g-summary');
    report.group_summary = await text(page, '#g-summary');
    report.group = await page.evaluate(() => window.mujunWorkflow.state.group);
    await shot(page, 'group');
  }
} catch (e) {
  report.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(report)}\n`);
