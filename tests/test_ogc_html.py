"""The OGC HTML pages and the API docs in a real browser (issue 14): headless Chromium (Debian's,
driven by playwright-core from npm) with the network cut off — every request to a host other than
the loopback server is aborted — as on the offline intranets counties run on.

* the items page of the parcels lists the features of the page (the same ids, in the same order,
  as the GeoJSON) and links to the web map;
* ``/docs`` (Swagger UI bundled under app/static/vendor/swagger-ui) renders the OpenAPI 3.1
  document and shows every operation of ``/api``, without any request leaving the machine.

Screenshots land in tests/_artifacts/ogc_html/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_features import serve  # noqa: E402
from test_features import features_db  # noqa: E402,F401  (the seeded database)

HERE = Path(__file__).resolve().parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("node") is None or not Path("/usr/bin/chromium").exists()
                       or not (HERE / "browser" / "node_modules" / "playwright-core").exists(),
                       reason="CHROMIUM/NODE NOT INSTALLED (scripts/bootstrap.sh --test) — the browser tests did NOT run"),
]


@pytest.fixture(scope="module")
def report(features_db):  # noqa: F811
    with serve(features_db["url"]) as server:
        expected = httpx.get(f"{server}/collections/parcels/items?limit=10").json()
        api = httpx.get(f"{server}/api").json()
        p = subprocess.run(["node", str(HERE / "browser" / "ogc_pages_check.mjs"), "--base", server,
                            "--out", str(HERE / "_artifacts" / "ogc_html")],
                           capture_output=True, text=True, timeout=240, cwd=HERE / "browser")
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), expected, api, server


def test_items_html_lists_the_features_and_links_to_the_map(report):
    rep, expected, _api, server = report
    page = rep["pages"]["items"]
    assert page["status"] == 200 and page["type"].startswith("text/html") and page["errors"] == [], page
    shown = page["shown"]
    assert shown["rows"] == [f["id"] for f in expected["features"]]  # same features, same order
    assert shown["matched"] == str(expected["numberMatched"])
    assert f"{server}/map" in shown["mapLinks"]  # the header link to the web map
    assert f"{server}/map/parcel/{expected['features'][0]['id']}" in shown["mapLinks"]  # each parcel's 一地一档
    assert "grade" in shown["headers"] and "tax_per_mu" not in shown["headers"]
    assert shown["next"] and "after=" in shown["next"]
    landing = rep["pages"]["landing"]
    assert landing["status"] == 200 and landing["shown"]["mapLinks"][0] == f"{server}/map"
    assert rep["blocked"] == []  # the pages need nothing from outside


def test_docs_render_offline_and_show_every_operation(report):
    rep, _expected, api, _server = report
    docs = rep["pages"]["docs"]
    assert docs["status"] == 200 and docs["errors"] == [], docs
    assert rep["blocked"] == [], rep["blocked"]  # no CDN: nothing was requested outside
    ops = {o.strip() for o in docs["shown"]["operations"]}
    want = {f"{method.upper()} {path}" for path, item in api["paths"].items() for method in item
            if method in ("get", "post", "put", "delete", "patch", "head")}
    assert want <= ops, sorted(want - ops)
    assert "GET /collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}" in ops
    assert docs["shown"]["title"] and "mujun" in docs["shown"]["title"]
