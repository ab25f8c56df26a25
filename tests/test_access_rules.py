"""Who sees what (issue 12), on every path, on a real PostGIS: draft runs per endpoint and role,
scores as figures (the single-indicator inference), no enterprise identity or link without a
key (unless the county publishes links), one confidentiality table, keys revoked on the next
request, regions checked, ETags keyed on the effective scope.

The county is :func:`tests.test_tiles.seed_county` plus a draft-only year (2025) and, in the
published 2024 run, scores made the way a single-indicator list makes them (score = 2 × 亩均税收).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import mapbox_vector_tile
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import auth
from app.api.layers import LAYERS
from app.api.tiles import feature_id
from app.main import create_app
from app.settings import Settings
from tests.conftest import TEMPLATE
from tests.test_tiles import T1, T2, identity, seed_county, tile_of, uscc_of

REPO = Path(__file__).resolve().parents[1]
ROLES = [None, "public", "viewer", "analyst", "admin"]
REVIEWERS = {"analyst", "admin"}


@pytest.fixture(scope="module")
def county(_template, pg_admin_url):
    name = f"mujun_a_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    url = str(sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False))
    c = seed_county(url)
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        # a year with only a draft: nobody but reviewers may see that it exists
        c.runs["2025draft"] = conn.execute(sa.text(
            "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "run_hash, status, scheme) SELECT 2025, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "'d2025', 'draft', scheme FROM evaluation_runs WHERE id = :r RETURNING id"),
            {"r": c.runs["2024"]}).scalar()
        for table in ("parcel_ratings", "enterprise_ratings"):
            cols = [r[0] for r in conn.execute(sa.text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = :t AND column_name <> 'run_id'"),
                {"t": table})]
            conn.execute(sa.text(f"INSERT INTO {table} (run_id, {', '.join(cols)}) SELECT :new, {', '.join(cols)} "
                                 f"FROM {table} WHERE run_id = :old"), {"new": c.runs["2025draft"], "old": c.runs["2024"]})
        conn.execute(sa.text("UPDATE parcel_ratings SET grade = 'D' WHERE run_id = :r"), {"r": c.runs["2025draft"]})
        # a single-indicator list: score = 2 × 亩均税收 for every subject (as the engine scores it)
        conn.execute(sa.text("UPDATE parcel_ratings SET score = 2 * tax_per_mu, "
                             "explanation = jsonb_set(explanation, '{total}', to_jsonb(2 * tax_per_mu)) "
                             "WHERE run_id = :r AND tax_per_mu IS NOT NULL"), {"r": c.runs["2024"]})
        # a 降档 rule fired on one parcel: its explanation says what it compared (a figure)
        adj = '[{"rule": "亩均税收低于5降档", "kind": "降档", "when": "tax_per_mu < 5", ' \
              '"compared": "亩均税收 2.00 万元/亩", "from": "C", "to": "D", "changed": true}]'
        conn.execute(sa.text("UPDATE parcel_ratings SET adjustments = CAST(:a AS jsonb), "
                             "explanation = jsonb_set(explanation, '{adjustments}', CAST(:a AS jsonb)) "
                             "WHERE run_id = :r AND identity_code = :c"),
                     {"a": adj, "r": c.runs["2024"], "c": identity(1, 0)})
        conn.execute(sa.text("UPDATE data_version SET version = version + 1"))
    eng.dispose()
    yield c
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def client(county, tmp_path_factory):
    with TestClient(create_app(Settings(data_dir=tmp_path_factory.mktemp("a")), database_url=county.url)) as c:
        yield c


def h(county, who):
    return county.headers(who) if who else {}


# ------------------------------------------------------------------------------------ drafts

def _draft_paths(county) -> list[str]:
    d = county.runs["2025draft"]
    x, y = tile_of(0, 0, 15)
    return [f"/collections/parcels/items?run={d}", f"/collections/parcels/items/{identity(0, 0)}?run={d}",
            f"/collections/parcels/export.geojson?run={d}", f"/collections/parcels/export.fgb?run={d}",
            f"/tiles/parcels/15/{x}/{y}.pbf?run={d}", f"/tiles/parcels.json?run={d}",
            f"/clusters?run={d}", f"/stats/grades?run={d}", f"/styles/parcels.qml?run={d}",
            f"/styles/parcels/maplibre.json?run={d}", f"/map/config?run={d}",
            # a year whose only run is a draft
            "/collections/parcels/items?year=2025", f"/tiles/parcels/15/{x}/{y}.pbf?year=2025",
            "/clusters?year=2025", "/stats/grades?year=2025", "/map/config?year=2025"]


@pytest.mark.parametrize("who", ROLES)
def test_drafts_only_for_reviewers_on_every_path(client, county, who):
    reviewer = who in REVIEWERS
    for path in _draft_paths(county):
        r = client.get(path, headers=h(county, who))
        if reviewer:
            assert r.status_code in (200, 204), (path, r.status_code, r.text[:300])
        else:
            assert r.status_code == 404, (path, r.status_code, r.text[:300])
            assert "draft" not in r.text and f"{county.runs['2025draft']} (2025" not in r.text  # none listed
    # the draft's grades (all D) appear only for reviewers
    x, y = tile_of(0, 1, 16)
    tile = client.get(f"/tiles/parcels/16/{x}/{y}.pbf?year=2025", headers=h(county, who))
    if reviewer:
        feats = mapbox_vector_tile.decode(tile.content)["parcels"]["features"]
        assert {f["properties"]["grade"] for f in feats} == {"D"}
    # the map lists only runs the caller may open
    runs = client.get("/map/config", headers=h(county, who)).json()["runs"]
    assert any(r["status"] == "draft" for r in runs) == reviewer
    assert (county.runs["2025draft"] in {r["id"] for r in runs}) == reviewer
    # archives: the draft year's rating only for reviewers
    a = client.get(f"/parcels/{identity(0, 0)}", headers=h(county, who)).json()
    assert (2025 in [x["year"] for x in a["ratings"]]) == reviewer
    if who in ("viewer", "analyst", "admin"):
        e = client.get(f"/enterprises/{uscc_of(0, 0)}", headers=h(county, who)).json()
        assert (2025 in [x["year"] for x in e["ratings"]]) == reviewer


# ------------------------------------------------------------------ scores are figures

def test_single_indicator_score_gives_away_the_figure_so_it_is_one(client, county):
    """In a single-indicator list score ÷ 亩均税收 is one constant: knowing one parcel's 亩均税收
    and every score gives every figure. So no score (or explanation total/points) below analyst."""
    hv, ha = h(county, "viewer"), h(county, "analyst")
    page = client.get("/collections/parcels/items?limit=100&year=2024", headers=ha).json()["features"]
    ratios = {round(f["properties"]["score"] / f["properties"]["tax_per_mu"], 9) for f in page
              if f["properties"].get("score") and f["properties"].get("tax_per_mu")}
    assert len(ratios) == 1 and len({f["properties"]["tax_per_mu"] for f in page}) > 2  # the inference is real
    for who in (None, "public", "viewer"):
        hh = h(county, who)
        for path in ("/collections/parcels/items?limit=100", "/collections/parcels/export.geojson",
                     "/collections/parcels/schema", "/collections/parcels/queryables", "/tiles/parcels.json"):
            assert '"score"' not in client.get(path, headers=hh).text, (who, path)
        x, y = tile_of(0, 0, 15)
        tile = mapbox_vector_tile.decode(client.get(f"/tiles/parcels/15/{x}/{y}.pbf", headers=hh).content)
        assert not any("score" in f["properties"] for f in tile["parcels"]["features"])
        for r in ("/collections/parcels/items?sortby=-score", "/collections/parcels/items?filter=score%3E1"):
            assert client.get(r, headers=hh).status_code == 400
    a = next(x for x in client.get(f"/parcels/{identity(1, 0)}", headers=hv).json()["ratings"] if x["year"] == 2024)
    assert "score" not in a and not {"total", "points", "value"} & set(str(a["explanation"]).split("'"))
    assert a["adjustments"][0]["kind"] == "降档" and "2.00" not in str(a)  # the rule, not what it compared
    a = next(x for x in client.get(f"/parcels/{identity(1, 0)}", headers=ha).json()["ratings"] if x["year"] == 2024)
    assert a["score"] == 2 * a["tax_per_mu"] and a["explanation"]["total"] == a["score"]


# ------------------------------------------------------------- identities and links

def _sublot_tile(client, county, who):
    x, y = tile_of(1, 1, 16)
    r = client.get(f"/tiles/sublots/16/{x}/{y}.pbf", headers=h(county, who))
    return mapbox_vector_tile.decode(r.content)["sublots"]["features"]


def test_no_enterprise_identity_or_link_without_a_key(client, county):
    usccs = {county.landlord, county.tenant} | {uscc_of(i, j) for i in range(8) for j in range(5)}
    # archives: land without its users' identities, shares or roles; no enterprise archive
    a = client.get(f"/parcels/{county.shared_parcel}").json()
    assert a["enterprise_count"] == 2 and "enterprises" not in a
    assert not any(u in client.get(f"/parcels/{county.shared_parcel}").text for u in usccs)
    assert "owner_uscc" not in a and "owner_name" not in a
    assert client.get(f"/enterprises/{county.landlord}").status_code == 401
    att = client.get(f"/parcels/{identity(0, 4)}").json()["attached"]
    assert att and all("user_uscc" not in x for x in att)
    # the sub-lots layer: geometry and grade only; the id is not the USCC's hash
    feats = _sublot_tile(client, county, None)
    assert len(feats) == 2 and all(not {"uscc", "name", "share"} & set(f["properties"]) for f in feats)
    assert not {f["id"] for f in feats} & {feature_id(f"{county.shared_parcel}/{u}") for u in usccs}
    # features, exports, search, clusters
    for path in ("/collections/sublots/items", "/collections/sublots/export.geojson", "/collections/sublots/export.fgb",
                 "/collections/enterprises/items", "/collections/enterprises/export.geojson",
                 f"/collections/enterprises/items/{county.landlord}"):
        assert client.get(path).status_code == 401, path
    assert client.get("/collections/sublots/items", headers=h(county, "public")).status_code == 403
    assert client.get("/search", params={"q": county.landlord[:8]}).json()["results"] == []
    for path in ("/clusters", "/clusters.geojson", "/collections", "/map/config", "/stats/grades?layer=sublots",
                 "/collections/parcels/export.geojson", "/collections/defacto/items"):
        text = client.get(path).text
        assert not any(u in text for u in usccs), path
    # a viewer sees them
    v = client.get(f"/parcels/{county.shared_parcel}", headers=h(county, "viewer")).json()
    assert {e["uscc"] for e in v["enterprises"]} == {county.landlord, county.tenant}
    assert {f["properties"]["uscc"] for f in _sublot_tile(client, county, "viewer")} == {county.landlord, county.tenant}


def test_a_county_that_publishes_links_shows_them_without_a_key(county, tmp_path):
    app = create_app(Settings(data_dir=tmp_path, publish_links=True), database_url=county.url)
    with TestClient(app) as c:
        a = c.get(f"/parcels/{county.shared_parcel}").json()
        assert {e["uscc"] for e in a["enterprises"]} == {county.landlord, county.tenant}
        assert {f["properties"]["uscc"] for f in _sublot_tile(c, county, None)} == {county.landlord, county.tenant}
        assert c.get("/collections/sublots/items").status_code == 200
        # ... but still no figures, scores or drafts
        assert '"score"' not in c.get("/collections/parcels/items").text
        assert c.get(f"/collections/parcels/items?run={county.runs['2025draft']}").status_code == 404


def test_the_confidentiality_table_is_the_one_the_code_uses():
    """Every served property's level is the table's (app.auth.CONFIDENTIALITY), and the README
    renders the same table."""
    for layer in LAYERS.values():
        for p in layer.properties:
            assert p.level == auth.field_level(p.name), (layer.id, p.name, p.level)
        if any(p.name == "uscc" for p in layer.properties) and layer.id_sql.count("uscc"):
            assert layer.id_level == "link", layer.id
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for level, fields, _where, _why in auth.CONFIDENTIALITY:
        for f in fields:
            assert f"`{f}`" in readme, f


# ------------------------------------------------------------------------------------ keys

def test_revoked_key_is_refused_on_the_next_request(client, county):
    eng = sa.create_engine(county.url)
    with eng.begin() as conn:
        key = auth.create_key(conn, "to-revoke", "viewer")
        kid = conn.execute(sa.text("SELECT max(id) FROM api_keys")).scalar()
    hh = {"X-API-Key": key}
    assert client.get(f"/parcels/{county.shared_parcel}", headers=hh).json()["enterprises"]
    with eng.begin() as conn:
        assert auth.revoke_key(conn, kid)
    r = client.get(f"/parcels/{county.shared_parcel}", headers=hh)  # the very next request
    assert r.status_code == 401 and "revoked" in r.text
    eng.dispose()


def test_region_must_be_one_of_the_county_townships(county):
    eng = sa.create_engine(county.url)
    with eng.begin() as conn:
        for bad in ("", "   ", f"{T1} ", "火星镇"):
            with pytest.raises(ValueError) as e:
                auth.create_key(conn, "x", "viewer", bad)
            assert T1 in str(e.value) and T2 in str(e.value)  # lists the known townships
        assert auth.create_key(conn, "ok", "viewer", T1).startswith("mj_")
    eng.dispose()


def test_etag_is_keyed_on_the_effective_scope(client, county):
    assert auth.Principal("viewer", "") != auth.Principal("viewer", None)
    from app.api.common import principal_scope

    assert principal_scope(auth.Principal("viewer", "")) != principal_scope(auth.Principal("viewer", None))
    x, y = tile_of(0, 0, 12)
    tags = {who: client.get(f"/tiles/parcels/12/{x}/{y}.pbf", headers=h(county, who)).headers["etag"]
            for who in ("viewer", "viewer_t1", "analyst", "analyst_t2")}
    assert len(set(tags.values())) == 4


def _mujun(url: str, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"DATABASE_URL": url, "MUJUN_DATA_DIR": str(tmp), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_keys_cli_list_revoke_and_region_check(county, tmp_path, client):
    made = _mujun(county.url, "keys", "create", "--role", "viewer", "--region", T2, "--name", "镇街查看", tmp=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    listed = _mujun(county.url, "keys", "list", tmp=tmp_path)
    assert listed.returncode == 0 and "镇街查看" in listed.stdout and T2 in listed.stdout and "有效" in listed.stdout
    assert key not in listed.stdout  # keys are never shown again
    kid = next(line.split("\t")[0] for line in listed.stdout.splitlines() if "镇街查看" in line)
    assert client.get("/map/config", headers={"X-API-Key": key}).status_code == 200
    revoked = _mujun(county.url, "keys", "revoke", kid, tmp=tmp_path)
    assert revoked.returncode == 0 and "已吊销" in revoked.stdout
    assert client.get("/map/config", headers={"X-API-Key": key}).status_code == 401
    assert "已吊销" in _mujun(county.url, "keys", "list", tmp=tmp_path).stdout
    for bad in ("", f"{T2} ", "火星镇"):
        r = _mujun(county.url, "keys", "create", "--role", "viewer", "--region", bad, tmp=tmp_path)
        assert r.returncode != 0 and "已知镇街" in r.stderr and T1 in r.stderr, (bad, r.stderr)
    again = _mujun(county.url, "keys", "revoke", "999999", tmp=tmp_path)
    assert again.returncode != 0 and "没有编号为 999999 的有效密钥" in again.stderr
