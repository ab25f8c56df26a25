// 年度评价工作台: upload → validate (progress) → confirm import → match → evaluate → review → publish;
// 纠偏 proposals, appeals, saved groups. Every request sends the session's CSRF token (workflow-common.js).
(async () => {
  const $ = (id) => document.getElementById(id);
  const { esc, table } = mj;
  const me = await mj.session();
  if (!me.signed_in) { location.replace(`/login?next=${encodeURIComponent(location.pathname + location.search)}`); return; }
  $('who').textContent = `${me.username}（${me.account_role_zh}${me.township ? '·' + me.township : '·全县'}）`;
  const analyst = ['analyst', 'admin'].includes(me.role);
  $('admin-link').hidden = me.role !== 'admin';
  document.querySelectorAll('[data-role="analyst"]').forEach((el) => { el.hidden = !analyst; });
  if (!me.may_propose) { $('corrections').hidden = true; $('appeals').hidden = true; }
  $('logout').onclick = async () => { await mj.post('/auth/logout'); location.replace('/login'); };
  window.mujunWorkflow = { state: {} };
  const state = window.mujunWorkflow.state;

  // -- jobs: progress that survives a reload (the job id is in the URL and polled) --------------
  const params = new URLSearchParams(location.search);
  async function watch(jobId) {
    params.set('job', jobId);
    history.replaceState(null, '', `${location.pathname}?${params}`);
    $('job').hidden = false;
    for (;;) {
      const j = await mj.get(`/workflow/jobs/${jobId}`);
      state.job = j;
      $('job-title').textContent = `${j.kind_zh}任务 #${j.id}`;
      $('job-status').textContent = j.status_zh;
      $('job-stage').textContent = j.stage || '';
      $('job-rows').textContent = j.rows_read;
      $('job-rejected').textContent = j.rows_rejected;
      const pct = j.status === 'done' ? 100 : j.rows_total ? Math.min(99, 100 * j.rows_read / j.rows_total) : 5;
      $('job-bar').style.width = `${pct}%`;
      $('job-error').textContent = j.error || '';
      document.body.dataset.job = `${j.kind}:${j.status}`;
      if (!['queued', 'running'].includes(j.status)) { showReport(j); return j; }
      await new Promise((r) => setTimeout(r, 400));
    }
  }
  function showReport(j) {
    const res = j.result || {};
    let html = '';
    if (j.kind === 'validate' && j.status === 'done') {
      const cmap = [];
      for (const [file, m] of Object.entries(res.column_map || {})) {
        const cols = (m && m.columns) || m || {};
        for (const [src, dst] of Object.entries(cols)) cmap.push({ file, src, dst: typeof dst === 'object' ? JSON.stringify(dst) : dst });
      }
      html += `<h3>列对应</h3><div class="scroll" id="column-map">${table(cmap, [['file', '文件'], ['src', '原列名'], ['dst', '识别为']])}</div>`;
      html += `<h3 id="rejects-title">拒收行（错误 ${res.errors}，警告 ${res.warnings}）</h3>`;
      html += `<div id="rejects" class="scroll">${table(res.rejects, [['file', '文件'], ['row', '行'], ['field', '字段'], ['value', '值'],
        ['reason', '原因'], [(r) => (r.severity === 'error' ? '拒收' : '警告'), '类别']])}</div>`;
      $('confirm-box').hidden = false;
    } else {
      $('confirm-box').hidden = true;
    }
    if (j.kind === 'import' && j.status === 'done') {
      const rows = Object.entries(res.counts || {}).filter(([k]) => k !== 'rejects')
        .map(([t, c]) => ({ t, ...c }));
      html += `<p class="ok" id="import-done">导入完成（批次 ${res.batch_id}）</p>${table(rows, [['t', '表'], ['inserted', '新增'], ['updated', '更新'], ['unchanged', '未变']])}`;
    }
    if (j.kind === 'evaluate' && j.status === 'done') { html += `<p class="ok">已生成评价草稿 #${res.run_id}</p>`; loadRuns(); }
    if (j.kind === 'match' && j.status === 'done') html += `<p class="ok" id="match-done">匹配完成：${res.links} 条用地关系</p>`;
    $('job-report').innerHTML = html;
  }
  $('upload-btn').onclick = async () => {
    const files = $('upload-files').files;
    if (!files.length) { $('job-error').textContent = '请先选择文件'; return; }
    const fd = new FormData();
    for (const f of files) fd.append('files', f, f.name);
    $('job-report').innerHTML = '';
    try { const j = await mj.post('/workflow/uploads', fd); await watch(j.id); } catch (e) { $('job-error').textContent = e.message; $('job').hidden = false; }
  };
  $('confirm-btn').onclick = async () => {
    const body = { allow_retire: $('confirm-retire').checked };
    if ($('confirm-partial').checked) body.partial = true;
    try { const j = await mj.post(`/workflow/jobs/${state.job.id}/confirm`, body); await watch(j.id); } catch (e) { $('job-error').textContent = e.message; }
  };
  $('match-btn').onclick = async () => { const j = await mj.post('/workflow/match'); await watch(j.id); };
  $('eval-btn').onclick = async () => {
    try { const j = await mj.post('/workflow/evaluate', { year: Number($('eval-year').value) }); await watch(j.id); }
    catch (e) { $('run-message').textContent = e.message; }
  };
  if (analyst && params.get('job')) watch(params.get('job')).catch(() => {});

  // -- review and publish ---------------------------------------------------------------------
  async function loadRuns() {
    const { runs } = await mj.get('/workflow/runs');
    const st = { draft: '草稿', published: '已发布', superseded: '已替代' };
    $('runs').innerHTML = table(runs, [['id', '编号'], ['year', '年度'], [(r) => st[r.status] || r.status, '状态'],
      ['scheme_name', '方案'], [(r) => (r.status === 'draft' && analyst ? `<button class="diff-btn" data-run="${r.id}">查看差异</button>` : ''), '']]);
    document.querySelectorAll('.diff-btn').forEach((b) => { b.onclick = () => showDiff(Number(b.dataset.run)); });
    document.body.dataset.runs = runs.map((r) => `${r.id}:${r.status}`).join(',');
  }
  async function showDiff(runId) {
    const d = await mj.get(`/workflow/runs/${runId}/diff`);
    state.diff = d;
    $('diff').innerHTML = `<h3>评价 #${d.run_id}（${d.year} 年）与已发布评价 ${d.base_run_id ? '#' + d.base_run_id + '（' + d.base_year + ' 年）' : '（无）'} 的差异</h3>
      <p id="diff-summary">等级变化 <b>${d.grade_changes}</b> 家，新增 D 类 <b class="grade-D">${d.new_d}</b> 家，新增低效用地 <b>${d.new_low_yield}</b> 宗</p>
      ${table(d.changes.slice(0, 200), [['uscc', '统一社会信用代码'], ['name', '企业名称'], ['township', '镇街'], ['old_grade', '原等级'],
        [(r) => `<span class="grade-${esc(r.new_grade)}">${esc(r.new_grade)}</span>`, '新等级']])}
      <button id="publish-btn">发布此评价</button> <span id="publish-message"></span>`;
    $('publish-btn').onclick = async () => {
      try { await mj.post(`/workflow/runs/${runId}/publish`); $('publish-message').textContent = '已发布'; $('publish-message').className = 'ok'; loadRuns(); }
      catch (e) { $('publish-message').textContent = e.message; $('publish-message').className = 'message'; }
    };
  }
  loadRuns();

  // attachments (photos, contracts) of a proposal or an appeal
  const attach = async (kind, id, input) => {
    if (!input.files.length) return;
    const fd = new FormData();
    fd.append('file', input.files[0], input.files[0].name);
    await mj.post(`/workflow/${kind}/${id}/attachments`, fd);
    input.value = '';
  };
  const files = (kind) => (r) => (r.attachments || []).map((n) => `<a href="/workflow/${kind}/${r.id}/attachments/${encodeURIComponent(n)}">${esc(n)}</a>`).join(' ');

  // -- 纠偏 ---------------------------------------------------------------------------------
  if (params.get('parcel')) $('c-parcel').value = params.get('parcel');
  if (params.get('uscc')) { $('c-uscc').value = params.get('uscc'); $('a-uscc').value = params.get('uscc'); }
  async function loadCorrections() {
    if (!me.may_propose) return;
    const { proposals } = await mj.get('/workflow/corrections');
    const st = { proposed: '待审核', accepted: '已采纳', rejected: '未采纳' };
    $('c-list').innerHTML = table(proposals, [['id', '编号'], ['uscc', '企业'], ['parcel_code', '宗地'], ['township', '镇街'],
      [(r) => (r.action === 'add' ? '在此宗地上' : '不在此宗地上'), '意见'], ['share', '份额'], ['reason', '理由'], ['proposed_by', '提出人'],
      [(r) => st[r.status], '状态'], ['answer', '答复'], [files('corrections'), '附件'],
      [(r) => (r.status === 'proposed' && analyst ? `<button class="c-accept" data-id="${r.id}">采纳</button><button class="c-reject" data-id="${r.id}">不采纳</button>` : ''), '']]);
    document.querySelectorAll('.c-accept,.c-reject').forEach((b) => {
      b.onclick = async () => {
        await mj.post(`/workflow/corrections/${b.dataset.id}/decide`, { accept: b.classList.contains('c-accept'), answer: b.classList.contains('c-accept') ? '经核实采纳' : '经核实不采纳' });
        loadCorrections();
      };
    });
  }
  $('correction-form').onsubmit = async (ev) => {
    ev.preventDefault();
    const body = { uscc: $('c-uscc').value.trim(), parcel_code: $('c-parcel').value.trim(), action: $('c-action').value, reason: $('c-reason').value };
    if ($('c-share').value) body.share = Number($('c-share').value);
    try { const r = await mj.post('/workflow/corrections', body); await attach('corrections', r.id, $('c-file')); $('c-message').textContent = `已提交纠偏申请 #${r.id}`; $('c-message').className = 'ok'; loadCorrections(); }
    catch (e) { $('c-message').textContent = e.message; $('c-message').className = 'message'; }
  };
  loadCorrections();

  // -- appeals --------------------------------------------------------------------------------
  const NEXT = { submitted: [['under_review', '开始审核']], under_review: [['accepted', '采纳'], ['rejected', '不采纳']] };
  async function loadAppeals() {
    if (!me.may_propose) return;
    const { appeals } = await mj.get('/workflow/appeals');
    $('a-list').innerHTML = table(appeals, [['id', '编号'], ['run_id', '评价'], ['uscc', '企业'], ['reason', '理由'], ['status_zh', '状态'], ['answer', '答复'], [files('appeals'), '附件'],
      [(r) => (analyst ? (NEXT[r.status] || []).map(([s, t]) => `<button class="a-state" data-id="${r.id}" data-s="${s}">${t}</button>`).join('') : ''), '']]);
    document.querySelectorAll('.a-state').forEach((b) => {
      b.onclick = async () => {
        const body = { status: b.dataset.s };
        if (b.dataset.s !== 'under_review') body.answer = prompt('答复', b.dataset.s === 'accepted' ? '经核实，采纳申诉' : '经核实，维持原等级') || '';
        try { await mj.post(`/workflow/appeals/${b.dataset.id}/state`, body); } catch (e) { $('a-message').textContent = e.message; }
        loadAppeals();
      };
    });
  }
  $('appeal-form').onsubmit = async (ev) => {
    ev.preventDefault();
    try { const r = await mj.post('/workflow/appeals', { run_id: Number($('a-run').value), uscc: $('a-uscc').value.trim(), reason: $('a-reason').value });
      await attach('appeals', r.id, $('a-file'));
      $('a-message').textContent = `已登记申诉 #${r.id}`; $('a-message').className = 'ok'; loadAppeals(); }
    catch (e) { $('a-message').textContent = e.message; $('a-message').className = 'message'; }
  };
  loadAppeals();

  // -- groups ---------------------------------------------------------------------------------
  async function loadGroups() {
    const { groups } = await mj.get('/workflow/groups');
    $('g-list').innerHTML = table(groups, [['id', '编号'], ['name', '名称'], [(r) => (r.kind === 'parcels' ? '宗地组' : '企业组'), '类型'], ['size', '成员数'],
      [(r) => (r.shared ? '全县共享' : '仅自己'), '共享'], ['created_by', '创建人'], [(r) => `<button class="g-show" data-id="${r.id}">合计</button>`, '']]);
    document.querySelectorAll('.g-show').forEach((b) => { b.onclick = () => showGroup(b.dataset.id); });
  }
  async function showGroup(id) {
    const g = await mj.get(`/workflow/groups/${id}`);
    state.group = g;
    const grades = Object.entries(g.grades).map(([k, v]) => `${k}：${v.count}（${(100 * v.share).toFixed(1)}%）`).join('，') || '（无评价）';
    $('g-totals').innerHTML = `<h3>${esc(g.name)}（${g.year ?? ''} 年）</h3><p id="g-summary">成员 <b>${g.count}</b>，用地 <b>${g.area_mu.toFixed(2)}</b> 亩${
      g.total_tax_wan !== undefined ? `，税收 <b>${g.total_tax_wan.toFixed(2)}</b> 万元` : ''}；等级：${grades}</p>
      <h4>历年对比</h4>${table(g.by_year, [['year', '年度'], [(y) => esc(Object.entries(y.grades).map(([k, v]) => `${k} ${v}`).join('，')), '等级分布'],
        ...(g.total_tax_wan !== undefined ? [['total_tax_wan', '税收（万元）'], ['tax_per_mu', '亩均税收（万元/亩）']] : [])])}`;
  }
  $('group-form').onsubmit = async (ev) => {
    ev.preventDefault();
    const body = { name: $('g-name').value, kind: $('g-kind').value, shared: $('g-shared').checked };
    const members = $('g-members').value.split(/\s+/).filter(Boolean);
    if (members.length) body.members = members;
    else body.filter = { township: $('g-township').value || null, grade: $('g-grade').value || null, year: $('g-year').value ? Number($('g-year').value) : null };
    try { const r = await mj.post('/workflow/groups', body); $('g-message').textContent = `已保存分组 #${r.id}（${r.members} 个成员）`; $('g-message').className = 'ok'; await loadGroups(); await showGroup(r.id); }
    catch (e) { $('g-message').textContent = e.message; $('g-message').className = 'message'; }
  };
  loadGroups();
  document.body.dataset.ready = '1';
})();
