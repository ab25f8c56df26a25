"""``mujun match``: 地企对应, 多企共地分割, 一企多地合并 over what is in the database.

Reads land, enterprises, buildings, leases, corrections and metrics from PostGIS, runs the pure
``spatial`` pipeline in the data's Gauss-Krüger zone, and replaces the derived tables
(``land_links``, ``sublots``, ``enterprise_land``, ``parcel_metrics``) in one transaction.
Manual corrections (纠偏) live in their own table and are applied inside the pipeline, so a
re-run never loses them.

Every year reads its own land (issue 10): the derived tables are computed per *land-year* —
each year that has metrics or a land delivery — on the land valid in that year
(:func:`app.api.layers.land_in_year_sql`), so a 2025 delivery leaves 2024's links, sub-lots and
apportioned figures exactly as they were. Years whose land is the same set of versions share
one matching (it depends only on the land, enterprises, buildings, leases and corrections);
only the apportionment of figures is per year. A correction naming land split or merged since
is carried to its heirs (:func:`spatial.lineage.carry_corrections`).

A database written by a province run (``mujun run --province … --db``) holds many counties
(``parcels.county``): matching runs over all of them at once, as the province run's
single-process reference (:func:`app.province.run_single`) does, in its CRS (the zone of the
province's centre, :func:`app.province.province_crs`) — an enterprise near a border is matched
against both counties' land — and each county's sub-lots are measured (面积) in its own
Gauss-Krüger zone, as the province run and the county's import measure them
(:func:`app.province._sublots`); land areas are the stored ones (each county's zone). The
province write stores the buildings, leases and 纠偏 the run matched with, so re-matching a
province database after a 纠偏 gives the run's links, shares, sub-lots, merged land
and apportioned figures (tests/test_province_rematch.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa

from app import db, store
from app.api.layers import land_in_year_sql
from app.ingest import _multi
from app.models import METRIC_COLUMNS, SRID
from app.settings import Settings, get_settings
from spatial.apportion import apportion_metrics, enterprise_land
from spatial.crs import metric_crs_for
from spatial.lineage import carry_corrections
from spatial.match import land_quality_report, match_enterprises
from spatial.split import split_shares, sublot_geometries


@dataclass
class MatchReport:
    links: int
    sublots: int
    enterprises_with_land: int
    parcel_metric_rows: int
    quality: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None
    #: land-years matched, each with the year whose land it shares (itself when matched anew)
    years: dict[int, int] = field(default_factory=dict)


def land_years(conn: sa.Connection) -> list[int]:
    """Years that get derived data: every year with metrics or a land delivery (or, with
    neither, the current land's year)."""
    years = set(conn.execute(sa.text(
        "SELECT year FROM metrics UNION SELECT land_year FROM import_batches WHERE status = 'loaded' "
        "AND land_year IS NOT NULL UNION SELECT valid_from FROM parcels")).scalars())
    return sorted(y for y in years if y)  # 0 = undated rows: not a year of their own


def load_land(conn: sa.Connection, year: int | None) -> gpd.GeoDataFrame:
    """The land valid in ``year`` (None: current), EPSG:4490, with each version's id."""
    return store.read_frame(conn, f"""
        SELECT version_id, identity_code, kind, parcel_code, source_parcel_code, parent_identity_code, owner_uscc,
               owner_name, user_uscc, township, county, land_use, area_m2, area_mu, ST_AsBinary(geom) AS geom
        FROM {land_in_year_sql()} p ORDER BY identity_code""", {"year": year}, geom_col="geom")


def load_inputs(conn: sa.Connection, year: int | None = None) -> dict[str, pd.DataFrame]:
    """Everything the pipeline reads for the land of ``year`` (None: current), EPSG:4490."""
    land = load_land(conn, year)
    enterprises = store.read_frame(conn, """
        SELECT uscc, name, industry_code, scale, township, flags, ST_AsBinary(geom) AS geom
        FROM enterprises ORDER BY uscc""", geom_col="geom")
    buildings = store.read_frame(conn, """
        SELECT building_id, parcel_code, floors, floor_area_m2, ST_AsBinary(geom) AS geom
        FROM buildings ORDER BY building_id""", geom_col="geom")
    leases = store.read_frame(conn, """
        SELECT tenant_uscc, parcel_code, landlord_uscc, floor_area_m2, land_area_m2
        FROM leases ORDER BY lease_key""")
    corrections = store.read_frame(conn, """
        SELECT uscc, parcel_code, action, share, reason, by FROM link_corrections ORDER BY id""")
    metrics = store.read_frame(conn, f"""
        SELECT uscc, year, {', '.join(METRIC_COLUMNS)}, meter_id FROM metrics ORDER BY uscc, year""")
    lineage = store.read_frame(conn, "SELECT year, parent_code, child_code, kind FROM land_lineage ORDER BY id")
    return {"land": land, "enterprises": enterprises, "buildings": buildings, "leases": leases,
            "corrections": corrections, "metrics": metrics, "lineage": lineage}


def run_matching(engine: sa.Engine, *, rule: str = "equal", settings: Settings | None = None,
                 progress=None) -> MatchReport:
    """Match, split and apportion; replace the derived tables atomically.

    >>> report = run_matching(db.engine())      # doctest: +SKIP
    >>> report.links                            # doctest: +SKIP
    18342
    """
    settings = settings or get_settings()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    def step(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        seconds[name] = round(now - t0, 3)
        t0 = now
        if progress:
            progress(name)

    with engine.connect() as conn:
        years = land_years(conn)
        data = load_inputs(conn, years[-1] if years else None)
        # one matching per distinct land (set of versions); years sharing it reuse it, so the
        # geometry of each distinct land is read once
        groups: dict[tuple, list[int]] = {}
        for y in years:
            ids = conn.execute(sa.text(f"SELECT version_id FROM {land_in_year_sql()} p ORDER BY version_id"),
                               {"year": y}).scalars().all()
            groups.setdefault(tuple(ids), []).append(y)
        lands = {members[-1]: (data["land"] if members[-1] == years[-1] else load_land(conn, members[-1]))
                 for members in groups.values()}
    step("load")
    if len(data["land"]) == 0:
        raise ValueError("no land in the database: run `mujun import BUNDLE_DIR` first")
    results, quality, shared = [], {}, {}
    for members in groups.values():
        land_year = members[-1]
        if len(lands[land_year]) == 0:  # every piece retired: nothing to match that year
            continue
        out = _match_land(lands[land_year], data, land_year, rule, settings)
        for y in members:
            shared[y] = land_year
            met = data["metrics"][data["metrics"]["year"] == y]
            pm = apportion_metrics(met, out["links"]) if len(met) else pd.DataFrame()
            # Figures of enterprises with no land come back with no identity code (totals
            # conserved); they are in the quality report's "no land" list, and belong to no parcel.
            if len(pm):
                pm = pm[pm["identity_code"].notna()]
            results.append((y, out, pm))
        quality = out["quality"]  # the newest land's report (groups come in year order)
    step("match")
    if not results:  # land but no year at all cannot happen (land has valid_from); be explicit
        raise ValueError("no land-year to match: import a bundle first")

    from app import render  # keeps the pre-built tiles and features current (links change no tile)

    with render.changes(engine, settings=settings), engine.begin() as conn:
        frames = {k: [] for k in ("land_links", "sublots", "enterprise_land", "parcel_metrics")}
        for y, out, pm in results:
            frames["land_links"].append(out["links"].assign(year=y))
            frames["sublots"].append(out["sublots"].assign(year=y))
            frames["enterprise_land"].append(out["enterprise_land"].assign(year=y))
            if len(pm):
                frames["parcel_metrics"].append(pm)
        for table, parts in frames.items():
            for part in parts:
                part.attrs = {}  # report frames ride on .attrs; concat would compare them
            df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            if table == "sublots" and len(df):
                df = gpd.GeoDataFrame(df, geometry="geometry", crs=SRID)
                store.replace_all(conn, table, df, geom_col="geom")
            else:
                store.replace_all(conn, table, df)
        db.bump_data_version(conn)
        db.audit(conn, "cli", "match", details={"links": len(results[-1][1]["links"]), "rule": rule,
                                                 "years": years})
    step("store")
    links, subs, ent_land = results[-1][1]["links"], results[-1][1]["sublots"], results[-1][1]["enterprise_land"]
    parcel_metrics = pd.concat([pm for _, _, pm in results if len(pm)], ignore_index=True) \
        if any(len(pm) for _, _, pm in results) else pd.DataFrame()

    report = MatchReport(
        links=len(links), sublots=len(subs), enterprises_with_land=len(ent_land),
        parcel_metric_rows=len(parcel_metrics),
        quality={k: len(v) for k, v in quality.items()}, seconds=seconds,
    )
    report.years = shared
    report.report_path = _write_quality(quality, settings)
    return report


def _match_land(land: gpd.GeoDataFrame, data: dict, year: int, rule: str, settings: Settings) -> dict:
    """地企对应, 多企共地分割, 一企多地合并 on one land (the land of ``year``)."""
    metric = _metric_crs(land)
    land_m = land.drop(columns=["version_id", "county"]).to_crs(metric)
    ent_m = data["enterprises"].to_crs(metric)
    bld_m = data["buildings"].to_crs(metric) if len(data["buildings"]) else None
    leases = data["leases"] if len(data["leases"]) else None
    lineage = data["lineage"]
    lineage = lineage[lineage["year"] <= year] if len(lineage) else lineage
    corrections, ambiguous = carry_corrections(data["corrections"], land, lineage)
    corrections = corrections if corrections is not None and len(corrections) else None

    links = match_enterprises(land_m, ent_m, buildings=bld_m, leases=leases, corrections=corrections,
                              snap_tolerance_m=settings.snap_tolerance_m)
    unapplied = links.attrs.get("unapplied_corrections", pd.DataFrame())
    if len(ambiguous):
        unapplied = pd.concat([unapplied, ambiguous], ignore_index=True)
    not_applied = {"unplaced_leases": links.attrs.get("unplaced_leases", pd.DataFrame()),
                   "unapplied_corrections": unapplied}
    links = split_shares(links, land_m, buildings=bld_m, leases=leases, rule=rule)
    subs = _sublots(land, land_m, links)
    ent_land = enterprise_land(links, land_m)
    quality = land_quality_report(land_m, ent_m, links) | not_applied
    subs = subs.to_crs(SRID)
    subs = gpd.GeoDataFrame(subs.drop(columns="geometry"), geometry=_multi(subs.geometry), crs=SRID)
    return {"links": links, "sublots": subs, "enterprise_land": ent_land, "quality": quality}


def _registered(land: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The registered parcels of ``land`` (what the province run chooses zones by), else all of it."""
    reg = land[(land["kind"] == "registered").to_numpy()]
    return reg if len(reg) else land


def _metric_crs(land: gpd.GeoDataFrame):
    """Where distances and shares are computed: the land's Gauss-Krüger zone; for a province
    database (land with a county) the province run's (:func:`app.province.province_crs`: the zone
    of the centre of its registered parcels)."""
    if land["county"].isna().all():
        return metric_crs_for(land)
    from app.province import province_crs

    return province_crs([tuple(_registered(land).total_bounds)])


def _sublots(land: gpd.GeoDataFrame, land_m: gpd.GeoDataFrame, links: pd.DataFrame) -> gpd.GeoDataFrame:
    """Sub-lot outlines in ``land_m``'s CRS, each county's measured in its own Gauss-Krüger zone
    (the zone of its registered land, as the province run's ``prepare`` step chooses it); land
    without a county (a county import's) in ``land_m``'s CRS, as before."""
    from app.province import _sublots as measured_in_zone  # the province run's step

    county = land["county"].to_numpy(dtype=object)
    if pd.isna(county).all():
        return sublot_geometries(land_m, links)
    parts = []
    for code in [None, *sorted({c for c in county if not pd.isna(c)})]:
        mine = pd.isna(county) if code is None else county == code
        if not mine.any():
            continue
        own = land_m[mine]
        own_links = links[links["identity_code"].isin(own["identity_code"])]
        if code is None:
            parts.append(sublot_geometries(own, own_links))
            continue
        parts.append(measured_in_zone(own, own_links, metric_crs_for(_registered(land[mine]))))
    parts = [p for p in parts if len(p)]
    if not parts:  # no link: nothing to cut
        return sublot_geometries(land_m, links)
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=land_m.crs)


def _write_quality(quality: dict[str, pd.DataFrame], settings: Settings) -> Path:
    """The data-quality lists (no land, idle land, crowded land, weak links) as one workbook."""
    out = settings.data_dir / "reports"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "match_quality.xlsx"
    with pd.ExcelWriter(path) as xl:
        for name, df in quality.items():
            frame = pd.DataFrame(df.drop(columns="geometry", errors="ignore"))
            frame.to_excel(xl, sheet_name=name[:31], index=False)
    return path
