"""一地一档 / 一企一档: the archive of one piece of land and of one enterprise.

``GET /parcels/{identity_code}`` — 一地一档: geometry, codes, kind, area (m², 亩), township, land
use, owner, parent / attached de-facto land, every enterprise on it (地企对应: role, method,
confidence, share, attributed area), apportioned figures per year (analyst), its 宗地等级 per year
with the explanation, warnings and history.

``GET /enterprises/{uscc}`` — 一企一档: identity, industry, scale, flags, location, every piece
of land it uses (owned or leased) with shares, its total land, figures per year (analyst), its
经营主体等级 per year with the score breakdown (the stored ``explanation``, and its Chinese
``explanation_text`` when the scoring stored one), consecutive D years, the 差别电价 surcharge
(analyst) and warnings.

Land over the years (issue 10): the archive of a 宗地身份码 is its newest version (a retired piece
keeps its archive), with every ``version`` (valid_from / valid_to, area, kind) and its ``lineage``
(split from / merged from / re-coded from, split into / merged into / re-coded to, with years). Links,
sub-lots and an enterprise's land are those of the newest year shown (the year of the newest shown
run, else the newest matched year), on the land valid in that year
(:func:`app.api.layers.land_in_year_sql`); 一企一档 lists the land used in every year
(``land_by_year``).

"Per year" means the run shown for that year — the latest published run, else the latest
draft — exactly as :func:`app.api.layers.current_run_sql` picks it for maps (both are
:data:`app.api.layers.SHOWN_RUNS_SQL`, the one rule).

Who sees what (see :mod:`app.auth`): ``public`` gets land, codes, areas and grades; ``viewer``
adds names, link details, scores, ranks, explanations *without figures* and history; ``analyst``
adds the confidential figures (tax, value added, energy, per-mu values, surcharges). A key
limited to a township gets 404 for land or an enterprise elsewhere — with the same message as
for a code that does not exist, so the answer never tells that it exists.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.api.common import data_version, etag_response, json_error, json_response
from app.api.layers import derived_year_sql, land_in_year_sql, shown_runs_sql
from app.auth import Principal, principal
from app.models import METRIC_COLUMNS
from spatial.identifiers import uscc_status
from spatial.validate import AREA_MISMATCH_SHARE

router = APIRouter(tags=["archives"])

MU_M2 = 10000.0 / 15

# --------------------------------------------------------------------------- SQL


_PARCEL = """
    SELECT p.identity_code, p.kind, p.parcel_code, p.parent_identity_code, p.owner_uscc, p.owner_name,
           p.user_uscc, p.land_use, p.township, p.registered_area_m2, p.area_m2, p.area_mu, p.note,
           p.attrs, p.batch_id, p.updated_at, p.valid_from, p.valid_to,
           ST_AsGeoJSON(p.geom, 7) AS geometry,
           ST_AsGeoJSON(ST_PointOnSurface(p.geom), 7) AS point,
           ST_XMin(p.geom) AS xmin, ST_YMin(p.geom) AS ymin, ST_XMax(p.geom) AS xmax, ST_YMax(p.geom) AS ymax
    FROM parcels p
    WHERE p.identity_code = :code AND {region}
    ORDER BY p.valid_from DESC LIMIT 1"""

_PARENT = ("SELECT p.identity_code, p.parcel_code, p.kind, p.area_mu FROM parcels p "
           "WHERE p.identity_code = :parent AND {region} ORDER BY p.valid_from DESC LIMIT 1")

_ATTACHED = f"""
    SELECT p.identity_code, p.kind, p.area_m2, p.area_mu, p.user_uscc
    FROM {land_in_year_sql("CAST(NULL AS integer)")} p
    WHERE p.parent_identity_code = :code AND {{region}} ORDER BY p.identity_code"""

#: Every version of a piece of land, oldest first (valid_to exclusive, NULL = current).
_VERSIONS = """
    SELECT valid_from, valid_to, kind, parcel_code, area_m2, area_mu FROM parcels
    WHERE identity_code = :code ORDER BY valid_from"""

_LINEAGE = """
    SELECT year, parent_code, child_code, kind FROM land_lineage
    WHERE parent_code = :code OR child_code = :code ORDER BY year, parent_code, child_code"""

#: The year whose links an archive shows: the newest shown run's, else the newest matched.
_LINK_YEAR = derived_year_sql("land_links", "(SELECT year FROM shown)")

#: Enterprises on a piece of land, with their grade in the newest shown run.
_PARCEL_LINKS = f"""
    WITH shown AS ({{shown}} LIMIT 1)
    SELECT l.uscc, e.name, e.township, l.role, l.method, l.confidence, l.distance_m, l.share,
           l.attributed_area_m2, l.attributed_area_mu, s.area_m2 AS sublot_area_m2,
           er.grade, er.colour, (SELECT year FROM shown) AS grade_year
    FROM land_links l
    JOIN {land_in_year_sql(_LINK_YEAR)} p ON p.identity_code = l.identity_code
    LEFT JOIN enterprises e ON e.uscc = l.uscc
    LEFT JOIN sublots s ON s.identity_code = l.identity_code AND s.uscc = l.uscc AND s.year = l.year
    LEFT JOIN enterprise_ratings er ON er.uscc = l.uscc AND er.run_id = (SELECT id FROM shown)
    WHERE l.identity_code = :code AND l.year = {_LINK_YEAR} AND {{region}}
    ORDER BY l.share DESC NULLS LAST, l.uscc"""

_PARCEL_RATINGS = f"""
    WITH shown AS ({{shown}})
    SELECT s.id AS run_id, s.status AS run_status, s.scheme_name, s.scheme_version, r.*, s.year  -- the run's year
    FROM shown s JOIN parcel_ratings r ON r.run_id = s.id AND r.identity_code = :code
    ORDER BY s.year"""

_PARCEL_METRICS = "SELECT * FROM parcel_metrics WHERE identity_code = :code ORDER BY year"

_HISTORY = """
    SELECT at, actor, action, entity, entity_id, details FROM audit_log
    WHERE entity_id = ANY(:ids) ORDER BY at DESC, id DESC LIMIT 200"""

_CORRECTIONS = """
    SELECT uscc, parcel_code, action, share, reason, "by", created_at FROM link_corrections
    WHERE {where} ORDER BY created_at DESC"""

_BATCH = "SELECT id, status, finished_at FROM import_batches WHERE id = :id"

_BY_PARCEL_CODE = """
    SELECT p.identity_code FROM parcels p WHERE p.parcel_code = :code AND {region}
    GROUP BY p.identity_code ORDER BY bool_and(p.kind <> 'registered'), p.identity_code LIMIT 20"""

_ENTERPRISE = """
    SELECT e.uscc, e.name, e.industry_code, e.scale, e.township, e.address, e.founded, e.flags,
           e.coord_sys, e.attrs, e.batch_id, e.updated_at, ST_AsGeoJSON(e.geom, 7) AS point
    FROM enterprises e WHERE e.uscc = :uscc AND {region}"""

_ENTERPRISE_LAND = "SELECT * FROM enterprise_land WHERE uscc = :uscc ORDER BY year"

#: The land an enterprise used in each year (on the land valid that year).
_ENTERPRISE_LAND_YEARS = f"""
    SELECT l.year, l.identity_code, p.parcel_code, l.role, l.share, l.attributed_area_m2, l.attributed_area_mu
    FROM land_links l
    JOIN LATERAL (SELECT q.parcel_code, q.township, q.county FROM {land_in_year_sql("l.year")} q
                  WHERE q.identity_code = l.identity_code) p ON TRUE
    WHERE l.uscc = :uscc AND {{region}}
    ORDER BY l.year, l.identity_code"""

#: Land an enterprise uses, with the land's grade in the newest shown run.
_ENTERPRISE_PARCELS = f"""
    WITH shown AS ({{shown}} LIMIT 1)
    SELECT p.identity_code, p.parcel_code, p.kind, p.township, p.area_mu AS parcel_area_mu,
           p.owner_uscc, l.role, l.method, l.confidence, l.distance_m, l.share,
           l.attributed_area_m2, l.attributed_area_mu, pr.grade, pr.colour, (SELECT year FROM shown) AS grade_year,
           l.year AS link_year
    FROM land_links l
    JOIN {land_in_year_sql(_LINK_YEAR)} p ON p.identity_code = l.identity_code
    LEFT JOIN parcel_ratings pr ON pr.identity_code = p.identity_code AND pr.run_id = (SELECT id FROM shown)
    WHERE l.uscc = :uscc AND l.year = {_LINK_YEAR} AND {{region}}
    ORDER BY l.share DESC NULLS LAST, p.identity_code"""

_ENTERPRISE_RATINGS = f"""
    WITH shown AS ({{shown}})
    SELECT s.id AS run_id, s.status AS run_status, s.scheme_name, s.scheme_version, r.*, s.year  -- the run's year
    FROM shown s JOIN enterprise_ratings r ON r.run_id = s.id AND r.uscc = :uscc
    ORDER BY s.year"""

_ENTERPRISE_METRICS = "SELECT * FROM metrics WHERE uscc = :uscc ORDER BY year"

# --------------------------------------------------------------------------- role shaping

#: Rating fields by the least role that sees them. Figures (tax, indicators) are analyst-only.
_RATING_PUBLIC = ("year", "run_id", "run_status", "scheme_name", "scheme_version", "grade", "colour",
                  "industry_group", "evaluated", "idle")
_RATING_VIEWER = ("list_name", "rank", "percentile", "band_grade", "excluded_reason", "adjustments",
                  "warnings", "low_yield_years", "consecutive_d_years", "land_area_mu")
_RATING_ANALYST = ("score", "tax_per_mu", "indicators", "electricity_surcharge_yuan", "electricity_refund_yuan")

#: Keys of an explanation that carry an individual subject's figures (removed below analyst).
#: Scores and totals are figures too: in a single-indicator list score ÷ 亩均税收 is one constant
#: (app.auth.CONFIDENTIALITY), and ``capped`` with the scheme's cap bounds the value.
_FIGURE_KEYS = {"value", "values", "baseline", "points", "coefficient", "raw", "explanation_text", "text",
                "tax_per_mu", "tax", "total", "score", "capped", "compared", *METRIC_COLUMNS}
_KEEP_POINTS_IN = {"bonus", "penalty"}  # fixed scheme points of bonus/penalty items are not figures


def strip_figures(obj: Any, _parent: str = "") -> Any:
    """An explanation without the subject's confidential figures (values, baselines, points, texts).

    >>> strip_figures({"total": 50, "indicators": [{"title": "亩均税收", "value": 2.0, "points": 4.0}],
    ...                "bonus": [{"name": "x", "points": 2}], "explanation_text": "…"})
    {'indicators': [{'title': '亩均税收'}], 'bonus': [{'name': 'x', 'points': 2}]}
    """
    if isinstance(obj, dict):
        return {k: strip_figures(v, k) for k, v in obj.items()
                if not (k in _FIGURE_KEYS and not (k == "points" and _parent in _KEEP_POINTS_IN))}
    if isinstance(obj, list):
        return [strip_figures(v, _parent) for v in obj]
    return obj


def _explanation_text(expl: Any) -> str | None:
    if isinstance(expl, dict):
        text = expl.get("explanation_text") or expl.get("text")
        return text if isinstance(text, str) else None
    return None


def shape_rating(row: dict, who: Principal) -> dict:
    """One year's rating as the caller may see it."""
    out = {k: row.get(k) for k in _RATING_PUBLIC if k in row}
    if who.sees_names:
        out |= {k: row.get(k) for k in _RATING_VIEWER if k in row}
        expl = row.get("explanation") or {}
        if who.sees_figures:
            out |= {k: row.get(k) for k in _RATING_ANALYST if k in row}
            out["explanation"] = expl
            out["explanation_text"] = _explanation_text(expl)
        else:
            out["explanation"] = strip_figures(expl)
            # an adjustment says what it compared ("亩均税收 6.00 万元/亩"): a figure
            if "adjustments" in out:
                out["adjustments"] = strip_figures(out["adjustments"])
    return out


def _rows(conn: sa.Connection, sql: str, params: dict) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


def _geojson(text: str | None) -> dict | None:
    return orjson.loads(text) if text else None


def _metrics(rows: list[dict], drop: tuple[str, ...]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _not_found(what: str, code: str, who: Principal, hint: str) -> Response:
    where = f" in your region ({who.region})" if who.region else ""
    return json_error(404, "NotFound", f"no {what} '{code}'{where}. {hint}")


def _history(conn: sa.Connection, ids: list[str]) -> list[dict]:
    return [{**r, "at": r["at"].isoformat()} for r in _rows(conn, _HISTORY, {"ids": ids})]


def _batch(conn: sa.Connection, batch_id: int | None) -> dict | None:
    if batch_id is None:
        return None
    row = conn.execute(sa.text(_BATCH), {"id": batch_id}).first()
    return {"batch_id": row.id, "status": row.status,
            "loaded_at": row.finished_at.isoformat() if row.finished_at else None} if row else None


# --------------------------------------------------------------------------- 一地一档


_IDENTITY_RE = re.compile(r"^[RAD]-")


def parcel_warnings(parcel: dict, links: list[dict], ratings: list[dict]) -> list[str]:
    """What a case officer should look at (derived from the archive, in plain words)."""
    out = []
    if not links:
        out.append("no enterprise is linked to this land (地企对应 missing): it is rated only as idle or "
                   "not at all — add a lease record or a manual correction (纠偏)")
    for link in links:
        if link.get("confidence") is not None and link["confidence"] < 0.6:
            out.append(f"the link to {link['uscc']} has low confidence ({link['confidence']:.2f}, "
                       f"method {link['method']}): confirm or correct it (纠偏)")
    shares = [link["share"] for link in links if link.get("share") is not None]
    if shares and abs(sum(shares) - 1.0) > 0.01:
        out.append(f"the occupants' shares add up to {sum(shares):.3f}, not 1: the split (多企共地分割) "
                   "leaves land unattributed or counts it twice")
    reg, area = parcel.get("registered_area_m2"), parcel.get("area_m2")
    if reg and area and abs(reg - area) / reg > AREA_MISMATCH_SHARE:  # the importer flags the same share
        out.append(f"登记面积 {reg:.0f} m² differs from the measured area {area:.0f} m² by "
                   f"{abs(reg - area) / reg:.0%}: check the boundary (四至)")
    if ratings:
        last = ratings[-1]
        if (last.get("low_yield_years") or 0) >= 2:
            out.append(f"低效 for {last['low_yield_years']} consecutive years (as of {last['year']})")
        out += [f"{last['year']}: {w}" for w in (last.get("warnings") or []) if isinstance(w, str)]
    return out


@router.get("/parcels/{identity_code}", summary="一地一档: the archive of one piece of land")
def parcel_archive(request: Request, identity_code: str, who: Principal = Depends(principal)):
    who.require("public")
    code = identity_code.strip()
    engine: sa.Engine = request.app.state.engine
    with engine.connect() as conn:  # one transaction: the archive is one consistent snapshot
        etag, headers, r304 = etag_response(request, data_version(conn), who)
        if r304:
            return r304
        region, rp = who.region_clause("p.township")
        row = conn.execute(sa.text(_PARCEL.format(region=region)), {"code": code, **rp}).first()
        if row is None:
            alt = [r[0] for r in conn.execute(sa.text(_BY_PARCEL_CODE.format(region=region)),
                                               {"code": code.upper(), **rp})]
            if alt:
                hint = f"'{code}' is a 宗地代码; the land with that code has identity codes: {', '.join(alt)}"
            elif not _IDENTITY_RE.match(code):
                hint = ("宗地身份码 look like R-<宗地代码> (registered), A-<宗地代码>-<hash> (attached de-facto "
                        "land) or D-<hash> (independent de-facto land); search /collections/parcels/items")
            else:
                hint = "Search /collections/parcels/items?parcel_code=… to find the land's identity code."
            return _not_found("land with identity code", code, who, hint)
        p = dict(row._mapping)
        ename_region, erp = who.region_clause("coalesce(e.township, p.township)")
        shown = shown_runs_sql(who.sees_drafts)  # drafts only for callers who may review them
        links = _rows(conn, _PARCEL_LINKS.format(region=ename_region, shown=shown), {"code": code, **erp})
        parent = None
        if p["parent_identity_code"]:
            pr = conn.execute(sa.text(_PARENT.format(region=region)),
                              {"parent": p["parent_identity_code"], **rp}).first()
            parent = dict(pr._mapping) if pr else None
        attached = _rows(conn, _ATTACHED.format(region=region), {"code": code, **rp})
        versions = _rows(conn, _VERSIONS, {"code": code})
        lineage = _rows(conn, _LINEAGE, {"code": code})
        ratings = _rows(conn, _PARCEL_RATINGS.format(shown=shown), {"code": code})
        metrics = _rows(conn, _PARCEL_METRICS, {"code": code}) if who.sees_figures else None
        history = corrections = batch = None
        if who.sees_names:
            history = _history(conn, [code, p["parcel_code"]] if p["parcel_code"] else [code])
            corrections = [{**r, "created_at": r["created_at"].isoformat()} for r in _rows(
                conn, _CORRECTIONS.format(where="parcel_code = :pc"), {"pc": p["parcel_code"] or ""})]
            batch = _batch(conn, p["batch_id"])

    doc: dict[str, Any] = {
        "type": "ParcelArchive",
        "identity_code": p["identity_code"], "kind": p["kind"], "parcel_code": p["parcel_code"],
        "township": p["township"], "land_use": p["land_use"],
        "area_m2": p["area_m2"], "area_mu": p["area_mu"], "registered_area_m2": p["registered_area_m2"],
        "geometry": _geojson(p["geometry"]), "point": _geojson(p["point"]),
        "bbox": [p["xmin"], p["ymin"], p["xmax"], p["ymax"]],
        "parent": parent,
        "attached": [{k: v for k, v in a.items() if k != "user_uscc" or who.sees_links} for a in attached],
        "valid_from": p["valid_from"], "valid_to": p["valid_to"],
        "versions": versions, "lineage": _lineage_doc(code, lineage),
    }
    enterprises = []
    for link in links if who.sees_links else ():  # who uses the land: identities and links (app.auth)
        item = {"uscc": link["uscc"], "name": link["name"], "role": link["role"], "share": link["share"],
                "attributed_area_m2": link["attributed_area_m2"], "attributed_area_mu": link["attributed_area_mu"],
                "grade": link["grade"], "colour": link["colour"], "grade_year": link["grade_year"]}
        if who.sees_names:
            item |= {"township": link["township"], "method": link["method"],
                     "confidence": link["confidence"], "distance_m": link["distance_m"],
                     "sublot_area_m2": link["sublot_area_m2"]}
        enterprises.append(item)
    if who.sees_links:
        doc["enterprises"] = enterprises
    doc["enterprise_count"] = len(links)
    doc["ratings"] = [shape_rating(r, who) for r in ratings]
    if who.sees_links:
        doc |= {"owner_uscc": p["owner_uscc"], "owner_name": p["owner_name"], "user_uscc": p["user_uscc"]}
    if who.sees_names:
        doc |= {"note": p["note"], "warnings": parcel_warnings(p, links, ratings),
                "history": {"updated_at": p["updated_at"].isoformat() if p["updated_at"] else None,
                            "import": batch, "corrections": corrections, "audit": history,
                            "grades": [{"year": r["year"], "grade": r["grade"], "run_id": r["run_id"]}
                                       for r in ratings]}}
    if metrics is not None:
        doc["metrics"] = _metrics(metrics, ("identity_code",))
        doc["metrics_unit"] = "万元 (tax, value added, revenue, output, R&D), 吨标煤, 吨, 人, kWh — apportioned"
    doc["visibility"] = {"role": who.role, "region": who.region,
                         "figures": who.sees_figures, "names": who.sees_names}
    return json_response(doc, headers=headers)


def _lineage_doc(code: str, rows: list[dict]) -> dict:
    """Lineage of one code in both directions, with years: ``from`` (split from / merged from /
    re-coded from) and ``into`` (split into / merged into / re-coded to)."""
    return {"from": [{"year": r["year"], "kind": r["kind"], "code": r["parent_code"]}
                     for r in rows if r["child_code"] == code],
            "into": [{"year": r["year"], "kind": r["kind"], "code": r["child_code"]}
                     for r in rows if r["parent_code"] == code]}


# --------------------------------------------------------------------------- 一企一档


def enterprise_warnings(ent: dict, parcels: list[dict], land: dict | None, ratings: list[dict]) -> list[str]:
    out = []
    status, reason = uscc_status(ent["uscc"])
    if status != "ok":
        out.append(f"USCC {ent['uscc']}: {reason}")
    if ent.get("point") is None:
        out.append("no location: the address could not be geocoded, so it was matched to land only by "
                   "owner code or lease records")
    if not parcels:
        out.append("no land is linked to this enterprise (无地企业 or not yet matched): it is rated on a "
                   "tenants' list or not at all")
    if ent.get("flags"):
        out.append(f"flags: {ent['flags']} (may be exempt / in transition: 免评, 过渡期)")
    if ratings:
        last = ratings[-1]
        if (last.get("consecutive_d_years") or 0) >= 2:
            out.append(f"D for {last['consecutive_d_years']} consecutive years (as of {last['year']}): "
                       "a key redevelopment target (连续两年 D)")
        out += [f"{last['year']}: {w}" for w in (last.get("warnings") or []) if isinstance(w, str)]
    return out


@router.get("/enterprises/{uscc}", summary="一企一档: the archive of one enterprise")
def enterprise_archive(request: Request, uscc: str, who: Principal = Depends(principal)):
    who.require("public")
    if not who.sees_links:  # an enterprise archive is about an identity (app.auth.CONFIDENTIALITY)
        return json_error(401 if who.key_id is None else 403, "Unauthorized" if who.key_id is None else "Forbidden",
                          "一企一档 shows an enterprise by its identity (USCC), which needs a key with the 'viewer' "
                          "role (send it as X-API-Key); the land's archive /parcels/{identity_code} needs none")
    code = uscc.strip().upper()
    engine: sa.Engine = request.app.state.engine
    with engine.connect() as conn:  # one transaction: the archive is one consistent snapshot
        etag, headers, r304 = etag_response(request, data_version(conn), who)
        if r304:
            return r304
        region, rp = who.region_clause("e.township")
        row = conn.execute(sa.text(_ENTERPRISE.format(region=region)), {"uscc": code, **rp}).first()
        if row is None:
            status, reason = uscc_status(code)
            hint = (f"'{code}' is not a 统一社会信用代码: {reason}" if status == "error" else
                    "Search /collections/enterprises/items?name=… (viewer key) to find its USCC.")
            return _not_found("enterprise with USCC", code, who, hint)
        e = dict(row._mapping)
        pregion, prp = who.region_clause("p.township")
        shown = shown_runs_sql(who.sees_drafts)  # drafts only for callers who may review them
        parcels = _rows(conn, _ENTERPRISE_PARCELS.format(region=pregion, shown=shown), {"uscc": code, **prp})
        land_rows = _rows(conn, _ENTERPRISE_LAND, {"uscc": code})
        # the land total of the year whose links are listed (the newest shown, else newest matched)
        link_year = parcels[0]["link_year"] if parcels else None
        land = next((r for r in land_rows if r["year"] == link_year), land_rows[-1] if land_rows else None)
        by_year = _rows(conn, _ENTERPRISE_LAND_YEARS.format(region=pregion), {"uscc": code, **prp})
        ratings = _rows(conn, _ENTERPRISE_RATINGS.format(shown=shown), {"uscc": code})
        metrics = _rows(conn, _ENTERPRISE_METRICS, {"uscc": code}) if who.sees_figures else None
        history = batch = corrections = None
        if who.sees_names:
            history = _history(conn, [code])
            corrections = [{**r, "created_at": r["created_at"].isoformat()} for r in _rows(
                conn, _CORRECTIONS.format(where="uscc = :u"), {"u": code})]
            batch = _batch(conn, e["batch_id"])

    doc: dict[str, Any] = {
        "type": "EnterpriseArchive",
        "uscc": e["uscc"], "industry_code": e["industry_code"], "scale": e["scale"], "township": e["township"],
        "point": _geojson(e["point"]),
    }
    used = []
    for p in parcels:
        item = {"identity_code": p["identity_code"], "parcel_code": p["parcel_code"], "kind": p["kind"],
                "township": p["township"], "parcel_area_mu": p["parcel_area_mu"], "role": p["role"],
                "tenure": "leased" if p["role"] == "tenant" else "owned",
                "share": p["share"], "attributed_area_m2": p["attributed_area_m2"],
                "attributed_area_mu": p["attributed_area_mu"],
                "grade": p["grade"], "colour": p["colour"], "grade_year": p["grade_year"]}
        if who.sees_names:
            item |= {"method": p["method"], "confidence": p["confidence"], "distance_m": p["distance_m"],
                     "owner_uscc": p["owner_uscc"]}
        used.append(item)
    doc["parcels"] = used
    doc["land_year"] = land["year"] if land else None
    years: dict[int, dict] = {}
    for r in by_year:
        y = years.setdefault(r["year"], {"year": r["year"], "land_area_mu": 0.0, "parcels": []})
        y["land_area_mu"] += r["attributed_area_mu"] or 0.0
        y["parcels"].append({"identity_code": r["identity_code"], "parcel_code": r["parcel_code"],
                             "role": r["role"], "attributed_area_mu": r["attributed_area_mu"]})
    doc["land_by_year"] = list(years.values())
    doc["land"] = ({k: land[k] for k in ("land_area_m2", "land_area_mu", "parcel_count", "owned_area_m2",
                                         "leased_in_area_m2", "land_class")} if land else
                   {"land_area_m2": sum(p["attributed_area_m2"] or 0 for p in parcels),
                    "land_area_mu": sum(p["attributed_area_mu"] or 0 for p in parcels),
                    "parcel_count": len(parcels), "note": "summed from the links shown (no enterprise_land row)"})
    if not who.sees_names:
        doc["land"].pop("land_class", None)
    doc["ratings"] = [shape_rating(r, who) for r in ratings]
    if who.sees_names:
        last = ratings[-1] if ratings else {}
        doc |= {"name": e["name"], "address": e["address"],
                "founded": e["founded"].isoformat() if e["founded"] else None, "flags": e["flags"],
                "coord_sys": e["coord_sys"],
                "consecutive_d_years": last.get("consecutive_d_years"),
                "warnings": enterprise_warnings(e, parcels, land, ratings),
                "history": {"updated_at": e["updated_at"].isoformat() if e["updated_at"] else None,
                            "import": batch, "corrections": corrections, "audit": history,
                            "grades": [{"year": r["year"], "grade": r["grade"], "run_id": r["run_id"]}
                                       for r in ratings]}}
    if metrics is not None:
        doc["metrics"] = _metrics(metrics, ("uscc", "batch_id"))
        doc["metrics_unit"] = "万元 (tax, value added, revenue, output, R&D), 吨标煤, 吨, 人, kWh"
        last = ratings[-1] if ratings else {}
        doc["electricity"] = {"year": last.get("year"),
                              "surcharge_yuan": last.get("electricity_surcharge_yuan"),
                              "refund_yuan": last.get("electricity_refund_yuan")}
    doc["visibility"] = {"role": who.role, "region": who.region,
                         "figures": who.sees_figures, "names": who.sees_names}
    return json_response(doc, headers=headers)
