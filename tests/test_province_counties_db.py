"""Re-evaluating a province database rates each county as its own unit (issue 16), on a real
PostGIS.

The 亩均论英雄 ratings are county-level 综合评价: baselines are the county's list means and ranks
are taken within the county and industry group (docs/domain.md). A province run written with
``--db`` (:mod:`app.province_db`) holds many counties in one database; ``mujun evaluate``
(:func:`app.evaluation.evaluate_year`, also what a 纠偏 re-evaluation and the web workflow run)
must then rate each county apart and store exactly the province run's ratings — a grade decides
an electricity surcharge (差别电价).

* A generated three-county province, run for 2024 and 2025 on Dask and written with ``--db
  --publish`` year by year; ``evaluate_year(force=True)`` for each year gives every column of every
  rating row equal to the province run's (grade, score, rank, percentile, band, colour, 亩均税收,
  indicators, the explanation with its baselines and text, warnings, consecutive D years, 差别电价,
  refund, 低产田 years). Rating the same subjects province-wide gives other ranks and grades (so
  this test fails on an evaluation that treats the database as one county), and the run hash
  covers the split.
* zhenhai_4: a 规下 tenant who rents more land across the border follows its own county's
  landlord, as the province run has it.
* A county imported as counties are (``mujun import``: no county) evaluates exactly as before:
  one unit, the whole database, with the run hash of before migration 0009.
* Land without a county (a county import's) gets it from a province write in place.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pandas as pd
import pytest
import sqlalchemy as sa

from app.evaluation import (_history_digest, enterprise_subjects, evaluate_year, parcel_subjects, rating_history,
                            rating_rows)
from app.province import read_outputs, run_province
from app.province_db import write_province
from app.sample import _ProvinceWriter, write_sample_bundle
from scoring import evaluate, load_scheme, run_fingerprint, scheme_hash
from spatial.synthetic import generate_county
from tests.stored_ratings import KEYS, assert_same_rows, same_value, stored_rows

YEARS = (2024, 2025)
SCHEME = "zhejiang_default"


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    """Three generated counties as one province, and its run outputs of each year (and of 2024
    under zhenhai_4, whose 规下 tenants follow their landlord). ``tenant``: a 规下 tenant of the
    third county who also rents a large floor area on the first county's land."""
    root = tmp_path_factory.mktemp("province_counties")
    (root / "in").mkdir()
    cs = [generate_county(seed=23, parcels=70, index=i, enterprises_per_parcel=3) for i in range(3)]
    tenant = cs[2].leases["tenant_uscc"].iloc[0]
    far = pd.DataFrame({"tenant_uscc": [tenant], "parcel_code": [cs[0].parcels["parcel_code"].iloc[4]],
                        "landlord_uscc": [pd.NA], "floor_area_m2": [60_000.0], "start_date": [pd.NA],
                        "end_date": [pd.NA]})
    cs[2] = dataclasses.replace(cs[2], leases=pd.concat([cs[2].leases, far], ignore_index=True))
    w = _ProvinceWriter(root / "in", "parquet")
    for c in cs:
        w.add(c)
    w.close()
    out = {y: root / f"out{y}" for y in YEARS}
    for y in YEARS:
        run_province(root / "in", y, out[y], workers=1, processes=False)
    out["zhenhai_4"] = root / "out_zhenhai_4"
    run_province(root / "in", 2024, out["zhenhai_4"], scheme="zhenhai_4", workers=1, processes=False)
    return {"in": root / "in", "out": out, "tenant": tenant}


def test_evaluate_rates_each_county_of_a_province_database(province, engine):
    runs = {y: write_province(engine, province["out"][y], province["in"], y, scheme=SCHEME, publish=True).run_id
            for y in YEARS}

    # every subject has its county, the one the province run rated it in
    outs = {y: read_outputs(province["out"][y]) for y in YEARS}
    with engine.connect() as conn:
        ent_county = dict(conn.execute(sa.text("SELECT uscc, county FROM enterprises")).all())
        land_county = dict(conn.execute(sa.text(
            "SELECT identity_code, county FROM parcels WHERE valid_from <= 2025 AND coalesce(valid_to, 10000) > 2025"))
            .all())
        mine = {y: {t: stored_rows(conn, t, runs[y]) for t in KEYS} for y in YEARS}
    r = outs[2025]["enterprise_ratings"]
    assert r["county"].nunique() == 3 and len(set(ent_county.values())) == 3 and None not in ent_county.values()
    assert all(ent_county[s] == c for s, c in zip(r["subject_id"], r["county"]))
    p = outs[2025]["parcel_ratings"]
    assert all(land_county[s] == c for s, c in zip(p["subject_id"], p["county"]))

    # the county path on the same database: each county rated as its own unit, as the run rated it
    reports = {}
    for y in YEARS:
        ev = reports[y] = evaluate_year(engine, y, SCHEME, force=True)
        assert ev.run_id != runs[y] and not ev.reused
        with engine.connect() as conn:
            for t, key in KEYS.items():
                assert_same_rows(mine[y][t], stored_rows(conn, t, ev.run_id), key, (y, t))

    # what they agree on is the county's ranking: rated as one unit, the same subjects rank and
    # grade otherwise (an evaluation that ignores the counties fails the comparison above)
    sch = load_scheme(SCHEME)
    e = mine[2025]["enterprise_ratings"].set_index("uscc")
    assert e["grade"].notna().sum() > 0 and e["consecutive_d_years"].notna().all()
    with engine.connect() as conn:
        ents = enterprise_subjects(conn, 2025)
    whole = rating_rows(evaluate(ents.drop(columns="county"), sch, 2025, kind="enterprise"), ents, sch) \
        .set_index("subject_id").reindex(e.index)
    moved = (whole["rank"].astype("Int64") != e["rank"].astype("Int64")).fillna(False)
    assert moved.sum() > e["rank"].notna().sum() // 2  # most ranked enterprises
    assert (whole["grade"].astype(object) != e["grade"].astype(object)).sum() > 0
    # … and every county's ranks start at 1 in each list and group
    ranked = e[e["rank"].notna()].assign(county=[ent_county[s] for s in e.index[e["rank"].notna()]])
    assert (ranked.groupby(["county", "list_name", "industry_group"])["rank"].min() == 1).all()

    # the run hash covers the county split: same split, same hash (reused); no split, another
    again = evaluate_year(engine, 2025, SCHEME)
    assert again.reused and again.run_hash == reports[2025].run_hash
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE enterprises SET county = NULL"))
        conn.execute(sa.text("UPDATE parcels SET county = NULL"))
    one = evaluate_year(engine, 2025, SCHEME)
    assert not one.reused and one.run_hash != reports[2025].run_hash
    with engine.connect() as conn:
        g = stored_rows(conn, "enterprise_ratings", one.run_id).set_index("uscc")
    assert g["rank"].astype("Int64").reindex(e.index).tolist() == whole["rank"].astype("Int64").tolist()


def test_a_tenant_follows_a_landlord_of_its_own_county(province, engine):
    """zhenhai_4: a 规下 tenant answers through its landlord, who must be rated in the tenant's
    unit — the holder of the tenant's largest rented land within its county (as the province run
    finds it), not of larger land it rents in another county (that landlord is rated elsewhere,
    so the tenant would be rated on its own)."""
    run = write_province(engine, province["out"]["zhenhai_4"], province["in"], 2024, scheme="zhenhai_4").run_id
    t = province["tenant"]
    with engine.connect() as conn:
        links = pd.read_sql(sa.text(
            "SELECT l.identity_code, l.attributed_area_m2, p.county FROM land_links l "
            "JOIN parcels p ON p.identity_code = l.identity_code "
            "WHERE l.year = 2024 AND l.uscc = :t AND l.role = 'tenant' ORDER BY l.attributed_area_m2 DESC"),
            conn, params={"t": t})
        own = conn.execute(sa.text("SELECT county FROM enterprises WHERE uscc = :t"), {"t": t}).scalar()
        mine = {k: stored_rows(conn, k, run) for k in KEYS}
    # the premise: its largest rented land is across the border, and it rents in its own county too
    assert len(links) >= 2 and links["county"].iloc[0] != own and (links["county"] == own).any()
    # … and the province run has it follow its own county's landlord (随地主定档)
    assert mine["enterprise_ratings"].set_index("uscc").loc[t, "excluded_reason"].startswith("随地主定档")

    ev = evaluate_year(engine, 2024, "zhenhai_4", force=True)
    with engine.connect() as conn:
        for k, key in KEYS.items():
            assert_same_rows(mine[k], stored_rows(conn, k, ev.run_id), key, k)


def test_a_county_database_evaluates_as_one_unit_as_before(engine, settings, tmp_path):
    """A county import leaves ``county`` NULL: the whole database is one unit — the ratings of
    one ``scoring.evaluate`` over every subject, and the run hash of before migration 0009."""
    from tests.conftest import load_county

    bundle = tmp_path / "bundle"
    write_sample_bundle(bundle, seed=7, parcels=150, fmt="county")
    years = load_county(engine, bundle, settings)
    y = years[-1]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM enterprises WHERE county IS NOT NULL")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM parcels WHERE county IS NOT NULL")).scalar() == 0
    ev = evaluate_year(engine, y, SCHEME, force=True)

    sch = load_scheme(SCHEME)
    with engine.connect() as conn:
        ents, prev_ents = enterprise_subjects(conn, y), enterprise_subjects(conn, y - 1)
        parcels, prev_parcels = parcel_subjects(conn, y), parcel_subjects(conn, y - 1)
        history = rating_history(conn, y)
        stored = {t: stored_rows(conn, t, ev.run_id) for t in KEYS}
    prev_ents = prev_ents if len(prev_ents) else None
    prev_parcels = prev_parcels if prev_parcels["tax_paid"].notna().any() else None
    # the hash as it was computed before counties existed
    fp = (f"{run_fingerprint(ents, sch, y, previous=prev_ents, kind='enterprise')}|"
          f"{run_fingerprint(parcels, sch, y, previous=prev_parcels, kind='parcel')}|{_history_digest(history)}")
    inputs = hashlib.sha256(fp.encode()).hexdigest()
    assert ev.run_hash == hashlib.sha256(f"{scheme_hash(sch)}|{y}|{inputs}".encode()).hexdigest()
    # one evaluate over the whole database
    for t, subjects, prev, kind in (("enterprise_ratings", ents, prev_ents, "enterprise"),
                                    ("parcel_ratings", parcels, prev_parcels, "parcel")):
        want = rating_rows(evaluate(subjects, sch, y, previous=prev, kind=kind), subjects, sch)
        got = stored[t].set_index(KEYS[t]).reindex(want["subject_id"])
        assert len(want) == len(got) > 0
        for c in ("grade", "score", "rank", "percentile", "band_grade", "colour", "tax_per_mu"):
            bad = [(s, a, b) for s, a, b in zip(want["subject_id"], want[c].astype(object), got[c].astype(object))
                   if not same_value(a, b)]
            assert not bad, (t, c, len(bad), bad[:2])


def test_county_of_land_is_set_in_place(province, engine):
    """Land a county import wrote (no county) gets its county from a province write without a new
    land version: the county is not content (a piece's 宗地身份码 carries it)."""
    first = write_province(engine, province["out"][2024], province["in"], 2024)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE parcels SET county = NULL"))
        before = conn.execute(sa.text("SELECT count(*) FROM parcels")).scalar()
    again = write_province(engine, province["out"][2024], province["in"], 2024)
    assert first.rows["parcels"] == before > 0 and again.rows["parcels"] == 0
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM parcels")).scalar() == before
        counties = dict(conn.execute(sa.text("SELECT identity_code, county FROM parcels")).all())
    land = read_outputs(province["out"][2024])["land"]
    assert counties == dict(zip(land["identity_code"], land["county"]))
