"""一企多地合并 and apportionment (科学分摊一企多地企业税收).

* :func:`enterprise_land` — per enterprise: all its land merged (for the 经营主体等级), and
  its 苏州-style land class;
* :func:`apportion_metrics` — per land piece and year: its occupants' figures apportioned by
  each enterprise's share of its own land (for the 宗地等级), with shared electricity meters
  (一表多企) split by the same key.  Totals are conserved.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from spatial.identity import M2_PER_MU, _isin, _o, _str

__all__ = ["enterprise_land", "apportion_metrics", "METRIC_COLUMNS"]

METRIC_COLUMNS = [
    "tax_paid", "tax_refund", "value_added", "revenue", "output_value", "energy_tce",
    "emission_t", "rd_expense", "employees", "electricity_kwh",
]


def enterprise_land(
    links: pd.DataFrame,
    land: pd.DataFrame,
    enterprises: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Merge each enterprise's land (一企多地合并).

    Parameters
    ----------
    links : DataFrame from :func:`spatial.split.split_shares` (needs ``attributed_area_m2``).
    land : DataFrame/GeoDataFrame from :func:`spatial.identity.build_land`.
    enterprises : DataFrame, optional — when given, enterprises without any link are
        included with zero areas and land_class ``'none'``.

    Returns
    -------
    DataFrame, one row per uscc: land_area_m2 (sum of attributed areas), land_area_mu,
    parcel_count (distinct 宗地: a parcel with its attached de-facto land counts once),
    piece_count (land pieces), owned_area (whole area of the pieces it holds), leased_out_area
    (the part of those not attributed to it), leased_in_area (attributed area as tenant),
    land_class:

    * ``'I'``   owns/holds land and uses all of it (苏州 I 类);
    * ``'II'``  holds land and leases some out (is a landlord, or has tenants on land it holds);
    * ``'III'`` only rents (tenant links only);
    * ``'none'`` no land.

    An occupant of land without a known holder (role ``owner_occupier``, not holder) counts as
    using its own land: class I.

    >>> enterprise_land(split_shares(links, land), land, enterprises)  # doctest: +SKIP
    """
    if "attributed_area_m2" not in links.columns:
        raise ValueError("links need attributed_area_m2: run spatial.split.split_shares first")
    df = links.reset_index(drop=True).copy()
    area_of = pd.Series(land["area_m2"].to_numpy(float), index=land["identity_code"].to_numpy())
    site_of = pd.Series(_str(land["parcel_code"]).fillna(land["identity_code"]).to_numpy(),
                        index=land["identity_code"].to_numpy())
    holder = _holder(df)
    df["_area"] = df["identity_code"].map(area_of).to_numpy(float)
    df["_site"] = df["identity_code"].map(site_of)
    df["_owned"] = np.where(holder, df["_area"], 0.0)
    df["_out"] = np.where(holder, df["_area"] - df["attributed_area_m2"], 0.0)
    df["_in"] = np.where(df["role"] == "tenant", df["attributed_area_m2"], 0.0)
    tenanted = set(_o(df.loc[~holder, "identity_code"]))
    df["_II"] = (df["role"] == "landlord").to_numpy() | (holder & _isin(df["identity_code"], tenanted))
    df["_I"] = (df["role"] == "owner_occupier").to_numpy()
    g = df.groupby("uscc", sort=True)
    out = pd.DataFrame({
        "land_area_m2": g["attributed_area_m2"].sum(),
        "parcel_count": g["_site"].nunique(),
        "piece_count": g["identity_code"].nunique(),
        "owned_area": g["_owned"].sum(),
        "leased_out_area": g["_out"].sum().clip(lower=0),
        "leased_in_area": g["_in"].sum(),
        "_II": g["_II"].any(),
        "_I": g["_I"].any(),
    })
    out["land_class"] = np.where(out["_II"], "II", np.where(out["_I"], "I", "III"))
    out = out.drop(columns=["_II", "_I"]).reset_index()
    if enterprises is not None:
        missing = sorted(set(_o(_str(enterprises["uscc"]).dropna())) - set(_o(out["uscc"])))
        if missing:
            none = pd.DataFrame({"uscc": missing, "land_class": "none"})
            out = pd.concat([out, none], ignore_index=True).fillna(
                {c: 0 for c in ("land_area_m2", "parcel_count", "piece_count", "owned_area",
                                "leased_out_area", "leased_in_area")})
    out["land_area_mu"] = out["land_area_m2"] / M2_PER_MU
    cols = ["uscc", "land_area_m2", "land_area_mu", "parcel_count", "piece_count", "owned_area",
            "leased_out_area", "leased_in_area", "land_class"]
    out = out[cols].sort_values("uscc", ignore_index=True)
    out[["parcel_count", "piece_count"]] = out[["parcel_count", "piece_count"]].astype("int64")
    return out


def apportion_metrics(
    metrics: pd.DataFrame,
    links: pd.DataFrame,
    key: str = "attributed_area_m2",
    *,
    by_enterprise: bool = False,
) -> pd.DataFrame:
    """Apportion enterprise figures to land pieces (for the 宗地等级, 一地一档).

    Each enterprise's figures of a year go to its land pieces in proportion to ``key`` on its
    links (default its attributed area; ``'share'`` or any numeric link column works); an
    enterprise whose key sums to 0 on all its links (e.g. a landlord that leased everything
    out) spreads equally over them.  Several rows of one enterprise and year are summed
    (one row per meter: put the other figures on one row only).

    一表多企: a ``meter_id`` appearing on several enterprises' rows of a year is one meter; its
    reading (the largest ``electricity_kwh`` among those rows — they repeat it, or only one
    carries it) is split among them by their total ``key`` (equally if all are 0), then
    follows each enterprise's apportionment like any figure.  一企多表 is the sum of its meters.

    Enterprises with figures but no land are not dropped: they are the rows with
    ``identity_code`` NA, so every total is conserved over the returned rows.

    Returns
    -------
    DataFrame per (identity_code, year): identity_code, parcel_code, year, occupant_count
    (enterprises with figures that year on the piece), and each metric column summed.  With
    ``by_enterprise=True`` one row per (identity_code, uscc, year) with ``weight`` instead.

    >>> apportion_metrics(metrics, split_shares(links, land))       # doctest: +SKIP
    """
    if key not in links.columns:
        raise ValueError(f"links have no {key!r} column (run spatial.split.split_shares first)")
    # Memory: a shallow copy (copy-on-write copies only what is modified) and no further
    # whole-frame copies; intermediates are dropped as soon as they are used — at 500k parcels
    # / 2M enterprises the metrics are ~6M rows.
    m = metrics.copy(deep=False)
    m["uscc"] = _str(m["uscc"]).to_numpy()
    known = m["uscc"].notna().to_numpy()
    if not known.all():
        m = m[known]
    value_cols = [c for c in m.columns if c not in ("uscc", "year", "meter_id")
                  and (c in METRIC_COLUMNS or pd.api.types.is_numeric_dtype(m[c]))]
    for c in value_cols:
        m[c] = pd.to_numeric(m[c], errors="coerce").astype(float)

    lk = links[["identity_code", "parcel_code", "uscc", key]].copy()
    lk["_k"] = pd.to_numeric(lk[key], errors="coerce").fillna(0).clip(lower=0).astype(float)
    # Performance: enterprises as integer codes of one sorted factorisation of the metrics' and
    # the links' usccs — grouping and merging on Arrow-backed strings converts them to Python
    # objects at every step.  Codes sort like the strings, and the same pandas reductions run
    # on the same rows in the same order, so results are bit-identical.
    n_m = len(m)
    codes, uniq = pd.factorize(np.concatenate([_o(m["uscc"]), _o(lk["uscc"])]), sort=True)
    m_code = codes[:n_m]
    lk["_uc"] = np.where(codes[n_m:] >= 0, codes[n_m:], np.nan)  # NA uscc: no group, as before
    by_ent = lk.groupby("_uc")["_k"]
    ent_sum = by_ent.sum()
    ent_key = pd.Series(ent_sum.to_numpy(), index=pd.Index(uniq[ent_sum.index.to_numpy(int)], dtype=object))
    n_links = by_ent.transform("size")
    tot = by_ent.transform("sum")
    lk["weight"] = np.where(tot > 0, lk["_k"] / tot.where(tot > 0, 1), 1 / n_links)

    if "electricity_kwh" in value_cols and "meter_id" in m.columns:
        n_before = len(m)
        m = _split_meters(m, ent_key)
        if len(m) > n_before:  # the meters' rows came back at the end
            extra = pd.Index(uniq, dtype=object).get_indexer(_o(m["uscc"].iloc[n_before:]))
            m_code = np.concatenate([m_code, extra])

    # per (uscc, year), grouped on the code; the uscc column is taken back from a row of each
    # enterprise so it keeps the metrics' dtype
    g = m.assign(_uc=m_code).groupby(["_uc", "year"], as_index=False)
    per_ent = g[value_cols].sum(min_count=1)
    first_row = np.full(len(uniq), -1)
    first_row[m_code[::-1]] = np.arange(len(m_code))[::-1]
    per_ent.insert(0, "uscc", m["uscc"].array.take(first_row[per_ent["_uc"].to_numpy()]))
    del g, m, m_code, first_row
    x = per_ent.merge(lk[["identity_code", "parcel_code", "_uc", "weight"]], on="_uc", how="left")
    del per_ent, lk
    uc = x.pop("_uc").to_numpy()
    # no land: kept with identity_code NA and the whole figure
    x["weight"] = x["weight"].fillna(1.0)
    x[value_cols] = x[value_cols].mul(x["weight"], axis=0)
    if by_enterprise:
        return x.sort_values(["identity_code", "uscc", "year"], ignore_index=True, na_position="last")
    # per (identity_code, year) on the code of the piece (NA last, as dropna=False, sort=True
    # does); the identity_code column is taken back from a row of each piece
    ic, ic_uniq = pd.factorize(_o(x["identity_code"]), sort=True)
    ic = np.where(ic < 0, len(ic_uniq), ic)
    g = x.assign(_ic=ic, _uc=uc).groupby(["_ic", "year"], dropna=False, sort=True)
    out = g[value_cols].sum(min_count=1)
    out.insert(0, "occupant_count", g["_uc"].nunique())
    out.insert(0, "parcel_code", g["parcel_code"].first())
    out = out.reset_index()
    first_row = np.full(len(ic_uniq) + 1, -1)
    first_row[ic[::-1]] = np.arange(len(ic))[::-1]
    out.insert(0, "identity_code", x["identity_code"].array.take(first_row[out.pop("_ic").to_numpy()]))
    return out.sort_values(["identity_code", "year"], ignore_index=True, na_position="last")


# --------------------------------------------------------------------------- helpers

def _holder(df) -> np.ndarray:
    if "holder" in df.columns:
        return df["holder"].fillna(False).astype(bool).to_numpy()
    return ((df["role"] == "landlord") | ((df["role"] == "owner_occupier") & (df["method"] == "owner_code"))).to_numpy()


def _split_meters(m: pd.DataFrame, ent_key: pd.Series) -> pd.DataFrame:
    """One row per meter and year carries the reading, split among the enterprises on it."""
    meter = _str(m["meter_id"])
    on = meter.notna().to_numpy()
    if not on.any():
        return m
    # (no m.copy(): m is apportion_metrics' own frame, and copy-on-write protects the caller's)
    sub = m[on]
    # Performance: (year, meter) and uscc as integer codes — grouping, de-duplicating and
    # looking up on Arrow-backed strings converts them to Python objects at every step.  The
    # same pandas group reductions run on the same rows in the same order, so sums are
    # bit-identical.
    year_c = pd.factorize(sub["year"].to_numpy())[0].astype(np.int64)
    meter_c = pd.factorize(_o(meter[on]))[0].astype(np.int64)
    g = pd.factorize(year_c * (int(meter_c.max()) + 1) + meter_c)[0]
    reading = pd.Series(sub["electricity_kwh"].to_numpy(float)).groupby(g).max().to_numpy()
    uscc = _o(sub["uscc"])
    u_c = pd.factorize(uscc)[0].astype(np.int64)
    first = ~pd.Series(g.astype(np.int64) * (int(u_c.max()) + 1) + u_c).duplicated().to_numpy()
    users = sub.loc[first, ["year", "uscc"]]
    gu = g[first]
    pos = pd.Index(_o(ent_key.index), dtype=object).get_indexer(uscc[first])
    w = np.where(pos >= 0, ent_key.to_numpy(float)[pos], np.nan)
    w = pd.Series(w).fillna(0).to_numpy(float)
    by = pd.Series(w).groupby(gu)
    wsum = by.transform("sum").to_numpy()
    n = by.transform("size").to_numpy()
    f = np.where(wsum > 0, w / np.where(wsum > 0, wsum, 1), 1 / n)
    kwh = reading[gu] * f
    kwh[pd.isna(users["year"]).to_numpy()] = np.nan  # no year: no group (as groupby drops NA keys)
    users = users.assign(electricity_kwh=kwh)
    # metered electricity leaves the original rows and comes back once per (meter, enterprise)
    m.loc[on, "electricity_kwh"] = np.nan
    extra = users[["uscc", "year", "electricity_kwh"]]
    return pd.concat([m, extra], ignore_index=True)
