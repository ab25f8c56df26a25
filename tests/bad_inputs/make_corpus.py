"""Corpus of bad import bundles: one directory per kind of mistake, each a good bundle with one defect.

Run ``python tests/bad_inputs/make_corpus.py [DEST]`` to write the corpus (default
``tests/bad_inputs/corpus/``, git-ignored) for a person to open in QGIS/Excel;
``tests/test_bad_inputs.py`` builds the same corpus in a pytest tmp dir from this module, so the
corpus is reproducible from code and never goes stale.

Each entry of :data:`KINDS` names a builder and what the importer must say: a fatal
``BundleError`` message, or one reject row ``(file, row, field, reason, severity)``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import openpyxl
import pandas as pd
import pyogrio
from shapely.geometry import Polygon, box

from spatial.columns import CHINESE_HEADERS, SHAPEFILE_FIELDS
from spatial.identifiers import make_uscc

# Three enterprises with valid USCCs, three parcels side by side in GK zone CM 120°E (EPSG:4549).
U1 = make_uscc("91330110MA27Y8XK1")
U2 = make_uscc("91330110MA2H0F5N8")
U3 = make_uscc("91330106MA2CFT4K2")
CODES = ["330110001001GB00001", "330110001001GB00002", "330110001001GB00003"]
X0, Y0 = 500_000.0, 3_300_000.0  # ≈ 120.0°E, 29.8°N


def parcels_gdf(crs=4549) -> gpd.GeoDataFrame:
    """Parcels with Shapefile-truncated Chinese field names (what a GBK Shapefile carries)."""
    f = SHAPEFILE_FIELDS["parcels"]
    return gpd.GeoDataFrame(
        {f["parcel_code"]: CODES, f["owner_uscc"]: [U1, U2, U3], f["owner_name"]: ["甲机械有限公司", "乙电子有限公司", "丙纺织有限公司"],
         f["registered_area_m2"]: [10_000.0, 10_000.0, 10_000.0], f["land_use"]: ["工业用地"] * 3},
        geometry=[box(X0 + i * 100, Y0, X0 + (i + 1) * 100, Y0 + 100) for i in range(3)], crs=crs,
    )


def enterprises_df() -> pd.DataFrame:
    h = CHINESE_HEADERS["enterprises"]
    return pd.DataFrame({
        h["uscc"]: [U1, U2, U3], h["name"]: ["甲机械有限公司", "乙电子有限公司", "丙纺织有限公司"],
        h["lon"]: [120.0006, 120.0016, 120.0026], h["lat"]: [29.8190, 29.8190, 29.8190],
        h["coord_sys"]: ["cgcs2000", "wgs84", ""], h["industry_code"]: ["3484", "C3971", "1713"],
    })


def metrics_df() -> pd.DataFrame:
    h = CHINESE_HEADERS["metrics"]
    return pd.DataFrame({h["uscc"]: [U1, U2, U3], h["year"]: [2023, 2023, 2023],
                         h["tax_paid"]: ["120.5", "80", "15"], h["value_added"]: ["900", "640", "100"]})


def leases_df() -> pd.DataFrame:
    h = CHINESE_HEADERS["leases"]
    return pd.DataFrame({h["tenant_uscc"]: [U3], h["parcel_code"]: [CODES[0]], h["landlord_uscc"]: [U1],
                         h["floor_area_m2"]: [1200.0]})


def corrections_df() -> pd.DataFrame:
    h = CHINESE_HEADERS["corrections"]
    return pd.DataFrame({h["uscc"]: [U2], h["parcel_code"]: [CODES[1]], h["action"]: ["add"]})


def write_good_bundle(d: Path) -> Path:
    """A valid bundle: GBK Shapefile with .cpg, UTF-8 CSVs."""
    d.mkdir(parents=True, exist_ok=True)
    pyogrio.write_dataframe(parcels_gdf(), d / "parcels.shp", encoding="GBK")
    enterprises_df().to_csv(d / "enterprises.csv", index=False)
    metrics_df().to_csv(d / "metrics_2023.csv", index=False)
    leases_df().to_csv(d / "leases.csv", index=False)
    corrections_df().to_csv(d / "corrections.csv", index=False)
    return d


def _edit_csv(d: Path, name: str, col: str, row: int, value) -> None:
    """Set one cell; ``row`` is the spreadsheet line (header = line 1)."""
    df = pd.read_csv(d / name, dtype=str, keep_default_na=False)
    df.loc[row - 2, col] = value
    df.to_csv(d / name, index=False)


def _rewrite_parcels(d: Path, gdf: gpd.GeoDataFrame, **kw) -> None:
    for p in d.glob("parcels.*"):
        p.unlink()
    pyogrio.write_dataframe(gdf, d / "parcels.shp", encoding="GBK", **kw)


# --------------------------------------------------------------------------------------------
# builders: each takes a good bundle directory and introduces one defect


def wrong_crs(d):
    # GK metres with a .prj that says EPSG:4326 (a classic export mistake).
    g = parcels_gdf().set_crs(4326, allow_override=True)
    _rewrite_parcels(d, g)


def no_crs(d):
    (d / "parcels.prj").unlink()


def gbk_no_cpg(d):
    (d / "parcels.cpg").unlink()
    # GDAL may also record the code page in the .dbf language byte; clear it so only the
    # bytes themselves can tell (as in Shapefiles written by older Chinese GIS software).
    with open(d / "parcels.dbf", "r+b") as fh:
        fh.seek(29)
        fh.write(b"\x00")


def self_intersecting(d):
    g = parcels_gdf()
    # A bow-tie: make_valid gives two triangles.
    g.loc[1, "geometry"] = Polygon([(X0 + 100, Y0), (X0 + 200, Y0 + 100), (X0 + 200, Y0), (X0 + 100, Y0 + 100)])
    _rewrite_parcels(d, g)


def empty_geometry(d):
    g = parcels_gdf()
    g.loc[2, "geometry"] = None
    _rewrite_parcels(d, g)


def duplicate_codes(d):
    g = parcels_gdf()
    g.loc[2, SHAPEFILE_FIELDS["parcels"]["parcel_code"]] = CODES[0]
    _rewrite_parcels(d, g)


def empty_parcel_code(d):
    g = parcels_gdf()
    g.loc[1, SHAPEFILE_FIELDS["parcels"]["parcel_code"]] = None
    _rewrite_parcels(d, g)


def uscc_length(d):
    _edit_csv(d, "enterprises.csv", "统一社会信用代码", 3, U2[:17])


def uscc_characters(d):
    _edit_csv(d, "enterprises.csv", "统一社会信用代码", 3, U2[:10] + "IO" + U2[12:])


def uscc_check_char(d):
    bad = U2[:17] + ("0" if U2[17] != "0" else "1")
    _edit_csv(d, "enterprises.csv", "统一社会信用代码", 3, bad)
    _edit_csv(d, "metrics_2023.csv", "统一社会信用代码", 3, bad)
    _edit_csv(d, "corrections.csv", "统一社会信用代码", 2, bad)


def duplicate_uscc(d):
    _edit_csv(d, "enterprises.csv", "统一社会信用代码", 4, U1)


def negative_tax(d):
    _edit_csv(d, "metrics_2023.csv", "实缴税金", 3, "-80")


def non_numeric_tax(d):
    _edit_csv(d, "metrics_2023.csv", "实缴税金", 3, "八十")


def year_out_of_range(d):
    _edit_csv(d, "metrics_2023.csv", "年度", 4, "1923")


def unknown_enterprise_in_metrics(d):
    _edit_csv(d, "metrics_2023.csv", "统一社会信用代码", 4, make_uscc("91330100MA2XXXXX1"))


def metrics_of_rejected_enterprise(d):
    # The enterprise row is malformed, so its metrics row goes too (cascade).
    _edit_csv(d, "enterprises.csv", "统一社会信用代码", 2, U1[:16])
    _edit_csv(d, "metrics_2023.csv", "统一社会信用代码", 2, U1[:16])


def unknown_parcel_in_leases(d):
    _edit_csv(d, "leases.csv", "宗地代码", 2, "330110001001GB09999")


def unknown_coord_sys(d):
    _edit_csv(d, "enterprises.csv", "坐标系", 4, "北京54")


def half_coordinates(d):
    _edit_csv(d, "enterprises.csv", "纬度", 2, "")


def missing_required_column(d):
    df = pd.read_csv(d / "enterprises.csv", dtype=str).drop(columns=["企业名称"])
    df.to_csv(d / "enterprises.csv", index=False)


def missing_required_file(d):
    (d / "enterprises.csv").unlink()


def empty_file(d):
    (d / "enterprises.csv").write_bytes(b"")


def truncated_shp(d):
    data = (d / "parcels.shp").read_bytes()
    (d / "parcels.shp").write_bytes(data[: len(data) // 2])


def truncated_gpkg(d):
    for p in d.glob("parcels.*"):
        p.unlink()
    pyogrio.write_dataframe(parcels_gdf(), d / "parcels.gpkg")
    data = (d / "parcels.gpkg").read_bytes()
    (d / "parcels.gpkg").write_bytes(data[: len(data) // 2])


def truncated_xlsx(d):
    (d / "enterprises.csv").unlink()
    enterprises_df().to_excel(d / "enterprises.xlsx", index=False)
    data = (d / "enterprises.xlsx").read_bytes()
    (d / "enterprises.xlsx").write_bytes(data[: len(data) // 2])


def xlsx_merged_header(d):
    """Title row merged across, then a 2-row header: 统一社会信用代码/年度 merged vertically,
    税收（万元） merged across 实缴税金 | 税收还原额. Must be read, not refused."""
    (d / "metrics_2023.csv").unlink()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"] = "2023年度规上工业企业亩均效益指标"
    ws.merge_cells("A1:D1")
    ws["A2"], ws["B2"], ws["C2"] = "统一社会信用代码", "年度", "税收（万元）"
    ws.merge_cells("A2:A3")
    ws.merge_cells("B2:B3")
    ws.merge_cells("C2:D2")
    ws["C3"], ws["D3"] = "实缴税金", "税收还原额"
    for i, u in enumerate([U1, U2, U3]):
        ws.append([u, 2023, 100.0 + i, 5])
    wb.save(d / "metrics_2023.xlsx")


def unknown_industry_code(d):
    _edit_csv(d, "enterprises.csv", "行业代码", 4, "9912")


def overlapping_parcels(d):
    g = parcels_gdf()
    g.loc[2, "geometry"] = box(X0 + 150, Y0, X0 + 300, Y0 + 100)  # 50 m × 100 m into parcel 2
    _rewrite_parcels(d, g)


def unsupported_format(d):
    (d / "parcels.kml").write_text("<kml/>", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# expectations

_DIR_HINT = "add parcels.shp/.gpkg/.geojson/.fgb or name it with overrides={'parcels': {'path': ...}}"
_FATAL_PREFIX = {
    "no_crs": "parcels.shp: 没有坐标系 (layer has no CRS: no .prj or CRS metadata); coordinates look like "
              "Gauss-Krüger metres without zone prefix: one of EPSG:4534–4554 (e.g. EPSG:4549 for CM 120°E; the "
              "coordinates cannot tell which zone) — add the .prj, or give the CRS: `mujun import DIR --crs "
              "EPSG:4549` (read_bundle(..., crs='EPSG:4549'))",
    "wrong_crs": "parcels.shp: 坐标与坐标系不符 (coordinates (500000, 3.3e+06)–(500300, 3.3001e+06) lie outside "
                 "the area of use of EPSG:4326 (World: -180.0…180.0°E, -90.0…90.0°N): the .prj / CRS metadata is "
                 "probably wrong); coordinates look like Gauss-Krüger metres without zone prefix: one of "
                 "EPSG:4534–4554 (e.g. EPSG:4549 for CM 120°E; the coordinates cannot tell which zone) — fix the "
                 ".prj, or replace the CRS with overrides={'parcels': {'crs': 'EPSG:…'}}",
    "missing_required_column": "enterprises.csv: 缺少必需列 企业名称（name） (missing required column(s) name); "
                               "columns found: 统一社会信用代码, 经度, 纬度, 坐标系, 行业代码 — rename the column or "
                               "map it with overrides={'enterprises': {'columns': {SOURCE: CANONICAL}}}",
    "missing_required_file": "DIR: 缺少必需文件 enterprises.*（企业）(missing required file enterprises.*): add "
                             "enterprises.shp/.gpkg/.geojson/.fgb/.csv/.xlsx or name it with "
                             "overrides={'enterprises': {'path': ...}}; files found: corrections.csv, leases.csv, "
                             "metrics_2023.csv, parcels.cpg, parcels.dbf, parcels.prj, parcels.shp, parcels.shx",
    "empty_file": "enterprises.csv: 文件为空 (file is empty, 0 bytes) — export it again",
    "truncated_shp": "parcels.shp: 文件被截断 (truncated: SIZE of DECLARED bytes) — copy or export the Shapefile again",
    "truncated_gpkg": "parcels.gpkg: 无法读取 (cannot read: ",
    "truncated_xlsx": "enterprises.xlsx: 无法读取 (cannot read xlsx: ",
    "unsupported_format": "parcels.kml: 不支持的格式 .kml (unsupported format for parcels; use .shp, .gpkg, "
                          ".geojson, .json, .fgb)",
}

#: kind → (builder, expectation). Expectation: ("fatal", message) — exact, or a prefix for the
#: kinds whose tail is GDAL's/zipfile's own text —, ("reject", file, row, field, value, reason,
#: severity) with value None when it is not compared (GEOS's coordinates of a self-intersection),
#: or ("ok", None) for inputs that must read correctly.
KINDS = {
    "wrong_crs": (wrong_crs, ("fatal", _FATAL_PREFIX["wrong_crs"])),
    "no_crs": (no_crs, ("fatal", _FATAL_PREFIX["no_crs"])),
    "gbk_no_cpg": (gbk_no_cpg, ("ok", None)),
    "self_intersecting": (self_intersecting, ("reject", "parcels.shp", 2, "geometry", None,
                                              "几何无效，已用 make_valid 修复 (invalid geometry repaired with make_valid)", "warning")),
    "empty_geometry": (empty_geometry, ("reject", "parcels.shp", 3, "geometry", "", "几何为空 (empty or missing geometry) — 补画图形或删除该行", "error")),
    "duplicate_codes": (duplicate_codes, ("reject", "parcels.shp", 3, "parcel_code", CODES[0],
                                          "宗地代码重复，首次出现在第 1 行 (duplicate parcel_code, first at row 1) — 删除重复行或改正宗地代码", "error")),
    "empty_parcel_code": (empty_parcel_code, ("reject", "parcels.shp", 2, "parcel_code", "", "宗地代码为空 (parcel_code is empty) — 填写宗地代码", "error")),
    "uscc_length": (uscc_length, ("reject", "enterprises.csv", 3, "uscc", U2[:17],
                                  "统一社会信用代码应为18位，实为17位 (USCC must have 18 characters, got 17)", "error")),
    "uscc_characters": (uscc_characters, ("reject", "enterprises.csv", 3, "uscc", U2[:10] + "IO" + U2[12:],
                                          "统一社会信用代码含非法字符 IO (USCC has characters outside GB 32100: IO)", "error")),
    "uscc_check_char": (uscc_check_char, ("reject", "enterprises.csv", 3, "uscc", U2[:17] + "0",
                                          f"校验码应为{U2[17]}，实为0 (USCC check character should be {U2[17]})", "warning")),
    "duplicate_uscc": (duplicate_uscc, ("reject", "enterprises.csv", 4, "uscc", U1,
                                        "统一社会信用代码重复，首次出现在第 2 行 (duplicate uscc, first at row 2) — 删除重复行或改正统一社会信用代码", "error")),
    "negative_tax": (negative_tax, ("reject", "metrics_2023.csv", 3, "tax_paid", "-80", "不能为负数 (must not be negative) — 填写 0 或正数", "error")),
    "non_numeric_tax": (non_numeric_tax, ("reject", "metrics_2023.csv", 3, "tax_paid", "八十", "非数值 (not a number) — 填写数字（单位见表头），不要夹带文字", "error")),
    "year_out_of_range": (year_out_of_range, ("reject", "metrics_2023.csv", 4, "year", "1923",
                                              "YEAR_RANGE", "error")),
    "unknown_enterprise_in_metrics": (unknown_enterprise_in_metrics, (
        "reject", "metrics_2023.csv", 4, "uscc", make_uscc("91330100MA2XXXXX1"),
        f"企业不存在 (unknown enterprise {make_uscc('91330100MA2XXXXX1')}) — 改正代码，或把该企业加入企业数据", "error")),
    "metrics_of_rejected_enterprise": (metrics_of_rejected_enterprise, (
        "reject", "metrics_2023.csv", 2, "uscc", U1[:16],
        "企业记录已被拒绝：enterprises.csv 第 2 行 统一社会信用代码应为18位，实为16位 (USCC must have 18 characters, "
        f"got 16) (enterprise {U1[:16]} was rejected at enterprises.csv row 2)", "error")),
    "unknown_parcel_in_leases": (unknown_parcel_in_leases, ("reject", "leases.csv", 2, "parcel_code", "330110001001GB09999",
                                                            "宗地不存在 (unknown parcel 330110001001GB09999) — 改正代码，或把该宗地加入宗地数据", "error")),
    "unknown_coord_sys": (unknown_coord_sys, ("reject", "enterprises.csv", 4, "coord_sys", "北京54",
                                              "未知坐标系，应为 wgs84/cgcs2000/gcj02/bd09 (unknown coord_sys)", "error")),
    "half_coordinates": (half_coordinates, ("reject", "enterprises.csv", 2, "lon/lat", "120.0006, nan",
                                            "经纬度不完整 (only one of lon/lat given) — 同时填写经度和纬度，或都留空", "error")),
    "missing_required_column": (missing_required_column, ("fatal", _FATAL_PREFIX["missing_required_column"])),
    "missing_required_file": (missing_required_file, ("fatal", _FATAL_PREFIX["missing_required_file"])),
    "empty_file": (empty_file, ("fatal", _FATAL_PREFIX["empty_file"])),
    "truncated_shp": (truncated_shp, ("fatal", _FATAL_PREFIX["truncated_shp"])),
    "truncated_gpkg": (truncated_gpkg, ("fatal", _FATAL_PREFIX["truncated_gpkg"])),
    "truncated_xlsx": (truncated_xlsx, ("fatal", _FATAL_PREFIX["truncated_xlsx"])),
    "xlsx_merged_header": (xlsx_merged_header, ("ok", None)),
    "unknown_industry_code": (unknown_industry_code, ("reject", "enterprises.csv", 4, "industry_code", "9912",
                                                      "行业大类不存在 (no such GB/T 4754 division: valid are 01–97)", "warning")),
    "overlapping_parcels": (overlapping_parcels, ("reject", "parcels.shp", 3, "geometry", CODES[2],
                                                  f"与宗地 {CODES[1]}（第 2 行）重叠 5000.0 m² (overlaps parcel {CODES[1]} at row 2 by 5000.0 m²)",
                                                  "warning")),
    "unsupported_format": (unsupported_format, ("fatal", _FATAL_PREFIX["unsupported_format"])),
}


def build(dest: Path) -> dict[str, Path]:
    """Write every kind into ``dest/<kind>/``; returns kind → directory."""
    dest = Path(dest)
    out = {}
    for kind, (builder, _) in KINDS.items():
        d = dest / kind
        if d.exists():
            shutil.rmtree(d)
        write_good_bundle(d)
        builder(d)
        out[kind] = d
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "corpus"
    for kind, d in build(target).items():
        print(kind, "→", os.path.relpath(d))
