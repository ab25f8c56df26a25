"""Render once, serve many: whole-layer export files and vector tiles built once per data version.

Published data changes only when land is imported or a run is evaluated/published — each write
bumps the data version (``app.db.bump_data_version``). A whole-layer export (FlatGeobuf,
GeoPackage) for one (data version, layer, run shown, caller's scope class) is therefore built
once, on the first request, and served from disk after that: with ``Content-Length``, byte
ranges (``206``), ``HEAD`` and an ETag, which is what GDAL's ``/vsicurl/`` (and so QGIS opening
the plain URL) needs — a streamed body without a length looks like an empty file to it.

Files live in ``settings.data_dir / "cache" / "exports"``, named ``v{data version}-{key hash}``.
A file is written under a temporary name in the same directory and renamed into place
(``os.replace``, atomic on POSIX), so a reader — in this process or another worker — never
sees half a file. Invalidation is by data version: a key of the new version never matches an old
file, and the files of older versions are deleted when a newer one is built (a reader that has
one open keeps reading it: POSIX unlink).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def exports_dir(data_dir: Path) -> Path:
    """Where export files are kept (created on demand)."""
    return Path(data_dir) / "cache" / "exports"


def cached_file(data_dir: Path, version: int, key: str, suffix: str,
                build: Callable[[BinaryIO], None]) -> Path:
    """The file for ``key`` at data ``version``, built by ``build(file)`` if it is not there yet.

    ``key`` says everything the bytes depend on besides the data version (layer, format, run,
    the caller's scope class). Concurrent requests for the same file in one process wait for one
    build; other worker processes may build it too — the last rename wins, with identical bytes.
    Raises whatever ``build`` raises (the temporary file is removed).
    """
    d = exports_dir(data_dir)
    name = _name(version, key, suffix)
    path = d / name
    if path.exists():
        return path
    with _locks_guard:
        lock = _locks.setdefault(name, threading.Lock())
    with lock:
        if path.exists():
            return path
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as f:
                build(f)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            with _locks_guard:
                _locks.pop(name, None)
    _prune(d, version)
    return path


def _name(version: int, key: str, suffix: str) -> str:
    return f"v{int(version)}-{hashlib.blake2b(key.encode(), digest_size=12).hexdigest()}{suffix}"


def cached_path(data_dir: Path, version: int, key: str, suffix: str) -> Path | None:
    """The file for ``key`` at data ``version`` if it is built, else None."""
    path = exports_dir(data_dir) / _name(version, key, suffix)
    return path if path.exists() else None


def tee(data_dir: Path, version: int, key: str, suffix: str, chunks):
    """Yield ``chunks`` (a streamed response) while writing them to the cache file for ``key``:
    renamed into place only when the stream ends complete; a client leaving mid-body leaves no
    file behind. The first request after a data change is thus as fast as streaming."""
    d = exports_dir(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    name = _name(version, key, suffix)
    tmp = d / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    done = False
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                yield chunk
        os.replace(tmp, d / name)
        done = True
    finally:
        if not done:
            tmp.unlink(missing_ok=True)
    _prune(d, version)


def _prune(d: Path, version: int) -> None:
    """Delete the files of older data versions (never those of this or a newer one)."""
    for p in d.iterdir():
        if p.name.endswith(".tmp"):  # another worker's build in progress: its own to finish
            continue
        v = p.name.split("-", 1)[0]
        if v.startswith("v") and v[1:].isdigit() and int(v[1:]) < version:
            p.unlink(missing_ok=True)


def cache_bytes(data_dir: Path) -> int:
    """Bytes the export cache holds on disk."""
    d = exports_dir(data_dir)
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file()) if d.is_dir() else 0


# --------------------------------------------------------------------------- vector tiles

#: Rendered tiles live in ``tile_cache`` (migration 0005, UNLOGGED: emptied after a crash), one row
#: per (layer, caller scope class, run/year asked, z, x, y) with the data version it was rendered
#: at: served only while that version is current.
_TILE_READ = """
SELECT coalesce((SELECT version FROM data_version WHERE id = 1), 0) AS dv,
       c.data_version, c.run_id, c.mvt
FROM (SELECT 1) one
LEFT JOIN tile_cache c ON c.layer = :layer AND c.scope = :scope AND c.query = :query
     AND c.z = :z AND c.x = :x AND c.y = :y"""

#: The same read in psycopg's parameter style, for the async fast path (app.api.tiles.CachedTiles).
TILE_READ_ASYNC = re.sub(r"(?<!:):(\w+)", r"%(\1)s", _TILE_READ)

_TILE_WRITE = """
INSERT INTO tile_cache (layer, scope, query, z, x, y, data_version, run_id, mvt)
VALUES (:layer, :scope, :query, :z, :x, :y, :dv, :run_id, :mvt)
ON CONFLICT (layer, scope, query, z, x, y) DO UPDATE
SET data_version = EXCLUDED.data_version, run_id = EXCLUDED.run_id, mvt = EXCLUDED.mvt
WHERE tile_cache.data_version <= EXCLUDED.data_version"""

#: Per database: whether tile_cache can be used (False: a role without CREATE, a read-only
#: replica — tiles are then rendered on every request, as without the cache).
_tile_tables: dict[str, bool] = {}


def _db_key(conn: sa.Connection) -> str:
    return conn.engine.url.render_as_string(hide_password=True)


def ensure_tile_table(conn: sa.Connection) -> bool:
    """Whether ``tile_cache`` can be used on this database (checked once): it exists and this role
    may write it — not so on a read-only replica, where tiles are rendered per request."""
    key = _db_key(conn)
    if key not in _tile_tables:
        try:
            _tile_tables[key] = bool(conn.execute(sa.text(
                "SELECT to_regclass('tile_cache') IS NOT NULL AND NOT pg_is_in_recovery() "
                "AND has_table_privilege('tile_cache', 'INSERT')")).scalar())
        except sa.exc.DBAPIError:
            if conn.in_transaction():
                conn.rollback()
            _tile_tables[key] = False
    return _tile_tables[key]


def read_tile(conn: sa.Connection, key: dict):
    """``(dv, data_version, run_id, mvt)``: the current data version and the cached tile, if any
    (``data_version`` None = never rendered); None when the cache cannot be used here.
    ``key``: layer, scope, query, z, x, y."""
    if not ensure_tile_table(conn):
        return None
    return conn.execute(sa.text(_TILE_READ), key).one()


def write_tile(conn: sa.Connection, key: dict, dv: int, run_id: int | None, mvt: bytes | None) -> None:
    """Store a rendered tile at data version ``dv`` (never over a newer one). A database that
    refuses the write (read-only replica) turns the cache off for it."""
    try:
        conn.execute(sa.text(_TILE_WRITE), {**key, "dv": dv, "run_id": run_id, "mvt": mvt})
    except sa.exc.DBAPIError:
        if conn.in_transaction():
            conn.rollback()
        _tile_tables[_db_key(conn)] = False
