"""The web map's 导出与打印 tab in headless Chromium: 导出 Excel downloads the list of the map's year,
and the printed map (A4 PNG, A3 PDF) carries title, year, legend with the view's counts, scale bar,
north arrow, date and source."""

from __future__ import annotations

import json
import shutil
import subprocess

import openpyxl
import pytest
import sqlalchemy as sa
from PIL import Image

from app.auth import create_key
from tests.test_checkups import server  # noqa: F401 - fixture
from tests.test_web_map import BROWSER_DIR, _need_browser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def printed(county_db_url, server, artifacts):  # noqa: F811
    _need_browser()
    eng = sa.create_engine(county_db_url)
    with eng.begin() as conn:
        key = create_key(conn, "print-test", "analyst")
    proc = subprocess.run(["node", str(BROWSER_DIR / "print_check.mjs"), "--base", server, "--key", key,
                           "--out", str(artifacts)], capture_output=True, text=True, timeout=300, cwd=BROWSER_DIR)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"browser failed ({proc.returncode}): {proc.stderr[-3000:]}")
    yield json.loads(proc.stdout.strip().splitlines()[-1]), eng
    eng.dispose()


def test_no_errors_and_excel_download(printed):
    rep, eng = printed
    assert rep["console_errors"] == [] and rep["page_errors"] == [] and rep["failed_requests"] == [], rep
    wb = openpyxl.load_workbook(rep["xlsx"])
    assert wb.sheetnames[0] == "汇总"
    rows = sum(ws.max_row - 1 for ws in wb if ws.title != "汇总")
    with eng.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM enterprise_ratings WHERE run_id = :r"), {"r": rep["run_id"]}).scalar_one()
    assert rows == n and f"{n} 行" in rep["export_message"]


def test_a4_png_layout(printed):
    rep, eng = printed
    lay = rep["png_layout"]
    img = Image.open(rep["png"]).convert("RGB")
    assert img.size == (1754, 1240) == (lay["width"], lay["height"])       # A4 landscape at 150 dpi
    assert str(lay["year"]) in lay["title"] and lay["date"]
    # the legend holds the view's counts, as /stats/grades gave them
    want = {(g["grade"] or "__none"): g["count"] for g in rep["stats"]["grades"]}
    got = {r["grade"]: r["n"] for r in lay["legend"]}
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}
    assert lay["total"] == rep["stats"]["total"]["count"]
    # scale bar: a round length, 5-30 % of the map's width
    m, px = lay["scale"]["metres"], lay["scale"]["px"]
    assert str(int(m)).rstrip("0") in {"1", "2", "5"} and 0.05 * lay["map"]["w"] < px < 0.3 * lay["map"]["w"]
    # the map frame is drawn (coloured parcels), the north arrow is there
    x, y, w, h = (int(lay["map"][k]) for k in ("x", "y", "w", "h"))
    frame = img.crop((x + 5, y + 5, x + w - 5, y + h - 5))
    px_ = frame.get_flattened_data() if hasattr(frame, "get_flattened_data") else frame.getdata()
    grade_rgb = [(0x1a, 0x98, 0x50), (0x2c, 0x7b, 0xb6), (0xfd, 0xae, 0x61), (0xd7, 0x19, 0x1c)]
    drawn = {c: 0 for c in grade_rgb}
    for p in px_:
        for c in grade_rgb:
            if max(abs(a - b) for a, b in zip(p, c)) <= 12:
                drawn[c] += 1
    assert all(n > 100 for n in drawn.values()), drawn             # parcels of every grade, in their colours
    # the legend's swatches are the map's grade colours
    assert [r["grade"] for r in lay["legend"]][:4] == ["A", "B", "C", "D"]
    nx, ny = int(lay["north"]["x"]), int(lay["north"]["y"])
    arrow = img.crop((nx - 10, ny + 20, nx + 10, ny + 45)).convert("L")
    assert arrow.getextrema()[0] < 60


@pytest.mark.skipif(shutil.which("pdfinfo") is None, reason="poppler-utils")
def test_a3_pdf(printed):
    rep, _ = printed
    info = subprocess.run(["pdfinfo", rep["pdf"]], capture_output=True, text=True, check=True).stdout
    size = next(line for line in info.splitlines() if line.startswith("Page size"))
    w, h = (float(v) for v in size.split(":")[1].split("pts")[0].split("x"))
    assert w == pytest.approx(1190.55, abs=2) and h == pytest.approx(841.89, abs=2)   # A3 landscape
    assert rep["pdf_layout"]["paper"] == "A3" and rep["pdf_layout"]["width"] == 2480
