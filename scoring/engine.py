"""The scoring engine: one evaluation year of enterprises (经营主体等级 ``enterprise_grade``)
or parcels (宗地等级 ``parcel_grade``) under a :class:`~scoring.scheme.Scheme`.

Pipeline (all vectorised over whole columns; loops run over lists, indicators and rules,
never over subjects — except the final assembly of per-row explanation dicts):

1. tenants merged into their landlord (``merge_into_parcel``), 税收还原 and derived values
   (``tax_per_mu`` 亩均税收, ``va_per_energy`` 单位能耗增加值 …);
2. who is evaluated: 闲置, tenants following their landlord, exempt flags (免评/过渡期),
   new enterprises, minimum land, list membership (first list whose ``when`` holds);
3. per list: indicator values; subjects missing an ``exclude`` indicator leave the
   population; baselines (fixed, by group, or a statistic of this or last year's
   population); points = value / baseline × weight, 倒扣分, × 修正系数, capped at
   cap × weight; missing values by the indicator's rule; + 加分 − 减分 = ``score``;
4. rank within (list, industry group) — groups smaller than ``min_group_size`` are
   pooled into the whole list's ranking; tied scores share the better rank (1, 2, 2, 4);
   percentile p = rank / n × 100; band by p; a band's ``requires`` failing → its
   ``fallback`` (default: the band above);
5. adjustments in the fixed order 提档/降档 → 保档 → 限档 → 定档 (scheme order within
   a kind): relative moves first, then the floor, then the cap (so a 限档 for a safety
   accident beats a 保档), and 定档 has the last word;
6. idle grade, follow-landlord and merged-tenant grades copied, colours, explanations.

Example
-------
>>> import pandas as pd
>>> from scoring import load_scheme, evaluate
>>> subjects = pd.DataFrame({
...     "subject_id": ["a", "b"], "industry_code": ["2611", "3311"], "scale": ["规上", "规上"],
...     "land_area_mu": [10.0, 20.0], "tax_paid": [241.0, 100.0], "value_added": [1400.0, 900.0],
...     "energy_tce": [500.0, 400.0], "emission_t": [0.3, 0.2], "employees": [80, 60],
...     "revenue": [5000.0, 3000.0], "rd_expense": [160.0, 30.0]})
>>> out = evaluate(subjects, load_scheme("huangyan_2022"), 2022)
>>> out[["subject_id", "rank", "percentile", "grade"]].to_dict("records")
[{'subject_id': 'a', 'rank': 1, 'percentile': 50.0, 'grade': 'B'}, {'subject_id': 'b', 'rank': 2, 'percentile': 100.0, 'grade': 'D'}]
"""

from __future__ import annotations

import ast
import datetime as _dt
import gc
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from .expr import BOOLEAN, NUMBER, GroupContext, compile_expr, constant_decimals, evaluate_expr, round_half_up
from .scheme import (
    ADJUSTMENT_KINDS,
    ADJUSTMENT_NAMES,
    ATTRIBUTES,
    DERIVED,
    METRIC_COLUMNS,
    PER_MU,
    Baseline,
    Indicator,
    ListSpec,
    Scheme,
    parse_code_rule,
)

REQUIRED_COLUMNS = ("subject_id", "industry_code", "scale", "land_area_mu")
#: optional input columns and the value used when the column is absent
OPTIONAL_COLUMNS = {
    "flags": pd.NA,
    "founded": pd.NA,
    "land_class": "none",
    "township": pd.NA,
    "is_tenant": False,
    "landlord_id": pd.NA,
    "idle": False,
}
_FLAG_SEPARATORS = r"[,，、;；|/\s]+"
_SCORE_DECIMALS = 9  # scores are compared for ties at 1e-9, so float noise never splits a tie
Kind = Literal["enterprise", "parcel"]


def evaluate(
    subjects: pd.DataFrame,
    scheme: Scheme,
    year: int,
    *,
    previous: pd.DataFrame | None = None,
    kind: Kind = "enterprise",
    explain: bool = True,
) -> pd.DataFrame:
    """Score and grade one year of subjects (enterprises or parcels) under ``scheme``.

    Parameters
    ----------
    subjects : DataFrame, one row per subject
        ``subject_id`` (USCC or 宗地身份码), ``industry_code`` (GB/T 4754), ``scale``
        (规上/规下), ``land_area_mu`` (亩) and optionally ``flags`` (``"免评、过渡期"``),
        ``founded``, ``land_class``, ``township``, ``is_tenant``, ``landlord_id``,
        ``idle``, the metrics ``tax_paid`` … ``electricity_kwh`` (万元, 吨标煤, 吨, 人,
        kWh; NA = missing) and the scheme's ``extra_columns``.
    scheme : Scheme
    year : int
        The evaluation year (ages of new enterprises are counted to 31 December).
    previous : DataFrame, optional
        Last year's subjects, same columns; needed by baselines with ``of: previous``.
    kind : 'enterprise' | 'parcel'
        经营主体等级 or 宗地等级; tenant treatment applies to enterprises only.
    explain : bool
        Build the per-row ``explanation`` dict (the only per-row Python step; turn it
        off for very large runs — every figure is also in the wide columns).

    Returns
    -------
    DataFrame in the input's row order: ``subject_id, list_name, group, evaluated,
    excluded_reason, result_from``, one column per indicator key, ``<key>_points``,
    ``bonus, penalty, score, rank, rank_n, percentile, band_grade, grade, colour,
    colour_hex, adjustments`` (list of dicts) and ``explanation`` (JSON-able dict).
    """
    if kind not in ("enterprise", "parcel"):
        raise ValueError(f"kind must be 'enterprise' or 'parcel', not {kind!r}")
    cur = _prepare(subjects, scheme, year, kind)
    prev = _prepare(previous, scheme, year - 1, kind) if previous is not None else None
    if prev is not None:
        for lst in scheme.lists:
            _indicator_values(prev, scheme, lst)
    for li, lst in enumerate(scheme.lists):
        _indicator_values(cur, scheme, lst)
        _score_list(cur, scheme, li, lst, prev)
    _rank_and_band(cur, scheme)
    _adjust(cur, scheme)
    _special_grades(cur, scheme)
    return _output(cur, scheme, explain)


# --------------------------------------------------------------------------- preparation


@dataclass
class _Run:
    """Working state of one evaluation: full-length arrays, one entry per subject."""

    kind: str
    year: int
    n: int
    ids: np.ndarray
    env: dict[str, np.ndarray]
    flags: "_Flags"
    group: np.ndarray  # industry group index
    group_names: list[str]
    reason: np.ndarray  # int code into reason_texts; -1 = no reason (evaluated if on a list)
    list_idx: np.ndarray  # -1 = on no list
    result_from: np.ndarray
    landlord: np.ndarray
    merged: np.ndarray
    follows: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    points: dict[str, np.ndarray] = field(default_factory=dict)
    detail: dict[tuple[int, str], dict] = field(default_factory=dict)
    items: dict[tuple[int, str, int], np.ndarray] = field(default_factory=dict)
    score: np.ndarray | None = None
    bonus: np.ndarray | None = None
    penalty: np.ndarray | None = None
    rank: np.ndarray | None = None
    rank_n: np.ndarray | None = None
    pooled: np.ndarray | None = None
    band: np.ndarray | None = None
    band_note: np.ndarray | None = None
    grade: np.ndarray | None = None
    adjustments: dict[int, list] = field(default_factory=dict)
    id_series: pd.Series | None = None
    reason_texts: list[str] = field(default_factory=list)
    precision: object = None  # scheme.precision.of, or None: compare unrounded
    landless: np.ndarray | None = None  # land below landless.min_mu (无地)

    @property
    def evaluated(self) -> np.ndarray:
        return (self.list_idx >= 0) & (self.reason < 0)

    def exclude(self, mask: np.ndarray, text: str | np.ndarray, *, replace: bool = False) -> None:
        """Record why subjects are not evaluated; the first reason given is kept."""
        if not replace:
            mask = mask & (self.reason < 0)
        if not mask.any():
            return
        if isinstance(text, str):
            self.reason_texts.append(text)
            self.reason[mask] = len(self.reason_texts) - 1
        else:  # one text per row, e.g. naming each tenant's landlord
            codes, uniques = pd.factorize(text[mask])
            self.reason[mask] = codes + len(self.reason_texts)
            self.reason_texts.extend(uniques)

    def reason_of(self, i: int) -> str | None:
        return self.reason_texts[self.reason[i]] if self.reason[i] >= 0 else None

    def flag(self, name: str) -> np.ndarray:
        return self.flags.has(name)


def _prepare(subjects: pd.DataFrame, scheme: Scheme, year: int, kind: str) -> _Run:
    missing = [c for c in REQUIRED_COLUMNS if c not in subjects.columns]
    if missing:
        raise ValueError(f"subjects lack column(s) {missing}; found {list(subjects.columns)}")
    id_series = subjects["subject_id"].astype("str").reset_index(drop=True)
    ids = id_series.to_numpy(dtype=object)
    if not pd.Index(ids).is_unique:
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[:3].tolist()
        raise ValueError(f"subject_id repeats, e.g. {dup}")
    n = len(subjects)

    def optional(c):
        return subjects[c] if c in subjects.columns else pd.Series(np.full(n, OPTIONAL_COLUMNS[c], dtype=object))

    num = {c: _numeric(subjects, c, n) for c in (*METRIC_COLUMNS, "land_area_mu", *scheme.extra_columns)}
    is_tenant = _bool(optional("is_tenant"))
    tenant_rule = scheme.tenants if kind == "enterprise" else None
    landlord = (_text(optional("landlord_id"), "") if tenant_rule is not None
                else np.full(n, "", dtype=object))  # only tenant treatment reads it
    merged = np.zeros(n, bool)
    follows = np.zeros(n, bool)
    env_text = {
        "scale": _text(subjects["scale"], ""),
        "land_class": _text(optional("land_class"), "none"),
        "township": _text(optional("township"), ""),
        "industry_code": _text(subjects["industry_code"], ""),
    }
    group, group_names = _industry_groups(env_text["industry_code"], scheme)
    env_text["industry_group"] = np.asarray(group_names, dtype=object)[group]
    env: dict[str, np.ndarray] = {**num, **env_text, "is_tenant": is_tenant, "idle": _bool(optional("idle"))}
    run = _Run(kind, year, n, ids, env, _Flags(optional("flags")), group, group_names,
               np.full(n, -1), np.full(n, -1), ids.copy(), landlord, merged, follows,
               id_series=id_series, precision=scheme.precision.of)

    if tenant_rule is not None:
        known = pd.Index(ids).get_indexer(landlord) >= 0
        applies = is_tenant & _when(run, tenant_rule.when) & known & (landlord != ids)
        if tenant_rule.mode == "merge_into_parcel":
            merged[:] = applies
            _merge_tenants(run)  # before derived values, so 亩均税收 covers the whole parcel
        elif tenant_rule.mode == "follow_landlord":
            follows[:] = applies
    run.landless = _derive(env, year, optional("founded"), scheme)
    _eligibility(run, scheme)
    _assign_lists(run, scheme)
    return run


def _text(series: pd.Series, fill: str) -> np.ndarray:
    """A text column as an object array of str (``fill`` for missing), via its distinct values."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    stripped = pd.Index(uniques).astype("str").str.strip().to_numpy(dtype=object)
    return np.append(stripped, np.array([fill], dtype=object))[codes]  # code -1 → fill


def _labels(codes: np.ndarray, names: list | None = None) -> pd.api.extensions.ExtensionArray:
    """A ``str`` column from integer codes into ``names`` (-1 or a None name → missing).

    With ``names=None``, ``codes`` is already an object array of str. Going through the
    distinct values keeps million-row text columns cheap to build.
    """
    if names is None:
        codes, uniques = pd.factorize(codes, use_na_sentinel=True)
        names = list(uniques)
    table = pd.array(list(names), dtype="str")
    return table.take(np.asarray(codes, dtype=np.int64), allow_fill=True)


def _bool(series: pd.Series) -> np.ndarray:
    return series.fillna(False).astype(bool).to_numpy()


class _Flags:
    """Flags such as ``"免评、过渡期"``, parsed once per distinct string (a county has few)."""

    def __init__(self, series: pd.Series):
        self.codes, uniques = pd.factorize(series, use_na_sentinel=True)
        self.sets = [frozenset(t for t in re.split(_FLAG_SEPARATORS, str(u)) if t) for u in uniques]
        self.sets.append(frozenset())  # code -1: no flags

    def has(self, name: str) -> np.ndarray:
        return np.array([name in s for s in self.sets], dtype=bool)[self.codes]


def _numeric(frame: pd.DataFrame, column: str, n: int) -> np.ndarray:
    if column not in frame.columns:
        return np.full(n, np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _merge_tenants(run: _Run) -> None:
    """遂昌: a tenant's figures (and its split land share) are added to its landlord's row."""
    pos = pd.Series(np.arange(run.n), index=run.ids)
    target = pos.reindex(run.landlord[run.merged]).to_numpy()
    for c in (*METRIC_COLUMNS, "land_area_mu"):
        x = run.env[c]
        add = np.bincount(target, weights=np.nan_to_num(x[run.merged]), minlength=run.n)
        has = np.bincount(target, weights=np.isfinite(x[run.merged]), minlength=run.n) > 0
        run.env[c] = np.where(has, np.nan_to_num(x) + add, x)


def _derive(env: dict[str, np.ndarray], year: int, founded: pd.Series, scheme: Scheme) -> np.ndarray:
    """税收还原 and the named derived values (see :data:`scoring.scheme.DERIVED`).

    Returns the 无地 mask: land (亩) missing, or below ``scheme.landless.min_mu`` once rounded
    to the land precision. Per-mu values are missing (NaN) for those rows — they are never
    divided by absent or negligible land (a degenerate parcel of 2e-8 m² would otherwise give
    10¹² 万元/亩).
    """

    def div(a, b, scale=1.0):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b == 0, np.nan, a * scale / b)

    env["tax"] = env["tax_paid"] + np.nan_to_num(env["tax_refund"])
    env["land_mu"] = env["land_area_mu"]
    landless = _landless(env["land_area_mu"], scheme)
    land = np.where(landless, np.nan, env["land_area_mu"])
    env["tax_per_mu"] = div(env["tax"], land)
    env["va_per_mu"] = div(env["value_added"], land)
    env["output_per_mu"] = div(env["output_value"], land)
    env["revenue_per_mu"] = div(env["revenue"], land)
    env["va_per_energy"] = div(env["value_added"], env["energy_tce"])
    env["va_per_emission"] = div(env["value_added"], env["emission_t"])
    env["va_per_employee"] = div(env["value_added"], env["employees"])
    env["rd_share"] = div(env["rd_expense"], env["revenue"], 100.0)
    env["tax_per_kwh"] = div(env["tax"], env["electricity_kwh"], 1e4)
    env["output_per_kwh"] = div(env["output_value"], env["electricity_kwh"], 1e4)
    born = pd.to_datetime(founded, errors="coerce").to_numpy().astype("datetime64[D]")
    days = (np.datetime64(_dt.date(year, 12, 31), "D") - born).astype("float64")
    env["age_years"] = np.where(np.isnat(born), np.nan, days / 365.25)
    return landless


def countable_land(land_mu, scheme: Scheme) -> np.ndarray:
    """Land (亩) a per-mu value may be divided by: NaN where the scheme counts it as no land
    (missing, or below ``scheme.landless.min_mu`` at the land precision). For figures computed
    outside :func:`evaluate` (the stored 亩均税收 of a rating), so they follow the same rule."""
    land = np.asarray(pd.to_numeric(pd.Series(land_mu), errors="coerce"), dtype=float)
    return np.where(_landless(land, scheme), np.nan, land)


def _landless(land_mu: np.ndarray, scheme: Scheme) -> np.ndarray:
    """无地: land missing or, rounded half-up to the land precision, below ``landless.min_mu`` 亩."""
    cfg = scheme.landless
    decimals = max(scheme.precision.of("land_mu"), constant_decimals(cfg.min_mu))
    with np.errstate(invalid="ignore"):
        return ~(round_half_up(land_mu, decimals) >= cfg.min_mu)  # NaN → landless


def _industry_groups(codes: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, list[str]]:
    """GB/T 4754 code → industry group index; the longest matching prefix wins.

    Codes may carry the section letter (``C2611``); only the digits are read. The rule is
    resolved once per distinct code and broadcast, so this is linear in the rows.
    """
    names = [scheme.industry_groups.default] + [g.name for g in scheme.industry_groups.groups]
    rules = [(parse_code_rule(c), gi + 1) for gi, g in enumerate(scheme.industry_groups.groups)
             for c in g.codes]
    inverse, uniques = pd.factorize(codes)
    digits = [(re.search(r"\d{2,4}", str(u)) or [""])[0] for u in uniques]

    def lookup(d: str) -> int:
        best, best_len = 0, 0
        for (lo, hi), gi in rules:
            k = len(lo)
            if len(d) >= k > best_len and int(lo) <= int(d[:k]) <= int(hi):
                best, best_len = gi, k
        return best

    table = np.array([lookup(d) for d in digits] + [0], dtype=np.int64)
    return table[inverse], names


def _eligibility(run: _Run, scheme: Scheme) -> None:
    """Reasons for not evaluating, in priority order (the first that applies is kept)."""
    env, el = run.env, scheme.eligibility
    run.exclude(env["idle"], scheme.idle.reason)
    if run.merged.any():
        run.exclude(run.merged, np.char.add("并入地主", run.landlord.astype(str)).astype(object))
    run.exclude(run.follows, "随地主定档")
    for f in el.exempt_flags:
        run.exclude(run.flag(f), f)
    if el.new_enterprise_years:
        run.exclude(env["age_years"] < el.new_enterprise_years, f"新办企业（成立不足{el.new_enterprise_years:g}年）")
    if scheme.landless.treatment == "exclude":
        what = "不计亩均指标，不参与有地企业排名" if run.kind == "enterprise" else "不计亩均指标，不参与宗地排名"
        text = np.full(run.n, None, dtype=object)  # texts only where needed: few rows are 无地
        text[run.landless] = _landless_text(env["land_area_mu"][run.landless], scheme, what, run.kind)
        run.exclude(run.landless, text)
    if el.min_land_mu > 0:
        # 用地不足 X 亩 (不足 excludes X: exactly X 亩 is evaluated), at the land precision
        land = _rounded(run, "land_mu", env["land_area_mu"], el.min_land_mu)
        run.exclude(np.isnan(land), "用地面积缺失")
        run.exclude(land < el.min_land_mu, f"用地不足{el.min_land_mu:g}亩")


def _rounded(run: _Run, name: str | None, values: np.ndarray, *bounds: float) -> np.ndarray:
    """``values`` as compared with ``bounds``: at the published decimals of ``name``, never
    coarser than the bounds are written (see :class:`scoring.scheme.Precision`)."""
    decimals = max([run.precision(name), *(constant_decimals(b) for b in bounds)])
    return round_half_up(values, decimals)


def _landless_text(land: np.ndarray, scheme: Scheme, what: str, kind: str = "enterprise") -> np.ndarray:
    """Per-row reason (Chinese, for explanations): ``无地企业（用地 0.00 亩，不足 0.01 亩）：…``;
    for a parcel ``宗地面积过小（0.00 亩，不足 0.01 亩）：…``."""
    d = max(scheme.precision.of("land_mu"), constant_decimals(scheme.landless.min_mu))
    if kind == "parcel":
        head, missing, area = "宗地面积过小（", "面积缺失", ""
    else:
        head, missing, area = "无地企业（", "用地面积缺失", "用地 "
    # formatted once per distinct value: a county has few, and this runs over whole columns
    codes, uniques = pd.factorize(round_half_up(land, d), use_na_sentinel=True)
    texts = [f"{head}{area}{v:.{d}f} 亩，不足 {scheme.landless.min_mu:g} 亩）：{what}" for v in uniques]
    texts.append(f"{head}{missing}）：{what}")  # code -1: NaN
    return np.asarray(texts, dtype=object)[codes]


def _assign_lists(run: _Run, scheme: Scheme) -> None:
    """Each eligible subject joins the first list whose ``when`` holds (scheme order)."""
    open_ = run.reason < 0
    tenants = scheme.tenants if run.kind == "enterprise" else None
    tenant_list = tenants.list if tenants and tenants.mode == "separate_list" else None
    is_separate_tenant = (run.env["is_tenant"] & _when(run, tenants.when)
                          if tenant_list else np.zeros(run.n, bool))
    landless_list = scheme.landless.list if scheme.landless.treatment == "list" else None
    idx = np.full(run.n, -1)
    for li in reversed(range(len(scheme.lists))):
        lst = scheme.lists[li]
        if run.kind not in lst.kinds:
            continue
        ok = open_ & _when(run, lst.when)
        if tenant_list:  # tenants only on their own list, and only tenants on it
            ok &= is_separate_tenant if lst.name == tenant_list else ~is_separate_tenant
        if landless_list:  # 无地 subjects only on the 无地 list, and only they on it
            ok &= run.landless if lst.name == landless_list else ~run.landless
        idx = np.where(ok, li, idx)
    run.list_idx = idx
    off = open_ & (idx < 0)
    if off.any():
        # say which list conditions failed, with the values compared (规下「land_mu >= 5」, 4.99 亩)
        lists = [lst for lst in scheme.lists if run.kind in lst.kinds]
        rows = np.flatnonzero(off)
        text = np.full(run.n, None, dtype=object)
        head = "不在评价名单（" + "；".join(f"{lst.name}：{lst.when}" for lst in lists)
        union = " or ".join(f"({lst.when})" for lst in lists) or "False"
        shown = _compared(run, scheme, union, {}, rows)
        text[rows] = [head + ("" if v == "—" else f"；比较值：{v}") + "）" for v in shown]
        run.exclude(off, text)


def _when(run: _Run, source: str, extra_env: dict | None = None, groups: GroupContext | None = None,
          extra_names: dict | None = None) -> np.ndarray:
    names = dict(ATTRIBUTES)
    names.update({k: NUMBER for k, v in run.env.items() if k not in names})
    names.update(extra_names or {})
    expr = compile_expr(source, names, want=BOOLEAN, allow_group=groups is not None)
    return evaluate_expr(expr, {**run.env, **(extra_env or {})}, flag=run.flag, groups=groups,
                         length=run.n, precision=run.precision)


def _number(run: _Run, source: str) -> np.ndarray:
    names = {**ATTRIBUTES, **{k: NUMBER for k in run.env if k not in ATTRIBUTES}}
    return evaluate_expr(compile_expr(source, names, want=NUMBER), run.env, flag=run.flag, length=run.n)


# --------------------------------------------------------------------------- scoring


def _indicator_values(run: _Run, scheme: Scheme, lst: ListSpec) -> None:
    """Indicator values of one list; subjects missing an ``exclude`` indicator leave it."""
    li = scheme.lists.index(lst)
    on = run.list_idx == li
    for ind in lst.indicators:
        v = _number(run, ind.formula)
        arr = run.values.setdefault(ind.key, np.full(run.n, np.nan))
        arr[on] = v[on]
        if (ind.missing or scheme.missing) == "exclude":
            run.exclude(on & ~np.isfinite(arr), f"缺失指标：{ind.title}")


def _group_context(run: _Run, mask: np.ndarray) -> GroupContext:
    return GroupContext(np.where(mask, run.group, -1), len(run.group_names))


def _score_list(run: _Run, scheme: Scheme, li: int, lst: ListSpec, prev: _Run | None) -> None:
    n = run.n
    m = (run.list_idx == li) & (run.reason < 0)
    groups = _group_context(run, m)
    keys_env = {ind.key: run.values[ind.key] for ind in lst.indicators}
    key_names = {k: NUMBER for k in keys_env}
    if run.score is None:
        run.score, run.bonus, run.penalty = (np.full(n, np.nan) for _ in range(3))
    total = np.zeros(n)
    for ind in lst.indicators:
        value = run.values[ind.key]
        base = _baseline(run, li, ind, m, prev)
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = np.where(base > 0, value / base * ind.weight, np.nan)
        negative = (_when(run, ind.negative.when, keys_env, groups, key_names) & m
                    if ind.negative else np.zeros(n, bool))
        neg_note = np.full(n, None, dtype=object)
        if negative.any():
            hit = np.flatnonzero(negative)
            neg_note[hit] = _compared(run, scheme, ind.negative.when, keys_env, hit, groups)
        # 倒扣分 (临沭): below the baseline the item takes points off instead of adding them
        pts = np.where(negative, raw - ind.weight, raw)
        coef = _coefficient(run, ind)
        pts = pts * coef
        capped = np.zeros(n, bool)
        if ind.cap is not None:
            capped = pts > ind.cap * ind.weight
            pts = np.where(capped, ind.cap * ind.weight, pts)
        missing = m & ~np.isfinite(pts)
        rule = ind.missing or scheme.missing
        if rule == "population_average_score":
            # 黄岩: a missing item scores the average of that item over the list's population
            fill = np.nanmean(pts[m & ~missing]) if (m & ~missing).any() else 0.0
        else:
            fill = 0.0
        pts = np.where(missing, fill, pts)
        arr = run.points.setdefault(ind.key, np.full(n, np.nan))
        arr[m] = pts[m]
        total += np.where(m, pts, 0.0)
        run.detail[(li, ind.key)] = {
            "baseline": base, "coef": coef, "negative": negative, "capped": capped,
            "missing": missing, "rule": rule, "raw": raw, "negative_note": neg_note,
        }
    plus, minus = np.zeros(n), np.zeros(n)
    for kind, acc in (("bonus", plus), ("penalty", minus)):
        for k, item in enumerate(getattr(lst, kind)):
            hit = _when(run, item.when, keys_env, groups, key_names) & m
            run.items[(li, kind, k)] = hit
            acc += np.where(hit, item.points, 0.0)
    run.bonus[m], run.penalty[m] = plus[m], minus[m]
    run.score[m] = (total + plus - minus)[m]


def _baseline(run: _Run, li: int, ind: Indicator, m: np.ndarray, prev: _Run | None) -> np.ndarray:
    """Per-row baseline: fixed, by industry group, or a statistic of a population."""
    b: Baseline = ind.baseline
    if b.kind == "fixed":
        return np.full(run.n, b.value)
    if b.kind == "groups":
        table = np.array([(b.groups or {}).get(g, b.default) for g in run.group_names])
        return table[run.group]
    if b.of == "previous":
        if prev is None:
            raise ValueError(f"baseline of {ind.key!r} is last year's {b.stat}: pass previous=")
        pop_mask = (prev.list_idx == li) & (prev.reason < 0)
        values, groups = prev.values[ind.key][pop_mask], prev.group[pop_mask]
        where = "last year's"
    else:
        values, groups = run.values[ind.key][m], run.group[m]
        where = "this year's"
    ok = np.isfinite(values)
    values, groups = values[ok], groups[ok]
    if values.size == 0:
        if b.of == "current":  # nobody left on this list: no points are needed
            return np.full(run.n, np.nan)
        raise ValueError(f"baseline of {ind.key!r}: {where} population of list #{li} "
                         f"has no value to take the {b.stat} of")
    overall = _stat(pd.Series(values), b)
    if b.scope == "list":
        return np.full(run.n, overall)
    per_group = pd.Series(values).groupby(groups).pipe(lambda g: _stat(g, b))
    # a group absent from the population falls back to the list's statistic
    table = per_group.reindex(range(len(run.group_names))).fillna(overall).to_numpy()
    return table[run.group]


def _stat(x, b: Baseline):
    if b.stat == "mean":
        return x.mean()
    if b.stat == "median":
        return x.median()
    return x.quantile(b.p / 100.0)  # linear interpolation between order statistics


def _coefficient(run: _Run, ind: Indicator) -> np.ndarray:
    """修正系数: ``min`` ≤ metric < ``max`` → factor; outside every band (or missing) → 1."""
    if ind.coefficient is None:
        return np.ones(run.n)
    metric = _number(run, ind.coefficient.metric)
    src = ind.coefficient.metric.strip()
    bounds = [b for band in ind.coefficient.bands for b in (band.min, band.max) if b is not None]
    # "100 万元（含）–500 万元": compared at the published precision of the metric
    metric = _rounded(run, src if src in run.env else None, metric, *bounds)
    coef = np.ones(run.n)
    for band in ind.coefficient.bands:
        hi = np.inf if band.max is None else band.max
        coef = np.where((metric >= band.min) & (metric < hi), band.factor, coef)
    return coef


# --------------------------------------------------------------------------- ranking and bands


def _rank_and_band(run: _Run, scheme: Scheme) -> None:
    n = run.n
    ev = run.evaluated
    run.rank, run.rank_n = np.full(n, -1), np.full(n, 0)
    run.pooled = np.zeros(n, bool)
    run.band = np.full(n, -1)
    run.band_note = np.full(n, None, dtype=object)
    order = {g: i for i, g in enumerate(scheme.grades)}
    for li, lst in enumerate(scheme.lists):
        m = ev & (run.list_idx == li)
        if not m.any():
            continue
        idx = np.flatnonzero(m)
        score = pd.Series(np.round(run.score[idx], _SCORE_DECIMALS))
        key = run.group[idx] if lst.rank_within == "group" else np.zeros(idx.size, np.int64)
        sizes = np.bincount(key)[key]
        pooled = sizes < lst.min_group_size
        key = np.where(pooled, -1, key)  # small groups rank against the whole list
        if sizes.min() == idx.size:  # one group: its ranking is the list's
            rank = score.rank(method="min", ascending=False).to_numpy()
        else:
            rank = score.groupby(key).rank(method="min", ascending=False).to_numpy()
            if pooled.any():
                rank = np.where(pooled, score.rank(method="min", ascending=False).to_numpy(), rank)
        rank = rank.astype(np.int64)
        size = np.where(pooled, idx.size, sizes)
        run.rank[idx], run.rank_n[idx], run.pooled[idx] = rank, size, pooled
        pct = rank * 100.0 / size
        band = np.full(idx.size, -1)
        for b in lst.bands:
            lo = pct >= b.from_ if b.from_inclusive else pct > b.from_
            hi = pct <= b.to if b.to_inclusive else pct < b.to
            band = np.where(lo & hi & (band < 0), order[b.grade], band)
        for bi, b in enumerate(lst.bands):
            if not b.requires:
                continue
            env = {ind.key: run.values[ind.key] for ind in lst.indicators}
            names = {k: NUMBER for k in env} | {"score": NUMBER}
            ok = _when(run, b.requires, {**env, "score": run.score}, _group_context(run, m), names)[idx]
            fallback = b.fallback or lst.bands[max(bi - 1, 0)].grade
            cand = band == order[b.grade]
            fail = cand & ~ok
            band = np.where(fail, order[fallback], band)
            shown = _compared(run, scheme, b.requires, env, idx[cand])
            for i, text, failed in zip(idx[cand].tolist(), shown, fail[cand].tolist()):
                run.band_note[i] = (f"{b.grade}档附加条件（{b.requires}）不满足（比较值：{text}），改入{fallback}档"
                                    if failed else f"{b.grade}档附加条件（{b.requires}）满足（比较值：{text}）")
        run.band[idx] = band
    run.grade = run.band.copy()


def _adjust(run: _Run, scheme: Scheme) -> None:
    """定档/保档/降档/限档/提档 in :data:`ADJUSTMENT_KINDS` order; every firing recorded."""
    if not scheme.adjustments:
        return
    order = {g: i for i, g in enumerate(scheme.grades)}
    worst = len(scheme.grades) - 1
    keys = {ind.key for lst in scheme.lists for ind in lst.indicators}
    env = {k: run.values[k] for k in keys} | {"score": run.score}
    names = {k: NUMBER for k in env}
    ev = run.evaluated
    # group_mean() in a rule averages over the subject's own (list, industry group)
    n_groups = len(scheme.lists) * len(run.group_names)
    groups = GroupContext(np.where(ev, run.list_idx * len(run.group_names) + run.group, -1), n_groups)
    rules = sorted(enumerate(scheme.adjustments), key=lambda r: (ADJUSTMENT_KINDS.index(r[1].kind), r[0]))
    for _, rule in rules:
        hit = ev & _when(run, rule.when, env, groups, names)
        if rule.lists is not None:
            hit &= np.isin(run.list_idx, [i for i, lst in enumerate(scheme.lists) if lst.name in rule.lists])
        before = run.grade
        g = order.get(rule.grade, 0)
        after = {
            "raise": np.maximum(before - rule.steps, 0),
            "lower": np.minimum(before + rule.steps, worst),
            "keep": np.minimum(before, g),
            "cap": np.maximum(before, g),
            "fix": np.full(run.n, g),
        }[rule.kind]
        run.grade = np.where(hit, after, before)
        fired = np.flatnonzero(hit)
        shown = _compared(run, scheme, rule.when, env, fired)
        for i, text in zip(fired.tolist(), shown):  # only rows where the rule fired
            run.adjustments.setdefault(int(i), []).append({
                "rule": rule.name, "kind": ADJUSTMENT_NAMES[rule.kind], "when": rule.when,
                "compared": text,
                "from": scheme.grades[before[i]], "to": scheme.grades[run.grade[i]],
                "changed": bool(before[i] != run.grade[i]),
            })


def _compared(run: _Run, scheme: Scheme, source: str, extra: dict, rows: np.ndarray,
              groups: GroupContext | None = None) -> list[str]:
    """For explanations: the values a condition compared, rounded as compared, per row
    (``亩均税收 6.00 万元/亩``, ``同组平均亩均税收 7.10 万元/亩``); flags and text are not shown."""
    if len(rows) == 0:
        return []
    env = {**run.env, **extra}
    names = {**ATTRIBUTES, **{k: NUMBER for k in env if k not in ATTRIBUTES}}
    expr = compile_expr(source, names, want=BOOLEAN, allow_group=True)
    bounds = [c.value for c in _constants(expr.tree)]
    titles = {ind.key: (ind.title, ind.unit) for lst in scheme.lists for ind in lst.indicators}

    def title_of(name):
        if name == "score":
            return "总分", ""
        return titles.get(name) or DERIVED.get(name, (name, ""))[:2]

    shown = [(name, *title_of(name), np.asarray(env[name], dtype=float))
             for name in sorted(n for n in expr.names if names.get(n) == NUMBER)]
    if groups is not None:  # group_mean(x) / group_median(x): the statistic it compared with
        for node in ast.walk(expr.tree):
            if isinstance(node, ast.Call) and node.func.id in ("group_mean", "group_median") \
                    and isinstance(node.args[0], ast.Name):
                title, unit = title_of(node.args[0].id)
                stat = "同组平均" if node.func.id == "group_mean" else "同组中位"
                sub = compile_expr(ast.unparse(node), names, want=NUMBER, allow_group=True)
                shown.append((node.args[0].id, stat + title, unit,
                              evaluate_expr(sub, env, flag=run.flag, groups=groups, length=run.n)))
    parts = []
    for name, title, unit, column in shown:
        d = max([run.precision(name), *(constant_decimals(b) for b in bounds)])
        values = round_half_up(column[rows], d)
        suffix = f" {unit}" if unit else ""
        parts.append([f"{title} 缺失" if np.isnan(v) else f"{title} {v:.{d}f}{suffix}" for v in values.tolist()])
    if not parts:
        return ["—"] * len(rows)
    return ["，".join(p[j] for p in parts) for j in range(len(rows))]


def _constants(tree: ast.AST) -> list[ast.Constant]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)]


def _special_grades(run: _Run, scheme: Scheme) -> None:
    """闲置 grade; tenants following (江山) or merged into (遂昌) their landlord."""
    order = {g: i for i, g in enumerate(scheme.grades)}
    if scheme.idle.grade is not None:
        run.grade[run.env["idle"]] = order[scheme.idle.grade]
    sharing = run.merged | run.follows
    if sharing.any():
        pos = pd.Series(np.arange(run.n), index=run.ids)
        src = pos.reindex(run.landlord[sharing]).to_numpy()
        run.grade[sharing] = run.grade[src]
        run.result_from[sharing] = run.ids[src]
        orphan = sharing.copy()
        orphan[sharing] = run.grade[src] < 0
        run.exclude(orphan & run.follows, "随地主定档（地主未定档）", replace=True)
        for attr in ("score", "bonus", "penalty"):
            arr = getattr(run, attr)
            arr[run.merged] = arr[pos.reindex(run.landlord[run.merged]).to_numpy()]


# --------------------------------------------------------------------------- output


def _output(run: _Run, scheme: Scheme, explain: bool) -> pd.DataFrame:
    ev = run.evaluated
    copy_from = np.arange(run.n)
    if run.merged.any():
        copy_from[run.merged] = pd.Index(run.ids).get_indexer(run.landlord[run.merged])

    def shared(arr):  # merged tenants show their landlord's result
        return arr[copy_from]

    grade_codes = run.grade
    colours = [scheme.colours[g] if g in scheme.colours else None for g in scheme.grades]
    rank = shared(run.rank)
    rank_n = shared(run.rank_n)
    out = {
        "subject_id": run.id_series.array,
        "list_name": _labels(shared(run.list_idx), [lst.name for lst in scheme.lists]),
        "group": _labels(shared(run.group), run.group_names),
        "evaluated": ev,
        "excluded_reason": _labels(run.reason, run.reason_texts),
        "result_from": (pd.array(run.result_from, dtype="str") if (run.merged | run.follows).any()
                        else run.id_series.array),
    }
    for key, v in run.values.items():
        out[key] = shared(v)
    for key, p in run.points.items():
        out[f"{key}_points"] = shared(p)
    out |= {
        "bonus": run.bonus, "penalty": run.penalty, "score": run.score,
        "rank": pd.array(rank, dtype="Int64"),
        "rank_n": pd.array(rank_n, dtype="Int64"),
        "percentile": np.where(rank > 0, rank * 100.0 / np.maximum(rank_n, 1), np.nan),
        "band_grade": _labels(shared(run.band), scheme.grades),
        "grade": _labels(grade_codes, scheme.grades),
        "colour": _labels(grade_codes, [c.name if c else None for c in colours]),
        "colour_hex": _labels(grade_codes, [c.hex if c else None for c in colours]),
    }
    unranked = rank <= 0
    out["rank"][unranked] = pd.NA
    out["rank_n"][unranked] = pd.NA
    frame = pd.DataFrame(out)
    # millions of small containers: keep the cyclic GC from rescanning them while we build
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        adjustments = np.empty(run.n, dtype=object)
        adjustments[:] = [[] for _ in range(run.n)]
        for i, recs in run.adjustments.items():
            adjustments[i] = recs
        frame["adjustments"] = adjustments
        if explain:
            from .explain import build_explanations

            explanations = np.empty(run.n, dtype=object)
            explanations[:] = build_explanations(run, scheme, frame)
            frame["explanation"] = explanations
    finally:
        if gc_was_enabled:
            gc.enable()
    return frame
