"""Styles from one classification: MapLibre JSON, QGIS QML (loaded by real headless PyQGIS), SLD."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from app.api.classification import DEFAULT_COLOURS, from_scheme
from app.api.layers import LAYERS
from tests.test_tiles import client, county  # noqa: F401

SCHEME_HEX = {"A": "#00aa00", "B": "#0000aa", "C": "#ff8800", "D": "#cc0000"}  # seed_county's scheme
NS = {"sld": "http://www.opengis.net/sld", "se": "http://www.opengis.net/se", "ogc": "http://www.opengis.net/ogc"}
SYSTEM_PYTHON = "/usr/bin/python3"


def test_classification_default_and_scheme():
    d = from_scheme(None)
    assert d.grades == list(DEFAULT_COLOURS) and d.colour_of("A") == "#1a9850" and d.colour_of(None) == "#bdbdbd"
    five = from_scheme({"grades": ["A", "B", "C-", "C+", "D"],
                        "colours": {"A": {"name": "绿", "hex": "#1A9850"}, "C+": {"name": "橙", "hex": "#fdae61"}}})
    assert five.grades == ["A", "B", "C-", "C+", "D"]
    assert five.colour_of("A") == "#1a9850" and five.colour_of("C+") == "#fdae61"
    assert five.colour_of("D") == DEFAULT_COLOURS["D"][1]  # a grade without a colour falls back


def test_maplibre_style_uses_the_runs_colours(client, county):
    r = client.get("/styles/parcels/maplibre.json")
    assert r.status_code == 200
    s = r.json()
    assert s["version"] == 8
    (name, src), = s["sources"].items()
    assert src["type"] == "vector" and src["url"].endswith("/tiles/parcels.json")
    fill = next(layer for layer in s["layers"] if layer["type"] == "fill")
    assert fill["source"] == name and fill["source-layer"] == "parcels"
    match = fill["paint"]["fill-color"]
    assert match[0] == "match"
    pairs = dict(zip(match[2:-1:2], match[3:-1:2]))
    assert pairs == SCHEME_HEX and match[-1] == "#bdbdbd"
    pts = client.get("/styles/enterprises/maplibre.json", params={"year": 2023}).json()
    assert pts["layers"][0]["type"] == "circle" and pts["sources"]["mujun-enterprises"]["url"].endswith("?year=2023")
    keyed = client.get("/styles/parcels/maplibre.json", params={"api_key": county.keys["viewer"]}).json()
    assert "api_key=" in keyed["sources"]["mujun-parcels"]["url"]


def test_sld_has_one_rule_per_grade(client):
    r = client.get("/styles/parcels.sld")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.ogc.sld+xml")
    root = ET.fromstring(r.content)
    assert root.get("version") == "1.1.0"
    rules = root.findall(".//se:Rule", NS)
    assert [x.find("se:Name", NS).text for x in rules] == ["A", "B", "C", "D", "ungraded"]
    fills = [x.find(".//se:Fill/se:SvgParameter[@name='fill']", NS).text for x in rules]
    assert fills[:4] == list(SCHEME_HEX.values())
    assert rules[0].find(".//ogc:PropertyIsEqualTo/ogc:Literal", NS).text == "A"
    assert rules[-1].find("se:ElseFilter", NS) is not None
    pts = ET.fromstring(client.get("/styles/enterprises.sld").content)
    assert pts.find(".//se:PointSymbolizer", NS) is not None


def test_style_index_and_errors(client):
    idx = client.get("/styles").json()["styles"]
    assert {s["id"] for s in idx} == set(LAYERS)
    rels = {(link["rel"], link["type"]) for link in idx[0]["links"]}
    assert ("stylesheet", "application/vnd.qgis.qml") in rels
    meta = client.get("/styles/parcels").json()
    assert [c["colour"] for c in meta["classification"]["classes"]] == list(SCHEME_HEX.values())
    r = client.get("/styles/nosuch.qml")
    assert r.status_code == 404 and "parcels" in r.json()["description"]
    assert client.get("/styles/parcels.qml", params={"year": 1900}).status_code == 404


def _qgis_available() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    return None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1]


_QGIS_SCRIPT = r"""
import json, sys
from qgis.core import QgsApplication, QgsVectorLayer
QgsApplication.setPrefixPath("/usr", True)
app = QgsApplication([], False)
app.initQgis()
out = {}
for name, geom, qml, sld in json.loads(sys.argv[1]):
    layer = QgsVectorLayer(f"{geom}?crs=EPSG:4490&field=grade:string", name, "memory")
    msg, ok = layer.loadNamedStyle(qml)
    r = layer.renderer()
    res = {"ok": ok, "msg": msg, "type": r.type(),
           "categories": [(c.value(), c.symbol().color().name(), c.label()) for c in r.categories()]
                         if r.type() == "categorizedSymbol" else None}
    layer2 = QgsVectorLayer(f"{geom}?crs=EPSG:4490&field=grade:string", name, "memory")
    smsg, sok = layer2.loadSldStyle(sld)
    r2 = layer2.renderer()
    res |= {"sld_ok": sok, "sld_msg": smsg, "sld_type": r2.type(),
            "sld_rules": len(r2.rootRule().children()) if r2.type() == "RuleRenderer" else None}
    out[name] = res
print("RESULT" + json.dumps(out))
app.exitQgis()
"""


@pytest.mark.slow
def test_qgis_loads_the_served_qml_and_sld(client, tmp_path):
    reason = _qgis_available()
    if reason:
        pytest.skip(f"LOUD SKIP: headless PyQGIS is not usable ({reason}); install python3-qgis "
                    "(scripts/bootstrap.sh --test) to check the QML in real QGIS")
    jobs = []
    for layer_id, geom in (("parcels", "MultiPolygon"), ("enterprises", "Point")):
        qml, sld = tmp_path / f"{layer_id}.qml", tmp_path / f"{layer_id}.sld"
        qml.write_bytes(client.get(f"/styles/{layer_id}.qml").content)
        sld.write_bytes(client.get(f"/styles/{layer_id}.sld").content)
        jobs.append((layer_id, geom, str(qml), str(sld)))
    p = subprocess.run([SYSTEM_PYTHON, "-c", _QGIS_SCRIPT, json.dumps(jobs)], capture_output=True, text=True,
                       timeout=180, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line, p.stdout + p.stderr
    res = json.loads(line[len("RESULT"):])
    for layer_id in ("parcels", "enterprises"):
        r = res[layer_id]
        assert r["ok"], r["msg"]
        assert r["type"] == "categorizedSymbol"
        cats = r["categories"]
        assert len(cats) == 5  # A B C D + the catch-all for ungraded
        assert [c[0] for c in cats[:4]] == list(SCHEME_HEX)
        assert [c[1] for c in cats[:4]] == list(SCHEME_HEX.values())
        assert cats[4][0] in ("", None) and cats[4][1] == "#bdbdbd"
        assert r["sld_ok"], r["sld_msg"]
        assert r["sld_type"] == "RuleRenderer" and r["sld_rules"] == 5


# The validator is a test dependency in tests/browser/package.json (installed by bootstrap --test).
STYLE_VALIDATOR = Path(__file__).resolve().parent / "browser/node_modules/@maplibre/maplibre-gl-style-spec/dist/gl-style-validate.mjs"


@pytest.mark.slow
def test_maplibre_styles_pass_the_official_validator(client, tmp_path):
    node = subprocess.run(["bash", "-c", "command -v node"], capture_output=True, text=True).stdout.strip()
    if not node or not STYLE_VALIDATOR.exists():
        pytest.skip("LOUD SKIP: node or @maplibre/maplibre-gl-style-spec (tests/browser/node_modules) is missing; "
                    "run scripts/bootstrap.sh --test to validate the MapLibre styles")
    for layer_id in LAYERS:
        path = tmp_path / f"{layer_id}.json"
        path.write_bytes(client.get(f"/styles/{layer_id}/maplibre.json").content)
        p = subprocess.run([node, str(STYLE_VALIDATOR), str(path)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
