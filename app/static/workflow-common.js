// Shared by the workflow pages: the session (CSRF token) and JSON requests that send it.
window.mj = (() => {
  let csrf = null;
  let me = null;
  async function session() {
    const r = await fetch('/auth/session', { credentials: 'same-origin' });
    me = await r.json();
    csrf = me.csrf_token;
    return me;
  }
  async function request(method, url, body) {
    if (!csrf) await session();
    const opts = { method, credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf } };
    if (body instanceof FormData) opts.body = body;
    else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers['Content-Type'] = 'application/json'; }
    const r = await fetch(url, opts);
    const data = await r.json().catch(() => ({}));
    if (data && data.csrf_token) csrf = data.csrf_token;  // sign-in and sign-out rotate the token
    if (!r.ok) throw new Error(data.description || `${r.status}`);
    return data;
  }
  const get = (url) => request('GET', url);
  const post = (url, body) => request('POST', url, body);
  const next = () => new URLSearchParams(location.search).get('next') || '/workflow';
  const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  function table(rows, cols) {
    if (!rows || !rows.length) return '<p class="empty">（无）</p>';
    return `<table><thead><tr>${cols.map(([, t]) => `<th>${esc(t)}</th>`).join('')}</tr></thead><tbody>${
      rows.map((r) => `<tr>${cols.map(([k]) => `<td>${typeof k === 'function' ? k(r) : esc(r[k])}</td>`).join('')}</tr>`).join('')
    }</tbody></table>`;
  }
  return { session, get, post, next, esc, table, me: () => me };
})();
