"""Load mujun's OGC API Features in real QGIS (headless) and print what it saw, as JSON.

Run by ``tests/test_features_qgis.py`` with Debian's ``/usr/bin/python3`` (python3-qgis), not
the project venv::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_load.py http://127.0.0.1:8000 parcels \
        [--key KEY] [--geojson-url URL] [--style-url URL] [--ogr-url URL]

For the collection through the ``OAPIF`` provider (QGIS's own client: it reads the landing page,
``/api`` for the page size, the collection, then pages through ``items`` by ``next`` links) and
for the plain GeoJSON URL through the ``ogr`` provider: validity, featureCount, the features
actually iterated (count, distinct ids), and field names → QVariant type names. ``--style-url``
is the hook for the served QML style (the styles helper's part): it is loaded and applied, and
the result reported, when given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import QgsApplication, QgsVectorLayer  # noqa: E402


def describe(layer: QgsVectorLayer, id_field: str | None) -> dict:
    out = {"valid": layer.isValid()}
    if not layer.isValid():
        out["error"] = layer.error().summary() if layer.error() else ""
        return out
    out["provider"] = layer.providerType()
    out["feature_count"] = int(layer.featureCount())
    out["fields"] = {f.name(): f.typeName() for f in layer.fields()}
    out["field_types"] = {f.name(): int(f.type()) for f in layer.fields()}
    out["crs"] = layer.crs().authid()
    ext = layer.extent()
    out["extent"] = [ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum()]
    n = 0
    ids = set()
    with_geom = 0
    idx = layer.fields().indexOf(id_field) if id_field else -1
    first = None
    for f in layer.getFeatures():
        n += 1
        if f.hasGeometry() and not f.geometry().isEmpty():
            with_geom += 1
        if idx >= 0:
            ids.add(f.attribute(idx))
        if first is None:
            first = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                     for k, v in zip(layer.fields().names(), f.attributes())}
    out["iterated"] = n
    out["distinct_ids"] = len(ids)
    out["with_geometry"] = with_geom
    out["first"] = first
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("collection")
    ap.add_argument("--key", default=None)
    ap.add_argument("--id-field", default="identity_code")
    ap.add_argument("--geojson-url", default=None)
    ap.add_argument("--style-url", default=None)
    ap.add_argument("--ogr-url", default=None, help="any URL/path for the ogr provider (e.g. a FlatGeobuf "
                    "export by its plain http URL); reported as 'ogr', with the seconds it took")
    ap.add_argument("--only-ogr", action="store_true", help="skip the OAPIF layer")
    ap.add_argument("--subset", default=None, help="a subset string (CQL2 text) for the OAPIF layer")
    a = ap.parse_args()

    app = QgsApplication([], False)
    app.initQgis()
    result = {}
    try:
        base = a.url.rstrip("/")
        if a.key:
            base += f"?api_key={a.key}"  # QGIS appends the URL's query to every request it makes
        if a.ogr_url:
            t0 = time.perf_counter()
            o = QgsVectorLayer(a.ogr_url, a.collection + "_ogr", "ogr")
            result["ogr"] = describe(o, a.id_field)
            result["ogr"]["seconds"] = round(time.perf_counter() - t0, 3)
        if not a.only_ogr:
            uri = f"url='{base}' typename='{a.collection}'"
            lyr = QgsVectorLayer(uri, a.collection, "OAPIF")
            if a.subset:
                result["subset_set"] = bool(lyr.setSubsetString(a.subset))
            result["oapif"] = describe(lyr, a.id_field)
            if a.style_url and lyr.isValid():
                with urllib.request.urlopen(a.style_url) as r, tempfile.NamedTemporaryFile("wb", suffix=".qml", delete=False) as f:
                    f.write(r.read())
                msg, ok = lyr.loadNamedStyle(f.name)
                r = lyr.renderer()
                result["style"] = {"ok": bool(ok), "message": msg, "renderer": r.type() if r else None,
                                   "field": r.classAttribute() if hasattr(r, "classAttribute") else None,
                                   "categories": {str(c.value()): c.symbol().color().name()
                                                  for c in r.categories()} if hasattr(r, "categories") else {}}
            if a.geojson_url:
                g = QgsVectorLayer(a.geojson_url, a.collection + "_geojson", "ogr")
                result["geojson"] = describe(g, a.id_field)
    finally:
        print(json.dumps(result, ensure_ascii=False))
        sys.stdout.flush()
        sys.stderr.flush()
    # QGIS 3.22 can crash in exitQgis() while provider threads still hold layers; the results are
    # printed, so leave without the C++ teardown.
    os._exit(0)


if __name__ == "__main__":
    main()
