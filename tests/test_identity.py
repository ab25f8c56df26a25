"""宗地身份码: kinds, attachment rules and code stability (spatial.identity)."""
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings, strategies as st

from spatial.identity import M2_PER_MU, build_land

from tests.local_grid import CRS, pcode, rect

CODE_RE = re.compile(r"^(R-(\d{12}[GJZ][A-Z]\d{5}|X[0-9A-Z]{10})"
                     r"|A-(\d{12}[GJZ][A-Z]\d{5}|X[0-9A-Z]{10})-[0-9A-Z]{10}"
                     r"|D-(\d{6}-)?[0-9A-Z]{10})(-\d+)?$")


def parcels(rows):
    """rows: (code index, owner, geometry)."""
    return gpd.GeoDataFrame({"parcel_code": [pcode(i) for i, _, _ in rows],
                             "owner_uscc": [o for _, o, _ in rows],
                             "township": "镇海"}, geometry=[g for _, _, g in rows], crs=CRS)


def defacto(rows):
    """rows: (user, geometry)."""
    return gpd.GeoDataFrame({"user_uscc": [u for u, _ in rows], "note": None},
                            geometry=[g for _, g in rows], crs=CRS)


def by_user(land):
    return land.set_index("user_uscc")


def test_registered_code_and_columns():
    land = build_land(parcels([(1, "U1", rect(0, 0, 100, 100))]), None)
    assert list(land["identity_code"]) == ["R-" + pcode(1)]
    assert land.loc[0, "kind"] == "registered"
    assert land.loc[0, "area_mu"] == pytest.approx(10000 / M2_PER_MU)
    assert {"identity_code", "kind", "parcel_code", "parent_identity_code", "user_uscc",
            "owner_uscc", "township", "area_m2", "area_mu", "geometry"} <= set(land.columns)


@pytest.mark.parametrize("gap, kind", [(0.0, "defacto_attached"), (3.0, "defacto_attached"),
                                       (8.0, "defacto")])
def test_same_user_attached_within_tolerance(gap, kind):
    p = parcels([(1, "U1", rect(0, 0, 100, 100))])
    d = defacto([("U1", rect(100 + gap, 0, 30, 100))])  # 4.5 亩: not a small piece
    land = build_land(p, d, attach_tolerance_m=5.0)
    row = land[land["kind"] != "registered"].iloc[0]
    assert row["kind"] == kind
    if kind == "defacto_attached":
        assert row["identity_code"].startswith("A-" + pcode(1) + "-")
        assert row["parent_identity_code"] == "R-" + pcode(1)
        assert row["parcel_code"] == pcode(1)
        assert row["owner_uscc"] == "U1"
    else:
        assert row["identity_code"].startswith("D-")
        assert pd.isna(row["parcel_code"]) and pd.isna(row["parent_identity_code"])


def test_other_user_large_piece_stays_independent():
    p = parcels([(1, "U1", rect(0, 0, 100, 100))])
    land = build_land(p, defacto([("U2", rect(100, 0, 30, 100))]), county_code="330211")
    row = land[land["kind"] != "registered"].iloc[0]
    assert row["kind"] == "defacto"
    assert row["identity_code"].startswith("D-330211-")


def test_small_piece_attached_to_longest_shared_boundary():
    # 20 m x 20 m = 0.6 亩 leftover, touching parcel 1 along 20 m and parcel 2 along 5 m
    p = parcels([(1, "U1", rect(0, 0, 100, 100)), (2, "U2", rect(100, 20, 100, 100))])
    d = defacto([(None, rect(100, -5, 20, 20)), ("U9", rect(300, 0, 10, 10))])
    land = build_land(p, d)
    small = land[land["kind"] == "defacto_attached"]
    assert len(small) == 1
    assert small.iloc[0]["parent_identity_code"] == "R-" + pcode(1)
    # the far-away small piece has no neighbour: independent
    assert (land["user_uscc"] == "U9").sum() == 1
    assert land.loc[land["user_uscc"] == "U9", "kind"].item() == "defacto"


def test_small_piece_prefers_same_user():
    p = parcels([(1, "U1", rect(0, 0, 100, 100)), (2, "U2", rect(100, 20, 100, 100))])
    land = build_land(p, defacto([("U2", rect(100, -5, 20, 20))]))
    row = land[land["kind"] == "defacto_attached"].iloc[0]
    assert row["parent_identity_code"] == "R-" + pcode(2)


def test_overlap_with_registered_land_is_clipped():
    p = parcels([(1, "U1", rect(0, 0, 100, 100))])
    land = build_land(p, defacto([("U1", rect(80, 0, 50, 100))]))
    att = land[land["kind"] == "defacto_attached"].iloc[0]
    assert att["area_m2"] == pytest.approx(30 * 100)
    assert land["area_m2"].sum() == pytest.approx(13000)


def test_unregistered_parcel_rows_become_defacto():
    p = parcels([(1, "U1", rect(0, 0, 100, 100)), (2, "U1", rect(100, 0, 50, 100))])
    p["registered"] = [True, False]
    land = build_land(p, None)
    row = land[land["kind"] != "registered"].iloc[0]
    assert row["kind"] == "defacto_attached" and row["source_parcel_code"] == pcode(2)
    assert row["user_uscc"] == "U1"


def test_collisions_resolved_by_content_not_order():
    g = rect(500, 500, 60, 60)
    d = defacto([("U2", g), ("U1", g)])
    p = parcels([(1, "U1", rect(0, 0, 10, 10))])
    a = build_land(p, d)
    b = build_land(p, d.iloc[::-1])
    codes = a.loc[a["kind"] == "defacto"].set_index("user_uscc")["identity_code"]
    assert codes["U2"] == codes["U1"] + "-2"
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))


def test_all_codes_match_format_and_are_unique():
    p = parcels([(i, f"U{i}", rect(110 * i, 0, 100, 100)) for i in range(5)])
    p.loc[4, "parcel_code"] = None
    d = defacto([(f"U{i}", rect(110 * i + 100, 0, 3, 50)) for i in range(5)]
                + [("UX", rect(0, 500, 100, 100))])
    land = build_land(p, d, county_code="330211")
    assert land["identity_code"].is_unique
    bad = [c for c in land["identity_code"] if not CODE_RE.match(c)]
    assert not bad


# ---------------------------------------------------------------- stability (hypothesis)

@st.composite
def layouts(draw):
    """A row of parcels with random sizes and de-facto pieces around them."""
    n = draw(st.integers(2, 6))
    widths = draw(st.lists(st.integers(20, 120), min_size=n, max_size=n))
    gaps = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    owners = draw(st.lists(st.sampled_from(["U1", "U2", "U3", None]), min_size=n, max_size=n))
    rows, x = [], 0
    for i, (w, gp, o) in enumerate(zip(widths, gaps, owners)):
        rows.append((i, o, rect(x, 0, w, 80)))
        x += w + gp
    m = draw(st.integers(1, 6))
    drows = []
    for j in range(m):
        dx = draw(st.integers(-10, x))
        dy = draw(st.sampled_from([80, 81, 84, 90, 150]))
        w = draw(st.integers(5, 60))
        h = draw(st.integers(5, 60))
        drows.append((draw(st.sampled_from(["U1", "U2", "U9", None])), rect(dx, dy, w, h)))
    return parcels(rows), defacto(drows)


def _noisy(gdf, seed):
    # reprojection-like noise on every vertex (rings re-closed)
    rng = np.random.default_rng(seed)
    out = []
    for g in gdf.geometry:
        c = np.asarray(g.exterior.coords)[:-1]
        out.append(shapely.Polygon(c + rng.uniform(-1e-7, 1e-7, size=c.shape)))
    return gdf.set_geometry(gpd.GeoSeries(out, index=gdf.index, crs=gdf.crs))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.integers(0, 2**31 - 1))
def test_codes_stable_under_reordering_and_noise(layout, seed):
    p, d = layout
    base = build_land(p, d)
    rng = np.random.default_rng(seed)
    p2 = _noisy(p.iloc[rng.permutation(len(p))], seed)
    d2 = _noisy(d.iloc[rng.permutation(len(d))], seed + 1)
    again = build_land(p2, d2)
    assert list(again["identity_code"]) == list(base["identity_code"])
    assert list(again["kind"]) == list(base["kind"])
    assert np.allclose(again["area_m2"], base["area_m2"], atol=1e-3)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_codes_stable_under_unrelated_edits(layout):
    p, d = layout
    base = set(build_land(p, d)["identity_code"])
    # far away: a new parcel, a new de-facto piece; plus an edit to a copy of an existing row
    p2 = pd.concat([p, parcels([(99, "U7", rect(5000, 5000, 100, 100))])], ignore_index=True)
    d2 = pd.concat([d, defacto([("U8", rect(5200, 5000, 50, 50))])], ignore_index=True)
    d2 = gpd.GeoDataFrame(d2, geometry="geometry", crs=CRS)
    d2.loc[0, "note"] = "edited note"
    edited = set(build_land(gpd.GeoDataFrame(p2, geometry="geometry", crs=CRS), d2)["identity_code"])
    assert base <= edited
    assert len(edited - base) == 2
