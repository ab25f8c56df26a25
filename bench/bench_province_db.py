"""The database at scale (issue 16, docs/scale.md "Database at scale"): a province run written into
PostGIS with app.province_db, then sizes and a year's query times with and without pruning.

    .venv/bin/python bench/bench_province_db.py --counties 8 --parcels 2500 --years 3 --url URL

Generates a province (``--counties`` × ``--parcels``), runs it on Dask (1 worker), writes it into
the database at ``URL`` (an empty database; migrated to head here) for ``--years`` years (the same
land and results filed under each year: the per-year tables grow by one partition per year), and
prints: COPY seconds and rows per county write, table + index sizes (all partitions), and
EXPLAIN ANALYZE times of a year's reads, each next to the same read with pruning defeated
(``year + 0 = …``), best of 5.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from app import db
from app.api.layers import PARCELS
from app.province import run_province
from app.province_db import write_province
from app.sample import _ProvinceWriter
from spatial.synthetic import generate_county

TABLES = ("parcels", "land_links", "sublots", "enterprise_land", "parcel_metrics", "enterprise_ratings",
          "parcel_ratings", "enterprises", "metrics")


def _size(conn, table: str) -> tuple[int, int, int]:
    """rows, heap bytes, index bytes over the table and all its partitions."""
    parts = conn.execute(sa.text("SELECT relid FROM pg_partition_tree(CAST(:t AS regclass)) WHERE isleaf"),
                         {"t": table}).scalars().all() or [table]
    heap = idx = 0
    for p in parts:
        heap += conn.execute(sa.text("SELECT pg_table_size(CAST(:p AS regclass))"), {"p": str(p)}).scalar()
        idx += conn.execute(sa.text("SELECT pg_indexes_size(CAST(:p AS regclass))"), {"p": str(p)}).scalar()
    rows = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
    return rows, heap, idx


def _ms(conn, sql: str, params: dict) -> float:
    best = float("inf")
    for _ in range(5):
        plan = "\n".join(conn.execute(sa.text(f"EXPLAIN (ANALYZE, TIMING OFF) {sql}"), params).scalars())
        best = min(best, float(re.search(r"Execution Time: ([\d.]+) ms", plan).group(1)))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counties", type=int, default=8)
    ap.add_argument("--parcels", type=int, default=2500)
    ap.add_argument("--years", type=int, default=3)
    ap.add_argument("--url", required=True)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_province_db_"))
    prov, out = work / "in", work / "out"
    if not (prov / "parcels.parquet").exists():
        prov.mkdir(parents=True, exist_ok=True)
        w = _ProvinceWriter(prov, "parquet")
        for i in range(a.counties):
            w.add(generate_county(seed=3, parcels=a.parcels, index=i, enterprises_per_parcel=4))
        w.close()
    if not (out / "land").exists():
        t = time.perf_counter()
        run_province(prov, 2024, out, workers=1)
        print(f"province run (1 worker): {time.perf_counter() - t:.1f} s")
    db.upgrade(a.url)
    eng = sa.create_engine(a.url)
    runs = {}
    for k in range(a.years):
        year = 2024 + k
        w = write_province(eng, out, prov, year, publish=True)
        runs[year] = w.run_id
        n = sum(v for t, v in w.rows.items() if t != "parcels")
        print(f"write {year}: {w.seconds:.1f} s, {w.counties} counties, rows {w.rows} "
              f"-> {n / w.seconds:,.0f} rows/s (all tables, COPY + upserts + land versions)")
    with eng.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        total = [0, 0, 0]
        print("table | rows | heap MiB | index MiB")
        for t in TABLES:
            r, h, i = _size(conn, t)
            total = [total[0] + r, total[1] + h, total[2] + i]
            print(f"{t} | {r:,} | {h / 2**20:.1f} | {i / 2**20:.1f}")
        print(f"total | {total[0]:,} | {total[1] / 2**20:.1f} | {total[2] / 2**20:.1f}")
        y = 2024 + a.years // 2
        q = {
            "links of one year, one township": (
                "SELECT count(*), sum(l.share) FROM land_links l JOIN parcels p ON p.identity_code = l.identity_code "
                "WHERE l.year {cmp} AND p.township = (SELECT min(township) FROM parcels)", {"y": y}),
            "merged land of one year": ("SELECT count(*), sum(land_area_mu) FROM enterprise_land WHERE year {cmp}",
                                        {"y": y}),
            "parcel ratings of one year (list)": (
                "SELECT grade, count(*) FROM parcel_ratings WHERE year {cmp} GROUP BY grade", {"y": y}),
        }
        for name, (sql, params) in q.items():
            pruned = _ms(conn, sql.format(cmp="= :y"), params)
            unpruned = _ms(conn, sql.format(cmp="+ 0 = :y"), params)
            print(f"{name}: pruned {pruned:.1f} ms, all partitions {unpruned:.1f} ms")
        page = f"SELECT p.identity_code, r.grade FROM {PARCELS.from_sql} ORDER BY p.identity_code LIMIT 1000"
        print(f"parcels layer page (1000, run of {y}): {_ms(conn, page, {'run_id': runs[y]}):.1f} ms")
    eng.dispose()


if __name__ == "__main__":
    main()
