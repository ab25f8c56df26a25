"""The province on Dask (``app.province.run_province``) against the single process
(``app.province.run_single``): wall time, speed-up, peak memory per process, where the time goes.

    .venv/bin/python bench/bench_dask.py --bundle /work/bench_data/p500k --workers 1,2 --profile
    .venv/bin/python bench/bench_dask.py --bundle /work/bench_data/p2m --workers 2 --single-limit-gib 8

The bundle is a GeoParquet province as ``mujun sample --fmt parquet`` writes it (one row group
per county of 2,000 parcels; 4 enterprises per parcel by default).  Each case runs in its own
process tree, one after the other:

* single: ``run_single`` in a child process; its peak RSS sampled every 50 ms (``psutil``) and
  from ``wait4`` (``ru_maxrss``); its time per step from wrappers around the steps.  With
  ``--single-limit-gib G`` the child runs in a memory cgroup of G GiB (cgroup v2 ``memory.max``
  or v1 ``memory.limit_in_bytes``; the kernel's OOM killer ends it, as on a machine or container
  of G GiB without swap) and the bench reports the step it was in; where no cgroup can be made
  (not root) it kills the child when its sampled RSS passes G GiB instead;
  ``--no-single`` skips it (compare with an earlier run's output: ``--reference DIR``).
* dask N: a ``LocalCluster`` of N single-threaded worker *processes* started first (start-up
  reported apart, not in the wall time); the run's wall time from submitting the graph to the
  last county written; each worker's peak RSS (the process and its children), and this process's
  (the client and the scheduler of the LocalCluster), sampled every 50 ms; the compute seconds
  per stage from the Dask task stream.
* ``--profile``: py-spy (``pip install py-spy``) samples the single process and every worker at
  50 Hz; the samples are summed per step (inclusive), so both runs show where their time goes.

Both runs must produce identical tables: every column of every output table (links, shares,
identity codes, sub-lots, merged land, apportioned figures, both ratings) is compared exactly.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Steps reported (a function name seen in a sample's stack; the innermost listed one counts).
STEPS = ["read_county", "county_bounds", "_land", "_write_scratch", "county_keys", "_neighbours", "_load",
         "_figures", "halo", "match_enterprises", "split_shares", "sublot_geometries", "enterprise_land",
         "apportion_metrics", "_ratings", "_write", "_canonical"]

SINGLE = """
import json, sys, time, pickle
import app.province as P
for name in ("read_county", "_land", "_match", "sublot_geometries", "enterprise_land", "apportion_metrics",
             "_ratings", "_canonical"):
    def wrap(f, name=name):
        def g(*a, **k):
            print("step", name, flush=True, file=sys.stderr)
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                STEPS[name] = STEPS.get(name, 0.0) + time.perf_counter() - t
        return g
    setattr(P, name, wrap(getattr(P, name)))
STEPS = {}
t = time.perf_counter()
res = P.run_single(sys.argv[1], int(sys.argv[2]))
wall = time.perf_counter() - t
for k, v in res.items():
    v.to_parquet(sys.argv[3] + "/" + k + ".parquet")
print(json.dumps({"wall": wall, "steps": STEPS, "rows": {k: len(v) for k, v in res.items()}}))
"""


class Peaks:
    """Peak RSS of some processes, sampled every 50 ms; ``children``: add the RSS of those
    processes' children; ``limit`` (bytes): kill a process (group) whose RSS passes it."""

    def __init__(self, pids: dict[str, int], limit: int | None = None, children: bool = True):
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: 0 for name in pids}
        self.limit, self.killed, self.children = limit, None, children
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import psutil

        while not self.stop.is_set():
            for name, proc in self.procs.items():
                try:
                    kids = [c for c in proc.children(recursive=True) if "py-spy" not in c.name()] \
                        if self.children else []
                    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in kids)
                except psutil.Error:
                    continue
                self.peak[name] = max(self.peak[name], rss)
                if self.limit and rss > self.limit and self.killed is None:
                    self.killed = (name, rss, time.monotonic())
                    os.killpg(proc.pid, signal.SIGKILL)
            self.stop.wait(0.05)

    def close(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        return {k: v / 2**20 for k, v in self.peak.items()}


class Spy:
    """py-spy sampling processes at 50 Hz (raw collapsed stacks), summed per step."""

    RATE = 50

    def __init__(self, pids: list[int], out: Path):
        self.files = [out / f"spy_{p}.txt" for p in pids]
        self.procs = [subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(p),
                                        "--rate", str(self.RATE), "--format", "raw", "--nonblocking",
                                        "--output", str(f)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for p, f in zip(pids, self.files)]

    def close(self) -> dict[str, float]:
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            p.wait(timeout=120)
        seconds: collections.Counter = collections.Counter()
        for f in self.files:
            for line in f.read_text().splitlines() if f.exists() else []:
                stack, _, n = line.rpartition(" ")
                names = [fr.split(" (")[0] for fr in stack.split(";")]
                if not any(x.startswith(("run_single", "_task_", "county_bounds", "province_crs", "_neighbours"))
                           for x in names):
                    continue  # the worker's event loop, heartbeats, the scheduler: not a step
                step = next((x for x in reversed(names) if x in STEPS), "other")
                seconds[step] += int(n) / self.RATE
                seconds["total"] += int(n) / self.RATE
        return dict(seconds)


class MemoryCgroup:
    """A memory cgroup of ``limit`` bytes (v2, else v1) for one child process, no swap.

    ``enter`` is the child's ``preexec_fn``: the limit holds from its first allocation."""

    def __init__(self, limit: int):
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        name = f"mujun_bench_{os.getpid()}"
        if v2.exists():
            self.path, self.files = Path("/sys/fs/cgroup") / name, ("memory.max", "memory.peak", "memory.swap.max")
        else:
            self.path, self.files = Path("/sys/fs/cgroup/memory") / name, (
                "memory.limit_in_bytes", "memory.max_usage_in_bytes", "memory.memsw.limit_in_bytes")
        self.path.mkdir()
        (self.path / self.files[0]).write_text(str(limit))
        if (self.path / self.files[2]).exists():
            try:
                (self.path / self.files[2]).write_text("0" if v2.exists() else str(limit))
            except OSError:
                pass  # no swap accounting: the machine has no swap here anyway

    @classmethod
    def make(cls, limit: int) -> "MemoryCgroup | None":
        try:
            return cls(limit)
        except OSError:
            return None

    def enter(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> float | None:
        f = self.path / self.files[1]
        return int(f.read_text()) / 2**20 if f.exists() else None

    def oom_killed(self) -> bool:
        events = self.path / "memory.events"
        if events.exists():
            return any(line.split()[0] == "oom_kill" and int(line.split()[1]) > 0
                       for line in events.read_text().splitlines())
        ctl = self.path / "memory.oom_control"
        return ctl.exists() and any(line.startswith("oom_kill ") and int(line.split()[1]) > 0
                                    for line in ctl.read_text().splitlines())

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def run_single(bundle: str, year: int, out: Path, limit_gib: float | None, profile: bool, tmp: Path) -> dict:
    t = time.perf_counter()
    cg = MemoryCgroup.make(int(limit_gib * 2**30)) if limit_gib else None
    p = subprocess.Popen([sys.executable, "-c", SINGLE, bundle, str(year), str(out)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=cg.enter if cg else None)
    # without a cgroup the watchdog kills at the limit; with one the kernel does
    peaks = Peaks({"single": p.pid}, int(limit_gib * 2**30) if limit_gib and not cg else None)
    spy = Spy([p.pid], tmp) if profile else None
    last = [""]

    def follow():
        for line in p.stderr:
            if line.startswith("step "):
                last[0] = line.split()[1]

    th = threading.Thread(target=follow, daemon=True)
    th.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall_total = time.perf_counter() - t
    th.join(5)
    peak = peaks.close()["single"]
    steps = spy.close() if spy else {}
    if cg:
        oom, cg_peak = cg.oom_killed(), cg.peak()
        cg.remove()
        if oom or status == signal.SIGKILL:
            return {"killed": True, "by": f"OOM killer of a {limit_gib} GiB memory cgroup ({cg.path})",
                    "after": wall_total, "peak_mib": peak, "cgroup_peak_mib": cg_peak, "step": last[0],
                    "profile": steps}
    if peaks.killed:
        return {"killed": True, "by": f"RSS watchdog at {limit_gib} GiB (no cgroup could be made)",
                "after": wall_total, "peak_mib": peak, "step": last[0], "profile": steps}
    if status != 0:
        raise SystemExit(f"single process failed ({status}) in step {last[0]}")
    info = json.loads(p.stdout.read().strip().splitlines()[-1])
    info.update(wall_total=wall_total, peak_mib=peak, maxrss_mib=usage.ru_maxrss / 1024, profile=steps,
                cpu=usage.ru_utime + usage.ru_stime)
    return info


def run_dask(bundle: str, year: int, workers: int, out: Path, profile: bool, tmp: Path) -> dict:
    from distributed import Client, LocalCluster, get_task_stream

    from app.province import run_province

    t = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           memory_limit=0)
    client = Client(cluster)
    startup = time.perf_counter() - t
    pids = client.run(os.getpid)
    peaks = Peaks({f"worker {i}": pid for i, pid in enumerate(pids.values())})
    # this process: the client and the LocalCluster's scheduler (its children are the workers)
    own = Peaks({"client+scheduler": os.getpid()}, children=False)
    spy = Spy(list(pids.values()), tmp) if profile else None
    cpu0 = _cpu(pids.values())
    load = []
    try:
        with get_task_stream(client) as ts:
            report = run_province(bundle, year, out, client=client,
                                  progress=lambda e: load.append(os.getloadavg()[0]) if e.stage == "rate" else None)
        cpu = _cpu(pids.values()) - cpu0
    finally:
        peak = {**peaks.close(), **own.close()}
        steps = spy.close() if spy else {}
        client.close()
        cluster.close()
    stages: collections.Counter = collections.Counter()
    for task in ts.data:
        stage = str(task["key"]).split("-")[0]
        for ss in task["startstops"]:
            if ss["action"] == "compute":
                stages[stage] += ss["stop"] - ss["start"]
    return {"wall": report.seconds, "startup": startup, "rows": report.rows,
            "peak_mib": {k: round(v) for k, v in peak.items()}, "stages": dict(stages), "profile": steps,
            "load": (min(load), max(load)) if load else None, "cpu": cpu}


def _cpu(pids) -> float:
    """User + system CPU seconds of these processes so far."""
    import psutil

    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)


def same(single_dir: Path, dask_out: Path) -> tuple[bool, str]:
    import geopandas as gpd
    import pandas as pd
    import shapely

    from app.province import OUTPUTS, read_outputs

    got = read_outputs(dask_out)
    for k in OUTPUTS:
        f = single_dir / f"{k}.parquet"
        import pyarrow.parquet as pq

        a = gpd.read_parquet(f) if b"geo" in (pq.read_schema(f).metadata or {}) else pd.read_parquet(f)
        b = got[k]
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            return False, f"{k}: columns/rows differ ({len(a)} vs {len(b)})"
        if "geometry" in a.columns:
            if not shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0).all():
                return False, f"{k}: geometries differ"
            a, b = a.drop(columns="geometry"), b.drop(columns="geometry")
        try:
            pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b), check_exact=True, check_dtype=False)
        except AssertionError as exc:
            return False, f"{k} differ: {str(exc)[:300]}"
    return True, "all 7 tables identical"


def _steps(d: dict) -> str:
    total = d.get("total", 0) or 1
    return ", ".join(f"{k} {v:.0f} s ({v / total:.0%})" for k, v in sorted(d.items(), key=lambda kv: -kv[1])
                     if k != "total" and v >= 0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--year", type=int, default=2024)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--no-single", action="store_true", help="skip the single process")
    ap.add_argument("--single-limit-gib", type=float, default=None,
                    help="run the single process in a memory cgroup of this many GiB")
    ap.add_argument("--reference", help="single-process outputs of an earlier run (with --no-single)")
    ap.add_argument("--profile", action="store_true", help="py-spy every process: seconds per step")
    ap.add_argument("--keep", action="store_true", help="keep the outputs (printed directory)")
    a = ap.parse_args()
    import pyarrow.parquet as pq

    n_par = pq.ParquetFile(Path(a.bundle) / "parcels.parquet").metadata.num_rows
    n_ent = pq.ParquetFile(Path(a.bundle) / "enterprises.parquet").metadata.num_rows
    counties = pq.ParquetFile(Path(a.bundle) / "parcels.parquet").num_row_groups
    tmp = Path(tempfile.mkdtemp(prefix="bench_dask_", dir=Path(a.bundle).parent))
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC; province: {n_par:,} parcels, {n_ent:,} "
          f"enterprises, {counties} counties; load {os.getloadavg()}; output {tmp}", flush=True)
    s = None
    ref = Path(a.reference) if a.reference else tmp / "single"
    if not a.no_single:
        ref.mkdir(exist_ok=True)
        s = run_single(a.bundle, a.year, ref, a.single_limit_gib, a.profile, tmp)
        if s.get("killed"):
            cg = f", cgroup peak {s['cgroup_peak_mib']:.0f} MiB" if s.get("cgroup_peak_mib") else ""
            print(f"single process: KILLED by the {s['by']} at {s['peak_mib']:.0f} MiB RSS{cg} after "
                  f"{s['after']:.0f} s, in step {s['step']}; load {os.getloadavg()}", flush=True)
            s = None
        else:
            print(f"single process: {s['wall']:.1f} s (process {s['wall_total']:.1f} s incl. imports, CPU "
                  f"{s['cpu']:.1f} s), peak "
                  f"{s['peak_mib']:.0f} MiB (ru_maxrss {s['maxrss_mib']:.0f}); steps: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in s["steps"].items()) + f"; load {os.getloadavg()}",
                  flush=True)
            if s["profile"]:
                print(f"  py-spy: {_steps(s['profile'])}", flush=True)
    rows = []
    for w in [int(x) for x in a.workers.split(",")]:
        d = run_dask(a.bundle, a.year, w, tmp / f"dask{w}", a.profile, tmp)
        ok, why = same(ref, tmp / f"dask{w}") if (ref / "links.parquet").exists() else (None, "no reference")
        ratio = f"{s['wall'] / d['wall']:.2f}×" if s else "—"
        print(f"dask {w} worker(s): {d['wall']:.1f} s (cluster start {d['startup']:.1f} s, workers' CPU "
              f"{d['cpu']:.1f} s), speed-up {ratio}, "
              f"peaks {d['peak_mib']} MiB, identical: {ok} ({why}); compute per stage: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in d["stages"].items())
              + f"; load during the run {d['load']}", flush=True)
        if d["profile"]:
            print(f"  py-spy (all workers): {_steps(d['profile'])}", flush=True)
        rows.append((w, d, ok))
    print("\n| run | wall s | speed-up vs single | peak RSS MiB | identical |")
    print("|---|---:|---:|---|---|")
    if s:
        print(f"| single process | {s['wall']:.1f} | 1.00× | {s['peak_mib']:.0f} | — |")
    for w, d, ok in rows:
        ratio = f"{s['wall'] / d['wall']:.2f}×" if s else "—"
        print(f"| Dask, {w} worker{'s' if w > 1 else ''} | {d['wall']:.1f} | {ratio} | "
              f"{', '.join(f'{k} {v:,}' for k, v in d['peak_mib'].items())} | {'yes' if ok else ok} |")
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
