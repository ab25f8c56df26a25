// Shared by the map and the archive pages: the API key, JSON requests, formatting, small DOM helpers.
// Everything the server did not send (a role may not see it) is simply not shown: see has().

export const KEY_STORE = 'mujun.apiKey';

/** The caller's API key: ?api_key= in the page URL wins, else the one saved in this browser. */
export function apiKey() {
  const fromUrl = new URL(location.href).searchParams.get('api_key');
  if (fromUrl) return fromUrl;
  try { return localStorage.getItem(KEY_STORE) || ''; } catch { return ''; }
}

export function saveKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE);
  } catch { /* storage disabled: the key lives in the URL only */ }
}

/** Query string that carries the key from the page URL to pages we link to (not the stored one). */
export function keyQuery(extra = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(extra)) if (has(v)) params.set(k, v);
  const fromUrl = new URL(location.href).searchParams.get('api_key');
  if (fromUrl) params.set('api_key', fromUrl);
  const s = params.toString();
  return s ? `?${s}` : '';
}

export class ApiError extends Error {
  constructor(status, description) {
    super(description || `HTTP ${status}`);
    this.status = status;
  }
}

export function apiUrl(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) { if (v.length) url.searchParams.set(k, v.join(',')); }
    else if (has(v) && v !== false) url.searchParams.set(k, String(v));
  }
  return url;
}

/** GET JSON with the key in the X-API-Key header; errors carry the API's description. */
export async function getJSON(path, params = {}, { signal } = {}) {
  const headers = { Accept: 'application/json' };
  const key = apiKey();
  if (key) headers['X-API-Key'] = key;
  const res = await fetch(apiUrl(path, params), { headers, signal });
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try {
      const body = await res.json();
      msg = body.description || (typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail)) || msg;
    } catch { /* not JSON */ }
    throw new ApiError(res.status, msg);
  }
  return res.json();
}

/** A value worth showing: not missing, not NaN, not an empty string or list. */
export function has(v) {
  if (v === null || v === undefined) return false;
  if (typeof v === 'number') return Number.isFinite(v);
  if (typeof v === 'string') return v.trim() !== '' && v !== 'nan' && v !== 'None' && v !== 'null';
  if (Array.isArray(v)) return v.length > 0;
  return true;
}

/** The first path (dotted) of obj that has a value. */
export function pick(obj, ...paths) {
  for (const p of paths) {
    let v = obj;
    for (const part of p.split('.')) {
      if (v === null || v === undefined) break;
      v = v[part];
    }
    if (has(v)) return v;
  }
  return undefined;
}

export function num(v, digits = 2) {
  if (!has(v) || typeof v !== 'number') return has(v) ? String(v) : '';
  return v.toLocaleString('zh-CN', { minimumFractionDigits: 0, maximumFractionDigits: digits });
}

export function pct(v) {
  return has(v) ? `${(v * 100).toLocaleString('zh-CN', { maximumFractionDigits: 1 })}%` : '';
}

/** el('a', {href: '…', class: 'x'}, 'text', child) — text is always set as text, never as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'style') node.style.cssText = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Chinese labels of the fields the API sends (unknown fields keep their own name). */
export const LABELS = Object.freeze({
  identity_code: '宗地身份码', parcel_code: '宗地代码', kind: '用地类型', parent_identity_code: '关联宗地身份码',
  township: '镇街', land_use: '用途', area_m2: '面积(平方米)', area_mu: '面积(亩)', registered_area_m2: '登记面积(平方米)',
  owner_uscc: '权利人统一社会信用代码', owner_name: '权利人', user_uscc: '使用企业统一社会信用代码',
  uscc: '统一社会信用代码', name: '企业名称', industry_code: '行业代码', industry_group: '行业组', scale: '规模',
  address: '地址', founded: '成立日期', flags: '标记', land_class: '用地类别', land_area_mu: '用地面积(亩)',
  parcel_count: '宗地数', owned_area_m2: '自有面积(平方米)', leased_in_area_m2: '租入面积(平方米)',
  year: '年度', run_id: '评价批次', status: '状态', scheme_name: '评价办法', scheme_version: '版本',
  grade: '等级', band_grade: '排名等级', colour: '预警颜色', score: '综合得分', rank: '排名', percentile: '排名百分位',
  list_name: '评价名单', evaluated: '参评', excluded_reason: '不参评原因', idle: '闲置', low_yield_years: '连续低效年数',
  consecutive_d_years: '连续D档年数', electricity_surcharge_yuan: '差别电价(元)', electricity_refund_yuan: '电价退还(元)',
  tax_per_mu: '亩均税收(万元/亩)', value_added_per_mu: '亩均增加值(万元/亩)', tax_paid: '实缴税金(万元)',
  tax_refund: '税收还原(万元)', value_added: '工业增加值(万元)', revenue: '营业收入(万元)', output_value: '工业总产值(万元)',
  energy_tce: '综合能耗(吨标煤)', emission_t: '排放当量(吨)', rd_expense: '研发经费(万元)', employees: '从业人员(人)',
  electricity_kwh: '用电量(千瓦时)', share: '面积占比', role: '关系', method: '匹配方式', confidence: '置信度',
  distance_m: '距离(米)', attributed_area_m2: '分摊面积(平方米)', attributed_area_mu: '分摊面积(亩)',
  occupant_count: '使用企业数', warnings: '预警', adjustments: '调档', explanation: '评分说明', indicators: '指标',
  text: '说明', bonus: '加分', penalty: '减分', weight: '权重', baseline: '基准值', value: '数值', points: '得分',
  enterprises: '使用企业', parcels: '宗地', ratings: '历年评价', history: '历年评价', metrics: '指标数据',
  sublots: '分割地块', links: '地企对应', note: '备注', updated_at: '更新时间',
  enterprise_count: '使用企业数', run_status: '批次状态', grade_year: '等级年度', sublot_area_m2: '分割地块面积(平方米)',
  parcel_area_mu: '宗地面积(亩)', tenure: '权属', coord_sys: '坐标系', surcharge_yuan: '差别电价(元)',
  refund_yuan: '电价退还(元)', explanation_text: '评分说明', total: '总分', title: '指标', parent: '关联宗地',
  attached: '关联事实用地', land: '用地汇总', electricity: '差别电价', at: '时间', actor: '操作人', action: '操作',
  entity: '对象', details: '详情', corrections: '人工纠偏', audit: '操作记录', import: '导入批次', batch_id: '导入批次',
  loaded_at: '导入时间', land_area_m2: '用地面积(平方米)', meter_id: '电表户号', rd_share: '研发经费占营收比(%)',
  va_per_mu: '亩均增加值(万元/亩)', va_per_energy: '单位能耗增加值(万元/吨标煤)', va_per_emission: '单位排放增加值(万元/吨)',
  va_per_employee: '全员劳动生产率(万元/人)', unit: '单位', coefficient: '修正系数', missing_rule: '缺失处理', rank_n: '参评数',
  band: '档次', group: '行业组', list: '名单', subject_id: '对象', capped: '封顶', negative: '倒扣分', created_at: '时间', by: '操作人', reason: '原因', member_count: '宗地数',
});

/** Integer fields shown as they are (a year is 2024, not 2,024). */
const PLAIN = new Set(['year', 'run_id', 'rank', 'grade_year', 'batch_id', 'id', 'parcel_count', 'member_count',
  'enterprise_count', 'occupant_count', 'employees', 'low_yield_years', 'consecutive_d_years']);

export const KIND_LABELS = { registered: '已登记工业宗地', defacto: '独立事实用地', defacto_attached: '关联事实用地' };
export const ROLE_LABELS = { owner_occupier: '自用', landlord: '出租方', tenant: '承租方' };
export const ROLE_NAMES = { public: '公众', viewer: '查看', analyst: '分析', admin: '管理', none: '无权限' };

export function label(key) { return Object.hasOwn(LABELS, key) ? LABELS[key] : key; }

/** A value as text for a table cell (share as %, booleans as 是/否, kinds and roles in Chinese). */
export function show(key, v) {
  if (!has(v)) return '';
  if (typeof v === 'boolean') return v ? '是' : '否';
  if (key === 'share' || key === 'confidence') return typeof v === 'number' ? pct(v) : String(v);
  if (key === 'percentile') return typeof v === 'number' ? `前 ${num(v, 1)}%` : String(v);
  if (key === 'kind') return KIND_LABELS[v] || v;
  if (key === 'role') return ROLE_LABELS[v] || v;
  if (key === 'tenure') return { owned: '自有', leased: '租用' }[v] || v;
  if (key === 'status' || key === 'run_status') return { published: '已发布', draft: '草稿', superseded: '已替代' }[v] || v;
  if (PLAIN.has(key) && typeof v === 'number') return String(v);
  if (typeof v === 'number') return num(v, key.endsWith('_m2') ? 1 : 3);
  if (Array.isArray(v)) return v.map(x => (typeof x === 'object' ? pick(x, 'text', 'rule', 'reason', 'name') ?? JSON.stringify(x) : String(x))).join('；');
  if (typeof v === 'object') return pick(v, 'text') ?? JSON.stringify(v);
  return String(v);
}

/** Standard warning colours by name (预警四色 红橙蓝绿, plus 黄 for five-colour schemes). */
export const WARNING_HEX = { 红: '#e31a1c', 橙: '#ff7f00', 黄: '#ffd92f', 蓝: '#1f78b4', 绿: '#33a02c' };
