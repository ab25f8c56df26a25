"""The OpenAPI 3.1 document at ``/api``, made to say what the service really does.

:func:`complete` runs on FastAPI's generated document (after :func:`app.api.errors.document_responses`
has listed the real statuses and media types):

* every operation gets a **description** (its handler's docstring, else :data:`DESCRIPTIONS`);
* operation ids are unique (a ``GET``+``HEAD`` route otherwise repeats one), and every ``{name}`` of
  a path is a declared path parameter;
* the **API key** security schemes (``X-API-Key`` header, ``api_key`` query) are applied where they
  hold: required under ``/admin`` and ``/workflow``, optional (anonymous access is the server's
  choice, a key unlocks more) on data operations, absent on service metadata;
* error bodies are **problem details** (RFC 9457 ``type``/``title``/``status``/``detail``), which
  also carry the OGC-style ``code``/``description`` the service has always sent.

The document is checked by ``openapi-spec-validator`` in ``tests/test_openapi.py``.
"""

from __future__ import annotations

import re

#: Operations whose handler has no docstring: what they do, in one or two sentences.
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("get", "/"): "Landing page: links to the API definition, conformance, collections, tile matrix sets and "
                  "the web map. JSON by default; HTML with `f=html`; a browser's plain visit (`Accept: "
                  "text/html` first, no `f`) is sent on to the web map (303); the "
                  "OpenAPI document with `Accept: application/vnd.oai.openapi+json`.",
    ("get", "/conformance"): "The OGC conformance classes implemented in full: OGC API Features 1, 2, 3 (CQL2 "
                             "text and JSON through pygeofilter), 5 (schemas), OGC API Tiles and TMS 2.0.",
    ("get", "/collections"): "The layers the caller may open (enterprise layers need a `viewer` key), each with "
                             "its extent (CRS84), CRSs and links to items, queryables, schema, styles and tiles. "
                             "HTML with `f=html`.",
    ("get", "/collections/{collection_id}"): "One layer: title, extent of what the caller may see, supported CRSs "
                                             "and links. HTML with `f=html`.",
    ("get", "/collections/{collection_id}/queryables"): "The properties the caller's role may filter on "
                                                        "(JSON Schema), plus `geometry`.",
    ("get", "/collections/{collection_id}/schema"): "Every property the caller's role may see, with its type "
                                                    "(JSON Schema, OGC API Features Part 5).",
    ("get", "/collections/{collection_id}/items.geojson"): "The items as plain GeoJSON; `limit=all` streams the "
                                                           "whole selection.",
    ("get", "/collections/{collection_id}/export.geojson"): "The whole selection (filters apply) as one GeoJSON "
                                                            "file in traditional axis order, streamed.",
    ("get", "/collections/{collection_id}/items/{feature_id}"): "One feature by its id (宗地身份码, USCC, …) as a "
                                                                "GeoJSON Feature; 404 outside the caller's region.",
    ("get", "/tiles/{layer}/{z}/{x}/{y}.pbf"): "One Mapbox vector tile (WebMercatorQuad) of a layer: fields by the "
                                               "caller's role, rows of the caller's region, grades of the run shown. "
                                               "204 for an empty tile.",
    ("get", "/tiles/{layer}.json"): "TileJSON 3.0.0 of a layer: tile URL template, zooms, bounds of the caller's "
                                    "data, fields.",
    ("get", "/map/config"): "What the web map needs to start: runs the caller may see, grade colours, townships, "
                            "industry groups, extent, basemap, the caller's role.",
    ("get", "/stats/grades"): "Count and area (亩) per grade within a bbox, over the same layer definitions and "
                              "region rule as the tiles (the map legend).",
    ("get", "/search"): "Land by 宗地代码 / 宗地身份码 prefix, enterprises by USCC prefix or name (names only for "
                        "roles that see links).",
    ("get", "/parcels/{identity_code}"): "一地一档: a piece of land's versions, lineage, enterprises on it, ratings "
                                         "and explanations, as the caller's role may see them.",
    ("get", "/enterprises/{uscc}"): "一企一档: an enterprise's land by year, ratings, explanations and history, as "
                                    "the caller's role may see them.",
    ("get", "/clusters"): "连片低效用地: contiguous low-yield land of the chosen grades (gap and minimum area "
                          "as parameters), each with outline and figures.",
    ("get", "/styles"): "The styles served: the tier colours of each layer as QML, SLD and MapLibre JSON.",
    ("get", "/styles/{layer}.qml"): "The layer's tier colours as a QGIS style (QML).",
    ("get", "/styles/{layer}.sld"): "The layer's tier colours as an OGC SLD 1.1 style.",
    ("get", "/styles/{layer}/maplibre.json"): "The layer's tier colours as a MapLibre style over its vector tiles.",
    ("get", "/styles/{layer}"): "Style metadata of a layer: the classification and links to each encoding.",
    ("get", "/lists/{kind}.{ext}"): "A published list (公示名单) of the run shown, as a spreadsheet or CSV.",
    ("get", "/enterprises/{uscc}/checkup.{ext}"): "An enterprise's 体检表 (check-up sheet) as a document.",
    ("get", "/parcels/{identity_code}/checkup.{ext}"): "A parcel's 体检表 (check-up sheet) as a document.",
    ("get", "/compare"): "指标对比: indicators compared across townships, years and distribution.",
    ("get", "/compare.xlsx"): "指标对比 as a spreadsheet.",
    ("get", "/compare/chart.{fmt}"): "One 指标对比 chart as an image.",
    ("get", "/reports/summary.{ext}"): "The county's summary report of the run shown.",
}

#: Paths without data: no key involved.
_PUBLIC = ("/healthz", "/conformance", "/tileMatrixSets", "/docs", "/api")
#: Paths that always need a key (accounts and the county workflow).
_KEY_REQUIRED = ("/admin", "/workflow", "/auth/logout")

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "Problem details (RFC 9457) with the OGC API `code`/`description` pair: `title` = `code`, "
                   "`detail` = `description` (what went wrong and what to do).",
    "required": ["type", "title", "status", "detail", "code", "description"],
    "properties": {
        "type": {"type": "string", "description": "`about:blank`: the status says it"},
        "title": {"type": "string", "description": "short code, e.g. InvalidParameterValue"},
        "status": {"type": "integer", "description": "the HTTP status"},
        "detail": {"type": "string", "description": "what went wrong, naming the parameter"},
        "code": {"type": "string"},
        "description": {"type": "string"},
    },
}


def complete(doc: dict) -> dict:
    """Descriptions, unique operation ids, security and problem-details errors (module docstring)."""
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["apiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key",
                         "description": "an API key (`mujun keys create --role viewer|analyst|admin`)"}
    schemes["apiKeyQuery"] = {"type": "apiKey", "in": "query", "name": "api_key",
                              "description": "the same key as a query parameter (for map clients)"}
    doc["components"].setdefault("schemas", {})["Error"] = PROBLEM_SCHEMA
    seen: set[str] = set()
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch", "head", "options"):
                continue
            if not op.get("description"):
                text = DESCRIPTIONS.get((method, path)) or DESCRIPTIONS.get(("get", path) if method == "head" else ("", ""))
                if text:
                    op["description"] = text + (" `HEAD`: the headers only." if method == "head" else "")
            declared = {prm.get("name") for prm in op.get("parameters", []) if prm.get("in") == "path"}
            for name in re.findall(r"{([^}]+)}", path):  # a path parameter the handler reads itself
                if name not in declared:
                    op.setdefault("parameters", []).append(
                        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
            oid = op.get("operationId")
            if oid in seen:
                op["operationId"] = oid = f"{oid}_{method}"
            seen.add(oid)
            if path.startswith(_KEY_REQUIRED):
                op["security"] = [{"apiKey": []}, {"apiKeyQuery": []}]
            elif not path.startswith(_PUBLIC):
                op["security"] = [{}, {"apiKey": []}, {"apiKeyQuery": []}]
    return doc
