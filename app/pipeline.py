"""``mujun match``: 地企对应, 多企共地分割, 一企多地合并 over what is in the database.

Reads land, enterprises, buildings, leases, corrections and metrics from PostGIS, runs the pure
``spatial`` pipeline in the data's Gauss-Krüger zone, and replaces the derived tables
(``land_links``, ``sublots``, ``enterprise_land``, ``parcel_metrics``) in one transaction.
Manual corrections (纠偏) live in their own table and are applied inside the pipeline, so a
re-run never loses them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa

from app import db, store
from app.ingest import _multi
from app.models import METRIC_COLUMNS, SRID
from app.settings import Settings, get_settings
from spatial.apportion import apportion_metrics, enterprise_land
from spatial.crs import metric_crs_for
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


def load_inputs(conn: sa.Connection) -> dict[str, pd.DataFrame]:
    """Everything the pipeline reads, in EPSG:4490 as stored."""
    land = store.read_frame(conn, """
        SELECT identity_code, kind, parcel_code, source_parcel_code, parent_identity_code, owner_uscc,
               owner_name, user_uscc, township, land_use, area_m2, area_mu, ST_AsBinary(geom) AS geom
        FROM parcels ORDER BY identity_code""", geom_col="geom")
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
    return {"land": land, "enterprises": enterprises, "buildings": buildings, "leases": leases,
            "corrections": corrections, "metrics": metrics}


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
        data = load_inputs(conn)
    step("load")
    land = data["land"]
    if len(land) == 0:
        raise ValueError("no land in the database: run `mujun import BUNDLE_DIR` first")
    metric = metric_crs_for(land)
    land_m = land.to_crs(metric)
    ent_m = data["enterprises"].to_crs(metric)
    bld_m = data["buildings"].to_crs(metric) if len(data["buildings"]) else None
    leases = data["leases"] if len(data["leases"]) else None
    corrections = data["corrections"] if len(data["corrections"]) else None

    links = match_enterprises(land_m, ent_m, buildings=bld_m, leases=leases, corrections=corrections,
                              snap_tolerance_m=settings.snap_tolerance_m)
    not_applied = {"unplaced_leases": links.attrs.get("unplaced_leases", pd.DataFrame()),
                   "unapplied_corrections": links.attrs.get("unapplied_corrections", pd.DataFrame())}
    step("match")
    links = split_shares(links, land_m, buildings=bld_m, leases=leases, rule=rule)
    step("split")
    subs = sublot_geometries(land_m, links)
    step("sublots")
    ent_land = enterprise_land(links, land_m)
    parcel_metrics = apportion_metrics(data["metrics"], links) if len(data["metrics"]) else pd.DataFrame()
    # Figures of enterprises with no land come back with no identity code (totals conserved);
    # they are in the quality report's "no land" list, and belong to no parcel.
    landless = parcel_metrics["identity_code"].isna() if len(parcel_metrics) else pd.Series(dtype=bool)
    parcel_metrics = parcel_metrics[~landless] if len(parcel_metrics) else parcel_metrics
    step("apportion")
    quality = land_quality_report(land_m, ent_m, links) | not_applied
    step("quality")

    subs = subs.to_crs(SRID)
    subs = gpd.GeoDataFrame(subs.drop(columns="geometry"), geometry=_multi(subs.geometry), crs=SRID)
    with engine.begin() as conn:
        store.replace_all(conn, "land_links", links)
        store.replace_all(conn, "sublots", subs, geom_col="geom")
        store.replace_all(conn, "enterprise_land", ent_land)
        store.replace_all(conn, "parcel_metrics", parcel_metrics)
        db.bump_data_version(conn)
        db.audit(conn, "cli", "match", details={"links": len(links), "rule": rule})
    step("store")

    report = MatchReport(
        links=len(links), sublots=len(subs), enterprises_with_land=len(ent_land),
        parcel_metric_rows=len(parcel_metrics),
        quality={k: len(v) for k, v in quality.items()}, seconds=seconds,
    )
    report.report_path = _write_quality(quality, settings)
    return report


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
