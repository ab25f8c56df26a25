"""Database access: the URL (external or embedded), engines, migrations, the data version.

Every command that needs the database calls :func:`database_url`, which starts the embedded
cluster on demand when no ``DATABASE_URL`` is set.
"""

from __future__ import annotations

import functools
import hashlib
from contextlib import contextmanager
from functools import lru_cache

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.embedded import EmbeddedCluster, cluster_home
from app.settings import PROJECT_ROOT, Settings, get_settings


def embedded_cluster(settings: Settings | None = None) -> EmbeddedCluster:
    s = settings or get_settings()
    return EmbeddedCluster(cluster_home(s.cluster_dir), port=s.db_port, db_name=s.db_name, db_user=s.db_user,
                           bindir=s.pg_bindir)


def database_url(settings: Settings | None = None) -> str:
    """The SQLAlchemy URL to use, starting the embedded cluster if that is the database."""
    s = settings or get_settings()
    if s.database_url:
        url = s.database_url
        # Accept the plain libpq form that PaaS and docker-compose hand out.
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return url
    return embedded_cluster(s).ensure_running()


def make_engine(url: str, *, pool_size: int = 8, statement_timeout_ms: int | None = None,
                pool_timeout_s: float = 30.0, connect_timeout_s: int | None = None) -> sa.Engine:
    """A pooled engine. For the web service: a statement timeout (ms), a short pool timeout (s,
    then ``sqlalchemy.exc.TimeoutError``, answered 503 Busy) and a connect timeout (s), and an
    ``idle_in_transaction_session_timeout`` as a last guard against a connection left in a
    transaction by a bug (the server ends such a session instead of keeping it for good)."""
    connect_args: dict = {}
    options = []
    if statement_timeout_ms:
        options.append(f"-c statement_timeout={int(statement_timeout_ms)}")
        options.append(f"-c idle_in_transaction_session_timeout={max(60000, 4 * int(statement_timeout_ms))}")
    if options:
        connect_args["options"] = " ".join(options)
    if connect_timeout_s:
        connect_args["connect_timeout"] = int(connect_timeout_s)
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                            pool_timeout=pool_timeout_s, connect_args=connect_args)


def libpq_conninfo(url: str) -> str:
    """The libpq connection string of a SQLAlchemy URL (``postgresql+psycopg://…`` → ``postgresql://…``)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_async_pool(url: str, *, size: int = 8, statement_timeout_ms: int | None = None,
                    pool_timeout_s: float = 30.0, connect_timeout_s: int | None = None):
    """An asyncio connection pool (psycopg 3 ``AsyncConnectionPool``, not yet opened) for the hot
    read paths that answer from pre-built caches (cached tiles, cached items pages): no thread hop,
    no SQLAlchemy layer, no pre-ping per request (a broken connection is discarded by the pool
    when it is returned; the next request gets a fresh one).

    Connections are in autocommit (a cached read is one statement: no BEGIN/ROLLBACK round trips)
    and carry the same statement and idle-in-transaction timeouts as :func:`make_engine`.
    ``pool.connection()`` waits ``pool_timeout_s`` seconds at most, then raises
    ``psycopg_pool.PoolTimeout``. Open it with ``await pool.open()`` (done in the app's lifespan:
    :func:`async_pool` returns it), close with ``await pool.close()``.
    """
    from psycopg_pool import AsyncConnectionPool

    kwargs: dict = {"autocommit": True}
    if statement_timeout_ms:
        kwargs["options"] = (f"-c statement_timeout={int(statement_timeout_ms)} "
                             f"-c idle_in_transaction_session_timeout={max(60000, 4 * int(statement_timeout_ms))}")
    if connect_timeout_s:
        kwargs["connect_timeout"] = int(connect_timeout_s)
    return AsyncConnectionPool(libpq_conninfo(url), min_size=1, max_size=size, kwargs=kwargs,
                               timeout=pool_timeout_s, open=False, name="mujun-async")


def async_pool(app_or_request):
    """The app's opened async pool (:func:`make_async_pool`), from a FastAPI app or a request;
    None before start-up or when it could not be opened (callers then take the sync path).

    Usage::

        pool = db.async_pool(request)
        if pool is not None:
            async with pool.connection() as conn:
                row = await (await conn.execute("SELECT …", params)).fetchone()
    """
    app = getattr(app_or_request, "app", app_or_request)
    return getattr(app.state, "apool", None)


@lru_cache(maxsize=8)
def _cached_engine(url: str) -> sa.Engine:
    return make_engine(url)


def engine(settings: Settings | None = None) -> sa.Engine:
    """A pooled engine for CLI work (no statement timeout: imports and runs take long)."""
    return _cached_engine(database_url(settings))


def alembic_config(url: str) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current_revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(url: str) -> None:
    """Migrate to head if the database is behind (idempotent, cheap when current)."""
    eng = _cached_engine(url)
    with eng.connect() as conn:
        current = current_revision(conn)
    if current != head_revision():
        upgrade(url)


def bump_data_version(conn: sa.Connection) -> int:
    """Mark that data changed: ETags and cached counts of the API key on this number."""
    return conn.execute(sa.text(
        "INSERT INTO data_version (id, version, changed_at) VALUES (1, 1, now()) "
        "ON CONFLICT (id) DO UPDATE SET version = data_version.version + 1, changed_at = now() "
        "RETURNING version"
    )).scalar_one()


def audit(conn: sa.Connection, actor: str, action: str, entity: str | None = None,
          entity_id: str | None = None, details: dict | None = None) -> None:
    from app.models import audit_log

    conn.execute(audit_log.insert().values(actor=actor, action=action, entity=entity,
                                           entity_id=entity_id, details=details or {}))


class CountyBusy(RuntimeError):
    """Another import (or other exclusive job) holds the county's lock; the message is Chinese."""


@contextmanager
def county_lock(bind: sa.Connection | sa.Engine, name: str = "import", *, wait_s: float = 600.0,
                on_wait=None):
    """One job of kind ``name`` per database (= per county) at a time: a PostgreSQL advisory lock.

    The lock is a session lock on a connection of its own (taken from ``bind``'s engine), so it
    holds across the job's own transactions and is released when the job ends — or when its
    process dies (PostgreSQL drops a dead session's locks: a ``kill -9`` never leaves it stuck).
    If another holds it, ``on_wait(message)`` is told once (a Chinese message for the CLI) and
    the call waits up to ``wait_s`` seconds, then raises :class:`CountyBusy`.
    """
    import time

    engine = bind.engine if isinstance(bind, sa.Connection) else bind
    key = int.from_bytes(hashlib.blake2b(f"mujun:{name}".encode(), digest_size=8).digest(), "big", signed=True)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        if not got:
            holder = conn.execute(sa.text(
                "SELECT a.pid, a.backend_start, a.application_name FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.objsubid = 1 AND l.objid::text::bigint = (CAST(:k AS bigint) & 4294967295) "
                "AND l.classid::text::bigint = ((CAST(:k AS bigint) >> 32) & 4294967295) LIMIT 1"),
                {"k": key}).first()
            who = f"（进程 {holder.pid}，开始于 {holder.backend_start:%H:%M:%S}）" if holder else ""
            message = f"本县已有一个{_JOB_ZH.get(name, name)}在进行{who}，等待其完成后再开始（最多 {wait_s:.0f} 秒）…"
            if on_wait is not None:
                on_wait(message)
            deadline = time.monotonic() + wait_s
            while not got:
                if time.monotonic() >= deadline:
                    raise CountyBusy(f"本县已有一个{_JOB_ZH.get(name, name)}在进行{who}，等待 {wait_s:.0f} 秒后仍未结束；"
                                     "请稍后再试")
                time.sleep(0.2)
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        conn.close()


_JOB_ZH = {"import": "导入任务", "evaluate": "评价任务", "match": "匹配任务"}


def county_locked(name: str):
    """Decorator: run ``fn(engine, …)`` under :func:`county_lock` (one ``name`` job per county).

    While it waits, the Chinese message goes to ``progress(message, 0, 0)`` when the call has a
    ``progress`` callback (the CLI's progress bar), else to stderr. The wait is
    ``settings.lock_wait_s`` seconds (then :class:`CountyBusy`).
    """
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(engine, *args, **kwargs):
            import sys

            progress = kwargs.get("progress")

            def on_wait(message: str) -> None:
                if progress:
                    progress(message, 0, 0)
                else:
                    print(message, file=sys.stderr, flush=True)

            s = kwargs.get("settings") or get_settings()
            with county_lock(engine, name, wait_s=s.lock_wait_s, on_wait=on_wait):
                return fn(engine, *args, **kwargs)
        return wrapper
    return deco
