"""``mujun import``: a county's bundle into PostGIS, atomically, with every rejected row kept.

``spatial.io`` reads the files and ``spatial.validate`` sorts rows into valid and rejected (pure);
``spatial.identity`` gives every piece of land its 宗地身份码. This module only moves the result
into the database: one transaction per bundle — all valid rows land together with the list of
rejected rows and their reasons, or nothing does. Re-importing the same bundle is a no-op
(upserts by natural keys touch only rows whose content changed).
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
from spatial.identity import build_land
from spatial.io import Bundle, BundleError, read_bundle
from spatial.validate import validate_bundle

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

    @property
    def errors(self) -> int:
        return int((self.rejects["severity"] == "error").sum()) if len(self.rejects) else 0

    @property
    def warnings(self) -> int:
        return int((self.rejects["severity"] == "warning").sum()) if len(self.rejects) else 0


@db.county_locked("import")  # one import per county at a time: the second waits (issue 12)
def import_bundle(engine: sa.Engine, path: str | Path, *, crs: str | None = None,
                  overrides: dict | None = None, progress=None,
                  settings: Settings | None = None) -> ImportReport:
    """Import one bundle directory (data-contract.md) into the database.

    Raises :class:`spatial.io.BundleError` (after recording a refused batch) when a required
    file or column is missing or a file cannot be read: then nothing lands.

    >>> report = import_bundle(db.engine(), "var/sample")   # doctest: +SKIP
    >>> report.counts["parcels"]                            # doctest: +SKIP
    {'inserted': 2000, 'updated': 0, 'unchanged': 0}
    """
    settings = settings or get_settings()
    path = Path(path)
    fingerprint = _fingerprint(path)
    try:
        bundle = read_bundle(path, crs=crs, overrides=overrides, progress=progress)
        bundle = validate_bundle(bundle, overlap_tolerance_m2=settings.overlap_tolerance_m2)
        _step(progress, "identity codes")
        land = _land(bundle, settings)
    except BundleError as exc:
        batch_id = _record_refused(engine, path, fingerprint, str(exc))
        exc.batch_id = batch_id
        raise
    rejects = bundle.rejects.reset_index(drop=True)

    with engine.begin() as conn:
        batch_id = conn.execute(import_batches.insert().values(
            bundle_path=str(path.resolve()), fingerprint=fingerprint, status="loading",
            column_map=_jsonable(bundle.column_map), source_crs=_jsonable(bundle.source_crs),
        ).returning(import_batches.c.id)).scalar_one()
        counts = _load_tables(conn, bundle, land, progress)
        if len(rejects):
            store.replace_all(conn, "import_rejects", rejects.assign(batch_id=batch_id,
                              row=rejects["row"].astype("Int64"), value=rejects["value"].astype("string")),
                              where=f"batch_id = {int(batch_id)}")
        counts["rejects"] = {"errors": int((rejects["severity"] == "error").sum()) if len(rejects) else 0,
                             "warnings": int((rejects["severity"] == "warning").sum()) if len(rejects) else 0}
        changed = sum(c.get("inserted", 0) + c.get("updated", 0) for c in counts.values())
        if changed:
            db.bump_data_version(conn)
        db.audit(conn, "cli", "import", "import_batches", str(batch_id),
                 {"path": str(path), "changed_rows": changed})
        conn.execute(import_batches.update().where(import_batches.c.id == batch_id).values(
            status="loaded", finished_at=sa.func.now(), counts=counts))

    report = ImportReport(batch_id, "loaded", counts, rejects, bundle.column_map)
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


def _land(bundle: Bundle, settings: Settings) -> gpd.GeoDataFrame:
    """All land with identity codes and areas, computed in the data's Gauss-Krüger zone."""
    parcels = bundle.tables["parcels"]
    defacto = bundle.tables.get("defacto")
    metric = metric_crs_for(parcels)
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


def _load_tables(conn: sa.Connection, bundle: Bundle, land: gpd.GeoDataFrame, progress) -> dict:
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

    land_rows = land.copy()
    land_rows["geometry"] = _multi(land_rows.geometry)
    if "attrs" not in land_rows.columns:
        land_rows["attrs"] = [{}] * len(land_rows)
    land_rows["attrs"] = [a if isinstance(a, dict) else {} for a in land_rows["attrs"]]
    cols = ["identity_code", "kind", "parcel_code", "source_parcel_code", "parent_identity_code", "owner_uscc", "owner_name",
            "user_uscc", "land_use", "township", "registered_area_m2", "area_m2", "area_mu", "note", "attrs"]
    land_rows = gpd.GeoDataFrame(_frame(land_rows, cols), geometry=land_rows.geometry.values, crs=SRID)
    _step(progress, "parcels")
    counts["parcels"] = store.upsert(conn, "parcels", land_rows, ["identity_code"], geom_col="geom",
                                     columns=[*cols, "geom"])

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

    m = t.get("metrics")
    if m is not None and len(m):
        cols = ["uscc", "year", *METRIC_COLUMNS, "meter_id"]
        rows = _frame(m, cols)
        rows["attrs"] = _attrs(m, set(cols))
        _step(progress, "metrics")
        counts["metrics"] = store.upsert(conn, "metrics", rows, ["uscc", "year"], columns=[*cols, "attrs"])

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
    lines += ["", f"Rejected rows: {report.errors}; warnings: {report.warnings} (details: `{csv.name}`).", "",
              "## Columns understood", ""]
    for file, mapping in report.column_map.items():
        lines.append(f"- `{file}`: " + ", ".join(f"{src} → {dst}" for src, dst in mapping.items()))
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report.rejects.to_csv(csv, index=False, encoding="utf-8-sig")
    return md
