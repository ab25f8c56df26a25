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

A scope is a (county, township) pair. One database may hold a whole province (``mujun run
--province … --db``; ``county`` of land and enterprises = 6-digit 县级行政区划代码, NULL = the
database's one county), and townships of different counties share names (城关镇 …), so a
township alone does not name a place:

==============  ==========  ==================================================================
county          township    sees the rows with
==============  ==========  ==================================================================
NULL            NULL        every row (a county database: the county; a province database:
                            the province)
C               NULL        county = C
C               T           county = C and township = T
NULL            T           county IS NULL and township = T: the township of the database's
                            one county. On a province database that is nothing — such a scope
                            is refused when made (:func:`check_scope`), and one made before
                            the database held counties sees nothing rather than every county's T
==============  ==========  ==================================================================
"""

from __future__ import annotations

import hashlib
import re
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
    #: The county (6-digit 县级行政区划代码) the scope is limited to; NULL = the database's one county.
    county: str | None = None

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

    @property
    def scoped(self) -> bool:
        """Whether this caller sees only part of the database (a county or a township)."""
        return self.region is not None or self.county is not None

    def region_clause(self, township_expr: str, param: str = "scope_region",
                      county_expr: str | None = None) -> tuple[str, dict]:
        """SQL condition limiting rows to this principal's scope (``TRUE`` when unscoped); the
        rule is the module's table. ``county_expr`` defaults to ``township_expr`` with
        ``township`` read as ``county``: every table with a township has its county next to it
        (migrations 0009, 0010)."""
        if not self.scoped:
            return "TRUE", {}
        county_expr = county_expr or county_of(township_expr)
        if self.county is None:  # the database's one county: never a same-named township elsewhere
            conds, params = [f"({county_expr}) IS NULL"], {}
        else:
            conds, params = [f"({county_expr}) = :{param}_county"], {f"{param}_county": self.county}
        if self.region is not None:
            conds.append(f"({township_expr}) = :{param}")
            params[param] = self.region
        return "(" + " AND ".join(conds) + ")", params

    def in_scope(self, township: str | None, county: str | None) -> bool:
        """:meth:`region_clause` for one row already read (its township and county)."""
        if not self.scoped:
            return True
        return county == self.county and (self.region is None or township == self.region)

    def require(self, role: str) -> None:
        if not self.at_least(role):
            raise HTTPException(
                status_code=401 if self.key_id is None and self.user_id is None else 403,
                detail=f"this needs the '{role}' role; "
                       + ("sign in at /login, or send an API key in the X-API-Key header (create one with "
                          "`mujun keys create`)" if self.key_id is None and self.user_id is None
                          else f"you have the '{self.role}' role"),
            )


def county_of(township_expr: str) -> str:
    """The county column next to a township expression: ``p.township`` → ``p.county`` (every
    table with a township has its county beside it, migrations 0009 and 0010)."""
    return re.sub(r"\btownship\b", "county", township_expr)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def townships(conn: sa.Connection, county: str | None = None) -> list[str]:
    """The townships (镇街) of land and enterprises: of ``county`` when given, else all."""
    where = "township IS NOT NULL" + (" AND county = :c" if county is not None else "")
    return [t for (t,) in conn.execute(sa.text(
        f"SELECT township FROM parcels WHERE {where} UNION SELECT township FROM enterprises WHERE {where} "
        "ORDER BY 1"), {"c": county})]


def counties(conn: sa.Connection, township: str | None = None) -> list[str]:
    """The counties (县级行政区划代码) the database holds — of land and enterprises, with
    ``township`` when given; empty for a county database (every county NULL)."""
    where = "county IS NOT NULL" + (" AND township = :t" if township is not None else "")
    return [c for (c,) in conn.execute(sa.text(
        f"SELECT county FROM parcels WHERE {where} UNION SELECT county FROM enterprises WHERE {where} "
        "ORDER BY 1"), {"t": township})]


def check_region(conn: sa.Connection, region: str | None, county: str | None = None) -> str | None:
    """A township exactly as the data spells it (of ``county`` when given), or ``None``.

    Raises ``ValueError`` (message in Chinese, for the CLI) for an empty or blank region, one with
    leading/trailing spaces, or a township the county does not have — listing the known ones: a
    mistyped region would otherwise give a key that silently sees nothing.
    """
    if region is None:
        return None
    known = townships(conn, county)
    listing = "、".join(known) if known else "（尚无数据：请先导入）"
    if not region.strip():
        raise ValueError(f"镇街不能为空；全县范围的密钥请不要加 --region。已知镇街：{listing}")
    if region != region.strip():
        raise ValueError(f"镇街名称 {region!r} 首尾有空格，请去掉。已知镇街：{listing}")
    if region not in known:
        if county is not None:
            raise ValueError(f"县（区）{county} 没有镇街 {region!r}。已知镇街：{listing}")
        raise ValueError(f"未知镇街 {region!r}。已知镇街：{listing}")
    return region


def check_scope(conn: sa.Connection, region: str | None, county: str | None) -> tuple[str | None, str | None]:
    """A key's or user's scope (township, county) as the data spells it (the module's table).

    Raises ``ValueError`` (Chinese) for a county the database does not hold (listing those it
    does), a township that county does not have (:func:`check_region`), and a township without a
    county on a database that holds counties (a province database): the township's name does not
    say which county's it is — the message names the counties that have it.
    """
    if county is not None:
        known = counties(conn)
        if county not in known:
            listing = "、".join(known) if known else "（本库为单县库，不需要 --county）"
            raise ValueError(f"未知县（区）代码 {county!r}（6 位县级行政区划代码）。本库的县（区）：{listing}")
        return check_region(conn, region, county), county
    if region is not None and counties(conn):
        having = counties(conn, check_region(conn, region))  # raises first for a township nowhere
        if not having:  # only the database's one county (NULL) has it: no other county's to see
            return region, None
        raise ValueError(f"本库包含多个县（区），镇街名称不能确定是哪个县的：请用 --county 指定县（区）代码。"
                         f"有镇街 {region!r} 的县（区）：{'、'.join(having)}")
    return check_region(conn, region), None


def create_key(conn: sa.Connection, name: str, role: str, region: str | None = None,
               county: str | None = None) -> str:
    """Store a new key's hash and return the key itself (shown once, never stored).

    Raises ``ValueError`` for an unknown role or a scope the database does not have
    (:func:`check_scope`).
    """
    if role not in ROLES or role == "none":
        raise ValueError(f"角色必须是 public、viewer、analyst、admin 之一，而不是 {role!r}")
    region, county = check_scope(conn, region, county)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(api_keys.insert().values(name=name, key_hash=hash_key(key), role=role, region=region,
                                          county=county))
    return key


def list_keys(conn: sa.Connection) -> list[dict]:
    """Every key (never the key itself): id, name, role, region, county, created, revoked."""
    return [dict(r._mapping) for r in conn.execute(
        sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.role, api_keys.c.region, api_keys.c.county,
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
            row = conn.execute(sa.select(api_keys.c.id, api_keys.c.role, api_keys.c.region, api_keys.c.name,
                                         api_keys.c.county)
                               .where(api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None))).first()
        if row is None:
            raise HTTPException(status_code=401, detail="unknown or revoked API key")
        return Principal(row.role, row.region, row.id, row.name, publish_links=self.publish_links,
                         county=row.county)


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
