"""多企共地分割: shares, attributed areas and sub-lot geometry (spatial.split)."""
import itertools

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings, strategies as st
from shapely.geometry import MultiPolygon, Point, Polygon

from spatial.identity import build_land
from spatial.match import match_enterprises
from spatial.split import SUBLOT_TOLERANCE, split_shares, sublot_geometries

from tests.local_grid import X0, Y0, CRS, pcode, rect

HYP = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def land_of(geoms):
    p = gpd.GeoDataFrame({"parcel_code": [pcode(i) for i in range(len(geoms))],
                          "owner_uscc": [f"O{i}" for i in range(len(geoms))]},
                         geometry=list(geoms), crs=CRS)
    return build_land(p, None)


def links_df(rows):
    """rows: (identity_code, uscc, role, holder, extra dict)."""
    recs = []
    for ident, u, role, holder, extra in rows:
        r = {"identity_code": ident, "uscc": u, "role": role, "holder": holder,
             "method": "owner_code" if holder else "point_in_polygon"}
        r.update(extra)
        recs.append(r)
    return pd.DataFrame(recs)


def check_sums(out, land):
    area = out["identity_code"].map(dict(zip(land["identity_code"], land["area_m2"])))
    s = out.groupby("identity_code")["share"].sum()
    assert np.allclose(s, 1.0, rtol=0, atol=1e-12)
    a = out.groupby("identity_code")["attributed_area_m2"].sum()
    assert np.allclose(a, area.groupby(out["identity_code"]).first(), rtol=1e-12, atol=1e-9)
    assert (out["share"] >= -1e-12).all() and (out["share"] <= 1 + 1e-12).all()


# ------------------------------------------------------------------ shares (examples)

def test_equal_rule_owner_keeps_rest():
    land = land_of([rect(0, 0, 100, 60)])
    i = land["identity_code"][0]
    links = links_df([(i, "O0", "owner_occupier", True, {}),
                      (i, "T1", "tenant", False, {}), (i, "T2", "tenant", False, {})])
    out = split_shares(links, land).set_index("uscc")
    assert out["share"].to_dict() == pytest.approx({"O0": 1 / 3, "T1": 1 / 3, "T2": 1 / 3})
    assert out.loc["T1", "attributed_area_m2"] == pytest.approx(2000)
    assert out.loc["T1", "attributed_area_mu"] == pytest.approx(3.0)


def test_owner_rule_and_column_rule():
    land = land_of([rect(0, 0, 100, 60)])
    i = land["identity_code"][0]
    links = links_df([(i, "O0", "owner_occupier", True, {"employees": 10}),
                      (i, "T1", "tenant", False, {"employees": 30})])
    own = split_shares(links, land, rule="owner").set_index("uscc")["share"]
    assert own.to_dict() == {"O0": 1.0, "T1": 0.0}
    emp = split_shares(links, land, rule="employees").set_index("uscc")["share"]
    assert emp.to_dict() == pytest.approx({"O0": 0.25, "T1": 0.75})
    with pytest.raises(ValueError, match="rule"):
        split_shares(links, land, rule="nonsense")


def test_leased_floor_share_of_building_floor_area():
    land = land_of([rect(0, 0, 100, 100)])
    i = land["identity_code"][0]
    b = gpd.GeoDataFrame({"building_id": ["B1", "B2"], "parcel_code": [pcode(0), None],
                          "floor_area_m2": [3000.0, None], "floors": [None, 2]},
                         geometry=[rect(10, 10, 30, 30), rect(50, 50, 25, 20)], crs=CRS)
    # floor area on the parcel: 3000 + 500 x 2 = 4000
    links = links_df([(i, "O0", "landlord", True, {}),
                      (i, "T1", "tenant", False, {"leased_floor_area_m2": 1000.0}),
                      (i, "T2", "tenant", False, {"leased_land_area_m2": 2500.0})])
    out = split_shares(links, land, buildings=b).set_index("uscc")
    assert out.loc["T1", "share"] == pytest.approx(0.25)
    assert out.loc["T1", "share_source"] == "lease_floor"
    assert out.loc["T2", "share"] == pytest.approx(0.25)
    assert out.loc["O0", "share"] == pytest.approx(0.5)
    # without buildings the leases are the whole floor area
    out = split_shares(links, land).set_index("uscc")
    assert out.loc["T1", "share"] == pytest.approx(0.75)
    assert out.loc["O0", "share"] == pytest.approx(0.0)


def test_footprint_share_from_building_route():
    p = gpd.GeoDataFrame({"parcel_code": [pcode(0)], "owner_uscc": ["O0"]},
                         geometry=[rect(0, 0, 100, 100)], crs=CRS)
    land = build_land(p, None)
    b = gpd.GeoDataFrame({"building_id": ["B1", "B2"], "parcel_code": [pcode(0)] * 2},
                         geometry=[rect(10, 10, 20, 20), rect(50, 50, 60 - 50, 60)], crs=CRS)
    e = gpd.GeoDataFrame({"uscc": ["O0", "T1"]}, geometry=[Point(X0 + 55, Y0 + 55), Point(X0 + 15, Y0 + 15)],
                         crs=CRS)
    links = match_enterprises(land, e, buildings=b)
    out = split_shares(links, land, buildings=b).set_index("uscc")
    # B1 400 m² of 900 m² footprint on the piece: B2 (600 m²) reaches 10 m beyond the parcel
    # and only its 500 m² on it count (buildings are split by the land they cross; this test
    # expected 0.4 = 400 / 1000 before issue 11)
    assert out.loc["T1", "share"] == pytest.approx(400 / 900)
    assert out.loc["T1", "share_source"] == "footprint"
    assert out.loc["O0", "share"] == pytest.approx(500 / 900)


def test_fixed_share_and_claims_over_one_scaled():
    land = land_of([rect(0, 0, 100, 100)])
    i = land["identity_code"][0]
    links = links_df([(i, "O0", "landlord", True, {}),
                      (i, "T1", "tenant", False, {"fixed_share": 0.9}),
                      (i, "T2", "tenant", False, {"leased_land_area_m2": 3000.0})])
    out = split_shares(links, land).set_index("uscc")["share"]
    assert out.to_dict() == pytest.approx({"O0": 0.0, "T1": 0.75, "T2": 0.25})


def test_piece_without_holder_scales_claims():
    land = land_of([rect(0, 0, 100, 100)])
    i = land["identity_code"][0]
    links = links_df([(i, "T1", "tenant", False, {"leased_land_area_m2": 1000.0}),
                      (i, "T2", "tenant", False, {"leased_land_area_m2": 3000.0})])
    out = split_shares(links, land).set_index("uscc")["share"]
    assert out.to_dict() == pytest.approx({"T1": 0.25, "T2": 0.75})


# ------------------------------------------------------------------ shares (properties)

@st.composite
def split_cases(draw):
    n = draw(st.integers(1, 4))
    geoms = [rect(200 * k, 0, draw(st.integers(10, 150)), draw(st.integers(10, 150))) for k in range(n)]
    land = land_of(geoms)
    rows = []
    for k, ident in enumerate(land["identity_code"]):
        has_holder = draw(st.booleans())
        role = draw(st.sampled_from(["owner_occupier", "landlord"]))
        if has_holder:
            rows.append((ident, f"O{k}", role, True, {}))
        for t in range(draw(st.integers(0 if has_holder else 1, 6))):
            extra = draw(st.sampled_from([
                {}, {"fixed_share": draw(st.floats(0, 1))},
                {"leased_land_area_m2": draw(st.floats(0, 30000))},
                {"leased_floor_area_m2": draw(st.floats(0, 5000))}]))
            rows.append((ident, f"T{k}_{t}", "tenant", False, extra))
    return land, links_df(rows), draw(st.sampled_from(["equal", "owner"]))


@HYP
@given(split_cases())
def test_shares_sum_to_one_and_areas_to_land(case):
    land, links, rule = case
    out = split_shares(links, land, rule=rule)
    check_sums(out, land)
    assert len(out) == len(links)


# ------------------------------------------------------------------ sub-lots

def _check_partition(lots, piece, shares):
    a = piece.area
    geoms = list(lots.geometry)
    assert shapely.union_all(geoms).area == pytest.approx(a, rel=1e-9, abs=1e-6)
    assert shapely.union_all(geoms).symmetric_difference(piece).area < 1e-6 * max(a, 1)
    for g, h in itertools.combinations(geoms, 2):
        assert g.intersection(h).area < 1e-6 * max(a, 1)
    abs_tol, rel_tol = SUBLOT_TOLERANCE
    for g, s in zip(geoms, shares):
        assert abs(g.area - s * a) <= max(abs_tol, rel_tol * s * a)
        assert g.within(piece.buffer(1e-6))


def _split_one(piece, shares):
    land = land_of([piece])
    i = land["identity_code"][0]
    links = pd.DataFrame({"identity_code": i, "uscc": [f"E{k}" for k in range(len(shares))],
                          "role": ["owner_occupier"] + ["tenant"] * (len(shares) - 1),
                          "share": shares})
    lots = sublot_geometries(land, links)
    return lots.set_index("uscc").loc[links["uscc"]], land.geometry[0]


def test_sublots_rectangle_cut_along_long_axis():
    lots, piece = _split_one(rect(0, 0, 200, 50), [0.5, 0.3, 0.2])
    _check_partition(lots, piece, [0.5, 0.3, 0.2])
    # cuts across the long (x) axis: every sub-lot spans the full 50 m height
    for g in lots.geometry:
        minx, miny, maxx, maxy = g.bounds
        assert maxy - miny == pytest.approx(50)


def test_single_occupant_is_whole_piece_and_zero_share_dropped():
    land = land_of([rect(0, 0, 100, 100)])
    i = land["identity_code"][0]
    links = pd.DataFrame({"identity_code": [i, i], "uscc": ["O0", "T1"],
                          "role": ["landlord", "tenant"], "share": [0.0, 1.0]})
    lots = sublot_geometries(land, links)
    assert list(lots["uscc"]) == ["T1"]
    assert lots.geometry[0].equals(land.geometry[0])


shapes = st.sampled_from([
    rect(0, 0, 120, 40),
    # L-shape (concave)
    Polygon([(X0, Y0), (X0 + 100, Y0), (X0 + 100, Y0 + 20), (X0 + 20, Y0 + 20), (X0 + 20, Y0 + 90),
             (X0, Y0 + 90)]),
    # rotated rectangle
    shapely.affinity.rotate(rect(0, 0, 150, 30), 33, origin="centroid"),
    # multipolygon: two islands
    MultiPolygon([rect(0, 0, 50, 50), rect(80, 10, 30, 30)]),
    # ring with a hole
    rect(0, 0, 100, 100).difference(rect(30, 30, 40, 40)),
])


@HYP
@given(shapes, st.lists(st.floats(0.02, 1.0), min_size=2, max_size=6))
def test_sublots_partition_piece(piece, weights):
    shares = list(np.asarray(weights) / np.sum(weights))
    lots, piece = _split_one(piece, shares)
    _check_partition(lots, piece, shares)


def test_split_then_sublots_end_to_end():
    p = gpd.GeoDataFrame({"parcel_code": [pcode(0)], "owner_uscc": ["O0"]},
                         geometry=[rect(0, 0, 90, 60)], crs=CRS)
    land = build_land(p, None)
    e = gpd.GeoDataFrame({"uscc": ["O0", "T1", "T2"]},
                         geometry=[Point(X0 + 5, Y0 + 5), Point(X0 + 50, Y0 + 5), Point(X0 + 80, Y0 + 5)], crs=CRS)
    links = split_shares(match_enterprises(land, e), land)
    lots = sublot_geometries(land, links)
    _check_partition(lots.set_index("uscc").loc[links["uscc"]], land.geometry[0], list(links["share"]))


def test_raw_leases_put_on_links_that_lack_lease_areas():
    """Links built elsewhere (no leased_* columns) plus the lease records give the same shares as
    links that carry the leased areas themselves."""
    land = land_of([rect(0, 0, 100, 100)])
    i = land["identity_code"][0]
    code = land["parcel_code"][0]
    plain = links_df([(i, "O0", "landlord", True, {"parcel_code": code}),
                      (i, "T1", "tenant", False, {"parcel_code": code}),
                      (i, "T2", "tenant", False, {"parcel_code": code})])
    leases = pd.DataFrame({"tenant_uscc": ["T1", "T2"], "parcel_code": [code, None],
                           "landlord_uscc": ["O0", "O0"], "floor_area_m2": [1000.0, np.nan],
                           "land_area_m2": [np.nan, 2500.0]})
    out = split_shares(plain, land, leases=leases).set_index("uscc")
    carried = links_df([(i, "O0", "landlord", True, {"parcel_code": code}),
                        (i, "T1", "tenant", False, {"parcel_code": code, "leased_floor_area_m2": 1000.0}),
                        (i, "T2", "tenant", False, {"parcel_code": code, "leased_land_area_m2": 2500.0})])
    expected = split_shares(carried, land).set_index("uscc")
    assert out["share"].to_dict() == pytest.approx(expected["share"].to_dict())
    assert out.loc["T2", "share"] == pytest.approx(0.25) and out.loc["T2", "share_source"] == "lease_land"
    assert out.loc["T1", "share_source"] == "lease_floor"
    check_sums(out.reset_index(), land)


# ------------------------------------------------------------------ straddling buildings (issue 11)

def _two_parcels():
    p = gpd.GeoDataFrame({"parcel_code": [pcode(1), pcode(2)], "owner_uscc": ["OA", "OB"]},
                         geometry=[rect(0, 0, 100, 100), rect(100, 0, 100, 100)], crs=CRS)
    return build_land(p, None)


def test_straddling_building_tenant_claims_only_its_part_on_its_parcel():
    land = _two_parcels()
    # 60 × 60 building, 40 m on parcel 1 (2400 m²), 20 m on parcel 2 (1200 m²), two floors
    b = gpd.GeoDataFrame({"building_id": ["B1"], "parcel_code": [None], "floors": [2]},
                         geometry=[rect(60, 20, 60, 60)], crs=CRS)
    e = gpd.GeoDataFrame({"uscc": ["OA", "OB", "T"]},
                         geometry=[Point(X0 + 10, Y0 + 10), Point(X0 + 150, Y0 + 50), Point(X0 + 110, Y0 + 50)],
                         crs=CRS)
    links = match_enterprises(land, e, buildings=b)
    out = split_shares(links, land, buildings=b)
    check_sums(out, land)
    got = {(r.identity_code, r.uscc): r.share for r in out.itertuples()}
    ra, rb = "R-" + pcode(1), "R-" + pcode(2)
    assert got[(ra, "OA")] == 1.0 and (ra, "T") not in got          # P-A's owner keeps all of P-A
    # the tenant: the building's 1200 m² on P-B over P-B's 10 000 m² (its owner occupies the rest)
    assert got[(rb, "T")] == pytest.approx(0.12)
    assert got[(rb, "OB")] == pytest.approx(0.88)


def test_straddling_building_counts_on_each_piece_only_with_its_part():
    land = _two_parcels()
    b = gpd.GeoDataFrame({"building_id": ["B1", "B2"], "parcel_code": [None, None], "floors": [1, 1]},
                         geometry=[rect(60, 20, 60, 60), rect(150, 20, 20, 20)], crs=CRS)
    # OB occupies B2 (400 m²); T in B1 on P-B (1200 m² of B1 lie on P-B)
    e = gpd.GeoDataFrame({"uscc": ["OA", "OB", "T"]},
                         geometry=[Point(X0 + 10, Y0 + 10), Point(X0 + 160, Y0 + 30), Point(X0 + 110, Y0 + 50)],
                         crs=CRS)
    out = split_shares(match_enterprises(land, e, buildings=b), land, buildings=b)
    got = {(r.identity_code, r.uscc): r.share for r in out.itertuples()}
    rb = "R-" + pcode(2)
    assert got[(rb, "T")] == pytest.approx(1200 / (1200 + 400))   # not 3600 / (3600 + 400)
    assert got[(rb, "OB")] == pytest.approx(400 / 1600)


def test_leased_floor_over_building_floor_counts_only_floor_on_piece():
    land = _two_parcels()
    # 3 floors; 1/3 of the footprint on P-B → 3600 m² of its 10 800 m² floor area on P-B
    b = gpd.GeoDataFrame({"building_id": ["B1"], "parcel_code": [None], "floors": [3]},
                         geometry=[rect(60, 20, 60, 60)], crs=CRS)
    leases = pd.DataFrame({"tenant_uscc": ["T"], "parcel_code": [pcode(2)], "floor_area_m2": [1800.0]})
    e = gpd.GeoDataFrame({"uscc": ["OB", "T"]}, geometry=[Point(X0 + 150, Y0 + 50), Point(X0 + 110, Y0 + 50)],
                         crs=CRS)
    out = split_shares(match_enterprises(land, e, buildings=b, leases=leases), land, buildings=b)
    got = {(r.identity_code, r.uscc): r.share for r in out.itertuples()}
    assert got[("R-" + pcode(2), "T")] == pytest.approx(1800 / 3600)
