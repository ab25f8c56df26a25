"""Tests for the synthetic sample county / province generator and its bundle writer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from pyproj import Transformer

from app.sample import SHAPEFILE_FIELDS, write_sample_bundle
from app.sample_summary import enterprise_yield, low_yield_clustering
from spatial.crs import to_cgcs2000
from spatial.identifiers import PARCEL_CODE_RE, uscc_status_series
from spatial.synthetic import MU_M2, generate_county, iter_province, parcel_yield

DATA_FILES = (
    "parcels.shp", "parcels.shx", "parcels.dbf", "parcels.prj", "parcels.cpg",
    "buildings.shp", "buildings.dbf", "defacto.shp", "defacto.dbf",
    "enterprises.xlsx", "metrics_2023.xlsx", "metrics_2024.xlsx", "metrics_2025.xlsx",
    "leases.csv", "corrections.csv", "summary.md",
)


def _read_xlsx(path: Path) -> pd.DataFrame:
    return pd.read_excel(path, dtype=str, engine="openpyxl")


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


# ---------------------------------------------------------------------------------------------
# fixtures: the full county once per session, small bundles for the cheap properties


@pytest.fixture(scope="session")
def county():
    return generate_county(seed=2024, parcels=2000)


@pytest.fixture(scope="session")
def county_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("county")
    info = write_sample_bundle(out, seed=2024, parcels=2000, truth=True)
    return out, info


@pytest.fixture(scope="session")
def county_files(county_bundle):
    """The county bundle's tables, read once (openpyxl reads ~10k cells/s)."""
    d, _ = county_bundle
    return {
        "ent": _read_xlsx(d / "enterprises.xlsx"),
        "m2025": _read_xlsx(d / "metrics_2025.xlsx"),
        "truth_ent": pd.read_csv(d / "_truth" / "enterprises.csv", dtype=str),
        "parcels": pyogrio.read_dataframe(d / "parcels.shp"),
    }


@pytest.fixture(scope="session")
def small_bundles(tmp_path_factory):
    dirs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        out = tmp_path_factory.mktemp(f"small_{name}")
        write_sample_bundle(out, seed=seed, parcels=200)
        dirs[name] = out
    return dirs


def _hashes(d: Path) -> dict[str, str]:
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in DATA_FILES}


def _table_hash(d: Path) -> str:
    h = hashlib.sha256()
    for f in ("parcels.shp", "buildings.shp", "defacto.shp"):
        g = pyogrio.read_dataframe(d / f)
        h.update(pd.util.hash_pandas_object(g.drop(columns="geometry"), index=False).to_numpy().tobytes())
        h.update(b"".join(shapely.to_wkb(g.geometry.values)))
    for f in ("enterprises.xlsx",):
        h.update(pd.util.hash_pandas_object(_read_xlsx(d / f), index=False).to_numpy().tobytes())
    for f in ("leases.csv", "corrections.csv"):
        h.update(pd.util.hash_pandas_object(pd.read_csv(d / f, dtype=str), index=False).to_numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_bytes_and_content(small_bundles):
    a, b = small_bundles["a"], small_bundles["b"]
    assert _hashes(a) == _hashes(b)
    assert _table_hash(a) == _table_hash(b)


def test_different_seed_differs(small_bundles):
    a, c = small_bundles["a"], small_bundles["c"]
    assert _table_hash(a) != _table_hash(c)
    ha, hc = _hashes(a), _hashes(c)
    assert all(ha[f] != hc[f] for f in DATA_FILES if f not in ("parcels.prj", "parcels.cpg"))


def test_province_chunks_do_not_depend_on_chunking():
    whole = list(iter_province(seed=3, parcels=250, county_parcels=100))
    assert [len(c.parcels) for c in whole] == [100, 100, 50]
    alone = generate_county(seed=3, parcels=100, index=1, enterprises_per_parcel=4.0)
    tail = next(iter_province(seed=3, parcels=250, county_parcels=100, start=1))
    for c in (alone, tail):
        assert c.parcels.drop(columns="geometry").equals(whole[1].parcels.drop(columns="geometry"))
        assert shapely.equals_exact(c.parcels.geometry.values, whole[1].parcels.geometry.values, 0).all()
        assert c.enterprises.equals(whole[1].enterprises)
        assert c.metrics.equals(whole[1].metrics)
    codes = pd.concat([c.parcels["parcel_code"] for c in whole])
    usccs = pd.concat([c.enterprises["uscc"] for c in whole])
    assert codes.is_unique and usccs.is_unique
    assert len({c.county_code for c in whole}) == 3


# ---------------------------------------------------------------------------------------------
# identifiers


def test_every_uscc_passes_its_check(county_bundle, county_files):
    d, _ = county_bundle
    ent = county_files["ent"]
    parcels = county_files["parcels"]
    leases = pd.read_csv(d / "leases.csv", dtype=str, encoding="utf-8-sig")
    defacto = pyogrio.read_dataframe(d / "defacto.shp", read_geometry=False)
    codes = pd.concat([ent["统一社会信用代码"], parcels["权利人统一"].dropna(),
                       leases["承租企业统一社会信用代码"], leases["出租企业统一社会信用代码"].dropna(),
                       defacto["使用企业统"].dropna()], ignore_index=True)
    status = uscc_status_series(codes)["status"]
    assert len(codes) > 30_000
    assert (status == "ok").all(), codes[status != "ok"].head().tolist()
    assert ent["统一社会信用代码"].is_unique
    assert len(ent) == 15_000


def test_parcel_codes_valid_and_unique(county_bundle):
    d, _ = county_bundle
    parcels = pyogrio.read_dataframe(d / "parcels.shp", read_geometry=False)
    codes = parcels["宗地代码"]
    assert len(codes) == 2000
    assert codes.map(lambda c: PARCEL_CODE_RE.match(c) is not None and len(c) == 19).all()
    assert codes.str.fullmatch(r"\d{12}GB\d{5}").all()
    assert codes.is_unique
    assert codes.str[:6].eq("330999").all()
    buildings = pyogrio.read_dataframe(d / "buildings.shp", read_geometry=False)
    assert buildings["建筑编号"].map(lambda c: PARCEL_CODE_RE.match(c) is not None and len(c) == 28).all()
    assert set(buildings["宗地代码"]) <= set(codes)


# ---------------------------------------------------------------------------------------------
# Shapefile: CRS and GBK text


def test_shapefile_crs_and_chinese_with_pyogrio(county_bundle):
    d, _ = county_bundle
    assert (d / "parcels.cpg").read_text() == "GBK"
    for role, fields in SHAPEFILE_FIELDS.items():
        info = pyogrio.read_info(d / f"{role}.shp")
        assert info["crs"] == "EPSG:4549"
        assert list(info["fields"]) == list(fields.values())
    p = pyogrio.read_dataframe(d / "parcels.shp")
    assert p.crs.to_epsg() == 4549
    assert (p["用途"] == "工业用地").all()
    assert p["镇街"].str.fullmatch(r"[\u4e00-\u9fff]{2}(镇|街道|乡)").all()
    assert p["镇街"].nunique() >= 8
    assert p["权利人"].dropna().str.contains("公司|厂|中心").all()
    assert set(p["是否登记"]) == {"是", "否"}
    # the bytes on disk really are GBK (not UTF-8 with a GBK label)
    raw = (d / "parcels.dbf").read_bytes()
    assert "工业用地".encode("gbk") in raw and "工业用地".encode("utf-8") not in raw


def test_shapefile_with_ogrinfo(county_bundle, tmp_path):
    exe = shutil.which("ogrinfo")
    if exe is None:
        pytest.skip("ogrinfo (gdal-bin) not installed")
    d, _ = county_bundle
    so = subprocess.run([exe, "-ro", "-so", "-al", str(d / "parcels.shp")], capture_output=True, check=True)
    text = so.stdout.decode("utf-8")
    assert 'ID["EPSG",4549]' in text and "CGCS2000 / 3-degree Gauss-Kruger CM 120E" in text
    for name in SHAPEFILE_FIELDS["parcels"].values():
        assert f"{name}: " in text
    one = subprocess.run([exe, "-ro", "-al", "-where", "FID=0", str(d / "parcels.shp")],
                         capture_output=True, check=True).stdout.decode("utf-8")
    assert "用途 (String) = 工业用地" in one
    assert "是否登记 (String) = " in one
    # a county that lost its .cpg: the dBase language driver byte (0x4D, CP936) still says GBK
    for ext in (".shp", ".shx", ".dbf", ".prj"):
        shutil.copy(d / f"parcels{ext}", tmp_path / f"nocpg{ext}")
    one = subprocess.run([exe, "-ro", "-al", "-where", "FID=0", str(tmp_path / "nocpg.shp")],
                         capture_output=True, check=True).stdout.decode("utf-8")
    assert "用途 (String) = 工业用地" in one


# ---------------------------------------------------------------------------------------------
# GCJ-02 points


def test_gcj02_points_land_on_true_parcel_only_after_conversion(county_files):
    e = county_files["ent"].merge(county_files["truth_ent"], left_on="统一社会信用代码", right_on="uscc")
    inside = e[e["placement"].isin(["building", "parcel"]) & (e["坐标系"] == "gcj02")]
    assert len(inside) > 3000
    parcels = county_files["parcels"].set_index("宗地代码")
    poly = parcels.geometry.reindex(inside["home_parcel"]).values
    to_gk = Transformer.from_crs(4490, 4549, always_xy=True)
    lon, lat = _num(inside["经度"]).to_numpy(), _num(inside["纬度"]).to_numpy()
    cx, cy = to_gk.transform(*to_cgcs2000(lon, lat, "gcj02"))
    assert shapely.contains_xy(poly, cx, cy).all()
    rx, ry = to_gk.transform(lon, lat)  # GCJ-02 taken as CGCS2000: hundreds of metres off
    assert shapely.contains_xy(poly, rx, ry).mean() < 0.05
    # the other systems are within their parcel as written
    rest = e[e["placement"].isin(["building", "parcel"]) & e["坐标系"].isin(["cgcs2000", "wgs84"])]
    poly = parcels.geometry.reindex(rest["home_parcel"]).values
    x, y = to_gk.transform(_num(rest["经度"]).to_numpy(), _num(rest["纬度"]).to_numpy())
    assert shapely.contains_xy(poly, x, y).all()


def test_coordinate_systems_and_missing_points(county_files):
    ent = county_files["ent"]
    share = ent["坐标系"].value_counts(normalize=True, dropna=False)
    assert 0.28 < share["gcj02"] < 0.38
    assert {"cgcs2000", "wgs84"} <= set(share.index)
    no_xy = ent["经度"].isna()
    assert 0.005 < no_xy.mean() < 0.05
    assert ent.loc[no_xy, "坐标系"].isna().all()


def test_some_points_fall_in_roads(county):
    e = county.enterprises
    road = e[e["placement"] == "road"]
    assert 0.03 < len(road) / len(e) < 0.12
    poly = county.parcels.set_index("parcel_code").geometry.reindex(road["home_parcel"]).values
    x, y = road["x"].to_numpy(), road["y"].to_numpy()
    assert not shapely.contains_xy(poly, x, y).any()
    assert (shapely.distance(poly, shapely.points(x, y)) < 21).all()  # in the road just outside


# ---------------------------------------------------------------------------------------------
# geometry and land relations


def test_parcel_geometry(county):
    p = county.parcels
    assert p.geometry.is_valid.all()
    assert (p.geom_type == "Polygon").all()
    i, j = p.sindex.query(p.geometry, predicate="overlaps")
    assert len(i) == 0
    mu = p.area / MU_M2
    assert (mu < 1).sum() >= 10  # 边角料
    assert mu.max() > 150  # several hundred 亩 plants exist
    assert 5 < mu.median() < 25
    nverts = shapely.get_num_coordinates(p.geometry.values)
    assert (nverts > 5).sum() > 50  # L-shapes and chamfers, not only rectangles
    assert (p["use_kind"] == "idle").sum() > 20


def test_buildings_consistent(county):
    b = county.buildings.merge(county.parcels[["parcel_code", "geometry"]].rename(columns={"geometry": "pg"}),
                               on="parcel_code")
    assert shapely.within(b.geometry.values, gpd.GeoSeries(b["pg"]).values).all()
    assert b["floors"].between(1, 6).all()
    assert np.allclose(b["floor_area_m2"], b.geometry.area * b["floors"], atol=0.01)
    used = county.parcels["use_kind"].isin(["self", "landlord", "park"])
    assert county.parcels.loc[used, "parcel_code"].isin(b["parcel_code"]).mean() > 0.8


def test_leases_consistent_with_buildings(county):
    leased = county.leases.groupby("parcel_code")["floor_area_m2"].sum()
    floor = county.buildings.groupby("parcel_code")["floor_area_m2"].sum()
    assert (leased <= floor.reindex(leased.index) + 1e-6).all()
    owners = county.parcels.set_index("parcel_code")["owner_uscc"]
    lease_owner = owners.reindex(county.leases["parcel_code"]).to_numpy()
    known = pd.notna(lease_owner)
    assert (county.leases["landlord_uscc"].to_numpy()[known] == lease_owner[known]).all()
    # landlords in the old zone carry many tenants
    per_parcel = county.leases.groupby("parcel_code").size()
    assert per_parcel.max() >= 20


def test_defacto_land(county):
    df = county.defacto
    att = df[df["attached_to"].notna()]
    ind = df[df["attached_to"].isna()]
    assert len(att) > 20 and len(ind) > 10
    parcels = county.parcels.set_index("parcel_code")
    pg = parcels.geometry.reindex(att["attached_to"]).values
    assert shapely.intersects(att.geometry.values, pg).all()  # touching its parcel
    assert (shapely.area(shapely.intersection(att.geometry.values, pg)) < 1e-3).all()  # not overlapping
    owner = county.truth.set_index("parcel_code")
    lot_user = owner[owner["role"].isin(["owner", "landlord"])]["uscc"]
    assert (att["user_uscc"].to_numpy() == lot_user.reindex(att["attached_to"]).to_numpy()).all()
    assert (df.area < MU_M2).sum() > 5  # some under 1 亩
    i, _ = county.parcels.sindex.query(ind.geometry, predicate="intersects")
    assert len(i) == 0  # independent pieces lie outside every registered parcel


def test_enterprise_kinds(county):
    e, t = county.enterprises, county.truth
    roles = e["role"].value_counts()
    assert {"owner", "landlord", "tenant", "defacto", "noland", "moved"} <= set(roles.index)
    links = t[t["parcel_code"].notna()].groupby("uscc")["parcel_code"].nunique()
    assert (links >= 2).sum() > 50  # 一企多地
    assert ((e["placement"] == "far") & (e["role"] == "noland")).sum() > 50  # address in town, no land
    assert (e["role"] == "noland").mean() == pytest.approx(0.03, abs=0.005)
    div = e["industry_code"].str[:2].astype(int)
    assert div.between(13, 43).all() and div.between(25, 28).any()
    assert e["industry_code"].str.len().isin([2, 3, 4]).all()
    assert e["name"].is_unique and e["name"].str.contains("[\u4e00-\u9fff]").all()


# ---------------------------------------------------------------------------------------------
# distributions


def test_scale_share_and_median_tax_per_mu_from_files(county_files):
    ent = county_files["ent"]
    share = (ent["规模"] == "规上").mean()
    assert 0.10 <= share <= 0.15
    m = county_files["m2025"]
    truth = county_files["truth_ent"].assign(land_m2=lambda t: _num(t["land_m2"]))
    x = m.merge(ent[["统一社会信用代码", "规模"]], on="统一社会信用代码").merge(
        truth[["uscc", "land_m2"]], left_on="统一社会信用代码", right_on="uscc")
    x = x[(x["规模"] == "规上") & (x["land_m2"] > 0)]
    tax = _num(x["实缴税金"]) + _num(x["税收还原额"]).fillna(0)
    per_mu = tax / (x["land_m2"] / MU_M2)
    assert 20 <= per_mu.median() <= 40
    assert per_mu.quantile(0.95) / per_mu.median() > 2.5  # heavy right tail
    assert (_num(x["税收还原额"]) > 0).mean() > 0.1  # refunds to add back


def test_low_yield_tail_is_spatially_clustered(county):
    c = low_yield_clustering(county, 2025)
    assert 0.02 < c["low_share"] < 0.35
    assert c["ratio"] > 2.0
    py = parcel_yield(county, 2025)
    old = county.parcels["old_zone"].to_numpy()
    assert py.loc[old, "tax_per_mu"].median() < 0.5 * py.loc[~old, "tax_per_mu"].median()


def test_year_to_year_persistence(county):
    ey = enterprise_yield(county)
    wide = ey.pivot_table(index="uscc", columns="year", values="tax_per_mu").dropna()
    lg = np.log(wide)
    assert np.corrcoef(lg[2024], lg[2025])[0, 1] > 0.6
    # bottom 5 % in every year far more often than if years were independent
    low = wide.apply(lambda s: s < s.quantile(0.05))
    assert low.all(axis=1).sum() > 10 * 0.05 ** 3 * len(wide)


def test_metrics_realism(county):
    m = county.metrics
    assert sorted(m["year"].unique()) == [2023, 2024, 2025]
    assert 0.05 <= m["emission_t"].isna().mean() < 0.6
    assert m["tax_paid"].notna().all() and (m["tax_paid"] >= 0).all()
    shared = m[m["year"] == 2025].groupby("meter_id").size()
    assert (shared > 1).sum() > 5  # 一表多企
    big = m.merge(county.enterprises[["uscc", "scale"]], on="uscc").query("scale == '规上'")
    assert (big["revenue"] >= 2000).all()
    assert (big["employees"].dropna() >= 3).all()


def test_corrections(county):
    c = county.corrections
    assert set(c["action"]) == {"add", "remove"}
    assert c["reason"].notna().all() and c["by"].notna().all()
    assert c["parcel_code"].isin(county.parcels["parcel_code"]).all()


# ---------------------------------------------------------------------------------------------
# province formats


@pytest.mark.parametrize("fmt", ["parquet", "gpkg"])
def test_province_formats(tmp_path, fmt):
    calls = []
    info = write_sample_bundle(tmp_path, seed=9, parcels=250, fmt=fmt, county_parcels=100,
                               progress=lambda done, total: calls.append((done, total)))
    assert calls == [(100, 250), (200, 250), (250, 250)]
    assert info["counties"] == 3 and info["counts"]["parcels"] == 250
    if fmt == "parquet":
        p = gpd.read_parquet(tmp_path / "parcels.parquet")
        e = pd.read_parquet(tmp_path / "enterprises.parquet")
        m = pd.read_parquet(tmp_path / "metrics.parquet")
        assert "parcel_code" in p.columns
    else:
        p = pyogrio.read_dataframe(tmp_path / "parcels.gpkg")
        e = pd.read_csv(tmp_path / "enterprises.csv", dtype=str)
        m = pd.read_csv(tmp_path / "metrics.csv", dtype=str)
        assert {"宗地代码", "权利人统一社会信用代码", "是否登记"} <= set(p.columns)
    assert p.crs.to_epsg() == 4490 and len(p) == 250
    assert len(e) == info["counts"]["enterprises"] and len(m) == info["counts"]["metric_rows"]
    lon = p.geometry.centroid.x if False else shapely.get_x(shapely.centroid(p.geometry.values))
    assert ((lon > 117) & (lon < 124)).all()


def test_summary_files(county_bundle):
    d, info = county_bundle
    md = (d / "summary.md").read_text(encoding="utf-8")
    assert "亩均税收" in md and "规上" in md and "镇街" in md
    png = (d / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert info["counts"]["parcels"] == 2000 and info["counts"]["enterprises"] == 15_000
    assert 20 <= info["stats"]["tax_per_mu_above_scale_median"] <= 40


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_sample_bundle(tmp_path, parcels=10, fmt="shp")
    with pytest.raises(ValueError):
        write_sample_bundle(tmp_path, parcels=0)
    with pytest.raises(ValueError):
        write_sample_bundle(tmp_path, parcels=100_000, fmt="county")


def test_headers_understood_by_alias_table():
    """Every header the writer emits maps back to its canonical column (spatial/columns.py)."""
    columns = pytest.importorskip("spatial.columns")
    from app.sample import CHINESE_HEADERS

    for table in (CHINESE_HEADERS, SHAPEFILE_FIELDS):
        for role, names in table.items():
            mapping, conflicts = columns.match_columns(role, list(names.values()))
            assert not conflicts
            assert mapping == {zh: canon for canon, zh in names.items()}, role
    mapping, _ = columns.match_columns("corrections", ["uscc", "parcel_code", "action", "share", "reason", "by"])
    assert set(mapping.values()) == {"uscc", "parcel_code", "action", "share", "reason", "by"}


_QGIS_READ = r"""
import json, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False); app.initQgis()
out = {}
for path in sys.argv[1:]:
    lyr = QgsVectorLayer(path, "p", "ogr")
    f = next(lyr.getFeatures())
    out[os.path.basename(path)] = {"valid": lyr.isValid(), "crs": lyr.crs().authid(), "count": lyr.featureCount(),
                                   "fields": lyr.fields().names(), "first": {k: str(v) for k, v in zip(lyr.fields().names(), f.attributes())}}
print(json.dumps(out, ensure_ascii=False)); sys.stdout.flush(); os._exit(0)
"""


def test_shapefile_opens_in_qgis_with_crs_and_chinese_text(county_bundle, tmp_path):
    """QGIS (Debian's python3-qgis, headless) reads the county's GBK Shapefile — with and without its
    .cpg — in EPSG:4549 with readable Chinese field names and values."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import qgis.core"], capture_output=True, text=True,
                           env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    if probe.returncode != 0:
        pytest.skip("QGIS NOT INSTALLED (python3-qgis): the QGIS Shapefile check did NOT run — "
                    "install it with scripts/bootstrap.sh --test")
    d, _ = county_bundle
    for ext in (".shp", ".shx", ".dbf", ".prj"):
        shutil.copy(d / f"parcels{ext}", tmp_path / f"nocpg{ext}")
    run = subprocess.run(["/usr/bin/python3", "-c", _QGIS_READ, str(d / "parcels.shp"), str(tmp_path / "nocpg.shp")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    expected = pyogrio.read_dataframe(d / "parcels.shp")
    for name in ("parcels.shp", "nocpg.shp"):
        layer = seen[name]
        assert layer["valid"] and layer["crs"] == "EPSG:4549"
        assert layer["count"] == len(expected)
        assert layer["fields"] == list(SHAPEFILE_FIELDS["parcels"].values())
        assert layer["first"]["用途"] == "工业用地"
        assert layer["first"]["镇街"] == expected["镇街"].iloc[0]
