"""API keys, roles and region scopes: who may see which land and which figures.

Tax, energy and other figures of individual enterprises are confidential. Every request has a
:class:`Principal`: anonymous callers get ``settings.anonymous_role`` (``public`` by default:
geometry and tiers at most, or ``none``: nothing); a key gives its role and, optionally, a
township (镇街) it is limited to. Keys are stored as SHA-256 hashes only, and are shown once,
when ``mujun keys create`` makes them.

=========  ===============================================================================
role       may see
=========  ===============================================================================
public     geometry, codes, areas, grades and warning colours (tiers) — no names, no figures
viewer     + enterprise names, USCC, links, shares, rankings, explanations without figures
analyst    + confidential figures: tax, value added, energy, emissions, per-mu indicators
admin      + key management and audit
=========  ===============================================================================

A key with a region never sees another township's land or enterprises — in items, tiles,
archives, clusters and exports alike; :meth:`Principal.region_clause` is the one place that
filter is written.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import HTTPException, Request

from app.models import api_keys

ROLES = ("none", "public", "viewer", "analyst", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
KEY_PREFIX = "mj_"


@dataclass(frozen=True)
class Principal:
    role: str
    region: str | None = None
    key_id: int | None = None
    name: str = "anonymous"

    def at_least(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]

    @property
    def sees_figures(self) -> bool:
        """Confidential enterprise figures (tax, energy, emissions, per-mu values)."""
        return self.at_least("analyst")

    @property
    def sees_names(self) -> bool:
        return self.at_least("viewer")

    def region_clause(self, township_expr: str, param: str = "scope_region") -> tuple[str, dict]:
        """SQL condition limiting rows to this principal's township (``TRUE`` when county-wide)."""
        if self.region is None:
            return "TRUE", {}
        return f"({township_expr}) = :{param}", {param: self.region}

    def require(self, role: str) -> None:
        if not self.at_least(role):
            raise HTTPException(
                status_code=401 if self.key_id is None else 403,
                detail=f"this needs the '{role}' role; "
                       + ("send an API key in the X-API-Key header (create one with `mujun keys create`)"
                          if self.key_id is None else f"your key has the '{self.role}' role"),
            )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: sa.Connection, name: str, role: str, region: str | None = None) -> str:
    """Store a new key's hash and return the key itself (shown once, never stored)."""
    if role not in ROLES or role == "none":
        raise ValueError(f"role must be one of public, viewer, analyst, admin; got {role!r}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(api_keys.insert().values(name=name, key_hash=hash_key(key), role=role, region=region))
    return key


class KeyResolver:
    """Key → Principal, with a short in-process cache so a busy map is not a query per tile."""

    def __init__(self, engine: sa.Engine, anonymous_role: str = "public", ttl_s: float = 10.0):
        self.engine = engine
        self.anonymous = Principal(anonymous_role)
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def resolve(self, key: str | None) -> Principal:
        if not key:
            return self.anonymous
        h = hash_key(key)
        hit = self._cache.get(h)
        now = time.monotonic()
        if hit and now - hit[0] < self.ttl_s:
            principal = hit[1]
        else:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(api_keys.c.id, api_keys.c.role, api_keys.c.region, api_keys.c.name)
                                   .where(api_keys.c.key_hash == h, api_keys.c.revoked_at.is_(None))).first()
            principal = Principal(row.role, row.region, row.id, row.name) if row else None
            self._cache[h] = (now, principal)
        if principal is None:
            raise HTTPException(status_code=401, detail="unknown or revoked API key")
        return principal


def key_from_request(request: Request) -> str | None:
    """``X-API-Key`` header, ``Authorization: Bearer``, or ``?api_key=`` (for QGIS and map tiles)."""
    key = request.headers.get("x-api-key")
    if not key:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    return key or request.query_params.get("api_key")


def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller."""
    return request.app.state.keys.resolve(key_from_request(request))
