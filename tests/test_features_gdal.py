"""GDAL reads mujun's OGC API Features as a real client: ``ogrinfo``/``ogr2ogr`` with the OAPIF
driver over a real uvicorn server on loopback, every collection completely across pages; the
plain GeoJSON export through the GeoJSON driver; the FlatGeobuf export through its driver.

The server pages at most 150 features (``max_limit``) and GDAL is told ``PAGE_SIZE=37``, so every
collection takes several pages and GDAL must follow the ``next`` links to the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_features import TOWNSHIPS, db_scalar, serve  # noqa: E402
from test_features import features_db  # noqa: E402,F401  (the seeded database)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ogrinfo") is None or shutil.which("ogr2ogr") is None,
                       reason="GDAL NOT INSTALLED: ogrinfo/ogr2ogr missing (apt-get install gdal-bin; "
                              "scripts/bootstrap.sh --test does it) — the real-client GDAL tests did NOT run"),
]

COUNTS = {
    "parcels": "SELECT count(*) FROM parcels",
    "enterprises": "SELECT count(*) FROM enterprises WHERE geom IS NOT NULL",
    "sublots": "SELECT count(*) FROM sublots",
    "defacto": "SELECT count(*) FROM parcels WHERE kind <> 'registered'",
}


@pytest.fixture(scope="module")
def server(features_db):  # noqa: F811
    with serve(features_db["url"], features_fgb_chunk_rows=37) as url:
        yield url


def run(*args: str) -> str:
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{' '.join(args)}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_ogrinfo_summary_counts_and_types(server, features_db):  # noqa: F811
    # enterprises and sub-lots are identities: listed only with a viewer key (issue 12)
    anonymous = run("ogrinfo", "-ro", "-so", f"OAPIF:{server}")
    assert "parcels" in anonymous and "enterprises" not in anonymous and "sublots" not in anonymous
    out = run("ogrinfo", "-ro", "-al", "-so", f"OAPIF:{server}/?api_key={features_db['keys']['viewer']}")
    for coll, sql in COUNTS.items():
        assert f"Layer name: {coll}" in out
        block = out.split(f"Layer name: {coll}")[1].split("Layer name:")[0]
        assert f"Feature Count: {db_scalar(features_db['url'], sql)}" in block, coll
    parcels = out.split("Layer name: parcels")[1].split("Layer name:")[0]
    assert "area_mu: Real" in parcels and "run_id: Integer" in parcels and "grade: String" in parcels


@pytest.mark.parametrize("coll", list(COUNTS))
def test_ogr2ogr_reads_every_feature_across_pages(server, features_db, coll, tmp_path):  # noqa: F811
    out = tmp_path / f"{coll}.geojson"
    run("ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{server}/?api_key={features_db['keys']['viewer']}", coll,
        "-oo", "PAGE_SIZE=37")
    feats = json.loads(out.read_text())["features"]
    ids = [f["properties"]["id"] for f in feats]
    expected = db_scalar(features_db["url"], COUNTS[coll])
    assert len(ids) == expected and len(set(ids)) == expected
    assert all(f["geometry"] for f in feats)


def test_township_key_through_gdal(server, features_db, tmp_path):  # noqa: F811
    out = tmp_path / "west.geojson"
    run("ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{server}/?api_key={features_db['keys']['west']}",
        "parcels", "-oo", "PAGE_SIZE=37")
    feats = json.loads(out.read_text())["features"]
    assert len(feats) == db_scalar(features_db["url"], "SELECT count(*) FROM parcels WHERE township = :t",
                                   t=TOWNSHIPS[1])
    assert {f["properties"]["township"] for f in feats} == {TOWNSHIPS[1]}
    assert "tax_per_mu" in feats[0]["properties"]  # an analyst key


def test_geojson_export_through_geojson_driver(server, features_db):  # noqa: F811
    for url in (f"{server}/collections/parcels/export.geojson", f"{server}/collections/parcels/items.geojson?limit=all"):
        out = run("ogrinfo", "-ro", "-al", "-so", url)
        assert "using driver `GeoJSON'" in out
        assert f"Feature Count: {db_scalar(features_db['url'], COUNTS['parcels'])}" in out
        assert "Multi Polygon" in out


def test_flatgeobuf_export_through_flatgeobuf_driver(server, features_db, tmp_path):  # noqa: F811
    key = features_db["keys"]["analyst"]
    path = tmp_path / "parcels.fgb"
    with urllib.request.urlopen(f"{server}/collections/parcels/export.fgb?api_key={key}") as r:
        assert r.headers["Content-Type"] == "application/flatgeobuf"
        path.write_bytes(r.read())
    out = run("ogrinfo", "-ro", "-al", str(path))
    n = db_scalar(features_db["url"], COUNTS["parcels"])
    assert out.count("OGRFeature(") == n  # 11 PostGIS chunks of 37, read to the end without error
    assert "using driver `FlatGeobuf'" in out and "tax_per_mu (Real)" in out
    # streamed straight from the URL as well
    out = run("ogrinfo", "-ro", "-al", "-so", f"/vsicurl_streaming/{server}/collections/parcels/export.fgb")
    assert f"Feature Count: {n}" in out


@pytest.mark.parametrize("where,sql", [
    ("grade = 'A'", "r.grade = 'A'"),
    ("grade IN ('C','D') AND area_mu > 3", "r.grade IN ('C','D') AND p.area_mu > 3"),
    ("township = '城西街道' OR idle = 1", "p.township = '城西街道' OR r.idle"),
])
def test_ogr2ogr_reads_every_filtered_feature(server, features_db, where, sql, tmp_path):  # noqa: F811
    """ogr2ogr -where: every matching parcel across pages, and only those. (GDAL 3.6 evaluates -where
    itself: it pushes filters down only as the pre-standard 'cql-text' dialect, which is not CQL2.)"""
    out = tmp_path / "f.geojson"
    p = subprocess.run(["ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{server}", "parcels", "-where", where,
                        "-oo", "PAGE_SIZE=37"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    n = db_scalar(features_db["url"], "SELECT count(*) FROM parcels p LEFT JOIN parcel_ratings r ON "
                  "r.identity_code = p.identity_code AND r.run_id = :run WHERE " + sql,
                  run=features_db["runs"][2024])
    feats = json.loads(out.read_text())["features"]
    assert n > 0 and len(feats) == n and len({f["properties"]["identity_code"] for f in feats}) == n


_PUSHDOWN = """
import json, sys
import pyogrio
df = pyogrio.read_dataframe(sys.argv[1], layer="parcels", where=sys.argv[2], PAGE_SIZE="37")
print(json.dumps(sorted(df["identity_code"])))
"""


@pytest.mark.parametrize("where,sql", [
    ("grade = 'A' AND area_mu > 3", "r.grade = 'A' AND p.area_mu > 3"),
    ("township IN ('城西街道', '新区镇') OR parcel_code LIKE '33010200001%'",
     "p.township IN ('城西街道', '新区镇') OR p.parcel_code LIKE '33010200001%'"),
])
def test_current_gdal_reads_every_filtered_feature(server, features_db, where, sql):  # noqa: F811
    """A current GDAL (3.12, in the pyogrio wheel) with an attribute filter: every matching parcel
    across pages, and only those (it evaluates the filter itself, like Debian's 3.6)."""
    p = subprocess.run([sys.executable, "-c", _PUSHDOWN, f"OAPIF:{server}", where], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    want = db_scalar(features_db["url"], "SELECT array_agg(p.identity_code ORDER BY p.identity_code) FROM parcels p "
                     "LEFT JOIN parcel_ratings r ON r.identity_code = p.identity_code AND r.run_id = :run WHERE " + sql,
                     run=features_db["runs"][2024])
    assert got == list(want) and len(got) > 0
