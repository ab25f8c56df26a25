// The map's "导出与打印" tab: rating lists as Excel for what the map shows (year, township, industry
// group, grades ticked in the legend), and the printed map (see print layout below).
import { apiKey, apiUrl, keyQuery } from '/static/common.js';

const $ = (id) => document.getElementById(id);
const NONE = '__none';

/** The grades the legend shows (none when every grade is ticked: then the list is complete). */
function shownGrades(state) {
  if (!state.hidden.size) return [];
  const all = state.config.classification.classes.map(c => c.grade);
  return all.filter(g => !state.hidden.has(g) && g !== NONE);
}

function filenameOf(res, fallback) {
  const cd = res.headers.get('content-disposition') || '';
  const m = /filename\*=UTF-8''([^;]+)/i.exec(cd);
  return m ? decodeURIComponent(m[1]) : fallback;
}

async function download(path, params, fallback, message) {
  const headers = {};
  const key = apiKey();
  if (key) headers['X-API-Key'] = key;
  message.textContent = '正在生成…';
  const res = await fetch(apiUrl(path, params), { headers });
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try { const b = await res.json(); msg = b.description || b.detail || msg; } catch { /* not JSON */ }
    message.textContent = `导出失败：${msg}`;
    return null;
  }
  const blob = await res.blob();
  const name = filenameOf(res, fallback);
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  message.textContent = `已导出 ${name}（${res.headers.get('x-rows') ?? '?'} 行）`;
  return name;
}

export async function exportList() {
  const { state } = window.mujun;
  const [kind, level] = $('export-kind').value.split(':');
  const params = { run: state.runId, township: state.township, industry_group: state.group, level };
  const grades = shownGrades(state);
  if (kind !== 'clusters' && grades.length) params.grades = grades;
  return download(`/lists/${kind}.xlsx`, params, `${kind}.xlsx`, $('export-message'));
}

$('export-xlsx').addEventListener('click', () => { exportList(); });

function refreshLinks() {
  const { state } = window.mujun;
  if (!state?.year) return;
  $('link-compare').href = `/map/compare${keyQuery({ year: state.year })}`;
  $('link-summary').href = `/reports/summary.html${keyQuery({ year: state.year })}`;
}
for (const b of document.querySelectorAll('.tabs button[data-tab="export"]')) b.addEventListener('click', refreshLinks);

window.mujun = Object.assign(window.mujun || {}, { exportList });

// ------------------------------------------------------------------ printed map
// A landscape page (A4 or A3 at 150 dpi) composed on a 2D canvas: title, year, the map as drawn,
// legend with the counts of the view (/stats/grades, as the sidebar shows them), scale bar, north
// arrow, date and source. PNG from the browser; PDF: the same page wrapped by the server (/print/map.pdf).
const PAPER = { A4: [297, 210], A3: [420, 297] };   // mm, landscape
const DPI = 150;
const NICE = [1, 2, 5];

/** The map canvas as an image, captured right after a frame is drawn (no preserveDrawingBuffer needed). */
function mapSnapshot(map) {
  return new Promise((resolve) => {
    map.once('render', () => {
      const c = map.getCanvas();
      const copy = document.createElement('canvas');
      copy.width = c.width; copy.height = c.height;
      copy.getContext('2d').drawImage(c, 0, 0);
      resolve(copy);
    });
    map.triggerRepaint();
  });
}

function niceLength(maxMetres) {
  const p = 10 ** Math.floor(Math.log10(maxMetres));
  let best = p;
  for (const n of NICE) if (n * p <= maxMetres) best = n * p;
  return best;
}

/** The sidebar legend as the map shows it (swatch colour of the colour mode, label, count in view). */
function legendRows(state) {
  const rows = [];
  for (const tr of document.querySelectorAll('#legend tbody tr')) {
    if (tr.classList.contains('off') || state.hidden.has(tr.dataset.grade)) continue;
    const sw = tr.querySelector('.swatch');
    rows.push({ key: tr.dataset.grade, label: tr.querySelector('.name')?.textContent || tr.dataset.grade,
                hex: sw ? getComputedStyle(sw).backgroundColor : '#ccc', n: Number(tr.dataset.count || 0) });
  }
  return rows;
}

export async function composePrint(paper = 'A4', title = '') {
  const { state, map } = window.mujun;
  const [wmm, hmm] = PAPER[paper] || PAPER.A4;
  const W = Math.round(wmm / 25.4 * DPI);
  const H = Math.round(hmm / 25.4 * DPI);
  const u = W / 1754;                                   // 1 at A4
  const page = document.createElement('canvas');
  page.width = W; page.height = H;
  const g = page.getContext('2d');
  g.fillStyle = '#fff'; g.fillRect(0, 0, W, H);
  const font = (px, bold = false) => `${bold ? 'bold ' : ''}${Math.round(px * u)}px "Noto Sans CJK SC", "Microsoft YaHei", sans-serif`;
  const margin = 60 * u;
  const modeName = { parcel: '宗地等级', enterprise: '经营主体等级', warning: '预警四色' }[state.mode];
  const heading = title || `${state.year} 年工业用地亩均效益综合评价 · ${modeName}`;
  g.fillStyle = '#12324f'; g.font = font(40, true); g.textBaseline = 'top';
  g.fillText(heading, margin, margin * 0.7);
  const filters = [state.township || state.config.principal.region || '全县', state.group ? `行业组 ${state.group}` : '']
    .filter(Boolean).join(' · ');
  g.fillStyle = '#555'; g.font = font(22);
  g.fillText(`${state.year} 年 · ${filters} · 评价批次 ${state.runId}`, margin, margin * 0.7 + 52 * u);

  // map frame
  const top = margin * 0.7 + 95 * u;
  const legendW = 330 * u;
  const frame = { x: margin, y: top, w: W - 2 * margin - legendW - 30 * u, h: H - top - 90 * u };
  const snap = await mapSnapshot(map);
  const s = Math.min(frame.w / snap.width, frame.h / snap.height);
  const dw = snap.width * s; const dh = snap.height * s;
  const dx = frame.x + (frame.w - dw) / 2; const dy = frame.y + (frame.h - dh) / 2;
  g.drawImage(snap, dx, dy, dw, dh);
  g.strokeStyle = '#333'; g.lineWidth = 2 * u; g.strokeRect(dx, dy, dw, dh);

  // scale bar: metres per CSS pixel at the centre (512-px tiles), then per drawn pixel
  const c = map.getCenter();
  const cssW = map.getCanvas().clientWidth || snap.width;
  const mPerCss = 40075016.686 * Math.cos(c.lat * Math.PI / 180) / (512 * 2 ** map.getZoom());
  const mPerDrawn = mPerCss * cssW / dw;
  const metres = niceLength(dw * 0.2 * mPerDrawn);
  const barPx = metres / mPerDrawn;
  const bx = dx + 25 * u; const by = dy + dh - 45 * u;
  g.fillStyle = 'rgba(255,255,255,.85)'; g.fillRect(bx - 10 * u, by - 30 * u, barPx + 140 * u, 55 * u);
  g.fillStyle = '#111';
  g.fillRect(bx, by, barPx / 2, 10 * u);
  g.strokeStyle = '#111'; g.lineWidth = 2 * u; g.strokeRect(bx, by, barPx, 10 * u);
  g.font = font(18); g.textBaseline = 'bottom';
  g.fillText('0', bx - 4 * u, by - 2 * u);
  g.fillText(metres >= 1000 ? `${metres / 1000} km` : `${metres} m`, bx + barPx - 10 * u, by - 2 * u);

  // north arrow (the map is never rotated: bearing 0)
  const ax = dx + dw - 50 * u; const ay = dy + 30 * u;
  g.fillStyle = 'rgba(255,255,255,.85)'; g.fillRect(ax - 30 * u, ay - 10 * u, 60 * u, 105 * u);
  g.fillStyle = '#111'; g.beginPath();
  g.moveTo(ax, ay); g.lineTo(ax + 18 * u, ay + 60 * u); g.lineTo(ax, ay + 48 * u); g.lineTo(ax - 18 * u, ay + 60 * u);
  g.closePath(); g.fill();
  g.font = font(24, true); g.textAlign = 'center'; g.textBaseline = 'top'; g.fillText('N', ax, ay + 64 * u);
  g.textAlign = 'left';

  // legend with counts
  const lx = W - margin - legendW; let ly = top;
  g.fillStyle = '#12324f'; g.font = font(26, true); g.textBaseline = 'top';
  g.fillText(`图例 · ${modeName}`, lx, ly); ly += 44 * u;
  g.font = font(20); g.fillStyle = '#555';
  g.fillText('等级', lx + 50 * u, ly); g.textAlign = 'right'; g.fillText('宗数（当前视图）', lx + legendW, ly); g.textAlign = 'left';
  ly += 34 * u;
  const rows = legendRows(state);
  let total = 0;
  for (const r of rows) {
    g.fillStyle = r.hex; g.fillRect(lx, ly, 36 * u, 24 * u);
    g.strokeStyle = '#555'; g.lineWidth = 1; g.strokeRect(lx, ly, 36 * u, 24 * u);
    g.fillStyle = '#111'; g.font = font(22);
    g.fillText(r.label, lx + 50 * u, ly);
    g.textAlign = 'right'; g.fillText(r.n.toLocaleString('zh-CN'), lx + legendW, ly); g.textAlign = 'left';
    total += r.n; ly += 38 * u;
  }
  g.strokeStyle = '#999'; g.beginPath(); g.moveTo(lx, ly); g.lineTo(lx + legendW, ly); g.stroke(); ly += 8 * u;
  g.font = font(22, true); g.fillText('合计', lx + 50 * u, ly);
  g.textAlign = 'right'; g.fillText(total.toLocaleString('zh-CN'), lx + legendW, ly); g.textAlign = 'left';

  // date and source
  const run = state.config.runs.find(r => r.id === state.runId);
  const today = new Date();
  const date = `${today.getFullYear()}-${String(today.getMonth() + 1).padStart(2, '0')}-${String(today.getDate()).padStart(2, '0')}`;
  g.fillStyle = '#555'; g.font = font(18); g.textBaseline = 'bottom';
  g.fillText(`数据来源：mujun 亩均论英雄 · 评价办法 ${run ? `${run.scheme_name} v${run.scheme_version}` : ''} · 评价批次 ${state.runId}` +
             ` · 坐标系 CGCS2000`, margin, H - 40 * u);
  g.textAlign = 'right'; g.fillText(`制图日期：${date}`, W - margin, H - 40 * u); g.textAlign = 'left';

  const layout = { paper, width: W, height: H, title: heading, year: state.year, date,
                   legend: rows.map(r => ({ grade: r.key, n: r.n })), total,
                   scale: { metres, px: barPx }, map: { x: dx, y: dy, w: dw, h: dh }, north: { x: ax, y: ay } };
  window.mujun.lastPrint = layout;
  return { canvas: page, layout };
}

function save(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob); a.download = name;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

export async function printPng() {
  const { canvas, layout } = await composePrint($('print-paper').value, $('print-title').value.trim());
  const blob = await new Promise((r) => canvas.toBlob(r, 'image/png'));
  save(blob, `${layout.year}年地图_${layout.paper}.png`);
  $('print-message').textContent = `已生成 ${layout.paper} 横向 PNG（${layout.width}×${layout.height}）`;
  return layout;
}

export async function printPdf() {
  const { canvas, layout } = await composePrint($('print-paper').value, $('print-title').value.trim());
  const blob = await new Promise((r) => canvas.toBlob(r, 'image/png'));
  const headers = { 'Content-Type': 'image/png' };
  const key = apiKey();
  if (key) headers['X-API-Key'] = key;
  else {  // a signed-in session (app/accounts.py): every POST with its cookie carries the CSRF token
    const s = await fetch('/auth/session', { credentials: 'same-origin' }).then((r) => r.json()).catch(() => ({}));
    if (s.csrf_token) headers['X-CSRF-Token'] = s.csrf_token;
  }
  const res = await fetch(apiUrl('/print/map.pdf', { paper: layout.paper, title: layout.title }), { method: 'POST', headers, body: blob });
  if (!res.ok) { $('print-message').textContent = `PDF 生成失败：HTTP ${res.status}`; return null; }
  save(await res.blob(), `${layout.year}年地图_${layout.paper}.pdf`);
  $('print-message').textContent = `已生成 ${layout.paper} 横向 PDF`;
  return layout;
}

$('print-png').addEventListener('click', () => { printPng(); });
$('print-pdf').addEventListener('click', () => { printPdf(); });
Object.assign(window.mujun, { composePrint, printPng, printPdf });
