"""``mujun run --province``: a province (or several) on Dask, one county per task.

Input: a GeoParquet province as ``mujun sample --fmt parquet`` writes it (and as a province
bureau collects county deliveries): ``parcels``, ``defacto``, ``buildings`` (WKB, EPSG:4490),
``enterprises`` (lon/lat + coord_sys), ``metrics``, ``leases``, ``corrections`` (Parquet), one
row group per county — row group *i* of every file is county *i*.

One Dask graph (``dask.distributed``; a ``LocalCluster`` with one worker per core unless a
scheduler address is given), four tasks per county:

1. ``bounds``  — the county's extent (EPSG:4490), for the province's metric CRS;
2. ``prepare`` — read the county's row group, validate it as the county's import does
   (:func:`spatial.io.bundle_from_frames`, :func:`spatial.validate.validate_bundle`: only rows
   without an error go on, the rejects are written to ``OUT/rejects/<county>.parquet``), project
   to the province's Gauss-Krüger zone, build its land and 宗地身份码
   (:func:`spatial.identity.build_land`, the county's code);
3. ``match``   — its land + halo (:mod:`spatial.partition`): 地企对应, 多企共地分割, sub-lots;
   keeps the links on its own land;
4. ``rate``    — 一企多地合并 for its enterprises, apportioned figures for its land, and the
   dual rating of both (ranking within county and industry group, as the schemes say), each row
   as ``mujun evaluate`` stores it (:func:`app.evaluation.rating_rows`: colour, 亩均税收,
   indicators, adjustments, explanation; JSON as text). Not here: the multi-year results
   (consecutive D years, 差别电价, 低产田), which need earlier years' grades — ``--db`` adds
   them from the database (:mod:`app.province_db`).

Tasks pass data through a scratch directory of GeoParquet files (one per county and stage),
never through the scheduler: a worker holds one county and its halo at a time, and its peak is
bounded by the largest county (plus the rows of its neighbours within the halo), not the
province.  With a remote scheduler the scratch and output directories must be on a filesystem
every worker sees.

:func:`run_single` runs the same steps on the whole province in one process: the reference the
partitioned run must equal exactly (tests/test_dask_province.py).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from app.evaluation import json_text, rating_rows
from app.models import METRIC_COLUMNS
from scoring import evaluate, load_scheme
from spatial.apportion import apportion_metrics, enterprise_land
from spatial.crs import metric_crs_for, normalize_coord_sys, to_cgcs2000
from spatial.identity import _isin, build_land
from spatial.io import REJECT_COLUMNS, BundleError, bundle_from_frames
from spatial.match import match_enterprises
from spatial.partition import MARGIN_M, county_keys, halo, holder_homes, neighbours
from spatial.split import split_shares, sublot_geometries
from spatial.validate import validate_bundle

__all__ = ["run_province", "run_single", "read_county", "validate_county", "ProvinceReport", "CountyProgress",
           "OUTPUTS", "REJECTS"]

ROLES = ("parcels", "defacto", "buildings", "enterprises", "metrics", "leases", "corrections")
#: Output tables (one Parquet file per county under ``OUT/<table>/``).
OUTPUTS = ("land", "links", "sublots", "enterprise_land", "parcel_metrics", "enterprise_ratings", "parcel_ratings")
#: Import-validation problems of each county (``OUT/rejects/<county>.parquet``): the county's
#: code, then :data:`spatial.io.REJECT_COLUMNS` (``file`` is the province file, ``row`` its
#: 1-based row in the whole file).
REJECTS = "rejects"
_REJECT_COLUMNS = ["county", *REJECT_COLUMNS]
_LAYERS = ("parcels", "defacto", "buildings")
_RATING_COLUMNS = ["subject_id", "county", "list_name", "group", "evaluated", "excluded_reason", "score", "rank",
                   "rank_n", "percentile", "band_grade", "grade"]
#: What a rating stores beside the grade (:func:`app.evaluation.rating_rows`; JSON columns as JSON
#: text) and the subject's kWh (差别电价 applies to it): the multi-year results need history,
#: which only the database has (:mod:`app.province_db` adds them).
_STORED_COLUMNS = ["colour", "tax_per_mu", "land_area_mu", "idle", "indicators", "adjustments", "explanation",
                   "warnings", "electricity_kwh"]


@dataclass
class CountyProgress:
    """A county finished a stage of :func:`run_province` (the ``progress`` callback's argument)."""

    index: int           #: row group of the county in the province files
    county: str | None   #: its 6-digit code
    stage: str           #: ``prepare`` (land built), ``match`` (links, sub-lots) or ``rate`` (outputs written)
    #: rows of the stage: land/enterprises and ``rejected`` (rows dropped by import-validation)
    #: and ``warnings`` (warnings listed), links/halo, or each output table
    rows: dict[str, int]
    done: int            #: stages finished so far, all counties
    total: int           #: stages in all (3 per county)


@dataclass
class ProvinceReport:
    """A finished :func:`run_province`; ``rows``: rows of each output table, ``rejected`` (rows
    import-validation dropped, all counties) and ``warnings`` (warnings it listed)."""

    counties: int
    year: int
    workers: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    out: Path | None = None


# -- reading ----------------------------------------------------------------------------------------
def partitions(path: str | Path) -> int:
    """Number of counties (row groups) of a GeoParquet province; ``ValueError`` (Chinese) if the
    files disagree or one is missing."""
    path = Path(path)
    missing = [f"{role}.parquet" for role in ROLES if not (path / f"{role}.parquet").exists()]
    if missing:
        raise ValueError(f"省级数据目录 {path} 缺少 {', '.join(missing)} (missing files): "
                         "需要 mujun sample --fmt parquet 的文件布局，每县一个 row group")
    counts = {}
    for role in ROLES:
        f = path / f"{role}.parquet"
        try:
            counts[role] = pq.ParquetFile(f).num_row_groups
        except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
            raise ValueError(f"{f} 不是可读的 Parquet 文件 (not a readable Parquet file): {exc}") from None
    if len(set(counts.values())) != 1:
        raise ValueError(f"各文件的县（row group）数不一致 (row groups per file differ): {counts}")
    return counts["parcels"]


def _read(path: Path, role: str, i: int) -> pd.DataFrame:
    return pq.ParquetFile(path / f"{role}.parquet").read_row_group(i).to_pandas()


def _geo(df: pd.DataFrame, crs) -> gpd.GeoDataFrame:
    # unreadable WKB becomes no geometry: validation rejects it ("几何为空") instead of a traceback
    g = gpd.GeoDataFrame(df.drop(columns="geometry"), crs=4490,
                         geometry=shapely.from_wkb(df["geometry"].to_numpy(), on_invalid="ignore"))
    return g.to_crs(crs)


def _points(e: pd.DataFrame, crs) -> gpd.GeoDataFrame:
    """Enterprise points from lon/lat as delivered (GCJ-02 / BD-09 converted to CGCS2000)."""
    cs = e["coord_sys"].astype(object).map(lambda v: normalize_coord_sys(v) if pd.notna(v) else None)
    lon, lat = e["lon"].to_numpy(float, na_value=np.nan), e["lat"].to_numpy(float, na_value=np.nan)
    ok = ~np.isnan(lon) & ~np.isnan(lat) & cs.notna().to_numpy()
    x, y = np.full(len(e), np.nan), np.full(len(e), np.nan)
    x[ok], y[ok] = to_cgcs2000(lon[ok], lat[ok], cs.to_numpy(dtype=object)[ok])
    geom = np.full(len(e), None, dtype=object)
    geom[ok] = shapely.points(x[ok], y[ok])
    return gpd.GeoDataFrame(e.drop(columns=["lon", "lat"]), geometry=geom, crs=4490).to_crs(crs)


def validate_county(path: str | Path, i: int, raw: dict[str, pd.DataFrame] | None = None):
    """County *i* checked as its own import checks it: (validated bundle, rejects).

    The row groups (``raw``, read if not given) go through :func:`spatial.io.bundle_from_frames`
    and :func:`spatial.validate.validate_bundle` with ``references="province"`` (a lease, 纠偏
    or metrics row may name a parcel or enterprise of another county: a warning, not an error).
    The bundle holds the rows without an error, typed as the import types them, layers and
    enterprise points in EPSG:4490. ``rejects``: ``county`` + :data:`spatial.io.REJECT_COLUMNS`,
    ``file`` the province file (``enterprises.parquet``) and ``row`` the 1-based row of the whole
    file. Raises ``ValueError`` (Chinese) when a table cannot be imported at all (a required
    column missing, no parcels …)."""
    path = Path(path)
    raw = raw if raw is not None else {role: _read(path, role, i) for role in ROLES}
    first = {}
    for role in ROLES:
        meta = pq.ParquetFile(path / f"{role}.parquet").metadata
        first[role] = sum(meta.row_group(j).num_rows for j in range(i)) + 1
    frames = {role: _geo(raw[role], 4490) if role in _LAYERS else raw[role] for role in ROLES}
    try:
        b = validate_bundle(bundle_from_frames(frames, labels={r: f"{r}.parquet" for r in ROLES}, first_rows=first),
                            references="province")
    except BundleError as exc:
        raise ValueError(f"第 {i + 1} 个县（row group {i}）无法导入 (county {i} cannot be imported): {exc}") from None
    codes = b.tables["parcels"]["parcel_code"].dropna().astype(str).str[:6]
    county = codes.mode().iloc[0] if len(codes) else f"{i:06d}"
    rejects = pd.DataFrame(b.rejects).reset_index(drop=True)
    rejects.insert(0, "county", county)
    return b, rejects[_REJECT_COLUMNS]


def _pipeline_frames(b, raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The validated tables with the province file's columns (canonical names, the import's
    types) and nothing the checks added (``_file``, ``_row``, ``x_*``, ``lon_src`` …);
    enterprises without lon/lat (their point is the geometry), as :func:`_points` gives them."""
    out = {}
    for role in ROLES:
        t, cmap = b.tables[role], b.column_map[f"{role}.parquet"]
        cols = [cmap[c] for c in raw[role].columns if c in cmap and cmap[c] not in ("lon", "lat")]
        if isinstance(t, gpd.GeoDataFrame):
            cols.append(t.geometry.name)
        out[role] = t[cols]
    return out


def read_county(path: str | Path, i: int, crs, *, validate: bool = True) -> dict:
    """County *i* of the province, each frame with a ``county`` column (the 6-digit code of its
    parcels), and ``zone``: the county's own metric CRS (EPSG of its Gauss-Krüger zone).

    Parcels and de-facto land are in ``zone``, where the county's own import builds its land
    (areas in 亩 and 边角料 as that import measures them); buildings and enterprises in the
    province's ``crs``, where every cross-county distance is measured.

    With ``validate`` (the default) only rows without an import error go on, typed as the import
    types them (:func:`validate_county`); ``rejects`` lists the problems. ``validate=False``
    passes every row as stored (for measuring what validation costs)."""
    path = Path(path)
    raw = {role: _read(path, role, i) for role in ROLES}
    if validate:
        b, rejects = validate_county(path, i, raw)
        frames = _pipeline_frames(b, raw)
        dropped = sum(len(raw[r]) - len(frames[r]) for r in ROLES)
    else:
        frames = {**{r: raw[r] for r in ROLES}, **{r: _geo(raw[r], 4490) for r in _LAYERS},
                  "enterprises": _points(raw["enterprises"], 4490)}
        rejects, dropped = pd.DataFrame(columns=_REJECT_COLUMNS), 0
    codes = frames["parcels"]["parcel_code"].dropna().astype(str).str[:6]
    county = codes.mode().iloc[0] if len(codes) else f"{i:06d}"
    parcels = frames["parcels"]
    zone = metric_crs_for(parcels)
    out = {"parcels": parcels.to_crs(zone), "defacto": frames["defacto"].to_crs(zone),
           "buildings": frames["buildings"].to_crs(crs), "enterprises": frames["enterprises"].to_crs(crs)}
    for role in ("metrics", "leases", "corrections"):
        out[role] = frames[role]
    return {**{role: df.assign(county=county) for role, df in out.items()}, "zone": zone,
            "rejects": rejects, "rejected": dropped}


def county_bounds(path: str | Path, i: int) -> tuple[float, float, float, float]:
    """Extent of county *i*'s parcels, EPSG:4490 (to choose the province's metric CRS)."""
    g = shapely.from_wkb(pq.ParquetFile(Path(path) / "parcels.parquet").read_row_group(i, columns=["geometry"])
                         .column("geometry").to_numpy(zero_copy_only=False))
    return tuple(shapely.total_bounds(g).tolist())


def province_crs(bounds: list[tuple[float, float, float, float]]):
    """One metric CRS (Gauss-Krüger zone of the province's centre) for every county: the same
    distances and areas whatever the partitioning."""
    b = np.array(bounds)
    box = shapely.box(b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
    return metric_crs_for(gpd.GeoSeries([box], crs=4490))


# -- the steps (shared by both runs) ---------------------------------------------------------------
def _land(data: dict, crs) -> gpd.GeoDataFrame:
    """The county's land and 宗地身份码, built in its own zone (as its import builds them), then
    projected to the province's ``crs`` for matching; ``area_m2`` / ``area_mu`` stay the zone's."""
    county = data["parcels"]["county"].iloc[0] if len(data["parcels"]) else None
    land = build_land(data["parcels"], data["defacto"], county_code=county)
    return land.to_crs(crs).assign(county=county)


def _sublots(land: gpd.GeoDataFrame, links: pd.DataFrame, zone) -> gpd.GeoDataFrame:
    """Sub-lot outlines (:func:`spatial.split.sublot_geometries`) of one county's land, their
    ``area_m2`` measured in the county's ``zone`` like its land's."""
    subs = sublot_geometries(land, links)
    if len(subs):
        subs["area_m2"] = subs.geometry.to_crs(zone).area.to_numpy()
    return subs


def _match(land, ents, buildings, leases, corrections, tol: float, rule: str):
    links = match_enterprises(land, ents, buildings=buildings if len(buildings) else None,
                              leases=leases if len(leases) else None,
                              corrections=corrections if len(corrections) else None, snap_tolerance_m=tol)
    links = split_shares(links, land, buildings=buildings if len(buildings) else None,
                         leases=leases if len(leases) else None, rule=rule)
    links.attrs = {}
    return links


def _metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.sort_values(["uscc", "year"], kind="stable", ignore_index=True)


def _ratings(ents: pd.DataFrame, land: pd.DataFrame, links: pd.DataFrame, ent_land: pd.DataFrame,
             pm: pd.DataFrame, metrics: pd.DataFrame, occupants: pd.DataFrame, year: int, sch):
    """Enterprise and parcel ratings of one county (as :mod:`app.evaluation` builds subjects)."""
    m = metrics[metrics["year"] == year]
    num = [c for c in METRIC_COLUMNS if c in m.columns]
    m = m.groupby("uscc", sort=True)[num].sum(min_count=1).reset_index()
    el = ent_land.set_index("uscc")
    tenants = links[links["role"] == "tenant"]
    lords = links[links["role"].isin(["landlord", "owner_occupier"])][["identity_code", "uscc"]]
    pair = tenants[["uscc", "identity_code", "attributed_area_m2"]].merge(
        lords.rename(columns={"uscc": "landlord_id"}), on="identity_code")
    pair = pair[pair["uscc"] != pair["landlord_id"]].sort_values(
        ["uscc", "attributed_area_m2", "landlord_id"], ascending=[True, False, True], na_position="last")
    landlord = pair.drop_duplicates("uscc").set_index("uscc")["landlord_id"]
    e = ents[["uscc", "industry_code", "scale", "flags", "founded", "township", "county"]].merge(m, on="uscc")
    e = e.sort_values("uscc", ignore_index=True)
    e["land_area_mu"] = el["land_area_mu"].reindex(e["uscc"]).fillna(0).to_numpy()
    e["land_class"] = el["land_class"].reindex(e["uscc"]).fillna("none").to_numpy()
    e["is_tenant"] = e["land_class"] == "III"
    e["landlord_id"] = landlord.reindex(e["uscc"]).to_numpy()
    e = e.rename(columns={"uscc": "subject_id"})

    # a parcel's occupant: its largest-share linked enterprise; a holder without an enterprise row
    # occupies nothing (as app.evaluation.parcel_subjects joins links to enterprises): land held
    # only by such holders is idle (闲置)
    occ = links[_isin(links["uscc"], occupants["uscc"])]
    occ = occ.sort_values(["identity_code", "share", "uscc"], ascending=[True, False, True], na_position="last")
    occ = occ.drop_duplicates("identity_code").merge(occupants, on="uscc", how="left").set_index("identity_code")
    p = pd.DataFrame({"subject_id": land["identity_code"].to_numpy(), "land_area_mu": land["area_mu"].to_numpy(),
                      "township": land["township"].to_numpy(), "county": land["county"].to_numpy()})
    p = p.sort_values("subject_id", ignore_index=True)
    p["industry_code"] = occ["industry_code"].reindex(p["subject_id"]).to_numpy()
    p["scale"] = occ["scale"].reindex(p["subject_id"]).fillna("规下").to_numpy()
    p["idle"] = ~p["subject_id"].isin(occ.index).to_numpy()
    pmy = pm[pm["year"] == year].set_index("identity_code") if len(pm) else pd.DataFrame()
    for c in num:
        p[c] = pmy[c].reindex(p["subject_id"]).to_numpy() if c in pmy.columns else np.nan
    out = []
    for subjects, kind in ((e, "enterprise"), (p, "parcel")):
        if len(subjects) == 0:
            out.append(pd.DataFrame(columns=_RATING_COLUMNS + _STORED_COLUMNS))
            continue
        # explained: the stored rows are those `mujun evaluate` stores (colour, explanation, …)
        r = evaluate(subjects, sch, year, kind=kind)
        stored = json_text(rating_rows(r, subjects, sch))
        stored["electricity_kwh"] = subjects["electricity_kwh"].to_numpy(dtype=float, na_value=np.nan) \
            if "electricity_kwh" in subjects.columns else np.nan
        r["county"] = subjects["county"].to_numpy()
        out.append(pd.concat([r[_RATING_COLUMNS].reset_index(drop=True),
                              stored[_STORED_COLUMNS].reset_index(drop=True)], axis=1))
    return out[0], out[1]


def _occupants(ents: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(ents[["uscc", "industry_code", "scale"]])


# -- single process --------------------------------------------------------------------------------
def run_single(path: str | Path, year: int, *, scheme: str = "zhejiang_default", tolerance_m: float = 30.0,
               rule: str = "equal") -> dict[str, pd.DataFrame]:
    """The whole province in this process: the reference for :func:`run_province`.

    Returns the :data:`OUTPUTS` tables and ``rejects`` (every county's import-validation
    problems, county by county, as ``run_province`` writes them). Land is built county by county (an independent de-facto piece carries its county's code, as
    an import of that county's bundle gives it); matching, splitting and apportioning run on the
    whole province at once; ratings rank within county (and industry group)."""
    path = Path(path)
    n = partitions(path)
    crs = province_crs([county_bounds(path, i) for i in range(n)])
    parts = [read_county(path, i, crs) for i in range(n)]
    land = pd.concat([_land(d, crs) for d in parts], ignore_index=True)
    land = gpd.GeoDataFrame(land, geometry="geometry", crs=crs)
    cat = {r: pd.concat([d[r] for d in parts], ignore_index=True) for r in ROLES if r not in ("parcels", "defacto")}
    ents = gpd.GeoDataFrame(cat["enterprises"], geometry="geometry", crs=crs)
    bld = gpd.GeoDataFrame(cat["buildings"], geometry="geometry", crs=crs)
    links = _match(land, ents, bld, cat["leases"], cat["corrections"], tolerance_m, rule)
    zones = {d["parcels"]["county"].iloc[0]: d["zone"] for d in parts if len(d["parcels"])}
    subs = _concat([_sublots(land[land["county"] == c], links[links["identity_code"].isin(
        land.loc[land["county"] == c, "identity_code"])], z) for c, z in zones.items()])
    ent_land = enterprise_land(links, land)
    metrics = _metrics(cat["metrics"])
    pm = apportion_metrics(metrics, links)
    pm = pm[pm["identity_code"].notna()].reset_index(drop=True)
    sch = load_scheme(scheme)
    er, pr = [], []
    county_of_land = land.set_index("identity_code")["county"]
    for c in sorted(land["county"].unique()):
        cl = land[land["county"] == c]
        ce = ents[ents["county"] == c]
        e, p = _ratings(ce, cl, links[links["identity_code"].isin(cl["identity_code"])],
                        ent_land[ent_land["uscc"].isin(ce["uscc"])], pm[pm["identity_code"].isin(cl["identity_code"])],
                        metrics[metrics["uscc"].isin(ce["uscc"])], _occupants(ents), year, sch)
        er.append(e)
        pr.append(p)
    links = links.assign(county=county_of_land.reindex(links["identity_code"]).to_numpy())
    return _canonical({"land": land, "links": links, "sublots": subs, "enterprise_land": ent_land,
                       "parcel_metrics": pm, "enterprise_ratings": pd.concat(er, ignore_index=True),
                       "parcel_ratings": pd.concat(pr, ignore_index=True),
                       REJECTS: pd.concat([d["rejects"] for d in parts], ignore_index=True)})


# -- partitioned (Dask) ----------------------------------------------------------------------------
def _scratch(root: Path, stage: str, i: int) -> Path:
    d = root / stage
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{i:05d}.arrow"


def _write_scratch(df: pd.DataFrame, f: Path) -> None:
    """One frame as an uncompressed Arrow IPC file (geometry as WKB, its CRS in the metadata).

    Each scratch file is read by the tasks of its county and of every neighbour: a memory-mapped
    IPC file costs ~5 ms to read into pandas where the same rows as GeoParquet cost 15-40 ms."""
    plain = pd.DataFrame(df)
    meta = {}
    if isinstance(df, gpd.GeoDataFrame):
        name = df.geometry.name
        g = np.asarray(df.geometry.values)
        plain[name] = shapely.to_wkb(g)
        meta = {b"geometry": name.encode(), b"crs": df.crs.to_json().encode()}
        # each row's bounds too: a neighbour's task chooses rows without parsing WKB (_candidates)
        b = shapely.bounds(g)
        for k, c in enumerate(_BOUNDS):
            plain[c] = b[:, k]
    table = pa.Table.from_pandas(plain, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with pa.OSFile(str(f), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def _table(root: Path, stage: str, i: int) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(_scratch(root, stage, i)))).read_all()


def _frame(table: pa.Table) -> pd.DataFrame:
    meta = table.schema.metadata or {}
    df = table.drop_columns([c for c in _BOUNDS if c in table.column_names]).to_pandas()
    name = meta.get(b"geometry", b"").decode()
    if name in df.columns:
        df[name] = shapely.from_wkb(df[name].to_numpy())
        df = gpd.GeoDataFrame(df, geometry=name, crs=_crs(meta[b"crs"]))
    return df


@functools.lru_cache(maxsize=8)
def _crs(text: bytes):
    from pyproj import CRS

    return CRS.from_json(text.decode())


def _load(root: Path, stage: str, idx: list[int], columns: list[str] | None = None) -> pd.DataFrame:
    """The scratch frames of counties ``idx`` (in that order), only ``columns`` if given."""
    frames = []
    for i in idx:
        t = _table(root, stage, i)
        frames.append(_frame(t.select([c for c in columns if c in t.column_names]) if columns else t))
    return _concat(frames)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    out = pd.concat(frames, ignore_index=True)
    geo = next((f for f in frames if isinstance(f, gpd.GeoDataFrame)), None)
    if geo is not None:
        out = gpd.GeoDataFrame(out, geometry=geo.geometry.name, crs=geo.crs)
    return out


#: Bounds of each geometry (m; NaN for none), kept in the scratch next to its WKB.
_BOUNDS = ("__x0", "__y0", "__x1", "__y1")
#: The columns :func:`spatial.partition.halo` chooses rows by (enterprise points from their bounds).
_HALO_COLUMNS = {"land": ["county", "parcel_code", "identity_code", "owner_uscc", "user_uscc", "geometry"],
                 "enterprises": ["county", "uscc"], "buildings": ["parcel_code", "geometry"]}


def _candidates(tables: dict[str, list[pa.Table]], own: int, leases: pd.DataFrame, corrections: pd.DataFrame,
                tol: float) -> dict[str, list[np.ndarray]]:
    """Per role and county, the rows (positions) that may belong to the halo of county ``own``:
    a superset of what :func:`spatial.partition.halo` selects, found on bounds and keys only.

    The halo's own rules, each widened to a box: enterprises with a point within the reach of
    the county's land box or named by its keys (holder, lease, 纠偏); land within two reaches of
    the box of the county's land and enterprises, within the reach of a key-named enterprise, or
    held or named by any candidate enterprise; buildings within three reaches of that box, on
    candidate land, or within the reach of the box of a candidate piece or key-named enterprise.
    A box contains its geometry, so a box test never drops a row the exact test keeps; the
    halo itself then runs on these rows (a superset gives it the same answer)."""
    import pyarrow.compute as pc

    r = tol + MARGIN_M + 1.0  # one more metre: box arithmetic in floats never cuts at the reach
    bounds = {role: [np.column_stack([t.column(c).to_numpy() for c in _BOUNDS]) if t.num_rows else np.zeros((0, 4))
                     for t in ts] for role, ts in tables.items()}

    def strs(t: pa.Table, col: str) -> pa.ChunkedArray:
        return t.column(col).cast(pa.string())

    def isin(t: pa.Table, col: str, values) -> np.ndarray:
        vs = pa.array([v for v in values if isinstance(v, str)], pa.string())
        return pc.is_in(strs(t, col), value_set=vs).to_numpy(zero_copy_only=False).astype(bool)

    def box(b: np.ndarray) -> np.ndarray:
        b = b[~np.isnan(b).any(axis=1)]
        return np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()]) if len(b) else None

    def within(b: np.ndarray, bx, d: float) -> np.ndarray:
        if bx is None:
            return np.zeros(len(b), bool)
        with np.errstate(invalid="ignore"):
            return (b[:, 0] <= bx[2] + d) & (b[:, 2] >= bx[0] - d) & (b[:, 1] <= bx[3] + d) & (b[:, 3] >= bx[1] - d)

    def near(b: np.ndarray, targets: np.ndarray, d: float) -> np.ndarray:
        """Boxes within ``d`` of any target box (both as (n, 4) bounds)."""
        out = np.zeros(len(b), bool)
        targets = targets[~np.isnan(targets).any(axis=1)]
        if not len(targets) or not len(b):
            return out
        close = np.flatnonzero(within(b, box(targets), d))
        if len(close):
            # boxes grown by d (targets) and a hair (queries) never degenerate, for points too
            t = targets
            tree = shapely.STRtree(shapely.box(t[:, 0] - d, t[:, 1] - d, t[:, 2] + d, t[:, 3] + d))
            q = b[close]
            hit = tree.query(shapely.box(q[:, 0] - 1e-6, q[:, 1] - 1e-6, q[:, 2] + 1e-6, q[:, 3] + 1e-6),
                             predicate="intersects")[0]
            out[close[np.unique(hit)]] = True
        return out

    land, ents = tables["land"][own], tables["enterprises"][own]
    core_box = box(bounds["land"][own])
    all_box = box(np.vstack([bounds["land"][own], bounds["enterprises"][own]]))
    core_codes = set(strs(land, "parcel_code").drop_null().to_pylist()) | set(strs(land, "identity_code").drop_null().to_pylist())
    core_holders = set(strs(land, "owner_uscc").drop_null().to_pylist()) | set(strs(land, "user_uscc").drop_null().to_pylist())
    ls_in = _isin(leases["parcel_code"], core_codes) | _isin(leases["landlord_uscc"], core_holders)
    keyed = core_holders | set(leases.loc[ls_in, "tenant_uscc"].dropna()) | set(
        corrections.loc[_isin(corrections["parcel_code"], core_codes), "uscc"].dropna())
    out: dict[str, list[np.ndarray]] = {}
    n = len(tables["land"])
    # 1. enterprises
    masks, key_pts = [], []
    for j, t in enumerate(tables["enterprises"]):
        b = bounds["enterprises"][j]
        if j == own:
            masks.append(np.ones(t.num_rows, bool))
            continue
        by_key = isin(t, "uscc", keyed)
        masks.append(within(b, core_box, r) | by_key)
        key_pts.append(b[by_key])
    out["enterprises"] = masks
    key_pts = np.vstack(key_pts) if key_pts else np.zeros((0, 4))
    usccs = set().union(*(set(strs(t, "uscc").filter(pa.array(m)).drop_null().to_pylist())
                          for t, m in zip(tables["enterprises"], masks)))
    my_leases = leases[_isin(leases["tenant_uscc"], usccs)]
    my_corr = corrections[_isin(corrections["uscc"], usccs)]
    holders = usccs | set(my_leases["landlord_uscc"].dropna())
    named = set(my_leases["parcel_code"].dropna()) | set(my_corr["parcel_code"].dropna())
    # 2. land
    masks, chosen = [], []
    for j, t in enumerate(tables["land"]):
        b = bounds["land"][j]
        if j == own:
            masks.append(np.ones(t.num_rows, bool))
            continue
        m = within(b, all_box, 2 * r) | near(b, key_pts, r) | isin(t, "owner_uscc", holders) | isin(t, "user_uscc", holders) | \
            isin(t, "parcel_code", named) | isin(t, "identity_code", named)
        masks.append(m)
        chosen.append(b[m])
    out["land"] = masks
    codes = set().union(*(set(strs(t, "parcel_code").filter(pa.array(m)).drop_null().to_pylist())
                          for t, m in zip(tables["land"], masks)))
    # a piece only meets the box: a building near it may lie further out
    targets = np.vstack(chosen + [key_pts]) if chosen else key_pts
    # 3. buildings
    masks = []
    for j, t in enumerate(tables["buildings"]):
        b = bounds["buildings"][j]
        if j == own:
            masks.append(np.ones(t.num_rows, bool))
            continue
        masks.append(within(b, all_box, 3 * r) | isin(t, "parcel_code", codes) | near(b, targets, r))
    out["buildings"] = masks
    assert n == len(out["land"])
    return {role: [np.flatnonzero(m) for m in ms] for role, ms in out.items()}


def _halo_input(root: Path, county: str | None, i: int, idx: list[int], tol: float) -> dict[str, pd.DataFrame]:
    """The land, enterprises, buildings, leases and corrections the match of ``county`` needs
    (its own and its halo, :func:`spatial.partition.halo`) from the scratch of counties ``idx``.

    The halo is chosen on the few columns it depends on (points from their coordinates); only the
    chosen rows are then read whole, county by county as before, in the same order."""
    full = {role: [_table(root, role, j) for j in idx] for role in _HALO_COLUMNS}
    leases, corrections = _load(root, "leases", idx), _load(root, "corrections", idx)
    rows = _candidates(full, idx.index(i), leases, corrections, tol)
    tables = {role: [t.take(r) for t, r in zip(ts, rows[role])] for role, ts in full.items()}
    slim = {}
    for role, ts in tables.items():
        frames = []
        for t in ts:
            if role == "enterprises":
                df = t.select(["county", "uscc"]).to_pandas()
                x, y = (t.column(c).to_numpy() for c in _BOUNDS[:2])
                geom = np.full(len(df), None, dtype=object)
                ok = ~np.isnan(x) & ~np.isnan(y)
                geom[ok] = shapely.points(x[ok], y[ok])
                frames.append(gpd.GeoDataFrame(df, geometry=geom))
            else:
                frames.append(_frame(t.select(_HALO_COLUMNS[role])))
        slim[role] = _concat(frames)
    sel = halo(county, slim["land"], slim["enterprises"], slim["buildings"], leases, corrections, tolerance_m=tol)
    out = {"leases": sel["leases"].reset_index(drop=True), "corrections": sel["corrections"].reset_index(drop=True)}
    for role, ts in tables.items():
        pos = sel[role].index.to_numpy()  # halo keeps the positions in the concatenation as its index
        ends = np.cumsum([t.num_rows for t in ts])
        out[role] = _concat([_frame(t.take(pos[(pos >= end - t.num_rows) & (pos < end)] - (end - t.num_rows)))
                             for t, end in zip(ts, ends)])
    return out


def _write(df: pd.DataFrame, f: Path) -> None:
    """An output table: GeoParquet (or Parquet), what :func:`read_outputs` and other tools read."""
    if isinstance(df, gpd.GeoDataFrame):
        df.to_parquet(f, index=False)
    else:
        pd.DataFrame(df).to_parquet(f, index=False)


def _task_prepare(path: str, i: int, crs, scratch: str, out: str | None = None) -> dict:
    """Read and validate county *i*, build its land; write both to the scratch (and its rejects
    to ``out/rejects/<i>.parquet``); return its keys and bounds."""
    root = Path(scratch)
    data = read_county(path, i, crs)
    if out is not None:
        d = Path(out) / REJECTS
        d.mkdir(parents=True, exist_ok=True)
        _write(data["rejects"], d / f"{i:05d}.parquet")
    land = _land(data, crs)
    _write_scratch(land, _scratch(root, "land", i))
    for role in ("enterprises", "buildings", "metrics", "leases", "corrections"):
        _write_scratch(data[role], _scratch(root, role, i))
    geoms = np.concatenate([land.geometry.values, data["buildings"].geometry.values,
                            data["enterprises"].geometry.values])
    geoms = geoms[~shapely.is_missing(geoms)]
    return {"i": i, "county": land["county"].iloc[0] if len(land) else data["parcels"]["county"].iloc[0],
            "bounds": tuple(shapely.total_bounds(geoms).tolist()),
            "keys": county_keys(land, data["enterprises"], data["leases"], data["corrections"]),
            "rows": {"land": len(land), "enterprises": len(data["enterprises"]), "rejected": data["rejected"],
                     "warnings": int((data["rejects"]["severity"] == "warning").sum())}, "zone": data["zone"]}


def _neighbours(prepared: list[dict], tol: float) -> dict:
    """Per county index: the indices its tasks read; ``homes``: holder → county index;
    ``county``: index → county code; ``rows``: index → row counts."""
    by = {p["county"]: p for p in prepared}
    keys = {c: p["keys"] for c, p in by.items()}
    nb = neighbours({c: p["bounds"] for c, p in by.items()}, keys, tol)
    out = {by[c]["i"]: [by[d]["i"] for d in ds] for c, ds in nb.items()}
    out["homes"] = {h: by[c]["i"] for h, c in holder_homes(keys).items()}
    out["county"] = {p["i"]: p["county"] for p in prepared}
    out["rows"] = {p["i"]: p["rows"] for p in prepared}
    out["zone"] = {p["i"]: p["zone"] for p in prepared}
    return out


def _task_match(i: int, idx: list[int], zone, scratch: str, tol: float, rule: str, *_deps) -> dict:
    """地企对应 and 多企共地分割 for the land of county *i* (its land + halo in memory).

    ``idx``: county *i* and its neighbours in index order (the single process's order: the
    same sums in the same order)."""
    root = Path(scratch)
    own = _load(root, "land", [i])
    c = own["county"].iloc[0] if len(own) else None
    sel = _halo_input(root, c, i, idx, tol)
    links = _match(sel["land"], sel["enterprises"], sel["buildings"], sel["leases"], sel["corrections"], tol, rule)
    links = links[_isin(links["identity_code"], own["identity_code"])].reset_index(drop=True).assign(county=c)
    _write_scratch(links, _scratch(root, "links", i))
    _write_scratch(_sublots(own, links, zone), _scratch(root, "sublots", i))
    return {"links": len(links), "halo_land": int((sel["land"]["county"] != c).sum()),
            "halo_enterprises": int((sel["enterprises"]["county"] != c).sum())}


def _task_rate(i: int, idx: list[int], homed: list[str], scratch: str, out: str, year: int, scheme: str,
               *_deps) -> dict:
    """一企多地合并, apportioned figures and both ratings for county *i*; writes its outputs.

    ``idx``: county *i* and its neighbours in index order; ``homed``: the holders without an
    enterprise row whose land county *i* merges (:func:`spatial.partition.holder_homes`).
    Reads only the columns (and, for the figures, the rows) these steps use."""
    root = Path(scratch)
    own = _load(root, "land", [i])
    # the single process's link order (identity_code, uscc): sums per enterprise in the same order
    links = _load(root, "links", idx).sort_values(["identity_code", "uscc"], kind="stable", ignore_index=True)
    mine = _load(root, "enterprises", [i], ["uscc", "industry_code", "scale", "flags", "founded", "township",
                                            "county"])
    # 一企多地合并: all links of our enterprises, wherever their land is
    ent_links = links[_isin(links["uscc"], mine["uscc"]) | _isin(links["uscc"], homed)]
    land = _load(root, "land", idx, ["identity_code", "parcel_code", "area_m2"])
    # a holder is class II when anyone else is on its land: every link on those pieces
    on_pieces = links[_isin(links["identity_code"], ent_links["identity_code"])]
    ent_land = enterprise_land(on_pieces, land[_isin(land["identity_code"], on_pieces["identity_code"])])
    ent_land = ent_land[_isin(ent_land["uscc"], set(ent_links["uscc"]))].reset_index(drop=True)
    # figures on our land: every enterprise with a link on it (and those sharing its meters),
    # apportioned over all of that enterprise's links
    core_links = links[_isin(links["identity_code"], own["identity_code"])]
    metrics = _figures(root, idx, set(core_links["uscc"]), mine["uscc"])
    who = set(core_links["uscc"])
    meters = set(metrics.loc[_isin(metrics["uscc"], who), "meter_id"].dropna())
    who |= set(metrics.loc[_isin(metrics["meter_id"], meters), "uscc"])
    met = _metrics(metrics[_isin(metrics["uscc"], who)])
    pm = apportion_metrics(met, links[_isin(links["uscc"], who)])
    pm = pm[_isin(pm["identity_code"], own["identity_code"])].reset_index(drop=True)
    occupants = _load(root, "enterprises", idx, ["uscc", "industry_code", "scale"])
    er, pr = _ratings(mine, own, core_links, ent_land, pm, metrics[_isin(metrics["uscc"], mine["uscc"])],
                      _occupants(occupants), year, load_scheme(scheme))
    res = {"land": own, "links": core_links, "sublots": _load(root, "sublots", [i]), "enterprise_land": ent_land,
           "parcel_metrics": pm, "enterprise_ratings": er, "parcel_ratings": pr}
    for table, df in res.items():
        d = Path(out) / table
        d.mkdir(parents=True, exist_ok=True)
        _write(df, d / f"{i:05d}.parquet")
    return {t: len(df) for t, df in res.items()}


def _figures(root: Path, idx: list[int], who: set, mine: pd.Series) -> pd.DataFrame:
    """The figures (metrics rows) of counties ``idx`` the rate step can use, in index order:
    those of ``who`` and ``mine`` and of every enterprise sharing a meter with ``who`` (all the
    rows the step's own selections pick). Selected in Arrow: only those rows reach pandas."""
    import pyarrow.compute as pc

    t = pa.concat_tables([_table(root, "metrics", j) for j in idx], promote_options="permissive")
    uscc, meter = t.column("uscc").cast(pa.string()), t.column("meter_id").cast(pa.string())
    in_who = pc.is_in(uscc, value_set=pa.array(list(who), pa.string()))
    meters = pc.unique(pc.drop_null(pc.filter(meter, in_who)))
    sharing = pc.is_in(meter, value_set=meters)  # a null meter_id is no meter
    sharers = pc.unique(pc.filter(uscc, sharing))
    want = pc.or_(pc.or_(in_who, sharing), pc.or_(pc.is_in(uscc, value_set=sharers),
                                                 pc.is_in(uscc, value_set=pa.array(list(mine.dropna()), pa.string()))))
    return _frame(t.filter(want))


def run_province(path: str | Path, year: int, out: str | Path, *, scheduler: str | None = None,
                 workers: int | None = None, scheme: str = "zhejiang_default", tolerance_m: float = 30.0,
                 rule: str = "equal", scratch: str | Path | None = None, processes: bool = True,
                 progress: Callable[[CountyProgress], None] | None = None, client=None) -> ProvinceReport:
    """Run the province county by county on Dask; outputs under ``out/<table>/<county>.parquet``,
    each county's import-validation rejects under ``out/rejects/<county>.parquet``.

    ``scheduler``: address of a running Dask scheduler (``tcp://host:8786``); without it a
    ``LocalCluster`` of ``workers`` (default: one per core) single-threaded workers.
    ``progress`` is called with a :class:`CountyProgress` as each county finishes a stage.
    Raises ``ValueError`` (Chinese) for a malformed province directory.
    """
    from distributed import Client, LocalCluster, as_completed

    path, out = Path(path), Path(out)
    n = partitions(path)
    own_scratch = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="mujun_province_", dir=out.parent if out.parent.exists() else None)) \
        if own_scratch else Path(scratch)
    cluster = None
    if client is None:
        if scheduler:
            client = Client(scheduler)
        else:
            import os

            nw = workers or os.cpu_count() or 1
            cluster = LocalCluster(n_workers=nw, threads_per_worker=1, processes=processes,
                                   dashboard_address=None)
            client = Client(cluster)
        close = True
    else:
        close = False
    t0 = time.perf_counter()
    run = uuid.uuid4().hex[:8]  # task keys of this run only: a reused client must not return another run's

    def key(stage: str, i: int) -> str:
        return f"{stage}-{i}-{run}"

    rows: dict[str, int] = {}
    county: dict[int, str] = {}
    done = 0

    def finished(futures: dict) -> None:
        nonlocal done
        for fut in as_completed(futures):
            stage, i = futures[fut]
            result = fut.result()
            done += 1
            if stage == "prepare":
                county[i] = result["county"]
                result = result["rows"]
                for k in ("rejected", "warnings"):
                    rows[k] = rows.get(k, 0) + result[k]
            elif stage == "rate":
                for k, v in result.items():
                    rows[k] = rows.get(k, 0) + v
            if progress:
                progress(CountyProgress(i, county.get(i), stage, result, done, 3 * n))

    try:
        p, s = str(path), str(scratch)
        bounds = [client.submit(county_bounds, p, i, key=key("bounds", i)) for i in range(n)]
        crs = client.submit(province_crs, bounds, key=key("crs", 0))
        prep = {client.submit(_task_prepare, p, i, crs, s, str(out), key=key("prepare", i)): ("prepare", i)
                for i in range(n)}
        finished(prep)
        nb = client.submit(_neighbours, list(prep), tolerance_m, key=key("neighbours", 0)).result()
        del prep, bounds, crs
        idx = {i: sorted([i] + nb[i]) for i in range(n)}
        homed: dict[int, list[str]] = {i: [] for i in range(n)}
        for h, j in nb["homes"].items():
            homed[j].append(h)
        match = {i: client.submit(_task_match, i, idx[i], nb["zone"][i], s, tolerance_m, rule, key=key("match", i))
                 for i in range(n)}
        # a county's rate task waits only for the match tasks of the counties it reads
        rate = {i: client.submit(_task_rate, i, idx[i], homed[i], s, str(out), year, scheme,
                                 *[match[j] for j in idx[i]], key=key("rate", i)) for i in range(n)}
        finished({**{f: ("match", i) for i, f in match.items()}, **{f: ("rate", i) for i, f in rate.items()}})
        nw = len(client.scheduler_info()["workers"])
    finally:
        if close:
            client.close()
            if cluster is not None:
                cluster.close()
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return ProvinceReport(counties=n, year=year, workers=nw, seconds=round(time.perf_counter() - t0, 2),
                          rows=rows, out=out)


def read_outputs(out: str | Path) -> dict[str, pd.DataFrame]:
    """The outputs of :func:`run_province`, each table whole, in the canonical order; with
    ``rejects`` (county by county) when the run wrote them."""
    res = {}
    for table in OUTPUTS + ((REJECTS,) if (Path(out) / REJECTS).is_dir() else ()):
        files = sorted((Path(out) / table).glob("*.parquet"))
        frames = []
        for f in files:
            meta = pq.read_schema(f).metadata or {}
            frames.append(gpd.read_parquet(f) if b"geo" in meta else pd.read_parquet(f))
        res[table] = pd.concat(frames, ignore_index=True)
    return _canonical(res)


_KEYS = {"land": ["identity_code"], "links": ["identity_code", "uscc"], "sublots": ["identity_code", "uscc"],
         "enterprise_land": ["uscc"], "parcel_metrics": ["identity_code", "year"],
         "enterprise_ratings": ["subject_id", "list_name"], "parcel_ratings": ["subject_id", "list_name"],
         REJECTS: []}  # rejects stay county by county, in each county's order


def _canonical(res: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each table sorted by its key, index reset, attrs dropped: comparable row for row."""
    out = {}
    for t, df in res.items():
        df = df.copy()
        df.attrs = {}
        keys = [k for k in _KEYS[t] if k in df.columns]
        out[t] = df.sort_values(keys, kind="stable", ignore_index=True) if keys else df.reset_index(drop=True)
    return out
