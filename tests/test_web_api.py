"""``/stats/grades``, ``/search`` and ``/map/config`` (app/api/web.py), with access control.

The data is a small grid county built by direct SQL (:func:`build_grid_county`): 48 registered
parcels near 120.1°E 30.2°N in two townships, de-facto land, enterprises with links and
sub-lots (one parcel shared by a landlord and a tenant), and three published evaluation runs.
Expected numbers are computed by SQL on the same tables, never copied from the endpoint.
The browser test (``test_web_map.py``) uses the same builder when the lead's ``county_db_url``
fixture is not there.
"""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth import create_key
from app.main import create_app
from app.settings import Settings

MU = 10000.0 / 15
YEARS = (2022, 2023, 2024)
COLOURS = {"A": ("绿", "#1a9850"), "B": ("蓝", "#2c7bb6"), "C": ("橙", "#fdae61"), "D": ("红", "#d7191c")}
TOWNS = ("城东街道", "临江镇")
GROUPS = ("通用设备", "纺织服装")
NCOLS, NROWS = 8, 6
X0, Y0 = 120.100, 30.200
DX, DY = 0.00125, 0.00081          # ≈ 120 m × 90 m parcels
GX, GY = 0.00021, 0.00018          # ≈ 20 m roads between them
#: C/D blocks (low-yield clusters): (col, row) → grade in 2024; everything else A/B, two ungraded.
LOW = {(0, 0): "D", (1, 0): "C", (2, 0): "D", (0, 1): "C", (1, 1): "D", (2, 1): "C",
       (6, 4): "D", (7, 4): "C", (6, 5): "C", (7, 5): "D"}
UNGRADED = {(4, 2), (5, 5)}
SHARED = (3, 3)                    # landlord + tenant, split 60/40


def _cell_grade(c: int, r: int, year: int) -> str | None:
    if (c, r) in UNGRADED:
        return None
    if (c, r) in LOW:
        return LOW[(c, r)] if year >= 2023 else ("C" if LOW[(c, r)] == "D" else "B")
    return "A" if (c + r + year) % 3 == 0 else "B"


def _uscc(n: int) -> str:
    """A well-formed USCC (GB 32100-2015 check character) from a number."""
    charset = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    body = f"913301{n:011d}"
    total = sum(charset.index(ch) * (3 ** i % 31) for i, ch in enumerate(body))
    return body + charset[(31 - total % 31) % 31]


def _box(x0: float, y0: float, x1: float, y1: float) -> str:
    return f"MULTIPOLYGON((({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0})))"


def grid_cells():
    """(col, row, identity_code, parcel_code, township, industry_group, (x0, y0, x1, y1))."""
    for r in range(NROWS):
        for c in range(NCOLS):
            n = r * NCOLS + c + 1
            town = TOWNS[0] if c < NCOLS // 2 else TOWNS[1]
            code = f"330100{1 if c < NCOLS // 2 else 2:03d}001GB{n:05d}"
            x0, y0 = X0 + c * (DX + GX), Y0 + r * (DY + GY)
            yield c, r, f"R-{code}", code, town, GROUPS[c % 2], (x0, y0, x0 + DX, y0 + DY)


def build_grid_county(url: str) -> dict:
    """Fill a migrated database with the grid county; returns what the tests need to know."""
    eng = sa.create_engine(url)
    runs = {}
    scheme = {"name": "grid_test", "grades": list(COLOURS),
              "colours": {g: {"name": n, "hex": h} for g, (n, h) in COLOURS.items()}}
    with eng.begin() as conn:
        for y in YEARS:
            runs[y] = conn.execute(sa.text(
                "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
                "run_hash, status, scheme, finished_at, published_at) VALUES (:y, 'grid_test', '1', 'h', 'f', "
                ":rh, 'published', CAST(:scheme AS jsonb), now(), now()) RETURNING id"),
                {"y": y, "rh": f"grid{y}", "scheme": json.dumps(scheme)}).scalar_one()
        ents = []
        for i, (c, r, ident, code, town, group, (x0, y0, x1, y1)) in enumerate(grid_cells()):
            conn.execute(sa.text(
                "INSERT INTO parcels (identity_code, kind, parcel_code, owner_uscc, owner_name, land_use, township, "
                "area_m2, area_mu, geom) VALUES (:id, 'registered', :code, :owner, :oname, '工业用地', :town, 0, 0, "
                "ST_GeomFromText(:wkt, 4490))"),
                {"id": ident, "code": code, "owner": None if (c, r) in UNGRADED else _uscc(i + 1),
                 "oname": None if (c, r) in UNGRADED else f"测试企业{i + 1:02d}有限公司", "town": town,
                 "wkt": _box(x0, y0, x1, y1)})
            if (c, r) in UNGRADED:
                continue  # idle land: no user
            owner = _uscc(i + 1)
            ents.append((owner, f"测试企业{i + 1:02d}有限公司", town, group, ident, code, 1.0, "owner_occupier",
                         (x0 + 0.00012, y0 + 0.00010), (x0, y0, x1, y1), c, r))
            if (c, r) == SHARED:
                tenant = _uscc(900 + i)
                xm = x0 + 0.6 * (x1 - x0)
                ents[-1] = ents[-1][:6] + (0.6, "landlord") + ents[-1][8:9] + ((x0, y0, xm, y1), c, r)
                ents.append((tenant, "承租测试科技有限公司", town, group, ident, code, 0.4, "tenant",
                             (x1 - 0.00012, y1 - 0.00010), (xm, y0, x1, y1), c, r))
        # de-facto land: one independent piece in a road gap, one attached to parcel (5, 2)
        conn.execute(sa.text(
            "INSERT INTO parcels (identity_code, kind, parcel_code, parent_identity_code, user_uscc, township, "
            "area_m2, area_mu, geom) VALUES "
            "('D-330100002001-0001', 'defacto', NULL, NULL, :u1, :t2, 0, 0, ST_GeomFromText(:w1, 4490)), "
            "('A-330100002001GB00022-1', 'defacto_attached', '330100002001GB00022', 'R-330100002001GB00022', :u2, :t2,"
            " 0, 0, ST_GeomFromText(:w2, 4490))"),
            {"u1": _uscc(21), "u2": _uscc(22), "t2": TOWNS[1],
             "w1": _box(X0 + 8 * (DX + GX) + 0.0001, Y0, X0 + 8 * (DX + GX) + 0.0006, Y0 + 0.0005),
             "w2": _box(X0 + 5 * (DX + GX) + 0.0002, Y0 + 3 * (DY + GY) - GY + 0.00002,
                        X0 + 5 * (DX + GX) + 0.0008, Y0 + 3 * (DY + GY) - 0.00002)})
        conn.execute(sa.text("UPDATE parcels SET area_m2 = ST_Area(ST_Transform(geom, 4549)), "
                             "area_mu = ST_Area(ST_Transform(geom, 4549)) / :mu"), {"mu": MU})
        for (uscc, name, town, group, ident, code, share, role, (px, py), sub, c, r) in ents:
            conn.execute(sa.text(
                "INSERT INTO enterprises (uscc, name, industry_code, scale, township, geom) VALUES "
                "(:u, :n, :ic, '规上', :t, ST_SetSRID(ST_MakePoint(:x, :y), 4490))"),
                {"u": uscc, "n": name, "ic": "34" if group == GROUPS[0] else "17", "t": town, "x": px, "y": py})
            conn.execute(sa.text(
                "INSERT INTO land_links (identity_code, uscc, parcel_code, role, method, confidence, share, "
                "attributed_area_m2, attributed_area_mu) SELECT :id, :u, :code, :role, 'owner_code', 1, :s, "
                "area_m2 * :s, area_mu * :s FROM parcels WHERE identity_code = :id"),
                {"id": ident, "u": uscc, "code": code, "role": role, "s": share})
            conn.execute(sa.text(
                "INSERT INTO sublots (identity_code, uscc, share, area_m2, geom) SELECT :id, :u, :s, "
                "ST_Area(ST_Transform(g, 4549)), g FROM (SELECT ST_GeomFromText(:wkt, 4490) AS g) x"),
                {"id": ident, "u": uscc, "s": share, "wkt": _box(*sub)})
            conn.execute(sa.text(
                "INSERT INTO enterprise_land (uscc, land_area_m2, land_area_mu, parcel_count, land_class) "
                "SELECT :u, sum(attributed_area_m2), sum(attributed_area_mu), count(*), :cls FROM land_links "
                "WHERE uscc = :u"), {"u": uscc, "cls": "III" if role == "tenant" else "I"})
            for y in YEARS:
                g = _cell_grade(c, r, y)
                tax = {"A": 40.0, "B": 18.0, "C": 6.0, "D": 2.0}[g] * (1 + 0.1 * (c % 3))
                conn.execute(sa.text(
                    "INSERT INTO metrics (uscc, year, tax_paid, value_added, revenue, employees) "
                    "SELECT :u, :y, :tax * area_mu * :s, :tax * 3 * area_mu * :s, :tax * 12 * area_mu * :s, 50 "
                    "FROM parcels WHERE identity_code = :id"),
                    {"u": uscc, "y": y, "tax": tax, "s": share, "id": ident})
                conn.execute(sa.text(
                    "INSERT INTO enterprise_ratings (run_id, uscc, list_name, industry_group, score, rank, percentile, "
                    "grade, band_grade, colour, tax_per_mu, land_area_mu, consecutive_d_years, explanation, indicators, "
                    "warnings) VALUES (:run, :u, '规上', :grp, :score, 1, 50.0, :g, :g, :col, :tax, 10, :dy, "
                    "CAST(:ex AS jsonb), CAST(:ind AS jsonb), CAST(:w AS jsonb))"),
                    {"run": runs[y], "u": uscc, "grp": group, "score": tax * 2, "g": g, "col": COLOURS[g][0],
                     "tax": tax, "dy": 1 if g == "D" else 0,
                     "ex": json.dumps({"text": f"亩均税收 {tax:.1f} 万元/亩，基准 20，权重 40", "total": tax * 2,
                                      "indicators": [{"title": "亩均税收", "value": tax, "unit": "万元/亩",
                                                      "baseline": 20, "weight": 40,
                                                      "points": round(tax / 20 * 40, 2)}], "bonus": []}),
                     "ind": json.dumps({"tax_per_mu": tax}),
                     "w": json.dumps(["连续两年及以上D档：重点整治对象"] if g == "D" and y == 2024 else [])})
        for c, r, ident, code, town, group, _ in grid_cells():
            for y in YEARS:
                g = _cell_grade(c, r, y)
                idle = (c, r) in UNGRADED
                if g is None and not idle:
                    continue
                tax = None if g is None else {"A": 40.0, "B": 18.0, "C": 6.0, "D": 2.0}[g] * (1 + 0.1 * (c % 3))
                if idle and y == YEARS[-1]:
                    continue  # the idle parcels have no rating in the newest run: 未评级 on the map
                conn.execute(sa.text(
                    "INSERT INTO parcel_ratings (run_id, identity_code, list_name, industry_group, score, rank, "
                    "percentile, grade, band_grade, colour, tax_per_mu, idle, low_yield_years) VALUES "
                    "(:run, :id, '宗地', :grp, :score, 1, 50.0, :g, :g, :col, :tax, :idle, :ly)"),
                    {"run": runs[y], "id": ident, "grp": group, "score": None if tax is None else tax * 2,
                     "g": g if not idle else "D", "col": COLOURS[g if not idle else "D"][0], "tax": tax, "idle": idle,
                     "ly": 2 if g == "D" else 0})
        conn.execute(sa.text("INSERT INTO data_version (id, version) VALUES (1, 1) "
                             "ON CONFLICT (id) DO UPDATE SET version = data_version.version + 1"))
    eng.dispose()
    return {"runs": runs, "townships": list(TOWNS), "groups": list(GROUPS)}


def _with_db(url: str, name: str) -> str:
    return str(sa.make_url(url).set(database=name).render_as_string(hide_password=False))


@pytest.fixture(scope="module")
def grid_county(_template, pg_admin_url):
    """A fresh database holding the grid county (built once per test module)."""
    name = f"mujun_web_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE mujun_test_template'))
    url = _with_db(pg_admin_url, name)
    info = build_grid_county(url)
    yield url, info
    from app import db
    db._cached_engine.cache_clear()
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def api(grid_county, tmp_path_factory):
    url, info = grid_county
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("web")), database_url=url)
    with TestClient(app) as client:
        eng = sa.create_engine(url)
        with eng.begin() as conn:
            keys = {
                "viewer": create_key(conn, "v", "viewer"),
                "analyst": create_key(conn, "a", "analyst"),
                "town": create_key(conn, "t", "analyst", region=TOWNS[0]),
            }
        yield client, eng, info, keys
        eng.dispose()


def _h(key: str | None) -> dict:
    return {"X-API-Key": key} if key else {}


def _sql_counts(eng, where: str = "TRUE", params: dict | None = None, run_id: int | None = None) -> dict:
    with eng.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT r.grade, count(*), sum(p.area_mu) FROM parcels p LEFT JOIN parcel_ratings r "
            f"ON r.identity_code = p.identity_code AND r.run_id = :run WHERE {where} GROUP BY r.grade"),
            (params or {}) | {"run": run_id}).all()
    return {g: (n, a) for g, n, a in rows}


# ----------------------------------------------------------------------------- /stats/grades


def test_stats_whole_county_match_sql(api):
    client, eng, info, keys = api
    run = info["runs"][2024]
    r = client.get("/stats/grades")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["run_id"] == run
    expected = _sql_counts(eng, run_id=run)
    got = {g["grade"]: (g["count"], g["area_mu"]) for g in body["grades"]}
    assert set(got) == set(expected)
    for g, (n, a) in expected.items():
        assert got[g][0] == n
        assert got[g][1] == pytest.approx(a, abs=0.01)
    assert body["total"]["count"] == sum(n for n, _ in expected.values())
    # grades in the scheme's order, ungraded last
    order = [g["grade"] for g in body["grades"]]
    assert order == sorted(order, key=lambda g: (g is None, "ABCD".index(g) if g else 9))
    assert order[-1] is None


def test_stats_bbox_township_group_and_year(api):
    client, eng, info, keys = api
    bbox = (X0 - 0.0001, Y0 - 0.0001, X0 + 2.5 * (DX + GX), Y0 + 1.5 * (DY + GY))
    env = "ST_Intersects(p.geom, ST_MakeEnvelope(:a, :b, :c, :d, 4490))"
    prm = dict(zip("abcd", bbox))
    for year in (2022, 2024):
        run = info["runs"][year]
        body = client.get("/stats/grades", params={"bbox": ",".join(map(str, bbox)), "year": year}).json()
        expected = _sql_counts(eng, env, prm, run)
        assert {g["grade"]: g["count"] for g in body["grades"]} == {g: n for g, (n, _) in expected.items()}
    # 2024 has D parcels in the low block, 2022 none (the grades changed between years)
    b22 = client.get("/stats/grades", params={"bbox": ",".join(map(str, bbox)), "run": info["runs"][2022]}).json()
    assert "D" not in {g["grade"] for g in b22["grades"]}
    body = client.get("/stats/grades", params={"township": TOWNS[1], "industry_group": GROUPS[0]}).json()
    expected = _sql_counts(eng, "p.township = :t AND r.industry_group = :g", {"t": TOWNS[1], "g": GROUPS[0]},
                           info["runs"][2024])
    assert {g["grade"]: g["count"] for g in body["grades"]} == {g: n for g, (n, _) in expected.items()}
    body = client.get("/stats/grades", params={"grades": "C,D"}).json()
    assert {g["grade"] for g in body["grades"]} == {"C", "D"}


def test_stats_other_layers_and_area_visibility(api):
    client, eng, info, keys = api
    with eng.connect() as conn:
        n_ent = conn.execute(sa.text("SELECT count(*) FROM enterprises WHERE geom IS NOT NULL")).scalar()
        n_sub = conn.execute(sa.text("SELECT count(*) FROM sublots")).scalar()
        n_def = conn.execute(sa.text("SELECT count(*) FROM parcels WHERE kind <> 'registered'")).scalar()
    pub = client.get("/stats/grades", params={"layer": "enterprises"}).json()
    assert pub["total"]["count"] == n_ent
    assert pub["total"]["area_mu"] is None and all(g["area_mu"] is None for g in pub["grades"])  # viewer-level
    view = client.get("/stats/grades", params={"layer": "enterprises"}, headers=_h(keys["viewer"])).json()
    assert view["total"]["area_mu"] > 0
    assert client.get("/stats/grades", params={"layer": "sublots"}).json()["total"]["count"] == n_sub
    assert client.get("/stats/grades", params={"layer": "defacto"}).json()["total"]["count"] == n_def


def test_stats_region_scope_and_errors(api):
    client, eng, info, keys = api
    body = client.get("/stats/grades", headers=_h(keys["town"])).json()
    expected = _sql_counts(eng, "p.township = :t", {"t": TOWNS[0]}, info["runs"][2024])
    assert body["total"]["count"] == sum(n for n, _ in expected.values())
    # asking for the other township's land with a township key gives nothing, not an error
    other = client.get("/stats/grades", params={"township": TOWNS[1]}, headers=_h(keys["town"])).json()
    assert other["total"]["count"] == 0
    assert client.get("/stats/grades", params={"bbox": "1,2,3"}).status_code == 400
    assert client.get("/stats/grades", params={"bbox": "5,5,1,1"}).status_code == 400
    assert client.get("/stats/grades", params={"layer": "nope"}).status_code == 404
    assert client.get("/stats/grades", params={"year": 1999}).json()["code"] == "RunNotFound"
    assert client.get("/stats/grades", headers=_h("mj_not_a_key")).status_code == 401


def test_stats_refused_when_anonymous_role_is_none(grid_county, tmp_path_factory):
    url, _ = grid_county
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("none"), anonymous_role="none"), database_url=url)
    with TestClient(app) as client:
        assert client.get("/stats/grades").status_code == 401
        assert client.get("/search", params={"q": "3301"}).status_code == 401
        assert client.get("/map/config").status_code == 401
        assert client.get("/map").status_code == 200  # the page itself holds no data: it asks for a key


# ----------------------------------------------------------------------------- /search


def test_search_by_codes(api):
    client, eng, info, keys = api
    c, r, ident, code, town, group, box = next(x for x in grid_cells() if (x[0], x[1]) == (2, 1))
    res = client.get("/search", params={"q": code}).json()["results"]
    assert res[0]["type"] == "parcel" and res[0]["parcel_code"] == code and res[0]["identity_code"] == ident
    assert res[0]["bbox"][0] == pytest.approx(box[0], abs=1e-7) and res[0]["bbox"][3] == pytest.approx(box[3], abs=1e-7)
    assert client.get("/search", params={"q": ident.lower()}).json()["results"][0]["identity_code"] == ident
    # prefix: all parcels of 地籍区 002
    many = client.get("/search", params={"q": "330100002", "limit": 50}).json()["results"]
    assert {x["township"] for x in many if x["type"] == "parcel"} == {TOWNS[1]}
    uscc = _uscc(1)
    # no enterprise identity for anonymous callers, not even found by its USCC (issue 12)
    assert client.get("/search", params={"q": uscc}).json()["results"] == []
    hit = client.get("/search", params={"q": uscc}, headers=_h(keys["viewer"])).json()["results"]
    assert hit[0]["type"] == "enterprise" and hit[0]["uscc"] == uscc and hit[0]["point"]
    assert client.get("/search", params={"q": "x"}).json()["results"] == []
    assert client.get("/search", params={"q": "%"}).json()["results"] == []  # LIKE wildcards are literal


def test_search_by_name_only_for_roles_that_see_names(api):
    client, eng, info, keys = api
    assert [x for x in client.get("/search", params={"q": "承租测试"}).json()["results"]] == []
    hits = client.get("/search", params={"q": "承租测试"}, headers=_h(keys["viewer"])).json()["results"]
    assert len(hits) == 1 and hits[0]["name"] == "承租测试科技有限公司" and hits[0]["bbox"]
    viewer_hit = client.get("/search", params={"q": _uscc(1)}, headers=_h(keys["viewer"])).json()["results"][0]
    assert viewer_hit["name"] == "测试企业01有限公司"


def test_search_region_scoped(api):
    client, eng, info, keys = api
    east = next(x for x in grid_cells() if x[4] == TOWNS[1])
    assert client.get("/search", params={"q": east[3]}, headers=_h(keys["town"])).json()["results"] == []
    west = next(x for x in grid_cells() if x[4] == TOWNS[0])
    assert client.get("/search", params={"q": west[3]}, headers=_h(keys["town"])).json()["results"]
    # enterprise names outside the key's township are not found either
    hits = client.get("/search", params={"q": "测试企业08"}, headers=_h(keys["town"])).json()["results"]
    assert hits == []  # enterprise 08 sits in column 7: the other township


# ----------------------------------------------------------------------------- /map/config and pages


def test_map_config(api):
    client, eng, info, keys = api
    cfg = client.get("/map/config").json()
    assert cfg["run_id"] == info["runs"][2024] and cfg["year"] == 2024
    assert [r["year"] for r in cfg["runs"]] == [2024, 2023, 2022] and all(r["shown"] for r in cfg["runs"])
    assert [c["grade"] for c in cfg["classification"]["classes"]] == list(COLOURS)
    assert cfg["classification"]["classes"][3]["colour"] == COLOURS["D"][1]
    assert cfg["warning_colours"]["红"] == COLOURS["D"][1]
    assert cfg["townships"] == sorted(TOWNS) and cfg["industry_groups"] == sorted(GROUPS)
    x0, y0, x1, y1 = cfg["extent"]
    assert x0 == pytest.approx(X0, abs=1e-6) and y0 == pytest.approx(Y0, abs=1e-6) and x1 > x0 and y1 > y0
    assert cfg["basemap"] == {"tiles": [], "gcj02": False}
    assert cfg["principal"] == {"role": "public", "region": None, "name": None, "sees_names": False,
                                "sees_figures": False}
    town = client.get("/map/config", headers=_h(keys["town"])).json()
    assert town["townships"] == [TOWNS[0]] and town["principal"]["sees_figures"]
    assert town["extent"][2] < x1  # only its own land
    assert client.get("/map/config", params={"year": 2022}).json()["run_id"] == info["runs"][2022]
    assert client.get("/map/config", params={"run": 999999}).status_code == 404


def test_map_config_basemap(grid_county, tmp_path_factory):
    url, _ = grid_county
    s = Settings(data_dir=tmp_path_factory.mktemp("bm"), basemap_gcj02=True,
                 basemap_url="https://t.example/vec/{z}/{x}/{y}.png | https://t.example/cva/{z}/{x}/{y}.png")
    with TestClient(create_app(s, database_url=url)) as client:
        assert client.get("/map/config").json()["basemap"] == {
            "tiles": ["https://t.example/vec/{z}/{x}/{y}.png", "https://t.example/cva/{z}/{x}/{y}.png"],
            "gcj02": True}


def test_pages_and_static(api):
    client, eng, info, keys = api
    for path in ("/map", "/map/parcel/R-330100001001GB00001", "/map/enterprise/" + _uscc(1)):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert 'lang="zh-CN"' in r.text
    js = client.get("/static/vendor/maplibre-gl/maplibre-gl.mjs")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert client.get("/static/vendor/maplibre-gl/maplibre-gl-worker.mjs").status_code == 200
    assert client.get("/static/map.js").status_code == 200
    assert client.get("/static/../settings.py").status_code == 404
    page = client.get("/map").text
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # no CDN
