"""The yearly cycle in a real browser (issue 15): headless Chromium (playwright-core, npm) against a
real uvicorn server and PostGIS, on a small sample county (300 parcels, seed 7) with one bad row.

An analyst signs in, uploads the bundle as a zip, watches the validation's progress, sees the
rejected row (file/row/field/reason), reloads (the report survives), confirms, matches, evaluates
and publishes after reviewing the differences. A township officer proposes 纠偏 corrections — its
own township's land only — the analyst accepts them, re-matches (the link moves) and evaluates a
new draft; the officer records an appeal against it, the analyst takes it through its states and
publishes; a saved group shows its totals. Every expectation is checked against the database.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import accounts
from app.main import create_app
from app.settings import Settings
from tests.test_web_map import BROWSER_DIR, CHROMIUM, _serve

pytestmark = pytest.mark.slow
PASSWORD = "年度评价-2025-pass"
YEAR = "2025"


def _node(base: str, out: Path, **kw) -> dict:
    cmd = ["node", str(BROWSER_DIR / "workflow_check.mjs"), "--base", base, "--out", str(out)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=BROWSER_DIR)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in report, report["error"]
    assert not report["page_errors"] and not report["failed_requests"], report
    return report


@pytest.fixture(scope="module")
def sample_zip(tmp_path_factory) -> Path:
    from app.sample import write_sample_bundle

    root = tmp_path_factory.mktemp("wf")
    bundle = root / "bundle"
    write_sample_bundle(bundle, seed=7, parcels=300, fmt="county")
    with (bundle / "leases.csv").open("a", encoding="utf-8") as f:  # one bad row: a negative area
        f.write("91330999428584926J,330999001001GB00009,91330999MAY2QEF874,-5,2021-06-01,2030-04-30\n")
    out = root / "bundle.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(bundle.iterdir()):
            if p.suffix not in (".png", ".md"):
                z.write(p, f"bundle/{p.name}")
    return out


@pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("node") is None, reason="needs Chromium and node")
def test_the_yearly_cycle_in_the_browser(db_url, sample_zip, tmp_path, artifacts):
    eng = sa.create_engine(db_url)
    with eng.begin() as conn:
        accounts.create_user(conn, "ana", PASSWORD, "analyst")
    base, stop = _serve(create_app(Settings(data_dir=tmp_path / "var"), database_url=db_url))

    def q(sql, **p):
        with eng.connect() as conn:
            return conn.execute(sa.text(sql), p).freeze()()  # buffered; the connection goes back
    try:
        # -- analyst: upload, progress, rejects, reload, confirm, match, evaluate, review, publish
        r = _node(base, artifacts, phase="import", user="ana", password=PASSWORD, zip=sample_zip, year=YEAR)
        assert "用户名或密码错误" in r["wrong_password_message"] and "ana" in r["who"]
        assert len(r["progress_seen"]) >= 2, r["progress_seen"]  # the bar moved while it ran
        bad = [row for row in r["reject_rows"] if row[0].endswith("leases.csv") and row[5] == "拒收"]
        assert bad and bad[0][3] == "-5" and bad[0][4], r["reject_rows"][:5]  # file, row, field, value, reason
        assert r["column_map_rows"] > 5
        assert r["after_reload_rejects_title"] == r["rejects_title"] and int(r["after_reload_rows"]) > 0
        assert "导入完成" in r["import_done"]
        assert "等级变化" in r["diff_summary"]
        assert q("SELECT count(*) FROM import_batches WHERE status = 'loaded'").scalar() == 1
        first = q("SELECT id FROM evaluation_runs WHERE status = 'published' AND year = :y", y=int(YEAR)).scalar()
        assert first and f"{first}:published" in r["published_runs"]
        assert q("SELECT actor FROM audit_log WHERE action = 'publish'").scalar() == "ana"

        # -- a township officer: an enterprise on one registered parcel of its township moves to another
        pick = q("""
            SELECT l.uscc, l.identity_code AS old_id, p.parcel_code AS old_code, p.township
            FROM land_links l JOIN parcels p ON p.identity_code = l.identity_code AND p.valid_to IS NULL
            WHERE l.year = :y AND l.role = 'owner_occupier' AND l.share = 1 AND p.kind = 'registered'
              AND (SELECT count(*) FROM land_links x WHERE x.uscc = l.uscc AND x.year = l.year) = 1
            ORDER BY l.uscc LIMIT 1""", y=int(YEAR)).one()
        new = q("""SELECT identity_code, parcel_code FROM parcels WHERE valid_to IS NULL AND kind = 'registered'
                   AND township = :t AND identity_code <> :o AND identity_code NOT IN
                   (SELECT identity_code FROM land_links WHERE uscc = :u) ORDER BY identity_code LIMIT 1""",
                t=pick.township, o=pick.old_id, u=pick.uscc).one()
        other = q("SELECT parcel_code FROM parcels WHERE valid_to IS NULL AND kind = 'registered' AND township <> :t "
                  "ORDER BY 1 LIMIT 1", t=pick.township).scalar()
        with eng.begin() as conn:
            accounts.create_user(conn, "off", PASSWORD, "officer", pick.township)
        r = _node(base, artifacts, phase="officer", user="off", password=PASSWORD, uscc=pick.uscc,
                  parcel=new.parcel_code, parcel_id=new.identity_code, old_parcel=pick.old_code, other_parcel=other)
        assert r["prefilled_parcel"] == new.identity_code
        assert r["officer_hidden"] == {"upload": True, "run": True}
        assert "本镇街没有宗地" in r["other_township"]  # another township's land: refused
        assert "已提交纠偏申请" in r["own_add"] and "已提交纠偏申请" in r["own_remove"] and r["proposals"] == 2
        assert q("SELECT count(*) FROM correction_proposals WHERE township <> :t", t=pick.township).scalar() == 0
        # every step is in the audit log, and the parcel's archive shows it
        hist = q("SELECT actor, action FROM audit_log WHERE entity_id = :i", i=new.identity_code).all()
        assert ("off", "correction.proposed") in [tuple(h) for h in hist]

        # -- the analyst accepts both, re-matches: the link moved; evaluates a new draft and reviews it
        r = _node(base, artifacts, phase="decide", user="ana", password=PASSWORD, year=YEAR)
        assert r["accepted"] == 2 and "匹配完成" in r["match_done"]
        links = {row.identity_code: row.method for row in q(
            "SELECT identity_code, method FROM land_links WHERE uscc = :u AND year = :y", u=pick.uscc, y=int(YEAR))}
        assert new.identity_code in links and links[new.identity_code] == "correction", links
        assert pick.old_id not in links, links
        draft = q("SELECT id FROM evaluation_runs WHERE status = 'draft' AND year = :y ORDER BY id DESC",
                  y=int(YEAR)).scalar()
        assert draft and draft != first and "等级变化" in r["diff_summary"]

        # -- an appeal against the draft: submitted (officer) → under review → accepted (analyst)
        r = _node(base, artifacts, phase="officer", user="off", password=PASSWORD, appeal_run=draft,
                  appeal_uscc=pick.uscc, uscc=pick.uscc, parcel="-", old_parcel="-", other_parcel="-")
        assert "已登记申诉" in r["appeal_message"]
        assert r["appeal_attachment_link"] and r["appeal_attachment_link"].endswith("/attachments/%E5%AE%8C%E7%A8%8E%E8%AF%81%E6%98%8E.pdf")
        r = _node(base, artifacts, phase="appeal", user="ana", password=PASSWORD, year=YEAR, township=pick.township)
        assert [s[4] for s in r["appeal_states"]] == ["审核中", "已采纳"] and r["appeal_states"][1][5]
        steps = [tuple(x) for x in q("SELECT actor, action FROM audit_log WHERE entity_id = :u AND action LIKE 'appeal.%' "
                                     "ORDER BY id", u=pick.uscc)]
        assert steps == [("off", "appeal.submitted"), ("off", "appeal.attachment"), ("ana", "appeal.under_review"),
                         ("ana", "appeal.accepted")]
        assert f"{draft}:published" in r["published_runs"] and f"{first}:superseded" in r["published_runs"]

        # -- the saved group's totals are the database's
        g = r["group"]
        want = q("""SELECT count(DISTINCT p.identity_code), sum(p.area_mu) FROM parcels p
                    JOIN parcel_ratings r ON r.identity_code = p.identity_code AND r.run_id = :run
                    WHERE p.valid_to IS NULL AND p.township = :t AND r.grade = 'D'""", run=draft, t=pick.township).one()
        assert g["count"] == want[0] and g["area_mu"] == pytest.approx(float(want[1] or 0), abs=0.01)
        if want[0]:
            assert g["grades"] == {"D": {"count": want[0], "share": 1.0}} and "total_tax_wan" in g
        assert f"成员 {g['count']}" in r["group_summary"].replace("\xa0", " ")
    finally:
        stop()
        eng.dispose()
