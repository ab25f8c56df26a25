"""The pure spatial pipeline against the same matching in PostGIS SQL, county to province.

    .venv/bin/python bench/bench_pipeline.py --sizes 2000,100000,500000
    .venv/bin/python bench/bench_pipeline.py --sizes 20000:150000 --baseline-rev HEAD --no-sql

Data: the province generator (``spatial.synthetic`` via ``app.sample.write_sample_bundle``,
``fmt='parquet'``, seed 0) written once to ``--data-dir`` and reused; chunk *i* of a province
is county *i* whatever the province size, so a size of *n* parcels reads the first n / 2000
county row groups of the largest bundle.  Parcels, buildings and de-facto land are projected
from EPSG:4490 to EPSG:4549 (CGCS2000 GK 120°E), enterprises from their delivered lon/lat
(GCJ-02 rows converted with ``spatial.crs.to_cgcs2000``).  Generating and reading the data is
not timed.

A size is ``PARCELS`` or ``PARCELS:ENTERPRISES``.  Without an enterprise count, the county
(2000 parcels) keeps what the generator gives (7.5 per parcel = 15 000) and a larger size keeps
``--ent-per-parcel`` (default 4, the design target of 500k parcels / 2M enterprises) per
parcel: a fixed random subset of the enterprises, with their metrics, leases and corrections.

Per size, in one process, side by side:

* pure: ``build_land``, ``match_enterprises`` (buildings, leases, corrections as delivered),
  ``split_shares``, ``enterprise_land`` + ``apportion_metrics``; and the spatial core of
  matching alone (``spatial.match._spatial_links`` without buildings: point-in-polygon, then
  nearest land within 30 m for the points on no land), which is what the SQL does;
* SQL (embedded PostgreSQL + PostGIS, ``app.embedded``): land and enterprise points loaded
  once with COPY (EWKB, EPSG:4549; load time reported apart), GiST indexes (time reported),
  then ``ST_Intersects`` point-in-polygon with a LATERAL ... ORDER BY area, code LIMIT 1, and
  for the points left, ``ST_DWithin(30 m)`` + ``ORDER BY <->, area, code LIMIT 1``;
* agreement: the same (enterprise → identity_code) link from both, in % of points.

Memory: peak RSS of this process per phase (a 20 ms sampling thread on /proc/self/status;
inputs included, and the growth over the RSS before the phase), and for PostgreSQL the peak of
the summed private RSS (RssAnon) of all server processes during the queries, plus its
shared_buffers.  ``--baseline-rev REV`` also runs the pipeline modules of git revision REV
(identity, match, split, apportion) on the same data and checks the outputs are identical.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import geopandas as gpd  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import shapely  # noqa: E402

from spatial.crs import normalize_coord_sys, to_cgcs2000  # noqa: E402

METRIC = 4549
TOL = 30.0
COUNTY = 2000
PIPELINE_MODULES = ("identity", "match", "split", "apportion")


# --------------------------------------------------------------------------- memory

def _rss_kib(pid: int | str = "self", field: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _children(ppid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.append(int(d))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    return out


class Peak:
    """Peak RSS of this process (and optionally the PostgreSQL server) while the block runs."""

    def __init__(self, pg_pid: int | None = None, every: float = 0.02, collect: bool = True):
        self.pg_pid, self.every, self.collect = pg_pid, every, collect

    def __enter__(self):
        if self.collect:
            gc.collect()
        self.before = _rss_kib()
        self.peak = self.before
        self.pg_peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        pg_procs, last = [], 0.0
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kib())
            if self.pg_pid:
                now = time.monotonic()
                if now - last > 0.5:  # parallel workers come and go
                    pg_procs, last = [self.pg_pid] + _children(self.pg_pid), now
                self.pg_peak = max(self.pg_peak, sum(_rss_kib(p, "RssAnon") for p in pg_procs))
            self._stop.wait(self.every)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_kib())

    @property
    def mib(self) -> float:
        return self.peak / 1024

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.before) / 1024


# --------------------------------------------------------------------------- data

def _bundle(data_dir: Path, seed: int, parcels: int) -> Path:
    """A complete parquet province bundle with at least ``parcels`` parcels (generated once)."""
    have = []
    for d in data_dir.glob(f"province_seed{seed}_*"):
        m = re.fullmatch(rf"province_seed{seed}_(\d+)", d.name)
        if m and (d / ".complete").exists() and int(m.group(1)) >= parcels:
            have.append((int(m.group(1)), d))
    if have:
        return min(have)[1]
    from app.sample import write_sample_bundle

    n = max(parcels, COUNTY)
    out = data_dir / f"province_seed{seed}_{n}"
    print(f"generating {n} parcels into {out} (once; not timed) ...", flush=True)
    t = time.perf_counter()
    info = write_sample_bundle(out, seed=seed, parcels=n, fmt="parquet")
    (out / ".complete").write_text(json.dumps(info["counts"]))
    print(f"  generated in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def _read(path: Path, n_groups: int) -> pd.DataFrame:
    f = pq.ParquetFile(path)
    assert f.num_row_groups >= n_groups, (path, f.num_row_groups, n_groups)
    return f.read_row_groups(list(range(n_groups))).to_pandas()


def _geo(df: pd.DataFrame) -> gpd.GeoDataFrame:
    g = gpd.GeoDataFrame(df.drop(columns="geometry"), geometry=shapely.from_wkb(df["geometry"].to_numpy()),
                         crs=4490)
    return g.to_crs(METRIC)


def load_inputs(bundle: Path, parcels: int, enterprises: int | None, ent_per_parcel: float, seed: int):
    n_groups = math.ceil(parcels / COUNTY)
    p = _read(bundle / "parcels.parquet", n_groups).iloc[:parcels]
    codes = set(p["parcel_code"])
    parcels_g = _geo(p)
    b = _read(bundle / "buildings.parquet", n_groups)
    b = b[b["parcel_code"].isin(codes)]
    buildings = _geo(b.reset_index(drop=True))
    defacto = _geo(_read(bundle / "defacto.parquet", n_groups))
    e = _read(bundle / "enterprises.parquet", n_groups)
    if enterprises is None and parcels > COUNTY:
        enterprises = int(round(parcels * ent_per_parcel))
    if enterprises is not None and enterprises < len(e):
        keep = np.sort(np.random.default_rng(seed).choice(len(e), enterprises, replace=False))
        e = e.iloc[keep].reset_index(drop=True)
    cs = e["coord_sys"].astype(object).map(lambda v: normalize_coord_sys(v) if pd.notna(v) else None)
    lon = e["lon"].to_numpy(float)
    lat = e["lat"].to_numpy(float)
    ok = ~np.isnan(lon) & ~np.isnan(lat) & cs.notna().to_numpy()
    x, y = np.full(len(e), np.nan), np.full(len(e), np.nan)
    x[ok], y[ok] = to_cgcs2000(lon[ok], lat[ok], cs.to_numpy(dtype=object)[ok])
    geom = np.full(len(e), None, dtype=object)
    geom[ok] = shapely.points(x[ok], y[ok])
    ents = gpd.GeoDataFrame(e[["uscc", "name", "township"]], geometry=geom, crs=4490).to_crs(METRIC)
    usccs = set(e["uscc"])
    metrics = _read(bundle / "metrics.parquet", n_groups)
    metrics = metrics[metrics["uscc"].isin(usccs)].reset_index(drop=True)
    leases = _read(bundle / "leases.parquet", n_groups)
    leases = leases[leases["tenant_uscc"].isin(usccs)].reset_index(drop=True)
    corr = _read(bundle / "corrections.parquet", n_groups)
    corr = corr[corr["uscc"].isin(usccs)].reset_index(drop=True)
    return dict(parcels=parcels_g, defacto=defacto, buildings=buildings, enterprises=ents,
                metrics=metrics, leases=leases, corrections=corr)


# --------------------------------------------------------------------------- pipeline

def pipeline_modules(rev: str | None):
    """The pipeline modules: the working tree, or those of git revision ``rev`` (as a copy)."""
    if rev is None:
        return {m: importlib.import_module(f"spatial.{m}") for m in PIPELINE_MODULES}
    pkg = f"spatial_rev_{re.sub(r'[^0-9A-Za-z]', '_', rev)}"
    d = Path(tempfile.mkdtemp(prefix="bench_rev_")) / pkg
    d.mkdir()
    (d / "__init__.py").write_text("")
    for m in PIPELINE_MODULES:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:spatial/{m}.py"],
                             check=True, capture_output=True, text=True).stdout
        for other in PIPELINE_MODULES:
            src = src.replace(f"from spatial.{other} import", f"from {pkg}.{other} import")
        (d / f"{m}.py").write_text(src)
    sys.path.insert(0, str(d.parent))
    return {m: importlib.import_module(f"{pkg}.{m}") for m in PIPELINE_MODULES}


def run_pure(mods, data, county_code="330999"):
    ident, match, split, app = (mods[m] for m in PIPELINE_MODULES)
    times, peaks, out = {}, {}, {}
    with Peak() as pk:
        with Peak(collect=False) as p:
            land = ident.build_land(data["parcels"], data["defacto"], county_code=county_code)
        times["build_land"], peaks["build_land"] = p.seconds, p.mib
        with Peak(collect=False) as p:
            links = match.match_enterprises(land, data["enterprises"], buildings=data["buildings"],
                                            leases=data["leases"], corrections=data["corrections"],
                                            snap_tolerance_m=TOL)
        times["match_enterprises"], peaks["match_enterprises"] = p.seconds, p.mib
        with Peak(collect=False) as p:
            shares = split.split_shares(links, land, buildings=data["buildings"])
        times["split_shares"], peaks["split_shares"] = p.seconds, p.mib
        with Peak(collect=False) as p:
            el = app.enterprise_land(shares, land, data["enterprises"])
            am = app.apportion_metrics(data["metrics"], shares)
        times["apportion"], peaks["apportion"] = p.seconds, p.mib
    times["total"], peaks["total"] = pk.seconds, pk.mib
    out.update(land=land, links=links, shares=shares, enterprise_land=el, apportioned=am)
    # the spatial core of matching alone (what the SQL does): point-in-polygon + snap
    ent = data["enterprises"].reset_index(drop=True)
    uscc = ident._str(ent["uscc"])
    with Peak() as p:
        core = match._spatial_links(land, ent, uscc, None, TOL)
    times["spatial_core"], peaks["spatial_core"] = p.seconds, p.mib
    peaks["spatial_core_delta"] = p.delta_mib
    out["core"] = core
    return times, peaks, out


def same_frames(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(pd.DataFrame(a).reset_index(drop=True),
                                      pd.DataFrame(b).reset_index(drop=True), check_exact=True)
        return True
    except AssertionError as exc:
        print("    differs:", str(exc)[:300])
        return False


# --------------------------------------------------------------------------- SQL

class Sql:
    def __init__(self, pg_dir: Path):
        from app.embedded import EmbeddedCluster

        pg_dir.parent.mkdir(parents=True, exist_ok=True)
        for p in [pg_dir.parent, *pg_dir.parent.parents]:
            if p != Path("/") and p.exists() and p.stat().st_mode & 0o005 != 0o005:
                os.chmod(p, p.stat().st_mode | 0o055)
        self.cluster = EmbeddedCluster(pg_dir, durable=False)
        url = self.cluster.ensure_running().replace("postgresql+psycopg://", "postgresql://")
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.pid = self.cluster.status().pid
        self.settings = {k: self.q1(f"SHOW {k}") for k in (
            "shared_buffers", "work_mem", "maintenance_work_mem", "max_parallel_workers_per_gather",
            "server_version")}
        self.settings["postgis"] = self.q1("SELECT postgis_lib_version()")

    def q1(self, sql, *args):
        with self.conn.cursor() as c:
            c.execute(sql, args or None)
            return c.fetchone()[0]

    def ex(self, sql):
        with self.conn.cursor() as c:
            c.execute(sql)

    def _copy(self, table: str, cols: str, frame: pd.DataFrame, chunk: int = 200_000):
        with self.conn.cursor() as c, c.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
            for i in range(0, len(frame), chunk):
                buf = io.StringIO()
                frame.iloc[i:i + chunk].to_csv(buf, sep="\t", header=False, index=False)
                cp.write(buf.getvalue())

    @staticmethod
    def _ewkb(geoms) -> np.ndarray:
        return shapely.to_wkb(shapely.set_srid(np.asarray(geoms, dtype=object), METRIC), hex=True,
                              include_srid=True)

    def load(self, land: gpd.GeoDataFrame, pts: gpd.GeoDataFrame):
        """Tables land (id, identity_code, area_r, geom) and ent (id, geom): COPY, then analyse."""
        self.ex("DROP TABLE IF EXISTS bench_land, bench_ent, bench_pip, bench_snap")
        self.ex(f"CREATE UNLOGGED TABLE bench_land (id int PRIMARY KEY, identity_code text COLLATE \"C\", "
                f"area_r float8, geom geometry(Geometry, {METRIC}))")
        self.ex(f"CREATE UNLOGGED TABLE bench_ent (id int PRIMARY KEY, geom geometry(Point, {METRIC}))")
        # the pure side breaks ties on the area rounded to 1 mm² and on the code (byte order)
        self._copy("bench_land", "id, identity_code, area_r, geom", pd.DataFrame({
            "id": np.arange(len(land)), "code": land["identity_code"].to_numpy(dtype=object),
            "a": np.round(land["area_m2"].to_numpy(float), 3), "g": self._ewkb(land.geometry.to_numpy())}))
        self._copy("bench_ent", "id, geom", pd.DataFrame({
            "id": np.arange(len(pts)), "g": self._ewkb(pts.geometry.to_numpy())}))

    def index(self):
        self.ex("CREATE INDEX bench_land_gix ON bench_land USING gist (geom)")
        self.ex("CREATE INDEX bench_ent_gix ON bench_ent USING gist (geom)")
        self.ex("ANALYZE bench_land")
        self.ex("ANALYZE bench_ent")

    def match(self) -> dict:
        t = {}
        t0 = time.perf_counter()
        self.ex("DROP TABLE IF EXISTS bench_pip, bench_snap")
        # point in polygon (boundary included, as the pure sjoin 'intersects'); ties: smallest
        # piece, then code.  Land is the outer loop (LATERAL + OFFSET 0 keeps the planner from
        # flattening it into a point-outer nested loop): each polygon probes the point index and
        # PostGIS reuses the prepared polygon for its points — measured 3.5x faster than the
        # point-outer plan the planner picks for a plain join, and 9x faster than a LATERAL
        # LIMIT 1 per point (20k parcels / 150k points).
        self.ex("""
            CREATE UNLOGGED TABLE bench_pip AS
            SELECT DISTINCT ON (e.id) e.id, l.identity_code
            FROM bench_land l
            CROSS JOIN LATERAL (
                SELECT e.id FROM bench_ent e WHERE ST_Intersects(l.geom, e.geom) OFFSET 0) e
            ORDER BY e.id, l.area_r, l.identity_code""")
        self.ex("ALTER TABLE bench_pip ADD PRIMARY KEY (id)")
        t["pip"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the points on no land: nearest land within the tolerance; ties: area, then code
        self.ex(f"""
            CREATE UNLOGGED TABLE bench_snap AS
            SELECT e.id, m.identity_code, m.d
            FROM bench_ent e
            CROSS JOIN LATERAL (
                SELECT l.identity_code, ST_Distance(l.geom, e.geom) AS d FROM bench_land l
                WHERE ST_DWithin(l.geom, e.geom, {TOL})
                ORDER BY l.geom <-> e.geom, l.area_r, l.identity_code LIMIT 1) m
            WHERE NOT EXISTS (SELECT 1 FROM bench_pip p WHERE p.id = e.id)""")
        t["snap"] = time.perf_counter() - t0
        return t

    def fetch(self) -> pd.DataFrame:
        with self.conn.cursor() as c:
            c.execute("SELECT id, identity_code, 'point_in_polygon' FROM bench_pip "
                      "UNION ALL SELECT id, identity_code, 'snap' FROM bench_snap")
            rows = c.fetchall()
        return pd.DataFrame(rows, columns=["id", "identity_code", "method"])

    def table_mib(self) -> float:
        return self.q1("SELECT (pg_total_relation_size('bench_land') + pg_total_relation_size('bench_ent'))"
                       "::float8 / 2^20")

    def close(self):
        self.ex("DROP TABLE IF EXISTS bench_land, bench_ent, bench_pip, bench_snap")
        self.conn.close()


def run_sql(sql: Sql, land, data, core) -> dict:
    ent = data["enterprises"].reset_index(drop=True)
    geom = ent.geometry
    has_pt = (geom.notna() & ~geom.is_empty & ent["uscc"].notna()).to_numpy()
    pts = gpd.GeoDataFrame({"uscc": ent["uscc"].to_numpy()[has_pt]}, geometry=geom.to_numpy()[has_pt],
                           crs=METRIC)
    r = {"points": len(pts)}
    t = time.perf_counter()
    sql.load(land, pts)
    r["load"] = time.perf_counter() - t
    t = time.perf_counter()
    sql.index()
    r["index"] = time.perf_counter() - t
    r["table_mib"] = sql.table_mib()
    with Peak(pg_pid=sql.pid) as p:
        r.update(sql.match())
    r["query"], r["py_peak_mib"], r["pg_anon_peak_mib"] = p.seconds, p.mib, p.pg_peak / 1024
    t = time.perf_counter()
    res = sql.fetch()
    r["fetch"] = time.perf_counter() - t
    # agreement: per point, the same identity_code (or both none)
    sql_code = np.full(len(pts), None, dtype=object)
    sql_code[res["id"].to_numpy()] = res["identity_code"].to_numpy(dtype=object)
    pure = pd.Series(core["identity_code"].to_numpy(dtype=object),
                     index=core["uscc"].to_numpy(dtype=object))
    pure = pure[~pure.index.duplicated()]  # one spatial link per enterprise point
    pure_code = pure.reindex(pts["uscc"].to_numpy(dtype=object)).to_numpy(dtype=object)
    a, b = pd.isna(pure_code), pd.isna(sql_code)
    same = (a & b) | (~a & ~b & (pure_code == sql_code))
    r["agree_pct"] = 100.0 * same.mean() if len(same) else 100.0
    r["disagree"] = int((~same).sum())
    r["linked_pure"], r["linked_sql"] = int((~a).sum()), int((~b).sum())
    r["snap_sql"] = int((res["method"] == "snap").sum())
    if (~same).any():
        i = np.flatnonzero(~same)[:5]
        r["examples"] = [(str(pts["uscc"].iloc[k]), pure_code[k], sql_code[k]) for k in i]
    return r


# --------------------------------------------------------------------------- main

def parse_sizes(s: str):
    out = []
    for part in s.split(","):
        p, _, e = part.strip().partition(":")
        out.append((int(p), int(e) if e else None))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,100000,500000", help="PARCELS[:ENTERPRISES],...")
    ap.add_argument("--ent-per-parcel", type=float, default=4.0,
                    help="enterprises per parcel above one county (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/mujun_bench"))
    ap.add_argument("--pg-dir", type=Path, default=Path("/tmp/mujun_bench/pg"))
    ap.add_argument("--no-sql", action="store_true")
    ap.add_argument("--baseline-rev", help="also run the pipeline modules of this git revision")
    ap.add_argument("--baseline-max", type=int, default=100_000,
                    help="run the baseline only up to this many parcels (default 100000)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the pure pipeline (and baseline) this many times, alternating, keep the fastest")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()
    sizes = parse_sizes(a.sizes)
    a.data_dir.mkdir(parents=True, exist_ok=True)
    bundle = _bundle(a.data_dir, a.seed, max(p for p, _ in sizes))
    mods = pipeline_modules(None)
    base = pipeline_modules(a.baseline_rev) if a.baseline_rev else None
    sql = None if a.no_sql else Sql(a.pg_dir)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}, bundle {bundle}")
    if sql:
        print("postgres:", sql.settings)
    results = []
    for parcels, n_ent in sizes:
        data = load_inputs(bundle, parcels, n_ent, a.ent_per_parcel, a.seed)
        n_e = len(data["enterprises"])
        print(f"\n== {parcels} parcels, {n_e} enterprises, {len(data['buildings'])} buildings, "
              f"{len(data['defacto'])} de-facto, {len(data['leases'])} leases "
              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        res = {"parcels": parcels, "enterprises": n_e, "load_avg_start": os.getloadavg()}
        with_base = base is not None and parcels <= a.baseline_max
        runs, out, bout = {"now": [], "base": []}, None, None
        for rep in range(a.repeat):
            # alternate the order: whoever runs first pays for warming caches up
            for who in (("now", "base") if rep % 2 == 0 else ("base", "now")):
                if who == "base" and not with_base:
                    continue
                if who == "now":  # free the previous output of this side first
                    out = None
                else:
                    bout = None
                t_, p_, o_ = run_pure(mods if who == "now" else base, data)
                runs[who].append((t_, p_))
                if who == "now":
                    out = o_
                else:
                    bout = o_
                del o_
                gc.collect()

        def best(rs):  # fastest of the repeats per step; peak memory: the largest seen
            return ({k: min(r[0][k] for r in rs) for k in rs[0][0]},
                    {k: max(r[1][k] for r in rs) for k in rs[0][1]})

        times, peaks = best(runs["now"])
        res["pure"] = {"times": times, "peaks_mib": peaks, "land": len(out["land"]), "links": len(out["links"]),
                       "core_links": len(out["core"]), "repeat": a.repeat}
        print(f"  pure: land={len(out['land'])} links={len(out['links'])}"
              + (f" (fastest of {a.repeat})" if a.repeat > 1 else ""))
        for k, v in times.items():
            print(f"    {k:18s} {v:8.2f} s   peak RSS {peaks[k]:7.0f} MiB")
        if with_base:
            bt, bp = best(runs["base"])
            same = {k: same_frames(out[k], bout[k]) for k in ("land", "links", "shares",
                                                             "enterprise_land", "apportioned", "core")}
            res["baseline"] = {"rev": a.baseline_rev, "times": bt, "peaks_mib": bp, "identical": same}
            print(f"  baseline {a.baseline_rev}: identical outputs {same}")
            for k, v in bt.items():
                print(f"    {k:18s} {v:8.2f} s   peak RSS {bp[k]:7.0f} MiB   (now {times[k]:.2f} s, "
                      f"{v / max(times[k], 1e-9):.1f}x)")
            del bout
        if sql:
            r = run_sql(sql, out["land"], data, out["core"])
            res["sql"] = r
            print(f"  sql: {r['points']} points; load {r['load']:.2f} s, index {r['index']:.2f} s "
                  f"(tables+indexes {r['table_mib']:.0f} MiB); query {r['query']:.2f} s "
                  f"(pip {r['pip']:.2f} + snap {r['snap']:.2f}), fetch {r['fetch']:.2f} s; "
                  f"PG private RSS peak {r['pg_anon_peak_mib']:.0f} MiB")
            print(f"  pure spatial core {times['spatial_core']:.2f} s vs SQL query {r['query']:.2f} s: "
                  f"SQL/pure = {r['query'] / times['spatial_core']:.2f}; agreement {r['agree_pct']:.4f} % "
                  f"({r['disagree']} differ; linked pure {r['linked_pure']}, sql {r['linked_sql']})")
            if r.get("examples"):
                print("    e.g.", r["examples"])
        res["load_avg_end"] = os.getloadavg()
        results.append(res)
        del data, out
        gc.collect()
    if sql:
        sql.close()
    print("\n== growth (seconds per 1000 enterprises; n log n would grow by log n)")
    for r in results:
        k = r["enterprises"] / 1000
        line = (f"  {r['parcels']:>7} parcels / {r['enterprises']:>8} ent: match_enterprises "
                f"{r['pure']['times']['match_enterprises'] / k:.4f}, pure total {r['pure']['times']['total'] / k:.4f}, "
                f"spatial core {r['pure']['times']['spatial_core'] / k:.4f}")
        if "sql" in r:
            line += f", SQL query {r['sql']['query'] / k:.4f}"
        print(line + f"; log2(n) = {math.log2(r['enterprises']):.1f}")
    print(f"peak RSS of the whole run {_max_rss_mib():.0f} MiB; load average {os.getloadavg()}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))


def _max_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
