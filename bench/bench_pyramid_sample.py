"""Publish-time cost of the pre-built caches (tile pyramid + feature cache) on the sample county.

    .venv/bin/python bench/bench_pyramid_sample.py [--parcels 2000] [--maxzoom 16]

Imports the sample county into a fresh database on a throwaway embedded cluster, matches and
evaluates every year (published) with rendering off, then times what a publish renders
(``app.render.render_pyramid``, z0–maxzoom, and ``app.feature_cache.build_feature_cache``) and
reports tiles, bytes and the tables' size on disk. Prints one Markdown line for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.conftest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parcels", type=int, default=2000)
    ap.add_argument("--maxzoom", type=int, default=16)
    args = ap.parse_args()
    os.environ["MUJUN_RENDER_AT_PUBLISH"] = "0"  # the caches are built below, timed

    from app import db
    from app import render
    from app.feature_cache import build_feature_cache
    from app.embedded import EmbeddedCluster
    from app.sample import write_sample_bundle
    from tests.conftest import load_county
    from app.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="mujun-pyramid-"))
    work.chmod(0o755)  # the embedded cluster's server user must traverse it
    cluster = EmbeddedCluster(work / "pg", durable=False)
    cluster.ensure_running()
    try:
        admin = sa.create_engine(sa.make_url(cluster.url()).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text('CREATE DATABASE "pyramid"'))
        url = sa.make_url(cluster.url()).set(database="pyramid").render_as_string(hide_password=False)
        eng = sa.create_engine(url)
        with eng.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
        db.upgrade(url)
        bundle = work / "bundle"
        write_sample_bundle(bundle, seed=42, parcels=args.parcels, fmt="county")
        settings = Settings(data_dir=work / "var", database_url=url)
        load_county(eng, bundle, settings)  # the tests' sample county: import, match, every year published
        with eng.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM parcels")).scalar()
        stats = render.render_pyramid(eng, maxzoom=args.maxzoom)
        t = time.perf_counter()
        feats = build_feature_cache(eng)
        feats_s = time.perf_counter() - t
        with eng.connect() as conn:
            mb = conn.execute(sa.text("SELECT pg_total_relation_size('tile_cache')")).scalar() / 1e6
            rows = conn.execute(sa.text("SELECT count(*) FROM tile_cache")).scalar()
            fmb = conn.execute(sa.text("SELECT pg_total_relation_size('feature_cache')")).scalar() / 1e6
            ftext = conn.execute(sa.text("SELECT coalesce(sum(length(feature)), 0) FROM feature_cache")).scalar() / 1e6
        print(f"| sample county (seed 42, {n:,} land pieces) | z0–{args.maxzoom}: {stats['built']:,} tiles in "
              f"{stats['seconds']:.1f} s, {stats['bytes'] / 1e6:.1f} MB MVT, `tile_cache` {mb:.1f} MB ({rows:,} rows) | {sum(f['features'] for f in feats):,} features "
              f"({len(feats)} collection × class) in {feats_s:.1f} s, {ftext:.1f} MB text, `feature_cache` "
              f"{fmb:.1f} MB |")
        eng.dispose()
        admin.dispose()
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
