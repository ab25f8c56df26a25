"""Multi-year rules over published results: consecutive D years, 低产田, 差别化电价 and refunds.

``history`` has one row per subject and year: ``subject_id, year, grade, tax_per_mu,
electricity_kwh`` (the kWh the surcharge applies to). "Consecutive" means calendar
years in a row: a missing year breaks a streak. All functions keep ``history``'s index
and row order.

- 镇海: D in year 1 → 0.1 元/kWh, 2 years in a row → 0.3, 3+ → 0.5; an enterprise that
  leaves D the next year gets last year's charge back; 2 years in a row in D → key
  redevelopment target (重点整治对象).
- 嘉善 低产田: 亩均税收 below a standard for 3 years in a row.

Example
-------
>>> import pandas as pd
>>> h = pd.DataFrame({"subject_id": ["a"] * 4, "year": [2021, 2022, 2023, 2024],
...                   "grade": ["D", "D", "D", "B"], "tax_per_mu": [2.0] * 4,
...                   "electricity_kwh": [1e6] * 4})
>>> print(differential_electricity(h, [0.1, 0.3, 0.5]).to_string())
   d_years  rate  charge_wan  refund_wan
0        1   0.1        10.0         0.0
1        2   0.3        30.0         0.0
2        3   0.5        50.0         0.0
3        0   0.0         0.0        50.0
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .expr import constant_decimals, round_half_up
from .scheme import Scheme


def streaks(history: pd.DataFrame, condition: pd.Series | np.ndarray) -> pd.Series:
    """Years in a row (ending at each row) in which ``condition`` held; 0 where it does not."""
    _check_history(history, ())
    cond = np.asarray(condition, dtype=bool)
    order = np.lexsort((history["year"].to_numpy(), history["subject_id"].astype("str").to_numpy()))
    sid = history["subject_id"].astype("str").to_numpy()[order]
    yr = history["year"].to_numpy(dtype=np.int64)[order]
    c = cond[order]
    cont = np.zeros(len(order), bool)
    cont[1:] = (sid[1:] == sid[:-1]) & (yr[1:] == yr[:-1] + 1) & c[1:] & c[:-1]
    run_id = np.cumsum(~cont)
    count = pd.Series(run_id).groupby(run_id).cumcount().to_numpy() + 1
    out = np.empty(len(order), np.int64)
    out[order] = np.where(c, count, 0)
    return pd.Series(out, index=history.index, name="streak")


def low_yield_land(history: pd.DataFrame, threshold: float, years: int = 3,
                   column: str = "tax_per_mu", *, inclusive: bool = False,
                   decimals: int | None = None) -> pd.DataFrame:
    """低产田: ``column`` below ``threshold`` (万元/亩) for ``years`` years in a row (missing
    counts as not below). ``inclusive``: exactly ``threshold`` counts too ("X 万元以下"; 以下
    includes X). With ``decimals`` the value is first rounded half-up to that many places (the
    scheme's published precision; never coarser than the threshold is written)."""
    _check_history(history, (column,))
    value = pd.to_numeric(history[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if decimals is not None:
        value = round_half_up(value, max(decimals, constant_decimals(threshold)))
    with np.errstate(invalid="ignore"):
        below = value <= threshold if inclusive else value < threshold
    s = streaks(history, below)
    return pd.DataFrame({"low_yield_years": s, "low_yield": s >= years}, index=history.index)


def differential_electricity(
    history: pd.DataFrame,
    rates: Sequence[float],
    *,
    charged_grades: Sequence[str] = ("D",),
    refund_on_exit: bool = True,
) -> pd.DataFrame:
    """差别化电费 per row, in 万元: rate (元/kWh) by consecutive years in a charged grade × kWh.

    ``rates[k]`` applies in the (k+1)-th year in a row; the last rate applies from then on.
    A subject in a charged grade last year and not this year gets last year's charge back
    (``refund_wan``), when ``refund_on_exit``.
    """
    _check_history(history, ("grade", "electricity_kwh"))
    charged = history["grade"].astype("str").isin(list(charged_grades)).to_numpy(dtype=bool)
    d_years = streaks(history, charged).to_numpy()
    table = np.asarray(list(rates), dtype=float)
    rate = np.where(d_years > 0, table[np.clip(d_years, 1, len(table)) - 1], 0.0)
    kwh = pd.to_numeric(history["electricity_kwh"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    charge = np.where(d_years > 0, rate * np.nan_to_num(kwh) / 1e4, 0.0)  # 元 → 万元
    refund = np.zeros(len(history))
    if refund_on_exit:
        key = history["subject_id"].astype("str") + "|" + history["year"].astype("int64").astype("str")
        prev_key = history["subject_id"].astype("str") + "|" + (history["year"].astype("int64") - 1).astype("str")
        last_charge = pd.Series(charge, index=key.to_numpy()).reindex(prev_key.to_numpy()).to_numpy()
        refund = np.where(~charged & (np.nan_to_num(last_charge) > 0), np.nan_to_num(last_charge), 0.0)
    return pd.DataFrame({"d_years": d_years, "rate": rate, "charge_wan": charge, "refund_wan": refund},
                        index=history.index)


def multiyear_status(history: pd.DataFrame, scheme: Scheme) -> pd.DataFrame:
    """All multi-year results the scheme configures, added to ``history``.

    Adds ``d_years, key_target`` (D for ``key_target_years`` in a row), ``rate, charge_wan,
    refund_wan``, ``low_yield_years, low_yield`` (if configured) and the warning ``colour``.
    """
    cfg = scheme.multiyear
    if cfg is None:
        raise ValueError(f"scheme {scheme.name!r} has no multiyear section")
    out = history.copy()
    money = differential_electricity(history, cfg.electricity_rates, charged_grades=cfg.charged_grades,
                                     refund_on_exit=cfg.refund_on_exit)
    out = out.join(money)
    out["key_target"] = out["d_years"] >= cfg.key_target_years
    if cfg.low_yield:
        ly = cfg.low_yield
        out = out.join(low_yield_land(history, ly.threshold, ly.years, ly.column, inclusive=ly.inclusive,
                                      decimals=scheme.precision.of(ly.column)))
    out["colour"] = out["grade"].map({g: c.name for g, c in scheme.colours.items()}).astype("str")
    return out


def _check_history(history: pd.DataFrame, columns: tuple[str, ...]) -> None:
    need = ("subject_id", "year", *columns)
    missing = [c for c in need if c not in history.columns]
    if missing:
        raise ValueError(f"history lacks column(s) {missing}; found {list(history.columns)}")
    if history.duplicated(["subject_id", "year"]).any():
        raise ValueError("history has more than one row for a subject and year")
