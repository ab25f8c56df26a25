"""Property tests (hypothesis).

Monotonicity in tax — the property that holds:
- with FIXED baselines (黄岩), raising one enterprise's tax never lowers its score or its
  grade, and leaves every other enterprise's score exactly unchanged;
- with a POPULATION-MEAN baseline (zhejiang_default) raising one tax also raises the mean,
  so every OTHER enterprise's tax points fall; the raised enterprise's own points
  30·n·v/(v + S) still grow with v, so its own score and grade still never get worse —
  but "others unchanged" does not hold and is not tested there.
"""

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring import evaluate, load_scheme, parse_scheme, run_fingerprint

HUANGYAN = load_scheme("huangyan_2022")
ZHEJIANG = load_scheme("zhejiang_default")
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
positive = st.floats(0.5, 5000, allow_nan=False)


@st.composite
def enterprises(draw, n_min=2, n_max=30):
    n = draw(st.integers(n_min, n_max))
    col = lambda: draw(st.lists(positive, min_size=n, max_size=n))  # noqa: E731
    maybe = lambda: [None if draw(st.booleans()) and draw(st.booleans()) else v for v in col()]  # noqa: E731
    return pd.DataFrame({
        "subject_id": [f"e{i}" for i in range(n)], "industry_code": ["3311"] * n, "scale": ["规上"] * n,
        "land_area_mu": col(), "tax_paid": col(), "value_added": col(), "energy_tce": maybe(),
        "emission_t": maybe(), "employees": col(), "revenue": col(), "rd_expense": maybe(),
    })


def _raise_tax(frame, who, extra):
    out = frame.copy()
    out.loc[who, "tax_paid"] = out.loc[who, "tax_paid"] + extra
    return out


def _grade_index(scheme, grades):
    return [scheme.grades.index(g) for g in grades]


@SETTINGS
@given(enterprises(), st.data(), st.floats(0.01, 1e4))
def test_more_tax_never_hurts_fixed_baselines(frame, data, extra):
    who = data.draw(st.integers(0, len(frame) - 1))
    before = evaluate(frame, HUANGYAN, 2022, explain=False)
    after = evaluate(_raise_tax(frame, who, extra), HUANGYAN, 2022, explain=False)
    assert after.loc[who, "score"] >= before.loc[who, "score"]
    g0, g1 = _grade_index(HUANGYAN, [before.loc[who, "grade"], after.loc[who, "grade"]])
    assert g1 <= g0
    others = before.index != who
    np.testing.assert_array_equal(after.loc[others, "score"], before.loc[others, "score"])


@SETTINGS
@given(enterprises(), st.data(), st.floats(0.01, 1e4))
def test_more_tax_never_hurts_own_grade_mean_baseline(frame, data, extra):
    who = data.draw(st.integers(0, len(frame) - 1))
    before = evaluate(frame, ZHEJIANG, 2024, explain=False)
    after = evaluate(_raise_tax(frame, who, extra), ZHEJIANG, 2024, explain=False)
    assert after.loc[who, "score"] >= before.loc[who, "score"] - 1e-9 * abs(before.loc[who, "score"])
    g0, g1 = _grade_index(ZHEJIANG, [before.loc[who, "grade"], after.loc[who, "grade"]])
    assert g1 <= g0


BAND_SETS = [
    [(0, 20), (20, 80), (80, 98), (98, 100)],           # 永康 (without its floor)
    [(0, 5), (5, 61), (61, 85), (85, 92), (92, 100)],   # 临沭
    [(0, 20), (20, 70), (70, 95), (95, 100)],           # zhejiang_default
]


def _band_scheme(bands):
    grades = [f"G{i}" for i in range(len(bands))]
    return parse_scheme({
        "name": "bands", "version": "1", "title": "t", "grades": grades,
        "source": {"county": "t", "year": 2024, "seed": "tests"},
        "lists": [{"name": "l", "indicators": [{"key": "va_per_mu", "title": "x", "formula": "va_per_mu",
                                                 "weight": 1, "baseline": 1}],
                   "bands": [{"grade": g, "from": lo, "to": hi} for g, (lo, hi) in zip(grades, bands)]}],
    })


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(BAND_SETS), st.lists(st.integers(1, 10**6), min_size=1, max_size=400, unique=True))
def test_band_sizes_match_cutoffs(bands, scores):
    # distinct scores: band (lo, hi] holds ranks r with lo < 100 r / n ≤ hi, i.e. ⌊hi n/100⌋ − ⌊lo n/100⌋
    n = len(scores)
    frame = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "industry_code": "33", "scale": "规上",
                          "land_area_mu": 1.0, "value_added": np.asarray(scores, float)})
    out = evaluate(frame, _band_scheme(bands), 2024, explain=False)
    counts = out["grade"].value_counts()
    for i, (lo, hi) in enumerate(bands):
        assert counts.get(f"G{i}", 0) == hi * n // 100 - lo * n // 100


@SETTINGS
@given(enterprises(n_max=20))
def test_identical_inputs_identical_fingerprint_and_results(frame):
    copy = frame.copy(deep=True)
    assert run_fingerprint(frame, ZHEJIANG, 2024) == run_fingerprint(copy, ZHEJIANG, 2024)
    pd.testing.assert_frame_equal(evaluate(frame, ZHEJIANG, 2024), evaluate(copy, ZHEJIANG, 2024))


@SETTINGS
@given(enterprises(), st.lists(st.sampled_from([0.0, 1e-9, 2.9e-6, 0.004, None]), min_size=1, max_size=5),
       st.sampled_from(["huangyan_2022", "zhejiang_default", "yongkang", "linshu", "huzhou_3"]))
def test_landless_never_move_landed_grades(frame, lands, preset):
    """Adding enterprises with no land, or land below 0.01 亩 (a degenerate parcel's 2e-8 m²),
    changes nobody else's score, rank or grade, whatever their figures (issue 11)."""
    scheme = load_scheme(preset)
    extra = frame.iloc[[0] * len(lands)].copy()
    extra["subject_id"] = [f"x{i}" for i in range(len(lands))]
    extra["land_area_mu"] = lands
    extra["tax_paid"] = 1e6   # per mu on 2e-8 m² this would be ~10¹⁶ 万元/亩
    with_them = evaluate(pd.concat([frame, extra], ignore_index=True), scheme, 2024, explain=False)
    alone = evaluate(frame, scheme, 2024, explain=False)
    landed = with_them.iloc[:len(frame)].reset_index(drop=True)
    for col in ("score", "grade", "rank", "rank_n", "evaluated"):
        pd.testing.assert_series_equal(landed[col], alone[col], check_names=False)
    x = with_them.iloc[len(frame):]
    assert not x["evaluated"].any() and x["grade"].isna().all()
    assert x["excluded_reason"].str.startswith("无地企业").all()
