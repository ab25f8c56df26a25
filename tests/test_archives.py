"""一地一档 / 一企一档 on a real PostGIS: content, runs per year, figures by role, region 404s."""

from __future__ import annotations

import math

import sqlalchemy as sa
from tests.test_tiles import AREA_MU, T1, client, county, identity, parcel_code, uscc_of  # noqa: F401

from app.api.archives import strip_figures
from app.api.layers import SHOWN_RUNS_SQL
from app.api.layers import current_run_sql


def get(client, county, path, who=None):
    return client.get(path, headers=county.headers(who) if who else {})


def test_parcel_archive_for_an_analyst(client, county):
    r = get(client, county, f"/parcels/{county.shared_parcel}", "analyst")
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["identity_code"] == county.shared_parcel and a["kind"] == "registered"
    assert a["parcel_code"] == parcel_code(1, 1) and a["township"] == T1
    assert math.isclose(a["area_mu"], AREA_MU) and math.isclose(a["area_m2"], AREA_MU * 10000 / 15)
    assert a["geometry"]["type"] == "MultiPolygon"
    lon, lat = a["geometry"]["coordinates"][0][0][0]
    assert 120.0 < lon < 120.2 and 30.1 < lat < 30.3
    ents = {e["uscc"]: e for e in a["enterprises"]}
    assert set(ents) == {county.landlord, county.tenant}
    assert ents[county.landlord]["role"] == "landlord" and ents[county.tenant]["role"] == "tenant"
    assert math.isclose(ents[county.tenant]["share"], 0.4)
    assert ents[county.tenant]["method"] == "lease" and ents[county.tenant]["confidence"] == 0.9
    assert math.isclose(ents[county.tenant]["attributed_area_mu"], AREA_MU * 0.4)
    assert ents[county.tenant]["name"] == "租户科技有限公司"
    # ratings: one per year from that year's shown run (2024 published, not the newer draft)
    assert [(x["year"], x["grade"], x["run_id"]) for x in a["ratings"]] == [
        (2023, "C", county.runs["2023"]), (2024, "C", county.runs["2024"])]
    last = a["ratings"][-1]
    assert last["tax_per_mu"] == 6.0
    assert last["explanation"]["indicators"][0]["value"] == 6.0
    assert last["explanation_text"].startswith("宗地等级")
    assert [m["year"] for m in a["metrics"]] == [2023, 2024]
    assert math.isclose(a["metrics"][1]["tax_paid"], 6.0 * AREA_MU)
    assert a["owner_name"] == "企业1-1有限公司"
    assert a["history"]["grades"][-1] == {"year": 2024, "grade": "C", "run_id": county.runs["2024"]}
    assert isinstance(a["warnings"], list)


def test_parcel_archive_parent_and_attached_land(client, county):
    parent = get(client, county, f"/parcels/{identity(0, 4)}", "viewer").json()
    assert [x["identity_code"] for x in parent["attached"]] == [county.attached]
    child = get(client, county, f"/parcels/{county.attached}", "viewer").json()
    assert child["kind"] == "defacto_attached" and child["parent"]["identity_code"] == identity(0, 4)
    assert any("low confidence" in w for w in child["warnings"])  # its link is a 0.5 snap
    independent = get(client, county, f"/parcels/{county.independent}", "viewer").json()
    assert any("no enterprise is linked" in w for w in independent["warnings"])


def test_figures_are_stripped_below_analyst(client, county):
    v = get(client, county, f"/parcels/{identity(1, 0)}", "viewer").json()
    last = v["ratings"][-1]
    # a score is a figure (single-indicator list: score ÷ 亩均税收 is constant): analyst only (issue 12)
    assert last["grade"] == "D" and "score" not in last and "tax_per_mu" not in last
    assert "total" not in last["explanation"]
    ind = last["explanation"]["indicators"][0]
    assert ind["title"] == "亩均税收" and not {"value", "baseline", "points"} & set(ind)
    assert "explanation_text" not in last and "explanation_text" not in last["explanation"]
    assert "metrics" not in v
    p = get(client, county, f"/parcels/{identity(1, 0)}").json()  # anonymous = public
    assert p["ratings"][-1]["grade"] == "D"
    assert not {"score", "explanation", "tax_per_mu"} & set(p["ratings"][-1])
    assert not {"owner_name", "owner_uscc", "history", "warnings", "metrics"} & set(p)
    # no enterprise identity or link for anonymous callers (issue 12): only how many use the land
    assert "enterprises" not in p and p["enterprise_count"] == 1


def test_enterprise_archive(client, county):
    us = uscc_of(1, 0)  # D in 2023 and 2024
    a = get(client, county, f"/enterprises/{us.lower()}", "analyst").json()
    assert a["uscc"] == us and a["name"] == "企业1-0有限公司" and a["scale"] == "规上"
    assert a["point"]["type"] == "Point"
    assert [p["identity_code"] for p in a["parcels"]] == [identity(1, 0)]
    assert a["parcels"][0]["tenure"] == "owned" and a["parcels"][0]["grade"] == "D"
    assert math.isclose(a["land"]["land_area_mu"], AREA_MU) and a["land"]["land_class"] == "I"
    assert [(r["year"], r["grade"]) for r in a["ratings"]] == [(2023, "D"), (2024, "D")]
    assert a["consecutive_d_years"] == 2
    assert any("连续两年 D" in w for w in a["warnings"])
    assert a["electricity"]["surcharge_yuan"] == 300000.0
    assert a["ratings"][-1]["explanation_text"].startswith("宗地等级")
    assert [m["year"] for m in a["metrics"]] == [2023, 2024]
    tenant = get(client, county, f"/enterprises/{county.tenant}", "viewer").json()
    assert tenant["parcels"][0]["tenure"] == "leased" and tenant["land"]["land_class"] == "III"
    assert "electricity" not in tenant and "metrics" not in tenant
    assert "过渡期" in tenant["flags"]
    pub = get(client, county, f"/enterprises/{us}", "public").json()  # a public key: no identities either
    assert pub["code"] == "Forbidden" and "viewer" in pub["description"]
    assert get(client, county, f"/enterprises/{us}").status_code == 401


def test_unknown_codes_are_404_with_a_hint(client, county):
    r = get(client, county, "/parcels/nonsense")
    assert r.status_code == 404 and "R-<宗地代码>" in r.json()["description"]
    r = get(client, county, f"/parcels/{parcel_code(0, 0)}")  # a 宗地代码, not an identity code
    assert r.status_code == 404 and identity(0, 0) in r.json()["description"]
    r = get(client, county, "/enterprises/123", "viewer")
    assert r.status_code == 404 and "not a 统一社会信用代码" in r.json()["description"]
    r = get(client, county, "/enterprises/91110000600037341L", "viewer")
    assert r.status_code == 404 and "91110000600037341L" in r.json()["description"]


def test_region_scope_hides_other_townships_with_the_same_404(client, county):
    mine, theirs = identity(5, 0), identity(0, 0)  # T2, T1
    assert get(client, county, f"/parcels/{mine}", "analyst_t2").status_code == 200
    hidden = get(client, county, f"/parcels/{theirs}", "analyst_t2")
    missing = get(client, county, "/parcels/R-330110002009GB99999", "analyst_t2")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["description"].replace(theirs, "X") == missing.json()["description"].replace(
        "R-330110002009GB99999", "X")
    assert get(client, county, f"/enterprises/{uscc_of(0, 0)}", "analyst_t2").status_code == 404
    assert get(client, county, f"/enterprises/{uscc_of(5, 0)}", "analyst_t2").status_code == 200
    # the 宗地代码 hint never names land outside the region
    r = get(client, county, f"/parcels/{parcel_code(0, 0)}", "analyst_t2")
    assert identity(0, 0) not in r.json()["description"]


def test_shown_runs_match_current_run_sql(county):
    eng = sa.create_engine(county.url)
    with eng.connect() as conn:
        shown = {r.year: r.id for r in conn.execute(sa.text(SHOWN_RUNS_SQL))}
        for year, run_id in shown.items():
            assert conn.execute(sa.text(current_run_sql()), {"year": year}).scalar() == run_id
    eng.dispose()
    assert shown == {2023: county.runs["2023"], 2024: county.runs["2024"]}


def test_strip_figures_keeps_structure():
    e = {"total": 1, "indicators": [{"key": "k", "value": 1, "baseline": 2, "points": 3, "weight": 30}],
         "explanation_text": "x", "bonus": [{"name": "b", "points": 2}]}
    assert strip_figures(e) == {"indicators": [{"key": "k", "weight": 30}],
                                "bonus": [{"name": "b", "points": 2}]}


def test_archive_etag(client, county):
    r = get(client, county, f"/parcels/{identity(0, 0)}", "viewer")
    etag = r.headers["etag"]
    again = client.get(f"/parcels/{identity(0, 0)}", headers={**county.headers("viewer"), "If-None-Match": etag})
    assert again.status_code == 304
    other = get(client, county, f"/parcels/{identity(0, 0)}", "analyst")
    assert other.headers["etag"] != etag
