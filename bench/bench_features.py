"""OGC API Features: mujun vs tipg, side by side in one run, on the same 100 000 parcels.

    .venv/bin/python bench/bench_features.py [--parcels 100000] [--clients 4] [--requests 32]
        [--tipg /tmp/tipgvenv/bin/python] [--write bench/RESULTS.md]

What it does (all on loopback, bounded loops):

1. a throwaway embedded PostGIS (or ``DATABASE_URL``'s server) gets a fresh database, migrated,
   with N parcels (a grid of ~50 m squares, 3 townships) and one published evaluation run;
2. the view ``bench_parcels`` gives tipg exactly our public ``parcels`` collection (same join, same
   columns), so both servers read the same rows the same way;
3. both servers run as separate single-worker uvicorn processes; scenarios alternate between them
   (A, B, A, B …) so machine noise hits both alike; a few concurrent httpx clients measure
   requests/s and latency; whole-layer exports measure time and the server's peak RSS (sampled
   from /proc every 20 ms).

tipg is installed in its own venv (it pins its own dependencies): ``python3 -m venv /tmp/tipgvenv &&
/tmp/tipgvenv/bin/pip install tipg==1.6.1 uvicorn``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app import db  # noqa: E402
from app.api.sql import encode_key  # noqa: E402
from app.embedded import EmbeddedCluster  # noqa: E402
from results import replace_section  # noqa: E402

SECTION = "## OGC API Features vs tipg"


# ------------------------------------------------------------------------------ database

def make_database(n: int) -> tuple[str, callable]:
    """A fresh migrated database with ``n`` parcels; returns (url, cleanup)."""
    cluster = None
    if os.environ.get("DATABASE_URL"):
        admin_url = str(sa.make_url(db.database_url()).set(database="postgres"))
    else:
        cluster = EmbeddedCluster(Path(tempfile.mkdtemp(prefix="mujun-bench-")), durable=False)
        admin_url = str(sa.make_url(cluster.ensure_running()).set(database="postgres"))
    name = f"mujun_bench_{os.getpid()}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = str(sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False))
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
    db.upgrade(url)
    side = int(n ** 0.5 + 0.999)
    with eng.begin() as c:
        run = c.execute(sa.text(
            "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint,"
            " run_hash, status) VALUES (2024, 'bench', '1', 'h', 'f', 'r', 'published') RETURNING id")).scalar_one()
        c.execute(sa.text("""
            INSERT INTO parcels (identity_code, kind, parcel_code, owner_uscc, owner_name, land_use, township,
                                 area_m2, area_mu, geom)
            SELECT 'ZD' || lpad(i::text, 7, '0'), CASE WHEN i % 25 = 24 THEN 'defacto' ELSE 'registered' END,
                   '330102' || lpad(i::text, 7, '0'), '91330100MB' || lpad(i::text, 8, '0'), '业主' || i,
                   '工业用地', (ARRAY['城东街道','城西街道','新区镇'])[(i % :side) * 3 / :side + 1],
                   2250.0 + i % 100, (2250.0 + i % 100) / 666.667,
                   ST_Multi(ST_MakeEnvelope(120.0 + (i % :side) * 0.0005, 30.0 + (i / :side) * 0.0005,
                                            120.0 + (i % :side) * 0.0005 + 0.00046, 30.0 + (i / :side) * 0.0005 + 0.00046, 4490))
            FROM generate_series(0, :n - 1) i"""), {"n": n, "side": side})
        c.execute(sa.text("""
            INSERT INTO parcel_ratings (run_id, identity_code, list_name, industry_group, score, rank, grade, colour,
                                        tax_per_mu, idle)
            SELECT :run, identity_code, '规上', (ARRAY['纺织','机械','化工'])[(hashtext(identity_code) & 3) % 3 + 1],
                   50 + (hashtext(identity_code) & 63), 1, (ARRAY['A','B','C','D'])[(hashtext(identity_code) & 3) + 1],
                   (ARRAY['green','blue','yellow','red'])[(hashtext(identity_code) & 3) + 1], 12.5, false
            FROM parcels"""), {"run": run})
        db.bump_data_version(c)
        # tipg's view: our public parcels collection, same join and columns
        c.execute(sa.text(f"""
            CREATE VIEW bench_parcels AS
            SELECT p.identity_code, p.kind, p.parcel_code, p.township, p.land_use,
                   round(p.area_m2::numeric, 2)::float8 AS area_m2, round(p.area_mu::numeric, 3)::float8 AS area_mu,
                   coalesce(r.idle, false) AS idle, r.run_id, r.grade, r.colour, r.industry_group, p.geom
            FROM parcels p LEFT JOIN parcel_ratings r ON r.identity_code = p.identity_code AND r.run_id = {int(run)}"""))
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE"))
    eng.dispose()

    def cleanup():
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if cluster:
            cluster.destroy()

    return url, cleanup


# ------------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cmd: list[str], env: dict, port: int, probe: str) -> subprocess.Popen:
    p = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited: {p.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=5).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    p.terminate()
    raise RuntimeError(f"{cmd} did not answer {probe}")


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else 0.0


# ---------------------------------------------------------------------------- measuring

def load(url: str, clients: int, requests: int, headers: dict) -> dict:
    """``requests`` GETs of ``url`` from ``clients`` threads: req/s, latency, bytes, features."""
    lat: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []
    nfeat: list[int] = []
    lock = threading.Lock()
    per = max(1, requests // clients)

    def worker():
        with httpx.Client(timeout=120, headers=headers) as c:
            for _ in range(per):
                t = time.perf_counter()
                r = c.get(url)
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                    lat.append(dt)
                    sizes.append(r.num_bytes_downloaded)  # on the wire
                    if not nfeat:
                        nfeat.append(len(r.json().get("features", [])))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"rps": len(lat) / wall, "p50_ms": 1000 * statistics.median(lat),
            "p95_ms": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], "bytes": statistics.median(sizes),
            "features": nfeat[0] if nfeat else 0, "errors": errors[:3]}


def export(url: str, pid: int, headers: dict) -> dict:
    """One whole-layer download: seconds, bytes, and the server's peak RSS while serving it."""
    peak = [rss_mb(pid)]
    base = peak[0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.02)

    th = threading.Thread(target=sample)
    th.start()
    t = time.perf_counter()
    n = 0
    status = None
    with httpx.stream("GET", url, headers=headers, timeout=600) as r:
        status = r.status_code
        for chunk in r.iter_raw():
            n += len(chunk)
    secs = time.perf_counter() - t
    done.set()
    th.join()
    return {"status": status, "s": secs, "mb": n / 1e6, "rss_base_mb": base, "rss_peak_mb": peak[0]}


# --------------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parcels", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tipg", default="/tmp/tipgvenv/bin/python")
    ap.add_argument("--write", default=str(REPO / "bench" / "RESULTS.md"))
    a = ap.parse_args()

    t = time.perf_counter()
    url, cleanup = make_database(a.parcels)
    print(f"database with {a.parcels} parcels in {time.perf_counter() - t:.1f}s", flush=True)
    procs = []
    results: dict = {"n": a.parcels, "clients": a.clients, "requests": a.requests}
    try:
        ours_port = free_port()
        ours = start_server([sys.executable, "-c", (
            "import sys, uvicorn; from app.main import create_app; from app.settings import Settings;"
            f"uvicorn.run(create_app(Settings(max_limit=100000), database_url={url!r}), host='127.0.0.1',"
            f" port={ours_port}, log_level='warning')")], {"PYTHONPATH": str(REPO)}, ours_port, "/conformance")
        procs.append(ours)
        tipg_err = None
        tipg = None
        tipg_port = free_port()
        if Path(a.tipg).exists():
            try:
                libpq = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
                tipg = start_server([a.tipg, "-m", "uvicorn", "tipg.main:app", "--host", "127.0.0.1",
                                     "--port", str(tipg_port), "--log-level", "warning"],
                                    {"DATABASE_URL": libpq, "TIPG_DB_SCHEMAS": '["public"]',
                                     "TIPG_TABLE_CONFIG__public_bench_parcels__PK": "identity_code",
                                     "TIPG_MAX_FEATURES_PER_QUERY": str(a.parcels)},
                                    tipg_port, "/collections/public.bench_parcels")
                procs.append(tipg)
            except RuntimeError as e:
                tipg_err = str(e)
        else:
            tipg_err = f"{a.tipg} not found (install tipg in its own venv, see the module docstring)"
        results["tipg_error"] = tipg_err

        O = f"http://127.0.0.1:{ours_port}/collections/parcels/items"
        T = f"http://127.0.0.1:{tipg_port}/collections/public.bench_parcels/items"
        side = int(a.parcels ** 0.5 + 0.999)
        bbox = f"120.0,30.0,{120.0 + side * 0.0005 / 2},{30.0 + side * 0.0005 / 2}"
        deep = min(90_000, a.parcels - 1000)
        eng = sa.create_engine(url)
        with eng.connect() as c:  # the 91st page's keyset token, as a next link would carry it
            k = c.execute(sa.text("SELECT json_build_array(identity_code)::text FROM parcels "
                                  "ORDER BY identity_code OFFSET CAST(:o AS integer) LIMIT 1"), {"o": deep - 1}).scalar()
        eng.dispose()
        scenarios = [
            ("page 1, limit=1000", f"{O}?limit=1000", f"{T}?limit=1000"),
            ("limit=1000 + bbox (¼ of the area)", f"{O}?limit=1000&bbox={bbox}", f"{T}?limit=1000&bbox={bbox}"),
            (f"deep page (row {deep}): ours keyset `after`, tipg offset", f"{O}?limit=1000&after={encode_key(k)}",
             f"{T}?limit=1000&offset={deep}"),
            (f"deep page (row {deep}): both offset", f"{O}?limit=1000&offset={deep}", f"{T}?limit=1000&offset={deep}"),
            ("filter grade='A', limit=1000", f"{O}?limit=1000&filter=grade%3D'A'",
             f"{T}?limit=1000&filter=grade%3D'A'"),
        ]
        ident = {"Accept-Encoding": "identity"}
        gz = {"Accept-Encoding": "gzip"}
        rows = []
        for name, ou, tu in scenarios:
            for u in (ou, tu) if tipg else (ou,):  # warm up
                httpx.get(u, headers=ident, timeout=120)
            runs = {"ours": [], "tipg": []}
            for _ in range(a.rounds):
                runs["ours"].append(load(ou, a.clients, a.requests, ident))
                if tipg:
                    runs["tipg"].append(load(tu, a.clients, a.requests, ident))
            rows.append((name, runs))
            print(name, {k: [round(r["rps"], 1) for r in v] for k, v in runs.items()}, flush=True)
        gzip_rows = {"ours": [load(scenarios[1][1], a.clients, a.requests, gz) for _ in range(a.rounds)],
                     "tipg": [load(scenarios[1][2], a.clients, a.requests, gz) for _ in range(a.rounds)] if tipg else []}
        print("gzip", {k: [round(r["rps"], 1) for r in v] for k, v in gzip_rows.items()}, flush=True)
        exports = {
            "ours GeoJSON": export(f"http://127.0.0.1:{ours_port}/collections/parcels/export.geojson", ours.pid, ident),
            "ours FlatGeobuf": export(f"http://127.0.0.1:{ours_port}/collections/parcels/export.fgb", ours.pid, ident),
            "ours GeoJSON gzip": export(f"http://127.0.0.1:{ours_port}/collections/parcels/export.geojson",
                                        ours.pid, gz),
        }
        if tipg:
            exports["tipg GeoJSON (limit=N)"] = export(f"{T}?limit={a.parcels}", tipg.pid, ident)
        for k2, v in exports.items():
            print(k2, {x: round(y, 2) if isinstance(y, float) else y for x, y in v.items()}, flush=True)
        results.update(rows=rows, gzip=gzip_rows, exports=exports)
    finally:
        for p in procs:
            stop(p)
        cleanup()
    if a.write:
        write_results(Path(a.write), results)
    print(json.dumps({k: v for k, v in results.items() if k in ("tipg_error",)}))
    return 0


def _med(rs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rs) if rs else float("nan")


def write_results(path: Path, res: dict) -> None:
    cpus = os.cpu_count()
    lines = [SECTION, "",
             f"`bench/bench_features.py`, {time.strftime('%Y-%m-%d')}: {res['n']:,} parcels (public `parcels` "
             f"collection; tipg 1.6.1 serves a view with the same join and columns), both single-worker uvicorn "
             f"on loopback, same PostGIS, {res['clients']} concurrent clients × {res['requests']} requests per "
             f"run, runs alternating ours/tipg, medians of the runs. Machine: {cpus} cores, shared and noisy — "
             f"read the ratios, not the absolute numbers. Responses uncompressed unless marked gzip.", ""]
    if res.get("tipg_error"):
        lines += [f"**tipg did not run:** {res['tipg_error']}", ""]
    lines += ["Bytes are as sent on the wire.", "", "| scenario | ours req/s | tipg req/s | ratio | ours p50 / p95 ms | tipg p50 / p95 ms |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, runs in res.get("rows", []):
        o, t = runs["ours"], runs["tipg"]
        ratio = _med(o, "rps") / _med(t, "rps") if t else float("nan")
        err = " (errors: " + "; ".join(o[0]["errors"] + (t[0]["errors"] if t else [])) + ")" \
            if (o and o[0]["errors"]) or (t and t[0]["errors"]) else ""
        lines.append(f"| {name}{err} | {_med(o, 'rps'):.1f} | {_med(t, 'rps'):.1f} | {ratio:.2f}× | "
                     f"{_med(o, 'p50_ms'):.0f} / {_med(o, 'p95_ms'):.0f} | "
                     f"{_med(t, 'p50_ms'):.0f} / {_med(t, 'p95_ms'):.0f} |")
    g = res.get("gzip", {})
    if g:
        o, t = g["ours"], g["tipg"]
        lines.append(f"| limit=1000 + bbox, gzip | {_med(o, 'rps'):.1f} | {_med(t, 'rps'):.1f} | "
                     f"{(_med(o, 'rps') / _med(t, 'rps')) if t else float('nan'):.2f}× | "
                     f"{_med(o, 'p50_ms'):.0f} / {_med(o, 'p95_ms'):.0f} | {_med(t, 'p50_ms'):.0f} / {_med(t, 'p95_ms'):.0f} |")
        plain = next((r for n, r in res["rows"] if "bbox" in n), None)
        if plain:
            lines += ["", f"Page size, limit=1000 + bbox: {_med(plain['ours'], 'bytes') / 1e3:.0f} kB plain, "
                      f"{_med(o, 'bytes') / 1e3:.0f} kB gzip (ours, level 1)."]
    lines += ["", "| whole-layer export | s | MB on the wire | server RSS before → peak (MB) |", "|---|---:|---:|---:|"]
    for k, v in res.get("exports", {}).items():
        lines.append(f"| {k}{'' if v['status'] == 200 else ' (HTTP ' + str(v['status']) + ')'} | {v['s']:.2f} | "
                     f"{v['mb']:.1f} | {v['rss_base_mb']:.0f} → {v['rss_peak_mb']:.0f} |")
    replace_section("\n".join(lines), path)


if __name__ == "__main__":
    sys.exit(main())
