"""A township scope names its county on a province database (confidentiality), on a real PostGIS.

A province run written with ``--db`` holds many counties in one database (``county`` of land and
enterprises = 县级行政区划代码), and townships of different counties share names (城关镇 …). A
key or user limited to a township must see that township of its own county only — in items (the
feature cache and the dynamic path), exports, tiles, archives, search and 公示名单 — never the
same-named township of another county with its confidential figures. The rule is
:meth:`app.auth.Principal.region_clause`'s table:

* (county A, township T): A's T only; (county A, no township): county A only;
* a township without a county is refused when made on a database with counties (the message names
  the counties that have it), and one made earlier (before the database held counties) sees
  nothing there rather than every county's T;
* a county database (every county NULL) is unchanged: tests/test_access_rules.py, test_accounts.py.

Three generated counties; county B's township names are renamed to county A's so that both have a
township T of the same name with land and rated enterprises.
"""

from __future__ import annotations

import csv
import io
import uuid

import mapbox_vector_tile
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import accounts, auth
from app.api.tiles import feature_id
from app.feature_cache import build_feature_cache
from app.main import create_app
from app.province import run_province
from app.province_db import write_province
from app.sample import _ProvinceWriter
from app.settings import Settings
from spatial.synthetic import generate_county
from tests.conftest import TEMPLATE
from tests.test_tiles import lonlat_to_tile

YEAR = 2024


@pytest.fixture(scope="module")
def province(tmp_path_factory, _template, pg_admin_url):
    """A 3-county province database (published run, feature cache built) with a township name T
    shared by counties A and B: (url, A, B, T, rows) — rows: {(table, county, township): ids}."""
    root = tmp_path_factory.mktemp("scope_county")
    (root / "in").mkdir()
    w = _ProvinceWriter(root / "in", "parquet")
    for i in range(3):
        w.add(generate_county(seed=31, parcels=60, index=i, enterprises_per_parcel=3))
    w.close()
    run_province(root / "in", YEAR, root / "out", workers=1, processes=False)
    name = f"mujun_sc_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    url = str(sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False))
    eng = sa.create_engine(url)
    write_province(eng, root / "out", root / "in", YEAR, publish=True)
    with eng.begin() as conn:
        a, b = conn.execute(sa.text("SELECT DISTINCT county FROM parcels ORDER BY 1 LIMIT 2")).scalars().all()
        town = {c: conn.execute(sa.text(
            "SELECT township FROM enterprises WHERE county = :c AND township IS NOT NULL "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"), {"c": c}).scalar() for c in (a, b)}
        t = town[a]
        for table in ("parcels", "enterprises"):  # B's largest township takes A's name (as 城关镇 recurs)
            conn.execute(sa.text(f"UPDATE {table} SET township = :t WHERE county = :b AND township = :bt"),
                         {"t": t, "b": b, "bt": town[b]})
        conn.execute(sa.text("UPDATE data_version SET version = version + 1"))
        rows = {}
        for table, key in (("parcels", "identity_code"), ("enterprises", "uscc")):
            for c, tw, k in conn.execute(sa.text(f"SELECT county, township, {key} FROM {table}")):
                rows.setdefault((table, c, tw), set()).add(k)
    for c in (a, b):
        assert rows[("parcels", c, t)] and rows[("enterprises", c, t)]
    build_feature_cache(eng)
    eng.dispose()
    yield url, a, b, t, rows
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def client(province, tmp_path_factory):
    url = province[0]
    with TestClient(create_app(Settings(data_dir=tmp_path_factory.mktemp("sc")), database_url=url)) as c:
        yield c


def _key(url: str, role: str, region=None, county=None) -> dict:
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        key = auth.create_key(conn, f"k{uuid.uuid4().hex[:6]}", role, region, county)
    eng.dispose()
    return {"X-API-Key": key}


def _items(client, collection: str, h: dict, **params) -> set[str]:
    """Every feature id of a collection the caller gets (following ``next`` links)."""
    ids, r = set(), client.get(f"/collections/{collection}/items", headers=h, params={"limit": 500, **params})
    while True:
        assert r.status_code == 200, r.text
        doc = r.json()
        ids |= {f["id"] for f in doc["features"]}
        nxt = [ln["href"] for ln in doc.get("links", []) if ln["rel"] == "next"]
        if not nxt:
            return ids
        r = client.get(nxt[0], headers=h)


def _all(rows: dict, table: str, county: str, township: str | None = None) -> set[str]:
    return set().union(*[v for (tb, c, tw), v in rows.items()
                         if tb == table and c == county and (township is None or tw == township)])


def test_township_key_sees_its_countys_township_only(province, client):
    url, a, b, t, rows = province
    h = _key(url, "analyst", t, a)
    unscoped = _key(url, "analyst")
    for table in ("parcels", "enterprises"):
        mine, other = _all(rows, table, a, t), _all(rows, table, b, t)
        everyone = _items(client, table, unscoped)
        assert everyone & other, "the layer shows B's township"
        for params in ({}, {"township": t}):  # the feature cache, then the dynamic path (a filter)
            got = _items(client, table, h, **params)
            assert got == everyone & mine and got, (table, params)
            assert not got & other
        export = client.get(f"/collections/{table}/export.geojson", headers=h)
        assert export.status_code == 200
        got = {f["id"] for f in export.json()["features"]}
        assert got == everyone & mine and not got & other
    # archives: A's land and enterprises of T, never B's of the same-named township
    p_b, e_b = sorted(_all(rows, "parcels", b, t))[0], sorted(_all(rows, "enterprises", b, t))[0]
    p_a, e_a = sorted(_all(rows, "parcels", a, t))[0], sorted(_all(rows, "enterprises", a, t))[0]
    assert client.get(f"/parcels/{p_a}", headers=h).status_code == 200
    assert client.get(f"/enterprises/{e_a}", headers=h).status_code == 200
    assert client.get(f"/parcels/{p_b}", headers=h).status_code == 404
    assert client.get(f"/enterprises/{e_b}", headers=h).status_code == 404
    assert client.get(f"/parcels/{p_b}", headers=unscoped).status_code == 200
    # search and the 公示名单 (CSV)
    assert client.get("/search", headers=unscoped, params={"q": e_b}).json()["results"]
    assert client.get("/search", headers=h, params={"q": e_b}).json()["results"] == []
    text = client.get("/lists/ratings.csv", headers=h, params={"year": YEAR}).text
    listed = {u for u in _all(rows, "enterprises", a) | _all(rows, "enterprises", b) if u in text}
    assert listed and listed <= _all(rows, "enterprises", a, t)
    assert {r.get("县（区）代码", a) for r in csv.DictReader(io.StringIO(text.lstrip("\ufeff")))} <= {a}


def test_township_key_tiles_hold_no_other_countys_township(province, client):
    url, a, b, t, rows = province
    h = _key(url, "viewer", t, a)
    eng = sa.create_engine(url)
    with eng.connect() as conn:
        lon, lat = conn.execute(sa.text(
            "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(geom) c FROM parcels WHERE identity_code = :i) s"),
            {"i": sorted(_all(rows, "parcels", b, t))[0]}).one()
    eng.dispose()
    x, y = lonlat_to_tile(lon, lat, 14)
    other = {feature_id(i) for i in _all(rows, "parcels", b, t)}

    def ids(headers):
        r = client.get(f"/tiles/parcels/14/{x}/{y}.pbf", headers=headers, params={"year": YEAR})
        assert r.status_code in (200, 204), r.text
        layer = mapbox_vector_tile.decode(r.content).get("parcels") if r.content else None
        return {f["id"] for f in layer["features"]} if layer else set()

    assert ids(_key(url, "viewer")) & other, "the tile holds B's township"
    assert not ids(h) & other


def test_county_wide_key_sees_its_county_only(province, client):
    url, a, b, t, rows = province
    h = _key(url, "analyst", None, a)
    everyone = _items(client, "enterprises", _key(url, "analyst"))
    for params in ({}, {"township": t}):
        got = _items(client, "enterprises", h, **params)
        want = everyone & _all(rows, "enterprises", a, t if params else None)
        assert got == want and got, params
    assert client.get(f"/enterprises/{sorted(_all(rows, 'enterprises', b))[0]}", headers=h).status_code == 404


def test_a_township_without_county_is_refused_on_a_province_database(province):
    url, a, b, t, rows = province
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        for make in (lambda: auth.create_key(conn, "x", "viewer", t),
                     lambda: accounts.create_user(conn, "officer-x", "password123", "officer", t)):
            with pytest.raises(ValueError, match="--county") as err:
                make()
            assert a in str(err.value) and b in str(err.value)
        with pytest.raises(ValueError, match="未知县（区）代码"):
            auth.create_key(conn, "x", "viewer", None, "999999")
        only_c = next(tw for (tb, c, tw) in rows if tb == "parcels" and c not in (a, b) and tw is not None)
        if only_c not in {tw for (tb, c, tw) in rows if c == a}:
            with pytest.raises(ValueError, match=f"县（区）{a} 没有镇街"):
                auth.create_key(conn, "x", "viewer", only_c, a)
        assert auth.create_key(conn, "ok", "viewer", t, a).startswith("mj_")
        uid = accounts.create_user(conn, "officer-a", "password123", "officer", t, county=a)
        who = accounts.user_principal(conn, uid)
        assert (who.county, who.region) == (a, t)
    eng.dispose()


def test_an_older_township_key_without_county_sees_nothing(province, client):
    """A key made on the county database before it held counties (township only) is denied, not
    leaked: it sees no county's township of that name."""
    url, a, b, t, rows = province
    key = auth.KEY_PREFIX + uuid.uuid4().hex
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("INSERT INTO api_keys (name, key_hash, role, region) VALUES ('old', :h, 'analyst', :t)"),
                     {"h": auth.hash_key(key), "t": t})
    eng.dispose()
    h = {"X-API-Key": key}
    for table in ("parcels", "enterprises"):
        assert _items(client, table, h) == set()
        assert _items(client, table, h, township=t) == set()
    assert client.get(f"/enterprises/{sorted(_all(rows, 'enterprises', a, t))[0]}", headers=h).status_code == 404


def test_officer_of_a_countys_township_proposes_and_sees_there_only(province, client):
    """A signed-in 镇街专管员 (county A, township T): its own items only; a 纠偏 on B's land of the
    same-named township is refused; its proposal records county A and B's officer of T does not
    see it."""
    url, a, b, t, rows = province
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        for name, c in (("off_a", a), ("off_b", b)):
            accounts.create_user(conn, name, "password123", "officer", t, county=c)
    eng.dispose()

    def signed_in(user):
        s = TestClient(client.app)
        s.csrf = s.get("/auth/session").json()["csrf_token"]
        r = s.post("/auth/login", json={"username": user, "password": "password123"},
                   headers={"X-CSRF-Token": s.csrf})
        assert r.status_code == 200, r.text
        s.csrf = r.json()["csrf_token"]
        return s

    off_a, off_b = signed_in("off_a"), signed_in("off_b")
    everyone = _items(client, "enterprises", _key(url, "analyst"))
    assert _items(off_a, "enterprises", {}) == everyone & _all(rows, "enterprises", a, t)
    uscc = sorted(_all(rows, "enterprises", a, t))[0]
    proposal = {"uscc": uscc, "action": "add", "share": 0.5, "reason": "现场核实"}
    r = off_a.post("/workflow/corrections", json={**proposal, "parcel_code": sorted(_all(rows, "parcels", b, t))[0]},
                   headers={"X-CSRF-Token": off_a.csrf})
    assert r.status_code == 404 and "本镇街没有宗地" in r.json()["description"]
    r = off_a.post("/workflow/corrections", json={**proposal, "parcel_code": sorted(_all(rows, "parcels", a, t))[0]},
                   headers={"X-CSRF-Token": off_a.csrf})
    assert r.status_code == 200, r.text
    pid = r.json()["id"]
    assert pid in {p["id"] for p in off_a.get("/workflow/corrections").json()["proposals"]}
    assert pid not in {p["id"] for p in off_b.get("/workflow/corrections").json()["proposals"]}
    eng = sa.create_engine(url)
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT county, township FROM correction_proposals WHERE id = :i"),
                            {"i": pid}).one() == (a, t)
    eng.dispose()


def test_cli_keys_and_users_take_a_county(province, client, tmp_path):
    """`mujun keys create --county` / `mujun users create --county`: the key works in its scope;
    without --county the township is refused in Chinese, naming the counties (no traceback)."""
    from tests.test_cli import _mujun

    url, a, b, t, rows = province
    r = _mujun(url, "keys", "create", "--role", "analyst", "--region", t, data_dir=tmp_path)
    assert r.returncode != 0 and "--county" in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert a in r.stderr + r.stdout and b in r.stderr + r.stdout
    r = _mujun(url, "keys", "create", "--role", "analyst", "--region", t, "--county", b, data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    got = _items(client, "enterprises", {"X-API-Key": r.stdout.strip().splitlines()[-1]})
    assert got and got <= _all(rows, "enterprises", b, t)
    listing = _mujun(url, "keys", "list", data_dir=tmp_path).stdout
    assert f"{b} {t}" in listing
    r = _mujun(url, "users", "create", "off_cli", "--role", "officer", "--township", t, "--county", a,
               "--password", "password123", data_dir=tmp_path)
    assert r.returncode == 0 and f"{a} {t}" in r.stdout, r.stderr
