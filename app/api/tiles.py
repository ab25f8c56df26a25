"""Vector tiles (Mapbox Vector Tiles, WebMercatorQuad) of every layer in :mod:`app.api.layers`.

``GET /tiles/{layer}/{z}/{x}/{y}.pbf`` — one SQL statement per tile: PostGIS selects the rows
whose geometry meets the tile (an index-friendly ``geom && ST_Transform(ST_TileEnvelope(…), 4490)``
on the CGCS2000 column, with the 64-unit buffer as margin), transforms them to EPSG:3857,
simplifies them by the tile's resolution, drops polygons smaller than a quarter of a screen
pixel, clips them (``ST_AsMVTGeom``) and encodes the tile (``ST_AsMVT``). The same statement
returns the data version and the evaluation run shown, so a tile is one round trip.

``GET /tiles/{layer}.json`` — TileJSON 3.0.0 (tiles URL template, zooms, bounds of the data the
caller may see, ``vector_layers`` with their fields).

Feature ids (what MapLibre's ``feature-state`` and QGIS's identify need, and what tipg lacks):
``fid`` = the first 13 hex digits (52 bits) of ``md5(text id)`` as an integer — stable across
re-imports and databases, below 2**53 so JavaScript reads it exactly, and computable by any
client from the identity code / USCC (:func:`feature_id`); the text id is also a property.
With 52 bits, a collision among 500 000 features has a probability of about 3·10⁻⁵.

Who sees what: properties are those the caller's role may see (``Prop.level``), rows are those
of the caller's township for region-scoped keys (features outside are absent from the tile).
Grades are those of the run shown (``?run=`` id, else ``?year=``'s shown run, else the newest).

Render once, serve many: a tile is rendered on its first request (or by :func:`build_pyramid`
when a run is published) and kept in ``tile_cache`` (:mod:`app.cache`) with the data version it
was rendered at, per caller scope class (role, region, links) and run/year asked; later requests
read it back in one indexed statement that also returns the current data version, so a stale tile
is never served — the same bytes as rendering it again (tested).

Caching: a strong ETag per data version, URL and caller scope; ``Cache-Control: public``
for anonymous callers, ``private`` with a key. An empty tile is ``204 No Content`` (always).
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from app import cache as tile_cache
from app.api.common import (MVT, RUN_QUERY, YEAR_QUERY, base_url, data_version, etag_response, json_error,
                            json_response, principal_scope)
from app.api.layers import LAYERS, Layer, current_run_sql, explicit_run_sql
from app.auth import Principal, principal

router = APIRouter(tags=["tiles"])

EXTENT = 4096
BUFFER = 64
#: Largest zoom served; TileJSON advertises ``TILEJSON_MAXZOOM`` (clients overzoom past it).
MAX_Z = 24
TILEJSON_MAXZOOM = 16
#: Below these zooms a tile would hold a whole county of parcels: an empty tile is served —
#: except for the layers with an overview (:data:`OVERVIEW_BELOW_Z`), which start at zoom 0.
MINZOOM = {"parcels": 0, "defacto": 10, "sublots": 12, "enterprises": 8}
#: Below this zoom the layers in :data:`OVERVIEW_PROPS` are served as overview tiles
#: (:func:`overview_sql`): a parcel is under two screen pixels wide there, so drawn one by one it
#: would vanish (or be dropped as a speck) and the county would open blank.
OVERVIEW_BELOW_Z = 10
#: The properties an overview feature carries (all public, and what the map colours and filters by).
OVERVIEW_PROPS = {"parcels": ("grade", "colour", "township", "industry_group")}
#: Overview tiles have a coarser grid than detail tiles: one unit = one overview cell = two screen
#: pixels of a 512 px tile. A county's grades form a fine mosaic; at one-pixel cells a z9 tile of a
#: dense 100k-parcel county held 443 KiB, at two-pixel cells 114 KiB (bench/RESULTS.md).
OVERVIEW_EXTENT = 256
OVERVIEW_BUFFER = 4
#: Simplify geometries below this zoom (at z ≥ 15 a tile unit is ≤ 0.6 m: nothing to gain).
SIMPLIFY_BELOW_Z = 15
WEB_MERCATOR_SPAN = 2 * 20037508.342789244
CACHE_SECONDS = 60
_JSON_TYPES = {"string": "String", "number": "Number", "integer": "Number", "boolean": "Boolean"}


def feature_id(text_id: str) -> int:
    """The MVT feature id of a row: 52 bits of md5 of its text id (same as the SQL below).

    >>> feature_id("R-340123002004GB00011") < 2 ** 53
    True
    """
    return int(hashlib.md5(text_id.encode()).hexdigest()[:13], 16)


# --------------------------------------------------------------------------- SQL


def _fid_sql(id_sql: str) -> str:
    return f"('x' || substr(md5({id_sql}), 1, 13))::bit(52)::bigint"


def _run_cte(explicit_run: bool, drafts: bool = True) -> str:
    """The run shown: an explicit ``:run`` id, or ``current_run_sql`` for ``:year`` (drafts only
    for callers who may review them)."""
    if explicit_run:
        return explicit_run_sql("run", drafts)
    return current_run_sql("year", drafts)


def _bind_run(sql: str) -> str:
    """Layer SQL takes ``:run_id``; inside one statement it is the ``run`` CTE's id."""
    return re.sub(r":run_id\b", "(SELECT id FROM run)", sql)


def _is_polygon(layer: Layer) -> bool:
    return "Polygon" in layer.geometry_type


def tile_sql(layer: Layer, props: list, z: int, *, explicit_run: bool, region_sql: str,
             drafts: bool = True, ids: bool = True) -> str:
    """The one statement that builds a tile: ``(dv, run_id, mvt)``.

    Binds: ``:z :x :y :margin :tol :min_area :run|:year`` and the region's parameter. Without
    ``ids`` (callers who may not learn an enterprise's identity, ``Layer.id_level``) the feature
    id is a hash of the geometry instead of the USCC's.
    """
    g = layer.geom_sql
    g3857 = f"ST_Transform({g}, 3857)"
    area_filter = "TRUE"
    if _is_polygon(layer):
        if z < SIMPLIFY_BELOW_Z:
            g3857 = f"ST_Simplify({g3857}, :tol)"
        area_filter = f"ST_Area({g}) >= :min_area"
    columns = ",\n               ".join(f'{p.sql} AS "{p.name}"' for p in props)
    return f"""
WITH run AS ({_run_cte(explicit_run, drafts)}),
tile AS (
    SELECT ST_AsMVTGeom({g3857}, ST_TileEnvelope(:z, :x, :y), {EXTENT}, {BUFFER}, true) AS geom,
           {_fid_sql(layer.id_sql if ids else f"encode(ST_AsBinary({g}), 'hex')")} AS fid{"," if columns else ""}
           {columns}
    FROM {_bind_run(layer.from_sql)}
    WHERE {g} && ST_Transform(ST_TileEnvelope(:z, :x, :y, margin => :margin), 4490)
      AND ({layer.where_sql}) AND {region_sql} AND {area_filter}
)
SELECT (SELECT version FROM data_version WHERE id = 1) AS dv,
       (SELECT id FROM run) AS run_id,
       -- features in fid order: the same rows give the same bytes whatever plan scanned them
       -- (a pre-built tile must equal a fresh render; scan order changes with the statistics)
       (SELECT ST_AsMVT(tile.*, '{layer.id}', {EXTENT}, 'geom', 'fid' ORDER BY tile.fid, tile.geom)
        FROM tile WHERE tile.geom IS NOT NULL) AS mvt"""


def overview_sql(layer: Layer, *, explicit_run: bool, region_sql: str, drafts: bool = True) -> str:
    """An overview tile (z < :data:`OVERVIEW_BELOW_Z`): ``(dv, run_id, mvt)``, same binds as
    :func:`tile_sql` plus ``:cell`` (m, EPSG:3857).

    Land smaller than a cell is aggregated: each cell of the grid (two screen pixels) takes, per
    township and industry group, the grade covering the most 亩 among the parcels whose centroid
    falls in it; land larger than a cell keeps its own (simplified) outline. Pieces of one grade,
    township and group are merged, so a tile holds a handful of multipolygons whatever the number
    of parcels: each feature has ``grade``, ``colour``, ``township``, ``industry_group``, ``n``
    (parcels drawn by it, whatever their grade) and ``area_mu`` (their 亩) — all public-level (app.auth.CONFIDENTIALITY).
    No feature id: an overview feature is not one parcel.
    """
    g = layer.geom_sql
    names = OVERVIEW_PROPS[layer.id]
    cols = ", ".join(f'{layer.prop(n).sql} AS "{n}"' for n in names)
    keys = ", ".join(f'"{n}"' for n in names)
    part = ", ".join(f'"{n}"' for n in names if n not in ("grade", "colour"))
    return f"""
WITH run AS ({_run_cte(explicit_run, drafts)}),
src AS (
    SELECT ST_Transform({g}, 3857) AS g, p.area_mu AS a, {cols}
    FROM {_bind_run(layer.from_sql)}
    -- clipped to the world: past ±180° the transformed envelope would wrap round
    WHERE {g} && ST_Transform(ST_ClipByBox2D(ST_TileEnvelope(:z, :x, :y, margin => :margin),
                                             ST_TileEnvelope(0, 0, 0)), 4490)
      AND ({layer.where_sql}) AND {region_sql}
),
small AS (
    SELECT floor(ST_X(ST_Centroid(g)) / :cell) AS cx, floor(ST_Y(ST_Centroid(g)) / :cell) AS cy,
           {keys}, sum(a) AS a, count(*) AS n
    FROM src WHERE ST_Area(g) < :cell * :cell
    GROUP BY 1, 2, {keys}
),
dominant AS (
    SELECT DISTINCT ON (cx, cy, {part}) *,
           sum(n) OVER (PARTITION BY cx, cy, {part}) AS n_cell, sum(a) OVER (PARTITION BY cx, cy, {part}) AS a_cell
    FROM small ORDER BY cx, cy, {part}, a DESC, grade
),
pieces AS (
    SELECT ST_MakeEnvelope(cx * :cell, cy * :cell, (cx + 1) * :cell, (cy + 1) * :cell, 3857) AS g,
           {keys}, n_cell AS n, a_cell AS a FROM dominant
    UNION ALL
    SELECT ST_Simplify(g, :tol) AS g, {keys}, 1 AS n, a FROM src WHERE ST_Area(g) >= :cell * :cell
),
tile AS (
    SELECT ST_AsMVTGeom(ST_Union(g), ST_TileEnvelope(:z, :x, :y), {OVERVIEW_EXTENT}, {OVERVIEW_BUFFER}, true) AS geom,
           {keys}, sum(n)::integer AS n, round(sum(a) * 1000) / 1000 AS area_mu
    FROM pieces GROUP BY {keys}
)
SELECT (SELECT version FROM data_version WHERE id = 1) AS dv,
       (SELECT id FROM run) AS run_id,
       (SELECT ST_AsMVT(tile.*, '{layer.id}', {OVERVIEW_EXTENT}, 'geom' ORDER BY {keys})
        FROM tile WHERE tile.geom IS NOT NULL) AS mvt"""


def extent_sql(layer: Layer, region_sql: str) -> str:
    """Bounds of what the caller may see (CGCS2000 ≈ WGS84 at these scales)."""
    return f"""
WITH run AS (SELECT NULL::bigint AS id),
e AS (SELECT ST_Extent({layer.geom_sql}) AS b FROM {_bind_run(layer.from_sql)}
      WHERE ({layer.where_sql}) AND {region_sql})
SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM e"""


def years_sql(drafts: bool) -> str:
    """Years with a run the caller may see (a draft-only year is not listed to non-reviewers)."""
    statuses = "('published', 'draft')" if drafts else "('published')"
    return f"SELECT DISTINCT year FROM evaluation_runs WHERE status IN {statuses} ORDER BY year"


@lru_cache(maxsize=256)
def _tile_statement(layer_id: str, role: str, links: bool, simplify: bool, explicit_run: bool,
                    region_sql: str) -> sa.TextClause:
    """The parsed statement, built once per (layer, role, links published, simplification, run
    mode, region clause)."""
    lay = LAYERS[layer_id]
    z = 0 if simplify else SIMPLIFY_BELOW_Z
    who = Principal(role, publish_links=links)
    return sa.text(tile_sql(lay, visible_props(lay, who), z, explicit_run=explicit_run, region_sql=region_sql,
                            drafts=who.sees_drafts, ids=who.at_least(lay.id_level)))


@lru_cache(maxsize=64)
def _overview_statement(layer_id: str, drafts: bool, explicit_run: bool, region_sql: str) -> sa.TextClause:
    return sa.text(overview_sql(LAYERS[layer_id], explicit_run=explicit_run, region_sql=region_sql, drafts=drafts))


# --------------------------------------------------------------------------- helpers


def tile_params(z: int) -> dict:
    """Zoom-dependent tolerances: simplification = one tile unit; tiny = ¼ screen pixel (256 px);
    overview cell = one unit of an overview tile (m, EPSG:3857)."""
    unit_m = WEB_MERCATOR_SPAN / (2 ** z) / EXTENT
    pixel_deg = 360.0 / (2 ** z) / 256
    return {"tol": unit_m, "min_area": 0.25 * pixel_deg * pixel_deg * 0.86,
            "margin": BUFFER / EXTENT, "cell": WEB_MERCATOR_SPAN / (2 ** z) / OVERVIEW_EXTENT}


def unknown_layer(layer_id: str) -> Response:
    return json_error(404, "NotFound", f"no layer '{layer_id}'; tiles exist for: {', '.join(LAYERS)} "
                                       "(e.g. /tiles/parcels/{z}/{x}/{y}.pbf, TileJSON at /tiles/parcels.json)")


def run_not_found(conn: sa.Connection, run: int | None, year: int | None, drafts: bool = False) -> Response:
    years = [r[0] for r in conn.execute(sa.text(years_sql(drafts)))]
    what = f"run {run}" if run is not None else f"an evaluation run for year {year}"
    return json_error(404, "RunNotFound", f"there is no {what}; years with a run: "
                      f"{', '.join(map(str, years)) or 'none yet (run `mujun evaluate`)'}. "
                      "Leave out run/year for the newest run.")


def visible_props(layer: Layer, who: Principal) -> list:
    return layer.visible(who.at_least)


def _cache_control(who: Principal) -> str:
    return f"{'private' if who.key_id is not None else 'public'}, max-age={CACHE_SECONDS}"


def _bad_param(msg: str) -> Response:
    return json_error(400, "InvalidParameterValue", msg)


# --------------------------------------------------------------------------- cached tiles, async

_TILE_PATH = re.compile(r"/tiles/(\w+)/(\d{1,2})/(\d{1,8})/(\d{1,8})\.pbf")
_DIGITS = re.compile(r"\d{1,9}")
_KEY_HEADERS = (b"x-api-key", b"authorization")
_CAN_CACHE_SQL = ("SELECT to_regclass('tile_cache') IS NOT NULL AND NOT pg_is_in_recovery() "
                  "AND has_table_privilege('tile_cache', 'INSERT')")


class CachedTiles:
    """ASGI middleware: an anonymous tile request whose tile is pre-built and current is answered
    from ``tile_cache`` on the async pool (:func:`app.db.async_pool`) in one statement (the data
    version and the tile together, so a tile of an older version is never served), with the
    same status, body and headers as :func:`get_tile` — no thread hop, no dependency solving,
    no pool pre-ping. Everything else (a key or a session, other query parameters, a tile not
    built or stale, any database error) goes on to :func:`get_tile`, which renders and stores it.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            m = _TILE_PATH.fullmatch(path)
            if m is not None:
                response = await _cached_tile(scope, m)
                if response is not None:
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _anonymous_query(scope) -> dict | None:
    """``{"run": …, "year": …}`` of a request with no key, no session and no other parameter."""
    for name, value in scope["headers"]:
        if name in _KEY_HEADERS or (name == b"cookie" and b"mujun_session" in value):
            return None
    out = {"run": None, "year": None}
    qs = scope.get("query_string", b"")
    if qs:
        for part in qs.decode("latin-1").split("&"):
            name, _, value = part.partition("=")
            if name not in out or out[name] is not None or not _DIGITS.fullmatch(value):
                return None
            out[name] = int(value)
    return out


async def _cached_tile(scope, m) -> Response | None:
    app = scope.get("app")
    state = getattr(app, "state", None)
    pool = getattr(state, "apool", None)
    if pool is None or not state.settings.tile_cache:
        return None
    query = _anonymous_query(scope)
    lay = LAYERS.get(m[1])
    if query is None or lay is None:
        return None
    z, x, y = int(m[2]), int(m[3]), int(m[4])
    if z > MAX_Z or x >= 2 ** z or y >= 2 ** z or z < MINZOOM.get(lay.id, 0):
        return None
    who: Principal = state.keys.anonymous
    if not who.at_least("public"):
        return None
    # ?run=<id> (what the web map asks) is the default tile when <id> is the run it shows: the
    # same statement result, so the pre-built default row answers it (its run_id is checked)
    want_run = query["run"] if query["year"] is None else None
    key = {"layer": lay.id, "scope": principal_scope(who),
           "query": "run=None&year=None" if want_run is not None else f"run=None&year={query['year']}",
           "z": z, "x": x, "y": y}
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        async with pool.connection() as conn:
            usable = getattr(state, "tile_cache_async", None)
            if usable is None:  # as tile_cache.ensure_tile_table: not on a replica, not read-only
                usable = state.tile_cache_async = bool((await (await conn.execute(_CAN_CACHE_SQL)).fetchone())[0])
            if not usable:
                return None
            # binary results: the tile arrives as raw bytes, not hex text to decode
            dv, version, run_id, mvt = await (await conn.execute(tile_cache.TILE_READ_ASYNC, key,
                                                                 binary=True)).fetchone()
    except (psycopg.Error, PoolTimeout):
        return None  # the sync path answers (and maps the error to a 503 if it persists)
    if version is None or version != dv or (want_run is not None and run_id != want_run):
        return None
    request = Request(scope)
    _, headers, r304 = etag_response(request, int(dv), who, cache_control=_cache_control(who))
    if r304:
        return r304
    if not mvt:
        return Response(status_code=204, headers=headers)
    return Response(bytes(mvt), media_type=MVT, headers=headers)


# --------------------------------------------------------------------------- endpoints


@router.get("/tiles/{layer}/{z}/{x}/{y}.pbf", summary="Vector tile (MVT) of a layer, WebMercatorQuad",
            response_class=Response,
            responses={200: {"content": {MVT: {}}}, 204: {"description": "empty tile"}})
def get_tile(request: Request, layer: str, z: int = Path(ge=0, le=MAX_Z), x: int = Path(ge=0),
             y: int = Path(ge=0),
             run: int | None = RUN_QUERY, year: int | None = YEAR_QUERY,
             who: Principal = Depends(principal)):
    who.require("public")
    lay = LAYERS.get(layer)
    if lay is None:
        return unknown_layer(layer)
    if x >= 2 ** z or y >= 2 ** z:
        return json_error(404, "TileOutOfRange", f"tile {z}/{x}/{y} does not exist: at zoom {z}, x and y "
                                                  f"run from 0 to {2 ** z - 1}")
    engine: sa.Engine = request.app.state.engine
    cache = _cache_control(who)
    # Autocommit: a tile is one read statement — no BEGIN/ROLLBACK round trips around it.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if z < MINZOOM.get(lay.id, 0):
            _, headers, r304 = etag_response(request, data_version(conn), who, cache_control=cache)
            return r304 or Response(status_code=204, headers=headers)
        key = {"layer": lay.id, "scope": principal_scope(who), "query": f"run={run}&year={year}",
               "z": z, "x": x, "y": y}
        cached = None
        use_cache = request.app.state.settings.tile_cache
        # the data version and the tile rendered at it, if any (None: no cache usable here)
        hit = tile_cache.read_tile(conn, key) if use_cache else None
        if hit is not None:
            dv = int(hit.dv)
            if hit.data_version is not None and hit.data_version == dv:
                cached = hit
        else:  # every tile rendered (the benchmark's dynamic path): the version only for a 304
            use_cache = False
            dv = data_version(conn) if request.headers.get("if-none-match") else None
        if dv is not None:
            _, headers, r304 = etag_response(request, dv, who, cache_control=cache)
            if r304:
                return r304
        if cached is not None:
            body = bytes(cached.mvt or b"")
        else:
            row = render_tile(conn, lay, who, z, x, y, run, year)
            if row.run_id is None and (run is not None or year is not None):
                return run_not_found(conn, run, year, who.sees_drafts)
            body = bytes(row.mvt or b"")
            if use_cache:
                tile_cache.write_tile(conn, key, int(row.dv or 0), row.run_id, body or None)
            if int(row.dv or 0) != dv:  # the ETag of what is sent (data may have changed in between)
                _, headers, r304 = etag_response(request, int(row.dv or 0), who, cache_control=cache)
                if r304:
                    return r304
    if not body:
        return Response(status_code=204, headers=headers)
    return Response(body, media_type=MVT, headers=headers)


def render_tile(conn: sa.Connection, lay: Layer, who: Principal, z: int, x: int, y: int,
                run: int | None, year: int | None):
    """Render one tile from the tables: ``(dv, run_id, mvt)`` — the overview below
    :data:`OVERVIEW_BELOW_Z` for layers that have one, else :func:`tile_sql`."""
    region_sql, params = who.region_clause(lay.township_sql)
    params |= {"z": z, "x": x, "y": y, "run": run, "year": year, **tile_params(z)}
    if z < OVERVIEW_BELOW_Z and lay.id in OVERVIEW_PROPS:
        stmt = _overview_statement(lay.id, who.sees_drafts, run is not None, region_sql)
    else:
        stmt = _tile_statement(lay.id, who.role, who.publish_links, z < SIMPLIFY_BELOW_Z, run is not None,
                               region_sql)
    return conn.execute(stmt, params).one()


@router.get("/tiles/{layer}.json", summary="TileJSON 3.0.0 of a layer's vector tiles")
def get_tilejson(request: Request, layer: str,
                 run: int | None = RUN_QUERY, year: int | None = YEAR_QUERY,
                 who: Principal = Depends(principal)):
    who.require("public")
    lay = LAYERS.get(layer)
    if lay is None:
        return unknown_layer(layer)
    engine: sa.Engine = request.app.state.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # read-only
        etag, headers, r304 = etag_response(request, data_version(conn), who, cache_control=_cache_control(who))
        if r304:
            return r304
        if run is not None or year is not None:
            found = conn.execute(sa.text(f"WITH run AS ({_run_cte(run is not None, who.sees_drafts)}) "
                                         "SELECT id FROM run"),
                                 {"run": run, "year": year}).scalar()
            if found is None:
                return run_not_found(conn, run, year, who.sees_drafts)
        region_sql, params = who.region_clause(lay.township_sql)
        b = conn.execute(sa.text(extent_sql(lay, region_sql)), params).one()
    bounds = [b[0], b[1], b[2], b[3]] if b[0] is not None else [-180.0, -85.0511, 180.0, 85.0511]
    minzoom = MINZOOM.get(lay.id, 0)
    query = {k: v for k, v in (("run", run), ("year", year)) if v is not None}
    if request.query_params.get("api_key"):  # map clients cannot send headers: keep the key in tile URLs
        query["api_key"] = request.query_params["api_key"]
    qs = ("?" + urlencode(query)) if query else ""
    fields = {p.name: _JSON_TYPES.get(p.type, "String") for p in visible_props(lay, who)}
    doc = {
        "tilejson": "3.0.0",
        "name": lay.title,
        "description": lay.description,
        "version": "1.0.0",
        "attribution": "mujun 亩均论英雄",
        "scheme": "xyz",
        "tiles": [f"{base_url(request)}/tiles/{lay.id}/{{z}}/{{x}}/{{y}}.pbf{qs}"],
        "minzoom": minzoom,
        "maxzoom": TILEJSON_MAXZOOM,
        "bounds": bounds,
        "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, max(minzoom, 13)],
        "vector_layers": [{
            "id": lay.id, "description": lay.description, "minzoom": minzoom, "maxzoom": TILEJSON_MAXZOOM,
            "fields": fields,
        }],
        "mujun:feature_id": "first 13 hex digits of md5(text id) as an integer (52 bits)",
    }
    return json_response(doc, headers=headers)


# --------------------------------------------------------------------------- pre-built pyramid


def _tiles_with_data_sql(layer: Layer) -> str:
    """The (x, y) at zoom ``:z`` of every tile a feature's bounding box meets (the current land)."""
    g = layer.geom_sql
    n = "(2 ^ :z)"
    ty = f"floor((1 - asinh(tan(radians(greatest(least({{lat}}, 85.0511), -85.0511)))) / pi()) / 2 * {n})::int"
    return f"""
WITH run AS (SELECT NULL::bigint AS id)
SELECT DISTINCT gx, gy FROM (
    SELECT ST_XMin({g}) AS x0, ST_YMin({g}) AS y0, ST_XMax({g}) AS x1, ST_YMax({g}) AS y1
    FROM {_bind_run(layer.from_sql)}
    WHERE {g} IS NOT NULL AND ({layer.where_sql})
) b,
LATERAL generate_series(least(floor((x0 + 180) / 360 * {n})::int, {n}::int - 1),
                        least(floor((x1 + 180) / 360 * {n})::int, {n}::int - 1)) gx,
LATERAL generate_series(greatest({ty.format(lat='y1')}, 0), least({ty.format(lat='y0')}, {n}::int - 1)) gy"""


def build_pyramid(engine: sa.Engine, layer_ids=("parcels",), *, maxzoom: int = TILEJSON_MAXZOOM,
                  who: Principal | None = None, year: int | None = None, progress=None,
                  workers: int | None = None) -> dict:
    """Render every tile with data, zoom 0 to ``maxzoom``, into ``tile_cache`` for ``who``
    (default: an anonymous public caller) and ``year`` (default: the newest) — what a publish
    (app/render.py) and ``mujun tiles build`` run. Tiles already current are skipped (an
    interrupted build resumes); the others are rendered on ``workers`` connections at once
    (default: the CPU cores, at most 4 — PostgreSQL does the work). Returns counts, bytes and
    seconds. Raises ``RuntimeError`` when this database role cannot use ``tile_cache``."""
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    who = who or Principal("public")
    workers = workers or max(1, min(len(os.sched_getaffinity(0)), 4))
    out = {"tiles": 0, "empty": 0, "skipped": 0, "bytes": 0, "seconds": 0.0}
    t0 = time.perf_counter()
    scope = principal_scope(who)
    query = f"run=None&year={year}"

    def render_some(lay: Layer, z: int, xy: list) -> list[int]:
        sizes = []
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            for x, y in xy:
                row = render_tile(c, lay, who, z, x, y, None, year)
                body = bytes(row.mvt or b"") or None
                tile_cache.write_tile(c, {"layer": lay.id, "scope": scope, "query": query, "z": z, "x": x, "y": y},
                                      int(row.dv or 0), row.run_id, body)
                sizes.append(len(body or b""))
        return sizes

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn, \
            ThreadPoolExecutor(workers) as pool:
        if not tile_cache.ensure_tile_table(conn):
            raise RuntimeError("tile_cache cannot be created or read with this database role: "
                               "grant it CREATE on the schema (or run `mujun tiles build` as the owner)")
        for lid in layer_ids:
            lay = LAYERS[lid]
            for z in range(MINZOOM.get(lid, 0), maxzoom + 1):
                xy = conn.execute(sa.text(_tiles_with_data_sql(lay)), {"z": z}).all()
                current = set(conn.execute(sa.text(
                    "SELECT x, y FROM tile_cache WHERE layer = :l AND scope = :s AND query = :q AND z = :z "
                    "AND data_version = (SELECT version FROM data_version WHERE id = 1)"),
                    {"l": lid, "s": scope, "q": query, "z": z}).all())
                todo = [(x, y) for x, y in xy if (x, y) not in current]
                out["skipped"] += len(xy) - len(todo)
                for sizes in pool.map(lambda part: render_some(lay, z, part), [todo[i::workers] for i in range(workers)]):
                    out["tiles"] += len(sizes)
                    out["empty"] += sum(1 for n in sizes if n == 0)
                    out["bytes"] += sum(sizes)
                if progress:
                    progress(lid, z, len(xy))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out
