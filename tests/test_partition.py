"""spatial.partition: which rows a county's task must see (issue 16)."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import shapely

from spatial.partition import county_keys, halo, holder_homes, neighbours

TOL = 30.0


def _land(rows):
    return gpd.GeoDataFrame(pd.DataFrame(rows, columns=["identity_code", "parcel_code", "owner_uscc", "user_uscc",
                                                        "county", "x0", "x1"]).assign(
        geometry=lambda d: shapely.box(d["x0"], 0, d["x1"], 100)).drop(columns=["x0", "x1"]),
        geometry="geometry", crs=4549)


def _ents(rows):
    df = pd.DataFrame(rows, columns=["uscc", "county", "x"])
    return gpd.GeoDataFrame(df.drop(columns="x"), geometry=[shapely.Point(x, 50) if pd.notna(x) else None
                                                             for x in df["x"]], crs=4549)


LAND = _land([
    ("R-A1", "A1", "EA1", None, "A", 0, 100),        # county A, east edge at x = 100
    ("R-A0", "A0", None, None, "A", -500, -400),      # county A, far west
    ("R-B1", "B1", "EB1", None, "B", 140, 240),       # county B, 40 m east of A
    ("R-B2", "B2", "EA9", None, "B", 600, 700),       # county B, far; held by an enterprise of A
    ("R-C1", "C1", None, None, "C", 5000, 5100),      # county C, far away
])
ENTS = _ents([
    ("EA1", "A", 50), ("EA9", "A", -450),
    ("EB1", "B", 190),
    ("EB5", "B", 108),     # county B's enterprise 8 m from A's land (B's land 32 m away)
    ("EB6", "B", 121),     # 21 m from A1, 19 m from B1: both within the tolerance
    ("EB7", "B", 400),     # far from A
    ("EB8", "B", None),    # no point
    ("EC1", "C", 5050),
])


def test_halo_takes_enterprises_that_could_link_to_the_countys_land():
    sel = halo("A", LAND, ENTS, tolerance_m=TOL)
    assert set(sel["enterprises"]["uscc"]) == {"EA1", "EA9", "EB5", "EB6"}


def test_halo_takes_the_land_those_enterprises_could_link_to_instead():
    sel = halo("A", LAND, ENTS, tolerance_m=TOL)
    # B1: within the tolerance of EB5/EB6 (the nearer land must be seen to win the tie);
    # B2: held by EA9, an enterprise of A (owner links cross borders)
    assert set(sel["land"]["identity_code"]) == {"R-A1", "R-A0", "R-B1", "R-B2"}


def test_halo_follows_leases_and_corrections_naming_the_countys_land():
    leases = pd.DataFrame({"tenant_uscc": ["EC1", "EB7"], "parcel_code": ["A0", pd.NA],
                           "landlord_uscc": [pd.NA, "EA1"]})
    corr = pd.DataFrame({"uscc": ["EB8"], "parcel_code": ["R-A0"]})
    sel = halo("A", LAND, ENTS, leases=leases, corrections=corr, tolerance_m=TOL)
    assert {"EC1", "EB7", "EB8"} <= set(sel["enterprises"]["uscc"])
    assert "R-C1" in set(sel["land"]["identity_code"])  # within the tolerance of EC1's point
    assert len(sel["leases"]) == 2 and len(sel["corrections"]) == 1


def test_halo_of_a_far_county_is_itself():
    sel = halo("C", LAND, ENTS, tolerance_m=TOL)
    assert set(sel["enterprises"]["uscc"]) == {"EC1"}
    assert set(sel["land"]["identity_code"]) == {"R-C1"}


def _keys():
    return {c: county_keys(LAND[LAND["county"] == c], ENTS[ENTS["county"] == c]) for c in "ABC"}


def test_neighbours_by_distance_and_by_keys():
    bounds = {c: tuple(shapely.total_bounds(LAND[LAND["county"] == c].geometry.values)) for c in "ABC"}
    # by distance alone: A and B (40 m apart at the nearest) are neighbours within 2 × 30 m
    assert neighbours(bounds, None, TOL)["A"] == []  # bounds of B start at 140, A ends at 100: gap 40 > 31
    assert neighbours(bounds, None, 40.0)["A"] == ["B"]
    # B2 is held by EA9 of county A: a key tie, whatever the distance
    assert neighbours(bounds, _keys(), TOL) == {"A": ["B"], "B": ["A"], "C": []}


def test_neighbours_close_over_two_steps():
    bounds = {"A": (0, 0, 10, 10), "B": (30, 0, 40, 10), "C": (60, 0, 70, 10), "D": (90, 0, 100, 10)}
    nb = neighbours(bounds, None, 25.0)
    assert nb["A"] == ["B", "C"]   # C is two steps away: land near an enterprise near A's land
    assert nb["B"] == ["A", "C", "D"]


def test_holder_without_an_enterprise_row_gets_a_home_county():
    keys = _keys()
    keys["B"]["holders"] = keys["B"]["holders"].to_pylist() + ["91AAAAAAX"]
    keys["C"]["holders"] = keys["C"]["holders"].to_pylist() + ["91AAAAAAX"]
    homes = holder_homes(keys)
    assert homes["91AAAAAAX"] == "B"  # its code's region is no county here: the first holding county
    bounds = {c: tuple(shapely.total_bounds(LAND[LAND["county"] == c].geometry.values)) for c in "ABC"}
    assert "C" in neighbours(bounds, keys, TOL)["B"]


def test_halo_at_the_reach_and_across_a_corner():
    """The bounding-box prefilter of the distance test keeps every row within the reach
    (tolerance + margin), however it lies, and only those: points just inside and just outside
    the reach across county A's east edge and its north-east corner."""
    ents = _ents([("EA1", "A", 50), ("EB1", "B", 190)])
    extra = gpd.GeoDataFrame(pd.DataFrame({"uscc": ["E-in", "E-out", "E-corner-in", "E-corner-out"],
                                           "county": "B"}),
                             geometry=[shapely.Point(130.9, 50), shapely.Point(131.2, 50),
                                       shapely.Point(121, 121), shapely.Point(124, 124)], crs=4549)
    sel = halo("A", LAND, pd.concat([ents, extra], ignore_index=True), tolerance_m=TOL)
    # reach = 30 + 1 m; the corner points are 29.7 m and 33.9 m from (100, 100)
    assert set(sel["enterprises"]["uscc"]) == {"EA1", "E-in", "E-corner-in"}


def test_halo_equals_the_brute_force_definition():
    """On random land and points of three counties, the halo equals the rows chosen by testing
    every pair (shapely.dwithin), without any index or prefilter."""
    import numpy as np

    from spatial.partition import MARGIN_M

    rng = np.random.default_rng(7)
    n = 300
    x0 = rng.uniform(0, 3000, n)
    y0 = rng.uniform(0, 1000, n)
    county = np.where(x0 < 1000, "A", np.where(x0 < 2000, "B", "C"))
    land = gpd.GeoDataFrame({"identity_code": [f"R{i}" for i in range(n)], "parcel_code": [f"P{i}" for i in range(n)],
                             "owner_uscc": None, "user_uscc": None, "county": county},
                            geometry=shapely.box(x0, y0, x0 + rng.uniform(5, 60, n), y0 + rng.uniform(5, 60, n)),
                            crs=4549)
    px, py = rng.uniform(0, 3000, 4 * n), rng.uniform(0, 1000, 4 * n)
    ents = gpd.GeoDataFrame({"uscc": [f"E{i}" for i in range(4 * n)],
                             "county": np.where(px < 1000, "A", np.where(px < 2000, "B", "C"))},
                            geometry=shapely.points(px, py), crs=4549)
    reach = TOL + MARGIN_M
    for c in "ABC":
        sel = halo(c, land, ents, tolerance_m=TOL)
        core = land[land["county"] == c].geometry.values
        pts, pieces = np.asarray(ents.geometry.values), np.asarray(land.geometry.values)
        near_core = shapely.dwithin(pts[:, None], np.asarray(core)[None, :], reach).any(axis=1)
        want = (ents["county"] == c).to_numpy() | near_core
        assert set(sel["enterprises"]["uscc"]) == set(ents["uscc"][want])
        near_ent = shapely.dwithin(pieces[:, None], pts[want][None, :], reach).any(axis=1)
        keep = (land["county"] == c).to_numpy() | near_ent
        assert set(sel["land"]["identity_code"]) == set(land["identity_code"][keep])
        assert (~keep).sum() > 0 and (keep & (land["county"] != c).to_numpy()).sum() > 0  # a real halo
