// Opens /map at several window sizes and, without any zoom or pan, reports how soon the canvas
// shows land in its grade colours (pixel counts per colour, from screenshots) and at what zoom
// the map opened. Run by tests/test_map_zooms.py:
//   node zoom_check.mjs --base URL --key KEY --colours '{"A":"#..",..}' --sizes 1280x900,1920x1080
//        --out DIR --profile DIR [--budget 5000] [--prefix name]
import { cliArgs, launchPersistent } from './chromium.mjs';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const args = cliArgs();
const colours = JSON.parse(args.colours);          // name → hex (grades and 'ungraded')
const sizes = args.sizes.split(',').map(s => s.split('x').map(Number));
const budget = Number(args.budget || 5000);
const prefix = args.prefix || 'zoom';
mkdirSync(args.out, { recursive: true });
rmSync(args.profile, { recursive: true, force: true });

const context = await launchPersistent(args.profile);

/** Pixels of the #map element per named colour (each channel within ±10). */
async function countColours(page) {
  const box = await page.locator('#map').boundingBox();
  const png = (await page.screenshot({ clip: box })).toString('base64');
  return page.evaluate(async ({ b64, colours }) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width; c.height = img.height;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const want = Object.entries(colours).map(([k, h]) => [k, [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16))]);
    const n = Object.fromEntries(want.map(([k]) => [k, 0]));
    for (let i = 0; i < d.length; i += 4) {
      for (const [k, rgb] of want) {
        if (Math.abs(d[i] - rgb[0]) <= 10 && Math.abs(d[i + 1] - rgb[1]) <= 10 && Math.abs(d[i + 2] - rgb[2]) <= 10) { n[k]++; break; }
      }
    }
    return n;
  }, { b64: png, colours });
}

const report = { views: [] };
const log_ = (...a) => process.stderr.write(`${a.join(' ')}\n`);
for (const [width, height] of sizes) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const tiles = [];
  page.on('response', (r) => {
    const m = r.url().match(/\/tiles\/parcels\/(\d+)\/\d+\/\d+\.pbf/);
    if (m) tiles.push({ z: Number(m[1]), status: r.status() });
  });
  await page.setViewportSize({ width, height });
  // In the page, from navigation start: the first time the map is idle with its tiles loaded
  // (everything in view drawn) — read after, so the pixel checks below cost the map no time.
  await page.addInitScript(() => {
    const hook = () => {
      const m = window.mujun?.map;
      if (!m) { setTimeout(hook, 20); return; }
      const check = () => {
        if (window.__idleAt === undefined && m.loaded() && m.areTilesLoaded()) window.__idleAt = performance.now();
      };
      m.on('idle', check);
      m.on('render', check);
    };
    hook();
  });
  const t0 = Date.now();
  await page.goto(`${args.base}/map?api_key=${encodeURIComponent(args.key)}`);
  let counts = null;
  let ms = null;
  await page.waitForFunction(() => window.__idleAt !== undefined, null, { timeout: budget + 25000 }).catch(() => {});
  const idleAt = await page.evaluate(() => window.__idleAt ?? null);
  counts = await countColours(page);
  const drawn = Object.values(counts).reduce((a, b) => a + b, 0);
  if (idleAt !== null && drawn >= 200) ms = Math.round(idleAt);
  log_(`${width}x${height}: drawn at ${ms} ms (wall ${Date.now() - t0} ms)`);
  const zoom = await page.evaluate(() => window.mujun?.map?.getZoom() ?? null);
  const name = `${prefix}_${width}x${height}.png`;
  await page.screenshot({ path: join(args.out, name) });
  report.views.push({ width, height, zoom, ms_to_colour: ms, counts, tiles, errors, screenshot: name });
  await page.close();
}
await context.close();
process.stdout.write(`${JSON.stringify(report)}\n`);
