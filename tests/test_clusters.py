"""连片低效用地 on a real PostGIS: blocks across roads, thresholds, figures by role, region, speed,
and the SQL answer checked against the pure rule in ``spatial/clusters.py``."""

from __future__ import annotations

import math
import time

import geopandas as gpd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pyproj import Geod
from shapely.geometry import shape

from app.main import create_app
from bench.bench_tiles import generate_parcels
from spatial.clusters import label_clusters, summarize_clusters
from tests.test_tiles import AREA_MU, T1, T2, client, county, identity  # noqa: F401

T1_BLOCK = sorted(identity(i, j) for i in range(3) for j in range(2))
T2_BLOCK = sorted([identity(4, 0), identity(5, 0), identity(4, 1)])
GEOD = Geod(ellps="GRS80")  # CGCS2000's ellipsoid (to the mm here)


def get(client, county, who=None, **params):
    return client.get("/clusters", params=params, headers=county.headers(who) if who else {})


def test_blocks_bridge_roads_and_respect_min_area(client, county):
    r = get(client, county)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["parameters"]["grades"] == ["C", "D"] and doc["run"]["year"] == 2024
    areas = [round(c["area_mu"]) for c in doc["clusters"]]
    assert areas == [72, 36, 12, 12]
    first, second = doc["clusters"][:2]
    assert first["members"] == T1_BLOCK and first["townships"] == [T1]
    assert second["members"] == T2_BLOCK and second["idle_count"] == 1
    assert first["grades"] == {"C": 3, "D": 3}
    assert first["enterprise_count"] == 7  # six owners + the tenant on the shared parcel
    assert doc["gk_zone_epsg"] == 4549
    # the outline is the block with its inner roads: 3 × 100 m + 2 roads, 2 × 80 m + 1 road
    area, _ = GEOD.geometry_area_perimeter(shape(first["outline"]))
    assert math.isclose(abs(area), 340 * 180, rel_tol=0.01)
    assert not {"total_tax_wan", "mean_tax_per_mu", "gain_wan"} & set(first)  # anonymous: no figures
    big = get(client, county, min_area_mu=20).json()
    assert [c["members"] for c in big["clusters"]] == [T1_BLOCK, T2_BLOCK]
    narrow = get(client, county, gap_m=10).json()  # 20 m roads now break the blocks
    assert max(c["member_count"] for c in narrow["clusters"]) == 1 and len(narrow["clusters"]) == 11


def test_figures_and_gain_for_analysts(client, county):
    doc = get(client, county, "analyst", min_area_mu=20, target_tax_per_mu=10).json()
    t1, t2 = doc["clusters"]
    assert math.isclose(t1["total_tax_wan"], (3 * 6 + 3 * 2) * AREA_MU)
    assert math.isclose(t1["mean_tax_per_mu"], 4.0)
    assert math.isclose(t1["gain_wan"], 6.0 * 72, rel_tol=1e-6)
    assert math.isclose(t2["mean_tax_per_mu"], 2 * 6 * AREA_MU / (3 * AREA_MU))  # idle counts 0
    assert math.isclose(doc["total_gain_wan"], t1["gain_wan"] + t2["gain_wan"])
    viewer = get(client, county, "viewer", target_tax_per_mu=10).json()["clusters"][0]
    assert not {"total_tax_wan", "mean_tax_per_mu", "gain_wan"} & set(viewer)


def test_tax_threshold_needs_analyst_and_filters(client, county):
    r = get(client, county, "viewer", max_tax_per_mu=5)
    assert r.status_code == 403 and "grades=" in r.json()["description"]
    doc = get(client, county, "analyst", max_tax_per_mu=5, include_idle=False).json()
    members = {m for c in doc["clusters"] for m in c["members"]}
    assert members == {identity(i, j) for (i, j) in [(1, 0), (0, 1), (2, 1), (3, 4), (7, 3)]}  # the D land


def test_grades_year_and_errors(client, county):
    only_d = get(client, county, grades="D", include_idle=False).json()
    assert all(set(c["grades"]) == {"D"} for c in only_d["clusters"])
    r = get(client, county, grades="Q")
    assert r.status_code == 400 and "A, B, C, D" in r.json()["description"]
    old = get(client, county, year=2023).json()
    assert old["run"]["id"] == county.runs["2023"]
    r = get(client, county, year=1999)
    assert r.status_code == 404 and "2023, 2024" in r.json()["description"]


def test_region_scope_and_geojson(client, county):
    doc = get(client, county, "analyst_t2").json()
    assert {t for c in doc["clusters"] for t in c["townships"]} == {T2}
    assert doc["clusters"][0]["members"] == T2_BLOCK
    assert get(client, county, "analyst_t2", township=T1).json()["clusters"] == []
    fc = client.get("/clusters", params={"f": "geojson", "min_area_mu": 20})
    assert fc.headers["content-type"].startswith("application/geo+json")
    body = fc.json()
    assert body["type"] == "FeatureCollection" and len(body["features"]) == 2
    feat = body["features"][0]
    assert feat["geometry"]["type"] in ("Polygon", "MultiPolygon") and feat["id"].startswith("LY-")
    assert feat["properties"]["members"] == T1_BLOCK
    same = client.get("/clusters.geojson", params={"min_area_mu": 20}).json()
    assert [f["id"] for f in same["features"]] == [f["id"] for f in body["features"]]  # stable ids


def _best_of(n: int, c: TestClient, params: dict) -> tuple[float, dict]:
    """Fastest of n requests (the machine may be busy with other work): (seconds, body)."""
    best, body = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        r = c.get("/clusters", params=params)
        best = min(best, time.perf_counter() - t)
        assert r.status_code == 200, r.text
        body = r.json()
    return best, body


def _pure_partition(url: str, run_id: int, gap: float, epsg: int):
    eng = sa.create_engine(url)
    with eng.connect() as conn:
        cand = gpd.read_postgis(sa.text(
            "SELECT p.identity_code, p.area_mu, r.tax_per_mu, p.geom FROM parcels p JOIN parcel_ratings r "
            "ON r.identity_code = p.identity_code AND r.run_id = :run WHERE r.grade IN ('C', 'D') OR r.idle"),
            conn, geom_col="geom", params={"run": run_id})
    eng.dispose()
    gk = cand.to_crs(epsg)
    labels = label_clusters(gk, gap)
    return gk, {frozenset(gk.loc[labels == k, "identity_code"]) for k in labels.unique()}


def test_generated_2k_county_fast_and_equal_to_the_pure_rule(db_url):
    eng = sa.create_engine(db_url)
    with eng.begin() as conn:
        run_id = generate_parcels(conn, 2000)
    eng.dispose()
    with TestClient(create_app(database_url=db_url)) as c:
        for gap in (30.0, 60.0):
            params = {"grades": "C,D", "gap_m": gap, "limit": 5000}
            c.get("/clusters", params=params)  # warm the pooled connection
            elapsed, doc = _best_of(3, c, params)
            assert elapsed < 1.0, f"/clusters took {elapsed:.2f} s for 2 000 parcels"
            gk, pure = _pure_partition(db_url, run_id, gap, doc["gk_zone_epsg"])
            assert {frozenset(cl["members"]) for cl in doc["clusters"]} == pure
            assert max(len(p) for p in pure) > 2  # the grid really has multi-parcel blocks
            summary = summarize_clusters(gk, gap)
            assert math.isclose(summary["area_mu"].sum(), doc["total_area_mu"], rel_tol=1e-5)


@pytest.fixture(scope="module")
def county_client(county_db_url):
    with TestClient(create_app(database_url=county_db_url)) as c:
        yield c


def test_sample_county_under_a_second_and_equal_to_the_pure_rule(county_client, county_db_url):
    params = {"grades": "C,D", "include_idle": "true", "gap_m": 30, "min_area_mu": 0, "limit": 5000}
    county_client.get("/clusters", params=params)  # warm the connection (PostGIS/PROJ load once)
    elapsed, doc = _best_of(3, county_client, params)
    assert elapsed < 1.0, f"/clusters took {elapsed:.2f} s for the sample county"
    eng = sa.create_engine(county_db_url)
    with eng.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM parcels")).scalar()
    eng.dispose()
    assert n >= 1500
    gk, pure = _pure_partition(county_db_url, doc["run"]["id"], 30.0, doc["gk_zone_epsg"])
    assert len(gk) > 50
    assert {frozenset(c["members"]) for c in doc["clusters"]} == pure
    summary = summarize_clusters(gk, 30)
    assert summary["member_count"].max() == max(c["member_count"] for c in doc["clusters"])


def test_tax_threshold_compares_at_the_published_precision(county):
    """38.4 万元 on 6.4 亩 is 6.00 万元/亩 as published (float: 5.999999999999999): not below 6."""
    from app.api.clusters import find_clusters

    eng = sa.create_engine(county.url)
    try:
        with eng.connect() as conn:
            run = county.runs["2024"]
            noisy = identity(0, 0)
            conn.execute(sa.text("UPDATE parcel_ratings SET tax_per_mu = :t, idle = false "
                                 "WHERE run_id = :r AND identity_code = :c"), {"t": 38.4 / 6.4, "r": run, "c": noisy})
            assert 38.4 / 6.4 < 6
            members = {m for row in find_clusters(conn, run, max_tax_per_mu=6.0, include_idle=False)
                       for m in row.members}
            assert noisy not in members
            conn.execute(sa.text("UPDATE parcel_ratings SET tax_per_mu = 5.994 "
                                 "WHERE run_id = :r AND identity_code = :c"), {"r": run, "c": noisy})
            members = {m for row in find_clusters(conn, run, max_tax_per_mu=6.0, include_idle=False)
                       for m in row.members}
            assert noisy in members  # 5.99 is below 6
            conn.rollback()
    finally:
        eng.dispose()
