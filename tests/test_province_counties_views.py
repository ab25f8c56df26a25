"""What staff read from a province database is per county (issue 16), on a real PostGIS.

A province run written with ``--db`` holds many counties in one database, each rated as its own
unit (ranks and bands within county and industry group; :func:`app.evaluation.county_ratings`).
The 体检表 (:mod:`app.checkup`) compares a subject with its group's and township's averages and
says what score the next better band starts at; the 公示名单 (:mod:`app.lists`) lists ranks
(组内排名). On a province database both must be the subject's county's, not the province's:

* 体检表: the group average (同组平均) and township average are over the subject's county; the
  target score of "what would raise the grade" is the lowest score of the next better band in its
  county, list and group — each checked against a recomputation from the rating rows, and against
  the province-wide figure (which differs, so the test fails on a page that ignores counties).
* 体检表 in a batch (``mujun checkups``): the index has each enterprise's county, county by county.
* 公示名单: a 县（区）代码 column (each subject's county), rows county by county; within a county
  and group the ranks are 1..n once (a province-wide list without counties shows several rank 1s
  per group); ``county=`` (``mujun export ratings --county``) keeps one county; the Excel 汇总
  counts grades per county and list.

A county's own database (``county`` NULL) keeps its pages and lists as they were:
tests/test_checkups.py, tests/test_rating_lists.py and tests/test_publish_lists.py.
"""

from __future__ import annotations

import math

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa

from app.auth import Principal
from app.checkup import Checkups, write_checkups
from app.lists import export_ratings, rating_list
from app.province import run_province
from app.province_db import write_province
from app.sample import _ProvinceWriter
from spatial.synthetic import generate_county
from tests.test_cli import _mujun

YEAR = 2024
SCHEME = "zhejiang_default"


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    """Three abutting generated counties as one province, and its run's outputs for 2024."""
    root = tmp_path_factory.mktemp("province_views")
    (root / "in").mkdir()
    w = _ProvinceWriter(root / "in", "parquet")
    for i in range(3):
        w.add(generate_county(seed=29, parcels=70, index=i, enterprises_per_parcel=3))
    w.close()
    run_province(root / "in", YEAR, root / "out", workers=1, processes=False)
    return root


@pytest.fixture
def db(province, engine):
    """The province written into a fresh database (published); its run id and rating rows with
    each subject's county and township."""
    run = write_province(engine, province / "out", province / "in", YEAR, scheme=SCHEME, publish=True).run_id
    with engine.connect() as conn:
        ent = pd.read_sql(sa.text(
            "SELECT r.*, e.county, e.township FROM enterprise_ratings r JOIN enterprises e USING (uscc) "
            "WHERE r.run_id = :r"), conn, params={"r": run})
        par = pd.read_sql(sa.text(
            "SELECT r.*, p.county, p.township FROM parcel_ratings r JOIN parcels p USING (identity_code) "
            "WHERE r.run_id = :r AND p.valid_from <= :y AND coalesce(p.valid_to, 10000) > :y"),
            conn, params={"r": run, "y": YEAR})
    assert ent["county"].nunique() == 3 and par["county"].nunique() == 3
    return engine, run, ent, par


def _rated(r: pd.DataFrame) -> pd.DataFrame:
    return r[r["evaluated"].astype(bool) & r["grade"].notna()]


def _mean(r: pd.DataFrame, key: str) -> tuple[float, int]:
    v = [x[key] for x in r["indicators"] if isinstance(x, dict) and isinstance(x.get(key), (int, float))
         and not isinstance(x.get(key), bool)]
    return (sum(v) / len(v) if v else math.nan), len(v)


def _check_means(doc: dict, rating: pd.Series, rows: pd.DataFrame) -> int:
    """Each indicator's 同组平均 / 同镇街平均 on the page is its county's; returns how many of
    them differ from the province-wide figure (the premise that makes the check bite)."""
    rated = _rated(rows)
    same_list = rated[rated["list_name"] == rating["list_name"]]
    group = same_list[same_list["industry_group"] == rating["industry_group"]]
    town = same_list[same_list["township"] == rating["township"]]
    differs = 0
    assert doc["indicators"]
    for ind in doc["indicators"]:
        k = ind["key"]
        for got, n, part in ((ind["group_mean"], ind["group_n"], group), (ind["town_mean"], ind["town_n"], town)):
            want, want_n = _mean(part[part["county"] == rating["county"]], k)
            assert n == want_n > 0 and got == pytest.approx(want, rel=1e-12), (k, got, want)
            province_mean, province_n = _mean(part, k)
            differs += province_n != n or not math.isclose(province_mean, got, rel_tol=1e-9)
    return differs


def _next_band_floor(rows: pd.DataFrame, rating: pd.Series, better: str) -> float:
    r = rows[rows["evaluated"].astype(bool) & rows["score"].notna() & (rows["band_grade"] == better)
             & (rows["list_name"] == rating["list_name"]) & (rows["industry_group"] == rating["industry_group"])]
    return float(r["score"].min())


def test_checkup_compares_with_the_subjects_county(db):
    engine, run, ent, par = db
    grades = ["A", "B", "C", "D"]
    with engine.connect() as conn:
        c = Checkups(conn, Principal("admin"), YEAR)
        assert c.run["id"] == run
        differs = checked_raise = raise_differs = 0
        for kind, rows, key in (("enterprise", ent, "uscc"), ("parcel", par, "identity_code")):
            rated = _rated(rows)
            # subjects of every county, in bands that have a better one
            pick = rated[rated["band_grade"].isin(grades[1:])].groupby(["county", "band_grade"]).head(2)
            assert pick["county"].nunique() == 3
            for _, rating in pick.iterrows():
                doc = getattr(c, kind)(rating[key])
                assert doc["rating"]["grade"] == rating["grade"]
                differs += _check_means(doc, rating, rows)
                better = grades[grades.index(rating["band_grade"]) - 1]
                own = rows[rows["county"] == rating["county"]]
                floor = _next_band_floor(own, rating, better)
                r = doc["raise"]
                if math.isnan(floor):  # no such band in its county's group: said so, not borrowed
                    assert r["reachable"] is False and "target_score" not in r
                    raise_differs += not math.isnan(_next_band_floor(rows, rating, better))
                    continue
                assert r["next"] == better and r["target_score"] == floor
                assert r["gap"] == pytest.approx(max(0.0, floor - rating["score"]))
                checked_raise += 1
                raise_differs += _next_band_floor(rows, rating, better) != floor
    # the county's figures are not the province's: a page of province averages fails above
    assert differs > 10 and checked_raise > 10 and raise_differs > 0, (differs, checked_raise, raise_differs)


def test_rating_list_has_the_county_and_ranks_within_it(db, db_url, tmp_path):
    engine, run, ent, _ = db
    with engine.connect() as conn:
        rl = rating_list(conn, year=YEAR)
        one = rating_list(conn, year=YEAR, county=sorted(ent["county"].unique())[1])
        land = rating_list(conn, year=YEAR, level="parcel")
    f = rl.frame
    cols = list(f.columns)
    assert cols.index("县（区）代码") == cols.index("镇街") - 1
    county = dict(zip(ent["uscc"], ent["county"]))
    assert len(f) == len(ent) and [county[u] for u in f["统一社会信用代码"]] == f["县（区）代码"].tolist()
    # county by county, and within a county and group the ranks are 1..n once
    assert f["县（区）代码"].tolist() == sorted(f["县（区）代码"])
    ranked = f[f["组内排名"].notna()]
    for (c, lst, grp), part in ranked.groupby(["县（区）代码", "名单", "行业组"]):
        assert sorted(part["组内排名"].astype(int)) == list(range(1, len(part) + 1)), (c, lst, grp)
    # … which is what the column is for: by group alone, rank 1 appears once per county
    firsts = ranked[ranked["组内排名"] == 1].groupby(["名单", "行业组"]).size()
    assert (firsts > 1).any()
    code = sorted(ent["county"].unique())[1]
    assert set(one.frame["县（区）代码"]) == {code} and len(one.frame) == (ent["county"] == code).sum()
    assert land.frame["县（区）代码"].nunique() == 3

    out = tmp_path / "list.xlsx"
    export_ratings(engine, out, year=YEAR)
    wb = openpyxl.load_workbook(out, read_only=True)
    rows = list(wb["汇总"].iter_rows(min_row=3, values_only=True))
    assert rows[0][:3] == ("县（区）代码", "名单", "合计")
    body = [r for r in rows[1:] if r[0] != "合计"]
    got = {(r[0], r[1]): r[2] for r in body}
    want = f.groupby(["县（区）代码", "名单"]).size().to_dict()
    assert got == want and rows[-1][0] == "合计" and rows[-1][2] == len(f)
    sheet = next(s for s in wb.sheetnames if s not in ("汇总", "不参评"))
    head = next(wb[sheet].iter_rows(max_row=1, values_only=True))
    assert "县（区）代码" in head

    # a county bureau's list from the province database: `mujun export ratings --county`
    csv = tmp_path / "county.csv"
    done = _mujun(db_url, "export", "ratings", "--year", str(YEAR), "--county", code, "--out", str(csv),
                  data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    mine = pd.read_csv(csv, dtype={"县（区）代码": str})
    assert set(mine["县（区）代码"]) == {code} and len(mine) == (ent["county"] == code).sum()



def test_checkup_batch_goes_county_by_county(db, tmp_path):
    """``mujun checkups`` on a province database: the index lists each enterprise's county, county
    by county (a township's name may recur in another county)."""
    engine, run, ent, _ = db
    graded = ent[ent["grade"].notna()]
    rows = write_checkups(engine, tmp_path / "ck", year=YEAR, limit=3)
    first = sorted(graded["county"].unique())[0]
    county = dict(zip(ent["uscc"], ent["county"]))
    assert [r["县（区）代码"] for r in rows] == [first] * 3 == [county[r["统一社会信用代码"]] for r in rows]
    index = pd.read_excel(tmp_path / "ck" / "index.xlsx", dtype=str)
    assert list(index.columns[:4]) == ["统一社会信用代码", "企业名称", "县（区）代码", "镇街"]
    assert index["县（区）代码"].tolist() == [first] * 3
    assert "<th>县（区）代码</th>" in (tmp_path / "ck" / "index.html").read_text(encoding="utf-8")
