"""A province run's ratings in the database are what ``mujun evaluate`` stores (issue 16), on a
real PostGIS.

A generated county, run as a province on Dask for 2024 and for 2025 and written with ``--db
--publish`` year by year (2025's multi-year results read 2024's published grades from the
database). One enterprise graded D in 2024 gets strong 2025 figures, so it leaves D (差别电价
refund); six others stay D (two years in a row: 0.3 元/kWh, 重点整治对象). Then
:func:`app.evaluation.evaluate_year` rates each year again from the same database state, and
every stored column of every rating row of its run must equal the province run's: grade, score,
rank, colour, 亩均税收, indicators, adjustments, the explanation and its text, warnings,
consecutive D years, surcharge, refund, 低产田 years.

One county, because ``mujun evaluate`` ranks the database's subjects as one county while the
province run ranks within each county: with one county both must agree on everything.
"""

from __future__ import annotations


import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from app.evaluation import evaluate_year
from app.province import read_outputs, run_province
from app.province_db import write_province
from app.sample import _ProvinceWriter
from spatial.synthetic import generate_county
from tests.stored_ratings import KEYS, assert_same_rows, stored_rows

YEARS = (2024, 2025)


def _boost(metrics: pq.ParquetFile, path, uscc: str, year: int) -> None:
    """``uscc``'s figures of ``year`` ×100 (energy and emissions ÷100): it leaves D that year."""
    t = metrics.read()
    df = t.to_pandas()
    row = (df["uscc"] == uscc) & (df["year"] == year)
    assert row.sum() == 1
    for c in ("tax_paid", "value_added", "revenue", "output_value", "rd_expense"):
        df.loc[row, c] = df.loc[row, c] * 100
    for c in ("energy_tce", "emission_t"):
        df.loc[row, c] = df.loc[row, c] / 100
    pq.write_table(pa.Table.from_pandas(df, schema=t.schema, preserve_index=False), path)


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    """The county's province input and its two years' run outputs; ``leaver``: D in 2024 only."""
    root = tmp_path_factory.mktemp("province_ratings")
    (root / "in").mkdir()
    w = _ProvinceWriter(root / "in", "parquet")
    w.add(generate_county(seed=11, parcels=120, index=0, enterprises_per_parcel=3))
    w.close()
    out = {y: root / f"out{y}" for y in YEARS}
    run_province(root / "in", 2024, out[2024], workers=1, processes=False)
    r = read_outputs(out[2024])["enterprise_ratings"]
    f = root / "in" / "metrics.parquet"
    m = pd.read_parquet(f)
    kwh = m[m["year"] == 2024].set_index("uscc")["electricity_kwh"]
    d = r[(r["grade"] == "D") & (r["band_grade"] == "D")].assign(kwh=lambda x: kwh.reindex(x["subject_id"]).to_numpy())
    leaver = d[d["kwh"] > 0].sort_values("kwh")["subject_id"].iloc[-1]
    _boost(pq.ParquetFile(f), f, leaver, 2025)
    run_province(root / "in", 2025, out[2025], workers=1, processes=False)
    return {"in": root / "in", "out": out, "leaver": leaver}


def test_province_ratings_equal_what_evaluate_stores(province, engine):
    runs = {y: write_province(engine, province["out"][y], province["in"], y, publish=True).run_id for y in YEARS}
    with engine.connect() as conn:
        mine = {y: {t: stored_rows(conn, t, runs[y]) for t in KEYS} for y in YEARS}

    # the county path on the same database: 2025's history is the published province run of 2024
    for y in YEARS:
        ev = evaluate_year(engine, y, "zhejiang_default", force=True)
        assert ev.run_id != runs[y] and not ev.reused
        with engine.connect() as conn:
            for t, key in KEYS.items():
                assert_same_rows(mine[y][t], stored_rows(conn, t, ev.run_id), key, (y, t))

    # … and what they agree on is there: nothing left NULL or empty that the county path fills
    e = mine[2025]["enterprise_ratings"].set_index("uscc")
    graded = e["grade"].notna()
    assert graded.sum() > 0 and e.loc[graded, "colour"].notna().all()
    assert all(x.get("text") for x in e["explanation"]) and all(isinstance(x, dict) and x for x in e["indicators"])
    with engine.connect() as conn:
        kwh = pd.read_sql(sa.text("SELECT uscc, year, electricity_kwh FROM metrics"), conn) \
            .set_index(["uscc", "year"])["electricity_kwh"]
    twice = e[e["consecutive_d_years"] == 2]
    assert len(twice) >= 3
    for uscc, r in twice.iterrows():  # 镇海: the second D year in a row costs 0.3 元/kWh
        assert r["electricity_surcharge_yuan"] == round(0.3 * kwh[(uscc, 2025)], 2) > 0
        assert r["warnings"] == ["连续两年及以上D档：重点整治对象"]
    gone = e.loc[province["leaver"]]  # left D: 2024's charge (0.1 元/kWh) back
    assert gone["grade"] != "D" and gone["consecutive_d_years"] == 0 and gone["electricity_surcharge_yuan"] == 0
    assert gone["electricity_refund_yuan"] == round(0.1 * kwh[(province["leaver"], 2024)], 2) > 0
    p = mine[2025]["parcel_ratings"]
    assert p["low_yield_years"].notna().all() and (p["low_yield_years"] == 2).any()


def test_outputs_without_the_stored_columns_are_refused(province, engine, tmp_path):
    """Outputs of an older version (ratings without colour, explanation …) are not written half."""
    import shutil

    out = tmp_path / "old"
    shutil.copytree(province["out"][2024], out)
    for f in (out / "enterprise_ratings").glob("*.parquet"):
        pd.read_parquet(f).drop(columns=["colour", "explanation"]).to_parquet(f, index=False)
    with pytest.raises(ValueError, match="缺少 colour, explanation.*重新运行"):
        write_province(engine, out, province["in"], 2024)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM evaluation_runs")).scalar() == 0
