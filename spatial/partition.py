"""County partitions and their halos: which rows a county's task must see so that running the
pipeline county by county gives exactly the links of the whole province at once.

A province is cut into counties (县, one GeoParquet row group each).  Land belongs to the
county whose parcels it was built from; an enterprise to the county of its row group.  The
links *on a county's land* (地企对应) depend on

* every enterprise that could link to that land: its point within the snap tolerance of it,
  it holds a piece of it (owner / de-facto user), its lease names one of its parcels or a
  landlord holding one, or its 纠偏 correction names one of its parcels;
* for each of those enterprises, every piece it could link to instead (a nearer piece across
  the border wins the tie-break): land within the tolerance of its point, land it holds, land
  its leases and corrections name, land its landlords hold;
* the buildings on or near that land.

:func:`halo` selects exactly that (a superset is harmless: extra rows only add links on land
the task does not keep).  :func:`neighbours` says which counties a task must read at all: the
counties within two tolerances of its bounds (an enterprise within the tolerance of our land,
and land within the tolerance of that enterprise) and the counties tied to it by keys (an owner,
tenant or landlord in another county), closed over two steps for the same reason.

Pure: DataFrames in, DataFrames out.  Geometries in one projected metric CRS (metres).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from spatial.identity import _isin

__all__ = ["county_keys", "neighbours", "holder_homes", "halo", "MARGIN_M"]

#: Added to the snap tolerance when selecting a halo, so rounding in the metric projection can
#: never leave out a candidate exactly at the tolerance (a larger halo changes no kept link).
MARGIN_M = 1.0


def county_keys(land: pd.DataFrame, enterprises: pd.DataFrame, leases: pd.DataFrame | None = None,
                corrections: pd.DataFrame | None = None) -> dict[str, pa.Array]:
    """The keys by which one county's rows may reach another county's.

    ``land``: pieces of the county (``parcel_code``, ``identity_code``, ``owner_uscc``,
    ``user_uscc``); ``enterprises``: its enterprises (``uscc``); ``leases`` / ``corrections``:
    those of its enterprises.  Each key kind is a pyarrow string array of distinct values: a
    province's keys (8M USCCs at 2M parcels) are ~20 bytes each in Arrow, where Python sets of
    ``str`` took ~10 times that and held the whole province on one worker.
    """
    return {
        "usccs": _keys(_set(enterprises, "uscc")),
        "holders": _keys(_set(land, "owner_uscc") | _set(land, "user_uscc")),
        "codes": _keys(_set(land, "parcel_code") | _set(land, "identity_code")),
        "ref_codes": _keys(_set(leases, "parcel_code") | _set(corrections, "parcel_code")),
        "ref_usccs": _keys(_set(leases, "landlord_uscc")),
    }


def neighbours(bounds: Mapping[str, tuple[float, float, float, float]],
               keys: Mapping[str, Mapping[str, Iterable[str]]] | None, tolerance_m: float) -> dict[str, list[str]]:
    """For each county, the other counties its task must read (sorted).

    ``bounds``: per county the (minx, miny, maxx, maxy) of all its geometries (land, buildings,
    enterprise points) in metres; ``keys``: :func:`county_keys` per county (or any iterables of
    strings by the same names).  Two counties are adjacent when their bounds are within
    ``tolerance_m + MARGIN_M`` of each other or a key of one names a row of the other; the
    result is adjacency closed over two steps.

    >>> neighbours({"a": (0, 0, 10, 10), "b": (20, 0, 30, 10), "c": (45, 0, 60, 10)}, None, 15)
    {'a': ['b', 'c'], 'b': ['a', 'c'], 'c': ['a', 'b']}
    >>> neighbours({"a": (0, 0, 10, 10), "b": (20, 0, 30, 10), "c": (55, 0, 60, 10)}, None, 5)
    {'a': [], 'b': [], 'c': []}
    """
    names = sorted(bounds)
    reach = tolerance_m + MARGIN_M
    one: dict[str, set[str]] = {c: set() for c in names}
    b = np.array([bounds[c] for c in names], dtype=float).reshape(-1, 4)
    for i, a in enumerate(names):  # one row of the pairwise gaps at a time: n² numbers, never n² objects
        gap = np.max([b[:, 0] - b[i, 2], b[i, 0] - b[:, 2], b[:, 1] - b[i, 3], b[i, 1] - b[:, 3],
                      np.zeros(len(b))], axis=0)
        for j in np.flatnonzero(gap <= reach):
            if j != i:
                one[a].add(names[j])
    if keys:
        # ties by keys, as hash joins of (key, county) columns: linear in the number of keys.
        # A holder of one county is an enterprise of, or named by a lease/correction of, another.
        holders, codes = _stack(keys, names, "holders"), _stack(keys, names, "codes")
        for probe, build in (("usccs", holders), ("ref_usccs", holders), ("ref_codes", codes)):
            for c, d in _ties(_stack(keys, names, probe), build):
                one[names[c]].add(names[d])
                one[names[d]].add(names[c])
        # a holder of land in several counties with no enterprise row of its own: its merged
        # land is computed by its home county, which must read all its pieces
        homes = holder_homes(keys)
        if homes:
            home = pa.table({"key": pa.array(list(homes), pa.string()),
                             "home": pa.array([names.index(c) for c in homes.values()], pa.int32())})
            pairs = holders.join(home, "key", join_type="inner").select(["county", "home"])
            for c, h in zip(pairs.column("county").to_pylist(), pairs.column("home").to_pylist()):
                if c != h:
                    one[names[c]].add(names[h])
                    one[names[h]].add(names[c])
    two = {c: set(one[c]).union(*(one[d] for d in one[c])) - {c} for c in names}
    return {c: sorted(two[c]) for c in names}


def holder_homes(keys: Mapping[str, Mapping[str, Iterable[str]]]) -> dict[str, str]:
    """The county that merges the land (一企多地合并) of each holder (owner / de-facto user)
    that is no county's enterprise: the county of its USCC's registration code (characters
    3–8, GB 32100-2015) when that county is in the province, else the first county (by code)
    holding its land.

    >>> k = {"330999": {"usccs": [], "holders": ["91330998X"]},
    ...      "330998": {"usccs": [], "holders": ["91330998X", "91110000Y"]}}
    >>> holder_homes(k)
    {'91110000Y': '330998', '91330998X': '330998'}
    """
    names = sorted(keys)
    usccs = pa.concat_arrays([_keys(keys[c].get("usccs", ())) for c in names] or [pa.array([], pa.string())])
    held = _stack(keys, names, "holders")
    # one hash set of every USCC for all counties' holders (per county it was rebuilt 1,000 times)
    orphans = held.filter(pc.invert(pc.is_in(held.column("key"), value_set=usccs)))
    homes: dict[str, str] = {}
    for h, c in zip(orphans.column("key").to_pylist(), orphans.column("county").to_pylist()):
        homes.setdefault(h, h[2:8] if h[2:8] in keys else names[c])
    return dict(sorted(homes.items()))


def halo(county: str, land: gpd.GeoDataFrame, enterprises: gpd.GeoDataFrame,
         buildings: gpd.GeoDataFrame | None = None, leases: pd.DataFrame | None = None,
         corrections: pd.DataFrame | None = None, *, tolerance_m: float = 30.0) -> dict[str, pd.DataFrame]:
    """The rows the task of ``county`` needs to match, split and apportion its own land exactly.

    Every frame has a ``county`` column; ``land`` and ``enterprises`` hold the county and the
    counties from :func:`neighbours`.  Returns ``land`` (the county's land + halo land),
    ``enterprises`` (the county's enterprises + those of other counties that could link to its
    land), ``buildings``, ``leases`` and ``corrections`` of those enterprises and land; each
    in its input order.
    """
    reach = tolerance_m + MARGIN_M
    land = land.reset_index(drop=True)
    ent = enterprises.reset_index(drop=True)
    leases = leases if leases is not None else pd.DataFrame(columns=["tenant_uscc", "parcel_code", "landlord_uscc"])
    corrections = corrections if corrections is not None else pd.DataFrame(columns=["uscc", "parcel_code"])
    core = (land["county"] == county).to_numpy().copy()
    core_codes = _codes(land[core])
    core_holders = _set(land[core], "owner_uscc") | _set(land[core], "user_uscc")

    # 1. enterprises that could link to the county's land
    want = (ent["county"] == county).to_numpy().copy()
    want |= _isin(ent["uscc"], core_holders)
    ls_in = _isin(leases["parcel_code"], core_codes) | _isin(leases["landlord_uscc"], core_holders)
    want |= _isin(ent["uscc"], _set(leases[ls_in], "tenant_uscc") | _set(
        corrections[_isin(corrections["parcel_code"], core_codes)], "uscc"))
    want |= _near(ent.geometry.values, land.geometry.values[core], reach, among=~want)
    ent = ent[want]
    usccs = set(ent["uscc"].dropna())

    # 2. every piece those enterprises could link to instead
    my_leases = leases[_isin(leases["tenant_uscc"], usccs)]
    my_corr = corrections[_isin(corrections["uscc"], usccs)]
    holders = usccs | _set(my_leases, "landlord_uscc")
    named = _set(my_leases, "parcel_code") | _set(my_corr, "parcel_code")
    keep = core | _isin(land["owner_uscc"], holders) | _isin(land["user_uscc"], holders)
    keep |= _isin(land["parcel_code"], named) | _isin(land["identity_code"], named)
    keep |= _near(land.geometry.values, ent.geometry.values, reach, among=~keep)
    land = land[keep]

    out = {"land": land, "enterprises": ent, "leases": my_leases, "corrections": my_corr}
    if buildings is not None:
        b = buildings.reset_index(drop=True)
        on = _isin(b["parcel_code"], _set(land, "parcel_code"))
        on |= _near(b.geometry.values, np.concatenate([land.geometry.values, ent.geometry.values]), reach,
                    among=~on)
        out["buildings"] = b[on]
    return out


# -- helpers --------------------------------------------------------------------------------------
def _set(df: pd.DataFrame | None, col: str) -> frozenset:
    if df is None or col not in df.columns or len(df) == 0:
        return frozenset()
    return frozenset(df[col].dropna().astype(str).unique())


def _codes(land: pd.DataFrame) -> frozenset:
    return _set(land, "parcel_code") | _set(land, "identity_code")


def _near(geoms: np.ndarray, targets: np.ndarray, distance: float, among: np.ndarray | None = None) -> np.ndarray:
    """True for each of ``geoms`` within ``distance`` (m) of any of ``targets`` (None: never);
    only the geometries where ``among`` is true are tested (the others: False)."""
    geoms, targets = np.asarray(geoms, dtype=object), np.asarray(targets, dtype=object)
    out = np.zeros(len(geoms), dtype=bool)
    targets = targets[~shapely.is_missing(targets)] if len(targets) else targets
    ok = np.ones(len(geoms), dtype=bool) if among is None else np.asarray(among, dtype=bool).copy()
    ok[ok] = ~shapely.is_missing(geoms[ok]) & ~shapely.is_empty(geoms[ok])
    if not len(targets) or not ok.any():
        return out
    # only geometries within reach of the targets' extent can be within reach of a target: the
    # rows of a neighbour far from the border never reach the tree query
    x0, y0, x1, y1 = shapely.total_bounds(targets)
    b = shapely.bounds(geoms[ok])
    with np.errstate(invalid="ignore"):
        ok[ok] = (b[:, 0] <= x1 + distance) & (b[:, 2] >= x0 - distance) & (b[:, 1] <= y1 + distance) & \
                 (b[:, 3] >= y0 - distance)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return out
    tree = shapely.STRtree(targets)
    hit = tree.query(geoms[idx], predicate="dwithin", distance=distance)[0]
    out[idx[np.unique(hit)]] = True
    return out


def _keys(values: Iterable[str]) -> pa.Array:
    """Distinct strings as a pyarrow string array (a key array passes through)."""
    if isinstance(values, pa.Array):
        return values
    return pa.array(sorted(values), pa.string())


def _stack(keys: Mapping[str, Mapping[str, Iterable[str]]], names: list[str], kind: str) -> pa.Table:
    """The ``kind`` keys of every county as one (key, county position) table."""
    arrays = [_keys(keys[c].get(kind, ())) for c in names]
    return pa.table({"key": pa.concat_arrays(arrays) if arrays else pa.array([], pa.string()),
                     "county": pa.array(np.repeat(np.arange(len(names), dtype=np.int32), [len(a) for a in arrays]))})


def _ties(probe: pa.Table, build: pa.Table) -> list[tuple[int, int]]:
    """Distinct (probe county, build county) pairs, different counties, sharing a key."""
    if not probe.num_rows or not build.num_rows:
        return []
    j = probe.join(build, "key", join_type="inner", right_suffix="_b").select(["county", "county_b"])
    j = j.filter(pc.not_equal(j.column("county"), j.column("county_b")))
    j = j.group_by(["county", "county_b"]).aggregate([])
    return list(zip(j.column("county").to_pylist(), j.column("county_b").to_pylist()))
