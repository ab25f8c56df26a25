"""GeoJSON rendered once (app.feature_cache): the same bytes as the dynamic path, never stale.

On the sample county (seed 42) imported, matched and evaluated on a real PostGIS, with a draft
year only reviewers see: two apps on the same database — ``feature_cache`` on and off — answer a
matrix of requests (page 1, a deep ``after`` page, bbox, gzip, ``f=json``, single items, exports,
every collection and visibility class incl. township keys and published links) with the same
bytes. A marker written into the cached rows then shows which of those requests the cache really
answered (and that filters, CRSs, sortby and older years did not). Invalidation by data version:
after a publish or a land change the next response is the new data, before and after the rebuild;
a rebuild after a small land change rewrites only the changed rows.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from app import db
from app.auth import create_key
from app.feature_cache import build_feature_cache
from tests.conftest import TEMPLATE, load_county
from tests.test_features import make_app

COLLECTIONS = ("parcels", "defacto", "enterprises", "sublots")
_STAMP = re.compile(rb'"timeStamp":"[^"]*"')
MARK = "\"_cached\":1,"


def _copy_ratings(conn, table: str, new: int, old: int) -> None:
    """Copy run ``old``'s ratings to run ``new`` (with ``new``'s year where ratings carry one)."""
    cols = [r[0] for r in conn.execute(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_name = :t AND table_schema = 'public' "
        "AND column_name NOT IN ('run_id', 'year')"), {"t": table})]
    has_year = conn.execute(sa.text("SELECT count(*) FROM information_schema.columns WHERE table_name = :t "
                                    "AND table_schema = 'public' AND column_name = 'year'"), {"t": table}).scalar()
    year = ", year" if has_year else ""
    year_value = ", (SELECT year FROM evaluation_runs WHERE id = :new)" if has_year else ""
    conn.execute(sa.text(f"INSERT INTO {table} (run_id, {', '.join(cols)}{year}) "
                         f"SELECT :new, {', '.join(cols)}{year_value} FROM {table} WHERE run_id = :old"),
                 {"new": new, "old": old})


@pytest.fixture(scope="module")
def county(_template, pg_admin_url, county_bundle, tmp_path_factory):
    """The sample county in its own database (this module writes to it), every year published,
    plus a draft of the next year (the analyst class's default run differs), and keys."""
    from app.settings import Settings

    name = f"mujun_fc_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    url = str(sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False))
    eng = sa.create_engine(url)
    settings = Settings(data_dir=tmp_path_factory.mktemp("fc_var"), database_url=url)
    years = load_county(eng, county_bundle, settings)
    with eng.begin() as conn:
        last = conn.execute(sa.text("SELECT max(id) FROM evaluation_runs")).scalar()
        draft = conn.execute(sa.text(
            "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "run_hash, status, scheme) SELECT year + 1, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "'fcdraft', 'draft', scheme FROM evaluation_runs WHERE id = :r RETURNING id"), {"r": last}).scalar()
        for table in ("parcel_ratings", "enterprise_ratings"):
            _copy_ratings(conn, table, draft, last)
        conn.execute(sa.text("UPDATE parcel_ratings SET grade = 'D' WHERE run_id = :r"), {"r": draft})
        db.bump_data_version(conn)
        towns = [r[0] for r in conn.execute(sa.text(
            "SELECT township FROM parcels WHERE township IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC"))]
        keys = {role: create_key(conn, role, role) for role in ("public", "viewer", "analyst", "admin")}
        keys["viewer@town"] = create_key(conn, "vt", "viewer", towns[0])
        keys["public@town"] = create_key(conn, "pt", "public", towns[1])
        ids = {c: [r[0] for r in conn.execute(sa.text(q))] for c, q in (
            ("parcels", "SELECT identity_code FROM parcels WHERE valid_to IS NULL ORDER BY identity_code LIMIT 3"),
            ("enterprises", "SELECT uscc FROM enterprises WHERE geom IS NOT NULL ORDER BY uscc DESC LIMIT 2"),
            ("sublots", "SELECT identity_code || '/' || uscc FROM sublots ORDER BY 1 LIMIT 2"))}
        other_town = conn.execute(sa.text("SELECT identity_code FROM parcels WHERE valid_to IS NULL "
                                          "AND township = :t LIMIT 1"), {"t": towns[1]}).scalar()
    eng.dispose()
    yield {"url": url, "years": years, "draft": draft, "keys": keys, "ids": ids, "towns": towns,
           "other_town": other_town}
    db._cached_engine.cache_clear()
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def apps(county):
    """Dynamic and cached apps, without and with published links (class ``public`` / ``link``)."""
    from fastapi.testclient import TestClient

    with TestClient(make_app(county["url"], feature_cache=False)) as dyn, \
            TestClient(make_app(county["url"])) as cached, \
            TestClient(make_app(county["url"], feature_cache=False, publish_links=True)) as dyn_links, \
            TestClient(make_app(county["url"], publish_links=True)) as cached_links:
        yield {False: (dyn, cached), True: (dyn_links, cached_links)}


def _engine(county):
    return sa.create_engine(county["url"])


def _build(county, **kw) -> list[dict]:
    eng = _engine(county)
    try:
        return build_feature_cache(eng, **kw)
    finally:
        eng.dispose()


def _sql(county, sql: str, **params):
    eng = _engine(county)
    try:
        with eng.begin() as conn:
            r = conn.execute(sa.text(sql), params)
            return r.all() if r.returns_rows else r.rowcount
    finally:
        eng.dispose()


def _headers(county, who: str | None, gzip: bool = False) -> dict:
    h = {"Accept-Encoding": "gzip" if gzip else "identity"}
    if who:
        h["X-API-Key"] = county["keys"][who]
    return h


def _same(dyn, cached, url: str, headers: dict) -> bytes:
    """Both apps answer ``url`` with the same status, bytes (but the clock) and headers."""
    a, b = dyn.get(url, headers=headers), cached.get(url, headers=headers)
    assert a.status_code == b.status_code, (url, a.text[:300], b.text[:300])
    assert _STAMP.sub(b"", a.content) == _STAMP.sub(b"", b.content), url
    for h in ("content-type", "content-crs", "ogc-numbermatched", "etag", "content-encoding", "vary"):
        assert a.headers.get(h) == b.headers.get(h), (url, h)
    return b.content


def _requests(county, client, collection: str, headers: dict) -> tuple[list[str], list[str]]:
    """(URLs the cache answers, URLs it must leave to the dynamic path) for one caller."""
    base = f"/collections/{collection}"
    first = client.get(f"{base}/items?limit=1", headers=headers)
    if first.status_code != 200:  # a collection this caller may not open: 401/403 from both
        return [f"{base}/items?limit=7"], []
    url, deep = f"{base}/items?limit=50", None
    for _ in range(3):  # follow next links: a deep keyset page
        page = client.get(url, headers=headers).json()
        nxt = [lk["href"] for lk in page["links"] if lk["rel"] == "next"]
        if not nxt:
            break
        url = deep = nxt[0].split("testserver", 1)[1]
    bbox = client.get(base, headers=headers).json().get("extent", {}).get("spatial", {}).get("bbox", [[0, 0, 0, 0]])[0]
    quarter = f"{bbox[0]},{bbox[1]},{(bbox[0] + bbox[2]) / 2},{(bbox[1] + bbox[3]) / 2}"
    cacheable = [f"{base}/items", f"{base}/items?limit=7&f=json", f"{base}/items?bbox={quarter}&limit=20",
                 f"{base}/items?bbox=0,0,1,1", f"{base}/items.geojson?limit=5",
                 f"{base}/export.geojson?bbox={quarter}",
                 f"{base}/items?crs=http://www.opengis.net/def/crs/OGC/1.3/CRS84&limit=3"]
    if collection in ("parcels", "sublots"):  # whole layers: the longest bodies
        cacheable += [f"{base}/export.geojson", f"{base}/items.geojson?limit=all"]
    if deep:
        cacheable.append(deep)
    ids = county["ids"].get(collection if collection != "defacto" else "parcels", [])
    cacheable += [f"{base}/items/{quote(i, safe='')}" for i in ids]
    cacheable.append(f"{base}/items/{quote(county['other_town'], safe='')}")
    dynamic = [f"{base}/items?limit=5&sortby=-area_mu" if collection != "enterprises" else
               f"{base}/items?limit=5&sortby=-township",
               f"{base}/items?limit=5&township={quote(county['towns'][0])}",
               f"{base}/items?limit=5&crs=http://www.opengis.net/def/crs/EPSG/0/4326",
               f"{base}/items?limit=5&year={county['years'][0]}",
               f"{base}/items?limit=5&offset=3",
               f"{base}/items?limit=5&properties=township",
               f"{base}/items?limit=5&f=csv",
               f"{base}/items?limit=5&filter=township%20IS%20NOT%20NULL"]
    return cacheable, dynamic


WHO = [(False, None), (False, "public"), (False, "viewer"), (False, "analyst"), (False, "admin"),
       (False, "viewer@town"), (False, "public@town"), (True, None), (True, "public@town")]


def test_cached_bytes_equal_dynamic_and_the_cache_answers(county, apps):
    built = _build(county, publish_links=False) + _build(county, publish_links=True)
    assert {(b["collection"], b["visibility"]) for b in built} == {
        ("parcels", "public"), ("parcels", "link"), ("parcels", "viewer"), ("parcels", "analyst"),
        ("defacto", "public"), ("defacto", "link"), ("defacto", "viewer"), ("defacto", "analyst"),
        ("enterprises", "link"), ("enterprises", "viewer"), ("enterprises", "analyst"),
        ("sublots", "link"), ("sublots", "viewer"), ("sublots", "analyst")}
    assert all(b["data_version"] is not None and b["features"] > 0 for b in built)
    analyst = {b["run_id"] for b in built if b["visibility"] == "analyst"}
    assert analyst == {county["draft"]} != {b["run_id"] for b in built if b["visibility"] == "viewer"}

    plan = []
    for links, who in WHO:
        dyn, cached = apps[links]
        for gzip in (False, True) if who in (None, "viewer@town") else (False,):
            h = _headers(county, who, gzip)
            for c in COLLECTIONS:
                cacheable, dynamic = _requests(county, dyn, c, h)
                for url in cacheable + dynamic:
                    _same(dyn, cached, url, h)
                plan.append((links, h, cacheable, dynamic))

    # Which path answered: a marker in every cached row shows in exactly the cacheable answers.
    _sql(county, "UPDATE feature_cache SET feature = replace(feature, '\"properties\":{', "
                 "'\"properties\":{' || :m)", m=MARK)
    for links, h, cacheable, dynamic in plan:
        cached = apps[links][1]
        for url in cacheable:
            r = cached.get(url, headers=h)
            if r.status_code == 200 and b'"features":[]' not in r.content and b'"id"' in r.content:
                assert MARK.encode() in r.content, url
        for url in dynamic:
            assert MARK.encode() not in cached.get(url, headers=h).content, url
    # A rebuild repairs exactly the rows that differ from a fresh rendering: all of them.
    again = _build(county, publish_links=False)
    assert all(b["written"] == b["features"] and b["deleted"] == 0 for b in again)
    links = _build(county, publish_links=True)  # viewer and analyst rows are right again: untouched
    assert all(b["written"] == (b["features"] if b["visibility"] == "link" else 0) for b in links)
    assert _sql(county, "SELECT count(*) FROM feature_cache WHERE strpos(feature, :m) > 0", m=MARK)[0][0] == 0


def test_deep_page_reads_a_range_of_the_cache(county, apps):
    """Deep pages: the statement is an index range read from the ``after`` key (EXPLAIN), no
    scan of the earlier rows."""
    _build(county, publish_links=False)
    from app.api import sql as fsql
    from app.api.layers import LAYERS
    from app.auth import Principal

    q = fsql.new_query(LAYERS["parcels"], Principal("public"), None)
    sql, params = fsql.cache_page_sql(q, "public", 0, 10, ["ZZZ"], False)
    plan = "\n".join(r[0] for r in _sql(county, "EXPLAIN (COSTS OFF) " + sql, **params))
    assert "feature_cache_pkey" in plan and "key > " in plan, plan


def _page(client, url: str, h: dict) -> bytes:
    r = client.get(url, headers=h)
    assert r.status_code == 200, r.text
    return _STAMP.sub(b"", r.content)


def test_publish_and_land_change_invalidate_and_rebuild_is_incremental(county, apps):
    from app.evaluation import publish_run

    dyn, cached = apps[False]
    _build(county, publish_links=False)
    h = _headers(county, "viewer")
    url = "/collections/parcels/items?limit=50"
    before = _page(cached, url, h)
    assert before == _page(dyn, url, h)

    # Land changes (what an import writes): 3 parcels get another land use; data version bumped.
    changed = [r[0] for r in _sql(county, "SELECT identity_code FROM parcels WHERE valid_to IS NULL "
                                          "ORDER BY identity_code LIMIT 3")]
    eng = _engine(county)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE parcels SET land_use = '仓储用地(测试)' WHERE identity_code = ANY(:ids) "
                             "AND valid_to IS NULL"), {"ids": changed})
        db.bump_data_version(conn)
    eng.dispose()
    stale = _page(cached, url, h)  # not rebuilt yet: the dynamic path answers, with the new land
    assert stale == _page(dyn, url, h) != before and "仓储用地(测试)".encode() in stale
    analysed = "SELECT coalesce(last_analyze, 'epoch') FROM pg_stat_user_tables WHERE relname = 'feature_cache'"
    analysed_before = _sql(county, analysed)[0][0]
    rebuilt = {(b["collection"], b["visibility"]): b for b in _build(county, publish_links=False)}
    assert {k: b["written"] for k, b in rebuilt.items() if b["written"]} == {
        ("parcels", "public"): 3, ("parcels", "viewer"): 3, ("parcels", "analyst"): 3}
    assert all(b["deleted"] == 0 for b in rebuilt.values())
    # a build that wrote rows leaves fresh statistics for the readers' plans (not autovacuum's, later)
    assert _sql(county, analysed)[0][0] > analysed_before
    _sql(county, "UPDATE feature_cache SET feature = replace(feature, '\"properties\":{', "
                 "'\"properties\":{' || :m) WHERE key = :k AND visibility = 'viewer'", m=MARK, k=changed[0])
    served = _page(cached, url, h)
    assert MARK.encode() in served  # the cache answers again, current ...
    assert served.replace(MARK.encode(), b"") == _page(dyn, url, h)  # ... with the new land

    # A publish: another run becomes the one shown; the marked rows are stale and not served.
    runs = _sql(county, "SELECT id FROM evaluation_runs WHERE status = 'published' ORDER BY year DESC, id DESC")
    newest_year = _sql(county, "SELECT year FROM evaluation_runs WHERE id = :r", r=runs[0][0])[0][0]
    eng = _engine(county)
    with eng.begin() as conn:  # a second run of the newest year, with other grades, as a draft
        new = conn.execute(sa.text(
            "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "run_hash, status, scheme) SELECT year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "'fcrepub', 'draft', scheme FROM evaluation_runs WHERE id = :r RETURNING id"), {"r": runs[0][0]}).scalar()
        _copy_ratings(conn, "parcel_ratings", new, runs[0][0])
        conn.execute(sa.text("UPDATE parcel_ratings SET grade = 'A', colour = 'green' WHERE run_id = :r"), {"r": new})
        db.bump_data_version(conn)
    publish_run(eng, new)
    eng.dispose()
    assert newest_year == _sql(county, "SELECT year FROM evaluation_runs WHERE id = :r", r=new)[0][0]
    after_publish = _page(cached, url, h)
    assert MARK.encode() not in after_publish
    assert after_publish == _page(dyn, url, h) and f'"run_id":{new},'.encode() in after_publish
    rebuilt = {(b["collection"], b["visibility"]): b for b in _build(county, publish_links=False)}
    assert rebuilt[("parcels", "viewer")]["run_id"] == new and rebuilt[("parcels", "viewer")]["written"] > 0
    _sql(county, "UPDATE feature_cache SET feature = replace(feature, '\"properties\":{', "
                 "'\"properties\":{' || :m) WHERE visibility = 'viewer'", m=MARK)
    served = _page(cached, url, h)
    assert MARK.encode() in served and served.replace(MARK.encode(), b"") == _page(dyn, url, h)
    _build(county, publish_links=False)
