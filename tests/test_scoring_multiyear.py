"""Multi-year rules: consecutive D, 低产田, 差别化电费 and its refund (镇海 0.1/0.3/0.5 元/kWh)."""

import pandas as pd
import pytest

from scoring import differential_electricity, load_scheme, low_yield_land, multiyear_status, streaks


def history():
    rows = [
        # a: D 2020–2023, leaves D in 2024
        *[("a", y, "D", 3.0, 1_000_000) for y in (2020, 2021, 2022, 2023)], ("a", 2024, "C", 8.0, 1_000_000),
        # b: D 2020, missing 2021, D 2022–2023 → the gap breaks the streak
        ("b", 2020, "D", 2.0, 500_000), ("b", 2022, "D", 2.0, 500_000), ("b", 2023, "D", 2.0, 500_000),
        # c: never D; 亩均税收 below 5 in 2021–2023 only
        ("c", 2020, "B", 9.0, 2_000_000), ("c", 2021, "C", 4.0, 2_000_000), ("c", 2022, "C", 4.5, 2_000_000),
        ("c", 2023, "C", 4.9, 2_000_000), ("c", 2024, "C", None, 2_000_000),
    ]
    h = pd.DataFrame(rows, columns=["subject_id", "year", "grade", "tax_per_mu", "electricity_kwh"])
    return h.sample(frac=1, random_state=3)  # order must not matter


def test_consecutive_d_years():
    h = history()
    s = streaks(h, h["grade"] == "D")
    got = dict(zip(zip(h["subject_id"], h["year"]), s))
    assert [got[("a", y)] for y in range(2020, 2025)] == [1, 2, 3, 4, 0]
    assert [got[("b", y)] for y in (2020, 2022, 2023)] == [1, 1, 2]
    assert all(got[("c", y)] == 0 for y in range(2020, 2025))


def test_low_yield_land():
    h = history()
    out = low_yield_land(h, threshold=5, years=3).join(h)
    c = out[out.subject_id == "c"].sort_values("year")
    assert c["low_yield_years"].tolist() == [0, 1, 2, 3, 0]   # missing 2024 figure breaks it
    assert c["low_yield"].tolist() == [False, False, False, True, False]
    a = out[out.subject_id == "a"].sort_values("year")
    assert a["low_yield"].tolist() == [False, False, True, True, False]


def test_charge_and_refund():
    h = history()
    out = differential_electricity(h, [0.1, 0.3, 0.5]).join(h).set_index(["subject_id", "year"]).sort_index()
    # a: 1 000 000 kWh × 0.1 / 0.3 / 0.5 / 0.5 元 = 10 / 30 / 50 / 50 万元; 2024 out of D → 50 back
    assert out.loc["a", "charge_wan"].tolist() == pytest.approx([10, 30, 50, 50, 0])
    assert out.loc["a", "rate"].tolist() == [0.1, 0.3, 0.5, 0.5, 0.0]
    assert out.loc["a", "refund_wan"].tolist() == [0, 0, 0, 0, 50]
    # b: 500 000 kWh; the 2021 gap restarts at 0.1 → 5, 5, 15 万元
    assert out.loc["b", "charge_wan"].tolist() == pytest.approx([5, 5, 15])
    assert out.loc["c", "charge_wan"].sum() == 0 and out.loc["c", "refund_wan"].sum() == 0
    no_refund = differential_electricity(h, [0.1, 0.3, 0.5], refund_on_exit=False)
    assert no_refund["refund_wan"].sum() == 0


def test_status_from_scheme():
    out = multiyear_status(history(), load_scheme("zhenhai_4")).set_index(["subject_id", "year"]).sort_index()
    assert out.loc[("a", 2021), "key_target"] and not out.loc[("a", 2020), "key_target"]  # 连续两年 D
    assert out.loc[("b", 2022), "key_target"] == False  # noqa: E712 (after a gap)
    assert out.loc[("a", 2024), "refund_wan"] == pytest.approx(50)
    assert out.loc[("a", 2024), "colour"] == "橙" and out.loc[("a", 2023), "colour"] == "红"
    assert out.loc[("c", 2023), "low_yield_years"] == 3     # 镇海 preset: < 7 万元/亩
    with pytest.raises(ValueError, match="no multiyear section"):
        multiyear_status(history(), load_scheme("yongkang"))


def test_history_must_be_one_row_per_year():
    h = pd.concat([history(), history().head(1)])
    with pytest.raises(ValueError, match="more than one row"):
        streaks(h, h["grade"] == "D")
