"""Grade bands by rank percentile: 永康's rule with its D floor, ties, pooling, 临沭 variants."""

from importlib import resources

import numpy as np
import pandas as pd
import pytest
import yaml

from scoring import evaluate, parse_scheme


def preset_data(name):
    return yaml.safe_load(resources.files("scoring").joinpath(f"presets/{name}.yaml").read_text("utf-8"))


def yongkang_bands_only():
    """永康's preset with one indicator, so the score is simply 亩均增加值 (va_per_mu × 1)."""
    data = preset_data("yongkang")
    lst = data["lists"][0]
    lst["indicators"] = [{"key": "va_per_mu", "title": "亩均增加值", "formula": "va_per_mu",
                          "weight": 1, "baseline": 1}]
    lst["bonus"] = []
    return parse_scheme(data, source="yongkang-test")


def group(scores, taxes, code="3612"):
    n = len(scores)
    return pd.DataFrame({
        "subject_id": [f"s{i:03d}" for i in range(n)], "industry_code": [code] * n,
        "scale": ["规上"] * n, "land_area_mu": [1.0] * n,
        "value_added": np.asarray(scores, float), "tax_paid": np.asarray(taxes, float),
    })


def test_yongkang_bands_with_floor():
    # 100 subjects, scores 100 … 1 → rank = 101 − score, p = rank %.
    scores = np.arange(100, 0, -1)
    taxes = np.full(100, 50.0)
    taxes[98] = 5.0   # rank 99: 亩均税收 5 < 6 → D
    taxes[99] = 8.0   # rank 100: bottom 2 % but 亩均税收 8 ≥ 6 → the floor fails → C
    out = evaluate(group(scores, taxes), yongkang_bands_only(), 2024)
    assert (out["group"] == "车业").all()
    counts = out["grade"].value_counts().to_dict()
    assert counts == {"A": 20, "B": 60, "C": 19, "D": 1}
    last = out.set_index("rank").loc[100]
    assert last["grade"] == "C" and last["band_grade"] == "C"
    assert "不满足（比较值：亩均税收 8.00 万元/亩），改入C档" in last["explanation"]["band_note"]
    assert out.set_index("rank").loc[99, "grade"] == "D"
    assert out.set_index("rank").loc[20, "grade"] == "A"   # 前 20 %（含）
    assert out.set_index("rank").loc[21, "grade"] == "B"
    assert out.set_index("rank").loc[80, "grade"] == "B"   # 20–80 %（含）
    assert out.set_index("rank").loc[98, "grade"] == "C"


def test_ties_share_the_better_rank():
    # ranks 20 and 21 tied → both rank 20 → both A; two tied last of 50 → both rank 49,
    # p = 98 → not in the bottom 2 % (p > 98) → both C, even with 亩均税收 < 6.
    scores = list(range(100, 0, -1))
    scores[20] = scores[19]
    out = evaluate(group(scores, [1.0] * 100), yongkang_bands_only(), 2024)
    tied = out[out["subject_id"].isin(["s019", "s020"])]
    assert tied["rank"].tolist() == [20, 20] and tied["grade"].tolist() == ["A", "A"]
    assert (out["grade"] == "A").sum() == 21
    assert out["rank"].max() == 100  # competition ranking 1, 2, …, 20, 20, 22 …

    scores = list(range(50, 0, -1))
    scores[-1] = scores[-2]
    out = evaluate(group(scores, [1.0] * 50), yongkang_bands_only(), 2024)
    bottom = out.tail(2)
    assert bottom["rank"].tolist() == [49, 49]
    assert bottom["percentile"].tolist() == [98.0, 98.0]
    assert bottom["grade"].tolist() == ["C", "C"]


def test_percentile_is_rank_over_n():
    out = evaluate(group(np.arange(240, 0, -1), [1.0] * 240), yongkang_bands_only(), 2024)
    row = out.set_index("rank").loc[12]
    assert row["percentile"] == 5.0 and row["rank_n"] == 240
    # 240 × 2 % = 4.8: p > 98 ⇔ rank ≥ 236 → 5 D candidates (all 亩均税收 1 < 6)
    assert (out["grade"] == "D").sum() == 5


def test_small_groups_are_pooled():
    # 8 subjects in 车业 and 3 in 门业 (3312); min_group_size 5 → 门业 ranks in the whole list
    a = group([80, 70, 60, 50, 40, 30, 20, 10], [50] * 8)
    b = group([75, 55, 5], [50] * 3, code="3312")
    b["subject_id"] = ["d1", "d2", "d3"]
    out = evaluate(pd.concat([a, b], ignore_index=True), yongkang_bands_only(), 2024).set_index("subject_id")
    assert out.loc["d1", "group"] == "门业"
    assert out.loc["d1", ["rank", "rank_n"]].tolist() == [2, 11]   # second of all 11
    assert out.loc["d3", ["rank", "rank_n"]].tolist() == [11, 11]
    assert out.loc["s001", ["rank", "rank_n"]].tolist() == [2, 8]  # 车业 ranks alone
    assert out.loc["d1", "explanation"]["rank_scope"] == "list_pooled"


def test_linshu_bands_and_order():
    data = preset_data("linshu")
    for lst in data["lists"]:
        lst["indicators"] = [{"key": "va_per_mu", "title": "x", "formula": "va_per_mu", "weight": 1, "baseline": 1}]
    data["adjustments"] = []
    scheme = parse_scheme(data, source="linshu-test")
    out = evaluate(group(np.arange(100, 0, -1), [1.0] * 100, code="2624"), scheme, 2024)
    assert (out["list_name"] == "肥料").all()
    assert out["grade"].value_counts().to_dict() == {"A": 5, "B": 56, "C-": 24, "C+": 7, "D": 8}
    assert out.set_index("rank").loc[92, "colour"] == "橙"
