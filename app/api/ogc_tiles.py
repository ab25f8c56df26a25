"""OGC API - Tiles 1.0 (core, tileset, tilesets-list, geodata tilesets, MVT) over the vector tiles
of :mod:`app.api.tiles` — the same tiles, under the paths OGC API clients (GDAL's ``OGCAPI:``
driver, QGIS, pygeoapi-style viewers) look for:

* ``GET /tileMatrixSets``, ``/tileMatrixSets/WebMercatorQuad`` — the tiling scheme, as
  morecantile defines it (OGC Two Dimensional Tile Matrix Set 2.0 JSON);
* ``GET /collections/{id}/tiles`` — the collection's tilesets (one: WebMercatorQuad, vector);
* ``GET /collections/{id}/tiles/WebMercatorQuad`` — tileset metadata: the tile URL template,
  ``tileMatrixSetLimits`` of the data the caller may see (zooms where tiles are drawn), the layer
  and its fields;
* ``GET /collections/{id}/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}`` — one tile;
  note the order: zoom, **row (y), column (x)** — built by the one tile statement
  (:func:`app.api.tiles.get_tile`: same SQL, ETag, access rules and 204 for empty tiles).

Links from the landing page (``tiling-schemes``) and each collection (``tilesets-vector``) lead
here; ``/conformance`` lists the classes (:data:`CONFORMANCE`).
"""

from __future__ import annotations

from urllib.parse import urlencode

import morecantile
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from app.api import tiles
from app.api.common import MVT, RUN_QUERY, YEAR_QUERY, ApiError, base_url, data_version, etag_response, json_response
from app.api.layers import LAYERS, Layer
from app.auth import Principal, principal

router = APIRouter(tags=["OGC API Tiles"])

TMS_ID = "WebMercatorQuad"
TMS = morecantile.tms.get(TMS_ID)
REL = "http://www.opengis.net/def/rel/ogc/1.0"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/tms/2.0/conf/tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/tilesetmetadata",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilesetmetadata",
]


def _tms_doc() -> dict:
    """TMS 2.0 JSON as morecantile writes it, plus the TMS 1.0 keys (``type``, ``identifier``,
    ``supportedCRS``, ``tileMatrix``) that GDAL before 3.7 reads (it does not know 2.0); newer
    clients read the 2.0 keys. Same numbers in both."""
    doc = TMS.model_dump(mode="json", exclude_none=True)
    doc.update({
        "type": "TileMatrixSetType", "identifier": doc["id"], "supportedCRS": doc["crs"],
        "tileMatrix": [{"type": "TileMatrixType", "identifier": m["id"], "scaleDenominator": m["scaleDenominator"],
                        "topLeftCorner": m["pointOfOrigin"], "tileWidth": m["tileWidth"],
                        "tileHeight": m["tileHeight"], "matrixWidth": m["matrixWidth"],
                        "matrixHeight": m["matrixHeight"]} for m in doc["tileMatrices"]],
    })
    return doc


_TMS_DOC = _tms_doc()
_TYPES = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean"}


def _tms_link(b: str, rel: str = f"{REL}/tiling-scheme") -> dict:
    return {"href": f"{b}/tileMatrixSets/{TMS_ID}", "rel": rel, "type": "application/json",
            "title": "WebMercatorQuad (EPSG:3857) tile matrix set"}


def _layer(collection_id: str) -> Layer:
    layer = LAYERS.get(collection_id)
    if layer is None:
        raise ApiError(404, "NotFound", f"no collection {collection_id!r}; collections with tiles: "
                       + ", ".join(LAYERS))
    return layer


def _tms(tms_id: str) -> None:
    if tms_id != TMS_ID:
        raise ApiError(404, "NotFound", f"no tile matrix set {tms_id!r}; served: {TMS_ID}")


def _query(request: Request) -> str:
    """run/year/api_key carried into tile URLs (map clients cannot always send headers)."""
    keep = {k: request.query_params[k] for k in ("run", "year", "api_key") if request.query_params.get(k)}
    return ("?" + urlencode(keep)) if keep else ""


# --------------------------------------------------------------------------- tiling schemes

@router.get("/tileMatrixSets", summary="Tile matrix sets (tiling schemes) served",
            description="The one tiling scheme of every vector tile: WebMercatorQuad (EPSG:3857, "
                        "zooms 0–24), as defined by OGC 17-083r4 and morecantile.")
def tile_matrix_sets(request: Request):
    b = base_url(request)
    return json_response({"tileMatrixSets": [{
        "id": TMS_ID, "title": TMS.title, "uri": str(TMS.uri),
        "links": [_tms_link(b, "self")]}]})


@router.get("/tileMatrixSets/{tileMatrixSetId}", summary="One tile matrix set (OGC TMS 2.0 JSON)",
            description="The full definition (CRS, origin, cell size and matrix size of every zoom) "
                        "of a tiling scheme; only `WebMercatorQuad` is served (404 otherwise).")
def tile_matrix_set(request: Request, tileMatrixSetId: str):  # noqa: N803 - the OGC path name
    _tms(tileMatrixSetId)
    return json_response(_TMS_DOC)


# --------------------------------------------------------------------------------- tilesets

@router.get("/collections/{collectionId}/tiles", summary="Vector tilesets of a collection",
            description="The collection's tilesets (OGC API - Tiles tilesets list): one vector "
                        "tileset in WebMercatorQuad, with links to its metadata and tile template.")
def tilesets(request: Request, collectionId: str, who: Principal = Depends(principal)):  # noqa: N803
    who.require("public")
    layer = _layer(collectionId)
    b = base_url(request)
    c = f"{b}/collections/{layer.id}/tiles"
    qs = _query(request)
    return json_response({
        "links": [{"href": c, "rel": "self", "type": "application/json", "title": "tilesets"},
                  {"href": f"{b}/collections/{layer.id}", "rel": "collection", "type": "application/json"}],
        "tilesets": [{
            "title": f"{layer.title} (vector tiles, WebMercatorQuad)",
            "dataType": "vector",
            "crs": str(TMS.crs),
            "tileMatrixSetURI": str(TMS.uri),
            "links": [
                {"href": f"{c}/{TMS_ID}{qs}", "rel": "self", "type": "application/json",
                 "title": "tileset metadata"},
                _tms_link(b),
                {"href": f"{c}/{TMS_ID}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}{qs}", "rel": "item",
                 "type": MVT, "templated": True, "title": "Mapbox vector tile"},
            ],
        }],
    })


def _limits(bounds: list[float] | None, minzoom: int) -> list[dict]:
    """Rows and columns holding the data at each zoom the tiles draw (``minzoom`` … 18)."""
    if not bounds:
        return []
    out = []
    for z in range(minzoom, 19):
        ul = TMS.tile(bounds[0], bounds[3], z)
        lr = TMS.tile(bounds[2], bounds[1], z)
        out.append({"tileMatrix": str(z), "minTileRow": ul.y, "maxTileRow": lr.y,
                    "minTileCol": ul.x, "maxTileCol": lr.x})
    return out


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}", summary="Vector tileset metadata",
            description="Tile URL template, the tile rows and columns holding the data the caller may "
                        "see at each zoom (`tileMatrixSetLimits`), the bounding box and the layer with "
                        "the fields the caller's role may see.")
def tileset(request: Request, collectionId: str, tileMatrixSetId: str,  # noqa: N803
            run: int | None = RUN_QUERY, year: int | None = YEAR_QUERY, who: Principal = Depends(principal)):
    who.require("public")
    layer = _layer(collectionId)
    _tms(tileMatrixSetId)
    engine: sa.Engine = request.app.state.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        _etag, headers, r304 = etag_response(request, data_version(conn), who)
        if r304:
            return r304
        region_sql, params = who.region_clause(layer.township_sql)
        row = conn.execute(sa.text(tiles.extent_sql(layer, region_sql)), params).one()
    bounds = [row[0], row[1], row[2], row[3]] if row[0] is not None else None
    minzoom = tiles.MINZOOM.get(layer.id, 0)
    b = base_url(request)
    c = f"{b}/collections/{layer.id}/tiles/{TMS_ID}"
    qs = _query(request)
    fields = {p.name: {"type": _TYPES.get(p.type, "string"), "title": p.title or p.name}
              for p in tiles.visible_props(layer, who)}
    doc = {
        "title": f"{layer.title} (vector tiles)",
        "description": layer.description,
        "dataType": "vector",
        "crs": str(TMS.crs),
        "tileMatrixSetURI": str(TMS.uri),
        "tileMatrixSetLimits": _limits(bounds, minzoom),
        "layers": [{"id": layer.id, "title": layer.title, "dataType": "vector",
                    "geometryDimension": 0 if layer.geometry_type.endswith("Point") else 2,
                    "minTileMatrix": str(minzoom), "maxTileMatrix": str(tiles.MAX_Z),
                    "propertiesSchema": {"type": "object", "properties": fields}}],
        "links": [
            {"href": f"{c}{qs}", "rel": "self", "type": "application/json", "title": "this tileset"},
            _tms_link(b),
            {"href": f"{b}/collections/{layer.id}", "rel": "collection", "type": "application/json"},
            {"href": f"{c}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}{qs}", "rel": "item", "type": MVT,
             "templated": True, "title": "Mapbox vector tile"},
        ],
    }
    if bounds:
        doc["boundingBox"] = {"lowerLeft": bounds[:2], "upperRight": bounds[2:],
                              "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
    return json_response(doc, headers=headers)


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
            summary="One vector tile (MVT) — zoom, row (y), column (x)",
            description="The same tile as `/tiles/{layer}/{z}/{x}/{y}.pbf` (one SQL statement, ETag, "
                        "role-based fields, region-scoped rows), addressed the OGC way: "
                        "`tileMatrix` = zoom, `tileRow` = y, `tileCol` = x. An empty tile is 204.",
            response_class=Response,
            responses={200: {"content": {MVT: {}}}, 204: {"description": "empty tile"}})
def tile(request: Request, collectionId: str, tileMatrixSetId: str,  # noqa: N803
         tileMatrix: int = Path(ge=0, le=tiles.MAX_Z), tileRow: int = Path(ge=0),  # noqa: N803
         tileCol: int = Path(ge=0),  # noqa: N803
         run: int | None = RUN_QUERY, year: int | None = YEAR_QUERY, who: Principal = Depends(principal)):
    _layer(collectionId)
    _tms(tileMatrixSetId)
    return tiles.get_tile(request, collectionId, tileMatrix, tileCol, tileRow, run=run, year=year, who=who)
