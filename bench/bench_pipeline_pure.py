"""Micro-benchmark of the pure spatial pipeline on a synthetic county.

    .venv/bin/python bench/bench_pipeline_pure.py --parcels 2000 --enterprises 15000

Parcels are a jittered grid of rectangles with 8 m roads in EPSG:4549 around (500000, 3320000);
enterprises are points scattered over them (some in the roads, some far away, some without a
location); 5 % of parcels get de-facto strips, 30 % buildings, 5 % of enterprises leases.
"""
from __future__ import annotations

import argparse
import time
import resource

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from spatial.apportion import apportion_metrics, enterprise_land
from spatial.identity import build_land
from spatial.match import match_enterprises
from spatial.split import split_shares, sublot_geometries

X0, Y0 = 500_000.0, 3_320_000.0


def synthetic(n_parcels: int, n_ent: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_parcels)))
    cell = 120.0
    i = np.arange(n_parcels)
    x = X0 + (i % side) * cell
    y = Y0 + (i // side) * cell
    w = rng.uniform(60, 112, n_parcels)
    h = rng.uniform(60, 112, n_parcels)
    geoms = shapely.box(x, y, x + w, y + h)
    owners = np.array([f"91330211{k:010d}" for k in range(n_ent)], dtype=object)
    parcels = gpd.GeoDataFrame({
        "parcel_code": [f"330211{k // 100000:03d}{k // 1000 % 100:03d}GB{k % 100000:05d}" for k in i],
        "owner_uscc": np.where(rng.random(n_parcels) < 0.9, owners[rng.integers(0, n_ent, n_parcels)], None),
        "township": "T" + pd.Series(i // 500).astype(str),
    }, geometry=geoms, crs=4549)
    k = rng.choice(n_parcels, n_parcels // 20, replace=False)
    defacto = gpd.GeoDataFrame({"user_uscc": parcels["owner_uscc"].to_numpy()[k]},
                               geometry=shapely.box(x[k] + w[k], y[k], x[k] + w[k] + 6, y[k] + h[k]), crs=4549)
    b = rng.choice(n_parcels, int(n_parcels * 0.3), replace=False)
    buildings = gpd.GeoDataFrame({
        "building_id": [f"B{j}" for j in b], "floors": rng.integers(1, 6, len(b)),
        "parcel_code": parcels["parcel_code"].to_numpy()[b]},
        geometry=shapely.box(x[b] + 5, y[b] + 5, x[b] + w[b] / 2, y[b] + h[b] / 2), crs=4549)
    home = rng.integers(0, n_parcels, n_ent)
    px = x[home] + rng.uniform(-0.06, 1.06, n_ent) * w[home]
    py = y[home] + rng.uniform(0, 1, n_ent) * h[home]
    pts = shapely.points(px, py)
    pts[rng.random(n_ent) < 0.05] = None
    enterprises = gpd.GeoDataFrame({"uscc": owners, "name": [f"企业{k}" for k in range(n_ent)]},
                                   geometry=pts, crs=4549)
    t = rng.choice(n_ent, n_ent // 20, replace=False)
    leases = pd.DataFrame({"tenant_uscc": owners[t],
                           "parcel_code": parcels["parcel_code"].to_numpy()[rng.integers(0, n_parcels, len(t))],
                           "landlord_uscc": None, "floor_area_m2": rng.uniform(100, 2000, len(t))})
    metrics = pd.DataFrame({"uscc": owners, "year": 2024, "tax_paid": rng.uniform(0, 500, n_ent),
                            "value_added": rng.uniform(0, 5000, n_ent),
                            "electricity_kwh": rng.uniform(0, 1e6, n_ent),
                            "meter_id": np.where(rng.random(n_ent) < 0.1, "M" + pd.Series(rng.integers(0, n_ent // 20, n_ent)).astype(str), None)})
    return parcels, defacto, buildings, enterprises, leases, metrics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parcels", type=int, default=2000)
    ap.add_argument("--enterprises", type=int, default=15000)
    ap.add_argument("--sublots", action="store_true", help="also cut sub-lots")
    a = ap.parse_args()
    parcels, defacto, buildings, ents, leases, metrics = synthetic(a.parcels, a.enterprises)
    times = {}
    t0 = time.perf_counter()
    land = build_land(parcels, defacto, county_code="330211")
    times["build_land"] = time.perf_counter() - t0
    t = time.perf_counter()
    links = match_enterprises(land, ents, buildings=buildings, leases=leases)
    times["match_enterprises"] = time.perf_counter() - t
    t = time.perf_counter()
    links = split_shares(links, land, buildings=buildings)
    times["split_shares"] = time.perf_counter() - t
    t = time.perf_counter()
    el = enterprise_land(links, land, ents)
    times["enterprise_land"] = time.perf_counter() - t
    t = time.perf_counter()
    am = apportion_metrics(metrics, links)
    times["apportion_metrics"] = time.perf_counter() - t
    if a.sublots:
        t = time.perf_counter()
        lots = sublot_geometries(land, links)
        times["sublot_geometries"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    print(f"parcels={a.parcels} enterprises={a.enterprises} land={len(land)} links={len(links)} "
          f"multi-occupant pieces={(links.groupby('identity_code').size() > 1).sum()}")
    for k, v in times.items():
        print(f"  {k:20s} {v:7.2f} s")
    print(f"  {'total':20s} {total:7.2f} s   (peak RSS {peak:.0f} MiB, inputs included)")
    print("  methods:", links["method"].value_counts().to_dict())
    print("  classes:", el["land_class"].value_counts().to_dict(), " metric rows:", len(am))


if __name__ == "__main__":
    main()
