"""Whole-layer exports from the pre-built file cache (app.cache): what GDAL's /vsicurl/ needs.

A real uvicorn server (GDAL reads over HTTP): ``HEAD`` answers with ``Content-Length`` and
``Accept-Ranges``, a ``Range`` request gets ``206`` with exactly those bytes, ``If-None-Match``
gets ``304``; ``ogrinfo /vsicurl/…/export.fgb`` reads every feature; the cached file is byte-
identical to the streamed export of the same rows; a data-version bump builds a new file and
deletes the old one; a township-scoped key gets its own file; a filtered export is streamed.
"""

from __future__ import annotations

import io
import subprocess

import httpx
import pyogrio
import pytest
import sqlalchemy as sa

from app.cache import exports_dir
from tests.test_features import TOWNSHIPS, H, db_scalar, serve
from tests.test_features import features_db  # noqa: F401  (the seeded database)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("exportcache")


@pytest.fixture(scope="module")
def server(features_db, cache_dir):  # noqa: F811
    with serve(features_db["url"], data_dir=cache_dir, features_fgb_chunk_rows=37) as url:
        yield url


def _ogr_count(url: str) -> tuple[int, str]:
    """Features ogrinfo reads through /vsicurl/ (every feature listed, not the header's count)."""
    p = subprocess.run(["ogrinfo", "-ro", "-al", "-q", f"/vsicurl/{url}"], capture_output=True, text=True,
                       timeout=120, env={"CPL_VSIL_CURL_CACHE_SIZE": "0", "GDAL_HTTP_MAX_RETRY": "0",
                                         "PATH": "/usr/bin:/bin"})
    return sum(1 for line in p.stdout.splitlines() if line.startswith("OGRFeature(")), p.stderr


def test_head_length_range_etag(server, features_db):  # noqa: F811
    url = f"{server}/collections/parcels/export.fgb"
    head = httpx.head(url)
    assert head.status_code == 200, head.text
    n = int(head.headers["content-length"])
    assert n > 1000 and head.headers["accept-ranges"] == "bytes"
    assert head.headers["content-type"] == "application/flatgeobuf" and head.content == b""
    full = httpx.get(url)
    assert full.status_code == 200 and len(full.content) == n
    part = httpx.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == full.content[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{n}"
    tail = httpx.get(url, headers={"Range": f"bytes={n - 10}-"})
    assert tail.status_code == 206 and tail.content == full.content[-10:]
    etag = full.headers["etag"]
    assert head.headers["etag"] == etag
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert len(pyogrio.read_dataframe(io.BytesIO(full.content))) == db_scalar(features_db["url"],
                                                                               "SELECT count(*) FROM parcels")


def test_gdal_vsicurl_reads_every_feature(server, features_db):  # noqa: F811
    n = db_scalar(features_db["url"], "SELECT count(*) FROM parcels")
    got, err = _ogr_count(f"{server}/collections/parcels/export.fgb")
    assert got == n, err[-2000:]
    # an analyst's key in the URL (GDAL cannot send headers): its own file, more fields
    key = features_db["keys"]["analyst"]
    info = subprocess.run(["ogrinfo", "-ro", "-so", "-al", f"/vsicurl/{server}/collections/parcels/export.fgb?api_key={key}"],
                          capture_output=True, text=True, timeout=120).stdout
    assert "tax_per_mu" in info and f"Feature Count: {n}" in info


def test_cached_file_equals_streamed_export(server, features_db):  # noqa: F811
    cached = httpx.get(f"{server}/collections/parcels/export.fgb")
    # a filter that keeps every row takes the streamed path: the same bytes
    streamed = httpx.get(f"{server}/collections/parcels/export.fgb", params={"bbox": "-180,-90,180,90"})
    assert "content-length" not in streamed.headers and streamed.headers.get("accept-ranges") is None
    assert streamed.content == cached.content
    # a filtered export is streamed and holds only its rows
    one = httpx.get(f"{server}/collections/parcels/export.fgb", params={"township": TOWNSHIPS[1]})
    assert "content-length" not in one.headers
    df = pyogrio.read_dataframe(io.BytesIO(one.content))
    assert set(df["township"]) == {TOWNSHIPS[1]}


def test_scope_classes_get_their_own_files(server, features_db):  # noqa: F811
    h = H(features_db, "west")
    own = db_scalar(features_db["url"], "SELECT count(*) FROM parcels WHERE township = :t", t=TOWNSHIPS[1])
    first = httpx.get(f"{server}/collections/parcels/export.fgb", headers=h)  # streamed, keeps a copy
    scoped = httpx.get(f"{server}/collections/parcels/export.fgb", headers=h)
    assert "content-length" in scoped.headers and scoped.content == first.content
    df = pyogrio.read_dataframe(io.BytesIO(scoped.content))
    assert len(df) == own and set(df["township"]) == {TOWNSHIPS[1]} and "tax_per_mu" in df.columns
    public = pyogrio.read_dataframe(io.BytesIO(httpx.get(f"{server}/collections/parcels/export.fgb").content))
    assert "tax_per_mu" not in public.columns and len(public) > own


def test_data_version_invalidates(server, features_db, cache_dir):  # noqa: F811
    url = f"{server}/collections/parcels/export.fgb"
    before = httpx.get(url)
    files = {p.name for p in exports_dir(cache_dir).iterdir()}
    eng = sa.create_engine(features_db["url"])
    with eng.begin() as conn:
        v = conn.execute(sa.text("UPDATE data_version SET version = version + 1 RETURNING version")).scalar()
        conn.execute(sa.text("UPDATE parcels SET township = township WHERE false"))
    eng.dispose()
    after = httpx.get(url, headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    # the first GET after the change was streamed (no wait for the file) and kept a copy
    assert "content-length" not in after.headers
    again = httpx.get(url)
    assert int(again.headers["content-length"]) == len(after.content) and again.content == after.content
    now = {p.name for p in exports_dir(cache_dir).iterdir()}
    assert all(name.startswith(f"v{v}-") for name in now), now  # the older versions' files are gone
    assert not (now & files)
    assert after.content == before.content  # the data itself did not change


def test_geopackage_export(server, features_db, tmp_path):  # noqa: F811
    n = db_scalar(features_db["url"], "SELECT count(*) FROM parcels")
    url = f"{server}/collections/parcels/export.gpkg"
    head = httpx.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) > 0
    assert head.headers["content-type"] == "application/geopackage+sqlite3"
    r = httpx.get(url)
    (tmp_path / "p.gpkg").write_bytes(r.content)
    df = pyogrio.read_dataframe(tmp_path / "p.gpkg")
    fgb = pyogrio.read_dataframe(io.BytesIO(httpx.get(f"{server}/collections/parcels/export.fgb").content))
    assert len(df) == n and list(df.columns) == list(fgb.columns)
    assert df.crs == fgb.crs and df["identity_code"].tolist() == fgb["identity_code"].tolist()
    got, err = _ogr_count(url)  # GDAL reads the GeoPackage over /vsicurl/ too (SQLite over ranges)
    assert got == n, err[-2000:]
    bad = httpx.get(url, params={"grade": "A"})
    assert bad.status_code == 400 and "export.fgb" in bad.json()["description"]
    links = httpx.get(f"{server}/collections/parcels").json()["links"]
    enclosures = {link["type"]: link["href"] for link in links if link["rel"] == "enclosure"}
    assert enclosures["application/flatgeobuf"].endswith("/collections/parcels/export.fgb")
    assert enclosures["application/geopackage+sqlite3"] == url
