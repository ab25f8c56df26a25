"""The province on Dask (``app.province.run_province``) against the single process
(``app.province.run_single``): wall time, speed-up, peak memory per worker.

    .venv/bin/python bench/bench_dask.py --bundle /tmp/h_bench/prov100k --workers 1,2

The bundle is a GeoParquet province as ``mujun sample --fmt parquet`` writes it (one row group
per county of 2,000 parcels; 4 enterprises per parcel by default).  Each case runs in its own
process tree:

* single: ``run_single`` in a child process; its peak RSS from ``wait4`` (``ru_maxrss``);
* dask N: a ``LocalCluster`` of N single-threaded worker *processes* started first (start-up
  reported apart, not in the wall time); the run's wall time from submitting the graph to the
  last county written; each worker's peak RSS sampled every 50 ms (``psutil``, the worker
  process and its children) — the scheduler and this driver are not counted.

Both runs produce the same tables (links, shares, identity codes, merged land, apportioned
figures, ratings); the bench checks the links and ratings are identical.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_single_child(bundle: str, year: int, out: str) -> dict:
    code = f"""
import json, time, pickle
from app.province import run_single
t = time.perf_counter()
res = run_single({bundle!r}, {year})
wall = time.perf_counter() - t
for k in ("links", "enterprise_ratings", "parcel_ratings"):
    res[k].drop(columns="geometry", errors="ignore").to_parquet({out!r} + "/" + k + ".parquet")
print(json.dumps({{"wall": wall, "rows": {{k: len(v) for k, v in res.items()}}}}))
"""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    stdout = p.stdout.read()
    if status != 0:
        raise SystemExit(f"single process failed ({status})")
    info = json.loads(stdout.strip().splitlines()[-1])
    info["wall_total"] = time.perf_counter() - t
    info["peak_mib"] = usage.ru_maxrss / 1024
    return info


def run_dask(bundle: str, year: int, workers: int, out: str) -> dict:
    import psutil
    from distributed import Client, LocalCluster

    from app.province import run_province

    t = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           memory_limit=0)
    client = Client(cluster)
    startup = time.perf_counter() - t
    pids = list(client.run(os.getpid).values())
    procs = [psutil.Process(p) for p in pids]
    peak = {p: 0 for p in pids}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for proc in procs:
                try:
                    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                    peak[proc.pid] = max(peak[proc.pid], rss)
                except psutil.Error:
                    pass
            stop.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        report = run_province(bundle, year, out, client=client)
    finally:
        stop.set()
        th.join()
        client.close()
        cluster.close()
    return {"wall": report.seconds, "startup": startup, "rows": report.rows,
            "peak_mib": sorted(round(v / 2**20) for v in peak.values())}


def same(single_dir: str, dask_out: str) -> bool:
    import pandas as pd

    from app.province import read_outputs

    got = read_outputs(dask_out)
    for k in ("links", "enterprise_ratings", "parcel_ratings"):
        a = pd.read_parquet(Path(single_dir) / f"{k}.parquet")
        b = pd.DataFrame(got[k]).drop(columns="geometry", errors="ignore")
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True, check_dtype=False)
        except AssertionError as exc:
            print(f"  {k} differ: {str(exc)[:300]}")
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--year", type=int, default=2024)
    ap.add_argument("--workers", default="1,2")
    a = ap.parse_args()
    import pyarrow.parquet as pq

    n_par = pq.ParquetFile(Path(a.bundle) / "parcels.parquet").metadata.num_rows
    n_ent = pq.ParquetFile(Path(a.bundle) / "enterprises.parquet").metadata.num_rows
    counties = pq.ParquetFile(Path(a.bundle) / "parcels.parquet").num_row_groups
    print(f"province: {n_par} parcels, {n_ent} enterprises, {counties} counties; load {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_dask_"))
    (tmp / "single").mkdir()
    s = run_single_child(a.bundle, a.year, str(tmp / "single"))
    print(f"single process: {s['wall']:.1f} s (process {s['wall_total']:.1f} s incl. imports), "
          f"peak {s['peak_mib']:.0f} MiB", flush=True)
    rows = []
    for w in [int(x) for x in a.workers.split(",")]:
        d = run_dask(a.bundle, a.year, w, str(tmp / f"dask{w}"))
        ok = same(str(tmp / "single"), str(tmp / f"dask{w}"))
        print(f"dask {w} worker(s): {d['wall']:.1f} s (cluster start {d['startup']:.1f} s), speed-up "
              f"{s['wall'] / d['wall']:.2f}×, worker peaks {d['peak_mib']} MiB, identical: {ok}; "
              f"load {os.getloadavg()}", flush=True)
        rows.append((w, d, ok))
    print("\n| run | wall s | speed-up vs single | peak MiB (per process) | identical |")
    print("|---|---:|---:|---|---|")
    print(f"| single process | {s['wall']:.1f} | 1.00× | {s['peak_mib']:.0f} | — |")
    for w, d, ok in rows:
        print(f"| Dask, {w} worker{'s' if w > 1 else ''} | {d['wall']:.1f} | {s['wall'] / d['wall']:.2f}× | "
              f"{' / '.join(str(p) for p in d['peak_mib'])} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
