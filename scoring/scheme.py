"""Evaluation schemes (评价办法): YAML files parsed into validated pydantic models.

A scheme says who is evaluated, how subjects are split into lists (规上; 规下 ≥ 3 亩;
租赁企业 …), the indicators of each list (formula, baseline, weight, cap, missing-value
rule, correction coefficients, 倒扣分), bonus/penalty items, grade bands by rank
percentile, adjustment rules (定档/保档/降档/限档/提档), tenant treatment, idle land,
warning colours and the multi-year rules (差别化电价, 低产田).

Two settings keep grades off float noise and absent land (issue 11): ``precision`` — every
comparison a scheme states is made on values rounded half-up to the decimals the 办法 publishes
(default 2), and ``landless`` — land below ``min_mu`` (default 0.01 亩) is no land, so no per-mu
value is computed and the subject is excluded as 无地企业 or put on the scheme's 无地 list. Bound
direction is the operator written: Chinese legal usage 以上/以下 include the number (``>=``/``<=``),
低于/不足/超过 exclude it (``<``/``>``); the presets quote the source wording of each bound.

Errors name the file and the key path, e.g.::

    scoring/presets/huangyan_2022.yaml: lists[0].indicators[2].weight: must be ≥ 0

Example
-------
>>> scheme = load_scheme("huangyan_2022")
>>> scheme.lists[0].indicators[0].baseline.value
24.097
>>> len(scheme_hash(scheme))
64
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .expr import BOOLEAN, NUMBER, TEXT, ExprError, compile_expr

def _presets_dir():
    return resources.files("scoring").joinpath("presets")

#: metric columns of the input (万元, 吨标煤, 吨, 人, kWh; NA = missing)
METRIC_COLUMNS = (
    "tax_paid",  # 实缴税金 万元
    "tax_refund",  # 税收还原额 万元 (留抵退税、出口退税、政策性减免)
    "value_added",  # 工业增加值 万元
    "revenue",  # 营业收入 万元
    "output_value",  # 工业总产值 万元
    "energy_tce",  # 综合能耗 吨标煤
    "emission_t",  # 排放当量 吨
    "rd_expense",  # 研发经费 万元
    "employees",  # 从业人员 人
    "electricity_kwh",  # 用电量 kWh
)

#: derived values every formula may use: name -> (中文, unit, definition)
DERIVED = {
    "tax": ("税收（含还原）", "万元", "tax_paid + tax_refund; a missing refund counts as 0"),
    "land_mu": ("用地面积", "亩", "land_area_mu"),
    "tax_per_mu": ("亩均税收", "万元/亩", "tax / land_mu"),
    "va_per_mu": ("亩均增加值", "万元/亩", "value_added / land_mu"),
    "output_per_mu": ("亩均产值", "万元/亩", "output_value / land_mu"),
    "revenue_per_mu": ("亩均销售收入", "万元/亩", "revenue / land_mu"),
    "va_per_energy": ("单位能耗增加值", "万元/吨标煤", "value_added / energy_tce"),
    "va_per_emission": ("单位排放增加值", "万元/吨", "value_added / emission_t"),
    "va_per_employee": ("全员劳动生产率", "万元/人", "value_added / employees"),
    "rd_share": ("研发经费占营收比", "%", "rd_expense / revenue × 100"),
    "tax_per_kwh": ("单位用电税收", "元/kWh", "tax × 10⁴ / electricity_kwh"),
    "output_per_kwh": ("单位电耗产值", "元/kWh", "output_value × 10⁴ / electricity_kwh"),
    "age_years": ("成立年限", "年", "years from founded to 31 Dec of the evaluation year"),
}

#: text / boolean attributes usable in conditions
ATTRIBUTES = {
    "scale": TEXT,  # 规上 / 规下
    "land_class": TEXT,  # I / II / III / none (苏州工业园区 I 类 II 类 III 类)
    "township": TEXT,
    "industry_code": TEXT,
    "industry_group": TEXT,
    "is_tenant": BOOLEAN,
    "idle": BOOLEAN,
}

#: adjustment kinds in the order they are applied (see :mod:`scoring.engine`)
ADJUSTMENT_KINDS = ("raise", "lower", "keep", "cap", "fix")
ADJUSTMENT_NAMES = {"raise": "提档", "lower": "降档", "keep": "保档", "cap": "限档", "fix": "定档"}
MISSING_RULES = ("zero", "population_average_score", "exclude")
#: values that divide by land (亩): never computed for land below ``landless.min_mu``
PER_MU = ("tax_per_mu", "va_per_mu", "output_per_mu", "revenue_per_mu")


class SchemeError(ValueError):
    """A scheme file is invalid; ``errors`` holds ``(key path, message)`` pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source, self.errors = source, errors
        super().__init__("\n".join(f"{source}: {path}: {msg}" if path else f"{source}: {msg}"
                                   for path, msg in errors))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Source(_Model):
    county: str
    year: int
    seed: str
    note: str | None = None


class Precision(_Model):
    """比较精度: every comparison a scheme states is made on values rounded half-up (0.005 → 0.01,
    not Python's round-half-even) to the decimals the 办法 publishes, never on binary float noise
    (38.4 万元 / 6.4 亩 = 5.999999999999999 is compared as 6.00).

    ``decimals`` applies to every compared value not named in ``columns`` (a column, a derived
    value such as ``tax_per_mu`` 万元/亩 or ``land_mu`` 亩, an indicator key, or ``score``); a
    comparison is never made coarser than the bound it states (``x < 0.2352`` compares at 4
    decimals). Default: 2 decimals (万元, 亩, 万元/亩 as the 办法 publish them).
    """

    decimals: int = Field(2, ge=0, le=8)
    columns: dict[str, int] = {}
    rounding: Literal["half_up"] = "half_up"

    def of(self, name: str) -> int:
        return self.columns.get(name, self.decimals)


class Landless(_Model):
    """无地企业: land below ``min_mu`` 亩 (after rounding to the land precision) counts as no land.

    No per-mu value (亩均税收 …) is computed for such a subject, so it never gets per-mu points.
    ``treatment: exclude`` (default) leaves it out of the evaluation with the reason 无地企业;
    ``treatment: list`` puts it on the list named ``list`` (its own ranking, as 苏州工业园区
    evaluates 有地企业 and 无地企业 separately, seed 001), and keeps it off every other list.
    """

    min_mu: float = Field(0.01, gt=0)
    treatment: Literal["exclude", "list"] = "exclude"
    list: str | None = None


class Eligibility(_Model):
    """参评范围: flags that exempt (免评, 过渡期), new enterprises, minimum land."""

    exempt_flags: list[str] = []
    new_enterprise_years: float | None = Field(None, ge=0)
    min_land_mu: float = Field(0, ge=0)


class GroupRule(_Model):
    """An industry group: GB/T 4754 code prefixes (2–4 digits) or ranges ``25-28``."""

    name: str
    codes: list[str] = Field(min_length=1)


class IndustryGroups(_Model):
    default: str = "全部"
    groups: list[GroupRule] = []


class Baseline(_Model):
    """基准值: a number, numbers by industry group, or a population statistic.

    Written as ``24.097``; ``{default: 4.0, groups: {石油化工: 1.2}}``; or
    ``{stat: mean|median|percentile, p: 75, of: current|previous, scope: list|group}``.
    """

    value: float | None = None
    default: float | None = None
    groups: dict[str, float] | None = None
    stat: Literal["mean", "median", "percentile"] | None = None
    p: float | None = None
    of: Literal["current", "previous"] = "current"
    scope: Literal["list", "group"] = "list"

    @model_validator(mode="before")
    @classmethod
    def _number(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"value": data}
        return data

    @property
    def kind(self) -> str:
        if self.stat is not None:
            return "stat"
        return "groups" if self.groups is not None else "fixed"


class CoefficientBand(_Model):
    """``min`` ≤ metric < ``max`` → points × ``factor``."""

    min: float
    max: float | None = None
    factor: float = Field(gt=0)


class Coefficient(_Model):
    """修正系数 by bands of a metric (临沭 R&D 支出 100–500 万元 ×1.05 …)."""

    metric: str
    bands: list[CoefficientBand] = Field(min_length=1)


class Negative(_Model):
    """倒扣分: for rows meeting ``when`` the item scores (value/baseline − 1) × weight."""

    when: str


class Indicator(_Model):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    unit: str = ""
    formula: str
    weight: float = Field(ge=0)
    baseline: Baseline
    cap: float | None = Field(None, gt=0)  # a multiple of the weight; no cap by default
    missing: Literal["zero", "population_average_score", "exclude"] | None = None
    coefficient: Coefficient | None = None
    negative: Negative | None = None


class Item(_Model):
    """A bonus (加分) or penalty (减分) item: ``points`` when ``when`` holds."""

    name: str
    when: str
    points: float = Field(ge=0)  # penalties are subtracted, so both are written ≥ 0


class Band(_Model):
    """A grade band over the rank percentile p = rank / n × 100 (1 = best).

    Bounds are (from, to] by default. ``requires`` is an extra condition (永康: D also
    needs 亩均税收 < 6); a subject failing it takes ``fallback`` (default: the band above).
    """

    grade: str
    from_: float = Field(alias="from")
    to: float
    from_inclusive: bool = False
    to_inclusive: bool = True
    requires: str | None = None
    fallback: str | None = None


class ListSpec(_Model):
    """一张评价名单: who is on it, its indicators, items and bands."""

    name: str
    title: str | None = None
    when: str = "True"
    kinds: list[Literal["enterprise", "parcel"]] = ["enterprise", "parcel"]
    rank_within: Literal["group", "list"] = "group"
    min_group_size: int = Field(1, ge=1)
    indicators: list[Indicator] = Field(min_length=1)
    bonus: list[Item] = []
    penalty: list[Item] = []
    bands: list[Band] = Field(min_length=1)


class Rule(_Model):
    """An adjustment rule applied after banding (定档/保档/降档/限档/提档)."""

    name: str
    kind: Literal["raise", "lower", "keep", "cap", "fix"]
    when: str
    grade: str | None = None
    steps: int = Field(1, ge=1)
    lists: list[str] | None = None


class Tenants(_Model):
    """租赁企业: merge into the landlord's parcel (遂昌), follow the landlord (江山), or own list (苏州)."""

    mode: Literal["merge_into_parcel", "follow_landlord", "separate_list"]
    list: str | None = None
    when: str = "True"


class Idle(_Model):
    """闲置 (供而未用) parcels: given ``grade`` (or none) with ``reason``, never ranked."""

    grade: str | None = None
    reason: str = "闲置"


class Colour(_Model):
    name: str
    hex: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")


class LowYield(_Model):
    """低产田: ``column`` below ``threshold`` for ``years`` consecutive years (嘉善).

    ``inclusive: true`` when the source says "X 万元以下" (以下 includes X, so exactly X is
    low-yield); ``false`` for "低于 X" / "不足 X". The value is compared at the scheme's precision.
    """

    column: str = "tax_per_mu"
    threshold: float
    inclusive: bool = False
    years: int = Field(3, ge=1)


class MultiYear(_Model):
    """差别化电价 rates in 元/kWh for 1, 2, 3+ consecutive years in ``charged_grades`` (镇海)."""

    electricity_rates: list[float] = Field(min_length=1)
    charged_grades: list[str] = ["D"]
    refund_on_exit: bool = True
    key_target_years: int = Field(2, ge=1)
    low_yield: LowYield | None = None


class Scheme(_Model):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    version: str
    title: str
    source: Source
    grades: list[str] = Field(min_length=1)
    missing: Literal["zero", "population_average_score", "exclude"] = "zero"
    extra_columns: dict[str, str] = {}
    eligibility: Eligibility = Eligibility()
    precision: Precision = Precision()
    landless: Landless = Landless()
    industry_groups: IndustryGroups = IndustryGroups()
    lists: list[ListSpec] = Field(min_length=1)
    adjustments: list[Rule] = []
    tenants: Tenants | None = None
    idle: Idle = Idle()
    colours: dict[str, Colour] = {}
    multiyear: MultiYear | None = None

    def list_named(self, name: str) -> ListSpec:
        return next(lst for lst in self.lists if lst.name == name)


# --------------------------------------------------------------------------- loading


def list_presets() -> list[str]:
    """Names of the shipped presets (``scoring/presets/*.yaml``)."""
    return sorted(p.name[:-5] for p in _presets_dir().iterdir() if p.name.endswith(".yaml"))


def load_scheme(path_or_name: str | Path) -> Scheme:
    """Load a scheme from a YAML file path, or a preset by name (``"yongkang"``).

    Raises :class:`SchemeError` naming the file and key path of every problem found.
    """
    path = Path(path_or_name)
    if path.suffix not in (".yaml", ".yml") and str(path_or_name) in list_presets():
        text = _presets_dir().joinpath(f"{path_or_name}.yaml").read_text("utf-8")
        label = f"scoring/presets/{path_or_name}.yaml"
    else:
        if not path.exists():
            raise FileNotFoundError(
                f"{path_or_name}: no such file or preset (presets: {', '.join(list_presets())})"
            )
        text, label = path.read_text("utf-8"), str(path_or_name)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SchemeError(label, [("", f"not valid YAML: {exc}")]) from None
    return parse_scheme(data, source=label)


def parse_scheme(data: Any, *, source: str = "<scheme>") -> Scheme:
    """Validate a scheme given as plain data (the parsed YAML)."""
    if not isinstance(data, dict):
        raise SchemeError(source, [("", "a scheme is a mapping")])
    try:
        scheme = Scheme.model_validate(data)
    except ValidationError as exc:
        raise SchemeError(source, [(_path(e["loc"]), _message(e)) for e in exc.errors()]) from None
    errors = _check(scheme)
    if errors:
        raise SchemeError(source, errors)
    return scheme


def scheme_hash(scheme: Scheme) -> str:
    """sha256 of the scheme's canonical content (sorted-key JSON of the validated model)."""
    payload = json.dumps(scheme.model_dump(mode="json", by_alias=True), sort_keys=True,
                         ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-before[_number(), Baseline]",):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(err: dict) -> str:
    ctx, kind = err.get("ctx") or {}, err["type"]
    simple = {
        "missing": "required",
        "extra_forbidden": "unknown key",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "int_parsing": "must be an integer",
        "int_type": "must be an integer",
        "string_type": "must be text",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
    }
    if kind in simple:
        return simple[kind]
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx['ge']:g}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']:g}"
    if kind == "too_short":
        return f"needs at least {ctx['min_length']} item(s)"
    if kind == "literal_error":
        return f"must be one of {ctx['expected'].replace(chr(39), '')}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}"
    return err["msg"].removeprefix("Value error, ")


# --------------------------------------------------------------------------- semantic checks

_CODE = re.compile(r"^(\d{2,4})(?:-(\d{2,4}))?$")


def base_names(scheme: Scheme) -> dict[str, str]:
    """Names every expression may read: metrics, derived values, attributes, extra columns."""
    names = {c: NUMBER for c in METRIC_COLUMNS}
    names.update({c: NUMBER for c in DERIVED})
    names["land_area_mu"] = NUMBER
    names.update(ATTRIBUTES)
    names.update({c: NUMBER for c in scheme.extra_columns})
    return names


def parse_code_rule(code: str) -> tuple[str, str]:
    """``"25-28"`` → ("25", "28"); ``"3312"`` → ("3312", "3312")."""
    m = _CODE.match(code.strip())
    if not m or (m.group(2) and len(m.group(2)) != len(m.group(1))):
        raise ValueError(f"{code!r} is not a GB/T 4754 code or range like '25-28'")
    lo, hi = m.group(1), m.group(2) or m.group(1)
    if int(hi) < int(lo):
        raise ValueError(f"range {code!r} runs backwards")
    return lo, hi


def _check(s: Scheme) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    grades = set(s.grades)
    names = base_names(s)
    group_names = {s.industry_groups.default} | {g.name for g in s.industry_groups.groups}

    def expr(path: str, source: str, kind: str, extra: dict | None = None, group=False):
        try:
            compile_expr(source, {**names, **(extra or {})}, want=kind, allow_group=group)
        except ExprError as exc:
            errors.append((path, str(exc)))

    def grade(path: str, g: str | None):
        if g is not None and g not in grades:
            errors.append((path, f"unknown grade {g!r} (grades: {', '.join(s.grades)})"))

    if len(grades) != len(s.grades):
        errors.append(("grades", "grades repeat"))
    clash = set(s.extra_columns) & (set(METRIC_COLUMNS) | set(DERIVED) | set(ATTRIBUTES))
    for c in sorted(clash):
        errors.append((f"extra_columns.{c}", "clashes with a built-in column"))

    seen_codes: dict[tuple[str, str], str] = {}
    for i, g in enumerate(s.industry_groups.groups):
        for j, code in enumerate(g.codes):
            path = f"industry_groups.groups[{i}].codes[{j}]"
            try:
                lo, hi = parse_code_rule(code)
            except ValueError as exc:
                errors.append((path, str(exc)))
                continue
            for (olo, ohi), owner in seen_codes.items():
                if len(olo) == len(lo) and int(lo) <= int(ohi) and int(olo) <= int(hi):
                    errors.append((path, f"{code!r} overlaps codes of group {owner!r}"))
            seen_codes[(lo, hi)] = g.name

    list_names = [lst.name for lst in s.lists]
    for name in {n for n in list_names if list_names.count(n) > 1}:
        errors.append(("lists", f"list name {name!r} repeats"))

    for li, lst in enumerate(s.lists):
        lp = f"lists[{li}]"
        expr(f"{lp}.when", lst.when, BOOLEAN)
        keys = [ind.key for ind in lst.indicators]
        ind_names = {k: NUMBER for k in keys}
        post = {**ind_names, "score": NUMBER}
        for ii, ind in enumerate(lst.indicators):
            ip = f"{lp}.indicators[{ii}]"
            if keys.count(ind.key) > 1:
                errors.append((f"{ip}.key", f"indicator key {ind.key!r} repeats"))
            if ind.key in names and ind.formula.strip() != ind.key:
                # a key may reuse a column's name only for that column itself, so a
                # condition reading the name means the same number either way
                errors.append((f"{ip}.key", f"{ind.key!r} is a column name; use it only with formula: {ind.key}"))
            expr(f"{ip}.formula", ind.formula, NUMBER)
            errors.extend(_check_baseline(f"{ip}.baseline", ind.baseline, group_names))
            if ind.coefficient:
                expr(f"{ip}.coefficient.metric", ind.coefficient.metric, NUMBER)
                bands = sorted(ind.coefficient.bands, key=lambda b: b.min)
                for a, b in zip(bands, bands[1:]):
                    if a.max is None or a.max > b.min:
                        errors.append((f"{ip}.coefficient.bands", f"bands from {a.min} and {b.min} overlap"))
            if ind.negative:
                expr(f"{ip}.negative.when", ind.negative.when, BOOLEAN, ind_names, group=True)
        for kind in ("bonus", "penalty"):
            for k, item in enumerate(getattr(lst, kind)):
                expr(f"{lp}.{kind}[{k}].when", item.when, BOOLEAN, ind_names, group=True)
        errors.extend(_check_bands(lp, lst.bands, grade))
        for bi, band in enumerate(lst.bands):
            if band.requires:
                expr(f"{lp}.bands[{bi}].requires", band.requires, BOOLEAN, post, group=True)

    for ri, rule in enumerate(s.adjustments):
        rp = f"adjustments[{ri}]"
        all_keys = {ind.key: NUMBER for lst in s.lists for ind in lst.indicators}
        expr(f"{rp}.when", rule.when, BOOLEAN, {**all_keys, "score": NUMBER}, group=True)
        if rule.kind in ("fix", "keep", "cap"):
            if rule.grade is None:
                errors.append((f"{rp}.grade", f"required for kind {rule.kind}"))
            grade(f"{rp}.grade", rule.grade)
        for k, name in enumerate(rule.lists or []):
            if name not in list_names:
                errors.append((f"{rp}.lists[{k}]", f"unknown list {name!r}"))

    if s.landless.treatment == "list":
        if s.landless.list not in list_names:
            errors.append(("landless.list", f"treatment list needs an existing list, got {s.landless.list!r}"))
        else:
            lst = s.list_named(s.landless.list)
            for ii, ind in enumerate(lst.indicators):
                try:
                    used = compile_expr(ind.formula, names, want=NUMBER).names
                except ExprError:
                    continue  # reported above
                if used & {*PER_MU, "land_mu", "land_area_mu"}:
                    errors.append((f"lists[{list_names.index(lst.name)}].indicators[{ii}].formula",
                                   "the 无地 list cannot use land (亩) in an indicator"))
    elif s.landless.list is not None:
        errors.append(("landless.list", "only with treatment: list"))
    for name in s.precision.columns:
        if name not in names and name != "score" and not any(
                ind.key == name for lst in s.lists for ind in lst.indicators):
            errors.append((f"precision.columns.{name}", f"unknown column {name!r}"))

    if s.tenants:
        expr("tenants.when", s.tenants.when, BOOLEAN)
        if s.tenants.mode == "separate_list":
            if s.tenants.list not in list_names:
                errors.append(("tenants.list", f"separate_list needs an existing list, got {s.tenants.list!r}"))
    grade("idle.grade", s.idle.grade)
    for g in s.colours:
        grade(f"colours.{g}", g)
    if s.multiyear:
        for k, g in enumerate(s.multiyear.charged_grades):
            grade(f"multiyear.charged_grades[{k}]", g)
        if s.multiyear.low_yield and s.multiyear.low_yield.column not in names:
            errors.append(("multiyear.low_yield.column", f"unknown column {s.multiyear.low_yield.column!r}"))
    return errors


def _check_baseline(path: str, b: Baseline, group_names: set[str]) -> list[tuple[str, str]]:
    errors = []
    kinds = [b.value is not None, b.groups is not None or b.default is not None, b.stat is not None]
    if sum(kinds) != 1:
        return [(path, "give exactly one of: a number, default/groups, stat")]
    if b.kind == "fixed" and b.value <= 0:
        errors.append((f"{path}.value", "must be > 0"))
    if b.kind == "groups":
        if b.default is None:
            errors.append((f"{path}.default", "required with groups (used for other groups)"))
        elif b.default <= 0:
            errors.append((f"{path}.default", "must be > 0"))
        for g, v in (b.groups or {}).items():
            if g not in group_names:
                errors.append((f"{path}.groups.{g}", f"unknown industry group {g!r}"))
            elif v <= 0:
                errors.append((f"{path}.groups.{g}", "must be > 0"))
    if b.stat == "percentile" and (b.p is None or not 0 <= b.p <= 100):
        errors.append((f"{path}.p", "percentile needs p between 0 and 100"))
    if b.stat != "percentile" and b.p is not None:
        errors.append((f"{path}.p", "p is only for stat: percentile"))
    return errors


def _check_bands(lp: str, bands: list[Band], grade) -> list[tuple[str, str]]:
    """Bands must tile 0–100 %: sorted, no overlap, no gap (a shared bound belongs to one band)."""
    errors = []
    for bi, band in enumerate(bands):
        grade(f"{lp}.bands[{bi}].grade", band.grade)
        grade(f"{lp}.bands[{bi}].fallback", band.fallback)
        if not 0 <= band.from_ < band.to <= 100:
            errors.append((f"{lp}.bands[{bi}]", f"needs 0 ≤ from < to ≤ 100, got {band.from_}–{band.to}"))
    if errors:
        return errors
    if bands[0].from_ != 0:
        errors.append((f"{lp}.bands[0].from", "the first band must start at 0"))
    if bands[-1].to != 100 or not bands[-1].to_inclusive:
        errors.append((f"{lp}.bands[{len(bands) - 1}].to", "the last band must end at 100 inclusive"))
    for bi in range(1, len(bands)):
        a, b = bands[bi - 1], bands[bi]
        here = f"{lp}.bands[{bi}]"
        if b.from_ < a.to or (b.from_ == a.to and a.to_inclusive and b.from_inclusive):
            errors.append((here, f"band {b.grade} ({b.from_}–{b.to}) overlaps band {a.grade} ({a.from_}–{a.to})"))
        elif b.from_ > a.to or (not a.to_inclusive and not b.from_inclusive):
            errors.append((here, f"gap between band {a.grade} and band {b.grade} at {a.to}"))
    if bands[0].from_inclusive:
        pass  # p = rank / n > 0 always, so including 0 changes nothing
    return errors
