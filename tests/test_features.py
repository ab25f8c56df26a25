"""OGC API Features against a real PostGIS: conformance, paging, counts, ETags, CRS/axis order,
CQL2, sorting, property selection, errors, and access control by role and township.

The data (:func:`seed`) is a 20 × 20 grid of 50 m parcels around 120.1°E 30.2°N in three
townships, enterprises at parcel centres (one exactly at 120.1°E 30.2°N, to check axis order and
Gauss-Krüger output), two evaluation runs (2023, 2024), sub-lots and API keys for every role.
``test_features_gdal.py`` and ``test_features_qgis.py`` reuse it.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import sqlalchemy as sa

from app import db
from app.auth import create_key

GRID = 20
CELL = 0.0005  # degrees (~48 m × 55 m)
LON0, LAT0 = 120.095, 30.195
TOWNSHIPS = ("城东街道", "城西街道", "新区镇")
GRADES = ("A", "B", "C", "D")
COLOURS = {"A": "green", "B": "blue", "C": "yellow", "D": "red"}
KNOWN_USCC = "91330100MA00000000"  # the enterprise at exactly 120.1°E 30.2°N


def township_of(col: int) -> str:
    return TOWNSHIPS[0] if col < 7 else TOWNSHIPS[1] if col < 14 else TOWNSHIPS[2]


def seed(url: str) -> dict:
    """Insert the test county; returns API keys by name and the run ids."""
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        x = conn.execute
        run_ids = {}
        for year in (2023, 2024):
            run_ids[year] = x(sa.text(
                "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint,"
                " run_hash, status) VALUES (:y, 'test', '1', 'h', 'f', :rh, 'published') RETURNING id"),
                {"y": year, "rh": f"run{year}"}).scalar_one()
        # parcels: row-major from the south-west corner; identity codes sort in that order
        x(sa.text("""
            INSERT INTO parcels (identity_code, kind, parcel_code, owner_uscc, owner_name, land_use, township,
                                 area_m2, area_mu, geom)
            SELECT 'ZD' || lpad(n::text, 4, '0'),
                   CASE WHEN n % 25 = 24 THEN 'defacto' ELSE 'registered' END,
                   CASE WHEN n % 25 = 24 THEN NULL ELSE '330102' || lpad(n::text, 6, '0') END,
                   '91330100MB' || lpad(n::text, 8, '0'), '业主' || n || '号公司', '工业用地',
                   CASE WHEN c < 7 THEN :t0 WHEN c < 14 THEN :t1 ELSE :t2 END,
                   ST_Area(g::geography), ST_Area(g::geography) / (10000.0 / 15), g
            FROM (SELECT n, n % :grid AS c, n / :grid AS r,
                         ST_Multi(ST_MakeEnvelope(:lon0 + (n % :grid) * :cell + 0.00002,
                                                  :lat0 + (n / :grid) * :cell + 0.00002,
                                                  :lon0 + (n % :grid + 1) * :cell - 0.00002,
                                                  :lat0 + (n / :grid + 1) * :cell - 0.00002, 4490)) AS g
                  FROM generate_series(0, :grid * :grid - 1) n) s
        """), {"grid": GRID, "cell": CELL, "lon0": LON0, "lat0": LAT0,
               "t0": TOWNSHIPS[0], "t1": TOWNSHIPS[1], "t2": TOWNSHIPS[2]})
        for year, shift in ((2024, 0), (2023, 1)):
            # every parcel rated except some after the first 20 (ungraded rows must still appear)
            x(sa.text("""
                INSERT INTO parcel_ratings (run_id, identity_code, list_name, industry_group, score, rank,
                                            percentile, grade, colour, tax_per_mu, idle, low_yield_years)
                SELECT :run, 'ZD' || lpad(n::text, 4, '0'), '规上', (ARRAY['纺织','机械','化工'])[n % 3 + 1],
                       60.25 + n % 40, n + 1, round(((n % 100) / 100.0)::numeric, 2) + 0.005,
                       (ARRAY['A','B','C','D'])[(n + :shift) % 4 + 1],
                       (ARRAY['green','blue','yellow','red'])[(n + :shift) % 4 + 1],
                       1.5 * (n % 30) + 0.5, n % 50 = 1, n % 3
                FROM generate_series(0, :total - 1) n WHERE n < 20 OR n % 7 <> 6
            """), {"run": run_ids[year], "shift": shift, "total": GRID * GRID})
        # enterprises at the centres of every other parcel; the first exactly at 120.1 30.2
        x(sa.text("""
            INSERT INTO enterprises (uscc, name, industry_code, scale, township, geom)
            SELECT '91330100MA' || lpad(k::text, 8, '0'), '测试企业' || k || '号有限公司',
                   (ARRAY['C17','C34','C26'])[k % 3 + 1], CASE WHEN k % 2 = 0 THEN '规上' ELSE '规下' END,
                   CASE WHEN k = 0 THEN :t1 WHEN (2 * k) % :grid < 7 THEN :t0
                        WHEN (2 * k) % :grid < 14 THEN :t1 ELSE :t2 END,
                   CASE WHEN k = 0 THEN ST_SetSRID(ST_MakePoint(120.1, 30.2), 4490)
                        ELSE ST_SetSRID(ST_MakePoint(:lon0 + ((2 * k) % :grid + 0.5) * :cell,
                                                     :lat0 + ((2 * k) / :grid + 0.5) * :cell), 4490) END
            FROM generate_series(0, 149) k
        """), {"grid": GRID, "cell": CELL, "lon0": LON0, "lat0": LAT0,
               "t0": TOWNSHIPS[0], "t1": TOWNSHIPS[1], "t2": TOWNSHIPS[2]})
        x(sa.text("""
            INSERT INTO enterprise_ratings (run_id, uscc, list_name, industry_group, score, rank, percentile,
                                            grade, colour, tax_per_mu, consecutive_d_years, electricity_surcharge_yuan)
            SELECT :run, '91330100MA' || lpad(k::text, 8, '0'), '规上', (ARRAY['纺织','机械','化工'])[k % 3 + 1],
                   70.5 + k % 20, k + 1, 0.5, (ARRAY['A','B','C','D'])[k % 4 + 1],
                   (ARRAY['green','blue','yellow','red'])[k % 4 + 1], 2.5 * (k % 10) + 0.25, k % 2,
                   CASE WHEN k % 4 = 3 THEN 10000.5 ELSE 0.5 END
            FROM generate_series(0, 149) k
        """), {"run": run_ids[2024]})
        x(sa.text("""
            INSERT INTO enterprise_land (uscc, land_area_m2, land_area_mu, parcel_count, land_class)
            SELECT '91330100MA' || lpad(k::text, 8, '0'), 2500.5, 3.75, 1, 'I' FROM generate_series(0, 149) k
        """))
        # sub-lots: the first 30 parcels split in two halves between two enterprises
        x(sa.text("""
            INSERT INTO sublots (identity_code, uscc, share, area_m2, geom)
            SELECT p.identity_code, '91330100MA' || lpad((2 * i + h)::text, 8, '0'), 0.5, p.area_m2 / 2,
                   ST_Multi(CASE WHEN h = 0 THEN ST_MakeEnvelope(ST_XMin(p.geom), ST_YMin(p.geom),
                                   (ST_XMin(p.geom) + ST_XMax(p.geom)) / 2, ST_YMax(p.geom), 4490)
                                 ELSE ST_MakeEnvelope((ST_XMin(p.geom) + ST_XMax(p.geom)) / 2, ST_YMin(p.geom),
                                   ST_XMax(p.geom), ST_YMax(p.geom), 4490) END)
            FROM generate_series(0, 29) i CROSS JOIN generate_series(0, 1) h
            JOIN parcels p ON p.identity_code = 'ZD' || lpad(i::text, 4, '0')
        """))
        db.bump_data_version(conn)
        keys = {
            "public": create_key(conn, "t-public", "public"),
            "viewer": create_key(conn, "t-viewer", "viewer"),
            "analyst": create_key(conn, "t-analyst", "analyst"),
            "admin": create_key(conn, "t-admin", "admin"),
            "west": create_key(conn, "t-west", "analyst", TOWNSHIPS[1]),
        }
    eng.dispose()
    return {"keys": keys, "runs": run_ids}


@pytest.fixture(scope="session")
def features_db(_template, pg_admin_url):
    """One seeded database for all feature tests (read-only tests; created once)."""
    name = f"mujun_f_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "mujun_test_template"'))
    url = str(sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False))
    info = seed(url)
    yield {"url": url, **info}
    db._cached_engine.cache_clear()
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ------------------------------------------------------------------------------ helpers

def make_app(url: str, **overrides):
    from app.main import create_app
    from app.settings import Settings

    return create_app(Settings(**{"max_limit": 150, "default_limit": 100, **overrides}), database_url=url)


@contextlib.contextmanager
def serve(url: str, **overrides):
    """A real uvicorn server on a free loopback port, in a thread (for GDAL and QGIS)."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(url, **overrides), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def db_scalar(url: str, sql: str, **params):
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        eng.dispose()


def all_pages(client, first_url: str, headers=None) -> tuple[list[dict], list[dict]]:
    """Follow ``next`` links to the end: (features, pages)."""
    feats, pages, url = [], [], first_url
    while url:
        r = client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        feats.extend(page["features"])
        nxt = [link for link in page["links"] if link["rel"] == "next"]
        assert len(nxt) <= 1
        if nxt:
            assert nxt[0]["type"] == "application/geo+json"
        url = nxt[0]["href"] if nxt else None
        assert len(pages) < 200, "next links never end"
    return feats, pages


@pytest.fixture(scope="module")
def client(features_db):
    from fastapi.testclient import TestClient

    with TestClient(make_app(features_db["url"])) as c:
        yield c


def H(features_db, role: str) -> dict:
    return {"X-API-Key": features_db["keys"][role]}


# -------------------------------------------------------------------------------- tests

QGIS_CLASSES = [
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-operators",
    "http://www.opengis.net/spec/ogcapi-features-5/1.0/conf/schemas",
]


def test_landing_conformance_and_openapi_limit(client):
    links = {link["rel"]: link for link in client.get("/").json()["links"]}
    assert links["service-desc"]["type"] == "application/vnd.oai.openapi+json;version=3.1"
    assert links["service-desc"]["href"].endswith("/api")
    assert links["service-doc"]["href"].endswith("/docs")
    assert links["data"]["type"] == "application/json" and links["data"]["href"].endswith("/collections")
    assert links["conformance"]["href"].endswith("/conformance")

    conf = client.get("/conformance").json()["conformsTo"]
    for c in ["http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
              "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
              "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
              "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
              "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
              "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables", *QGIS_CLASSES]:
        assert c in conf, c

    r = client.get("/api")
    assert r.headers["content-type"].startswith("application/vnd.oai.openapi+json;version=3.1")
    limit = r.json()["components"]["parameters"]["limit"]["schema"]
    assert (limit["default"], limit["maximum"]) == (100, 150)  # the app's settings
    # the landing page also answers with OpenAPI when asked for it
    r = client.get("/", headers={"Accept": "application/vnd.oai.openapi+json;version=3.1"})
    assert r.json()["components"]["parameters"]["limit"]["schema"]["maximum"] == 150


def test_collection_extent_crs_schema(client, features_db):
    c = client.get("/collections/parcels").json()
    bbox = c["extent"]["spatial"]["bbox"][0]
    assert bbox == pytest.approx([LON0 + 0.00002, LAT0 + 0.00002, LON0 + GRID * CELL - 0.00002,
                                  LAT0 + GRID * CELL - 0.00002], abs=1e-7)
    assert c["storageCrs"] == "http://www.opengis.net/def/crs/EPSG/0/4490"
    assert "http://www.opengis.net/def/crs/EPSG/0/4549" in c["crs"]
    assert c["crs"][0] == "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    rels = {link["rel"] for link in c["links"]}
    assert {"items", "http://www.opengis.net/def/rel/ogc/1.0/queryables",
            "http://www.opengis.net/def/rel/ogc/1.0/schema"} <= rels
    schema = client.get("/collections/parcels/schema", headers=H(features_db, "analyst")).json()
    props = schema["properties"]
    assert props["geometry"] == {"x-ogc-role": "primary-geometry", "format": "geometry-multipolygon"}
    assert (props["area_mu"]["type"], props["rank"]["type"], props["grade"]["type"],
            props["idle"]["type"]) == ("number", "integer", "string", "boolean")
    q = client.get("/collections/enterprises/queryables", headers=H(features_db, "public")).json()
    assert q["code"] == "Forbidden"  # enterprises are identities: a viewer key (issue 12)
    q = client.get("/collections/enterprises/queryables", headers=H(features_db, "viewer")).json()["properties"]
    assert q["geometry"]["$ref"] == "https://geojson.org/schema/Point.json"
    assert "grade" in q and "name" in q and "tax_per_mu" not in q


def test_paging_all_pages_by_key(client, features_db):
    for coll, table in (("parcels", "parcels"), ("enterprises", "enterprises"), ("sublots", "sublots"),
                        ("defacto", "parcels WHERE kind <> 'registered'")):
        expected = db_scalar(features_db["url"], f"SELECT count(*) FROM {table}")
        # enterprises and sub-lots are keyed by USCC (an identity): a viewer key (issue 12)
        feats, pages = all_pages(client, f"/collections/{coll}/items?limit=37", headers=H(features_db, "viewer"))
        ids = [f["id"] for f in feats]
        assert len(ids) == expected and len(set(ids)) == expected, coll
        assert all(p["numberMatched"] == expected for p in pages)
        assert [p["numberReturned"] for p in pages] == [len(p["features"]) for p in pages]
        assert all(len(p["features"]) == 37 for p in pages[:-1])
        for p in pages[:-1]:  # keyset links, not offsets
            nxt = next(link["href"] for link in p["links"] if link["rel"] == "next")
            qs = parse_qs(urlparse(nxt).query)
            assert "after" in qs and "offset" not in qs and qs["limit"] == ["37"]
    # default page size is settings.default_limit
    r = client.get("/collections/parcels/items")
    assert r.headers["content-type"] == "application/geo+json"
    assert r.json()["numberReturned"] == 100
    # a keyset page equals the same page by offset
    p1 = client.get("/collections/parcels/items?limit=50").json()
    nxt = next(link["href"] for link in p1["links"] if link["rel"] == "next")
    by_key = [f["id"] for f in client.get(nxt).json()["features"]]
    by_offset = [f["id"] for f in client.get("/collections/parcels/items?limit=50&offset=50").json()["features"]]
    assert by_key == by_offset and len(by_key) == 50


def test_sortby_pages_through_nulls(client, features_db):
    h = H(features_db, "analyst")  # a score is a figure (issue 12): analysts sort by it
    feats, _ = all_pages(client, "/collections/parcels/items?limit=23&sortby=-score,%2Bgrade", headers=h)
    assert len({f["id"] for f in feats}) == 400
    scores = [f["properties"]["score"] for f in feats]
    nulls = db_scalar(features_db["url"], "SELECT count(*) FROM parcels p LEFT JOIN parcel_ratings r "
                      "ON r.identity_code = p.identity_code AND r.run_id = :r WHERE r.score IS NULL",
                      r=features_db["runs"][2024])
    assert nulls > 0 and scores[:nulls] == [None] * nulls  # NULLs first when descending
    rest = scores[nulls:]
    assert rest == sorted(rest, reverse=True)
    r = client.get("/collections/parcels/items?limit=5&sortby=area_mu")
    assert r.status_code == 200
    # a token from one sortby is refused by another
    p = client.get("/collections/parcels/items?limit=5&sortby=-area_mu").json()
    tok = parse_qs(urlparse(next(link["href"] for link in p["links"] if link["rel"] == "next")).query)["after"][0]
    r = client.get(f"/collections/parcels/items?limit=5&after={tok}")
    assert r.status_code == 400
    assert r.json()["description"] == "after: this token belongs to another sortby; follow the 'next' links as given"


def test_number_matched_cached_and_etag(client, features_db):
    url = features_db["url"]
    r = client.get("/collections/parcels/items?limit=1&grade=A")
    etag = r.headers["etag"]
    assert r.json()["numberMatched"] == db_scalar(
        url, "SELECT count(*) FROM parcel_ratings WHERE run_id = :r AND grade = 'A'", r=features_db["runs"][2024])
    assert client.get("/collections/parcels/items?limit=1&grade=A", headers={"If-None-Match": etag}).status_code == 304
    # another role: another ETag
    r2 = client.get("/collections/parcels/items?limit=1&grade=A", headers={**H(features_db, "viewer"),
                                                                            "If-None-Match": etag})
    assert r2.status_code == 200 and r2.headers["etag"] != etag
    cache = client.app.state.features_cache
    assert any(k[0] == "count" for k in cache._d)
    # a write bumps the data version: new ETag and a fresh count
    eng = sa.create_engine(url)
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("INSERT INTO parcels (identity_code, kind, township, area_m2, area_mu, geom) "
                                 "SELECT 'ZZ9999', 'defacto', township, area_m2, area_mu, geom FROM parcels "
                                 "WHERE identity_code = 'ZD0000'"))
            conn.execute(sa.text("INSERT INTO parcel_ratings (run_id, identity_code, grade) VALUES (:r, 'ZZ9999', 'A')"),
                         {"r": features_db["runs"][2024]})
            db.bump_data_version(conn)
        r3 = client.get("/collections/parcels/items?limit=1&grade=A", headers={"If-None-Match": etag})
        assert r3.status_code == 200 and r3.headers["etag"] != etag
        assert r3.json()["numberMatched"] == r.json()["numberMatched"] + 1
    finally:
        with eng.begin() as conn:
            conn.execute(sa.text("DELETE FROM parcel_ratings WHERE identity_code = 'ZZ9999'"))
            conn.execute(sa.text("DELETE FROM parcels WHERE identity_code = 'ZZ9999'"))
            db.bump_data_version(conn)
        eng.dispose()


def test_crs_and_axis_order(client, features_db):
    from pyproj import Transformer

    hv = H(features_db, "viewer")  # enterprises are identities: a viewer key (issue 12)

    path = f"/collections/enterprises/items/{KNOWN_USCC}"
    r = client.get(path, headers=hv)
    assert r.json()["geometry"]["coordinates"] == [120.1, 30.2]
    assert r.headers["content-crs"] == "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"
    for code in (4326, 4490):
        r = client.get(f"{path}?crs=http://www.opengis.net/def/crs/EPSG/0/{code}", headers=hv)
        assert r.json()["geometry"]["coordinates"] == [30.2, 120.1]  # lat, lon
        assert r.headers["content-crs"] == f"<http://www.opengis.net/def/crs/EPSG/0/{code}>"
    north, east = Transformer.from_crs(4490, 4549).transform(30.2, 120.1)  # EPSG order: northing, easting
    assert 3_300_000 < north < 3_400_000 and 500_000 < east < 520_000
    r = client.get(f"{path}?crs=http://www.opengis.net/def/crs/EPSG/0/4549", headers=hv)
    assert r.json()["geometry"]["coordinates"] == pytest.approx([north, east], abs=0.002)
    items = client.get("/collections/enterprises/items?limit=1&crs=http://www.opengis.net/def/crs/EPSG/0/4549", headers=hv)
    assert items.headers["content-crs"] == "<http://www.opengis.net/def/crs/EPSG/0/4549>"
    # bbox in each CRS's axis order finds exactly the known point
    boxes = {
        None: "120.09999,30.19999,120.10001,30.20001",
        "http://www.opengis.net/def/crs/EPSG/0/4326": "30.19999,120.09999,30.20001,120.10001",
        "http://www.opengis.net/def/crs/EPSG/0/4549": f"{north - 1},{east - 1},{north + 1},{east + 1}",
    }
    for bcrs, box in boxes.items():
        url = f"/collections/enterprises/items?bbox={box}" + (f"&bbox-crs={bcrs}" if bcrs else "")
        page = client.get(url, headers=hv).json()
        assert [f["id"] for f in page["features"]] == [KNOWN_USCC], bcrs
    # zone-numbered GK (EPSG:4528 = zone 40, CM 120E): easting carries the zone prefix
    r = client.get(f"{path}?crs=http://www.opengis.net/def/crs/EPSG/0/4528", headers=hv)
    assert r.json()["geometry"]["coordinates"][1] == pytest.approx(40_000_000 + east, abs=0.002)


def _count(client, query: str, headers=None, coll="parcels") -> int:
    r = client.get(f"/collections/{coll}/items?limit=1&{query}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["numberMatched"]


def test_cql2_text_and_json(client, features_db):
    url, run = features_db["url"], features_db["runs"][2024]
    base = ("SELECT count(*) FROM parcels p LEFT JOIN parcel_ratings r ON r.identity_code = p.identity_code "
            "AND r.run_id = :run WHERE ")

    def expect(where: str) -> int:
        return db_scalar(url, base + where, run=run)

    from urllib.parse import quote as q
    cases = {
        "grade = 'A'": "r.grade = 'A'",
        "grade IN ('A','D') AND area_mu > 3": "r.grade IN ('A','D') AND p.area_mu > 3",
        "grade NOT IN ('A')": "r.grade <> 'A'",
        "parcel_code LIKE '3301020001%'": "p.parcel_code LIKE '3301020001%'",
        "grade IS NULL": "r.grade IS NULL",
        "parcel_code IS NOT NULL AND NOT (township = '城东街道')": "p.parcel_code IS NOT NULL AND p.township <> '城东街道'",
        "area_mu BETWEEN 3 AND 4 OR idle = TRUE": "round(p.area_mu::numeric, 3) BETWEEN 3 AND 4 OR r.idle",
        "CASEI(kind) = casei('DEFACTO')": "p.kind = 'defacto'",
        "S_INTERSECTS(geometry, BBOX(120.095, 30.195, 120.0975, 30.1975))":
            "ST_Intersects(p.geom, ST_MakeEnvelope(120.095, 30.195, 120.0975, 30.1975, 4490))",
        "S_INTERSECTS(geometry, POLYGON((120.095 30.195, 120.1 30.195, 120.1 30.2, 120.095 30.195)))":
            "ST_Intersects(p.geom, ST_GeomFromText('POLYGON((120.095 30.195, 120.1 30.195, 120.1 30.2, 120.095 30.195))', 4490))",
        "S_INTERSECTS(geometry, POINT(120.09525 30.19525)) AND grade = 'A'": "p.identity_code = 'ZD0000'",
    }
    for text, where in cases.items():
        n = expect(where)
        assert _count(client, f"filter={q(text)}") == n, text
        assert n > 0, text
    # filter-crs: the same polygon in EPSG:4326 lat/lon order
    assert _count(client, "filter-crs=http://www.opengis.net/def/crs/EPSG/0/4326&filter="
                  + q("S_INTERSECTS(geometry, BBOX(30.195, 120.095, 30.1975, 120.0975))")) == \
        expect("ST_Intersects(p.geom, ST_MakeEnvelope(120.095, 30.195, 120.0975, 30.1975, 4490))")
    doc = {"op": "and", "args": [
        {"op": "in", "args": [{"property": "grade"}, ["B", "C"]]},
        {"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": [120.095, 30.195, 120.1, 30.2]}]},
        {"op": "not", "args": [{"op": "like", "args": [{"property": "township"}, "城西%"]}]},
        {"op": ">=", "args": [{"property": "area_mu"}, 3]},
    ]}
    assert _count(client, "filter-lang=cql2-json&filter=" + q(json.dumps(doc))) == expect(
        "r.grade IN ('B','C') AND ST_Intersects(p.geom, ST_MakeEnvelope(120.095, 30.195, 120.1, 30.2, 4490)) "
        "AND p.township NOT LIKE '城西%' AND p.area_mu >= 3")
    # combined with simple equality parameters and bbox
    assert _count(client, "grade=A,B&township=" + q("新区镇") + "&bbox=120.095,30.195,120.105,30.2&filter="
                  + q("area_mu > 0")) == expect(
        "r.grade IN ('A','B') AND p.township = '新区镇' AND "
        "ST_Intersects(p.geom, ST_MakeEnvelope(120.095, 30.195, 120.105, 30.2, 4490))")
    # an injection attempt is only a value
    assert _count(client, "filter=" + q("grade = 'A'' OR 1=1 --'")) == 0
    # the 2023 run grades differently
    assert _count(client, "year=2023&grade=A") == db_scalar(
        url, "SELECT count(*) FROM parcel_ratings WHERE run_id = :r AND grade = 'A'", r=features_db["runs"][2023])
    assert _count(client, f"run={features_db['runs'][2023]}&grade=A") == _count(client, "year=2023&grade=A")


def test_cql2_nesting_size_and_bad_numbers_are_400(client, features_db):
    """Issue 14: what a filter builder sends (long OR lists, deep nesting) works or is a 400 that says
    why — never a 500; a number beyond float range is a 400 naming it."""
    from urllib.parse import quote as q
    url, run = features_db["url"], features_db["runs"][2024]
    codes = [f"ZD{n:04d}" for n in range(0, 400, 3)]  # 134 alternatives
    # 134 nested ORs, parenthesised as a builder writes them: one flat list after parsing → works
    nested = f"identity_code = '{codes[0]}'"
    for c in codes[1:]:
        nested = f"(identity_code = '{c}' OR {nested})"
    assert _count(client, "filter=" + q(nested)) == len(codes)
    flat = " OR ".join(f"identity_code = '{c}'" for c in codes)
    assert _count(client, "filter=" + q(flat)) == len(codes)
    doc = {"op": "=", "args": [{"property": "identity_code"}, codes[0]]}
    for c in codes[1:]:
        doc = {"op": "or", "args": [{"op": "=", "args": [{"property": "identity_code"}, c]}, doc]}
    assert _count(client, "filter-lang=cql2-json&filter=" + q(json.dumps(doc))) == len(codes)
    # nesting of different operators beyond the stated limit: 400 naming the limit
    deep = "grade = 'A'"
    for _ in range(123):
        deep = f"NOT ({deep})"
    r = client.get("/collections/parcels/items?filter=" + q(deep))
    assert r.status_code == 400 and "more than 40 deep (the limit)" in r.json()["description"], r.text
    doc = {"op": "=", "args": [{"property": "grade"}, "A"]}
    for _ in range(400):
        doc = {"op": "not", "args": [doc]}
    r = client.get("/collections/parcels/items?filter-lang=cql2-json&filter=" + q(json.dumps(doc)))
    assert r.status_code == 400 and "more than 40 deep (the limit)" in r.json()["description"], r.text
    # 40 alternating levels are within the limit and answer
    ok = "grade = 'A'"
    for i in range(19):
        ok = f"NOT ({ok} AND area_mu > {i})" if i % 2 else f"({ok} OR grade = 'B')"
    assert client.get("/collections/parcels/items?limit=1&filter=" + q(ok)).status_code == 200
    # size limit
    r = client.get("/collections/parcels/items?filter=" + q("grade = '" + "A" * 20_000 + "'"))
    assert r.status_code == 400 and "the limit is 20000" in r.json()["description"]
    # numbers beyond float range: geometry literal, comparison, BBOX, CQL2-JSON
    for text in ("S_INTERSECTS(geometry, POINT(1e400 30))", "area_mu > 1e400",
                 "S_INTERSECTS(geometry, BBOX(1e400, 30, 121, 31))",
                 "S_INTERSECTS(geometry, POLYGON((120 30, 1e400 30, 121 31, 120 30)))"):
        r = client.get("/collections/parcels/items?filter=" + q(text))
        assert r.status_code == 400, (text, r.text)
        assert "not finite" in r.json()["description"] or "finite" in r.json()["description"], (text, r.text)
    r = client.get("/collections/parcels/items?filter-lang=cql2-json&filter="
                   + q('{"op":"s_intersects","args":[{"property":"geometry"},{"type":"Point","coordinates":[1e400,30]}]}'))
    assert r.status_code == 400, r.text
    # syntax errors name the position and what was expected
    r = client.get("/collections/parcels/items?filter=" + q("grade = 'A' AND > 1"))
    assert r.status_code == 400
    assert r.json()["description"].startswith("filter (cql2-text): unexpected '>'; expected ")
    assert "at character 17" in r.json()["description"]
    # CQL2 1.0 rules pygeofilter's grammar missed, corrected: '' in strings, NOT (…AND…),
    # lower-case WKT keywords, three-argument between in JSON
    base = ("SELECT count(*) FROM parcels p LEFT JOIN parcel_ratings r ON r.identity_code = p.identity_code "
            "AND r.run_id = :run WHERE ")
    assert _count(client, "filter=" + q("NOT (grade = 'A' AND area_mu > 3)")) == db_scalar(
        url, base + "NOT (r.grade = 'A' AND p.area_mu > 3)", run=run)
    assert _count(client, "filter=" + q("s_intersects(geometry, point(120.09525 30.19525))")) == 1
    assert _count(client, "filter-lang=cql2-json&filter=" + q(json.dumps(
        {"op": "between", "args": [{"property": "area_mu"}, 3, 4]}))) == db_scalar(
        url, base + "p.area_mu BETWEEN 3 AND 4", run=run)
    # a GEOMETRYCOLLECTION literal (spatial-functions) and S_WITHIN / S_DISJOINT
    assert _count(client, "filter=" + q("S_INTERSECTS(geometry, GEOMETRYCOLLECTION(POINT(120.09525 30.19525), "
                                        "POINT(120.09575 30.19525)))")) == 2
    assert _count(client, "filter=" + q("S_WITHIN(geometry, BBOX(120.095, 30.195, 120.0960, 30.1960))")) == 4
    assert _count(client, "filter=" + q("S_DISJOINT(geometry, BBOX(120.095, 30.195, 120.0960, 30.1960))")) == 400 - 4


def test_cql2_conformance_classes_are_the_implemented_ones(client):
    """/conformance lists no CQL2 class the parser cannot do in full: arithmetic (%, div, ^),
    temporal, array and accent-insensitive classes are not listed, and their operators are 400s."""
    from urllib.parse import quote as q
    conf = set(client.get("/conformance").json()["conformsTo"])
    for cls in ("arithmetic", "temporal-functions", "array-functions", "accent-insensitive-comparison",
                "property-property", "functions"):
        assert f"http://www.opengis.net/spec/cql2/1.0/conf/{cls}" not in conf
    for text in ("T_AFTER(idle, TIMESTAMP('2020-01-01T00:00:00Z'))", "ACCENTI(township) = 'x'", "area_mu % 2 = 0"):
        assert client.get("/collections/parcels/items?filter=" + q(text)).status_code == 400, text


def test_properties_selection(client):
    f = client.get("/collections/parcels/items?limit=1&properties=grade,area_mu").json()["features"][0]
    assert list(f["properties"]) == ["grade", "area_mu"] and isinstance(f["properties"]["area_mu"], float)
    f = client.get("/collections/parcels/items?limit=1&properties=").json()["features"][0]
    assert f["properties"] == {} and f["id"] == "ZD0000"


ERRORS = [
    ("/collections/parcels/items?limit=151", 400,
     "limit must be an integer between 1 and 150 (got '151')"),
    ("/collections/parcels/items?limit=0", 400, "limit must be an integer between 1 and 150 (got '0')"),
    ("/collections/parcels/items?limit=abc", 400, "limit must be an integer between 1 and 150 (got 'abc')"),
    ("/collections/parcels/items?year=later", 400, "year must be an integer between 1900 and 2200 (got 'later')"),
    ("/collections/nope/items", 404, "no collection 'nope'; collections: parcels, enterprises, sublots, defacto"),
    ("/collections/parcels/items?filter=grade%20%3D%20", 400,
     "filter (cql2-text): the filter ends too early; expected a property, a value, a function or '(' "
     "(at the end of the filter)"),
    ("/collections/parcels/items?filter=grade%20%3D%20'A'%20AND%20(area_mu%20%3E%203", 400,
     "filter (cql2-text): the filter ends too early; expected 'AND', 'OR', ')' (at the end of the filter)"),
    ("/collections/parcels/items?filter=grade%20%3D%3D%201", 400,
     "filter (cql2-text): unexpected '='; expected a property, a value, a function or '(' "
     "(at character 8, near '= 1')"),
    ("/collections/parcels/items?filter=area_mu%20%3D%20'x'", 400,
     "filter: type mismatch: area_mu (number) = 'x' (string)"),
    ("/collections/parcels/items?filter=owner_name%20%3D%20'x'", 400,
     "filter: property 'owner_name' is not queryable in collection 'parcels'; queryables: geometry, identity_code, "
     "kind, parcel_code, township, area_mu, idle, grade, colour, industry_group"),
    ("/collections/parcels/items?bbox=1,2,3", 400, "bbox must be 4 numbers 'minx,miny,maxx,maxy' (got '1,2,3')"),
    ("/collections/parcels/items?bbox=121,30,120,31", 400,
     "bbox minimum exceeds maximum (got '121,30,120,31'; order is min1,min2,max1,max2)"),
    ("/collections/parcels/items?bbox=30,120,31,121", 400,
     "bbox '30,120,31,121' is outside the valid range for OGC:CRS84 (axis order lon,lat)"),
    ("/collections/parcels/items?sortby=nope", 400,
     "sortby: unknown property 'nope' in collection 'parcels'; available: identity_code, kind, parcel_code, "
     "township, land_use, area_m2, area_mu, idle, run_id, grade, colour, industry_group"),
    ("/collections/parcels/items?after=garbage", 400,
     "after: not a token from a 'next' link (start again from the first page)"),
    ("/collections/parcels/items?year=2019", 404, "no evaluation run for year=2019; runs: 1 (2023, published), "
     "2 (2024, published)"),
    ("/collections/parcels/items?area_mu=abc", 400, "area_mu='abc': expected a number"),
    ("/collections/parcels/items?filter-lang=cql2-json&filter=%7B", 400, None),
    ("/collections/parcels/items/NOPE", 404, "no feature 'NOPE' in collection 'parcels'"),
]


@pytest.mark.parametrize("url,status,message", ERRORS)
def test_errors_are_json_with_actionable_messages(client, url, status, message):
    r = client.get(url)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"type", "title", "status", "detail", "code", "description"}  # problem details
    assert body["status"] == status and body["title"] == body["code"] and body["detail"] == body["description"]
    if message:
        assert body["description"] == message


def test_bad_crs_and_unknown_parameter(client):
    r = client.get("/collections/parcels/items?crs=EPSG:3857")
    assert r.status_code == 400 and r.json()["description"].startswith("crs='EPSG:3857' is not supported; use ")
    r = client.get("/collections/parcels/items?colr=red")
    assert r.status_code == 400 and r.json()["description"].startswith("unknown query parameter 'colr'; allowed: ")


def _props_everywhere(client, headers, coll="parcels") -> set[str]:
    """Every property name a caller gets from items, one item, both exports and the schema."""
    names = set()
    page = client.get(f"/collections/{coll}/items?limit=5", headers=headers).json()
    for f in page["features"]:
        names |= set(f["properties"])
    fid = page["features"][0]["id"]
    names |= set(client.get(f"/collections/{coll}/items/{fid}", headers=headers).json()["properties"])
    for f in client.get(f"/collections/{coll}/export.geojson", headers=headers).json()["features"][:5]:
        names |= set(f["properties"])
    names |= set(client.get(f"/collections/{coll}/schema", headers=headers).json()["properties"]) - {"geometry"}
    return names


def test_roles_see_only_their_properties(client, features_db):
    public = _props_everywhere(client, None)
    assert "owner_name" not in public and "owner_uscc" not in public and "tax_per_mu" not in public
    r = client.get("/collections/enterprises/items?limit=5")
    assert r.status_code == 401 and "viewer" in r.json()["description"]  # identities need a key (issue 12)
    assert "collections/enterprises" not in client.get("/collections").text
    assert "score" not in _props_everywhere(client, H(features_db, "viewer"))  # a score is a figure
    viewer = _props_everywhere(client, H(features_db, "viewer"))
    assert "owner_name" in viewer and "tax_per_mu" not in viewer
    assert "electricity_surcharge_yuan" not in _props_everywhere(client, H(features_db, "viewer"), "enterprises")
    analyst = _props_everywhere(client, H(features_db, "analyst"))
    assert "tax_per_mu" in analyst
    # hidden properties are not filterable, sortable or selectable either
    for url in ("/collections/parcels/items?filter=tax_per_mu%3E1", "/collections/parcels/items?tax_per_mu=2",
                "/collections/parcels/items?sortby=tax_per_mu", "/collections/parcels/items?properties=tax_per_mu"):
        r = client.get(url, headers=H(features_db, "viewer"))
        assert r.status_code == 400 and "tax_per_mu" in r.json()["description"], url
    r = client.get("/collections/parcels/items?tax_per_mu=2", headers=H(features_db, "viewer"))
    assert r.json()["description"].startswith("'tax_per_mu' is not a queryable of collection 'parcels' for your role")
    assert _count(client, "filter=tax_per_mu%3E10", H(features_db, "analyst")) > 0
    # an unknown key is refused as JSON
    r = client.get("/collections/parcels/items", headers={"X-API-Key": "mj_nope"})
    assert r.status_code == 401 and r.json()["code"] == "Unauthorized"


def test_township_key_sees_only_its_township(client, features_db):
    h = H(features_db, "west")
    for coll, table, tcol in (("parcels", "parcels p", "p.township"), ("enterprises", "enterprises e", "e.township"),
                              ("sublots", "sublots s JOIN parcels p USING (identity_code)", "p.township")):
        own = db_scalar(features_db["url"], f"SELECT count(*) FROM {table} WHERE {tcol} = :t", t=TOWNSHIPS[1])
        assert own > 0
        feats, pages = all_pages(client, f"/collections/{coll}/items?limit=40", headers=h)
        assert pages[0]["numberMatched"] == own and len(feats) == own
        assert {f["properties"]["township"] for f in feats} == {TOWNSHIPS[1]}
        export = client.get(f"/collections/{coll}/export.geojson", headers=h).json()["features"]
        assert len(export) == own and {f["properties"]["township"] for f in export} == {TOWNSHIPS[1]}
    # another township's parcel does not exist for this key (ZD0000 is in 城东街道)
    assert client.get("/collections/parcels/items/ZD0000", headers=h).status_code == 404
    assert client.get("/collections/parcels/items/ZD0010", headers=h).status_code == 200
    # nor can a filter reach outside the scope
    assert _count(client, "township=" + "%E5%9F%8E%E4%B8%9C%E8%A1%97%E9%81%93", h) == 0
    # the extent is its township's
    bbox = client.get("/collections/parcels", headers=h).json()["extent"]["spatial"]["bbox"][0]
    assert bbox[0] > LON0 + 7 * CELL - 1e-6 and bbox[2] < LON0 + 14 * CELL + 1e-6


def test_exports_stream_whole_layer(client, features_db):
    import io

    import pyogrio

    h = H(features_db, "analyst")
    r = client.get("/collections/parcels/export.geojson", headers=h)
    assert r.headers["content-type"] == "application/geo+json"
    feats = r.json()["features"]
    assert len(feats) == 400 and len({f["id"] for f in feats}) == 400
    r2 = client.get("/collections/parcels/items.geojson?limit=all", headers=h)
    assert len(r2.json()["features"]) == 400
    # FlatGeobuf in several PostGIS chunks (37 rows each), NULLs in the middle of rows
    from fastapi.testclient import TestClient

    with TestClient(make_app(features_db["url"], features_fgb_chunk_rows=37)) as c:
        data = c.get("/collections/parcels/export.fgb", headers=h).content
        empty = c.get("/collections/parcels/export.fgb?grade=Z", headers=h)
    df = pyogrio.read_dataframe(io.BytesIO(data))
    assert len(df) == 400 and df["identity_code"].is_unique
    by_id = {f["properties"]["identity_code"]: f["properties"] for f in feats}
    for _, row in df.iterrows():  # every value equals the GeoJSON export's (NULLs included)
        want = by_id[row["identity_code"]]
        for k in ("parcel_code", "grade", "tax_per_mu", "rank", "owner_name", "idle", "low_yield_years"):
            got = row[k]
            if want[k] is None:
                assert got is None or got != got, (row["identity_code"], k)  # None or NaN
            else:
                assert got == want[k], (row["identity_code"], k, got, want[k])
    assert empty.status_code == 200 and len(pyogrio.read_dataframe(io.BytesIO(empty.content))) == 0


def test_gzip_streaming(client):
    plain = client.get("/collections/parcels/items?limit=150", headers={"Accept-Encoding": "identity"})
    gz = client.get("/collections/parcels/items?limit=150", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers and gz.headers["content-encoding"] == "gzip"
    a, b = plain.json(), gz.json()
    a.pop("timeStamp"), b.pop("timeStamp")
    assert a == b
    assert plain.headers["etag"] != gz.headers["etag"]


# ------------------------------------------------------------------------ HTML and CSV (issue 14)

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


def test_html_representations_and_json_default(client, features_db):
    """HTML by f=html or a browser's Accept; JSON for OGC clients' Accept headers and no header."""
    for path in ("/collections", "/collections/parcels", "/collections/parcels/items?limit=5"):
        for headers in ({}, {"Accept": "application/geo+json, application/json"}, {"Accept": "application/json"},
                        {"Accept": "*/*"}):
            r = client.get(path, headers=headers)
            assert r.status_code == 200 and "json" in r.headers["content-type"], (path, headers)
        for r in (client.get(path + ("&" if "?" in path else "?") + "f=html"),
                  client.get(path, headers={"Accept": BROWSER_ACCEPT})):
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
            assert 'href="http://testserver/map"' in r.text, path  # every page links to the map
    r = client.get("/?f=html")
    assert r.status_code == 200 and "/map" in r.text and "/collections" in r.text
    page = client.get("/collections/parcels/items?f=html&limit=5&sortby=identity_code").text
    assert page.count('<tr class="feature"') == 5
    assert "ZD0000" in page and "/map/parcel/ZD0000" in page and 'id="next-page"' in page
    assert "numberMatched" not in page and 'id="number-matched">400<' in page
    # hidden properties stay hidden in HTML too; a filter applies
    assert "tax_per_mu" not in page
    r = client.get("/collections/parcels/items?f=html&filter=grade%20%3D%20%27Z%27")
    assert r.status_code == 200 and '<tr class="feature"' not in r.text
    assert client.get("/collections/parcels/items?f=xml").status_code == 400


def test_items_csv_with_wkt_and_lonlat(client, features_db):
    import csv
    import io

    from shapely import wkt as swkt

    r = client.get("/collections/parcels/items?f=csv&limit=3&properties=identity_code,grade,area_mu")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "rel=\"next\"" in r.headers["link"] and "f=csv" in r.headers["link"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [row["id"] for row in rows] == ["ZD0000", "ZD0001", "ZD0002"]
    assert list(rows[0]) == ["id", "identity_code", "grade", "area_mu", "wkt"]
    g = swkt.loads(rows[0]["wkt"])
    assert g.geom_type == "MultiPolygon" and g.bounds[0] == pytest.approx(120.09502, abs=1e-6)
    # points get lon/lat columns (enterprises need a viewer key); the known enterprise at 120.1 30.2
    r = client.get(f"/collections/enterprises/items?f=csv&filter=uscc%20%3D%20%27{KNOWN_USCC}%27",
                   headers=H(features_db, "viewer"))
    row = next(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert float(row["lon"]) == pytest.approx(120.1) and float(row["lat"]) == pytest.approx(30.2)
    assert row["wkt"].startswith("POINT")
    # Accept: text/csv works too; hidden properties are not columns
    r = client.get("/collections/parcels/items?limit=1", headers={"Accept": "text/csv"})
    assert r.headers["content-type"].startswith("text/csv") and "tax_per_mu" not in r.text


@pytest.mark.parametrize("doc", [
    {"op": "in", "args": [{"property": "grade"}, "AB"]},
    {"op": "=", "args": [{"property": "grade"}]},
    {"op": "between", "args": [{"property": "area_mu"}, [1]]},
    {"op": "like", "args": [{"property": "grade"}, {"property": "kind"}]},
    {"op": "s_intersects", "args": [{"property": "geometry"}, {"type": "Point", "coordinates": [1]}]},
    {"op": "s_intersects", "args": [{"property": "geometry"}, {"type": "Polygon", "coordinates": "x"}]},
    {"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": [1, 2, 3]}]},
    {"op": "=", "args": [{"property": "area_mu"}, {"date": "garbage"}]},
    {"op": "t_after", "args": [{"property": "area_mu"}, {"timestamp": "2020-01-01T00:00:00Z"}]},
    {"op": "nope", "args": []}, 5, [1, 2], "grade",
])
def test_malformed_cql2_json_is_400(client, doc):
    from urllib.parse import quote as q
    r = client.get("/collections/parcels/items?filter-lang=cql2-json&filter=" + q(json.dumps(doc)))
    assert r.status_code == 400, (doc, r.text)
    assert r.json()["detail"].startswith("filter")
