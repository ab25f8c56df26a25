"""Why the first bbox pages after a publish were slow: the cached page's plan before and after
``feature_cache`` has statistics.

    .venv/bin/python bench/bench_cache_stats.py [--parcels 100000]

One database of ``--parcels`` synthetic graded parcels (``bench_tiles.make_database``), autovacuum
off for ``feature_cache`` (so that nothing analyses it behind the measurement); the cache rendered
class by class as a publish does but without the final ``ANALYZE`` (``feature_cache._build_one``);
then the items page limit=1000 + a quarter-area bbox, as the server sends it (bound parameters,
psycopg, 7 runs on one connection: psycopg prepares after 5), ``EXPLAIN (ANALYZE)`` each time;
``ANALYZE feature_cache``; the same 7 runs again. Prints the execution times and plan shapes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_tiles import make_database  # noqa: E402


def _nodes(plan: dict) -> list[str]:
    out = [plan["Node Type"] + (f" on {plan['Index Name']}" if "Index Name" in plan else "")]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


def _runs(url: str, sql: str, params: list) -> list[tuple[float, str]]:
    import psycopg

    out = []
    with psycopg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        for i in range(7):
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params, prepare=i >= 5).fetchone()[0][0]
            scans = [n for n in _nodes(plan["Plan"]) if "Scan" in n or n.startswith("Sort")]
            out.append((plan["Execution Time"], ", ".join(dict.fromkeys(scans))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parcels", type=int, default=100_000)
    a = ap.parse_args()
    from sqlalchemy.dialects import postgresql

    from app import feature_cache
    from app.api import sql as fsql
    from app.api.layers import LAYERS
    from app.auth import Principal

    url, cleanup = make_database(a.parcels)
    try:
        eng = sa.create_engine(url)
        with eng.begin() as conn:
            conn.execute(sa.text("ALTER TABLE feature_cache SET (autovacuum_enabled = false)"))
        t = time.perf_counter()
        for vis in ("public", "viewer", "analyst"):
            feature_cache._build_one(eng, LAYERS["parcels"], vis)
        built = time.perf_counter() - t
        with eng.connect() as conn:
            run = conn.execute(sa.text("SELECT max(id) FROM evaluation_runs WHERE status = 'published'")).scalar()
            version = conn.execute(sa.text("SELECT version FROM data_version")).scalar()
            e = conn.execute(sa.text("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                                     "FROM (SELECT ST_Extent(geom) e FROM parcels) s")).one()
        q = fsql.new_query(LAYERS["parcels"], Principal("public"), run)
        fsql.add_bbox(q, [e[0], e[1], (e[0] + e[2]) / 2, (e[1] + e[3]) / 2],
                      fsql.parse_crs("http://www.opengis.net/def/crs/OGC/1.3/CRS84"))
        text, params = fsql.cache_page_sql(q, "public", version, 1000, None, count=False)
        # the statement as SQLAlchemy's psycopg dialect sends it: %(name)s placeholders, bound values
        compiled = sa.text(text).bindparams(**params).compile(dialect=postgresql.psycopg.dialect())
        sql, values = str(compiled), dict(compiled.params)
        import re

        names = re.findall(r"%\((\w+)\)s", sql)
        sql = re.sub(r"%\((\w+)\)s", "%s", sql)
        bound = [values[n] for n in names]
        without = _runs(url, sql, bound)
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE feature_cache"))
        with_stats = _runs(url, sql, bound)
        eng.dispose()
    finally:
        cleanup()
    print(json.dumps({"parcels": a.parcels, "build_s": round(built, 1)}))
    print("| run | no statistics: ms | plan | after ANALYZE: ms | plan |")
    print("|---:|---:|---|---:|---|")
    for i, ((m0, p0), (m1, p1)) in enumerate(zip(without, with_stats), 1):
        print(f"| {i}{' (prepared)' if i > 5 else ''} | {m0:.1f} | {p0} | {m1:.1f} | {p1} |")


if __name__ == "__main__":
    main()
