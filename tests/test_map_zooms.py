"""The web map opens coloured at every zoom (issue 17): headless Chromium, real uvicorn server.

``tests/browser/zoom_check.mjs`` opens ``/map`` at 1280×900, 1920×1080, 1024×640 and 800×500 (there
the sample county opens below zoom 10, where tiles used to start — as a larger county does in any
window) and, without any zoom or pan, counts screenshot pixels in each grade's colour until land
is drawn. Before overview tiles a
map opened below zoom 10 stayed blank until the user zoomed in.

Two databases: the sample county evaluated (grades in their colours), and the same county only
imported — no evaluation yet — whose land must show in the ungraded grey.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import sqlalchemy as sa

from app.api.classification import for_run
from app.auth import create_key
from app.main import create_app
from app.settings import Settings
from tests.conftest import TEMPLATE
from tests.test_web_map import BROWSER_DIR, _need_browser, _serve, _with_db

pytestmark = pytest.mark.slow

SIZES = "1280x900,1920x1080,1024x640,800x500"
BUDGET_MS = 5000


def _check(base: str, key: str, colours: dict, work, artifacts, prefix: str) -> dict:
    cmd = ["node", str(BROWSER_DIR / "zoom_check.mjs"), "--base", base, "--key", key,
           "--colours", json.dumps(colours), "--sizes", SIZES, "--budget", str(BUDGET_MS),
           "--out", str(artifacts), "--profile", str(work / f"profile_{prefix}"), "--prefix", prefix]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=BROWSER_DIR)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"zoom_check failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    (artifacts / f"{prefix}_check.json").write_text(json.dumps(report, indent=1))
    return report


@pytest.fixture(scope="module")
def imported_only_url(_template, pg_admin_url, county_bundle, tmp_path_factory):
    """The sample county imported (land and enterprises), never evaluated."""
    from app.ingest import import_bundle

    name = f"mujun_grey_{uuid.uuid4().hex[:8]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    url = _with_db(pg_admin_url, name)
    eng = sa.create_engine(url)
    import_bundle(eng, county_bundle, settings=Settings(data_dir=tmp_path_factory.mktemp("grey"), database_url=url))
    eng.dispose()
    yield url
    from app import db
    db._cached_engine.cache_clear()
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _serve_db(url: str, tmp_path_factory):
    return _serve(create_app(Settings(data_dir=tmp_path_factory.mktemp("zoomserver")), database_url=url))


def test_map_opens_coloured_by_grade_at_every_window_size(county_db_url, artifacts, tmp_path_factory):
    _need_browser()
    eng = sa.create_engine(county_db_url)
    with eng.begin() as conn:
        key = create_key(conn, "zoom-test", "analyst")
        cls, _run = for_run(conn)
    eng.dispose()
    colours = {c.grade: c.hex for c in cls.classes}
    base, stop = _serve_db(county_db_url, tmp_path_factory)
    try:
        report = _check(base, key, colours, tmp_path_factory.mktemp("zoom"), artifacts, "graded")
    finally:
        stop()
    zooms = []
    for v in report["views"]:
        where = f"{v['width']}×{v['height']} (zoom {v['zoom']:.2f})"
        assert v["errors"] == [], (where, v["errors"])
        assert v["ms_to_colour"] is not None and v["ms_to_colour"] <= BUDGET_MS, (where, v["ms_to_colour"], v["counts"])
        graded = {g: n for g, n in v["counts"].items() if n >= 20}
        assert len(graded) >= 3, (where, v["counts"])  # coloured by tier, not one flat colour
        assert all(t["status"] in (200, 204, 304) for t in v["tiles"]), (where, v["tiles"])
        zooms.append(v["zoom"])
    # at least one window opens below zoom 10: the overview tiles are what is drawn there
    low = [v for v in report["views"] if v["zoom"] < 10]
    assert low, zooms
    assert all(any(t["z"] < 10 and t["status"] == 200 for t in v["tiles"]) for v in low)


def test_imported_land_without_evaluation_is_grey(imported_only_url, artifacts, tmp_path_factory):
    _need_browser()
    eng = sa.create_engine(imported_only_url)
    with eng.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM evaluation_runs")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM parcels")).scalar() > 0
        key = create_key(conn, "zoom-test", "analyst")
        cls, _run = for_run(conn)
    eng.dispose()
    colours = {"ungraded": cls.ungraded_hex, **{c.grade: c.hex for c in cls.classes}}
    base, stop = _serve_db(imported_only_url, tmp_path_factory)
    try:
        report = _check(base, key, colours, tmp_path_factory.mktemp("grey"), artifacts, "ungraded")
    finally:
        stop()
    for v in report["views"]:
        where = f"{v['width']}×{v['height']} (zoom {v['zoom']:.2f})"
        assert v["errors"] == [], (where, v["errors"])
        assert v["ms_to_colour"] is not None and v["ms_to_colour"] <= BUDGET_MS, (where, v["counts"])
        assert v["counts"]["ungraded"] >= 200, (where, v["counts"])
        assert sum(n for g, n in v["counts"].items() if g != "ungraded") < 0.01 * v["counts"]["ungraded"], v["counts"]
