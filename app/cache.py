"""Render once, serve many: whole-layer export files built once per data version.

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
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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
    name = f"v{int(version)}-{hashlib.blake2b(key.encode(), digest_size=12).hexdigest()}{suffix}"
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
