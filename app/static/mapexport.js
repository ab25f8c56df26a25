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
