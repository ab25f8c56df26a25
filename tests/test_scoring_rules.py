"""Engine rules: baselines, missing values, caps, coefficients, 倒扣分, items, adjustments,
eligibility, tenants, idle land, fingerprints."""

import copy

import numpy as np
import pandas as pd
import pytest

from scoring import evaluate, explain_text, load_scheme, parse_scheme, run_fingerprint

BANDS = [{"grade": "A", "from": 0, "to": 25}, {"grade": "B", "from": 25, "to": 50},
         {"grade": "C", "from": 50, "to": 75}, {"grade": "D", "from": 75, "to": 100}]


def scheme(indicators=None, **extra):
    lists = extra.pop("lists", None) or [{
        "name": "规上", "when": "scale == '规上'", "indicators": indicators, "bands": BANDS,
        **extra.pop("list_extra", {})}]
    data = {"name": "t", "version": "1", "title": "test", "grades": ["A", "B", "C", "D"],
            "source": {"county": "测试县", "year": 2024, "seed": "tests"},
            "industry_groups": {"default": "其他", "groups": [{"name": "化工", "codes": ["26"]}]},
            "lists": lists, **extra}
    return parse_scheme(data, source="t.yaml")


def tax_only(weight=100, baseline=10, **kw):
    return [{"key": "tax_per_mu", "title": "亩均税收", "unit": "万元/亩", "formula": "tax_per_mu",
             "weight": weight, "baseline": baseline, **kw}]


def frame(**cols):
    n = len(next(iter(cols.values())))
    base = {"subject_id": [f"e{i}" for i in range(n)], "industry_code": ["3311"] * n,
            "scale": ["规上"] * n, "land_area_mu": [1.0] * n}
    base.update(cols)
    return pd.DataFrame(base)


def by_id(out):
    return out.set_index("subject_id")


# --------------------------------------------------------------------------- baselines


def test_population_baselines_current_and_previous():
    cur = frame(tax_paid=[10.0, 20.0, 30.0, 100.0], industry_code=["26", "26", "33", "33"])
    prev = frame(tax_paid=[4.0, 6.0, 50.0, 1.0], industry_code=["26", "26", "33", "33"])
    mean = by_id(evaluate(cur, scheme(tax_only(baseline={"stat": "mean"})), 2024))
    assert mean.loc["e0", "score"] == pytest.approx(10 / 40 * 100)            # mean 160/4 = 40
    med = by_id(evaluate(cur, scheme(tax_only(baseline={"stat": "median", "scope": "group"})), 2024))
    assert med.loc["e0", "score"] == pytest.approx(10 / 15 * 100)             # 化工 median (10+20)/2
    assert med.loc["e3", "score"] == pytest.approx(100 / 65 * 100)            # 其他 median (30+100)/2
    pct = by_id(evaluate(cur, scheme(tax_only(baseline={"stat": "percentile", "p": 75})), 2024))
    assert pct.loc["e0", "score"] == pytest.approx(10 / 47.5 * 100)           # 30 + 0.25 × 70
    last = scheme(tax_only(baseline={"stat": "mean", "of": "previous", "scope": "group"}))
    out = by_id(evaluate(cur, last, 2024, previous=prev))
    assert out.loc["e0", "score"] == pytest.approx(10 / 5 * 100)              # last year's 化工 mean
    assert out.loc["e2", "score"] == pytest.approx(30 / 25.5 * 100)
    assert out.loc["e0", "explanation"]["indicators"][0]["baseline_source"] == "上年同名单同行业组平均值"
    with pytest.raises(ValueError, match="pass previous="):
        evaluate(cur, last, 2024)


def test_group_baselines_zhenhai():
    s = load_scheme("zhenhai_4")
    cur = frame(industry_code=["2511", "3311"], value_added=[120.0, 120.0], energy_tce=[100.0, 100.0],
                tax_paid=[60.0, 60.0])
    out = by_id(evaluate(cur, s, 2024))
    # 1.2 万元/吨标煤 on both: 石油化工 baseline 1.2 → 15 points, others 4.0 → 4.5 points
    assert out.loc["e0", "va_per_energy_points"] == pytest.approx(1.2 / 1.2 * 15)
    assert out.loc["e1", "va_per_energy_points"] == pytest.approx(1.2 / 4.0 * 15)
    assert out.loc["e0", "group"] == "石油化工" and out.loc["e1", "group"] == "装备制造"


# --------------------------------------------------------------------------- points


def test_missing_rules_zero_and_exclude():
    data = frame(tax_paid=[10.0, None, 30.0])
    zero = by_id(evaluate(data, scheme(tax_only(missing="zero")), 2024))
    assert zero.loc["e1", "score"] == 0 and zero.loc["e1", "evaluated"]
    assert zero.loc["e1", "explanation"]["indicators"][0]["missing_rule"] == "zero"
    excl = by_id(evaluate(data, scheme(tax_only(missing="exclude")), 2024))
    assert not excl.loc["e1", "evaluated"]
    assert excl.loc["e1", "excluded_reason"] == "缺失指标：亩均税收"
    assert excl.loc["e2", "rank_n"] == 2


def test_cap_coefficient_and_negative():
    ind = tax_only(baseline=10, cap=1.5)
    out = by_id(evaluate(frame(tax_paid=[30.0, 12.0]), scheme(ind), 2024))
    assert out.loc["e0", "score"] == 150 and out.loc["e0", "explanation"]["indicators"][0]["capped"]
    assert out.loc["e1", "score"] == pytest.approx(120)
    # 临沭 R&D coefficient: 100 (含)–500 ×1.05 … 2000 (含)+ ×1.2
    rd = [{"key": "rd_share", "title": "R&D", "formula": "rd_share", "weight": 10, "baseline": 2,
           "coefficient": {"metric": "rd_expense", "bands": [
               {"min": 100, "max": 500, "factor": 1.05}, {"min": 500, "max": 1000, "factor": 1.1},
               {"min": 1000, "max": 2000, "factor": 1.15}, {"min": 2000, "factor": 1.2}]}}]
    spend = [50.0, 100.0, 500.0, 1999.0, 2000.0]
    out = evaluate(frame(rd_expense=spend, revenue=[s * 50 for s in spend]), scheme(rd), 2024)
    assert out["score"].tolist() == pytest.approx([10, 10.5, 11, 11.5, 12])   # R&D 2 % = baseline
    # 倒扣分: below the group's mean 亩均税收, the energy item scores (value/baseline − 1) × weight
    neg = [{"key": "va_per_energy", "title": "单位能耗增加值", "formula": "va_per_energy", "weight": 20,
            "baseline": 2, "negative": {"when": "tax_per_mu < group_mean(tax_per_mu)"}},
           {"key": "tax_per_mu", "title": "亩均税收", "formula": "tax_per_mu", "weight": 0, "baseline": 1}]
    out = by_id(evaluate(frame(tax_paid=[1.0, 9.0], value_added=[100.0, 100.0], energy_tce=[100.0, 100.0]),
                         scheme(neg), 2024))
    assert out.loc["e0", "va_per_energy_points"] == pytest.approx((0.5 - 1) * 20)   # −10
    assert out.loc["e1", "va_per_energy_points"] == pytest.approx(0.5 * 20)         # 10
    # the explanation shows the values compared, rounded as compared (1 万元/亩 vs the mean 5)
    assert "倒扣分（比较值：亩均税收 1.00，同组平均亩均税收 5.00）" in explain_text(out.loc["e0", "explanation"])


def test_bonus_and_penalty():
    s = scheme(tax_only(), list_extra={
        "bonus": [{"name": "上市", "when": "flag('上市')", "points": 5}],
        "penalty": [{"name": "安全事故", "when": "flag('安全事故')", "points": 8}]})
    out = by_id(evaluate(frame(tax_paid=[10.0, 10.0, 10.0], flags=["上市、专精特新", "安全事故", pd.NA]), s, 2024))
    assert out["score"].tolist() == [105, 92, 100]
    assert out.loc["e0", "explanation"]["bonus"] == [{"name": "上市", "points": 5.0}]
    assert "减分「安全事故」−8" in explain_text(out.loc["e1", "explanation"])


# --------------------------------------------------------------------------- adjustments


def test_adjustments_in_stated_order():
    s = load_scheme("linshu")
    # all in 其他 (code 33); tiny population so ranks are predictable
    d = frame(tax_paid=[6000.0, 50.0, 500.0, 400.0], land_area_mu=[100.0, 25.0, 50.0, 25.0],
              value_added=[1e4, 10.0, 1e3, 800.0], revenue=[5e4, 1000.0, 1e4, 1500.0],
              flags=[pd.NA, "行业龙头", pd.NA, pd.NA])
    out = by_id(evaluate(d, s, 2024))
    # ranks (其他 mean baselines): e0 1, e3 2, e2 3, e1 4 of 4 → bands B, B, C-, D
    assert out["band_grade"].to_dict() == {"e0": "B", "e1": "D", "e2": "C-", "e3": "B"}
    # e1 (D): 25 亩 & revenue 1000 → 降档 (already worst); 行业龙头 → 保档 B; tax 50 < 100 →
    # 限档 C-, applied after 保档, so the cap wins
    e1 = out.loc["e1"]
    assert [(a["kind"], a["from"], a["to"]) for a in e1["adjustments"]] == [
        ("降档", "D", "D"), ("保档", "D", "B"), ("限档", "B", "C-")]
    assert e1["grade"] == "C-"
    # e3 (B): 25 亩 & revenue 1500 < 2000 → 降档 C-; 16 万元/亩 ≥ 10 → 保档 back to B
    assert [(a["kind"], a["to"]) for a in out.loc["e3", "adjustments"]] == [("降档", "C-"), ("保档", "B")]
    assert out.loc["e3", "grade"] == "B"
    # e0: tax 6000 > 5000 → 定A档, last
    assert out.loc["e0", "grade"] == "A" and out.loc["e0", "adjustments"][-1]["kind"] == "定档"
    text = explain_text(e1["explanation"])
    assert "规则『年纳税100万元以下或重大安全事故限档』" in text


def test_adjustment_steps_and_recording():
    rules = [{"name": "专精特新提档", "kind": "raise", "when": "flag('专精特新')"},
             {"name": "税收>5000万定A档", "kind": "fix", "grade": "A", "when": "tax > 5000"},
             {"name": "重大安全事故限C档", "kind": "cap", "grade": "C", "when": "flag('重大安全事故')"}]
    s = scheme(tax_only(), adjustments=rules)
    d = frame(tax_paid=[40.0, 30.0, 20.0, 6000.0], land_area_mu=[1.0, 1.0, 1.0, 1000.0],
              flags=["重大安全事故", "专精特新", pd.NA, pd.NA])
    out = by_id(evaluate(d, s, 2024))
    assert out["band_grade"].tolist() == ["A", "B", "C", "D"]
    assert out["grade"].tolist() == ["C", "A", "C", "A"]
    assert out.loc["e3", "adjustments"] == [
        {"rule": "税收>5000万定A档", "kind": "定档", "when": "tax > 5000", "compared": "税收（含还原） 6000.00 万元",
         "from": "D", "to": "A", "changed": True}]
    assert out.loc["e2", "adjustments"] == []
    assert "规则『税收>5000万定A档』生效（定档 D→A，比较值：税收（含还原） 6000.00 万元）" \
        in explain_text(out.loc["e3", "explanation"])


# --------------------------------------------------------------------------- who is evaluated


def test_eligibility_reasons():
    s = scheme(tax_only(), eligibility={"exempt_flags": ["免评", "过渡期"], "new_enterprise_years": 2,
                                        "min_land_mu": 3})
    d = frame(tax_paid=[10.0] * 6, flags=["过渡期", "免评,过渡期", pd.NA, pd.NA, pd.NA, pd.NA],
              founded=["2010-01-01", "2010-01-01", "2023-06-01", pd.NA, "2010-01-01", "2010-01-01"],
              land_area_mu=[5.0, 5.0, 5.0, 2.0, np.nan, 5.0], scale=["规上"] * 5 + ["规下"])
    out = evaluate(d, s, 2024)
    # missing land is 无地 (no per-mu value can be computed), reported before 用地不足
    assert out["excluded_reason"].tolist() == ["过渡期", "免评", "新办企业（成立不足2年）", "用地不足3亩",
                                               "无地企业（用地面积缺失）：不计亩均指标，不参与有地企业排名",
                                               "不在评价名单（规上：scale == '规上'）"]
    assert not out["evaluated"].any()


def test_separate_lists_for_tenants_and_land_classes():
    lists = [
        {"name": "规上", "when": "scale == '规上'", "indicators": tax_only(), "bands": BANDS},
        {"name": "规下≥3亩", "when": "scale == '规下' and land_mu >= 3", "indicators": tax_only(), "bands": BANDS},
        {"name": "规下<3亩", "when": "scale == '规下'", "indicators": tax_only(), "bands": BANDS},
        {"name": "租赁企业", "when": "land_class == 'III'", "indicators": tax_only(), "bands": BANDS},
    ]
    s = scheme(lists=lists, tenants={"mode": "separate_list", "list": "租赁企业"})
    d = frame(scale=["规上", "规下", "规下", "规上", "规下"], land_area_mu=[10.0, 5.0, 1.0, 2.0, 1.0],
              is_tenant=[False, False, False, True, True], tax_paid=[1.0] * 5,
              land_class=["I", "I", "I", "III", "III"])
    out = evaluate(d, s, 2024)
    assert out["list_name"].tolist() == ["规上", "规下≥3亩", "规下<3亩", "租赁企业", "租赁企业"]


def test_follow_landlord_and_merge_into_parcel():
    d = frame(subject_id=["L1", "T1", "L2", "T2"], tax_paid=[100.0, 50.0, 10.0, 1.0],
              land_area_mu=[8.0, 2.0, 10.0, 0.0], scale=["规上", "规下", "规上", "规下"],
              is_tenant=[False, True, False, True], landlord_id=[pd.NA, "L1", pd.NA, "L2"])
    follow = by_id(evaluate(d, scheme(tax_only(), tenants={"mode": "follow_landlord", "when": "scale == '规下'"}), 2024))
    assert follow.loc["T1", "grade"] == follow.loc["L1", "grade"] == "B"   # 2 ranked: p 50 → B
    assert follow.loc["T1", "result_from"] == "L1" and not follow.loc["T1", "evaluated"]
    assert follow.loc["T1", "excluded_reason"] == "随地主定档"
    merge = by_id(evaluate(d, scheme(tax_only(), tenants={"mode": "merge_into_parcel"}), 2024))
    # L1's parcel: tax 100 + 50 on 8 + 2 亩 = 15 万元/亩 → 150 points, shared with T1
    assert merge.loc["L1", "score"] == pytest.approx(150)
    assert merge.loc["T1", "score"] == pytest.approx(150) and merge.loc["T1", "grade"] == merge.loc["L1", "grade"]
    assert merge.loc["T1", "excluded_reason"] == "并入地主L1"
    # parcels have no tenants: kind='parcel' ignores the setting
    parcel = by_id(evaluate(d.assign(scale="规上"), scheme(tax_only(), tenants={"mode": "merge_into_parcel"}),
                            2024, kind="parcel"))
    # T2's 0 亩 parcel is 无地 (no 亩均 value); the tenant setting changes nothing for parcels
    assert parcel["evaluated"].tolist() == [True, True, True, False]
    assert parcel.loc["T2", "excluded_reason"] == "宗地面积过小（0.00 亩，不足 0.01 亩）：不计亩均指标，不参与宗地排名"


def test_idle_parcels_and_parcel_lists():
    s = load_scheme("zhenhai_4")
    d = frame(subject_id=["p1", "p2", "p3"], scale=["规上", "规下", "规下"], tax_paid=[600.0, 30.0, np.nan],
              land_area_mu=[10.0, 5.0, 4.0], idle=[False, False, True])
    parcels = by_id(evaluate(d, s, 2024, kind="parcel"))
    assert parcels.loc["p2", "list_name"] == "规下地块"
    assert parcels.loc["p3", "grade"] == "D" and parcels.loc["p3", "excluded_reason"] == "闲置"
    assert parcels.loc["p3", "colour"] == "红"
    assert explain_text(parcels.loc["p3", "explanation"]) == "宗地等级 p3：未参评，闲置，定 D 档"
    enterprises = by_id(evaluate(d.iloc[:2], s, 2024, kind="enterprise"))
    # 规下 list is per parcel; the reason names the conditions that failed
    assert enterprises.loc["p2", "excluded_reason"] == "不在评价名单（规上：scale == '规上'）"


# --------------------------------------------------------------------------- reproducibility


def test_fingerprint_and_results_are_reproducible():
    s = load_scheme("zhejiang_default")
    rng = np.random.default_rng(7)
    d = frame(tax_paid=rng.gamma(2, 50, 200), value_added=rng.gamma(2, 300, 200),
              energy_tce=rng.gamma(2, 100, 200), land_area_mu=rng.uniform(5, 50, 200))
    a, b = evaluate(d, s, 2024), evaluate(d.copy(), s, 2024)
    pd.testing.assert_frame_equal(a, b)
    assert run_fingerprint(d, s, 2024) == run_fingerprint(d.copy(), s, 2024)
    shuffled = d.sample(frac=1, random_state=1)
    assert run_fingerprint(shuffled, s, 2024) == run_fingerprint(d, s, 2024)
    c = evaluate(shuffled, s, 2024).set_index("subject_id").loc[a["subject_id"]].reset_index()
    pd.testing.assert_frame_equal(a, c)
    changed = d.copy()
    changed.loc[3, "tax_paid"] += 0.01
    assert run_fingerprint(changed, s, 2024) != run_fingerprint(d, s, 2024)
    assert run_fingerprint(d, s, 2025) != run_fingerprint(d, s, 2024)
    assert run_fingerprint(d, load_scheme("yongkang"), 2024) != run_fingerprint(d, s, 2024)


def test_explanations_are_json():
    import json

    out = evaluate(frame(tax_paid=[1.0, np.nan]), load_scheme("huzhou_3"), 2024)
    json.dumps(out["explanation"].tolist(), ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------- 无地 (issue 11)


def test_off_every_list_says_which_condition_failed_at_published_precision():
    s = load_scheme("zhejiang_default")
    d = frame(scale=["规下", "规下", "规下"], land_area_mu=[4.995, 4.994, 5.0], tax_paid=[30.0] * 3)
    out = by_id(evaluate(d, s, 2024))
    # "占地5亩以上": 4.995 亩 is 5.00 亩 at the published precision, 4.994 is 4.99
    assert out["list_name"].fillna("—").tolist() == ["规下", "—", "规下"]
    assert out.loc["e1", "excluded_reason"] == (
        "不在评价名单（规上：scale == '规上'；规下：scale == '规下' and land_mu >= 5；比较值：用地面积 4.99 亩）")
    assert "比较值：用地面积 4.99 亩" in explain_text(out.loc["e1", "explanation"])


def test_landless_are_excluded_never_ranked_with_landed_and_say_why():
    s = scheme(tax_only(), missing="population_average_score")
    d = frame(tax_paid=[60.0, 40.0, 20.0, 300.0, 30.0], land_area_mu=[6.0, 4.0, 2.0, 0.0, 1e-9])
    out = by_id(evaluate(d, s, 2024))
    assert out["evaluated"].tolist() == [True, True, True, False, False]
    assert out.loc["e3", "excluded_reason"] == "无地企业（用地 0.00 亩，不足 0.01 亩）：不计亩均指标，不参与有地企业排名"
    assert np.isnan(out.loc["e4", "tax_per_mu"]) and pd.isna(out.loc["e4", "rank"])
    assert out["rank_n"].dropna().unique().tolist() == [3]
    assert "无地企业" in explain_text(out.loc["e4", "explanation"])
    # the landed three get what they get without the landless two
    alone = by_id(evaluate(d.iloc[:3], s, 2024))
    pd.testing.assert_series_equal(out["grade"].iloc[:3], alone["grade"])


def test_landless_list_ranks_them_on_their_own():
    kwh = [{"key": "tax_per_kwh", "title": "单位用电税收", "unit": "元/kWh", "formula": "tax_per_kwh",
            "weight": 100, "baseline": 0.2}]
    lists = [{"name": "有地", "when": "True", "indicators": tax_only(), "bands": BANDS},
             {"name": "无地", "when": "True", "indicators": kwh, "bands": BANDS}]
    s = scheme(lists=lists, landless={"min_mu": 0.01, "treatment": "list", "list": "无地"})
    d = frame(tax_paid=[60.0, 40.0, 20.0, 30.0], land_area_mu=[6.0, 4.0, 0.0, 0.004],
              electricity_kwh=[1e6, 1e6, 1e6, 2e6])
    out = by_id(evaluate(d, s, 2024))
    assert out["list_name"].tolist() == ["有地", "有地", "无地", "无地"]
    assert out.loc["e2", "rank_n"] == 2 and out.loc["e0", "rank_n"] == 2
    text = explain_text(out.loc["e3", "explanation"])
    assert "无地企业（用地 0.00 亩，不足 0.01 亩）：列入无地名单，不计亩均指标" in text


def test_landless_list_must_exist_and_use_no_land():
    lists = [{"name": "有地", "when": "True", "indicators": tax_only(), "bands": BANDS}]
    with pytest.raises(Exception, match="landless.list"):
        scheme(lists=lists, landless={"treatment": "list", "list": "无地"})
    lists.append({"name": "无地", "when": "True", "indicators": tax_only(), "bands": BANDS})
    with pytest.raises(Exception, match="无地 list cannot use land"):
        scheme(lists=lists, landless={"treatment": "list", "list": "无地"})
