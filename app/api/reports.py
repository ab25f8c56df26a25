"""What a bureau publishes and prints, downloaded from the web map.

* ``GET /lists/{kind}.xlsx`` (or ``.csv``) — the 公示名单 of a year as :mod:`app.lists` writes
  them for ``mujun export``: ``ratings`` (经营主体 or 宗地, ``level=``), ``low-yield`` (低效用地:
  idle or under the 低产田 standard) and ``clusters`` (连片低效用地 with their members). The map's
  "导出 Excel" button asks for the year, township, industry group and grades it shows.

Who sees what is :data:`app.auth.CONFIDENTIALITY` and nothing else: the rows are limited to the
caller's region (:meth:`Principal.region_clause`), columns the caller may not see are left out
(:func:`app.lists.visible_columns`), a list chosen by a field the caller may not see (an
enterprise list is about identities: ``link``; the low-yield list by ``low_yield_years``:
``viewer``) is refused with 401/403, and drafts are listed for reviewers alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.common import RUN_QUERY, YEAR_QUERY, json_error
from app.auth import Principal, field_level, principal

router = APIRouter(tags=["reports"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_MEDIA = {"xlsx": XLSX, "csv": "text/csv; charset=utf-8"}
#: html or pdf pages (体检表, summary)
_PAGE = {200: {"content": {"text/html": {}, "application/pdf": {}}}}
_TITLES = {"ratings": "等级名单", "low-yield": "低效用地名单", "clusters": "连片低效用地名单"}


def _denied(who: Principal, need: str, what: str) -> Response:
    anonymous = who.key_id is None
    return json_error(401 if anonymous else 403, "Unauthorized" if anonymous else "Forbidden",
                      f"{what} needs a key with the '{need}' role (send it as X-API-Key)")


def attachment(filename: str) -> dict:
    """A Content-Disposition that keeps a Chinese file name (RFC 6266 / 5987)."""
    ascii_name = filename.encode("ascii", "ignore").decode() or "download"
    return {"Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}",
            "Cache-Control": "private, no-cache"}


def _file_response(write, suffix: str, filename: str) -> Response:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"list{suffix}"
        write(path)
        body = path.read_bytes()
    return Response(body, media_type=_MEDIA[suffix.lstrip(".")], headers=attachment(filename))


@router.get("/lists/{kind}.{ext}", summary="公示名单 as Excel or CSV: ratings, low-yield land, clusters",
            response_class=Response, responses={200: {"content": {XLSX: {}, "text/csv": {}}}})
def download_list(request: Request, kind: str, ext: str,
                  year: int | None = YEAR_QUERY, run: int | None = RUN_QUERY,
                  level: str = Query("enterprise", description="ratings: enterprise (经营主体) | parcel (宗地)"),
                  township: str | None = Query(None, description="one township (镇街)"),
                  industry_group: str | None = Query(None, description="one industry group (行业组)"),
                  grades: str | None = Query(None, description="ratings: grades to list; clusters: grades "
                                                               "counted as low-yield (default the two lowest)"),
                  list_name: str | None = Query(None, alias="list", description="ratings: one list (规上 …)"),
                  gap_m: float = Query(30.0, ge=0, le=500, description="clusters: largest gap (m)"),
                  min_area_mu: float = Query(0.0, ge=0, description="clusters: smallest block (亩)"),
                  who: Principal = Depends(principal)):
    from app.lists import LEVELS, cluster_list, low_yield_list, rating_list, write_list, write_xlsx

    who.require("public")
    if kind not in _TITLES:
        return json_error(404, "NotFound", f"no list '{kind}'; one of: {', '.join(_TITLES)}")
    if ext not in _MEDIA:
        return json_error(404, "NotFound", f"lists download as .xlsx or .csv, not .{ext}")
    if level not in LEVELS:
        return json_error(400, "InvalidParameterValue", "level must be enterprise or parcel")
    if kind == "ratings" and level == "enterprise" and not who.sees_links:
        return _denied(who, "viewer", "the enterprise list (经营主体等级) names enterprises and")
    if kind == "low-yield" and not who.sees("low_yield_years"):
        return _denied(who, field_level("low_yield_years"), "the low-yield list (低效用地) is chosen by a figure and")
    wanted = [g.strip() for g in grades.split(",") if g.strip()] if grades else None
    if year is None and run is None:
        return json_error(400, "MissingParameterValue", "give year= (the map's year) or run=")
    engine: sa.Engine = request.app.state.engine
    try:
        with engine.connect() as conn:
            if kind == "ratings":
                rl = rating_list(conn, year=year, run_id=run, level=level, list_name=list_name, grades=wanted,
                                 region=township, industry_group=industry_group, who=who)
                rows = len(rl.frame)
            elif kind == "low-yield":
                rl = low_yield_list(conn, year=year, run_id=run, region=township,
                                    industry_group=industry_group, who=who)
                rows = len(rl.frame)
            else:
                rl = cluster_list(conn, year=year, run_id=run, grades=wanted, gap_m=gap_m,
                                  min_area_mu=min_area_mu, region=township, who=who)
                rows = len(rl.clusters)
    except LookupError as exc:
        return json_error(404, "RunNotFound", str(exc))
    except ValueError as exc:
        return json_error(400, "InvalidParameterValue", str(exc))
    what = _TITLES[kind] if kind != "ratings" else ("经营主体" if level == "enterprise" else "宗地") + "等级名单"
    scope = f"_{who.region or township}" if (who.region or township) else ""
    filename = f"{rl.year}年{what}{scope}.{ext}"
    writer = write_xlsx if kind == "ratings" and ext == "xlsx" else write_list
    resp = _file_response(lambda p: writer(rl, p), f".{ext}", filename)
    resp.headers["X-Rows"] = str(rows)
    return resp


# --------------------------------------------------------------------------- 体检表

def _checkup(request: Request, kind: str, code: str, ext: str, year: int | None, who: Principal) -> Response:
    from app.checkup import Checkups, render_html, render_pdf

    who.require("public")
    if ext not in ("html", "pdf"):
        return json_error(404, "NotFound", f"体检表 comes as .html or .pdf, not .{ext}")
    if kind == "enterprise" and not who.sees_links:
        return _denied(who, "viewer", "the 体检表 of an enterprise shows it by its identity (USCC) and")
    engine: sa.Engine = request.app.state.engine
    try:
        with engine.connect() as conn:
            c = Checkups(conn, who, year)
            doc = c.enterprise(code) if kind == "enterprise" else c.parcel(code)
    except LookupError as exc:
        return json_error(404, "RunNotFound", str(exc))
    if doc is None:
        where = f" in your region ({who.region})" if who.region else ""
        what = "enterprise with USCC" if kind == "enterprise" else "land with 宗地身份码"
        return json_error(404, "NotFound", f"no {what} '{code}'{where}")
    html = render_html(doc)
    name = f"{doc['year']}年体检表_{doc['title']}"
    if ext == "html":
        return Response(html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "private, no-cache"})
    headers = attachment(f"{name}.pdf")
    headers["Content-Disposition"] = headers["Content-Disposition"].replace("attachment", "inline", 1)
    return Response(render_pdf(html), media_type="application/pdf", headers=headers)


@router.get("/enterprises/{uscc}/checkup.{ext}", summary="体检表 of one enterprise: one A4 page (html | pdf)",
            response_class=Response, responses=_PAGE)
def enterprise_checkup(request: Request, uscc: str, ext: str, year: int | None = YEAR_QUERY,
                       who: Principal = Depends(principal)):
    return _checkup(request, "enterprise", uscc, ext, year, who)


@router.get("/parcels/{identity_code}/checkup.{ext}", summary="体检表 of one piece of land: one A4 page (html | pdf)",
            response_class=Response, responses=_PAGE)
def parcel_checkup(request: Request, identity_code: str, ext: str, year: int | None = YEAR_QUERY,
                   who: Principal = Depends(principal)):
    return _checkup(request, "parcel", identity_code, ext, year, who)


# --------------------------------------------------------------------------- 指标对比 and the summary

def _compare_data(request: Request, who: Principal, level: str, indicator: str | None):
    from app.compare import grades_of, indicators, subjects

    engine: sa.Engine = request.app.state.engine
    with engine.connect() as conn:
        inds = indicators(conn, who)
        key = indicator or next(iter(inds))
        if key not in inds:
            raise ValueError(f"unknown indicator '{key}'; one of: {', '.join(inds)}")
        df = subjects(conn, who, level, key)
        grades, colours = grades_of(conn, who)
    return df, grades, colours, key, inds


def _compare_checks(who: Principal, level: str, by: str | None = None) -> Response | None:
    from app.compare import BY, LEVELS

    who.require("public")
    if level not in LEVELS:
        return json_error(400, "InvalidParameterValue", f"level must be one of {', '.join(LEVELS)}")
    if by is not None and by not in BY:
        return json_error(400, "InvalidParameterValue", f"by must be one of {', '.join(BY)}")
    if level == "enterprise" and not who.sees_links:
        return _denied(who, "viewer", "comparing enterprises (经营主体) counts them by identity and")
    return None


@router.get("/compare", summary="指标对比: indicators and grade shares by township, industry group or year")
def compare(request: Request, by: str = Query("township", description="township | industry_group | year"),
            year: int | None = YEAR_QUERY, indicator: str | None = Query(None, description="indicator key, e.g. tax_per_mu"),
            level: str = Query("parcel", description="enterprise (经营主体) | parcel (宗地)"),
            who: Principal = Depends(principal)):
    from app.api.common import json_response
    from app.compare import compare_table

    if (bad := _compare_checks(who, level, by)) is not None:
        return bad
    try:
        df, grades, colours, key, inds = _compare_data(request, who, level, indicator)
    except ValueError as exc:
        return json_error(400, "InvalidParameterValue", str(exc))
    title = inds[key]["title"]
    table = compare_table(df, by, grades, year=year, figures=who.sees_figures, title=title)
    years = sorted(int(y) for y in df["year"].dropna().unique())
    return json_response({
        "by": by, "level": level, "indicator": {"key": key, **inds[key]}, "indicators": inds,
        "year": (year if year is not None else (years[-1] if years else None)) if by != "year" else None,
        "years": years, "grades": grades, "colours": colours, "columns": list(table.columns),
        "rows": table.astype(object).where(table.notna(), None).to_dict("records"),
        "visibility": {"role": who.role, "region": who.region, "figures": who.sees_figures},
    }, headers={"Cache-Control": "private, no-cache"})


@router.get("/compare.xlsx", summary="指标对比 table as Excel", response_class=Response,
            responses={200: {"content": {XLSX: {}}}})
def compare_xlsx(request: Request, by: str = Query("township"), year: int | None = YEAR_QUERY,
                 indicator: str | None = Query(None), level: str = Query("parcel"),
                 who: Principal = Depends(principal)):
    import xlsxwriter

    from app.compare import BY, LEVELS, compare_table
    from app.lists import _sheet

    if (bad := _compare_checks(who, level, by)) is not None:
        return bad
    try:
        df, grades, colours, key, inds = _compare_data(request, who, level, indicator)
    except ValueError as exc:
        return json_error(400, "InvalidParameterValue", str(exc))
    table = compare_table(df, by, grades, year=year, figures=who.sees_figures, title=inds[key]["title"])

    def write(path: Path) -> None:
        wb = xlsxwriter.Workbook(str(path))
        try:
            _sheet(wb, f"按{BY[by]}", table, wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1}))
        finally:
            wb.close()
    return _file_response(write, ".xlsx", f"指标对比_{LEVELS[level]}_按{BY[by]}.xlsx")


@router.get("/compare/chart.{fmt}", summary="指标对比 chart as PNG or SVG: trend | township | distribution",
            response_class=Response, responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}})
def compare_chart(request: Request, fmt: str, kind: str = Query("trend"), year: int | None = YEAR_QUERY,
                  indicator: str | None = Query(None), level: str = Query("parcel"),
                  list_name: str | None = Query(None, alias="list"), industry_group: str | None = Query(None),
                  who: Principal = Depends(principal)):
    from app.compare import chart

    if fmt not in ("png", "svg"):
        return json_error(404, "NotFound", "charts come as .png or .svg")
    if (bad := _compare_checks(who, level)) is not None:
        return bad
    if kind == "distribution" and not who.sees_figures:
        return _denied(who, "analyst", "the score distribution with its cut-offs shows scores (figures) and")
    try:
        df, grades, colours, key, inds = _compare_data(request, who, level, indicator)
        graded = df[df["grade"].notna()]
        if not len(graded) or (year is not None and year not in set(graded["year"])):
            years = ", ".join(str(int(y)) for y in sorted(set(graded["year"]))) or "none"
            return json_error(404, "RunNotFound", f"no graded subjects to chart for that year; years: {years}")
        body = chart(kind, df, grades, colours, figures=who.sees_figures, title=inds[key]["title"],
                     unit=inds[key]["unit"], year=year, list_name=list_name, group=industry_group, fmt=fmt)
    except ValueError as exc:
        return json_error(400, "InvalidParameterValue", str(exc))
    return Response(body, media_type="image/png" if fmt == "png" else "image/svg+xml",
                    headers={"Cache-Control": "private, no-cache"})


@router.get("/reports/summary.{ext}", summary="The county's summary report of a year (html | pdf)",
            response_class=Response, responses=_PAGE)
def summary_report(request: Request, ext: str, year: int | None = YEAR_QUERY, who: Principal = Depends(principal)):
    from app.compare import render_summary

    who.require("public")
    if ext not in ("html", "pdf"):
        return json_error(404, "NotFound", "the summary comes as .html or .pdf")
    engine: sa.Engine = request.app.state.engine
    try:
        with engine.connect() as conn:
            body, name = render_summary(conn, who, year, ext)
    except LookupError as exc:
        return json_error(404, "RunNotFound", str(exc))
    if ext == "html":
        return Response(body, media_type="text/html; charset=utf-8", headers={"Cache-Control": "private, no-cache"})
    return Response(body, media_type="application/pdf", headers=attachment(name))


@router.get("/map/compare", include_in_schema=False)
def compare_page():
    """指标对比 page (tables and charts from /compare)."""
    from fastapi.responses import FileResponse

    from app.api.web import STATIC_DIR

    return FileResponse(STATIC_DIR / "compare.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


# --------------------------------------------------------------------------- printed map

_PRINT_MAX_BYTES = 25 * 1024 * 1024
_PAPER_MM = {"A4": (297, 210), "A3": (420, 297)}


@router.post("/print/map.pdf", summary="A printed map page (the PNG the web map composed) as a landscape PDF",
             response_class=Response,
             responses={200: {"content": {"application/pdf": {}}},
                        413: {"description": "the image is larger than 25 MB", "content": {"application/json": {}}}},
             openapi_extra={"requestBody": {"required": True, "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}})
async def print_map(request: Request, paper: str = Query("A4", description="A4 | A3 (landscape)"),
                    title: str = Query("地图", max_length=200), who: Principal = Depends(principal)):
    """The map page is composed in the browser (title, year, legend with counts, scale bar, north
    arrow, date and source, see static/mapexport.js); this wraps it, at full page size, into a PDF."""
    import base64
    import html

    from starlette.concurrency import run_in_threadpool

    from app.checkup import render_pdf

    who.require("public")
    if paper not in _PAPER_MM:
        return json_error(400, "InvalidParameterValue", "paper must be A4 or A3")
    body = await request.body()
    if len(body) > _PRINT_MAX_BYTES:
        return json_error(413, "PayloadTooLarge", "the page image is larger than 25 MB")
    if not body.startswith(b"\x89PNG\r\n\x1a\n"):
        return json_error(400, "InvalidParameterValue", "send the page as a PNG image (Content-Type: image/png)")
    w, h = _PAPER_MM[paper]
    doc = (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f'<style>@page {{ size: {w}mm {h}mm; margin: 0 }} body {{ margin: 0 }} '
           f'img {{ width: {w}mm; height: {h}mm; display: block; object-fit: contain }}</style></head>'
           f'<body><img src="data:image/png;base64,{base64.b64encode(body).decode()}"></body></html>')
    try:
        pdf = await run_in_threadpool(render_pdf, doc)
    except Exception:  # noqa: BLE001 - a PNG signature with a body no decoder reads
        return json_error(400, "InvalidParameterValue", "the page image could not be read as a PNG")
    return Response(pdf, media_type="application/pdf", headers=attachment(f"地图_{paper}.pdf"))
