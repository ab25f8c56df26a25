"""The web map a county office opens every day: ``/map``, the archive pages, and what they ask for.

* ``GET /map`` — MapLibre GL JS map (bundled under ``/static/vendor``; no CDN, no internet basemap
  unless ``settings.basemap_url`` is set) of parcels coloured by 宗地等级 / 经营主体等级 / 预警四色
  from the vector tiles, with legend, filters, search, popups and the cluster finder.
* ``GET /map/parcel/{identity_code}``, ``GET /map/enterprise/{uscc}`` — full 一地一档 / 一企一档
  pages: HTML shells that fetch the JSON archives (``/parcels/…``, ``/enterprises/…``).
* ``GET /map/config`` — what the page needs to start: runs, grade colours of the run shown,
  townships and industry groups (in the caller's region), extent, basemap, the caller's role.
* ``GET /stats/grades`` — count and area (亩) per grade in a bbox, computed in SQL over the same
  layer definitions (:mod:`app.api.layers`) and region rule (:meth:`Principal.region_clause`) as
  tiles and features, so the legend never counts land the map cannot show.
* ``GET /search?q=`` — 宗地代码 / 宗地身份码 / USCC prefix, enterprise name (roles that see names).
* ``/static`` — the page's files.

Basemap and GCJ-02: ``basemap_url`` is an XYZ (or WMTS KVP with ``{z}/{x}/{y}``) raster template,
several separated by ``|`` (e.g. 天地图 vec + cva). Our data is CGCS2000 (≈ WGS84). Amap/Tencent
tiles are drawn in GCJ-02 and sit 100–700 m off; with ``basemap_gcj02`` the page draws the basemap
in a second, non-interactive map whose camera is kept at the GCJ-02 position of the main map's
centre (the published forward formula), so the basemap lines up with the parcels at the centre of
the view; the offset changes by well under a metre across a county-sized view, so the residual is
far below parcel accuracy. Without the flag such tiles are simply drawn offset.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from app.api.classification import for_run
from app.api.common import RUN_QUERY, YEAR_QUERY, json_error, json_response
from app.api.layers import LAYERS, current_run_sql, explicit_run_sql, land_in_year_sql

#: The current land (search, townships, extent): the one land-year rule with no year.
_CURRENT_LAND = land_in_year_sql("CAST(NULL AS integer)")
from app.auth import Principal, principal

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
mimetypes.add_type("text/javascript", ".mjs")  # module scripts need a JavaScript MIME type

router = APIRouter(tags=["web map"])
router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

#: Area in 亩 of one row of each layer, and the least role that sees it (the layer's own rule).
_AREA_SQL = {
    "parcels": ("p.area_mu", "public"),
    "defacto": ("p.area_mu", "public"),
    "sublots": ("s.area_m2 / (10000.0 / 15)", "public"),
    "enterprises": ("el.land_area_mu", "viewer"),
}
_MU = 10000.0 / 15


def _html(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


@router.get("/map", include_in_schema=False)
def map_page():
    return _html("map.html")


@router.get("/map/parcel/{identity_code}", include_in_schema=False)
def parcel_page(identity_code: str):
    return _html("archive.html")


@router.get("/map/enterprise/{uscc}", include_in_schema=False)
def enterprise_page(uscc: str):
    return _html("archive.html")


def _run_id(conn: sa.Connection, run: int | None, year: int | None, drafts: bool) -> int | None:
    if run is not None:
        return conn.execute(sa.text(explicit_run_sql("run", drafts)), {"run": run}).scalar()
    return conn.execute(sa.text(current_run_sql("year", drafts)), {"year": year}).scalar()


def _run_missing(run: int | None, year: int | None) -> Response:
    what = f"run {run}" if run is not None else f"an evaluation run for {year}"
    return json_error(404, "RunNotFound", f"there is no {what}; /map/config lists the runs "
                                          "(leave out run and year for the newest)")


def _bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError("bbox must be minLon,minLat,maxLon,maxLat (4 numbers)") from None
    if not (x0 <= x1 and y0 <= y1 and -180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= 90 and -90 <= y1 <= 90):
        raise ValueError("bbox must be minLon,minLat,maxLon,maxLat with min ≤ max, in degrees")
    return x0, y0, x1, y1


@router.get("/map/config", summary="What the web map needs to start: runs, colours, filters, extent, basemap")
def map_config(request: Request, year: int | None = YEAR_QUERY, run: int | None = RUN_QUERY,
               who: Principal = Depends(principal)):
    who.require("public")
    settings = request.app.state.settings
    engine: sa.Engine = request.app.state.engine
    region, params = who.region_clause("township")
    p_region, _ = who.region_clause("p.township")
    e_region, _ = who.region_clause("e.township")
    with engine.connect() as conn:
        # Only the runs this caller may open: drafts for reviewers (analyst, admin) alone.
        statuses = "('published', 'draft')" if who.sees_drafts else "('published')"
        runs = [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT id, year, status, scheme_name, scheme_version FROM evaluation_runs "
            f"WHERE status IN {statuses} ORDER BY year DESC, (status = 'published') DESC, id DESC"))]
        cls, run_id = for_run(conn, run, year, who.sees_drafts)
        if run_id is None and (run is not None or year is not None):
            return _run_missing(run, year)
        shown = {}
        for r in runs:  # the run shown for each year: the first listed (published first, newest)
            shown.setdefault(r["year"], r["id"])
        for r in runs:
            r["shown"] = shown[r["year"]] == r["id"]
        townships = [t for (t,) in conn.execute(sa.text(
            f"SELECT DISTINCT township FROM {_CURRENT_LAND} p WHERE township IS NOT NULL AND {region} "
            f"UNION SELECT DISTINCT township FROM enterprises WHERE township IS NOT NULL AND {region} "
            "ORDER BY 1"), params)]
        groups = [g for (g,) in conn.execute(sa.text(
            f"SELECT DISTINCT r.industry_group FROM parcel_ratings r JOIN {_CURRENT_LAND} p USING (identity_code) "
            f"WHERE r.run_id = :run_id AND r.industry_group IS NOT NULL AND {p_region} "
            f"UNION SELECT DISTINCT r.industry_group FROM enterprise_ratings r JOIN enterprises e USING (uscc) "
            f"WHERE r.run_id = :run_id AND r.industry_group IS NOT NULL AND {e_region} "
            "ORDER BY 1"), params | {"run_id": run_id})] if run_id else []
        b = conn.execute(sa.text(
            f"SELECT ST_XMin(x), ST_YMin(x), ST_XMax(x), ST_YMax(x) FROM "
            f"(SELECT ST_Extent(geom) AS x FROM {_CURRENT_LAND} p WHERE {region}) e"), params).one()
    # Colour names of the four-colour warning view (颜色 attribute): the scheme's own hex per name.
    names = {c.colour_name: c.hex for c in cls.classes if c.colour_name}
    basemaps = [u.strip() for u in (getattr(settings, "basemap_url", None) or "").split("|") if u.strip()]
    return json_response({
        "run_id": run_id,
        "year": next((r["year"] for r in runs if r["id"] == run_id), None),
        "runs": runs,
        "classification": cls.as_json(),
        "warning_colours": names,
        "townships": townships,
        "industry_groups": groups,
        "extent": [b[0], b[1], b[2], b[3]] if b[0] is not None else None,
        "basemap": {"tiles": basemaps, "gcj02": bool(getattr(settings, "basemap_gcj02", False))},
        "principal": {"role": who.role, "region": who.region, "name": who.name if who.key_id else None,
                      "sees_names": who.sees_names, "sees_figures": who.sees_figures},
    }, headers={"Cache-Control": "private, no-cache"})


@router.get("/stats/grades", summary="Count and area (亩) per grade in a bbox (the map legend)")
def grade_stats(request: Request,
                layer: str = Query("parcels", description="parcels | enterprises | sublots | defacto"),
                year: int | None = YEAR_QUERY, run: int | None = RUN_QUERY,
                bbox: str | None = Query(None, description="minLon,minLat,maxLon,maxLat (CGCS2000 ≈ WGS84)"),
                township: str | None = Query(None), industry_group: str | None = Query(None),
                grades: str | None = Query(None, description="comma-separated grades to count; "
                                                             "'none' for ungraded"),
                who: Principal = Depends(principal)):
    who.require("public")
    lay = LAYERS.get(layer)
    if lay is None or layer not in _AREA_SQL:
        return json_error(404, "NotFound", f"no layer '{layer}'; one of: {', '.join(_AREA_SQL)}")
    try:
        box = _bbox(bbox)
    except ValueError as exc:
        return json_error(400, "InvalidParameterValue", str(exc))
    area_sql, area_level = _AREA_SQL[layer]
    region, params = who.region_clause(lay.township_sql)
    where = [f"({lay.where_sql})", region]
    if box:
        where.append(f"ST_Intersects({lay.geom_sql}, ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490))")
        params |= dict(zip(("x0", "y0", "x1", "y1"), box))
    if township:
        where.append(f"{lay.township_sql} = :township")
        params["township"] = township
    if industry_group:
        where.append("r.industry_group = :industry_group")
        params["industry_group"] = industry_group
    if grades:
        wanted = [g.strip() for g in grades.split(",") if g.strip()]
        named = [g for g in wanted if g.lower() != "none"]
        conds = []
        if named:
            conds.append("r.grade = ANY(:grades)")
            params["grades"] = named
        if len(named) < len(wanted):
            conds.append("r.grade IS NULL")
        where.append("(" + (" OR ".join(conds) or "FALSE") + ")")
    engine: sa.Engine = request.app.state.engine
    with engine.connect() as conn:
        run_id = _run_id(conn, run, year, who.sees_drafts)
        if run_id is None and (run is not None or year is not None):
            return _run_missing(run, year)
        # enterprises' from_sql joins enterprise_land once per enterprise: one row per subject.
        rows = conn.execute(sa.text(
            f"SELECT r.grade, count(*) AS n, sum({area_sql}) AS area_mu "
            f"FROM {lay.from_sql} WHERE {' AND '.join(where)} GROUP BY r.grade"),
            params | {"run_id": run_id}).all()
        cls, _ = for_run(conn, run_id, drafts=who.sees_drafts)
    show_area = who.at_least(area_level)
    order = {g: i for i, g in enumerate(cls.grades)}
    out = sorted(({"grade": r.grade, "count": int(r.n),
                   "area_mu": round(float(r.area_mu or 0), 3) if show_area else None} for r in rows),
                 key=lambda d: (d["grade"] is None, order.get(d["grade"], len(order)), d["grade"] or ""))
    total = {"count": sum(d["count"] for d in out),
             "area_mu": round(sum(d["area_mu"] or 0 for d in out), 3) if show_area else None}
    return json_response({"layer": layer, "run_id": run_id, "bbox": list(box) if box else None,
                          "grades": out, "total": total},
                         headers={"Cache-Control": "private, no-cache"})


_LIKE_ESCAPE = re.compile(r"([\\%_])")


@router.get("/search", summary="Find land or an enterprise by 宗地代码, 宗地身份码, USCC or name")
def search(request: Request, q: str = Query(..., min_length=1, max_length=100),
           limit: int = Query(10, ge=1, le=50), who: Principal = Depends(principal)):
    who.require("public")
    text = q.strip()
    if len(text) < 2:
        return json_response({"query": text, "results": []})
    like = _LIKE_ESCAPE.sub(r"\\\1", text.upper()) + "%"
    engine: sa.Engine = request.app.state.engine
    p_region, p_params = who.region_clause("p.township")
    e_region, e_params = who.region_clause("e.township")
    # Enterprises (USCC, name) are identities: found only by callers who see links (app.auth).
    name_cond = "OR e.name ILIKE :name_like" if who.sees_links else ""
    with engine.connect() as conn:
        parcels = conn.execute(sa.text(f"""
            SELECT p.identity_code, p.parcel_code, p.kind, p.township, p.area_mu,
                   ST_XMin(b) AS x0, ST_YMin(b) AS y0, ST_XMax(b) AS x1, ST_YMax(b) AS y1
            FROM {_CURRENT_LAND} p, LATERAL (SELECT ST_Envelope(p.geom)::box2d AS b) e
            WHERE (upper(p.identity_code) LIKE :like OR upper(p.parcel_code) LIKE :like) AND {p_region}
            ORDER BY (upper(p.parcel_code) = :exact OR upper(p.identity_code) = :exact) DESC,
                     p.kind = 'registered' DESC, p.identity_code
            LIMIT :limit"""), p_params | {"like": like, "exact": text.upper(), "limit": limit}).all()
        ents = [] if not who.sees_links else conn.execute(sa.text(f"""
            SELECT e.uscc, e.name, e.township, ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat,
                   ST_XMin(l.b) AS x0, ST_YMin(l.b) AS y0, ST_XMax(l.b) AS x1, ST_YMax(l.b) AS y1
            FROM enterprises e
            LEFT JOIN LATERAL (SELECT ST_Extent(p.geom) AS b FROM land_links k
                               JOIN {_CURRENT_LAND} p ON p.identity_code = k.identity_code
                               WHERE k.uscc = e.uscc AND k.year = (SELECT max(year) FROM land_links)
                               AND {p_region}) l ON TRUE
            WHERE (upper(e.uscc) LIKE :like {name_cond}) AND {e_region}
            ORDER BY (upper(e.uscc) = :exact) DESC, e.uscc
            LIMIT :limit"""), e_params | p_params | {"like": like, "exact": text.upper(), "limit": limit,
                                          "name_like": "%" + _LIKE_ESCAPE.sub(r"\\\1", text) + "%"}).all()
    results = []
    for r in parcels:
        results.append({"type": "parcel", "identity_code": r.identity_code, "parcel_code": r.parcel_code,
                        "kind": r.kind, "township": r.township, "area_mu": round(r.area_mu, 3),
                        "bbox": [r.x0, r.y0, r.x1, r.y1]})
    for r in ents:
        item = {"type": "enterprise", "uscc": r.uscc, "township": r.township,
                "point": [r.lon, r.lat] if r.lon is not None else None,
                "bbox": [r.x0, r.y0, r.x1, r.y1] if r.x0 is not None else None}
        item["name"] = r.name
        results.append(item)
    return json_response({"query": text, "results": results}, headers={"Cache-Control": "private, no-cache"})

