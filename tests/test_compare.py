"""指标对比 (/compare, /compare.xlsx, /compare/chart.png, /map/compare) and the county summary report
(/reports/summary.html|pdf) on the sample county: numbers against SQL, roles and regions, and the page
in headless Chromium with its charts."""

from __future__ import annotations

import io
import shutil
import subprocess

import openpyxl
import pytest
import sqlalchemy as sa
from PIL import Image

from tests.published import published_county
from tests.test_checkups import colour_share, server, shoot  # noqa: F401 - server is a fixture


@pytest.fixture(scope="module")
def county(county_db_url, tmp_path_factory):
    with published_county(county_db_url, tmp_path_factory.mktemp("cmp"),
                          {"analyst": ("analyst", False), "town": ("analyst", True)}) as c:
        yield c


def _sql_counts(eng, run, town=None):
    with eng.connect() as conn:
        return {(t, g): n for t, g, n in conn.execute(sa.text(
            "SELECT p.township, r.grade, count(*) FROM parcel_ratings r JOIN parcels p USING (identity_code) "
            "WHERE r.run_id = :r AND r.grade IS NOT NULL AND (CAST(:t AS text) IS NULL OR p.township = :t) "
            "GROUP BY 1, 2"), {"r": run, "t": town})}


def test_by_township_matches_sql_and_hides_figures_from_the_public(county):
    eng, year, run, town, keys, client = county
    doc = client.get("/compare", params={"by": "township", "level": "parcel"}).json()
    assert doc["year"] == year and doc["grades"] == ["A", "B", "C", "D"]
    want = _sql_counts(eng, run)
    for row in doc["rows"]:
        for g in doc["grades"]:
            assert row[f"{g} 档数"] == want.get((row["镇街"], g), 0)
        assert sum(row[f"{g} 档占比(%)"] for g in doc["grades"]) == pytest.approx(100, abs=0.2)
    assert sum(r["参评数"] for r in doc["rows"]) == sum(want.values())
    assert not any("平均" in c for c in doc["columns"])          # figures need analyst
    assert doc["visibility"]["figures"] is False
    # an analyst gets the indicator's mean, equal to SQL
    doc = client.get("/compare", params={"by": "township", "level": "parcel"},
                     headers={"X-API-Key": keys["analyst"]}).json()
    with eng.connect() as conn:
        mean = conn.execute(sa.text(
            "SELECT avg(r.tax_per_mu) FROM parcel_ratings r JOIN parcels p USING (identity_code) "
            "WHERE r.run_id = :r AND r.grade IS NOT NULL AND p.township = :t"), {"r": run, "t": town}).scalar_one()
    row = next(r for r in doc["rows"] if r["镇街"] == town)
    assert row["亩均税收平均"] == pytest.approx(mean, abs=0.006)
    # a township key compares within its township only
    doc = client.get("/compare", params={"by": "township", "level": "enterprise"},
                     headers={"X-API-Key": keys["town"]}).json()
    assert [r["镇街"] for r in doc["rows"]] == [town]
    assert client.get("/compare", params={"level": "enterprise"}).status_code == 401
    assert client.get("/compare", params={"by": "nope"}).status_code == 400
    assert client.get("/compare", params={"indicator": "nope"}).status_code == 400


def test_by_year_and_group_tables_and_excel(county):
    eng, year, run, town, keys, client = county
    doc = client.get("/compare", params={"by": "year", "level": "enterprise"}, headers={"X-API-Key": keys["analyst"]}).json()
    with eng.connect() as conn:
        per_year = dict(conn.execute(sa.text(
            "SELECT r.year, count(*) FROM evaluation_runs r JOIN enterprise_ratings e ON e.run_id = r.id "
            "WHERE r.status = 'published' AND e.grade IS NOT NULL GROUP BY 1")).all())
    assert {r["年度"]: r["参评数"] for r in doc["rows"]} == per_year
    r = client.get("/compare.xlsx", params={"by": "industry_group", "level": "enterprise"},
                   headers={"X-API-Key": keys["analyst"]})
    assert r.status_code == 200
    ws = openpyxl.load_workbook(io.BytesIO(r.content)).active
    header = [c.value for c in ws[1]]
    assert header[0] == "行业组" and "A 档数" in header and "亩均税收平均" in header
    assert ws.freeze_panes == "A2"


def test_charts_are_images_and_the_distribution_needs_figures(county):
    eng, year, run, town, keys, client = county
    for kind in ("trend", "township", "distribution"):
        r = client.get("/compare/chart.png", params={"kind": kind, "level": "enterprise"},
                       headers={"X-API-Key": keys["analyst"]})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", (kind, r.text[:200])
        img = Image.open(io.BytesIO(r.content))
        assert img.size[0] > 400 and colour_share_bytes(img) > 0.01
    svg = client.get("/compare/chart.svg", params={"kind": "trend"})
    assert svg.status_code == 200 and b"<svg" in svg.content
    assert client.get("/compare/chart.png", params={"kind": "distribution"}).status_code == 401
    assert client.get("/compare/chart.png", params={"kind": "pie"}, headers={"X-API-Key": keys["analyst"]}).status_code == 400


def colour_share_bytes(img: Image.Image) -> float:
    px = list(img.convert("RGB").getdata())
    return sum(1 for p in px if max(p) - min(p) > 40) / len(px)


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils (scripts/bootstrap.sh --test)")
def test_county_summary_report(county, tmp_path):
    eng, year, run, town, keys, client = county
    r = client.get("/reports/summary.pdf", headers={"X-API-Key": keys["analyst"]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    (tmp_path / "s.pdf").write_bytes(r.content)
    text = subprocess.run(["pdftotext", str(tmp_path / "s.pdf"), "-"], capture_output=True, text=True, check=True).stdout
    with eng.connect() as conn:
        n_ent = conn.execute(sa.text("SELECT count(*) FROM enterprise_ratings WHERE run_id = :r AND grade IS NOT NULL"),
                             {"r": run}).scalar_one()
        n_d = conn.execute(sa.text("SELECT count(*) FROM enterprise_ratings WHERE run_id = :r AND grade = 'D'"),
                           {"r": run}).scalar_one()
        low = conn.execute(sa.text("SELECT count(*) FROM parcel_ratings WHERE run_id = :r AND (idle OR low_yield_years >= 1)"),
                           {"r": run}).scalar_one()
    for words in (f"{year} 年度", "等级构成", "名单规模", "低效用地", "连片低效用地", f"与 {year - 1} 年相比", str(n_ent),
                  f"{low} 宗"):
        assert words in text, words
    assert f"{n_d}（" in text
    # HTML, region-scoped
    html = client.get("/reports/summary.html", headers={"X-API-Key": keys["town"]}).text
    assert f"（{town}）" in html and "<svg" in html
    assert client.get("/reports/summary.html", params={"year": 1999}).status_code == 404


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils (scripts/bootstrap.sh --test)")
def test_report_summary_cli_writes_the_same_report(county, county_db_url, tmp_path, monkeypatch):
    """`mujun report summary --out x.pdf` writes the web route's report (the whole county's figures)."""
    from typer.testing import CliRunner

    from app.cli import cli
    from app.settings import get_settings

    eng, year, run, town, keys, client = county
    monkeypatch.setenv("DATABASE_URL", county_db_url)
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(cli, ["report", "summary", "--year", str(year), "--out", str(tmp_path / "s.pdf")])
        bad = CliRunner().invoke(cli, ["report", "summary", "--year", "1999", "--out", str(tmp_path / "x.pdf")])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    assert f"{year}年亩均效益评价汇总报告.pdf" in res.output
    cli_text = subprocess.run(["pdftotext", str(tmp_path / "s.pdf"), "-"], capture_output=True, text=True,
                              check=True).stdout
    web = client.get("/reports/summary.pdf", params={"year": year}, headers={"X-API-Key": keys["analyst"]})
    (tmp_path / "w.pdf").write_bytes(web.content)
    web_text = subprocess.run(["pdftotext", str(tmp_path / "w.pdf"), "-"], capture_output=True, text=True,
                              check=True).stdout
    strip = lambda t: [ln for ln in t.splitlines() if "生成" not in ln]  # noqa: E731 (the generation minute)
    assert strip(cli_text) == strip(web_text) and f"{year} 年度" in cli_text
    assert bad.exit_code == 1 and "mujun evaluate" in bad.output and not (tmp_path / "x.pdf").exists()


@pytest.mark.slow
def test_compare_page_in_chromium_shows_charts(county, server, artifacts):
    eng, year, run, town, keys, client = county
    rep = shoot(f"{server}/map/compare?api_key={keys['analyst']}", artifacts, "compare_page",
                "body[data-ready=ready]", {"township": "#chart-township", "trend": "#chart-trend",
                                           "distribution": "#chart-distribution"},
                eval="""({imgs: [...document.querySelectorAll('figure img')].map(i => [i.id, i.naturalWidth, !i.closest('figure').hidden]),
                          rows: [...document.querySelectorAll('table')].map(t => t.tBodies[0]?.rows.length || 0),
                          png: [...document.querySelectorAll('a.png')].map(a => a.href.startsWith('blob:'))})""",
                height=1400)
    assert rep["status"] == 200 and rep["console_errors"] == [] and rep["page_errors"] == [], rep
    imgs = rep["eval"]["imgs"]
    assert len(imgs) == 3 and all(w > 300 and shown for _, w, shown in imgs), imgs
    assert all(n > 0 for n in rep["eval"]["rows"])
    assert all(rep["eval"]["png"])                                  # each chart downloadable as PNG
    for name in ("township", "trend", "distribution"):
        assert colour_share(rep["shots"][name], background=(255, 255, 255)) > 0.02, name


def test_root_sends_browsers_to_the_map_and_keeps_json_for_ogc_clients(county):
    eng, year, run, town, keys, client = county
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    # a person's browser at the server address goes to the map (keeping the key) ...
    r = client.get("/", headers=browser, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "http://testserver/map"
    r = client.get("/?api_key=mj_x", headers=browser, follow_redirects=False)
    assert r.headers["location"] == "http://testserver/map?api_key=mj_x"
    # ... and the OGC HTML landing page is f=html, its first links opening the map
    r = client.get("/?f=html&api_key=mj_x", headers=browser, follow_redirects=False)
    assert r.status_code == 200 and r.text.startswith("<!doctype html>")
    assert 'href="http://testserver/map?api_key=mj_x"' in r.text
    for accept in ("application/json", "*/*", None):
        r = client.get("/", headers={"Accept": accept} if accept else {})
        assert r.status_code == 200 and "links" in r.json(), accept
    assert client.get("/?f=json", headers=browser).json()["links"]
