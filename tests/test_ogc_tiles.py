"""OGC API - Tiles (issue 14): tile matrix sets, tilesets, tileset metadata and tiles addressed as
``{tileMatrix}/{tileRow}/{tileCol}`` — the same tiles as ``/tiles/{layer}/{z}/{x}/{y}.pbf``; and a
real client, GDAL's ``OGCAPI:`` driver, reading the parcels' vector tiles through it from a uvicorn
server on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mapbox_vector_tile
import morecantile
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_features import H, db_scalar, serve  # noqa: E402
from test_features import client, features_db  # noqa: E402,F401  (the seeded database, a client)

from app.api.tiles import MINZOOM  # noqa: E402

TMS = morecantile.tms.get("WebMercatorQuad")
MINZOOM_PARCELS = MINZOOM["parcels"]
Z = 16
TILE = TMS.tile(120.1, 30.2, Z)  # holds the south-west part of the test grid


def test_discovery_links_and_conformance(client):  # noqa: F811
    landing = client.get("/").json()
    rels = {link["rel"]: link["href"] for link in landing["links"]}
    assert rels["http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"].endswith("/tileMatrixSets")
    coll = client.get("/collections/parcels").json()
    tiles_href = [link["href"] for link in coll["links"]
                  if link["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"]
    assert tiles_href == [tiles_href[0]] and tiles_href[0].endswith("/collections/parcels/tiles")
    conf = client.get("/conformance").json()["conformsTo"]
    for c in ("core", "tileset", "tilesets-list", "geodata-tilesets", "mvt"):
        assert f"http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/{c}" in conf
    sets = client.get("/tileMatrixSets").json()["tileMatrixSets"]
    assert [s["id"] for s in sets] == ["WebMercatorQuad"]
    tms = client.get("/tileMatrixSets/WebMercatorQuad").json()
    assert tms["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857" and len(tms["tileMatrices"]) == 25
    assert client.get("/tileMatrixSets/WorldCRS84Quad").status_code == 404


def test_tileset_limits_and_tile_is_the_same_tile(client):  # noqa: F811
    ts = client.get("/collections/parcels/tiles").json()["tilesets"]
    assert len(ts) == 1 and ts[0]["dataType"] == "vector"
    meta_href = next(link["href"] for link in ts[0]["links"] if link["rel"] == "self")
    meta = client.get(meta_href).json()
    limits = {lim["tileMatrix"]: lim for lim in meta["tileMatrixSetLimits"]}
    lim = limits[str(Z)]
    assert lim["minTileCol"] <= TILE.x <= lim["maxTileCol"] and lim["minTileRow"] <= TILE.y <= lim["maxTileRow"]
    assert min(map(int, limits)) == MINZOOM["parcels"]  # tiles are drawn from the layer's minimum zoom
    template = next(link["href"] for link in meta["links"] if link["rel"] == "item")
    assert "{tileMatrix}/{tileRow}/{tileCol}" in template
    assert set(meta["layers"][0]["propertiesSchema"]["properties"]) >= {"identity_code", "grade"}
    url = template.replace("{tileMatrix}", str(Z)).replace("{tileRow}", str(TILE.y)).replace("{tileCol}", str(TILE.x))
    ogc = client.get(url)
    own = client.get(f"/tiles/parcels/{Z}/{TILE.x}/{TILE.y}.pbf")
    assert ogc.status_code == 200 and ogc.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    assert ogc.content == own.content  # y/x order honoured: the very same tile
    feats = mapbox_vector_tile.decode(ogc.content)["parcels"]["features"]
    assert len(feats) > 0 and all("identity_code" in f["properties"] for f in feats)
    # swapped row/column is another tile (empty here): the order matters
    swapped = client.get(url.replace(f"/{TILE.y}/{TILE.x}", f"/{TILE.x}/{TILE.y}"))
    assert swapped.status_code in (204, 404) or swapped.content != ogc.content
    # errors: unknown scheme, collection, out-of-range tile
    assert client.get(f"/collections/parcels/tiles/WorldCRS84Quad/{Z}/{TILE.y}/{TILE.x}").status_code == 404
    assert client.get(f"/collections/nope/tiles/WebMercatorQuad/{Z}/{TILE.y}/{TILE.x}").status_code == 404
    assert client.get("/collections/parcels/tiles/WebMercatorQuad/2/9/9").status_code == 404
    assert client.get("/collections/parcels/tiles/WebMercatorQuad/25/0/0").status_code == 400


def test_role_fields_in_tileset_metadata(client, features_db):  # noqa: F811
    anon = client.get("/collections/parcels/tiles/WebMercatorQuad").json()["layers"][0]["propertiesSchema"]
    analyst = client.get("/collections/parcels/tiles/WebMercatorQuad",
                         headers=H(features_db, "analyst")).json()["layers"][0]["propertiesSchema"]
    assert "tax_per_mu" not in anon["properties"] and "tax_per_mu" in analyst["properties"]


_READ = """
import json, sys
import pyogrio
src, oo, zoom, bbox = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
infos = []
for i in range(25):
    try:
        infos.append(pyogrio.read_info(src, layer=i, **oo))
    except pyogrio.errors.DataLayerError:
        break
layer = [i.get("layer_name") for i in infos].index(f"Zoom level {zoom}")
df = pyogrio.read_dataframe(src, layer=layer, bbox=tuple(bbox), **oo)
print(json.dumps({"crs": [i["crs"] for i in infos], "names": [i.get("layer_name") for i in infos],
                  "columns": list(df.columns), "rows": df.drop(columns="geometry").to_dict("records"),
                  "geom_types": sorted(set(df.geometry.geom_type))}))
"""


@pytest.mark.slow
def test_gdal_ogcapi_driver_reads_parcel_vector_tiles(features_db):  # noqa: F811
    """GDAL's OGCAPI driver (GDAL 3.12 as bundled in the pyogrio wheel: Debian's ogrinfo 3.6.2 is built
    without the driver's vector-tiles path) finds the tilesets from the collection, reads the tileset
    metadata and the WebMercatorQuad definition, and decodes the parcels' MVT tiles of a zoom level.
    GDAL runs in its own process (pyogrio holds the GIL; the server runs in a thread here)."""
    # GDAL's vector-tiles path takes the area in the tile matrix set's CRS (EPSG:3857) as open
    # options (it reads the collection's CRS84 bbox as if it were in that CRS)
    x0, y0 = TMS.xy(120.095, 30.195)
    x1, y1 = TMS.xy(120.105, 30.205)
    oo = {"MINX": x0, "MINY": y0, "MAXX": x1, "MAXY": y1}
    b = TMS.xy_bounds(TILE)
    pad = (b.right - b.left) * 0.1
    bbox = [b.left + pad, b.bottom + pad, b.right - pad, b.top - pad]
    with serve(features_db["url"]) as server:
        # one layer per zoom ("Zoom level 16")
        p = subprocess.run([sys.executable, "-c", _READ, f"OGCAPI:{server}/collections/parcels", json.dumps(oo),
                            str(Z), json.dumps(bbox)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert all("3857" in c for c in out["crs"]), out["crs"]
    assert {"identity_code", "grade"} <= set(out["columns"]), out["columns"]
    assert f"Zoom level {MINZOOM_PARCELS}" == out["names"][0]
    assert out["rows"] and out["geom_types"] and set(out["geom_types"]) <= {"Polygon", "MultiPolygon"}
    # every parcel GDAL decoded is one of the database's, with its grade of the shown run (2024)
    run = features_db["runs"][2024]
    for row in out["rows"]:
        want = db_scalar(features_db["url"], "SELECT grade FROM parcel_ratings WHERE run_id = :r AND identity_code = :c",
                         r=run, c=row["identity_code"])
        got = row["grade"] if isinstance(row["grade"], str) else None  # NULL reads as NaN
        assert got == want, row
