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
    m = metrics.copy()
    m["uscc"] = _str(m["uscc"]).to_numpy()
    m = m[m["uscc"].notna()]
    value_cols = [c for c in m.columns if c not in ("uscc", "year", "meter_id")
                  and (c in METRIC_COLUMNS or pd.api.types.is_numeric_dtype(m[c]))]
    for c in value_cols:
        m[c] = pd.to_numeric(m[c], errors="coerce").astype(float)

    lk = links[["identity_code", "parcel_code", "uscc", key]].copy()
    lk["_k"] = pd.to_numeric(lk[key], errors="coerce").fillna(0).clip(lower=0).astype(float)
    ent_key = lk.groupby("uscc")["_k"].sum()
    n_links = lk.groupby("uscc")["_k"].transform("size")
    tot = lk["uscc"].map(ent_key)
    lk["weight"] = np.where(tot > 0, lk["_k"] / tot.where(tot > 0, 1), 1 / n_links)

    if "electricity_kwh" in value_cols and "meter_id" in m.columns:
        m = _split_meters(m, ent_key)

    per_ent = m.groupby(["uscc", "year"], as_index=False)[value_cols].sum(min_count=1)
    x = per_ent.merge(lk[["identity_code", "parcel_code", "uscc", "weight"]], on="uscc", how="left")
    # no land: kept with identity_code NA and the whole figure
    x["weight"] = x["weight"].fillna(1.0)
    x[value_cols] = x[value_cols].mul(x["weight"], axis=0)
    if by_enterprise:
        return x.sort_values(["identity_code", "uscc", "year"], ignore_index=True, na_position="last")
    g = x.groupby(["identity_code", "year"], dropna=False, sort=True)
    out = g[value_cols].sum(min_count=1)
    out.insert(0, "occupant_count", g["uscc"].nunique())
    out.insert(0, "parcel_code", g["parcel_code"].first())
    return out.reset_index().sort_values(["identity_code", "year"], ignore_index=True, na_position="last")


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
    m = m.copy()
    sub = m[on].assign(_meter=meter[on].to_numpy())
    reading = sub.groupby(["year", "_meter"])["electricity_kwh"].max()
    users = sub[["year", "_meter", "uscc"]].drop_duplicates()
    users["_w"] = users["uscc"].map(ent_key).fillna(0).to_numpy(float)
    wsum = users.groupby(["year", "_meter"])["_w"].transform("sum")
    n = users.groupby(["year", "_meter"])["_w"].transform("size")
    users["_f"] = np.where(wsum > 0, users["_w"] / wsum.where(wsum > 0, 1), 1 / n)
    users["electricity_kwh"] = users.set_index(["year", "_meter"]).index.map(reading).to_numpy(float) * users["_f"]
    # metered electricity leaves the original rows and comes back once per (meter, enterprise)
    m.loc[on, "electricity_kwh"] = np.nan
    extra = users[["uscc", "year", "electricity_kwh"]]
    return pd.concat([m, extra], ignore_index=True)
