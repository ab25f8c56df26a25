"""Per-year tables partitioned by year (migration 0007, issue 16), on a real PostGIS.

The county of tests/test_land_years.py (2024 and 2025 deliveries, matched and evaluated) is the
data: migrating it down to 0006 and up again keeps every row and the API's answers; each year's
rows sit in that year's partition; a year's reads are pruned to it; a new year gets its partitions
when it first arrives, rows written before that move into them.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pyproj import Transformer

from app import db, store
from app.api.layers import PARCELS
from app.auth import create_key
from app.evaluation import evaluate_year
from app.models import YEAR_PARTITIONED
from tests.test_land_years import GK, cell, pcode, two_years, uscc  # noqa: F401 (fixture)
from tests.test_tiles import features_in, lonlat_to_tile

RATINGS = ("enterprise_ratings", "parcel_ratings")


def _rows(conn, table: str, drop_year: bool = False) -> list[tuple]:
    cols = [c["name"] for c in sa.inspect(conn).get_columns(table) if not (drop_year and c["name"] == "year")]
    sel = ", ".join(f"ST_AsEWKB({c})" if c == "geom" else f"{c}::text" if c in ("indicators", "adjustments",
                    "explanation", "warnings") else c for c in cols if c != "created_at")
    return sorted((tuple(r) for r in conn.execute(sa.text(f"SELECT {sel} FROM {table}"))), key=repr)


def _snapshot(eng, drop_year: bool = False) -> dict[str, list[tuple]]:
    with eng.connect() as conn:
        return {t: _rows(conn, t, drop_year and t in RATINGS) for t in YEAR_PARTITIONED}


def _api(eng, key: str) -> dict:
    """What clients see: items (both years, three layers), a tile per year, both archives."""
    from app.main import create_app

    with eng.begin() as conn:  # nothing served from a cache built before
        db.bump_data_version(conn)
    out = {}
    lon, lat = Transformer.from_crs(GK, 4490, always_xy=True).transform(*cell(2).centroid.coords[0])
    x, y = lonlat_to_tile(lon, lat, 16)
    h = {"X-API-Key": key}
    with TestClient(create_app(database_url=eng.url.render_as_string(hide_password=False))) as client:
        for layer in ("parcels", "enterprises", "sublots"):
            for year in (2024, 2025):
                r = client.get(f"/collections/{layer}/items", params={"limit": 1000, "year": year}, headers=h)
                assert r.status_code == 200, r.text
                out[layer, year] = r.json()["features"]
        for year in (2024, 2025):
            tile = features_in(client.get(f"/tiles/parcels/16/{x}/{y}.pbf", params={"year": year}, headers=h))
            out["tile", year] = sorted((k, json.dumps(f["properties"], sort_keys=True)) for k, f in tile.items())
        for path in (f"/parcels/R-{pcode(1)}", f"/parcels/R-{pcode(103)}", f"/enterprises/{uscc(1)}"):
            r = client.get(path, headers=h)
            assert r.status_code == 200, r.text
            out[path] = r.json()
    return out


def _partition_of(conn, table: str) -> dict[int, set[str]]:
    rows = conn.execute(sa.text(f"SELECT DISTINCT year, tableoid::regclass::text FROM {table}")).all()
    out: dict[int, set[str]] = {}
    for y, part in rows:
        out.setdefault(y, set()).add(part)
    return out


def test_migration_keeps_every_row_and_the_api_answers_the_same(two_years):
    eng = two_years["engine"]
    evaluate_year(eng, 2025, "zhejiang_default", publish=True)
    with eng.begin() as conn:
        key = create_key(conn, "t", "analyst")
    before = _snapshot(eng)
    api_before = _api(eng, key)
    assert all(len(before[t]) for t in YEAR_PARTITIONED)
    assert len(api_before["parcels", 2024]) and any(f["properties"].get("grade") for f in api_before["parcels", 2025])

    url = eng.url.render_as_string(hide_password=False)
    db.downgrade(url, "0006")
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT relkind FROM pg_class WHERE relname = 'land_links'")).scalar() == "r"
        assert conn.execute(sa.text("SELECT to_regclass('land_links_y2024')")).scalar() is None
    assert _snapshot(eng) == _snapshot_without_year(before)

    db.upgrade(url)  # a 0006 database holding data, migrated to 0007
    assert _snapshot(eng) == before  # the ratings' year is refilled from their runs
    with eng.connect() as conn:
        for t in YEAR_PARTITIONED:
            assert conn.execute(sa.text("SELECT relkind FROM pg_class WHERE relname = :t"), {"t": t}).scalar() == "p"
            parts = _partition_of(conn, t)
            assert parts.keys() == {2024, 2025}, (t, parts)
            assert parts == {y: {f"{t}_y{y}"} for y in (2024, 2025)}, (t, parts)
    assert _api(eng, key) == api_before


def _snapshot_without_year(snap: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """The 0006 form of a snapshot: ratings without their year column (the last one)."""
    return {t: sorted((r[:-1] for r in rows), key=repr) if t in RATINGS else rows for t, rows in snap.items()}


def _plan(conn, sql: str, params: dict) -> str:
    rows = conn.execute(sa.text(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}"), params).scalars()
    return "\n".join(rows)


def _scanned(plan: str, alias: str) -> set[str]:
    """Partitions a plan really read under ``alias`` (pruned ones are absent or never executed)."""
    return {m[0] for m in re.findall(rf" on (\w+) {alias}(?:_\d+)? \((actual|never)", plan) if m[1] == "actual"}


def test_a_years_reads_are_pruned_to_its_partition(two_years):
    from app.api.layers import ENTERPRISES

    eng = two_years["engine"]
    r25 = evaluate_year(eng, 2025, "zhejiang_default", publish=True)
    with eng.connect() as conn:
        plan = _plan(conn, "SELECT * FROM land_links l WHERE year = :y AND uscc = :u", {"y": 2024, "u": uscc(1)})
        assert _scanned(plan, "l") == {"land_links_y2024"}, plan
        assert "land_links_y2025" not in plan and "land_links_default" not in plan  # pruned when planned
        # ratings: a year's list (exports, lists, history) is pruned to its year's partition
        plan = _plan(conn, "SELECT r.identity_code, r.grade FROM parcel_ratings r WHERE r.year = :y",
                     {"y": 2025})
        assert _scanned(plan, "r") == {"parcel_ratings_y2025"}, plan
        # the layers read ratings by run id (the run fixes the year): one probe of each year's
        # run_id index, the other years' return nothing at once
        plan = _plan(conn, f"SELECT p.identity_code, r.grade FROM {PARCELS.from_sql}", {"run_id": r25.run_id})
        assert "parcel_ratings_y2025_pkey" in plan, plan
        # enterprises: their ratings and merged land (derived_year_sql) of 2025 only
        plan = _plan(conn, f"SELECT e.uscc, r.grade, el.land_class FROM {ENTERPRISES.from_sql}",
                     {"run_id": r25.run_id})
        assert _scanned(plan, "el") == {"enterprise_land_y2025"}, plan


def test_a_new_year_gets_its_partitions_and_rows_before_them_move_in(engine):
    link = {"identity_code": "R-1", "uscc": "U1", "role": "owner_occupier", "method": "owner_code", "confidence": 1.0}
    with engine.begin() as conn:
        # written without the step (by hand): the default partition takes it
        conn.execute(sa.text("INSERT INTO land_links (year, identity_code, uscc, role, method, confidence) "
                             "VALUES (2031, 'R-0', 'U0', 'owner_occupier', 'owner_code', 1)"))
        assert _partition_of(conn, "land_links") == {2031: {"land_links_default"}}
        # a writer of a new year: its partitions are made first, the early row moves in
        store.replace_all(conn, "land_links", pd.DataFrame([{**link, "year": 2031}, {**link, "year": 2032}]),
                          where="year = 2032")
    with engine.connect() as conn:
        assert _partition_of(conn, "land_links") == {2031: {"land_links_y2031"}, 2032: {"land_links_y2032"}}
        assert conn.execute(sa.text("SELECT count(*) FROM land_links")).scalar() == 3
        for t in YEAR_PARTITIONED:  # every per-year table got the years
            assert conn.execute(sa.text(f"SELECT to_regclass('{t}_y2032') IS NOT NULL")).scalar(), t
        # undated rows (year 0) stay in the default partition; a second call makes nothing
        assert conn.execute(sa.text("SELECT mujun_ensure_year(0) + mujun_ensure_year(2032)")).scalar() == 0


def test_ratings_carry_their_runs_year(two_years):
    eng = two_years["engine"]
    with eng.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT r.year, e.year, count(*) FROM parcel_ratings r JOIN evaluation_runs e ON e.id = r.run_id "
            "GROUP BY 1, 2")).all()
        assert rows and all(a == b for a, b, _ in rows)
        assert _partition_of(conn, "enterprise_ratings") == {2024: {"enterprise_ratings_y2024"}}


@pytest.mark.parametrize("table", RATINGS)
def test_a_rating_written_without_year_is_still_read_by_its_run(engine, table):
    """Rows written by hand without ``year`` (0): default partition, still shown with their run."""
    subject = "uscc" if table == "enterprise_ratings" else "identity_code"
    with engine.begin() as conn:
        run = conn.execute(sa.text(
            "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "run_hash, status) VALUES (2024, 's', '1', 'h', 'f', 'r', 'published') RETURNING id")).scalar()
        conn.execute(sa.text(f"INSERT INTO {table} (run_id, {subject}, grade) VALUES (:r, 'X', 'A')"), {"r": run})
        assert _partition_of(conn, table) == {0: {f"{table}_default"}}
        assert conn.execute(sa.text(f"SELECT grade FROM {table} WHERE run_id = :r"), {"r": run}).scalar() == "A"
