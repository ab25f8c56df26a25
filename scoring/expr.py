"""A small, safe expression language for scheme formulas and conditions.

Formulas (``tax / land_mu``) and conditions (``tax > 5000 and flag('专精特新')``) are
parsed with Python's :mod:`ast` and only a whitelist of nodes is accepted:
numbers, strings, ``True``/``False``, column names, ``+ - * /``, parentheses,
comparisons, ``and``/``or``/``not`` and a few functions (:data:`FUNCTIONS`).

Why ``ast`` and not ``pandas.eval``: ``pandas.eval`` accepts attribute access,
``@local`` variables and (with the python engine) arbitrary calls, so a whitelist
would have to be bolted on anyway; with ``ast`` the whitelist *is* the grammar,
every name is checked against the known columns when the scheme is loaded (so a
typo fails at load time, with its key path), the result type (number / boolean /
text) is checked statically, and evaluation is plain vectorised numpy over whole
columns — no per-row Python.

Semantics chosen for yield indicators:

- ``x / 0`` and anything involving a missing value is ``NaN`` (missing), never
  ``inf`` — a subject with no recorded energy has no 单位能耗增加值.
- Comparisons involving ``NaN`` are ``False`` (``tax_per_mu < 6`` is False when
  亩均税收 is unknown).
- With ``precision`` given, a comparison compares its operands rounded half-up to their
  published decimals (:func:`round_half_up`): a column or ``group_mean(column)`` at that
  column's decimals, any other expression at the default — and never coarser than the decimals
  a constant in the comparison is written with. Constants are compared as written. So
  ``tax_per_mu < 6`` is False for 38.4 万元 on 6.4 亩 (5.999999999999999 → 6.00).
- ``group_mean(x)`` / ``group_median(x)`` are the mean / median of ``x`` over the
  evaluated subjects of the same list and industry group (ignoring missing values).

Example
-------
>>> import numpy as np
>>> e = compile_expr("tax / land_mu", {"tax": NUMBER, "land_mu": NUMBER}, want=NUMBER)
>>> evaluate_expr(e, {"tax": np.array([10.0, 1.0]), "land_mu": np.array([2.0, 0.0])})
array([ 5., nan])
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import pandas as pd

NUMBER = "number"
BOOLEAN = "boolean"
TEXT = "text"

#: function name -> (argument kinds, result kind, needs group context)
FUNCTIONS: dict[str, tuple[tuple[str, ...], str, bool]] = {
    "flag": ((TEXT,), BOOLEAN, False),  # flag('免评'): the subject carries this flag
    "missing": ((NUMBER,), BOOLEAN, False),  # missing(emission_t)
    "min": ((NUMBER, NUMBER), NUMBER, False),
    "max": ((NUMBER, NUMBER), NUMBER, False),
    "group_mean": ((NUMBER,), NUMBER, True),
    "group_median": ((NUMBER,), NUMBER, True),
}

_ARITH = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply}
_COMPARE = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}


def round_half_up(x, decimals: int) -> np.ndarray:
    """Round half away from zero to ``decimals`` places, as a decimal calculation would.

    The float's binary noise is removed first (the scaled value is taken to 6 decimals), so
    5.995 (stored as 5.99499999…) → 6.00 and 38.4 / 6.4 (5.999999999999999) → 6.00, unlike
    ``round``/``np.round`` (half-to-even on the binary value). NaN stays NaN. Vectorised;
    agrees with ``Decimal(repr(x)).quantize(…, ROUND_HALF_UP)`` for values with up to 6
    significant decimals beyond ``decimals`` (tested).
    """
    x = np.asarray(x, dtype=float)
    scale = 10.0 ** decimals
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.round(np.abs(x) * scale, 6)
        return np.copysign(np.floor(y + 0.5), x) / scale


def constant_decimals(value: float) -> int:
    """Decimals a constant is written with (``0.2352`` → 4, ``6`` → 0)."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        return 0 if abs(value) >= 1 else 8
    frac = text.split(".")[1] if "." in text else ""
    frac = frac.rstrip("0")
    return len(frac)


class ExprError(ValueError):
    """An expression uses something outside the whitelist or has the wrong type."""


@dataclass(frozen=True)
class Expr:
    """A checked expression: its source, parsed tree, the names it reads and its kind."""

    source: str
    tree: ast.AST = field(repr=False, compare=False)
    names: frozenset[str]
    kind: str
    uses_group: bool


@dataclass
class GroupContext:
    """Who ``group_mean``/``group_median`` average over: ``codes[i]`` is the group of
    row ``i`` (``-1`` = not part of the population)."""

    codes: np.ndarray
    n_groups: int


def compile_expr(
    source: str | int | float | bool,
    names: Mapping[str, str],
    *,
    want: str,
    allow_group: bool = False,
) -> Expr:
    """Parse and type-check ``source`` against the known ``names`` (name -> kind).

    Raises :class:`ExprError` with a short message naming the offending part.
    """
    if isinstance(source, bool):
        source = "True" if source else "False"
    elif isinstance(source, (int, float)):
        source = repr(source)
    try:
        tree = ast.parse(str(source).strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExprError(f"cannot parse {source!r}: {exc.msg}") from None
    checker = _Checker(names, allow_group)
    kind = checker.visit(tree)
    if kind != want:
        raise ExprError(f"{source!r} gives a {kind}, a {want} is needed")
    return Expr(str(source), tree, frozenset(checker.seen), kind, checker.uses_group)


class _Checker:
    def __init__(self, names: Mapping[str, str], allow_group: bool):
        self.names = names
        self.allow_group = allow_group
        self.seen: set[str] = set()
        self.uses_group = False

    def visit(self, node: ast.AST) -> str:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise ExprError(f"{type(node).__name__} is not allowed ({ast.unparse(node)!r})")
        return method(node)

    def _Constant(self, node: ast.Constant) -> str:
        if isinstance(node.value, bool):
            return BOOLEAN
        if isinstance(node.value, (int, float)):
            return NUMBER
        if isinstance(node.value, str):
            return TEXT
        raise ExprError(f"constant {node.value!r} is not allowed")

    def _Name(self, node: ast.Name) -> str:
        if node.id not in self.names:
            known = ", ".join(sorted(self.names))
            raise ExprError(f"unknown column {node.id!r} (known: {known})")
        self.seen.add(node.id)
        return self.names[node.id]

    def _BinOp(self, node: ast.BinOp) -> str:
        if type(node.op) not in _ARITH and not isinstance(node.op, ast.Div):
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        for side in (node.left, node.right):
            if self.visit(side) != NUMBER:
                raise ExprError(f"arithmetic on a non-number: {ast.unparse(side)!r}")
        return NUMBER

    def _UnaryOp(self, node: ast.UnaryOp) -> str:
        kind = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            if kind != BOOLEAN:
                raise ExprError(f"'not' needs a condition: {ast.unparse(node)!r}")
            return BOOLEAN
        if isinstance(node.op, (ast.USub, ast.UAdd)) and kind == NUMBER:
            return NUMBER
        raise ExprError(f"unary operator not allowed here: {ast.unparse(node)!r}")

    def _BoolOp(self, node: ast.BoolOp) -> str:
        for value in node.values:
            if self.visit(value) != BOOLEAN:
                raise ExprError(f"'and'/'or' need conditions: {ast.unparse(value)!r}")
        return BOOLEAN

    def _Compare(self, node: ast.Compare) -> str:
        kinds = [self.visit(node.left)] + [self.visit(c) for c in node.comparators]
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise ExprError(f"comparison {type(op).__name__} is not allowed")
        if len(set(kinds)) != 1:
            raise ExprError(f"comparison of different kinds: {ast.unparse(node)!r}")
        if kinds[0] == TEXT and not all(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            raise ExprError(f"text can only be compared with == or !=: {ast.unparse(node)!r}")
        return BOOLEAN

    def _Call(self, node: ast.Call) -> str:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ExprError(
                f"function {ast.unparse(node.func)!r} is not allowed "
                f"(allowed: {', '.join(sorted(FUNCTIONS))})"
            )
        args, result, needs_group = FUNCTIONS[node.func.id]
        if node.keywords or len(node.args) != len(args):
            raise ExprError(f"{node.func.id}() takes {len(args)} argument(s)")
        if needs_group:
            if not self.allow_group:
                raise ExprError(f"{node.func.id}() is not available here")
            self.uses_group = True
        if node.func.id == "flag" and not (
            isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
        ):
            raise ExprError("flag() takes a quoted flag name, e.g. flag('免评')")
        for arg, kind in zip(node.args, args):
            if self.visit(arg) != kind:
                raise ExprError(f"{node.func.id}() needs a {kind}: {ast.unparse(arg)!r}")
        return result


def evaluate_expr(
    expr: Expr,
    env: Mapping[str, np.ndarray],
    *,
    flag: Callable[[str], np.ndarray] | None = None,
    groups: GroupContext | None = None,
    length: int | None = None,
    precision: Callable[[str | None], int] | None = None,
) -> np.ndarray:
    """Evaluate a compiled expression over whole columns (numpy arrays of equal length).

    ``precision(name)`` gives the published decimals of a column (``precision(None)``: of any
    other expression); with it, comparisons are made on rounded values (see the module doc).
    Returns a float64 array for numbers (NaN = missing) and a bool array for conditions.
    """
    n = length if length is not None else len(next(iter(env.values())))
    out = _Evaluator(env, flag, groups, n, precision).visit(expr.tree)
    if np.ndim(out) == 0:  # a constant expression
        out = np.full(n, out, dtype=bool if expr.kind == BOOLEAN else float)
    return out


class _Evaluator:
    def __init__(self, env, flag, groups, n, precision=None):
        self.env, self.flag, self.groups, self.n = env, flag, groups, n
        self.precision = precision

    def visit(self, node):
        return getattr(self, "_" + type(node).__name__)(node)

    def _Constant(self, node):
        return float(node.value) if isinstance(node.value, (int, float)) and not isinstance(
            node.value, bool
        ) else node.value

    def _Name(self, node):
        return self.env[node.id]

    def _BinOp(self, node):
        left, right = self.visit(node.left), self.visit(node.right)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if isinstance(node.op, ast.Div):
                out = np.divide(left, right)
                # x / 0 is missing, not ±inf: no energy use recorded means no 单位能耗增加值
                return np.where(np.asarray(right) == 0, np.nan, out)
            return _ARITH[type(node.op)](left, right)

    def _UnaryOp(self, node):
        value = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return np.logical_not(value)
        return np.negative(value) if isinstance(node.op, ast.USub) else value

    def _BoolOp(self, node):
        values = [self.visit(v) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = values[0]
        for v in values[1:]:
            out = combine(out, v)
        return out

    def _Compare(self, node):
        out, left, left_node = True, self.visit(node.left), node.left
        for op, comp in zip(node.ops, node.comparators):
            right = self.visit(comp)
            a, b = (self._rounded(left_node, left, comp), self._rounded(comp, right, left_node)) \
                if self.precision is not None else (left, right)
            with np.errstate(invalid="ignore"):
                res = np.asarray(_COMPARE[type(op)](a, b))
            if res.dtype == object:  # text columns are object arrays ("" for missing)
                res = res.astype(bool)
            out = np.logical_and(out, res)
            left, left_node = right, comp
        return out

    def _rounded(self, node, value, other):
        """``value`` (of ``node``) rounded for comparing with ``other``; constants as written."""
        if isinstance(node, ast.Constant) or (isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant)):
            return value
        if isinstance(value, str) or (isinstance(value, np.ndarray) and value.dtype.kind not in "fiu"):
            return value  # text
        decimals = self.precision(_column_of(node))
        written = [constant_decimals(c.value) for c in ast.walk(other)
                   if isinstance(c, ast.Constant) and isinstance(c.value, (int, float))
                   and not isinstance(c.value, bool)]
        return round_half_up(value, max([decimals, *written]))

    def _Call(self, node):
        name = node.func.id
        if name == "flag":
            return self.flag(node.args[0].value)
        args = [np.broadcast_to(np.asarray(self.visit(a), dtype=float), (self.n,)) for a in node.args]
        if name == "missing":
            return ~np.isfinite(args[0])
        if name in ("min", "max"):
            return (np.fmin if name == "min" else np.fmax)(args[0], args[1])
        return _group_stat(args[0], self.groups, "mean" if name == "group_mean" else "median")


def _column_of(node: ast.AST) -> str | None:
    """The column a compared operand shows: ``x`` or ``group_mean(x)`` → ``"x"``; else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call) and node.func.id in ("group_mean", "group_median", "min", "max") \
            and isinstance(node.args[0], ast.Name):
        return node.args[0].id
    return None


def _group_stat(x: np.ndarray, groups: GroupContext, how: str) -> np.ndarray:
    codes = groups.codes
    valid = (codes >= 0) & np.isfinite(x)
    if how == "mean":
        sums = np.bincount(codes[valid], weights=x[valid], minlength=groups.n_groups)
        counts = np.bincount(codes[valid], minlength=groups.n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            stat = sums / counts
    else:
        stat = (
            pd.Series(x[valid]).groupby(codes[valid]).median().reindex(range(groups.n_groups)).to_numpy()
        )
    out = np.full(len(x), np.nan)
    inside = codes >= 0
    out[inside] = stat[codes[inside]]
    return out
