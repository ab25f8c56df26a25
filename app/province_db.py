"""``mujun run --province … --db``: a province run (:func:`app.province.run_province`) written into
PostGIS, so that the service's layers, tiles and archives show the province's land and grades.

One evaluation run (``evaluation_runs``) for the province run, then one transaction per county:
its land as land versions of the year (``parcels``: a piece whose content is unchanged keeps its
version, a changed one gets a new version from the year, as a land delivery does; the version
valid in the year carries the county's code in ``county``), the year's links, sub-lots, merged
land and apportioned figures (replaced for that county's land and enterprises), its enterprises
(with the county's code in ``county``), metrics, buildings, leases and 纠偏 from the province
input (upserted as a county import writes them, so ``mujun match`` re-matches with what the run
matched with; the rows the run used: validated, rejected rows left out, a metrics row of another county's enterprise written
once every county's enterprises are in), and both ratings of the run. Every table is written with ``COPY`` (psycopg 3 ``cursor.copy``); the per-year tables
get the year's partitions first (migration 0007), so the rows go straight into them.

A county that fails rolls back alone (the counties before it stay written, the run is marked
``failed``); writing the same run again replaces each county's rows of the year and leaves its
unchanged land as it was.

Ratings are stored as ``mujun evaluate`` stores them, built by the same functions: the rate step
of the run keeps :func:`app.evaluation.rating_rows`' row of each subject (grade, score, rank, band,
colour, 亩均税收, indicators, adjustments, the explanation and its Chinese text; JSON columns as
JSON text) and here :func:`app.evaluation.multiyear_rows` adds the multi-year results of a scheme
with a ``multiyear`` section — consecutive D years, 差别电价 and its refund, 低产田 years and their
warnings — from the history of the county's subjects in the database
(:func:`app.evaluation.rating_history`: each earlier year's published run, else its latest draft).
So write the years in order: a year written before the year preceding it has no history from it
(nor would ``mujun evaluate`` have); writing that year again once the one before is in gives them.

The rules are per subject, so reading each county's history gives the province's answers. Ranks
are within county and industry group, as the run ranks them. The ``county`` columns (6-digit
县级行政区划代码, migration 0009; a county import leaves them NULL) let ``mujun evaluate``
(:func:`app.evaluation.evaluate_year`: re-evaluation after a 纠偏, the web workflow) rate each
county of the database as its own unit too, so re-evaluating a province database stores exactly
the province run's ratings (tests/test_province_counties_db.py).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from app import db, store
from app.evaluation import _scheme_json, multiyear_rows, publish_run, rating_history
from app.ingest import _multi, write_references
from app.models import METRIC_COLUMNS, SRID, enterprise_ratings, evaluation_runs, parcel_ratings
from app.province import OUTPUTS, validate_county
from scoring import load_scheme, scheme_hash

__all__ = ["write_province", "ProvinceWrite"]

#: ``parcels`` columns a province run gives (besides ``geom``); their equality means "same land".
_LAND = ["identity_code", "kind", "parcel_code", "source_parcel_code", "parent_identity_code", "owner_uscc",
         "owner_name", "user_uscc", "land_use", "township", "registered_area_m2", "area_m2", "area_mu", "note"]
_LINKS = ["year", "identity_code", "uscc", "parcel_code", "role", "method", "confidence", "distance_m", "share",
          "attributed_area_m2", "attributed_area_mu"]
_ENT_LAND = ["year", "uscc", "land_area_m2", "land_area_mu", "parcel_count", "land_class"]
_ENTERPRISES = ["uscc", "name", "industry_code", "scale", "township", "county", "address", "founded", "flags",
                "coord_sys", "lon_src", "lat_src", "geom"]
#: The rating output columns the write needs (older outputs lack them: the run must be redone).
_STORED = ["colour", "tax_per_mu", "land_area_mu", "indicators", "adjustments", "explanation", "warnings",
           "electricity_kwh"]


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
    have = pq.read_schema(out / "enterprise_ratings" / f"{counties[0]}.parquet").names
    lacking = [c for c in _STORED if c not in have]
    if lacking:
        raise ValueError(f"{out} 的评价结果缺少 {', '.join(lacking)}（旧版本的输出 outputs of an older version）："
                         f"请重新运行 mujun run --province … --out {out}")
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
    elsewhere: list[pd.DataFrame] = []  # metrics rows naming an enterprise of another county
    try:
        for k, county in enumerate(counties, 1):
            tc = time.perf_counter()
            frames = _county(out, province, int(county))
            # a metrics row of an enterprise of another county (kept by the province's validation,
            # references="province") is written once every county's enterprises are in
            own = frames["metrics"]["uscc"].isin(set(frames["enterprises"]["uscc"])).to_numpy()
            elsewhere.append(frames["metrics"][~own])
            frames["metrics"] = frames["metrics"][own]
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
        with engine.begin() as conn:
            rows["metrics_without_enterprise"] = _write_metrics_elsewhere(conn, elsewhere)
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
    """County *i*'s outputs, and its enterprises and metrics (row group *i* of the input) as the
    run used them: validated as the county's import validates them, rejected rows left out
    (:func:`app.province.validate_county`; points in EPSG:4490, ``lon_src``/``lat_src`` as
    delivered)."""
    frames = {t: _read(out / t / f"{i:05d}.parquet") for t in OUTPUTS}
    bundle, _ = validate_county(province, i)
    # the county the run rated them in (``enterprises.county``: `mujun evaluate` rates by it)
    code = next((frames[t]["county"].iloc[0] for t in ("land", "enterprise_ratings") if len(frames[t])), None)
    frames["enterprises"] = bundle.tables["enterprises"].to_crs(SRID).assign(county=code)
    frames["metrics"] = bundle.tables["metrics"]
    # what `mujun match` reads besides land and enterprises: re-matching the database (after a
    # 纠偏) must see the buildings, leases and corrections the run matched with
    frames["references"] = {r: bundle.tables[r] for r in ("buildings", "leases", "corrections")
                            if bundle.tables.get(r) is not None}
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
    store.upsert(conn, "metrics", met, ["uscc", "year"], columns=_METRICS)
    n |= {t: sum(c.values()) for t, c in write_references(conn, f["references"]).items()}

    er, pr = _rating_rows(conn, f, year, run_id, sch)
    for table, rows in ((enterprise_ratings, er), (parcel_ratings, pr)):
        cols = [c.name for c in table.columns if c.name in rows.columns]
        n[table.name] = store.copy_rows(conn, table.name, rows, cols)
    return n


_METRICS = ["uscc", "year", *METRIC_COLUMNS, "meter_id"]


def _write_metrics_elsewhere(conn: sa.Connection, parts: list[pd.DataFrame]) -> int:
    """The metrics rows of enterprises delivered by another county, now that every county's
    enterprises are written; returns the rows whose enterprise is in no county (not written:
    ``metrics.uscc`` references ``enterprises``; the validation listed each as a warning)."""
    met = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=_METRICS)
    if not len(met):
        return 0
    known = set(conn.execute(sa.text("SELECT uscc FROM enterprises WHERE uscc = ANY(:u)"),
                             {"u": met["uscc"].astype(str).unique().tolist()}).scalars())
    ok = met["uscc"].isin(known).to_numpy()
    store.upsert(conn, "metrics", met[ok].drop_duplicates(["uscc", "year"], keep="last"), ["uscc", "year"],
                 columns=_METRICS)
    return int((~ok).sum())


def _write_land(conn: sa.Connection, land: gpd.GeoDataFrame, year: int) -> int:
    """The county's land as the land of ``year``: an unchanged piece keeps the version valid in
    that year; a new or changed one gets a version from ``year`` (until the piece's next version,
    if a later year has one), and a changed piece's earlier version ends at ``year``.
    Returns the number of new versions. Leaves ``tmp_parcels`` (the county's land) for the caller."""
    land = gpd.GeoDataFrame(land.drop(columns="geometry"), geometry=_multi(land.geometry.to_crs(SRID)), crs=SRID)
    cols = [c for c in _LAND if c in land.columns]
    store.copy_into_temp(conn, "parcels", land, [*cols, "county", "geom"], geom_col="geom")
    same = (f"({', '.join('p.' + c for c in cols)}, ST_AsEWKB(p.geom)) IS NOT DISTINCT FROM "
            f"({', '.join('t.' + c for c in cols)}, ST_AsEWKB(t.geom))")
    y = {"y": year}
    conn.execute(sa.text(f"DELETE FROM parcels p USING tmp_parcels t WHERE p.identity_code = t.identity_code "
                         f"AND p.valid_from = :y AND NOT ({same})"), y)
    conn.execute(sa.text(f"UPDATE parcels p SET valid_to = :y, updated_at = now() FROM tmp_parcels t "
                         f"WHERE p.identity_code = t.identity_code AND p.valid_from < :y "
                         f"AND coalesce(p.valid_to, 10000) > :y AND NOT ({same})"), y)
    # the county is not content: the version valid in the year gets it in place (a piece's
    # 宗地身份码 carries its county; land a county import wrote has none)
    conn.execute(sa.text("UPDATE parcels p SET county = t.county, updated_at = now() FROM tmp_parcels t "
                         "WHERE p.identity_code = t.identity_code AND p.valid_from <= :y "
                         "AND coalesce(p.valid_to, 10000) > :y AND p.county IS DISTINCT FROM t.county"), y)
    return conn.execute(sa.text(f"""
        INSERT INTO parcels ({', '.join(cols)}, county, geom, valid_from, valid_to)
        SELECT {', '.join('t.' + c for c in cols)}, t.county, t.geom, :y,
               (SELECT min(q.valid_from) FROM parcels q WHERE q.identity_code = t.identity_code AND q.valid_from > :y)
        FROM tmp_parcels t
        WHERE NOT EXISTS (SELECT 1 FROM parcels p WHERE p.identity_code = t.identity_code
                          AND p.valid_from <= :y AND coalesce(p.valid_to, 10000) > :y)"""), y).rowcount


def _rating_rows(conn: sa.Connection, f: dict[str, pd.DataFrame], year: int, run_id: int,
                 sch) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both rating tables of the county as ``mujun evaluate`` stores them: the run's rows
    (:func:`app.evaluation.rating_rows`, built by its rate step) and the multi-year results from
    the history of these subjects in the database (:func:`app.evaluation.multiyear_rows`)."""
    rows = [f[t].drop(columns=["county", "rank_n", "electricity_kwh"]).rename(columns={"group": "industry_group"})
            .assign(subject_id=f[t]["subject_id"].astype(str)) for t in ("enterprise_ratings", "parcel_ratings")]
    er, pr = rows
    history = rating_history(conn, year, usccs=er["subject_id"].tolist(), identity_codes=pr["subject_id"].tolist()) \
        if sch.multiyear is not None else None
    kwh = pd.DataFrame({"subject_id": er["subject_id"], "electricity_kwh": f["enterprise_ratings"]["electricity_kwh"]})
    er, pr = multiyear_rows(er, pr, kwh, history, sch, year)
    return er.assign(run_id=run_id, year=year), pr.assign(run_id=run_id, year=year)


def _grade_counts(conn: sa.Connection, table: str, run_id: int, year: int) -> dict[str, int]:
    rows = conn.execute(sa.text(f"SELECT coalesce(grade, '未评'), count(*) FROM {table} "
                                "WHERE run_id = :r AND year = :y GROUP BY 1 ORDER BY 1"), {"r": run_id, "y": year})
    return {g: int(c) for g, c in rows}
