"""Render mujun's vector tiles of a layer in headless QGIS 3.22, whole extent, and print JSON.

Run with Debian's ``/usr/bin/python3`` (python3-qgis), not the project venv::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 bench/qgis_tiles.py http://127.0.0.1:8000 parcels [--size 1280x900]

The layer is QGIS's own vector tile provider on the server's XYZ URL (zoom 0–16, as TileJSON
says); the map is rendered once at the layer's extent (what a user sees on opening it) by a
sequential renderer job that waits for every tile. Prints ``{"tiles": {"valid", "seconds",
"painted_share"}}``: seconds from creating the layer to the finished image, and the share of
pixels painted (not the white background: the map is not blank).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (QgsApplication, QgsCoordinateReferenceSystem, QgsMapRendererSequentialJob,  # noqa: E402
                       QgsMapSettings, QgsRectangle, QgsVectorTileLayer)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("layer")
    ap.add_argument("--size", default="1280x900")
    ap.add_argument("--style", action="store_true", help="draw with the server's MapLibre style (tier colours)")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    app = QgsApplication([], False)
    app.initQgis()
    out = {}
    try:
        t0 = time.perf_counter()
        base = a.url.rstrip("/")
        uri = f"type=xyz&url={base}/tiles/{a.layer}/{{z}}/{{x}}/{{y}}.pbf&zmin=0&zmax=16"
        if a.style:  # what QGIS's connection dialog calls "Style URL"
            uri += f"&styleUrl={base}/styles/{a.layer}/maplibre.json"
        layer = QgsVectorTileLayer(uri, a.layer)
        out["valid"] = layer.isValid()
        if a.style and layer.isValid():
            res = layer.loadDefaultStyle()
            out["style"] = [str(v) for v in res] if isinstance(res, tuple) else str(res)
        if layer.isValid():
            # the data's extent (TileJSON bounds), in the map's EPSG:3857
            import urllib.request

            with urllib.request.urlopen(f"{base}/tiles/{a.layer}.json") as r:
                b = json.loads(r.read())["bounds"]
            from qgis.core import QgsCoordinateTransform, QgsProject

            tr = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"),
                                        QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance())
            ext = tr.transformBoundingBox(QgsRectangle(b[0], b[1], b[2], b[3]))
            ms = QgsMapSettings()
            ms.setLayers([layer])
            ms.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
            ms.setOutputSize(QSize(w, h))
            ms.setExtent(ext)
            ms.setBackgroundColor(QColor(255, 255, 255))
            job = QgsMapRendererSequentialJob(ms)
            job.start()
            job.waitForFinished()
            img = job.renderedImage()
            out["seconds"] = round(time.perf_counter() - t0, 3)
            step = 4
            painted = total = 0
            for y in range(0, img.height(), step):
                for x in range(0, img.width(), step):
                    total += 1
                    painted += img.pixel(x, y) & 0xFFFFFF != 0xFFFFFF
            out["painted_share"] = round(painted / total, 3) if total else 0
            out["scale"] = round(ms.scale())
        else:
            out["error"] = layer.error().summary() if layer.error() else "invalid layer"
    finally:
        print(json.dumps({"tiles": out}))
        sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
