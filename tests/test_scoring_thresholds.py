"""Every threshold every preset states, at its published precision and bound direction (issue 11).

The thresholds are found in the scheme structure, not listed by hand: every comparison of a
column with a number in any condition (lists' ``when``, bands' ``requires``, bonus/penalty items,
倒扣分, 定档/保档/降档/限档/提档 rules, tenants), every 修正系数 band bound, the minimum land,
the 无地 minimum and the 低产田 threshold. For each, subjects whose value is exactly at the bound
(reached through float arithmetic, as 38.4 万元 / 6.4 亩 is), at the bound ± float noise, one unit
of published precision above and one below go through the engine's own code; the outcome must be
what the comparison written in the YAML says on exact decimals (以上/以下 include the bound,
低于/超过 do not — the YAML states which by its operator and quotes the source).
"""

from __future__ import annotations

import ast
import operator
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from scoring import engine, list_presets, load_scheme, low_yield_land
from scoring.expr import GroupContext, constant_decimals, round_half_up
from scoring.scheme import Scheme

OPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
       ast.Eq: operator.eq, ast.NotEq: operator.ne}

#: how the engine derives each value (scoring.scheme.DERIVED): value = column(s) / denominator × scale.
#: A test value V is reached as numerator = V × denominator / scale in floats, so it carries the
#: same binary noise a county's figures do.
RATIOS = {
    "tax_per_mu": ("tax_paid", "land_area_mu", 1.0), "va_per_mu": ("value_added", "land_area_mu", 1.0),
    "output_per_mu": ("output_value", "land_area_mu", 1.0), "revenue_per_mu": ("revenue", "land_area_mu", 1.0),
    "va_per_energy": ("value_added", "energy_tce", 1.0), "va_per_emission": ("value_added", "emission_t", 1.0),
    "va_per_employee": ("value_added", "employees", 1.0), "rd_share": ("rd_expense", "revenue", 100.0),
    "tax_per_kwh": ("tax_paid", "electricity_kwh", 1e4), "output_per_kwh": ("output_value", "electricity_kwh", 1e4),
}
DIRECT = {"tax": "tax_paid", "land_mu": "land_area_mu"}
DENOMINATOR = {"land_area_mu": 6.4, "energy_tce": 0.7, "emission_t": 0.3, "employees": 7.0,
               "revenue": 3.3, "electricity_kwh": 6.4e5}
BASE = {"industry_code": "3311", "scale": "规上", "land_area_mu": 6.4, "tax_paid": 38.4, "tax_refund": 0.0,
        "value_added": 192.0, "revenue": 6400.0, "output_value": 7000.0, "energy_tce": 96.0,
        "emission_t": 0.064, "rd_expense": 64.0, "employees": 19.0, "electricity_kwh": 1e6}


# --------------------------------------------------------------------------- the structure


def conditions(s: Scheme) -> list[tuple[str, str]]:
    """(key path, condition) for every condition the scheme states."""
    out = []
    for li, lst in enumerate(s.lists):
        out.append((f"lists[{li}].when", lst.when))
        for bi, b in enumerate(lst.bands):
            if b.requires:
                out.append((f"lists[{li}].bands[{bi}].requires", b.requires))
        for kind in ("bonus", "penalty"):
            for k, it in enumerate(getattr(lst, kind)):
                out.append((f"lists[{li}].{kind}[{k}].when", it.when))
        for ii, ind in enumerate(lst.indicators):
            if ind.negative:
                out.append((f"lists[{li}].indicators[{ii}].negative.when", ind.negative.when))
    for ri, r in enumerate(s.adjustments):
        out.append((f"adjustments[{ri}].when", r.when))
    if s.tenants:
        out.append(("tenants.when", s.tenants.when))
    return out


def atoms(cond: str) -> list[tuple[str, type, float]]:
    """(column, operator, bound) of each ``column op number`` in a condition (either order,
    chains split into pairs)."""
    found = []
    for node in ast.walk(ast.parse(cond, mode="eval")):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for op, a, b in zip(node.ops, sides, sides[1:]):
            if isinstance(a, ast.Name) and _number(b) is not None:
                found.append((a.id, type(op), _number(b)))
            elif _number(a) is not None and isinstance(b, ast.Name):
                flipped = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE}.get(type(op), type(op))
                found.append((b.id, flipped, _number(a)))
    return found


def _number(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _number(node.operand)
        return None if v is None else -v
    return None


def threshold_cases():
    cases = []
    for name in list_presets():
        s = load_scheme(name)
        for path, cond in conditions(s):
            for column, op, bound in atoms(cond):
                cases.append(pytest.param(name, path, cond, column, op, bound,
                                          id=f"{name}:{path}:{column}{op.__name__}{bound:g}"))
    return cases


CASES = threshold_cases()


def test_the_presets_state_thresholds_the_test_covers():
    # a structural guard: if this drops, the generator no longer sees the presets' thresholds
    found = {(c.values[0], c.values[3], c.values[5]) for c in CASES}
    assert ("yongkang", "tax_per_mu", 6.0) in found
    assert ("linshu", "tax", 100.0) in found and ("linshu", "revenue", 2000.0) in found
    assert ("huzhou_3", "tax_per_mu", 6.0) in found
    assert len(CASES) >= 10


# --------------------------------------------------------------------------- building subjects


def unit(s: Scheme, column: str, bound: float) -> int:
    """Decimals the comparison is made at: the column's published precision, or the bound's."""
    return max(s.precision.of(column), constant_decimals(bound))


def subject_with(column: str, value: float, row: dict | None = None, held: frozenset = frozenset()) -> dict:
    """Raw input columns that make the engine derive ``column`` = ``value`` (through floats),
    on top of ``row``; inputs in ``held`` (set for other columns) are kept as they are."""
    row = dict(BASE if row is None else row)
    if column in RATIOS:
        num, den, scale = RATIOS[column]
        if den not in held:
            row[den] = DENOMINATOR[den]
        row[num] = value * row[den] / scale
        if num == "tax_paid":
            row["tax_refund"] = 0.0
    elif column in DIRECT:
        row[DIRECT[column]] = value
        if column == "tax":
            # 税收 = 实缴 + 还原: split so the sum itself carries float noise
            row["tax_paid"], row["tax_refund"] = value - 0.1, 0.1
    else:
        row[column] = value
    return row


def probe_values(s: Scheme, column: str, bound: float) -> list[tuple[str, float, Decimal]]:
    """(label, float value to feed, exact decimal value it stands for)."""
    d = unit(s, column, bound)
    step = Decimal(1).scaleb(-d)
    exact = Decimal(repr(bound))
    return [
        ("at", bound, exact),
        ("at + float noise", bound * (1 + 2e-15), exact),
        ("at - float noise", bound * (1 - 2e-15), exact),
        ("above", float(exact + step), exact + step),
        ("below", float(exact - step), exact - step),
    ]


def satisfying(column_atoms: list[tuple[type, float]]) -> float:
    """A value meeting every atom on one column (to hold the rest of a condition true)."""
    lo, hi = -np.inf, np.inf
    for op, b in column_atoms:
        if op in (ast.Gt, ast.GtE):
            lo = max(lo, b)
        elif op in (ast.Lt, ast.LtE):
            hi = min(hi, b)
        elif op is ast.Eq:
            return b
    if np.isfinite(lo) and np.isfinite(hi):
        return (lo + hi) / 2
    return lo + 10 if np.isfinite(lo) else hi - 10 if np.isfinite(hi) else 10.0


def reference(cond: str, values: dict[str, Decimal], columns: dict[str, Decimal]) -> bool:
    """The condition on exact decimals (flags off, text attributes from ``BASE``)."""

    def ev(node):
        if isinstance(node, ast.BoolOp):
            vals = [ev(v) for v in node.values]
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Compare):
            left, ok = ev(node.left), True
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                ok = ok and OPS[type(op)](left, right)
                left = right
            return ok
        if isinstance(node, ast.Call):
            assert node.func.id == "flag", "only flag() calls in threshold conditions"
            return False
        if isinstance(node, ast.Constant):
            return Decimal(repr(node.value)) if isinstance(node.value, float) else (
                Decimal(node.value) if isinstance(node.value, int) and not isinstance(node.value, bool) else node.value)
        if isinstance(node, ast.Name):
            if node.id in values:
                return values[node.id]
            return columns.get(node.id)
        raise AssertionError(f"unexpected node {ast.dump(node)}")

    return ev(ast.parse(cond, mode="eval").body)


def engine_condition(s: Scheme, frame: pd.DataFrame, cond: str) -> np.ndarray:
    """The condition as the engine evaluates it (its own _prepare, derived values, precision)."""
    run = engine._prepare(frame, s, 2024, "enterprise")
    keys = {ind.key: engine._number(run, ind.formula) for lst in s.lists for ind in lst.indicators}
    keys = {k: v for k, v in keys.items() if k not in run.env}
    whole = GroupContext(np.zeros(run.n, dtype=np.int64), 1)
    return engine._when(run, cond, keys, whole, {k: "number" for k in keys})


@pytest.mark.parametrize("preset,path,cond,column,op,bound", CASES)
def test_threshold_at_published_precision_and_direction(preset, path, cond, column, op, bound):
    s = load_scheme(preset)
    if "group_mean" in cond or "group_median" in cond:
        # the condition also compares with a population statistic: test the atom on its own
        cond = f"{column} {_OP_TEXT[op]} {bound!r}"
    # hold the rest of the condition true: text attributes as it names them, every other
    # column at a value meeting its own comparisons
    base = dict(BASE)
    text = texts(cond)
    if "scale" in text:
        base["scale"] = text["scale"]
    if "industry_group" in text:
        base["industry_code"] = code_of_group(s, text["industry_group"])
    others: dict[str, list] = {}
    for c, o, b in atoms(cond):
        if c != column:
            others.setdefault(c, []).append((o, b))
    held_values = {c: satisfying(a) for c, a in others.items()}
    held_inputs: set[str] = set()
    for c, v in held_values.items():
        base = subject_with(c, v, base, frozenset(held_inputs))
        held_inputs |= _inputs(c)
    rows, expected = [], []
    for label, value, exact in probe_values(s, column, bound):
        rows.append({"subject_id": label, **subject_with(column, value, base, frozenset(held_inputs))})
        exact_values = {c: Decimal(repr(v)) for c, v in held_values.items()} | {column: exact}
        expected.append(reference(cond, exact_values, text))
    got = engine_condition(s, pd.DataFrame(rows), cond)
    labels = [r["subject_id"] for r in rows]
    assert dict(zip(labels, got.tolist())) == dict(zip(labels, expected)), (preset, path, cond)
    # the direction the YAML states: only <=, >= and == include the bound itself
    atom_at = OPS[op](Decimal(0), Decimal(0))
    assert atom_at is (op in (ast.LtE, ast.GtE, ast.Eq))
    # at, and at ± float noise, are one value at the published precision
    assert got[0] == got[1] == got[2]
    # the rest of the condition is held true, so the atom alone decides: at / above / below
    # fall on the sides its operator says
    if not _has_or(cond):
        assert (got[0], got[3], got[4]) == (atom_at, OPS[op](1, 0), OPS[op](-1, 0)), (preset, path, cond)


_OP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


def _has_or(cond: str) -> bool:
    # with flags off, "tax <= 100 or flag('重大安全事故')" is decided by its atom too
    tree = ast.parse(cond, mode="eval")
    for node in ast.walk(tree):
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            numeric = [v for v in node.values if not (isinstance(v, ast.Call) and v.func.id == "flag")]
            if len(numeric) > 1:
                return True
    return False


def texts(cond: str) -> dict[str, str]:
    """``name == 'text'`` equalities of a condition (the text attributes to hold true)."""
    out = {}
    for node in ast.walk(ast.parse(cond, mode="eval")):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and len(node.ops) == 1 \
                and isinstance(node.ops[0], ast.Eq) and isinstance(node.comparators[0], ast.Constant) \
                and isinstance(node.comparators[0].value, str):
            out[node.left.id] = node.comparators[0].value
    return out


def code_of_group(s: Scheme, group: str) -> str:
    for g in s.industry_groups.groups:
        if g.name == group:
            return g.codes[0].split("-")[0].ljust(4, "1")
    return "9999"


def _inputs(column: str) -> set[str]:
    if column in RATIOS:
        return {RATIOS[column][0], RATIOS[column][1]}
    return {DIRECT.get(column, column)}


# --------------------------------------------------------------------------- numbers outside conditions


def coefficient_cases():
    out = []
    for name in list_presets():
        s = load_scheme(name)
        for li, lst in enumerate(s.lists):
            for ii, ind in enumerate(lst.indicators):
                if ind.coefficient is None:
                    continue
                for bi, band in enumerate(ind.coefficient.bands):
                    for edge, bound in (("min", band.min), ("max", band.max)):
                        if bound is not None:
                            out.append(pytest.param(name, li, ii, bi, edge, bound,
                                                    id=f"{name}:lists[{li}].{ind.key}.band{bi}.{edge}={bound:g}"))
    return out


@pytest.mark.parametrize("preset,li,ii,bi,edge,bound", coefficient_cases())
def test_coefficient_band_bounds(preset, li, ii, bi, edge, bound):
    """修正系数 bands include their lower bound ("100 万元（含）") and exclude the upper one."""
    s = load_scheme(preset)
    ind = s.lists[li].indicators[ii]
    metric = ind.coefficient.metric.strip()
    rows = [{"subject_id": label, **subject_with(metric, value)} for label, value, _ in probe_values(s, metric, bound)]
    run = engine._prepare(pd.DataFrame(rows), s, 2024, "enterprise")
    got = engine._coefficient(run, ind)
    exact = [e for _, _, e in probe_values(s, metric, bound)]

    def factor(x: Decimal) -> float:
        f = 1.0
        for b in ind.coefficient.bands:
            if Decimal(repr(b.min)) <= x and (b.max is None or x < Decimal(repr(b.max))):
                f = b.factor
        return f

    assert got.tolist() == [factor(x) for x in exact]
    band = ind.coefficient.bands[bi]
    if edge == "min":
        assert got[0] == band.factor            # the lower bound belongs to the band (含)
    else:
        assert got[0] != band.factor            # the upper bound belongs to the next band


@pytest.mark.parametrize("preset", list_presets())
def test_landless_minimum_at_published_precision(preset):
    s = load_scheme(preset)
    bound = s.landless.min_mu
    rows = [{"subject_id": label, **BASE, "land_area_mu": value} for label, value, _ in probe_values(s, "land_mu", bound)]
    out = engine.evaluate(pd.DataFrame(rows), s, 2024).set_index("subject_id")
    landless = out["excluded_reason"].fillna("").str.startswith("无地企业")
    # "用地不足 0.01 亩 counts as no land": at and above are land, one unit below is not
    assert landless.to_dict() == {"at": False, "at + float noise": False, "at - float noise": False,
                                  "above": False, "below": True}
    # no per-mu value for land that does not count
    assert np.isnan(out.loc["below", "tax_per_mu"]) if "tax_per_mu" in out.columns else True


@pytest.mark.parametrize("preset", [p for p in list_presets() if load_scheme(p).multiyear
                                    and load_scheme(p).multiyear.low_yield])
def test_low_yield_threshold_at_published_precision_and_direction(preset):
    s = load_scheme(preset)
    ly = s.multiyear.low_yield
    probes = probe_values(s, ly.column, ly.threshold)
    hist = pd.DataFrame({"subject_id": np.repeat([p[0] for p in probes], 3), "year": np.tile([2022, 2023, 2024], 5),
                         ly.column: np.repeat([subject_value(p[1]) for p in probes], 3)})
    from scoring import multiyear_status

    hist["grade"], hist["electricity_kwh"] = "C", 1e6
    got = multiyear_status(hist, s).groupby("subject_id")["low_yield"].last()
    op = operator.le if ly.inclusive else operator.lt
    exact = Decimal(repr(ly.threshold))
    assert got.to_dict() == {label: op(x, exact) for label, _, x in probes}


def subject_value(v: float) -> float:
    # stored figures carry the noise of a division, as a stored 亩均税收 does
    return v * 6.4 / 6.4


# --------------------------------------------------------------------------- rounding itself


@settings(max_examples=50, deadline=None)
@given(st.decimals(min_value=-10**6, max_value=10**6, places=6, allow_nan=False, allow_infinity=False),
       st.integers(0, 4))
def test_round_half_up_matches_decimal(x, d):
    want = x.quantize(Decimal(1).scaleb(-d), rounding=ROUND_HALF_UP)
    assert Decimal(repr(float(round_half_up(float(x), d)))) == Decimal(repr(float(want)))


def test_round_half_up_is_not_bankers_or_float_noise():
    assert round_half_up(np.array([38.4 / 6.4, 2.675, 0.125, -2.5, 5.995]), 2).tolist() == [6.0, 2.68, 0.13, -2.5, 6.0]
    assert round_half_up(np.array([0.5, 1.5, 2.5]), 0).tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(round_half_up(np.array([np.nan]), 2)[0])


# --------------------------------------------------------------------------- whole evaluations


def _linshu_population(**last):
    """Nine 规上 肥料 enterprises; the last one is probed."""
    n = 9
    rows = {"subject_id": [f"e{i}" for i in range(n)], "industry_code": ["2621"] * n, "scale": ["规上"] * n,
            "land_area_mu": [10.0] * n, "tax_paid": [300.0 + 50 * i for i in range(n)],
            "value_added": [1000.0] * n, "revenue": [9000.0] * n, "energy_tce": [100.0] * n,
            "emission_t": [1.0] * n, "rd_expense": [50.0] * n, "employees": [50.0] * n}
    frame = pd.DataFrame(rows)
    for k, v in last.items():
        frame.loc[n - 1, k] = v
    return frame


@pytest.mark.parametrize("tax,fires", [(100.0, True), (99.99, True), (100.01, False),
                                       (99.9 + 0.1, True)])
def test_linshu_cap_fires_at_exactly_100(tax, fires):
    """临沭 "年度纳税100万元以下…限档": 以下 includes 100."""
    out = engine.evaluate(_linshu_population(tax_paid=tax, value_added=9000.0, energy_tce=10.0),
                          load_scheme("linshu"), 2024).set_index("subject_id")
    rules = [a["rule"] for a in out.loc["e8", "adjustments"]]
    assert ("年纳税100万元以下或重大安全事故限档" in rules) is fires
    if fires:
        rec = next(a for a in out.loc["e8", "adjustments"] if a["kind"] == "限档")
        assert rec["compared"] == f"税收（含还原） {float(Decimal(repr(tax)).quantize(Decimal('0.01'))):.2f} 万元"


@pytest.mark.parametrize("revenue,fires", [(2000.0, True), (1999.99, True), (2000.01, False)])
def test_linshu_lowering_fires_at_exactly_2000(revenue, fires):
    """临沭 "土地面积在20-30亩之间、销售收入2000万元以下的企业进行降档": 以下 includes 2000."""
    out = engine.evaluate(_linshu_population(revenue=revenue, land_area_mu=25.0, tax_paid=400.0),
                          load_scheme("linshu"), 2024).set_index("subject_id")
    rules = [a["rule"] for a in out.loc["e8", "adjustments"]]
    assert ("用地20-30亩且销售收入2000万元以下降档" in rules) is fires


# --------------------------------------------------------------------------- the comparison mechanism


def _cmp(source: str, env: dict, decimals: dict | None = None, default: int = 2):
    from scoring.expr import NUMBER, compile_expr, evaluate_expr

    env = {k: np.asarray(v, dtype=float) for k, v in env.items()}
    e = compile_expr(source, {k: NUMBER for k in env}, want="boolean", allow_group=True)
    groups = GroupContext(np.zeros(len(next(iter(env.values()))), dtype=np.int64), 1)
    return evaluate_expr(e, env, groups=groups,
                         precision=lambda name: (decimals or {}).get(name, default)).tolist()


def test_comparison_rounds_columns_not_constants():
    noisy = 38.4 / 6.4                       # 5.999999999999999
    assert _cmp("x < 6", {"x": [noisy, 5.994, 5.995]}) == [False, True, False]
    assert _cmp("6 > x", {"x": [noisy, 5.994, 5.995]}) == [False, True, False]     # either side
    assert _cmp("5 <= x <= 6", {"x": [4.995, 6.004, 6.005]}) == [True, True, False]  # chains
    # a per-column precision: 亩 to 4 decimals here
    assert _cmp("x >= 5", {"x": [4.99995, 4.99994]}, {"x": 4}) == [True, False]
    # never coarser than the bound is written: 0.2352 compares at 4 decimals, not 2
    assert _cmp("x < 0.2352", {"x": [0.2351, 0.23524, 0.23525]}) == [True, False, False]
    # an expression that is not a plain column compares at the default decimals
    assert _cmp("x / y < 6", {"x": [38.4], "y": [6.4]}) == [False]
    # group_mean(x) at x's precision (the mean 2.00000003 is 2.00: 2 is not below it); missing
    # values compare False
    assert _cmp("x < group_mean(x)", {"x": [1.0, 2.0, 3.0000001, np.nan]}) == [True, False, False, False]
    assert _cmp("x < group_mean(x)", {"x": [1.0, 2.0, 3.0000001, np.nan]}, default=8) == [True, True, False, False]
