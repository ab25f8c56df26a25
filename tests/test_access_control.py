"""Role × region matrix over tiles, TileJSON, archives, clusters and styles.

public (anonymous by default): geometry, codes, areas and grades — no names, no figures;
viewer: + names, links, scores, explanations without figures; analyst/admin: + figures.
A township-scoped key never sees another township's land or enterprises: absent from tiles,
404 from archives, never a cluster member.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.api.layers import LAYERS
from app.main import create_app
from app.settings import Settings
from tests.test_tiles import (T1, T2, client, county, features_in, identity, tile_of,  # noqa: F401
                              uscc_of)

LEVEL = {"public": 1, "link": 2, "viewer": 2, "analyst": 3, "admin": 4}  # link = viewer (links unpublished)
ROLES = [None, "public", "viewer", "analyst", "admin"]  # None = anonymous = settings.anonymous_role ('public')


def role_of(who):
    return "public" if who is None else who.split("_")[0]


def h(county, who):
    return county.headers(who) if who else {}


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize("layer_id", ["parcels", "enterprises", "sublots"])
def test_tile_properties_follow_the_role(client, county, who, layer_id):
    z = 16
    x, y = tile_of(1, 1, z)
    r = client.get(f"/tiles/{layer_id}/{z}/{x}/{y}.pbf", headers=h(county, who))
    feats = features_in(r)
    assert feats, f"{layer_id} tile {z}/{x}/{y} is empty"
    layer = LAYERS[layer_id]
    allowed = {p.name for p in layer.properties if LEVEL[p.level] <= LEVEL[role_of(who)]}
    forbidden = {p.name for p in layer.properties} - allowed
    for f in feats.values():
        assert set(f["properties"]) <= allowed
        assert not set(f["properties"]) & forbidden
    tj = client.get(f"/tiles/{layer_id}.json", headers=h(county, who)).json()
    assert set(tj["vector_layers"][0]["fields"]) == allowed


@pytest.mark.parametrize("who", ROLES)
def test_archive_fields_follow_the_role(client, county, who):
    role = role_of(who)
    a = client.get(f"/parcels/{identity(1, 0)}", headers=h(county, who)).json()
    e = client.get(f"/enterprises/{uscc_of(1, 0)}", headers=h(county, who)).json()
    rating = a["ratings"][-1]
    assert rating["grade"] == "D"
    assert ("owner_name" in a) == ("name" in e) == (LEVEL[role] >= 2)
    assert ("explanation" in rating) == (LEVEL[role] >= 2)
    figures = LEVEL[role] >= 3
    assert ("tax_per_mu" in rating) == ("metrics" in a) == ("metrics" in e) == ("electricity" in e) == figures
    if "explanation" in rating:
        assert ("value" in rating["explanation"]["indicators"][0]) == figures
    assert a["visibility"]["figures"] == figures


@pytest.mark.parametrize("who", ROLES)
def test_cluster_figures_follow_the_role(client, county, who):
    figures = LEVEL[role_of(who)] >= 3
    r = client.get("/clusters", params={"target_tax_per_mu": 10}, headers=h(county, who))
    c = r.json()["clusters"][0]
    assert ("total_tax_wan" in c) == ("mean_tax_per_mu" in c) == ("gain_wan" in c) == figures
    t = client.get("/clusters", params={"max_tax_per_mu": 5}, headers=h(county, who))
    assert t.status_code == (200 if figures else 403)


@pytest.mark.parametrize("who", ROLES)
def test_styles_are_open_to_every_role(client, county, who):
    for path in ("/styles/parcels.qml", "/styles/parcels.sld", "/styles/parcels/maplibre.json", "/styles"):
        assert client.get(path, headers=h(county, who)).status_code == 200


@pytest.mark.parametrize("who,mine,theirs", [("viewer_t1", T1, T2), ("analyst_t2", T2, T1)])
def test_region_scope_everywhere(client, county, who, mine, theirs):
    hdr = county.headers(who)
    # tiles: a z12 tile holds both townships; the key sees only its own
    x, y = tile_of(0, 0, 12)
    for layer_id in ("parcels", "enterprises"):
        feats = features_in(client.get(f"/tiles/{layer_id}/12/{x}/{y}.pbf", headers=hdr))
        assert feats and {f["properties"]["township"] for f in feats.values()} == {mine}
    # archives: own land and enterprises 200, the others 404
    own_i, other_i = (0, 4) if mine == T1 else (4, 0)
    assert client.get(f"/parcels/{identity(own_i, 0)}", headers=hdr).status_code == 200
    assert client.get(f"/parcels/{identity(other_i, 0)}", headers=hdr).status_code == 404
    assert client.get(f"/enterprises/{uscc_of(own_i, 0)}", headers=hdr).status_code == 200
    assert client.get(f"/enterprises/{uscc_of(other_i, 0)}", headers=hdr).status_code == 404
    # clusters: members only from the key's township
    doc = client.get("/clusters", headers=hdr).json()
    assert doc["clusters"] and {t for c in doc["clusters"] for t in c["townships"]} == {mine}
    # TileJSON bounds cover only the key's land
    b = client.get("/tiles/parcels.json", headers=hdr).json()["bounds"]
    full = client.get("/tiles/parcels.json").json()["bounds"]
    assert (b[2] - b[0]) < (full[2] - full[0]) * 0.6


def test_unknown_key_is_401_everywhere(client):
    bad = {"X-API-Key": "mj_not-a-key"}
    for path in ("/tiles/parcels/15/0/0.pbf", "/tiles/parcels.json", f"/parcels/{identity(0, 0)}",
                 f"/enterprises/{uscc_of(0, 0)}", "/clusters", "/styles/parcels.qml"):
        assert client.get(path, headers=bad).status_code == 401, path


def test_anonymous_role_none_closes_everything(county):
    with TestClient(create_app(Settings(anonymous_role="none"), database_url=county.url)) as c:
        x, y = tile_of(0, 0, 15)
        for path in (f"/tiles/parcels/15/{x}/{y}.pbf", "/tiles/parcels.json", f"/parcels/{identity(0, 0)}",
                     f"/enterprises/{uscc_of(0, 0)}", "/clusters", "/styles/parcels.qml",
                     "/styles/parcels/maplibre.json"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert "X-API-Key" in r.text
        assert c.get(f"/tiles/parcels/15/{x}/{y}.pbf", headers=county.headers("public")).status_code == 200
