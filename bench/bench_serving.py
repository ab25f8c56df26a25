"""Issue 17 in one run: mujun vs tipg 1.6.1 vs the raw SQL (pgbench), interleaved, with wrk; the
publish time and storage of the pre-built caches; QGIS 3.22 loading the layer by each route.

    .venv/bin/python bench/bench_serving.py [--parcels 100000] [--seconds 10] [--connections 8]
        [--qgis] [--tipg-qgis-timeout 900] [--no-write]

1. A fresh database on a throwaway embedded cluster (or ``DATABASE_URL``'s server) with
   ``--parcels`` synthetic graded parcels (``bench_tiles.generate_parcels``), and a view
   ``bench_parcels`` that gives tipg the same rows and columns as mujun's public ``parcels``.
2. Publish: the public tile pyramid (``app.render.render_pyramid``, z0–16) and the feature cache
   (``app.feature_cache.build_feature_cache``) are built and timed; their storage is measured.
3. mujun (``uvicorn app.asgi:app``, workers = cores, httptools + uvloop) and tipg (same worker
   count, from ``/tmp/tipgvenv``, created if missing: ``pip install tipg==1.6.1``) serve it.
   For each scenario, back to back: wrk against mujun, wrk against tipg, pgbench running the
   statement(s) mujun's request runs (the dynamic one = the SQL ceiling before issue 17, and
   the cache read that serves it now) — ``--connections`` connections each, ``--seconds`` each,
   keep-alive, 2 threads.
4. Where the time goes: py-spy (``/tmp/spyvenv``, created if missing) on one mujun worker during
   an extra wrk run of each tile scenario; ``EXPLAIN ANALYZE`` of the statements.
5. ``--qgis``: headless QGIS 3.22 (``/usr/bin/python3``) loads the 100k parcels by each route:
   OAPIF from mujun, OAPIF from tipg (QGIS defaults), ``export.fgb`` by plain ``/vsicurl/`` URL
   and by ``/vsicurl_streaming/``, and the vector tiles rendering the whole extent
   (``bench/qgis_tiles.py``).

Results go to ``bench/RESULTS.md`` (section "## Issue 17 in one run").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_tiles import make_database  # noqa: E402
from results import replace_section  # noqa: E402

SECTION = "## Issue 17 in one run"
TIPG = Path("/tmp/tipgvenv")
SPY = Path("/tmp/spyvenv")
CORES = len(os.sched_getaffinity(0))


# --------------------------------------------------------------------------- tools


def ensure_venv(venv: Path, *packages: str) -> Path:
    """A bench-only tool in its own venv (not a project dependency), created if missing."""
    if not (venv / "bin" / "python").exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *packages], check=True)
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, probe: str, cwd=None) -> subprocess.Popen:
    import httpx

    p = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited: {p.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(probe, timeout=5).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop(p)
    raise RuntimeError(f"{cmd[:3]} did not answer {probe}")


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def workers_of(p: subprocess.Popen) -> list[int]:
    """The server's worker processes (multiprocessing children running ``spawn_main``)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout
    kids = [int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line]
    return kids or [p.pid]


# --------------------------------------------------------------------------- load generators

_LUA_TILES = """
local z, x0, x1, y0, y1 = {z}, {x0}, {x1}, {y0}, {y1}
local pre, suf = "{pre}", "{suf}"
local counter = 0
setup = function(thread) counter = counter + 1; thread:set("seed", counter) end
init = function(args) math.randomseed(seed * 7919) end
request = function()
  return wrk.format("GET", pre .. z .. "/" .. math.random(x0, x1) .. "/" .. math.random(y0, y1) .. suf)
end
"""


def wrk(url: str, seconds: float, connections: int, lua: str | None = None) -> dict:
    """wrk, 2 threads, keep-alive: requests/s, p50/p99 latency (ms), non-2xx/3xx, socket errors."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "--timeout", "30s"]
    script = None
    if lua:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(lua)
        script.close()
        cmd += ["-s", script.name]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 120).stdout
    if script:
        os.unlink(script.name)

    def ms(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        v = float(m[1])
        return v / 1000 if m[2] == "us" else v * 1000 if m[2] == "s" else v

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    return {"rps": float(rps[1]) if rps else 0.0, "p50": ms(50), "p99": ms(99), "non2xx": int(bad[1]) if bad else 0,
            "socket_errors": sock[1].strip() if sock else "", "transfer": f"{transfer[1]} {transfer[2]}" if transfer else "",
            "raw": out if not rps else ""}


def pgbench(url: str, script: str, seconds: float, connections: int) -> dict:
    """pgbench running ``script`` (one statement per transaction): transactions/s, mean latency."""
    u = sa.make_url(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    cmd = ["pgbench", "-n", "-M", "prepared", "-c", str(connections), "-j", "2", "-T", str(int(seconds)),
           "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres", "-f", f.name,
           u.database]
    env = {**os.environ, "PGPASSWORD": u.password or ""}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, env=env)
    os.unlink(f.name)
    tps = re.search(r"tps = ([\d.]+)", p.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", p.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", p.stdout)
    if "aborted" in p.stdout + p.stderr or "ERROR" in p.stderr:
        return {"rps": 0.0, "p50": None, "p99": None, "non2xx": -1, "raw": (p.stdout + p.stderr)[-800:]}
    return {"rps": float(tps[1]) if tps else 0.0, "p50": float(lat[1]) if lat else None, "p99": None,
            "non2xx": int(failed[1]) if failed else (0 if tps else -1), "raw": "" if tps else (p.stdout + p.stderr)[-800:]}


def literal_sql(sql: str, params: dict) -> str:
    """A SQLAlchemy text statement with its parameters inlined (what pgbench runs)."""
    from sqlalchemy.dialects import postgresql

    stmt = sa.text(sql).bindparams(**{k: v for k, v in params.items() if re.search(rf":{k}\b", sql)})
    return str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


# --------------------------------------------------------------------------- scenarios


def tile_rect(conn, z: int) -> tuple[int, int, int, int]:
    """x0, x1, y0, y1 of the tiles at zoom ``z`` covering the data."""
    import math

    b = conn.execute(sa.text("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                             "FROM (SELECT ST_Extent(geom) e FROM parcels) s")).one()
    n = 2 ** z

    def ty(lat):
        return int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)

    return int((b[0] + 180) / 360 * n), int((b[2] + 180) / 360 * n), ty(b[3]), ty(b[1])


def tile_sql_script(z: int, rect, *, cached: bool) -> str:
    """pgbench script: a random tile of ``rect`` at ``z`` — the render statement, or the cache read."""
    from app import cache
    from app.api.common import principal_scope
    from app.api.layers import LAYERS
    from app.api.tiles import tile_params, tile_sql, visible_props
    from app.auth import Principal

    x0, x1, y0, y1 = rect
    head = f"\\set x random({x0}, {x1})\n\\set y random({y0}, {y1})\n"
    who = Principal("public")
    if cached:
        sql = literal_sql(re.sub(r":y\b", "999002", re.sub(r":x\b", "999001", cache._TILE_READ)),
                          {"layer": "parcels", "scope": principal_scope(who), "query": "run=None&year=None", "z": z})
    else:
        lay = LAYERS["parcels"]
        sql = literal_sql(re.sub(r":y\b", "999002", re.sub(r":x\b", "999001", tile_sql(
                              lay, visible_props(lay, who), z, explicit_run=False, region_sql="TRUE"))),
                          {"z": z, "run": None, "year": None, **tile_params(z)})
    return head + sql.replace("999001", ":x").replace("999002", ":y").strip().rstrip(";") + ";\n"


def items_sql(url: str, bbox: list[float] | None, after: str | None, *, cached: bool) -> str:
    """The statement mujun runs for an items page (dynamic: ``page_sql``; cached: K's
    ``cache_page_sql``), parameters inlined."""
    from app.api import sql as fsql
    from app.api.layers import LAYERS
    from app.auth import Principal

    eng = sa.create_engine(url)
    with eng.connect() as conn:
        run = conn.execute(sa.text("SELECT id FROM evaluation_runs WHERE status = 'published' ORDER BY id DESC"
                                   " LIMIT 1")).scalar()
        version = conn.execute(sa.text("SELECT version FROM data_version")).scalar()
    eng.dispose()
    q = fsql.new_query(LAYERS["parcels"], Principal("public"), run)
    if bbox:
        fsql.add_bbox(q, bbox, fsql.parse_crs("http://www.opengis.net/def/crs/OGC/1.3/CRS84"))
    after_v = [after] if after else None
    if cached:
        sql, params = fsql.cache_page_sql(q, "public", version, 1000, after_v, count=False)
    else:
        sql, params = fsql.page_sql(q, 1000, after_v)
    return literal_sql(sql, params).strip().rstrip(";") + ";\n"


# --------------------------------------------------------------------------- publish


def publish(url: str) -> dict:
    """Build the public pyramid and the feature cache as a publish does; time and storage."""
    from app import render
    from app.feature_cache import build_feature_cache

    eng = sa.create_engine(url)
    t = time.perf_counter()
    tiles = render.render_pyramid(eng)
    tiles_s = time.perf_counter() - t
    t = time.perf_counter()
    feats = build_feature_cache(eng, collections=["parcels"])
    feats_s = time.perf_counter() - t
    with eng.connect() as conn:
        out = {
            "tiles_s": tiles_s, "tiles": tiles["built"], "tiles_mvt_mb": tiles["bytes"] / 1e6,
            "tile_cache_mb": conn.execute(sa.text("SELECT pg_total_relation_size('tile_cache')")).scalar() / 1e6,
            "tile_rows": conn.execute(sa.text("SELECT count(*) FROM tile_cache")).scalar(),
            "features_s": feats_s, "features": sum(f["features"] for f in feats), "classes": len(feats),
            "feature_text_mb": conn.execute(sa.text("SELECT coalesce(sum(length(feature)), 0) FROM feature_cache"))
            .scalar() / 1e6,
            "feature_cache_mb": conn.execute(sa.text("SELECT pg_total_relation_size('feature_cache')")).scalar() / 1e6,
        }
    eng.dispose()
    print(f"publish: {out}", flush=True)
    return out


def explain(url: str, sql: str) -> str:
    """``EXPLAIN (ANALYZE)``'s execution time of a statement (ms)."""
    eng = sa.create_engine(url)
    with eng.connect() as conn:
        conn.exec_driver_sql(sql.rstrip().rstrip(";"))  # warm
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql.rstrip().rstrip(";")).scalars().all()
    eng.dispose()
    m = re.search(r"Execution Time: ([\d.]+) ms", "\n".join(plan))
    return m[1] if m else "?"


# --------------------------------------------------------------------------- profile


def profile(pids: list[int], seconds: float, url: str, connections: int, lua: str | None) -> list[tuple[str, float]]:
    """py-spy on every server worker during a wrk run: the busy share of wall time (py-spy leaves
    out idle samples: a worker waiting in epoll) and the share of busy samples per innermost frame
    of interest."""
    spy = ensure_venv(SPY, "py-spy==0.4.3") / "bin" / "py-spy"
    outs = [tempfile.NamedTemporaryFile(suffix=".txt", delete=False).name for _ in pids]
    procs = [subprocess.Popen([str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250", "-f", "raw",
                               "-o", out, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for pid, out in zip(pids, outs)]
    time.sleep(1)
    wrk(url, seconds - 2, connections, lua)
    for p in procs:
        _, err = p.communicate(timeout=120)
        if p.returncode:
            print(f"py-spy failed: {err[-300:]}", flush=True)
    counts: dict[str, float] = {}
    total = 0.0
    expected = 250 * seconds * len(pids)
    for out in outs:
        for line in Path(out).read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            total += int(n)
            b = _bucket(stack.split(";"))
            counts[b] = counts.get(b, 0) + int(n)
        os.unlink(out)
    if not total:
        return []
    return [("busy (share of wall time, all workers)", 100 * total / expected)] + sorted(
        ((k, 100 * v / total) for k, v in counts.items()), key=lambda kv: -kv[1])


def _bucket(frames: list[str]) -> str:
    text = ";".join(frames)
    leaf = frames[-1] if frames else ""
    if "select (selectors.py" in leaf or "_run_once" in leaf and "select" in text.split(";")[-1]:
        return "idle (event loop waiting)"
    for needle, name in (("psycopg", "psycopg (driver, incl. waiting for PostgreSQL)"),
                         ("CachedTiles", "mujun fast path (CachedTiles)"),
                         ("fastapi", "FastAPI routing/validation"), ("starlette", "Starlette"),
                         ("httptools", "uvicorn HTTP (httptools)"), ("uvicorn", "uvicorn"),
                         ("sqlalchemy", "SQLAlchemy"), ("app/", "mujun code")):
        if needle in leaf:
            return name
    for needle, name in (("psycopg", "psycopg (driver, incl. waiting for PostgreSQL)"),
                         ("fastapi", "FastAPI routing/validation"), ("uvicorn", "uvicorn")):
        if needle in text:
            return name + " (callee)"
    return "other: " + leaf[:60]


# --------------------------------------------------------------------------- QGIS


def qgis(args: list[str], timeout: float) -> dict:
    """One headless QGIS process: wall seconds, its own CPU seconds, what it read."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    try:
        p = subprocess.run(["/usr/bin/python3", *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    except subprocess.TimeoutExpired:
        return {"s": time.perf_counter() - t, "error": f"not finished after {timeout:.0f} s"}
    s = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        return {"s": s, "error": f"exit {p.returncode}: {p.stderr[-300:]}"}
    res = json.loads(lines[-1])
    r = res.get("ogr") or res.get("oapif") or res.get("tiles") or {}
    note = r.get("error") or (f"{100 * r['painted_share']:.0f} % of the map painted, scale 1:{r.get('scale'):,}"
                              if "painted_share" in r else "")
    return {"s": s, "cpu": cpu, "features": r.get("iterated"), "valid": r.get("valid"), "error": note}


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parcels", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--qgis", action="store_true")
    ap.add_argument("--tipg-qgis-timeout", type=float, default=900.0)
    ap.add_argument("--end-by", default=None, help="UTC HH:MM:SS the run must end by (a quiet window): "
                    "QGIS on tipg gets what is left, at most --tipg-qgis-timeout")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--json", default=None, help="also write the raw figures to this file")
    a = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()[0]
    ensure_venv(TIPG, "tipg==1.6.1", "uvicorn")
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")

    t = time.perf_counter()
    url, cleanup = make_database(a.parcels)
    print(f"database: {time.perf_counter() - t:.0f} s", flush=True)
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        run = conn.execute(sa.text("SELECT max(id) FROM evaluation_runs")).scalar()
        conn.execute(sa.text(f"""
            CREATE VIEW bench_parcels AS
            SELECT p.identity_code, p.kind, p.parcel_code, p.township, p.land_use,
                   round(p.area_m2::numeric, 2)::float8 AS area_m2, round(p.area_mu::numeric, 3)::float8 AS area_mu,
                   coalesce(r.idle, false) AS idle, r.run_id, r.grade, r.colour, r.industry_group, p.geom
            FROM parcels p LEFT JOIN parcel_ratings r ON r.identity_code = p.identity_code AND r.run_id = {int(run)}"""))
    with eng.connect() as conn:
        rects = {z: tile_rect(conn, z) for z in (14, 16)}
        ext = conn.execute(sa.text("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                                   "FROM (SELECT ST_Extent(geom) e FROM parcels) s")).one()
        deep = min(90_000, a.parcels - 1000)
        after = conn.execute(sa.text("SELECT identity_code FROM parcels ORDER BY identity_code "
                                     "OFFSET :o LIMIT 1"), {"o": deep - 1}).scalar()
    eng.dispose()
    pub = publish(url)

    procs = []
    res: dict = {}
    try:
        mport, tport = free_port(), free_port()
        mujun = start([sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port", str(mport),
                       "--workers", str(CORES), "--http", "httptools", "--loop", "uvloop", "--log-level", "warning",
                       "--no-access-log"],
                      {"DATABASE_URL": url, "MUJUN_POOL_SIZE": str(a.connections), "MUJUN_RENDER_AT_PUBLISH": "0"},
                      f"http://127.0.0.1:{mport}/healthz", cwd=ROOT)
        procs.append(mujun)
        libpq = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        tipg = start([str(TIPG / "bin" / "python"), "-m", "uvicorn", "tipg.main:app", "--host", "127.0.0.1",
                      "--port", str(tport), "--workers", str(CORES), "--log-level", "warning", "--no-access-log"],
                     {"DATABASE_URL": libpq, "TIPG_DB_SCHEMAS": '["public"]',
                      "TIPG_TABLE_CONFIG__public_bench_parcels__PK": "identity_code",
                      "DB_MIN_CONN_SIZE": "1", "DB_MAX_CONN_SIZE": str(a.connections)},
                     f"http://127.0.0.1:{tport}/collections/public.bench_parcels", cwd="/tmp")
        procs.append(tipg)
        M, T = f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{tport}"
        from app.api.sql import encode_key

        bbox = [ext[0], ext[1], (ext[0] + ext[2]) / 2, (ext[1] + ext[3]) / 2]
        bb = ",".join(f"{v:.6f}" for v in bbox)
        token = encode_key(json.dumps([after], ensure_ascii=False))
        scenarios = [
            ("items limit=1000 + bbox (¼ of the area)", f"{M}/collections/parcels/items?limit=1000&bbox={bb}", None,
             f"{T}/collections/public.bench_parcels/items?limit=1000&bbox={bb}",
             {"dynamic": items_sql(url, bbox, None, cached=False), "cached": items_sql(url, bbox, None, cached=True)}),
            ("items page 1, limit=1000", f"{M}/collections/parcels/items?limit=1000", None,
             f"{T}/collections/public.bench_parcels/items?limit=1000",
             {"dynamic": items_sql(url, None, None, cached=False), "cached": items_sql(url, None, None, cached=True)}),
            (f"items deep page (row {deep:,}; mujun keyset `after`, tipg offset)",
             f"{M}/collections/parcels/items?limit=1000&after={token}", None,
             f"{T}/collections/public.bench_parcels/items?limit=1000&offset={deep}",
             {"dynamic": items_sql(url, None, after, cached=False), "cached": items_sql(url, None, after, cached=True)}),
        ]
        for z in (14, 16):
            x0, x1, y0, y1 = rects[z]
            scenarios.append((
                f"MVT z{z} (random tiles of the {x1 - x0 + 1}×{y1 - y0 + 1} covering the data)", M,
                _LUA_TILES.format(z=z, x0=x0, x1=x1, y0=y0, y1=y1, pre="/tiles/parcels/", suf=".pbf"),
                T, {"dynamic": tile_sql_script(z, rects[z], cached=False),
                    "cached": tile_sql_script(z, rects[z], cached=True),
                    "tipg_lua": _LUA_TILES.format(z=z, x0=x0, x1=x1, y0=y0, y1=y1,
                                                  pre="/collections/public.bench_parcels/tiles/WebMercatorQuad/",
                                                  suf="")}))
        # warm: every route once (PROJ, prepared statements, tipg's catalog)
        for name, mu, mlua, tu, sqls in scenarios:
            wrk(mu, 2, 2, mlua)
            wrk(tu, 2, 2, sqls.get("tipg_lua"))
        for name, mu, mlua, tu, sqls in scenarios:  # interleaved: mujun, tipg, SQL — back to back
            r = {"mujun": wrk(mu, a.seconds, a.connections, mlua),
                 "tipg": wrk(tu, a.seconds, a.connections, sqls.get("tipg_lua")),
                 "sql_dynamic": pgbench(url, sqls["dynamic"], a.seconds, a.connections),
                 "sql_cached": pgbench(url, sqls["cached"], a.seconds, a.connections)}
            res[name] = r
            print(name, {k: (round(v["rps"], 1), v.get("p50"), v.get("p99"), v.get("non2xx"), v.get("raw", "")[:300])
                         for k, v in r.items()}, flush=True)
        # where the time goes: py-spy on one mujun worker under wrk; EXPLAIN ANALYZE of the statements
        prof = {}
        for name, mu, mlua, tu, sqls in scenarios:
            if mlua or "bbox" in name:
                prof[name] = profile(workers_of(mujun), 10, mu, a.connections, mlua)
                print(name, prof[name][:8], flush=True)
        plans = {}
        for name, _mu, _ml, _tu, sqls in scenarios:
            z = 14 if "MVT z14" in name else 16
            first = {":x": str(rects[z][0] + (rects[z][1] - rects[z][0]) // 2),
                     ":y": str(rects[z][2] + (rects[z][3] - rects[z][2]) // 2)}
            plans[name] = {}
            for k in ("dynamic", "cached"):
                stmt = re.sub(r"\\set .*\n", "", sqls[k])
                for var, val in first.items():
                    stmt = re.sub(var + r"\b", val, stmt)
                plans[name][k] = explain(url, stmt)
        print("EXPLAIN ANALYZE ms:", plans, flush=True)
        q = {}
        if a.qgis:
            script = str(ROOT / "tests" / "qgis_load.py")
            fgb = f"{M}/collections/parcels/export.fgb"
            import httpx

            httpx.get(fgb, timeout=600)  # the whole-layer file is built once per data version
            q["OAPIF from mujun"] = qgis([script, M, "parcels"], 900)
            print("qgis mujun", q["OAPIF from mujun"], flush=True)
            q["export.fgb, plain `/vsicurl/` URL"] = qgis([script, M, "parcels", "--only-ogr", "--ogr-url", fgb], 600)
            q["export.fgb, `/vsicurl_streaming/`"] = qgis([script, M, "parcels", "--only-ogr", "--ogr-url",
                                                         f"/vsicurl_streaming/{fgb}"], 600)
            q["vector tiles + MapLibre style URL, whole extent rendered (1280×900)"] = qgis(
                [str(ROOT / "bench" / "qgis_tiles.py"), M, "parcels", "--style"], 600)
            for k in list(q)[1:]:
                print("qgis", k, q[k], flush=True)
            budget = a.tipg_qgis_timeout
            if a.end_by:
                import datetime as dt

                now = dt.datetime.now(dt.timezone.utc)
                end = dt.datetime.combine(now.date(), dt.time.fromisoformat(a.end_by), dt.timezone.utc)
                budget = max(30.0, min(budget, (end - now).total_seconds() - 20))
            q["OAPIF from tipg (QGIS defaults)"] = qgis([script, T, "public.bench_parcels"], budget)
            print("qgis tipg", q["OAPIF from tipg (QGIS defaults)"], flush=True)
    finally:
        for p in procs:
            stop(p)
        cleanup()
    load1 = os.getloadavg()[0]
    section = _markdown(a, started, load0, load1, pub, res, prof, plans, q)
    if a.json:
        Path(a.json).write_text(json.dumps({"publish": pub, "results": res, "profile": prof, "explain": plans,
                                            "qgis": q, "load": [load0, load1], "started": started},
                                           ensure_ascii=False, indent=1, default=str))
    print(section)
    if not a.no_write:
        replace_section(section)


def _fmt(r: dict) -> str:
    if r["rps"] == 0:
        return "failed"
    lat = f" ({r['p50']:.0f}/{r['p99']:.0f} ms)" if r.get("p50") is not None and r.get("p99") is not None else ""
    bad = f" [{r['non2xx']} non-2xx]" if r.get("non2xx") else ""
    return f"{r['rps']:,.0f}{lat}{bad}"


def _markdown(a, started, load0, load1, pub, res, prof, plans, q) -> str:
    lines = [SECTION, "",
             f"`bench/bench_serving.py --parcels {a.parcels} --seconds {a.seconds:g} --connections {a.connections}"
             f"{' --qgis' if a.qgis else ''}`, started {started}, in the quiet window; {CORES} cores; 1-minute load "
             f"average {load0:.1f} before / {load1:.1f} after. One database of {a.parcels:,} synthetic graded "
             "parcels; mujun (`uvicorn app.asgi:app`, workers = cores, httptools + uvloop, pool "
             f"{a.connections}) and tipg 1.6.1 (same worker count) on loopback; tipg serves a view with the same "
             "join and columns. Each row ran back to back: wrk (2 threads, "
             f"{a.connections} keep-alive connections, {a.seconds:g} s) against mujun, then tipg, then pgbench "
             f"({a.connections} connections, prepared) running mujun's statements: *dynamic* = what every request "
             "ran before issue 17 (the old SQL ceiling), *cached* = the read that serves it now (`feature_cache`, "
             "`tile_cache`). Requests (or transactions) per second, (p50/p99 latency) for wrk, mean latency for "
             "pgbench.", "",
             "| scenario | mujun | tipg | SQL dynamic (pgbench) | SQL cached read (pgbench) | mujun / tipg | "
             "mujun / dynamic SQL |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in res.items():
        m, t, d, c = r["mujun"], r["tipg"], r["sql_dynamic"], r["sql_cached"]
        lines.append(f"| {name} | {_fmt(m)} | {_fmt(t)} | {_fmt(d)} | {_fmt(c)} | "
                     f"{m['rps'] / t['rps']:.1f}× | {m['rps'] / d['rps']:.1f}× |" if t["rps"] and d["rps"] else
                     f"| {name} | {_fmt(m)} | {_fmt(t)} | {_fmt(d)} | {_fmt(c)} | – | – |")
    lines += ["", "Publish (render once) on this table (tiles on 2 connections, the features on one): public tile pyramid z0–16 "
              f"{pub['tiles']:,} tiles in {pub['tiles_s']:.1f} s ({pub['tiles_mvt_mb']:.1f} MB of MVT, `tile_cache` "
              f"{pub['tile_cache_mb']:.1f} MB on disk with {pub['tile_rows']:,} rows); "
              f"feature cache (parcels, {pub['classes']} visibility classes, {pub['features']:,} features) in "
              f"{pub['features_s']:.1f} s ({pub['feature_text_mb']:.1f} MB of GeoJSON text, `feature_cache` "
              f"{pub['feature_cache_mb']:.1f} MB on disk).", "",
              "`EXPLAIN ANALYZE` execution time of the statements (ms, warm, one run): " +
              "; ".join(f"{n.split(' (')[0]}: dynamic {p.get('dynamic')}, cached {p.get('cached')}"
                        for n, p in plans.items()) + ".", ""]
    if prof:
        lines += ["py-spy (`record --nonblocking`, 250 Hz) on each of mujun's workers during a further wrk run of "
                  "the scenario: how busy the workers were, then the share of their busy samples by where the "
                  "innermost Python frame was.", ""]
        for name, buckets in prof.items():
            lines.append(f"- {name}: " + ", ".join(f"{k} {v:.0f} %" for k, v in buckets[:7]))
        lines.append("")
    if q:
        lines += ["QGIS 3.22 (headless `/usr/bin/python3`, wall time of the process incl. ~2 s start-up) loading "
                  f"the {a.parcels:,} parcels, same servers, this run:", "",
                  "| route | s | QGIS's own CPU s | features | note |", "|---|---:|---:|---:|---|"]
        for k, v in q.items():
            cpu = f"{v['cpu']:.1f}" if v.get("cpu") is not None else "–"
            lines.append(f"| {k} | {v['s']:.1f} | {cpu} | "
                         f"{v.get('features') if v.get('features') is not None else '–'} | "
                         f"{(v.get('error') or '')[:120]} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
