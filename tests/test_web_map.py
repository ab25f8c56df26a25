"""The web map in a real browser: headless Chromium (Debian's) driven by playwright-core (npm).

A real uvicorn server with a loaded database; ``tests/browser/map_check.mjs`` opens ``/map`` as
an analyst at 1366×768 and reports JSON: console errors, legend counts and the bbox they were
computed for, the fill colour of every rendered parcel by grade (``queryRenderedFeatures``),
canvas pixels inside known parcels, the popup of a clicked parcel and the archive pages behind
its links, the cluster finder, search, the other colour modes, and a public (no key) view.
This file computes the expectations by SQL and compares. Screenshots land in tests/_artifacts/.

Data: the lead's ``county_db_url`` fixture (sample county, 3 evaluated years) when conftest has
it, else the grid county of ``test_web_api.build_grid_county``.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
import zlib
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn

from app.api.classification import for_run
from app.auth import create_key
from app.main import create_app
from app.settings import Settings
from tests.test_web_api import build_grid_county

pytestmark = pytest.mark.slow

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")


def _with_db(url: str, name: str) -> str:
    return str(sa.make_url(url).set(database=name).render_as_string(hide_password=False))


@pytest.fixture(scope="module")
def map_db(request, _template, pg_admin_url):
    """(url, source): the lead's county database when there is one, else the grid county.

    ``MUJUN_TEST_MAP_DATA=grid`` forces the grid county (quick, and independent of the pipeline).
    """
    if os.environ.get("MUJUN_TEST_MAP_DATA") != "grid":
        try:
            yield request.getfixturevalue("county_db_url"), "county"
            return
        except pytest.FixtureLookupError:
            pass
    name = f"mujun_map_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE mujun_test_template'))
    url = _with_db(pg_admin_url, name)
    build_grid_county(url)
    yield url, "grid"
    from app import db
    db._cached_engine.cache_clear()
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(app) -> tuple[str, callable]:
    """Run an ASGI app with uvicorn in a thread on a free port: (base URL, stop)."""
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started:
        if time.time() > deadline or not t.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)

    def stop():
        srv.should_exit = True
        t.join(10)
    return f"http://127.0.0.1:{port}", stop


def _png(rgb: tuple[int, int, int], size: int = 256) -> bytes:
    """A solid-colour PNG (no imaging library needed)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    row = b"\x00" + bytes(rgb) * size
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def server(map_db, tmp_path_factory):
    """A real uvicorn server (in a thread) on a free port: base URL."""
    url, _ = map_db
    base, stop = _serve(create_app(Settings(data_dir=tmp_path_factory.mktemp("mapserver")), database_url=url))
    yield base
    stop()


@pytest.fixture(scope="module")
def gcj_server(map_db, tmp_path_factory):
    """A second server whose map has a GCJ-02 basemap, from a local tile server: (base, tile requests)."""
    url, _ = map_db
    tile = _png((242, 236, 222))
    hits: list[str] = []

    class Tiles(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(tile)))
            self.end_headers()
            self.wfile.write(tile)

        def log_message(self, *a):
            pass

    tiles = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    threading.Thread(target=tiles.serve_forever, daemon=True).start()
    settings = Settings(data_dir=tmp_path_factory.mktemp("gcjserver"), basemap_gcj02=True,
                        basemap_url=f"http://127.0.0.1:{tiles.server_port}/basemap/{{z}}/{{x}}/{{y}}.png")
    base, stop = _serve(create_app(settings, database_url=url))
    yield base, hits
    stop()
    tiles.shutdown()


def _need_browser():
    if not CHROMIUM.exists():
        pytest.skip("Chromium not installed (scripts/bootstrap.sh --test installs it)")
    if shutil.which("node") is None:
        pytest.skip("node not installed (scripts/bootstrap.sh --test)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.skip("playwright-core missing: cd tests/browser && npm ci")


def _sample_parcels(eng, run_id: int) -> list[dict]:
    """Per grade (and ungraded), the largest registered parcel: code, bbox, an interior point."""
    with eng.connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT DISTINCT ON (coalesce(r.grade, ''))
                   p.identity_code, p.parcel_code, r.grade,
                   ST_X(ST_PointOnSurface(p.geom)) AS lon, ST_Y(ST_PointOnSurface(p.geom)) AS lat,
                   ST_XMin(p.geom) AS x0, ST_YMin(p.geom) AS y0, ST_XMax(p.geom) AS x1, ST_YMax(p.geom) AS y1,
                   (SELECT count(*) FROM land_links l WHERE l.identity_code = p.identity_code) AS n_ents
            FROM parcels p LEFT JOIN parcel_ratings r ON r.identity_code = p.identity_code AND r.run_id = :run
            WHERE p.kind = 'registered'
              AND NOT EXISTS (SELECT 1 FROM parcels d WHERE d.kind <> 'registered' AND ST_Intersects(d.geom, p.geom))
            ORDER BY coalesce(r.grade, ''), (SELECT count(*) FROM land_links l WHERE l.identity_code = p.identity_code) > 0 DESC,
                     p.area_m2 DESC"""), {"run": run_id}).all()
    return [{"identity_code": r.identity_code, "parcel_code": r.parcel_code, "grade": r.grade,
             "point": [r.lon, r.lat], "bbox": [r.x0, r.y0, r.x1, r.y1], "n_ents": r.n_ents} for r in rows]


def _hex_rgb(h: str) -> tuple[int, int, int]:
    h = h.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@pytest.fixture(scope="module")
def browser_run(server, gcj_server, map_db, artifacts, tmp_path_factory):
    """Run the browser script once; the tests below check its report."""
    _need_browser()
    url, source = map_db
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        key = create_key(conn, "browser-test", "analyst")
        cls, run_id = for_run(conn)
    samples = _sample_parcels(eng, run_id)
    expect = {
        "classes": [{"grade": c.grade, "hex": c.hex} for c in cls.classes],
        "ungraded": cls.ungraded_hex,
        "samples": samples,
        "click": next(s for s in samples if s["grade"] is not None and s["n_ents"] > 0),
        "cluster": {"grades": [c.grade for c in cls.classes][-2:], "gap_m": 30, "min_area_mu": 20},
    }
    work = tmp_path_factory.mktemp("browser")
    (work / "expect.json").write_text(json.dumps(expect, ensure_ascii=False))
    cmd = ["node", str(BROWSER_DIR / "map_check.mjs"), "--base", server, "--key", key,
           "--expect", str(work / "expect.json"), "--out", str(artifacts), "--profile", str(work / "profile"),
           "--gcjbase", gcj_server[0]]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=BROWSER_DIR)
    (artifacts / "map_check.stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"browser script failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    (artifacts / "map_check.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
    report["_seconds"] = time.time() - t0
    report["_basemap_tile_requests"] = len(gcj_server[1])
    yield report, expect, eng, run_id, source
    eng.dispose()


def test_page_loads_without_console_errors(browser_run):
    report, *_ = browser_run
    assert report["webgl"], "no WebGL context in headless Chromium"
    assert report["console_errors"] == [], report["console_errors"]
    assert report["page_errors"] == []
    assert report["failed_requests"] == [], report["failed_requests"]
    assert report["_seconds"] < 150


def test_parcels_drawn_in_their_grade_colour(browser_run):
    report, expect, *_ = browser_run
    rendered = report["rendered_by_grade"]
    want = {c["grade"]: c["hex"] for c in expect["classes"]}
    graded = [g for g in rendered if g != "__none"]
    assert len(graded) >= 3, rendered
    for g, info in rendered.items():
        hex_ = want.get(g, expect["ungraded"])
        assert info["n"] > 0
        assert info["colours"] == [hex_], f"grade {g}: drawn with {info['colours']}, expected {hex_}"


def test_canvas_pixels_inside_known_parcels(browser_run):
    report, expect, *_ = browser_run
    want = {c["grade"]: c["hex"] for c in expect["classes"]}
    assert len(report["pixels"]) == len(expect["samples"])
    for px in report["pixels"]:
        exp = _hex_rgb(want.get(px["grade"], expect["ungraded"]))
        got = px["rgb"]
        assert max(abs(a - b) for a, b in zip(got, exp)) <= 12, f"{px['identity_code']} ({px['grade']}): {got} vs {exp}"


def test_legend_counts_match_database(browser_run):
    report, expect, eng, run_id, _ = browser_run
    legend = report["legend"]
    x0, y0, x1, y1 = (float(v) for v in legend["query"]["bbox"].split(","))
    assert str(legend["query"]["run"]) == str(run_id)
    with eng.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT coalesce(r.grade, '__none'), count(*), sum(p.area_mu) FROM parcels p LEFT JOIN parcel_ratings r "
            "ON r.identity_code = p.identity_code AND r.run_id = :run "
            "WHERE ST_Intersects(p.geom, ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490)) GROUP BY 1"),
            {"run": run_id, "x0": x0, "y0": y0, "x1": x1, "y1": y1}).all()
        total = conn.execute(sa.text("SELECT count(*) FROM parcels")).scalar()
    expected = {g: n for g, n, _ in rows}
    got = {g: c for g, c in legend["counts"].items() if c}
    assert got == expected
    assert sum(expected.values()) == total  # the initial view holds the whole county
    for g, _, area in rows:
        assert legend["areas"][g] == pytest.approx(area, abs=0.1)
    assert legend["total_text"].replace(",", "") == str(sum(expected.values()))


def test_click_parcel_popup_and_archive_pages(browser_run):
    report, expect, *_ = browser_run
    pop = report["popup"]
    click = expect["click"]
    assert pop["identity_code"] == click["identity_code"]
    assert (click["parcel_code"] or click["identity_code"]) in pop["text"]
    assert "undefined" not in pop["text"] and "null" not in pop["text"] and "NaN" not in pop["text"]
    assert "亩均税收" in pop["text"]            # the analyst sees figures
    assert "档案暂不可用" not in pop["text"], pop["text"]
    assert pop["enterprise_rows"] >= 1
    arch = report["parcel_archive"]
    assert arch["state"] == "ready", arch
    assert arch["path"] == f"/map/parcel/{click['identity_code']}"
    assert (click["parcel_code"] or click["identity_code"]) in arch["title"]
    assert "undefined" not in arch["text"]
    assert arch["chart"], "history chart missing"
    ent = report["enterprise_archive"]
    assert ent["state"] == "ready", ent
    assert ent["path"].startswith("/map/enterprise/") and ent["uscc"] in ent["text"]
    assert "undefined" not in ent["text"]


def test_public_view_hides_figures(browser_run):
    report, *_ = browser_run
    pub = report["public"]
    assert pub["role_badge"].startswith("公众")
    assert pub["popup_text"] and "亩均税收" not in pub["popup_text"]
    assert "undefined" not in pub["popup_text"]
    assert pub["console_errors"] == []


def test_cluster_panel(browser_run):
    report, *_ = browser_run
    cl = report["clusters"]
    assert cl["state"] == "ready", cl
    assert cl["listed"] > 0
    assert cl["listed"] == cl["source_features"] == cl["rendered_ids"]
    assert cl["areas_sorted"]


def test_search_flies_to_parcel(browser_run):
    report, *_ = browser_run
    s = report["search"]
    assert s["results"] >= 1
    assert s["centre_in_bbox"], s
    assert s["popup_code"] == s["identity_code"]


def test_other_colour_modes(browser_run):
    report, expect, *_ = browser_run
    ent = report["enterprise_mode"]
    assert ent["stats_layer"] == "enterprises" and ent["total"] > 0
    warn = report["warning_mode"]
    assert warn["legend_rows"] >= len(expect["classes"])


def test_screenshots_written(browser_run, artifacts):
    report, *_ = browser_run
    for name in report["screenshots"]:
        p = artifacts / name
        assert p.exists() and p.stat().st_size > 10_000, name


def _legend_sql(eng, run_id: int, bbox: str, township: str | None = None) -> dict:
    x0, y0, x1, y1 = (float(v) for v in bbox.split(","))
    with eng.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT coalesce(r.grade, '__none'), count(*) FROM parcels p LEFT JOIN parcel_ratings r "
            "ON r.identity_code = p.identity_code AND r.run_id = :run "
            "WHERE ST_Intersects(p.geom, ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490)) "
            "AND (CAST(:town AS text) IS NULL OR p.township = :town) GROUP BY 1"),
            {"run": run_id, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "town": township}).all()
    return dict(rows)


def test_township_filter_and_year_switch(browser_run):
    report, expect, eng, run_id, _ = browser_run
    t = report["township"]
    assert t["query"]["township"] == t["township"]
    assert {g: n for g, n in t["counts"].items() if n} == _legend_sql(eng, run_id, t["query"]["bbox"], t["township"])
    assert t["rendered_townships"] == [t["township"]]
    old = report["old_run"]
    assert str(old["query"]["run"]) == old["run"] != str(run_id)
    assert {g: n for g, n in old["counts"].items() if n} == _legend_sql(eng, int(old["run"]), old["query"]["bbox"])
    # the tiles were re-requested for that run (ungraded land has no run id)
    assert [r for r in old["tile_run_ids"] if r is not None] == [int(old["run"])]


def test_grade_filter_in_legend(browser_run):
    report, *_ = browser_run
    f = report["grade_filter"]
    assert f["drawn"] == 0 and f["others"] > 0
    num = lambda t: int(t.replace(",", ""))  # noqa: E731
    assert num(f["total"]) == num(f["total_before"]) - f["row_count"] and f["row_count"] > 0


def test_gcj02_formula_matches_python(browser_run):
    from spatial.crs import wgs84_to_gcj02
    report, *_ = browser_run
    for (lon, lat), (glon, glat) in report["gcj"]:
        plon, plat = wgs84_to_gcj02(lon, lat)
        assert glon == pytest.approx(float(plon), abs=1e-9) and glat == pytest.approx(float(plat), abs=1e-9)


def test_gcj02_basemap_is_shifted(browser_run):
    report, *_ = browser_run
    b = report["gcj_basemap"]
    assert b["present"], b
    assert b["errors"] == [], b["errors"]
    assert report["_basemap_tile_requests"] > 0
    assert b["base"][0] == pytest.approx(b["expected"][0], abs=1e-7)
    assert b["base"][1] == pytest.approx(b["expected"][1], abs=1e-7)
    # the shift is real: hundreds of metres near 120°E 30°N
    assert abs(b["base"][0] - b["main"][0]) > 0.002 and b["zoom"][0] == pytest.approx(b["zoom"][1])
