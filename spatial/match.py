"""地企对应 — link every piece of land to the enterprises on it.

One link per (identity_code, uscc) with a role and the method that found it:

=========================  ==========  ======================================================
method                     confidence  source
=========================  ==========  ======================================================
``correction``             1.0         纠偏 by staff, applied last, so a re-run never loses it
``owner_code``             1.0         the land's holder: ``user_uscc`` of de-facto land, else
                                       ``owner_uscc``; 0.8 when found by exact ``owner_name``
``lease``                  0.95        a lease record (outranks the tenant's own point)
``building``               0.9         the point lies in a building whose parcel is known
``point_in_polygon``       0.85        the point lies in (or on the edge of) the land
``snap``                   0.7 → 0.3   nearest land within ``snap_tolerance_m`` (road gap,
                                       geocoding error), falling linearly with the distance
=========================  ==========  ======================================================

Roles (who is the *holder*: the owner_code link of the piece):

* ``owner_occupier`` 自用 — the holder, when nobody else is on the piece or when the holder
  itself occupies it (its point/building/correction is on the same 宗地, i.e. the same
  parcel_code group); also every occupant of a piece with no known holder.
* ``landlord`` 出租方 — the holder of a piece with tenants that it does not occupy itself.
* ``tenant`` 承租方 — anyone else on a piece that has a holder, and every lease tenant.

A point is one location, so each enterprise gets at most one spatial link (building, then
point-in-polygon, then snap); owner, lease and correction links add to it.

Tie rules (issue 11; the result never depends on row order):

1. **An enterprise's own land wins a tie.** A point on a shared edge or vertex, in overlapping
   land, or equidistant from several pieces goes to the piece whose holder (owner code / de-facto
   user) is that enterprise — an owner standing on the corner it shares with a neighbour is not
   the neighbour's tenant.
2. **A point's own parcel beats a building's majority parcel.** A point inside a building whose
   piece is only known from the overlap (no 宗地代码 on the building) is linked to the land under
   the point, not to the piece the building overlaps most (a building straddling two parcels);
   the building id is kept, and :func:`spatial.split.split_shares` credits only the building's
   part on that piece. A building whose 宗地代码 is registered keeps its piece.
3. Otherwise: the building's piece (point on no land), then the smallest piece, then the
   smallest identity_code; equidistant snaps likewise after rule 1.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from spatial.identity import _isin, _o, _str

__all__ = ["match_enterprises", "land_quality_report", "assign_buildings", "LINK_COLUMNS"]

LINK_COLUMNS = [
    "identity_code", "parcel_code", "uscc", "role", "holder", "method", "confidence", "distance_m",
    "building_id", "leased_floor_area_m2", "leased_land_area_m2", "fixed_share",
]

_PRIORITY = {"correction": 0, "owner_code": 1, "lease": 2, "building": 3,
             "point_in_polygon": 4, "snap": 5}
_CONF = {"owner_code": 1.0, "owner_name": 0.8, "lease": 0.95, "building": 0.9,
         "point_in_polygon": 0.85, "correction": 1.0}
_SPATIAL = ("building", "point_in_polygon", "snap")


def match_enterprises(
    land: gpd.GeoDataFrame,
    enterprises: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame | None = None,
    leases: pd.DataFrame | None = None,
    corrections: pd.DataFrame | None = None,
    snap_tolerance_m: float = 30.0,
) -> pd.DataFrame:
    """Match enterprises to land (地企对应).

    Parameters
    ----------
    land : GeoDataFrame
        Output of :func:`spatial.identity.build_land`.
    enterprises : GeoDataFrame
        ``uscc``, ``name`` and a Point geometry (or None: no location), same CRS as ``land``.
    buildings : GeoDataFrame, optional
        ``building_id``, ``parcel_code`` (may be NA: then the land it overlaps most).
    leases : DataFrame, optional
        ``tenant_uscc`` and ``parcel_code`` or ``landlord_uscc``; ``floor_area_m2``,
        ``land_area_m2``.  With only a landlord, the tenant goes to the landlord's piece
        nearest its point (within the snap tolerance), else to all the landlord's pieces,
        with the leased areas spread by piece area.
    corrections : DataFrame, optional
        纠偏: ``uscc``, ``parcel_code`` (a 宗地代码 or an identity_code), ``action``
        (``add``/``remove``), ``share``.  Per (uscc, code) the last row wins.  ``remove``
        drops the links to every piece of that 宗地; ``add`` links to its registered piece.
    snap_tolerance_m : float
        Maximum distance for snapping a point that is on no land.

    Returns
    -------
    DataFrame with ``LINK_COLUMNS``: identity_code, parcel_code, uscc, role, holder (bool:
    the piece's owner / de-facto user, who keeps the rest in split_shares), method, confidence, distance_m (point to land; 0 inside, NaN without a point), building_id,
    leased_floor_area_m2, leased_land_area_m2, fixed_share (from corrections).  Sorted by
    identity_code, uscc.  Leases that could not be placed are in ``.attrs["unplaced_leases"]``,
    corrections naming unknown land in ``.attrs["unapplied_corrections"]``.

    Examples
    --------
    >>> links = match_enterprises(land, enterprises, leases=leases)   # doctest: +SKIP
    >>> links.groupby("role").size()                                  # doctest: +SKIP
    """
    land = land.reset_index(drop=True)
    ident = land["identity_code"].to_numpy(dtype=object)
    holder = _holders(land)
    ent = enterprises.reset_index(drop=True)
    uscc = _str(ent["uscc"])
    # Performance: Arrow-backed string columns make every map/isin/sort/groupby on them slow
    # (each converts to Python objects first).  Links are therefore keyed on integers here:
    # the land row of a link (one hash lookup of its identity_code), the rank of its
    # identity_code and of its uscc (sorting ranks = sorting the strings, so tie-breaks and the
    # final order are unchanged).  Strings stay in the columns only for the output.
    row_of = pd.Index(ident, dtype=object)
    rank = _rank(ident)
    site = _site_codes(land)

    owner = _owner_links(land, holder, ent, uscc)
    spatial = _spatial_links(land, ent, uscc, buildings, snap_tolerance_m, rank=rank)
    lease, unplaced = _lease_links(land, holder, leases, pd.concat([owner, spatial]),
                                   ent, uscc, snap_tolerance_m)
    # a lease outranks the tenant's own point (unless that point is on the tenant's own land)
    sp_row = row_of.get_indexer(_o(spatial["identity_code"]))
    is_holder = _holder_keys(holder)[sp_row] == _o(spatial["uscc"])
    keep = ~_isin(spatial["uscc"], set(_o(lease["uscc"]))) | is_holder
    spatial, sp_row = spatial[keep], sp_row[keep]

    links = pd.concat([owner, spatial, lease], ignore_index=True)
    # (site, uscc) where an enterprise physically is
    occ_site, occ_uscc = [site[sp_row]], [_o(spatial["uscc"])]
    links, unapplied = _apply_corrections(links, land, corrections)
    corr = links[(links["method"] == "correction").to_numpy()]
    occ_site.append(site[row_of.get_indexer(_o(corr["identity_code"]))])
    occ_uscc.append(_o(corr["uscc"]))
    occupied = (np.concatenate(occ_site), np.concatenate(occ_uscc))

    links = links.reset_index(drop=True)
    links["_l"] = row_of.get_indexer(_o(links["identity_code"]))
    links["_i"] = rank[links["_l"].to_numpy()]
    links["_u"] = pd.factorize(_o(links["uscc"]), sort=True, use_na_sentinel=False)[0]
    links = _dedupe(links)
    links = _assign_roles(links, land, holder, occupied, site)
    links = _with_distance(links, land, ent, uscc)
    order = np.lexsort((links["_u"].to_numpy(), links["_i"].to_numpy()))
    links = links[LINK_COLUMNS].take(order).reset_index(drop=True)
    links.attrs["unplaced_leases"] = unplaced
    links.attrs["unapplied_corrections"] = unapplied
    return links


def land_quality_report(
    land: gpd.GeoDataFrame,
    enterprises: pd.DataFrame,
    links: pd.DataFrame,
    *,
    many_occupants: int = 5,
    low_confidence: float = 0.5,
) -> dict[str, pd.DataFrame]:
    """Quality report of the matching, for staff to check (纠偏).

    Returns a dict of DataFrames:

    * ``enterprises_without_land`` — uscc, name, has_location: enterprises with no link;
    * ``idle_land`` — land pieces with no enterprise at all (闲置 candidates);
    * ``crowded_land`` — pieces with ``>= many_occupants`` enterprises, with occupant_count;
    * ``low_confidence_links`` — links with confidence below ``low_confidence``;
    * ``unknown_enterprises`` — linked usccs (e.g. cadastral owners) not in ``enterprises``.

    >>> report = land_quality_report(land, enterprises, links)        # doctest: +SKIP
    >>> report["idle_land"][["identity_code", "area_mu"]]             # doctest: +SKIP
    """
    ent_uscc = _str(enterprises["uscc"])
    linked = set(_o(links["uscc"]))
    no_land = ~_isin(ent_uscc, linked)
    geom = enterprises.geometry if isinstance(enterprises, gpd.GeoDataFrame) else None
    has_loc = (geom.notna() & ~geom.is_empty).to_numpy() if geom is not None else np.zeros(len(enterprises), bool)
    cols = [c for c in ("uscc", "name", "township", "scale") if c in enterprises.columns]
    without = pd.DataFrame(enterprises[cols]).reset_index(drop=True)[no_land].copy()
    without["has_location"] = has_loc[no_land]

    counts = links.groupby("identity_code").size().rename("occupant_count")
    lcols = [c for c in ("identity_code", "kind", "parcel_code", "owner_uscc", "township", "area_m2", "area_mu")
             if c in land.columns]
    ldf = pd.DataFrame(land[lcols]).reset_index(drop=True)
    idle = ldf[~_isin(ldf["identity_code"], counts.index)]
    crowded = ldf.merge(counts.reset_index(), on="identity_code")
    crowded = crowded[crowded["occupant_count"] >= many_occupants].sort_values(
        ["occupant_count", "identity_code"], ascending=[False, True])
    low = links[links["confidence"] < low_confidence]
    unknown = links[~_isin(links["uscc"], set(_o(ent_uscc.dropna())))]
    return {
        "enterprises_without_land": without.reset_index(drop=True),
        "idle_land": idle.reset_index(drop=True),
        "crowded_land": crowded.reset_index(drop=True),
        "low_confidence_links": low.reset_index(drop=True),
        "unknown_enterprises": unknown.reset_index(drop=True),
    }


def assign_buildings(buildings: gpd.GeoDataFrame, land: gpd.GeoDataFrame) -> pd.DataFrame:
    """Building → land piece: its ``parcel_code`` (registered piece) when known, else the piece
    it overlaps most (ties: smallest piece, then code).  Returns building_id, identity_code,
    footprint_m2, floor_area_m2 (``floor_area_m2``, else footprint × floors, else NaN) and
    assigned_by (``parcel_code`` / ``overlap``; NA when on no land)."""
    b = buildings.reset_index(drop=True)
    bid = _str(b["building_id"]) if "building_id" in b.columns else pd.Series(b.index.astype(str))
    geoms = b.geometry.to_numpy()
    foot = shapely.area(geoms)
    floor = pd.to_numeric(b["floor_area_m2"], errors="coerce").to_numpy(float) \
        if "floor_area_m2" in b.columns else np.full(len(b), np.nan)
    if "floors" in b.columns:
        est = foot * pd.to_numeric(b["floors"], errors="coerce").to_numpy(float)
        floor = np.where(np.isnan(floor), est, floor)
    by_code = _code_map(land)
    pc = _str(b["parcel_code"]) if "parcel_code" in b.columns else pd.Series([pd.NA] * len(b), dtype="str")
    target = pc.map(by_code).to_numpy(dtype=object)
    todo = np.flatnonzero(pd.isna(target))
    if len(todo):
        lg = land.geometry.to_numpy()
        bi, li = shapely.STRtree(lg).query(geoms[todo], predicate="intersects")
        if len(bi):
            cand = pd.DataFrame({
                "b": todo[bi], "ov": -np.round(shapely.area(shapely.intersection(geoms[todo[bi]], lg[li])), 3),
                "a": np.round(land["area_m2"].to_numpy()[li], 3),
                "code": land["identity_code"].to_numpy()[li],
            })
            cand = cand[cand["ov"] < 0].sort_values(["b", "ov", "a", "code"]).drop_duplicates("b")
            target[cand["b"].to_numpy()] = cand["code"].to_numpy()
    by = np.where(pd.notna(target), "overlap", None).astype(object)
    by[np.setdiff1d(np.arange(len(b)), todo)] = "parcel_code"
    return pd.DataFrame({"building_id": bid, "identity_code": pd.Series(target, dtype="str"),
                         "footprint_m2": foot, "floor_area_m2": floor,
                         "assigned_by": pd.Series(by, dtype="str")})


# --------------------------------------------------------------------------- helpers

def _rank(codes) -> np.ndarray:
    """Rank of each code in string order (equal codes share a rank): sorting by the rank sorts
    like the strings, at integer speed."""
    return pd.factorize(_o(codes), sort=True, use_na_sentinel=False)[0]


def _site_codes(land) -> np.ndarray:
    # a 宗地 with its attached de-facto land is one site
    return _str(land["parcel_code"]).fillna(land["identity_code"]).to_numpy(dtype=object)


def _holder_keys(holder) -> np.ndarray:
    """Holders as an object array with "\x00" for none (never equal to a uscc)."""
    return pd.Series(holder, dtype="str").fillna("\x00").to_numpy(dtype=object)


def _pairs_in(a1, a2, b1, b2) -> np.ndarray:
    """Whether each pair (a1[i], a2[i]) is among the pairs (b1[j], b2[j]).

    Integer pair keys from one factorisation of each side, instead of building
    ``a1 + "\x00" + a2`` strings for every row."""
    n = len(a1)
    c1 = pd.factorize(np.concatenate([_o(a1), _o(b1)]), use_na_sentinel=False)[0].astype(np.int64)
    c2 = pd.factorize(np.concatenate([_o(a2), _o(b2)]), use_na_sentinel=False)[0].astype(np.int64)
    key = c1 * (int(c2.max()) + 1 if len(c2) else 1) + c2
    return np.isin(key[:n], key[n:])


def _holders(land) -> np.ndarray:
    # the de-facto user holds de-facto land; the rights holder holds registered land
    return _str(land["user_uscc"]).fillna(_str(land["owner_uscc"])).to_numpy(dtype=object)


def _frame(identity, uscc, method, confidence, **extra) -> pd.DataFrame:
    df = pd.DataFrame({"identity_code": pd.Series(identity, dtype="str"),
                       "uscc": pd.Series(uscc, dtype="str"),
                       "method": method, "confidence": np.asarray(confidence, dtype=float)
                       if np.ndim(confidence) else float(confidence)})
    for k, v in extra.items():
        df[k] = v
    return df


def _norm_name(s: pd.Series) -> pd.Series:
    # registered names and enterprise names differ in brackets and spaces
    s = _str(s)
    return s.str.replace("（", "(").str.replace("）", ")").str.replace(r"\s+", "", regex=True)


def _owner_links(land, holder, ent, uscc) -> pd.DataFrame:
    ident = land["identity_code"].to_numpy(dtype=object)
    h = pd.Series(holder, dtype="str")
    has = h.notna().to_numpy()
    out = [_frame(ident[has], h[has].to_numpy(), "owner_code", _CONF["owner_code"])]
    # no owner code but an owner name: match the enterprise by exact (normalised) name
    # (normalising every enterprise name is slow: only when some piece needs it)
    if "owner_name" in land.columns and "name" in ent.columns \
            and (~has & _str(land["owner_name"]).notna().to_numpy()).any():
        names = _norm_name(ent["name"])
        unique = ~names.duplicated(keep=False) & names.notna()
        by_name = dict(zip(_o(names[unique]), _o(uscc[unique])))
        ln = _norm_name(land["owner_name"]).map(by_name).to_numpy(dtype=object)
        m = ~has & pd.notna(ln)
        if m.any():
            out.append(_frame(ident[m], ln[m], "owner_code", _CONF["owner_name"]))
            holder[m] = ln[m]  # the name-matched owner holds the piece
    return pd.concat(out, ignore_index=True)


def _spatial_links(land, ent, uscc, buildings, tol, rank=None) -> pd.DataFrame:
    geom = ent.geometry
    has_pt = (geom.notna() & ~geom.is_empty & uscc.notna()).to_numpy()
    pts_geom = geom.to_numpy()[has_pt]
    pts_uscc = uscc.to_numpy(dtype=object)[has_pt]
    empty = _frame([], [], "point_in_polygon", []).assign(building_id=pd.Series([], dtype="str"))
    if len(pts_geom) == 0 or len(land) == 0:
        return empty
    ident = land["identity_code"].to_numpy(dtype=object)
    lg = land.geometry.to_numpy()
    area = np.round(land["area_m2"].to_numpy(float), 3)
    rank = _rank(ident) if rank is None else rank
    # tie rule 1: the point's own land (its uscc holds the piece) sorts first
    holder = _holder_keys(_holders(land))
    n_pts = len(pts_geom)
    # the building each point is in: its row in ``land`` and whether a 宗地代码 placed it there
    b_land = np.full(n_pts, -1)
    b_registered = np.zeros(n_pts, dtype=bool)
    b_id = np.full(n_pts, None, dtype=object)
    if buildings is not None and len(buildings):
        pts = gpd.GeoDataFrame({"uscc": pts_uscc}, geometry=pts_geom, crs=ent.crs)
        bl = assign_buildings(buildings, land)
        bg = gpd.GeoDataFrame({"building_id": bl["building_id"], "identity_code": bl["identity_code"],
                               "assigned_by": bl["assigned_by"],
                               "_b": np.round(bl["footprint_m2"].to_numpy(), 3)},
                              geometry=buildings.geometry.to_numpy(), crs=land.crs)
        bg = bg[bg["identity_code"].notna()]
        j = gpd.sjoin(pts, bg, predicate="intersects", how="inner")
        if len(j):
            # overlapping buildings: the smallest, then its id
            j = j.reset_index().sort_values(["index", "_b", "building_id"]).drop_duplicates("index")
            at = j["index"].to_numpy()
            b_land[at] = pd.Index(ident, dtype=object).get_indexer(_o(j["identity_code"]))
            b_registered[at] = (j["assigned_by"] == "parcel_code").to_numpy()
            b_id[at] = _o(j["building_id"])

    parts = []
    done = np.zeros(n_pts, dtype=bool)
    reg = np.flatnonzero(b_registered)  # a registered building keeps its piece
    if len(reg):
        parts.append(_frame(ident[b_land[reg]], pts_uscc[reg], "building", _CONF["building"],
                            building_id=b_id[reg]))
        done[reg] = True

    # Performance: the STRtree is queried directly (what gpd.sjoin / sjoin_nearest do inside)
    # and ties are broken with one integer lexsort on (point, own land, building's piece, area,
    # rank of code) instead of sorting a joined frame on its identity_code strings.
    tree = shapely.STRtree(lg)
    rest = np.flatnonzero(~done)
    pi, li = tree.query(pts_geom[rest], predicate="intersects")
    if len(pi):
        pi = rest[pi]
        not_own = holder[li] != pts_uscc[pi]
        not_bld = li != b_land[pi]
        pi, li, _ = _first_per_point(pi, li, None, (rank[li], area[li], not_bld, not_own))
        in_b = b_id[pi] != None  # noqa: E711 — object array of ids / None
        for sel, method in ((in_b, "building"), (~in_b, "point_in_polygon")):
            if sel.any():
                parts.append(_frame(ident[li[sel]], pts_uscc[pi[sel]], method, _CONF[method],
                                    building_id=b_id[pi[sel]]))
        done[pi] = True

    rest = np.flatnonzero(~done & (b_land >= 0))  # in a building on no land: the building's piece
    if len(rest):
        parts.append(_frame(ident[b_land[rest]], pts_uscc[rest], "building", _CONF["building"],
                            building_id=b_id[rest]))
        done[rest] = True

    rest = np.flatnonzero(~done)
    if len(rest) and tol > 0:
        (pi, li), d = tree.query_nearest(pts_geom[rest], max_distance=tol, return_distance=True,
                                         all_matches=True)
        if len(pi):
            pi = rest[pi]
            not_own = holder[li] != pts_uscc[pi]
            pi, li, d = _first_per_point(pi, li, d, (rank[li], area[li], not_own, np.round(d, 6)))
            conf = 0.7 - 0.4 * (d / tol)
            parts.append(_frame(ident[li], pts_uscc[pi], "snap", conf))
    if not parts:
        return empty
    out = pd.concat(parts, ignore_index=True)
    if "building_id" not in out.columns:
        out["building_id"] = pd.NA
    out["building_id"] = out["building_id"].astype("str")
    return out


def _first_per_point(pi, li, d, keys):
    """The best candidate per point: sorted by point, then ``keys`` (last key sorts first, as
    np.lexsort), first row of each point kept.  Output in point order."""
    order = np.lexsort(tuple(keys) + (pi,))
    pi, li = pi[order], li[order]
    first = np.r_[True, pi[1:] != pi[:-1]]
    return pi[first], li[first], (d[order][first] if d is not None else None)


def _lease_links(land, holder, leases, known, ent, uscc, tol):
    cols = ["tenant_uscc", "parcel_code", "landlord_uscc", "floor_area_m2", "land_area_m2"]
    if leases is None or len(leases) == 0:
        return _frame([], [], "lease", []), pd.DataFrame(columns=cols)
    ls = pd.DataFrame({
        "tenant": _str(leases["tenant_uscc"]),
        "code": _str(leases["parcel_code"]) if "parcel_code" in leases else pd.NA,
        "landlord": _str(leases["landlord_uscc"]) if "landlord_uscc" in leases else pd.NA,
        "floor": pd.to_numeric(leases.get("floor_area_m2", pd.Series(np.nan, index=leases.index)),
                               errors="coerce").to_numpy(float),
        "larea": pd.to_numeric(leases.get("land_area_m2", pd.Series(np.nan, index=leases.index)),
                               errors="coerce").to_numpy(float),
    }).reset_index(drop=True)
    ls["code"] = _str(ls["code"])
    ls["landlord"] = _str(ls["landlord"])
    ls["lease_no"] = np.arange(len(ls))
    ls = ls[ls["tenant"].notna()]

    # by 宗地代码 (registered piece) or identity_code
    by_code = _code_map(land)
    ls["target"] = ls["code"].map(by_code)
    a = ls[ls["target"].notna()].assign(identity_code=lambda d: d["target"])

    # by landlord: every piece the landlord is linked to
    b = ls[ls["target"].isna() & ls["landlord"].notna()]
    kn = known[["identity_code", "uscc"]].drop_duplicates().rename(columns={"uscc": "landlord"})
    b = b.merge(kn, on="landlord", how="inner")
    if len(b):
        # several pieces: the one nearest the tenant's point within the tolerance, if any
        d = shapely.distance(_take(ent.geometry, uscc, b["tenant"]),
                             _take(land.geometry, land["identity_code"], b["identity_code"]))
        b["_d"] = np.where(np.isnan(d), np.inf, np.round(d, 6))
        b["_a"] = b["identity_code"].map(dict(zip(_o(land["identity_code"]), _o(land["area_m2"]))))
        near = b[b["_d"] <= tol].sort_values(["lease_no", "_d", "_a", "identity_code"]).drop_duplicates("lease_no")
        b = pd.concat([near, b[~_isin(b["lease_no"], near["lease_no"])]])
        # spread the leased areas over the chosen pieces by their area
        w = b["_a"] / b.groupby("lease_no")["_a"].transform("sum")
        b["floor"] = b["floor"] * w
        b["larea"] = b["larea"] * w
    placed = pd.concat([a, b], ignore_index=True)
    unplaced = ls[~_isin(ls["lease_no"], placed["lease_no"])]
    # a lease of one's own land is no lease
    h = pd.Series(holder, index=land["identity_code"].to_numpy(), dtype="str")
    placed = placed[placed["tenant"] != placed["identity_code"].map(h).fillna("")]
    agg = placed.groupby(["identity_code", "tenant"], as_index=False)[["floor", "larea"]].sum(min_count=1)
    out = _frame(agg["identity_code"], agg["tenant"], "lease", _CONF["lease"],
                 leased_floor_area_m2=agg["floor"].to_numpy(float),
                 leased_land_area_m2=agg["larea"].to_numpy(float))
    unplaced = unplaced.rename(columns={"tenant": "tenant_uscc", "code": "parcel_code",
                                        "landlord": "landlord_uscc", "floor": "floor_area_m2",
                                        "larea": "land_area_m2"})[cols]
    return out, unplaced.reset_index(drop=True)


def _code_map(land) -> dict:
    """宗地代码 → its registered piece, and identity_code → itself (NA codes left out:
    pandas would map NA to them)."""
    reg = land[(land["kind"] == "registered") & land["parcel_code"].notna()]
    out = {}
    # An unregistered cadastre row keeps its own 宗地代码 in source_parcel_code: staff
    # corrections and leases name it by that code, so it resolves too (registered codes win).
    if "source_parcel_code" in land.columns:
        own = land[land["source_parcel_code"].notna() & (land["kind"] != "registered")]
        out.update(zip(_o(own["source_parcel_code"]), _o(own["identity_code"])))
    out.update(zip(_o(reg["parcel_code"]), _o(reg["identity_code"])))
    out.update(dict(zip(_o(land["identity_code"]), _o(land["identity_code"]))))
    return out


def _apply_corrections(links, land, corrections) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Links after staff corrections, and the corrections that name unknown land."""
    if corrections is None or len(corrections) == 0:
        return links, pd.DataFrame(columns=["uscc", "parcel_code", "action", "reason"])
    c = pd.DataFrame({
        "uscc": _str(corrections["uscc"]).to_numpy(),
        "code": _str(corrections["parcel_code"]).to_numpy(),
        "action": _str(corrections["action"]).str.strip().str.lower().to_numpy(),
        "share": pd.to_numeric(corrections["share"], errors="coerce").to_numpy(float)
        if "share" in corrections.columns else np.nan,
    }).dropna(subset=["uscc", "code"])
    bad = ~_isin(c["action"], ["add", "remove"])
    if bad.any():
        raise ValueError(f"corrections: action must be 'add' or 'remove', got {sorted(set(c['action'][bad].astype(str)))}")
    c = c.drop_duplicates(["uscc", "code"], keep="last")  # staff's latest word per pair
    # remove: every piece of that 宗地 (or that identity_code)
    pc = _str(land["parcel_code"]).to_numpy(dtype=object)
    ic = land["identity_code"].to_numpy(dtype=object)
    frames = [pd.DataFrame({"code": pc, "identity_code": ic}).dropna(),
              pd.DataFrame({"code": ic, "identity_code": ic})]
    if "source_parcel_code" in land.columns:
        frames.append(pd.DataFrame({"code": _str(land["source_parcel_code"]).to_numpy(dtype=object),
                                    "identity_code": ic}).dropna())
    pieces = pd.concat(frames).drop_duplicates()
    rm = c[c["action"] == "remove"].merge(pieces, on="code")
    if len(rm):
        links = links[~_pairs_in(links["identity_code"], links["uscc"], rm["identity_code"], rm["uscc"])]
    # add: the registered piece of that 宗地, or that identity_code
    by_code = _code_map(land)
    add = c[c["action"] == "add"].copy()
    add["identity_code"] = add["code"].map(by_code)
    missing = add["identity_code"].isna()
    # A correction naming land that no longer exists is reported, not fatal: one stale row
    # must not stop the county's whole matching run.
    unapplied = add.loc[missing, ["uscc", "code", "action"]].rename(columns={"code": "parcel_code"})
    unapplied = unapplied.assign(reason="宗地代码不存在 (unknown parcel_code)").reset_index(drop=True)
    add = add[~missing]
    new = _frame(add["identity_code"], add["uscc"], "correction", _CONF["correction"],
                 fixed_share=add["share"].to_numpy(float))
    return pd.concat([links, new], ignore_index=True), unapplied


def _dedupe(links) -> pd.DataFrame:
    """One row per (identity_code, uscc); ``links`` carries the integer keys ``_i`` (rank of
    identity_code), ``_u`` (rank of uscc) and ``_l`` (land row)."""
    links = links.copy()
    for c in ("building_id", "leased_floor_area_m2", "leased_land_area_m2", "fixed_share"):
        if c not in links.columns:
            links[c] = np.nan
    links["_p"] = links["method"].map(_PRIORITY)
    # integer ranks sort exactly like the (identity_code, uscc) strings
    links = links.sort_values(["_i", "_u", "_p", "confidence"], ascending=[True, True, True, False])
    # keep lease areas and the building of lower-ranked duplicates: split_shares needs them
    first = links.groupby(["_i", "_u"], sort=False)
    carry = first[["building_id", "leased_floor_area_m2", "leased_land_area_m2", "fixed_share"]].first() \
        if len(links) else None
    links = links.drop_duplicates(["_i", "_u"]).drop(columns="_p")
    if carry is not None:
        links = links.drop(columns=list(carry.columns)).merge(
            carry.reset_index(), on=["_i", "_u"], how="left")
    return links


def _assign_roles(links, land, holder, occupied, site) -> pd.DataFrame:
    links = links.reset_index(drop=True)
    for c, dt in (("building_id", "str"), ("leased_floor_area_m2", float),
                  ("leased_land_area_m2", float), ("fixed_share", float)):
        if c not in links.columns:
            links[c] = np.nan
        links[c] = links[c].astype(dt)
    li, ii = links["_l"].to_numpy(), links["_i"].to_numpy()
    u = _o(links["uscc"])
    is_holder = u == _holder_keys(holder)[li]
    has_holder = np.isin(ii, ii[is_holder])
    tenanted = np.isin(ii, ii[~is_holder & has_holder])
    occ = _pairs_in(site[li], u, occupied[0], occupied[1])
    role = np.where(
        is_holder, np.where(tenanted & ~occ, "landlord", "owner_occupier"),
        np.where(has_holder | (links["method"] == "lease").to_numpy(), "tenant", "owner_occupier"))
    links["role"] = role
    links["holder"] = is_holder
    # the land's parcel_code by row; the mapper is built as Series.map(dict) builds it, so the
    # column's dtype is what the mapping gave
    mapper = pd.Series(dict(zip(_o(land["identity_code"]), _o(land["parcel_code"]))))
    links["parcel_code"] = mapper.array.take(li) if len(mapper) == len(land) else \
        links["identity_code"].map(mapper)
    return links


def _with_distance(links, land, ent, uscc) -> pd.DataFrame:
    links["distance_m"] = shapely.distance(
        _take(ent.geometry, uscc, links["uscc"]),
        land.geometry.to_numpy()[links["_l"].to_numpy()]) if len(links) else np.array([], float)
    return links


def _take(geoms, keys, wanted) -> np.ndarray:
    """Geometries by key (None where the key is unknown), vectorised."""
    # object Index: a lookup on Arrow-backed strings converts them to objects every time
    idx = pd.Index(_o(keys), dtype=object).get_indexer(pd.Index(_o(wanted), dtype=object))
    arr = np.append(np.asarray(geoms.to_numpy(), dtype=object), None)
    return arr[idx]  # -1 picks the trailing None
