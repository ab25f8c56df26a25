"""公示名单 — the rating lists a bureau publishes, as Excel, CSV or GeoPackage.

One row per rated subject of the run shown for a year (or a given run): its identity, name,
township, industry group, list, land (亩), each indicator's value, score, rank and percentile
within its group, grade, warning colour, years in D in a row, 差别电价 and the adjustment rules
that fired. Subjects that were not rated (免评, 无地, …) are listed too, with the reason.

Numbers are rounded to what the scheme's 办法 publishes (``precision.decimals``, default 2) with
the unit in the header; values are Chinese (名单, 角色, 颜色) as bureaus publish them. The
spreadsheet is written by XlsxWriter: column widths, a frozen header row and an auto-filter on
every sheet, one sheet per list plus a summary sheet (汇总) and one of the subjects not rated.

>>> n = export_ratings(db.engine(), "ratings.xlsx", year=2024)     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import sqlalchemy as sa

from app import store
from app.api.layers import SHOWN_RUNS_SQL, land_in_year_sql

__all__ = ["RatingList", "rating_list", "export_ratings", "LEVELS"]

LEVELS = ("enterprise", "parcel")

_ENTERPRISE_SQL = """
    SELECT r.uscc AS subject_id, e.name, e.township, e.scale, e.industry_code,
           r.industry_group, r.list_name, r.land_area_mu, r.indicators, r.score, r.rank,
           r.percentile, r.grade, r.colour, r.consecutive_d_years, r.electricity_surcharge_yuan,
           r.electricity_refund_yuan, r.tax_per_mu, r.adjustments, r.warnings, r.evaluated,
           r.excluded_reason
    FROM enterprise_ratings r LEFT JOIN enterprises e ON e.uscc = r.uscc
    WHERE r.run_id = :run {scope}
    ORDER BY r.list_name NULLS LAST, r.industry_group NULLS LAST, r.rank NULLS LAST, r.uscc"""

_PARCEL_SQL = """
    SELECT r.identity_code AS subject_id, p.parcel_code, p.kind, p.owner_name, p.township,
           r.industry_group, r.list_name, p.area_mu AS land_area_mu, r.indicators, r.score, r.rank,
           r.percentile, r.grade, r.colour, r.low_yield_years, r.idle, r.tax_per_mu,
           r.adjustments, r.warnings, r.evaluated, r.excluded_reason {geom}
    FROM parcel_ratings r JOIN {land} p ON p.identity_code = r.identity_code
    WHERE r.run_id = :run {scope}
    ORDER BY r.list_name NULLS LAST, r.industry_group NULLS LAST, r.rank NULLS LAST, r.identity_code"""

#: Chinese headers, in the order the columns appear.
_HEADERS = {
    "subject_id": None,  # per level below
    "name": "企业名称", "parcel_code": "宗地代码", "kind": "用地类型", "owner_name": "权利人",
    "township": "镇街", "scale": "规模", "industry_code": "行业代码", "industry_group": "行业组",
    "list_name": "名单", "land_area_mu": "用地面积(亩)", "tax_per_mu": "亩均税收(万元/亩)",
    "score": "综合得分", "rank": "组内排名", "percentile": "组内百分位(%)", "grade": "等级",
    "colour": "预警颜色", "consecutive_d_years": "连续D档年数", "electricity_surcharge_yuan": "差别电价(元)",
    "electricity_refund_yuan": "差别电价返还(元)", "low_yield_years": "连续低产年数", "idle": "闲置",
    "adjustments": "调整规则", "warnings": "预警", "excluded_reason": "不参评原因",
}
_SUBJECT = {"enterprise": "统一社会信用代码", "parcel": "宗地身份码"}
_KIND_ZH = {"registered": "已登记工业宗地", "defacto": "独立的事实用地", "defacto_attached": "关联事实用地"}
_NOT_RATED = "不参评"


@dataclass
class RatingList:
    """One run's rating list: ``frame`` with Chinese headers, and what it came from."""

    run_id: int
    year: int
    scheme: str
    level: str
    frame: pd.DataFrame
    geometry: gpd.GeoSeries | None = None


def rating_list(conn: sa.Connection, *, year: int | None = None, run_id: int | None = None,
                level: str = "enterprise", list_name: str | None = None,
                grades: list[str] | None = None, region: str | None = None,
                with_geometry: bool = False) -> RatingList:
    """The rating list of one run as a DataFrame with Chinese headers, ready to publish.

    ``year`` picks the run shown for that year (the published one); ``run_id`` a given run.
    ``list_name`` (规上, 规下 …) and ``grades`` (``["C", "D"]``) narrow the rows; subjects not
    rated are kept unless ``grades`` is given. ``region`` limits to one township (镇街) — the
    scope of a township key. Indicator columns come from the run's scheme, titled with their
    units; numbers are rounded to the scheme's published precision.

    Raises ``LookupError`` when the year has no shown run or the run does not exist, and
    ``ValueError`` for an unknown level.
    """
    if level not in LEVELS:
        raise ValueError(f"级别 {level!r} 无效：可选 enterprise（经营主体）或 parcel（宗地）")
    run = _run(conn, year, run_id)
    scope, params = "", {"run": run["id"]}
    if region is not None:
        scope += " AND {t}.township = :region".format(t="e" if level == "enterprise" else "p")
        params["region"] = region
    if list_name is not None:
        scope += " AND r.list_name = :list"
        params["list"] = list_name
    if grades:
        scope += " AND r.grade = ANY(:grades)"
        params["grades"] = list(grades)
    if level == "enterprise":
        sql = _ENTERPRISE_SQL.format(scope=scope)
        geom_col = None
    else:
        geom = ", ST_AsBinary(p.geom) AS geom" if with_geometry else ""
        # the land as it was in the run's year (versions: app.api.layers.land_in_year_sql)
        sql = _PARCEL_SQL.format(scope=scope, geom=geom, land=land_in_year_sql(str(int(run["year"]))))
        geom_col = "geom" if with_geometry else None
    raw = store.read_frame(conn, sql, params, geom_col=geom_col)
    geometry = raw.geometry if geom_col else None
    frame = _publishable(pd.DataFrame(raw.drop(columns=geometry.name) if geom_col else raw), run["scheme"], level)
    return RatingList(int(run["id"]), int(run["year"]), run["scheme_name"], level, frame,
                      gpd.GeoSeries(geometry.values, crs=4490) if geometry is not None else None)


def export_ratings(engine: sa.Engine, out: str | Path, **kwargs) -> RatingList:
    """Write :func:`rating_list` to ``out``: ``.xlsx`` (one sheet per list, 汇总, 不参评),
    ``.csv`` (UTF-8 with BOM, so Excel shows Chinese) or, for parcels, ``.gpkg`` (EPSG:4490).

    Raises ``ValueError`` for another extension or a GeoPackage of enterprises.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".xlsx", ".csv", ".gpkg"):
        raise ValueError(f"{out}: 请使用 .xlsx、.csv 或 .gpkg（仅宗地）")
    if suffix == ".gpkg" and kwargs.get("level", "enterprise") != "parcel":
        raise ValueError("经营主体名单没有图形：请导出为 .xlsx 或 .csv，或加 --level parcel")
    with engine.connect() as conn:
        rl = rating_list(conn, with_geometry=suffix == ".gpkg", **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        rl.frame.to_csv(out, index=False, encoding="utf-8-sig")
    elif suffix == ".gpkg":
        gpd.GeoDataFrame(rl.frame, geometry=rl.geometry.values, crs=4490).to_file(
            out, layer=f"宗地等级_{rl.year}", driver="GPKG")
    else:
        write_xlsx(rl, out)
    return rl


# -- steps ---------------------------------------------------------------------------------------
def _run(conn: sa.Connection, year: int | None, run_id: int | None) -> dict:
    if run_id is not None:
        row = conn.execute(sa.text("SELECT id, year, scheme_name, scheme FROM evaluation_runs WHERE id = :r"),
                           {"r": run_id}).mappings().first()
        if row is None:
            raise LookupError(f"没有评价批次 {run_id}：`mujun runs` 列出全部批次")
        return dict(row)
    row = conn.execute(sa.text(f"""
        SELECT r.id, r.year, r.scheme_name, r.scheme FROM ({SHOWN_RUNS_SQL}) s
        JOIN evaluation_runs r ON r.id = s.id WHERE s.year = :y"""), {"y": year}).mappings().first()
    if row is None:
        raise LookupError(f"{year} 年没有已发布的评价：先运行 `mujun evaluate --year {year} --publish`")
    return dict(row)


def _decimals(scheme: dict) -> int:
    precision = scheme.get("precision") if isinstance(scheme, dict) else None
    if isinstance(precision, dict) and isinstance(precision.get("decimals"), int):
        return precision["decimals"]
    return 2


def _indicator_titles(scheme: dict) -> dict[str, str]:
    """``{key: "亩均税收(万元/亩)"}`` for every indicator of the scheme, in scheme order."""
    titles: dict[str, str] = {}
    for lst in scheme.get("lists", []) if isinstance(scheme, dict) else []:
        for ind in lst.get("indicators", []):
            unit = ind.get("unit")
            titles.setdefault(ind["key"], f"{ind.get('title', ind['key'])}({unit})" if unit else ind.get("title", ind["key"]))
    return titles


def _round_half_up(values: pd.Series, decimals: int) -> pd.Series:
    """Half-up rounding as the 办法's tables print (Python's round() is half-to-even)."""
    x = pd.to_numeric(values, errors="coerce").astype("float64")
    scale = 10.0 ** decimals
    # the tiny nudge keeps 2.675 (stored as 2.67499…) from rounding down
    return np.sign(x) * np.floor(np.abs(x) * scale + 0.5 + 1e-9) / scale


def _publishable(raw: pd.DataFrame, scheme: dict, level: str) -> pd.DataFrame:
    d = _decimals(scheme)
    titles = _indicator_titles(scheme)
    indicators = pd.DataFrame([v if isinstance(v, dict) else {} for v in raw["indicators"]], index=raw.index)
    out = pd.DataFrame(index=raw.index)
    out[_SUBJECT[level]] = raw["subject_id"]
    for col in ("name", "parcel_code", "kind", "owner_name", "township", "scale", "industry_code",
                "industry_group", "list_name"):
        if col in raw.columns:
            out[_HEADERS[col]] = raw[col].map(_KIND_ZH).fillna(raw[col]) if col == "kind" else raw[col]
    out[_HEADERS["list_name"]] = raw["list_name"].where(raw["evaluated"].astype(bool), _NOT_RATED).fillna(_NOT_RATED)
    out[_HEADERS["land_area_mu"]] = _round_half_up(raw["land_area_mu"], d)
    for key, title in titles.items():
        if key in indicators.columns:
            out[title] = _round_half_up(indicators[key], d)
    if "tax_per_mu" not in titles:
        out[_HEADERS["tax_per_mu"]] = _round_half_up(raw["tax_per_mu"], d)
    out[_HEADERS["score"]] = _round_half_up(raw["score"], d)
    out[_HEADERS["rank"]] = raw["rank"].astype("Int64")
    out[_HEADERS["percentile"]] = _round_half_up(raw["percentile"], 1)
    out[_HEADERS["grade"]] = raw["grade"]
    out[_HEADERS["colour"]] = raw["colour"]
    for col in ("consecutive_d_years", "low_yield_years"):
        if col in raw.columns:
            out[_HEADERS[col]] = raw[col].astype("Int64")
    for col in ("electricity_surcharge_yuan", "electricity_refund_yuan"):
        if col in raw.columns:
            out[_HEADERS[col]] = _round_half_up(raw[col], 2)
    if "idle" in raw.columns:
        out[_HEADERS["idle"]] = raw["idle"].map({True: "是", False: ""})
    out[_HEADERS["adjustments"]] = [_adjustment_text(a) for a in raw["adjustments"]]
    out[_HEADERS["warnings"]] = ["；".join(w) if isinstance(w, list) else "" for w in raw["warnings"]]
    out[_HEADERS["excluded_reason"]] = raw["excluded_reason"]
    return out.reset_index(drop=True)


def _adjustment_text(adjustments) -> str:
    """``保档「…」B→B；降档「…」B→C`` — the 定档/保档/降档/限档/提档 rules that fired."""
    if not isinstance(adjustments, list):
        return ""
    parts = []
    for a in adjustments:
        if not isinstance(a, dict):
            continue
        text = f"{a.get('kind', '')}「{a.get('rule', '')}」{a.get('from', '')}→{a.get('to', '')}"
        if a.get("compared"):
            text += f"（{a['compared']}）"
        parts.append(text)
    return "；".join(parts)


# -- Excel ---------------------------------------------------------------------------------------
def write_xlsx(rl: RatingList, out: Path) -> None:
    """One sheet per list (规上, 规下 …), 不参评, and 汇总 first: grade counts per list."""
    import xlsxwriter

    frame = rl.frame
    list_col = _HEADERS["list_name"]
    grade_col = _HEADERS["grade"]
    wb = xlsxwriter.Workbook(str(out), {"nan_inf_to_errors": True})
    try:
        head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True,
                              "valign": "vcenter"})
        title = wb.add_format({"bold": True, "font_size": 14})
        level_zh = "经营主体等级" if rl.level == "enterprise" else "宗地等级"
        summary = wb.add_worksheet("汇总")
        summary.write(0, 0, f"{rl.year} 年亩均效益综合评价 {level_zh} 公示名单（{rl.scheme}，评价批次 {rl.run_id}）", title)
        grades = sorted(g for g in frame[grade_col].dropna().unique())
        header = ["名单", "合计", *grades, "未定档"]
        summary.write_row(2, 0, header, head)
        r = 3
        for name, part in frame.groupby(list_col, sort=False):
            counts = part[grade_col].value_counts()
            summary.write_row(r, 0, [name, len(part), *[int(counts.get(g, 0)) for g in grades],
                                     int(part[grade_col].isna().sum())])
            r += 1
        summary.write_row(r, 0, ["合计", len(frame), *[int((frame[grade_col] == g).sum()) for g in grades],
                                 int(frame[grade_col].isna().sum())], head)
        summary.set_column(0, 0, 14)
        summary.set_column(1, len(header), 9)
        summary.freeze_panes(3, 0)
        for name, part in frame.groupby(list_col, sort=False):
            _sheet(wb, _sheet_name(str(name)), part.drop(columns=list_col) if name != _NOT_RATED else part, head)
    finally:
        wb.close()


def _sheet_name(name: str) -> str:
    bad = set("[]:*?/\\")
    return "".join("_" if c in bad else c for c in name)[:31] or "名单"


def _sheet(wb, name: str, frame: pd.DataFrame, head) -> None:
    ws = wb.add_worksheet(name)
    # Columns with no value in this sheet (e.g. 规下 has one indicator) are left out.
    frame = frame.loc[:, [c for c in frame.columns if frame[c].notna().any() and (frame[c].astype(str) != "").any()]
                      or list(frame.columns)]
    ws.write_row(0, 0, list(frame.columns), head)
    for j, col in enumerate(frame.columns):
        values = frame[col]
        numeric = pd.api.types.is_numeric_dtype(values)
        for i, v in enumerate(values.tolist(), start=1):
            if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
                continue
            if numeric:
                ws.write_number(i, j, float(v))
            else:
                ws.write_string(i, j, str(v))
        ws.set_column(j, j, _width(col, values))
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, max(len(frame), 1), len(frame.columns) - 1)


def _width(header: str, values: pd.Series) -> float:
    """Column width in Excel characters: CJK characters count double."""
    def w(s: str) -> int:
        return sum(2 if ord(c) > 0x2E80 else 1 for c in s)

    sample = values.dropna().astype(str).head(500)
    longest = max([w(header), *(w(s) for s in sample)]) if len(sample) else w(header)
    return min(max(longest + 2, 8), 60)
