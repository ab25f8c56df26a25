"""Real third-party data through the whole product: import into PostGIS, match, split.

Geometry, names and positions are real (OSM Liechtenstein, French DGFiP cadastre, OSM-derived
Shanghai POIs; see ../shared/data/real/README.md). What such data cannot carry is made here and
said so: OSM has no 宗地代码 and no USCC, so parcels take their OSM id as code and POIs get a
USCC derived from their OSM id (valid check character).
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from app.ingest import import_bundle
from app.pipeline import run_matching
from spatial.identifiers import USCC_CHARSET, make_uscc

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real data not present at {REAL}")
LI_GPKG = REAL / "liechtenstein_osm/li_osm.gpkg"


def _uscc_from_id(osm_id: int) -> str:
    digits = str(int(osm_id)).rjust(9, "0")[-9:]
    return make_uscc(f"91090000{digits}")


def _li_bundle(root: Path) -> Path:
    root.mkdir(parents=True)
    land = gpd.read_file(LI_GPKG, layer="landuse_industrial")
    land["parcel_code"] = "LI" + land["osm_way_id"].fillna(land["osm_id"]).astype("int64").astype(str)
    land[["parcel_code", "name", "geometry"]].to_file(root / "parcels.gpkg", driver="GPKG")
    bld = gpd.read_file(LI_GPKG, layer="buildings")
    bld["building_id"] = "B" + bld["osm_way_id"].fillna(bld["osm_id"]).astype("int64").astype(str)
    bld = bld.drop_duplicates("building_id")
    bld[["building_id", "geometry"]].to_file(root / "buildings.gpkg", driver="GPKG")
    poi = gpd.read_file(LI_GPKG, layer="poi_points")
    poi = poi[poi["name"].notna()].copy()
    pd.DataFrame({
        "uscc": [_uscc_from_id(i) for i in poi["osm_id"]],
        "name": poi["name"], "lon": poi.geometry.x, "lat": poi.geometry.y, "coord_sys": "wgs84",
    }).drop_duplicates("uscc").to_csv(root / "enterprises.csv", index=False)
    return root


def test_liechtenstein_industrial_land_matches_its_real_pois(engine, tmp_path, settings):
    bundle = _li_bundle(tmp_path / "li")
    report = import_bundle(engine, bundle, settings=settings)
    assert report.errors == 0, report.rejects.head()
    assert report.counts["parcels"]["inserted"] == 14
    with engine.connect() as conn:
        ha = conn.execute(sa.text("SELECT sum(area_m2) / 1e4 FROM parcels")).scalar_one()
    assert ha == pytest.approx(72.5, abs=0.3)  # the README's 72.5 ha, measured in UTM 32N here

    match = run_matching(engine, settings=settings)
    # The expected answer, computed independently with geopandas on the source files:
    land = gpd.read_file(LI_GPKG, layer="landuse_industrial")
    poi = gpd.read_file(LI_GPKG, layer="poi_points")
    poi = poi[poi["name"].notna()]
    inside = gpd.sjoin(poi, land[["geometry"]].assign(geometry=land.buffer(-1e-7)), predicate="within")
    expected = {_uscc_from_id(i) for i in inside["osm_id"]}
    assert len(expected) >= 4
    with engine.connect() as conn:
        pip = {r[0] for r in conn.execute(sa.text(
            "SELECT uscc FROM land_links WHERE method IN ('point_in_polygon', 'building')"))}
        names = dict(conn.execute(sa.text("SELECT uscc, name FROM enterprises")).all())
        shares = conn.execute(sa.text(
            "SELECT identity_code, sum(share), sum(attributed_area_m2), max(p.area_m2) FROM land_links "
            "JOIN parcels p USING (identity_code) GROUP BY identity_code")).all()
    assert expected <= pip
    assert any("Oerlikon Balzers" in names[u] for u in expected)
    with engine.connect() as conn:
        land_names = set(conn.execute(sa.text("SELECT attrs->>'name' FROM parcels")).scalars())
    assert "Hilti Nendeln" in land_names  # the source's own columns are kept
    for code, share, area, parcel_area in shares:
        assert share == pytest.approx(1.0, abs=1e-9), code
        assert area == pytest.approx(parcel_area, rel=1e-9), code
    assert match.quality["enterprises_without_land"] == len(names) - len(
        {u for u in names if u in pip or u in _snapped(engine)})


def _snapped(engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.text("SELECT uscc FROM land_links"))}


def test_liechtenstein_reimport_keeps_identity_codes(engine, tmp_path, settings):
    bundle = _li_bundle(tmp_path / "li")
    import_bundle(engine, bundle, settings=settings)
    with engine.connect() as conn:
        first = conn.execute(sa.text("SELECT identity_code FROM parcels ORDER BY 1")).scalars().all()
    # the same land written in reverse order is the same land
    p = gpd.read_file(bundle / "parcels.gpkg")
    p.iloc[::-1].to_file(bundle / "parcels.gpkg", driver="GPKG")
    again = import_bundle(engine, bundle, settings=settings)
    assert again.counts["parcels"] == {"inserted": 0, "updated": 0, "unchanged": 14}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT identity_code FROM parcels ORDER BY 1")).scalars().all() == first


def test_french_cadastre_areas_and_buildings_in_postgis(engine, tmp_path, settings):
    overrides = {
        "parcels": {"path": str(REAL / "fr_cadastre_edigeo/cadastre_25354.gpkg"), "layer": "parcelle",
                    "columns": {"IDU": "parcel_code", "SUPF": "registered_area_m2"}},
        "buildings": {"path": str(REAL / "fr_cadastre_edigeo/cadastre_25354.gpkg"), "layer": "batiment",
                      "columns": {"OBJECT_RID": "building_id"}},
        "enterprises": {"required": False},
    }
    tmp_path.joinpath("empty").mkdir()
    report = import_bundle(engine, tmp_path / "empty", overrides=overrides, settings=settings)
    assert report.counts["parcels"]["inserted"] == 511
    assert report.counts["buildings"]["inserted"] == 252
    with engine.connect() as conn:
        ratio = conn.execute(sa.text(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY area_m2 / registered_area_m2) FROM parcels")).scalar_one()
        # PostGIS's own ellipsoidal area agrees with ours (computed in UTM 32N by spatial/).
        drift = conn.execute(sa.text(
            "SELECT max(abs(ST_Area(geom::geography) / area_m2 - 1)) FROM parcels")).scalar_one()
        extra = conn.execute(sa.text("SELECT attrs ? 'TEX' FROM parcels LIMIT 1")).scalar_one()
    assert 0.99 < ratio < 1.01
    assert drift < 2e-3
    assert extra  # the cadastre's own columns are kept
    match = run_matching(engine, settings=settings)
    assert match.links == 0
    assert match.quality["idle_land"] == 511


def test_shanghai_chinese_names_round_trip_through_postgis(engine, tmp_path, settings):
    src = REAL / "cn_osm_tilezen/shanghai_pois.geojson"
    raw = json.loads(src.read_text(encoding="utf-8"))
    named = [f for f in raw["features"] if f["properties"].get("name") and f["geometry"]["type"] == "Point"]
    rng = np.random.default_rng(7)
    body = ["91310000" + "".join(rng.choice(list(USCC_CHARSET), 9)) for _ in named]
    root = tmp_path / "sh"
    root.mkdir()
    ents = pd.DataFrame({
        "统一社会信用代码": [make_uscc(b) for b in body],
        "企业名称": [f["properties"]["name"] for f in named],
        "经度": [f["geometry"]["coordinates"][0] for f in named],
        "纬度": [f["geometry"]["coordinates"][1] for f in named],
        "坐标系": "wgs84",
    }).drop_duplicates("统一社会信用代码")
    ents.to_csv(root / "enterprises.csv", index=False, encoding="gb18030")  # as Excel on a Chinese PC saves it
    land = gpd.read_file(REAL / "cn_osm_tilezen/shanghai_landuse.geojson")
    land = land[land.geom_type.isin(["Polygon", "MultiPolygon"])].copy()
    land["宗地代码"] = [f"310115001001GB{i:05d}" for i in range(1, len(land) + 1)]
    land["权利人"] = land["name"]
    land[["宗地代码", "权利人", "geometry"]].to_file(root / "parcels.geojson", driver="GeoJSON")
    report = import_bundle(engine, root, settings=settings)
    assert report.counts["enterprises"]["inserted"] == len(ents)
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT uscc, name FROM enterprises")).all())
        owners = set(conn.execute(sa.text("SELECT owner_name FROM parcels WHERE owner_name IS NOT NULL")).scalars())
    assert stored == dict(zip(ents["统一社会信用代码"], ents["企业名称"]))
    assert any("\u4e00" <= ch <= "\u9fff" for name in stored.values() for ch in name)
    assert owners == {n for n in land["name"] if isinstance(n, str)}
    run_matching(engine, settings=settings)
