"""How long real QGIS (headless PyQGIS 3.22, OAPIF provider) takes to load 100k parcels.

Side by side in one run: mujun and tipg serving the same PostGIS table (tipg from /tmp/tipgvenv,
see bench_features.py). Each load is ``tests/qgis_load.py`` in a fresh ``/usr/bin/python3``:
QGIS reads the landing page, the OpenAPI document (for the page size), the collection, then pages
through ``items`` by ``next`` links until every feature is iterated. Wall time of the whole
process (QGIS start-up included, ~2 s) and the number of items requests the server saw.

    .venv/bin/python bench/bench_qgis.py [--parcels 100000] [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_features import free_port, make_database, start_server, stop  # noqa: E402
from results import replace_section  # noqa: E402


def qgis_load(url: str, typename: str, id_field: str) -> dict:
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/python3", str(REPO / "tests/qgis_load.py"), url, typename, "--id-field", id_field],
                       capture_output=True, text=True, timeout=1800, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        return {"error": p.stderr[-500:], "s": seconds}
    o = json.loads(p.stdout.strip().splitlines()[-1])["oapif"]
    return {"s": round(seconds, 1), "valid": o["valid"], "feature_count": o.get("feature_count"),
            "iterated": o.get("iterated"), "distinct_ids": o.get("distinct_ids")}


def count_items_requests(log: Path) -> int:
    return len(re.findall(r"GET /collections/[^ ]*items", log.read_text(errors="replace")))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parcels", type=int, default=100_000)
    ap.add_argument("--tipg", default="/tmp/tipgvenv/bin/python")
    ap.add_argument("--write", default=str(REPO / "bench" / "RESULTS.md"))
    a = ap.parse_args()
    url, cleanup = make_database(a.parcels)
    res: dict = {"n": a.parcels}
    logs = Path("/tmp/mujun_bench_qgis")
    logs.mkdir(exist_ok=True)
    try:
        port = free_port()
        ours_log = logs / "ours.log"
        ours = start_server(["bash", "-c", f"exec {sys.executable} -c \"import uvicorn; from app.main import create_app; "
                             f"uvicorn.run(create_app(database_url='{url}'), host='127.0.0.1', port={port}, "
                             f"log_level='info')\" > {ours_log} 2>&1"], {"PYTHONPATH": str(REPO)}, port, "/conformance")
        try:
            res["ours"] = qgis_load(f"http://127.0.0.1:{port}", "parcels", "identity_code")
            res["ours"]["requests"] = count_items_requests(ours_log)
        finally:
            stop(ours)
        if Path(a.tipg).exists():
            tport = free_port()
            tipg_log = logs / "tipg.log"
            libpq = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            env = {"DATABASE_URL": libpq, "TIPG_DB_SCHEMAS": '["public"]',
                   "TIPG_TABLE_CONFIG__public_bench_parcels__PK": "identity_code"}
            tipg = start_server(["bash", "-c", f"exec {a.tipg} -m uvicorn tipg.main:app --host 127.0.0.1 "
                                 f"--port {tport} --log-level info > {tipg_log} 2>&1"], env, tport,
                                "/collections/public.bench_parcels")
            try:
                res["tipg"] = qgis_load(f"http://127.0.0.1:{tport}", "public.bench_parcels", "identity_code")
                res["tipg"]["requests"] = count_items_requests(tipg_log)
            finally:
                stop(tipg)
        else:
            res["tipg"] = {"error": f"tipg not installed at {a.tipg} (pip install tipg==1.6.1 uvicorn in that venv)"}
    finally:
        cleanup()
    print(json.dumps(res, ensure_ascii=False))
    if a.write:
        write_results(Path(a.write), res)
    return 0


def write_results(path: Path, res: dict) -> None:
    head = "## QGIS loading 100k parcels"
    rows = [head, "",
            f"`bench/bench_qgis.py`: headless PyQGIS 3.22 (OAPIF provider, `tests/qgis_load.py`) loads the whole "
            f"collection of {res['n']:,} parcels from each server in turn, same PostGIS, uvicorn 1 worker, "
            "2-core shared machine. Wall time of the QGIS process (start-up ~2 s included); items requests "
            "counted in the server's access log.", "",
            "| server | seconds | items requests | features iterated | distinct ids |", "|---|---:|---:|---:|---:|"]
    for name in ("ours", "tipg"):
        r = res.get(name, {})
        if "error" in r:
            rows.append(f"| {name} | error: {r['error'][:120]} | | | |")
        else:
            rows.append(f"| {name} | {r['s']} | {r.get('requests')} | {r.get('iterated')} | {r.get('distinct_ids')} |")
    replace_section("\n".join(rows), path)


if __name__ == "__main__":
    sys.exit(main())
