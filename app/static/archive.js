// Full archive pages: /map/parcel/{identity_code} (一地一档) and /map/enterprise/{uscc} (一企一档).
// An HTML shell that fetches the JSON archive and renders what the caller's role may see: basic
// facts, the rating of the run shown, score breakdown, indicators, history (inline SVG chart),
// warnings, and the linked enterprises / land. Fields the API did not send are not shown.
import { apiKey, getJSON, keyQuery, has, pick, num, el, label, show } from '/static/common.js';

const $ = (id) => document.getElementById(id);
const params = new URL(location.href).searchParams;
const m = location.pathname.match(/^\/map\/(parcel|enterprise)\/(.+)$/);
const kind = m ? m[1] : null;
const code = m ? decodeURIComponent(m[2]) : null;
const run = params.get('run');
const year = params.get('year');
let classification = { classes: [], ungraded: { colour: '#bdbdbd' } };

const STRUCTURAL = new Set(['ratings', 'history', 'years', 'rating_history', 'rating', 'current', 'current_rating',
  'enterprises', 'parcels', 'land', 'links', 'land_links', 'occupants', 'sublots', 'metrics', 'geometry', 'links_',
  'indicators', 'explanation', 'adjustments', 'warnings', 'properties', 'parcel', 'enterprise', 'type', 'bbox',
  'visibility', 'point', 'metrics_unit', 'parent', 'attached', 'electricity', 'explanation_text']);

function gradeHex(g) {
  return classification.classes.find(c => c.grade === g)?.colour || classification.ungraded.colour;
}
function chip(g) {
  return has(g) ? el('span', { class: 'grade-chip', style: `background:${gradeHex(g)}` }, g) : el('span', { class: 'muted' }, '未评级');
}
function card(title, ...children) {
  return el('section', { class: 'card' }, el('h2', {}, title), ...children);
}

function cell(key, v) {
  if (key === 'grade' || key === 'band_grade' || key === 'enterprise_grade' || key === 'parcel_grade') return chip(v);
  if (key === 'uscc' && has(v)) return el('a', { href: `/map/enterprise/${encodeURIComponent(v)}${keyQuery({ run })}` }, v);
  if (key === 'identity_code' && has(v)) return el('a', { href: `/map/parcel/${encodeURIComponent(v)}${keyQuery({ run })}` }, v);
  return show(key, v);
}

function isScalar(v) { return v === null || ['string', 'number', 'boolean'].includes(typeof v); }

/** Key/value table of the scalar fields that have a value. */
function kvTable(obj, skip = new Set()) {
  const t = el('table', { class: 'kv' });
  for (const [k, v] of Object.entries(obj || {})) {
    if (skip.has(k) || !has(v)) continue;
    if (isScalar(v)) t.append(el('tr', { dataset: { field: k } }, el('th', {}, label(k)), el('td', {}, cell(k, v))));
    else if (Array.isArray(v) && v.every(isScalar)) t.append(el('tr', { dataset: { field: k } }, el('th', {}, label(k)), el('td', {}, v.join('；'))));
  }
  return t.rows.length ? t : null;
}

/** Table of a list of objects: the scalar columns any row has a value for. */
function gridTable(list, preferred = [], only = false) {
  const cols = [];
  for (const k of preferred) if (list.some(r => has(r?.[k]) && isScalar(r[k]))) cols.push(k);
  if (!only) for (const r of list) for (const [k, v] of Object.entries(r || {})) {
    if (!cols.includes(k) && has(v) && isScalar(v)) cols.push(k);
  }
  if (!cols.length) return null;
  const t = el('table', { class: 'grid' }, el('tr', {}, cols.map(k => el('th', {}, label(k)))));
  for (const r of list) {
    t.append(el('tr', {}, cols.map(k => el('td', { class: typeof r?.[k] === 'number' ? 'n' : '' }, has(r?.[k]) ? cell(k, r[k]) : ''))));
  }
  return el('div', { class: 'overflow' }, t);
}

/** Anything else: objects as key/value tables (one level deep), lists as grids. */
function generic(v) {
  if (Array.isArray(v)) {
    if (v.every(isScalar)) return el('ul', { class: 'warnings' }, v.filter(has).map(x => el('li', {}, String(x))));
    return gridTable(v.filter(x => x && typeof x === 'object'));
  }
  if (v && typeof v === 'object') {
    const box = el('div');
    const kv = kvTable(v);
    if (kv) box.append(kv);
    for (const [k, sub] of Object.entries(v)) {
      if (!has(sub) || isScalar(sub) || (Array.isArray(sub) && sub.every(isScalar) && !Array.isArray(sub[0]))) continue;
      const inner = generic(sub);
      if (inner) box.append(el('h3', {}, label(k)), inner);
    }
    return box.childNodes.length ? box : null;
  }
  return has(v) ? document.createTextNode(String(v)) : null;
}

function historyList(a) {
  return [a.ratings, a.history, a.years, a.rating_history, a.enterprise?.ratings, a.parcel?.ratings].find(Array.isArray) || [];
}

function currentRating(a, hist) {
  const direct = pick(a, 'rating', 'current_rating', 'current');
  if (direct && typeof direct === 'object' && !Array.isArray(direct)) return direct;
  const byRun = run ? hist.find(r => String(r.run_id) === run) : null;
  const byYear = year ? hist.find(r => String(r.year) === year) : null;
  return byRun || byYear || [...hist].sort((x, y) => (y.year ?? 0) - (x.year ?? 0))[0] || {};
}

/** Inline SVG: one bar per year (亩均税收, else score) in its grade's colour, grade above it; or,
 * when the role sees no figures, the grade of each year on a ladder (best on top). */
function historyChart(hist) {
  const rows = hist.filter(r => has(r.year)).sort((a, b) => a.year - b.year);
  if (!rows.length) return null;
  const metric = rows.some(r => has(r.tax_per_mu)) ? 'tax_per_mu' : rows.some(r => has(r.score)) ? 'score' : null;
  const W = 520, H = 200, L = 48, R = 12, T = 22, B = 28;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('width', '100%');
  svg.style.maxWidth = '620px';
  svg.style.display = 'block';
  svg.setAttribute('role', 'img');
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  const step = (W - L - R) / rows.length;
  add('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#999' });
  if (metric) {
    const max = Math.max(...rows.map(r => r[metric] ?? 0), 1e-9) * 1.15;
    const y = (v) => H - B - (v / max) * (H - T - B);
    for (const t of [0, 0.5, 1]) {
      add('line', { x1: L, y1: y(max * t / 1.15), x2: W - R, y2: y(max * t / 1.15), stroke: '#eee' });
      add('text', { x: L - 4, y: y(max * t / 1.15) + 4, 'text-anchor': 'end' }, num(max * t / 1.15, 1));
    }
    add('text', { x: 4, y: 12 }, metric === 'tax_per_mu' ? '亩均税收（万元/亩）' : '综合得分');
    rows.forEach((r, i) => {
      const x = L + i * step + step * 0.2;
      const v = r[metric];
      if (has(v)) {
        add('rect', { x, y: y(v), width: step * 0.6, height: Math.max(0, H - B - y(v)), fill: gradeHex(r.grade) }, undefined)
          .setAttribute('data-year', r.year);
        add('text', { x: x + step * 0.3, y: y(v) - 4, 'text-anchor': 'middle' }, `${r.grade ?? '—'} · ${num(v, 1)}`);
      }
      add('text', { x: x + step * 0.3, y: H - B + 16, 'text-anchor': 'middle' }, `${r.year}`);
    });
  } else {
    const grades = classification.classes.map(c => c.grade);
    const yOf = (g) => T + (grades.indexOf(g) + 0.5) * ((H - T - B) / Math.max(grades.length, 1));
    grades.forEach(g => add('text', { x: L - 8, y: yOf(g) + 4, 'text-anchor': 'end' }, g));
    add('text', { x: 4, y: 12 }, '等级');
    let prev = null;
    rows.forEach((r, i) => {
      const x = L + i * step + step / 2;
      add('text', { x, y: H - B + 16, 'text-anchor': 'middle' }, `${r.year}`);
      if (!grades.includes(r.grade)) return;
      const yy = yOf(r.grade);
      if (prev) add('line', { x1: prev[0], y1: prev[1], x2: x, y2: yy, stroke: '#888', 'stroke-width': 1.5 });
      add('circle', { cx: x, cy: yy, r: 8, fill: gradeHex(r.grade), 'data-year': r.year });
      prev = [x, yy];
    });
  }
  return svg;
}

function scoreBreakdown(rating) {
  const ex = rating?.explanation && typeof rating.explanation === 'object' ? rating.explanation : {};
  const box = el('div');
  const text = pick(rating || {}, 'explanation_text') ?? pick(ex, 'text', 'explanation_text');
  if (has(text)) box.append(el('p', { style: 'white-space: pre-line' }, text));
  const items = [ex.indicators, ex.items, ex.parts, ex.breakdown].find(Array.isArray);
  if (items?.length) {
    const g = gridTable(items, ['title', 'indicator', 'name', 'value', 'unit', 'baseline', 'weight', 'coefficient',
      'points', 'missing_rule'], true);
    if (g) box.append(g);
  }
  for (const [k, title] of [['bonus', '加分项'], ['penalty', '减分项']]) {
    if (Array.isArray(ex[k]) && ex[k].length) box.append(el('h3', {}, title), gridTable(ex[k]) || '');
  }
  const kv = kvTable(Object.fromEntries(['total', 'rank', 'rank_n', 'band', 'group', 'list'].map(k => [k, ex[k]])));
  if (kv) box.append(kv);
  if (has(rating?.adjustments)) box.append(el('h3', {}, '调档'), generic(rating.adjustments) || '');
  return box.childNodes.length ? box : null;
}

async function main() {
  if (!kind) { $('loading').textContent = '地址有误'; return; }
  $('back').href = `/map${keyQuery({ run, focus: code })}`;
  const path = kind === 'parcel' ? `/parcels/${encodeURIComponent(code)}` : `/enterprises/${encodeURIComponent(code)}`;
  let a;
  try {
    const [archive, cfg] = await Promise.all([
      getJSON(path, { run, year }),
      getJSON('/map/config', { run, year }).catch(() => null),
    ]);
    a = archive;
    if (cfg) classification = cfg.classification;
  } catch (e) {
    $('loading').textContent = `无法读取档案：${e.message}`;
    $('loading').className = 'error';
    document.body.dataset.archive = 'error';
    return;
  }
  const main = $('content');
  main.replaceChildren();
  const subject = a[kind] && typeof a[kind] === 'object' ? { ...a, ...a[kind] } : { ...a, ...(a.properties || {}) };
  const hist = historyList(a);
  const cur = currentRating(a, hist);

  if (kind === 'parcel') {
    const pc = pick(subject, 'parcel_code') || code;
    document.title = `一地一档 · ${pc}`;
    $('title').textContent = `一地一档 · 宗地 ${pc}`;
    $('subtitle').textContent = [subject.identity_code, subject.township].filter(has).join(' · ');
  } else {
    const name = pick(subject, 'name');
    document.title = `一企一档 · ${name || code}`;
    $('title').textContent = `一企一档 · ${name || code}`;
    $('subtitle').textContent = [name ? subject.uscc || code : '', subject.township].filter(has).join(' · ');
  }
  document.body.dataset.code = code;
  // 体检表 (one A4 page, app/checkup.py): fetched with the key, opened as a PDF or a printable page
  const base = `/${kind === 'parcel' ? 'parcels' : 'enterprises'}/${encodeURIComponent(code)}/checkup`;
  const openCheckup = (ext) => async (e) => {
    e.preventDefault();
    const headers = {};
    if (apiKey()) headers['X-API-Key'] = apiKey();
    const res = await fetch(`${base}.${ext}${keyQuery({ year: cur?.year })}`, { headers });
    if (!res.ok) { e.target.textContent = `体检表不可用（HTTP ${res.status}）`; return; }
    window.open(URL.createObjectURL(await res.blob()), '_blank');
  };
  $('subtitle').append(' · ', el('a', { href: `${base}.pdf`, id: 'checkup-pdf', onclick: openCheckup('pdf') }, '体检表 PDF'),
                       ' · ', el('a', { href: `${base}.html`, id: 'checkup-html', onclick: openCheckup('html') }, '打印版'));

  const basic = kvTable(subject, STRUCTURAL);
  if (basic) main.append(card(kind === 'parcel' ? '宗地信息' : '企业信息', basic));

  const curKv = kvTable(cur, new Set(['explanation', 'explanation_text', 'indicators', 'adjustments', 'warnings']));
  const curCard = card(`当前评价${has(cur.year) ? `（${cur.year} 年）` : ''}`, curKv || el('p', { class: 'muted' }, '该年度没有评价结果'));
  const warns = [...new Set([...(Array.isArray(a.warnings) ? a.warnings : []),
                              ...(Array.isArray(cur.warnings) ? cur.warnings : [])].map(w => show('warnings', [w])))].filter(has);
  if (warns.length) curCard.append(el('h3', { class: 'warn' }, '预警与提示'), el('ul', { class: 'warnings' }, warns.map(w => el('li', { class: 'warn' }, w))));
  main.append(curCard);

  const chart = historyChart(hist);
  if (chart || hist.length) {
    const c = card('历年等级', ...(chart ? [chart] : []));
    const g = gridTable(hist, ['year', 'grade', 'colour', 'score', 'rank', 'percentile', 'tax_per_mu', 'list_name',
      'industry_group', 'idle', 'low_yield_years', 'consecutive_d_years', 'land_area_mu', 'run_id', 'run_status'], true);
    if (g) c.append(g);
    c.classList.add('wide');
    main.append(c);
  }

  const sb = scoreBreakdown(cur);
  if (sb) { const c = card('评分构成', sb); c.classList.add('wide'); main.append(c); }
  if (cur.indicators && typeof cur.indicators === 'object') {
    // indicator keys → the scheme's titles and units, from the explanation when it has them
    const named = {};
    for (const it of (Array.isArray(cur.explanation?.indicators) ? cur.explanation.indicators : [])) {
      if (has(it.key)) named[it.key] = `${it.title || it.key}${has(it.unit) ? `(${it.unit})` : ''}`;
    }
    const t = el('table', { class: 'kv' });
    for (const [k, v] of Object.entries(cur.indicators)) {
      if (has(v)) t.append(el('tr', { dataset: { field: k } }, el('th', {}, named[k] || label(k)), el('td', {}, show(k, v))));
    }
    if (t.rows.length) main.append(card('评价指标', t));
  }

  const listKeys = kind === 'parcel'
    ? [['enterprises', '使用企业'], ['occupants', '使用企业'], ['links', '地企对应'], ['sublots', '分割地块'], ['metrics', '分摊指标']]
    : [['parcels', '使用土地'], ['land', '使用土地'], ['links', '地企对应'], ['metrics', '指标数据']];
  for (const [k, title] of listKeys) {
    const v = a[k] ?? a[kind]?.[k];
    if (Array.isArray(v) && v.length) {
      const cols = k === 'metrics' ? [] : ['uscc', 'name', 'identity_code', 'parcel_code', 'kind', 'role', 'tenure',
        'share', 'attributed_area_mu', 'parcel_area_mu', 'grade', 'colour', 'township', 'method', 'confidence'];
      const g = gridTable(v.map(r => (r && typeof r === 'object' ? flatten(r) : { value: r })), cols, k !== 'metrics');
      if (g) { const c = card(title, g); c.classList.add('wide'); main.append(c); }
    }
  }
  if (a.parent && typeof a.parent === 'object') {
    const kv = kvTable(a.parent);
    if (kv) main.append(card('关联的登记宗地', kv));
  }
  if (Array.isArray(a.attached) && a.attached.length) {
    const g = gridTable(a.attached.map(flatten), ['identity_code', 'kind', 'area_mu']);
    if (g) main.append(card('关联事实用地', g));
  }
  if (kind === 'enterprise' && a.land && typeof a.land === 'object') {
    const kv = kvTable(a.land);
    if (kv) main.append(card('用地汇总', kv));
  }
  if (a.electricity && ['surcharge_yuan', 'refund_yuan'].some(k => has(a.electricity[k]))) {
    main.append(card('差别电价', kvTable(a.electricity)));
  }
  if (has(a.metrics_unit)) {
    const m = [...main.querySelectorAll('section.card h2')].find(h => h.textContent.includes('指标'));
    m?.parentElement.append(el('p', { class: 'muted' }, `单位：${a.metrics_unit}`));
  }
  const h = a.history && !Array.isArray(a.history) ? a.history : null;
  if (h) {
    const c = card('档案记录');
    const kv = kvTable({ updated_at: h.updated_at, ...(h.import || {}) });
    if (kv) c.append(kv);
    if (Array.isArray(h.corrections) && h.corrections.length) c.append(el('h3', {}, '人工纠偏'), gridTable(h.corrections) || '');
    if (Array.isArray(h.audit) && h.audit.length) {
      c.append(el('h3', {}, '操作记录'), gridTable(h.audit.slice(0, 20).map(r => ({ at: r.at, actor: r.actor, action: WORKFLOW_ACTIONS[r.action] || r.action }))) || '');
    }
    // the yearly cycle (issue 15): propose a 纠偏 or record an appeal for this land / enterprise
    const q = kind === 'parcel' ? `parcel=${encodeURIComponent(code)}` : `uscc=${encodeURIComponent(code)}`;
    c.append(el('p', {}, el('a', { href: `/workflow?${q}#corrections`, id: 'propose-link' }, '提出纠偏或申诉（需登录）')));
    if (c.childNodes.length > 1) { c.classList.add('wide'); main.append(c); }
  }
  document.body.dataset.archive = 'ready';
}

/** Audit actions of the yearly cycle (app/api/workflow.py), as the archive shows them. */
const WORKFLOW_ACTIONS = {
  'correction.proposed': '提出纠偏', 'correction.accepted': '采纳纠偏', 'correction.rejected': '不采纳纠偏',
  'appeal.submitted': '提交申诉', 'appeal.under_review': '申诉审核中', 'appeal.accepted': '采纳申诉',
  'appeal.rejected': '不采纳申诉', publish: '发布评价', import: '导入数据',
};

/** One level of nesting flattened: {enterprise: {name}} → {name}. */
function flatten(r) {
  const out = {};
  for (const [k, v] of Object.entries(r)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) if (!(k2 in out) && isScalar(v2)) out[k2] = v2;
    } else out[k] = v;
  }
  return out;
}

main();
