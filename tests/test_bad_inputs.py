"""The bad-input corpus: each kind of mistake gives its exact message (file, row, field, reason).

The corpus is built from ``tests/bad_inputs/make_corpus.py`` into a tmp dir, one bundle per kind.
Pure side only: valid rows kept, invalid rows listed (the database side is tested elsewhere).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pytest

from spatial.io import BundleError, read_bundle
from spatial.validate import validate_bundle

_spec = importlib.util.spec_from_file_location("make_corpus", Path(__file__).parent / "bad_inputs" / "make_corpus.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

KINDS = corpus.KINDS


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return corpus.build(tmp_path_factory.mktemp("bad_inputs"))


def test_corpus_has_at_least_20_kinds():
    assert len(KINDS) >= 20


@pytest.mark.parametrize("kind", [k for k, (_, e) in KINDS.items() if e[0] == "fatal"])
def test_fatal(kind, built):
    expected = KINDS[kind][1][1]
    d = built[kind]
    with pytest.raises(BundleError) as info:
        read_bundle(d)
    msg = str(info.value)
    expected = expected.replace("DIR:", f"{d}:")
    if kind == "truncated_shp":
        size = (d / "parcels.shp").stat().st_size
        expected = expected.replace("SIZE", str(size)).replace("DECLARED", str(size * 2))
    if kind in ("truncated_gpkg", "truncated_xlsx"):
        # the tail is GDAL's / zipfile's own words
        assert msg.startswith(expected), msg
        assert msg.endswith("— the file is damaged or truncated; export it again") or msg.endswith("save it again in Excel")
    else:
        assert msg == expected


@pytest.mark.parametrize("kind", [k for k, (_, e) in KINDS.items() if e[0] == "reject"])
def test_reject(kind, built):
    _, file, row, field, value, reason, severity = KINDS[kind][1]
    if reason == "YEAR_RANGE":
        hi = dt.date.today().year + 1
        reason = f"年度超出范围 1990–{hi} (year out of range 1990–{hi})"
    b = validate_bundle(read_bundle(built[kind]))
    hits = b.rejects[(b.rejects["file"] == file) & (b.rejects["row"] == row) & (b.rejects["field"] == field)
                     & (b.rejects["reason"] == reason)]
    assert len(hits) == 1, "\n".join(b.messages())
    hit = hits.iloc[0]
    assert hit["severity"] == severity
    if value is not None:
        assert hit["value"] == value
    # an error removes exactly that row; a warning keeps it
    role = next(r for r, files in b.files.items() if any(p.name == file for p in files))
    kept = b.tables[role]
    assert ((kept["_file"] == file) & (kept["_row"] == row)).any() == (severity == "warning")


def test_good_bundle_has_no_rejects(tmp_path):
    b = validate_bundle(read_bundle(corpus.write_good_bundle(tmp_path / "good")))
    assert b.rejects.empty, b.messages()
    assert {k: len(v) for k, v in b.tables.items()} == {
        "parcels": 3, "enterprises": 3, "metrics": 3, "leases": 1, "corrections": 1}


def test_gbk_dbf_without_cpg_reads_chinese(built):
    d = built["gbk_no_cpg"]
    assert not (d / "parcels.cpg").exists()
    b = read_bundle(d)
    assert b.column_map["parcels.shp"]["权利人统一"] == "owner_uscc"
    assert list(b.tables["parcels"]["owner_name"]) == ["甲机械有限公司", "乙电子有限公司", "丙纺织有限公司"]
    assert b.rejects.empty


def test_self_intersecting_repaired_polygonal(built):
    b = validate_bundle(read_bundle(built["self_intersecting"]))
    g = b.tables["parcels"].set_index("parcel_code").geometry
    fixed = g[corpus.CODES[1]]
    assert fixed.is_valid and fixed.geom_type in ("Polygon", "MultiPolygon")
    hit = b.warnings[b.warnings["field"] == "geometry"].iloc[0]
    assert hit["value"].startswith("Self-intersection[")


def test_xlsx_merged_header_read(built):
    b = validate_bundle(read_bundle(built["xlsx_merged_header"]))
    assert b.column_map["metrics_2023.xlsx"] == {
        "统一社会信用代码": "uscc", "年度": "year", "实缴税金": "tax_paid", "税收还原额": "tax_refund"}
    m = b.tables["metrics"]
    assert list(m["tax_paid"]) == [100.0, 101.0, 102.0]
    assert list(m["tax_refund"]) == [5.0, 5.0, 5.0]
    # data begin on spreadsheet line 4 (title, two header lines above)
    assert list(m["_row"]) == [4, 5, 6]
    assert b.rejects.empty, b.messages()


def test_no_crs_accepted_with_crs_argument(built):
    b = read_bundle(built["no_crs"], crs="EPSG:4549")
    assert b.tables["parcels"].crs.to_epsg() == 4490
    assert b.source_crs["parcels"] == "EPSG:4549"


def test_wrong_crs_replaced_by_override(built):
    b = read_bundle(built["wrong_crs"], overrides={"parcels": {"crs": "EPSG:4549"}})
    x, y = b.tables["parcels"].geometry.iloc[0].centroid.coords[0]
    assert 119.99 < x < 120.01 and 29.8 < y < 29.83


def test_cascade_keeps_other_rows(built):
    b = validate_bundle(read_bundle(built["metrics_of_rejected_enterprise"]))
    assert sorted(b.tables["metrics"]["uscc"]) == sorted([corpus.U2, corpus.U3])
