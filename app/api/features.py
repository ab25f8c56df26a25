"""OGC API Features (Parts 1, 2, 3 and the Part 5 schema) over the layer registry.

What clients read, and why each piece is here (from QGIS's OAPIF provider and GDAL's driver):

* landing page links ``service-desc`` (OpenAPI 3 at ``/api``, where QGIS reads
  ``components.parameters.limit.schema.default/maximum`` to choose its page size), ``data``,
  ``conformance``; ``/conformance`` lists the classes QGIS tests before pushing CQL2 filters down
  or asking for a CRS (Part 2);
* every items page has ``numberMatched`` (QGIS's feature count), ``numberReturned``, a
  ``rel=next`` link of type ``application/geo+json`` until the end, and features with a
  top-level ``id``;
* ``/collections/{id}`` has ``extent.spatial.bbox`` (computed, cached per data version),
  ``crs``, ``storageCrs`` and links to ``/queryables`` and ``/schema`` (declared field types:
  QGIS ≥ 3.30 and GDAL read them instead of guessing from the first features).

Speed: pages are built by PostgreSQL (:mod:`app.api.sql`) and streamed from a server-side
cursor; paging is by key (``after=``); ``numberMatched`` and extents are cached per (query,
role scope, data version); ``ETag`` = hash(data version, URL, role scope) → ``304``.

Access: every endpoint asks :func:`app.auth.principal`; hidden properties (by role) are not
returned, filterable or sortable; a township-scoped key sees only its township's rows, in counts,
extents, items, single features and exports alike.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import math
import os
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote, urlencode

import jinja2
import orjson
import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from app import auth, cache, feature_cache
from app.api import cql2, errors, ogc_tiles, openapi
from app.api import sql as fsql
from app.api.common import (FLATGEOBUF, GEOJSON, JSON, OPENAPI_JSON, ApiError, DbStreamingResponse, base_url,
                            data_version, etag_response, json_response, principal_scope, releaser, wants)
from app.api.layers import LAYERS, Layer
from app.api.styles import style_links

router = APIRouter(tags=["OGC API Features"])

SCHEMA_JSON = "application/schema+json"
GPKG = "application/geopackage+sqlite3"
REL_QUERYABLES = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
REL_SCHEMA = "http://www.opengis.net/def/rel/ogc/1.0/schema"

#: Exactly the URIs QGIS (qgsoapifprovider.cpp) and GDAL test, plus the final CQL2 1.0 names — only
#: classes pygeofilter's grammar (with the corrections in app.api.cql2) implements in full: not
#: ``arithmetic`` (no ``%``, ``div``, ``^``), temporal, array or accent-insensitive comparison.
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-5/1.0/conf/schemas",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    # the pre-1.0 name QGIS tests to push S_INTERSECTS down
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-operators",
    *ogc_tiles.CONFORMANCE,
]

#: Query parameters of ``/items`` besides the layer's queryables (``prop=value``).
ITEMS_PARAMS = ("limit", "offset", "after", "bbox", "bbox-crs", "crs", "filter", "filter-lang",
                "filter-crs", "properties", "sortby", "run", "year", "f", "api_key", "datetime")
EXPORT_PARAMS = tuple(p for p in ITEMS_PARAMS if p not in ("offset", "after", "sortby"))


# ----------------------------------------------------------------------------- plumbing

class _Lru:
    """A small thread-safe LRU: cached counts, extents and runs (keys include the data version)."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


def _cache(request: Request) -> _Lru:
    state = request.app.state
    c = getattr(state, "features_cache", None)
    if c is None:
        c = state.features_cache = _Lru(request.app.state.settings.features_cache_entries)
    return c


def _api(fn):
    """Every error as ``{"code", "description"}`` JSON, with a message a person can act on."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (HTTPException, sa.exc.SQLAlchemyError) as e:
            r = errors.error_response(e)  # the one mapping (app.api.errors)
            if r is None:
                raise
            return r

    return wrapper


def _bad(msg: str, code: str = "InvalidParameterValue") -> ApiError:
    return ApiError(400, code, msg)


def _who(request: Request) -> auth.Principal:
    p = auth.principal(request)
    if not p.at_least("public"):
        raise ApiError(401, "Unauthorized", "anonymous access is off on this server; send an API key "
                       "in the X-API-Key header or ?api_key= (create one with `mujun keys create`)")
    return p


def _layer(collection_id: str, who: auth.Principal | None = None) -> Layer:
    """The collection, if the caller may open it: enterprise collections are keyed by USCC, an
    identity (``Layer.id_level``), so callers who do not see links get 401/403 for them."""
    layer = LAYERS.get(collection_id)
    if layer is None:
        raise ApiError(404, "NotFound", f"no collection {collection_id!r}; collections: "
                       + ", ".join(LAYERS))
    if who is not None and not who.at_least(layer.id_level):
        anonymous = who.key_id is None
        raise ApiError(401 if anonymous else 403, "Unauthorized" if anonymous else "Forbidden",
                       f"collection '{layer.id}' lists enterprises by their identity (USCC), which needs a key "
                       "with the 'viewer' role (send it as X-API-Key); without one, its grades are on the map "
                       f"tiles (/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.pbf) without identities")
    return layer


def _engine(request: Request) -> sa.Engine:
    return request.app.state.engine


def _settings(request: Request):
    return request.app.state.settings


def _url(request: Request, path: str, **params) -> str:
    q = {k: v for k, v in params.items() if v is not None}
    return f"{base_url(request)}{path}" + (f"?{urlencode(q)}" if q else "")


def _link(href: str, rel: str, type_: str, title: str | None = None) -> dict:
    d = {"href": href, "rel": rel, "type": type_}
    if title:
        d["title"] = title
    return d


# ------------------------------------------------------------------- HTML and CSV

HTML = "text/html"
CSV = "text/csv"
_JSON_TYPES = {"application/json", "application/geo+json", "application/schema+json",
               "application/vnd.oai.openapi+json", "*/*"}
_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("app", "templates"),
                                autoescape=jinja2.select_autoescape(("html",)), trim_blocks=True, lstrip_blocks=True)
#: The map page of one feature, by collection (the 一地一档 / 一企一档 archive pages).
_MAP_PAGES = {"parcels": "/map/parcel/{id}", "defacto": "/map/parcel/{id}", "enterprises": "/map/enterprise/{id}"}


def _representation(request: Request, *, csv: bool = False) -> str:
    """``json``, ``html`` (or ``csv`` where offered): ``?f=`` first, then ``Accept`` by quality and
    order (OGC API Features HTML conformance class). JSON stays the default: OGC clients (GDAL,
    QGIS) send JSON media types and no ``text/html``; browsers list ``text/html`` first."""
    f = (request.query_params.get("f") or "").lower()
    if f:
        return "html" if f == "html" else "csv" if (f == "csv" and csv) else "json"
    ranked = []
    for i, part in enumerate(request.headers.get("accept", "").lower().split(",")):
        mt, _, params = part.strip().partition(";")
        qv = 1.0
        for prm in params.split(";"):
            k, _, v = prm.strip().partition("=")
            if k == "q":
                try:
                    qv = float(v)
                except ValueError:
                    qv = 0.0
        ranked.append((-qv, i, mt.strip()))
    for _q, _i, mt in sorted(ranked):
        if mt in ("text/html", "application/xhtml+xml"):
            return "html"
        if mt == "text/csv" and csv:
            return "csv"
        if mt in _JSON_TYPES or mt.endswith("+json"):
            return "json"
    return "json"


def _html(request: Request, template: str, *, headers: dict | None = None, **ctx) -> Response:
    """A page of the OGC HTML representation (Jinja2 template under app/templates/ogc/)."""
    b = base_url(request)
    key = request.query_params.get("api_key")  # a map opened from here keeps the caller's key
    map_href = f"{b}/map" + (f"?{urlencode({'api_key': key})}" if key else "")
    body = _TEMPLATES.get_template(f"ogc/{template}").render(base=b, map_href=map_href, crumbs=ctx.pop("crumbs", []),
                                                               alternates=ctx.pop("alternates", []), **ctx)
    h = {**(headers or {}), "Vary": "Accept, X-API-Key, Authorization"}
    return Response(body, media_type="text/html; charset=utf-8", headers=h)


def _items_table(request: Request, layer: Layer, q: fsql.FeatureQuery, rows, limit: int, matched: int,
                 rep: str, eheaders: dict) -> Response:
    """One page of items as an HTML table or CSV (same rows, order and ``next`` link as the JSON)."""
    feats = [orjson.loads(r[0]) for r in rows[:limit]]
    last_k = rows[limit - 1][1] if len(rows) > limit else None
    links = _page_links(request, layer, last_k, limit)
    nxt = next((lk["href"] for lk in links if lk["rel"] == "next"), None)
    headers = {**_common_headers(q, eheaders), "OGC-NumberMatched": str(matched)}
    if rep == "csv":
        if nxt:
            headers["Link"] = f'<{nxt}>; rel="next"; type="{CSV}"'
        headers["Content-Disposition"] = f'inline; filename="{layer.id}.csv"'
        return Response(_csv(q, feats), media_type="text/csv; charset=utf-8", headers=headers)
    b = base_url(request)
    page = _MAP_PAGES.get(layer.id)
    for f in feats:
        fid = str(f.get("id"))
        f["href"] = f"{b}/collections/{layer.id}/items/{quote(fid, safe='')}"
        f["map"] = f"{b}{page.format(id=quote(fid, safe=''))}" if page else None
    props = [{"name": p.name, "title": p.title or p.name, "type": p.type} for p in q.props]
    return _html(request, "items.html", title=f"{layer.title}：要素", features=feats, props=props, matched=matched,
                 next=nxt, headers=headers,
                 crumbs=[{"href": f"{b}/?f=html", "title": "首页"}, {"href": f"{b}/collections?f=html", "title": "图层"},
                         {"href": f"{b}/collections/{layer.id}?f=html", "title": layer.title}],
                 alternates=[_link(f"{b}/collections/{layer.id}/items", "alternate", GEOJSON, "GeoJSON"),
                             _link(f"{b}/collections/{layer.id}/items?f=csv", "alternate", CSV, "CSV")])


def _csv(q: fsql.FeatureQuery, feats: list[dict]) -> bytes:
    """``id``, the properties, ``wkt`` (the geometry in the requested CRS and its axis order) and,
    for point layers, ``lon``/``lat`` (or the CRS's two axes, named ``x``/``y`` when projected).
    UTF-8 with a BOM, so Excel opens the Chinese text correctly."""
    import csv
    import io

    from shapely.geometry import shape

    points = q.layer.geometry_type.endswith("Point")
    names = [p.name for p in q.props]
    axes = ("lat", "lon") if q.crs.swap and q.crs.geographic else ("lon", "lat") if q.crs.geographic else \
        ("y", "x") if q.crs.swap else ("x", "y")
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", *names, "wkt", *(axes if points else ())])
    for f in feats:
        g = shape(f["geometry"]) if f.get("geometry") else None
        row = [f.get("id"), *(_cell(f["properties"].get(n)) for n in names), g.wkt if g is not None else ""]
        if points:
            row += [g.x, g.y] if g is not None and not g.is_empty else ["", ""]
        w.writerow(row)
    return ("\ufeff" + out.getvalue()).encode()


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return orjson.dumps(v).decode()
    return v


# ------------------------------------------------------------------------ landing & API

@router.get("/", summary="Landing page (OGC API)")
@_api
def landing(request: Request):
    if wants(request, OPENAPI_JSON) and not request.query_params.get("f"):
        return openapi_document(request)
    b = base_url(request)
    if _representation(request) == "html":
        if not request.query_params.get("f"):
            # A person typing the server's address wants the map (issue 13); the OGC HTML
            # landing page stays one request away with ?f=html (OGC API Features HTML).
            key = request.query_params.get("api_key")
            return RedirectResponse(f"{b}/map" + (f"?{urlencode({'api_key': key})}" if key else ""), status_code=303)
        return _html(request, "landing.html", title=request.app.title, description=request.app.description,
                     alternates=[_link(f"{b}/?f=json", "alternate", JSON, "JSON")])
    return json_response({
        "title": request.app.title,
        "description": request.app.description,
        "links": [
            _link(f"{b}/", "self", JSON, "this document"),
            _link(f"{b}/?f=html", "alternate", HTML, "this document as HTML"),
            _link(f"{b}/api", "service-desc", OPENAPI_JSON, "the API definition (OpenAPI 3.1)"),
            _link(f"{b}/docs", "service-doc", "text/html", "the API documentation"),
            _link(f"{b}/conformance", "conformance", JSON, "OGC API conformance classes"),
            _link(f"{b}/conformance", "http://www.opengis.net/def/rel/ogc/1.0/conformance", JSON),
            _link(f"{b}/collections", "data", JSON, "the collections"),
            _link(f"{b}/collections", "http://www.opengis.net/def/rel/ogc/1.0/data", JSON),
            _link(f"{b}/map", "alternate", "text/html", "the web map (地图)"),
            _link(f"{b}/tileMatrixSets", f"{ogc_tiles.REL}/tiling-schemes", JSON, "tile matrix sets (OGC API - Tiles)"),
        ],
    })


@router.get("/api", include_in_schema=False)
@_api
def openapi_document(request: Request):
    """OpenAPI 3 with ``components.parameters.limit`` (default, maximum): QGIS's page size."""
    if (request.query_params.get("f") or "").lower() == "html":
        return RedirectResponse(f"{base_url(request)}/docs")
    doc = getattr(request.app.state, "features_openapi", None)
    if doc is None:
        doc = request.app.state.features_openapi = _build_openapi(request)
    return Response(doc, media_type=OPENAPI_JSON)


def _build_openapi(request: Request) -> bytes:
    s = _settings(request)
    doc = copy.deepcopy(request.app.openapi())
    params = {
        "limit": {"name": "limit", "in": "query", "required": False, "style": "form", "explode": False,
                  "description": "Features per page; follow the `next` link for more.",
                  "schema": {"type": "integer", "minimum": 1, "maximum": s.max_limit, "default": s.default_limit}},
        "bbox": {"name": "bbox", "in": "query", "required": False, "style": "form", "explode": False,
                 "description": "minx,miny,maxx,maxy in bbox-crs (default CRS84, lon/lat)",
                 "schema": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}}},
        "crs": {"name": "crs", "in": "query", "required": False,
                "schema": {"type": "string", "format": "uri", "enum": [c.uri for c in fsql.SUPPORTED_CRS]}},
        "bbox-crs": {"name": "bbox-crs", "in": "query", "required": False,
                     "schema": {"type": "string", "format": "uri", "enum": [c.uri for c in fsql.SUPPORTED_CRS]}},
        "filter": {"name": "filter", "in": "query", "required": False, "schema": {"type": "string"},
                   "description": "CQL2 text or JSON over the collection's queryables"},
        "filter-lang": {"name": "filter-lang", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": ["cql2-text", "cql2-json"], "default": "cql2-text"}},
        "after": {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
                  "description": "keyset token from a `next` link"},
        "filter-crs": {"name": "filter-crs", "in": "query", "required": False,
                       "description": "CRS of the geometry literals in `filter` (default CRS84, lon/lat)",
                       "schema": {"type": "string", "format": "uri", "enum": [c.uri for c in fsql.SUPPORTED_CRS]}},
        "f": {"name": "f", "in": "query", "required": False,
              "description": "representation: `json` (GeoJSON, the default), `html` (a table, linking to the map) "
                             "or `csv` (id, properties, WKT; lon/lat for points)",
              "schema": {"type": "string", "enum": ["json", "html", "csv"]}},
    }
    comps = doc.setdefault("components", {})
    comps.setdefault("parameters", {}).update(params)
    comps.setdefault("securitySchemes", {})["apiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    doc.setdefault("info", {})["contact"] = {"name": "mujun", "url": base_url(request)}
    # Point the items operation's parameters at the shared components.
    for path, ops in doc.get("paths", {}).items():
        if path.endswith("/items") and "get" in ops:
            plist = ops["get"].setdefault("parameters", [])
            names = {p.get("name") for p in plist if isinstance(p, dict)}
            plist[:] = [({"$ref": f"#/components/parameters/{p['name']}"} if p.get("name") in params else p)
                        for p in plist]
            plist.extend({"$ref": f"#/components/parameters/{n}"} for n in params if n not in names)
    for path, types in _HTML_TYPES.items():  # the HTML (and CSV) representations of these operations
        op = doc.get("paths", {}).get(path, {}).get("get")
        if op is None:
            continue
        op.setdefault("responses", {}).setdefault("200", {"description": "OK"}).setdefault("content", {}).update(
            {t: {"schema": {"type": "string"}} for t in types})
        if not path.endswith("/items"):
            op.setdefault("parameters", []).append(
                {"name": "f", "in": "query", "required": False, "description": "`json` (default) or `html`",
                 "schema": {"type": "string", "enum": ["json", "html"]}})
    return orjson.dumps(openapi.complete(doc))


_HTML_TYPES = {"/": [HTML], "/collections": [HTML], "/collections/{collection_id}": [HTML],
               "/collections/{collection_id}/items": [HTML, CSV]}


@router.get("/conformance", summary="Conformance classes")
@_api
def conformance(request: Request):
    return json_response({"conformsTo": CONFORMANCE})


# ---------------------------------------------------------------------------- collections

def _extent(request: Request, conn: sa.Connection, version: int, layer: Layer, who) -> list[float] | None:
    key = ("extent", version, layer.id, who.role, who.region, who.county)
    hit = _cache(request).get(key)
    if hit is None:
        sql, params = fsql.extent_sql(layer, who)
        row = conn.execute(sa.text(sql), params).one()
        hit = [round(v, 7) for v in row] if row[0] is not None else []
        _cache(request).put(key, hit)
    return hit or None


def _collection_doc(request: Request, layer: Layer, bbox: list[float] | None) -> dict:
    b = base_url(request)
    c = f"{b}/collections/{layer.id}"
    doc = {
        "id": layer.id,
        "title": layer.title,
        "description": layer.description,
        "itemType": "feature",
        "crs": [crs.uri for crs in fsql.SUPPORTED_CRS],
        "storageCrs": f"{fsql.OGC_CRS}/EPSG/0/{fsql.STORAGE_SRID}",
        "links": [
            _link(c, "self", JSON, layer.title),
            _link(f"{c}?f=html", "alternate", HTML, layer.title),
            _link(f"{c}/items", "items", GEOJSON, "features (paged)"),
            _link(f"{c}/items?f=html", "items", HTML, "features (HTML table)"),
            _link(f"{c}/items?f=csv", "items", CSV, "features (CSV: WKT, lon/lat for points)"),
            _link(f"{c}/queryables", REL_QUERYABLES, SCHEMA_JSON, "queryables"),
            _link(f"{c}/schema", REL_SCHEMA, SCHEMA_JSON, "property schema"),
            _link(f"{c}/schema", "describedby", SCHEMA_JSON, "property schema"),
            _link(f"{c}/export.geojson", "enclosure", GEOJSON, "whole layer as GeoJSON"),
            _link(f"{c}/export.fgb", "enclosure", FLATGEOBUF,
                  "whole layer as FlatGeobuf (QGIS/GDAL: open this URL; Content-Length and byte ranges)"),
            _link(f"{c}/export.gpkg", "enclosure", GPKG, "whole layer as GeoPackage"),
            # The tier colours in one click: QGIS loads the QML, web maps the MapLibre style.
            *style_links(b, layer.id),
            _link(f"{b}/tiles/{layer.id}.json", "tiles", "application/json", "vector tiles (TileJSON)"),
            _link(f"{c}/tiles", f"{ogc_tiles.REL}/tilesets-vector", JSON, "vector tilesets (OGC API - Tiles)"),
        ],
    }
    if bbox:
        doc["extent"] = {"spatial": {"bbox": [bbox], "crs": fsql.CRS84_URI}}
    return doc


@router.get("/collections", summary="Collections")
@_api
def collections(request: Request):
    who = _who(request)
    with _engine(request).connect() as conn:
        version = data_version(conn)
        _etag, headers, r304 = etag_response(request, version, who, extra=_representation(request))
        if r304:
            return r304
        docs = [_collection_doc(request, layer, _extent(request, conn, version, layer, who))
                for layer in LAYERS.values() if who.at_least(layer.id_level)]
    b = base_url(request)
    if _representation(request) == "html":
        return _html(request, "collections.html", title="图层", collections=docs, headers=headers,
                     crumbs=[{"href": f"{b}/?f=html", "title": "首页"}],
                     alternates=[_link(f"{b}/collections?f=json", "alternate", JSON, "JSON")])
    return json_response({
        "links": [_link(f"{b}/collections", "self", JSON), _link(f"{b}/collections?f=html", "alternate", HTML)],
        "collections": docs,
        "crs": [crs.uri for crs in fsql.SUPPORTED_CRS],
    }, headers=headers)


@router.get("/collections/{collection_id}", summary="One collection")
@_api
def collection(request: Request, collection_id: str):
    who = _who(request)
    layer = _layer(collection_id, who)
    with _engine(request).connect() as conn:
        version = data_version(conn)
        _etag, headers, r304 = etag_response(request, version, who, extra=_representation(request))
        if r304:
            return r304
        bbox = _extent(request, conn, version, layer, who)
    doc = _collection_doc(request, layer, bbox)
    if _representation(request) == "html":
        b = base_url(request)
        props = [{"name": p.name, "title": p.title or p.name, "type": p.type} for p in layer.visible(who.at_least)]
        return _html(request, "collection.html", title=layer.title, collection=doc, bbox=bbox, props=props,
                     headers=headers, crumbs=[{"href": f"{b}/?f=html", "title": "首页"},
                                              {"href": f"{b}/collections?f=html", "title": "图层"}],
                     alternates=[_link(f"{b}/collections/{layer.id}?f=json", "alternate", JSON, "JSON")])
    return json_response(doc, headers=headers)


def _json_schema(request: Request, layer: Layer, who, *, queryables: bool) -> dict:
    b = base_url(request)
    props: dict = {}
    geom_type = layer.geometry_type
    if queryables:
        props["geometry"] = {"$ref": f"https://geojson.org/schema/{geom_type}.json", "title": "geometry"}
    else:
        props["geometry"] = {"x-ogc-role": "primary-geometry", "format": f"geometry-{geom_type.lower()}"}
    seq = 1
    for p in layer.visible(who.at_least):
        if queryables and not p.filterable:
            continue
        d = {"type": p.type, "title": p.title or p.name}
        if not queryables:
            d["x-ogc-propertySeq"] = seq
            seq += 1
        props[p.name] = d
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{b}/collections/{layer.id}/{'queryables' if queryables else 'schema'}",
        "type": "object",
        "title": layer.title,
        "properties": props,
        "additionalProperties": not queryables,
    }


@router.get("/collections/{collection_id}/queryables", summary="Queryables (JSON Schema)")
@_api
def queryables(request: Request, collection_id: str):
    who = _who(request)
    layer = _layer(collection_id, who)
    return json_response(_json_schema(request, layer, who, queryables=True), media_type=SCHEMA_JSON)


@router.get("/collections/{collection_id}/schema", summary="Declared property schema (JSON Schema)")
@_api
def schema(request: Request, collection_id: str):
    who = _who(request)
    layer = _layer(collection_id, who)
    return json_response(_json_schema(request, layer, who, queryables=False), media_type=SCHEMA_JSON)


# ------------------------------------------------------------------- items: parameters

def _int_param(request: Request, name: str, lo: int, hi: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        v = int(raw)
    except ValueError:
        v = None
    if v is None or v < lo or (hi is not None and v > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f"≥ {lo}"
        raise _bad(f"{name} must be an integer {rng} (got {raw!r})")
    return v


def _check_params(request: Request, layer: Layer, visible, allowed: tuple[str, ...]) -> None:
    known = set(allowed) | {p.name for p in visible if p.filterable}
    for name in request.query_params.keys():
        if name in known:
            continue
        hidden = any(p.name == name for p in layer.properties)
        if hidden:
            raise _bad(f"{name!r} is not a queryable of collection '{layer.id}' for your role; "
                       f"queryables: {', '.join(p.name for p in visible if p.filterable)}")
        raise _bad(f"unknown query parameter {name!r}; allowed: {', '.join(allowed)}, "
                   f"or a queryable: {', '.join(p.name for p in visible if p.filterable)}")


def _run_id(request: Request, conn: sa.Connection, version: int, who) -> int | None:
    run = _int_param(request, "run", 1, errors.INT64_MAX)
    year = _int_param(request, "year", 1900, 2200)
    drafts = who.sees_drafts
    key = ("run", version, run, year, drafts)
    cache = _cache(request)
    hit = cache.get(key)
    if hit is not None:
        return hit[0]
    sql, params = fsql.run_sql(run, year, drafts)
    rid = conn.execute(sa.text(sql), params).scalar()
    if rid is None and (run is not None or year is not None):
        runs = conn.execute(sa.text(fsql.runs_list_sql(drafts))).all()
        listing = ", ".join(f"{r.id} ({r.year}, {r.status})" for r in runs) or "none yet"
        what = f"run={run}" if run is not None else f"year={year}"
        raise ApiError(404, "NotFound", f"no evaluation run for {what}; runs: {listing}")
    cache.put(key, (rid,))
    return rid


def _query(request: Request, conn: sa.Connection, version: int, layer: Layer, who, *,
           allowed: tuple[str, ...], sortable: bool, formats: tuple[str, ...] = ()) -> fsql.FeatureQuery:
    """Everything a request asks for, validated, as a :class:`FeatureQuery` (400 otherwise)."""
    qp = request.query_params
    visible = layer.visible(who.at_least)
    _check_params(request, layer, visible, allowed)
    f = (qp.get("f") or "").lower()
    if f not in ("", "json", "geojson", "application/geo+json", "application/json", *formats):
        raise _bad(f"f={f!r} is not offered here; use f=json (GeoJSON)"
                   + "".join(f" or f={x}" for x in formats))
    q = fsql.new_query(layer, who, _run_id(request, conn, version, who))
    try:
        if qp.get("crs"):
            q.crs = fsql.parse_crs(qp["crs"], "crs")
        if qp.get("properties") is not None:
            names = [n.strip() for n in qp["properties"].split(",") if n.strip()]
            q.props = [q.visible_prop(n, "properties") for n in names]
        for p in visible:
            if p.filterable and p.name in qp:
                raw = qp.getlist(p.name)
                values = [v for r in raw for v in (r.split(",") if p.name in ("grade", "colour") else [r])]
                fsql.add_equals(q, p, values)
        if qp.get("bbox"):
            bbox_crs = fsql.parse_crs(qp["bbox-crs"], "bbox-crs") if qp.get("bbox-crs") else fsql.CRS84
            fsql.add_bbox(q, _bbox(qp["bbox"], bbox_crs), bbox_crs)
        elif qp.get("bbox-crs"):
            fsql.parse_crs(qp["bbox-crs"], "bbox-crs")
        if "filter-lang" in qp and qp["filter-lang"].lower() not in ("cql2-text", "cql2-json"):
            raise _bad(f"filter-lang={qp['filter-lang']!r} is not supported; use cql2-text or cql2-json")
        if qp.get("filter"):
            filter_crs = fsql.parse_crs(qp["filter-crs"], "filter-crs") if qp.get("filter-crs") else fsql.CRS84
            fsql.add_cql2(q, _parse_filter(qp["filter"], qp.get("filter-lang")), filter_crs)
        if sortable and qp.get("sortby"):
            fsql.set_sort(q, _sortby(qp["sortby"]))
    except fsql.QueryError as e:
        raise _bad(str(e)) from None
    except ValueError as e:
        raise _bad(str(e)) from None
    return q


def _bbox(raw: str, crs: fsql.Crs) -> list[float]:
    parts = raw.split(",")
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        vals = []
    if len(vals) not in (4, 6) or not all(math.isfinite(v) for v in vals):
        raise _bad(f"bbox must be 4 numbers 'minx,miny,maxx,maxy' (got {raw!r})")
    if len(vals) == 6:
        vals = [vals[0], vals[1], vals[3], vals[4]]
    if vals[0] > vals[2] or vals[1] > vals[3]:
        raise _bad(f"bbox minimum exceeds maximum (got {raw!r}; order is min1,min2,max1,max2)")
    if crs.geographic:
        lat = (vals[0], vals[2]) if crs.swap else (vals[1], vals[3])
        lon = (vals[1], vals[3]) if crs.swap else (vals[0], vals[2])
        if not (-90 <= lat[0] <= 90 and -90 <= lat[1] <= 90 and -180 <= lon[0] <= 180 and -180 <= lon[1] <= 180):
            order = "lat,lon" if crs.swap else "lon,lat"
            raise _bad(f"bbox {raw!r} is outside the valid range for {crs.authid} (axis order {order})")
    else:
        _check_gk_domain(raw, vals, crs)
    return vals


def _check_gk_domain(raw: str, vals: list[float], crs: fsql.Crs) -> None:
    """A Gauss-Krüger box must lie in its zone: easting within 1000 km of the zone's false easting
    (500 000 m, plus zone × 1 000 000 for EPSG:4513–4533), northing within ±10 000 km. Outside,
    PROJ fails ("Point outside of projection domain"): a 400 that says so, not a database error."""
    zone_prefixed = 4513 <= crs.srid <= 4533
    false_easting = 500000.0 + ((crs.srid - 4513 + 25) * 1_000_000 if zone_prefixed else 0)
    n = (vals[0], vals[2]) if crs.swap else (vals[1], vals[3])
    e = (vals[1], vals[3]) if crs.swap else (vals[0], vals[2])
    if not (all(abs(x - false_easting) <= 1_000_000 for x in e) and all(abs(y) <= 10_000_000 for y in n)):
        order = "northing,easting" if crs.swap else "easting,northing"
        raise _bad(f"bbox {raw!r} lies outside the domain of {crs.authid} (axis order {order}; easting "
                   f"{false_easting - 1_000_000:.0f} … {false_easting + 1_000_000:.0f} m): give the box in that "
                   "zone's coordinates, or use bbox-crs of the zone the land lies in")


def _parse_filter(text: str, lang: str | None):
    """The filter as pygeofilter's AST (:mod:`app.api.cql2`); a 400 saying where it is wrong."""
    lang = "cql2-text" if lang is None else lang.lower()  # filter-lang= (empty) is not a language
    try:
        if lang == "cql2-text":
            return cql2.parse_text(text)
        if lang == "cql2-json":
            cql2.check_size(text)
            try:
                doc = orjson.loads(text)
            except orjson.JSONDecodeError as e:
                raise _bad(f"filter: not valid JSON for filter-lang=cql2-json ({e})") from None
            return cql2.parse_json(doc)
    except cql2.Cql2Error as e:
        raise _bad(f"filter ({lang}): {e}") from None
    raise _bad(f"filter-lang={lang!r} is not supported; use cql2-text or cql2-json")


def _sortby(raw: str) -> list[tuple[str, bool]]:
    out = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        desc = part.startswith("-")
        name = part.lstrip("+-").strip()
        if name.endswith(" DESC") or name.endswith(" ASC"):
            name, _, d = name.rpartition(" ")
            desc = d == "DESC"
        out.append((name, desc))
    return out


def _count(request: Request, conn: sa.Connection, version: int, q: fsql.FeatureQuery) -> int:
    key = ("count", version, q.cache_key())
    cache = _cache(request)
    hit = cache.get(key)
    if hit is None:
        sql, params = fsql.count_sql(q)
        hit = int(conn.execute(sa.text(sql), params).scalar_one())
        cache.put(key, hit)
    return hit


# ------------------------------------------------------------------------ streaming

def _gzip(request: Request):
    level = _settings(request).features_gzip_level
    if level > 0 and "gzip" in request.headers.get("accept-encoding", "").lower():
        return level
    return 0


def _stream(chunks, level: int):
    """Bytes chunks, gzip-compressed on the fly when ``level`` > 0 (flat memory)."""
    if not level:
        yield from chunks
        return
    z = zlib.compressobj(level, zlib.DEFLATED, 31)
    for c in chunks:
        out = z.compress(c)
        if out:
            yield out
    yield z.flush()


def _streaming(request: Request, chunks, media_type: str, headers: dict, release) -> StreamingResponse:
    """The streamed body; ``release`` returns its connection when it ends or the client leaves."""
    level = _gzip(request)
    h = dict(headers)
    if level:
        h["Content-Encoding"] = "gzip"
    h["Vary"] = "Accept, Accept-Encoding, X-API-Key, Authorization"
    return DbStreamingResponse(_stream(chunks, level), release=release, media_type=media_type, headers=h)


def _open_stream(conn: sa.Connection, sql: str, params: dict, rows: int):
    """A server-side cursor: rows are fetched ``rows`` at a time, never the whole result."""
    return conn.execution_options(stream_results=True, max_row_buffer=rows, yield_per=rows).execute(
        sa.text(sql), params)


def _common_headers(q: fsql.FeatureQuery, etag_headers: dict) -> dict:
    return {**etag_headers, "Content-Crs": f"<{q.crs.uri}>"}


# ---------------------------------------------------------------------------- items

@router.get("/collections/{collection_id}/items", summary="Features (paged by key)",
            response_class=Response, responses={200: {"content": {GEOJSON: {}}}})
@_api
def items(request: Request, collection_id: str,
          limit: str | None = Query(None, description="features per page (see components.parameters.limit)"),
          after: str | None = Query(None, description="keyset token from a `next` link"),
          bbox: str | None = Query(None, description="minx,miny,maxx,maxy in bbox-crs"),
          filter: str | None = Query(None, description="CQL2 text or JSON (filter-lang)"),
          sortby: str | None = Query(None, description="+prop,-prop"),
          properties: str | None = Query(None, description="comma-separated property names"),
          crs: str | None = Query(None, description="output CRS URI"),
          run: str | None = Query(None, description="evaluation run id (default: the current run)"),
          year: str | None = Query(None, description="evaluation year (default: the newest)")):
    """Parameters are parsed by the handler (not FastAPI) so every error is a JSON
    ``{"code", "description"}`` with an exact message; ``prop=value`` works for every queryable."""
    return _items_response(request, collection_id)


def _items_response(request: Request, collection_id: str):
    who = _who(request)
    layer = _layer(collection_id, who)
    s = _settings(request)
    limit = _int_param(request, "limit", 1, s.max_limit)
    if limit is None:
        limit = s.default_limit
    offset = _int_param(request, "offset", 0, errors.INT64_MAX)
    token = request.query_params.get("after")
    if token and offset:
        raise _bad("use either after (from a next link) or offset, not both")
    conn = _engine(request).connect()
    try:
        version = data_version(conn)
        _etag, eheaders, r304 = etag_response(request, version, who,
                                              extra=f"gz{bool(_gzip(request))}{_representation(request, csv=True)}")
        if r304:
            conn.close()
            return r304
        q = _query(request, conn, version, layer, who, allowed=ITEMS_PARAMS, sortable=True, formats=("html", "csv"))
        rep = _representation(request, csv=True)
        after = None
        if token:
            try:
                after = fsql.decode_key(q, token)
            except fsql.QueryError as e:
                raise _bad(str(e)) from None
        if rep == "json" and not offset and _cache_on(request) and fsql.cache_answers(q):
            page = _cached_page(request, conn, version, q, who, limit, after, eheaders)
            if page is not None:
                conn.close()
                return page
        matched = _count(request, conn, version, q)
        sql, params = fsql.page_sql(q, limit, after, offset)
        if rep != "json":  # one page as a table: at most max_limit rows, read at once
            rows = conn.execute(sa.text(sql), params).all()
            conn.close()
            return _items_table(request, layer, q, rows, limit, matched, rep, eheaders)
        result = _open_stream(conn, sql, params, min(s.features_stream_rows, limit + 1))
        first = result.fetchmany(min(s.features_stream_rows, limit + 1))
    except BaseException:
        conn.close()
        raise
    headers = _common_headers(q, eheaders)
    headers["OGC-NumberMatched"] = str(matched)

    def body():
        try:
            yield (b'{"type":"FeatureCollection","numberMatched":' + str(matched).encode()
                   + b',"features":[')
            n = 0
            has_next = False
            last_k = None
            batch = first
            while batch:
                if n + len(batch) > limit:
                    batch = batch[:limit - n]
                    has_next = True
                if batch:
                    text = ",".join(r[0] for r in batch)
                    yield ((b"," if n else b"") + text.encode())
                    n += len(batch)
                    last_k = batch[-1][1]
                if has_next:
                    break
                batch = result.fetchmany(s.features_stream_rows)
            links = _page_links(request, layer, has_next and last_k, limit)
            yield (b'],"numberReturned":' + str(n).encode() + b',"links":' + orjson.dumps(links)
                   + b',"timeStamp":"' + dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
                   + b'"}')
        finally:
            result.close()
            conn.close()

    return _streaming(request, body(), GEOJSON, headers, releaser(result, conn))


def _cache_on(request: Request) -> bool:
    return _settings(request).feature_cache


def _cached_page(request: Request, conn: sa.Connection, version: int, q: fsql.FeatureQuery, who,
                 limit: int, after: list | None, eheaders: dict) -> Response | None:
    """The page from ``feature_cache`` (:mod:`app.feature_cache`): one statement, one string from
    PostgreSQL, the same bytes as the streamed page; None when the cache is not current (then
    the dynamic path answers)."""
    count_key = ("count", version, q.cache_key())  # the dynamic path's key: the same number
    lru = _cache(request)
    matched = lru.get(count_key)
    sql, params = fsql.cache_page_sql(q, feature_cache.visibility(who), version, limit, after, matched is None)
    row = conn.execute(sa.text(sql), params).one()
    if not row.valid:
        return None
    if matched is None:
        matched = int(row.matched)
        lru.put(count_key, matched)
    links = _page_links(request, q.layer, row.more and row.last_k, limit)
    data = (b'{"type":"FeatureCollection","numberMatched":' + str(matched).encode() + b',"features":['
            + (row.body or "").encode() + b'],"numberReturned":' + str(row.returned).encode()
            + b',"links":' + orjson.dumps(links)
            + b',"timeStamp":"' + dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ").encode() + b'"}')
    headers = _common_headers(q, eheaders)
    headers["OGC-NumberMatched"] = str(matched)
    return _whole(request, data, GEOJSON, headers)


def _whole(request: Request, data: bytes, media_type: str, headers: dict) -> Response:
    """A body made at once, with the same encoding and headers as :func:`_streaming`."""
    level = _gzip(request)
    h = dict(headers)
    if level:
        h["Content-Encoding"] = "gzip"
    h["Vary"] = "Accept, Accept-Encoding, X-API-Key, Authorization"
    return Response(b"".join(_stream([data], level)), media_type=media_type, headers=h)


def _page_links(request: Request, layer: Layer, last_k: str | None, limit: int) -> list[dict]:
    b = base_url(request)
    path = f"{b}/collections/{layer.id}/items"
    links = [_link(path + (f"?{request.url.query}" if request.url.query else ""), "self", GEOJSON, "this page"),
             _link(f"{b}/collections/{layer.id}", "collection", JSON, layer.title)]
    if last_k:
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("after", "offset", "limit")]
        params += [("limit", str(limit)), ("after", fsql.encode_key(last_k))]
        links.append(_link(f"{path}?{urlencode(params)}", "next", GEOJSON, "next page"))
    return links


@router.get("/collections/{collection_id}/items.geojson", summary="Features as plain GeoJSON "
            "(limit=all: the whole layer, streamed)", response_class=Response)
@_api
def items_geojson(request: Request, collection_id: str):
    if (request.query_params.get("limit") or "").lower() == "all":
        return _export_geojson(request, collection_id, skip=("limit",))
    return _items_response(request, collection_id)


@router.get("/collections/{collection_id}/export.geojson", summary="Whole layer as GeoJSON (streamed)",
            response_class=Response)
@_api
def export_geojson(request: Request, collection_id: str):
    return _export_geojson(request, collection_id)


def _export_geojson(request: Request, collection_id: str, skip: tuple[str, ...] = ()):
    who = _who(request)
    layer = _layer(collection_id, who)
    s = _settings(request)
    conn = _engine(request).connect()
    try:
        version = data_version(conn)
        _etag, eheaders, r304 = etag_response(request, version, who, extra=f"gz{bool(_gzip(request))}")
        if r304:
            conn.close()
            return r304
        allowed = EXPORT_PARAMS + skip
        q = _query(request, conn, version, layer, who, allowed=allowed, sortable=False)
        sql, params = _cached_export(request, conn, version, q, who) or fsql.export_geojson_sql(q)
        result = _open_stream(conn, sql, params, s.features_stream_rows)
        first = result.fetchmany(s.features_stream_rows)
    except BaseException:
        conn.close()
        raise
    head = {"type": "FeatureCollection", "name": layer.id}
    if q.crs is not fsql.CRS84:
        head["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{q.crs.srid}"}}
    headers = _common_headers(q, eheaders)
    headers["Content-Disposition"] = f'inline; filename="{layer.id}.geojson"'

    def body():
        try:
            yield orjson.dumps(head)[:-1] + b',"features":[\n'
            n = 0
            batch = first
            while batch:
                yield ((b",\n" if n else b"") + ",\n".join(r[0] for r in batch).encode())
                n += len(batch)
                batch = result.fetchmany(s.features_stream_rows)
            yield b"\n]}\n"
        finally:
            result.close()
            conn.close()

    return _streaming(request, body(), GEOJSON, headers, releaser(result, conn))


def _cached_export(request: Request, conn: sa.Connection, version: int, q: fsql.FeatureQuery, who):
    """The export's statement on ``feature_cache`` if it is current for ``q``, else None. The
    check and the rows are read in one REPEATABLE READ snapshot (a rebuild in between cannot
    leave the stream reading rows of another version)."""
    if not (_cache_on(request) and fsql.cache_answers(q)):
        return None
    conn.rollback()  # end the implicit transaction: the next one is the snapshot
    conn.execution_options(isolation_level="REPEATABLE READ")  # reset when the pool takes it back
    vis = feature_cache.visibility(who)
    sql, params = fsql.cache_valid_sql(q, vis, version)
    if not conn.execute(sa.text(sql), params).scalar():
        return None
    return fsql.cache_export_sql(q, vis, version)


#: Query parameters that leave an export whole (the cached file answers them).
_WHOLE_LAYER_PARAMS = frozenset({"run", "year", "api_key", "f"})


def _whole_layer(request: Request) -> bool:
    """No filter, CRS or property choice: the whole layer as the caller may see it."""
    return set(request.query_params.keys()) <= _WHOLE_LAYER_PARAMS


def _export_key(request: Request, q: fsql.FeatureQuery, who: auth.Principal, fmt: str) -> str:
    """What a pre-built whole-layer file depends on besides the data version (:mod:`app.cache`):
    database, layer, format, run shown and the caller's scope class (role, region, links)."""
    db_id = _engine(request).url.render_as_string(hide_password=True)
    return f"{db_id}|{q.layer.id}|{fmt}|run={q.run_id}|{principal_scope(who)}"


def _fgb_file(request: Request, q: fsql.FeatureQuery, who: auth.Principal, version: int) -> Path:
    """The whole-layer FlatGeobuf file, built now (on its own connection) if it is not there."""
    s = _settings(request)

    def build(f):
        with _engine(request).connect() as conn:
            f.writelines(_fgb_chunks(conn, q, s, *_fgb_first(conn, q, s)))

    return cache.cached_file(s.data_dir, version, _export_key(request, q, who, "fgb"), ".fgb", build)


def _file_response(path: Path, media_type: str, headers: dict) -> FileResponse:
    """A cached export with Content-Length, byte ranges (206) and HEAD (starlette FileResponse);
    the ETag is ours (data version, URL, scope), so ``If-None-Match`` already answered 304."""
    return FileResponse(path, media_type=media_type, headers=headers, stat_result=os.stat(path))


@router.get("/collections/{collection_id}/export.fgb",
            summary="Whole layer as FlatGeobuf (a cached file with Content-Length and byte ranges; "
                    "streamed when filtered)",
            response_class=Response, responses={200: {"content": {FLATGEOBUF: {}}},
                                                206: {"content": {FLATGEOBUF: {}}}})
@router.head("/collections/{collection_id}/export.fgb", include_in_schema=False)  # GDAL /vsicurl/ asks first
@_api
def export_fgb(request: Request, collection_id: str):
    """FlatGeobuf made by PostGIS (``ST_AsFlatGeobuf``) in key-ordered chunks: the first chunk
    whole, then only the features of the others (they share the header), so memory stays flat
    whatever the layer's size. No spatial index (that would need all features first).

    The whole layer (no filter) comes from a file built once per data version (:mod:`app.cache`):
    ``HEAD``, ``Content-Length`` and ``Range`` work, so GDAL ``/vsicurl/`` and QGIS open the plain
    URL. The first GET after a data change is streamed while the file is written (no wait); a
    ``HEAD`` or ``Range`` request before the file exists builds it first. A filtered export is
    streamed (no length)."""
    who = _who(request)
    layer = _layer(collection_id, who)
    s = _settings(request)
    conn = _engine(request).connect()
    try:
        version = data_version(conn)
        _etag, eheaders, r304 = etag_response(request, version, who)
        if r304:
            conn.close()
            return r304
        q = _query(request, conn, version, layer, who, allowed=EXPORT_PARAMS, sortable=False)
        headers = _common_headers(q, eheaders)
        headers["Content-Disposition"] = f'attachment; filename="{layer.id}.fgb"'
        whole = _whole_layer(request)
        if whole:
            key = _export_key(request, q, who, "fgb")
            path = cache.cached_path(s.data_dir, version, key, ".fgb")
            if path is None and (request.method == "HEAD" or "range" in request.headers):
                conn.close()  # GDAL asks for the length or a range first: build the file now
                path = _fgb_file(request, q, who, version)
            if path is not None:
                conn.close()
                return _file_response(path, FLATGEOBUF, headers)
        row, empty = _fgb_first(conn, q, s)
    except BaseException:
        conn.close()
        raise

    def body():
        try:
            chunks = _fgb_chunks(conn, q, s, row, empty)
            # the first whole-layer GET after a data change streams and keeps a copy for the next
            yield from (cache.tee(s.data_dir, version, key, ".fgb", chunks) if whole else chunks)
        finally:
            conn.close()

    return _streaming(request, body(), FLATGEOBUF, headers, releaser(conn))


@router.get("/collections/{collection_id}/export.gpkg",
            summary="Whole layer as GeoPackage (a cached file with Content-Length and byte ranges)",
            response_class=Response, responses={200: {"content": {GPKG: {}}}, 206: {"content": {GPKG: {}}}})
@router.head("/collections/{collection_id}/export.gpkg", include_in_schema=False)
@_api
def export_gpkg(request: Request, collection_id: str):
    """The whole layer as GeoPackage (QGIS, ArcGIS): converted by GDAL (pyogrio) from the cached
    FlatGeobuf export, once per data version and scope class. A GeoPackage cannot be streamed,
    so filters are refused here: a filtered download is ``export.fgb?…``."""
    who = _who(request)
    layer = _layer(collection_id, who)
    s = _settings(request)
    if not _whole_layer(request):
        extra = sorted(set(request.query_params.keys()) - _WHOLE_LAYER_PARAMS)
        raise _bad(f"export.gpkg is the whole layer (a pre-built file); {', '.join(extra)} not accepted here: "
                   f"for a filtered download use /collections/{layer.id}/export.fgb with the same parameters")
    with _engine(request).connect() as conn:
        version = data_version(conn)
        _etag, eheaders, r304 = etag_response(request, version, who)
        if r304:
            return r304
        q = _query(request, conn, version, layer, who, allowed=EXPORT_PARAMS, sortable=False)
    fgb = _fgb_file(request, q, who, version)
    path = cache.cached_file(s.data_dir, version, _export_key(request, q, who, "gpkg"), ".gpkg",
                             lambda f: _fgb_to_gpkg(fgb, f, layer.id))
    headers = _common_headers(q, eheaders)
    headers["Content-Disposition"] = f'attachment; filename="{layer.id}.gpkg"'
    return _file_response(path, GPKG, headers)


def _fgb_to_gpkg(fgb: Path, out, layer_id: str) -> None:
    """Convert with GDAL through Arrow (field types kept); ``out`` is the open temporary file."""
    import pyogrio

    out.close()
    os.unlink(out.name)  # GDAL creates the GeoPackage itself
    meta, table = pyogrio.read_arrow(str(fgb))
    pyogrio.write_arrow(table, out.name, layer=layer_id, driver="GPKG", geometry_name="geom",
                        geometry_type=meta["geometry_type"], crs=meta["crs"], encoding="UTF-8")


def _fgb_first(conn: sa.Connection, q: fsql.FeatureQuery, s):
    """The first chunk's row, and the header-only file to send when nothing is selected."""
    sql, params = fsql.fgb_chunk_sql(q, None, s.features_fgb_chunk_rows)
    row = conn.execute(sa.text(sql), params).one()
    empty = None
    if row.fgb is None:  # nothing selected: a valid empty file (the header only)
        data = bytes(conn.execute(sa.text(fsql.fgb_empty_sql(q))).scalar_one())
        empty = data[:12 + int.from_bytes(data[8:12], "little")]
    return row, empty


def _fgb_chunks(conn: sa.Connection, q: fsql.FeatureQuery, s, row, empty):
    """The FlatGeobuf bytes: the first chunk whole, the features of the following ones."""
    types = [p.type for p in q.props]
    r = row
    first = True
    while r.fgb is not None:
        data = fgb_fix_null_indices(bytes(r.fgb), r.masks or "", types)
        hsize = int.from_bytes(data[8:12], "little")
        yield data if first else data[12 + hsize:]
        first = False
        if r.n < s.features_fgb_chunk_rows:
            break
        sql_n, params_n = fsql.fgb_chunk_sql(q, r.last_key, s.features_fgb_chunk_rows)
        r = conn.execute(sa.text(sql_n), params_n).one()
    if first and empty is not None:
        yield empty


# ----------------------------------------------------------------------------- one item

@router.get("/collections/{collection_id}/items/{feature_id:path}", summary="One feature",
            response_class=Response, responses={200: {"content": {GEOJSON: {}}}})
@_api
def item(request: Request, collection_id: str, feature_id: str,
         crs: str | None = Query(None), properties: str | None = Query(None)):
    who = _who(request)
    layer = _layer(collection_id, who)
    with _engine(request).connect() as conn:
        version = data_version(conn)
        _etag, eheaders, r304 = etag_response(request, version, who)
        if r304:
            return r304
        q = _query(request, conn, version, layer, who,
                   allowed=("crs", "properties", "run", "year", "f", "api_key"), sortable=False)
        row = None
        if _cache_on(request) and fsql.cache_item_answers(q):
            sql, params = fsql.cache_item_sql(q, feature_cache.visibility(who), version, feature_id)
            row = conn.execute(sa.text(sql), params).one()
        if row is not None and row.valid:
            text = row.f
        else:
            sql, params = fsql.item_sql(q, feature_id)
            text = conn.execute(sa.text(sql), params).scalar()
    if text is None:
        raise ApiError(404, "NotFound", f"no feature {feature_id!r} in collection '{layer.id}'"
                       + (f" within your region ({who.region})" if who.region else ""))
    b = base_url(request)
    links = [_link(f"{b}/collections/{layer.id}/items/{quote(feature_id, safe='')}", "self", GEOJSON),
             _link(f"{b}/collections/{layer.id}", "collection", JSON, layer.title)]
    body = text[:-1] + ',"links":' + orjson.dumps(links).decode() + "}"
    return Response(body.encode(), media_type=GEOJSON, headers=_common_headers(q, eheaders))


_FGB_SIZES = {"number": 8, "integer": 8, "boolean": 1}


def fgb_fix_null_indices(data: bytes, masks: str, types: list[str]) -> bytes:
    """Repair the property column indices of PostGIS-made FlatGeobuf features.

    PostGIS ≤ 3.3 numbers a feature's properties by their position among its non-NULL values,
    so every value after a NULL lands in the wrong column (GDAL then fails or mis-reads). The
    k-th written value belongs to the k-th non-NULL column of that row; ``masks`` (one string of
    '0'/'1' per feature, comma-separated, in feature order) says which those are. Values are
    walked by their known sizes (text: uint32 length + bytes; float8/bigint: 8; boolean: 1) and
    only the uint16 indices are rewritten, in place. Correct files come out unchanged.
    """
    if "1" not in masks:
        return data
    buf = bytearray(data)
    u32 = lambda p: int.from_bytes(buf[p:p + 4], "little")  # noqa: E731
    pos = 12 + u32(8)  # magic (8), header size (4) + header; no index
    for mask in masks.split(","):
        size = u32(pos)
        start = pos + 4
        pos = start + size
        if "1" not in mask:
            continue
        table = start + u32(start)
        vtable = table - int.from_bytes(buf[table:table + 4], "little", signed=True)
        vt_size = int.from_bytes(buf[vtable:vtable + 2], "little")
        if vt_size <= 6:
            continue
        field = int.from_bytes(buf[vtable + 6:vtable + 8], "little")  # field 1: properties
        if not field:
            continue
        vec = table + field + u32(table + field)
        end = vec + 4 + u32(vec)
        p = vec + 4
        for col in (i for i, c in enumerate(mask) if c == "0"):
            if p >= end:
                break
            buf[p:p + 2] = col.to_bytes(2, "little")
            p += 2
            p += 4 + u32(p) if types[col] == "string" else _FGB_SIZES[types[col]]
    return bytes(buf)
