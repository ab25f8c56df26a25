"""CQL2 (OGC Common Query Language) text and JSON → one small AST.

Why our own parser: filters arrive from the network and become SQL; a parser that builds a
closed set of node types (below) and never keeps raw text except validated literals is what
guarantees nothing a caller writes reaches SQL except as a bound parameter (see
:func:`app.api.sql.cql2_where`). Geometry literals are parsed to coordinates and re-written
as canonical WKT, so even they are data, not text.

Supported (what QGIS ≥ 3.30 and GDAL send, and the Basic CQL2 + advanced comparison +
basic spatial classes): ``= <> < > <= >=``, ``AND OR NOT``, ``[NOT] LIKE``, ``[NOT] BETWEEN``,
``[NOT] IN (…)``, ``IS [NOT] NULL``, ``CASEI()``, ``+ - * /``, ``S_INTERSECTS S_DISJOINT
S_WITHIN S_CONTAINS S_EQUALS S_TOUCHES S_OVERLAPS S_CROSSES`` with WKT (2D) or ``BBOX()``,
``TRUE``/``FALSE``, ``DATE('…')``/``TIMESTAMP('…')`` literals.

>>> parse_text("grade = 'A' AND NOT area_mu < 5")  # doctest: +NORMALIZE_WHITESPACE
And(items=(Cmp(op='=', left=Prop(name='grade'), right=Lit(value='A', kind='')),
           Not(item=Cmp(op='<', left=Prop(name='area_mu'), right=Lit(value=5, kind='')))))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Union

# --------------------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Prop:
    name: str


@dataclass(frozen=True)
class Lit:
    value: Any  # str | int | float | bool | None
    kind: str = ""  # "" (from the value) | "date" | "timestamp"


@dataclass(frozen=True)
class Geom:
    """A geometry literal, as canonical 2D WKT (coordinates in the filter CRS's axis order)."""
    wkt: str


@dataclass(frozen=True)
class Envelope:
    """``BBOX(x1, y1, x2, y2)`` (first axis min, second axis min, first max, second max)."""
    minx: float
    miny: float
    maxx: float
    maxy: float


@dataclass(frozen=True)
class Func:
    name: str  # casei | accenti
    args: tuple


@dataclass(frozen=True)
class Arith:
    op: str  # + - * /
    left: Any
    right: Any


@dataclass(frozen=True)
class Cmp:
    op: str  # = <> < > <= >=
    left: Any
    right: Any


@dataclass(frozen=True)
class Like:
    expr: Any
    pattern: Any
    negated: bool = False


@dataclass(frozen=True)
class Between:
    expr: Any
    low: Any
    high: Any
    negated: bool = False


@dataclass(frozen=True)
class In:
    expr: Any
    values: tuple
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    expr: Any
    negated: bool = False


@dataclass(frozen=True)
class Spatial:
    op: str  # s_intersects | s_disjoint | …
    left: Any
    right: Any


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: Any


Node = Union[Prop, Lit, Geom, Envelope, Func, Arith, Cmp, Like, Between, In, IsNull, Spatial, And, Or, Not]

SPATIAL_OPS = ("s_intersects", "s_disjoint", "s_within", "s_contains", "s_equals", "s_touches",
               "s_overlaps", "s_crosses")
FUNCTIONS = ("casei", "accenti")
_GEOM_TYPES = {"point": 1, "linestring": 1, "polygon": 2, "multipoint": (1, 2),
               "multilinestring": 2, "multipolygon": 3}


class Cql2Error(ValueError):
    """A filter that cannot be parsed; ``str()`` says where, for a person to fix it."""

    def __init__(self, message: str, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{message} ({where})" if where else message)


# ------------------------------------------------------------------------------- CQL2 text

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qid>"(?:[^"]|"")*")
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<op><>|!=|<=|>=|=|<|>|\(|\)|,|\+|-|\*|/)
  | (?P<id>[A-Za-z_\u00a0-\uffff][A-Za-z0-9_.:\u00a0-\uffff]*)
""", re.VERBOSE)

_KEYWORDS = {"and", "or", "not", "like", "between", "in", "is", "null", "true", "false"}


@dataclass
class _Tok:
    kind: str  # str | qid | num | op | id | end
    text: str
    pos: int

    @property
    def kw(self) -> str:
        return self.text.lower() if self.kind == "id" else ""


def _tokenize(text: str) -> list[_Tok]:
    toks, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            if text[pos] in "'\"":
                raise Cql2Error(f"unterminated {'string' if text[pos] == chr(39) else 'quoted name'} "
                                f"(add the closing {text[pos]})", f"starting at character {pos + 1}")
            raise Cql2Error(f"unexpected character {text[pos]!r}", f"at character {pos + 1}")
        if m.lastgroup != "ws":
            toks.append(_Tok(m.lastgroup, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _TextParser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    # -- helpers
    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def where(self, tok: _Tok | None = None) -> str:
        tok = tok or self.tok
        if tok.kind == "end":
            return "at the end of the filter"
        near = self.text[tok.pos:tok.pos + 20]
        return f"at character {tok.pos + 1}, near {near!r}"

    def error(self, msg: str, tok: _Tok | None = None):
        raise Cql2Error(msg, self.where(tok))

    def take(self) -> _Tok:
        t = self.tok
        self.i += 1
        return t

    def accept_kw(self, *kws: str) -> bool:
        if self.tok.kw in kws:
            self.i += 1
            return True
        return False

    def accept_op(self, op: str) -> bool:
        if self.tok.kind == "op" and self.tok.text == op:
            self.i += 1
            return True
        return False

    def expect_op(self, op: str, what: str = "") -> None:
        if not self.accept_op(op):
            self.error(f"expected {op!r}{' ' + what if what else ''}")

    def expect_kw(self, kw: str) -> None:
        if not self.accept_kw(kw):
            self.error(f"expected {kw.upper()}")

    # -- grammar
    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise Cql2Error("the filter is empty")
        node = self.or_()
        if self.tok.kind != "end":
            self.error("unexpected text after a complete expression (missing AND/OR?)")
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.accept_kw("or"):
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Node:
        items = [self.not_()]
        while self.accept_kw("and"):
            items.append(self.not_())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_(self) -> Node:
        if self.accept_kw("not"):
            return Not(self.not_())
        return self.predicate()

    def predicate(self) -> Node:
        left = self.additive()
        t = self.tok
        if t.kind == "op" and t.text in ("=", "<>", "!=", "<", ">", "<=", ">="):
            self.i += 1
            op = "<>" if t.text == "!=" else t.text
            return Cmp(op, left, self.additive())
        negated = False
        if t.kw == "not" and self.toks[self.i + 1].kw in ("like", "between", "in"):
            self.i += 1
            negated = True
        if self.accept_kw("like"):
            return Like(left, self.additive(), negated)
        if self.accept_kw("between"):
            low = self.additive()
            self.expect_kw("and")
            return Between(left, low, self.additive(), negated)
        if self.accept_kw("in"):
            self.expect_op("(", "after IN")
            values = [self.additive()]
            while self.accept_op(","):
                values.append(self.additive())
            self.expect_op(")", "to close the IN list")
            return In(left, tuple(values), negated)
        if self.accept_kw("is"):
            neg = self.accept_kw("not")
            if not self.accept_kw("null"):
                self.error("expected NULL after IS [NOT]")
            return IsNull(left, neg)
        return left

    def additive(self) -> Node:
        left = self.multiplicative()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.take().text
            left = Arith(op, left, self.multiplicative())
        return left

    def multiplicative(self) -> Node:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.take().text
            left = Arith(op, left, self.unary())
        return left

    def unary(self) -> Node:
        if self.accept_op("-"):
            operand = self.unary()
            if isinstance(operand, Lit) and isinstance(operand.value, (int, float)) \
                    and not isinstance(operand.value, bool):
                return Lit(-operand.value)
            return Arith("-", Lit(0), operand)
        if self.accept_op("+"):
            return self.unary()
        return self.atom()

    def atom(self) -> Node:
        t = self.tok
        if t.kind == "num":
            self.i += 1
            return Lit(_number(t.text))
        if t.kind == "str":
            self.i += 1
            return Lit(t.text[1:-1].replace("''", "'"))
        if t.kind == "qid":
            self.i += 1
            return Prop(t.text[1:-1].replace('""', '"'))
        if t.kind == "op" and t.text == "(":
            self.i += 1
            node = self.or_()
            self.expect_op(")", "to close '('")
            return node
        if t.kind == "id":
            kw = t.kw
            nxt = self.toks[self.i + 1]
            if kw in ("true", "false"):
                self.i += 1
                return Lit(kw == "true")
            if kw == "null":
                self.i += 1
                return Lit(None)
            if kw in _KEYWORDS:
                self.error(f"expected a property, a value or '(' but found {t.text.upper()}")
            if nxt.kind == "op" and nxt.text == "(":
                return self.call(t)
            self.i += 1
            return Prop(t.text)
        if t.kind == "end":
            self.error("the filter ends too early: expected a property, a value or '('")
        self.error(f"expected a property, a value or '(' but found {t.text!r}")

    def call(self, name_tok: _Tok) -> Node:
        name = name_tok.text.lower()
        self.i += 2  # name and '('
        if name in _GEOM_TYPES:
            coords = self.coord_tree()
            self.expect_op(")", f"to close {name.upper()}")
            return Geom(_wkt(name, coords, lambda m: self.error(m, name_tok)))
        if name in ("bbox", "envelope"):
            nums = [self.signed_number()]
            while self.accept_op(","):
                nums.append(self.signed_number())
            self.expect_op(")", "to close BBOX")
            return _envelope(nums, lambda m: self.error(m, name_tok))
        if name in ("date", "timestamp"):
            t = self.tok
            if t.kind != "str":
                self.error(f"{name.upper()}() takes a quoted string")
            self.i += 1
            self.expect_op(")")
            return Lit(t.text[1:-1], name)
        args = []
        if not self.accept_op(")"):
            args.append(self.or_())
            while self.accept_op(","):
                args.append(self.or_())
            self.expect_op(")", f"to close {name_tok.text}(")
        if name in SPATIAL_OPS:
            if len(args) != 2:
                self.error(f"{name.upper()} takes two arguments", name_tok)
            return Spatial(name, args[0], args[1])
        if name in FUNCTIONS:
            if len(args) != 1:
                self.error(f"{name.upper()} takes one argument", name_tok)
            return Func(name, tuple(args))
        self.error(f"unknown function {name_tok.text}(); supported: "
                   + ", ".join(f.upper() for f in (*SPATIAL_OPS, *FUNCTIONS, "BBOX")), name_tok)

    def signed_number(self) -> float:
        neg = self.accept_op("-")
        t = self.tok
        if t.kind != "num":
            self.error("expected a number")
        self.i += 1
        v = float(t.text)
        return -v if neg else v

    def coord_tree(self) -> list:
        """Items separated by commas, each ``x y[ z]`` or ``( … )``: a nested list, tuples at the leaves."""
        items = []
        while True:
            if self.accept_op("("):
                items.append(self.coord_tree())
                self.expect_op(")")
            else:
                items.append(self.coordinate())
            if not self.accept_op(","):
                return items

    def coordinate(self) -> tuple:
        xy = [self.signed_number(), self.signed_number()]
        if self.tok.kind == "num" or (self.tok.kind == "op" and self.tok.text == "-"):
            self.signed_number()  # a Z value: 2D only, dropped
        return tuple(xy)


def _number(text: str) -> int | float:
    if re.fullmatch(r"\d+", text):
        return int(text)
    v = float(text)
    if not math.isfinite(v):
        raise Cql2Error(f"number out of range: {text}")
    return v


def _depth(tree) -> int:
    d = 0
    while isinstance(tree, list):
        d += 1
        tree = tree[0]
    return d


def _as_list(tree):
    """Normalise the text parser's output: a single coordinate becomes ``[coord]``."""
    return tree if isinstance(tree, list) else [tree]


def _fmt(c: tuple) -> str:
    return f"{c[0]!r} {c[1]!r}"


def _wkt(gtype: str, tree, fail) -> str:
    """Canonical WKT from a coordinate tree, checking nesting for the type."""
    tree = _as_list(tree)
    d = _depth(tree)

    def ring(r, closed: bool, min_n: int) -> str:
        if not isinstance(r, list) or _depth(r) != 1 or not all(isinstance(c, tuple) for c in r):
            fail(f"malformed {gtype.upper()} coordinates")
        if len(r) < min_n:
            fail(f"{gtype.upper()} needs at least {min_n} points per part")
        if closed and r[0] != r[-1]:
            fail(f"{gtype.upper()} rings must be closed (first point = last point)")
        return "(" + ", ".join(_fmt(c) for c in r) + ")"

    if gtype == "point":
        if d != 1 or len(tree) != 1:
            fail("POINT takes one coordinate, e.g. POINT(120.1 30.2)")
        return f"POINT({_fmt(tree[0])})"
    if gtype == "linestring":
        return "LINESTRING" + ring(tree, False, 2)
    if gtype == "polygon":
        if d != 2:
            fail("POLYGON takes rings, e.g. POLYGON((0 0, 1 0, 1 1, 0 0))")
        return "POLYGON(" + ", ".join(ring(r, True, 4) for r in tree) + ")"
    if gtype == "multipoint":
        pts = [p[0] if isinstance(p, list) and len(p) == 1 else p for p in tree]
        if not all(isinstance(p, tuple) for p in pts):
            fail("malformed MULTIPOINT coordinates")
        return "MULTIPOINT(" + ", ".join(f"({_fmt(p)})" for p in pts) + ")"
    if gtype == "multilinestring":
        if d != 2:
            fail("MULTILINESTRING takes lines, e.g. MULTILINESTRING((0 0, 1 1))")
        return "MULTILINESTRING(" + ", ".join(ring(r, False, 2) for r in tree) + ")"
    if gtype == "multipolygon":
        if d != 3:
            fail("MULTIPOLYGON takes polygons, e.g. MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)))")
        return "MULTIPOLYGON(" + ", ".join(
            "(" + ", ".join(ring(r, True, 4) for r in poly) + ")" for poly in tree) + ")"
    fail(f"unsupported geometry type {gtype.upper()}")


def _envelope(nums: list[float], fail) -> Envelope:
    if len(nums) == 6:  # with z
        nums = [nums[0], nums[1], nums[3], nums[4]]
    if len(nums) != 4:
        fail("BBOX takes 4 numbers: minx, miny, maxx, maxy")
    if not all(math.isfinite(n) for n in nums):
        fail("BBOX numbers must be finite")
    if nums[0] > nums[2] or nums[1] > nums[3]:
        fail("BBOX minimum must not exceed maximum")
    return Envelope(*nums)


def parse_text(text: str) -> Node:
    """CQL2 text → AST. Raises :class:`Cql2Error` saying where it failed."""
    return _TextParser(text).parse()


# ------------------------------------------------------------------------------- CQL2 JSON

_JSON_CMP = {"=": "=", "<>": "<>", "<": "<", ">": ">", "<=": "<=", ">=": ">=",
             "eq": "=", "neq": "<>", "lt": "<", "gt": ">", "lte": "<=", "gte": ">="}
_GEOJSON_TYPES = {"Point": "point", "LineString": "linestring", "Polygon": "polygon",
                  "MultiPoint": "multipoint", "MultiLineString": "multilinestring",
                  "MultiPolygon": "multipolygon"}


def parse_json(doc: Any) -> Node:
    """CQL2 JSON (already decoded) → AST. Raises :class:`Cql2Error` with a JSON path."""
    return _json_node(doc, "$")


def _json_node(n: Any, path: str) -> Node:
    def fail(msg: str):
        raise Cql2Error(msg, f"at {path}")

    if n is None or isinstance(n, (bool, str)):
        return Lit(n)
    if isinstance(n, (int, float)):
        if isinstance(n, float) and not math.isfinite(n):
            fail("numbers must be finite")
        return Lit(n)
    if isinstance(n, list):
        fail("a bare array is only allowed as the list of an 'in' operation")
    if not isinstance(n, dict):
        fail(f"unexpected JSON value {n!r}")
    if "property" in n:
        if not isinstance(n["property"], str):
            fail("'property' must be a string")
        return Prop(n["property"])
    if "bbox" in n:
        b = n["bbox"]
        if not isinstance(b, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b):
            fail("'bbox' must be an array of 4 numbers")
        return _envelope([float(v) for v in b], fail)
    if "date" in n or "timestamp" in n:
        kind = "date" if "date" in n else "timestamp"
        if not isinstance(n[kind], str):
            fail(f"'{kind}' must be a string")
        return Lit(n[kind], kind)
    if "type" in n and "coordinates" in n:
        gtype = _GEOJSON_TYPES.get(n["type"])
        if gtype is None:
            fail(f"unsupported geometry type {n['type']!r}; use one of {', '.join(_GEOJSON_TYPES)}")
        return Geom(_wkt(gtype, _json_coords(n["coordinates"], fail), fail))
    if "op" not in n:
        fail("expected an object with 'op' and 'args', 'property', 'bbox' or a GeoJSON geometry")
    op = n["op"]
    args = n.get("args", [])
    if not isinstance(op, str) or not isinstance(args, list):
        fail("'op' must be a string and 'args' an array")
    op_l = op.lower()

    def arg(i: int) -> Node:
        return _json_node(args[i], f"{path}.args[{i}]")

    def nargs(k: int):
        if len(args) != k:
            fail(f"'{op}' takes {k} arguments, got {len(args)}")

    if op_l in ("and", "or"):
        if len(args) < 2:
            fail(f"'{op}' takes at least 2 arguments")
        items = tuple(arg(i) for i in range(len(args)))
        return And(items) if op_l == "and" else Or(items)
    if op_l == "not":
        nargs(1)
        return Not(arg(0))
    if op in _JSON_CMP or op_l in _JSON_CMP:
        nargs(2)
        return Cmp(_JSON_CMP.get(op, _JSON_CMP.get(op_l)), arg(0), arg(1))
    if op_l == "like":
        nargs(2)
        return Like(arg(0), arg(1))
    if op_l == "between":
        if len(args) == 2 and isinstance(args[1], list) and len(args[1]) == 2:
            return Between(arg(0), _json_node(args[1][0], f"{path}.args[1][0]"),
                           _json_node(args[1][1], f"{path}.args[1][1]"))
        nargs(3)
        return Between(arg(0), arg(1), arg(2))
    if op_l == "in":
        nargs(2)
        if not isinstance(args[1], list) or not args[1]:
            fail("the second argument of 'in' must be a non-empty array")
        return In(arg(0), tuple(_json_node(v, f"{path}.args[1][{i}]") for i, v in enumerate(args[1])))
    if op_l in ("isnull", "is null"):
        nargs(1)
        return IsNull(arg(0))
    if op_l in SPATIAL_OPS:
        nargs(2)
        return Spatial(op_l, arg(0), arg(1))
    if op_l in FUNCTIONS:
        nargs(1)
        return Func(op_l, (arg(0),))
    if op_l in ("+", "-", "*", "/"):
        nargs(2)
        return Arith(op_l, arg(0), arg(1))
    fail(f"unknown operation {op!r}")


def _json_coords(c: Any, fail):
    """GeoJSON coordinates → the same tree shape as the text parser (tuples at the leaves)."""
    if isinstance(c, list) and c and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in c):
        if len(c) < 2 or not all(math.isfinite(v) for v in c):
            fail("a position needs 2 finite numbers")
        return (float(c[0]), float(c[1]))
    if isinstance(c, list) and c:
        return [_json_coords(v, fail) for v in c]
    fail("malformed GeoJSON coordinates")
