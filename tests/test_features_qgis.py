"""QGIS loads mujun's OGC API Features as a real client (headless, Debian's python3-qgis).

``tests/qgis_load.py`` runs under ``/usr/bin/python3`` with ``QT_QPA_PLATFORM=offscreen`` against a
real uvicorn server: a ``QgsVectorLayer`` with the ``OAPIF`` provider (QGIS's own OGC API client,
paging through ``next`` links: the server's ``max_limit`` is 150, so QGIS needs 3 pages for the
400 parcels) must be valid, count and iterate every feature, and get the declared field types;
the plain GeoJSON export must load through the ``ogr`` provider the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_features import TOWNSHIPS, db_scalar, serve  # noqa: E402
from test_features import features_db  # noqa: E402,F401  (the seeded database)

HERE = Path(__file__).resolve().parent


def _qgis_available() -> tuple[bool, str]:
    try:
        p = subprocess.run(["/usr/bin/python3", "-c", "import qgis.core"], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return p.returncode == 0, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""


_OK, _WHY = _qgis_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _OK, reason="QGIS NOT INSTALLED — `/usr/bin/python3 -c 'import qgis.core'` failed "
                       f"({_WHY}); install python3-qgis (scripts/bootstrap.sh --test). The real-client QGIS "
                       "tests did NOT run."),
]

# QVariant type ids QGIS reports: String 10, Double 6, Int 2, LongLong 4, Bool 1
STRING, DOUBLE, INTS, BOOL = 10, 6, (2, 4), 1


def load(url: str, collection: str, *extra: str) -> dict:
    p = subprocess.run(["/usr/bin/python3", str(HERE / "qgis_load.py"), url, collection, *extra],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def server(features_db):  # noqa: F811
    with serve(features_db["url"]) as url:
        yield url


def _check_types(types: dict) -> None:
    assert types["identity_code"] == STRING and types["grade"] == STRING and types["township"] == STRING
    assert types["area_mu"] == DOUBLE and types["area_m2"] == DOUBLE
    assert types["run_id"] in INTS
    assert types["idle"] in (BOOL, *INTS)


def test_qgis_oapif_and_geojson(server, features_db):  # noqa: F811
    n = db_scalar(features_db["url"], "SELECT count(*) FROM parcels")
    res = load(server, "parcels", "--geojson-url", f"{server}/collections/parcels/export.geojson")
    o = res["oapif"]
    assert o["valid"], o
    assert o["provider"] == "OAPIF"
    assert o["feature_count"] == n  # numberMatched
    assert o["iterated"] == n and o["distinct_ids"] == n and o["with_geometry"] == n  # 3 pages of 150
    _check_types(o["field_types"])
    assert o["extent"] == pytest.approx([120.09502, 30.19502, 120.10498, 30.20498], abs=1e-6)
    g = res["geojson"]
    assert g["valid"] and g["provider"] == "ogr"
    assert g["feature_count"] == n and g["iterated"] == n and g["distinct_ids"] == n
    _check_types(g["field_types"])


def test_qgis_applies_the_served_qml_from_the_collection_links(server, features_db):  # noqa: F811
    """A QGIS user gets the tier colours in one click: the collection links its QML."""
    import httpx

    links = httpx.get(f"{server}/collections/parcels").json()["links"]
    qml = [link["href"] for link in links if link["type"] == "application/vnd.qgis.qml"]
    assert len(qml) == 1
    style = httpx.get(f"{server}/styles/parcels").json()
    res = load(server, "parcels", "--style-url", qml[0])
    st = res["style"]
    assert st["ok"], st
    assert st["renderer"] == "categorizedSymbol" and st["field"] == "grade"
    colours = {c["grade"]: c["colour"] for c in style["classification"]["classes"]}
    assert set(colours) >= {"A", "B", "C", "D"}
    for grade, hex_colour in colours.items():
        assert st["categories"][grade].lower() == hex_colour.lower()


def test_qgis_township_key(server, features_db):  # noqa: F811
    own = db_scalar(features_db["url"], "SELECT count(*) FROM parcels WHERE township = :t", t=TOWNSHIPS[1])
    o = load(server, "parcels", "--key", features_db["keys"]["west"])["oapif"]
    assert o["valid"] and o["feature_count"] == own and o["iterated"] == own
    assert "tax_per_mu" in o["fields"] and o["field_types"]["tax_per_mu"] == DOUBLE
    assert o["first"]["township"] == TOWNSHIPS[1]


@pytest.mark.parametrize("route", ["plain", "vsicurl"])
def test_qgis_opens_the_flatgeobuf_export_by_plain_url(features_db, tmp_path, route):  # noqa: F811
    """QGIS's ogr provider on the export's URL — as typed into *Add Vector Layer → Protocol* or
    ``QgsVectorLayer(url, name, "ogr")`` — reads every feature with its field types. (Streamed
    without a length, the plain /vsicurl/ route saw a 0-byte file and crashed QGIS 3.22.)"""
    n = db_scalar(features_db["url"], "SELECT count(*) FROM parcels")
    with serve(features_db["url"], data_dir=tmp_path) as url:
        fgb = f"{url}/collections/parcels/export.fgb"
        res = load(url, "parcels", "--only-ogr", "--ogr-url", fgb if route == "plain" else f"/vsicurl/{fgb}")
    o = res["ogr"]
    assert o["valid"], o
    assert o["provider"] == "ogr"
    assert o["feature_count"] == n and o["iterated"] == n and o["distinct_ids"] == n and o["with_geometry"] == n
    _check_types(o["field_types"])


@pytest.mark.parametrize("subset,where", [
    ("grade = 'A'", "r.grade = 'A'"),
    ("grade IN ('C','D') AND area_mu > 3", "r.grade IN ('C','D') AND p.area_mu > 3"),
    ("township = '城西街道' OR grade = 'A'", "p.township = '城西街道' OR r.grade = 'A'"),
])
def test_qgis_reads_every_filtered_feature(server, features_db, subset, where):  # noqa: F811
    """A subset string on the OAPIF layer: every matching parcel, across pages, and only those."""
    n = db_scalar(features_db["url"], "SELECT count(*) FROM parcels p LEFT JOIN parcel_ratings r ON "
                  "r.identity_code = p.identity_code AND r.run_id = :run WHERE " + where,
                  run=features_db["runs"][2024])
    assert n > 0
    res = load(server, "parcels", "--subset", subset)
    o = res["oapif"]
    assert res["subset_set"] and o["valid"], res
    assert o["iterated"] == n and o["distinct_ids"] == n, (subset, o["iterated"], n)
