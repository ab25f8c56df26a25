"""Every SQL statement OGC API Features runs, built in one place.

Why this shape:

* **GeoJSON is made by PostgreSQL.** Each row comes back as the finished text of one Feature
  (``ST_AsGeoJSON`` for the geometry, ``json_build_object`` for the properties, concatenated),
  so Python only copies bytes from a server-side cursor to the socket: no page or layer is ever
  held as Python objects.
* **Keyset paging.** Pages are ordered by the sort columns plus the layer's unique key; the
  ``next`` link carries the last row's values, and the next page starts with
  ``WHERE (sort, key) > (last)`` — an index range scan, as fast on page 90 as on page 1
  (``OFFSET`` would read and drop every earlier row).
* **Never user text in SQL.** Filters, bboxes, ids, keys are bound parameters with explicit
  casts (psycopg 3 binds small Python ints as ``int2``); property names resolve only through the
  layer registry (:mod:`app.api.layers`) and only for properties the caller's role may see.
* **Axis order (OGC API Features Part 2).** ``CRS84`` is lon/lat; ``EPSG:4326``/``EPSG:4490`` are
  lat/lon and the CGCS2000 Gauss-Krüger zones (EPSG:4513–4554) northing/easting, as EPSG defines
  them — for output, ``bbox``/``bbox-crs`` and CQL2 ``filter-crs`` alike. File exports (GeoJSON,
  FlatGeobuf) always use the traditional GIS order (lon/lat, easting/northing), as those formats
  require. CGCS2000 and WGS 84 differ by centimetres: EPSG:4326/CRS84 output is the stored
  CGCS2000 coordinates unchanged (as QGIS and PROJ ballpark it too).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from pygeofilter import ast, values

from app.api import cql2
from app.api.layers import Layer, Prop, current_run_sql, explicit_run_sql, run_statuses
from app.auth import county_of

STORAGE_SRID = 4490
OGC_CRS = "http://www.opengis.net/def/crs"
CRS84_URI = f"{OGC_CRS}/OGC/1.3/CRS84"
_SQL_TYPES = {"string": "text", "number": "double precision", "integer": "bigint", "boolean": "boolean"}
_NUMERIC = ("number", "integer")


# ------------------------------------------------------------------------------------- CRS

@dataclass(frozen=True)
class Crs:
    """One CRS we serve: its OGC URI, EPSG code and whether the OGC axis order is swapped."""
    uri: str
    srid: int
    swap: bool  # (lat, lon) or (northing, easting) in the OGC/EPSG axis order
    geographic: bool

    @property
    def digits(self) -> int:
        """Decimal digits in GeoJSON: ~1 cm (1e-7°) or 1 mm."""
        return 7 if self.geographic else 3

    @property
    def authid(self) -> str:
        return "OGC:CRS84" if self.uri == CRS84_URI else f"EPSG:{self.srid}"


CRS84 = Crs(CRS84_URI, STORAGE_SRID, False, True)


def _epsg(code: int) -> Crs:
    return Crs(f"{OGC_CRS}/EPSG/0/{code}", code, True, code in (4326, 4490))


#: CRS84, CGCS2000, WGS 84, then CGCS2000 3-degree Gauss-Krüger: CM 75E…135E (4534–4554),
#: zones 25…45 with the zone number in the easting (4513–4533).
SUPPORTED_CRS: tuple[Crs, ...] = (
    CRS84, _epsg(4490), _epsg(4326),
    *(_epsg(c) for c in range(4534, 4555)), *(_epsg(c) for c in range(4513, 4534)),
)
_BY_SRID = {c.srid: c for c in SUPPORTED_CRS if c is not CRS84}


def parse_crs(value: str, param: str = "crs") -> Crs:
    """An OGC CRS URI (or ``EPSG:n``, ``urn:ogc:def:crs:EPSG::n``, ``[EPSG:n]``, ``CRS84``).

    Raises ``ValueError`` with the supported list.
    """
    v = value.strip().strip("[]")
    low = v.lower().replace("https://", "http://")
    if low in (CRS84_URI.lower(), "ogc:crs84", "crs84", "urn:ogc:def:crs:ogc:1.3:crs84", "urn:ogc:def:crs:ogc::crs84"):
        return CRS84
    code = None
    for prefix in (f"{OGC_CRS}/epsg/0/".lower(), "epsg:", "urn:ogc:def:crs:epsg::", "urn:ogc:def:crs:epsg:0:"):
        if low.startswith(prefix) and low[len(prefix):].isdigit():
            code = int(low[len(prefix):])
    if code in _BY_SRID:
        return _BY_SRID[code]
    raise ValueError(
        f"{param}={value!r} is not supported; use {CRS84_URI} (lon/lat), "
        f"{OGC_CRS}/EPSG/0/4490 or …/4326 (lat/lon), or a CGCS2000 Gauss-Krüger zone "
        f"{OGC_CRS}/EPSG/0/4513 … 4554 (northing/easting)")


def geometry_out(geom_sql: str, crs: Crs, *, traditional: bool = False) -> str:
    """The geometry in ``crs`` (swapped to the OGC axis order unless ``traditional``)."""
    g = geom_sql if crs.geographic else f"ST_Transform({geom_sql}, {int(crs.srid)})"
    if crs.swap and not traditional:
        g = f"ST_FlipCoordinates({g})"
    return g


def geometry_in(geom_sql: str, crs: Crs) -> str:
    """A geometry given in ``crs`` (OGC axis order), as the stored CGCS2000 lon/lat."""
    g = f"ST_FlipCoordinates({geom_sql})" if crs.swap else geom_sql
    if crs.geographic:
        return f"ST_SetSRID({g}, {STORAGE_SRID})"
    return f"ST_Transform(ST_SetSRID({g}, {int(crs.srid)}), {STORAGE_SRID})"


# ---------------------------------------------------------------------------- the query

class QueryError(ValueError):
    """A request that cannot be turned into SQL; ``str()`` is the message for the caller."""


@dataclass
class FeatureQuery:
    """One request's rows: layer, who asks, which run, filters, order — all bound, no text."""
    layer: Layer
    visible: list[Prop]  # properties the caller's role may see
    run_id: int | None
    region_sql: str = "TRUE"
    params: dict[str, Any] = field(default_factory=dict)
    where: list[str] = field(default_factory=list)
    props: list[Prop] = field(default_factory=list)  # output properties
    crs: Crs = CRS84
    order: list[tuple[str, bool, str]] = field(default_factory=list)  # (sql, desc, json type)
    region: str | None = None  # the caller's township (a region-scoped key), else None
    #: The caller's scope on ``feature_cache c`` (Principal.region_clause on the stored township
    #: and county: the same rows as region_sql) and its parameters.
    cache_region: tuple[str, dict] = ("TRUE", {})
    bbox_sql: str | None = None  # the bbox envelope (storage CRS) when add_bbox was called
    _n: int = 0

    def bind(self, value: Any, sql_type: str | None = None) -> str:
        """A new bound parameter, with an explicit cast when the type is known."""
        name = f"q{self._n}"
        self._n += 1
        self.params[name] = value
        return f"CAST(:{name} AS {sql_type})" if sql_type else f":{name}"

    @property
    def queryables(self) -> dict[str, Prop]:
        return {p.name: p for p in self.visible if p.filterable}

    def visible_prop(self, name: str, what: str) -> Prop:
        for p in self.visible:
            if p.name == name:
                return p
        raise QueryError(f"{what}: unknown property {name!r} in collection '{self.layer.id}'; "
                         f"available: {', '.join(p.name for p in self.visible)}")

    def all_where(self) -> str:
        return " AND ".join(f"({w})" for w in [self.layer.where_sql, self.region_sql, *self.where])

    def cache_key(self) -> str:
        """What a cached count depends on (besides data version): every condition and value."""
        return orjson.dumps([self.layer.id, self.run_id, self.all_where(),
                             sorted(self.params.items())], default=str).decode()


def new_query(layer: Layer, principal, run_id: int | None) -> FeatureQuery:
    """The rows of ``layer`` a principal may see (its township only, for a region-scoped key)."""
    visible = layer.visible(principal.at_least)
    region_sql, region_params = principal.region_clause(layer.township_sql)
    q = FeatureQuery(layer=layer, visible=visible, run_id=run_id, region_sql=region_sql,
                     props=list(visible), region=principal.region,
                     cache_region=principal.region_clause("c.township", "scope_cache"))
    q.params.update(region_params)
    q.params["run_id"] = run_id
    q.order = [(layer.key_sql, False, "key")]
    return q


def add_equals(q: FeatureQuery, prop: Prop, values: list[str]) -> None:
    """``prop=value`` (or ``prop=v1,v2`` for codes): typed, one bound parameter."""
    typed = [_coerce(prop, v) for v in values]
    sql_type = _SQL_TYPES[prop.type]
    if len(typed) == 1:
        q.where.append(f"({prop.sql}) = {q.bind(typed[0], sql_type)}")
    else:
        q.where.append(f"({prop.sql}) = ANY({q.bind(typed, sql_type + '[]')})")


def _coerce(prop: Prop, raw: str):
    try:
        if prop.type == "integer":
            return int(raw)
        if prop.type == "number":
            v = float(raw)
            if not math.isfinite(v):
                raise ValueError
            return v
        if prop.type == "boolean":
            low = raw.lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError
            return low in ("true", "1")
    except ValueError:
        raise QueryError(f"{prop.name}={raw!r}: expected a{'n' if prop.type == 'integer' else ''} "
                         f"{prop.type}") from None
    return raw


def add_bbox(q: FeatureQuery, values: list[float], crs: Crs) -> None:
    """``bbox`` in ``bbox-crs`` axis order: features whose geometry intersects it."""
    if len(values) == 6:
        values = [values[0], values[1], values[3], values[4]]
    a1min, a2min, a1max, a2max = values
    xmin, ymin, xmax, ymax = (a2min, a1min, a2max, a1max) if crs.swap else (a1min, a2min, a1max, a2max)
    env = (f"ST_MakeEnvelope({q.bind(xmin, 'float8')}, {q.bind(ymin, 'float8')}, "
           f"{q.bind(xmax, 'float8')}, {q.bind(ymax, 'float8')}, "
           f"{STORAGE_SRID if crs.geographic else int(crs.srid)})")
    if not crs.geographic:
        env = f"ST_Transform({env}, {STORAGE_SRID})"
    q.bbox_sql = env
    q.where.append(f"ST_Intersects({q.layer.geom_sql}, {env})")


def set_sort(q: FeatureQuery, sortby: list[tuple[str, bool]]) -> None:
    """``sortby=+a,-b``: by visible properties, then the unique key (stable keyset order)."""
    order = []
    for name, desc in sortby:
        p = q.visible_prop(name, "sortby")
        order.append((p.sql, desc, p.type))
    q.order = order + [(q.layer.key_sql, False, "key")]


# --------------------------------------------------------------------------------- CQL2

def add_cql2(q: FeatureQuery, node, filter_crs: Crs) -> None:
    """A CQL2 filter (pygeofilter AST, from :mod:`app.api.cql2`) as a WHERE condition over the
    caller's queryables: property names resolve through the layer registry and the caller's role
    only; every literal is a bound parameter; geometry literals are in ``filter_crs`` (its axis
    order). Raises :class:`QueryError` (a 400) for anything it cannot translate."""
    q.where.append(_Cql2Sql(q, filter_crs).boolean(node))


_CMP = {"EQ": "=", "NE": "<>", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}
_SPATIAL = {"INTERSECTS": "ST_Intersects", "DISJOINT": "ST_Disjoint", "WITHIN": "ST_Within",
            "CONTAINS": "ST_Contains", "EQUALS": "ST_Equals", "TOUCHES": "ST_Touches",
            "OVERLAPS": "ST_Overlaps", "CROSSES": "ST_Crosses"}
_ARITH = {"ADD": "+", "SUB": "-", "MUL": "*", "DIV": "/"}


def _describe(node) -> str:
    if isinstance(node, ast.Attribute):
        return node.name
    if node is None:
        return "NULL"
    if isinstance(node, (str, int, float, bool, dt.date)):
        return repr(node)
    return type(node).__name__.upper()


def _finite_coords(coords) -> bool:
    stack = [coords]
    while stack:
        c = stack.pop()
        if isinstance(c, (list, tuple)):
            stack.extend(c)
        elif not (isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)):
            return False
    return True


class _Cql2Sql:
    def __init__(self, q: FeatureQuery, crs: Crs):
        self.q = q
        self.crs = crs

    def fail(self, msg: str):
        raise QueryError(f"filter: {msg}")

    # ---- scalar expressions → (sql, type)
    def scalar(self, n) -> tuple[str, str]:
        q = self.q
        if isinstance(n, ast.Attribute):
            if n.name.lower() in ("geometry", "geom"):
                return q.layer.geom_sql, "geometry"
            p = q.queryables.get(n.name)
            if p is None:
                self.fail(f"property {n.name!r} is not queryable in collection '{q.layer.id}'; "
                          f"queryables: geometry, {', '.join(q.queryables)}")
            return f"({p.sql})", p.type
        if n is None:
            return "NULL", "null"
        if isinstance(n, bool):
            return q.bind(n, "boolean"), "boolean"
        if isinstance(n, int):
            if abs(n) >= 2 ** 63:
                self.fail(f"integer {n} out of range")
            return q.bind(n, "bigint"), "integer"
        if isinstance(n, float):
            if not math.isfinite(n):
                self.fail("a number is out of range (not finite)")
            return q.bind(n, "double precision"), "number"
        if isinstance(n, str):
            return q.bind(n, "text"), "string"
        if isinstance(n, dt.datetime):
            return q.bind(n, "timestamptz"), "timestamp"
        if isinstance(n, dt.date):
            return q.bind(n, "date"), "date"
        if isinstance(n, values.Geometry):
            return self.geometry(n.geometry), "geometry"
        if isinstance(n, values.Envelope):  # CQL2-JSON {"bbox": [minx, miny, maxx, maxy]}
            return self.envelope([n.x1, n.x2, n.y1, n.y2]), "geometry"
        if isinstance(n, ast.Function):
            return self.function(n)
        if isinstance(n, ast.Arithmetic):
            (ls, lt), (rs, rt) = self.scalar(n.lhs), self.scalar(n.rhs)
            op = _ARITH[n.op.name]
            if lt not in _NUMERIC or rt not in _NUMERIC:
                self.fail(f"'{op}' needs numbers, got {_describe(n.lhs)} ({lt}) and {_describe(n.rhs)} ({rt})")
            if op == "/":
                return f"(({ls})::float8 / NULLIF({rs}, 0))", "number"
            return f"({ls} {op} {rs})", ("integer" if lt == rt == "integer" else "number")
        if isinstance(n, ast.Node):
            return self.boolean(n), "boolean"
        self.fail(f"unexpected {_describe(n)}")

    def function(self, n: ast.Function) -> tuple[str, str]:
        name, args = n.name.lower(), n.arguments
        if name == "lower":  # CASEI() (pygeofilter names it lower)
            if len(args) != 1:
                self.fail("CASEI() takes one argument")
            sql, t = self.scalar(args[0])
            if t != "string":
                self.fail(f"CASEI() takes a string, got {_describe(args[0])} ({t})")
            return f"lower({sql})", "string"
        if name in ("bbox", "envelope"):  # CQL2 text BBOX(minx, miny, maxx, maxy[, …])
            nums = list(args)
            if len(nums) == 6:
                nums = [nums[0], nums[1], nums[3], nums[4]]
            if len(nums) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in nums):
                self.fail("BBOX takes 4 numbers: minx, miny, maxx, maxy")
            return self.envelope([float(v) for v in nums]), "geometry"
        self.fail(f"unknown function {n.name.upper()}(); supported: CASEI, BBOX and the spatial functions "
                  "S_INTERSECTS, S_DISJOINT, S_WITHIN, S_CONTAINS, S_EQUALS, S_TOUCHES, S_OVERLAPS, S_CROSSES")

    def envelope(self, nums: list[float]) -> str:
        if not all(math.isfinite(v) for v in nums):
            self.fail("BBOX numbers must be finite")
        if nums[0] > nums[2] or nums[1] > nums[3]:
            self.fail("BBOX minimum must not exceed maximum")
        if self.crs.geographic:
            lo, hi = (nums[1], nums[3]) if self.crs.swap else (nums[0], nums[2])  # longitudes
            if lo < -180 or hi > 180:
                self.fail(f"BBOX longitude outside -180…180 in {self.crs.authid}")
        q = self.q
        env = (f"ST_MakeEnvelope({q.bind(nums[0], 'float8')}, {q.bind(nums[1], 'float8')}, "
               f"{q.bind(nums[2], 'float8')}, {q.bind(nums[3], 'float8')})")
        return geometry_in(env, self.crs)

    def geometry(self, geojson: dict) -> str:
        """A geometry literal, validated by shapely, bound as 2D WKB (data, never text)."""
        import shapely
        from shapely.geometry import shape

        if not _finite_coords(_coords_of(geojson)):
            self.fail("a geometry coordinate is out of range (not a finite number)")
        try:
            g = shapely.force_2d(shape(geojson))
        except Exception:  # noqa: BLE001 - shapely's errors for malformed coordinates vary
            self.fail(f"malformed {geojson.get('type', 'geometry')} coordinates")
        if g.is_empty:
            self.fail("an empty geometry matches nothing; give coordinates")
        return geometry_in(f"ST_GeomFromWKB({self.q.bind(shapely.to_wkb(g), 'bytea')})", self.crs)

    # ---- checks
    def _check(self, left, lt: str, right, rt: str, what: str) -> None:
        if lt == "null" or rt == "null":
            self.fail(f"{what} with NULL is never true; use '{_describe(left)} IS NULL'")
        if lt == "geometry" or rt == "geometry":
            self.fail(f"{what} on geometries; use S_INTERSECTS(geometry, …) or another spatial function")
        if not (lt == rt or (lt in _NUMERIC and rt in _NUMERIC) or {lt, rt} <= {"date", "timestamp"}):
            self.fail(f"type mismatch: {_describe(left)} ({lt}) {what} {_describe(right)} ({rt})")

    # ---- predicates → SQL boolean
    def boolean(self, n) -> str:
        if isinstance(n, (ast.And, ast.Or)):
            joiner = " AND " if isinstance(n, ast.And) else " OR "
            return "(" + joiner.join(self.boolean(i) for i in cql2.flatten(n, type(n))) + ")"
        if isinstance(n, ast.Not):
            return f"(NOT {self.boolean(n.sub_node)})"
        if isinstance(n, ast.Comparison):
            op = _CMP[n.op.name]
            (ls, lt), (rs, rt) = self.scalar(n.lhs), self.scalar(n.rhs)
            self._check(n.lhs, lt, n.rhs, rt, op)
            return f"({ls} {op} {rs})"
        if isinstance(n, ast.Like):
            if not isinstance(n.pattern, str):
                self.fail("LIKE takes a pattern string, e.g. parcel_code LIKE '3301%'")
            ls, lt = self.scalar(n.lhs)
            if lt != "string":
                self.fail(f"LIKE needs a string, got {_describe(n.lhs)} ({lt})")
            return f"({ls} {'NOT ' if n.not_ else ''}LIKE {self.q.bind(n.pattern, 'text')})"
        if isinstance(n, ast.Between):
            (es, et), (ls, lt), (hs, ht) = self.scalar(n.lhs), self.scalar(n.low), self.scalar(n.high)
            if not (et in _NUMERIC and lt in _NUMERIC and ht in _NUMERIC):
                self.fail(f"BETWEEN needs numbers, got {_describe(n.lhs)} ({et})")
            return f"({es} {'NOT ' if n.not_ else ''}BETWEEN {ls} AND {hs})"
        if isinstance(n, ast.In):
            es, et = self.scalar(n.lhs)
            if not isinstance(n.sub_nodes, (list, tuple)):
                self.fail("IN takes a list of values, e.g. grade IN ('A', 'B')")
            items = []
            for v in n.sub_nodes:
                vs, vt = self.scalar(v)
                self._check(n.lhs, et, v, vt, "IN")
                items.append(vs)
            if not items:
                self.fail("IN needs at least one value")
            return f"({es} {'NOT ' if n.not_ else ''}IN ({', '.join(items)}))"
        if isinstance(n, ast.IsNull):
            es, _ = self.scalar(n.lhs)
            return f"({es} IS {'NOT ' if n.not_ else ''}NULL)"
        if isinstance(n, ast.SpatialComparisonPredicate):
            (ls, lt), (rs, rt) = self.scalar(n.lhs), self.scalar(n.rhs)
            if lt != "geometry" or rt != "geometry":
                self.fail(f"S_{n.op.name} takes two geometries (the property 'geometry' and a WKT/BBOX "
                          f"literal), got {_describe(n.lhs)} and {_describe(n.rhs)}")
            return f"{_SPATIAL[n.op.name]}({ls}, {rs})"
        if isinstance(n, ast.Include):
            return "FALSE" if n.not_ else "TRUE"
        if isinstance(n, bool):
            return "TRUE" if n else "FALSE"
        if isinstance(n, (ast.TemporalPredicate, ast.ArrayPredicate, ast.Relate, ast.SpatialDistancePredicate,
                          ast.BBox, ast.Exists)):
            self.fail(f"{type(n).__name__} is not supported here; see /conformance for the CQL2 classes served")
        if isinstance(n, (ast.Attribute, ast.Function, ast.Arithmetic)):
            s, t = self.scalar(n)
            if t != "boolean":
                self.fail(f"{_describe(n)} ({t}) is not a condition; compare it, e.g. {_describe(n)} = …")
            return s
        self.fail(f"{_describe(n)} is not a condition")


def _coords_of(geojson: dict):
    if geojson.get("type") == "GeometryCollection":
        return [_coords_of(g) for g in geojson.get("geometries") or []]
    return geojson.get("coordinates")


# -------------------------------------------------------------------------------- keyset

def encode_key(k_text: str) -> str:
    """The ``after`` token: the last row's order values (JSON), base64url without padding."""
    return base64.urlsafe_b64encode(k_text.encode()).decode().rstrip("=")


def decode_key(q: FeatureQuery, token: str) -> list:
    """Validate an ``after`` token against the current order (sortby) and column types."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except Exception:
        raise QueryError("after: not a token from a 'next' link (start again from the first page)") from None
    if not isinstance(values, list) or len(values) != len(q.order):
        raise QueryError("after: this token belongs to another sortby; follow the 'next' links as given")
    for v, (_sql, _desc, t) in zip(values, q.order):
        ok = (v is None and t != "key") or (
            (t in ("string", "key") and isinstance(v, str))
            or (t in _NUMERIC and isinstance(v, (int, float)) and not isinstance(v, bool))
            or (t == "boolean" and isinstance(v, bool)))
        if not ok:
            raise QueryError("after: malformed token (start again from the first page)")
    return values


def _keyset_where(q: FeatureQuery, values: list) -> str:
    """Rows strictly after ``values`` in ``q.order`` (NULL sorts last ascending, first descending)."""
    ors = []
    for i, (sql, desc, t) in enumerate(q.order):
        sql_type = "text" if t == "key" else _SQL_TYPES[t]
        parts = []
        for (s2, _d2, t2), v2 in zip(q.order[:i], values[:i]):
            parts.append(f"({s2}) IS NULL" if v2 is None else
                         f"({s2}) = {q.bind(v2, 'text' if t2 == 'key' else _SQL_TYPES[t2])}")
        v = values[i]
        if t == "key":
            parts.append(f"{sql} > {q.bind(v, 'text')}")
        elif not desc:
            if v is None:
                continue
            parts.append(f"(({sql}) > {q.bind(v, sql_type)} OR ({sql}) IS NULL)")
        else:
            parts.append(f"({sql}) IS NOT NULL" if v is None else f"({sql}) < {q.bind(v, sql_type)}")
        ors.append("(" + " AND ".join(parts) + ")")
    return "(" + " OR ".join(ors) + ")" if ors else "FALSE"


def _order_by(q: FeatureQuery) -> str:
    return ", ".join(f"{sql} DESC NULLS FIRST" if desc else f"{sql} ASC NULLS LAST"
                     for sql, desc, _t in q.order)


# ----------------------------------------------------------------------------- statements

def _json_number(sql: str) -> str:
    """A float8 as JSON text with a decimal point (``12.0``), ``null`` for NULL/NaN/infinite.

    Plain float8 arithmetic and output: going through ``numeric`` (``x::numeric + 0.0``) cost
    about a third of the database time of a 1000-feature page.
    """
    v = f"(({sql})::float8)"
    return (f"CASE WHEN {v} IS NULL OR {v} = 'NaN'::float8 OR abs({v}) = 'Infinity'::float8 THEN 'null' "
            f"WHEN {v} = trunc({v}) AND abs({v}) < 1e15 THEN trunc({v})::bigint::text || '.0' "
            f"ELSE {v}::text END")


def _feature_json(q: FeatureQuery, *, traditional: bool = False) -> str:
    """SQL for one Feature's GeoJSON text, concatenated (compact, no re-parsing of the geometry).

    ``number`` properties keep a decimal point (``12.0``, not ``12``), so clients that guess
    field types from values (GDAL's GeoJSON driver, QGIS < 3.30) see reals, not integers.
    """
    parts = []
    for i, p in enumerate(q.props):
        key = orjson.dumps(p.name).decode().replace("'", "''")
        value = _json_number(p.sql) if p.type == "number" else f"coalesce(to_json(({p.sql}))::text, 'null')"
        parts.append(f"'{',' if i else ''}{key}:' || {value}")
    props = "'{' || " + " || ".join(parts) + " || '}'" if parts else "'{}'"
    geom = geometry_out(q.layer.geom_sql, q.crs, traditional=traditional)
    return ("""'{"type":"Feature","id":' || to_json(""" + q.layer.id_sql + """)::text"""
            """ || ',"geometry":' || coalesce(ST_AsGeoJSON(""" + geom + f", {q.crs.digits}, 0), 'null')"
            """ || ',"properties":' || """ + props + " || '}'")


def page_sql(q: FeatureQuery, limit: int | None, after: list | None = None,
             offset: int | None = None) -> tuple[str, dict]:
    """One page (``limit`` + 1 rows, to know whether there is a next one), or the whole
    selection when ``limit`` is None: columns ``f`` (Feature text) and ``k`` (order values)."""
    where = q.all_where()
    if after is not None:
        where += f" AND {_keyset_where(q, after)}"
    order_vals = ", ".join(sql for sql, _d, _t in q.order)
    sql = (f"SELECT {_feature_json(q)} AS f, json_build_array({order_vals})::text AS k\n"
           f"FROM {q.layer.from_sql}\nWHERE {where}\nORDER BY {_order_by(q)}")
    if limit is not None:
        sql += f"\nLIMIT {q.bind(limit + 1, 'integer')}"
    if offset:
        sql += f" OFFSET {q.bind(offset, 'integer')}"
    return sql, q.params


def export_geojson_sql(q: FeatureQuery) -> tuple[str, dict]:
    """Every selected row's Feature text in traditional axis order, by key (for files)."""
    sql = (f"SELECT {_feature_json(q, traditional=True)} AS f\nFROM {q.layer.from_sql}\n"
           f"WHERE {q.all_where()}\nORDER BY {q.layer.key_sql}")
    return sql, q.params


def item_sql(q: FeatureQuery, feature_id: str) -> tuple[str, dict]:
    sql = (f"SELECT {_feature_json(q)} AS f\nFROM {q.layer.from_sql}\n"
           f"WHERE {q.all_where()} AND ({q.layer.id_sql}) = {q.bind(feature_id, 'text')}\nLIMIT 1")
    return sql, q.params


def count_sql(q: FeatureQuery) -> tuple[str, dict]:
    """``numberMatched``: cached by the caller per (query, data version) — never one per page."""
    return f"SELECT count(*) FROM {q.layer.from_sql} WHERE {q.all_where()}", q.params


def fgb_chunk_sql(q: FeatureQuery, after: str | None, chunk: int) -> tuple[str, dict]:
    """The next ``chunk`` rows by key as one FlatGeobuf (PostGIS ``ST_AsFlatGeobuf``, no index),
    with the rows' NULL masks in the same order, the last key and the row count.

    Chunks share one header, so the stream is the first chunk followed by the features of the
    others (see ``features.export_fgb``). Columns are cast to text/float8/bigint/boolean so
    their encoded sizes are known; the masks let the caller repair PostGIS ≤ 3.3's property
    indices after a NULL value (its encoder numbers only the non-NULL values).
    """
    cols = ", ".join(f'CAST(({p.sql}) AS {_SQL_TYPES[p.type]}) AS "{p.name}"' for p in q.props)
    names = ", ".join(f'"{p.name}"' for p in q.props)
    mask = " || ".join(f"""(CASE WHEN "{p.name}" IS NULL THEN '1' ELSE '0' END)""" for p in q.props) or "''"
    geom = geometry_out(q.layer.geom_sql, q.crs, traditional=True)
    if q.crs.uri != CRS84_URI and q.crs.geographic:
        geom = f"ST_SetSRID({geom}, {int(q.crs.srid)})"
    where = q.all_where()
    params = dict(q.params)
    if after is not None:
        where += f" AND {q.layer.key_sql} > CAST(:_after AS text)"
        params["_after"] = after
    params["_chunk"] = chunk
    sql = (f"WITH q AS MATERIALIZED (SELECT {geom} AS geom{', ' + cols if cols else ''}, "
           f"{q.layer.key_sql} AS _k FROM {q.layer.from_sql} WHERE {where} "
           f"ORDER BY {q.layer.key_sql} LIMIT CAST(:_chunk AS integer))\n"
           f"SELECT (SELECT ST_AsFlatGeobuf(x, false, 'geom') FROM (SELECT geom{', ' + names if names else ''} "
           f"FROM q ORDER BY _k) x) AS fgb,\n"
           f"       (SELECT string_agg({mask}, ',' ORDER BY _k) FROM q) AS masks,\n"
           f"       (SELECT _k FROM q ORDER BY _k DESC LIMIT 1) AS last_key,\n"
           f"       (SELECT count(*) FROM q) AS n")
    return sql, params


def fgb_empty_sql(q: FeatureQuery) -> str:
    """A FlatGeobuf with the same columns and one empty geometry: its header makes an empty file."""
    gtype = q.layer.geometry_type.upper()
    srid = STORAGE_SRID if q.crs.geographic and q.crs.uri == CRS84_URI else q.crs.srid
    cols = "".join(f', NULL::{_SQL_TYPES[p.type]} AS "{p.name}"' for p in q.props)
    return (f"SELECT ST_AsFlatGeobuf(x, false, 'geom') FROM (SELECT ST_SetSRID('{gtype} EMPTY'::geometry, "
            f"{int(srid)}) AS geom{cols}) x")


def extent_sql(layer: Layer, principal) -> tuple[str, dict]:
    """The layer's bbox (CRS84 = stored lon/lat) for what this principal may see."""
    region_sql, params = principal.region_clause(layer.township_sql)
    params = {**params, "run_id": None}
    return (f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent({layer.geom_sql}) AS e "
            f"FROM {layer.from_sql} WHERE ({layer.where_sql}) AND ({region_sql})) s", params)


def run_sql(run: int | None, year: int | None, drafts: bool = True) -> tuple[str, dict]:
    """The evaluation run shown: ``run`` if given, else the current one for ``year``; draft runs
    only when ``drafts`` (callers who may review them, ``Principal.sees_drafts``)."""
    if run is not None:
        return explicit_run_sql("run", drafts), {"run": run}
    return current_run_sql("year", drafts), {"year": year}


def runs_list_sql(drafts: bool = True) -> str:
    return f"SELECT id, year, status FROM evaluation_runs WHERE status IN {run_statuses(drafts)} ORDER BY year, id"


# ----------------------------------------------------------- the pre-rendered features

def render_sql(q: FeatureQuery) -> tuple[str, dict]:
    """Every row of ``q`` as (key, township, county, geom, feature): what ``feature_cache`` stores
    (:mod:`app.feature_cache`); ``feature`` is the dynamic path's own text (CRS84)."""
    county = county_of(q.layer.township_sql)  # as Principal.region_clause
    sql = (f"SELECT {q.layer.key_sql} AS key, {q.layer.township_sql} AS township, {county} AS county, "
           f"{q.layer.geom_sql} AS geom, "
           f"{_feature_json(q)} AS feature\nFROM {q.layer.from_sql}\nWHERE {q.all_where()}")
    return sql, q.params


def cache_answers(q: FeatureQuery) -> bool:
    """Whether ``feature_cache`` holds exactly this request's features: default CRS and
    properties, default order, no filter but a bbox (the run is checked by the read itself)."""
    return (q.crs is CRS84 and q.props == q.visible and len(q.order) == 1
            and len(q.where) == (1 if q.bbox_sql else 0))


def cache_item_answers(q: FeatureQuery) -> bool:
    """:func:`cache_answers`, and the layer's feature id is its order key (the cache's key)."""
    return cache_answers(q) and q.layer.id_sql.strip("()") == q.layer.key_sql.strip("()")


#: The cached rows are current: built at this data version for the run asked (``:run_id``).
_CACHE_VALID = ("EXISTS (SELECT 1 FROM feature_cache_state s WHERE s.collection = CAST(:fc_collection AS text) "
                "AND s.visibility = CAST(:fc_visibility AS text) AND s.data_version = CAST(:fc_version AS bigint) "
                "AND s.run_id IS NOT DISTINCT FROM CAST(:run_id AS bigint))")


def _cache_where(q: FeatureQuery, visibility: str, version: int) -> str:
    """The cached rows of ``q`` (which must be a copy: its parameters are added to)."""
    q.params.update(fc_collection=q.layer.id, fc_visibility=visibility, fc_version=version)
    conds = ["c.collection = CAST(:fc_collection AS text)", "c.visibility = CAST(:fc_visibility AS text)"]
    region_sql, region_params = q.cache_region  # the caller's scope on the stored township and county
    conds.append(region_sql)
    q.params.update(region_params)
    if q.bbox_sql:
        conds.append(f"ST_Intersects(c.geom, {q.bbox_sql})")
    return " AND ".join(conds)


def cache_page_sql(q: FeatureQuery, visibility: str, version: int, limit: int, after: list | None,
                   count: bool) -> tuple[str, dict]:
    """One items page from ``feature_cache``: a keyset range read on (collection, visibility,
    key) and one ``string_agg``. One row: ``valid`` (else use :func:`page_sql`), ``body`` (the
    features, comma-separated; NULL when none), ``returned``, ``last_k`` (the last returned
    row's order values, as :func:`page_sql`'s ``k``), ``more`` and, when ``count``, ``matched``."""
    q = replace(q, params=dict(q.params))  # the dynamic path may still use q
    where = _cache_where(q, visibility, version)
    page_where = where + (f" AND c.key > {q.bind(after[0], 'text')}" if after is not None else "")
    n = q.bind(limit, "integer")
    matched = f",\n       (SELECT count(*) FROM feature_cache c WHERE {where}) AS matched" if count else ""
    sql = (f"SELECT {_CACHE_VALID} AS valid, page.*{matched}\n"
           f"FROM (SELECT string_agg(feature, ',' ORDER BY key) FILTER (WHERE n <= {n}) AS body,\n"
           f"             count(*) FILTER (WHERE n <= {n}) AS returned,\n"
           f"             json_build_array(max(key) FILTER (WHERE n <= {n}))::text AS last_k,\n"
           f"             count(*) > {n} AS more\n"
           f"      FROM (SELECT c.key, c.feature, row_number() OVER (ORDER BY c.key) AS n\n"
           f"            FROM feature_cache c WHERE {page_where} AND {_CACHE_VALID}\n"
           f"            ORDER BY c.key LIMIT {n} + 1) rows) page")
    return sql, q.params


def cache_item_sql(q: FeatureQuery, visibility: str, version: int, feature_id: str) -> tuple[str, dict]:
    """One feature from ``feature_cache``: ``valid`` (else use :func:`item_sql`) and ``f``."""
    q = replace(q, params=dict(q.params))  # the dynamic path may still use q
    where = _cache_where(q, visibility, version)
    sql = (f"SELECT {_CACHE_VALID} AS valid, (SELECT c.feature FROM feature_cache c WHERE {where} "
           f"AND c.key = {q.bind(feature_id, 'text')}) AS f")
    return sql, q.params


def cache_valid_sql(q: FeatureQuery, visibility: str, version: int) -> tuple[str, dict]:
    """Whether ``feature_cache`` is current for ``q`` (read it in the same snapshot after this)."""
    q = replace(q, params=dict(q.params))  # the dynamic path may still use q
    _cache_where(q, visibility, version)
    return f"SELECT {_CACHE_VALID}", q.params


def cache_export_sql(q: FeatureQuery, visibility: str, version: int) -> tuple[str, dict]:
    """Every selected feature from ``feature_cache`` by key (as :func:`export_geojson_sql`)."""
    q = replace(q, params=dict(q.params))  # the dynamic path may still use q
    sql = (f"SELECT c.feature AS f FROM feature_cache c WHERE {_cache_where(q, visibility, version)} "
           "ORDER BY c.key")
    return sql, q.params
