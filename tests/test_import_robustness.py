"""``mujun import`` on real, dirty county data: each kind of fault gives its exact outcome on PostGIS.

Driven through the CLI entry point in-process (typer's CliRunner), so exit codes are the real
ones: 0 loaded, 3 loaded with rejected rows listed, 2 refused (nothing imported). The shared
cases (``../shared/cases``, README there) are imported as delivered.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import geopandas as gpd
import openpyxl
import pandas as pd
import pyogrio
import pytest
import sqlalchemy as sa
from shapely.geometry import Polygon
from typer.testing import CliRunner

from spatial.columns import MAX_TEXT_LENGTH, PLAUSIBLE_MAX
from spatial.io import read_bundle
from spatial.validate import AREA_MISMATCH_SHARE, EXCEL_NUMBER_HINT, MIN_AREA_M2
from tests.bundle_factory import X0, Y0, parcel_code, uscc, write_bundle

CASES = Path(__file__).resolve().parents[2] / "shared" / "cases"
DATA_TABLES = ("parcels", "enterprises", "metrics", "leases", "buildings", "link_corrections")


def mujun_import(db_url: str, bundle: Path, data_dir: Path, monkeypatch, *extra: str):
    """``mujun import BUNDLE`` in-process; returns (exit code, output). Never a traceback."""
    from app.cli import cli
    from app.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("MUJUN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COLUMNS", "300")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["import", str(bundle), *extra])
    finally:
        get_settings.cache_clear()
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("traceback from mujun import:\n" + "".join(
            traceback.format_exception(type(result.exception), result.exception, result.exception.__traceback__)))
    assert "Traceback" not in out, out
    return result.exit_code, " ".join(out.split())


def table_state(engine) -> dict[str, str]:
    """Every data table's content (md5 over all rows): a refused import leaves it identical."""
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, '|' ORDER BY "
                                        f"x::text), '')) FROM {t} x")).scalar_one() for t in DATA_TABLES}


def rejects(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text("SELECT file, row, field, value, reason, severity FROM import_rejects "
                                   "ORDER BY id"), conn)


def _copy_case(name: str, tmp_path: Path) -> Path:
    d = tmp_path / name
    shutil.copytree(CASES / name, d)
    for p in d.iterdir():
        p.chmod(0o644)
    return d


# ------------------------------------------------------------------------------------- the cases

def test_case_cut_utf8_field_names(db_url, engine, tmp_path, monkeypatch):
    """权利人 and 权利人统一社会信用代码 cut at 10 bytes both read 权利人: the cut byte decides."""
    code, out = mujun_import(db_url, _copy_case("import-cut-utf8-field-names", tmp_path), tmp_path, monkeypatch)
    assert code == 0, out
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT parcel_code, owner_uscc, owner_name FROM parcels ORDER BY 1")).all()
    assert [tuple(r) for r in rows] == [
        ("330999001001GB00001", "91330999MA00000016", "甲机械有限公司"),
        ("330999001001GB00002", "91330999MA00000029", "乙纺织有限公司")]


def test_case_cpg_says_utf8_data_is_gbk(db_url, engine, tmp_path, monkeypatch):
    code, out = mujun_import(db_url, _copy_case("import-cpg-says-utf8-data-is-gbk", tmp_path), tmp_path, monkeypatch)
    assert code == 0, out
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT owner_name, township, land_use FROM parcels ORDER BY parcel_code")).all()
    assert [tuple(r) for r in rows] == [("宏达精密机械有限公司", "金沙镇", "工业用地"),
                                        ("金沙纺织有限公司", "金沙镇", "工业用地"),
                                        ("东湖新材料科技有限公司", "东湖街道", "工业用地")]
    r = rejects(engine)
    assert list(r[["file", "row", "field", "severity"]].itertuples(index=False, name=None)) == [
        ("parcels.shp", 0, "parcels.cpg", "warning")]
    assert "parcels.cpg 声明编码为 UTF-8，但文字实际是 GBK" in r["reason"][0]
    assert "警告 parcels.shp [parcels.cpg]：parcels.cpg 声明编码为 UTF-8" in out  # the user sees it, not only the report


def _utf8_parcels_with(tmp_path: Path, cpg: str | None, ldid: int | None) -> Path:
    """The GBK case re-written as UTF-8 text, with a .cpg saying ``cpg`` (or none) and a .dbf
    language byte ``ldid`` (0x4D = GBK, what GDAL falls back to without a .cpg)."""
    d = _copy_case("import-cpg-says-utf8-data-is-gbk", tmp_path / f"utf8_{cpg}_{ldid}")
    g = pyogrio.read_dataframe(d / "parcels.shp", encoding="GB18030")
    for p in d.glob("parcels.*"):
        p.unlink()
    pyogrio.write_dataframe(g, d / "parcels.shp", encoding="UTF-8")
    (d / "parcels.cpg").unlink()
    if cpg is not None:
        (d / "parcels.cpg").write_text(cpg, encoding="ascii")
    if ldid is not None:
        with open(d / "parcels.dbf", "r+b") as fh:
            fh.seek(29)
            fh.write(bytes([ldid]))
    return d


@pytest.mark.parametrize("cpg,ldid", [("GBK", None), ("936", None), (None, 0x4D)])
def test_utf8_data_declared_gbk_is_not_mojibake(db_url, engine, tmp_path, monkeypatch, cpg, ldid):
    d = _utf8_parcels_with(tmp_path, cpg, ldid)
    code, out = mujun_import(db_url, d, tmp_path, monkeypatch)
    assert code == 0, out
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT owner_name FROM parcels ORDER BY parcel_code")).scalars().all()
    assert names == ["宏达精密机械有限公司", "金沙纺织有限公司", "东湖新材料科技有限公司"]
    r = rejects(engine)
    if cpg is not None:   # the wrong .cpg is named
        assert list(r["field"]) == ["parcels.cpg"] and "文字实际是 UTF-8" in r["reason"][0]


def test_cpg_utf8_on_undecodable_bytes_is_refused_naming_the_cpg(db_url, engine, tmp_path, monkeypatch):
    d = _copy_case("import-cpg-says-utf8-data-is-gbk", tmp_path)
    data = bytearray((d / "parcels.dbf").read_bytes())
    hlen = int.from_bytes(data[8:10], "little")
    data[hlen + 1:hlen + 4] = b"\x80\xff\x80"  # neither UTF-8 nor GBK
    (d / "parcels.dbf").write_bytes(bytes(data))
    before = table_state(engine)
    code, out = mujun_import(db_url, d, tmp_path, monkeypatch)
    assert code == 2, out
    assert "parcels.cpg 声明编码为 UTF-8" in out and "damaged or truncated" not in out
    assert table_state(engine) == before


def test_case_zero_area_parcel_rejected_at_import(db_url, engine, tmp_path, monkeypatch):
    code, out = mujun_import(db_url, _copy_case("zero-area-parcel", tmp_path), tmp_path, monkeypatch)
    assert code == 3, out  # loaded, the degenerate parcel listed
    with engine.connect() as conn:
        codes = conn.execute(sa.text("SELECT parcel_code FROM parcels ORDER BY 1")).scalars().all()
        min_area = conn.execute(sa.text("SELECT min(area_m2) FROM parcels")).scalar_one()
    assert codes == [f"330999001001GB0000{i}" for i in range(1, 6)]
    assert min_area == pytest.approx(6000.0, abs=1)
    r = rejects(engine)
    hit = r[(r["file"] == "parcels.geojson") & (r["row"] == 6) & (r["field"] == "geometry")]
    assert len(hit) == 1 and hit["severity"].iloc[0] == "error"
    assert hit["reason"].iloc[0].startswith(f"面积为零或过小，小于 {MIN_AREA_M2:g} m²")
    assert "parcels.geojson 第 6 行 [geometry]：面积为零或过小" in out


# ------------------------------------------------------------------ item 6: every kind, on PostGIS

def _ent_row(i: int, **cells) -> dict:
    row = {"统一社会信用代码": uscc(i), "企业名称": f"补充企业{i}有限公司", "经度": 120.1, "纬度": 30.2,
           "坐标系": "cgcs2000", "行业代码": "3311", "规模": "规上", "镇街": "东湖街道"}
    row.update(cells)
    return row


def _reject_of(engine, file, field) -> pd.Series:
    r = rejects(engine)
    hit = r[(r["file"] == file) & (r["field"] == field) & (r["severity"] == "error")]
    assert len(hit) == 1, r.to_string()
    return hit.iloc[0]


@pytest.mark.parametrize("cells,field,reason", [
    ({"企业名称": ""}, "name", "企业名称为空 (enterprise name is empty) — 填写企业名称"),
    ({"镇街": "东湖\x00街道"}, "township", "含有空字符 NUL"),
    ({"镇街": "东" * 4000}, "township", f"文字过长：4000 个字符，最多 {MAX_TEXT_LENGTH['default']} 个"),
    ({"企业名称": "名" * 201}, "name", f"文字过长：201 个字符，最多 {MAX_TEXT_LENGTH['name']} 个"),
    ({"备注": "x\x00y"}, "备注", "含有空字符 NUL"),
    ({"行业代码": "2024-03-04"}, "industry_code", "行业代码被 Excel 当作日期"),
])
def test_bad_enterprise_cell_is_a_rejected_row(db_url, engine, tmp_path, monkeypatch, cells, field, reason):
    bundle = write_bundle(tmp_path / "b", enterprises_extra=[_ent_row(8, **cells)])
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 3, out
    hit = _reject_of(engine, "enterprises.csv", field)
    assert hit["row"] == 9 and hit["reason"].startswith(reason), hit["reason"]
    assert "\x00" not in hit["value"]
    with engine.connect() as conn:
        usccs = conn.execute(sa.text("SELECT uscc FROM enterprises")).scalars().all()
    assert sorted(usccs) == sorted(uscc(i) for i in range(1, 8))  # the 7 good ones, not the bad one


@pytest.mark.parametrize("value,reason", [
    ("1e400", "不是有限数值"), ("inf", "不是有限数值"), ("1.7e308", "数值超出合理范围，上限 1e+07 万元"),
    ("20000000", "数值超出合理范围，上限 1e+07 万元"),
])
def test_tax_overflow_rejected_not_stored(db_url, engine, tmp_path, monkeypatch, value, reason):
    bundle = write_bundle(tmp_path / "b", metrics_extra=[{"统一社会信用代码": uscc(1), "年度": 2023, "实缴税金": value}])
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 3, out
    hit = _reject_of(engine, "metrics.csv", "tax_paid")
    assert hit["row"] == 16 and hit["reason"].startswith(reason)
    with engine.connect() as conn:
        top = conn.execute(sa.text("SELECT max(tax_paid), count(*) FROM metrics")).one()
        assert conn.execute(sa.text("SELECT count(*) FROM metrics WHERE year = 2023")).scalar_one() == 0
    assert math.isfinite(top[0]) and top[0] < PLAUSIBLE_MAX["tax_paid"] and top[1] == 14


def _xlsx_metrics(path: Path, rows: list[list], *, formula_at: str | None = None) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["统一社会信用代码", "年度", "实缴税金", "工业增加值"])
    for r in rows:
        ws.append(r)
    if formula_at:
        ws[formula_at] = "=D2/10"  # openpyxl writes no cached value: what a script-made sheet holds
    wb.save(path)


def test_formula_without_cached_value_keeps_the_stored_figure(db_url, engine, tmp_path, monkeypatch):
    first = write_bundle(tmp_path / "a")
    (first / "metrics.csv").unlink()
    _xlsx_metrics(first / "metrics.xlsx", [[uscc(1), 2025, 123.0, 900.0], [uscc(2), 2025, 80.0, 500.0]])
    assert mujun_import(db_url, first, tmp_path, monkeypatch)[0] == 0
    second = write_bundle(tmp_path / "b")
    (second / "metrics.csv").unlink()
    _xlsx_metrics(second / "metrics.xlsx", [[uscc(1), 2025, None, 900.0], [uscc(2), 2025, 81.0, 500.0]],
                  formula_at="C2")
    code, out = mujun_import(db_url, second, tmp_path, monkeypatch)
    assert code == 3, out
    hit = _reject_of(engine, "metrics.xlsx", "tax_paid")
    assert hit["row"] == 2 and hit["reason"].startswith("公式没有计算结果")
    with engine.connect() as conn:
        tax = dict(conn.execute(sa.text("SELECT uscc, tax_paid FROM metrics WHERE year = 2025")).all())
    assert tax == {uscc(1): 123.0, uscc(2): 81.0}  # the old figure kept, the other row updated


def test_xlsx_cell_at_xfd1048576_is_read_bounded(db_url, engine, tmp_path, monkeypatch):
    """One stray cell at the last cell of a sheet: calamine would allocate 17 billion cells."""
    import resource

    bundle = write_bundle(tmp_path / "b")
    ents = pd.read_csv(bundle / "enterprises.csv", encoding="utf-8-sig", dtype=str)
    (bundle / "enterprises.csv").unlink()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(list(ents.columns))
    for r in ents.itertuples(index=False):
        ws.append(list(r))
    ws["XFD1048576"] = "x"
    wb.save(bundle / "enterprises.xlsx")
    assert (bundle / "enterprises.xlsx").stat().st_size < 20_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 0, out
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 500, grown_mb
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM enterprises")).scalar_one() == 7
    r = rejects(engine)
    assert list(r["severity"]) == ["warning"] and "XFD1048576" in r["reason"][0]


def test_xlsx_date_in_industry_code_and_numeric_uscc(db_url, engine, tmp_path, monkeypatch):
    import datetime as dt

    bundle = write_bundle(tmp_path / "b")
    ents = pd.read_csv(bundle / "enterprises.csv", encoding="utf-8-sig", dtype=str)
    (bundle / "enterprises.csv").unlink()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(list(ents.columns))
    for r in ents.itertuples(index=False):
        ws.append(list(r))
    ws.append([913309991234567890, "数字代码有限公司", 120.1, 30.2, "cgcs2000", "3311", "规上", "东湖街道"])
    ws.append([uscc(9), "日期行业有限公司", 120.1, 30.2, "cgcs2000", dt.datetime(2024, 3, 4), "规上", "东湖街道"])
    wb.save(bundle / "enterprises.xlsx")
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 3, out
    num = _reject_of(engine, "enterprises.xlsx", "uscc")
    assert num["row"] == 9 and num["reason"].endswith(EXCEL_NUMBER_HINT)
    date = _reject_of(engine, "enterprises.xlsx", "industry_code")
    assert date["row"] == 10 and date["value"] == "2024-03-04"
    with engine.connect() as conn:
        codes = conn.execute(sa.text("SELECT industry_code FROM enterprises")).scalars().all()
    assert len(codes) == 7 and all(c.isdigit() for c in codes)  # codes stay text, no date stored


def test_symlink_out_of_the_bundle_is_refused(db_url, engine, tmp_path, monkeypatch):
    bundle = write_bundle(tmp_path / "b")
    (bundle / "leases.csv").unlink()
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("承租企业统一社会信用代码,宗地代码\n", encoding="utf-8")
    (bundle / "leases.csv").symlink_to(outside)
    before = table_state(engine)
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 2, out
    assert "leases.csv: 指向数据包之外的符号链接" in out and "Nothing was imported" in out
    assert table_state(engine) == before


@pytest.mark.parametrize("part", [".dbf", ".shx"])
def test_missing_shapefile_part_is_named(db_url, engine, tmp_path, monkeypatch, part):
    d = _copy_case("import-cpg-says-utf8-data-is-gbk", tmp_path)
    (d / f"parcels{part}").unlink()
    code, out = mujun_import(db_url, d, tmp_path, monkeypatch)
    assert code == 2, out
    assert f"缺少 {part} 文件" in out and f"missing sidecar file parcels{part}" in out
    assert "missing column" not in out and "parcel_code" not in out


def _rewrite_parcels(bundle: Path, edit) -> None:
    g = gpd.read_file(bundle / "parcels.geojson")
    g = edit(g)
    (bundle / "parcels.geojson").unlink()
    pyogrio.write_dataframe(g, bundle / "parcels.geojson")


def test_z_geometries_are_flattened(db_url, engine, tmp_path, monkeypatch):
    bundle = write_bundle(tmp_path / "b")
    import shapely

    _rewrite_parcels(bundle, lambda g: g.set_geometry(shapely.force_3d(g.geometry.values, 35.0), crs=g.crs))
    assert pyogrio.read_info(bundle / "parcels.geojson")["geometry_type"].endswith("Z")
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 0, out
    with engine.connect() as conn:
        dims = conn.execute(sa.text("SELECT DISTINCT ST_NDims(geom) FROM parcels")).scalars().all()
        area = conn.execute(sa.text("SELECT area_m2 FROM parcels WHERE parcel_code = :c"), {"c": parcel_code(1)}).scalar_one()
    assert dims == [2] and area == pytest.approx(6000.0, abs=0.5)


def test_self_intersecting_ring_repaired_and_area_mismatch_flagged(db_url, engine, tmp_path, monkeypatch):
    """A bow-tie over the 100 m × 60 m parcel 1 repairs into two triangles of half its area: the
    warning names the repair, and 登记面积 6000 m² vs 3000 m² computed is flagged (> 5 %)."""
    bundle = write_bundle(tmp_path / "b")

    def edit(g):
        g["登记面积"] = 6000.0
        g.loc[0, "geometry"] = Polygon([(X0, Y0), (X0 + 100, Y0 + 60), (X0 + 100, Y0), (X0, Y0 + 60)])
        return g

    _rewrite_parcels(bundle, edit)
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 0, out  # warnings only: the land is kept
    r = rejects(engine)
    row1 = r[(r["file"] == "parcels.geojson") & (r["row"] == 1)]
    assert list(row1["field"]) == ["geometry", "registered_area_m2"]
    assert row1["reason"].iloc[0].startswith("几何无效，已用 make_valid 修复")
    assert row1["reason"].iloc[1].startswith("计算面积 3000.0 m² 与登记面积 6000.0 m² 相差 50%（超过 5%）")
    with engine.connect() as conn:
        reg, area = conn.execute(sa.text("SELECT registered_area_m2, area_m2 FROM parcels WHERE parcel_code = :c"),
                                 {"c": parcel_code(1)}).one()
    assert reg == 6000.0 and area == pytest.approx(3000.0, abs=1)
    assert abs(reg - area) / reg > AREA_MISMATCH_SHARE
    # and the parcel's archive says so (its warnings compare the same two areas)
    from app.api.archives import parcel_warnings

    assert any("登记面积 6000 m² differs from the measured area 3000 m²" in w
               for w in parcel_warnings({"registered_area_m2": reg, "area_m2": area}, [], []))


def test_junk_rows_refused_fast_and_nothing_changes(db_url, engine, tmp_path, monkeypatch):
    import time

    bundle = write_bundle(tmp_path / "b")
    assert mujun_import(db_url, bundle, tmp_path, monkeypatch)[0] == 0
    before = table_state(engine)
    with open(bundle / "metrics.csv", "a", encoding="utf-8") as fh:
        for i in range(60_000):
            fh.write(f"垃圾{i},xx,yy\n")
    t0 = time.monotonic()
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    took = time.monotonic() - t0
    assert code == 2, out
    assert "metrics.csv: 60014 行中 60000 行的统一社会信用代码（uscc）为空或格式不对" in out
    assert took < 30, took
    assert table_state(engine) == before


def test_rejects_capped_per_file_with_a_count(db_url, engine, tmp_path, monkeypatch):
    from spatial.validate import MAX_REJECTS_PER_FILE

    # 1500 rows of enterprises not in the enterprise file: one error each
    extra = [{"统一社会信用代码": uscc(100 + i), "年度": 2024, "实缴税金": 1.0} for i in range(1500)]
    bundle = write_bundle(tmp_path / "b", metrics_extra=extra)
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 3, out
    r = rejects(engine)
    m = r[r["file"] == "metrics.csv"]
    assert len(m) == MAX_REJECTS_PER_FILE + 1
    summary = m[m["row"] == 0].iloc[0]
    assert summary["severity"] == "error" and summary["reason"].startswith(f"另有 {1500 - MAX_REJECTS_PER_FILE} 条错误未列出")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM metrics")).scalar_one() == 14


def test_csv_header_longer_than_64_kb_keeps_later_columns(tmp_path):
    """Pure: a header line of ~90 KB (many extra columns first) still yields the columns after it."""
    bundle = write_bundle(tmp_path / "b")
    ents = pd.read_csv(bundle / "enterprises.csv", encoding="utf-8-sig", dtype=str)
    pad = pd.DataFrame({f"附加说明字段{i:05d}": [""] * len(ents) for i in range(6000)})
    wide = pd.concat([pad, ents], axis=1)
    wide.to_csv(bundle / "enterprises.csv", index=False, encoding="utf-8-sig")
    assert len((bundle / "enterprises.csv").read_text(encoding="utf-8-sig").splitlines()[0]) > 64 << 10
    b = read_bundle(bundle)
    assert {"uscc", "name", "lon", "lat", "township"} <= set(b.column_map["enterprises.csv"].values())
    assert sorted(b.tables["enterprises"]["uscc"]) == sorted(uscc(i) for i in range(1, 8))
    assert b.rejects.empty, b.messages()


def test_one_gbk_line_in_a_utf8_csv_rejects_that_row_only(db_url, engine, tmp_path, monkeypatch):
    bundle = write_bundle(tmp_path / "b", enterprises_extra=[_ent_row(8, 企业名称="补充八号有限公司")])
    text = (bundle / "enterprises.csv").read_text(encoding="utf-8-sig")
    lines = text.splitlines(keepends=True)
    raw = b"".join(ln.encode("gbk") if i == len(lines) - 1 else ln.encode("utf-8") for i, ln in enumerate(lines))
    (bundle / "enterprises.csv").write_bytes(b"\xef\xbb\xbf" + raw)
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 3, out
    hit = _reject_of(engine, "enterprises.csv", "name")
    assert hit["row"] == 9 and hit["reason"].startswith("无法解码的文字：该行不是 UTF-8")
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT name FROM enterprises ORDER BY uscc")).scalars().all()
    assert len(names) == 7 and all("\ufffd" not in n for n in names)


def test_invisible_characters_in_headers_and_utf16_csv(tmp_path):
    """Pure: a doubled BOM / zero-width space in a header, and Excel's UTF-16 "Unicode text"."""
    bundle = write_bundle(tmp_path / "b")
    text = (bundle / "enterprises.csv").read_text(encoding="utf-8-sig")
    (bundle / "enterprises.csv").write_text("\ufeff\ufeff" + text.replace("企业名称", "企业\u200b名称", 1), encoding="utf-8")
    (bundle / "metrics.csv").write_text((bundle / "metrics.csv").read_text(encoding="utf-8-sig").replace(",", "\t"),
                                        encoding="utf-16")
    b = read_bundle(bundle)
    assert {"uscc", "name"} <= set(b.column_map["enterprises.csv"].values())
    assert len(b.tables["metrics"]) == 14 and b.tables["metrics"]["tax_paid"].notna().all()


def test_unknown_cpg_is_named_and_the_bytes_decide(db_url, engine, tmp_path, monkeypatch):
    d = _copy_case("import-cpg-says-utf8-data-is-gbk", tmp_path)
    (d / "parcels.cpg").write_text("KLINGON-9", encoding="ascii")
    code, out = mujun_import(db_url, d, tmp_path, monkeypatch)
    assert code == 0, out
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT owner_name FROM parcels ORDER BY parcel_code")).scalars().all()
    assert names[0] == "宏达精密机械有限公司"
    r = rejects(engine)
    assert list(r["field"]) == ["parcels.cpg"] and "KLINGON-9 无法识别" in r["reason"][0]


def test_double_encoded_headers_are_named_as_mojibake(tmp_path):
    from spatial.io import BundleError

    bundle = write_bundle(tmp_path / "b")
    text = (bundle / "enterprises.csv").read_text(encoding="utf-8-sig")
    (bundle / "enterprises.csv").write_text(text.encode("utf-8").decode("latin-1"), encoding="utf-8")
    with pytest.raises(BundleError, match="表头是乱码：.*原本是 '统一社会信用代码'"):
        read_bundle(bundle)


def test_one_feature_far_off_is_a_rejected_row_not_a_refusal(db_url, engine, tmp_path, monkeypatch):
    """A vertex typed 1000 km off (outside EPSG:4549's zone) rejects that parcel; the rest load."""
    bundle = write_bundle(tmp_path / "b")

    def edit(g):
        g.loc[2, "geometry"] = Polygon([(X0, Y0), (X0 + 1e6, Y0), (X0 + 1e6, Y0 + 60), (X0, Y0 + 60)])
        return g

    _rewrite_parcels(bundle, edit)
    code, out = mujun_import(db_url, bundle, tmp_path, monkeypatch)
    assert code == 3, out
    r = rejects(engine)
    hit = r[(r["file"] == "parcels.geojson") & (r["severity"] == "error")]
    assert list(hit["row"]) == [3] and hit["reason"].iloc[0].startswith("坐标超出坐标系 EPSG:4549 的范围")
    with engine.connect() as conn:
        codes = conn.execute(sa.text("SELECT parcel_code FROM parcels ORDER BY 1")).scalars().all()
    assert codes == [parcel_code(i) for i in (1, 2, 4, 5, 6)]


def test_junk_refused_after_the_first_chunk_blank_lines_are_not_junk(tmp_path):
    """Pure: 250,000 junk lines are refused once the first 200,000 are read (memory bounded by a
    chunk); 30,000 wholly blank lines below the data are dropped, not counted as junk."""
    from spatial.io import CHUNK, BundleError

    bundle = write_bundle(tmp_path / "b")
    with open(bundle / "metrics.csv", "a", encoding="utf-8") as fh:
        fh.write(",,,,,,,,,,\n" * 30_000)
    assert len(read_bundle(bundle).tables["metrics"]) == 14
    with open(bundle / "metrics.csv", "a", encoding="utf-8") as fh:
        fh.write("x,y\n" * 250_000)
    with pytest.raises(BundleError, match=r"metrics.csv: 前 (\d+) 行中 \d+ 行的统一社会信用代码（uscc）为空或格式不对") as err:
        read_bundle(bundle)
    # counted over the first chunk, blank lines left out: 14 good rows + the junk read so far
    assert f"前 {CHUNK - 30_000} 行中 {CHUNK - 30_014} 行" in str(err.value)


def test_match_summary_is_in_chinese_and_counts_the_links(db_url, engine, tmp_path, monkeypatch):
    """`mujun match` after an import: the summary staff read says 地企对应 N 条 with the stored count,
    and the data-quality lists by their Chinese names (the workbook keeps the sheet keys)."""
    from typer.testing import CliRunner

    from app.cli import cli

    code, out = mujun_import(db_url, _copy_case("owner-point-on-shared-corner", tmp_path), tmp_path, monkeypatch)
    assert code == 0, out
    result = CliRunner().invoke(cli, ["match"])
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        links = conn.execute(sa.text("SELECT count(*) FROM land_links")).scalar()
    assert links > 0
    assert f"地企对应 {links} 条" in result.output
    assert "数据质量：无地企业 " in result.output and "enterprises_without_land" not in result.output


def test_a_bundle_without_any_year_says_it_was_dated_by_the_calendar(db_url, engine, tmp_path, monkeypatch):
    """No --year, no manifest.json, no metrics: the land is dated the calendar year, and the CLI says
    so (with what to do), since later deliveries of earlier years are then refused."""
    code, out = mujun_import(db_url, _copy_case("owner-point-on-shared-corner", tmp_path), tmp_path, monkeypatch)
    assert code == 0, out
    year = pd.Timestamp.now().year
    assert f"已按当前日历年 {year} 年记入" in out
    code, out = mujun_import(db_url, _copy_case("owner-point-on-shared-corner", tmp_path / "again"),
                             tmp_path, monkeypatch, "--year", str(year))
    assert code == 0, out
    assert "已按当前日历年" not in out  # the year was stated
