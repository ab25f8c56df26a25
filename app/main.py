"""The FastAPI application: built by :func:`create_app`, dependencies injected from ``app.state``.

``mujun serve`` runs it with uvicorn. The database is resolved once at start-up (starting the
embedded cluster if that is the database) and migrated to head; after that a database outage
only turns ``/healthz`` (and data endpoints) into 503s until it is back — the pool re-connects
by itself (``pool_pre_ping``).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import db
from app.api import ROUTERS, errors
from app.api.tiles import CachedTiles
from app.accounts import CsrfGuard
from app.auth import KeyResolver, key_from_request
from app.settings import Settings, get_settings


def create_app(settings: Settings | None = None, *, database_url: str | None = None) -> FastAPI:
    """The mujun web service.

    >>> app = create_app(database_url="postgresql+psycopg://mujun@127.0.0.1:5432/mujun")  # doctest: +SKIP
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        url = database_url or db.database_url(settings)
        db.ensure_schema(url)
        app.state.engine = db.make_engine(url, pool_size=settings.pool_size,
                                          statement_timeout_ms=settings.statement_timeout_ms,
                                          pool_timeout_s=settings.pool_timeout_s, connect_timeout_s=5)
        app.state.keys = KeyResolver(app.state.engine, settings.anonymous_role,
                                     publish_links=settings.publish_links)
        # The async pool of the hot cached reads (db.async_pool): no thread hop per request.
        app.state.apool = db.make_async_pool(url, size=settings.pool_size,
                                             statement_timeout_ms=settings.statement_timeout_ms,
                                             pool_timeout_s=settings.pool_timeout_s, connect_timeout_s=5)
        await app.state.apool.open()
        try:
            yield
        finally:
            await app.state.apool.close()
            app.state.engine.dispose()

    app = FastAPI(
        title="mujun 亩均论英雄",
        description="Industrial land and enterprise evaluation (亩均论英雄): parcels, enterprises, "
                    "dual ratings, low-yield clusters — as OGC API Features, vector tiles and archives.",
        version="0.1.0",
        lifespan=lifespan,
        # /api is the one OpenAPI document; /docs renders it with the bundled Swagger UI (app/api/docs.py)
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    app.state.settings = settings

    # One error mapping for every endpoint (app/api/errors.py): 400 / 401 / 403 / 404 / 503, never a trace.
    errors.install(app)
    _openapi = app.openapi

    def openapi() -> dict:  # the document says what the endpoints really answer (errors.py)
        if app.openapi_schema is None:
            app.openapi_schema = errors.document_responses(_openapi())
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/healthz", tags=["service"], summary="Service, database, PostGIS and schema status",
             responses={503: {"description": "database down, or every pooled connection busy",
                              "content": {"application/json": {}}}})
    def healthz(request: Request):
        """``status``/``database``/``pool`` for everyone; versions, pool counts and the driver's
        error (host, port) only for an admin key. ``database: down`` means the server cannot be
        reached; ``pool: busy`` means it can, but every pooled connection is in use."""
        engine: sa.Engine = request.app.state.engine
        admin = _is_admin(request)
        pool = engine.pool
        try:
            with engine.connect() as conn:
                row = conn.execute(sa.text(
                    "SELECT version(), postgis_lib_version(), (SELECT version_num FROM alembic_version)"
                )).one()
        except sa.exc.TimeoutError:
            # Pool exhausted: is the database itself up? Ask it on a connection of its own.
            down = _direct_check(engine)
            body = {"status": "unavailable", "database": "down" if down else "up",
                    "pool": "busy", "hint": "every pooled connection is in use; retry in a few seconds"}
            if admin:
                body |= {"pool_status": pool.status(), "error": down}
            return JSONResponse(status_code=503, content=body, headers={"Retry-After": str(errors.RETRY_AFTER_S)})
        except sa.exc.SQLAlchemyError as exc:
            body = {"status": "unavailable", "database": "down", "pool": "ok",
                    "hint": "start the embedded database with `mujun db start`, or check DATABASE_URL"}
            if admin:
                body["error"] = str(exc.__cause__ or exc).splitlines()[0]
            return JSONResponse(status_code=503, content=body, headers={"Retry-After": str(errors.RETRY_AFTER_S)})
        body = {"status": "ok", "database": "up", "pool": "ok"}
        if admin:
            body |= {"postgres": row[0].split(" on ")[0], "postgis": row[1], "schema_revision": row[2],
                     "schema_head": db.head_revision(), "pool_status": pool.status()}
        return body

    for router in ROUTERS:
        app.include_router(router)
    # Signed-in sessions (app/accounts.py): every state-changing request with the session cookie
    # must carry its CSRF token.
    app.add_middleware(CsrfGuard)
    # Outermost: a pre-built public tile is answered before any other layer (app/api/tiles.py).
    app.add_middleware(CachedTiles)
    return app


def _is_admin(request: Request) -> bool:
    """Whether the caller holds an admin key; any failure (no key, database down) means no."""
    key = key_from_request(request)
    if not key:
        return False
    try:
        return request.app.state.keys.resolve(key).at_least("admin")
    except Exception:  # noqa: BLE001 - health must answer even when keys cannot be checked
        return False


def _direct_check(engine: sa.Engine) -> str | None:
    """``None`` when the database answers on a fresh, unpooled connection; else the driver's error."""
    try:
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        raw = engine.dialect.connect(*cargs, **{**cparams, "connect_timeout": 3})  # outside the pool
        try:
            raw.cursor().execute("SELECT 1")
        finally:
            raw.close()
        return None
    except Exception as exc:  # noqa: BLE001
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
