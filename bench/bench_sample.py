"""Benchmark the sample generator: wall time and peak RSS for a county and a province.

Each case runs in a fresh child process; its peak RSS comes from ``os.wait4`` (the child's own
``ru_maxrss``), so cases do not inherit each other's memory.

    .venv/bin/python bench/bench_sample.py --case county
    .venv/bin/python bench/bench_sample.py --case province --parcels 500000 --format parquet
    .venv/bin/python bench/bench_sample.py --case county --write-results   # update bench/RESULTS.md

Prints one JSON line per case; ``--write-results`` appends the row to the "Sample generator"
section of bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Sample generator"

_CHILD = """
import json, sys, time
from app.sample import write_sample_bundle
t = time.perf_counter()
info = write_sample_bundle(sys.argv[1], seed=int(sys.argv[2]), parcels=int(sys.argv[3]), fmt=sys.argv[4])
print(json.dumps({"seconds_inner": round(time.perf_counter() - t, 1), "counts": info["counts"],
                  "counties": info["counties"]}))
"""


def run_case(parcels: int, fmt: str, seed: int = 0, out: str | None = None) -> dict:
    """Run one generation in a child process; return time, peak RSS and output size."""
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="mujun-bench-")
        out = tmp.name
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, out, str(seed), str(parcels), fmt],
                            stdout=subprocess.PIPE, cwd=ROOT)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"case failed (exit {proc.returncode})")
    inner = json.loads(stdout.decode().strip().splitlines()[-1])
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    if tmp is not None:
        tmp.cleanup()
    return {
        "parcels": parcels, "format": fmt, "seed": seed, "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 0),  # Linux: kilobytes
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "output_mb": round(size / 2**20, 1),
        **inner,
    }


def _row(r: dict) -> str:
    c = r["counts"]
    return (f"| {r['parcels']:,} | {r['format']} | {r['counties']} | {c['enterprises']:,} | {c['buildings']:,} | "
            f"{c['metric_rows']:,} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']:.0f} | {r['output_mb']} |")


def write_results(rows: list[dict], note: str) -> None:
    """Add rows to the "Sample generator" section of bench/RESULTS.md, creating it if needed."""
    header = ("| parcels | format | counties | enterprises | buildings | metric rows | wall s | CPU s | "
              "peak RSS MB | output MB |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start < 0:
        body = f"{SECTION}\n\n{note}\n\n{header}\n"
        text = text.rstrip("\n") + "\n\n" + body
        start = text.find(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    end = len(text) if end < 0 else end + 1
    section = text[start:end].rstrip("\n")
    if header.splitlines()[0] not in section:
        section += f"\n\n{header}"
    section += "\n" + "\n".join(_row(r) for r in rows) + "\n"
    text = text[:start] + section + ("\n" + text[end:] if end < len(text) else "")
    RESULTS.write_text(text, encoding="utf-8")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=["county", "province"], default="county")
    ap.add_argument("--parcels", type=int, default=None)
    ap.add_argument("--format", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the output here instead of a temporary directory")
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args(argv)
    parcels = a.parcels or (2000 if a.case == "county" else 500_000)
    fmt = a.format or ("county" if a.case == "county" else "parquet")
    r = run_case(parcels, fmt, a.seed, a.out)
    print(json.dumps(r, ensure_ascii=False))
    if a.write_results:
        note = (f"`bench/bench_sample.py`, {platform.python_implementation()} {platform.python_version()}, "
                f"{os.cpu_count()} cores; each case in a fresh process, peak RSS from `wait4`. "
                "Times include writing every file and summary.md/summary.png.")
        write_results([r], note)


if __name__ == "__main__":
    main()
