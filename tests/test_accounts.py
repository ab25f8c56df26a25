"""Accounts, sessions, CSRF and the workflow endpoints (issue 15), on a real PostGIS.

The synthetic county of ``tests/test_tiles.seed_county``: two townships (东城街道 T1, 西城街道 T2),
published runs for 2023 and 2024 and a 2024 draft that says A everywhere. Users sign in through
``/auth/login`` exactly as the browser does (session cookie + CSRF token).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import accounts, jobs
from app.main import create_app
from app.settings import Settings
from tests.bundle_factory import write_bundle
from tests.conftest import TEMPLATE
from tests.test_tiles import AREA_MU, T1, T2, identity, parcel_code, seed_county, uscc_of

PASSWORD = "correct horse 電池 staple"
USERS = {"ana": ("analyst", None), "off1": ("officer", T1), "view": ("viewer", None), "adm": ("admin", None)}


@pytest.fixture(scope="module")
def county(_template, pg_admin_url, tmp_path_factory):
    name = f"mujun_acc_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    url = str(sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False))
    c = seed_county(url)
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        for user, (role, town) in USERS.items():
            accounts.create_user(conn, user, PASSWORD, role, town)
    c.engine = eng
    c.app = create_app(Settings(data_dir=tmp_path_factory.mktemp("acc"), lock_wait_s=1.0), database_url=url)
    with TestClient(c.app):
        yield c
    eng.dispose()
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def signed_in(county, user: str | None) -> TestClient:
    """A client with a session (signed in as ``user`` unless None); ``.csrf`` holds its token."""
    client = TestClient(county.app)
    r = client.get("/auth/session")
    assert r.status_code == 200 and accounts.SESSION_COOKIE in client.cookies
    client.csrf = r.json()["csrf_token"]
    if user:
        r = client.post("/auth/login", json={"username": user, "password": PASSWORD},
                        headers={"X-CSRF-Token": client.csrf})
        assert r.status_code == 200, r.text
        assert r.json()["signed_in"] and r.json()["username"] == user
        assert r.json()["csrf_token"] != client.csrf  # a fresh token after signing in
        client.csrf = r.json()["csrf_token"]
    return client


def post(client, url, **kw):
    return client.post(url, headers={"X-CSRF-Token": client.csrf}, **kw)


# -- passwords and sessions ----------------------------------------------------------------------
def test_passwords_are_argon2_hashes_and_never_stored_or_logged(county, caplog):
    caplog.set_level(logging.DEBUG)
    client = signed_in(county, "ana")
    bad = post(client, "/auth/login", json={"username": "ana", "password": "wrong " + PASSWORD})
    assert bad.status_code == 401 and "用户名或密码错误" in bad.json()["description"]
    with county.engine.connect() as conn:
        hashes = [h for (h,) in conn.execute(sa.text("SELECT password_hash FROM users"))]
        # every text in the database that could hold it: users, audit log, jobs
        dump = " ".join(str(v) for t in ("users", "audit_log", "jobs")
                        for row in conn.execute(sa.text(f"SELECT * FROM {t}")) for v in row)
    assert len(hashes) == len(USERS) and all(h.startswith("$argon2id$") for h in hashes)
    assert PASSWORD not in dump and "wrong " + PASSWORD not in dump
    assert PASSWORD not in caplog.text


def test_a_signed_in_user_is_a_principal_with_the_key_semantics(county):
    ana, view, off1 = signed_in(county, "ana"), signed_in(county, "view"), signed_in(county, "off1")
    draft = county.runs["2024draft"]
    ids = {r["id"] for r in ana.get("/workflow/runs").json()["runs"]}
    assert draft in ids  # an analyst reviews drafts
    assert draft not in {r["id"] for r in view.get("/workflow/runs").json()["runs"]}
    # the same session works on the existing endpoints: figures for the analyst only
    arch = ana.get(f"/enterprises/{uscc_of(1, 0)}").json()
    arch_v = view.get(f"/enterprises/{uscc_of(1, 0)}").json()
    assert arch["visibility"]["figures"] and not arch_v["visibility"]["figures"]
    assert "300000" in str(arch) and "300000" not in str(arch_v)  # the D enterprise's 差别电价 surcharge
    # the officer of T1 sees no land of T2 in items
    items = off1.get("/collections/parcels/items", params={"limit": 1000}).json()["features"]
    assert items and {f["properties"]["township"] for f in items} == {T1}


def test_without_a_session_or_key_no_draft_no_figure_no_workflow(county):
    anon = TestClient(county.app)
    draft = county.runs["2024draft"]
    assert draft not in {r["id"] for r in anon.get("/workflow/runs").json()["runs"]}
    for url in (f"/workflow/runs/{draft}/diff", "/workflow/jobs", "/workflow/corrections", "/workflow/appeals",
                "/workflow/groups", "/admin/users", "/admin/keys", "/workflow/groups/1"):
        r = anon.get(url)
        assert r.status_code == 401, (url, r.status_code, r.text)
    # a forged or expired cookie is no session
    anon.cookies.set(accounts.SESSION_COOKIE, "eyJ1aWQiOjF9.forged.sig")
    assert anon.get("/workflow/jobs").status_code == 401
    # a viewer (signed in) is not an analyst: 403
    assert signed_in(county, "view").get(f"/workflow/runs/{draft}/diff").status_code == 403


def test_csrf_token_required_on_every_post(county):
    """Every POST of the OpenAPI document, with a signed-in session but without (or with a
    wrong) token: 403 before anything happens."""
    client = signed_in(county, "adm")
    doc = county.app.openapi()
    posts = [p for p, ops in doc["paths"].items() if "post" in ops]
    assert {"/auth/login", "/auth/logout", "/workflow/uploads", "/workflow/corrections", "/admin/keys"} <= set(posts)
    for path in posts:
        url = path.replace("{", "").replace("}", "")
        url = "/".join("1" if seg.endswith("_id") else seg for seg in url.split("/"))
        for headers in ({}, {"X-CSRF-Token": "not-the-token"}):
            r = client.post(url, json={}, headers=headers)
            assert r.status_code == 403 and "CSRF" in r.json()["description"], (path, r.status_code, r.text)
    # the same request with the token passes the guard (and fails only on its body)
    assert post(client, "/admin/keys", json={}).status_code == 400
    # a key-authenticated machine needs no token (no ambient credential)
    r = TestClient(county.app).post("/admin/keys", json={"name": "m", "role": "viewer"},
                                    headers=county.headers("admin"))
    assert r.status_code == 200 and r.json()["key"].startswith("mj_")


def test_admin_page_creates_and_revokes_keys_at_once_and_disables_users(county):
    adm = signed_in(county, "adm")
    r = post(adm, "/admin/keys", json={"name": "qgis", "role": "analyst", "region": T2})
    key = r.json()["key"]
    kid = next(k["id"] for k in adm.get("/admin/keys").json()["keys"] if k["name"] == "qgis")
    machine = TestClient(county.app)
    assert machine.get("/workflow/jobs", headers={"X-API-Key": key}).status_code == 200
    assert post(adm, f"/admin/keys/{kid}/revoke").status_code == 200
    assert machine.get("/workflow/jobs", headers={"X-API-Key": key}).status_code == 401  # the very next request
    # users: create, sign in, disable: refused on the next request
    r = post(adm, "/admin/users", json={"username": "tmp", "password": PASSWORD, "role": "analyst"})
    assert r.status_code == 200
    tmp = signed_in(county, "tmp")
    assert tmp.get("/workflow/jobs").status_code == 200
    assert post(adm, f"/admin/users/{r.json()['id']}/disable").status_code == 200
    assert tmp.get("/workflow/jobs").status_code == 401
    # an officer without a township is refused, in Chinese
    r = post(adm, "/admin/users", json={"username": "o2", "password": PASSWORD, "role": "officer"})
    assert r.status_code == 400 and "镇街" in r.json()["description"]
    # a non-admin cannot
    assert post(signed_in(county, "ana"), "/admin/keys", json={"name": "x", "role": "admin"}).status_code == 403


# -- review, corrections, appeals, groups ---------------------------------------------------------
def test_review_lists_differences_and_the_analyst_publishes(county):
    ana = signed_in(county, "ana")
    draft = county.runs["2024draft"]
    d = ana.get(f"/workflow/runs/{draft}/diff").json()
    # the draft says A everywhere: every enterprise not A in the published 2024 changes grade
    with county.engine.connect() as conn:
        expected = conn.execute(sa.text("SELECT count(*) FROM enterprise_ratings WHERE run_id = :r AND grade <> 'A'"),
                                {"r": county.runs["2024"]}).scalar()
    assert d["base_run_id"] == county.runs["2024"] and d["grade_changes"] == expected > 0
    assert d["new_d"] == 0 and all(c["new_grade"] == "A" for c in d["changes"])
    # a region-limited analyst sees only its township's changes
    t2 = TestClient(county.app).get(f"/workflow/runs/{draft}/diff", headers=county.headers("analyst_t2")).json()
    assert 0 < t2["grade_changes"] < expected and {c["township"] for c in t2["changes"]} == {T2}


def test_officer_proposes_for_its_township_only_and_the_analyst_accepts(county):
    off1, ana = signed_in(county, "off1"), signed_in(county, "ana")
    mine = {"uscc": uscc_of(0, 2), "parcel_code": parcel_code(0, 3), "action": "add", "share": 0.5,
            "reason": "现场核实：该企业实际使用此宗地东侧厂房"}
    theirs = {**mine, "parcel_code": parcel_code(5, 2)}  # T2 land
    r = post(off1, "/workflow/corrections", json=theirs)
    assert r.status_code == 404 and "本镇街没有宗地" in r.json()["description"]
    r = post(off1, "/workflow/corrections", json=mine)
    assert r.status_code == 200, r.text
    pid = r.json()["id"]
    # the officer cannot decide; the T2 analyst does not see T1's proposal
    assert post(off1, f"/workflow/corrections/{pid}/decide", json={"accept": True}).status_code == 403
    t2 = TestClient(county.app)
    assert pid not in {p["id"] for p in t2.get("/workflow/corrections", headers=county.headers("analyst_t2")).json()["proposals"]}
    assert post(ana, f"/workflow/corrections/{pid}/decide", json={"accept": True, "answer": "同意"}).json()["status"] == "accepted"
    assert post(ana, f"/workflow/corrections/{pid}/decide", json={"accept": False}).status_code == 400  # decided once
    with county.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT action, share, \"by\" FROM link_corrections WHERE uscc = :u AND parcel_code = :c"),
                           {"u": mine["uscc"], "c": mine["parcel_code"]}).one()
        audit = conn.execute(sa.text("SELECT actor, action FROM audit_log WHERE entity_id = :e ORDER BY id"),
                             {"e": identity(0, 3)}).all()
    assert row.action == "add" and row.share == 0.5 and "off1" in row.by and "ana" in row.by
    assert [(a.actor, a.action) for a in audit][-2:] == [("off1", "correction.proposed"), ("ana", "correction.accepted")]
    # and the parcel's archive page shows who did it
    hist = str(ana.get(f"/parcels/{identity(0, 3)}").json())
    assert "correction.accepted" in hist and "off1" in hist


def test_an_appeal_goes_through_its_states(county):
    off1, ana = signed_in(county, "off1"), signed_in(county, "ana")
    draft = county.runs["2024draft"]
    assert post(off1, "/workflow/appeals", json={"run_id": county.runs["2024"], "uscc": uscc_of(0, 0),
                                                 "reason": "x"}).status_code == 400  # a published run
    assert post(off1, "/workflow/appeals", json={"run_id": draft, "uscc": uscc_of(5, 0),
                                                 "reason": "x"}).status_code == 404  # T2's enterprise
    r = post(off1, "/workflow/appeals", json={"run_id": draft, "uscc": uscc_of(0, 0), "reason": "2024 年税收漏报一笔"})
    aid = r.json()["id"]
    assert r.json()["status"] == "submitted"
    st = lambda s, a=None: post(ana, f"/workflow/appeals/{aid}/state", json={"status": s, "answer": a})  # noqa: E731
    assert st("accepted", "好").status_code == 400  # not yet under review
    assert st("under_review").json()["status_zh"] == "审核中"
    assert st("accepted").status_code == 400  # an answer is needed
    assert st("accepted", "补录税收后重新评价").json()["status"] == "accepted"
    assert st("rejected", "x").status_code == 400  # final
    a = next(a for a in off1.get("/workflow/appeals").json()["appeals"] if a["id"] == aid)
    assert a["status_zh"] == "已采纳" and a["answer"] == "补录税收后重新评价" and "grade" not in a
    hist = str(ana.get(f"/enterprises/{uscc_of(0, 0)}").json())
    assert "appeal.submitted" in hist and "appeal.accepted" in hist


def test_a_saved_group_shows_its_totals(county):
    ana, off1 = signed_in(county, "ana"), signed_in(county, "off1")
    r = post(ana, "/workflow/groups", json={"name": "东城 D 类宗地", "kind": "parcels",
                                            "filter": {"township": T1, "grade": "D", "year": 2024}, "shared": True})
    assert r.status_code == 200, r.text
    g = ana.get(f"/workflow/groups/{r.json()['id']}", params={"year": 2024}).json()
    d_t1 = [(0, 1), (1, 0), (2, 1), (3, 4)]
    assert g["count"] == len(d_t1) and g["area_mu"] == pytest.approx(len(d_t1) * AREA_MU, abs=0.01)
    assert g["grades"] == {"D": {"count": 4, "share": 1.0}}
    assert g["total_tax_wan"] == pytest.approx(len(d_t1) * 2.0 * AREA_MU, abs=0.01)  # 2 万元/亩 for D
    # over the years (指标对比): the published 2023 and 2024 runs; (3, 4) was C in 2023
    assert [(y["year"], y["grades"]) for y in g["by_year"]] == [(2023, {"C": 1, "D": 3}), (2024, {"D": 4})]
    assert g["by_year"][1]["tax_per_mu"] == pytest.approx(2.0)
    # shared: the T1 officer sees it, without the tax figure
    g1 = off1.get(f"/workflow/groups/{r.json()['id']}", params={"year": 2024}).json()
    assert g1["count"] == 4 and "total_tax_wan" not in g1 and "tax_per_mu" not in str(g1["by_year"])
    # an enterprise group from codes: the officer's T2 codes are dropped (own township only)
    r = post(off1, "/workflow/groups", json={"name": "我的企业", "kind": "enterprises",
                                             "members": [uscc_of(0, 0), uscc_of(5, 0)]})
    g = off1.get(f"/workflow/groups/{r.json()['id']}", params={"year": 2024}).json()
    assert g["members"] == [uscc_of(0, 0)] and g["grades"] == {"C": {"count": 1, "share": 1.0}}
    # not shared: the T2 analyst does not see it
    assert TestClient(county.app).get(f"/workflow/groups/{r.json()['id']}",
                                      headers=county.headers("analyst_t2")).status_code == 404


# -- jobs: two uploads into one county at once -----------------------------------------------------
def test_two_imports_at_once_one_waits_then_is_refused_and_one_import_lands(engine, tmp_path):
    """Two import jobs into one county at the same moment: one holds the county's import lock, the
    other says it waits (stage), and with a short ``lock_wait_s`` is refused with a Chinese message;
    the database holds exactly one import."""
    bundle = write_bundle(tmp_path / "bundle")
    settings = Settings(data_dir=tmp_path / "var", database_url="postgresql://unused", lock_wait_s=0.5)
    a = jobs.create(engine, "import", {"path": str(bundle)}, "t")
    b = jobs.create(engine, "import", {"path": str(bundle)}, "t")
    from app import db

    # `b` arrives while another import holds the county's lock; `a` runs after it is released
    with db.county_lock(engine, "import", wait_s=5):
        jb = jobs.run(engine, b, settings=settings)
    ja = jobs.run(engine, a, settings=settings)
    assert jb["status"] == "refused" and "本县已有一个导入任务在进行" in jb["error"] and "未导入任何数据" in jb["error"]
    assert ja["status"] == "done" and ja["result"]["batch_id"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM import_batches WHERE status = 'loaded'")).scalar() == 1


def test_upload_validates_in_the_background_then_imports_on_confirm(county, tmp_path):
    """Through the endpoints: upload a zip, poll the job (stage, rows, rejects, column mapping),
    confirm, poll the import."""
    import io
    import zipfile

    bundle = write_bundle(tmp_path / "b", enterprises_extra=[{"统一社会信用代码": "BAD", "企业名称": "坏行"}])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in bundle.rglob("*"):
            if p.is_file():
                z.write(p, "bundle/" + str(p.relative_to(bundle)))
    ana = signed_in(county, "ana")
    r = post(ana, "/workflow/uploads", files=[("files", ("bundle.zip", buf.getvalue(), "application/zip"))])
    assert r.status_code == 200, r.text
    job = _wait(ana, r.json()["id"])
    assert job["status"] == "done", (job["error"], job["files"])
    res = job["result"]
    assert res["errors"] >= 1 and job["rows_rejected"] == res["errors"] and job["rows_read"] > 0
    bad = [x for x in res["rejects"] if x["severity"] == "error"]
    assert bad and all(x["file"] and x["reason"] for x in bad)
    assert res["column_map"]
    r = post(ana, f"/workflow/jobs/{job['id']}/confirm")
    refused = _wait(ana, r.json()["id"])  # a complete delivery would retire the county's seeded land
    assert refused["status"] == "refused" and "--partial" in refused["error"]
    r = post(ana, f"/workflow/jobs/{job['id']}/confirm", json={"partial": True})
    imp = _wait(ana, r.json()["id"])
    assert imp["status"] == "done" and imp["result"]["batch_id"], imp["error"]
    with county.engine.connect() as conn:
        actor = conn.execute(sa.text("SELECT actor FROM audit_log WHERE action = 'import' ORDER BY id DESC LIMIT 1")).scalar()
    assert actor == "ana"


def _wait(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = client.get(f"/workflow/jobs/{job_id}").json()
        if j["status"] not in ("queued", "running"):
            return j
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {j}")


# -- the CLI ---------------------------------------------------------------------------------------
def test_mujun_users_create_list_disable_and_import_through_the_job_runner(db_url, tmp_path):
    """``mujun users`` (Chinese output; the password is asked for, never echoed nor stored), and
    ``mujun import`` recorded as a job of the shared runner."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = os.environ | {"DATABASE_URL": db_url, "MUJUN_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}

    def mujun(*args, input=None):
        return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=REPO, input=input,
                              capture_output=True, text=True, timeout=300)

    made = mujun("users", "create", "zhang", "--role", "analyst", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert made.returncode == 0, made.stderr
    assert "已创建用户 zhang" in made.stdout and PASSWORD not in made.stdout + made.stderr
    short = mujun("users", "create", "li", "--role", "analyst", input="short\nshort\n")
    assert short.returncode == 1 and "密码至少 8 个字符" in short.stdout + short.stderr
    officer = mujun("users", "create", "wang", "--role", "officer", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert officer.returncode == 1 and "镇街专管员必须指定镇街" in officer.stdout + officer.stderr
    listed = mujun("users", "list")
    assert "zhang" in listed.stdout and "分析" in listed.stdout and "有效" in listed.stdout
    off = mujun("users", "disable", "zhang")
    assert off.returncode == 0 and "已停用" in off.stdout
    assert "已停用" in mujun("users", "list").stdout
    assert mujun("users", "disable", "zhang").returncode == 1
    eng = sa.create_engine(db_url)
    with eng.connect() as conn:
        h = conn.execute(sa.text("SELECT password_hash FROM users WHERE username = 'zhang'")).scalar()
        assert h.startswith("$argon2id$") and PASSWORD not in h
    bundle = write_bundle(tmp_path / "bundle")
    imp = mujun("import", str(bundle))
    assert imp.returncode == 0, imp.stdout + imp.stderr
    with eng.connect() as conn:
        job = conn.execute(sa.text("SELECT kind, status, created_by, rows_read FROM jobs")).one()
    assert tuple(job[:3]) == ("import", "done", "cli") and job.rows_read > 0
    eng.dispose()


def test_a_township_officer_session_sees_exactly_what_a_township_viewer_key_sees(county):
    """One auth rule: the officer of T1 (session) and a viewer key limited to T1 get the same
    answers on items, exports, clusters, stats, search, archives and tiles — and nothing of T2."""
    off1 = signed_in(county, "off1")
    key = TestClient(county.app)
    urls = ["/collections/parcels/items?limit=1000", "/collections/enterprises/items?limit=1000",
            "/collections/parcels/export.geojson", "/clusters?year=2024", "/stats/grades?bbox=120,30,121,31",
            "/search?q=企业", f"/parcels/{identity(0, 0)}", f"/parcels/{identity(5, 0)}",
            f"/enterprises/{uscc_of(5, 0)}", "/map/config",
            "/tiles/parcels/14/13659/6732.pbf"]
    for url in urls:
        a, b = off1.get(url), key.get(url, headers=county.headers("viewer_t1"))
        assert a.status_code == b.status_code, (url, a.status_code, b.status_code)
        if url.startswith("/map/config"):
            continue  # names the caller
        assert a.content == b.content, url
        assert T2 not in a.text, url


def test_unsafe_or_damaged_zips_are_refused_with_a_reason(county):
    import io
    import zipfile

    ana = signed_in(county, "ana")

    def zipped(name: str, data: bytes = b"x") -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(name, data)
        return buf.getvalue()

    up = lambda content: post(ana, "/workflow/uploads", files=[("files", ("b.zip", content, "application/zip"))])  # noqa: E731
    r = up(zipped("../../evil.csv"))
    assert r.status_code == 400 and "不安全" in r.json()["description"]
    r = up(zipped("/etc/evil.csv"))
    assert r.status_code == 400 and "不安全" in r.json()["description"]
    small = create_app(Settings(data_dir=county.app.state.settings.data_dir, upload_max_mb=1),
                       database_url=str(county.engine.url.render_as_string(hide_password=False)))
    with TestClient(small) as c:
        c.csrf = c.get("/auth/session").json()["csrf_token"]
        c.csrf = post(c, "/auth/login", json={"username": "ana", "password": PASSWORD}).json()["csrf_token"]
        r = post(c, "/workflow/uploads", files=[("files", ("b.zip", zipped("big.csv", b"0" * (3 << 20)), "application/zip"))])
        assert r.status_code == 400 and "解压后超过 1 MB" in r.json()["description"]
    damaged = zipped("a.csv", b"a,b\n" * 1000)
    r = up(damaged[:30] + b"\0" * 10 + damaged[40:])
    assert r.status_code in (200, 400) and r.status_code != 500
    with county.engine.connect() as conn:  # nothing was written outside the upload directory
        assert conn.execute(sa.text("SELECT count(*) FROM jobs WHERE params->>'path' LIKE '%evil%'")).scalar() == 0


def test_two_uploads_confirmed_at_once_into_one_county(county, tmp_path):
    """Two analysts confirm imports at the same moment through the web: the county's lock lets one
    run; the other waits (its stage says so) and — with ``lock_wait_s`` = 1 s here — is refused with
    a clear message, or runs after the first. Either way exactly one consistent import per bundle."""
    import io
    import zipfile

    bundle = write_bundle(tmp_path / "b2")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in bundle.rglob("*"):
            if p.is_file():
                z.write(p, str(p.relative_to(bundle)))
    ana = signed_in(county, "ana")
    validated = [_wait(ana, post(ana, "/workflow/uploads",
                                 files=[("files", ("b.zip", buf.getvalue(), "application/zip"))]).json()["id"])
                 for _ in range(2)]
    with county.engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM import_batches WHERE status = 'loaded'")).scalar()
    from app.db import county_lock

    # hold the county's import lock (an import "running") while both confirmations arrive
    with county_lock(county.engine, "import", wait_s=5):
        started = [post(ana, f"/workflow/jobs/{v['id']}/confirm", json={"partial": True}).json()["id"] for v in validated]
        time.sleep(0.4)
        waiting = [ana.get(f"/workflow/jobs/{j}").json() for j in started]
    assert all("本县已有一个导入任务在进行" in (w["stage"] or "") or w["status"] == "refused" for w in waiting), waiting
    done = [_wait(ana, j) for j in started]
    # released: one of the waiting two takes the lock and imports; the other, still within its 1 s,
    # runs after it (then changes nothing: the same bundle) or gives up with the message
    for d in done:
        assert d["status"] in ("done", "refused"), d
        if d["status"] == "refused":
            assert "本县已有一个导入任务在进行" in d["error"] and "未导入任何数据" in d["error"]
    ok = sorted((d for d in done if d["status"] == "done"), key=lambda d: d["finished_at"])
    changed = lambda j: sum(c.get("inserted", 0) + c.get("updated", 0) for k, c in j["result"]["counts"].items()  # noqa: E731
                            if k != "rejects")
    assert all(changed(d) == 0 for d in ok[1:])
    with county.engine.connect() as conn:
        after = conn.execute(sa.text("SELECT count(*) FROM import_batches WHERE status = 'loaded'")).scalar()
    assert after == before + len(ok) >= before + 1  # a job refused at the lock left no batch at all


def test_a_job_whose_process_died_is_shown_failed_not_running_for_ever(engine):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job = jobs.create(engine, "import", {"path": "/nowhere"}, "t")
    alive = jobs.create(engine, "import", {"path": "/nowhere"}, "t")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET status = 'running', params = jsonb_set(params, '{_pid}', to_jsonb(CAST(:p AS int))) "
                             "WHERE id = :i"), {"p": dead.pid, "i": job})
        conn.execute(sa.text("UPDATE jobs SET status = 'running' WHERE id = :i"), {"i": alive})
    j = jobs.get(engine, job)
    assert j["status"] == "failed" and "服务重启" in j["error"]
    assert jobs.get(engine, alive)["status"] == "running"  # this process: still running


def test_the_map_print_post_works_for_a_signed_in_user_with_the_token_only(county):
    """POST /print/map.pdf (the web map's PDF) with a session: refused without the CSRF token,
    accepted with it (mapexport.js sends it)."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress((b"\x00" + b"\xff\x00\x00" * 8) * 8)) + chunk(b"IEND", b""))
    view = signed_in(county, "view")
    url = "/print/map.pdf?paper=A4&title=t"
    assert view.post(url, content=png, headers={"Content-Type": "image/png"}).status_code == 403
    r = view.post(url, content=png, headers={"Content-Type": "image/png", "X-CSRF-Token": view.csrf})
    assert r.status_code != 403 and r.status_code < 500, r.text[:300]


def test_attachments_of_proposals_and_appeals_stay_in_their_township(county):
    off1, ana = signed_in(county, "off1"), signed_in(county, "ana")
    pid = post(off1, "/workflow/corrections", json={"uscc": uscc_of(1, 2), "parcel_code": parcel_code(1, 2),
                                                     "action": "remove", "reason": "企业已搬离"}).json()["id"]
    r = post(off1, f"/workflow/corrections/{pid}/attachments", files={"file": ("现场照片.jpg", b"\xff\xd8jpeg", "image/jpeg")})
    assert r.status_code == 200 and r.json()["attachments"] == ["现场照片.jpg"]
    listed = next(p for p in ana.get("/workflow/corrections").json()["proposals"] if p["id"] == pid)
    assert listed["attachments"] == ["现场照片.jpg"]
    got = ana.get(f"/workflow/corrections/{pid}/attachments/现场照片.jpg")
    assert got.status_code == 200 and got.content == b"\xff\xd8jpeg"
    # a T2-limited analyst neither sees nor downloads it; a name outside the directory is no file
    t2 = TestClient(county.app)
    assert t2.get(f"/workflow/corrections/{pid}/attachments/现场照片.jpg", headers=county.headers("analyst_t2")).status_code == 404
    assert ana.get(f"/workflow/corrections/{pid}/attachments/..%2F..%2Fsession_secret").status_code == 404
    with county.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT actor FROM audit_log WHERE action = 'correction.attachment'")).scalar() == "off1"
