"""``mujun run --province``: a province (or several) on Dask, one county per task.

Input: a GeoParquet province as ``mujun sample --fmt parquet`` writes it (and as a province
bureau collects county deliveries): ``parcels``, ``defacto``, ``buildings`` (WKB, EPSG:4490),
``enterprises`` (lon/lat + coord_sys), ``metrics``, ``leases``, ``corrections`` (Parquet), one
row group per county — row group *i* of every file is county *i*.

One Dask graph (``dask.distributed``; a ``LocalCluster`` with one worker per core unless a
scheduler address is given), four tasks per county:

1. ``bounds``  — the county's extent (EPSG:4490), for the province's metric CRS;
2. ``prepare`` — read the county's row group, project to the province's Gauss-Krüger zone,
   build its land and 宗地身份码 (:func:`spatial.identity.build_land`, the county's code);
3. ``match``   — its land + halo (:mod:`spatial.partition`): 地企对应, 多企共地分割, sub-lots;
   keeps the links on its own land;
4. ``rate``    — 一企多地合并 for its enterprises, apportioned figures for its land, and the
   dual rating of both (ranking within county and industry group, as the schemes say).

Tasks pass data through a scratch directory of GeoParquet files (one per county and stage),
never through the scheduler: a worker holds one county and its halo at a time, and its peak is
bounded by the largest county (plus the rows of its neighbours within the halo), not the
province.  With a remote scheduler the scratch and output directories must be on a filesystem
every worker sees.

:func:`run_single` runs the same steps on the whole province in one process: the reference the
partitioned run must equal exactly (tests/test_dask_province.py).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import shapely

from app.models import METRIC_COLUMNS
from scoring import evaluate, load_scheme
from spatial.apportion import apportion_metrics, enterprise_land
from spatial.crs import metric_crs_for, normalize_coord_sys, to_cgcs2000
from spatial.identity import build_land
from spatial.match import match_enterprises
from spatial.partition import county_keys, halo, holder_homes, neighbours
from spatial.split import split_shares, sublot_geometries

__all__ = ["run_province", "run_single", "ProvinceReport", "OUTPUTS"]

ROLES = ("parcels", "defacto", "buildings", "enterprises", "metrics", "leases", "corrections")
#: Output tables (one Parquet file per county under ``OUT/<table>/``).
OUTPUTS = ("land", "links", "sublots", "enterprise_land", "parcel_metrics", "enterprise_ratings", "parcel_ratings")
_RATING_COLUMNS = ["subject_id", "county", "list_name", "group", "evaluated", "excluded_reason", "score", "rank",
                   "rank_n", "percentile", "band_grade", "grade"]


@dataclass
class ProvinceReport:
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
    g = gpd.GeoDataFrame(df.drop(columns="geometry"), geometry=shapely.from_wkb(df["geometry"].to_numpy()),
                         crs=4490)
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


def read_county(path: str | Path, i: int, crs) -> dict[str, pd.DataFrame]:
    """County *i* of the province, projected to ``crs``, each frame with a ``county`` column
    (the 6-digit code of its parcels)."""
    path = Path(path)
    raw = {role: _read(path, role, i) for role in ROLES}
    codes = raw["parcels"]["parcel_code"].dropna().astype(str).str[:6]
    county = codes.mode().iloc[0] if len(codes) else f"{i:06d}"
    out = {role: _geo(raw[role], crs) for role in ("parcels", "defacto", "buildings")}
    out["enterprises"] = _points(raw["enterprises"], crs)
    for role in ("metrics", "leases", "corrections"):
        out[role] = raw[role]
    return {role: df.assign(county=county) for role, df in out.items()}


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
def _land(data: dict[str, pd.DataFrame]) -> gpd.GeoDataFrame:
    county = data["parcels"]["county"].iloc[0] if len(data["parcels"]) else None
    land = build_land(data["parcels"], data["defacto"], county_code=county)
    return land.assign(county=county)


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

    occ = links.sort_values(["identity_code", "share", "uscc"], ascending=[True, False, True], na_position="last")
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
            out.append(pd.DataFrame(columns=_RATING_COLUMNS))
            continue
        r = evaluate(subjects, sch, year, kind=kind, explain=False)
        r["county"] = subjects["county"].to_numpy()
        out.append(r[_RATING_COLUMNS].reset_index(drop=True))
    return out[0], out[1]


def _occupants(ents: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(ents[["uscc", "industry_code", "scale"]])


# -- single process --------------------------------------------------------------------------------
def run_single(path: str | Path, year: int, *, scheme: str = "zhejiang_default", tolerance_m: float = 30.0,
               rule: str = "equal") -> dict[str, pd.DataFrame]:
    """The whole province in this process: the reference for :func:`run_province`.

    Land is built county by county (an independent de-facto piece carries its county's code, as
    an import of that county's bundle gives it); matching, splitting and apportioning run on the
    whole province at once; ratings rank within county (and industry group)."""
    path = Path(path)
    n = partitions(path)
    crs = province_crs([county_bounds(path, i) for i in range(n)])
    parts = [read_county(path, i, crs) for i in range(n)]
    land = pd.concat([_land(d) for d in parts], ignore_index=True)
    land = gpd.GeoDataFrame(land, geometry="geometry", crs=crs)
    cat = {r: pd.concat([d[r] for d in parts], ignore_index=True) for r in ROLES}
    ents = gpd.GeoDataFrame(cat["enterprises"], geometry="geometry", crs=crs)
    bld = gpd.GeoDataFrame(cat["buildings"], geometry="geometry", crs=crs)
    links = _match(land, ents, bld, cat["leases"], cat["corrections"], tolerance_m, rule)
    subs = sublot_geometries(land, links)
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
                       "parcel_ratings": pd.concat(pr, ignore_index=True)})


# -- partitioned (Dask) ----------------------------------------------------------------------------
def _scratch(root: Path, stage: str, i: int) -> Path:
    d = root / stage
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{i:05d}.parquet"


def _write(df: pd.DataFrame, f: Path) -> None:
    if isinstance(df, gpd.GeoDataFrame):
        df.to_parquet(f, index=False)
    else:
        pd.DataFrame(df).to_parquet(f, index=False)


def _load(root: Path, stage: str, idx: list[int]) -> pd.DataFrame:
    frames = []
    for i in idx:
        f = _scratch(root, stage, i)
        meta = pq.read_schema(f).metadata or {}
        frames.append(gpd.read_parquet(f) if b"geo" in meta else pd.read_parquet(f))
    out = pd.concat(frames, ignore_index=True)
    if any(isinstance(f, gpd.GeoDataFrame) for f in frames):
        out = gpd.GeoDataFrame(out, geometry="geometry", crs=frames[0].crs)
    return out


def _task_prepare(path: str, i: int, crs, scratch: str) -> dict:
    """Read county *i*, build its land; write both to the scratch; return its keys and bounds."""
    root = Path(scratch)
    data = read_county(path, i, crs)
    land = _land(data)
    _write(land, _scratch(root, "land", i))
    for role in ("enterprises", "buildings", "metrics", "leases", "corrections"):
        _write(data[role], _scratch(root, role, i))
    geoms = np.concatenate([land.geometry.values, data["buildings"].geometry.values,
                            data["enterprises"].geometry.values])
    geoms = geoms[~shapely.is_missing(geoms)]
    return {"i": i, "county": land["county"].iloc[0] if len(land) else data["parcels"]["county"].iloc[0],
            "bounds": tuple(shapely.total_bounds(geoms).tolist()),
            "keys": county_keys(land, data["enterprises"], data["leases"], data["corrections"])}


def _neighbours(prepared: list[dict], tol: float) -> dict:
    """Per county index: the indices its tasks read; ``homes``: holder → county index."""
    by = {p["county"]: p for p in prepared}
    keys = {c: p["keys"] for c, p in by.items()}
    nb = neighbours({c: p["bounds"] for c, p in by.items()}, keys, tol)
    out = {by[c]["i"]: [by[d]["i"] for d in ds] for c, ds in nb.items()}
    out["homes"] = {h: by[c]["i"] for h, c in holder_homes(keys).items()}
    return out


def _task_match(i: int, nb: dict[int, list[int]], scratch: str, tol: float, rule: str, *_deps) -> int:
    """地企对应 and 多企共地分割 for the land of county *i* (its land + halo in memory)."""
    root = Path(scratch)
    idx = sorted([i] + nb[i])  # the single process's county order: the same sums in the same order
    land = _load(root, "land", idx)
    own = _load(root, "land", [i])
    c = own["county"].iloc[0] if len(own) else None
    sel = halo(c, land, _load(root, "enterprises", idx), _load(root, "buildings", idx),
               _load(root, "leases", idx), _load(root, "corrections", idx), tolerance_m=tol)
    links = _match(sel["land"].reset_index(drop=True), sel["enterprises"].reset_index(drop=True),
                   sel["buildings"].reset_index(drop=True), sel["leases"].reset_index(drop=True),
                   sel["corrections"].reset_index(drop=True), tol, rule)
    links = links[links["identity_code"].isin(own["identity_code"])].reset_index(drop=True).assign(county=c)
    _write(links, _scratch(root, "links", i))
    _write(sublot_geometries(own, links), _scratch(root, "sublots", i))
    return len(links)


def _task_rate(i: int, nb: dict[int, list[int]], scratch: str, out: str, year: int, scheme: str, *_deps) -> dict:
    """一企多地合并, apportioned figures and both ratings for county *i*; writes its outputs."""
    root = Path(scratch)
    idx = sorted([i] + nb[i])  # the single process's county order: the same sums in the same order
    own = _load(root, "land", [i])
    ents = _load(root, "enterprises", idx)
    # the single process's link order (identity_code, uscc): sums per enterprise in the same order
    links = _load(root, "links", idx).sort_values(["identity_code", "uscc"], kind="stable", ignore_index=True)
    mine = _load(root, "enterprises", [i])
    # 一企多地合并: all links of our enterprises, wherever their land is
    homed = [h for h, j in nb["homes"].items() if j == i]
    ent_links = links[links["uscc"].isin(mine["uscc"]) | links["uscc"].isin(homed)]
    land = _load(root, "land", idx)
    # a holder is class II when anyone else is on its land: every link on those pieces
    on_pieces = links[links["identity_code"].isin(ent_links["identity_code"])]
    ent_land = enterprise_land(on_pieces, land[land["identity_code"].isin(on_pieces["identity_code"])])
    ent_land = ent_land[ent_land["uscc"].isin(set(ent_links["uscc"]))].reset_index(drop=True)
    # figures on our land: every enterprise with a link on it (and those sharing its meters),
    # apportioned over all of that enterprise's links
    core_links = links[links["identity_code"].isin(own["identity_code"])]
    metrics = _load(root, "metrics", idx)
    who = set(core_links["uscc"])
    meters = set(metrics.loc[metrics["uscc"].isin(who), "meter_id"].dropna())
    who |= set(metrics.loc[metrics["meter_id"].isin(meters), "uscc"])
    met = _metrics(metrics[metrics["uscc"].isin(who)])
    pm = apportion_metrics(met, links[links["uscc"].isin(who)])
    pm = pm[pm["identity_code"].isin(own["identity_code"])].reset_index(drop=True)
    er, pr = _ratings(mine, own, core_links, ent_land, pm, metrics[metrics["uscc"].isin(mine["uscc"])],
                      _occupants(ents), year, load_scheme(scheme))
    res = {"land": own, "links": core_links, "sublots": _load(root, "sublots", [i]), "enterprise_land": ent_land,
           "parcel_metrics": pm, "enterprise_ratings": er, "parcel_ratings": pr}
    for table, df in res.items():
        d = Path(out) / table
        d.mkdir(parents=True, exist_ok=True)
        _write(df, d / f"{i:05d}.parquet")
    return {t: len(df) for t, df in res.items()}


def run_province(path: str | Path, year: int, out: str | Path, *, scheduler: str | None = None,
                 workers: int | None = None, scheme: str = "zhejiang_default", tolerance_m: float = 30.0,
                 rule: str = "equal", scratch: str | Path | None = None, processes: bool = True,
                 progress: Callable[[str, str], None] | None = None, client=None) -> ProvinceReport:
    """Run the province county by county on Dask; outputs under ``out/<table>/<county>.parquet``.

    ``scheduler``: address of a running Dask scheduler (``tcp://host:8786``); without it a
    ``LocalCluster`` of ``workers`` (default: one per core) single-threaded workers.
    ``progress(county, stage)`` is called as each county finishes a stage.
    Raises ``ValueError`` (Chinese) for a malformed province directory.
    """
    from distributed import Client, LocalCluster, as_completed
    from dask import delayed

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
    try:
        p, s = str(path), str(scratch)
        bounds = [delayed(county_bounds, pure=True)(p, i, dask_key_name=f"bounds-{i}") for i in range(n)]
        crs = delayed(province_crs)(bounds, dask_key_name="crs")
        prep = [delayed(_task_prepare)(p, i, crs, s, dask_key_name=f"prepare-{i}") for i in range(n)]
        nb = delayed(_neighbours)(prep, tolerance_m, dask_key_name="neighbours")
        match = [delayed(_task_match)(i, nb, s, tolerance_m, rule, *prep, dask_key_name=f"match-{i}")
                 for i in range(n)]
        rate = [delayed(_task_rate)(i, nb, s, str(out), year, scheme, *match, dask_key_name=f"rate-{i}")
                for i in range(n)]
        futures = client.compute(prep + match + rate)
        rows: dict[str, int] = {}
        for fut in as_completed(futures):
            stage, i = fut.key.rsplit("-", 1) if isinstance(fut.key, str) else (str(fut.key), "0")
            result = fut.result()
            if stage == "rate":
                for k, v in result.items():
                    rows[k] = rows.get(k, 0) + v
            if progress:
                progress(i, stage)
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
    """The outputs of :func:`run_province`, each table whole, in the canonical order."""
    res = {}
    for table in OUTPUTS:
        files = sorted((Path(out) / table).glob("*.parquet"))
        frames = []
        for f in files:
            meta = pq.read_schema(f).metadata or {}
            frames.append(gpd.read_parquet(f) if b"geo" in meta else pd.read_parquet(f))
        res[table] = pd.concat(frames, ignore_index=True)
    return _canonical(res)


_KEYS = {"land": ["identity_code"], "links": ["identity_code", "uscc"], "sublots": ["identity_code", "uscc"],
         "enterprise_land": ["uscc"], "parcel_metrics": ["identity_code", "year"],
         "enterprise_ratings": ["subject_id", "list_name"], "parcel_ratings": ["subject_id", "list_name"]}


def _canonical(res: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each table sorted by its key, index reset, attrs dropped: comparable row for row."""
    out = {}
    for t, df in res.items():
        df = df.copy()
        df.attrs = {}
        keys = [k for k in _KEYS[t] if k in df.columns]
        out[t] = df.sort_values(keys, kind="stable", ignore_index=True) if keys else df.reset_index(drop=True)
    return out
