"""一企多地合并 and apportionment: land classes, conservation, meter split (spatial.apportion)."""
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from spatial.apportion import apportion_metrics, enterprise_land
from spatial.identity import M2_PER_MU, build_land
from spatial.match import match_enterprises
from spatial.split import split_shares

from tests.local_grid import CRS, pcode, rid, rect, pt


@pytest.fixture
def county():
    """A owns 1 (uses it) and 2 (leases it all to T); B owns 3 and has tenant U on it;
    C owns 4 (300 x 100) and 5 (100 x 100) and uses both; N has no land."""
    p = gpd.GeoDataFrame({
        "parcel_code": [pcode(i) for i in range(1, 6)],
        "owner_uscc": ["A", "A", "B", "C", "C"]},
        geometry=[rect(0, 0, 100, 100), rect(200, 0, 100, 100), rect(400, 0, 100, 100),
                  rect(0, 300, 300, 100), rect(400, 300, 100, 100)], crs=CRS)
    land = build_land(p, None)
    e = gpd.GeoDataFrame({"uscc": ["A", "B", "C", "T", "U", "N"]},
                         geometry=[pt(50, 50), pt(450, 50), pt(50, 350), pt(250, 50), pt(460, 60), None],
                         crs=CRS)
    links = split_shares(match_enterprises(land, e), land)
    return land, e, links


def test_enterprise_land_classes_and_areas(county):
    land, e, links = county
    el = enterprise_land(links, land, e).set_index("uscc")
    assert el["land_class"].to_dict() == {"A": "II", "B": "II", "C": "I", "T": "III", "U": "III",
                                         "N": "none"}
    assert el.loc["C", "land_area_m2"] == pytest.approx(40000)
    assert el.loc["C", "land_area_mu"] == pytest.approx(40000 / M2_PER_MU)
    assert el.loc["C", "parcel_count"] == 2
    assert el.loc["A", "owned_area"] == pytest.approx(20000)
    assert el.loc["A", "land_area_m2"] == pytest.approx(10000)   # parcel 2 is all T's
    assert el.loc["A", "leased_out_area"] == pytest.approx(10000)
    assert el.loc["T", "leased_in_area"] == pytest.approx(10000)
    assert el.loc["B", "land_area_m2"] + el.loc["U", "land_area_m2"] == pytest.approx(10000)
    assert el.loc["N", "land_area_m2"] == 0
    # total land is conserved
    assert el["land_area_m2"].sum() == pytest.approx(land["area_m2"].sum())


def test_one_enterprise_many_parcels_apportioned_by_area(county):
    land, e, links = county
    m = pd.DataFrame({"uscc": ["C"], "year": [2024], "tax_paid": [400.0], "value_added": [1000.0]})
    out = apportion_metrics(m, links).set_index("identity_code")
    assert out.loc[rid(4), "tax_paid"] == pytest.approx(300.0)
    assert out.loc[rid(5), "tax_paid"] == pytest.approx(100.0)
    assert out.loc[rid(4), "value_added"] == pytest.approx(750.0)
    assert out.loc[rid(4), "occupant_count"] == 1


def test_enterprise_without_land_reported_not_dropped(county):
    land, e, links = county
    m = pd.DataFrame({"uscc": ["N", "C"], "year": [2024, 2024], "tax_paid": [7.0, 4.0]})
    out = apportion_metrics(m, links)
    na = out[out["identity_code"].isna()]
    assert na["tax_paid"].item() == 7.0 and na["occupant_count"].item() == 1
    assert out["tax_paid"].sum() == pytest.approx(11.0)


def test_landlord_without_share_spreads_equally(county):
    land, e, links = county
    # T holds all of parcel 2: A's key there is 0, so A's tax goes by its area (parcel 1 only)
    m = pd.DataFrame({"uscc": ["A"], "year": [2024], "tax_paid": [10.0]})
    out = apportion_metrics(m, links).set_index("identity_code")["tax_paid"]
    assert out.to_dict() == pytest.approx({rid(1): 10.0, rid(2): 0.0})
    # a pure landlord (key 0 everywhere) spreads equally over its pieces
    links2 = links.copy()
    links2.loc[(links2["uscc"] == "A"), "attributed_area_m2"] = 0.0
    out = apportion_metrics(m, links2).set_index("identity_code")["tax_paid"]
    assert out.to_dict() == pytest.approx({rid(1): 5.0, rid(2): 5.0})


def test_shared_meter_split_by_area_not_double_counted(county):
    land, e, links = county
    # B and U share meter M1 whose reading is repeated on both rows; C has two meters
    m = pd.DataFrame({
        "uscc": ["B", "U", "C", "C"], "year": 2024,
        "tax_paid": [1.0, 2.0, 3.0, np.nan],
        "electricity_kwh": [9000.0, 9000.0, 100.0, 50.0],
        "meter_id": ["M1", "M1", "M2", "M3"]})
    out = apportion_metrics(m, links, by_enterprise=True)
    per_ent = out.groupby("uscc")["electricity_kwh"].sum()
    el = enterprise_land(links, land).set_index("uscc")["land_area_m2"]
    assert per_ent["B"] == pytest.approx(9000 * el["B"] / (el["B"] + el["U"]))
    assert per_ent["B"] + per_ent["U"] == pytest.approx(9000)
    assert per_ent["C"] == pytest.approx(150)
    tot = apportion_metrics(m, links)
    assert tot["electricity_kwh"].sum() == pytest.approx(9150)
    assert tot["tax_paid"].sum() == pytest.approx(6.0)
    assert tot.set_index("identity_code").loc[rid(3), "occupant_count"] == 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_apportionment_conserves_totals(data):
    n_land = data.draw(st.integers(1, 5))
    idents = [f"L{i}" for i in range(n_land)]
    usccs = [f"E{i}" for i in range(data.draw(st.integers(1, 6)))]
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(idents), st.sampled_from(usccs)),
                               min_size=1, max_size=12, unique=True))
    links = pd.DataFrame({"identity_code": [p[0] for p in pairs], "parcel_code": None,
                          "uscc": [p[1] for p in pairs],
                          "attributed_area_m2": [data.draw(st.floats(0, 1e4)) for _ in pairs]})
    rows = data.draw(st.lists(st.tuples(st.sampled_from(usccs + ["NOLAND"]), st.sampled_from([2023, 2024]),
                                        st.floats(0, 1e6), st.sampled_from([None, "M1", "M2"])),
                              min_size=1, max_size=10))
    m = pd.DataFrame(rows, columns=["uscc", "year", "tax_paid", "meter_id"])
    m["electricity_kwh"] = m["tax_paid"] * 3
    out = apportion_metrics(m, links)
    for y in (2023, 2024):
        sub = m[m["year"] == y]
        assert out.loc[out["year"] == y, "tax_paid"].sum() == pytest.approx(sub["tax_paid"].sum(), rel=1e-9, abs=1e-6)
        # each meter's reading once (the largest row), the unmetered rows as they are
        want = (sub[sub["meter_id"].isna()]["electricity_kwh"].sum()
                + sub.dropna(subset=["meter_id"]).groupby("meter_id")["electricity_kwh"].max().sum())
        assert out.loc[out["year"] == y, "electricity_kwh"].sum() == pytest.approx(want, rel=1e-9, abs=1e-6)
