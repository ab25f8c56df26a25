"""``mujun match`` on a province database gives the province run's matching (issue 16), on a real
PostGIS.

Re-matching after a 纠偏 is the normal county workflow (``mujun match``:
:func:`app.pipeline.run_matching`, then ``mujun evaluate``). On a database written by a province
run (``mujun run --province … --db``) it must give back what the run wrote: the links (roles,
methods, shares, attributed areas), the sub-lots (shares and 面积, each county's measured in its
own Gauss-Krüger zone), the merged land (一企多地合并) and the apportioned figures — and so the
ratings. Here a generated province of three counties — two abutting (a tenant of one renting land
across the border) and one at 115°E, in another zone than the province's matching CRS — is run
on Dask, written with ``--db``, re-matched and re-evaluated.

Before this, the province write left out the buildings, leases and 纠偏 the run matched with,
so a re-match dropped tenants' links and building-based shares (hundreds of shares, figures and
land classes changed), and sub-lots were measured in one zone for the whole province.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from app.evaluation import evaluate_year
from app.pipeline import run_matching
from app.province import run_province
from app.province_db import write_province
from app.sample import _ProvinceWriter
from spatial.crs import gk_zone_epsg
from spatial.synthetic import _county_centre, generate_county
from tests.stored_ratings import KEYS, assert_same_rows, stored_rows

YEAR = 2024
SCHEME = "zhejiang_default"
#: Each derived table of the year, its key, and the columns computed from geometry projected
#: again from the stored EPSG:4490 coordinates, with how close they must be (relative): distances
#: ~1e-10; a sub-lot's outline is cut by bisection to ~1e-6 of its area (spatial.split), so the
#: stored coordinates' last bits move its area by up to ~2e-6 (shares, attributed areas and
#: everything rated are exact).
TABLES = {
    "land_links": (["identity_code", "uscc", "role"], {"distance_m": 1e-9, "confidence": 1e-9}),
    "sublots": (["identity_code", "uscc"], {"area_m2": 1e-5}),
    "enterprise_land": (["uscc"], {}),
    "parcel_metrics": (["identity_code"], {}),
}
_SKIP = {"id", "created_at", "geom"}


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    root = tmp_path_factory.mktemp("province_rematch")
    (root / "in").mkdir()
    far = next(i for i in range(241, 3000) if _county_centre(i)[0] < 115.4 and abs(_county_centre(i)[1] - 30) < 1)
    cs = [generate_county(seed=31, parcels=60, index=i, enterprises_per_parcel=3) for i in (0, 1, far)]
    # a tenant of the second county renting a floor of the first county's land
    tenant = cs[1].leases["tenant_uscc"].iloc[0]
    lease = pd.DataFrame({"tenant_uscc": [tenant], "parcel_code": [cs[0].parcels["parcel_code"].iloc[3]],
                          "landlord_uscc": [pd.NA], "floor_area_m2": [5_000.0], "start_date": [pd.NA],
                          "end_date": [pd.NA]})
    cs[1] = dataclasses.replace(cs[1], leases=pd.concat([cs[1].leases, lease], ignore_index=True))
    w = _ProvinceWriter(root / "in", "parquet")
    for c in cs:
        w.add(c)
    w.close()
    run_province(root / "in", YEAR, root / "out", workers=1, processes=False)
    zones = {c.county_code: gk_zone_epsg(float(np.mean(c.parcels.to_crs(4490).total_bounds[[0, 2]]))) for c in cs}
    return {"root": root, "tenant": tenant, "zones": zones}


def _derived(conn) -> dict[str, pd.DataFrame]:
    out = {}
    for t, (key, _) in TABLES.items():
        df = pd.read_sql(sa.text(f"SELECT * FROM {t} WHERE year = :y"), conn, params={"y": YEAR})
        out[t] = df.drop(columns=[c for c in _SKIP if c in df.columns]).sort_values(key, ignore_index=True)
    return out


def _assert_same(before: dict, after: dict, only: tuple[str, ...] = tuple(TABLES)) -> None:
    for t in only:
        key, projected = TABLES[t]
        a, b = before[t], after[t]
        assert len(a) == len(b) > 0, t
        assert a[key].astype(str).values.tolist() == b[key].astype(str).values.tolist(), t
        for c in a.columns:
            x, y = a[c].astype(object), b[c].astype(object)
            if c in projected:
                np.testing.assert_allclose(b[c].to_numpy(float), a[c].to_numpy(float), rtol=projected[c],
                                           atol=1e-9, err_msg=f"{t}.{c}")
                continue
            bad = [(k, u, v) for k, u, v in zip(a[key[0]], x, y) if not (pd.isna(u) and pd.isna(v) or u == v)]
            assert not bad, (t, c, len(bad), bad[:3])


def test_rematching_a_province_database_gives_the_runs_matching(province, engine, settings):
    root = province["root"]
    run = write_province(engine, root / "out", root / "in", YEAR, scheme=SCHEME, publish=True).run_id
    with engine.connect() as conn:
        before = _derived(conn)
        counties = dict(conn.execute(sa.text("SELECT identity_code, county FROM parcels")).all())
        stored = {k: stored_rows(conn, k, run) for k in KEYS}
        refs = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("buildings", "leases", "link_corrections")}
    # what the run matched with is in the database
    assert all(n > 0 for n in refs.values()), refs
    links = before["land_links"]
    # the premises: a tenant's link across the border, building-based shares, a 纠偏, three zones
    t = links[(links["uscc"] == province["tenant"]) & (links["role"] == "tenant")]
    assert len({counties[c] for c in t["identity_code"]}) == 2
    assert {"building", "correction"} <= set(links["method"])
    assert len(set(province["zones"].values())) == 2

    report = run_matching(engine, settings=settings)
    assert report.links > 0
    with engine.connect() as conn:
        after = _derived(conn)
    _assert_same(before, after)

    # sub-lots measured in their county's zone: in the matching CRS the far county's differ
    with engine.connect() as conn:
        far = next(c for c, z in province["zones"].items() if list(province["zones"].values()).count(z) == 1)
        zone_of_match = conn.execute(sa.text(
            "SELECT count(*) FROM sublots s JOIN parcels p USING (identity_code) WHERE s.year = :y AND p.county = :c "
            "AND abs(ST_Area(ST_Transform(s.geom, :z)) / s.area_m2 - 1) < 1e-6"),
            {"y": YEAR, "c": far, "z": province["zones"][far]}).scalar()
        n_far = conn.execute(sa.text("SELECT count(*) FROM sublots s JOIN parcels p USING (identity_code) "
                                     "WHERE s.year = :y AND p.county = :c"), {"y": YEAR, "c": far}).scalar()
    assert n_far > 0 and zone_of_match == n_far

    # … and re-evaluating stores the province run's ratings
    ev = evaluate_year(engine, YEAR, SCHEME, force=True)
    with engine.connect() as conn:
        for k, key in KEYS.items():
            assert_same_rows(stored[k], stored_rows(conn, k, ev.run_id), key, k)


def test_a_correction_on_a_province_database_changes_only_its_land(province, engine, settings):
    """The 纠偏 workflow on a province database: a correction linking an enterprise of one county
    to a piece of another county's land (as an accepted 纠偏 proposal stores it), then ``mujun
    match``: the link is there (method 纠偏), and the links of every other piece are the run's."""
    root = province["root"]
    write_province(engine, root / "out", root / "in", YEAR, scheme=SCHEME)
    with engine.begin() as conn:
        before = _derived(conn)
        land = pd.read_sql(sa.text("SELECT identity_code, parcel_code, county FROM parcels WHERE kind = 'registered' "
                                   "ORDER BY identity_code"), conn)
        counties = sorted(land["county"].unique())
        links = before["land_links"]
        piece = land[(land["county"] == counties[0]) & ~land["identity_code"].isin(
            links.loc[links["uscc"] == province["tenant"], "identity_code"])].iloc[0]
        conn.execute(sa.text(
            "INSERT INTO link_corrections (uscc, parcel_code, action, share, reason, \"by\") "
            "VALUES (:u, :c, 'add', NULL, '实地核查', 'test')"), {"u": province["tenant"], "c": piece["parcel_code"]})
    run_matching(engine, settings=settings)
    with engine.connect() as conn:
        after = _derived(conn)
    got = after["land_links"]
    added = got[(got["uscc"] == province["tenant"]) & (got["identity_code"] == piece["identity_code"])]
    assert len(added) == 1 and added["method"].iloc[0] == "correction"
    others = {t: df[df["identity_code"] != piece["identity_code"]].reset_index(drop=True)
              for t, df in (("land_links", links), ("after", got))}
    _assert_same({"land_links": others["land_links"]}, {"land_links": others["after"]}, only=("land_links",))
