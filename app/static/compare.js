// 指标对比: tables from /compare, charts from /compare/chart.png (drawn by the server with matplotlib),
// each chart downloadable as PNG and each table as Excel (/compare.xlsx). Figures only for roles that see them.
import { apiKey, apiUrl, getJSON, keyQuery, el, ROLE_NAMES } from '/static/common.js';

const $ = (id) => document.getElementById(id);
const params = new URL(location.href).searchParams;
const state = { level: params.get('level') || 'enterprise', year: params.get('year') ? Number(params.get('year')) : null,
                indicator: params.get('indicator') || null, figures: false, urls: {} };
window.compare = state;

function status(text, error = false) { $('status').textContent = text; $('status').classList.toggle('error', error); }

async function fetchBlob(path, query) {
  const headers = {};
  const key = apiKey();
  if (key) headers['X-API-Key'] = key;
  const res = await fetch(apiUrl(path, query), { headers });
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try { const b = await res.json(); msg = b.description || b.detail || msg; } catch { /* not JSON */ }
    throw new Error(msg);
  }
  return res.blob();
}

function fillTable(table, doc) {
  table.replaceChildren(
    el('thead', {}, el('tr', {}, ...doc.columns.map(c => el('th', {}, c)))),
    el('tbody', {}, ...doc.rows.map(r => el('tr', {}, ...doc.columns.map(c => el('td', {}, r[c] ?? '—'))))));
  table.dataset.rows = String(doc.rows.length);
}

function query(extra = {}) {
  return { level: state.level, year: state.year, indicator: state.indicator, ...extra };
}

async function loadChart(kind) {
  const img = $(`chart-${kind}`);
  img.closest('figure').hidden = false;
  try {
    const blob = await fetchBlob('/compare/chart.png', query({ kind }));
    if (state.urls[kind]) URL.revokeObjectURL(state.urls[kind]);
    state.urls[kind] = URL.createObjectURL(blob);
    await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = state.urls[kind]; });
    const a = document.querySelector(`a.png[data-chart="${kind}"]`);
    a.href = state.urls[kind];
    a.download = `指标对比_${kind}_${state.year ?? ''}.png`;
  } catch (e) {
    img.closest('figure').hidden = true;
    if (kind !== 'distribution') status(`图表 ${kind} 生成失败：${e.message}`, true);
  }
}

async function load() {
  document.body.dataset.ready = 'loading';
  status('正在计算…');
  try {
    const docs = await Promise.all(['township', 'year', 'industry_group'].map(by => getJSON('/compare', query({ by }))));
    const [town] = docs;
    state.figures = town.visibility.figures;
    state.year = state.year ?? town.year;
    $('year').replaceChildren(...town.years.map(y => el('option', { value: y, selected: y === state.year }, `${y} 年`)));
    $('indicator').replaceChildren(...Object.entries(town.indicators).map(([k, v]) =>
      el('option', { value: k, selected: k === town.indicator.key }, `${v.title}（${v.unit}）`)));
    state.indicator = town.indicator.key;
    $('role-badge').textContent = `${ROLE_NAMES[town.visibility.role] || town.visibility.role}${town.visibility.region ? ` · ${town.visibility.region}` : ''}`;
    for (const d of docs) fillTable($(`table-${d.by}`), d);
    const charts = ['township', 'trend'];
    if (state.figures) charts.push('distribution'); else $('chart-distribution').closest('figure').hidden = true;
    await Promise.all(charts.map(loadChart));
    status(state.figures ? '' : '指标数值与得分分布属保密数据，需分析权限；此处仅显示等级构成。');
    document.body.dataset.ready = 'ready';
  } catch (e) {
    if ((e.status === 401 || e.status === 403) && state.level === 'enterprise') {
      state.level = 'parcel';          // without a key: land only (enterprises are identities)
      $('level').value = 'parcel';
      return load();
    }
    status(`无法读取指标对比：${e.message}`, true);
    document.body.dataset.ready = 'error';
  }
}

for (const b of document.querySelectorAll('button.xlsx')) {
  b.addEventListener('click', async () => {
    try {
      const blob = await fetchBlob('/compare.xlsx', query({ by: b.dataset.by }));
      const a = el('a', { href: URL.createObjectURL(blob), download: `指标对比_${b.dataset.by}.xlsx` });
      document.body.append(a); a.click(); a.remove();
    } catch (e) { status(`导出失败：${e.message}`, true); }
  });
}
$('level').value = state.level;
$('level').addEventListener('change', (e) => { state.level = e.target.value; load(); });
$('year').addEventListener('change', (e) => { state.year = Number(e.target.value); load(); });
$('indicator').addEventListener('change', (e) => { state.indicator = e.target.value; load(); });
$('back').href = `/map${keyQuery()}`;
load();
