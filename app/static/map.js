// The mujun web map: parcels coloured by grade from the vector tiles, legend with counts in view,
// filters, search, 一地一档 popups, the low-yield cluster finder. Chinese UI, works offline.
// window.mujun exposes the map and state (for the browser tests and for debugging in the console).
import * as maplibregl from '/static/vendor/maplibre-gl/maplibre-gl.mjs';
import {
  apiKey, saveKey, keyQuery, getJSON, has, pick, num, pct, el, show,
  ROLE_NAMES, KIND_LABELS, WARNING_HEX,
} from '/static/common.js';

const $ = (id) => document.getElementById(id);
const pageParams = new URL(location.href).searchParams;
const NONE = '__none';            // the legend's key for "no grade in this run"
const STATS_DEBOUNCE_MS = 300;
const HAS_GRADE = ['!=', ['coalesce', ['get', 'grade'], NONE], NONE];

const state = {
  config: null,
  runId: null,
  year: null,
  mode: ['parcel', 'enterprise', 'warning'].includes(pageParams.get('mode')) ? pageParams.get('mode') : 'parcel',
  township: '',
  group: '',
  hidden: new Set(),              // grades switched off in the legend
  statsSeq: 0,
  lastStats: null,
  lastStatsQuery: null,
  clusters: null,
  selected: null,
};
const mujun = window.mujun = { state, map: null, basemap: null, maplibregl };
let popup = null;

// ------------------------------------------------------------------ status line, key dialog
function status(text, isError = false) {
  const s = $('status');
  s.textContent = text || '';
  s.classList.toggle('error', !!isError);
}

function openKeyPanel(message = '') {
  $('key-panel').hidden = false;
  $('key-input').value = apiKey();
  $('key-message').textContent = message;
  $('key-input').focus();
}
$('key-button').addEventListener('click', () => openKeyPanel());
$('key-close').addEventListener('click', () => { $('key-panel').hidden = true; });
$('key-clear').addEventListener('click', () => { saveKey(''); reloadWithoutUrlKey(); });
$('key-save').addEventListener('click', () => { saveKey($('key-input').value.trim()); reloadWithoutUrlKey(); });
function reloadWithoutUrlKey() {
  const u = new URL(location.href);
  u.searchParams.delete('api_key');
  location.href = u.toString();
}

// ------------------------------------------------------------------ colours and expressions
function classes() { return state.config.classification.classes; }
function ungradedHex() { return state.config.classification.ungraded.colour; }
function gradeHex(grade) {
  const c = classes().find(c => c.grade === grade);
  return c ? c.colour : ungradedHex();
}
function warningHex(name) {
  return WARNING_HEX[name] || state.config.warning_colours?.[name] || ungradedHex();
}
function colourNameOf(grade) { return classes().find(c => c.grade === grade)?.colour_name || ''; }

function gradeExpr() {
  const e = ['match', ['coalesce', ['get', 'grade'], NONE]];
  for (const c of classes()) e.push(c.grade, c.colour);
  e.push(ungradedHex());
  return classes().length ? e : ungradedHex();
}
function warningExpr() {
  const names = new Set([...Object.keys(WARNING_HEX), ...Object.keys(state.config.warning_colours || {})]);
  const e = ['match', ['coalesce', ['get', 'colour'], NONE]];
  for (const n of names) e.push(n, warningHex(n));
  e.push(ungradedHex());
  return e;
}
/** The legend swatch of a grade in the current mode. */
function swatchHex(grade) {
  if (grade === NONE) return ungradedHex();
  return state.mode === 'warning' ? warningHex(colourNameOf(grade)) : gradeHex(grade);
}

// ------------------------------------------------------------------ the map
function tileUrl(layer) {
  const q = state.runId !== null ? `?run=${state.runId}` : '';
  return `${location.origin}/tiles/${layer}/{z}/{x}/{y}.pbf${q}`;
}

function hasBasemap() { return (state.config.basemap?.tiles || []).length > 0; }

function buildStyle() {
  const cfg = state.config;
  const base = cfg.basemap || { tiles: [] };
  const sources = {
    // from zoom 0: below 10 the server sends overview tiles (land merged by grade), so the county
    // is coloured at its initial extent on any window size
    parcels: { type: 'vector', tiles: [tileUrl('parcels')], minzoom: 0, maxzoom: 16 },
    defacto: { type: 'vector', tiles: [tileUrl('defacto')], minzoom: 10, maxzoom: 16 },
    sublots: { type: 'vector', tiles: [tileUrl('sublots')], minzoom: 12, maxzoom: 16 },
    enterprises: { type: 'vector', tiles: [tileUrl('enterprises')], minzoom: 8, maxzoom: 16 },
    clusters: { type: 'geojson', data: { type: 'FeatureCollection', features: [] } },
  };
  const layers = [];
  if (!(base.tiles.length && base.gcj02)) {
    layers.push({ id: 'background', type: 'background', paint: { 'background-color': '#eef0ec' } });
  }
  if (base.tiles.length && !base.gcj02) {
    base.tiles.forEach((t, i) => {
      sources[`basemap${i}`] = { type: 'raster', tiles: [t], tileSize: 256, maxzoom: 18 };
      layers.push({ id: `basemap${i}`, type: 'raster', source: `basemap${i}` });
    });
  }
  const fillOpacity = base.tiles.length ? 0.72 : 1;
  layers.push(
    { id: 'parcels-fill', type: 'fill', source: 'parcels', 'source-layer': 'parcels',
      paint: { 'fill-color': gradeExpr(), 'fill-opacity': fillOpacity, 'fill-antialias': false } },
    { id: 'sublots-fill', type: 'fill', source: 'sublots', 'source-layer': 'sublots', minzoom: 12,
      layout: { visibility: 'none' },
      paint: { 'fill-color': gradeExpr(), 'fill-opacity': fillOpacity, 'fill-antialias': false } },
    { id: 'parcels-line', type: 'line', source: 'parcels', 'source-layer': 'parcels',
      paint: { 'line-color': 'rgba(35,40,45,0.55)',
               'line-width': ['interpolate', ['linear'], ['zoom'], 10, 0.2, 14, 0.6, 17, 1.4] } },
    { id: 'sublots-line', type: 'line', source: 'sublots', 'source-layer': 'sublots', minzoom: 15,
      paint: { 'line-color': 'rgba(255,255,255,0.85)', 'line-width': 1, 'line-dasharray': [1, 1.5] } },
    { id: 'defacto-line', type: 'line', source: 'defacto', 'source-layer': 'defacto',
      paint: { 'line-color': '#6a3d9a', 'line-dasharray': [2, 1.5],
               'line-width': ['interpolate', ['linear'], ['zoom'], 11, 0.8, 16, 2] } },
    { id: 'clusters-fill', type: 'fill', source: 'clusters',
      paint: { 'fill-color': '#7b2cbf', 'fill-opacity': 0.08 } },
    { id: 'clusters-line', type: 'line', source: 'clusters',
      paint: { 'line-color': '#7b2cbf', 'line-width': ['interpolate', ['linear'], ['zoom'], 10, 0.8, 13, 1.5, 15, 2.5] } },
    { id: 'clusters-active', type: 'line', source: 'clusters', filter: ['==', ['get', '_idx'], -1],
      paint: { 'line-color': '#ff00aa', 'line-width': ['interpolate', ['linear'], ['zoom'], 10, 1.5, 14, 4] } },
    // Ungraded enterprises (规下, 免评, no figures) are many: smaller, paler and drawn below the rated ones.
    { id: 'enterprises-circle', type: 'circle', source: 'enterprises', 'source-layer': 'enterprises', minzoom: 13,
      layout: { 'circle-sort-key': ['case', HAS_GRADE, 1, 0] },
      paint: { 'circle-color': gradeExpr(), 'circle-stroke-color': '#1f2933',
               'circle-stroke-width': ['interpolate', ['linear'], ['zoom'], 11, 0, 14, 1],
               'circle-opacity': ['case', HAS_GRADE, 1, 0.55],
               'circle-stroke-opacity': ['case', HAS_GRADE, 1, 0.4],
               'circle-radius': ['interpolate', ['linear'], ['zoom'],
                                 10, ['case', HAS_GRADE, 2, 1.2], 14, ['case', HAS_GRADE, 4, 2.5],
                                 17, ['case', HAS_GRADE, 6.5, 4]] } },
    { id: 'selected-line', type: 'line', source: 'parcels', 'source-layer': 'parcels',
      filter: ['==', ['get', 'identity_code'], ''],
      paint: { 'line-color': '#00c8ff', 'line-width': 3.5 } },
  );
  return { version: 8, sources, layers };
}

function createMap() {
  const cfg = state.config;
  const opts = {
    container: 'map',
    style: buildStyle(),
    dragRotate: false,
    pitchWithRotate: false,
    maxZoom: 20,
    fadeDuration: 0,
    attributionControl: { compact: true, customAttribution: 'mujun 亩均论英雄' },
    transformRequest: (url) => {
      const key = apiKey();
      if (key && url.startsWith(location.origin)) return { url, headers: { 'X-API-Key': key } };
      return { url };
    },
    locale: {
      'NavigationControl.ZoomIn': '放大', 'NavigationControl.ZoomOut': '缩小',
      'NavigationControl.ResetBearing': '正北', 'ScaleControl.Meters': '米', 'ScaleControl.Kilometers': '千米',
      'AttributionControl.ToggleAttribution': '数据来源', 'Popup.Close': '关闭',
    },
  };
  if (cfg.extent) {
    opts.bounds = cfg.extent;
    opts.fitBoundsOptions = { padding: 24 };
  } else {
    opts.center = [120.1, 30.2];
    opts.zoom = 12;
  }
  const map = new maplibregl.Map(opts);
  mujun.map = map;
  map.touchZoomRotate.disableRotation();
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
  map.addControl(new maplibregl.ScaleControl({ unit: 'metric' }), 'bottom-right');
  if (hasBasemap() && cfg.basemap.gcj02) createGcjBasemap(map);

  map.on('load', () => {
    applyMode();
    applyFilters();
    refreshStats();
    handleFocusParam();
  });
  map.on('moveend', debounce(refreshStats, STATS_DEBOUNCE_MS));
  map.on('error', (e) => {
    // A missing tile is not worth a red line; anything else is reported.
    const msg = e?.error?.message || String(e?.error || e);
    if (e?.error?.status === 204 || /\b204\b/.test(msg)) return;
    console.warn('map error:', msg);
    status(`地图数据加载出错：${msg}`, true);
  });
  for (const id of ['parcels-fill', 'sublots-fill', 'enterprises-circle', 'clusters-fill']) {
    map.on('mouseenter', id, () => { map.getCanvas().style.cursor = 'pointer'; });
    map.on('mouseleave', id, () => { map.getCanvas().style.cursor = ''; });
  }
  map.on('click', onMapClick);
  return map;
}

// ---- GCJ-02 basemap: a second map, kept at the GCJ-02 position of the main map's centre.
// The offset varies by well under a metre across a county-sized view, so this aligns the
// basemap with the CGCS2000/WGS84 parcels to far better than parcel accuracy.
const GCJ_A = 6378245.0;
const GCJ_EE = 0.00669342162296594323;
function outOfChina(lng, lat) { return lng < 72.004 || lng > 137.8347 || lat < 0.8293 || lat > 55.8271; }
function gcjLat(x, y) {
  let r = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  r += (20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2 / 3;
  r += (20 * Math.sin(y * Math.PI) + 40 * Math.sin(y / 3 * Math.PI)) * 2 / 3;
  r += (160 * Math.sin(y / 12 * Math.PI) + 320 * Math.sin(y * Math.PI / 30)) * 2 / 3;
  return r;
}
function gcjLng(x, y) {
  let r = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  r += (20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2 / 3;
  r += (20 * Math.sin(x * Math.PI) + 40 * Math.sin(x / 3 * Math.PI)) * 2 / 3;
  r += (150 * Math.sin(x / 12 * Math.PI) + 300 * Math.sin(x / 30 * Math.PI)) * 2 / 3;
  return r;
}
export function wgs84ToGcj02(lng, lat) {
  if (outOfChina(lng, lat)) return [lng, lat];
  let dLat = gcjLat(lng - 105, lat - 35);
  let dLng = gcjLng(lng - 105, lat - 35);
  const radLat = lat / 180 * Math.PI;
  let magic = Math.sin(radLat);
  magic = 1 - GCJ_EE * magic * magic;
  const sqrtMagic = Math.sqrt(magic);
  dLat = (dLat * 180) / ((GCJ_A * (1 - GCJ_EE)) / (magic * sqrtMagic) * Math.PI);
  dLng = (dLng * 180) / (GCJ_A / sqrtMagic * Math.cos(radLat) * Math.PI);
  return [lng + dLng, lat + dLat];
}
mujun.wgs84ToGcj02 = wgs84ToGcj02;

function createGcjBasemap(map) {
  const box = $('basemap');
  box.hidden = false;
  const tiles = state.config.basemap.tiles;
  const style = {
    version: 8,
    sources: Object.fromEntries(tiles.map((t, i) => [`b${i}`, { type: 'raster', tiles: [t], tileSize: 256, maxzoom: 18 }])),
    layers: [{ id: 'bg', type: 'background', paint: { 'background-color': '#eef0ec' } },
             ...tiles.map((t, i) => ({ id: `b${i}`, type: 'raster', source: `b${i}` }))],
  };
  const c = map.getCenter();
  const base = new maplibregl.Map({ container: box, style, interactive: false, attributionControl: false,
                                    center: wgs84ToGcj02(c.lng, c.lat), zoom: map.getZoom() });
  mujun.basemap = base;
  const sync = () => {
    const m = map.getCenter();
    base.jumpTo({ center: wgs84ToGcj02(m.lng, m.lat), zoom: map.getZoom(), bearing: map.getBearing(), pitch: map.getPitch() });
  };
  map.on('move', sync);
  map.on('resize', () => { base.resize(); sync(); });
  status('底图为 GCJ-02（火星坐标），已按视图中心的偏移量平移对齐');
}

// ------------------------------------------------------------------ modes, filters, layer toggles
function setVisible(id, on) {
  const map = mujun.map;
  if (map.getLayer(id)) map.setLayoutProperty(id, 'visibility', on ? 'visible' : 'none');
}

function applyMode() {
  const map = mujun.map;
  if (!map?.isStyleLoaded()) return;
  const mode = state.mode;
  const parcelFill = mode === 'parcel' ? gradeExpr() : mode === 'warning' ? warningExpr() : '#e3e5e8';
  map.setPaintProperty('parcels-fill', 'fill-color', parcelFill);
  map.setPaintProperty('sublots-fill', 'fill-color', gradeExpr());
  map.setPaintProperty('enterprises-circle', 'circle-color', gradeExpr());
  map.setLayerZoomRange('enterprises-circle', mode === 'enterprise' ? 10 : 13, 24);
  applyLayerToggles();
  $('legend-title').textContent = {
    parcel: '宗地等级（当前视图）', enterprise: '经营主体等级（当前视图）', warning: '预警四色（宗地，当前视图）',
  }[mode];
  $('legend-count-head').textContent = mode === 'enterprise' ? '企业数' : '宗数';
  $('legend-area-head').textContent = mode === 'enterprise' ? '用地(亩)' : '面积(亩)';
  buildLegendRows();
  if (state.lastStats) renderLegend(state.lastStats);
}

function applyLayerToggles() {
  const enterprise = state.mode === 'enterprise';
  setVisible('enterprises-circle', $('layer-enterprises').checked);
  setVisible('sublots-fill', enterprise);
  setVisible('sublots-line', !enterprise && $('layer-sublots').checked);
  setVisible('defacto-line', $('layer-defacto').checked);
  for (const id of ['clusters-fill', 'clusters-line', 'clusters-active']) setVisible(id, $('layer-clusters').checked);
}

/** MapLibre filter of a layer from the township / industry group / grade choices. */
function filterFor(layerId) {
  const parts = ['all'];
  if (state.township) parts.push(['==', ['get', 'township'], state.township]);
  const hasGroup = ['parcels-fill', 'enterprises-circle'].includes(layerId);
  if (state.group && hasGroup) parts.push(['==', ['get', 'industry_group'], state.group]);
  const gradeLayers = state.mode === 'enterprise' ? ['sublots-fill', 'enterprises-circle'] : ['parcels-fill'];
  if (state.hidden.size && gradeLayers.includes(layerId)) {
    parts.push(['!', ['in', ['coalesce', ['get', 'grade'], NONE], ['literal', [...state.hidden]]]]);
  }
  return parts.length > 1 ? parts : null;
}

function applyFilters() {
  const map = mujun.map;
  if (!map?.isStyleLoaded()) return;
  for (const id of ['parcels-fill', 'parcels-line', 'sublots-fill', 'sublots-line', 'defacto-line', 'enterprises-circle']) {
    map.setFilter(id, filterFor(id));
  }
}

// ------------------------------------------------------------------ legend and /stats/grades
/** The classification's grades, any other grade the counts hold (a scheme without colours), ungraded. */
function legendKeys() {
  const keys = classes().map(c => c.grade);
  for (const r of state.lastStats?.grades || []) if (r.grade !== null && !keys.includes(r.grade)) keys.push(r.grade);
  return [...keys, NONE];
}

function buildLegendRows() {
  const tbody = $('legend').tBodies[0];
  tbody.replaceChildren();
  for (const g of legendKeys()) {
    const cls = classes().find(c => c.grade === g);
    const cname = cls?.colour_name || '';
    const name = g === NONE ? '未评级' : state.mode === 'warning' && cname ? `${cname} · ${g}` : `${g}${cname ? ` ${cname}` : ''}`;
    const box = el('input', { type: 'checkbox', checked: !state.hidden.has(g), 'aria-label': `显示 ${name}`,
                              onchange: (e) => toggleGrade(g, e.target.checked) });
    tbody.append(el('tr', { dataset: { grade: g }, class: state.hidden.has(g) ? 'off' : '' },
      el('td', {}, box, el('span', { class: 'swatch', style: `background:${swatchHex(g)}` })),
      el('td', { class: 'name' }, name),
      el('td', { class: 'n count' }, ''),
      el('td', { class: 'n area' }, '')));
  }
}

function toggleGrade(g, on) {
  if (on) state.hidden.delete(g); else state.hidden.add(g);
  document.querySelector(`#legend tr[data-grade="${CSS.escape(g)}"]`)?.classList.toggle('off', !on);
  applyFilters();
  if (state.lastStats) renderLegend(state.lastStats);
}

function viewBbox() {
  const b = mujun.map.getBounds();
  const r = (v) => Math.round(v * 1e6) / 1e6;
  return [r(Math.max(-180, b.getWest())), r(Math.max(-90, b.getSouth())),
          r(Math.min(180, b.getEast())), r(Math.min(90, b.getNorth()))];
}

async function refreshStats() {
  if (!mujun.map) return;
  const seq = ++state.statsSeq;
  document.body.dataset.stats = 'loading';
  $('legend').classList.add('loading');
  const query = {
    layer: state.mode === 'enterprise' ? 'enterprises' : 'parcels',
    run: state.runId, bbox: viewBbox().join(','), township: state.township, industry_group: state.group,
  };
  try {
    const stats = await getJSON('/stats/grades', query);
    if (seq !== state.statsSeq) return;       // a newer view is already being counted
    state.lastStats = stats;
    state.lastStatsQuery = query;
    renderLegend(stats);
    document.body.dataset.stats = 'ready';
  } catch (e) {
    if (seq !== state.statsSeq) return;
    status(`统计失败：${e.message}`, true);
    document.body.dataset.stats = 'error';
  } finally {
    if (seq === state.statsSeq) $('legend').classList.remove('loading');
  }
}

function renderLegend(stats) {
  const by = new Map(stats.grades.map(r => [r.grade ?? NONE, r]));
  if ([...by.keys()].some(g => !document.querySelector(`#legend tr[data-grade="${CSS.escape(g)}"]`))) buildLegendRows();
  const showArea = stats.total.area_mu !== null && stats.total.area_mu !== undefined;
  let count = 0;
  let area = 0;
  for (const tr of $('legend').tBodies[0].rows) {
    const g = tr.dataset.grade;
    const r = by.get(g);
    const n = r ? r.count : 0;
    tr.dataset.count = String(n);
    tr.querySelector('.count').textContent = n.toLocaleString('zh-CN');
    tr.querySelector('.area').textContent = showArea ? num(r ? r.area_mu : 0, 1) : '';
    if (showArea) tr.dataset.area = String(r ? r.area_mu : 0);
    if (!state.hidden.has(g)) { count += n; area += r?.area_mu || 0; }
  }
  $('legend-area-head').style.display = showArea ? '' : 'none';
  for (const td of document.querySelectorAll('#legend td.area, #legend-total-area')) td.style.display = showArea ? '' : 'none';
  $('legend-total-count').textContent = count.toLocaleString('zh-CN');
  $('legend-total-area').textContent = showArea ? num(area, 1) : '';
}

// ------------------------------------------------------------------ run / mode / filter controls
function fillControls() {
  const cfg = state.config;
  const sel = $('run-select');
  sel.replaceChildren();
  for (const r of cfg.runs) {
    const st = { published: '已发布', draft: '草稿' }[r.status] || r.status;
    const text = r.shown ? `${r.year} 年（${st}）` : `${r.year} 年 · 批次 ${r.id}（${st}）`;
    sel.append(el('option', { value: r.id, selected: r.id === state.runId }, text));
  }
  if (!cfg.runs.length) sel.append(el('option', { value: '' }, '尚无评价结果'));
  $('mode-select').value = state.mode;
  fillSelect($('township-select'), cfg.townships, state.township);
  fillSelect($('group-select'), cfg.industry_groups, state.group);
  const p = cfg.principal;
  $('role-badge').textContent = `${ROLE_NAMES[p.role] || p.role}${p.region ? ` · ${p.region}` : ''}`;
  $('role-badge').title = p.name ? `密钥：${p.name}` : '未使用密钥';
  for (const n of document.querySelectorAll('.figures-only')) n.hidden = !p.sees_figures;
  const run = cfg.runs.find(r => r.id === state.runId);
  $('run-note').textContent = run
    ? `评价办法：${run.scheme_name}${run.scheme_version ? ` v${run.scheme_version}` : ''}（批次 ${run.id}）` : '';
  buildClusterGrades();
}

function fillSelect(sel, values, current) {
  sel.replaceChildren(el('option', { value: '' }, '全部'));
  for (const v of values || []) sel.append(el('option', { value: v, selected: v === current }, v));
}

$('mode-select').addEventListener('change', (e) => {
  state.mode = e.target.value;
  state.hidden.clear();
  const u = new URL(location.href);
  u.searchParams.set('mode', state.mode);
  history.replaceState(null, '', u);
  applyMode();
  applyFilters();
  refreshStats();
});
$('township-select').addEventListener('change', (e) => { state.township = e.target.value; applyFilters(); refreshStats(); });
$('group-select').addEventListener('change', (e) => { state.group = e.target.value; applyFilters(); refreshStats(); });
for (const id of ['layer-enterprises', 'layer-sublots', 'layer-defacto', 'layer-clusters']) {
  $(id).addEventListener('change', () => applyLayerToggles());
}
$('run-select').addEventListener('change', async (e) => {
  const run = Number(e.target.value);
  try {
    const cfg = await getJSON('/map/config', { run });
    state.config = cfg;
    state.runId = cfg.run_id;
    state.year = cfg.year;
    fillControls();
    const map = mujun.map;
    for (const s of ['parcels', 'defacto', 'sublots', 'enterprises']) map.getSource(s).setTiles([tileUrl(s)]);
    clearClusters();
    popup?.remove();
    applyMode();
    applyFilters();
    refreshStats();
    const u = new URL(location.href);
    u.searchParams.set('run', String(run));
    history.replaceState(null, '', u);
  } catch (err) {
    status(`切换年度失败：${err.message}`, true);
  }
});

// tabs
for (const b of document.querySelectorAll('.tabs button')) {
  b.addEventListener('click', () => {
    for (const o of document.querySelectorAll('.tabs button')) o.classList.toggle('active', o === b);
    for (const t of document.querySelectorAll('.tab')) t.hidden = t.id !== `tab-${b.dataset.tab}`;
  });
}

// ------------------------------------------------------------------ popups (一地一档 / 一企一档 summaries)
function chip(grade) {
  if (!has(grade)) return el('span', { class: 'muted' }, '未评级');
  return el('span', { class: 'grade-chip', style: `background:${gradeHex(grade)}` }, grade);
}

function rows(pairs) {
  const t = el('table');
  for (const [k, v] of pairs) {
    if (!has(v) && !(v instanceof Node)) continue;
    t.append(el('tr', {}, el('th', {}, k), el('td', {}, v instanceof Node ? v : String(v))));
  }
  return t;
}

/** The rating of the run shown, wherever the archive keeps it. */
function currentRating(a) {
  const direct = pick(a, 'rating', 'current_rating', 'current');
  if (direct && typeof direct === 'object' && !Array.isArray(direct)) return direct;
  const list = [a.ratings, a.history, a.years, a.rating_history].find(Array.isArray) || [];
  return list.find(r => r.run_id === state.runId) || list.find(r => r.year === state.year) || {};
}

function parcelSummary(a, props) {
  const cur = currentRating(a);
  const base = { ...props, ...(a.properties || {}), ...(a.parcel || {}), ...a };
  const f = (k) => pick(cur, k) ?? pick(base, k);
  const ents = [a.enterprises, a.occupants, a.links, a.land_links, a.parcel?.enterprises].find(Array.isArray) || [];
  return {
    identity_code: f('identity_code') || props.identity_code,
    parcel_code: f('parcel_code'), kind: f('kind'), township: f('township'), land_use: f('land_use'),
    area_mu: f('area_mu'), owner_name: f('owner_name'), grade: f('grade'), colour: f('colour'),
    tax_per_mu: f('tax_per_mu'), score: f('score'), idle: f('idle'), low_yield_years: f('low_yield_years'),
    warnings: pick(cur, 'warnings'),
    enterprises: ents.map(e => ({
      uscc: pick(e, 'uscc', 'enterprise.uscc'),
      name: pick(e, 'name', 'enterprise_name', 'enterprise.name'),
      share: pick(e, 'share', 'attributed_share', 'land_share'),
      role: pick(e, 'role'),
      grade: pick(e, 'grade', 'enterprise_grade', 'rating.grade', 'enterprise.grade'),
    })).filter(e => has(e.uscc)),
  };
}

function parcelPopupContent(s, note = '') {
  const runQ = keyQuery({ run: state.runId });
  const box = el('div', { class: 'pop', dataset: { identityCode: s.identity_code } });
  box.append(el('h3', {}, `宗地 ${s.parcel_code || s.identity_code}`));
  box.append(rows([
    ['宗地代码', s.parcel_code],
    ['宗地身份码', s.identity_code],
    ['用地类型', s.kind ? (KIND_LABELS[s.kind] || s.kind) : undefined],
    ['镇街', s.township],
    ['面积', has(s.area_mu) ? `${num(s.area_mu, 2)} 亩` : undefined],
    ['权利人', s.owner_name],
    ['宗地等级', chip(s.grade)],
    ['预警颜色', s.colour],
    ['亩均税收', has(s.tax_per_mu) ? `${num(s.tax_per_mu, 2)} 万元/亩` : undefined],
    ['综合得分', has(s.score) ? num(s.score, 2) : undefined],
    ['闲置', s.idle === true ? '是' : undefined],
    ['连续低效', has(s.low_yield_years) && s.low_yield_years > 0 ? `${s.low_yield_years} 年` : undefined],
    ['预警', has(s.warnings) ? show('warnings', s.warnings) : undefined],
  ]));
  if (s.enterprises.length) {
    const t = el('table', { class: 'ents' }, el('tr', {}, el('th', {}, '使用企业'), el('th', {}, '占比'), el('th', {}, '企业等级')));
    for (const e of s.enterprises) {
      t.append(el('tr', { dataset: { uscc: e.uscc } },
        el('td', {}, el('a', { href: `/map/enterprise/${encodeURIComponent(e.uscc)}${runQ}`, class: 'enterprise-link' }, e.name || e.uscc),
           has(e.role) ? el('span', { class: 'muted' }, `（${show('role', e.role)}）`) : ''),
        el('td', { class: 'n' }, has(e.share) ? pct(e.share) : ''),
        el('td', {}, chip(e.grade))));
    }
    box.append(t);
  } else {
    box.append(el('p', { class: 'muted' }, '无使用企业（闲置或未匹配）'));
  }
  box.append(el('div', { class: 'links' },
    el('a', { href: `/map/parcel/${encodeURIComponent(s.identity_code)}${runQ}`, class: 'parcel-link', target: '_self' }, '一地一档 →')));
  if (note) box.append(el('p', { class: 'muted' }, note));
  return box;
}

function enterprisePopupContent(a, props, note = '') {
  const cur = currentRating(a);
  const base = { ...props, ...(a.properties || {}), ...(a.enterprise || {}), ...a };
  const f = (k) => pick(cur, k) ?? pick(base, k);
  const uscc = f('uscc') || props.uscc;
  const box = el('div', { class: 'pop', dataset: { uscc } });
  box.append(el('h3', {}, f('name') || `企业 ${uscc}`));
  box.append(rows([
    ['统一社会信用代码', uscc],
    ['镇街', f('township')],
    ['行业组', f('industry_group')],
    ['规模', f('scale')],
    ['经营主体等级', chip(f('grade'))],
    ['预警颜色', f('colour')],
    ['用地面积', has(f('land_area_mu') ?? pick(a, 'land.land_area_mu')) ? `${num(f('land_area_mu') ?? pick(a, 'land.land_area_mu'), 2)} 亩` : undefined],
    ['亩均税收', has(f('tax_per_mu')) ? `${num(f('tax_per_mu'), 2)} 万元/亩` : undefined],
    ['综合得分', has(f('score')) ? num(f('score'), 2) : undefined],
    ['连续D档', has(f('consecutive_d_years')) && f('consecutive_d_years') > 0 ? `${f('consecutive_d_years')} 年` : undefined],
  ]));
  box.append(el('div', { class: 'links' },
    el('a', { href: `/map/enterprise/${encodeURIComponent(uscc)}${keyQuery({ run: state.runId })}`, class: 'enterprise-link' }, '一企一档 →')));
  if (note) box.append(el('p', { class: 'muted' }, note));
  return box;
}

function selectParcel(code) {
  state.selected = code;
  mujun.map.setFilter('selected-line', ['==', ['get', 'identity_code'], code || '']);
}

async function openParcelPopup(code, props, lngLat) {
  popup?.remove();
  selectParcel(code);
  const loading = el('div', { class: 'pop' }, el('h3', {}, `宗地 ${props.parcel_code || code}`), el('p', { class: 'muted' }, '正在读取一地一档…'));
  popup = new maplibregl.Popup({ maxWidth: '380px', className: 'parcel-popup' }).setLngLat(lngLat).setDOMContent(loading).addTo(mujun.map);
  const mine = popup;
  mine.on('close', () => { if (state.selected === code) selectParcel(null); });
  let content;
  try {
    const a = await getJSON(`/parcels/${encodeURIComponent(code)}`, { run: state.runId });
    content = parcelPopupContent(parcelSummary(a, props));
  } catch (e) {
    content = parcelPopupContent(parcelSummary({}, props), `档案暂不可用：${e.message}`);
  }
  if (popup === mine) { mine.setDOMContent(content); keepInView(mine); }
}

/** Pan the map so that an opened popup is entirely visible. */
function keepInView(p) {
  const box = p.getElement()?.getBoundingClientRect();
  const view = mujun.map.getContainer().getBoundingClientRect();
  if (!box) return;
  let dx = 0;
  let dy = 0;
  if (box.bottom > view.bottom - 10) dy = box.bottom - view.bottom + 10;
  if (box.top - dy < view.top + 10) dy = box.top - view.top - 10;
  if (box.right > view.right - 10) dx = box.right - view.right + 10;
  if (box.left - dx < view.left + 10) dx = box.left - view.left - 10;
  if (dx || dy) mujun.map.panBy([dx, dy], { duration: 300 });
}

async function openEnterprisePopup(uscc, props, lngLat) {
  popup?.remove();
  const loading = el('div', { class: 'pop' }, el('h3', {}, `企业 ${uscc}`), el('p', { class: 'muted' }, '正在读取一企一档…'));
  popup = new maplibregl.Popup({ maxWidth: '380px', className: 'enterprise-popup' }).setLngLat(lngLat).setDOMContent(loading).addTo(mujun.map);
  const mine = popup;
  let content;
  try {
    const a = await getJSON(`/enterprises/${encodeURIComponent(uscc)}`, { run: state.runId });
    content = enterprisePopupContent(a, props);
  } catch (e) {
    content = enterprisePopupContent({}, props, `档案暂不可用：${e.message}`);
  }
  if (popup === mine) { mine.setDOMContent(content); keepInView(mine); }
}

function onMapClick(e) {
  const map = mujun.map;
  const layers = ['enterprises-circle', 'sublots-fill', 'parcels-fill', 'clusters-fill']
    .filter(id => map.getLayer(id) && map.getLayoutProperty(id, 'visibility') !== 'none');
  const feats = map.queryRenderedFeatures(e.point, { layers });
  if (!feats.length) { popup?.remove(); return; }
  const f = feats.find(x => x.layer.id !== 'clusters-fill') || feats[0];
  const p = f.properties || {};
  if (f.layer.id === 'enterprises-circle') openEnterprisePopup(p.uscc, p, e.lngLat);
  else if (f.layer.id === 'clusters-fill') selectCluster(p._idx, false);
  // an overview piece (below zoom 10) is many parcels: zoom in to them instead of a popup
  else if (!p.identity_code) map.easeTo({ center: e.lngLat, zoom: Math.max(map.getZoom() + 2, 10.5) });
  else openParcelPopup(p.identity_code, p, e.lngLat);
}

// ------------------------------------------------------------------ search
let searchResults = [];
$('search-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const q = $('search-input').value.trim();
  const list = $('search-results');
  if (q.length < 2) { list.hidden = true; return; }
  try {
    const res = await getJSON('/search', { q });
    searchResults = res.results;
    list.replaceChildren();
    if (!searchResults.length) list.append(el('li', { class: 'empty' }, '没有找到（请输入宗地代码、身份码、统一社会信用代码或企业名称的开头）'));
    searchResults.forEach((r, i) => {
      const title = r.type === 'parcel' ? `宗地 ${r.parcel_code || r.identity_code}` : (r.name || `企业 ${r.uscc}`);
      const sub = r.type === 'parcel'
        ? [r.identity_code !== r.parcel_code ? r.identity_code : '', KIND_LABELS[r.kind] || r.kind, r.township, has(r.area_mu) ? `${num(r.area_mu, 2)} 亩` : ''].filter(has).join(' · ')
        : [r.name ? r.uscc : '', r.township].filter(has).join(' · ');
      list.append(el('li', { dataset: { i }, onclick: () => goToResult(r) }, title, has(sub) ? el('small', {}, sub) : ''));
    });
    list.hidden = false;
    if (searchResults.length === 1) goToResult(searchResults[0]);
  } catch (err) {
    status(`搜索失败：${err.message}`, true);
  }
});
document.addEventListener('click', (e) => {
  if (!$('search-form').contains(e.target)) $('search-results').hidden = true;
});

function goToResult(r) {
  const map = mujun.map;
  $('search-results').hidden = true;
  if (r.bbox) map.fitBounds(r.bbox, { padding: 120, maxZoom: 17, duration: 800 });
  else if (r.point) map.flyTo({ center: r.point, zoom: 16, duration: 800 });
  else { status('该企业没有位置信息'); return; }
  map.once('moveend', () => {
    if (r.type === 'parcel') {
      const c = [(r.bbox[0] + r.bbox[2]) / 2, (r.bbox[1] + r.bbox[3]) / 2];
      openParcelPopup(r.identity_code, { identity_code: r.identity_code, parcel_code: r.parcel_code, township: r.township, area_mu: r.area_mu }, c);
    } else if (r.point) {
      openEnterprisePopup(r.uscc, { uscc: r.uscc, name: r.name, township: r.township }, r.point);
    }
  });
}

/** /map?focus=<code>: open the map on a parcel or enterprise (used by the archive pages). */
async function handleFocusParam() {
  const focus = pageParams.get('focus');
  if (!focus) return;
  try {
    const res = await getJSON('/search', { q: focus });
    const hit = res.results.find(r => [r.identity_code, r.parcel_code, r.uscc].includes(focus)) || res.results[0];
    if (hit) goToResult(hit);
  } catch { /* nothing to focus */ }
}

// ------------------------------------------------------------------ low-yield clusters
function buildClusterGrades() {
  const box = $('cluster-grades');
  const prev = new Set([...box.querySelectorAll('input:checked')].map(i => i.value));
  box.replaceChildren(el('span', {}, '等级 '));
  const low = classes().slice(-2).map(c => c.grade);   // the two worst grades by default (e.g. C, D)
  for (const c of classes()) {
    const on = prev.size ? prev.has(c.grade) : low.includes(c.grade);
    box.append(el('label', {}, el('input', { type: 'checkbox', value: c.grade, checked: on }), ` ${c.grade}`));
  }
}

function clusterFigures(p) {
  const members = Array.isArray(p.members) ? p.members : Array.isArray(p.parcels) ? p.parcels : null;
  return {
    id: pick(p, 'cluster_id', 'id'),
    area: pick(p, 'total_area_mu', 'area_mu', 'total_area'),
    count: pick(p, 'member_count', 'parcel_count', 'n_parcels', 'count') ?? members?.length,
    enterprises: pick(p, 'enterprise_count', 'enterprises_affected', 'n_enterprises') ?? (Array.isArray(p.enterprises) ? p.enterprises.length : undefined),
    idle: pick(p, 'idle_count', 'idle_parcels'),
    tax: pick(p, 'total_tax_wan', 'total_tax', 'tax_total'),
    taxPerMu: pick(p, 'mean_tax_per_mu', 'tax_per_mu', 'avg_tax_per_mu'),
    gain: pick(p, 'gain', 'target_gain', 'potential_gain', 'gain_wan', 'tax_gain'),
    township: pick(p, 'townships', 'township'),
    grades: p.grades && typeof p.grades === 'object' ? p.grades : null,
  };
}

function featureBbox(f) {
  let b = [Infinity, Infinity, -Infinity, -Infinity];
  const walk = (c) => {
    if (typeof c[0] === 'number') { b = [Math.min(b[0], c[0]), Math.min(b[1], c[1]), Math.max(b[2], c[0]), Math.max(b[3], c[1])]; return; }
    for (const x of c) walk(x);
  };
  if (f.bbox) return f.bbox;
  walk(f.geometry.coordinates);
  return b;
}

$('cluster-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const grades = [...$('cluster-grades').querySelectorAll('input:checked')].map(i => i.value);
  const sees = state.config.principal.sees_figures;
  const params = {
    grades, include_idle: $('cl-idle').checked ? 'true' : 'false',
    gap_m: $('cl-gap').value, min_area_mu: $('cl-min-area').value,
    max_tax_per_mu: sees ? $('cl-max-tax').value : '', target_tax_per_mu: sees ? $('cl-target').value : '',
    run: state.runId, f: 'geojson',
  };
  $('cluster-summary').textContent = '正在查找…';
  document.body.dataset.clusters = 'loading';
  try {
    const fc = await getJSON('/clusters', params);
    showClusters(fc);
    document.body.dataset.clusters = 'ready';
  } catch (err) {
    $('cluster-summary').textContent = `查找失败：${err.message}`;
    document.body.dataset.clusters = 'error';
  }
});
$('cluster-clear').addEventListener('click', () => clearClusters());

function clearClusters() {
  state.clusters = null;
  mujun.map?.getSource('clusters')?.setData({ type: 'FeatureCollection', features: [] });
  $('cluster-list').replaceChildren();
  $('cluster-summary').textContent = '';
}

function showClusters(fc) {
  const feats = (fc.features || []).filter(f => f.geometry);
  const sorted = feats.map(f => ({ f, fig: clusterFigures(f.properties || {}) }))
    .sort((a, b) => (b.fig.area ?? 0) - (a.fig.area ?? 0));
  sorted.forEach((x, i) => { x.f.properties = { ...(x.f.properties || {}), _idx: i }; });
  // Nested lists (members) are not needed on the map: keep the drawn features light.
  const drawn = sorted.map(({ f }) => ({ type: 'Feature', id: f.properties._idx, geometry: f.geometry,
    properties: Object.fromEntries(Object.entries(f.properties).filter(([, v]) => typeof v !== 'object' || v === null)) }));
  state.clusters = { features: sorted.map(x => x.f), figures: sorted.map(x => x.fig) };
  mujun.map.getSource('clusters').setData({ type: 'FeatureCollection', features: drawn });
  $('layer-clusters').checked = true;
  applyLayerToggles();
  const list = $('cluster-list');
  list.replaceChildren();
  const totalArea = sorted.reduce((s, x) => s + (x.fig.area || 0), 0);
  $('cluster-summary').textContent = sorted.length
    ? `找到 ${sorted.length} 片连片低效用地，合计 ${num(totalArea, 1)} 亩（按面积排序，点击定位）`
    : '没有符合条件的连片低效用地；可放宽间隔或最小面积。';
  sorted.forEach(({ fig }, i) => {
    const dl = el('dl');
    const add = (k, v) => { if (has(v)) dl.append(el('dt', {}, k), el('dd', {}, v)); };
    add('宗地数', has(fig.count) ? `${fig.count} 宗` : undefined);
    add('等级构成', fig.grades ? Object.entries(fig.grades).map(([g, n]) => `${g} ${n}`).join(' · ') : undefined);
    add('涉及企业', has(fig.enterprises) ? `${fig.enterprises} 家` : undefined);
    add('闲置宗地', has(fig.idle) ? `${fig.idle} 宗` : undefined);
    add('税收合计', has(fig.tax) ? `${num(fig.tax, 1)} 万元` : undefined);
    add('平均亩均税收', has(fig.taxPerMu) ? `${num(fig.taxPerMu, 2)} 万元/亩` : undefined);
    add('达到目标可增税收', has(fig.gain) ? `${num(fig.gain, 1)} 万元` : undefined);
    add('镇街', Array.isArray(fig.township) ? fig.township.join('、') : fig.township);
    list.append(el('li', { dataset: { idx: i }, onclick: () => selectCluster(i, true) },
      el('b', {}, `连片 ${i + 1} · ${has(fig.area) ? `${num(fig.area, 1)} 亩` : ''}`), dl));
  });
  if (sorted.length) {
    const all = sorted.map(x => featureBbox(x.f));
    mujun.map.fitBounds([Math.min(...all.map(b => b[0])), Math.min(...all.map(b => b[1])),
                         Math.max(...all.map(b => b[2])), Math.max(...all.map(b => b[3]))], { padding: 60, maxZoom: 16, duration: 600 });
  }
}

function selectCluster(i, zoom) {
  if (!state.clusters) return;
  mujun.map.setFilter('clusters-active', ['==', ['get', '_idx'], i]);
  for (const li of $('cluster-list').children) li.classList.toggle('active', Number(li.dataset.idx) === i);
  $('cluster-list').children[i]?.scrollIntoView({ block: 'nearest' });
  if (zoom) mujun.map.fitBounds(featureBbox(state.clusters.features[i]), { padding: 80, maxZoom: 17, duration: 600 });
}

// ------------------------------------------------------------------ start
function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

async function init() {
  try {
    const cfg = await getJSON('/map/config', { run: pageParams.get('run'), year: pageParams.get('year') });
    state.config = cfg;
    state.runId = cfg.run_id;
    state.year = cfg.year;
  } catch (e) {
    if (e.status === 401 || e.status === 403) openKeyPanel(`需要有效的 API 密钥：${e.message}`);
    status(`无法读取地图配置：${e.message}`, true);
    document.body.dataset.stats = 'error';
    return;
  }
  fillControls();
  buildLegendRows();
  if (!state.config.runs.length) status('尚无评价结果：运行 mujun evaluate 后刷新。');
  createMap();
}

init();
