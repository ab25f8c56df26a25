"""宗地身份码 — one stable identity code for every piece of industrial land.

Three kinds of land (镇海, 宗地身份码):

* ``registered``        已登记工业宗地 — a parcel of the cadastre;
* ``defacto_attached``  关联在已登记工业宗地的事实用地 — de-facto land tied to a registered parcel
                        (a strip used by the parcel's own enterprise, or a 边角料 leftover < 1 亩);
* ``defacto``           独立的事实用地 — de-facto land on its own.

Code format
-----------
======================================  ===============================================
``R-<宗地代码>``                         registered, e.g. ``R-340123002004GB00011``
``A-<parent 宗地代码>-<hash>``           attached, e.g. ``A-340123002004GB00011-7K3M9Q2XWT``
``D-<county_code>-<hash>``               independent, when ``county_code`` is given,
``D-<hash>``                             e.g. ``D-330211-0F4Z8H1C6P`` / ``D-0F4Z8H1C6P``
``R-X<hash>``                            registered parcel that has no 宗地代码
======================================  ===============================================

The first letter is the kind; an attached code contains its parent's code (for a parent
without 宗地代码, the parent's ``X<hash>``).  ``<hash>`` is 10 Crockford base-32 characters
(``0-9A-Z`` without I, L, O, U; 50 bits) of a SplitMix64 hash of the piece's *input* geometry,
quantised, in terms that do not depend on the working CRS: the centroid's longitude and latitude
in CGCS2000 (EPSG:4490) on a 1e-5° grid (~1 m) and the area in m² on an equal-area projection
(cylindrical equal-area on the CGCS2000 ellipsoid) on a 1 m² grid, each grid shifted by 0.2718…
of a cell so round values never sit on a cell edge.  So the same land gets the same code whichever
Gauss-Krüger zone (EPSG:4549 or 4550 at 121.5°E) the county's data happened to be processed in,
never depends on row order or other rows, and survives float noise from reprojection (~1e-7 m)
unless a centroid lies within that noise of a cell edge (probability ~1e-7).  (Without a CRS —
:func:`content_hash` on bare geometries — the planar x, y and area are quantised on 1 m / 1 m².)

A hash names land once, when it first appears: from then on a piece keeps its code by overlap
with the land already known (:mod:`spatial.lineage`), so centimetre edits of later deliveries never
change it.

Collisions (two rows with the same code: a duplicated 宗地代码 or two pieces with the same
quantised centroid and area) are resolved by content order — area, then the geometry's WKB
on a 1 cm grid, then user — the first keeps the code, the others get ``-2``, ``-3``…

Example
-------
>>> land = build_land(parcels, defacto, county_code="330211")     # doctest: +SKIP
>>> land[["identity_code", "kind", "parcel_code", "area_mu"]]     # doctest: +SKIP
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

__all__ = ["build_land", "content_hash", "M2_PER_MU", "LAND_COLUMNS"]

M2_PER_MU = 10000.0 / 15.0

LAND_COLUMNS = [
    "identity_code", "kind", "parcel_code", "parent_identity_code", "user_uscc",
    "owner_uscc", "owner_name", "township", "land_use", "registered_area_m2",
    "source_parcel_code", "note", "area_m2", "area_mu", "geometry",
]

_ALPHABET = np.array(list("0123456789ABCDEFGHJKMNPQRSTVWXYZ"))
_GRID_OFFSET = 0.2718281828459045
# de-facto land overlapping registered land by less than this is not clipped (noise)
_MIN_OVERLAP_M2 = 0.01


def build_land(
    parcels: gpd.GeoDataFrame,
    defacto: gpd.GeoDataFrame | None,
    attach_tolerance_m: float = 5.0,
    small_piece_mu: float = 1.0,
    county_code: str | None = None,
) -> gpd.GeoDataFrame:
    """Build the land layer: one row per piece of industrial land with its 宗地身份码.

    Parameters
    ----------
    parcels : GeoDataFrame
        宗地: ``parcel_code``, ``owner_uscc``, ``owner_name``, ``land_use``,
        ``registered_area_m2``, ``township``, ``registered`` (default True), polygons in a
        projected metric CRS.  Rows with ``registered == False`` (宗地 known to the cadastre
        but not registered, e.g. 证照不全) are treated as de-facto land used by their
        ``owner_uscc``; their own code is kept in ``source_parcel_code``.
    defacto : GeoDataFrame or None
        事实用地: ``user_uscc``, ``note``, polygons in the same CRS.
    attach_tolerance_m : float
        De-facto land touching or within this distance (m, + 1 mm so that reprojection noise
        on a piece exactly at the tolerance cannot flip it) of a registered parcel owned by its
        user (``owner_uscc == user_uscc``) is ``defacto_attached`` to that parcel.
    small_piece_mu : float
        De-facto pieces smaller than this (边角料) are attached to a neighbouring registered
        parcel even without a user match: the one with the longest shared boundary (within
        the tolerance), then the nearest, then the smallest code.  A same-user parcel wins.
    county_code : str, optional
        6-digit county code put in the codes of independent de-facto land.

    Returns
    -------
    GeoDataFrame with columns ``LAND_COLUMNS``: identity_code, kind, parcel_code (own code
    for registered, the parent's for attached, NA for independent), parent_identity_code,
    user_uscc, owner_uscc (for attached land: the parent's), owner_name, township, land_use,
    registered_area_m2, source_parcel_code, note, area_m2, area_mu, geometry.  Sorted by
    identity_code.  De-facto land is clipped by registered parcels so no area is counted
    twice; a de-facto piece lying wholly inside registered land is dropped.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> p = gpd.GeoDataFrame({"parcel_code": ["340123002004GB00011"], "owner_uscc": ["U1"]},
    ...                      geometry=[box(0, 0, 100, 100)], crs=4549)
    >>> d = gpd.GeoDataFrame({"user_uscc": ["U1"]}, geometry=[box(100, 0, 110, 100)], crs=4549)
    >>> build_land(p, d)[["identity_code", "kind"]].values.tolist()  # doctest: +ELLIPSIS
    [['A-340123002004GB00011-...', 'defacto_attached'], ['R-340123002004GB00011', 'registered']]
    """
    crs = parcels.crs
    registered = _col(parcels, "registered", True).fillna(True).astype(bool).to_numpy()
    reg = _registered_land(parcels[registered])
    pieces = _defacto_input(defacto, parcels[~registered], crs)
    if len(pieces):
        pieces = _defacto_land(pieces, reg, attach_tolerance_m, small_piece_mu, county_code)
    land = pd.concat([reg, pieces], ignore_index=True) if len(pieces) else reg
    land = gpd.GeoDataFrame(land, geometry="geometry", crs=crs)
    land["identity_code"] = _dedupe_codes(land)
    land["area_m2"] = land.geometry.area
    land["area_mu"] = land["area_m2"] / M2_PER_MU
    return land[LAND_COLUMNS].sort_values("identity_code", ignore_index=True)


def content_hash(geoms, crs=None) -> np.ndarray:
    """10-character base-32 content hash of geometries (see the module docstring).

    With ``crs`` (the geometries' CRS, anything pyproj reads) the hash is CRS-independent:
    centroid in EPSG:4490 degrees (1e-5° cells), area in m² on an equal-area projection.
    """
    geoms = np.asarray(geoms, dtype=object)
    n = len(geoms)
    if n == 0:
        return np.array([], dtype="<U10")
    cent = shapely.get_coordinates(shapely.centroid(geoms))
    if crs is None:
        area = shapely.area(geoms)
    else:
        cent, area = _geodetic_terms(geoms, cent, crs)
    # floor on a shifted grid: robust to tiny noise unless exactly on a (shifted) edge
    q = np.floor(np.column_stack([cent, area]) - _GRID_OFFSET).astype(np.int64).view(np.uint64)
    h = np.zeros(n, dtype=np.uint64)
    for j in range(q.shape[1]):
        h = _splitmix64(h ^ q[:, j])
    # top 50 bits -> 10 base-32 digits
    shifts = np.arange(59, 9, -5, dtype=np.uint64)
    digits = ((h[:, None] >> shifts[None, :]) & np.uint64(31)).astype(np.intp)
    return np.ascontiguousarray(_ALPHABET[digits]).view("<U10").ravel()


# --------------------------------------------------------------------------- helpers

#: Cylindrical equal-area on the CGCS2000 ellipsoid (GRS80 within 0.1 mm): true areas in m².
_EQUAL_AREA = "+proj=cea +lat_ts=0 +lon_0=0 +ellps=GRS80 +units=m +no_defs"


def _geodetic_terms(geoms: np.ndarray, cent: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    """Centroids in units of 1e-5° (EPSG:4490) and areas in m² (equal-area), from any CRS."""
    from pyproj import CRS, Transformer

    src = CRS.from_user_input(crs)
    to_geo = Transformer.from_crs(src, 4490, always_xy=True)
    lon, lat = to_geo.transform(cent[:, 0], cent[:, 1])
    to_ea = Transformer.from_crs(src, _EQUAL_AREA, always_xy=True)
    ea = shapely.transform(geoms, lambda xy: np.column_stack(to_ea.transform(xy[:, 0], xy[:, 1])))
    return np.column_stack([np.asarray(lon) * 1e5, np.asarray(lat) * 1e5]), shapely.area(ea)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # a fixed, platform-independent mixer (Python's hash() is salted per process)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _col(df: pd.DataFrame, name: str, default=pd.NA) -> pd.Series:
    if df is not None and name in df.columns:
        return df[name].reset_index(drop=True)
    n = 0 if df is None else len(df)
    return pd.Series([default] * n, dtype=object if default is pd.NA else None)


def _o(s) -> np.ndarray:
    """Object array of a column: Python-level set/dict/zip on Arrow-backed strings is slow."""
    return np.asarray(s, dtype=object)


def _isin(a, b) -> np.ndarray:
    """Vectorised membership (ArrowStringArray.isin builds a pyarrow scalar per value)."""
    b = list(b) if isinstance(b, (set, frozenset)) else b
    return pd.Index(_o(a), dtype=object).isin(_o(b))


def _str(s: pd.Series) -> pd.Series:
    """Strings with NA; blank strings count as missing."""
    s = s.astype("str")
    return s.where(s.str.strip().ne("") & s.notna())


def _registered_land(parcels: gpd.GeoDataFrame) -> pd.DataFrame:
    code = _str(_col(parcels, "parcel_code"))
    geom = parcels.geometry.reset_index(drop=True)
    out = pd.DataFrame({
        "kind": "registered",
        "parcel_code": code,
        "parent_identity_code": pd.Series(pd.NA, index=code.index, dtype="str"),
        "user_uscc": pd.Series(pd.NA, index=code.index, dtype="str"),
        "owner_uscc": _str(_col(parcels, "owner_uscc")),
        "owner_name": _str(_col(parcels, "owner_name")),
        "township": _str(_col(parcels, "township")),
        "land_use": _str(_col(parcels, "land_use")),
        "registered_area_m2": pd.to_numeric(_col(parcels, "registered_area_m2"), errors="coerce"),
        "source_parcel_code": code,
        "note": pd.Series(pd.NA, index=code.index, dtype="str"),
        "geometry": geom.values,
    })
    nocode = code.isna().to_numpy()
    ident = ("R-" + code).to_numpy(dtype=object)
    if nocode.any():
        ident[nocode] = np.char.add("R-X", content_hash(geom.values[nocode], parcels.crs))
    out["identity_code"] = pd.Series(ident, dtype="str")
    return out


def _defacto_input(defacto, unregistered, crs) -> gpd.GeoDataFrame:
    """De-facto pieces from the defacto layer plus unregistered cadastre rows."""
    parts = []
    if defacto is not None and len(defacto):
        parts.append(pd.DataFrame({
            "user_uscc": _str(_col(defacto, "user_uscc")),
            "note": _str(_col(defacto, "note")),
            "township": _str(_col(defacto, "township")),
            "source_parcel_code": pd.Series(pd.NA, index=range(len(defacto)), dtype="str"),
            "owner_name": pd.Series(pd.NA, index=range(len(defacto)), dtype="str"),
            "land_use": _str(_col(defacto, "land_use")),
            "geometry": defacto.geometry.to_numpy(),
        }))
    if unregistered is not None and len(unregistered):
        parts.append(pd.DataFrame({
            "user_uscc": _str(_col(unregistered, "owner_uscc")),
            "note": pd.Series("unregistered parcel", index=range(len(unregistered)), dtype="str"),
            "township": _str(_col(unregistered, "township")),
            "source_parcel_code": _str(_col(unregistered, "parcel_code")),
            "owner_name": _str(_col(unregistered, "owner_name")),
            "land_use": _str(_col(unregistered, "land_use")),
            "geometry": unregistered.geometry.to_numpy(),
        }))
    if not parts:
        return gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=crs)
    out = pd.concat(parts, ignore_index=True)
    out = out[shapely.area(out["geometry"].to_numpy()) > 0].reset_index(drop=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=crs)


def _clip_by_registered(geoms: np.ndarray, reg_geoms: np.ndarray, tree) -> np.ndarray:
    # de-facto land overlapping a registered parcel: that part is registered land already
    di, ri = tree.query(geoms, predicate="intersects")
    if len(di) == 0:
        return geoms
    ov = shapely.area(shapely.intersection(geoms[di], reg_geoms[ri]))
    keep = ov > _MIN_OVERLAP_M2
    di, ri = di[keep], ri[keep]
    if len(di) == 0:
        return geoms
    out = geoms.copy()
    # only overlapping pieces are touched; union their parcels per piece, then one difference
    order = np.argsort(di, kind="stable")
    di, ri = di[order], ri[order]
    uniq, start = np.unique(di, return_index=True)
    unions = np.array([shapely.union_all(reg_geoms[g]) for g in np.split(ri, start[1:])],
                      dtype=object)
    out[uniq] = _polygonal(shapely.difference(geoms[uniq], unions))
    return out


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep only the polygonal part of collections produced by overlay."""
    geoms = np.asarray(geoms, dtype=object)
    tid = shapely.get_type_id(geoms)
    for i in np.flatnonzero(tid == 7):  # GeometryCollection, rare
        parts = shapely.get_parts(geoms[i])
        polys = parts[np.isin(shapely.get_type_id(parts), (3, 6))]
        geoms[i] = shapely.union_all(polys) if len(polys) else shapely.Polygon()
    # a cut or clip along an edge can leave a line or a point: no land there
    geoms[~np.isin(tid, (3, 6, 7))] = shapely.Polygon()
    return geoms


def _defacto_land(pieces, reg, tol, small_mu, county_code) -> pd.DataFrame:
    reg_geoms = reg["geometry"].to_numpy()
    tree = shapely.STRtree(reg_geoms)
    hashes = content_hash(pieces.geometry.to_numpy(), pieces.crs)  # input geometry: independent of parcels
    geoms = _clip_by_registered(pieces.geometry.to_numpy(), reg_geoms, tree)
    area = shapely.area(geoms)
    keep = area > _MIN_OVERLAP_M2
    pieces, geoms, area, hashes = pieces[keep].reset_index(drop=True), geoms[keep], area[keep], hashes[keep]
    n = len(pieces)
    user = pieces["user_uscc"].to_numpy(dtype=object)
    small = area < small_mu * M2_PER_MU

    parent = np.full(n, -1, dtype=np.intp)
    # a piece exactly at the tolerance (integer data: a 5 m gap) must not flip with 1e-7 m noise
    di, ri = tree.query(geoms, predicate="dwithin", distance=tol + _TIE_M)
    if len(di):
        owner = reg["owner_uscc"].to_numpy(dtype=object)
        u, o = user[di], owner[ri]
        same = pd.notna(u) & pd.notna(o)
        same[same] = u[same] == o[same]
        ok = same | small[di]
        di, ri, same = di[ok], ri[ok], same[ok]
        if len(di):
            # shared boundary = the piece's boundary running within tol of the parcel
            shared = shapely.length(shapely.intersection(
                shapely.boundary(geoms[di]), shapely.buffer(reg_geoms[ri], max(tol, 1e-6))))
            cand = pd.DataFrame({
                "d": di, "r": ri, "same": same, "shared": shared,
                "dist": shapely.distance(geoms[di], reg_geoms[ri]),
                "code": reg["identity_code"].to_numpy()[ri],
            })
            best = _pick_parent(cand)
            parent[best["d"].to_numpy()] = best["r"].to_numpy()

    att = parent >= 0
    pidx = np.where(att, parent, 0)
    p_ident = reg["identity_code"].to_numpy(dtype=object)[pidx] if len(reg) else np.full(n, None)

    def from_parent(col, own=None):
        vals = reg[col].to_numpy(dtype=object)[pidx] if len(reg) else np.full(n, None, dtype=object)
        base = own if own is not None else np.full(n, None, dtype=object)
        return pd.Series(np.where(att, vals, base), dtype="str")

    prefix = f"D-{county_code}-" if county_code else "D-"
    ident = np.where(
        att,
        np.char.add(np.char.add("A-", np.array([s[2:] for s in p_ident], dtype=str)),
                    np.char.add("-", hashes)),
        np.char.add(prefix, hashes),
    )
    township = pieces["township"].to_numpy(dtype=object)
    if len(reg):
        # independent pieces without a township take the nearest parcel's
        nearest = tree.query_nearest(geoms, all_matches=False, return_distance=False)[1]
        near_town = reg["township"].to_numpy(dtype=object)[nearest]
        township = np.where(pd.isna(township), near_town, township)
    return pd.DataFrame({
        "identity_code": pd.Series(ident, dtype="str"),
        "kind": np.where(att, "defacto_attached", "defacto"),
        "parcel_code": from_parent("parcel_code"),
        "parent_identity_code": pd.Series(np.where(att, p_ident, None), dtype="str"),
        "user_uscc": pieces["user_uscc"],
        "owner_uscc": from_parent("owner_uscc"),
        "owner_name": from_parent("owner_name", pieces["owner_name"].to_numpy(dtype=object)),
        "township": from_parent("township", township),
        "land_use": pieces["land_use"],
        "registered_area_m2": np.nan,
        "source_parcel_code": pieces["source_parcel_code"],
        "note": pieces["note"],
        "geometry": geoms,
    })


#: Shared boundaries and distances within this (m) of the best are ties, decided by the next key.
_TIE_M = 1e-3


def _pick_parent(cand: pd.DataFrame) -> pd.DataFrame:
    """Per piece ``d`` the parent: a same-user parcel first, then the longest shared boundary,
    then the nearest, then the smallest code — lengths and distances compared within ``_TIE_M``
    of the best, not rounded: two equal lengths must stay equal under 1e-7 m of reprojection
    noise, which rounding does not guarantee (a value near a rounding edge flips)."""
    c = cand[cand["same"] == cand.groupby("d")["same"].transform("max")]
    c = c[c["shared"] >= c.groupby("d")["shared"].transform("max") - _TIE_M]
    c = c[c["dist"] <= c.groupby("d")["dist"].transform("min") + _TIE_M]
    return c.sort_values(["d", "code"]).drop_duplicates("d")


def _dedupe_codes(land: pd.DataFrame) -> pd.Series:
    code = land["identity_code"].reset_index(drop=True)
    dup = code.duplicated(keep=False).to_numpy()
    if not dup.any():
        return code
    sub = land.loc[dup].reset_index()
    g = sub["geometry"].to_numpy()
    sub["_a"] = np.round(shapely.area(g), 2)
    sub["_w"] = [w.hex() for w in shapely.to_wkb(shapely.set_precision(g, 0.01), output_dimension=2)]
    sub["_u"] = sub["user_uscc"].fillna("")
    sub = sub.sort_values(["identity_code", "_a", "_w", "_u"])
    n = sub.groupby("identity_code", sort=False).cumcount().to_numpy()
    new = np.where(n == 0, sub["identity_code"].to_numpy(dtype=object),
                   sub["identity_code"].to_numpy(dtype=object) + "-" + (n + 1).astype(str).astype(object))
    out = code.to_numpy(dtype=object).copy()
    out[sub["index"].to_numpy()] = new
    return pd.Series(out, dtype="str")
