"""One error mapping for every endpoint: what a failure looks like to the caller.

Every error is ``{"code", "description"}`` JSON (OGC API style) with a message a person can act
on, never a traceback. :func:`error_response` is the one table from exception to status; the
application installs it as exception handlers (:func:`install`), and the features router's
``_api`` wrapper calls it too, so items, tiles, clusters, archives, search, stats and styles all
answer the same way:

=====================================================  ======  ==========================
cause                                                  status  code
=====================================================  ======  ==========================
invalid parameter (FastAPI validation, bad number,     400     InvalidParameterValue
out-of-range int32/int64, NUL byte, empty value)
database rejected a value (22xxx data exception),      400     InvalidParameterValue
CRS domain ("Point outside of projection domain")
no key / role too low                                  401/403 Unauthorized / Forbidden
statement timeout (57014 QueryCanceled)                503     Timeout (+ Retry-After)
pool exhausted (every connection busy)                 503     Busy (+ Retry-After)
database not reachable (08xxx, 57P0x, connect fails)   503     DatabaseUnavailable
anything else                                          500     ServerError (logged)
=====================================================  ======  ==========================
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from app.api.common import ApiError, json_error

log = logging.getLogger("mujun.api")

#: Seconds a client should wait before retrying after a 503 (pool busy, timeout, database down).
RETRY_AFTER_S = 2

#: The largest values of the database's integer columns (years/run ids are bound as these).
INT32_MAX = 2 ** 31 - 1
INT64_MAX = 2 ** 63 - 1

_CRS_DOMAIN = ("projection domain", "transform: ", "latitude or longitude exceeded", "tolerance condition",
               "invalid projection", "ST_Transform")


def _sqlstate(exc: sa.exc.DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", "") or "")


def db_error_response(exc: sa.exc.DBAPIError) -> Response:
    """A database error as the caller should see it (see the table in the module docstring)."""
    state = _sqlstate(exc)
    first = str(exc.orig or exc).splitlines()[0] if (exc.orig or exc) else ""
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if state == "57014":  # query_canceled: the statement timeout
        return json_error(503, "Timeout", "the query took longer than the statement timeout "
                          "(MUJUN_STATEMENT_TIMEOUT_MS); narrow it with bbox, filter, township or a smaller "
                          "limit, or try again later", retry)
    if state.startswith("22") or isinstance(exc, sa.exc.DataError):
        return json_error(400, "InvalidParameterValue", f"a parameter value is out of range or malformed: {first}")
    if state == "XX000" and any(s.lower() in first.lower() for s in _CRS_DOMAIN):
        return json_error(400, "InvalidParameterValue",
                          "a coordinate lies outside the domain of the CRS it was given in (for a Gauss-Krüger "
                          "zone, the box or geometry must lie in that zone; axis order is northing,easting): "
                          + first)
    if state.startswith("53"):  # insufficient resources (too many connections, out of memory)
        return json_error(503, "Busy", "the database is busy; try again in a few seconds", retry)
    if isinstance(exc, sa.exc.OperationalError) or state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return json_error(503, "DatabaseUnavailable", "the database is not reachable; if you run the embedded "
                          "database, start it with `mujun db start`, otherwise check DATABASE_URL", retry)
    log.error("database error %s: %s", state, first)
    return json_error(500, "ServerError", "the server failed on a database error; it has been logged")


def pool_busy_response() -> Response:
    """Every pooled connection is in use and none came free within the pool timeout."""
    return json_error(503, "Busy", "every database connection is busy; try again in a few seconds",
                      {"Retry-After": str(RETRY_AFTER_S)})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "header", "body")]
        name = ".".join(loc) or "request"
        msg = err.get("msg", "invalid")
        got = err.get("input")
        parts.append(f"{name}: {msg}" + (f" (got {got!r})" if isinstance(got, (str, int, float)) else ""))
    return "; ".join(parts) or "invalid request"


def error_response(exc: BaseException) -> Response | None:
    """The response for ``exc``, or ``None`` when it is not ours to map (a real bug: 500)."""
    if isinstance(exc, ApiError):
        return json_error(exc.status_code, exc.code, exc.description, exc.headers)
    if isinstance(exc, HTTPException):
        code = {400: "InvalidParameterValue", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                405: "MethodNotAllowed", 406: "NotAcceptable"}.get(exc.status_code, "Error")
        return json_error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))
    if isinstance(exc, RequestValidationError):
        return json_error(400, "InvalidParameterValue", _validation_message(exc))
    if isinstance(exc, sa.exc.TimeoutError):  # QueuePool limit reached
        return pool_busy_response()
    if isinstance(exc, sa.exc.DBAPIError):
        return db_error_response(exc)
    return None


def bad_text(value: str) -> str | None:
    """Why a text parameter cannot be used (PostgreSQL text holds no NUL), or ``None``."""
    return "contains a NUL character (%00)" if "\x00" in value else None


def install(app: FastAPI) -> None:
    """Register the mapping as the application's exception handlers, and the NUL-byte guard."""

    async def handler(request: Request, exc: Exception) -> Response:
        r = error_response(exc)
        if r is None:
            log.exception("unhandled error on %s", request.url.path, exc_info=exc)
            return json_error(500, "ServerError", "the server failed; the error has been logged")
        return r

    for cls in (ApiError, HTTPException, RequestValidationError, sa.exc.TimeoutError, sa.exc.DBAPIError):
        app.add_exception_handler(cls, handler)
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app.add_exception_handler(StarletteHTTPException, handler)

    app.add_middleware(NulGuard)


class NulGuard:
    """ASGI middleware: a NUL byte (``%00``) in the path or a query parameter is a 400 naming it.

    PostgreSQL text cannot hold NUL, so refusing it here keeps every endpoint from reaching the
    driver with it. Pure ASGI (not ``BaseHTTPMiddleware``): streamed bodies and client
    disconnects pass through untouched.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            from urllib.parse import parse_qsl, unquote

            problem = None
            if "\x00" in unquote(scope.get("raw_path", b"").decode("latin-1")) or "\x00" in scope.get("path", ""):
                problem = "the path contains a NUL character (%00)"
            else:
                qs = scope.get("query_string", b"").decode("latin-1")
                for name, value in parse_qsl(qs, keep_blank_values=True):
                    why = bad_text(name) or bad_text(value)
                    if why:
                        problem = f"query parameter {name!r} {why}"
                        break
            if problem:
                await json_error(400, "InvalidParameterValue", problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------- OpenAPI

#: The error body every endpoint answers with (OGC API style).
ERROR_SCHEMA = {"type": "object", "required": ["code", "description"],
                "properties": {"code": {"type": "string"}, "description": {"type": "string"}}}

_ERRORS = {
    "400": "invalid parameter (named in the description)",
    "401": "no or unknown API key where one is needed",
    "403": "the key's role or region does not allow this",
    "404": "no such collection, feature, layer, run, land or enterprise",
    "503": "statement timeout, every pooled connection busy, or database down (Retry-After)",
}

#: Media types of successful answers that are not plain JSON, by path (the rest: application/json).
_SUCCESS_TYPES = {
    "/": ["application/json", "application/vnd.oai.openapi+json;version=3.1"],
    "/collections/{collection_id}/queryables": ["application/schema+json"],
    "/collections/{collection_id}/schema": ["application/schema+json"],
    "/collections/{collection_id}/items": ["application/geo+json"],
    "/collections/{collection_id}/items.geojson": ["application/geo+json"],
    "/collections/{collection_id}/items/{feature_id}": ["application/geo+json"],
    "/collections/{collection_id}/export.geojson": ["application/geo+json"],
    "/collections/{collection_id}/export.fgb": ["application/flatgeobuf"],
    "/tiles/{layer}/{z}/{x}/{y}.pbf": ["application/vnd.mapbox-vector-tile"],
    "/clusters": ["application/json", "application/geo+json"],
    "/styles/{layer}/maplibre.json": ["application/vnd.mapbox.style+json"],
    "/styles/{layer}.qml": ["application/vnd.qgis.qml"],
    "/styles/{layer}.sld": ["application/vnd.ogc.sld+xml;version=1.1"],
}


def document_responses(doc: dict) -> dict:
    """Make the OpenAPI document say what the endpoints really answer: the success media types,
    ``304`` where an ETag applies, and the error statuses of :func:`error_response` with their
    JSON body — instead of FastAPI's ``422`` (validation errors are 400 here)."""
    from app.api.layers import LAYERS

    comps = doc.setdefault("components", {}).setdefault("schemas", {})
    comps["Error"] = ERROR_SCHEMA
    comps.pop("HTTPValidationError", None)
    comps.pop("ValidationError", None)
    err = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            for prm in op.get("parameters", []):  # layer names are a closed list: say so
                if prm.get("name") in ("collection_id", "collectionId", "layer") and "schema" in prm:
                    default = {"default": prm["schema"]["default"]} if "default" in prm["schema"] else {}
                    prm["schema"] = {"type": "string", "enum": list(LAYERS), **default}
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            ok = responses.setdefault("200", {"description": "OK"})
            types = _SUCCESS_TYPES.get(path)
            if types:
                ok["content"] = {t: {} for t in types}
            elif not ok.get("content"):
                ok["content"] = {"application/json": {}}
            if path != "/healthz":
                responses.setdefault("304", {"description": "Not Modified (If-None-Match matched the ETag)"})
            for status, what in _ERRORS.items():
                responses.setdefault(status, {"description": what, "content": err})
            if path == "/":  # a browser's plain visit goes to the web map
                responses.setdefault("303", {"description": "See Other: the web map (/map), for a browser"})
            if path == "/healthz":
                responses["503"] = {"description": "database down or pool busy", "content": {"application/json": {}}}
    return doc
