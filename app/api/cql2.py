"""CQL2 (OGC Common Query Language 1.0) text and JSON → pygeofilter's AST.

Parsing is pygeofilter's (the parser pygeoapi and tipg use): its Lark grammar and transformer for
CQL2 text, its walker for CQL2 JSON. What stays here is what a filter from the network needs
before :func:`app.api.sql.add_cql2` turns the AST into SQL (declared, visible properties only;
bound parameters only; spatial literals in the filter CRS):

* **Stated limits** — a filter of at most :data:`MAX_FILTER_CHARS` characters, nested at most
  :data:`MAX_DEPTH` operators deep (a chain of ANDs, or of ORs, counts as one level however long
  or however parenthesised: ``a OR (b OR (c …))`` is a flat list of 500 alternatives and works).
  Beyond, a 400 that says so — never a recursion error.
* **Errors that say where** — a syntax error names the character position, the text there and
  what was expected; a CQL2-JSON error names the JSON path.
* **Three corrections to pygeofilter 0.4's CQL2 text grammar**, each a rule of CQL2 1.0 that the
  grammar misses: a quote inside a string is written ``''`` (``'O''Brien'``); ``NOT`` applies to
  any parenthesised condition (``NOT (a = 1 AND b = 2)``); geometry keywords are case-insensitive
  (``point(1 2)``). One correction to its CQL2-JSON walker: ``between`` takes three arguments
  (``[prop, low, high]``, CQL2 1.0), as well as the draft's ``[prop, [low, high]]``.

>>> parse_text("grade = 'A' AND NOT area_mu < 5")  # doctest: +ELLIPSIS
And(lhs=Equal(lhs=ATTRIBUTE grade, rhs='A'), rhs=<pygeofilter.ast.Not object at ...>)
"""

from __future__ import annotations

import os
import re
from typing import Any

import lark
from pygeofilter import ast, values
from pygeofilter.parsers.cql2_json.parser import walk_cql_json
from pygeofilter.parsers.cql2_text import parser as _text

#: Longest filter accepted (characters of CQL2 text, or of CQL2 JSON as sent).
MAX_FILTER_CHARS = 20_000
#: Deepest nesting of operators accepted (a chain of ANDs or of ORs counts once).
MAX_DEPTH = 40


class Cql2Error(ValueError):
    """A filter that cannot be parsed; ``str()`` says where, for a person to fix it."""

    def __init__(self, message: str, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{message} ({where})" if where else message)


# ------------------------------------------------------------------------------- CQL2 text

def _grammar() -> str:
    """pygeofilter's CQL2 text grammar with the three CQL2 1.0 corrections (module docstring)."""
    with open(os.path.join(os.path.dirname(_text.__file__), "grammar.lark"), encoding="utf-8") as f:
        g = f.read()
    fixes = {
        # escapeQuote: '' inside a character literal
        "SINGLE_QUOTED: \"'\" /.*?/ \"'\"": "SINGLE_QUOTED: /'(?:[^']|'')*'/",
        # NOT applies to a parenthesised condition, not only to a single predicate
        '| "NOT"i "(" predicate ")"                                       -> not_':
            '| "NOT"i "(" condition ")"                                       -> not_',
    }
    for old, new in fixes.items():
        if old not in g:  # a new pygeofilter release: check the fixes are still needed
            raise RuntimeError(f"pygeofilter's CQL2 grammar changed; review app/api/cql2.py ({old!r})")
        g = g.replace(old, new)
    return g


class _Transformer(_text.CQLTransformer):
    def SINGLE_QUOTED(self, token):  # noqa: N802 - Lark's terminal name
        return token[1:-1].replace("''", "'")


_PARSER = lark.Lark(_grammar(), parser="lalr", maybe_placeholders=False, transformer=_Transformer(),
                    import_paths=[os.path.dirname(os.path.dirname(_text.__file__))])
_WKT_WORDS = re.compile(r"\b(GEOMETRYCOLLECTION|MULTIPOLYGON|MULTILINESTRING|MULTIPOINT|POLYGON|LINESTRING|POINT)"
                        r"(?=\s*\()", re.IGNORECASE)
_STRING = re.compile(r"'(?:[^']|'')*'")
_NAMES = {"SINGLE_QUOTED": "a string", "DOUBLE_QUOTED": "a quoted property name", "INT": "a number",
          "FLOAT": "a number", "BOOLEAN": "TRUE or FALSE", "$END": "the end of the filter", "__ANON_0": "a property"}


def _upper_wkt(text: str) -> str:
    """Geometry keywords in upper case (the grammar's WKT is case-sensitive), outside strings."""
    out, pos = [], 0
    for m in _STRING.finditer(text):
        out.append(_WKT_WORDS.sub(lambda w: w.group(1).upper(), text[pos:m.start()]))
        out.append(m.group())
        pos = m.end()
    out.append(_WKT_WORDS.sub(lambda w: w.group(1).upper(), text[pos:]))
    return "".join(out)


def _expected(names) -> str:
    if len(names) > 8:  # anywhere an operand may start
        return "a property, a value, a function or '('"
    shown = []
    for n in sorted(names):
        try:
            pattern = _PARSER.get_terminal(n).pattern
            label = _NAMES.get(n) or (repr(pattern.value) if pattern.type == "str" else "a property")
        except KeyError:
            label = _NAMES.get(n, n.lower())
        if label not in shown:
            shown.append(label)
    return ", ".join(shown)


def _where(text: str, pos: int | None) -> str:
    if pos is None or pos >= len(text):
        return "at the end of the filter"
    return f"at character {pos + 1}, near {text[pos:pos + 20]!r}"


def parse_text(text: str) -> ast.Node:
    """CQL2 text → pygeofilter AST. Raises :class:`Cql2Error` saying where and why it failed."""
    if not text.strip():
        raise Cql2Error("the filter is empty")
    _check_size(text)
    try:
        node = _PARSER.parse(_upper_wkt(text))
    except lark.exceptions.UnexpectedCharacters as e:
        raise Cql2Error(f"unexpected character {text[e.pos_in_stream]!r}"
                        + (f"; expected {_expected(e.allowed)}" if e.allowed else ""),
                        _where(text, e.pos_in_stream)) from None
    except lark.exceptions.UnexpectedToken as e:
        if e.token.type == "$END":
            raise Cql2Error(f"the filter ends too early; expected {_expected(e.expected)}",
                            "at the end of the filter") from None
        raise Cql2Error(f"unexpected {str(e.token)!r}; expected {_expected(e.expected)}",
                        _where(text, e.token.start_pos)) from None
    except lark.exceptions.UnexpectedEOF as e:
        raise Cql2Error(f"the filter ends too early; expected {_expected(e.expected)}",
                        "at the end of the filter") from None
    except (lark.exceptions.LarkError, ValueError, TypeError, ArithmeticError) as e:
        raise Cql2Error(f"malformed filter: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    for n in _walk(node):
        if isinstance(n, values.Envelope):  # ECQL's ENVELOPE(x1 x2 y1 y2) is not CQL2
            raise Cql2Error("ENVELOPE() is not CQL2; use BBOX(minx, miny, maxx, maxy)")
    check_depth(node)
    return node


# ------------------------------------------------------------------------------- CQL2 JSON

def parse_json(doc: Any) -> ast.Node:
    """CQL2 JSON (already decoded) → pygeofilter AST. Raises :class:`Cql2Error` with a JSON path."""
    doc = _normalise_json(doc)
    try:
        node = walk_cql_json(doc)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError) as e:
        raise Cql2Error(f"not a CQL2 JSON expression: {str(e)[:200] or type(e).__name__}") from None
    if isinstance(node, list) or not isinstance(node, ast.Node):
        raise Cql2Error("a CQL2 JSON filter is an object with 'op' and 'args'", "at $")
    check_depth(node)
    return node


def _normalise_json(doc: Any) -> Any:
    """One pass without recursion: check nesting and shapes, flatten chains of the same ``and``/
    ``or``, accept CQL2 1.0's three-argument ``between`` and six-number ``bbox``.

    Raises :class:`Cql2Error` naming the JSON path of the first problem.
    """
    root = [doc]
    stack = [(root, 0, "$", 0)]  # (container, index, path, depth)
    while stack:
        container, i, path, depth = stack.pop()
        n = container[i]
        if depth > 4 * MAX_DEPTH:
            where = path if len(path) < 80 else f"{path[:40]}…{path[-30:]}"
            raise Cql2Error(f"the filter nests operators more than {MAX_DEPTH} deep (the limit)", f"at {where}")
        if isinstance(n, list):
            stack.extend((n, k, f"{path}[{k}]", depth + 1) for k in range(len(n)))
            continue
        if not isinstance(n, dict):
            continue
        if "op" in n:
            op, args = n.get("op"), n.get("args")
            if not isinstance(op, str) or not isinstance(args, list):
                raise Cql2Error("'op' must be a string and 'args' an array", f"at {path}")
            if op in ("and", "or"):
                flat, todo = [], list(reversed(args))
                while todo:
                    a = todo.pop()
                    if isinstance(a, dict) and a.get("op") == op and isinstance(a.get("args"), list):
                        todo.extend(reversed(a["args"]))
                    else:
                        flat.append(a)
                if len(flat) < 2:
                    raise Cql2Error(f"'{op}' takes at least 2 arguments", f"at {path}")
                args = flat
            elif op == "between" and len(args) == 3:
                args = [args[0], [args[1], args[2]]]
            elif op == "like" and (len(args) != 2 or not isinstance(args[1], str)):
                raise Cql2Error("'like' takes a property (or expression) and a pattern string", f"at {path}")
            n = container[i] = {**n, "args": args}
            stack.extend((args, k, f"{path}.args[{k}]", depth + 1) for k in range(len(args)))
        elif "bbox" in n:
            b = n["bbox"]
            if not (isinstance(b, list) and len(b) in (4, 6)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)):
                raise Cql2Error("'bbox' must be an array of 4 (or 6) numbers", f"at {path}")
            container[i] = {"bbox": [b[0], b[1], b[3], b[4]] if len(b) == 6 else b}
    return root[0]


# ------------------------------------------------------------------------------- limits

def _check_size(text: str) -> None:
    if len(text) > MAX_FILTER_CHARS:
        raise Cql2Error(f"the filter has {len(text)} characters; the limit is {MAX_FILTER_CHARS} "
                        "(for a long list of values use IN (…), or several requests)")


def check_size(text: str) -> None:
    """Raise :class:`Cql2Error` when a filter (text or JSON as sent) is over the size limit."""
    _check_size(text)


def _children(n) -> list:
    if isinstance(n, ast.Combination):
        return [n.lhs, n.rhs]
    if isinstance(n, ast.Node):
        return list(n.get_sub_nodes())
    if isinstance(n, list):
        return n
    return []


def _walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(_children(n))


def flatten(node, cls) -> list:
    """The operands of a chain of ``cls`` (``ast.And`` or ``ast.Or``), in order, without recursion."""
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        if type(n) is cls:
            stack.extend((n.rhs, n.lhs))
        else:
            out.append(n)
    return out


def check_depth(node) -> None:
    """Raise :class:`Cql2Error` when operators nest deeper than :data:`MAX_DEPTH` (a chain of
    ANDs, or of ORs, is one level)."""
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        if d > MAX_DEPTH:
            raise Cql2Error(f"the filter nests operators more than {MAX_DEPTH} deep (the limit); "
                            "write long alternatives as a flat list (a OR b OR c) or IN (…)")
        if isinstance(n, (ast.And, ast.Or)):
            stack.extend((c, d + 1) for c in flatten(n, type(n)))
        else:
            stack.extend((c, d + 1) for c in _children(n))
