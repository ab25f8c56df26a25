"""黄岩 2022 规上 formula reproduced by hand for five enterprises.

score = 亩均税收/24.097×30 + 亩均增加值/136.16×20 + 单位能耗增加值/2.694×20
      + 单位排放增加值/4929.81×10 + 全员劳动生产率/18.14×10 + R&D比重/3.02%×10
Missing items take the item's average score over the enterprises that have it (黄岩).
"""

import math

import pandas as pd
import pytest

from scoring import evaluate, explain_text, load_scheme

SUBJECTS = pd.DataFrame(
    {
        "subject_id": ["E1", "E2", "E3", "E4", "E5"],
        "industry_code": ["2611", "3311", "3412", "1310", "3981"],
        "scale": ["规上"] * 5,
        "land_area_mu": [20.0, 50.0, 10.0, 40.0, 25.0],
        "tax_paid": [400.0, 600.0, 90.0, 1200.0, 150.0],
        "tax_refund": [82.0, None, 10.0, 0.0, 50.0],
        "value_added": [2800.0, 5000.0, 900.0, 8000.0, 2000.0],
        "energy_tce": [1000.0, 2500.0, 300.0, 2000.0, 1000.0],
        "emission_t": [0.5, 1.0, 0.3, None, 0.4],
        "employees": [150, 200, 60, 320, 100],
        "revenue": [10000.0, 20000.0, 3000.0, 30000.0, 8000.0],
        "rd_expense": [302.0, 400.0, 30.0, 1200.0, None],
    }
)

# --- by hand: value / baseline × weight, item by item ------------------------------------
# E1: tax 400+82=482 on 20 亩 → 24.1; VA 2800/20 = 140; 2800/1000 = 2.8; 2800/0.5 = 5600;
#     2800/150 = 18.6667; R&D 302/10000 = 3.02 %
E1 = [24.1 / 24.097 * 30, 140 / 136.16 * 20, 2.8 / 2.694 * 20, 5600 / 4929.81 * 10,
      (2800 / 150) / 18.14 * 10, 3.02 / 3.02 * 10]
# E2: tax 600 (refund missing → 0) / 50 = 12; 5000/50 = 100; 5000/2500 = 2; 5000/1 = 5000;
#     5000/200 = 25; 400/20000 = 2 %
E2 = [12 / 24.097 * 30, 100 / 136.16 * 20, 2 / 2.694 * 20, 5000 / 4929.81 * 10,
      25 / 18.14 * 10, 2 / 3.02 * 10]
# E3: 100/10 = 10; 900/10 = 90; 900/300 = 3; 900/0.3 = 3000; 900/60 = 15; 30/3000 = 1 %
E3 = [10 / 24.097 * 30, 90 / 136.16 * 20, 3 / 2.694 * 20, 3000 / 4929.81 * 10,
      15 / 18.14 * 10, 1 / 3.02 * 10]
# E4: 1200/40 = 30; 8000/40 = 200; 8000/2000 = 4; emission missing; 8000/320 = 25; 1200/30000 = 4 %
E4 = [30 / 24.097 * 30, 200 / 136.16 * 20, 4 / 2.694 * 20, None,
      25 / 18.14 * 10, 4 / 3.02 * 10]
# E5: 200/25 = 8; 2000/25 = 80; 2000/1000 = 2; 2000/0.4 = 5000; 2000/100 = 20; R&D missing
E5 = [8 / 24.097 * 30, 80 / 136.16 * 20, 2 / 2.694 * 20, 5000 / 4929.81 * 10,
      20 / 18.14 * 10, None]
# missing → the item's average over the other four
E4[3] = (E1[3] + E2[3] + E3[3] + E5[3]) / 4
E5[5] = (E1[5] + E2[5] + E3[5] + E4[5]) / 4
EXPECTED = {k: sum(v) for k, v in {"E1": E1, "E2": E2, "E3": E3, "E4": E4, "E5": E5}.items()}
# E1 = 30.0037 + 20.5640 + 20.7869 + 11.3595 + 10.2903 + 10.0000 ≈ 103.00
# E2 = 14.9396 + 14.6886 + 14.8478 + 10.1424 + 13.7817 +  6.6225 ≈  75.02
# E3 = 12.4497 + 13.2197 + 22.2717 +  6.0854 +  8.2690 +  3.3113 ≈  65.61
# E4 = 37.3490 + 29.3772 + 29.6956 +  9.4324 + 13.7817 + 13.2450 ≈ 132.88  (emission: mean of 4)
# E5 =  9.9597 + 11.7509 + 14.8478 + 10.1424 + 11.0254 +  8.2947 ≈  66.02  (R&D: mean of 4)
ROUNDED = {"E1": 103.00, "E2": 75.02, "E3": 65.61, "E4": 132.88, "E5": 66.02}


@pytest.fixture(scope="module")
def result():
    return evaluate(SUBJECTS, load_scheme("huangyan_2022"), 2022).set_index("subject_id")


def test_scores_match_hand_arithmetic(result):
    for sid, expected in EXPECTED.items():
        assert result.loc[sid, "score"] == pytest.approx(expected, rel=1e-12)
        assert round(result.loc[sid, "score"], 2) == ROUNDED[sid]


def test_items_match_hand_arithmetic(result):
    keys = ["tax_per_mu", "va_per_mu", "va_per_energy", "va_per_emission", "va_per_employee", "rd_share"]
    for sid, items in {"E1": E1, "E2": E2, "E3": E3, "E4": E4, "E5": E5}.items():
        for key, pts in zip(keys, items):
            assert result.loc[sid, f"{key}_points"] == pytest.approx(pts, rel=1e-12), (sid, key)
    assert result.loc["E1", "tax_per_mu"] == pytest.approx(24.1)  # 税收还原: 400 + 82
    assert math.isnan(result.loc["E4", "va_per_emission"])


def test_ranks_and_bands(result):
    # order E4 > E1 > E2 > E5 > E3; n = 5 → p = 20, 40, 60, 80, 100 → A (0,20], B (20,70], C (70,90], D
    assert result["rank"].to_dict() == {"E1": 2, "E2": 3, "E3": 5, "E4": 1, "E5": 4}
    assert result["percentile"].to_dict() == {"E1": 40.0, "E2": 60.0, "E3": 100.0, "E4": 20.0, "E5": 80.0}
    assert result["grade"].to_dict() == {"E1": "B", "E2": "B", "E3": "D", "E4": "A", "E5": "C"}
    assert result.loc["E4", "colour"] == "绿"


def test_missing_rule_recorded(result):
    exp = result.loc["E4", "explanation"]
    item = next(i for i in exp["indicators"] if i["key"] == "va_per_emission")
    assert item["missing_rule"] == "population_average_score"
    assert item["points"] == pytest.approx(E4[3])
    assert "单位排放增加值 数据缺失，按总体平均得分计" in explain_text(exp)
    others = [i["missing_rule"] for i in result.loc["E1", "explanation"]["indicators"]]
    assert others == [None] * 6


def test_explain_text_reads_like_the_sheet(result):
    text = explain_text(result.loc["E1", "explanation"])
    assert "亩均税收 24.10 万元/亩，基准 24.097，权重 30，得分 30.00" in text
    assert "排名 2/5（前 40.0%），B 档" in text


def test_guixia_formula():
    # 规下: 亩均税收/11.5932×50 + 单位用电税收/0.2352×50; tax 58 万元 on 5 亩, 2 320 000 kWh
    # → 11.6 万元/亩 and 58×10⁴/2 320 000 = 0.25 元/kWh
    s = pd.DataFrame({"subject_id": ["s1"], "industry_code": ["33"], "scale": ["规下"],
                      "land_area_mu": [5.0], "tax_paid": [58.0], "electricity_kwh": [2_320_000.0]})
    out = evaluate(s, load_scheme("huangyan_2022"), 2022).iloc[0]
    assert out["list_name"] == "规下"
    assert out["score"] == pytest.approx(11.6 / 11.5932 * 50 + 0.25 / 0.2352 * 50, rel=1e-12)
