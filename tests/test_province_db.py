"""A province run written into PostGIS (app/province_db.py, issue 16), on a real PostGIS.

A generated three-county province runs on Dask (2 workers of a LocalCluster); its outputs are
written county by county. Afterwards the database holds exactly the run's ratings, links and
land, the layers show the land with its grades, writing the run again adds no land version, and
a county that fails rolls back alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import province_db
from app.api.layers import land_in_year_sql
from app.province import read_outputs, run_province
from app.province_db import write_province
from app.sample import _ProvinceWriter
from spatial.synthetic import generate_county

YEAR = 2024
RATING_COLS = ["list_name", "industry_group", "evaluated", "excluded_reason", "score", "rank", "percentile",
               "band_grade", "grade"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three adjoining generated counties, run on 2 workers; outputs and the province's path."""
    root = tmp_path_factory.mktemp("province_db")
    (root / "in").mkdir()
    w = _ProvinceWriter(root / "in", "parquet")
    for i in range(3):
        w.add(generate_county(seed=11, parcels=60, index=i, enterprises_per_parcel=3))
    w.close()
    run_province(root / "in", YEAR, root / "out", workers=2, processes=False)
    return {"province": root / "in", "out": root / "out", "res": read_outputs(root / "out")}


def _db_ratings(conn, table: str, key: str, run_id: int) -> pd.DataFrame:
    df = pd.read_sql(sa.text(f"SELECT {key} AS subject_id, {', '.join(RATING_COLS)}, year FROM {table} "
                             f"WHERE run_id = :r ORDER BY {key}"), conn, params={"r": run_id})
    return df


def _expected(r: pd.DataFrame) -> pd.DataFrame:
    e = r.rename(columns={"group": "industry_group"})[["subject_id", *RATING_COLS]]
    return e.sort_values("subject_id", ignore_index=True)


def _same(db: pd.DataFrame, exp: pd.DataFrame) -> None:
    assert len(db) == len(exp) > 0
    assert db["subject_id"].tolist() == exp["subject_id"].astype(str).tolist()
    for c in RATING_COLS:
        a, b = db[c].to_numpy(dtype=object), exp[c].to_numpy(dtype=object)
        for x, y in zip(a, b):
            if pd.isna(y):
                assert pd.isna(x), (c, x, y)
            elif c in ("score", "percentile"):
                assert float(x) == float(y), (c, x, y)  # exactly: COPY writes the shortest repr
            elif c == "rank":
                assert int(x) == int(y), (c, x, y)
            else:
                assert x == y, (c, x, y)


def test_written_run_equals_the_outputs_and_the_layers_show_it(run, engine):
    lines: list[str] = []
    w = write_province(engine, run["out"], run["province"], YEAR, publish=True, progress=lines.append)
    res = run["res"]
    assert w.counties == 3 and len(lines) == 3 and all(ln.startswith("县 ") and "已写入数据库" in ln for ln in lines)
    with engine.connect() as conn:
        er = _db_ratings(conn, "enterprise_ratings", "uscc", w.run_id)
        pr = _db_ratings(conn, "parcel_ratings", "identity_code", w.run_id)
        _same(er, _expected(res["enterprise_ratings"]))
        _same(pr, _expected(res["parcel_ratings"]))
        assert set(er["year"]) == set(pr["year"]) == {YEAR}
        assert conn.execute(sa.text("SELECT DISTINCT tableoid::regclass::text FROM parcel_ratings WHERE run_id = :r"),
                            {"r": w.run_id}).scalars().all() == [f"parcel_ratings_y{YEAR}"]
        assert conn.execute(sa.text("SELECT status FROM evaluation_runs WHERE id = :r"),
                            {"r": w.run_id}).scalar() == "published"
        # links: every one, with its share, exactly
        links = pd.read_sql(sa.text("SELECT identity_code, uscc, role, method, confidence, share, attributed_area_m2 "
                                    "FROM land_links WHERE year = :y ORDER BY identity_code, uscc"),
                            conn, params={"y": YEAR})
        exp = res["links"].sort_values(["identity_code", "uscc"], ignore_index=True)
        assert len(links) == len(exp) > 0
        for c in links.columns:
            assert links[c].astype(object).where(links[c].notna(), None).tolist() == \
                exp[c].astype(object).where(exp[c].notna(), None).tolist(), c
        # the land of the year: every piece of the run, one version each, same area
        land = pd.read_sql(sa.text(f"SELECT identity_code, area_m2, valid_from FROM {land_in_year_sql()} p "
                                   "ORDER BY identity_code"), conn, params={"year": YEAR})
        assert land["identity_code"].tolist() == res["land"]["identity_code"].tolist()
        assert np.array_equal(land["area_m2"].to_numpy(), res["land"]["area_m2"].to_numpy())
        assert set(land["valid_from"]) == {YEAR}
        n_sub = conn.execute(sa.text("SELECT count(*) FROM sublots WHERE year = :y"), {"y": YEAR}).scalar()
        assert n_sub == len(res["sublots"])
        n_el = conn.execute(sa.text("SELECT count(*) FROM enterprise_land WHERE year = :y"), {"y": YEAR}).scalar()
        assert n_el == len(res["enterprise_land"])
        # 亩均税收 beside each grade: (tax + refund) / land of the subject itself, never a neighbour's
        checks = conn.execute(sa.text("""
            SELECT count(*) FILTER (WHERE r.tax_per_mu IS NOT NULL),
                   count(*) FILTER (WHERE abs(r.tax_per_mu - (m.tax_paid + coalesce(m.tax_refund, 0))
                                              / el.land_area_mu) > 1e-9 * abs(r.tax_per_mu))
            FROM enterprise_ratings r JOIN metrics m ON m.uscc = r.uscc AND m.year = r.year
            JOIN enterprise_land el ON el.uscc = r.uscc AND el.year = r.year
            WHERE r.run_id = :r AND el.land_area_mu >= 0.01"""), {"r": w.run_id}).one()
        assert checks[0] > 0 and checks[1] == 0, checks
        # idle exactly when no enterprise is linked to the land (a holder without an enterprise
        # row occupies nothing, as app.evaluation.parcel_subjects has it) — and such land exists
        idle = conn.execute(sa.text("""
            SELECT count(*) FILTER (WHERE r.idle = EXISTS (SELECT 1 FROM land_links l JOIN enterprises e USING (uscc)
                                    WHERE l.identity_code = r.identity_code AND l.year = r.year)), count(*),
                   count(*) FILTER (WHERE r.idle AND EXISTS (SELECT 1 FROM land_links l
                                    WHERE l.identity_code = r.identity_code AND l.year = r.year))
            FROM parcel_ratings r WHERE r.run_id = :r"""), {"r": w.run_id}).one()
        assert idle[0] == 0 and idle[1] > 0 and idle[2] > 0, idle

    from app.main import create_app
    from tests.test_tiles import features_in, lonlat_to_tile

    grades = dict(zip(res["parcel_ratings"]["subject_id"], res["parcel_ratings"]["grade"]))
    with TestClient(create_app(database_url=engine.url.render_as_string(hide_password=False))) as client:
        r = client.get("/collections/parcels/items", params={"limit": 1000, "year": YEAR})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["numberReturned"] == body["numberMatched"] == len(grades)
        got = {f["properties"]["identity_code"]: f["properties"].get("grade") for f in body["features"]}
        assert got == {k: (v if pd.notna(v) else None) for k, v in grades.items()}
        assert any(v for v in got.values())
        code = res["parcel_ratings"]["subject_id"][res["parcel_ratings"]["grade"].notna()].iloc[0]
        pt = shapely.point_on_surface(res["land"].set_index("identity_code").loc[[code]].to_crs(4490).geometry.values[0])
        x, y = lonlat_to_tile(pt.x, pt.y, 16)
        tile = features_in(client.get(f"/tiles/parcels/16/{x}/{y}.pbf", params={"year": YEAR}))
        assert tile[code]["properties"]["grade"] == grades[code]
        a = client.get(f"/parcels/{code}")
        assert a.status_code == 200, a.text


def test_writing_again_keeps_the_land_and_replaces_the_years_rows(run, engine):
    first = write_province(engine, run["out"], run["province"], YEAR)
    with engine.connect() as conn:
        n = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
             for t in ("parcels", "land_links", "sublots", "enterprise_land", "parcel_metrics")}
    second = write_province(engine, run["out"], run["province"], YEAR)
    assert second.rows["parcels"] == 0  # no land version added: the land did not change
    with engine.connect() as conn:
        assert {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in n} == n
        a = _db_ratings(conn, "parcel_ratings", "identity_code", first.run_id)
        b = _db_ratings(conn, "parcel_ratings", "identity_code", second.run_id)
        _same(b, a)


def test_a_failing_county_rolls_back_alone(run, engine, monkeypatch):
    calls = {"n": 0}
    real = province_db._write_county

    def flaky(conn, frames, year, run_id, sch):
        calls["n"] += 1
        out = real(conn, frames, year, run_id, sch)
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return out

    monkeypatch.setattr(province_db, "_write_county", flaky)
    with pytest.raises(RuntimeError):
        write_province(engine, run["out"], run["province"], YEAR)
    res = run["res"]
    with engine.connect() as conn:
        run_id, status = conn.execute(sa.text("SELECT id, status FROM evaluation_runs ORDER BY id DESC LIMIT 1")).one()
        assert status == "failed"
        n = conn.execute(sa.text("SELECT count(*) FROM parcel_ratings WHERE run_id = :r"), {"r": run_id}).scalar()
    # the first county is written, the second rolled back (and the third never started)
    assert n == len(pd.read_parquet(run["out"] / "parcel_ratings" / "00000.parquet")) > 0


def test_cli_run_with_db_writes_and_publishes(run, db_url, tmp_path):
    """`mujun run --province … --db --publish`: a Chinese line per county, the run published."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = os.environ | {"DATABASE_URL": db_url, "MUJUN_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200",
                        "MUJUN_RENDER_AT_PUBLISH": "0"}
    p = subprocess.run([sys.executable, "-m", "app.cli", "run", "--province", str(run["province"]), "--year",
                        str(YEAR), "--out", str(tmp_path / "out"), "--workers", "1", "--db", "--publish"],
                       env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    said = p.stdout + p.stderr  # progress lines go to the console (stderr), the summary to stdout
    assert said.count("已写入数据库：宗地") == 3 and "已发布" in p.stdout, said
    eng = sa.create_engine(db_url)
    with eng.connect() as conn:
        run_id, status = conn.execute(sa.text("SELECT id, status FROM evaluation_runs")).one()
        n = conn.execute(sa.text("SELECT count(*) FROM parcel_ratings WHERE run_id = :r"), {"r": run_id}).scalar()
    eng.dispose()
    assert status == "published" and n == len(run["res"]["parcel_ratings"])
