"""The province on Dask (issue 16): partitioned by county, the same answers as one process.

A generated three-county province whose counties abut (40 m apart, closer than the 30 m snap
tolerance + the land's own extent), with enterprises of one county whose point lies by the land
of the next (the only land within the tolerance is across the border), points half-way between
the counties' land (the nearer county's land must win, so both must be seen), an enterprise of
one county owning land in another, and a tenant leasing across the border.  The partitioned run
(2 workers of a LocalCluster) must give exactly the single-process links, shares, identity codes,
merged land, apportioned figures, scores, ranks and grades.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import shapely

from app.province import partitions, read_outputs, run_province, run_single
from app.sample import _ProvinceWriter
from spatial.synthetic import generate_county

YEAR = 2024
GAP_DEG = 40 / 111_320  # 40 m of longitude/latitude near 30°N (≈; the exact gap does not matter)


def _shift(c, dx: float, dy: float):
    layers = {r: getattr(c, r).to_crs(4490) for r in ("parcels", "buildings", "defacto")}
    for r, g in layers.items():
        g = g.copy()
        g.geometry = shapely.transform(g.geometry.values, lambda xy: xy + [dx, dy])
        layers[r] = g
    ent = c.enterprises.copy()
    ent["lon"] = ent["lon"] + dx
    ent["lat"] = ent["lat"] + dy
    return dataclasses.replace(c, enterprises=ent, **layers)


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    """Three counties: 1 east of 0, 2 north of 0, each 40 m from county 0's land."""
    out = tmp_path_factory.mktemp("province")
    cs = [generate_county(seed=5, parcels=150, index=i, enterprises_per_parcel=4) for i in range(3)]
    b0 = cs[0].parcels.to_crs(4490).total_bounds
    b1 = cs[1].parcels.to_crs(4490).total_bounds
    b2 = cs[2].parcels.to_crs(4490).total_bounds
    cs[1] = _shift(cs[1], b0[2] + GAP_DEG - b1[0], b0[1] - b1[1])
    cs[2] = _shift(cs[2], b0[0] - b2[0], b0[3] + GAP_DEG - b2[1])
    p0 = cs[0].parcels.to_crs(4490)
    east = p0.geometry.bounds["maxx"].to_numpy()
    edge = np.argsort(-east)[:8]  # county 0's easternmost parcels, on the border with county 1
    e1 = cs[1].enterprises.copy()
    cross = {}
    for k, j in enumerate(edge):
        x1 = east[j]
        y = p0.geometry.values[j].centroid.y
        # 0-3: 8 m east of county 0's land (county 1's land is 32 m away: beyond the tolerance);
        # 4-7: 19 m and 21 m (both counties' land within the tolerance: the nearer wins)
        off = 8 if k < 4 else (19 if k % 2 else 21)
        row = e1.index[10 + k]
        e1.loc[row, ["lon", "lat", "coord_sys"]] = [x1 + off / 111_320 / np.cos(np.radians(y)), y, "cgcs2000"]
        cross[e1.loc[row, "uscc"]] = p0["parcel_code"].iloc[j]
    # an enterprise of county 1 owns a parcel of county 0; one of county 2 leases a parcel of county 0
    par0 = cs[0].parcels.copy()
    owner = e1["uscc"].iloc[30]
    par0.loc[par0.index[edge[0]], "owner_uscc"] = owner
    e2 = cs[2].enterprises
    lease = pd.DataFrame({"tenant_uscc": [e2["uscc"].iloc[5]], "parcel_code": [p0["parcel_code"].iloc[edge[1]]],
                          "landlord_uscc": [pd.NA], "floor_area_m2": [800.0], "start_date": [pd.NA],
                          "end_date": [pd.NA]})
    cs[0] = dataclasses.replace(cs[0], parcels=par0)
    cs[1] = dataclasses.replace(cs[1], enterprises=e1)
    cs[2] = dataclasses.replace(cs[2], leases=pd.concat([cs[2].leases, lease], ignore_index=True))
    w = _ProvinceWriter(out, "parquet")
    for c in cs:
        w.add(c)
    w.close()
    return {"path": out, "cross": cross, "owner": owner, "tenant": e2["uscc"].iloc[5]}


@pytest.fixture(scope="module")
def runs(province, tmp_path_factory):
    from distributed import Client, LocalCluster

    single = run_single(province["path"], YEAR)
    out = tmp_path_factory.mktemp("out")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        seen = []
        report = run_province(province["path"], YEAR, out, client=client, progress=seen.append)
        workers = len(client.scheduler_info()["workers"])
    return single, read_outputs(out), report, seen, workers


def test_province_has_three_abutting_counties(province):
    assert partitions(province["path"]) == 3


def test_cross_border_links_exist(province, runs):
    single, _, _, _, _ = runs
    links = single["links"]
    ents = pd.read_parquet(province["path"] / "enterprises.parquet", columns=["uscc"])
    county_of_ent = dict(zip(ents["uscc"], ents["uscc"].str[2:8]))
    ent_county = links["uscc"].map(county_of_ent)
    across = links[ent_county.notna() & (ent_county != links["county"])]
    # the 4 points 8 m off county 0's land, the owner and the tenant at least
    moved = across[across["uscc"].isin(province["cross"])]
    assert moved["uscc"].nunique() >= 4, moved
    assert (moved["county"] == "330999").all()
    assert province["owner"] in set(across["uscc"])
    assert province["tenant"] in set(across["uscc"])


@pytest.mark.parametrize("table", ["land", "links", "sublots", "enterprise_land", "parcel_metrics",
                                   "enterprise_ratings", "parcel_ratings"])
def test_partitioned_equals_single_process(runs, table):
    single, parted, _, _, _ = runs
    a, b = single[table], parted[table]
    assert len(a) > 0
    assert list(a.columns) == list(b.columns)
    if "geometry" in a.columns:
        assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0).all()
        a, b = a.drop(columns="geometry"), b.drop(columns="geometry")
    pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b), check_exact=True, check_dtype=False)


def test_ratings_rank_within_county_and_group(runs):
    single, parted, _, _, _ = runs
    r = parted["enterprise_ratings"]
    r = r[r["rank"].notna() & (r["rank"] > 0)]
    assert r["county"].nunique() == 3
    # a ranking never spans counties: each county's ranks start at 1 in every ranked group
    first = r.groupby(["county", "list_name", "group"])["rank"].min()
    assert (first == 1).all()
    assert set(r["grade"].dropna()) >= {"A", "B", "C", "D"} or len(set(r["grade"].dropna())) >= 3


def test_run_used_two_workers_and_reported_each_county(runs):
    _, _, report, seen, workers = runs
    assert workers == 2
    assert report.counties == 3
    assert sorted(e.index for e in seen if e.stage == "rate") == [0, 1, 2]
    # every county reports each stage once, with its code and rows; the count runs to the total
    assert sorted((e.county, e.stage) for e in seen) == sorted(
        (c, s) for c in ("330997", "330998", "330999") for s in ("prepare", "match", "rate"))
    assert [e.done for e in seen] == list(range(1, 10)) and {e.total for e in seen} == {9}
    assert all(e.rows["land"] > 0 for e in seen if e.stage in ("prepare", "rate"))
    assert all(e.rows["links"] > 0 for e in seen if e.stage in ("match", "rate"))
    # county 0 matched its land with rows of its neighbours (the halo)
    halo = [e.rows for e in seen if e.stage == "match" and e.county == "330999"][0]
    assert halo["halo_enterprises"] > 0 and halo["halo_land"] > 0


def test_without_the_halo_links_change(province, runs, tmp_path, monkeypatch):
    """The equality above can fail: cut each county off from its neighbours and the links on
    county 0's border land differ from the single process's."""
    import app.province as prov
    from distributed import Client, LocalCluster

    monkeypatch.setattr(prov, "neighbours", lambda bounds, keys, tol: {c: [] for c in bounds})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        run_province(province["path"], YEAR, tmp_path, client=client)
    single = runs[0]["links"]
    cut = read_outputs(tmp_path)["links"]
    assert len(cut) < len(single)
    pairs = set(zip(single["identity_code"], single["uscc"])) - set(zip(cut["identity_code"], cut["uscc"]))
    assert {u for _, u in pairs} & set(province["cross"])  # the enterprises placed across the border


def test_outputs_are_a_dask_geoparquet_dataset(runs, tmp_path_factory):
    """The sub-lots come out as one GeoParquet file per county: dask-geopandas reads them as
    a partitioned GeoDataFrame (one partition per county)."""
    import dask_geopandas

    _, parted, report, _, _ = runs
    ddf = dask_geopandas.read_parquet(report.out / "sublots")
    assert ddf.npartitions == 3
    assert len(ddf.compute()) == len(parted["sublots"])


def test_cli_run_on_a_local_cluster(province, runs, tmp_path):
    """`mujun run --province DIR --year Y --workers 2 --out OUT`: worker processes, same links."""
    import subprocess
    import sys
    from pathlib import Path

    mujun = Path(sys.executable).parent / "mujun"
    res = subprocess.run([str(mujun), "run", "--province", str(province["path"]), "--year", str(YEAR),
                          "--workers", "2", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 个县，2 个 worker" in res.stdout
    log = "".join(res.stderr.split())  # rich wraps anywhere in Chinese text
    # a line per county as it is rated (progress goes to stderr): its code, rows, the province's percentage
    for c in ("330997", "330998", "330999"):
        assert re.search(f"县{c}（第[123]/3县）合并、分摊、评价完成：宗地[0-9,]+块，地企对应[0-9,]+条", log), log
    assert "全省100%" in log
    got = read_outputs(tmp_path / "out")
    for table in ("links", "enterprise_ratings", "parcel_ratings"):
        pd.testing.assert_frame_equal(pd.DataFrame(runs[0][table]).drop(columns="geometry", errors="ignore"),
                                      pd.DataFrame(got[table]).drop(columns="geometry", errors="ignore"),
                                      check_exact=True, check_dtype=False)


def test_cli_run_refuses_a_directory_that_is_not_a_province(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "parcels.parquet").write_bytes(b"")
    mujun = Path(sys.executable).parent / "mujun"
    res = subprocess.run([str(mujun), "run", "--province", str(tmp_path), "--year", str(YEAR),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    err = " ".join(res.stderr.split())  # rich wraps lines
    assert "缺少 defacto.parquet" in err and "corrections.parquet" in err
    assert "Traceback" not in res.stderr


def test_halo_read_from_the_scratch_equals_the_halo_of_whole_counties(province, tmp_path):
    """The match task chooses the halo on a few columns and reads only the chosen rows whole:
    the same rows, columns and values as :func:`spatial.partition.halo` on the counties read whole."""
    import app.province as prov
    from spatial.partition import halo

    n = partitions(province["path"])
    crs = prov.province_crs([prov.county_bounds(province["path"], i) for i in range(n)])
    for i in range(n):
        prov._task_prepare(str(province["path"]), i, crs, str(tmp_path))
    idx = list(range(n))
    got = prov._halo_input(tmp_path, "330999", 0, idx, 30.0)
    whole = halo("330999", *(prov._load(tmp_path, r, idx) for r in ("land", "enterprises", "buildings", "leases",
                                                                    "corrections")), tolerance_m=30.0)
    whole = {r: whole[r] for r in ("land", "enterprises", "buildings", "leases", "corrections")}
    assert (got["enterprises"]["county"] != "330999").sum() >= 4  # county 1's enterprises by the border
    for role, df in whole.items():
        a, b = pd.DataFrame(df).reset_index(drop=True), pd.DataFrame(got[role])
        assert list(a.columns) == list(b.columns), role
        if "geometry" in a.columns:
            ga, gb = a.geometry.to_numpy(), b.geometry.to_numpy()
            none = shapely.is_missing(ga)  # enterprises without a point
            assert (none == shapely.is_missing(gb)).all() and shapely.equals_exact(ga[~none], gb[~none], 0).all()
            a, b = a.drop(columns="geometry"), b.drop(columns="geometry")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_halo_keeps_a_building_by_the_far_end_of_a_neighbours_piece(tmp_path):
    """The rows read from a neighbour are chosen on bounds: a building of county B far from
    county A's land, but 5 m from a piece of B that an enterprise by A's border may link to,
    is in A's halo, as in the halo of the counties read whole."""
    import geopandas as gpd

    import app.province as prov
    from spatial.partition import halo

    box = shapely.box
    frames = {
        "land": [gpd.GeoDataFrame({"identity_code": ["R-A1"], "parcel_code": ["A1"], "owner_uscc": ["EA"],
                                   "user_uscc": [None], "county": ["A"]}, geometry=[box(0, 0, 100, 100)], crs=4549),
                 gpd.GeoDataFrame({"identity_code": ["R-B1", "R-B2"], "parcel_code": ["B1", "B2"],
                                   "owner_uscc": [None, None], "user_uscc": [None, None], "county": ["B", "B"]},
                                  geometry=[box(120, 40, 140, 400), box(900, 900, 950, 950)], crs=4549)],
        "enterprises": [gpd.GeoDataFrame({"uscc": ["EA"], "county": ["A"]}, geometry=[shapely.Point(50, 50)],
                                         crs=4549),
                        gpd.GeoDataFrame({"uscc": ["EB", "EB-far"], "county": ["B", "B"]},
                                         geometry=[shapely.Point(108, 50), shapely.Point(920, 920)], crs=4549)],
        "buildings": [gpd.GeoDataFrame({"building_id": ["BA"], "parcel_code": ["A1"], "county": ["A"]},
                                       geometry=[box(10, 10, 30, 30)], crs=4549),
                      gpd.GeoDataFrame({"building_id": ["BB", "BB-far"], "parcel_code": ["B9", "B2"],
                                        "county": ["B", "B"]},
                                       geometry=[box(145, 380, 160, 395), box(910, 910, 930, 930)], crs=4549)],
        "leases": [pd.DataFrame({"tenant_uscc": pd.Series([], dtype="str"), "parcel_code": pd.Series([], dtype="str"),
                                 "landlord_uscc": pd.Series([], dtype="str"), "county": pd.Series([], dtype="str")})] * 2,
        "corrections": [pd.DataFrame({"uscc": pd.Series([], dtype="str"), "parcel_code": pd.Series([], dtype="str"),
                                      "county": pd.Series([], dtype="str")})] * 2,
    }
    for role, fs in frames.items():
        for i, df in enumerate(fs):
            prov._write_scratch(df, prov._scratch(tmp_path, role, i))
    got = prov._halo_input(tmp_path, "A", 0, [0, 1], 30.0)
    whole = halo("A", *(prov._load(tmp_path, r, [0, 1]) for r in ("land", "enterprises", "buildings", "leases",
                                                                    "corrections")), tolerance_m=30.0)
    assert list(got["buildings"]["building_id"]) == list(whole["buildings"]["building_id"]) == ["BA", "BB"]
    assert list(got["land"]["identity_code"]) == list(whole["land"]["identity_code"]) == ["R-A1", "R-B1"]
    assert list(got["enterprises"]["uscc"]) == list(whole["enterprises"]["uscc"]) == ["EA", "EB"]


def test_land_is_measured_in_its_counties_own_zone(tmp_path):
    """A province wider than one Gauss-Krüger zone (here 120°E and 115°E) matches in one CRS,
    but each county's land is built and measured in its own zone, as its own import does: the
    same 亩 (and so the same 亩均 figures and grades) whether a county is rated alone or in a
    province. In the province's CRS both counties' areas would be 0.04-0.3 % off."""
    import app.province as prov
    from spatial.crs import gk_zone_epsg
    from spatial.identity import build_land
    from spatial.synthetic import _county_centre

    far = next(i for i in range(241, 3000) if _county_centre(i)[0] < 115.4 and abs(_county_centre(i)[1] - 30) < 1)
    w = _ProvinceWriter(tmp_path, "parquet")
    counties = [generate_county(seed=3, parcels=40, index=i, enterprises_per_parcel=2) for i in (0, far)]
    for c in counties:
        w.add(c)
    w.close()
    crs = prov.province_crs([prov.county_bounds(tmp_path, i) for i in range(2)])
    for i, c in enumerate(counties):
        data = prov.read_county(tmp_path, i, crs)
        zone = gk_zone_epsg(float(np.mean(c.parcels.to_crs(4490).total_bounds[[0, 2]])))
        assert data["zone"] == zone and zone != crs
        land = prov._land(data, crs)
        alone = build_land(c.parcels.to_crs(4490).to_crs(zone), c.defacto.to_crs(4490).to_crs(zone),
                           county_code=c.county_code)
        assert land.crs == crs and list(land["identity_code"]) == list(alone["identity_code"])
        np.testing.assert_array_equal(land["area_m2"].to_numpy(), alone["area_m2"].to_numpy())
        in_province_crs = land.geometry.area.to_numpy()
        assert np.abs(in_province_crs / alone["area_m2"].to_numpy() - 1).min() > 1e-4
