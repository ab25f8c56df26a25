"""连片低效用地 — contiguous blocks of low-yield land, the pure (DataFrame in, DataFrame out) form.

The service answers ``/clusters`` in one PostGIS statement (``app/api/clusters.py``:
``ST_ClusterDBSCAN(eps := gap_m, minpoints := 1)`` in the county's Gauss-Krüger zone). This is
the same rule without a database — for tests (an independent oracle for the SQL) and for
partitioned runs on a distributed engine: two parcels belong to one block when the gap between
them is at most ``gap_m`` metres (so a 20 m road between parcels does not break a block), and
blocks are the connected components of that relation (single linkage; ``minpoints = 1`` DBSCAN
is exactly this).

>>> import geopandas as gpd
>>> from shapely.geometry import box
>>> g = gpd.GeoDataFrame({"identity_code": ["a", "b", "c"], "area_mu": [12.0, 12.0, 12.0]},
...                      geometry=[box(0, 0, 100, 80), box(120, 0, 220, 80), box(600, 0, 700, 80)],
...                      crs=4549)
>>> label_clusters(g, gap_m=30).tolist()
[0, 0, 1]
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely import STRtree

MU_M2 = 10000.0 / 15


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of an undirected graph given as edge lists (union-find, numpy only)."""
    parent = np.arange(n)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    for a, b in zip(left.tolist(), right.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    # number components 0.. in order of first appearance
    _, first = np.unique(roots, return_index=True)
    order = {r: k for k, r in enumerate(roots[np.sort(first)])}
    return np.array([order[r] for r in roots], dtype=np.int64)


def label_clusters(parcels: gpd.GeoDataFrame, gap_m: float) -> pd.Series:
    """Block label of every parcel: parcels within ``gap_m`` metres of each other share it.

    ``parcels`` must be in a projected CRS in metres (a Gauss-Krüger zone), never degrees.
    """
    if parcels.crs is not None and parcels.crs.is_geographic:
        raise ValueError("project the parcels to their Gauss-Krüger zone first (distances in metres)")
    geoms = parcels.geometry.to_numpy()
    if len(geoms) == 0:
        return pd.Series([], index=parcels.index, dtype=np.int64)
    tree = STRtree(geoms)
    left, right = tree.query(geoms, predicate="dwithin", distance=float(gap_m))
    keep = left < right
    return pd.Series(_components(len(geoms), left[keep], right[keep]), index=parcels.index)


def summarize_clusters(parcels: gpd.GeoDataFrame, gap_m: float, min_area_mu: float = 0.0,
                       target_tax_per_mu: float | None = None) -> pd.DataFrame:
    """One row per block ≥ ``min_area_mu``: members, area (亩), total tax (万元), mean 亩均税收, gain.

    Columns used: ``identity_code``, ``area_mu``, optional ``tax_per_mu`` (万元/亩; missing = 0,
    e.g. idle land). The mean is area-weighted (total tax / total area); the gain is
    ``max(0, target − mean) × area`` in 万元 a year.
    """
    label = label_clusters(parcels, gap_m)
    tax = parcels["tax_per_mu"].fillna(0.0) if "tax_per_mu" in parcels else pd.Series(0.0, index=parcels.index)
    frame = pd.DataFrame({"cluster": label, "identity_code": parcels["identity_code"],
                          "area_mu": parcels["area_mu"], "tax": tax * parcels["area_mu"]})
    out = frame.groupby("cluster").agg(
        members=("identity_code", lambda s: sorted(s)), member_count=("identity_code", "size"),
        area_mu=("area_mu", "sum"), total_tax_wan=("tax", "sum"))
    out = out[out["area_mu"] >= min_area_mu].copy()
    out["mean_tax_per_mu"] = out["total_tax_wan"] / out["area_mu"]
    if target_tax_per_mu is not None:
        out["gain_wan"] = np.maximum(target_tax_per_mu - out["mean_tax_per_mu"], 0.0) * out["area_mu"]
    return out.sort_values("area_mu", ascending=False).reset_index(drop=True)
