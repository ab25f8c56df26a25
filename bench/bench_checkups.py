"""体检表 PDFs for every rated enterprise of the sample county: time per page and peak memory.

    .venv/bin/python bench/bench_checkups.py [--year 2024] [--limit N] [--out DIR]

Database: ``DATABASE_URL``, or the embedded cluster of ``MUJUN_DATA_DIR`` after ``mujun demo
--no-serve`` (the sample county: seed 42, 2,000 parcels, three evaluated years). Runs exactly
what ``mujun report checkups --year Y --out DIR`` runs (:func:`app.checkup.write_checkups`):
for each enterprise with a grade, its 体检表 document (about ten queries, the shared group and
township means cached per run), the Jinja2 page with its SVG map thumbnail, and the WeasyPrint PDF.

Reported: pages, wall time, time per page (mean, p50, p95, max — from the progress callback),
PDF size, and the process's peak RSS (``ru_maxrss``). Results go to the "体检表 PDFs" section of
``bench/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from app import db  # noqa: E402
from app.checkup import write_checkups  # noqa: E402
from bench.results import replace_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--year", type=int, default=2024)
    ap.add_argument("--limit", type=int, default=None, help="a sample of this many (default: all)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    a = ap.parse_args()
    engine = db.engine()
    with engine.connect() as conn:
        rated = conn.execute(sa.text(
            "SELECT count(*) FROM enterprise_ratings r JOIN evaluation_runs e ON e.id = r.run_id "
            "WHERE e.year = :y AND e.status = 'published' AND r.grade IS NOT NULL"), {"y": a.year}).scalar_one()
    out = a.out or Path(tempfile.mkdtemp(prefix="checkups-"))
    stamps = [time.perf_counter()]

    def progress(i: int, n: int) -> None:
        stamps.append(time.perf_counter())
        if i % 100 == 0 or i == n:
            print(f"{i}/{n} pages, {stamps[-1] - stamps[0]:.0f} s", flush=True)

    t0 = time.perf_counter()
    rows = write_checkups(engine, out, year=a.year, limit=a.limit, progress=progress)
    wall = time.perf_counter() - t0
    per = np.diff(stamps)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = [(out / r["文件"]).stat().st_size for r in rows]
    n = len(rows)
    table = [
        ("pages (one PDF per enterprise with a grade)", f"{n:,} of {rated:,} rated enterprises"
         + ("" if n == rated else " (a sample: the first in township, list and rank order)")),
        ("wall time, all pages incl. index.html / index.xlsx", f"{wall:.1f} s"),
        ("time per page: mean / p50 / p95 / max", f"{per.mean() * 1000:.0f} / {np.percentile(per, 50) * 1000:.0f} / "
                                                  f"{np.percentile(per, 95) * 1000:.0f} / {per.max() * 1000:.0f} ms"),
        ("first page (fonts loaded, per-run means cached)", f"{per[0] * 1000:.0f} ms"),
        ("PDF size: mean / max", f"{np.mean(sizes) / 1024:.0f} / {np.max(sizes) / 1024:.0f} KB"),
        ("peak RSS of the process", f"{peak_mb:.0f} MB"),
    ]
    text = "\n".join(f"| {k} | {v} |" for k, v in table)
    print(text)
    if a.no_write:
        return
    # (built apart: Python 3.11 allows no nested f-string with the same quotes)
    sample_note = "" if n == rated else (
        f"\nA sample, not all {rated:,}: at ~{per.mean():.1f} s a page the whole county is about "
        f"{rated * per.mean() / 60:.0f} minutes on this\nmachine (extrapolated, not measured).\n")
    replace_section(f"""## 体检表 PDFs: one A4 page per enterprise

`bench/bench_checkups.py --year {a.year}{f' --limit {a.limit}' if a.limit else ''}` — the sample county (seed 42, 2,000 parcels,
three evaluated years; `mujun demo --no-serve`), exactly `mujun report checkups`: per enterprise the
体检表 document (queries, SVG thumbnail from PostGIS), the Jinja2 page and its WeasyPrint PDF, one
process, sequential, on the 2-core machine shared with other work.

| what | value |
|---|---|
{text}

Each page is built from about ten small queries (group and township means and band scores are
cached per run); most of the time is WeasyPrint's layout of the page with its CJK font. Pages are
independent: `--township` splits the batch, and several processes would scale with cores.
{sample_note}""")


if __name__ == "__main__":
    main()
