"""read_bundle: formats, encodings, headers, coordinates, CRS detection, extras, column_map."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import openpyxl
import pandas as pd
import pyogrio
import pytest
from pyproj import Transformer

from spatial.columns import CHINESE_HEADERS, SHAPEFILE_FIELDS, TEMPLATE_FILES, alias_table_markdown, match_columns, write_templates
from spatial.crs import from_cgcs2000
from spatial.io import BundleError, read_bundle
from spatial.validate import validate_bundle

_spec = importlib.util.spec_from_file_location("make_corpus", Path(__file__).parent / "bad_inputs" / "make_corpus.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

REPO = Path(__file__).resolve().parents[1]
OWNERS = ["甲机械有限公司", "乙电子有限公司", "丙纺织有限公司"]


def _bundle_with_parcels(d: Path, writer) -> Path:
    corpus.write_good_bundle(d)
    for p in d.glob("parcels.*"):
        p.unlink()
    writer(d)
    return d


def _check_parcels(b, label):
    p = b.tables["parcels"]
    assert p.crs.to_epsg() == 4490
    assert list(p["parcel_code"]) == corpus.CODES
    assert list(p["owner_name"]) == OWNERS
    assert list(p["_row"]) == [1, 2, 3]
    assert set(p["_file"]) == {label}
    x, y = p.geometry.iloc[0].centroid.coords[0]
    assert 119.99 < x < 120.01 and 29.80 < y < 29.83
    assert b.rejects.empty, b.messages()


@pytest.mark.parametrize("fmt", ["shp_gbk_cpg", "shp_gbk_no_cpg", "shp_utf8", "shp_utf8_no_cpg", "gpkg", "geojson", "fgb"])
def test_layer_formats_round_trip(tmp_path, fmt):
    g = corpus.parcels_gdf()

    def write(d):
        if fmt.startswith("shp"):
            enc = "GBK" if "gbk" in fmt else "UTF-8"
            # UTF-8 Shapefiles from cadastral systems use pinyin names (Chinese ones get cut mid-character)
            out = g if enc == "GBK" else g.rename(columns=dict(zip(g.columns[:5], ["ZDDM", "QLRDM", "QLRMC", "ZDMJ", "TDYT"])))
            pyogrio.write_dataframe(out, d / "parcels.shp", encoding=enc)
            if fmt.endswith("no_cpg"):
                (d / "parcels.cpg").unlink()
                with open(d / "parcels.dbf", "r+b") as fh:  # no language byte either
                    fh.seek(29)
                    fh.write(b"\x00")
        elif fmt == "geojson":
            pyogrio.write_dataframe(g.to_crs(4326), d / "parcels.geojson")
        elif fmt == "fgb":
            # without the spatial index FlatGeobuf keeps the feature order (the index sorts them)
            pyogrio.write_dataframe(g, d / "parcels.fgb", SPATIAL_INDEX="NO")
        else:
            pyogrio.write_dataframe(g, d / f"parcels.{fmt}")

    d = _bundle_with_parcels(tmp_path / fmt, write)
    b = read_bundle(d)
    label = next(p.name for p in d.glob("parcels.*") if p.suffix in (".shp", ".gpkg", ".geojson", ".fgb"))
    _check_parcels(b, label)
    # 10-byte Shapefile names, pinyin and full Chinese names all understood
    assert "owner_uscc" in b.column_map[label].values()


def test_utf8_shapefile_with_cut_chinese_names(tmp_path):
    """UTF-8 .dbf: 登记面积 (12 bytes) is cut to 登记面 + a broken byte; still read and mapped
    (the column map shows the cut with …)."""
    g = corpus.parcels_gdf()[["宗地代码", "登记面积", "geometry"]]
    d = _bundle_with_parcels(tmp_path / "cut", lambda d: pyogrio.write_dataframe(g, d / "parcels.shp", encoding="UTF-8"))
    b = read_bundle(d)
    assert b.column_map["parcels.shp"] == {"宗地代…": "parcel_code", "登记面…": "registered_area_m2"}
    assert list(b.tables["parcels"]["parcel_code"]) == corpus.CODES


def _enterprises_frame():
    return corpus.enterprises_df()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_csv_encodings(tmp_path, encoding):
    d = corpus.write_good_bundle(tmp_path / encoding)
    _enterprises_frame().to_csv(d / "enterprises.csv", index=False, encoding=encoding)
    b = read_bundle(d)
    e = b.tables["enterprises"]
    assert list(e["name"]) == OWNERS
    assert list(e["_row"]) == [2, 3, 4]
    assert b.column_map["enterprises.csv"]["统一社会信用代码"] == "uscc"


def test_xlsx_with_title_row(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "x")
    (d / "enterprises.csv").unlink()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"] = "某县2023年工业企业名单"
    ws.merge_cells("A1:F1")
    df = _enterprises_frame()
    ws.append(list(df.columns))
    for r in df.itertuples(index=False):
        ws.append(list(r))
    ws.append([None] * 6)  # trailing blank row: ignored
    wb.save(d / "enterprises.xlsx")
    b = read_bundle(d)
    e = b.tables["enterprises"]
    assert list(e["name"]) == OWNERS
    assert list(e["_row"]) == [3, 4, 5]
    assert list(e["industry_code"]) == ["3484", "C3971", "1713"]


def test_header_variants_mapped():
    m, conflicts = match_columns("parcels", ["ZDDM", "BDCDYH", "QLRMC", "TDYT", "ZDMJ", "ZL", "权利人代码", "镇街"])
    assert m == {"ZDDM": "parcel_code", "BDCDYH": "unit_code", "QLRMC": "owner_name", "TDYT": "land_use",
                 "ZDMJ": "registered_area_m2", "ZL": "location", "权利人代码": "owner_uscc", "镇街": "township"}
    assert not conflicts
    assert match_columns("buildings", ["JZMJ", "CS", "ZRZH"])[0] == {
        "JZMJ": "floor_area_m2", "CS": "floors", "ZRZH": "building_id"}
    # English, full-width, units, required marks, truncated names
    m, _ = match_columns("metrics", ["USCC", "Year", "*实缴税金（万元）", "Ｒevenue", "研发经费(万元)", "综合能耗 (吨标煤)"])
    assert m == {"USCC": "uscc", "Year": "year", "*实缴税金（万元）": "tax_paid", "Ｒevenue": "revenue",
                 "研发经费(万元)": "rd_expense", "综合能耗 (吨标煤)": "energy_tce"}
    assert match_columns("leases", ["承租企业统", "出租企业统"])[0] == {"承租企业统": "tenant_uscc", "出租企业统": "landlord_uscc"}
    # a short prefix is not a truncation
    assert match_columns("parcels", ["权利"])[0] == {}
    # two headers for one column are reported
    _, conflicts = match_columns("parcels", ["宗地代码", "ZDDM"])
    assert conflicts and "parcel_code" in conflicts[0]


def test_two_headers_for_one_column_is_refused(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "c")
    df = _enterprises_frame()
    df["USCC"] = df["统一社会信用代码"]
    df.to_csv(d / "enterprises.csv", index=False)
    with pytest.raises(BundleError, match=r"enterprises.csv: 列 '统一社会信用代码' 和 'USCC' 都被识别为 uscc"):
        read_bundle(d)


@pytest.mark.parametrize("cs", ["gcj02", "bd09", "wgs84"])
def test_gcj02_bd09_rows_converted(tmp_path, cs):
    d = corpus.write_good_bundle(tmp_path / cs)
    true_lon = np.array([120.0006, 121.4737, 116.3975])
    true_lat = np.array([29.8190, 31.2304, 39.9087])
    lon, lat = from_cgcs2000(true_lon, true_lat, cs)
    h = CHINESE_HEADERS["enterprises"]
    pd.DataFrame({h["uscc"]: [corpus.U1, corpus.U2, corpus.U3], h["name"]: OWNERS,
                  h["lon"]: [f"{v:.10f}" for v in lon], h["lat"]: [f"{v:.10f}" for v in lat],
                  h["coord_sys"]: [cs, cs.upper(), {"gcj02": "高德", "bd09": "百度", "wgs84": "GPS"}[cs]]}
                 ).to_csv(d / "enterprises.csv", index=False)
    e = read_bundle(d).tables["enterprises"]
    assert list(e["coord_sys"]) == [cs] * 3
    np.testing.assert_allclose(e["lon_src"], np.round(lon, 10))
    # converted back, each point lies where it should: < 1 cm (both inverses are iterated).
    geod = Transformer.from_crs(4490, 4549, always_xy=True)
    x0, y0 = geod.transform(true_lon, true_lat)
    x1, y1 = geod.transform(e.geometry.x.to_numpy(), e.geometry.y.to_numpy())
    assert np.hypot(x1 - x0, y1 - y0).max() < 0.01
    assert e.crs.to_epsg() == 4490


def test_enterprises_without_coordinates_are_valid(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "nocoord")
    df = _enterprises_frame()
    df.loc[1, ["经度", "纬度"]] = None
    df.to_csv(d / "enterprises.csv", index=False)
    b = validate_bundle(read_bundle(d))
    e = b.tables["enterprises"]
    assert len(e) == 3 and e.geometry.isna().sum() == 1
    assert b.errors.empty


def test_enterprises_as_point_layer(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "pts")
    (d / "enterprises.csv").unlink()
    df = _enterprises_frame()
    f = SHAPEFILE_FIELDS["enterprises"]
    g = gpd.GeoDataFrame({f["uscc"]: df["统一社会信用代码"], f["name"]: df["企业名称"]},
                         geometry=gpd.points_from_xy(df["经度"], df["纬度"]), crs=4490).to_crs(4549)
    pyogrio.write_dataframe(g, d / "enterprises.shp", encoding="GBK")
    b = read_bundle(d)
    e = b.tables["enterprises"]
    assert b.column_map["enterprises.shp"] == {"统一社会信": "uscc", "企业名称": "name"}
    np.testing.assert_allclose(e["lon"], df["经度"], atol=1e-9)
    assert b.source_crs["enterprises"] == "EPSG:4549"


@pytest.mark.parametrize("epsg,shift", [(4549, 0), (4528, 40_000_000), (4490, None)])
def test_crs_detection(tmp_path, epsg, shift):
    g = corpus.parcels_gdf()
    if shift is None:
        g = g.to_crs(4490)
    else:
        g = g.set_geometry(g.geometry.translate(shift, 0)).set_crs(epsg, allow_override=True)
    d = _bundle_with_parcels(tmp_path / str(epsg), lambda d: pyogrio.write_dataframe(g, d / "parcels.shp", encoding="GBK"))
    b = read_bundle(d)
    assert b.source_crs["parcels"] == f"EPSG:{epsg}"
    _check_parcels(b, "parcels.shp")


def test_zone_prefixed_without_prj_suggests_4528(tmp_path):
    g = corpus.parcels_gdf()
    g = g.set_geometry(g.geometry.translate(40_000_000, 0))
    d = _bundle_with_parcels(tmp_path / "z", lambda d: pyogrio.write_dataframe(g, d / "parcels.shp", encoding="GBK"))
    (d / "parcels.prj").unlink()
    with pytest.raises(BundleError, match=r"eastings start with 40: CGCS2000 3-degree Gauss-Krüger zone 40 with zone prefix, EPSG:4528"):
        read_bundle(d)
    _check_parcels(read_bundle(d, crs="EPSG:4528"), "parcels.shp")
    # prefixed eastings labelled as the unprefixed zone: refused
    (d / "parcels.prj").write_text(pyogrio.read_info(d / "parcels.shp")["crs"] or "", encoding="ascii")
    with pytest.raises(BundleError, match=r"坐标与坐标系不符"):
        read_bundle(d, overrides={"parcels": {"crs": "EPSG:4549"}})


def test_extra_columns_kept_and_column_map(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "extra")
    df = _enterprises_frame()
    df["联系人"] = ["王", "李", "赵"]
    df.to_csv(d / "enterprises.csv", index=False)
    b = read_bundle(d)
    e = b.tables["enterprises"]
    assert list(e["x_联系人"]) == ["王", "李", "赵"]
    assert "联系人" not in b.column_map["enterprises.csv"]
    assert b.column_map["enterprises.csv"] == {"统一社会信用代码": "uscc", "企业名称": "name", "经度": "lon", "纬度": "lat",
                                               "坐标系": "coord_sys", "行业代码": "industry_code"}
    assert "enterprises.csv:\n  统一社会信用代码 → uscc" in b.describe_columns()
    # every canonical column present, even when the file lacks it
    assert {"scale", "township", "founded", "flags", "lon_src", "lat_src", "_file", "_row"} <= set(e.columns)


def test_metrics_per_year_files_and_year_from_name(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "years")
    corpus.metrics_df().drop(columns=["年度"]).to_csv(d / "metrics_2022.csv", index=False)
    b = validate_bundle(read_bundle(d))
    m = b.tables["metrics"]
    assert sorted(m["year"].unique()) == [2022, 2023]
    assert b.column_map["metrics_2022.csv"]["(文件名 metrics_2022.csv)"] == "year"
    assert len(b.files["metrics"]) == 2 and len(m) == 6


def test_overrides_columns_and_path(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "ov")
    shutil.move(d / "enterprises.csv", tmp_path / "firms.csv")
    df = pd.read_csv(tmp_path / "firms.csv", dtype=str).rename(columns={"企业名称": "Firma"})
    df.to_csv(tmp_path / "firms.csv", index=False)
    b = read_bundle(d, overrides={"enterprises": {"path": str(tmp_path / "firms.csv"), "columns": {"Firma": "name"}}})
    assert list(b.tables["enterprises"]["name"]) == OWNERS
    assert b.files["enterprises"] == [tmp_path / "firms.csv"]
    with pytest.raises(BundleError, match="overrides: unknown role 'parcel'"):
        read_bundle(d, overrides={"parcel": {}})


def test_progress_reports(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "prog")
    calls = []
    read_bundle(d, progress=lambda role, done, total: calls.append((role, done, total)))
    roles = {c[0] for c in calls}
    assert roles == {"parcels", "enterprises", "metrics", "leases", "corrections"}
    assert ("parcels", 3, 3) in calls


def test_templates_in_sync_and_readable(tmp_path):
    """data/templates/ is what write_templates writes; templates + a parcel layer validate clean."""
    fresh = tmp_path / "fresh"
    write_templates(fresh)
    shipped = REPO / "data" / "templates"
    for name in TEMPLATE_FILES.values():
        if name.endswith(".csv"):
            assert (shipped / name).read_bytes() == (fresh / name).read_bytes(), name
        else:
            a = [list(r) for r in openpyxl.load_workbook(shipped / name).active.iter_rows(values_only=True)]
            b = [list(r) for r in openpyxl.load_workbook(fresh / name).active.iter_rows(values_only=True)]
            assert a == b, name
    bundle = tmp_path / "bundle"
    shutil.copytree(shipped, bundle)
    g = gpd.GeoDataFrame({"宗地代码": ["330110001001GB00001"]},
                         geometry=[corpus.box(120.0, 30.27, 120.002, 30.28)], crs=4490)
    pyogrio.write_dataframe(g, bundle / "parcels.geojson")
    # the lease/correction examples name a second enterprise: add it to the enterprises template
    wb = openpyxl.load_workbook(bundle / "enterprises.xlsx")
    wb.active.append(["91330110MA2H0F5N8C", "杭州示例电子有限公司", 120.0015, 30.2755, "cgcs2000"])
    wb.save(bundle / "enterprises.xlsx")
    b = validate_bundle(read_bundle(bundle))
    assert b.errors.empty, b.messages()
    assert {k: len(v) for k, v in b.tables.items()} == {
        "parcels": 1, "enterprises": 2, "metrics": 1, "leases": 1, "corrections": 1}
    e = b.tables["enterprises"]
    assert e["coord_sys"].iloc[0] == "gcj02" and e["lon_src"].iloc[0] == 120.0012


def test_readme_has_alias_table():
    text = (REPO / "data" / "README.md").read_text(encoding="utf-8")
    assert alias_table_markdown() in text
