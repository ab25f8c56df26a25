"""validate_bundle rules beyond the corpus: industry codes, tolerances, leases, corrections, drops."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pyogrio
import pytest
from shapely.geometry import box

from spatial.io import read_bundle
from spatial.validate import GBT4754_DIVISIONS, industry_code_status, validate_bundle

_spec = importlib.util.spec_from_file_location("make_corpus", Path(__file__).parent / "bad_inputs" / "make_corpus.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)


def test_gbt4754_divisions():
    assert len(GBT4754_DIVISIONS) == 97 and GBT4754_DIVISIONS["13"] == "C" and GBT4754_DIVISIONS["43"] == "C"
    assert GBT4754_DIVISIONS["70"] == "K" and GBT4754_DIVISIONS["97"] == "T"
    codes = pd.Series(["13", "3484", "C3484", "0610", "97", "00", "98", "9912", "A3484", "12345", "3a", None])
    r = industry_code_status(codes)
    assert list(r[:5]) == [""] * 5
    assert r[5].startswith("行业大类不存在") and r[6].startswith("行业大类不存在") and r[7].startswith("行业大类不存在")
    assert r[8].startswith("门类字母与大类不符")
    assert r[9].startswith("行业代码应为2–4位数字") and r[10].startswith("行业代码应为2–4位数字")
    assert r[11] == ""


def test_overlap_tolerance(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "o")
    g = corpus.parcels_gdf()
    g.loc[2, "geometry"] = box(corpus.X0 + 199.99, corpus.Y0, corpus.X0 + 300, corpus.Y0 + 100)  # 1 m² overlap
    for p in d.glob("parcels.*"):
        p.unlink()
    pyogrio.write_dataframe(g, d / "parcels.shp", encoding="GBK")
    b = read_bundle(d)
    assert validate_bundle(b, overlap_tolerance_m2=1.5).rejects.empty
    w = validate_bundle(b, overlap_tolerance_m2=0.5).warnings
    assert list(w["row"]) == [3] and "重叠 1.0 m²" in w["reason"].iloc[0]


def test_leases_and_corrections_rules(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "lc")
    pd.DataFrame({"承租企业统一社会信用代码": [corpus.U3, corpus.U3, corpus.U2],
                  "宗地代码": [corpus.CODES[0], "", ""], "出租企业统一社会信用代码": ["", "", corpus.U1],
                  "租赁面积": ["1,200", "5", "-1"], "起租日期": ["2023/1/1", "", "2024年3月1日"],
                  "到期日期": ["2022-12-31", "", "2025-02-28"]}).to_csv(d / "leases.csv", index=False)
    pd.DataFrame({"统一社会信用代码": [corpus.U2, corpus.U2, corpus.U1], "宗地代码": corpus.CODES,
                  "操作": ["删除", "move", "添加"], "面积占比": ["0.5", "", "1.5"]}).to_csv(d / "corrections.csv", index=False)
    b = validate_bundle(read_bundle(d))
    msgs = {(r.file, r.row, r.field): (r.severity, r.reason) for r in b.rejects.itertuples()}
    assert msgs[("leases.csv", 2, "end_date")][0] == "warning"
    assert msgs[("leases.csv", 3, "parcel_code")] == (
        "error", "宗地代码和出租企业代码都为空 (neither parcel_code nor landlord_uscc given)")
    assert msgs[("leases.csv", 4, "floor_area_m2")] == ("error", "不能为负数 (must not be negative) — 填写 0 或正数")
    assert msgs[("corrections.csv", 3, "action")] == ("error", "操作应为 add 或 remove (action must be add/remove)")
    assert msgs[("corrections.csv", 4, "share")] == ("error", "面积占比应在 0–1 之间 (share must be between 0 and 1)")
    le, co = b.tables["leases"], b.tables["corrections"]
    assert list(le["_row"]) == [2] and le["floor_area_m2"].iloc[0] == 1200.0
    assert str(le["start_date"].iloc[0].date()) == "2023-01-01"
    assert list(co["action"]) == ["remove"]


def test_unknown_landlord_is_a_warning_when_the_lease_names_its_parcel(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "ll")
    stranger = "91330110MA0000000X"
    pd.DataFrame({"承租企业统一社会信用代码": [corpus.U3, corpus.U2],
                  "宗地代码": [corpus.CODES[0], ""], "出租企业统一社会信用代码": [stranger, stranger],
                  "租赁面积": ["300", "200"]}).to_csv(d / "leases.csv", index=False)
    b = validate_bundle(read_bundle(d))
    msgs = {(r.row, r.field): (r.severity, r.reason) for r in b.rejects.itertuples() if r.file == "leases.csv"}
    assert msgs[(2, "landlord_uscc")][0] == "warning"
    assert "按宗地代码定位租赁" in msgs[(2, "landlord_uscc")][1]
    assert msgs[(3, "landlord_uscc")][0] == "error"
    assert list(b.tables["leases"]["_row"]) == [2]


def test_duplicate_metrics_year_and_read_errors_dropped(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "m")
    m = corpus.metrics_df()
    m = pd.concat([m, m.iloc[[0]]], ignore_index=True).astype(str)
    m.loc[1, "实缴税金"] = "n/a"  # a missing token, not an error
    m.loc[2, "年度"] = "2023.5"
    m.to_csv(d / "metrics_2023.csv", index=False)
    b = validate_bundle(read_bundle(d))
    msgs = {(r.row, r.field): r.reason for r in b.errors.itertuples()}
    assert msgs == {(4, "year"): "应为整数 (not an integer) — 填写整数",
                    (5, "year"): "同一企业同一年度指标重复，首次出现在第 2 行 (duplicate metrics for uscc and year, first at row 2) — 删除重复行"}
    assert list(b.tables["metrics"]["_row"]) == [2, 3]
    assert pd.isna(b.tables["metrics"]["tax_paid"].iloc[1])


def test_validate_is_pure_and_progress(tmp_path):
    d = corpus.write_good_bundle(tmp_path / "p")
    b = read_bundle(d)
    before = {k: len(v) for k, v in b.tables.items()}
    steps = []
    out = validate_bundle(b, progress=lambda role, done, total: steps.append((role, done, total)))
    assert {k: len(v) for k, v in b.tables.items()} == before  # input untouched
    assert out is not b and steps[-1] == ("corrections", 5, 5)
