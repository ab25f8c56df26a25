"""体检表: one A4 page per enterprise and per parcel, as HTML and a WeasyPrint PDF, checked the way a
person would — the PDF rasterised with pdftoppm and read with pdftotext, the HTML page in headless
Chromium with its map thumbnail — and the "what would raise the grade" figure recomputed."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from app.auth import Principal, create_key
from app.checkup import Checkups
from app.main import create_app
from app.settings import Settings
from tests.test_cli import _mujun
from tests.test_web_map import BROWSER_DIR, _free_port, _need_browser


@pytest.fixture(scope="module")
def county(county_db_url, tmp_path_factory):
    eng = sa.create_engine(county_db_url)
    with eng.begin() as conn:
        year = conn.execute(sa.text("SELECT max(year) FROM evaluation_runs WHERE status = 'published'")).scalar_one()
        run = conn.execute(sa.text("SELECT id FROM evaluation_runs WHERE year = :y AND status = 'published'"),
                           {"y": year}).scalar_one()
        ent = conn.execute(sa.text(
            "SELECT r.uscc, e.name, r.grade, e.township FROM enterprise_ratings r JOIN enterprises e USING (uscc) "
            "WHERE r.run_id = :r AND r.grade = 'B' AND r.list_name = '规上' "
            "AND EXISTS (SELECT 1 FROM land_links l WHERE l.uscc = r.uscc) ORDER BY r.rank LIMIT 1"),
            {"r": run}).mappings().one()
        par = conn.execute(sa.text(
            "SELECT r.identity_code, p.parcel_code, r.grade, p.township FROM parcel_ratings r "
            "JOIN parcels p USING (identity_code) WHERE r.run_id = :r AND r.grade = 'C' AND p.township = :t "
            "ORDER BY r.identity_code LIMIT 1"), {"r": run, "t": ent["township"]}).mappings().one()
        other = conn.execute(sa.text("SELECT township FROM enterprises WHERE township <> :t LIMIT 1"),
                             {"t": ent["township"]}).scalar_one()
        keys = {"analyst": create_key(conn, "ck-analyst", "analyst"), "viewer": create_key(conn, "ck-viewer", "viewer"),
                "other_town": create_key(conn, "ck-other", "analyst", other)}
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("ck")), database_url=county_db_url)
    with TestClient(app) as client:
        yield eng, year, run, dict(ent), dict(par), keys, client
    eng.dispose()


def _pdf_text(pdf: bytes, tmp_path, name: str) -> tuple[str, int]:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-singlefile", str(path), str(tmp_path / name)], check=True)
    img = Image.open(tmp_path / f"{name}.png").convert("L")
    assert img.size[1] > img.size[0]                           # A4 portrait
    assert img.getextrema()[0] < 100                           # something printed on it
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout, pages


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils (scripts/bootstrap.sh --test)")
def test_enterprise_pdf_is_one_page_with_name_and_grade(county, tmp_path, artifacts):
    eng, year, run, ent, par, keys, client = county
    r = client.get(f"/enterprises/{ent['uscc']}/checkup.pdf", headers={"X-API-Key": keys["analyst"]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    (artifacts / "checkup_enterprise.pdf").write_bytes(r.content)
    text, pages = _pdf_text(r.content, tmp_path, "ent")
    assert pages == 1
    assert ent["name"] in text and ent["uscc"] in text
    assert f"等级 {ent['grade']}" in text
    for words in ("指标对比", "同组平均", "同镇街平均", "基准值", "历年等级", "提升建议", "亩均税收"):
        assert words in text, words
    # a viewer gets the page without figures
    r = client.get(f"/enterprises/{ent['uscc']}/checkup.pdf", headers={"X-API-Key": keys["viewer"]})
    text, pages = _pdf_text(r.content, tmp_path, "ent_viewer")
    assert pages == 1 and ent["name"] in text
    assert "综合得分" not in text and "同组平均" not in text and "基准值" not in text


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils (scripts/bootstrap.sh --test)")
def test_parcel_pdf_and_access(county, tmp_path):
    eng, year, run, ent, par, keys, client = county
    r = client.get(f"/parcels/{par['identity_code']}/checkup.pdf")       # land is public
    assert r.status_code == 200
    text, pages = _pdf_text(r.content, tmp_path, "par")
    assert pages == 1 and par["parcel_code"] in text and f"等级 {par['grade']}" in text
    assert "权利人" not in text and "排名" not in text                     # identities and ranks need a key
    assert client.get(f"/enterprises/{ent['uscc']}/checkup.html").status_code == 401
    # a key of another township never sees this enterprise or land
    assert client.get(f"/enterprises/{ent['uscc']}/checkup.html", headers={"X-API-Key": keys["other_town"]}).status_code == 404
    assert client.get(f"/parcels/{par['identity_code']}/checkup.pdf", headers={"X-API-Key": keys["other_town"]}).status_code == 404
    assert client.get(f"/parcels/{par['identity_code']}/checkup.pdf", params={"year": 1999}).status_code == 404
    assert client.get(f"/parcels/{par['identity_code']}/checkup.doc").status_code == 404


def test_what_would_raise_the_grade_reaches_the_next_band(county):
    eng, year, run, ent, par, keys, client = county
    with eng.connect() as conn:
        doc = Checkups(conn, Principal("analyst"), year).enterprise(ent["uscc"])
        r = conn.execute(sa.text("SELECT score, list_name, industry_group, explanation FROM enterprise_ratings "
                                 "WHERE run_id = :r AND uscc = :u"), {"r": run, "u": ent["uscc"]}).mappings().one()
        lowest_a = conn.execute(sa.text(
            "SELECT min(score) FROM enterprise_ratings WHERE run_id = :r AND list_name = :l AND "
            "industry_group = :g AND band_grade = 'A'"), {"r": run, "l": r["list_name"], "g": r["industry_group"]}).scalar_one()
    x = doc["raise"]
    assert x["next"] == "A" and x["reachable"]
    assert x["target_score"] == pytest.approx(lowest_a)
    assert x["gap"] == pytest.approx(lowest_a - r["score"])
    inds = r["explanation"]["indicators"]
    top = max(inds, key=lambda i: i["weight"])
    assert x["indicator"] == top["title"] == "亩均税收"
    # the score with the raised value, by the scoring rule (value ÷ baseline × weight × 系数), reaches the band
    new_points = x["new_value"] / top["baseline"] * top["weight"] * top["coefficient"]
    assert r["score"] - top["points"] + new_points == pytest.approx(lowest_a, rel=1e-9)
    # the group and township averages are the run's own
    with eng.connect() as conn:
        mean = conn.execute(sa.text(
            "SELECT avg((indicators->>'tax_per_mu')::float) FROM enterprise_ratings WHERE run_id = :r "
            "AND list_name = :l AND industry_group = :g AND evaluated AND grade IS NOT NULL"),
            {"r": run, "l": r["list_name"], "g": r["industry_group"]}).scalar_one()
    assert doc["indicators"][0]["group_mean"] == pytest.approx(mean)


def test_batch_writes_one_pdf_per_enterprise_and_an_index(county, county_db_url, tmp_path):
    eng, year, run, ent, par, keys, client = county
    out = tmp_path / "ck"
    res = _mujun(county_db_url, "report", "checkups", "--year", str(year), "--township", ent["township"],
                 "--limit", "3", "--out", str(out), data_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    pdfs = sorted(out.glob("*.pdf"))
    assert len(pdfs) == 3
    index = (out / "index.html").read_text()
    for p in pdfs:
        assert p.stat().st_size > 10_000 and p.name.split("_")[0] in index
    assert (out / "index.xlsx").exists()
    bad = _mujun(county_db_url, "report", "checkups", "--year", str(year), "--township", "火星",
                 "--out", str(tmp_path / "x"), data_dir=tmp_path)
    assert bad.returncode == 1 and "未知镇街" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def server(county_db_url, tmp_path_factory):
    port = _free_port()
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("cksrv")), database_url=county_db_url)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and t.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


def shoot(url: str, out, name: str, wait: str, shots: dict, **extra) -> dict:
    """Run tests/browser/page_shot.mjs once: its JSON report."""
    _need_browser()
    cmd = ["node", str(BROWSER_DIR / "page_shot.mjs"), "--url", url, "--out", str(out), "--name", name,
           "--wait", wait, "--shots", json.dumps(shots)]
    for k, v in extra.items():
        cmd += [f"--{k}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=BROWSER_DIR)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"browser failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def colour_share(path, background=(247, 248, 246), tol: int = 12) -> float:
    """Share of pixels that differ from ``background`` and from white/grey border pixels."""
    img = Image.open(path).convert("RGB")
    px = list(img.getdata())
    def plain(p):
        return all(abs(a - b) <= tol for a, b in zip(p, background)) or min(p) > 240
    return sum(not plain(p) for p in px) / len(px)


@pytest.mark.slow
def test_checkup_html_in_chromium_has_a_map_thumbnail(county, server, artifacts):
    eng, year, run, ent, par, keys, client = county
    rep = shoot(f"{server}/enterprises/{ent['uscc']}/checkup.html?api_key={keys['analyst']}", artifacts,
                "checkup_enterprise", "#thumb", {"thumb": "#thumb", "badge": "#grade-badge"},
                eval="document.querySelectorAll('#thumb path').length")
    assert rep["status"] == 200 and rep["console_errors"] == [] and rep["page_errors"] == []
    assert rep["eval"] >= 2                                      # the land and its neighbours
    share = colour_share(rep["shots"]["thumb"])
    assert share > 0.15, f"map thumbnail nearly blank ({share:.1%} drawn)"
    # the subject's land is drawn in its grade colour (B: #2c7bb6)
    img = Image.open(rep["shots"]["thumb"]).convert("RGB")
    blue = sum(1 for p in img.getdata() if abs(p[0] - 0x2c) < 25 and abs(p[1] - 0x7b) < 25 and abs(p[2] - 0xb6) < 25)
    assert blue > 50
    badge = Image.open(rep["shots"]["badge"]).convert("RGB").getpixel((3, 10))
    assert max(abs(a - b) for a, b in zip(badge, (0x2c, 0x7b, 0xb6))) < 20


@pytest.mark.slow
def test_archive_page_links_its_checkup(county, server, artifacts):
    eng, year, run, ent, par, keys, client = county
    rep = shoot(f"{server}/map/enterprise/{ent['uscc']}?api_key={keys['analyst']}", artifacts, "archive_checkup_link",
                "#checkup-pdf", {},
                eval="fetch(document.querySelector('#checkup-pdf').href + location.search)"
                     ".then(r => [r.status, r.headers.get('content-type')])")
    assert rep["console_errors"] == [] and rep["page_errors"] == [], rep
    assert rep["eval"] == [200, "application/pdf"]
