"""``mujun import``: a county's bundle into PostGIS, atomically, with every rejected row kept.

``spatial.io`` reads the files and ``spatial.validate`` sorts rows into valid and rejected (pure);
``spatial.identity`` gives every piece of land its 宗地身份码. This module only moves the result
into the database: one transaction per bundle — all valid rows land together with the list of
rejected rows and their reasons, or nothing does. Re-importing the same bundle is a no-op
(upserts by natural keys touch only rows whose content changed).

Land is a *delivery* of a year (issue 10). ``spatial.lineage.reconcile`` matches it to the current
land by overlap; here that becomes versions of ``parcels``:

* kept pieces are not touched; a changed piece closes its version (``valid_to`` = year) and gets a
  new one (``valid_from`` = year) — or, re-delivered in the same year, is updated in place;
  new, split, merged and re-coded pieces get their first version; lineage goes to ``land_lineage``.
* **complete** (default): pieces absent from the delivery are retired (``valid_to`` = year), never
  deleted; **partial** (``--partial`` or ``"mode": "partial"``): only adds and changes.
* **The year**: ``year=`` (``mujun import --year``), else ``manifest.json``'s ``"year"``, else —
  a bundle that names no year — the year of the county's current land (the bundle corrects the
  latest delivery, as imports always did), and for the county's first land the newest year of the
  bundle's metrics (the land as delivered with those figures), else the current calendar year.
  Years before the first delivery read the first delivery's land (``land_in_year_sql``).
* A delivery older than the county's latest land year is refused (deliveries come in order),
  except the very same delivery again, which is a no-op.
* A complete delivery that would retire more than ``settings.retire_max_share`` of the county's
  land area is refused (:class:`DeliveryRefused`, with the count and area) unless
  ``allow_retire``: a truncated file must not retire half a county.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa

from app import db, store
from app.models import METRIC_COLUMNS, SRID, import_batches
from app.settings import Settings, get_settings
from spatial.crs import metric_crs_for
from spatial.identifiers import is_parcel_code
from spatial.identity import M2_PER_MU, build_land
from spatial.io import Bundle, BundleError, read_bundle
from spatial.lineage import Reconciled, reconcile
from spatial.validate import validate_bundle

#: ``mujun import`` exit code when a complete delivery would retire too much land.
RETIRE_REFUSED_EXIT = 4
MANIFEST = "manifest.json"

#: Columns each table takes from the bundle; anything else a county sent is kept in ``attrs``.
_ENTERPRISE_COLS = ["uscc", "name", "industry_code", "scale", "township", "address", "founded",
                    "flags", "coord_sys", "lon_src", "lat_src"]
_BUILDING_COLS = ["building_id", "parcel_code", "floors", "floor_area_m2"]
_LEASE_COLS = ["tenant_uscc", "parcel_code", "landlord_uscc", "floor_area_m2", "land_area_m2",
               "start_date", "end_date"]
_CORRECTION_COLS = ["uscc", "parcel_code", "action", "share", "reason", "by"]
_PARCEL_ATTR_COLS = ["owner_name", "land_use", "registered_area_m2", "note"]
_INTERNAL = {"_file", "_row", "geometry", "lon", "lat", "extra", "registered"}


@dataclass
class ImportReport:
    """What one ``mujun import`` did: counts per table, rejected rows, where the report is."""

    batch_id: int | None
    status: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rejects: pd.DataFrame = field(default_factory=pd.DataFrame)
    column_map: dict = field(default_factory=dict)
    report_path: Path | None = None
    message: str = ""
    #: The land delivery: year, mode, and how many pieces were kept/changed/new/split/merged/
    #: recoded/retired (and the area retired, 亩).
    land: dict = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return int((self.rejects["severity"] == "error").sum()) if len(self.rejects) else 0

    @property
    def warnings(self) -> int:
        return int((self.rejects["severity"] == "warning").sum()) if len(self.rejects) else 0


class DeliveryRefused(BundleError):
    """A land delivery refused as a whole: ``retire`` True when it would retire too much land
    (``mujun import`` exits with :data:`RETIRE_REFUSED_EXIT`), else older than the current land."""

    def __init__(self, message: str, *, retire: bool = False):
        super().__init__(message)
        self.retire = retire


@db.county_locked("import")  # one import per county at a time: the second waits (issue 12)
def import_bundle(engine: sa.Engine, path: str | Path, *, crs: str | None = None,
                  overrides: dict | None = None, progress=None,
                  settings: Settings | None = None, year: int | None = None,
                  partial: bool | None = None, allow_retire: bool = False, actor: str = "cli") -> ImportReport:
    """Import one bundle directory (data-contract.md) into the database.

    ``year`` / ``partial``: the land delivery's year and mode (see the module docstring; default
    from ``manifest.json``, else the current land's year, complete). ``allow_retire`` confirms a
    complete delivery that retires more than ``settings.retire_max_share`` of the land.
    ``actor``: who imports, for the audit log (``cli``, or the signed-in user of the web upload).

    Raises :class:`spatial.io.BundleError` (after recording a refused batch) when a required
    file or column is missing or a file cannot be read, and :class:`DeliveryRefused` (a
    ``BundleError``) when the delivery is refused as a whole: then nothing lands.

    >>> report = import_bundle(db.engine(), "var/sample")   # doctest: +SKIP
    >>> report.counts["parcels"]                            # doctest: +SKIP
    {'inserted': 2000, 'updated': 0, 'unchanged': 0}
    """
    settings = settings or get_settings()
    path = Path(path)
    fingerprint = _fingerprint(path)
    try:
        manifest = _manifest(path)
        bundle = read_bundle(path, crs=crs, overrides=overrides, progress=progress)
        bundle = validate_bundle(bundle, overlap_tolerance_m2=settings.overlap_tolerance_m2)
        with engine.connect() as conn:
            delivery = _delivery(conn, bundle, manifest, year, partial, fingerprint)
            current = _current_land(conn) if not delivery["skip"] else None
        _step(progress, "identity codes")
        metric = metric_crs_for(current) if current is not None and len(current) else None
        land = _land(bundle, settings, metric)
        rec = None if delivery["skip"] else _reconcile(engine, current, land, delivery, settings)
        if rec is not None:
            _check_retire(rec, current, delivery, settings, allow_retire)
    except BundleError as exc:
        batch_id = _record_refused(engine, path, fingerprint, str(exc))
        exc.batch_id = batch_id
        raise
    rejects = bundle.rejects.reset_index(drop=True)

    from app import render  # the public tiles and features are rendered once the land is in

    with (render.changes(engine, settings=settings, progress=progress and (lambda t: progress(t, 0, 0))),
          engine.begin() as conn):
        batch_id = conn.execute(import_batches.insert().values(
            bundle_path=str(path.resolve()), fingerprint=fingerprint, status="loading",
            column_map=_jsonable(bundle.column_map), source_crs=_jsonable(bundle.source_crs),
            land_year=delivery["year"], land_mode=delivery["mode"],
        ).returning(import_batches.c.id)).scalar_one()
        counts, land_summary = _load_tables(conn, bundle, land, rec, delivery, batch_id, progress)
        land_summary = {**land_summary, "year_source": delivery["year_source"]}
        if len(rejects):
            store.replace_all(conn, "import_rejects", rejects.assign(batch_id=batch_id,
                              row=rejects["row"].astype("Int64"), value=rejects["value"].astype("string")),
                              where=f"batch_id = {int(batch_id)}")
        counts["rejects"] = {"errors": int((rejects["severity"] == "error").sum()) if len(rejects) else 0,
                             "warnings": int((rejects["severity"] == "warning").sum()) if len(rejects) else 0}
        changed = sum(c.get("inserted", 0) + c.get("updated", 0) for c in counts.values())
        if changed:
            db.bump_data_version(conn)
        db.audit(conn, actor, "import", "import_batches", str(batch_id),
                 {"path": str(path), "changed_rows": changed})
        conn.execute(import_batches.update().where(import_batches.c.id == batch_id).values(
            status="loaded", finished_at=sa.func.now(), counts=counts))

    report = ImportReport(batch_id, "loaded", counts, rejects, bundle.column_map, land=land_summary)
    report.report_path = _write_report(report, path, settings)
    with engine.begin() as conn:
        conn.execute(import_batches.update().where(import_batches.c.id == batch_id)
                     .values(report_path=str(report.report_path)))
    return report


# -- steps ---------------------------------------------------------------------------------------
def _step(progress, name: str) -> None:
    if progress:
        progress(name, 0, 0)


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _manifest(path: Path) -> dict:
    """``manifest.json`` of a bundle: ``{"year": 2025, "mode": "complete" | "partial"}`` (both
    optional). Raises BundleError naming the file and the field when it is not that."""
    f = path / MANIFEST if path.is_dir() else None
    if f is None or not f.exists():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{f}: 无法读取交付说明 (cannot read the manifest): {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{f}: 交付说明应为 JSON 对象，如 {{\"year\": 2025, \"mode\": \"complete\"}}")
    out = {}
    if data.get("year") is not None:
        y = data["year"]
        if isinstance(y, bool) or not str(y).strip().isdigit() or not 1990 <= int(str(y).strip()) <= 2100:
            raise BundleError(f"{f}: 字段 year 应为年份（1990–2100），实为 {y!r} (field year must be a year)")
        out["year"] = int(str(y).strip())
    if data.get("mode") is not None:
        m = str(data["mode"]).strip().lower()
        if m not in ("complete", "partial"):
            raise BundleError(f"{f}: 字段 mode 应为 complete（全量）或 partial（增量），实为 {data['mode']!r}")
        out["mode"] = m
    return out


def _delivery(conn: sa.Connection, bundle: Bundle, manifest: dict, year: int | None,
              partial: bool | None, fingerprint: str) -> dict:
    """The delivery's year and mode (module docstring), and whether its land is a no-op replay
    of an older delivery (``skip``). Raises DeliveryRefused for a new delivery of an old year."""
    latest = conn.execute(sa.text(
        "SELECT coalesce((SELECT max(land_year) FROM import_batches WHERE status = 'loaded'), "
        "(SELECT max(valid_from) FROM parcels))")).scalar()
    source = "argument"
    if year is None:
        year, source = manifest.get("year"), "manifest"
    if year is None:
        year, source = latest, "current land"
    if year is None:
        m = bundle.tables.get("metrics")
        years = pd.to_numeric(m["year"], errors="coerce").dropna() if m is not None and "year" in m else []
        # the calendar year is a guess: the CLI says so, so that staff can re-import with --year
        year, source = (int(max(years)), "metrics") if len(years) else (pd.Timestamp.now().year, "calendar")
    mode = "partial" if partial else manifest.get("mode", "complete") if partial is None else "complete"
    skip = False
    if latest is not None and year < latest:
        same = conn.execute(sa.text(
            "SELECT 1 FROM import_batches WHERE status = 'loaded' AND fingerprint = :f AND land_year = :y"),
            {"f": fingerprint, "y": year}).first()
        if same is None:
            raise DeliveryRefused(
                f"已有 {latest} 年的土地交付，不能再导入更早年度 {year} 的新土地数据（请按年度顺序交付）; "
                f"a delivery for {year} is older than the county's land of {latest}")
        skip = True  # the very same delivery again: its land is already there
    return {"year": int(year), "mode": mode, "skip": skip, "year_source": source}


def _current_land(conn: sa.Connection) -> gpd.GeoDataFrame:
    """The land valid now (``valid_to IS NULL``), every version's attributes, EPSG:4490."""
    return store.read_frame(conn, """
        SELECT version_id, identity_code, valid_from, kind, parcel_code, source_parcel_code,
               parent_identity_code, owner_uscc, owner_name, user_uscc, land_use, township,
               registered_area_m2, area_m2, note, attrs, ST_AsBinary(geom) AS geom
        FROM parcels WHERE valid_to IS NULL ORDER BY identity_code""", geom_col="geom")


#: What makes a piece "changed" besides its geometry.
_COMPARED = ["kind", "parcel_code", "source_parcel_code", "parent_identity_code", "owner_uscc", "owner_name",
             "user_uscc", "land_use", "township", "registered_area_m2", "note", "attrs"]


def _reconcile(engine: sa.Engine, current: gpd.GeoDataFrame, land: gpd.GeoDataFrame, delivery: dict,
               settings: Settings) -> Reconciled:
    """The delivery against the current land, in one metric CRS (the county's zone)."""
    with engine.connect() as conn:
        reserved = set(conn.execute(sa.text("SELECT DISTINCT identity_code FROM parcels")).scalars())
        # the last version of each code that is not current: land that comes back takes its code again
        retired = store.read_frame(conn, """
            SELECT DISTINCT ON (identity_code) identity_code, ST_AsBinary(geom) AS geom FROM parcels p
            WHERE NOT EXISTS (SELECT 1 FROM parcels c WHERE c.identity_code = p.identity_code AND c.valid_to IS NULL)
            ORDER BY identity_code, valid_from DESC""", geom_col="geom")
    metric = metric_crs_for(current) if len(current) else metric_crs_for(land)
    cur = current.to_crs(metric)
    new = land.to_crs(metric)
    return reconcile(cur, new, complete=delivery["mode"] == "complete", reserved=reserved,
                     attributes=_COMPARED, tolerance_m=settings.land_tolerance_m,
                     retired_land=retired.to_crs(metric) if len(retired) else None)


def _check_retire(rec: Reconciled, current: gpd.GeoDataFrame, delivery: dict, settings: Settings,
                  allow_retire: bool) -> None:
    """Refuse a complete delivery that retires more than the allowed share of the land area."""
    absent = rec.retired[rec.retired["reason"] == "absent"]
    if allow_retire or len(absent) == 0 or len(current) == 0:
        return
    area = current.set_index("identity_code")["area_m2"].astype(float)
    lost = float(area.reindex(absent["identity_code"]).sum())
    total = float(area.sum())
    if total > 0 and lost / total > settings.retire_max_share:
        raise DeliveryRefused(
            f"全量交付 {delivery['year']} 年将注销 {len(absent)} 宗土地、共 {lost / M2_PER_MU:,.2f} 亩"
            f"（占现有土地面积 {lost / total:.1%}，超过允许的 {settings.retire_max_share:.0%}）。"
            f"若确属实际情况，请加 --allow-retire 确认；若只是部分数据，请用 --partial 增量导入。"
            f" (a complete delivery would retire {len(absent)} pieces, {lost:,.0f} m²)", retire=True)


def _land(bundle: Bundle, settings: Settings, metric=None) -> gpd.GeoDataFrame:
    """All land with identity codes and areas, computed in the county's Gauss-Krüger zone: the
    zone of the land already in the database when there is some (so a delivery that alone would
    fall in the next zone still measures in the county's), else the data's own."""
    parcels = bundle.tables["parcels"]
    defacto = bundle.tables.get("defacto")
    metric = metric or metric_crs_for(parcels)
    land = build_land(
        parcels.to_crs(metric),
        defacto.to_crs(metric) if defacto is not None and len(defacto) else None,
        attach_tolerance_m=settings.attach_tolerance_m,
        small_piece_mu=settings.small_piece_mu,
        county_code=_county_code(parcels),
    )
    land = land.to_crs(SRID)
    # build_land carries the registered attributes; the county's extra columns join by code.
    extra = parcels.drop(columns="geometry").drop_duplicates("parcel_code")
    attrs = pd.Series(_attrs(extra, set(_PARCEL_ATTR_COLS) | {"parcel_code", "owner_uscc", "township", "registered"}),
                      index=extra["parcel_code"].to_numpy())
    code = land["source_parcel_code"].fillna(land["parcel_code"]).where(land["kind"] != "defacto_attached")
    land["attrs"] = [a if isinstance(a, dict) else {} for a in code.map(attrs)]
    return gpd.GeoDataFrame(land, geometry="geometry", crs=SRID)


def _county_code(parcels: pd.DataFrame) -> str | None:
    """The county (first 6 digits of most GB/T 37346 parcel codes), so de-facto land codes say
    where they are (``D-330999-…``); None for data without such codes."""
    codes = parcels["parcel_code"].dropna().astype(str)
    codes = codes[codes.map(is_parcel_code)]
    return codes.str[:6].mode().iloc[0] if len(codes) else None


def _attrs(df: pd.DataFrame, known: set[str]) -> list[dict]:
    """Columns the county sent beyond the contract, kept per row (nothing is thrown away)."""
    extra_cols = [c for c in df.columns if c not in known and c not in _INTERNAL and not str(c).startswith("_")]
    base = df["extra"].tolist() if "extra" in df.columns else [None] * len(df)
    out = []
    records = df[extra_cols].to_dict("records") if extra_cols else [{}] * len(df)
    for b, r in zip(base, records):
        d = dict(b) if isinstance(b, dict) else {}
        # spatial.io prefixes unknown columns with "x_"; the archive keeps the county's own name.
        d.update({k[2:] if k.startswith("x_") else k: _json_value(v) for k, v in r.items() if not _is_na(v)})
        out.append(d)
    return out


def _is_na(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _json_value(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (pd.Timestamp,)):
        return v.isoformat()
    return v if isinstance(v, (int, float, str, bool)) else str(v)


def _multi(geoms: gpd.GeoSeries) -> np.ndarray:
    """Polygons as MultiPolygons: the columns are typed MULTIPOLYGON so every layer has one type."""
    arr = np.asarray(geoms.values, dtype=object)
    single = shapely.get_type_id(arr) == 3
    if single.any():
        arr = arr.copy()
        arr[single] = shapely.multipolygons(arr[single], indices=np.arange(int(single.sum())))
    return arr


def _frame(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = pd.DataFrame({c: df[c] if c in df.columns else pd.Series(pd.NA, index=df.index) for c in columns})
    return out


def _load_tables(conn: sa.Connection, bundle: Bundle, land: gpd.GeoDataFrame, rec: Reconciled | None,
                 delivery: dict, batch_id: int, progress) -> tuple[dict, dict]:
    t = bundle.tables
    counts: dict[str, dict[str, int]] = {}

    ent = t.get("enterprises")
    if ent is None:  # a land-only bundle (e.g. a cadastre update)
        ent = gpd.GeoDataFrame({c: [] for c in _ENTERPRISE_COLS}, geometry=[], crs=SRID)
    ent_rows = _frame(ent, _ENTERPRISE_COLS)
    ent_rows["attrs"] = _attrs(ent, set(_ENTERPRISE_COLS))
    ent_rows = gpd.GeoDataFrame(ent_rows, geometry=gpd.GeoSeries(ent.geometry.values, index=ent.index), crs=SRID)
    _step(progress, "enterprises")
    counts["enterprises"] = store.upsert(conn, "enterprises", ent_rows, ["uscc"], geom_col="geom",
                                         columns=[*_ENTERPRISE_COLS, "attrs", "geom"])

    _step(progress, "parcels")
    if rec is None:  # an older delivery replayed: its land is there already
        counts["parcels"] = {"inserted": 0, "updated": 0, "unchanged": len(land)}
        summary = {"year": delivery["year"], "mode": delivery["mode"], "replayed": True}
    else:
        counts["parcels"], summary = _write_land(conn, land, rec, delivery, batch_id)

    m = t.get("metrics")
    if m is not None and len(m):
        cols = ["uscc", "year", *METRIC_COLUMNS, "meter_id"]
        rows = _frame(m, cols)
        rows["attrs"] = _attrs(m, set(cols))
        _step(progress, "metrics")
        counts["metrics"] = store.upsert(conn, "metrics", rows, ["uscc", "year"], columns=[*cols, "attrs"])

    counts |= write_references(conn, t, progress)
    return counts, summary


def write_references(conn: sa.Connection, t: dict, progress=None) -> dict[str, int]:
    """Upsert a bundle's buildings (by 建筑编号; footprint in their Gauss-Krüger zone, m²),
    leases (by tenant|parcel|landlord|start) and 纠偏 (by USCC and 宗地代码): what ``mujun
    match`` reads besides land and enterprises. ``t``: the bundle's tables (EPSG:4490).
    Returns :func:`app.store.upsert`'s counts per table (``buildings``, ``leases``, ``corrections``)."""
    counts: dict[str, dict[str, int]] = {}
    b = t.get("buildings")
    if b is not None and len(b):
        metric = metric_crs_for(b)
        rows = _frame(b, _BUILDING_COLS)
        rows["footprint_m2"] = b.to_crs(metric).area.round(2).values
        rows["attrs"] = _attrs(b, set(_BUILDING_COLS))
        rows = gpd.GeoDataFrame(rows, geometry=_multi(b.geometry), crs=SRID)
        _step(progress, "buildings")
        counts["buildings"] = store.upsert(conn, "buildings", rows, ["building_id"], geom_col="geom",
                                           columns=[*_BUILDING_COLS, "footprint_m2", "attrs", "geom"])

    le = t.get("leases")
    if le is not None and len(le):
        rows = _frame(le, _LEASE_COLS)
        rows["lease_key"] = (rows["tenant_uscc"].astype("string").fillna("") + "|"
                             + rows["parcel_code"].astype("string").fillna("") + "|"
                             + rows["landlord_uscc"].astype("string").fillna("") + "|"
                             + rows["start_date"].astype("string").fillna(""))
        # The same lease listed twice is one lease: the later line wins, as in a spreadsheet edit.
        rows = rows.drop_duplicates("lease_key", keep="last")
        rows["attrs"] = [{}] * len(rows)
        counts["leases"] = store.upsert(conn, "leases", rows, ["lease_key"],
                                        columns=["lease_key", *_LEASE_COLS, "attrs"])

    co = t.get("corrections")
    if co is not None and len(co):
        rows = _frame(co, _CORRECTION_COLS).drop_duplicates(["uscc", "parcel_code"], keep="last")
        counts["corrections"] = store.upsert(conn, "link_corrections", rows, ["uscc", "parcel_code"],
                                             columns=_CORRECTION_COLS)
    return counts


def _write_land(conn: sa.Connection, land: gpd.GeoDataFrame, rec: Reconciled, delivery: dict,
                batch_id: int) -> tuple[dict, dict]:
    """Versions from a reconciled delivery: close what changed or retired, add what is new."""
    year = delivery["year"]
    out = rec.land
    status = out["status"].to_numpy(dtype=object)
    write = status != "kept"
    closing = list(out.loc[status == "changed", "identity_code"]) + list(rec.retired["identity_code"])
    if closing:
        # a version of an earlier year ends; one of this same year is replaced in place (changed)
        # or left with an empty span (retired): history never loses a year that was delivered
        conn.execute(sa.text(
            "UPDATE parcels SET valid_to = :y, updated_at = now() WHERE valid_to IS NULL "
            "AND identity_code = ANY(:codes) AND (valid_from < :y OR identity_code = ANY(:retired))"),
            {"y": year, "codes": closing, "retired": list(rec.retired["identity_code"])})
    if write.any():
        rows = out[write].copy()
        # geometry and figures as delivered (land is in its metric CRS here; store EPSG:4490)
        rows = gpd.GeoDataFrame(rows, geometry=land.geometry.to_numpy()[write], crs=land.crs).to_crs(SRID)
        rows["geometry"] = _multi(rows.geometry)
        rows["attrs"] = [a if isinstance(a, dict) else {} for a in rows["attrs"]] if "attrs" in rows \
            else [{}] * len(rows)
        rows["valid_from"], rows["valid_to"], rows["batch_id"] = year, None, batch_id
        cols = ["identity_code", "valid_from", "valid_to", "kind", "parcel_code", "source_parcel_code",
                "parent_identity_code", "owner_uscc", "owner_name", "user_uscc", "land_use", "township",
                "registered_area_m2", "area_m2", "area_mu", "note", "attrs", "batch_id"]
        rows = gpd.GeoDataFrame(_frame(rows, cols), geometry=rows.geometry.values, crs=SRID)
        store.upsert(conn, "parcels", rows, ["identity_code", "valid_from"], geom_col="geom", columns=[*cols, "geom"])
    if len(rec.lineage):
        conn.execute(sa.text(
            "INSERT INTO land_lineage (year, parent_code, child_code, kind, batch_id) "
            "SELECT :y, p, c, k, :b FROM unnest(CAST(:p AS text[]), CAST(:c AS text[]), CAST(:k AS text[])) AS x(p, c, k) "
            "ON CONFLICT (year, parent_code, child_code) DO NOTHING"),
            {"y": year, "b": batch_id, "p": list(rec.lineage["parent_code"]),
             "c": list(rec.lineage["child_code"]), "k": list(rec.lineage["kind"])})
    n = pd.Series(status).value_counts()
    summary = {"year": year, "mode": delivery["mode"], **{k: int(n.get(k, 0)) for k in
               ("kept", "changed", "new", "split", "merged", "recoded", "revived")},
               "retired": int(len(rec.retired)), "lineage": int(len(rec.lineage))}
    counts = {"inserted": int(sum(n.get(k, 0) for k in ("new", "split", "merged", "recoded", "revived"))),
              "updated": int(n.get("changed", 0)) + int(len(rec.retired)), "unchanged": int(n.get("kept", 0))}
    return counts, summary


def _jsonable(obj):
    return json.loads(json.dumps(obj, ensure_ascii=False, default=str))


def _record_refused(engine: sa.Engine, path: Path, fingerprint: str, message: str) -> int:
    with engine.begin() as conn:
        return conn.execute(import_batches.insert().values(
            bundle_path=str(path.resolve()), fingerprint=fingerprint, status="refused",
            finished_at=sa.func.now(), counts={"refused": message},
        ).returning(import_batches.c.id)).scalar_one()


def _write_report(report: ImportReport, path: Path, settings: Settings) -> Path:
    """A Markdown summary and a CSV of every rejected or warned row, for a person to act on."""
    out = settings.data_dir / "reports"
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"import_{report.batch_id}.md"
    csv = out / f"import_{report.batch_id}_rejects.csv"
    lines = [f"# Import {report.batch_id}: {path}", "", "| table | inserted | updated | unchanged |",
             "|---|---:|---:|---:|"]
    for table, c in report.counts.items():
        if table == "rejects":
            continue
        lines.append(f"| {table} | {c['inserted']} | {c['updated']} | {c['unchanged']} |")
    if report.land:
        lines += ["", "Land delivery: " + ", ".join(f"{k} {v}" for k, v in report.land.items())]
    lines += ["", f"Rejected rows: {report.errors}; warnings: {report.warnings} (details: `{csv.name}`).", "",
              "## Columns understood", ""]
    for file, mapping in report.column_map.items():
        lines.append(f"- `{file}`: " + ", ".join(f"{src} → {dst}" for src, dst in mapping.items()))
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report.rejects.to_csv(csv, index=False, encoding="utf-8-sig")
    return md
