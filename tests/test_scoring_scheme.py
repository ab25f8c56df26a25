"""Scheme files: presets load, hashes are stable, invalid schemes fail with exact messages."""

import copy
from importlib import resources

import pytest
import yaml

from scoring import SchemeError, list_presets, load_scheme, parse_scheme, scheme_hash

PRESETS = ["huangyan_2022", "huzhou_3", "linshu", "yongkang", "zhejiang_default", "zhenhai_4"]


def preset_data(name):
    return yaml.safe_load(resources.files("scoring").joinpath(f"presets/{name}.yaml").read_text("utf-8"))


def errors_of(data, source="s.yaml"):
    with pytest.raises(SchemeError) as exc:
        parse_scheme(data, source=source)
    return str(exc.value)


def test_presets_listed_and_valid():
    assert list_presets() == PRESETS
    for name in PRESETS:
        scheme = load_scheme(name)
        assert scheme.name == name and scheme.source.seed


def test_preset_details():
    zh = load_scheme("zhenhai_4")
    energy = zh.lists[0].indicators[2].baseline
    assert (energy.default, energy.groups) == (4.0, {"石油化工": 1.2})
    assert zh.multiyear.electricity_rates == [0.1, 0.3, 0.5]
    hz = load_scheme("huzhou_3")
    assert {i.title: i.weight for i in hz.lists[0].indicators} == {
        "亩均税收": 30, "亩均增加值": 20, "R&D经费支出占营业收入比重": 10, "全员劳动生产率": 10,
        "单位排放增加值": 5, "碳效": 15, "人才密度": 10}
    ls = load_scheme("linshu")
    rd = ls.lists[0].indicators[-1]
    assert rd.weight == 15 and [b.factor for b in rd.coefficient.bands] == [1.05, 1.1, 1.15, 1.2]
    assert [(b.grade, b.from_, b.to) for b in ls.lists[0].bands] == [
        ("A", 0, 5), ("B", 5, 61), ("C-", 61, 85), ("C+", 85, 92), ("D", 92, 100)]


def test_scheme_hash_is_content_based(tmp_path):
    data = preset_data("yongkang")
    a = parse_scheme(data)
    b = parse_scheme(yaml.safe_load(yaml.safe_dump(data, allow_unicode=True, sort_keys=True)))
    assert scheme_hash(a) == scheme_hash(b)
    data["lists"][0]["indicators"][0]["weight"] = 31
    assert scheme_hash(parse_scheme(data)) != scheme_hash(a)


def test_bad_weight_names_file_and_path():
    data = preset_data("huangyan_2022")
    data["lists"][0]["indicators"][2]["weight"] = -1
    assert errors_of(data, "scoring/presets/huangyan_2022.yaml") == (
        "scoring/presets/huangyan_2022.yaml: lists[0].indicators[2].weight: must be ≥ 0")


def test_bad_weight_from_a_file(tmp_path):
    data = preset_data("huangyan_2022")
    data["lists"][1]["indicators"][1]["weight"] = "heavy"
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    with pytest.raises(SchemeError) as exc:
        load_scheme(path)
    assert str(exc.value) == f"{path}: lists[1].indicators[1].weight: must be a number"


def test_unknown_column_in_formula():
    data = preset_data("zhejiang_default")
    data["lists"][0]["indicators"][1].update(key="va_score", formula="value_addd / land_mu")
    message = errors_of(data)
    assert message.startswith("s.yaml: lists[0].indicators[1].formula: unknown column 'value_addd' (known: ")


def test_formula_outside_the_whitelist():
    data = preset_data("zhejiang_default")
    data["lists"][0]["indicators"][0]["key"] = "tax_score"
    data["lists"][0]["indicators"][0]["formula"] = "__import__('os')"
    assert errors_of(data) == ("s.yaml: lists[0].indicators[0].formula: function '__import__' is not "
                               "allowed (allowed: flag, group_mean, group_median, max, min, missing)")
    data["lists"][0]["indicators"][0]["formula"] = "tax.real"
    assert errors_of(data) == "s.yaml: lists[0].indicators[0].formula: Attribute is not allowed ('tax.real')"
    data["lists"][0]["indicators"][0]["formula"] = "tax > 3"
    assert errors_of(data) == "s.yaml: lists[0].indicators[0].formula: 'tax > 3' gives a boolean, a number is needed"


def test_unknown_statistic():
    data = preset_data("zhejiang_default")
    data["lists"][0]["indicators"][3]["baseline"] = {"stat": "mode"}
    assert errors_of(data) == (
        "s.yaml: lists[0].indicators[3].baseline.stat: must be one of mean, median or percentile")


def test_percentile_needs_p():
    data = preset_data("zhejiang_default")
    data["lists"][0]["indicators"][0]["baseline"] = {"stat": "percentile"}
    assert errors_of(data) == "s.yaml: lists[0].indicators[0].baseline.p: percentile needs p between 0 and 100"


def test_overlapping_bands():
    data = preset_data("yongkang")
    data["lists"][0]["bands"][1] = {"grade": "B", "from": 15, "to": 80}
    assert errors_of(data) == "s.yaml: lists[0].bands[1]: band B (15.0–80.0) overlaps band A (0.0–20.0)"


def test_shared_bound_in_both_bands_overlaps():
    data = preset_data("yongkang")
    data["lists"][0]["bands"][1]["from_inclusive"] = True   # 20 would be in A and in B
    assert errors_of(data) == "s.yaml: lists[0].bands[1]: band B (20.0–80.0) overlaps band A (0.0–20.0)"


def test_band_gap_and_unknown_grade():
    data = preset_data("yongkang")
    data["lists"][0]["bands"][2] = {"grade": "E", "from": 85, "to": 98}
    assert errors_of(data) == (
        "s.yaml: lists[0].bands[2].grade: unknown grade 'E' (grades: A, B, C, D)\n"
        "s.yaml: lists[0].bands[2]: gap between band B and band E at 80.0")


def test_unknown_key_and_missing_key():
    data = preset_data("yongkang")
    data["lists"][0]["indicators"][0]["wieght"] = 3
    del data["title"]
    assert errors_of(data) == ("s.yaml: title: required\n"
                               "s.yaml: lists[0].indicators[0].wieght: unknown key")


def test_cross_references():
    data = preset_data("zhenhai_4")
    data["lists"][0]["indicators"][2]["baseline"]["groups"]["石化"] = 1.0
    data["adjustments"] = [{"name": "x", "kind": "fix", "when": "tax > 1"}]
    data["industry_groups"]["groups"][1]["codes"] = ["26-30"]
    assert errors_of(data) == (
        "s.yaml: industry_groups.groups[1].codes[0]: '26-30' overlaps codes of group '石油化工'\n"
        "s.yaml: lists[0].indicators[2].baseline.groups.石化: unknown industry group '石化'\n"
        "s.yaml: adjustments[0].grade: required for kind fix")


def test_unknown_preset():
    with pytest.raises(FileNotFoundError, match="no such file or preset"):
        load_scheme("nowhere")


def test_indicator_key_may_reuse_a_column_name_only_for_itself():
    data = preset_data("zhejiang_default")
    data["lists"][0]["indicators"][0]["formula"] = "tax / land_mu"
    assert errors_of(data) == ("s.yaml: lists[0].indicators[0].key: 'tax_per_mu' is a column name; "
                               "use it only with formula: tax_per_mu")
