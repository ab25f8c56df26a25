"""多企共地分割 — split a piece of land among the enterprises on it.

:func:`split_shares` gives every link a ``share`` of its land piece (shares sum to 1 per piece)
and the ``attributed_area_m2`` / ``attributed_area_mu`` that follow; :func:`sublot_geometries`
draws each occupant's sub-lot for maps.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from spatial.identity import M2_PER_MU, _isin, _polygonal, _str
from spatial.match import assign_buildings

__all__ = ["split_shares", "sublot_geometries", "SUBLOT_TOLERANCE"]

#: sub-lot areas match share × piece area within max(1 m², 0.5 %) (measured: ~1e-6 relative)
SUBLOT_TOLERANCE = (1.0, 0.005)

_ROLE_ORDER = {"owner_occupier": 0, "landlord": 1, "tenant": 2}


def split_shares(
    links: pd.DataFrame,
    land: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame | None = None,
    leases: pd.DataFrame | None = None,
    rule: str = "equal",
) -> pd.DataFrame:
    """Split each land piece among its occupants (多企共地分割).

    Each link first gets a *claim* (a share of the piece) from the best key it has:

    1. ``fixed_share`` — a 纠偏 correction's share;
    2. ``leased_land_area_m2`` / piece area — a lease that states land area;
    3. ``leased_floor_area_m2`` / floor area on the piece — the floor area of the buildings on
       the piece (``floor_area_m2``, else footprint × floors, else footprint), or, where no
       building is known, the sum of the leased floor areas on the piece (these tenants then
       share what claims 1 and 2 leave); the larger of the two when the leases exceed the
       buildings;
    4. building footprint — a tenant located in a building (``building_id`` from the building
       route): that building's footprint *on this piece* (shared equally by the enterprises in
       it) over all building footprint on the piece — or over the piece's area when its holder
       occupies the piece outside any building (the holder then keeps the uncovered ground).

    Buildings are split by the parcels they cross: a building straddling two pieces counts on
    each only with the part of its footprint (and, pro rata, of its floor area) that lies on it,
    so a tenant in it never claims land of a piece it is not on (issue 11). A building on no
    land counts whole on the piece :func:`spatial.match.assign_buildings` gives it.

    Claims over 1 are scaled down to 1.  The rest goes by ``rule`` and the piece's holder
    (owner / de-facto user) keeps what is left:

    * ``'equal'`` (default): each occupant without a claim gets 1 / (number of occupants —
      a landlord that does not occupy the piece is not counted), capped by what is left;
    * ``'owner'``: the holder keeps all that is left (tenants without a key get 0; suits
      schemes where the landlord answers for its parcel, 地块评价法);
    * any numeric column of ``links`` (e.g. ``'employees'`` merged in by the caller): what is
      left is shared by the unclaimed occupants, holder included, in proportion to it.

    A piece without a holder shares what is left equally among its unclaimed occupants, or, if
    all have claims, scales the claims up to 1.  Shares are finally made to sum to 1 per piece
    (the float residue goes to the largest share), and so do areas to the piece area.

    Parameters
    ----------
    links : DataFrame from :func:`spatial.match.match_enterprises`.
    land : GeoDataFrame from :func:`spatial.identity.build_land`.
    buildings : GeoDataFrame, optional — for floor areas and footprints.
    leases : DataFrame, optional — only used when ``links`` has no ``leased_*`` columns: the
        tenant's leased areas are put on its tenant links (spread by piece area).
    rule : str — see above.

    Returns
    -------
    ``links`` with ``share``, ``share_source`` ('correction', 'lease_land', 'lease_floor',
    'footprint', 'rule', 'rest'), ``attributed_area_m2`` and ``attributed_area_mu``.

    Examples
    --------
    >>> links = split_shares(links, land, buildings, rule="equal")        # doctest: +SKIP
    >>> links.groupby("identity_code")["share"].sum().eq(1).all()          # doctest: +SKIP
    True
    """
    df = links.reset_index(drop=True).copy()
    if df.duplicated(["identity_code", "uscc"]).any():
        raise ValueError("links: one row per (identity_code, uscc) expected")
    area_of = pd.Series(land["area_m2"].to_numpy(float), index=land["identity_code"].to_numpy())
    if not _isin(df["identity_code"], area_of.index).all():
        raise ValueError("links refer to identity codes not in land")
    for c in ("leased_floor_area_m2", "leased_land_area_m2", "fixed_share"):
        if c not in df.columns:
            df[c] = np.nan
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    if leases is not None and df["leased_floor_area_m2"].isna().all() and df["leased_land_area_m2"].isna().all():
        df = _leases_onto_links(df, leases, area_of)
    holder = df["holder"].fillna(False).astype(bool).to_numpy() if "holder" in df.columns else (
        (df["role"] == "landlord") | ((df["role"] == "owner_occupier") & (df["method"] == "owner_code"))).to_numpy()
    ident = df["identity_code"]
    area = ident.map(area_of).to_numpy(float)

    claim, source, relative = _claims(df, area, holder, buildings, land)
    g = ident.to_numpy()
    codes, gi = np.unique(g, return_inverse=True)
    ng = len(codes)

    def gsum(x):
        return np.bincount(gi, weights=np.asarray(x, float), minlength=ng)

    if relative.any():
        absolute = np.clip(gsum(np.where(relative, 0, np.nan_to_num(claim))), 0, 1)
        claim = np.where(relative, claim * (1 - absolute)[gi], claim)

    s = gsum(np.nan_to_num(claim))
    scale = np.where(s > 1, 1 / np.where(s > 0, s, 1), 1.0)
    claim = claim * scale[gi]
    rest = np.clip(1 - s * scale, 0, None)
    unc = np.isnan(claim)
    landlord = holder & (df["role"] == "landlord").to_numpy()
    n_occ = np.maximum(gsum(np.ones(len(df))) - gsum(landlord), 1)
    has_holder = gsum(holder) > 0
    unc_nh = unc & ~holder
    n_unc_nh = gsum(unc_nh)

    share = np.nan_to_num(claim)
    src = np.where(unc, "rule", source).astype(object)
    if rule in ("equal", "owner"):
        each = np.minimum(1 / n_occ, rest / np.maximum(n_unc_nh, 1)) if rule == "equal" else np.zeros(ng)
        each = np.where(has_holder, each, rest / np.maximum(n_unc_nh, 1))
        share = np.where(unc_nh, each[gi], share)
        left = rest - gsum(np.where(unc_nh, each[gi], 0))
    elif rule in df.columns:
        w = pd.to_numeric(df[rule], errors="coerce").fillna(0).clip(lower=0).to_numpy(float)
        w = np.where(unc, w, 0)
        wsum = gsum(w)
        n_unc = gsum(unc)
        part = np.where(wsum[gi] > 0, w / np.where(wsum > 0, wsum, 1)[gi],
                        1 / np.maximum(n_unc, 1)[gi])
        share = np.where(unc, rest[gi] * part, share)
        left = rest - gsum(np.where(unc, rest[gi] * part, 0))
    else:
        raise ValueError(f"rule must be 'equal', 'owner' or a numeric column of links, got {rule!r}")

    # the holder keeps what is left
    left = np.clip(left, 0, None)
    share = share + np.where(holder, left[gi] / np.maximum(gsum(holder), 1)[gi], 0)
    src = np.where(holder & unc, "rest", src)
    share = np.where(share < 1e-12, 0.0, share)  # float residue, not a share of land
    share = _normalise(share, gi, ng)
    df["share"] = share
    df["share_source"] = pd.Series(src, dtype="str")
    attributed = _fix_sum(share * area, gi, ng, area_of.reindex(codes).to_numpy(float))
    df["attributed_area_m2"] = attributed
    df["attributed_area_mu"] = attributed / M2_PER_MU
    return df


def sublot_geometries(land: gpd.GeoDataFrame, links: pd.DataFrame) -> gpd.GeoDataFrame:
    """Draw each occupant's sub-lot inside its land piece (分割子地块, for maps).

    A piece with one occupant is its own sub-lot.  A piece with several is cut recursively:
    the occupants (holder first, then by uscc) are split into two groups of about equal share,
    and the piece is cut across the long axis of its minimum rotated rectangle at the position
    where the first group gets exactly its share of the area; each side is cut again.  The
    cut position is found by bisection, in lockstep for all pieces of a level (vectorised
    shapely), and works for concave pieces and multipolygons too (intersection with a
    half-plane).  Occupants with share 0 get no sub-lot.

    Guarantees: sub-lots of a piece do not overlap (one side is the intersection with the
    half-plane, the other the difference), they cover the piece, and each area equals
    share × piece area within max(1 m², 0.5 %) (``SUBLOT_TOLERANCE``; in practice ~1e-6).

    Returns a GeoDataFrame: identity_code, uscc, role, share, area_m2, geometry.

    >>> lots = sublot_geometries(land, split_shares(links, land))    # doctest: +SKIP
    """
    df = links[links["share"] > 0].copy()
    geom_of = pd.Series(land.geometry.to_numpy(), index=land["identity_code"].to_numpy())
    if "role" not in df.columns:
        df["role"] = pd.Series(pd.NA, index=df.index, dtype="str")
    df["_r"] = df["role"].map(_ROLE_ORDER).fillna(3).to_numpy()
    if "holder" in df.columns:
        df["_r"] = np.where(df["holder"].fillna(False).astype(bool), -1, df["_r"])
    df = df.sort_values(["identity_code", "_r", "uscc"], ignore_index=True)
    out = np.empty(len(df), dtype=object)
    n = df.groupby("identity_code")["uscc"].transform("size").to_numpy()
    single = n == 1
    out[single] = geom_of.reindex(df.loc[single, "identity_code"]).to_numpy()
    multi = df[~single]
    if len(multi):
        tasks_geom = list(geom_of.reindex(multi["identity_code"].unique()).to_numpy())
        groups = [g.index.to_numpy() for _, g in multi.groupby("identity_code", sort=True)]
        shares = df["share"].to_numpy(float)
        _cut(np.array(tasks_geom, dtype=object), groups, shares, out)
    res = gpd.GeoDataFrame({
        "identity_code": df["identity_code"].to_numpy(),
        "uscc": df["uscc"].to_numpy(),
        "role": df["role"].to_numpy(),
        "share": df["share"].to_numpy(float),
    }, geometry=gpd.GeoSeries(out, crs=land.crs), crs=land.crs)
    res["area_m2"] = res.geometry.area
    return res[["identity_code", "uscc", "role", "share", "area_m2", "geometry"]]


# --------------------------------------------------------------------------- helpers

def _leases_onto_links(df: pd.DataFrame, leases: pd.DataFrame, area_of: pd.Series) -> pd.DataFrame:
    """Put lease records' areas on tenant links, for links that came without them.

    A lease naming its 宗地 goes to the tenant's links on that code; one naming only a landlord
    goes to all the tenant's links. A lease covering several pieces is spread by piece area.
    """
    n = len(leases)
    ls = pd.DataFrame({
        "uscc": _str(leases["tenant_uscc"]).to_numpy(dtype=object),
        "parcel_code": (_str(leases["parcel_code"]) if "parcel_code" in leases.columns
                        else pd.Series([pd.NA] * n, dtype="str")).to_numpy(dtype=object),
        "floor": pd.to_numeric(leases.get("floor_area_m2", pd.Series([np.nan] * n)), errors="coerce").to_numpy(float),
        "land": pd.to_numeric(leases.get("land_area_m2", pd.Series([np.nan] * n)), errors="coerce").to_numpy(float),
    })
    tenant = (df["role"] == "tenant").to_numpy() if "role" in df.columns else np.ones(len(df), bool)
    cand = df.loc[tenant, ["identity_code", "parcel_code", "uscc"]].rename_axis("row").reset_index()
    cand["piece_area"] = cand["identity_code"].map(area_of).to_numpy(float)
    named = ls[pd.notna(ls["parcel_code"])].groupby(["uscc", "parcel_code"], as_index=False)[["floor", "land"]].sum(min_count=1)
    by_code = cand.merge(named, on=["uscc", "parcel_code"])
    by_code["w"] = by_code["piece_area"] / by_code.groupby(["uscc", "parcel_code"])["piece_area"].transform("sum")
    unnamed = ls[pd.isna(ls["parcel_code"])].groupby("uscc", as_index=False)[["floor", "land"]].sum(min_count=1)
    by_tenant = cand.merge(unnamed, on="uscc")
    by_tenant["w"] = by_tenant["piece_area"] / by_tenant.groupby("uscc")["piece_area"].transform("sum")
    both = pd.concat([by_code, by_tenant], ignore_index=True)
    both[["floor", "land"]] = both[["floor", "land"]].mul(both["w"], axis=0)
    per_row = both.groupby("row")[["floor", "land"]].sum(min_count=1)
    df.loc[per_row.index, "leased_floor_area_m2"] = per_row["floor"].to_numpy()
    df.loc[per_row.index, "leased_land_area_m2"] = per_row["land"].to_numpy()
    return df


def _claims(df, area, holder, buildings, land):
    n = len(df)
    claim = np.full(n, np.nan)
    source = np.full(n, "rule", dtype=object)

    def put(value, name):
        ok = np.isnan(claim) & np.isfinite(value) & (value >= 0)
        claim[ok] = value[ok]
        source[ok] = name

    put(df["fixed_share"].to_numpy(float), "correction")
    with np.errstate(divide="ignore", invalid="ignore"):
        put(df["leased_land_area_m2"].to_numpy(float) / area, "lease_land")
    floor = df["leased_floor_area_m2"].to_numpy(float)
    bl = None
    if buildings is not None and len(buildings):
        bl = _building_parts(buildings, land)
    relative = np.zeros(n, dtype=bool)
    if np.isfinite(floor).any():
        leased_total = df.assign(_f=floor).groupby("identity_code")["_f"].transform("sum").to_numpy(float)
        b_total = np.full(n, np.nan)
        if bl is not None:
            b_floor = bl["floor_area_m2"].fillna(bl["footprint_m2"]).groupby(bl["identity_code"]).sum()
            b_total = df["identity_code"].map(b_floor).to_numpy(float)
        total = np.fmax(b_total, leased_total)
        before = np.isnan(claim)
        with np.errstate(divide="ignore", invalid="ignore"):
            put(floor / total, "lease_floor")
        # no building floor area known: the floor leases share what the other claims leave
        relative = before & ~np.isnan(claim) & np.isnan(b_total)
    if bl is not None and "building_id" in df.columns:
        # a building shared by several enterprises is shared equally between them
        b = df["building_id"]
        inb = b.notna().to_numpy() & ~holder
        if inb.any():
            # the building's footprint on the link's own piece (0 if it does not reach it)
            key = pd.MultiIndex.from_arrays([bl["identity_code"].to_numpy(), bl["building_id"].to_numpy()])
            foot = pd.Series(bl["footprint_m2"].to_numpy(), index=key)
            foot = foot[~foot.index.duplicated()]
            total = bl.groupby("identity_code")["footprint_m2"].sum()
            # a holder occupying its piece outside any building keeps the uncovered ground
            occupied_open = holder & (df["role"] == "owner_occupier").to_numpy() & b.isna().to_numpy()
            open_pieces = set(df.loc[occupied_open, "identity_code"])
            denom = df["identity_code"].map(total).to_numpy(float)
            denom = np.where(df["identity_code"].isin(open_pieces).to_numpy(), area, denom)
            per_b = df[inb].groupby(["identity_code", "building_id"])["uscc"].transform("size").to_numpy()
            mine = pd.MultiIndex.from_arrays([df.loc[inb, "identity_code"].to_numpy(), b[inb].to_numpy()])
            v = np.full(n, np.nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                v[inb] = foot.reindex(mine).fillna(0.0).to_numpy(float) / per_b / denom[inb]
            put(v, "footprint")
    return claim, source, relative


def _building_parts(buildings: gpd.GeoDataFrame, land: gpd.GeoDataFrame) -> pd.DataFrame:
    """Each building cut by the land pieces it crosses: building_id, identity_code, footprint_m2
    (the part on that piece, m²) and floor_area_m2 (the building's floor area × that part's
    fraction of its footprint). A building on no land is whole on its assigned piece."""
    bl = assign_buildings(buildings, land)
    geoms = buildings.geometry.to_numpy()
    lg = land.geometry.to_numpy()
    bi, li = shapely.STRtree(lg).query(geoms, predicate="intersects")
    part = shapely.area(shapely.intersection(geoms[bi], lg[li])) if len(bi) else np.zeros(0)
    keep = part > 0  # touching along an edge or at a vertex is no part
    bi, li, part = bi[keep], li[keep], part[keep]
    foot = bl["footprint_m2"].to_numpy(float)
    frac = np.divide(part, foot[bi], out=np.zeros(len(part)), where=foot[bi] > 0)
    cut = pd.DataFrame({"building_id": bl["building_id"].to_numpy()[bi],
                        "identity_code": land["identity_code"].to_numpy()[li],
                        "footprint_m2": part, "floor_area_m2": bl["floor_area_m2"].to_numpy(float)[bi] * frac})
    whole = bl[~np.isin(np.arange(len(bl)), bi) & bl["identity_code"].notna().to_numpy()]
    return pd.concat([cut, whole[["building_id", "identity_code", "footprint_m2", "floor_area_m2"]]],
                     ignore_index=True)


def _normalise(share, gi, ng):
    tot = np.bincount(gi, weights=share, minlength=ng)
    n = np.bincount(gi, minlength=ng)
    # a piece whose shares are all 0 (cannot happen with a holder) is split equally
    share = np.where(tot[gi] > 0, share / np.where(tot > 0, tot, 1)[gi], 1 / n[gi])
    return _fix_sum(share, gi, ng, np.ones(ng))


def _fix_sum(x, gi, ng, target):
    """Put the float residue of each group on its largest member, so sums hit the target."""
    x = np.asarray(x, float).copy()
    order = np.lexsort((-x, gi))
    first = order[np.unique(gi[order], return_index=True)[1]]
    for _ in range(2):  # the second pass catches the residue of the first addition
        tot = np.bincount(gi, weights=x, minlength=ng)
        x[first] += (target - tot)[gi[first]]
    return x


def _cut(geoms, groups, shares, out):
    """Recursive bisection cut, all pieces of one level at a time."""
    while len(geoms):
        ka, kb = [], []
        for g in groups:
            s = shares[g]
            cum = np.cumsum(s)[:-1]
            k = int(np.argmin(np.abs(cum - s.sum() / 2))) + 1
            ka.append(g[:k]), kb.append(g[k:])
        frac = np.array([shares[a].sum() / shares[np.concatenate([a, b])].sum() for a, b in zip(ka, kb)])
        a_geom, b_geom = _bisect(geoms, frac)
        nxt_g, nxt_m = [], []
        for geom, members in [(a_geom, ka), (b_geom, kb)]:
            for gm, m in zip(geom, members):
                if len(m) == 1:
                    out[m[0]] = gm
                else:
                    nxt_g.append(gm)
                    nxt_m.append(m)
        geoms, groups = np.array(nxt_g, dtype=object), nxt_m


def _bisect(geoms, frac, max_iter=60, rel_tol=1e-7):
    # no library call cuts a polygon at a given area fraction.  The area on one side of a line
    # across the long axis is monotone in the line's position, so a bracketing root finder
    # always converges, for concave pieces and multipolygons too.  Illinois-modified regula
    # falsi: a few iterations for most shapes (1 for a rectangle), never worse than bisection
    # by much; only the pieces not yet within tolerance are recomputed.
    n = len(geoms)
    rect = shapely.oriented_envelope(geoms)
    odd = shapely.get_num_coordinates(rect) != 5   # degenerate (a sliver left by a tiny share)
    if odd.any():
        b = shapely.bounds(geoms[odd])
        b = np.where(np.isnan(b), 0.0, b)
        rect[odd] = shapely.box(b[:, 0], b[:, 1], b[:, 2] + 1e-3, b[:, 3] + 1e-3)
    c = shapely.get_coordinates(rect).reshape(n, 5, 2)
    e1, e2 = c[:, 1] - c[:, 0], c[:, 2] - c[:, 1]
    l1, l2 = np.hypot(*e1.T), np.hypot(*e2.T)
    u = np.where((l1 >= l2)[:, None], e1, e2)
    u = u / np.maximum(np.hypot(*u.T), 1e-12)[:, None]
    v = np.column_stack([-u[:, 1], u[:, 0]])
    o = c[:, :4].mean(axis=1)
    t = np.einsum("nkj,nj->nk", c[:, :4] - o[:, None], u)
    lo, hi = t.min(axis=1), t.max(axis=1)
    big = (np.maximum(l1, l2) + 1.0) * 2
    total = shapely.area(geoms)
    target = frac * total
    tol = rel_tol * np.maximum(total, 1.0)

    def half(idx, tt):
        uu, vv, bb = u[idx], v[idx], big[idx, None]
        base = o[idx] + (lo0[idx] - big[idx])[:, None] * uu
        tip = o[idx] + tt[:, None] * uu
        ring = np.stack([base - bb * vv, tip - bb * vv, tip + bb * vv, base + bb * vv, base - bb * vv], axis=1)
        return shapely.polygons(ring)

    lo0 = lo.copy()
    f_lo, f_hi = -target, total - target          # area is 0 at lo and the whole at hi
    side = np.zeros(n, dtype=np.int8)             # which end moved last (Illinois)
    best = (lo + hi) / 2
    active = np.flatnonzero((np.abs(f_lo) > tol) & (np.abs(f_hi) > tol))
    best[np.abs(f_lo) <= tol] = lo[np.abs(f_lo) <= tol]
    best[np.abs(f_hi) <= tol] = hi[np.abs(f_hi) <= tol]
    for it in range(max_iter):
        if not len(active):
            break
        a, b, fa, fb = lo[active], hi[active], f_lo[active], f_hi[active]
        denom = fb - fa
        tt = np.where(denom > 0, b - fb * (b - a) / np.where(denom > 0, denom, 1), (a + b) / 2)
        # keep strictly inside the bracket; plain bisection every 8th step guards slow cases
        bad = ~((tt > a) & (tt < b)) | (it % 8 == 7)
        tt = np.where(bad, (a + b) / 2, tt)
        f = shapely.area(shapely.intersection(geoms[active], half(active, tt))) - target[active]
        best[active] = tt
        below = f < 0
        lo[active] = np.where(below, tt, a)
        hi[active] = np.where(below, b, tt)
        new_fa = np.where(below, f, np.where(side[active] == -1, fa / 2, fa))
        new_fb = np.where(below, np.where(side[active] == 1, fb / 2, fb), f)
        f_lo[active], f_hi[active] = new_fa, new_fb
        side[active] = np.where(below, 1, -1)
        active = active[np.abs(f) > tol[active]]
    h = half(np.arange(n), best)
    return _polygonal(shapely.intersection(geoms, h)), _polygonal(shapely.difference(geoms, h))
