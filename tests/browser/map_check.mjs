// Drives /map in headless Chromium (Debian's, via playwright-core) and prints one JSON report line.
// Run by tests/test_web_map.py, which computes the expectations by SQL and compares:
//   node map_check.mjs --base http://127.0.0.1:PORT --key KEY --expect expect.json --out DIR --profile DIR
import { cliArgs, launchPersistent } from './chromium.mjs';
import { readFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const args = cliArgs();
const base = args.base;
const key = args.key || '';
const expect = JSON.parse(readFileSync(args.expect, 'utf8'));
const out = args.out;
const profile = args.profile;
mkdirSync(out, { recursive: true });
rmSync(profile, { recursive: true, force: true });
mkdirSync(profile, { recursive: true });

const log = (...a) => process.stderr.write(`${a.join(' ')}\n`);
const report = { console_errors: [], page_errors: [], failed_requests: [], screenshots: [] };

const context = await launchPersistent(profile, { viewport: { width: 1366, height: 768 } });

function watch(page, sink) {
  page.on('console', (m) => { if (m.type() === 'error') sink.console_errors.push(m.text()); });
  page.on('pageerror', (e) => sink.page_errors.push(String(e)));
  // ERR_ABORTED = the map cancelled a tile it no longer needs (zooming on): not a failure.
  page.on('requestfailed', (r) => {
    if (r.failure()?.errorText !== 'net::ERR_ABORTED') sink.failed_requests.push(`${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => { if (r.status() >= 400) sink.failed_requests.push(`${r.status()} ${r.url()}`); });
}

report.timing = {};
let tMark = Date.now();
function mark(name) { const now = Date.now(); report.timing[name] = now - tMark; tMark = now; }

async function shot(page, name) {
  await page.screenshot({ path: join(out, name) });
  report.screenshots.push(name);
}

/** Wait until the map has rendered everything it asked for and the legend is counted. */
async function settle(page) {
  await page.waitForFunction(() => window.mujun?.map && document.body.dataset.stats === 'ready', null, { timeout: 30000 });
  await page.evaluate(() => new Promise((resolve) => {
    const m = window.mujun.map;
    const done = () => (m.loaded() && m.areTilesLoaded() && !m.isMoving());
    if (done()) { resolve(); return; }
    const t = setTimeout(resolve, 15000);
    m.once('idle', () => { clearTimeout(t); resolve(); });
  }));
  await page.waitForFunction(() => document.body.dataset.stats === 'ready', null, { timeout: 30000 });
}

/** Wait for the map alone (tiles loaded and drawn), not for the legend: force a frame, wait for 'idle'. */
async function idle(page) {
  await page.evaluate(() => new Promise((resolve) => {
    const m = window.mujun.map;
    const t = setTimeout(resolve, 15000);
    m.once('idle', () => { clearTimeout(t); resolve(); });
    m.triggerRepaint();
  }));
}

async function fitTo(page, bbox, padding = 150, withLegend = false) {
  await page.evaluate(({ bbox, padding }) => new Promise((resolve) => {
    const m = window.mujun.map;
    const t = setTimeout(resolve, 15000);
    m.fitBounds(bbox, { padding, animate: false, maxZoom: 18 });
    m.once('idle', () => { clearTimeout(t); resolve(); });   // after the frame of the new view
    m.triggerRepaint();
  }), { bbox, padding });
  if (withLegend) await settle(page);
}

/** Median colour of a 5×5 block of the screenshot around (x, y), decoded in the page. */
async function pixelAt(page, x, y) {
  const png = (await page.screenshot({ clip: { x: x - 2, y: y - 2, width: 5, height: 5 } })).toString('base64');
  return page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width; c.height = img.height;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const ch = [[], [], []];
    for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k++) ch[k].push(d[i + k]);
    return ch.map(v => v.sort((a, b) => a - b)[Math.floor(v.length / 2)]);
  }, png);
}

const page = await context.newPage();
watch(page, report);
const t0 = Date.now();
await page.goto(`${base}/map?api_key=${encodeURIComponent(key)}`);
await settle(page);
log(`map ready in ${Date.now() - t0} ms`);
report.webgl = await page.evaluate(() => !!window.mujun.map.painter?.context?.gl || !!document.querySelector('canvas.maplibregl-canvas')?.getContext('webgl2'));
await shot(page, 'map_overview.png');
mark('load');

// ---- legend: counts per grade and the bbox they were computed for
report.legend = await page.evaluate(() => {
  const counts = {}; const areas = {};
  for (const tr of document.querySelectorAll('#legend tbody tr')) {
    counts[tr.dataset.grade] = Number(tr.dataset.count);
    if (tr.dataset.area !== undefined) areas[tr.dataset.grade] = Number(tr.dataset.area);
  }
  return { counts, areas, query: window.mujun.state.lastStatsQuery, total_text: document.getElementById('legend-total-count').textContent };
});

// ---- queryRenderedFeatures: the fill colour each rendered parcel is drawn with, by grade
report.rendered_by_grade = await page.evaluate(() => {
  const m = window.mujun.map;
  const hex = (c) => '#' + [c.r, c.g, c.b].map(v => Math.round(v * 255).toString(16).padStart(2, '0')).join('');
  const by = {};
  for (const f of m.queryRenderedFeatures({ layers: ['parcels-fill'] })) {
    const g = f.properties.grade ?? '__none';
    const c = f.layer.paint['fill-color'];
    const h = typeof c === 'string' ? c.toLowerCase() : hex(c);
    by[g] = by[g] || { n: 0, colours: new Set() };
    by[g].n++;
    by[g].colours.add(h);
  }
  return Object.fromEntries(Object.entries(by).map(([g, v]) => [g, { n: v.n, colours: [...v.colours] }]));
});

// ---- filters: a township, then an older year; the legend follows (checked against SQL by pytest)
async function legendNow(pg) {
  return pg.evaluate(() => {
    const counts = {};
    for (const tr of document.querySelectorAll('#legend tbody tr')) counts[tr.dataset.grade] = Number(tr.dataset.count);
    return { counts, query: window.mujun.state.lastStatsQuery };
  });
}
{
  const towns = await page.$$eval('#township-select option', os => os.map(o => o.value).filter(Boolean));
  const town = towns[towns.length - 1];
  await page.selectOption('#township-select', town);
  await page.waitForFunction((t) => window.mujun.state.lastStatsQuery?.township === t && document.body.dataset.stats === 'ready', town);
  await settle(page);
  const rendered = await page.evaluate(() => [...new Set(window.mujun.map.queryRenderedFeatures({ layers: ['parcels-fill'] }).map(f => f.properties.township))]);
  report.township = { ...(await legendNow(page)), township: town, rendered_townships: rendered };
  await shot(page, 'map_township_filter.png');
  await page.selectOption('#township-select', '');
  const runs = await page.$$eval('#run-select option', os => os.map(o => o.value));
  const oldest = runs[runs.length - 1];
  await page.selectOption('#run-select', oldest);
  await page.waitForFunction((r) => String(window.mujun.state.lastStatsQuery?.run) === r && !window.mujun.state.lastStatsQuery.township && document.body.dataset.stats === 'ready', oldest);
  await settle(page);
  const drawn = await page.evaluate(() => {
    const by = {};
    for (const f of window.mujun.map.queryRenderedFeatures({ layers: ['parcels-fill'] })) by[f.properties.grade ?? '__none'] = f.properties.run_id;
    return by;
  });
  report.old_run = { ...(await legendNow(page)), run: oldest, tile_run_ids: [...new Set(Object.values(drawn))] };
  await page.selectOption('#run-select', runs[0]);
  await page.waitForFunction((r) => String(window.mujun.state.lastStatsQuery?.run) === r && document.body.dataset.stats === 'ready', runs[0]);
  await settle(page);
}
// grade filter: switch the worst grade off in the legend → not drawn, not in the total
{
  const g = expect.classes[expect.classes.length - 1].grade;
  const before = await page.textContent('#legend-total-count');
  await page.uncheck(`#legend tr[data-grade="${g}"] input`);
  await page.evaluate(() => new Promise((resolve) => { const m = window.mujun.map; m.once('idle', resolve); m.triggerRepaint(); setTimeout(resolve, 15000); }));
  report.grade_filter = await page.evaluate((g) => ({
    grade: g,
    drawn: window.mujun.map.queryRenderedFeatures({ layers: ['parcels-fill'] }).filter(f => f.properties.grade === g).length,
    others: window.mujun.map.queryRenderedFeatures({ layers: ['parcels-fill'] }).length,
    row_count: Number(document.querySelector(`#legend tr[data-grade="${g}"]`).dataset.count),
    total: document.getElementById('legend-total-count').textContent,
  }), g);
  report.grade_filter.total_before = before;
  await shot(page, 'map_grade_filter.png');
  await page.check(`#legend tr[data-grade="${g}"] input`);
}
mark('filters');
report.gcj = await page.evaluate(() => [[120.1, 30.2], [121.47, 31.23], [116.39, 39.9], [2.35, 48.85]].map(p => [p, window.mujun.wgs84ToGcj02(...p)]));

// ---- pixels: zoom to known parcels (points and outlines off) and read the canvas inside them
await page.uncheck('#layer-enterprises');
await page.uncheck('#layer-sublots');
await page.uncheck('#layer-defacto');
report.pixels = [];
for (const s of expect.samples) {
  await fitTo(page, s.bbox, 200);
  const p = await page.evaluate((pt) => window.mujun.map.project(pt), s.point);
  const box = await page.locator('#map').boundingBox();
  const x = Math.round(box.x + p.x); const y = Math.round(box.y + p.y);
  report.pixels.push({ identity_code: s.identity_code, grade: s.grade, x, y, rgb: await pixelAt(page, x, y) });
}
await shot(page, 'map_parcel_zoom.png');
mark('pixels');
await page.check('#layer-enterprises');
await page.check('#layer-sublots');
await page.check('#layer-defacto');

// ---- click a known parcel: popup with its code, then its archive links
const click = expect.click;
await fitTo(page, click.bbox, 220);
{
  const p = await page.evaluate((pt) => window.mujun.map.project(pt), click.point);
  const box = await page.locator('#map').boundingBox();
  // step off the point if an enterprise dot sits on it (a click there opens the enterprise instead)
  const spot = await page.evaluate(({ x, y }) => {
    const m = window.mujun.map;
    for (const [dx, dy] of [[0, 0], [12, 0], [-12, 0], [0, 12], [0, -12], [20, 20], [-20, -20]]) {
      const hit = m.queryRenderedFeatures([x + dx, y + dy], { layers: ['enterprises-circle', 'parcels-fill'] });
      if (hit.length && hit[0].layer.id === 'parcels-fill') return [x + dx, y + dy];
    }
    return [x, y];
  }, { x: p.x, y: p.y });
  await page.mouse.click(box.x + spot[0], box.y + spot[1]);
}
await page.waitForSelector('.maplibregl-popup .pop[data-identity-code] .links', { timeout: 15000 });
await page.waitForTimeout(300);
report.popup = await page.evaluate(() => {
  const pop = document.querySelector('.maplibregl-popup .pop');
  return { identity_code: pop.dataset.identityCode, text: pop.innerText,
           enterprise_rows: pop.querySelectorAll('.ents tr[data-uscc]').length,
           parcel_href: pop.querySelector('a.parcel-link')?.getAttribute('href'),
           enterprise_href: pop.querySelector('a.enterprise-link')?.getAttribute('href') };
});
await shot(page, 'map_popup.png');

async function archive(href, name) {
  const a = await context.newPage();
  const sink = { console_errors: [], page_errors: [], failed_requests: [] };
  watch(a, sink);
  await a.goto(new URL(href, base).toString());
  await a.waitForFunction(() => document.body.dataset.archive, null, { timeout: 15000 });
  const info = await a.evaluate(() => ({
    state: document.body.dataset.archive, path: location.pathname, title: document.getElementById('title').textContent,
    text: document.body.innerText, chart: !!document.querySelector('svg.chart'),
  }));
  await a.screenshot({ path: join(out, name), fullPage: true });
  report.screenshots.push(name);
  report.console_errors.push(...sink.console_errors);
  report.page_errors.push(...sink.page_errors);
  report.failed_requests.push(...sink.failed_requests);
  await a.close();
  return info;
}
report.parcel_archive = await archive(report.popup.parcel_href, 'archive_parcel.png');
if (report.popup.enterprise_href) {
  report.enterprise_archive = await archive(report.popup.enterprise_href, 'archive_enterprise.png');
  report.enterprise_archive.uscc = decodeURIComponent(report.popup.enterprise_href.split('/').pop().split('?')[0]);
}
mark('popup+archives');
await page.keyboard.press('Escape');
await page.evaluate(() => document.querySelector('.maplibregl-popup-close-button')?.click());

// ---- search: a parcel code → the map flies there and opens its popup
{
  const target = expect.samples[expect.samples.length - 1];
  const q = target.parcel_code || target.identity_code;
  await page.evaluate(() => window.mujun.map.fitBounds(window.mujun.state.config.extent, { animate: false }));
  await settle(page);
  await page.fill('#search-input', q);
  await page.click('#search-form button[type=submit]');
  await page.waitForFunction((code) => document.querySelector('.maplibregl-popup .pop')?.dataset.identityCode === code,
                             target.identity_code, { timeout: 15000 });
  await settle(page);
  const r = await page.evaluate((bbox) => {
    const c = window.mujun.map.getCenter();
    return { centre: [c.lng, c.lat], centre_in_bbox: c.lng >= bbox[0] && c.lng <= bbox[2] && c.lat >= bbox[1] && c.lat <= bbox[3],
             results: document.querySelectorAll('#search-results li:not(.empty)').length,
             popup_code: document.querySelector('.maplibregl-popup .pop')?.dataset.identityCode };
  }, target.bbox);
  report.search = { ...r, identity_code: target.identity_code };
  await shot(page, 'map_search.png');
  await page.evaluate(() => document.querySelector('.maplibregl-popup-close-button')?.click());
}

mark('search');
// ---- cluster finder
{
  await page.click('.tabs button[data-tab=clusters]');
  for (const box of await page.$$('#cluster-grades input')) {
    const v = await box.getAttribute('value');
    if (expect.cluster.grades.includes(v)) await box.check(); else await box.uncheck();
  }
  await page.fill('#cl-gap', String(expect.cluster.gap_m));
  await page.fill('#cl-min-area', String(expect.cluster.min_area_mu));
  await page.click('#cluster-run');
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.clusters), null, { timeout: 20000 });
  await page.waitForTimeout(700);   // the fit-to-clusters animation
  await settle(page);
  report.clusters = await page.evaluate(() => {
    const m = window.mujun.map;
    const ids = new Set(m.queryRenderedFeatures({ layers: ['clusters-line'] }).map(f => f.properties._idx));
    const areas = (window.mujun.state.clusters?.figures || []).map(f => f.area ?? 0);
    return {
      state: document.body.dataset.clusters, summary: document.getElementById('cluster-summary').textContent,
      listed: document.querySelectorAll('#cluster-list li').length,
      source_features: window.mujun.state.clusters?.features.length ?? 0,
      rendered_ids: ids.size,
      areas_sorted: areas.every((a, i) => i === 0 || areas[i - 1] >= a),
      first_item: document.querySelector('#cluster-list li')?.innerText || '',
    };
  });
  await shot(page, 'map_clusters.png');
  if (report.clusters.listed) {
    await page.click('#cluster-list li:first-child');
    await page.waitForTimeout(800);
    await settle(page);
    await shot(page, 'map_cluster_zoom.png');
  }
  await page.click('.tabs button[data-tab=legend]');
}

mark('clusters');
// ---- the other colour modes
await page.evaluate(() => window.mujun.map.fitBounds(window.mujun.state.config.extent, { animate: false, padding: 24 }));
await settle(page);
await page.selectOption('#mode-select', 'enterprise');
await page.waitForFunction(() => window.mujun.state.lastStatsQuery?.layer === 'enterprises' && document.body.dataset.stats === 'ready', null, { timeout: 15000 });
await settle(page);
report.enterprise_mode = await page.evaluate(() => ({
  stats_layer: window.mujun.state.lastStatsQuery.layer,
  total: window.mujun.state.lastStats.total.count,
  rendered_sublots: window.mujun.map.queryRenderedFeatures({ layers: ['sublots-fill'] }).length,
  rendered_points: window.mujun.map.queryRenderedFeatures({ layers: ['enterprises-circle'] }).length,
}));
await shot(page, 'map_enterprise_mode.png');
await page.selectOption('#mode-select', 'warning');
await page.waitForFunction(() => window.mujun.state.lastStatsQuery?.layer === 'parcels' && document.body.dataset.stats === 'ready', null, { timeout: 15000 });
await settle(page);
report.warning_mode = await page.evaluate(() => ({
  legend_rows: document.querySelectorAll('#legend tbody tr').length,
  title: document.getElementById('legend-title').textContent,
}));
await shot(page, 'map_warning_mode.png');
mark('modes');
await page.close();

// ---- public view (no key): same parcel, no figures, nothing undefined
{
  const pub = await context.newPage();
  const sink = { console_errors: [], page_errors: [], failed_requests: [] };
  watch(pub, sink);
  await pub.goto(`${base}/map`);
  await settle(pub);
  await fitTo(pub, click.bbox, 220);
  const p = await pub.evaluate((pt) => window.mujun.map.project(pt), click.point);
  const box = await pub.locator('#map').boundingBox();
  await pub.evaluate(() => { document.getElementById('layer-enterprises').click(); });
  await pub.mouse.click(box.x + p.x, box.y + p.y);
  await pub.waitForSelector('.maplibregl-popup .pop[data-identity-code] .links', { timeout: 15000 });
  await pub.waitForTimeout(300);
  report.public = {
    role_badge: await pub.textContent('#role-badge'),
    popup_text: await pub.evaluate(() => document.querySelector('.maplibregl-popup .pop').innerText),
    console_errors: sink.console_errors.concat(sink.page_errors),
  };
  await pub.screenshot({ path: join(out, 'map_public_popup.png') });
  report.screenshots.push('map_public_popup.png');
  await pub.close();
}

mark('public');
// ---- a GCJ-02 basemap (second server): drawn in the basemap map, kept at the GCJ-02 centre
if (args.gcjbase) {
  const g = await context.newPage();
  const sink = { console_errors: [], page_errors: [], failed_requests: [] };
  watch(g, sink);
  await g.goto(`${args.gcjbase}/map`);
  await settle(g);
  await g.evaluate(() => new Promise((resolve) => {
    const b = window.mujun.basemap;
    if (!b) { resolve(); return; }
    if (b.loaded() && b.areTilesLoaded()) resolve(); else { b.once('idle', resolve); setTimeout(resolve, 10000); }
  }));
  report.gcj_basemap = await g.evaluate(() => {
    const m = window.mujun.map; const b = window.mujun.basemap;
    if (!b) return { present: false };
    const c = m.getCenter(); const bc = b.getCenter();
    return { present: true, main: [c.lng, c.lat], base: [bc.lng, bc.lat], zoom: [m.getZoom(), b.getZoom()],
             expected: window.mujun.wgs84ToGcj02(c.lng, c.lat), status: document.getElementById('status').textContent,
             tiles: performance.getEntriesByType('resource').filter(e => e.name.includes('/basemap/')).length };
  });
  report.gcj_basemap.errors = sink.console_errors.concat(sink.page_errors, sink.failed_requests);
  await g.screenshot({ path: join(out, 'map_gcj_basemap.png') });
  report.screenshots.push('map_gcj_basemap.png');
  await g.close();
}

mark('gcj');
await context.close();
report.seconds = (Date.now() - t0) / 1000;
process.stdout.write(JSON.stringify(report) + '\n');
