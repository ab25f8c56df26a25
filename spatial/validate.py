"""Validate a bundle read by :func:`spatial.io.read_bundle` (数据校验): keep valid rows, list the rest.

Every rule is one vectorised pass over a column and adds rows to ``Bundle.rejects``
(``file, row, field, value, reason, severity``). Severity ``error`` removes the row; ``warning``
keeps it. Rows rejected while reading (an unparseable number, an unknown 坐标系) are removed here
too, so the returned bundle holds only rows that passed everything.

Order matters for the cascade: parcels and enterprises are checked and cleaned first, then rows
that point at them (metrics → enterprise, leases → tenant/parcel/landlord, corrections →
uscc/parcel). A metrics row of a rejected enterprise is rejected naming the enterprise's row.

Example
-------
>>> from spatial.io import read_bundle
>>> b = validate_bundle(read_bundle("bundle/"))                         # doctest: +SKIP
>>> b.errors[["file", "row", "field", "reason"]].head()                # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from spatial.columns import LAYER_ROLES, NONNEGATIVE
from spatial.crs import metric_crs_for
from spatial.identifiers import PARCEL_CODE_RE, uscc_status_series
from spatial.io import Bundle, _Rejects, to_crs_cached

__all__ = ["validate_bundle", "industry_code_status", "GBT4754_DIVISIONS", "REFERENCES"]

#: GB/T 4754-2017 门类 → 大类 (2-digit divisions). Every division 01–97 belongs to one section.
GBT4754_SECTIONS = {
    "A": (1, 5), "B": (6, 12), "C": (13, 43), "D": (44, 46), "E": (47, 50), "F": (51, 52), "G": (53, 60),
    "H": (61, 62), "I": (63, 65), "J": (66, 69), "K": (70, 70), "L": (71, 72), "M": (73, 75), "N": (76, 79),
    "O": (80, 82), "P": (83, 83), "Q": (84, 85), "R": (86, 90), "S": (91, 96), "T": (97, 97),
}
GBT4754_DIVISIONS = {
    f"{d:02d}": sec for sec, (lo, hi) in GBT4754_SECTIONS.items() for d in range(lo, hi + 1)
}

# Areas of parcels in China are computed in their GK zone; outside China (test data from France,
# Liechtenstein) a GK zone clamped to 75°E would be wildly distorted, so the UTM zone is used.

#: A polygon smaller than this (m², in the data's Gauss-Krüger zone) is degenerate: a ring whose
#: vertices lie on a line, a digitising slip. Per-mu indicators divide by land area, so one such
#: parcel would give its owner billions of 万元 per 亩 and push real A grades down: rejected.
MIN_AREA_M2 = 1.0
#: A polygon narrower than this on average (2 × area / perimeter, m) is a sliver left by an
#: overlay or a snapping error, not land anyone uses: rejected.
MIN_MEAN_WIDTH_M = 0.2
#: Computed area differing from 登记面积 by more than this share is flagged (warning on the row,
#: listed in the import report; the parcel archive shows the same comparison).
AREA_MISMATCH_SHARE = 0.05
#: Rejected rows listed per file; the rest are counted in one summary row (a file of a million
#: bad rows must not produce a million-row report).
MAX_REJECTS_PER_FILE = 1000


#: ``references=`` of :func:`validate_bundle`: where a referenced enterprise or parcel may be.
REFERENCES = ("bundle", "province")


def validate_bundle(bundle: Bundle, *, overlap_tolerance_m2: float = 1.0, year_range=None,
                    references: str = "bundle", progress=None) -> Bundle:
    """Check every rule of the data contract; return a new Bundle without the rejected rows.

    ``overlap_tolerance_m2``: parcels overlapping each other by more than this are warned.
    ``year_range``: accepted metrics years, inclusive (default 1990 … next year).
    ``references``: ``"bundle"`` (a county's import): a metrics row, lease or 纠偏 naming an
    enterprise or parcel absent from the bundle is an error, as the data contract says.
    ``"province"`` (one county of a province run, :mod:`app.province`): the row may name an
    enterprise or parcel of another county of the province (a tenant leasing across the border),
    so an absent one is a warning (不在本县数据中，可能属于省内其他县) and the row is kept; a
    reference to a row this bundle rejected is still an error (the cascade). Raises
    ``ValueError`` for any other value.
    ``progress(step, done, total)`` is called after each step.

    >>> clean = validate_bundle(bundle)                                # doctest: +SKIP
    >>> len(clean.tables["parcels"]) + len(clean.errors.query("file == 'parcels.shp'"))  # doctest: +SKIP
    """
    if references not in REFERENCES:
        raise ValueError(f"references must be one of {REFERENCES}, not {references!r}")
    if year_range is None:
        year_range = (1990, _dt.date.today().year + 1)
    rej = _Rejects(bundle.rejects)
    tables = {role: df.copy() for role, df in bundle.tables.items()}
    steps = [s for s in ("parcels", "buildings", "defacto", "enterprises", "metrics", "leases", "corrections")
             if s in tables]
    removed: dict[str, pd.DataFrame] = {}

    def done(role):
        if progress:
            progress(role, steps.index(role) + 1, len(steps))

    # 1. the layers: geometry, codes, numbers
    for role in LAYER_ROLES:
        if role in tables:
            tables[role] = _check_geometry(tables[role], role, rej)
            _check_area(tables[role], role, rej)
    if "parcels" in tables:
        p = tables["parcels"]
        _check_key(p, "parcel_code", "宗地代码", rej)
        codes = p["parcel_code"]
        bad_form = codes.notna().to_numpy() & ~codes.str.fullmatch(PARCEL_CODE_RE.pattern).fillna(False).to_numpy(dtype=bool)
        _add(rej, p, bad_form, "parcel_code", codes,
             "宗地代码不符合 GB/T 37346 格式 (parcel_code does not follow GB/T 37346)", "warning")
        _check_uscc(p, "owner_uscc", rej, malformed="warning")
        _check_nonnegative(p, "parcels", rej)
        _check_overlaps(p, overlap_tolerance_m2, rej)
        tables["parcels"], removed["parcels"] = _drop_errors(p, rej)
        done("parcels")
    if "buildings" in tables:
        b = tables["buildings"]
        _check_key(b, "building_id", "建筑编号", rej)
        _check_nonnegative(b, "buildings", rej)
        tables["buildings"], removed["buildings"] = _drop_errors(b, rej)
        done("buildings")
    if "defacto" in tables:
        d = tables["defacto"]
        _check_uscc(d, "user_uscc", rej, malformed="warning")
        tables["defacto"], removed["defacto"] = _drop_errors(d, rej)
        done("defacto")

    # 2. enterprises
    if "enterprises" in tables:
        e = tables["enterprises"]
        _check_uscc(e, "uscc", rej, malformed="error", empty="error")
        _check_key(e, "uscc", "统一社会信用代码", rej, empty_msg=None)
        name_empty = e["name"].isna().to_numpy() & ~_already(rej, e, "name")
        _add(rej, e, name_empty, "name", e["name"], "企业名称为空 (enterprise name is empty) — 填写企业名称")
        _check_industry(e, rej)
        tables["enterprises"], removed["enterprises"] = _drop_errors(e, rej)
        done("enterprises")

    # 3. rows pointing at parcels / enterprises (after those were cleaned: the cascade)
    outside = references == "province"
    ent = _Ref(tables.get("enterprises"), removed.get("enterprises"), "uscc", "企业", "enterprise", rej, outside)
    par = _Ref(tables.get("parcels"), removed.get("parcels"), "parcel_code", "宗地", "parcel", rej, outside)
    if "parcels" in tables:
        ent.check(tables["parcels"], "owner_uscc", severity="warning",
                  note="（权利人可不在企业名单中 / owners may be absent from the enterprise file）")
    if "buildings" in tables:
        par.check(tables["buildings"], "parcel_code", severity="warning")
    if "defacto" in tables:
        ent.check(tables["defacto"], "user_uscc", severity="warning")
    if "metrics" in tables:
        m = tables["metrics"]
        _check_uscc(m, "uscc", rej, malformed="error", empty="error", check_char=False)
        _check_years(m, year_range, rej)
        _check_nonnegative(m, "metrics", rej)
        ent.check(m, "uscc")
        _check_duplicates(m, ["uscc", "year"], "同一企业同一年度指标重复", "duplicate metrics for uscc and year", rej)
        tables["metrics"], _ = _drop_errors(m, rej)
        done("metrics")
    if "leases" in tables:
        le = tables["leases"]
        _check_uscc(le, "tenant_uscc", rej, malformed="error", empty="error", check_char=False)
        _check_uscc(le, "landlord_uscc", rej, malformed="error", check_char=False)
        neither = le["parcel_code"].isna().to_numpy() & le["landlord_uscc"].isna().to_numpy()
        _add(rej, le, neither, "parcel_code", le["parcel_code"],
             "宗地代码和出租企业代码都为空 (neither parcel_code nor landlord_uscc given)")
        _check_nonnegative(le, "leases", rej)
        late = (le["end_date"] < le["start_date"]).fillna(False).to_numpy(dtype=bool)
        _add(rej, le, late, "end_date", le["end_date"].dt.date, "到期日期早于起租日期 (end_date before start_date)", "warning")
        ent.check(le, "tenant_uscc")
        par.check(le, "parcel_code")
        # A landlord is often no industrial enterprise (村集体, 开发公司): when the lease names
        # its parcel it can still be placed, so an unknown landlord is only a warning there.
        by_parcel = le["parcel_code"].notna().to_numpy()
        ent.check(le[by_parcel], "landlord_uscc", "warning",
                  "（按宗地代码定位租赁 / the lease is placed by its parcel_code）")
        ent.check(le[~by_parcel], "landlord_uscc")
        tables["leases"], _ = _drop_errors(le, rej)
        done("leases")
    if "corrections" in tables:
        c = tables["corrections"]
        _check_uscc(c, "uscc", rej, malformed="error", empty="error", check_char=False)
        empty_code = c["parcel_code"].isna().to_numpy()
        _add(rej, c, empty_code, "parcel_code", c["parcel_code"], "宗地代码为空 (parcel_code is empty) — 填写宗地代码")
        bad_action = ~c["action"].isin(["add", "remove"]).to_numpy(dtype=bool)
        _add(rej, c, bad_action, "action", c["action"], "操作应为 add 或 remove (action must be add/remove)")
        share = c["share"].to_numpy(dtype="float64", na_value=np.nan)
        _add(rej, c, share > 1, "share", c["share"], "面积占比应在 0–1 之间 (share must be between 0 and 1)")
        _check_nonnegative(c, "corrections", rej)
        ent.check(c, "uscc")
        par.check(c, "parcel_code")
        tables["corrections"], _ = _drop_errors(c, rej)
        done("corrections")
    return replace(bundle, tables=tables, rejects=_cap_rejects(rej.frame(), MAX_REJECTS_PER_FILE))


def _cap_rejects(frame: pd.DataFrame, cap: int) -> pd.DataFrame:
    """The first ``cap`` rejects of each file, and one row (row 0) counting the rest per severity."""
    n = frame.groupby("file", sort=False).cumcount().to_numpy()
    over = n >= cap
    if not over.any():
        return frame
    rest = frame[over].groupby(["file", "severity"], sort=False).size()
    summary = pd.DataFrame([
        {"file": f, "row": 0, "field": "", "value": str(k),
         "reason": f"另有 {k} 条{'错误' if sev == 'error' else '警告'}未列出 ({k} more {sev}s not listed; "
                   f"only the first {cap} problems per file are listed) — 先改正已列出的问题再重新导入",
         "severity": sev}
        for (f, sev), k in rest.items()])
    return pd.concat([frame[~over], summary], ignore_index=True).astype({"row": "int64"})


DATE_IN_CODE = ("行业代码被 Excel 当作日期 (industry_code became a date in Excel) — 将该列设为文本，"
                "按 GB/T 4754 重新填写代码")


def is_date_like(t: pd.Series) -> np.ndarray:
    """Codes that are dates (Excel turned 3-4 into 2024-03-04): never a GB/T 4754 code."""
    return t.astype("string").str.match(r"^\d{4}-\d{1,2}-\d{1,2}").fillna(False).to_numpy(dtype=bool)


def industry_code_status(codes: pd.Series) -> pd.Series:
    """'' for a valid GB/T 4754 code (2–4 digits starting with a division 01–97, optionally
    preceded by its 门类 letter, e.g. ``C3484``), else the reason. Missing codes are valid."""
    t = codes.astype("string").str.strip().str.upper()
    m = t.str.extract(r"^(?P<sec>[A-T])?(?P<num>\d{2,4})$")
    div = m["num"].str[:2]
    sec_of_div = div.map(GBT4754_DIVISIONS)
    reason = pd.Series("", index=codes.index, dtype=object)
    present = t.notna().to_numpy(dtype=bool)
    bad_form = present & m["num"].isna().to_numpy(dtype=bool)
    bad_div = present & ~bad_form & sec_of_div.isna().to_numpy(dtype=bool)
    bad_sec = (present & ~bad_form & ~bad_div & m["sec"].notna().to_numpy(dtype=bool)
               & (m["sec"] != sec_of_div).fillna(False).to_numpy(dtype=bool))
    reason[bad_form] = "行业代码应为2–4位数字 (industry_code must be 2–4 digits, GB/T 4754)"
    reason[is_date_like(t)] = DATE_IN_CODE
    reason[bad_div] = "行业大类不存在 (no such GB/T 4754 division: valid are 01–97)"
    reason[bad_sec] = "门类字母与大类不符 (section letter does not match the GB/T 4754 division)"
    return reason


# --------------------------------------------------------------------------------------------
# helpers


def _add(rej: _Rejects, df: pd.DataFrame, mask, field, values, reason, severity="error") -> None:
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return
    vals = values[mask] if isinstance(values, pd.Series) else np.asarray(values, dtype=object)[mask]
    if isinstance(vals, pd.Series):
        vals = vals.to_numpy(dtype=object)
    reasons = reason[mask] if isinstance(reason, np.ndarray) else reason
    rej.add(df["_file"].to_numpy(dtype=object)[mask], df["_row"].to_numpy()[mask], field, vals, reasons, severity)


def _drop_errors(df: pd.DataFrame, rej: _Rejects) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into (kept, removed) by the error rejects on (file, row)."""
    frame = rej.frame()
    err = frame[frame["severity"] == "error"]
    files = set(df["_file"].unique())
    err = err[err["file"].isin(files)]
    key = pd.MultiIndex.from_arrays([df["_file"].astype(object), df["_row"].astype("int64")])
    bad = key.isin(pd.MultiIndex.from_arrays([err["file"].astype(object), err["row"].astype("int64")]))
    removed = df.loc[bad]
    # the first error of each removed row, for the cascade message
    first = err.drop_duplicates(["file", "row"]).set_index(["file", "row"])["reason"]
    removed = removed.assign(_reason=first.reindex(key[bad]).to_numpy())
    return df.loc[~bad].reset_index(drop=True), removed


def _check_geometry(gdf: gpd.GeoDataFrame, role: str, rej: _Rejects) -> gpd.GeoDataFrame:
    geom = gdf.geometry.values
    missing = np.asarray(shapely.is_missing(geom) | shapely.is_empty(geom), dtype=bool)
    # a geometry the reader already rejected (coordinates outside the CRS) was cleared: one reason is enough
    _add(rej, gdf, missing & ~_already(rej, gdf, "geometry"), "geometry", np.full(len(gdf), "", dtype=object),
         "几何为空 (empty or missing geometry) — 补画图形或删除该行")
    types = np.asarray(shapely.get_type_id(geom))
    polygonal = np.isin(types, [3, 6])  # Polygon, MultiPolygon
    wrong = ~missing & ~polygonal
    _add(rej, gdf, wrong, "geometry", gdf.geometry.geom_type,
         "几何类型应为面 (geometry must be a Polygon or MultiPolygon)")
    check = ~missing & polygonal
    invalid = np.zeros(len(gdf), dtype=bool)
    invalid[check] = ~shapely.is_valid(geom[check])
    if invalid.any():
        reasons = shapely.is_valid_reason(geom[invalid])
        fixed = np.array([_polygonal_part(g) for g in shapely.make_valid(geom[invalid])], dtype=object)
        gone = np.array([g is None or g.is_empty for g in fixed], dtype=bool)
        new = geom.copy()
        new[invalid] = fixed
        gdf = gdf.set_geometry(gpd.GeoSeries(new, crs=gdf.crs, index=gdf.index))
        idx = np.flatnonzero(invalid)
        warn = np.zeros(len(gdf), dtype=bool)
        warn[idx[~gone]] = True
        err = np.zeros(len(gdf), dtype=bool)
        err[idx[gone]] = True
        vals = np.full(len(gdf), "", dtype=object)
        vals[invalid] = reasons
        _add(rej, gdf, warn, "geometry", vals, "几何无效，已用 make_valid 修复 (invalid geometry repaired with make_valid)", "warning")
        _add(rej, gdf, err, "geometry", vals, "几何无效且无法修复为面 (invalid geometry, no polygon left after make_valid)")
    return gdf


def _check_area(gdf: gpd.GeoDataFrame, role: str, rej: _Rejects) -> None:
    """Degenerate and sliver polygons rejected; 登记面积 far from the computed area flagged.

    Areas in m² in the data's Gauss-Krüger zone (:func:`spatial.crs.metric_crs_for`), as the
    importer stores them. Rules: :data:`MIN_AREA_M2`, :data:`MIN_MEAN_WIDTH_M`,
    :data:`AREA_MISMATCH_SHARE` (documented in data/README.md).
    """
    geom = gdf.geometry.values
    ok = ~np.asarray(shapely.is_missing(geom) | shapely.is_empty(geom), dtype=bool)
    ok &= np.isin(np.asarray(shapely.get_type_id(geom)), [3, 6])
    if not ok.any():
        return
    metric = to_crs_cached(gdf.loc[ok], metric_crs_for(gdf.loc[ok])).geometry.values
    area = np.full(len(gdf), np.nan)
    perim = np.full(len(gdf), np.nan)
    area[ok] = shapely.area(metric)
    perim[ok] = shapely.length(metric)
    finite = np.isfinite(area)
    bad_coords = ok & ~finite
    _add(rej, gdf, bad_coords, "geometry", np.full(len(gdf), "", dtype=object),
         "坐标无法换算到平面坐标 (coordinates cannot be projected: outside the zone) — 检查坐标与坐标系")
    tiny = ok & finite & (area < MIN_AREA_M2)
    vals = np.array([f"{a:.3g} m²" for a in area], dtype=object)
    _add(rej, gdf, tiny, "geometry", vals,
         f"面积为零或过小，小于 {MIN_AREA_M2:g} m²（退化的图形，如各顶点在一条直线上）(degenerate polygon: area below "
         f"{MIN_AREA_M2:g} m²) — 修正该宗地的边界后重新导出")
    width = np.where(perim > 0, 2 * area / np.where(perim > 0, perim, 1), 0)
    sliver = ok & finite & ~tiny & (width < MIN_MEAN_WIDTH_M)
    _add(rej, gdf, sliver, "geometry", np.array([f"{w:.3g} m" for w in width], dtype=object),
         f"狭长碎片：平均宽度小于 {MIN_MEAN_WIDTH_M:g} m (sliver polygon: mean width 2·area/perimeter below "
         f"{MIN_MEAN_WIDTH_M:g} m) — 删除碎片或修正边界")
    if role != "parcels" or "registered_area_m2" not in gdf.columns:
        return
    reg = gdf["registered_area_m2"].to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.abs(area - reg) / reg
    off = ok & finite & ~tiny & ~sliver & (reg > 0) & (share > AREA_MISMATCH_SHARE)
    reasons = np.array([
        f"计算面积 {a:.1f} m² 与登记面积 {r:.1f} m² 相差 {x:.0%}（超过 {AREA_MISMATCH_SHARE:.0%}）"
        f"(computed area differs from registered_area_m2 by {x:.0%}, more than {AREA_MISMATCH_SHARE:.0%}) — "
        "核对宗地边界或登记面积" for a, r, x in zip(area, reg, np.nan_to_num(share))], dtype=object)
    _add(rej, gdf, off, "registered_area_m2", gdf["registered_area_m2"], reasons, "warning")


def _polygonal_part(g):
    """The polygonal part of a make_valid result (a bow-tie gives polygons plus stray lines)."""
    if g is None:
        return None
    if g.geom_type in ("Polygon", "MultiPolygon"):
        return g
    parts = [p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        return None
    u = shapely.union_all(parts)
    return u if u.geom_type in ("Polygon", "MultiPolygon") else None


def _check_key(df, col, zh, rej, empty_msg="default"):
    """Empty keys rejected; duplicates rejected on every later occurrence, naming the first row."""
    s = df[col]
    empty = s.isna().to_numpy()
    if empty_msg is not None:
        _add(rej, df, empty, col, s, f"{zh}为空 ({col} is empty) — 填写{zh}")
    dup = s.duplicated(keep="first").to_numpy() & ~empty
    if dup.any():
        first = df.loc[~empty].drop_duplicates(col, keep="first").set_index(col)
        where = first.loc[s[dup], ["_file", "_row"]]
        same = where["_file"].to_numpy() == df["_file"].to_numpy()[dup]
        reasons = np.array([
            f"{zh}重复，首次出现在第 {r} 行 (duplicate {col}, first at row {r}) — 删除重复行或改正{zh}" if sm else
            f"{zh}重复，首次出现在 {f} 第 {r} 行 (duplicate {col}, first at {f} row {r}) — 删除重复行或改正{zh}"
            for f, r, sm in zip(where["_file"], where["_row"], same)
        ], dtype=object)
        full = np.empty(len(df), dtype=object)
        full[dup] = reasons
        _add(rej, df, dup, col, s, full)


def _check_duplicates(df, cols, zh, en, rej):
    """Rows repeating the key ``cols`` of an earlier row: rejected naming that row (vectorised:
    a million repeated rows take a second, not minutes)."""
    key = df[cols[0]].astype(str)
    for c in cols[1:]:
        key = key + "|" + df[c].astype(str)
    valid = df[cols].notna().all(axis=1).to_numpy()
    dup = key.duplicated(keep="first").to_numpy() & valid
    if dup.any():
        k = key.to_numpy(dtype=object)
        firsts = pd.Series(df["_row"].to_numpy()[valid], index=k[valid])
        firsts = firsts[~firsts.index.duplicated(keep="first")]
        full = np.empty(len(df), dtype=object)
        full[dup] = [f"{zh}，首次出现在第 {r} 行 ({en}, first at row {r}) — 删除重复行" for r in firsts.reindex(k[dup])]
        _add(rej, df, dup, cols[-1], df[cols[-1]].astype(str), full)


def _check_uscc(df, col, rej, *, malformed="error", empty=None, check_char=True):
    s = df[col]
    present = s.notna().to_numpy()
    if empty:
        _add(rej, df, ~present, col, s, f"统一社会信用代码为空 ({col} is empty)", empty)
    if not present.any():
        return
    st = uscc_status_series(s[present])
    status = np.full(len(df), "ok", dtype=object)
    reason = np.full(len(df), "", dtype=object)
    status[present] = st["status"].to_numpy(dtype=object)
    reason[present] = st["reason"].to_numpy(dtype=object)
    # Excel turns an all-digit code into a number (9.13309E+17, or 18 digits with the last ones
    # zeroed): say so, the fix is in Excel, not in the code.
    numeric = (s.astype("string").str.fullmatch(r"\d+(\.\d*)?(E\+?\d+)?").fillna(False).to_numpy(dtype=bool)
               & (status != "ok"))
    if numeric.any():
        reason = reason.copy()
        reason[numeric] = [r + " — " + EXCEL_NUMBER_HINT for r in reason[numeric]]
    _add(rej, df, status == "error", col, s, reason, malformed)
    if check_char:
        _add(rej, df, status == "warning", col, s, reason, "warning")


EXCEL_NUMBER_HINT = "Excel 把代码当作数字，请将该列设为文本后重新填写 (Excel stored the code as a number)"


def _check_nonnegative(df, role, rej):
    for col in NONNEGATIVE[role]:
        v = df[col].to_numpy(dtype="float64", na_value=np.nan)
        _add(rej, df, v < 0, col, df[col], "不能为负数 (must not be negative) — 填写 0 或正数")


def _check_years(df, year_range, rej):
    y = df["year"].to_numpy(dtype="float64", na_value=np.nan)
    lo, hi = year_range
    _add(rej, df, np.isnan(y) & ~_already(rej, df, "year"), "year", df["year"], "年度为空 (year is empty) — 填写年度，如 2024")
    _add(rej, df, (y < lo) | (y > hi), "year", df["year"],
         f"年度超出范围 {lo}–{hi} (year out of range {lo}–{hi})")


def _already(rej, df, field) -> np.ndarray:
    """Rows that already carry an error on ``field`` (from reading: 'abc' became missing)."""
    f = rej.frame()
    f = f[(f["severity"] == "error") & (f["field"] == field)]
    key = pd.MultiIndex.from_arrays([df["_file"].astype(object), df["_row"].astype("int64")])
    return key.isin(pd.MultiIndex.from_arrays([f["file"].astype(object), f["row"].astype("int64")]))


def _check_industry(df, rej):
    reason = industry_code_status(df["industry_code"]).to_numpy(dtype=object)
    date = reason == DATE_IN_CODE
    _add(rej, df, date, "industry_code", df["industry_code"], reason)
    _add(rej, df, (reason != "") & ~date, "industry_code", df["industry_code"], reason, "warning")


class _Ref:
    """Checks that a column points at an existing key, telling "unknown" from "rejected".

    ``outside``: the key may exist outside the bundle (another county of a province): an
    unknown one is a warning saying so; a rejected one stays an error."""

    def __init__(self, kept, removed, key, zh, en, rej, outside=False):
        self.kept = set() if kept is None else set(kept[key].dropna())
        self.kept_keys = np.array(list(self.kept), dtype=object)
        self.removed = {} if removed is None or len(removed) == 0 else (
            removed.dropna(subset=[key]).drop_duplicates(key).set_index(key)[["_file", "_row", "_reason"]]
            .to_dict("index"))
        self.key, self.zh, self.en, self.rej, self.outside = key, zh, en, rej, outside

    def check(self, df, col, severity="error", note=""):
        s = df[col]
        present = s.notna().to_numpy()
        # an object Index hashes the keys once (Series.isin on Arrow strings walks the set per call)
        known = pd.Index(s.to_numpy(dtype=object), dtype=object).isin(self.kept_keys)
        miss = present & ~known
        if not miss.any():
            return
        reasons = np.empty(len(df), dtype=object)
        rejected = np.zeros(len(df), dtype=bool)
        for i in np.flatnonzero(miss):
            v = s.iat[i]
            r = self.removed.get(v)
            if r is not None:
                rejected[i] = True
                reasons[i] = (f"{self.zh}记录已被拒绝：{r['_file']} 第 {r['_row']} 行 {r['_reason']} "
                              f"({self.en} {v} was rejected at {r['_file']} row {r['_row']})")
            elif self.outside:
                reasons[i] = (f"{self.zh}不在本县数据中，可能属于省内其他县 ({self.en} {v} is not in this county's "
                              f"data; it may belong to another county of the province){note} — "
                              f"若全省都没有该{self.zh}，改正代码")
            else:
                reasons[i] = f"{self.zh}不存在 (unknown {self.en} {v}){note} — 改正代码，或把该{self.zh}加入{self.zh}数据"
        if self.outside:
            # the cascade keeps its severity; an absent key may be across the border: a warning
            _add(self.rej, df, rejected, col, s, reasons, severity)
            _add(self.rej, df, miss & ~rejected, col, s, reasons, "warning")
        else:
            _add(self.rej, df, miss, col, s, reasons, severity)


def _check_overlaps(gdf, tolerance, rej):
    """Warn on parcels overlapping another parcel by more than ``tolerance`` m².

    STRtree candidate pairs (bounding boxes intersect) → drop pairs that only touch (neighbours
    share a boundary; an intersection would be a line) → intersection area in a metric CRS.
    """
    geom_ok = ~(shapely.is_missing(gdf.geometry.values) | shapely.is_empty(gdf.geometry.values))
    if geom_ok.sum() < 2:
        return
    sub = gdf.loc[geom_ok]
    metric = to_crs_cached(sub, metric_crs_for(sub)).geometry.values
    tree = shapely.STRtree(metric)
    left, right = tree.query(metric, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if left.size == 0:
        return
    touch = shapely.touches(metric[left], metric[right])
    left, right = left[~touch], right[~touch]
    area = shapely.area(shapely.intersection(metric[left], metric[right]))
    big = area > tolerance
    left, right, area = left[big], right[big], area[big]
    if left.size == 0:
        return
    codes = sub["parcel_code"].to_numpy(dtype=object)
    files = sub["_file"].to_numpy(dtype=object)
    rows = sub["_row"].to_numpy()
    # Warn on the later row of each pair, naming the earlier one.
    reasons = [
        f"与宗地 {codes[a]}（{'' if files[a] == files[b] else files[a] + ' '}第 {rows[a]} 行）重叠 {ar:.1f} m² "
        f"(overlaps parcel {codes[a]} at {'' if files[a] == files[b] else files[a] + ' '}row {rows[a]} by {ar:.1f} m²)"
        for a, b, ar in zip(left, right, area)
    ]
    rej.add(files[right], rows[right], "geometry", codes[right], np.array(reasons, dtype=object), "warning")
