"""连片低效用地 — contiguous blocks of low-yield land, for redevelopment planners.

``GET /clusters`` (JSON; ``?f=geojson`` or ``Accept: application/geo+json`` for a GeoJSON
FeatureCollection, also at ``/clusters.geojson``).

A parcel is *low-yield* in the run shown when any of the asked criteria holds: its grade is in
``grades`` (default: the two lowest grades of the run's scheme, e.g. C and D), its 亩均税收 is
below ``max_tax_per_mu`` (analyst only: a filter on a figure reveals the figure), or it is idle
(闲置, ``include_idle``, default true). Low-yield parcels form one block when the gap between
them is at most ``gap_m`` metres — roads between parcels do not break a block (湖州 全域有机更新,
苏州 连片更新). Blocks smaller than ``min_area_mu`` are left out.

Algorithm — one SQL statement: candidates are projected to the county's 3-degree Gauss-Krüger
zone (EPSG:4534–4554, picked from the candidates' centre), grouped by
``ST_ClusterDBSCAN(geom, eps := gap_m, minpoints := 1)`` — with ``minpoints = 1`` that is exactly
the connected components of "within gap_m" (single linkage), the rule ``spatial/clusters.py``
implements without a database. The outline is a morphological closing: the union of the members
buffered by gap/2 (mitred joins), buffered back by −gap/2 — it bridges the roads inside a block
and keeps the parcels' straight edges and corners, unlike a concave hull.

Figures: total tax (Σ 亩均税收 × 亩 of the members, 万元; idle land counts 0), the area-weighted
mean 亩均税收 and the gain ``max(0, target − mean) × area`` (万元 a year, with
``target_tax_per_mu``) are analyst-only. A region-scoped key only ever sees its township's
parcels as members (blocks are formed from them alone).
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request

from app.api.common import (GEOJSON, JSON, RUN_QUERY, YEAR_QUERY, data_version, etag_response, json_error,
                            json_response, wants)
from app.api.layers import (RUN_YEAR_SQL, current_run_sql, derived_year_sql, explicit_run_sql,
                             land_in_year_sql)
from app.api.tiles import years_sql
from app.auth import Principal, principal

router = APIRouter(tags=["clusters"])

MAX_GAP_M = 500.0
MAX_LIMIT = 5000

# --------------------------------------------------------------------------- SQL


def _run_sql(explicit: bool, drafts: bool = True) -> str:
    if explicit:
        return explicit_run_sql("run", drafts)
    return current_run_sql("year", drafts)


def run_info_sql(explicit: bool, drafts: bool = True) -> str:
    """The run whose grades make the clusters (drafts only for callers who may review them)."""
    return f"""SELECT id, year, status, scheme_name, scheme_version, scheme -> 'grades' AS grades
               FROM evaluation_runs WHERE id = ({_run_sql(explicit, drafts)})"""


def clusters_sql(criteria: str, region_sql: str, township_sql: str) -> str:
    """The one statement. Binds ``:run_id :gap :half_gap :min_area :limit`` + criteria/region params."""
    return f"""
WITH cand AS (
    SELECT p.identity_code, p.township, p.area_m2, p.area_mu, p.geom, r.grade, r.idle, r.tax_per_mu
    FROM {land_in_year_sql(RUN_YEAR_SQL)} p  -- the land of the run's year
    JOIN parcel_ratings r ON r.identity_code = p.identity_code AND r.run_id = :run_id
    WHERE ({criteria}) AND {region_sql} AND {township_sql}
),
zone AS (  -- the county's 3-degree Gauss-Krüger zone: EPSG:4534 (75°E) … 4554 (135°E)
    SELECT 4534 + LEAST(20, GREATEST(0, round((ST_X(ST_Centroid(ST_Extent(geom)::geometry)) - 75) / 3)::int)) AS srid
    FROM cand
),
proj AS (
    SELECT c.*, ST_Transform(c.geom, z.srid) AS gm, z.srid FROM cand c CROSS JOIN zone z
),
labelled AS (
    SELECT proj.*, ST_ClusterDBSCAN(gm, eps := :gap, minpoints := 1) OVER () AS cid FROM proj
),
agg AS (
    SELECT cid, min(srid) AS srid, count(*) AS member_count,
           array_agg(identity_code ORDER BY identity_code) AS members,
           array_agg(grade ORDER BY identity_code) AS member_grades,
           array_agg(DISTINCT township) AS townships,
           sum(area_mu) AS area_mu, sum(area_m2) AS area_m2,
           sum(coalesce(tax_per_mu, 0) * area_mu) AS total_tax_wan,
           count(*) FILTER (WHERE idle) AS idle_count,
           CASE WHEN count(*) > 1 THEN ST_Union(ST_Buffer(gm, :half_gap, 'join=mitre mitre_limit=5')) END AS blob,
           (array_agg(geom))[1] AS single  -- a block of one parcel is outlined by the parcel itself
    FROM labelled
    GROUP BY cid
    HAVING sum(area_mu) >= :min_area
    ORDER BY sum(area_mu) DESC, min(identity_code)
    LIMIT :limit
),
shaped AS MATERIALIZED (  -- materialized: the outline is used seven times below
    SELECT agg.*, CASE WHEN member_count = 1 THEN single
                       ELSE ST_Transform(ST_Buffer(blob, -:half_gap, 'join=mitre mitre_limit=5'), 4490) END AS outline
    FROM agg
)
SELECT 'LY-' || upper(substr(md5(array_to_string(members, ',')), 1, 10)) AS id,
       member_count, members, member_grades, townships, area_mu, area_m2, total_tax_wan, idle_count, srid,
       (SELECT count(DISTINCT l.uscc) FROM land_links l WHERE l.identity_code = ANY(members)
        AND l.year = {derived_year_sql("land_links", RUN_YEAR_SQL)}) AS enterprise_count,
       ST_AsGeoJSON(outline, 7) AS outline,
       ST_XMin(outline) AS xmin, ST_YMin(outline) AS ymin, ST_XMax(outline) AS xmax, ST_YMax(outline) AS ymax,
       ST_X(ST_PointOnSurface(outline)) AS cx, ST_Y(ST_PointOnSurface(outline)) AS cy
FROM shaped
ORDER BY area_mu DESC, id"""



def find_clusters(conn: sa.Connection, run_id: int, *, grades: list[str] | None = None,
                  max_tax_per_mu: float | None = None, include_idle: bool = True, gap_m: float = 30.0,
                  min_area_mu: float = 0.0, limit: int = MAX_LIMIT, township: str | None = None,
                  who: Principal | None = None) -> list:
    """The 连片低效用地 blocks of one run, largest first: rows of :func:`clusters_sql`.

    A parcel is a candidate when its grade is in ``grades``, its 亩均税收 is below
    ``max_tax_per_mu`` (万元/亩) or, with ``include_idle``, it is idle; ``gap_m`` (m) joins blocks,
    ``min_area_mu`` (亩) drops small ones. ``who`` limits the land to the caller's region
    (:meth:`Principal.region_clause`); ``None`` is the whole county (the CLI). Checking roles
    and grades is the caller's job (the endpoint, :mod:`app.lists`).
    """
    crit, params = [], {}
    if grades:
        crit.append("r.grade = ANY(:grades)")
        params["grades"] = list(grades)
    if max_tax_per_mu is not None:
        # 亩均税收 is compared as the run's 办法 publishes it (half-up to its decimals, issue 11):
        # 5.999999999999999 is 6.00, not below 6.
        crit.append("round(r.tax_per_mu::numeric, :tax_decimals) < :max_tax")
        params["max_tax"] = max_tax_per_mu
        params["tax_decimals"] = _tax_decimals(conn, run_id)
    if include_idle:
        crit.append("r.idle")
    region_sql, rp = who.region_clause("p.township") if who is not None else ("TRUE", {})
    township_sql = "p.township = :township" if township else "TRUE"
    params |= rp | {"run_id": run_id, "gap": gap_m, "half_gap": gap_m / 2, "min_area": min_area_mu,
                    "limit": limit, "township": township}
    return conn.execute(sa.text(clusters_sql(" OR ".join(crit) or "FALSE", region_sql, township_sql)),
                        params).all()


def _tax_decimals(conn: sa.Connection, run_id: int) -> int:
    """The decimals the run's scheme compares 亩均税收 at (``precision``; default 2)."""
    decimals = conn.execute(sa.text("""
        SELECT coalesce((scheme #>> '{precision,columns,tax_per_mu}')::int,
                        (scheme #>> '{precision,decimals}')::int, 2)
        FROM evaluation_runs WHERE id = :r"""), {"r": run_id}).scalar()
    return 2 if decimals is None else int(decimals)


# --------------------------------------------------------------------------- endpoint


def _grades_param(value: str | None) -> list[str] | None:
    if value is None or not value.strip():
        return None
    return [g.strip() for g in value.split(",") if g.strip()]


def _cluster_json(row, who: Principal, target: float | None, include_outline: bool = True) -> dict:
    grades: dict[str, int] = {}
    for g in row.member_grades:
        grades[g or "未评级"] = grades.get(g or "未评级", 0) + 1
    out = {
        "id": row.id, "member_count": row.member_count, "members": list(row.members),
        "area_mu": round(row.area_mu, 3), "area_m2": round(row.area_m2, 1),
        "enterprise_count": row.enterprise_count, "grades": grades, "idle_count": row.idle_count,
        "townships": sorted(t for t in row.townships if t is not None),
        "bbox": [row.xmin, row.ymin, row.xmax, row.ymax], "centroid": [row.cx, row.cy],
    }
    if who.sees_figures:
        mean = row.total_tax_wan / row.area_mu if row.area_mu else None
        out |= {"total_tax_wan": round(row.total_tax_wan, 4),
                "mean_tax_per_mu": round(mean, 4) if mean is not None else None}
        if target is not None and mean is not None:
            out |= {"target_tax_per_mu": target, "gain_wan": round(max(0.0, target - mean) * row.area_mu, 4)}
    if include_outline:
        out["outline"] = orjson.loads(row.outline) if row.outline else None
    return out


@router.get("/clusters", summary="连片低效用地: contiguous blocks of low-yield land")
@router.get("/clusters.geojson", summary="连片低效用地 as a GeoJSON FeatureCollection", include_in_schema=False)
def get_clusters(
    request: Request,
    grades: str | None = Query(None, description="grades counted as low-yield, comma-separated (default: "
                                                 "the scheme's two lowest, e.g. C,D)", examples=["C,D"]),
    max_tax_per_mu: float | None = Query(None, ge=0, description="亩均税收 below this (万元/亩) counts as "
                                                                 "low-yield — analyst only"),
    include_idle: bool = Query(True, description="idle land (闲置, 供而未用) counts as low-yield"),
    gap_m: float = Query(30.0, ge=0, le=MAX_GAP_M, description="largest gap (m) between parcels of one block: "
                                                              "roads narrower than this do not break a block"),
    min_area_mu: float = Query(0.0, ge=0, description="smallest block area (亩), e.g. 100 (湖州)"),
    target_tax_per_mu: float | None = Query(None, ge=0, description="亩均税收 a block should reach: the gain "
                                                                    "(万元/年) is (target − mean) × area"),
    township: str | None = Query(None, description="only this township's land"),
    year: int | None = YEAR_QUERY,
    run: int | None = RUN_QUERY,
    limit: int = Query(500, ge=1, le=MAX_LIMIT, description="largest blocks first"),
    f: str | None = Query(None, description="json (default) or geojson"),
    who: Principal = Depends(principal),
):
    who.require("public")
    geojson = request.url.path.endswith(".geojson") or wants(request, JSON, GEOJSON) == GEOJSON
    if f and f.lower() not in ("json", "geojson"):
        return json_error(400, "InvalidParameterValue", f"f must be json or geojson, not '{f}'")
    if max_tax_per_mu is not None and not who.sees_figures:
        return json_error(403, "Forbidden", "max_tax_per_mu filters on a confidential figure and needs the "
                                            "'analyst' role; use grades=… (e.g. grades=C,D) instead")
    engine: sa.Engine = request.app.state.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # read-only
        etag, headers, r304 = etag_response(request, data_version(conn), who)
        if r304:
            return r304
        info = conn.execute(sa.text(run_info_sql(run is not None, who.sees_drafts)),
                            {"run": run, "year": year}).first()
        if info is None:
            years = [r[0] for r in conn.execute(sa.text(years_sql(who.sees_drafts)))]
            what = f"run {run}" if run is not None else (f"evaluation run for {year}" if year else "evaluation run")
            return json_error(404, "RunNotFound", f"there is no {what}; clusters need graded land. Years with a "
                                                  f"run: {', '.join(map(str, years)) or 'none (run `mujun evaluate`)'}")
        scheme_grades = [str(g) for g in (info.grades or [])]
        asked = _grades_param(grades)
        if asked is None and max_tax_per_mu is None:
            asked = scheme_grades[-2:] if len(scheme_grades) >= 2 else ["C", "D"]
        if asked and scheme_grades:
            unknown = [g for g in asked if g not in scheme_grades]
            if unknown:
                return json_error(400, "InvalidParameterValue",
                                  f"unknown grade(s) {', '.join(unknown)}; run {info.id} ({info.scheme_name}) "
                                  f"grades are {', '.join(scheme_grades)}")
        rows = find_clusters(conn, info.id, grades=asked, max_tax_per_mu=max_tax_per_mu,
                             include_idle=include_idle, gap_m=gap_m, min_area_mu=min_area_mu, limit=limit,
                             township=township, who=who)

    effective = {"grades": asked, "max_tax_per_mu": max_tax_per_mu, "include_idle": include_idle,
                 "gap_m": gap_m, "min_area_mu": min_area_mu, "target_tax_per_mu": target_tax_per_mu,
                 "township": township, "limit": limit}
    run_doc = {"id": info.id, "year": info.year, "status": info.status,
               "scheme": f"{info.scheme_name}@{info.scheme_version}"}
    visibility = {"role": who.role, "region": who.region, "figures": who.sees_figures}
    if geojson:
        feats = []
        for row in rows:
            props = _cluster_json(row, who, target_tax_per_mu, include_outline=False)
            feats.append({"type": "Feature", "id": props["id"], "geometry": orjson.loads(row.outline) if row.outline else None,
                          "bbox": props.pop("bbox"), "properties": props})
        doc = {"type": "FeatureCollection", "numberReturned": len(feats), "run": run_doc,
               "parameters": effective, "visibility": visibility, "features": feats}
        return json_response(doc, media_type=GEOJSON, headers=headers)
    clusters = [_cluster_json(r, who, target_tax_per_mu) for r in rows]
    doc = {"run": run_doc, "parameters": effective, "visibility": visibility,
           "numberOfClusters": len(clusters),
           "total_area_mu": round(sum(c["area_mu"] for c in clusters), 3),
           "gk_zone_epsg": rows[0].srid if rows else None,
           "method": "ST_ClusterDBSCAN(eps = gap_m, minpoints = 1) in the Gauss-Krüger zone; outline = "
                     "union of members buffered by gap/2, buffered back by −gap/2",
           "clusters": clusters}
    if who.sees_figures and clusters:
        doc["total_tax_wan"] = round(sum(c["total_tax_wan"] for c in clusters), 4)
        if target_tax_per_mu is not None:
            doc["total_gain_wan"] = round(sum(c.get("gain_wan", 0.0) for c in clusters), 4)
    return json_response(doc, headers=headers)
