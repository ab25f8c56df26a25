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
from app.api import ROUTERS
from app.auth import KeyResolver
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
                                          statement_timeout_ms=settings.statement_timeout_ms)
        app.state.keys = KeyResolver(app.state.engine, settings.anonymous_role)
        try:
            yield
        finally:
            app.state.engine.dispose()

    app = FastAPI(
        title="mujun 亩均论英雄",
        description="Industrial land and enterprise evaluation (亩均论英雄): parcels, enterprises, "
                    "dual ratings, low-yield clusters — as OGC API Features, vector tiles and archives.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings

    @app.exception_handler(sa.exc.OperationalError)
    async def _database_down(request: Request, exc: sa.exc.OperationalError):
        # A database outage is a 503 with a message a person can act on, never a stack trace.
        return JSONResponse(status_code=503, content={
            "code": "DatabaseUnavailable",
            "description": "The database is not reachable. If you run the embedded database, "
                           "start it with `mujun db start`; otherwise check DATABASE_URL.",
        })

    @app.get("/healthz", tags=["service"], summary="Service, database, PostGIS and schema status")
    def healthz(request: Request):
        engine: sa.Engine = request.app.state.engine
        try:
            with engine.connect() as conn:
                row = conn.execute(sa.text(
                    "SELECT version(), postgis_lib_version(), (SELECT version_num FROM alembic_version)"
                )).one()
        except sa.exc.SQLAlchemyError as exc:
            return JSONResponse(status_code=503, content={
                "status": "unavailable",
                "database": "down",
                "error": str(exc.__cause__ or exc).splitlines()[0],
                "hint": "start the embedded database with `mujun db start`, or check DATABASE_URL",
            })
        return {
            "status": "ok",
            "database": "up",
            "postgres": row[0].split(" on ")[0],
            "postgis": row[1],
            "schema_revision": row[2],
            "schema_head": db.head_revision(),
        }

    for router in ROUTERS:
        app.include_router(router)
    return app
