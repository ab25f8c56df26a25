"""公示名单: `mujun export ratings` on the sample county, read back as a bureau would open it."""

from __future__ import annotations

import re
from decimal import Decimal

import openpyxl
import pandas as pd
import pyogrio
import pytest
import sqlalchemy as sa
from app.lists import export_ratings
from tests.test_cli import _mujun


@pytest.fixture(scope="module")
def county(county_db_url):
    eng = sa.create_engine(county_db_url)
    with eng.connect() as conn:
        year = conn.execute(sa.text("SELECT max(year) FROM evaluation_runs WHERE status = 'published'")).scalar_one()
        run = conn.execute(sa.text("SELECT id, summary FROM evaluation_runs WHERE year = :y AND status = 'published'"),
                           {"y": year}).mappings().one()
    yield eng, year, run
    eng.dispose()


def _rows(ws) -> list[dict]:
    values = list(ws.iter_rows(values_only=True))
    return [dict(zip(values[0], r)) for r in values[1:]]


def test_xlsx_has_every_rated_enterprise_with_the_runs_grades(county, county_db_url, tmp_path):
    eng, year, run = county
    out = tmp_path / "ratings.xlsx"
    result = _mujun(county_db_url, "export", "ratings", "--year", str(year), "--out", str(out), data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "名单" in result.stdout

    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames[0] == "汇总"
    lists = [n for n in wb.sheetnames if n != "汇总"]
    assert "规上" in lists
    rows = [r for n in lists for r in _rows(wb[n])]
    with eng.connect() as conn:
        n_rated = conn.execute(sa.text("SELECT count(*) FROM enterprise_ratings WHERE run_id = :r"),
                               {"r": run["id"]}).scalar_one()
        known = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT township FROM enterprises"))}
    # one row per rated subject, each exactly once
    assert len(rows) == n_rated
    assert len({r["统一社会信用代码"] for r in rows}) == n_rated
    # the grade counts of the published run
    counts = pd.Series([r.get("等级") for r in rows], dtype=object).fillna("未评").value_counts().to_dict()
    assert counts == run["summary"]["enterprises"]

    # Chinese headers and values
    sheet = wb["规上"]
    header = [c.value for c in sheet[1]]
    for h in ("统一社会信用代码", "企业名称", "镇街", "用地面积(亩)", "亩均税收(万元/亩)", "综合得分", "组内排名", "等级", "预警颜色"):
        assert h in header, h
    first = _rows(sheet)[0]
    assert first["预警颜色"] in {"绿", "蓝", "橙", "红"}
    assert first["镇街"] in known
    # numbers rounded to the scheme's published precision (2 decimals)
    for r in _rows(sheet)[:200]:
        for h in ("用地面积(亩)", "亩均税收(万元/亩)", "综合得分"):
            v = r[h]
            if v is not None:
                assert Decimal(str(v)).as_tuple().exponent >= -2, (h, v)
    # the layout people expect: frozen header, filter, widths
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref and sheet.auto_filter.ref.startswith("A1:")
    widths = {k: d.width for k, d in sheet.column_dimensions.items() if d.width}
    assert widths and max(widths.values()) > 12
    # the summary sheet adds up to the same total
    summary = list(wb["汇总"].iter_rows(values_only=True))
    total = next(r for r in summary if r and r[0] == "合计")
    assert total[1] == n_rated


def test_region_and_grade_filters_hold(county, tmp_path):
    eng, year, _ = county
    with eng.connect() as conn:
        town = conn.execute(sa.text("SELECT township FROM enterprises GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")).scalar_one()
    rl = export_ratings(eng, tmp_path / "town.csv", year=year, region=town, grades=["C", "D"])
    df = pd.read_csv(tmp_path / "town.csv", encoding="utf-8-sig", dtype=str)
    assert len(df) == len(rl.frame) > 0
    assert set(df["镇街"]) == {town}
    assert set(df["等级"]) <= {"C", "D"}


def test_parcel_list_as_geopackage(county, tmp_path):
    eng, year, run = county
    out = tmp_path / "parcels.gpkg"
    rl = export_ratings(eng, out, year=year, level="parcel")
    info = pyogrio.read_info(out, layer=pyogrio.list_layers(out)[0][0])
    assert info["features"] == len(rl.frame) > 0
    assert "宗地身份码" in list(info["fields"]) and "等级" in list(info["fields"])
    assert info["crs"].endswith("4490")
    with eng.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM parcel_ratings WHERE run_id = :r"), {"r": run["id"]}).scalar_one()
    assert info["features"] == n


def test_unpublished_year_is_a_clear_error(county_db_url, tmp_path):
    result = _mujun(county_db_url, "export", "ratings", "--year", "1999", "--out", str(tmp_path / "x.xlsx"),
                    data_dir=tmp_path)
    assert result.returncode == 1
    assert re.search(r"1999 年没有已发布的评价", result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
