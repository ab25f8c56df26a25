"""公示名单 — the rating lists a bureau publishes, as Excel, CSV or GeoPackage.

One row per rated subject of the run shown for a year (or a given run): its identity, name,
township, industry group, list, land (亩), each indicator's value, score, rank and percentile
within its group, grade, warning colour, years in D in a row, 差别电价 and the adjustment rules
that fired. Subjects that were not rated (免评, 无地, …) are listed too, with the reason.

A database written by a province run holds many counties (``enterprises.county``,
``parcels.county``; each rated as its own unit, so every county has its own rank 1 per group): its
list then has a 县（区）代码 column before 镇街, rows go county by county (then list, group, rank),
``county`` keeps one county, and the 汇总 sheet counts grades per county and list. A county's own
database (``county`` NULL) gets no such column: its list is as it always was.

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
import shapely
import sqlalchemy as sa

from app import store
from app.api.layers import land_in_year_sql, shown_runs_sql
from app.auth import Principal

__all__ = ["RatingList", "rating_list", "export_ratings", "LEVELS"]

LEVELS = ("enterprise", "parcel")

_ENTERPRISE_SQL = """
    SELECT r.uscc AS subject_id, e.name, e.county, e.township, e.scale, e.industry_code,
           r.industry_group, r.list_name, r.land_area_mu, r.indicators, r.score, r.rank,
           r.percentile, r.grade, r.colour, r.consecutive_d_years, r.electricity_surcharge_yuan,
           r.electricity_refund_yuan, r.tax_per_mu, r.adjustments, r.warnings, r.evaluated,
           r.excluded_reason
    FROM enterprise_ratings r LEFT JOIN enterprises e ON e.uscc = r.uscc
    WHERE r.run_id = :run {scope}
    ORDER BY e.county NULLS FIRST, r.list_name NULLS LAST, r.industry_group NULLS LAST, r.rank NULLS LAST, r.uscc"""

_PARCEL_SQL = """
    SELECT r.identity_code AS subject_id, p.parcel_code, p.kind, p.owner_name, p.county, p.township,
           r.industry_group, r.list_name, p.area_mu AS land_area_mu, r.indicators, r.score, r.rank,
           r.percentile, r.grade, r.colour, r.low_yield_years, r.idle, r.tax_per_mu,
           r.adjustments, r.warnings, r.evaluated, r.excluded_reason {geom}
    FROM parcel_ratings r JOIN {land} p ON p.identity_code = r.identity_code
    WHERE r.run_id = :run {scope}
    ORDER BY p.county NULLS FIRST, r.list_name NULLS LAST, r.industry_group NULLS LAST, r.rank NULLS LAST,
             r.identity_code"""

#: Chinese headers, in the order the columns appear.
_HEADERS = {
    "subject_id": None,  # per level below
    "name": "企业名称", "parcel_code": "宗地代码", "kind": "用地类型", "owner_name": "权利人",
    "county": "县（区）代码", "township": "镇街", "scale": "规模", "industry_code": "行业代码", "industry_group": "行业组",
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
                industry_group: str | None = None, county: str | None = None, with_geometry: bool = False,
                who: Principal | None = None, _where: str = "") -> RatingList:
    """The rating list of one run as a DataFrame with Chinese headers, ready to publish.

    ``year`` picks the run shown for that year (the published one); ``run_id`` a given run.
    ``list_name`` (规上, 规下 …) and ``grades`` (``["C", "D"]``) narrow the rows; subjects not
    rated are kept unless ``grades`` is given. ``region`` limits to one township (镇街) — the
    scope of a township key; ``county`` (6-digit 县级行政区划代码) to one county of a province
    database. Indicator columns come from the run's scheme, titled with their units; numbers are
    rounded to the scheme's published precision. A list of several counties has a 县（区）代码
    column and goes county by county: ranks (组内排名) are within county and group.

    ``who`` is the caller of a download (:mod:`app.api.reports`): its region limits the rows
    (:meth:`Principal.region_clause`), only its runs are listed (drafts for reviewers alone) and
    only the columns :data:`app.auth.CONFIDENTIALITY` lets it see are kept; ``None`` (the CLI,
    run by the county's own staff) keeps every column.

    Raises ``LookupError`` when the year has no shown run or the run does not exist, and
    ``ValueError`` for an unknown level.
    """
    if level not in LEVELS:
        raise ValueError(f"级别 {level!r} 无效：可选 enterprise（经营主体）或 parcel（宗地）")
    run = _run(conn, year, run_id, drafts=who is None or who.sees_drafts)
    scope, params = _where, {"run": run["id"]}
    town = "e.township" if level == "enterprise" else "p.township"
    if region is not None:
        scope += f" AND {town} = :region"
        params["region"] = region
    if who is not None:
        clause, rp = who.region_clause(town)
        scope += f" AND {clause}"
        params |= rp
    if county is not None:
        scope += f" AND {'e' if level == 'enterprise' else 'p'}.county = :county"
        params["county"] = county
    if industry_group is not None:
        scope += " AND r.industry_group = :industry_group"
        params["industry_group"] = industry_group
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
    frame = _publishable(pd.DataFrame(raw.drop(columns=geometry.name) if geom_col else raw), run["scheme"], level,
                         figures=who is None or who.sees_figures)
    if who is not None:
        frame = visible_columns(frame, level, who)
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
def _run(conn: sa.Connection, year: int | None, run_id: int | None, drafts: bool = True) -> dict:
    if run_id is not None:
        statuses = "" if drafts else " AND status = 'published'"
        row = conn.execute(sa.text("SELECT id, year, scheme_name, scheme FROM evaluation_runs WHERE id = :r"
                                   + statuses), {"r": run_id}).mappings().first()
        if row is None:
            raise LookupError(f"没有评价批次 {run_id}：`mujun runs` 列出全部批次")
        return dict(row)
    row = conn.execute(sa.text(f"""
        SELECT r.id, r.year, r.scheme_name, r.scheme FROM ({shown_runs_sql(drafts)}) s
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


def _publishable(raw: pd.DataFrame, scheme: dict, level: str, figures: bool = True) -> pd.DataFrame:
    d = _decimals(scheme)
    titles = _indicator_titles(scheme)
    indicators = pd.DataFrame([v if isinstance(v, dict) else {} for v in raw["indicators"]], index=raw.index)
    out = pd.DataFrame(index=raw.index)
    out[_SUBJECT[level]] = raw["subject_id"]
    for col in ("name", "parcel_code", "kind", "owner_name", "county", "township", "scale", "industry_code",
                "industry_group", "list_name"):
        # the county only where the run's subjects have one (a province database)
        if col in raw.columns and (col != "county" or raw[col].notna().any()):
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
    out[_HEADERS["adjustments"]] = [_adjustment_text(a, figures) for a in raw["adjustments"]]
    out[_HEADERS["warnings"]] = ["；".join(w) if isinstance(w, list) else "" for w in raw["warnings"]]
    out[_HEADERS["excluded_reason"]] = raw["excluded_reason"]
    return out.reset_index(drop=True)


def _adjustment_text(adjustments, figures: bool = True) -> str:
    """``保档「…」B→B；降档「…」B→C`` — the 定档/保档/降档/限档/提档 rules that fired; what
    they compared (a figure) only with ``figures``."""
    if not isinstance(adjustments, list):
        return ""
    parts = []
    for a in adjustments:
        if not isinstance(a, dict):
            continue
        text = f"{a.get('kind', '')}「{a.get('rule', '')}」{a.get('from', '')}→{a.get('to', '')}"
        if a.get("compared") and figures:
            text += f"（{a['compared']}）"
        parts.append(text)
    return "；".join(parts)


# -- Excel ---------------------------------------------------------------------------------------
def write_xlsx(rl: RatingList, out: Path) -> None:
    """One sheet per list (规上, 规下 …), 不参评, and 汇总 first: grade counts per list."""
    import xlsxwriter

    list_col = _HEADERS["list_name"]
    grade_col = _HEADERS["grade"]
    # a caller who may not see the list (名单) gets one sheet
    frame = rl.frame if list_col in rl.frame else rl.frame.assign(**{list_col: "名单"})
    wb = xlsxwriter.Workbook(str(out), {"nan_inf_to_errors": True})
    try:
        head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True,
                              "valign": "vcenter"})
        title = wb.add_format({"bold": True, "font_size": 14})
        level_zh = "经营主体等级" if rl.level == "enterprise" else "宗地等级"
        summary = wb.add_worksheet("汇总")
        summary.write(0, 0, f"{rl.year} 年亩均效益综合评价 {level_zh} 公示名单（{rl.scheme}，评价批次 {rl.run_id}）", title)
        grades = sorted(g for g in frame[grade_col].dropna().unique())
        # several counties (a province database): a row per county and list
        by = [c for c in (_HEADERS["county"], list_col) if c in frame.columns]
        header = [*by, "合计", *grades, "未定档"]
        summary.write_row(2, 0, header, head)
        r = 3
        for name, part in frame.groupby(by, sort=False, dropna=False):
            counts = part[grade_col].value_counts()
            summary.write_row(r, 0, [*("" if pd.isna(v) else v for v in name), len(part), *[int(counts.get(g, 0)) for g in grades],
                                     int(part[grade_col].isna().sum())])
            r += 1
        summary.write_row(r, 0, ["合计", *[""] * (len(by) - 1), len(frame),
                                 *[int((frame[grade_col] == g).sum()) for g in grades],
                                 int(frame[grade_col].isna().sum())], head)
        summary.set_column(0, len(by) - 1, 14)
        summary.set_column(len(by), len(header), 9)
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


# -- who sees which column ------------------------------------------------------------------------
#: Chinese header → the field of :data:`app.auth.CONFIDENTIALITY` it shows. Indicator columns
#: (titled by the scheme) are ``indicators``; a header missing here is analyst-only (closed).
_FIELDS = {
    "统一社会信用代码": "uscc", "宗地身份码": "identity_code", "企业名称": "name", "宗地代码": "parcel_code",
    "用地类型": "kind", "权利人": "owner_name", "县（区）代码": "township", "镇街": "township", "规模": "scale",
    "行业代码": "industry_code", "行业组": "industry_group", "名单": "list_name",
    "亩均税收(万元/亩)": "tax_per_mu", "综合得分": "score", "组内排名": "rank", "组内百分位(%)": "percentile",
    "等级": "grade", "预警颜色": "colour", "连续D档年数": "consecutive_d_years",
    "差别电价(元)": "electricity_surcharge_yuan", "差别电价返还(元)": "electricity_refund_yuan",
    "连续低产年数": "low_yield_years", "闲置": "idle", "调整规则": "adjustments", "预警": "warnings",
    "不参评原因": "excluded_reason", "低效原因": "low_yield_years",
    # clusters
    "连片编号": "identity_code", "宗数": "enterprise_count", "企业数": "enterprise_count",
    "面积(亩)": "area_mu", "闲置宗数": "idle", "等级构成": "grade", "成员宗地": "identity_code",
    "总税收(万元)": "total_tax_wan", "平均亩均税收(万元/亩)": "mean_tax_per_mu",
}
#: 用地面积 is the land of the subject: an enterprise's land is a link (who uses which land).
_AREA_FIELD = {"enterprise": "land_area_mu", "parcel": "area_mu"}


def visible_columns(frame: pd.DataFrame, level: str, who: Principal) -> pd.DataFrame:
    """``frame`` with only the columns ``who`` may see (:data:`app.auth.CONFIDENTIALITY`)."""
    keep = []
    for col in frame.columns:
        field = _AREA_FIELD[level] if col == _HEADERS["land_area_mu"] else _FIELDS.get(col, "indicators")
        if who.sees(field):
            keep.append(col)
    return frame.loc[:, keep]


# -- 低效用地 and 连片低效用地 ----------------------------------------------------------------------
LIST_KINDS = ("ratings", "low-yield", "clusters")


def low_yield_list(conn: sa.Connection, *, year: int | None = None, run_id: int | None = None,
                   region: str | None = None, industry_group: str | None = None,
                   threshold: float | None = None, with_geometry: bool = False,
                   who: Principal | None = None) -> RatingList:
    """低效用地名单: the land of the run that is idle (闲置) or whose 亩均税收 is under the
    scheme's 低产田 standard this year (``multiyear.low_yield``: e.g. 5 万元/亩 以下, 苏州), with
    its consecutive years under it (低产田 after ``years`` years, 嘉善).

    The standard is applied exactly as the evaluation applied it (its ``low_yield_years``: at
    the scheme's precision, 以下 inclusive); ``threshold`` (万元/亩, CLI only) lists land whose
    亩均税收 is below another figure instead. Raises ``LookupError`` as :func:`rating_list`.
    """
    where = " AND r.evaluated IS NOT NULL AND (r.idle OR {cond})"
    params_cond = "coalesce(r.low_yield_years, 0) >= 1"
    if threshold is not None:
        params_cond = f"r.tax_per_mu < {float(threshold)!r}"
    rl = rating_list(conn, year=year, run_id=run_id, level="parcel", region=region,
                     industry_group=industry_group, with_geometry=with_geometry, who=who,
                     _where=where.format(cond=params_cond))
    scheme = _run(conn, None, rl.run_id)["scheme"]
    ly = ((scheme.get("multiyear") or {}).get("low_yield") or {}) if isinstance(scheme, dict) else {}
    frame = rl.frame
    if threshold is not None:
        rule = f"亩均税收低于 {threshold:g} 万元/亩"
    elif ly:
        rule = f"亩均税收 {ly.get('threshold'):g} 万元/亩{'以下' if ly.get('inclusive') else '以下（不含）'}"
    else:
        rule = "亩均税收低于标准"
    idle = frame.get(_HEADERS["idle"])
    years = frame.get(_HEADERS["low_yield_years"])
    reasons = []
    for i in range(len(frame)):
        parts = []
        if idle is not None and idle.iloc[i] == "是":
            parts.append("闲置")
        if years is not None and pd.notna(years.iloc[i]) and int(years.iloc[i]) >= 1:
            n = int(years.iloc[i])
            parts.append(f"{rule}（连续 {n} 年{'，低产田' if ly and n >= int(ly.get('years', 3)) else ''}）")
        elif threshold is not None and "闲置" not in parts:
            parts.append(rule)
        reasons.append("；".join(parts))
    if who is None or who.sees("low_yield_years"):
        frame.insert(frame.columns.get_loc(_HEADERS["grade"]) if _HEADERS["grade"] in frame else len(frame.columns),
                     "低效原因", reasons)
    rl.frame = frame
    rl.scheme = f"{rl.scheme} · 低效用地（{rule}或闲置）"
    return rl


@dataclass
class ClusterList:
    """连片低效用地 of one run: one row per block (``clusters``) and per member (``members``)."""

    run_id: int
    year: int
    scheme: str
    clusters: pd.DataFrame
    members: pd.DataFrame
    outlines: gpd.GeoSeries


def cluster_list(conn: sa.Connection, *, year: int | None = None, run_id: int | None = None,
                 grades: list[str] | None = None, gap_m: float = 30.0, min_area_mu: float = 0.0,
                 include_idle: bool = True, region: str | None = None,
                 who: Principal | None = None) -> ClusterList:
    """连片低效用地名单: every block of :func:`app.api.clusters.find_clusters` (the same SQL as
    ``GET /clusters``) with its members. ``grades`` defaults to the scheme's two lowest (C, D);
    ``gap_m`` in metres, ``min_area_mu`` in 亩. Figures (total tax 万元, mean 亩均税收) only
    for callers who see figures. Raises ``LookupError`` as :func:`rating_list`, ``ValueError``
    for a grade the scheme does not have.
    """
    from app.api.clusters import find_clusters

    run = _run(conn, year, run_id, drafts=who is None or who.sees_drafts)
    scheme_grades = [str(g) for g in (run["scheme"].get("grades") or [])] if isinstance(run["scheme"], dict) else []
    asked = list(grades) if grades else (scheme_grades[-2:] or ["C", "D"])
    unknown = [g for g in asked if scheme_grades and g not in scheme_grades]
    if unknown:
        raise ValueError(f"等级 {'、'.join(unknown)} 不在评价办法中（{'、'.join(scheme_grades)}）")
    rows = find_clusters(conn, int(run["id"]), grades=asked, include_idle=include_idle, gap_m=gap_m,
                         min_area_mu=min_area_mu, township=region, who=who)
    figures = who is None or who.sees_figures
    blocks, outlines = [], []
    for r in rows:
        counts: dict[str, int] = {}
        for g in r.member_grades:
            counts[g or "未评"] = counts.get(g or "未评", 0) + 1
        row = {"连片编号": r.id, "镇街": "、".join(sorted(t for t in r.townships if t)),
               "宗数": int(r.member_count), "面积(亩)": float(_round_half_up(pd.Series([r.area_mu]), 2)[0]),
               "企业数": int(r.enterprise_count or 0), "闲置宗数": int(r.idle_count),
               "等级构成": "、".join(f"{g} {n}" for g, n in sorted(counts.items())),
               "成员宗地": "、".join(r.members)}
        if figures:
            row["总税收(万元)"] = round(float(r.total_tax_wan), 2)
            row["平均亩均税收(万元/亩)"] = round(float(r.total_tax_wan) / r.area_mu, 2) if r.area_mu else None
        blocks.append(row)
        outlines.append(r.outline)
    member_codes = [m for r in rows for m in r.members]
    which = {m: r.id for r in rows for m in r.members}
    land = land_in_year_sql(str(int(run["year"])))
    tax = ", r.tax_per_mu" if figures else ""
    members = store.read_frame(conn, f"""
        SELECT p.identity_code, p.parcel_code, p.township, p.area_mu, r.grade, r.idle{tax}
        FROM parcel_ratings r JOIN {land} p ON p.identity_code = r.identity_code
        WHERE r.run_id = :run AND r.identity_code = ANY(:codes)
        ORDER BY p.identity_code""", {"run": run["id"], "codes": member_codes})
    mem = pd.DataFrame({"连片编号": members["identity_code"].map(which), "宗地身份码": members["identity_code"],
                        "宗地代码": members["parcel_code"], "镇街": members["township"],
                        "面积(亩)": _round_half_up(members["area_mu"], 2), "等级": members["grade"],
                        "闲置": members["idle"].map({True: "是", False: ""})})
    if figures:
        mem["亩均税收(万元/亩)"] = _round_half_up(members["tax_per_mu"], 2)
    mem = mem.sort_values(["连片编号", "宗地身份码"], kind="stable").reset_index(drop=True)
    shapes = shapely.from_geojson([g or '{"type":"Polygon","coordinates":[]}' for g in outlines])
    return ClusterList(int(run["id"]), int(run["year"]), run["scheme_name"],
                       pd.DataFrame(blocks, columns=list(blocks[0]) if blocks else ["连片编号"]), mem,
                       gpd.GeoSeries(shapes, crs=4490))


def export_list(engine: sa.Engine, kind: str, out: str | Path, **kwargs) -> RatingList | ClusterList:
    """Write a list of ``kind`` (``ratings`` | ``low-yield`` | ``clusters``) to ``out``
    (.xlsx, .csv; .gpkg for land). Raises ``ValueError`` for an unknown kind or extension."""
    if kind == "ratings":
        return export_ratings(engine, out, **kwargs)
    if kind not in LIST_KINDS:
        raise ValueError(f"名单 {kind!r} 无效：可选 {'、'.join(LIST_KINDS)}")
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".xlsx", ".csv", ".gpkg"):
        raise ValueError(f"{out}: 请使用 .xlsx、.csv 或 .gpkg")
    out.parent.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        if kind == "low-yield":
            rl = low_yield_list(conn, with_geometry=suffix == ".gpkg", **kwargs)
        else:
            rl = cluster_list(conn, **kwargs)
    write_list(rl, out)
    return rl


def write_list(rl: RatingList | ClusterList, out: Path) -> None:
    """One list to ``out`` by its extension (.xlsx, .csv, .gpkg)."""
    suffix = out.suffix.lower()
    if isinstance(rl, ClusterList):
        if suffix == ".csv":
            rl.members.to_csv(out, index=False, encoding="utf-8-sig")
        elif suffix == ".gpkg":
            gpd.GeoDataFrame(rl.clusters, geometry=rl.outlines.values, crs=4490).to_file(
                out, layer=f"连片低效用地_{rl.year}", driver="GPKG")
        else:
            write_cluster_xlsx(rl, out)
        return
    if suffix == ".csv":
        rl.frame.to_csv(out, index=False, encoding="utf-8-sig")
    elif suffix == ".gpkg":
        if rl.geometry is None:
            raise ValueError("经营主体名单没有图形：请导出为 .xlsx 或 .csv")
        gpd.GeoDataFrame(rl.frame, geometry=rl.geometry.values, crs=4490).to_file(
            out, layer=f"宗地_{rl.year}", driver="GPKG")
    else:
        write_xlsx(rl, out)


def write_cluster_xlsx(cl: ClusterList, out: Path) -> None:
    """Sheets 连片低效用地 (one row per block, largest first) and 成员宗地 (one row per member)."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(str(out), {"nan_inf_to_errors": True})
    try:
        head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": True,
                              "valign": "vcenter"})
        _sheet(wb, "连片低效用地", cl.clusters, head)
        _sheet(wb, "成员宗地", cl.members, head)
    finally:
        wb.close()
