"""Real third-party data through the same importer (``read_bundle`` with ``overrides``).

French cadastre (DGFiP, via 3liz/QgisCadastrePlugin fixtures), Liechtenstein OSM, Shanghai Tilezen
POIs with Chinese names. See ../shared/data/real/README.md. Skipped only when that directory is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from spatial.io import read_bundle
from spatial.validate import validate_bundle

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real data not present at {REAL}")

FR = REAL / "fr_cadastre_edigeo"
LI = REAL / "liechtenstein_osm"
SH = REAL / "cn_osm_tilezen"

FR_OVERRIDES = {
    "parcels": {"path": "cadastre_25354.gpkg", "layer": "parcelle",
                "columns": {"IDU": "parcel_code", "SUPF": "registered_area_m2"}},
    "buildings": {"path": "cadastre_25354.gpkg", "layer": "batiment", "columns": {"OBJECT_RID": "building_id"}},
    "enterprises": {"required": False},
}


@pytest.fixture(scope="module")
def fr():
    return read_bundle(FR, overrides=FR_OVERRIDES)


def test_french_parcels_count_and_columns(fr):
    p = fr.tables["parcels"]
    assert len(p) == 511
    assert p.crs.to_epsg() == 4490
    assert fr.source_crs["parcels"] == "EPSG:4326"
    assert fr.column_map["cadastre_25354.gpkg#parcelle"] == {"IDU": "parcel_code", "SUPF": "registered_area_m2"}
    # unknown columns are kept with the x_ prefix
    assert {"x_TEX", "x_COAR", "x_INDP", "x_CREAT_DATE"} <= set(p.columns)
    assert p["parcel_code"].is_unique
    assert list(p["_row"][:3]) == [1, 2, 3]
    assert len(fr.tables["buildings"]) == 252


def test_french_areas_match_supf(fr):
    """Graphical area in Lambert-93 (EPSG:2154) vs the official 'contenance' SUPF.

    Observed: median ratio 0.9992; |difference| ≤ 1 % for 50 %, ≤ 5 % for 86 %, ≤ 10 % for 95 % of
    parcels; extremes 0.76 and 2.45 (small parcels, where SUPF is the legal area, not a measured one).
    """
    p = fr.tables["parcels"]
    area = p.to_crs(2154).area
    rel = (area - p["registered_area_m2"]).abs() / p["registered_area_m2"]
    assert 0.99 < float(np.median(area / p["registered_area_m2"])) < 1.01
    assert (rel <= 0.05).mean() >= 0.85
    assert (rel <= 0.10).mean() >= 0.94
    # the UTM zone (32N) gives the same picture: its areas differ from Lambert-93 by a uniform ~0.19 %
    # (the two projections' scale factors at 6.35°E, 47.4°N), far below the SUPF spread
    utm = p.to_crs(p.estimate_utm_crs()).area
    assert float(np.median((utm / area - 1).abs())) < 3e-3


def test_french_validation_keeps_every_parcel(fr):
    v = validate_bundle(fr)
    assert len(v.tables["parcels"]) == 511
    assert len(v.tables["buildings"]) == 252
    assert v.errors.empty, v.messages()[:5]
    # French ids are not GB/T 37346 codes: a warning each, not a rejection
    assert (v.warnings["reason"].str.contains("GB/T 37346")).sum() == 511


def test_liechtenstein_industrial_land_and_pois():
    b = read_bundle(LI, overrides={
        "parcels": {"path": "li_osm.gpkg", "layer": "landuse_industrial", "columns": {"osm_id": "parcel_code"}},
        "defacto": {"path": "li_osm.gpkg", "layer": "landuse_industrial"},
        "enterprises": {"path": "li_osm.gpkg", "layer": "poi_points", "columns": {"osm_id": "uscc"}},
    })
    d, e = b.tables["defacto"], b.tables["enterprises"]
    assert len(d) == 14
    ha = d.to_crs(d.estimate_utm_crs()).area.sum() / 1e4
    assert ha == pytest.approx(72.5, abs=0.05)
    assert len(e) == 154 and e.crs.to_epsg() == 4490
    assert e.geometry.notna().all()
    # One POI (Kulturzentrum Gasometer) lies exactly on an industrial boundary; strictly inside are 4.
    metric = d.estimate_utm_crs()
    inner = d.to_crs(metric).buffer(-0.01)
    named = e[e["name"].notna()].to_crs(metric)
    inside = gpd.sjoin(named, gpd.GeoDataFrame(geometry=inner), predicate="within")
    assert sorted(inside["name"]) == sorted([
        "Balzers (FL) Oerlikon Balzers AG", "Private Universität im Fürstentum Liechtenstein (UFL)",
        "Sigis Velo-Shop Anstalt", "Uniwash Balzers"])


def test_liechtenstein_geojson_copies():
    b = read_bundle(LI, overrides={
        "parcels": {"path": "landuse_industrial.geojson", "columns": {"osm_id": "parcel_code"}},
        "enterprises": {"path": "poi_points.geojson", "columns": {"osm_id": "uscc"}},
    })
    p, e = b.tables["parcels"], b.tables["enterprises"]
    assert (len(p), len(e)) == (14, 154)
    inside = gpd.sjoin(e[e["name"].notna()], p[["geometry"]], predicate="within")
    assert len(inside) == 4


def test_shanghai_chinese_names_round_trip():
    b = read_bundle(SH, overrides={
        "parcels": {"path": "shanghai_landuse.geojson", "columns": {"id": "parcel_code"}},
        "enterprises": {"path": "shanghai_pois.geojson", "columns": {"id": "uscc"}},
    })
    e = b.tables["enterprises"]
    with open(SH / "shanghai_pois.geojson", encoding="utf-8") as fh:
        feats = json.load(fh)["features"]
    assert len(e) == len(feats) == 494
    expected = [f["properties"].get("name") for f in feats]
    got = [None if pd.isna(n) else n for n in e["name"]]
    assert got == expected  # exactly, trailing spaces included
    assert sum(n is not None and any("\u4e00" <= ch <= "\u9fff" for ch in n) for n in got) > 100
    # WGS84 points stay where they are (CGCS2000 ≈ WGS84 to centimetres)
    lon = np.array([f["geometry"]["coordinates"][0] for f in feats])
    assert np.allclose(e["lon"].to_numpy(), lon, atol=1e-7)
