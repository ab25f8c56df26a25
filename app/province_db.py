"""``mujun run --province … --db``: a province run (:func:`app.province.run_province`) written into
PostGIS, so that the service's layers, tiles and archives show the province's land and grades.

One evaluation run (``evaluation_runs``) for the province run, then one transaction per county:
its land as land versions of the year (``parcels``: a piece whose content is unchanged keeps its
version, a changed one gets a new version from the year, as a land delivery does), the year's
links, sub-lots, merged land and apportioned figures (replaced for that county's land and
enterprises), its enterprises and metrics from the province input (upserted), and both ratings of
the run. Every table is written with ``COPY`` (psycopg 3 ``cursor.copy``); the per-year tables
get the year's partitions first (migration 0007), so the rows go straight into them.

A county that fails rolls back alone (the counties before it stay written, the run is marked
``failed``); writing the same run again replaces each county's rows of the year and leaves its
unchanged land as it was.

Ratings carry what the province run computes (list, industry group, score, rank, percentile, band
and grade; ``idle`` and 亩均税收 recomputed here from the run's links and figures as
:mod:`app.evaluation` does). Not written: colour, explanations (the province run evaluates with
``explain=False``) and the multi-year results (consecutive D years, 差别电价, 低产田).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from app import db, store
from app.evaluation import _scheme_json, _tax_per_mu, publish_run
from app.ingest import _multi
from app.models import METRIC_COLUMNS, SRID, evaluation_runs
from app.province import OUTPUTS, _points
from scoring import load_scheme, scheme_hash

__all__ = ["write_province", "ProvinceWrite"]

#: ``parcels`` columns a province run gives (besides ``geom``); their equality means "same land".
_LAND = ["identity_code", "kind", "parcel_code", "source_parcel_code", "parent_identity_code", "owner_uscc",
         "owner_name", "user_uscc", "land_use", "township", "registered_area_m2", "area_m2", "area_mu", "note"]
_LINKS = ["year", "identity_code", "uscc", "parcel_code", "role", "method", "confidence", "distance_m", "share",
          "attributed_area_m2", "attributed_area_mu"]
_ENT_LAND = ["year", "uscc", "land_area_m2", "land_area_mu", "parcel_count", "land_class"]
_ENTERPRISES = ["uscc", "name", "industry_code", "scale", "township", "address", "founded", "flags", "coord_sys",
                "lon_src", "lat_src", "geom"]
_RATINGS = ["run_id", "year", "list_name", "industry_group", "evaluated", "excluded_reason", "score", "rank",
            "percentile", "band_grade", "grade", "tax_per_mu"]


@dataclass
class ProvinceWrite:
    """What was written: the run, and rows per table (``parcels``: new land versions); ``seconds``
    of the write, publishing not included."""
    run_id: int
    year: int
    counties: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)


def write_province(engine: sa.Engine, out: str | Path, province: str | Path, year: int, *,
                   scheme: str = "zhejiang_default", publish: bool = False,
                   progress: Callable[[str], None] | None = None) -> ProvinceWrite:
    """Write the outputs of a province run (``out``, as :func:`app.province.run_province` left
    them) for ``year`` into the database, with the enterprises and metrics of its input
    ``province`` (the GeoParquet directory the run read); ``publish`` makes the new run the one
    shown for the year.

    ``progress(text)`` gets one line (Chinese) per county written.
    Raises ``ValueError`` (Chinese) when ``out`` holds no run, or the county files disagree.
    """
    out, province = Path(out), Path(province)
    counties = sorted(f.stem for f in (out / "land").glob("*.parquet"))
    if not counties:
        raise ValueError(f"{out} 中没有全省运行结果 (no province run outputs): 先运行 mujun run --province … --out {out}")
    missing = [f"{t}/{c}.parquet" for t in OUTPUTS for c in counties if not (out / t / f"{c}.parquet").exists()]
    if missing:
        raise ValueError(f"全省运行结果不完整 (incomplete outputs)：缺少 {', '.join(missing[:5])}")
    sch = load_scheme(scheme)
    inputs_fp = _fingerprint(province, out)
    run_hash = hashlib.sha256(f"{scheme_hash(sch)}|{year}|{inputs_fp}|province".encode()).hexdigest()
    t0 = time.perf_counter()
    with engine.begin() as conn:
        store.ensure_year_partitions(conn, [year])  # DDL once, before the counties' transactions
        run_id = conn.execute(evaluation_runs.insert().values(
            year=year, scheme_name=sch.name, scheme_version=str(sch.version), scheme_hash=scheme_hash(sch),
            inputs_fingerprint=inputs_fp, run_hash=run_hash, status="running", scheme=_scheme_json(sch),
            summary={"source": "province", "province": str(province)},
        ).returning(evaluation_runs.c.id)).scalar_one()
    rows: dict[str, int] = {}
    try:
        for k, county in enumerate(counties, 1):
            tc = time.perf_counter()
            frames = _county(out, province, int(county))
            with engine.begin() as conn:
                counts = _write_county(conn, frames, year, run_id, sch)
                db.bump_data_version(conn)
            for t, v in counts.items():
                rows[t] = rows.get(t, 0) + v
            if progress:
                code = frames["land"]["county"].iloc[0] if len(frames["land"]) else county
                progress(f"县 {k}/{len(counties)}（{code}）已写入数据库：宗地 {len(frames['land'])}"
                         f"（新版本 {counts['parcels']}），"
                         f"地企对应 {counts['land_links']}，企业评价 {counts['enterprise_ratings']}，"
                         f"宗地评价 {counts['parcel_ratings']}，{time.perf_counter() - tc:.1f} 秒")
    except BaseException:
        with engine.begin() as conn:
            conn.execute(evaluation_runs.update().where(evaluation_runs.c.id == run_id)
                         .values(status="failed", finished_at=sa.func.now()))
        raise
    with engine.begin() as conn:
        summary = {"enterprises": _grade_counts(conn, "enterprise_ratings", run_id, year),
                   "parcels": _grade_counts(conn, "parcel_ratings", run_id, year),
                   "source": "province", "province": str(province), "counties": len(counties)}
        conn.execute(evaluation_runs.update().where(evaluation_runs.c.id == run_id).values(
            status="draft", finished_at=sa.func.now(), summary=summary))
        db.bump_data_version(conn)
        db.audit(conn, "cli", "province_write", "evaluation_runs", str(run_id),
                 {"year": year, "scheme": sch.name, "counties": len(counties), "rows": rows})
    seconds = round(time.perf_counter() - t0, 2)  # the write; publishing (and its rendering) apart
    if publish:
        publish_run(engine, run_id)
    return ProvinceWrite(run_id, year, len(counties), seconds, rows)


# -- steps ---------------------------------------------------------------------------------------
def _fingerprint(province: Path, out: Path) -> str:
    """sha256 of the run's input files and result files (name, then content, in name order)."""
    h = hashlib.sha256()
    for f in sorted(province.glob("*.parquet")) + sorted(out.glob("*/*.parquet")):
        h.update(f"{f.parent.name}/{f.name}".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _read(f: Path) -> pd.DataFrame:
    meta = pq.read_schema(f).metadata or {}
    return gpd.read_parquet(f) if b"geo" in meta else pd.read_parquet(f)


def _county(out: Path, province: Path, i: int) -> dict[str, pd.DataFrame]:
    """County *i*'s outputs, and its enterprises and metrics (row group *i* of the input)."""
    frames = {t: _read(out / t / f"{i:05d}.parquet") for t in OUTPUTS}
    ents = pq.ParquetFile(province / "enterprises.parquet").read_row_group(i).to_pandas()
    frames["enterprises"] = _points(ents, SRID).assign(lon_src=ents["lon"].to_numpy(), lat_src=ents["lat"].to_numpy())
    frames["metrics"] = pq.ParquetFile(province / "metrics.parquet").read_row_group(i).to_pandas()
    return frames


def _write_county(conn: sa.Connection, f: dict[str, pd.DataFrame], year: int, run_id: int, sch) -> dict[str, int]:
    n = {"parcels": _write_land(conn, f["land"], year)}
    codes = "(SELECT identity_code FROM tmp_parcels)"

    links = f["links"].assign(year=year)
    conn.execute(sa.text(f"DELETE FROM land_links WHERE year = :y AND identity_code IN {codes}"), {"y": year})
    n["land_links"] = store.copy_rows(conn, "land_links", links, _LINKS)

    subs = f["sublots"]
    subs = gpd.GeoDataFrame(subs.drop(columns="geometry").assign(year=year),
                            geometry=_multi(subs.geometry.to_crs(SRID)), crs=SRID)
    conn.execute(sa.text(f"DELETE FROM sublots WHERE year = :y AND identity_code IN {codes}"), {"y": year})
    n["sublots"] = store.copy_rows(conn, "sublots", subs, ["year", "identity_code", "uscc", "share", "area_m2",
                                                           "geom"], geom_col="geom")

    el = f["enterprise_land"].assign(year=year)
    conn.execute(sa.text("DELETE FROM enterprise_land WHERE year = :y AND uscc = ANY(:u)"),
                 {"y": year, "u": el["uscc"].astype(str).tolist()})
    n["enterprise_land"] = store.copy_rows(conn, "enterprise_land", el, _ENT_LAND)

    # the run's figures are the year's: other metrics years would be apportioned over this year's
    # links, which is not how `mujun match` computes them
    pm = f["parcel_metrics"]
    pm = pm[pm["year"] == year]
    conn.execute(sa.text(f"DELETE FROM parcel_metrics WHERE year = :y AND identity_code IN {codes}"), {"y": year})
    n["parcel_metrics"] = store.copy_rows(conn, "parcel_metrics", pm,
                                          ["identity_code", "year", *METRIC_COLUMNS, "occupant_count"])

    ents = f["enterprises"].copy()
    ents["founded"] = pd.to_datetime(ents["founded"], errors="coerce").dt.date
    ents = ents.drop_duplicates("uscc", keep="last")
    store.upsert(conn, "enterprises", ents, ["uscc"], geom_col="geom", columns=_ENTERPRISES)
    met = f["metrics"].drop_duplicates(["uscc", "year"], keep="last")
    store.upsert(conn, "metrics", met, ["uscc", "year"], columns=["uscc", "year", *METRIC_COLUMNS, "meter_id"])

    er, pr = _rating_rows(f, year, run_id, sch)
    n["enterprise_ratings"] = store.copy_rows(conn, "enterprise_ratings", er, ["uscc", *_RATINGS, "land_area_mu"])
    n["parcel_ratings"] = store.copy_rows(conn, "parcel_ratings", pr, ["identity_code", *_RATINGS, "idle"])
    return n


def _write_land(conn: sa.Connection, land: gpd.GeoDataFrame, year: int) -> int:
    """The county's land as the land of ``year``: an unchanged piece keeps the version valid in
    that year; a new or changed one gets a version from ``year`` (until the piece's next version,
    if a later year has one), and a changed piece's earlier version ends at ``year``.
    Returns the number of new versions. Leaves ``tmp_parcels`` (the county's land) for the caller."""
    land = gpd.GeoDataFrame(land.drop(columns="geometry"), geometry=_multi(land.geometry.to_crs(SRID)), crs=SRID)
    cols = [c for c in _LAND if c in land.columns]
    store.copy_into_temp(conn, "parcels", land, [*cols, "geom"], geom_col="geom")
    same = (f"({', '.join('p.' + c for c in cols)}, ST_AsEWKB(p.geom)) IS NOT DISTINCT FROM "
            f"({', '.join('t.' + c for c in cols)}, ST_AsEWKB(t.geom))")
    y = {"y": year}
    conn.execute(sa.text(f"DELETE FROM parcels p USING tmp_parcels t WHERE p.identity_code = t.identity_code "
                         f"AND p.valid_from = :y AND NOT ({same})"), y)
    conn.execute(sa.text(f"UPDATE parcels p SET valid_to = :y, updated_at = now() FROM tmp_parcels t "
                         f"WHERE p.identity_code = t.identity_code AND p.valid_from < :y "
                         f"AND coalesce(p.valid_to, 10000) > :y AND NOT ({same})"), y)
    return conn.execute(sa.text(f"""
        INSERT INTO parcels ({', '.join(cols)}, geom, valid_from, valid_to)
        SELECT {', '.join('t.' + c for c in cols)}, t.geom, :y,
               (SELECT min(q.valid_from) FROM parcels q WHERE q.identity_code = t.identity_code AND q.valid_from > :y)
        FROM tmp_parcels t
        WHERE NOT EXISTS (SELECT 1 FROM parcels p WHERE p.identity_code = t.identity_code
                          AND p.valid_from <= :y AND coalesce(p.valid_to, 10000) > :y)"""), y).rowcount


def _rating_rows(f: dict[str, pd.DataFrame], year: int, run_id: int, sch) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both rating tables of the county as the run computed them, plus what the layers show beside
    the grade: 亩均税收 (as :func:`app.evaluation._tax_per_mu`), merged land, and 闲置 for land
    nobody is linked to (as the run decides a parcel's occupant)."""
    out = []
    m = f["metrics"][f["metrics"]["year"] == year].groupby("uscc", sort=True)[["tax_paid", "tax_refund"]] \
        .sum(min_count=1)
    el = f["enterprise_land"].set_index("uscc")["land_area_mu"]
    pm = f["parcel_metrics"]
    pm = pm[pm["year"] == year].set_index("identity_code")
    area = f["land"].set_index("identity_code")["area_mu"]
    for kind, r in (("enterprise", f["enterprise_ratings"]), ("parcel", f["parcel_ratings"])):
        ids = r["subject_id"].astype(str)
        if kind == "enterprise":
            figures = m.reindex(ids)
            land_mu = el.reindex(ids).fillna(0)
        else:
            figures = pm[["tax_paid", "tax_refund"]].reindex(ids) if len(pm) else \
                pd.DataFrame({"tax_paid": np.nan, "tax_refund": np.nan}, index=ids)
            land_mu = area.reindex(ids)
        subjects = pd.DataFrame({"tax_paid": figures["tax_paid"].to_numpy(), "tax_refund": figures["tax_refund"].to_numpy(),
                                 "land_area_mu": land_mu.to_numpy(dtype=float)})
        rows = pd.DataFrame({
            "run_id": run_id, "year": year, "list_name": r["list_name"].to_numpy(),
            "industry_group": r["group"].to_numpy(), "evaluated": r["evaluated"].astype(bool).to_numpy(),
            "excluded_reason": r["excluded_reason"].to_numpy(), "score": r["score"].astype("float64").to_numpy(),
            "rank": r["rank"].astype("Int64").to_numpy(), "percentile": r["percentile"].astype("float64").to_numpy(),
            "band_grade": r["band_grade"].to_numpy(), "grade": r["grade"].to_numpy(),
            "tax_per_mu": _tax_per_mu(subjects, sch) if len(subjects) else np.array([], dtype=float),
            "land_area_mu": subjects["land_area_mu"].to_numpy(),
        })
        if kind == "enterprise":
            rows.insert(0, "uscc", ids.to_numpy())
        else:
            rows.insert(0, "identity_code", ids.to_numpy())
            rows["idle"] = ~ids.isin(set(f["links"]["identity_code"].astype(str))).to_numpy()
        out.append(rows)
    return out[0], out[1]


def _grade_counts(conn: sa.Connection, table: str, run_id: int, year: int) -> dict[str, int]:
    rows = conn.execute(sa.text(f"SELECT coalesce(grade, '未评'), count(*) FROM {table} "
                                "WHERE run_id = :r AND year = :y GROUP BY 1 ORDER BY 1"), {"r": run_id, "y": year})
    return {g: int(c) for g, c in rows}
