"""Render at publish/import (app/render.py) and the async fast path of pre-built tiles
(app/api/tiles.py ``CachedTiles``), on a real PostGIS.

- after a publish every pre-built tile is the current version and byte-identical to rendering it
  from the tables; only the tiles touched by the changed parcels are rendered again;
- a land change (as an import writes it) re-renders the tiles at the old and the new place only;
- the fast path answers pre-built tiles (same bytes and headers as the server that renders every
  tile), and after a data change the next request is never the old tile;
- an import of the sample county with rendering on leaves its (ungraded) pyramid built.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import db, render
from app.api import tiles
from app.api.layers import LAYERS
from app.auth import Principal
from app.main import create_app
from app.settings import Settings
from bench.bench_tiles import generate_parcels

N = 900  # a 30 × 30 grid of parcels, ~4.8 × 3.9 km


@pytest.fixture
def grid(db_url, tmp_path):
    eng = sa.create_engine(db_url)
    with eng.begin() as conn:
        run = generate_parcels(conn, N)
    s = Settings(render_at_publish=True, data_dir=tmp_path / "var", database_url=db_url)
    yield eng, run, s
    eng.dispose()


def _cached(eng, query="run=None&year=None"):
    with eng.connect() as conn:
        return conn.execute(sa.text(
            "SELECT z, x, y, data_version, mvt FROM tile_cache WHERE layer = 'parcels' AND scope LIKE 'public|%' "
            "AND query = :q ORDER BY z, x, y"), {"q": query}).all()


def _assert_all_current_and_identical(eng, query="run=None&year=None", run=None):
    with eng.connect() as conn:
        dv = conn.execute(sa.text("SELECT version FROM data_version")).scalar()
        rows = _cached(eng, query)
        assert rows and {r.data_version for r in rows} == {dv}
        for r in rows:
            fresh = tiles.render_tile(conn, LAYERS["parcels"], Principal("public"), r.z, r.x, r.y, run, None).mvt
            assert bytes(r.mvt or b"") == bytes(fresh or b""), (r.z, r.x, r.y)
    return rows


def _new_run(eng, old_run: int, changed: list[int]) -> int:
    """A draft copy of ``old_run`` where the parcels of grid index ``changed`` change grade."""
    with eng.begin() as conn:
        new = conn.execute(sa.text(
            "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "run_hash, status, scheme) SELECT year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "'r2', 'draft', scheme FROM evaluation_runs WHERE id = :r RETURNING id"), {"r": old_run}).scalar()
        cols = [c for c in conn.execute(sa.text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'parcel_ratings' "
            "AND table_schema = 'public'")).scalars() if c not in ("run_id", "id")]
        conn.execute(sa.text(f"INSERT INTO parcel_ratings (run_id, {', '.join(cols)}) "
                             f"SELECT :n, {', '.join(cols)} FROM parcel_ratings WHERE run_id = :r"),
                     {"n": new, "r": old_run})
        conn.execute(sa.text("UPDATE parcel_ratings SET grade = CASE WHEN grade = 'D' THEN 'A' ELSE 'D' END, "
                             "colour = CASE WHEN grade = 'D' THEN '绿' ELSE '红' END WHERE run_id = :n "
                             "AND right(identity_code, 6)::int = ANY(:ids)"), {"n": new, "ids": changed})
        db.bump_data_version(conn)
    return new


def test_publish_and_draft_keep_the_pyramid_current_and_identical(grid, monkeypatch):
    eng, run, s = grid
    first = render.render_pyramid(eng)
    assert first["built"] > 40 and first["touched"] is None
    total = len(_assert_all_current_and_identical(eng))

    # a draft run changes no public tile: nothing is rendered, every tile is re-stamped
    calls = []
    real = tiles.render_tile
    monkeypatch.setattr(tiles, "render_tile", lambda *a, **k: calls.append(a[3:6]) or real(*a, **k))
    with render.changes(eng, settings=s) as out:
        new = _new_run(eng, run, [0])
    st = out["tiles"]["parcels"]
    assert (st["changed_features"], st["touched"], st["built"], len(calls)) == (0, 0, 0, 0)
    assert st["restamped"] == total
    monkeypatch.undo()
    _assert_all_current_and_identical(eng)

    # publishing it: every feature carries the new run_id, so every tile is rendered again
    from app.evaluation import publish_run

    said = []
    publish_run(eng, new, progress=said.append, settings=s)
    assert any("瓦片" in t for t in said)
    assert len(_assert_all_current_and_identical(eng)) >= total  # (+ empty tiles within the buffer)
    with eng.connect() as conn:  # rows of older versions are gone
        assert conn.execute(sa.text("SELECT count(*) FROM tile_cache WHERE data_version < "
                                    "(SELECT version FROM data_version)")).scalar() == 0


def test_land_change_rerenders_old_and_new_place(grid, monkeypatch):
    eng, run, s = grid
    render.render_pyramid(eng)
    calls = []
    real = tiles.render_tile
    monkeypatch.setattr(tiles, "render_tile", lambda *a, **k: calls.append(a[3:6]) or real(*a, **k))
    # move one parcel ~2 km east, the way an import writes land: one transaction, one version bump
    with render.changes(eng, settings=s) as out, eng.begin() as conn:
        conn.execute(sa.text("UPDATE parcels SET geom = ST_Translate(geom, 0.02, 0) "
                             "WHERE right(identity_code, 6)::int = 5"))
        db.bump_data_version(conn)
    monkeypatch.undo()
    st = out["tiles"]["parcels"]
    assert st["changed_features"] == 2  # the old and the new version of the parcel
    assert 17 <= st["touched"] <= 4 * 17 and st["restamped"] > 0
    assert 17 <= st["built"] == len(calls) <= st["touched"]  # only touched tiles are rendered
    _assert_all_current_and_identical(eng)


def test_fast_path_serves_prebuilt_tiles_and_never_a_stale_one(grid, monkeypatch):
    eng, run, s = grid
    render.render_pyramid(eng)
    z, x, y = next((r.z, r.x, r.y) for r in _cached(eng) if r.z == 16 and r.mvt)
    url = f"/tiles/parcels/{z}/{x}/{y}.pbf"
    dyn_app = create_app(Settings(tile_cache=False, render_at_publish=False), database_url=s.database_url)
    with TestClient(create_app(s, database_url=s.database_url)) as c, TestClient(dyn_app) as d:
        want = d.get(url)
        from app import cache

        def no_sync_read(*a, **k):
            raise AssertionError("the sync route was used for a pre-built tile")

        monkeypatch.setattr(cache, "read_tile", no_sync_read)
        got = c.get(url)
        assert got.status_code == 200 and got.content == want.content
        for h in ("content-type", "content-length", "etag", "cache-control", "vary"):
            assert got.headers[h] == want.headers[h], h
        assert c.get(url, headers={"If-None-Match": got.headers["etag"]}).status_code == 304
        # the web map's ?run=<shown run> is answered from the same pre-built row, same bytes
        by_run = c.get(f"/tiles/parcels/{z}/{x}/{y}.pbf?run={run}")
        want_run = d.get(f"/tiles/parcels/{z}/{x}/{y}.pbf?run={run}")
        assert by_run.content == want_run.content == want.content
        assert by_run.headers["etag"] == want_run.headers["etag"] != want.headers["etag"]
        with pytest.raises(AssertionError, match="sync route"):
            c.get(f"/tiles/parcels/{z}/{x}/{y}.pbf?run={run + 1}")  # not the run shown: not pre-built
        # a data change without rendering: the next request must not be the old tile
        with eng.begin() as conn:
            conn.execute(sa.text("UPDATE parcel_ratings SET grade = 'A', colour = '绿' WHERE run_id = :r"), {"r": run})
            db.bump_data_version(conn)
        with pytest.raises(AssertionError, match="sync route"):
            c.get(url)  # the cached row is stale: the fast path passes it on to the route
        monkeypatch.undo()
        after = c.get(url)
        assert after.content == d.get(url).content != want.content
        assert after.headers["etag"] != got.headers["etag"]


def test_import_with_rendering_builds_the_grey_pyramid(db_url, county_bundle, tmp_path):
    """Land imported, nothing evaluated yet: the public pyramid is there at once (ungraded land)."""
    from app.ingest import import_bundle

    s = Settings(render_at_publish=True, data_dir=tmp_path / "var", database_url=db_url)
    eng = sa.create_engine(db_url)
    said = []
    import_bundle(eng, county_bundle, settings=s, progress=lambda t, *a: said.append(t))
    assert any("瓦片" in t for t in said)
    rows = _assert_all_current_and_identical(eng)
    assert len(rows) > 50
    with eng.connect() as conn:  # and the GeoJSON of every collection and class (app.feature_cache)
        assert conn.execute(sa.text("SELECT count(*) FROM feature_cache_state WHERE data_version = "
                                    "(SELECT version FROM data_version) AND features > 0")).scalar() >= 3
    eng.dispose()


def test_web_publish_renders_in_the_background(grid):
    """POST /workflow/runs/{id}/publish answers at once; the pyramid of the new run follows."""
    import time

    from app.auth import create_key

    eng, run, s = grid
    render.render_pyramid(eng)
    new = _new_run(eng, run, [3])
    with eng.begin() as conn:
        key = create_key(conn, "pub", "analyst")
    with TestClient(create_app(s, database_url=s.database_url)) as c:
        r = c.post(f"/workflow/runs/{new}/publish", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with eng.connect() as conn:
                if conn.execute(sa.text("SELECT count(*) FILTER (WHERE run_id = :n) = count(*) AND count(*) > 0 "
                                        "AND min(data_version) = (SELECT version FROM data_version) FROM tile_cache"),
                                {"n": new}).scalar():
                    break
            time.sleep(0.5)
    _assert_all_current_and_identical(eng)
