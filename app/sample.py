"""Write a synthetic import bundle (``mujun sample``): a county as counties deliver it, or a province.

Formats (``fmt``):

- ``county`` — one county, files as a 县 自然资源局/经信局 hands them over: ``parcels.shp``,
  ``buildings.shp``, ``defacto.shp`` in EPSG:4549 (CGCS2000 / 3-degree GK CM 120E) with GBK
  ``.dbf`` attributes and Chinese field names cut to 10 bytes, a ``.cpg`` saying ``GBK`` *and*
  the dBase language driver byte set to 0x4D (CP936), so GBK is detected even if the ``.cpg`` is
  lost; ``enterprises.xlsx`` and ``metrics_<year>.xlsx`` with Chinese headers; ``leases.csv`` in
  UTF-8 with BOM and CRLF (as Excel saves it); ``corrections.csv`` in UTF-8 with the canonical
  English headers. Byte-identical for the same seed (fixed dBase and zip timestamps).
- ``gpkg`` — a province, county by county appended: ``parcels.gpkg``, ``buildings.gpkg``,
  ``defacto.gpkg`` in EPSG:4490 (counties span the 117/120/123°E zones) with full Chinese field
  names; ``enterprises.csv``, ``metrics.csv`` (all years), ``leases.csv``, ``corrections.csv`` in
  UTF-8 with Chinese headers.
- ``parquet`` — the same province as GeoParquet (WKB, EPSG:4490) / Parquet with the canonical
  English column names, one row group per county.

Every bundle also gets ``summary.md`` and ``summary.png`` (see :mod:`app.sample_summary`). With
``truth=True`` the ground truth (true 地企对应, roles, attributed land) goes to ``_truth/``.

Example
-------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     info = write_sample_bundle(d, seed=1, parcels=100)
>>> info["counts"]["parcels"]
100
"""

from __future__ import annotations

import os
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio

from app.sample_summary import SummaryCollector
from spatial import columns
from spatial.synthetic import (
    COUNTY_PARCELS,
    DEFAULT_YEARS,
    ENTERPRISES_PER_PARCEL,
    PROVINCE_ENTERPRISES_PER_PARCEL,
    SyntheticCounty,
    generate_county,
    iter_province,
)

__all__ = ["write_sample_bundle", "CHINESE_HEADERS", "SHAPEFILE_FIELDS", "FORMATS"]

FORMATS = ("county", "gpkg", "parquet")
#: The county format is one county; xlsx holds at most 1,048,576 rows.
MAX_COUNTY_PARCELS = 50_000

#: The columns the generator writes per role; their Chinese headers and ≤ 10-byte GBK Shapefile
#: field names come from the one alias table, ``spatial/columns.py``, so what we write is
#: exactly what the importer and the templates expect.
_WRITTEN = {
    "parcels": ("parcel_code", "owner_uscc", "owner_name", "land_use", "registered_area_m2", "township", "registered"),
    "buildings": ("building_id", "floors", "floor_area_m2", "parcel_code"),
    "defacto": ("user_uscc", "note"),
    "enterprises": ("uscc", "name", "lon", "lat", "coord_sys", "industry_code", "scale", "township", "address",
                    "founded", "flags"),
    "metrics": ("uscc", "year", "tax_paid", "tax_refund", "value_added", "revenue", "output_value", "energy_tce",
                "emission_t", "rd_expense", "employees", "electricity_kwh", "meter_id"),
    "leases": ("tenant_uscc", "parcel_code", "landlord_uscc", "floor_area_m2", "start_date", "end_date"),
}
CHINESE_HEADERS: dict[str, dict[str, str]] = {
    role: {c: columns.CHINESE_HEADERS[role][c] for c in cols} for role, cols in _WRITTEN.items()}
SHAPEFILE_FIELDS: dict[str, dict[str, str]] = {
    role: {c: columns.SHAPEFILE_FIELDS[role][c] for c in _WRITTEN[role]} for role in ("parcels", "buildings", "defacto")}

_CORRECTION_COLUMNS = ("uscc", "parcel_code", "action", "share", "reason", "by")
_FIXED_DATE = (2025, 1, 1, 0, 0, 0)  # timestamps written into dBase headers and xlsx zips


def write_sample_bundle(
    out_dir: str | os.PathLike,
    seed: int = 0,
    parcels: int = COUNTY_PARCELS,
    fmt: str = "county",
    progress: Callable[[int, int], None] | None = None,
    *,
    years: tuple[int, ...] = DEFAULT_YEARS,
    county_parcels: int = COUNTY_PARCELS,
    enterprises_per_parcel: float | None = None,
    truth: bool = False,
) -> dict:
    """Generate a synthetic bundle into ``out_dir`` and return a summary dict.

    ``fmt='county'`` writes one county of ``parcels`` parcels in county formats (Shapefile GBK,
    xlsx, CSV); ``'gpkg'`` and ``'parquet'`` write a province in county chunks of
    ``county_parcels`` (memory bounded by one county). ``progress(done_parcels, total_parcels)``
    is called after each county. ``enterprises_per_parcel`` defaults to 7.5 for a county (like
    余杭: 15,276 enterprises on 1,923 parcels) and 4 for a province (≈ 2M on 500k parcels).
    Existing bundle files in ``out_dir`` are replaced.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     sorted(write_sample_bundle(d, seed=2, parcels=60, fmt="parquet")["files"])[:2]
    ['buildings.parquet', 'corrections.parquet']
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    parcels = int(parcels)
    if parcels < 1:
        raise ValueError("parcels must be >= 1")
    if fmt == "county" and parcels > MAX_COUNTY_PARCELS:
        raise ValueError(f"fmt='county' writes one county (≤ {MAX_COUNTY_PARCELS} parcels); "
                         "use fmt='gpkg' or 'parquet' for a province")
    if enterprises_per_parcel is None:
        enterprises_per_parcel = ENTERPRISES_PER_PARCEL if fmt == "county" else PROVINCE_ENTERPRISES_PER_PARCEL
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    collector = SummaryCollector(year=max(years))
    if fmt == "county":
        county = generate_county(seed, parcels, years=years, enterprises_per_parcel=enterprises_per_parcel)
        files = _write_county(out, county)
        collector.add(county)
        if truth:
            files += _write_truth_csv(out, county, append=False)
        if progress:
            progress(parcels, parcels)
        n_counties = 1
    else:
        writer = _ProvinceWriter(out, fmt)
        done = 0
        n_counties = 0
        for county in iter_province(seed, parcels, county_parcels=county_parcels, years=years,
                                    enterprises_per_parcel=enterprises_per_parcel):
            writer.add(county)
            collector.add(county)
            if truth:
                _write_truth_csv(out, county, append=n_counties > 0)
            n_counties += 1
            done += len(county.parcels)
            if progress:
                progress(done, parcels)
        files = writer.close()
        if truth:
            files += ["_truth/links.csv", "_truth/enterprises.csv", "_truth/parcels.csv"]
    stats = collector.write(out, title=f"mujun sample — seed {seed}, {parcels} parcels, format {fmt}",
                            files=files)
    return {
        "out_dir": str(out), "format": fmt, "seed": seed, "parcels": parcels, "counties": n_counties,
        "years": list(years), "files": files + ["summary.md", "summary.png"], "counts": stats["counts"],
        "stats": stats, "seconds": round(time.perf_counter() - t0, 2),
    }


# ---------------------------------------------------------------------------------------------
# County format


def _write_county(out: Path, c: SyntheticCounty) -> list[str]:
    files = []
    for role in ("parcels", "buildings", "defacto"):
        gdf = getattr(c, role)
        cols = SHAPEFILE_FIELDS[role]
        frame = gdf[list(cols)].rename(columns=cols)
        if role == "parcels":
            frame[cols["registered"]] = np.where(gdf["registered"].to_numpy(), "是", "否")
        frame = gpd.GeoDataFrame(frame, geometry=gdf.geometry.values, crs=gdf.crs)
        path = out / f"{role}.shp"
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
            path.with_suffix(ext).unlink(missing_ok=True)
        pyogrio.write_dataframe(frame, path, encoding="GBK")
        _fix_dbf_header(path.with_suffix(".dbf"))
        files += [f"{role}{ext}" for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg")]
    ent = _chinese(c.enterprises, "enterprises")
    _write_xlsx(out / "enterprises.xlsx", ent, sheet="企业")
    files.append("enterprises.xlsx")
    for year in sorted(c.metrics["year"].unique()):
        m = _chinese(c.metrics[c.metrics["year"] == year], "metrics")
        _write_xlsx(out / f"metrics_{year}.xlsx", m, sheet=f"{year}年指标")
        files.append(f"metrics_{year}.xlsx")
    _chinese(c.leases, "leases").to_csv(out / "leases.csv", index=False, encoding="utf-8-sig", lineterminator="\r\n")
    c.corrections[list(_CORRECTION_COLUMNS)].to_csv(out / "corrections.csv", index=False, encoding="utf-8")
    return files + ["leases.csv", "corrections.csv"]


def _chinese(df: pd.DataFrame, role: str) -> pd.DataFrame:
    cols = CHINESE_HEADERS[role]
    return df[list(cols)].rename(columns=cols)


def _fix_dbf_header(path: Path) -> None:
    # dBase stores the date of last update (bytes 1–3): fix it so files are byte-reproducible.
    # Byte 29 is the language driver id; 0x4D = CP936 (GBK) lets GDAL and ArcGIS detect GBK
    # even when a county's .cpg is lost.
    with open(path, "r+b") as f:
        f.seek(1)
        f.write(struct.pack("<BBB", _FIXED_DATE[0] - 1900, _FIXED_DATE[1], _FIXED_DATE[2]))
        f.seek(29)
        f.write(b"\x4d")


def _write_xlsx(path: Path, df: pd.DataFrame, sheet: str) -> None:
    """Write one sheet as a minimal, valid .xlsx (inline strings), byte-reproducible.

    openpyxl's cell writer runs at ~30 µs a cell (~20 s for a county's 700k cells); an xlsx
    sheet is plain XML, so we format it directly — text cells as ``inlineStr``, numbers as ``n``,
    empty cells left out — and zip it with fixed timestamps.
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in _xlsx_parts(df, sheet):
            info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, body)


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _column_letter(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def _xlsx_cells(series: pd.Series, letter: str) -> list[str]:
    rows = range(2, len(series) + 2)
    values = series.to_numpy(dtype=object)
    mask = series.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        is_int = pd.api.types.is_integer_dtype(series.dtype)
        return ["" if m else f'<c r="{letter}{r}"><v>{int(v) if is_int else repr(float(v))}</v></c>'
                for r, v, m in zip(rows, values, mask)]
    return ["" if m else f'<c r="{letter}{r}" t="inlineStr"><is><t>{_xml_escape(str(v))}</t></is></c>'
            for r, v, m in zip(rows, values, mask)]


def _xlsx_parts(df: pd.DataFrame, sheet: str) -> list[tuple[str, bytes]]:
    letters = [_column_letter(i) for i in range(df.shape[1])]
    header = "".join(f'<c r="{l}1" t="inlineStr"><is><t>{_xml_escape(str(c))}</t></is></c>'
                     for l, c in zip(letters, df.columns))
    columns = [_xlsx_cells(df.iloc[:, j], letters[j]) for j in range(df.shape[1])]
    body = [f'<row r="1">{header}</row>']
    body += [f'<row r="{i + 2}">{"".join(cells)}</row>' for i, cells in enumerate(zip(*columns))]
    last = f"{letters[-1]}{len(df) + 1}"
    sheet_xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<dimension ref="A1:{last}"/><sheetData>' + "".join(body) + "</sheetData></worksheet>"
    )
    ns = "http://schemas.openxmlformats.org"
    return [
        ("[Content_Types].xml",
         '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
         f'<Types xmlns="{ns}/package/2006/content-types">'
         '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
         '<Default Extension="xml" ContentType="application/xml"/>'
         '<Override PartName="/xl/workbook.xml" '
         'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
         '<Override PartName="/xl/worksheets/sheet1.xml" '
         'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
         '<Override PartName="/xl/styles.xml" '
         'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
         "</Types>"),
        ("_rels/.rels",
         '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
         f'<Relationships xmlns="{ns}/package/2006/relationships">'
         f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/officeDocument" '
         'Target="xl/workbook.xml"/></Relationships>'),
        ("xl/workbook.xml",
         '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
         f'<workbook xmlns="{ns}/spreadsheetml/2006/main" xmlns:r="{ns}/officeDocument/2006/relationships">'
         f'<sheets><sheet name="{_xml_escape(sheet)}" sheetId="1" r:id="rId1"/></sheets></workbook>'),
        ("xl/_rels/workbook.xml.rels",
         '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
         f'<Relationships xmlns="{ns}/package/2006/relationships">'
         f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/worksheet" '
         'Target="worksheets/sheet1.xml"/>'
         f'<Relationship Id="rId2" Type="{ns}/officeDocument/2006/relationships/styles" '
         'Target="styles.xml"/></Relationships>'),
        ("xl/styles.xml",
         '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
         f'<styleSheet xmlns="{ns}/spreadsheetml/2006/main">'
         '<fonts count="1"><font><sz val="11"/><name val="等线"/></font></fonts>'
         '<fills count="2"><fill><patternFill patternType="none"/></fill>'
         '<fill><patternFill patternType="gray125"/></fill></fills>'
         '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
         '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
         '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
         '<cellStyles count="1"><cellStyle name="常规" xfId="0" builtinId="0"/></cellStyles>'
         "</styleSheet>"),
        ("xl/worksheets/sheet1.xml", sheet_xml),
    ]


def _write_truth_csv(out: Path, c: SyntheticCounty, append: bool) -> list[str]:
    d = out / "_truth"
    d.mkdir(exist_ok=True)
    ent_cols = ["uscc", *c.truth_columns["enterprises"]]
    par = c.parcels[["parcel_code", *c.truth_columns["parcels"]]]
    for name, df in (("links", c.truth), ("enterprises", c.enterprises[ent_cols]), ("parcels", par)):
        df.to_csv(d / f"{name}.csv", index=False, mode="a" if append else "w", header=not append)
    return ["_truth/links.csv", "_truth/enterprises.csv", "_truth/parcels.csv"]


# ---------------------------------------------------------------------------------------------
# Province formats


class _ProvinceWriter:
    """Append county chunks to GeoPackage+CSV or (Geo)Parquet files; memory is one county."""

    _GEOM_TYPES = {"parcels": "Polygon", "buildings": "Polygon", "defacto": "Polygon"}

    def __init__(self, out: Path, fmt: str):
        self.out, self.fmt = out, fmt
        self.first = True
        self.writers: dict[str, object] = {}
        names = ("parcels", "buildings", "defacto", "enterprises", "metrics", "leases", "corrections")
        ext = {"gpkg": {"parcels": "gpkg", "buildings": "gpkg", "defacto": "gpkg"}, "parquet": {}}[fmt]
        self.files = [f"{n}.{ext.get(n, 'csv' if fmt == 'gpkg' else 'parquet')}" for n in names]
        for f in self.files:
            (out / f).unlink(missing_ok=True)

    def add(self, c: SyntheticCounty) -> None:
        layers = {role: getattr(c, role).to_crs(4490) for role in ("parcels", "buildings", "defacto")}
        tables = {"enterprises": c.enterprises, "metrics": c.metrics, "leases": c.leases,
                  "corrections": c.corrections}
        if self.fmt == "gpkg":
            for role, gdf in layers.items():
                cols = CHINESE_HEADERS[role]
                frame = gdf[list(cols)].rename(columns=cols)
                if role == "parcels":
                    frame[cols["registered"]] = np.where(gdf["registered"].to_numpy(), "是", "否")
                frame = gpd.GeoDataFrame(frame, geometry=gdf.geometry.values, crs=4490)
                pyogrio.write_dataframe(frame, self.out / f"{role}.gpkg", layer=role, append=not self.first,
                                        geometry_type=self._GEOM_TYPES[role], promote_to_multi=False)
            for role, df in tables.items():
                frame = df[list(_CORRECTION_COLUMNS)] if role == "corrections" else _chinese(df, role)
                frame.to_csv(self.out / f"{role}.csv", index=False, encoding="utf-8",
                             mode="w" if self.first else "a", header=self.first)
        else:
            for role, gdf in layers.items():
                self._parquet(role, _geo_table(gdf, role))
            for role, df in tables.items():
                cols = list(_CORRECTION_COLUMNS) if role == "corrections" else list(CHINESE_HEADERS[role])
                self._parquet(role, _plain_table(df[cols], role))
        self.first = False

    def _parquet(self, role: str, table) -> None:
        import pyarrow.parquet as pq

        w = self.writers.get(role)
        if w is None:
            w = self.writers[role] = pq.ParquetWriter(self.out / f"{role}.parquet", table.schema,
                                                       compression="zstd")
        w.write_table(table)

    def close(self) -> list[str]:
        for w in self.writers.values():
            w.close()
        return list(self.files)


_ARROW_TYPES = {
    "parcels": {"parcel_code": "string", "owner_uscc": "string", "owner_name": "string", "land_use": "string",
                "registered_area_m2": "float64", "township": "string", "registered": "bool"},
    "buildings": {"building_id": "string", "floors": "int32", "floor_area_m2": "float64", "parcel_code": "string"},
    "defacto": {"user_uscc": "string", "note": "string"},
    "enterprises": {"uscc": "string", "name": "string", "lon": "float64", "lat": "float64", "coord_sys": "string",
                    "industry_code": "string", "scale": "string", "township": "string", "address": "string",
                    "founded": "string", "flags": "string"},
    "metrics": {"uscc": "string", "year": "int32", "tax_paid": "float64", "tax_refund": "float64",
                "value_added": "float64", "revenue": "float64", "output_value": "float64",
                "energy_tce": "float64", "emission_t": "float64", "rd_expense": "float64",
                "employees": "int64", "electricity_kwh": "int64", "meter_id": "string"},
    "leases": {"tenant_uscc": "string", "parcel_code": "string", "landlord_uscc": "string",
               "floor_area_m2": "float64", "start_date": "string", "end_date": "string"},
    "corrections": {"uscc": "string", "parcel_code": "string", "action": "string", "share": "float64",
                    "reason": "string", "by": "string"},
}


def _schema(role: str, geometry: bool = False):
    import pyarrow as pa

    fields = [pa.field(k, getattr(pa, "bool_" if v == "bool" else v)()) for k, v in _ARROW_TYPES[role].items()]
    if geometry:
        fields.append(pa.field("geometry", pa.binary()))
    return pa.schema(fields)


def _plain_table(df: pd.DataFrame, role: str):
    import pyarrow as pa

    return pa.Table.from_pandas(df, schema=_schema(role), preserve_index=False)


def _geo_table(gdf, role: str):
    import json

    import pyarrow as pa
    import shapely
    from pyproj import CRS

    df = pd.DataFrame(gdf[list(_ARROW_TYPES[role])])
    df["geometry"] = shapely.to_wkb(gdf.geometry.values, output_dimension=2)
    schema = _schema(role, geometry=True)
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"],
                                    "crs": CRS.from_epsg(4490).to_json_dict()}}}
    schema = schema.with_metadata({b"geo": json.dumps(geo).encode()})
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)
