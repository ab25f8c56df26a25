"""API keys, roles and region scopes: who may see which land and which figures.

Tax, energy and other figures of individual enterprises are confidential. Every request has a
:class:`Principal`: anonymous callers get ``settings.anonymous_role`` (``public`` by default:
geometry and tiers at most, or ``none``: nothing); a key gives its role and, optionally, a
township (镇街) it is limited to. Keys are stored as SHA-256 hashes only, and are shown once,
when ``mujun keys create`` makes them.

=========  ===============================================================================
role       may see
=========  ===============================================================================
public     geometry, land codes, areas, grades and warning colours (tiers) of published runs
viewer     + enterprise identities (USCC, names) and links (roles, shares), ranks, explanations
           without figures
analyst    + confidential figures (tax, value added, energy, per-mu values, scores) and draft runs
admin      + key management, audit and health details
=========  ===============================================================================

:data:`CONFIDENTIALITY` is the one table of who sees which field on which endpoint; layers
(:mod:`app.api.layers`), archives, clusters and search read their levels from it (a test checks
that they agree). Derived values count as what they reveal: a score determines a figure whenever
its list has a single indicator (score ÷ 亩均税收 is then one constant), so scores and
explanation totals/points are figures (``analyst``) everywhere. Enterprise identities and links
are ``link`` level: ``viewer`` and above, or everyone when the county publishes them
(``MUJUN_PUBLISH_LINKS=true``).

A key with a region never sees another township's land or enterprises — in items, tiles,
archives, clusters and exports alike; :meth:`Principal.region_clause` is the one place that
filter is written.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import HTTPException, Request

from app.models import api_keys

ROLES = ("none", "public", "viewer", "analyst", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
KEY_PREFIX = "mj_"

#: Who sees what: (level, fields, endpoints, why). ``link`` = viewer, or public when the county
#: publishes links (settings.publish_links). Rendered in README.md ("Access"); the single source
#: for layers (Prop.level), archives and the tests.
CONFIDENTIALITY: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("public", ("identity_code", "parcel_code", "parent_identity_code", "kind", "township", "land_use",
                "area_m2", "area_mu", "registered_area_m2", "idle", "industry_code", "scale",
                "industry_group", "run_id", "grade", "colour", "enterprise_count", "geometry"),
     "items, tiles, exports, archives, clusters, search, stats",
     "land, its codes and areas, and the tiers of published runs are what the county publishes"),
    ("link", ("uscc", "name", "owner_uscc", "owner_name", "user_uscc", "role", "share", "method",
              "confidence", "attributed_area_m2", "attributed_area_mu", "land_area_mu", "land_class"),
     "items, tiles, exports, archives (enterprises on land, land of an enterprise), search",
     "who uses which land is personal business information: a key, unless the county publishes links"),
    ("viewer", ("list_name", "rank", "percentile", "low_yield_years", "consecutive_d_years", "explanation",
                "warnings", "history", "band_grade", "adjustments", "excluded_reason"),
     "items, tiles, exports, archives",
     "order and reasons without magnitudes reveal no figure"),
    ("analyst", ("score", "total", "points", "compared", "tax_per_mu", "indicators", "metrics",
                 "electricity_surcharge_yuan", "electricity_refund_yuan", "total_tax_wan",
                 "mean_tax_per_mu", "gain_wan", "explanation_text", "max_tax_per_mu"),
     "items, tiles, exports, archives, clusters",
     "confidential figures, and every value that determines one: in a single-indicator list "
     "score = k × 亩均税收, so a score is a figure"),
    ("analyst", ("draft_runs",), "every endpoint taking run= or year=; /map/config runs",
     "a draft is reviewed before it is published"),
)

#: field → least level that sees it (from :data:`CONFIDENTIALITY`).
FIELD_LEVELS: dict[str, str] = {f: level for level, fields, _w, _y in CONFIDENTIALITY for f in fields}


def field_level(name: str) -> str:
    """The least level that sees ``name``; unknown fields are analyst-only (closed by default)."""
    return FIELD_LEVELS.get(name, "analyst")


@dataclass(frozen=True)
class Principal:
    role: str
    region: str | None = None
    key_id: int | None = None
    name: str = "anonymous"
    #: The county publishes enterprise identities and links (settings.publish_links).
    publish_links: bool = False
    #: A signed-in user (app/accounts.py) rather than a key: its id and account role
    #: (viewer | officer | analyst | admin); ``role``/``region`` mean the same as a key's.
    user_id: int | None = None
    account_role: str | None = None

    def at_least(self, role: str) -> bool:
        """Whether this caller has ``role`` or more; ``link`` is viewer, or public when published."""
        if role == "link":
            return self.at_least("public" if self.publish_links else "viewer")
        return _RANK[self.role] >= _RANK[role]

    def sees(self, field: str) -> bool:
        """Whether this caller sees ``field`` (:data:`CONFIDENTIALITY`)."""
        return self.at_least(field_level(field))

    @property
    def sees_links(self) -> bool:
        """Enterprise identities (USCC, name) and land–enterprise links (roles, shares)."""
        return self.at_least("link")

    @property
    def sees_drafts(self) -> bool:
        """Draft (unpublished) evaluation runs: only roles that review them."""
        return self.at_least(field_level("draft_runs"))

    @property
    def sees_figures(self) -> bool:
        """Confidential enterprise figures (tax, energy, emissions, per-mu values)."""
        return self.at_least("analyst")

    @property
    def sees_names(self) -> bool:
        """Viewer-level details (ranks, explanations without figures, history)."""
        return self.at_least("viewer")

    def region_clause(self, township_expr: str, param: str = "scope_region") -> tuple[str, dict]:
        """SQL condition limiting rows to this principal's township (``TRUE`` when county-wide)."""
        if self.region is None:
            return "TRUE", {}
        return f"({township_expr}) = :{param}", {param: self.region}

    def require(self, role: str) -> None:
        if not self.at_least(role):
            raise HTTPException(
                status_code=401 if self.key_id is None and self.user_id is None else 403,
                detail=f"this needs the '{role}' role; "
                       + ("sign in at /login, or send an API key in the X-API-Key header (create one with "
                          "`mujun keys create`)" if self.key_id is None and self.user_id is None
                          else f"you have the '{self.role}' role"),
            )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def townships(conn: sa.Connection) -> list[str]:
    """The county's townships (镇街): those of its land and its enterprises."""
    return [t for (t,) in conn.execute(sa.text(
        "SELECT township FROM parcels WHERE township IS NOT NULL "
        "UNION SELECT township FROM enterprises WHERE township IS NOT NULL ORDER BY 1"))]


def check_region(conn: sa.Connection, region: str | None) -> str | None:
    """A key's region exactly as the data spells it, or ``None`` for county-wide.

    Raises ``ValueError`` (message in Chinese, for the CLI) for an empty or blank region, one with
    leading/trailing spaces, or a township the county does not have — listing the known ones: a
    mistyped region would otherwise give a key that silently sees nothing.
    """
    if region is None:
        return None
    known = townships(conn)
    listing = "、".join(known) if known else "（尚无数据：请先导入）"
    if not region.strip():
        raise ValueError(f"镇街不能为空；全县范围的密钥请不要加 --region。已知镇街：{listing}")
    if region != region.strip():
        raise ValueError(f"镇街名称 {region!r} 首尾有空格，请去掉。已知镇街：{listing}")
    if region not in known:
        raise ValueError(f"未知镇街 {region!r}。已知镇街：{listing}")
    return region


def create_key(conn: sa.Connection, name: str, role: str, region: str | None = None) -> str:
    """Store a new key's hash and return the key itself (shown once, never stored).

    Raises ``ValueError`` for an unknown role or a region that is not one of the county's
    townships (:func:`check_region`).
    """
    if role not in ROLES or role == "none":
        raise ValueError(f"角色必须是 public、viewer、analyst、admin 之一，而不是 {role!r}")
    region = check_region(conn, region)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(api_keys.insert().values(name=name, key_hash=hash_key(key), role=role, region=region))
    return key


def list_keys(conn: sa.Connection) -> list[dict]:
    """Every key (never the key itself): id, name, role, region, created, revoked."""
    return [dict(r._mapping) for r in conn.execute(
        sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.role, api_keys.c.region,
                  api_keys.c.created_at, api_keys.c.revoked_at).order_by(api_keys.c.id))]


def revoke_key(conn: sa.Connection, key_id: int) -> bool:
    """Revoke a key by id; effective on the key's next request. False if no such active key."""
    return conn.execute(api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                        .values(revoked_at=sa.func.now())).rowcount == 1


class KeyResolver:
    """Key → Principal, looked up on every request that sends a key (one unique-index lookup,
    well under a millisecond): a revoked key stops working on the very next request. There is
    no cache to go stale."""

    def __init__(self, engine: sa.Engine, anonymous_role: str = "public", *, publish_links: bool = False):
        self.engine = engine
        self.publish_links = publish_links
        self.anonymous = Principal(anonymous_role, publish_links=publish_links)

    def resolve(self, key: str | None) -> Principal:
        if not key:
            return self.anonymous
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys.c.id, api_keys.c.role, api_keys.c.region, api_keys.c.name)
                               .where(api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None))).first()
        if row is None:
            raise HTTPException(status_code=401, detail="unknown or revoked API key")
        return Principal(row.role, row.region, row.id, row.name, publish_links=self.publish_links)


def key_from_request(request: Request) -> str | None:
    """``X-API-Key`` header, ``Authorization: Bearer``, or ``?api_key=`` (for QGIS and map tiles)."""
    key = request.headers.get("x-api-key")
    if not key:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    return key or request.query_params.get("api_key")


def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller — by API key, else by the signed-in session (app/accounts.py),
    else anonymous."""
    key = key_from_request(request)
    if not key:
        from app.accounts import session_principal

        who = session_principal(request)
        if who is not None:
            return who
    return request.app.state.keys.resolve(key)
