"""Response helpers shared by every router: JSON errors, data version + ETag, base URL, media types.

Why one module: features, tiles and archives must agree on how a cache key is made (the data
version bumped by every write, the URL and who is asking), on how an error looks
(``{"code", "description"}``, OGC API style) and on how links are built behind a proxy
(``settings.public_url`` wins over the request's own host).
"""

from __future__ import annotations

import hashlib
from typing import Any

import anyio
import orjson
import sqlalchemy as sa
from fastapi import HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

GEOJSON = "application/geo+json"
JSON = "application/json"
OPENAPI_JSON = "application/vnd.oai.openapi+json;version=3.1"  # what /api serves (FastAPI writes 3.1)
FLATGEOBUF = "application/flatgeobuf"
MVT = "application/vnd.mapbox-vector-tile"


class ApiError(HTTPException):
    """An HTTP error rendered as ``{"code": ..., "description": ...}`` (see :func:`json_error`)."""

    def __init__(self, status_code: int, code: str, description: str, headers: dict | None = None):
        super().__init__(status_code=status_code, detail=description, headers=headers)
        self.code = code
        self.description = description


def json_error(status: int, code: str, description: str, headers: dict | None = None) -> Response:
    """An error body: problem details (RFC 9457: ``type``, ``title``, ``status``, ``detail``) carrying the
    OGC-style ``code``/``description`` too. ``description`` says what to do, not only what went wrong."""
    body = {"type": "about:blank", "title": code, "status": status, "detail": description,
            "code": code, "description": description}
    return Response(orjson.dumps(body), status_code=status,
                    media_type=JSON, headers=headers)


def json_response(obj: Any, *, media_type: str = JSON, headers: dict | None = None,
                  status_code: int = 200) -> Response:
    """orjson-encoded JSON (non-str keys and numpy scalars allowed)."""
    return Response(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY),
                    media_type=media_type, headers=headers, status_code=status_code)


def data_version(conn: sa.Connection) -> int:
    """The number every write bumps (``app.db.bump_data_version``); 0 before the first write.

    ETags and cached counts/extents key on it, so they are never stale and never need a TTL.
    """
    v = conn.execute(sa.text("SELECT version FROM data_version WHERE id = 1")).scalar()
    return int(v or 0)


def principal_scope(principal) -> str:
    """What a cache entry that depends on the caller keys on: role and scope (never the key)."""
    region = "*" if principal.region is None else f"={principal.region}"  # '' is not county-wide
    if getattr(principal, "county", None) is not None:  # a same-named township of another county differs
        region += f"@{principal.county}"
    return f"{principal.role}|{region}|{'links' if getattr(principal, 'publish_links', False) else ''}"


def make_etag(version: int, request: Request, principal=None, extra: str = "") -> str:
    """A strong ETag: hash of data version, full URL (path + query) and the caller's scope."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{version}\n{request.url.path}?{request.url.query}\n".encode())
    if principal is not None:
        h.update(principal_scope(principal).encode())
    h.update(extra.encode())
    return f'"{h.hexdigest()}"'


def etag_matches(request: Request, etag: str) -> bool:
    """``If-None-Match`` holds ``etag`` (or ``*``); weak validators compare equal too."""
    inm = request.headers.get("if-none-match")
    if not inm:
        return False
    tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
    return "*" in tags or etag in tags


def not_modified(etag: str, headers: dict | None = None) -> Response:
    return Response(status_code=304, headers={"ETag": etag, **(headers or {})})


def etag_response(request: Request, version: int, principal=None, *, extra: str = "",
                  cache_control: str = "private, max-age=0, must-revalidate"):
    """``(etag, headers, response_or_None)``: a 304 response when the client's copy is current.

    Usage::

        etag, headers, r304 = etag_response(request, data_version(conn), principal)
        if r304: return r304
        ... build the body, return it with ``headers``
    """
    etag = make_etag(version, request, principal, extra)
    headers = {"ETag": etag, "Cache-Control": cache_control, "Vary": "Accept, X-API-Key, Authorization"}
    if etag_matches(request, etag):
        return etag, headers, not_modified(etag, headers)
    return etag, headers, None


def base_url(request: Request) -> str:
    """The service root without trailing slash, as clients must see it in links.

    ``settings.public_url`` when set (behind a proxy), else the request's scheme and host,
    honouring ``X-Forwarded-Proto``/``X-Forwarded-Host`` set by a reverse proxy.
    """
    settings = getattr(request.app.state, "settings", None)
    public = getattr(settings, "public_url", None)
    if public:
        return public.rstrip("/")
    proto = request.headers.get("x-forwarded-proto") or request.url.scheme
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
    prefix = request.scope.get("root_path", "")
    return f"{proto}://{host}{prefix}".rstrip("/")


def wants(request: Request, *media_types: str, param: str = "f") -> str | None:
    """Content negotiation: the first of ``media_types`` the client asked for, or ``None``.

    ``?f=json|geojson|html|fgb`` wins over ``Accept``; ``*/*`` and no header mean "no preference".
    """
    f = (request.query_params.get(param) or "").lower()
    aliases = {"json": JSON, "geojson": GEOJSON, "fgb": FLATGEOBUF, "flatgeobuf": FLATGEOBUF,
               "openapi": OPENAPI_JSON, "mvt": MVT, "pbf": MVT, "html": "text/html"}
    if f:
        mt = aliases.get(f, f)
        return mt if any(mt.split(";")[0] == m.split(";")[0] for m in media_types) else None
    accept = request.headers.get("accept", "")
    for part in accept.split(","):
        mt = part.split(";q=")[0].strip()
        for m in media_types:
            base = m.split(";")[0]
            if mt == m or mt.split(";")[0] == base:
                return m
    return None


class DbStreamingResponse(StreamingResponse):
    """A streamed body that holds a pooled database connection while — and only while — it is sent.

    ``release`` (close the server-side cursor, return the connection) runs exactly once, in a
    ``finally`` around the whole response: when the stream ends, when it fails, when the client
    goes away mid-body (starlette cancels the send loop on ``http.disconnect``) and when the
    body was never started. Without it a sync generator abandoned by a disconnect is only closed
    by the garbage collector, and its connection stays ``idle in transaction`` until then. The
    cleanup is shielded from the cancellation and runs in a worker thread (it talks to the
    database); ``chunks`` is closed first so its own ``finally`` sees a consistent state.
    """

    def __init__(self, chunks, *, release, **kwargs):
        self._chunks = chunks
        self._release = release
        self._released = False
        super().__init__(chunks, **kwargs)

    def _close(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        except Exception:  # noqa: BLE001 - the connection must be released whatever the generator says
            pass
        finally:
            self._release()

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)


def releaser(*resources):
    """``release`` for :class:`DbStreamingResponse`: close each resource (cursor, connection), once,
    ignoring errors of a connection that already broke."""

    def release() -> None:
        for r in resources:
            try:
                r.close()
            except Exception:  # noqa: BLE001 - a broken connection is invalidated by the pool anyway
                pass

    return release


# Query parameters shared by every endpoint that takes a run or a year: bounded, so a value
# beyond int32/int64 is a 400 naming the parameter (not a database error).
RUN_QUERY = Query(None, ge=1, le=2 ** 63 - 1, description="evaluation run id (default: the run shown for year); "
                  "draft runs only for analyst and admin keys")
YEAR_QUERY = Query(None, ge=1900, le=2200, description="evaluation year (default: the newest)")
