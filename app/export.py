"""``mujun export``: the pipeline's tables for analysts who live in Excel and QGIS.

CSV (UTF-8 with BOM, so Excel shows Chinese), XLSX with Chinese headers, or GeoPackage (EPSG:4490)
for the tables that have geometry. One query per table, defined here.

Each export is of one year's land (``year``; default the current land and the newest matched
year): the land valid that year (:func:`app.api.layers.land_in_year_sql`) and that year's links,
sub-lots and merged enterprise land.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa

from app import store
from app.api.layers import derived_year_sql, land_in_year_sql

_Y = "CAST(:year AS integer)"
_LAND = land_in_year_sql(_Y)


def _dy(table: str) -> str:
    return derived_year_sql(table, _Y)


_QUERIES: dict[str, tuple[str, str | None]] = {
    "links": ("""
        SELECT l.identity_code, l.parcel_code, l.uscc, e.name, l.role, l.method, l.confidence, l.distance_m,
               l.share, l.attributed_area_m2, l.attributed_area_mu, p.kind, p.township
        FROM land_links l JOIN """ + _LAND + """ p ON p.identity_code = l.identity_code
        LEFT JOIN enterprises e ON e.uscc = l.uscc
        WHERE l.year = """ + _dy("land_links") + """
        ORDER BY l.identity_code, l.uscc""", None),
    "parcels": ("""
        SELECT p.identity_code, p.kind, p.parcel_code, p.parent_identity_code, p.owner_uscc, p.owner_name,
               p.user_uscc, p.township, p.land_use, p.registered_area_m2, p.area_m2, p.area_mu,
               (SELECT count(*) FROM land_links l WHERE l.identity_code = p.identity_code
                AND l.year = """ + _dy("land_links") + """) AS occupant_count,
               p.valid_from, p.valid_to, ST_AsBinary(p.geom) AS geom
        FROM """ + _LAND + """ p ORDER BY p.identity_code""", "geom"),
    "enterprises": ("""
        SELECT e.uscc, e.name, e.industry_code, e.scale, e.township, e.address, e.flags,
               el.land_area_m2, el.land_area_mu, el.parcel_count, el.owned_area_m2, el.leased_in_area_m2,
               el.land_class, ST_AsBinary(e.geom) AS geom
        FROM enterprises e LEFT JOIN enterprise_land el ON el.uscc = e.uscc
             AND el.year = """ + _dy("enterprise_land") + """ ORDER BY e.uscc""", "geom"),
    "sublots": ("""
        SELECT s.identity_code, p.parcel_code, s.uscc, e.name, s.share, s.area_m2,
               s.area_m2 / (10000.0 / 15) AS area_mu, ST_AsBinary(s.geom) AS geom
        FROM sublots s JOIN """ + _LAND + """ p ON p.identity_code = s.identity_code
        LEFT JOIN enterprises e ON e.uscc = s.uscc
        WHERE s.year = """ + _dy("sublots") + """ ORDER BY s.identity_code, s.uscc""", "geom"),
    "rejects": ("""
        SELECT r.batch_id, b.bundle_path, r.file, r.row, r.field, r.value, r.reason, r.severity
        FROM import_rejects r JOIN import_batches b ON b.id = r.batch_id ORDER BY r.batch_id, r.file, r.row""", None),
}

#: Chinese headers for the XLSX export (the analysts' language).
CHINESE = {
    "identity_code": "宗地身份码", "parcel_code": "宗地代码", "parent_identity_code": "关联宗地身份码",
    "uscc": "统一社会信用代码", "name": "企业名称", "role": "角色", "method": "匹配方式", "confidence": "置信度",
    "distance_m": "距离(米)", "share": "面积占比", "attributed_area_m2": "分摊面积(平方米)",
    "attributed_area_mu": "分摊面积(亩)", "kind": "用地类型", "township": "镇街", "owner_uscc": "权利人统一社会信用代码",
    "owner_name": "权利人", "user_uscc": "使用企业统一社会信用代码", "land_use": "用途", "registered_area_m2": "登记面积",
    "area_m2": "面积(平方米)", "area_mu": "面积(亩)", "occupant_count": "使用企业数", "industry_code": "行业代码",
    "scale": "规模", "address": "地址", "flags": "标记", "land_area_m2": "用地面积(平方米)", "land_area_mu": "用地面积(亩)",
    "parcel_count": "宗地数", "owned_area_m2": "自有面积(平方米)", "leased_in_area_m2": "租入面积(平方米)",
    "land_class": "用地类别", "batch_id": "导入批次", "bundle_path": "数据包", "file": "文件", "row": "行号",
    "field": "字段", "value": "值", "reason": "原因", "severity": "级别",
    "valid_from": "起始年度", "valid_to": "终止年度",
}

_ROLE_ZH = {"owner_occupier": "自用", "landlord": "出租方", "tenant": "承租方"}
_KIND_ZH = {"registered": "已登记工业宗地", "defacto": "独立的事实用地", "defacto_attached": "关联事实用地"}


def export_table(engine: sa.Engine, what: str, out: str | Path, year: int | None = None) -> int:
    """Write one table to ``out`` (format from the extension); return the number of rows.
    ``year``: whose land and links (default: the current land, the newest matched year).

    >>> export_table(db.engine(), "links", "links.xlsx")   # doctest: +SKIP
    18342
    """
    if what not in _QUERIES:
        raise ValueError(f"cannot export {what!r}; choose one of {', '.join(_QUERIES)}")
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".xlsx", ".gpkg"):
        raise ValueError(f"{out}: use .csv, .xlsx or .gpkg")
    sql, geom_col = _QUERIES[what]
    if suffix == ".gpkg" and geom_col is None:
        raise ValueError(f"{what} has no geometry: export it as .csv or .xlsx")
    with engine.connect() as conn:
        frame = store.read_frame(conn, sql, {"year": year}, geom_col=geom_col if suffix == ".gpkg" else None)
    if geom_col and suffix != ".gpkg":
        frame = frame.drop(columns=geom_col)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gpkg":
        gpd.GeoDataFrame(frame).to_file(out, layer=what, driver="GPKG")
    elif suffix == ".csv":
        frame.to_csv(out, index=False, encoding="utf-8-sig")
    else:
        _to_xlsx(frame, out)
    return len(frame)


def _to_xlsx(frame: pd.DataFrame, out: Path) -> None:
    zh = frame.copy()
    if "role" in zh.columns:
        zh["role"] = zh["role"].map(_ROLE_ZH).fillna(zh["role"])
    if "kind" in zh.columns:
        zh["kind"] = zh["kind"].map(_KIND_ZH).fillna(zh["kind"])
    zh = zh.rename(columns=CHINESE)
    zh.to_excel(out, index=False, sheet_name="data")
