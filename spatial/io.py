"""Read an import bundle (一个县交来的数据包) into canonical DataFrames.

A bundle is one directory; files are found by role from the start of their name (``parcels.*``
宗地, ``buildings.*`` 建筑, ``defacto.*`` 事实用地, ``enterprises.*`` 企业, ``metrics*.*`` 指标 — one or
one per year —, ``leases.*`` 租赁, ``corrections.*`` 纠偏; the Chinese role name works too:
``宗地.shp``), the format from the extension. Columns are matched through the alias table of
:mod:`spatial.columns`. Reading is pure: files in, DataFrames out, nothing else touched.

:func:`read_bundle` never drops a row. A cell it cannot parse (``'abc'`` in 实缴税金, an unknown
坐标系) is set to missing and listed in ``Bundle.rejects`` with severity ``error``;
:func:`spatial.validate.validate_bundle` then removes every row with an error. Problems that make
a whole file unusable raise :class:`BundleError` with a message naming the file and what to do.

:func:`bundle_from_frames` runs the same steps on tables already in memory (a county's row group
of a GeoParquet province, :mod:`app.province`), numbering rows as rows of the whole file.

Example
-------
>>> b = read_bundle("county_2024/")                                   # doctest: +SKIP
>>> b.tables["parcels"].crs.to_epsg(), b.column_map["parcels.shp"]     # doctest: +SKIP
(4490, {'ZDDM': 'parcel_code', '权利人统一': 'owner_uscc', ...})
>>> read_bundle("fr/", overrides={"parcels": {"path": "cadastre_25354.gpkg", "layer": "parcelle",
...     "columns": {"IDU": "parcel_code", "SUPF": "registered_area_m2"}},
...     "enterprises": {"required": False}})                           # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import functools
import csv
import io
import itertools
import datetime as _dt
import re
import struct
import warnings
from zlib import error as zlib_error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS, Transformer

from spatial.columns import (
    ALIASES,
    COLUMNS,
    DTYPES,
    EXTRA_PREFIX,
    LAYER_ROLES,
    MAX_TEXT_LENGTH,
    PLAUSIBLE_MAX,
    ONE_OF_REQUIRED,
    REQUIRED_COLUMNS,
    REQUIRED_ROLES,
    ROLE_NAMES,
    ROLES,
    normalize_header,
    match_columns,
)
from spatial.crs import normalize_coord_sys, to_cgcs2000

__all__ = ["Bundle", "BundleError", "bundle_from_frames", "read_bundle", "REJECT_COLUMNS", "TARGET_CRS"]

#: Every layer is converted to CGCS2000 geographic.
TARGET_CRS = "EPSG:4490"
REJECT_COLUMNS = ["file", "row", "field", "value", "reason", "severity"]

LAYER_EXTS = (".shp", ".gpkg", ".geojson", ".json", ".fgb")
TABLE_EXTS = (".csv", ".xlsx")
# Sidecars of a Shapefile and files editors leave behind: never a role file of their own.
_IGNORED_EXTS = {".dbf", ".shx", ".prj", ".cpg", ".qpj", ".sbn", ".sbx", ".qix", ".xml", ".qmd", ".lock",
                 ".md", ".txt", ".aux", ".ovr", ".gpkg-wal", ".gpkg-shm"}
_ROLE_PREFIXES = {
    "parcels": ("parcels", "宗地"), "buildings": ("buildings", "建筑"), "defacto": ("defacto", "事实用地"),
    "enterprises": ("enterprises", "企业"), "metrics": ("metrics", "指标"), "leases": ("leases", "租赁"),
    "corrections": ("corrections", "纠偏"),
}
_OVERRIDE_KEYS = {"path", "layer", "columns", "crs", "required", "encoding"}

# Large layers and CSVs are read in chunks so ``progress`` can report and memory stays flat.
CHUNK = 200_000
# Cells that mean "no value" in county spreadsheets (a dash or 无 rather than an empty cell).
_MISSING_TOKENS = {"", "-", "--", "—", "——", "/", "无", "null", "none", "nan", "n/a", "na", "#n/a", "<na>"}
# The header is looked for in the first rows (a title row or two above it is common).
_HEADER_SCAN_ROWS = 30
# Margin (degrees) around a CRS's area of use before coordinates count as "outside".
_AOU_MARGIN_DEG = 1.0

Progress = Callable[[str, int, int], None]


class BundleError(Exception):
    """A bundle (or one file of it) cannot be imported; the message says which file and what to do."""


@dataclass
class Bundle:
    """The tables of one bundle, with what was understood and what was rejected.

    ``tables[role]``: canonical columns of the role (all of them; absent ones are missing values),
    extra columns prefixed ``x_``, ``_file`` (path relative to the bundle, ``#layer`` appended when a
    layer was named in overrides) and ``_row`` (1-based
    row as a person sees it: the spreadsheet line for csv/xlsx, the feature number for layers).
    Layers and enterprises are GeoDataFrames in EPSG:4490.
    ``column_map[file]``: source column → canonical column. ``rejects``: one row per problem
    (``file, row, field, value, reason, severity``; severity ``error`` rejects the row, ``warning``
    keeps it; row 0 means the whole file). ``source_crs[role]``: the CRS the role's layer came in.
    """

    tables: dict[str, pd.DataFrame]
    column_map: dict[str, dict[str, str]]
    rejects: pd.DataFrame
    files: dict[str, list[Path]]
    source_crs: dict[str, str]
    ignored: list[Path] = field(default_factory=list)

    @property
    def errors(self) -> pd.DataFrame:
        return self.rejects[self.rejects["severity"] == "error"]

    @property
    def warnings(self) -> pd.DataFrame:
        return self.rejects[self.rejects["severity"] == "warning"]

    def describe_columns(self) -> str:
        """The column map as text, for a person to check what was understood as what."""
        lines = []
        for f, mapping in self.column_map.items():
            lines.append(f"{f}:")
            lines += [f"  {src} → {dst}" for src, dst in mapping.items()]
        return "\n".join(lines)

    def messages(self) -> list[str]:
        """Rejects as one line each: ``file:row field='value' [severity] reason``."""
        return [
            f"{r.file}:{r.row} {r.field}={r.value!r} [{r.severity}] {r.reason}"
            for r in self.rejects.itertuples(index=False)
        ]


# --------------------------------------------------------------------------------------------
# public entry point


def read_bundle(path, *, crs=None, overrides=None, progress: Progress | None = None) -> Bundle:
    """Read every file of an import bundle directory.

    ``crs`` is the CRS assumed for layers that carry none (a Shapefile without .prj);
    ``overrides[role]`` may give ``path`` (file or list of files, relative to the bundle or
    absolute), ``layer`` (layer of a gpkg, sheet of an xlsx), ``columns`` (source → canonical,
    winning over the alias table), ``crs`` (replaces the layer's CRS), ``encoding`` (of a .dbf or
    .csv) and ``required=False`` (for a bundle without that role). ``progress(role, done, total)``
    is called while reading.

    >>> b = read_bundle("bundle/", crs="EPSG:4549")                   # doctest: +SKIP
    >>> sorted(b.tables)                                              # doctest: +SKIP
    ['enterprises', 'metrics', 'parcels']
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: 不是目录 (not a directory) — a bundle is a directory of files named by role")
    overrides = _check_overrides(overrides)
    files, ignored = _find_files(root, overrides)
    for role in REQUIRED_ROLES:
        if not files.get(role) and overrides.get(role, {}).get("required", True):
            raise BundleError(
                f"{root}: 缺少必需文件 {role}.*（{ROLE_NAMES[role]}）(missing required file {role}.*): "
                f"add {role}.shp/.gpkg/.geojson/.fgb" + ("/.csv/.xlsx" if role == "enterprises" else "")
                + f" or name it with overrides={{'{role}': {{'path': ...}}}}; files found: "
                + (", ".join(sorted(p.name for p in root.iterdir())) or "none")
            )
    rejects = _Rejects()
    tables: dict[str, pd.DataFrame] = {}
    column_map: dict[str, dict[str, str]] = {}
    source_crs: dict[str, str] = {}
    for role in ROLES:
        parts = []
        for fpath in files.get(role, []):
            ov = overrides.get(role, {})
            label = _label(root, fpath)
            if ov.get("layer") and fpath.suffix.lower() in LAYER_EXTS:
                # One GeoPackage may hold several roles (parcelle, batiment): the layer is part of
                # the name, so rejects of one role never point at rows of another.
                label = f"{label}#{ov['layer']}"
            df, cmap, src_crs = _read_one(role, fpath, label, ov, crs, rejects, progress)
            column_map[label] = cmap
            if src_crs:
                source_crs[role] = src_crs
            parts.append(df)
        if parts:
            tables[role] = _concat(parts)
    return Bundle(tables=tables, column_map=column_map, rejects=rejects.frame(), files=files,
                  source_crs=source_crs, ignored=ignored)


def bundle_from_frames(frames: dict[str, pd.DataFrame], *, labels: dict[str, str] | None = None,
                       first_rows: dict[str, int] | None = None) -> Bundle:
    """A bundle from tables already in memory (a county's row group of a GeoParquet province),
    through the steps :func:`read_bundle` runs on each file once it is read: column matching
    (alias table), required columns, junk check, text cells, typed cells, enterprise points.

    ``frames[role]``: the table as read. Layers (``parcels``, ``buildings``, ``defacto``) are
    GeoDataFrames with a CRS (features outside its area of use rejected, then converted to
    EPSG:4490); ``enterprises`` a table with lon/lat (and 坐标系) or a GeoDataFrame of points.
    ``labels[role]``: the name rejects give as ``file`` (default ``role``); ``first_rows[role]``:
    the ``_row`` of the table's first row (default 1; rows are numbered on from it, so a row
    group at offset *k* of a file passes *k* + 1 and rejects name the row of the whole file).
    Nothing is dropped (like :func:`read_bundle`): :func:`spatial.validate.validate_bundle`
    removes the rows with errors.

    Raises :class:`BundleError` when a required role is missing or empty, a table lacks a
    required column, a layer has no CRS, or a large table is mostly junk.

    >>> b = bundle_from_frames({"parcels": parcels_4490, "enterprises": ents},      # doctest: +SKIP
    ...                        labels={"parcels": "parcels.parquet"}, first_rows={"parcels": 2001})
    """
    labels, first_rows = labels or {}, first_rows or {}
    unknown = set(frames) - set(ROLES)
    if unknown:
        raise BundleError(f"unknown roles {sorted(unknown)}; roles are {', '.join(ROLES)}")
    for role in REQUIRED_ROLES:
        if role not in frames:
            raise BundleError(f"缺少必需表 {role}（{ROLE_NAMES[role]}）(missing required table {role})")
    rejects = _Rejects()
    tables: dict[str, pd.DataFrame] = {}
    column_map: dict[str, dict[str, str]] = {}
    source_crs: dict[str, str] = {}
    for role in ROLES:
        if role not in frames:
            continue
        raw, label = frames[role].reset_index(drop=True), labels.get(role, role)
        rows = np.arange(len(raw), dtype="int64") + int(first_rows.get(role, 1))
        layer = role in LAYER_ROLES or (role == "enterprises" and isinstance(raw, gpd.GeoDataFrame))
        if layer:
            if not isinstance(raw, gpd.GeoDataFrame) or raw.crs is None:
                raise BundleError(f"{label}: 没有坐标系 (layer {role} must be a GeoDataFrame with a CRS)")
            source_crs[role] = raw.crs.to_string()
            raw = _to_target(raw, raw.crs, label, role, rows, rejects)
        else:
            raw = raw.copy(deep=False)  # the steps may add a derived column: never to the caller's frame
        tables[role], column_map[label] = _from_raw(role, raw, rows, label, rejects,
                                                    point_layer=layer and role == "enterprises")
    return Bundle(tables=tables, column_map=column_map, rejects=rejects.frame(), files={}, source_crs=source_crs)


# --------------------------------------------------------------------------------------------
# finding files


def _check_overrides(overrides) -> dict[str, dict]:
    overrides = dict(overrides or {})
    for role, ov in overrides.items():
        if role not in ROLES:
            raise BundleError(f"overrides: unknown role {role!r}; roles are {', '.join(ROLES)}")
        unknown = set(ov) - _OVERRIDE_KEYS
        if unknown:
            raise BundleError(f"overrides[{role!r}]: unknown keys {sorted(unknown)}; allowed {sorted(_OVERRIDE_KEYS)}")
    return overrides


def _role_of(name: str) -> str | None:
    low = name.lower()
    for role, prefixes in _ROLE_PREFIXES.items():
        if low.startswith(prefixes):
            return role
    return None


def _find_files(root: Path, overrides: dict) -> tuple[dict[str, list[Path]], list[Path]]:
    files: dict[str, list[Path]] = {}
    ignored: list[Path] = []
    real_root = root.resolve()
    for p in sorted(root.iterdir()):
        if p.is_symlink() and not _inside(p.resolve(), real_root):
            # A link to /etc/passwd or another county's data must never be read as part of a bundle.
            raise BundleError(
                f"{p.name}: 指向数据包之外的符号链接 (symlink to {p.resolve()}, outside the bundle) — "
                f"把文件本身复制到数据包目录中 (copy the file itself into the bundle)")
        if not p.is_file() or p.name.startswith(("~$", ".")):
            continue
        ext = p.suffix.lower()
        role = _role_of(p.name)
        if role is None or ext in _IGNORED_EXTS:
            ignored.append(p)
            continue
        if role in overrides and "path" in overrides[role]:
            continue
        _check_format(role, p)
        files.setdefault(role, []).append(p)
    for role, ov in overrides.items():
        if "path" in ov:
            paths = ov["path"] if isinstance(ov["path"], (list, tuple)) else [ov["path"]]
            resolved = [Path(x) if Path(x).is_absolute() else root / x for x in paths]
            for p in resolved:
                if not p.exists():
                    raise BundleError(f"{p}: 文件不存在 (file named in overrides[{role!r}] does not exist)")
                _check_format(role, p)
            files[role] = resolved
    return files, ignored


def _inside(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def _check_format(role: str, p: Path) -> None:
    ext = p.suffix.lower()
    allowed = LAYER_EXTS if role in LAYER_ROLES else TABLE_EXTS
    if role == "enterprises":
        allowed = LAYER_EXTS + TABLE_EXTS
    if ext not in allowed:
        hint = " — save it as .xlsx (Excel: 另存为 Excel 工作簿)" if ext in (".xls", ".et", ".ods") else ""
        raise BundleError(
            f"{p.name}: 不支持的格式 {ext or '(no extension)'} (unsupported format for {role}; "
            f"use {', '.join(allowed)}){hint}"
        )


def _label(root: Path, p: Path) -> str:
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------------------------
# reading one file


def _read_one(role, fpath: Path, label: str, ov: dict, crs_arg, rejects: "_Rejects", progress):
    ext = fpath.suffix.lower()
    if fpath.stat().st_size == 0:
        raise BundleError(f"{label}: 文件为空 (file is empty, 0 bytes) — export it again")
    hints: dict[str, str] = {}
    formula_cells: list[tuple[int, str]] = []
    if ext in LAYER_EXTS:
        raw, rows, src_crs, hints = _read_layer(role, fpath, label, ov, crs_arg, progress, rejects)
    else:
        raw, rows, formula_cells = _read_table(role, fpath, label, ov, progress, rejects)
        src_crs = None
    is_point_layer = role == "enterprises" and ext in LAYER_EXTS
    df, mapping = _from_raw(role, raw, rows, label, rejects, hints=hints, columns=ov.get("columns"),
                            point_layer=is_point_layer, formula_cells=formula_cells, name=fpath)
    return df, mapping, src_crs


def _from_raw(role, raw: pd.DataFrame, rows: np.ndarray, label: str, rejects: "_Rejects", *,
              hints: dict | None = None, columns: dict | None = None, point_layer: bool = False,
              formula_cells=(), name: Path | None = None):
    """A role's table as read (text cells, or a layer in EPSG:4490 with a ``geometry`` column)
    → its canonical table: columns matched, required columns checked, junk and text cells
    checked, cells typed, enterprise points built. The steps every source shares (files through
    :func:`read_bundle`, in-memory tables through :func:`bundle_from_frames`).

    ``rows``: each row's number as a person finds it; ``columns``: source → canonical, winning
    over the alias table (``hints``: the reader's own, e.g. a recoded Shapefile field); ``name``:
    the file name a metrics year may be taken from.
    Returns (table, column map). Raises :class:`BundleError` for a table that cannot be used."""
    layer = role in LAYER_ROLES or point_layer
    headers = [c for c in raw.columns if c != "geometry"] if layer else list(raw.columns)
    if len(raw) == 0 and role in REQUIRED_ROLES:
        raise BundleError(f"{label}: 文件没有数据行 (no data rows) — a {role} file needs at least one row")
    if any("\x00" in str(h) or len(str(h)) > 200 for h in headers):
        # a header is stored as a key of the row's attrs (JSONB): no NUL, valid text, bounded length
        clean = _unique([str(h).replace("\x00", "")[:200] for h in headers])
        raw = raw.rename(columns=dict(zip(headers, clean)))
        hints = {clean[headers.index(k)] if k in headers else k: v for k, v in (hints or {}).items()}
        formula_cells = [(r, clean[headers.index(h)]) for r, h in formula_cells]
        headers = clean
    mapping, conflicts = match_columns(role, headers, {**(hints or {}), **(columns or {})})
    if conflicts:
        raise BundleError(f"{label}: " + "; ".join(conflicts) + " — rename one or map it with overrides[…]['columns']")
    if point_layer:
        # lon/lat come from the geometry; attribute columns called lon/lat are kept as extras.
        mapping = {s: c for s, c in mapping.items() if c not in ("lon", "lat")}
    _derive_missing(role, raw, mapping, name if name is not None else Path(label))
    _require_columns(role, label, mapping, headers, point_layer)
    _check_junk(role, raw, mapping, label)
    _check_text_cells(raw, rows, mapping, label, rejects)
    for row, header in formula_cells:
        # A formula Excel never calculated (written by a script, or saved without recalculation)
        # has no value in the file: reading it as empty would overwrite a stored figure with NULL.
        canon = mapping.get(header)
        rejects.add(label, np.array([row]), canon or header, "",
                    "公式没有计算结果 (formula cell without a cached value) — 在 Excel 中打开、重新计算并保存，"
                    "或把公式改为数值" + ("" if canon else "（该列不在标准字段中，只提示）"),
                    "error" if canon else "warning")
    df = _canonicalize(role, raw, rows, mapping, label, rejects)
    if role == "enterprises":
        df = _enterprise_points(df, raw, label, rejects, point_layer)
    elif role in LAYER_ROLES:
        df = gpd.GeoDataFrame(df, geometry=raw.geometry.values, crs=TARGET_CRS)
    return df, mapping


def _derive_missing(role, raw: pd.DataFrame, mapping: dict, fpath: Path) -> None:
    """Fill required columns a file implies without naming them (documented in data/README.md)."""
    have = set(mapping.values())
    if role == "parcels" and "parcel_code" not in have and "unit_code" in have:
        # A 不动产单元号 starts with the 19-character 宗地代码.
        src = next(s for s, c in mapping.items() if c == "unit_code")
        raw["(前19位 of " + src + ")"] = raw[src].astype("string").str.strip().str[:19]
        mapping["(前19位 of " + src + ")"] = "parcel_code"
    if role == "metrics" and "year" not in have:
        m = re.search(r"(19|20)\d{2}", fpath.stem)
        if m:
            key = f"(文件名 {fpath.name})"
            raw[key] = m.group(0)
            mapping[key] = "year"


def _mojibake_hint(headers) -> str:
    """Headers that are UTF-8 bytes shown as Latin-1 / cp1252 (``ç»ä¸ç¤¾ä¼`` for 统一社会): say so."""
    for h in headers:
        for enc in ("latin-1", "cp1252"):
            try:
                fixed = str(h).encode(enc).decode("utf-8")
            except (UnicodeError, ValueError):
                continue
            if fixed != str(h) and any("\u4e00" <= ch <= "\u9fff" for ch in fixed):
                return (f" — 表头是乱码：{h!r} 原本是 {fixed!r}（UTF-8 文字被按 {enc} 再次编码）(headers are "
                        f"double-encoded mojibake) — 从原始数据重新导出为 CSV UTF-8")
    return ""


def _require_columns(role, label, mapping, headers, is_point_layer) -> None:
    have = set(mapping.values())
    need = [c for c in REQUIRED_COLUMNS[role] if not (is_point_layer and c in ("lon", "lat"))]
    missing = [c for c in need if c not in have]
    from spatial.columns import CHINESE_HEADERS

    zh = CHINESE_HEADERS[role]
    if missing:
        raise BundleError(
            f"{label}: 缺少必需列 " + ", ".join(f"{zh[c]}（{c}）" for c in missing)
            + f" (missing required column(s) {', '.join(missing)}); columns found: "
            + (", ".join(map(str, headers)) or "none")
            + (_mojibake_hint(headers) or
               " — rename the column or map it with overrides={'" + role + "': {'columns': {SOURCE: CANONICAL}}}")
        )
    one_of = ONE_OF_REQUIRED.get(role)
    if one_of and not have.intersection(one_of):
        raise BundleError(
            f"{label}: 需要列 " + " 或 ".join(f"{zh[c]}（{c}）" for c in one_of)
            + f" (needs one of {', '.join(one_of)}); columns found: " + ", ".join(map(str, headers))
        )


#: A file of at least this many rows whose key column is mostly junk is refused outright: listing
#: a million "invalid USCC" rows helps nobody and costs gigabytes (a pasted dump, a wrong sheet).
JUNK_MIN_ROWS = 10_000
#: Share of rows without a usable key above which such a file is refused.
JUNK_SHARE = 0.9
_KEY_COLUMN = {"parcels": "parcel_code", "buildings": "building_id", "enterprises": "uscc", "metrics": "uscc",
               "leases": "tenant_uscc", "corrections": "uscc"}
_USCC_SHAPE = r"[0-9A-Z]{18}"


def _check_junk(role, raw: pd.DataFrame, mapping: dict, label: str, complete: bool = True) -> None:
    """Refuse a big file whose key column is mostly blank or malformed (raises BundleError).

    Called on the rows read so far (``complete=False``: while streaming a CSV, so a file of
    millions of junk rows is refused after its first chunk, not after all of it is in memory)."""
    counted = _junk_rows(role, raw, mapping)
    if counted is not None:
        _refuse_junk(role, counted[0], counted[1], label, complete)


def _junk_rows(role, raw: pd.DataFrame, mapping: dict) -> tuple[int, int] | None:
    """(rows without a usable key, rows) of a table, or None when the role has no key column here."""
    key = _KEY_COLUMN.get(role)
    src = next((s for s, c in mapping.items() if c == key), None)
    if src is None:
        return None
    t = raw[src].astype("string").str.strip().str.upper()
    ok = t.notna() & (t != "")
    if key.endswith("uscc"):
        ok &= t.str.fullmatch(_USCC_SHAPE).fillna(False)
    bad = ~ok.to_numpy(dtype=bool)
    if bad.any():
        # wholly blank lines are dropped later without a word: they are not junk
        blank = np.ones(len(raw), dtype=bool)
        for c in raw.columns:
            blank &= (raw[c].astype("string").fillna("").str.strip() == "").to_numpy(dtype=bool)
        bad &= ~blank
        return int(bad.sum()), int((~blank).sum())
    return 0, len(raw)


def _refuse_junk(role, bad: int, n: int, label: str, complete: bool) -> None:
    key = _KEY_COLUMN[role]
    if n >= JUNK_MIN_ROWS and bad > JUNK_SHARE * n:
        from spatial.columns import CHINESE_HEADERS

        zh = CHINESE_HEADERS[role][key]
        first = "" if complete else "前 "
        raise BundleError(
            f"{label}: {first}{n} 行中 {bad} 行的{zh}（{key}）为空或格式不对，文件大部分是无效行 "
            f"({bad} of {'the first ' if not complete else ''}{n} rows have no usable {key}: wrong sheet, "
            f"or junk rows below the data) — 删除无效行或导出正确的表后重新导入")


def _check_text_cells(raw: pd.DataFrame, rows, mapping: dict, label: str, rejects: "_Rejects") -> None:
    """Every text cell: no NUL byte (PostgreSQL text cannot hold one), at most MAX_TEXT_LENGTH characters.

    Rows with such a cell are rejected (error) naming the column; the limits are in
    :data:`spatial.columns.MAX_TEXT_LENGTH`.
    """
    for src in raw.columns:
        if src == "geometry":
            continue
        s = raw[src]
        if not (pd.api.types.is_string_dtype(s) or s.dtype == object):
            continue
        t = s.astype("string").reset_index(drop=True)
        canon = mapping.get(src)
        field = canon or str(src)
        nul = t.str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool)
        if nul.any():
            rejects.add(label, rows[nul], field, t[nul].to_numpy(dtype=object),
                        "含有空字符 NUL（\\x00）(cell contains a NUL byte) — 删除该不可见字符后重新导出", "error")
        undecodable = t.str.contains("\ufffd", regex=False).fillna(False).to_numpy(dtype=bool) & ~nul
        if undecodable.any():
            rejects.add(label, rows[undecodable], field, t[undecodable].to_numpy(dtype=object),
                        "无法解码的文字：该行不是 UTF-8（文件中混有 GBK 等其他编码）(bytes that are not valid UTF-8) — "
                        "把整个文件另存为 CSV UTF-8 后重新导入", "error")
        nul |= undecodable
        limit = MAX_TEXT_LENGTH.get(canon, MAX_TEXT_LENGTH["default"]) if canon else MAX_TEXT_LENGTH["extra"]
        n = t.str.len().fillna(0).to_numpy()
        long = (n > limit) & ~nul
        if long.any():
            rejects.add(label, rows[long], field, t[long].to_numpy(dtype=object),
                        np.array([f"文字过长：{k} 个字符，最多 {limit} 个 (text longer than {limit} characters) — "
                                  f"检查是否粘贴错误，缩短后重新导入" for k in n[long]], dtype=object), "error")


# --------------------------------------------------------------------------------------------
# layers (pyogrio)


def _read_layer(role, fpath: Path, label: str, ov: dict, crs_arg, progress, rejects: "_Rejects"):
    ext = fpath.suffix.lower()
    encoding = ov.get("encoding")
    if ext == ".shp":
        _check_shapefile(fpath, label)
        if encoding is None:
            encoding = _shapefile_encoding(fpath, label, rejects)
    layer = ov.get("layer") or _pick_layer(fpath, label, role)
    cut_utf8 = False
    try:
        info = pyogrio.read_info(fpath, layer=layer, encoding=encoding)
    except UnicodeError:
        if ext != ".shp":
            raise BundleError(f"{label}: 编码错误 (text is not valid in the file's encoding) — export it again as UTF-8")
        cut_utf8 = True
    except Exception as exc:  # GDAL's message says what is broken (malformed, truncated …)
        raise BundleError(f"{label}: 无法读取 (cannot read: {exc}) — the file is damaged or truncated; export it again") from exc
    if ext == ".shp" and (encoding or "").upper() == "UTF-8" and not cut_utf8:
        cut_utf8 = _has_cut_utf8_names(_sidecar(fpath, ".dbf"))
    if cut_utf8:
        # A UTF-8 .dbf whose Chinese field names were cut mid-character at 10 bytes: GDAL hands
        # back bytes pyogrio cannot decode. Read as ISO-8859-1 (bytes preserved) and recode.
        encoding = "ISO-8859-1"
        try:
            info = pyogrio.read_info(fpath, layer=layer, encoding=encoding)
        except Exception as exc:
            raise BundleError(f"{label}: 无法读取 (cannot read: {exc}) — the file is damaged or truncated; export it again") from exc
    total = int(info.get("features") or 0)
    parts, done = [], 0
    try:
        # Chunks let progress report on large layers; small ones are read in one go.
        while True:
            n = min(CHUNK, total - done) if total > CHUNK else None
            with warnings.catch_warnings():
                # GeoJSON merged from tiles repeats feature ids; GDAL renumbers them and says so.
                # We never use the fid (rows are numbered by position), so the warning is noise.
                warnings.filterwarnings("ignore", message="Several features with id", category=RuntimeWarning)
                part = pyogrio.read_dataframe(fpath, layer=layer, encoding=encoding, force_2d=True,
                                              skip_features=done if total > CHUNK else 0, max_features=n)
            parts.append(part)
            done += len(part)
            if progress:
                progress(role, done, total or done)
            if total <= CHUNK or len(part) == 0 or done >= total:
                break
    except UnicodeError as exc:
        cpg = _sidecar(fpath, ".cpg")
        raise BundleError(
            f"{label}: 编码错误 (text does not decode as {encoding or 'the declared encoding'}: {exc})"
            + (f" — {cpg.name} 声明的编码可能不对，改正或删除 {cpg.name}" if cpg else " — 用 UTF-8 或 GBK 重新导出")
        ) from exc
    except Exception as exc:
        raise BundleError(f"{label}: 无法读取 (cannot read: {exc}) — the file is damaged or truncated; export it again") from exc
    gdf = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    if not isinstance(gdf, gpd.GeoDataFrame) or "geometry" not in gdf:
        raise BundleError(f"{label}: 没有几何 (layer has no geometry) — {role} must be a spatial layer")
    gdf = gdf.reset_index(drop=True)
    hints: dict[str, str] = {}
    if cut_utf8:
        gdf, hints = _recode_cut_utf8(gdf, role, label, rejects)
    src = _resolve_crs(gdf, label, role, ov.get("crs"), crs_arg)
    rows = np.arange(1, len(gdf) + 1)
    return _to_target(gdf, src, label, role, rows, rejects), rows, CRS.from_user_input(src).to_string(), hints


def _to_target(gdf: gpd.GeoDataFrame, src, label: str, role: str, rows: np.ndarray, rejects: "_Rejects"):
    """A layer labelled ``src`` in :data:`TARGET_CRS`, features outside ``src``'s area of use
    rejected (:func:`_check_area_of_use`)."""
    gdf = gdf.set_crs(src, allow_override=True)
    gdf = _check_area_of_use(gdf, label, role, src, rejects, rows)
    return to_crs_cached(gdf, TARGET_CRS)


@functools.lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    # Building a Transformer costs PROJ ~0.3 s (operation search in proj.db); a bundle needs the
    # same few again and again.
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def to_crs_cached(gdf: gpd.GeoDataFrame, dst) -> gpd.GeoDataFrame:
    """``gdf.to_crs(dst)`` with a cached Transformer (same result; geopandas builds a new one each call)."""
    dst_crs = CRS.from_user_input(dst)
    if gdf.crs is not None and gdf.crs.equals(dst_crs):
        return gdf
    t = _transformer(gdf.crs.to_wkt(), dst_crs.to_wkt())

    def fn(xy):
        x, y = t.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    geoms = shapely.transform(gdf.geometry.values, fn)
    return gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=dst_crs))


def _sidecar(fpath: Path, ext: str) -> Path | None:
    for cand in (fpath.with_suffix(ext), fpath.with_suffix(ext.upper())):
        if cand.exists():
            return cand
    return None


def _check_shapefile(fpath: Path, label: str) -> None:
    """Refuse a cut .shp/.dbf: GDAL reads a truncated .shp silently, with the lost features' geometry None.

    Hand-rolled because GDAL does not report it: the .shp header holds the file length (bytes
    24–27, big-endian, 16-bit words) and the .dbf header the record count and sizes.
    """
    for part, what in ((".shx", "索引"), (".dbf", "属性表")):
        if _sidecar(fpath, part) is None:
            raise BundleError(
                f"{label}: 缺少 {part} 文件（{what}）(missing sidecar file {fpath.stem}{part}) — "
                f"copy all Shapefile parts (.shp .shx .dbf .prj .cpg)")
    size = fpath.stat().st_size
    with open(fpath, "rb") as fh:
        head = fh.read(100)
    if len(head) < 100 or struct.unpack(">i", head[0:4])[0] != 9994:
        raise BundleError(f"{label}: 不是有效的 Shapefile (not a valid .shp: bad header) — export it again")
    declared = struct.unpack(">i", head[24:28])[0] * 2
    if size < declared:
        raise BundleError(
            f"{label}: 文件被截断 (truncated: {size} of {declared} bytes) — copy or export the Shapefile again"
        )
    dbf = _sidecar(fpath, ".dbf")
    if dbf is not None:
        with open(dbf, "rb") as fh:
            dh = fh.read(12)
        if len(dh) < 12 or dbf.stat().st_size < max(struct.unpack("<H", dh[8:10])[0] if len(dh) >= 10 else 0, 33):
            raise BundleError(f"{dbf.name}: 文件被截断 (truncated .dbf: {dbf.stat().st_size} bytes, its header is "
                              f"incomplete) — export it again")
        if len(dh) == 12:
            n, hlen, rlen = struct.unpack("<IHH", dh[4:12])
            if dbf.stat().st_size < hlen + n * rlen:
                raise BundleError(f"{dbf.name}: 文件被截断 (truncated .dbf: {dbf.stat().st_size} of {hlen + n * rlen} bytes) — export it again")


def _dbf_encoding(dbf: Path | None, sample_bytes: int = 8 << 20) -> str | None:
    """Encoding of a .dbf without .cpg: UTF-8 if its bytes decode as UTF-8, else GBK (gb18030).

    GDAL falls back to ISO-8859-1 when a .dbf has no .cpg and no language byte, which turns GBK
    field names and values into mojibake; trying to decode is reliable because GBK text is
    almost never valid UTF-8. Field names are tried one by one, tolerating a character cut at the
    10-byte limit (UTF-8 Chinese names are cut mid-character). Pure ASCII → None.
    """
    if dbf is None:
        return None
    with open(dbf, "rb") as fh:
        data = fh.read(sample_bytes)
    if len(data) < 32:
        return None
    hlen = struct.unpack("<H", data[8:10])[0]
    names = [data[i:i + 11].split(b"\0")[0] for i in range(32, min(hlen, len(data)) - 31, 32)
             if data[i:i + 1] != b"\r"]
    records = data[hlen:]
    if max(records, default=0) < 0x80 and all(max(n, default=0) < 0x80 for n in names):
        return None
    for enc in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(enc)().decode(records, final=False)
            for n in names:
                codecs.getincrementaldecoder(enc)().decode(n, final=False)
            return "UTF-8" if enc == "utf-8" else "GB18030"
        except UnicodeDecodeError:
            continue
    return None


_UTF8_CPG = {"utf-8", "utf8", "65001", "cp65001"}
_GBK_CPG = {"gbk", "936", "cp936", "gb2312", "gb18030", "ansi 936", "cp 936", "ms936", "windows-936", "euc-cn"}


def _shapefile_encoding(fpath: Path, label: str, rejects: "_Rejects") -> str | None:
    """The encoding to read a .dbf with: its .cpg, unless the bytes prove the .cpg wrong.

    A .cpg saying UTF-8 on GBK bytes (invalid UTF-8) makes GDAL fail; a .cpg saying GBK (or
    none, with GDAL falling back to the language byte) on UTF-8 bytes decodes "successfully" into
    mojibake. Valid multi-byte UTF-8 is almost never GBK text, so the bytes decide: the encoding
    they decode in is used with a warning naming the .cpg; bytes that decode in neither while a
    .cpg claims UTF-8 are refused naming the .cpg. Single-byte code pages in a .cpg (latin-1 for
    French data) are trusted: any bytes decode in them.
    """
    dbf = _sidecar(fpath, ".dbf")
    sniffed = _dbf_encoding(dbf)
    cpg = _sidecar(fpath, ".cpg")
    if cpg is None:
        return sniffed
    declared = cpg.read_bytes()[:64].decode("ascii", errors="replace").strip()
    low = declared.lower()
    if low in _UTF8_CPG:
        if sniffed in (None, "UTF-8"):
            if sniffed is None and not _dbf_is_ascii(dbf):
                raise BundleError(
                    f"{label}: {cpg.name} 声明编码为 {declared}，但 {dbf.name} 的文字既不是 UTF-8 也不是 GBK "
                    f"(the .cpg says {declared} but the text is neither UTF-8 nor GBK) — 改正 {cpg.name} "
                    f"（写入实际编码，如 GBK）或用 UTF-8 重新导出")
            return "UTF-8" if sniffed else None
    elif low in _GBK_CPG:
        if sniffed in (None, "GB18030"):
            return "GB18030" if sniffed else None
    else:
        try:
            codecs.lookup(declared.replace(" ", ""))
            return None  # a code page GDAL and Python know (latin-1 for French data): trusted
        except LookupError:
            if sniffed is None:
                return None
            rejects.add(label, np.array([0]), cpg.name, declared,
                        f"{cpg.name} 的编码 {declared} 无法识别，按文字实际的 {'GBK' if sniffed == 'GB18030' else 'UTF-8'} "
                        f"读取 (unknown code page in the .cpg) — 改正或删除 {cpg.name}", "warning")
            return sniffed
    rejects.add(label, np.array([0]), cpg.name, declared,
                f"{cpg.name} 声明编码为 {declared}，但文字实际是 {'GBK' if sniffed == 'GB18030' else 'UTF-8'}，"
                f"已按实际编码读取 (the .cpg is wrong: text read as {sniffed}) — 请改正或删除 {cpg.name}",
                "warning")
    return sniffed


def _dbf_is_ascii(dbf: Path | None) -> bool:
    if dbf is None:
        return True
    with open(dbf, "rb") as fh:
        data = fh.read(8 << 20)
    # the header's binary fields (counts, sizes) are not text: look at names and records only
    hlen = struct.unpack("<H", data[8:10])[0] if len(data) >= 10 else len(data)
    return max(data[hlen:], default=0) < 0x80 and all(max(n, default=0) < 0x80 for n in _dbf_field_names(dbf))


def _dbf_field_names(dbf: Path | None) -> list[bytes]:
    if dbf is None:
        return []
    with open(dbf, "rb") as fh:
        head = fh.read(32)
        if len(head) < 32:
            return []
        hlen = struct.unpack("<H", head[8:10])[0]
        data = head + fh.read(max(hlen - 32, 0))
    return [data[i:i + 11].split(b"\0")[0] for i in range(32, len(data) - 31, 32) if data[i:i + 1] != b"\r"]


def _has_cut_utf8_names(dbf: Path | None) -> bool:
    for n in _dbf_field_names(dbf):
        try:
            n.decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


def _recode_cut_utf8(gdf, role: str, label: str, rejects: "_Rejects"):
    """Names and text read as ISO-8859-1 → UTF-8; a field name cut mid-character is resolved.

    The bytes left of the cut character still narrow it down: ``权利人`` + ``\xe7`` can only be
    a name whose next character's UTF-8 starts with ``\xe7`` (``权利人统一社会信用代码``, not
    ``权利人名称``). When exactly one column of the role fits, the field is mapped to it (returned
    as hints: source name → canonical); otherwise it is kept as an extra column ``权利人…`` and a
    warning says so. Two fields that are still the same after recoding are refused naming both.
    """
    fix = lambda v: v.encode("latin-1").decode("utf-8", errors="ignore") if isinstance(v, str) else v  # noqa: E731
    for c in gdf.columns:
        if c != "geometry" and (gdf[c].dtype == object or pd.api.types.is_string_dtype(gdf[c])):
            gdf[c] = gdf[c].map(fix)
    names, hints = {}, {}
    for c in gdf.columns:
        if c == "geometry":
            continue
        raw = c.encode("latin-1")
        head = raw.decode("utf-8", errors="ignore")
        try:
            raw.decode("utf-8")
            names[c] = head
            continue
        except UnicodeDecodeError:
            pass
        # the incomplete bytes at the end (the cut character's lead bytes)
        tail = raw[len(head.encode("utf-8")):]
        new = head + "…"
        names[c] = new
        key = normalize_header(head)
        fits = {canon for alias, canon in ALIASES[role].items()
                if alias.startswith(key) and len(alias) > len(key)
                and alias[len(key)].encode("utf-8").startswith(tail)}
        if len(fits) == 1:
            hints[new] = fits.pop()
        else:
            rejects.add(label, np.array([0]), new, head,
                        "字段名在 10 字节处被截断，无法确定是哪一列 (field name cut mid-character at the 10-byte "
                        "limit; not recognised) — 用 GBK 重新导出 Shapefile，或在 overrides 中指定该列", "warning")
    seen: dict[str, str] = {}
    for c, n in names.items():
        if n in seen:
            raise BundleError(
                f"{label}: 字段名被截断后重名 {seen[n]!r} 和 {c!r} 都成为 {n!r} (field names clash after the 10-byte "
                f"cut) — 用 GBK 重新导出 Shapefile，或缩短字段名")
        seen[n] = c
    return gdf.rename(columns=names), hints


def _pick_layer(fpath: Path, label: str, role: str) -> str | None:
    if fpath.suffix.lower() != ".gpkg":
        return None
    try:
        layers = [str(x[0]) for x in pyogrio.list_layers(fpath)]
    except Exception as exc:
        raise BundleError(f"{label}: 无法读取 (cannot read: {exc}) — the file is damaged or truncated; export it again") from exc
    if len(layers) <= 1:
        return layers[0] if layers else None
    for cand in (role, fpath.stem):
        if cand in layers:
            return cand
    raise BundleError(
        f"{label}: 有多个图层 {', '.join(layers)} (several layers) — name one with "
        f"overrides={{'{role}': {{'layer': '...'}}}}"
    )


def _resolve_crs(gdf, label, role, forced, crs_arg):
    if forced is not None:
        return forced
    if gdf.crs is not None:
        return gdf.crs
    if crs_arg is not None:
        return crs_arg
    guess = _guess_crs(gdf.total_bounds)
    raise BundleError(
        f"{label}: 没有坐标系 (layer has no CRS: no .prj or CRS metadata){guess} — add the .prj, or give "
        f"the CRS: `mujun import DIR --crs EPSG:4549` (read_bundle(..., crs='EPSG:4549'))"
    )


def _guess_crs(bounds) -> str:
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    if not np.isfinite(minx):
        return ""
    if -180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90:
        return "; coordinates look like longitude/latitude (经纬度): probably EPSG:4490 (CGCS2000) or EPSG:4326"
    zone = int(minx // 1_000_000)
    if 1e7 <= minx and maxx < 1e8 and int(maxx // 1_000_000) == zone and 0 < miny < 1e7:
        if 25 <= zone <= 45:
            return (f"; eastings start with {zone}: CGCS2000 3-degree Gauss-Krüger zone {zone} with zone prefix, "
                    f"EPSG:{4513 + zone - 25} (CM {zone * 3}°E)")
        if 13 <= zone <= 23:
            return (f"; eastings start with {zone}: CGCS2000 6-degree Gauss-Krüger zone {zone} with zone prefix, "
                    f"EPSG:{4491 + zone - 13}")
    if 0 < minx and maxx < 1_000_000 and 1e6 < miny < 1e7:
        return ("; coordinates look like Gauss-Krüger metres without zone prefix: one of EPSG:4534–4554 "
                "(e.g. EPSG:4549 for CM 120°E; the coordinates cannot tell which zone)")
    return ""


def _check_area_of_use(gdf, label, role, src, rejects: "_Rejects | None" = None, rows: np.ndarray | None = None):
    """Refuse coordinates that cannot be in the CRS they are labelled with (GK metres labelled 4326).

    Judged per feature: when most features fit the CRS, the few that do not (a vertex typed
    1000 km off, NaN coordinates) are rejected rows with their geometry cleared, not a refusal of
    the whole file. ``rows``: the features' row numbers (default 1, 2, …). Returns the layer
    (with those geometries set to None).
    """
    crs = CRS.from_user_input(src)
    geoms = gdf.geometry.values
    present = ~np.asarray(shapely.is_missing(geoms) | shapely.is_empty(geoms), dtype=bool)
    if len(gdf) == 0 or not present.any():
        return gdf
    b = shapely.bounds(geoms[present])
    fits = _bounds_fit(crs, b)
    # The CRS is wrong when nothing fits, or most of a sizeable layer does not; otherwise the few
    # features off the map are data errors of their own.
    if not fits.any() or (len(fits) >= 10 and fits.sum() * 2 <= len(fits)) or rejects is None:
        if fits.all():
            return gdf
        _refuse_crs(crs, gdf.total_bounds, label, role)
    if fits.all():
        return gdf
    idx = np.flatnonzero(present)[~fits]
    bad_b = b[~fits]
    rejects.add(label, idx + 1 if rows is None else np.asarray(rows)[idx], "geometry",
                [f"({x0:.6g}, {y0:.6g})–({x1:.6g}, {y1:.6g})" for x0, y0, x1, y1 in bad_b],
                f"坐标超出坐标系 {crs.to_string()} 的范围（个别图形坐标错误，如多输了位数）(feature outside the area of use "
                f"of {crs.to_string()}) — 修正该图形的坐标", "error")
    new = np.asarray(geoms, dtype=object).copy()
    new[idx] = None
    return gdf.set_geometry(gpd.GeoSeries(new, index=gdf.index, crs=gdf.crs))


def _bounds_fit(crs: CRS, b: np.ndarray) -> np.ndarray:
    """Per feature (rows of minx, miny, maxx, maxy): do its corners lie in the CRS's area of use?"""
    minx, miny, maxx, maxy = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    finite = np.all(np.isfinite(b), axis=1)
    xs = np.column_stack([minx, maxx, minx, maxx])
    ys = np.column_stack([miny, miny, maxy, maxy])
    if crs.is_geographic:
        lon, lat = xs, ys
    else:
        t = _transformer(crs.to_wkt(), "EPSG:4326")
        with np.errstate(all="ignore"):
            lon, lat = (np.asarray(a).reshape(xs.shape) for a in t.transform(xs.ravel(), ys.ravel()))
            # Past the domain of the projection PROJ returns inf or folds back: check the round trip.
            bx, by = (np.asarray(a).reshape(xs.shape)
                      for a in _transformer("EPSG:4326", crs.to_wkt()).transform(lon.ravel(), lat.ravel()))
            round_trip = np.all((np.abs(bx - xs) <= 1.0) & (np.abs(by - ys) <= 1.0), axis=1)
        finite &= round_trip
    with np.errstate(invalid="ignore"):
        ok = finite & np.all(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180), axis=1)
        aou = crs.area_of_use
        if aou is not None:
            w, s_, e, n = aou.bounds
            m = _AOU_MARGIN_DEG
            in_lat = np.all((lat >= s_ - m) & (lat <= n + m), axis=1)
            if e < w:  # area of use across the antimeridian: only the latitude test is meaningful
                ok &= in_lat
            else:
                ok &= in_lat & np.all((lon >= w - m) & (lon <= e + m), axis=1)
    return ok


def _refuse_crs(crs: CRS, bounds, label, role):
    minx, miny, maxx, maxy = bounds
    aou = crs.area_of_use
    where = f" ({aou.name.rstrip('.')}: {aou.west}…{aou.east}°E, {aou.south}…{aou.north}°N)" if aou is not None else ""
    raise BundleError(
        f"{label}: 坐标与坐标系不符 (coordinates ({minx:.6g}, {miny:.6g})–({maxx:.6g}, {maxy:.6g}) lie outside "
        f"the area of use of {crs.to_string()}{where}: the .prj / CRS metadata is probably wrong){_guess_crs(bounds)}"
        f" — fix the .prj, or replace the CRS with overrides={{'{role}': {{'crs': 'EPSG:…'}}}}"
    )


# --------------------------------------------------------------------------------------------
# tables (csv, xlsx)


def _read_table(role, fpath: Path, label: str, ov: dict, progress, rejects: "_Rejects"):
    """(raw text cells, spreadsheet line numbers, formula cells without a value as (line, header))."""
    if fpath.suffix.lower() == ".csv":
        return (*_read_csv(role, fpath, label, ov, progress), [])
    return _read_xlsx(role, fpath, label, ov, progress, rejects)


def _csv_encoding(fpath: Path, label: str) -> tuple[str, str]:
    """(encoding, errors) of a CSV: a UTF-16 BOM (Excel's "Unicode text"), else utf-8-sig, else
    gb18030 — the first that decodes the whole file (streamed, 4 MB at a time). A UTF-8 file with
    a few undecodable lines (one pasted from a GBK file) is read as UTF-8 with the bad bytes
    replaced by U+FFFD; :func:`_check_text_cells` rejects the rows holding one. Anything else is
    refused."""
    with open(fpath, "rb") as fh:
        bom = fh.read(4)
    if bom.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not bom.startswith(codecs.BOM_UTF32_LE):
        return "utf-16", "strict"
    utf8_text = False
    for enc in ("utf-8-sig", "gb18030"):
        dec = codecs.getincrementaldecoder(enc)()
        try:
            with open(fpath, "rb") as fh:
                while chunk := fh.read(4 << 20):
                    text = dec.decode(chunk)
                    if enc == "utf-8-sig":
                        utf8_text = utf8_text or any(ord(c) > 0x7F for c in text[:1 << 16])
                dec.decode(b"", final=True)
            return enc, "strict"
        except UnicodeDecodeError:
            continue
    if _mostly_utf8(fpath):
        return "utf-8-sig", "replace"
    raise BundleError(f"{label}: 无法识别编码 (not UTF-8 or GBK text) — save it as CSV UTF-8 (Excel: CSV UTF-8)")


def _mostly_utf8(fpath: Path, sample: int = 8 << 20) -> bool:
    """More valid multi-byte UTF-8 characters than undecodable bytes in the first megabytes."""
    with open(fpath, "rb") as fh:
        text = fh.read(sample).decode("utf-8", errors="surrogateescape")
    bad = sum(1 for c in text if "\udc80" <= c <= "\udcff")
    good = sum(1 for c in text if ord(c) > 0x7F and not ("\udc80" <= c <= "\udcff"))
    return good > bad


def _read_csv(role, fpath, label, ov, progress):
    enc, errors = (ov["encoding"], "strict") if ov.get("encoding") else _csv_encoding(fpath, label)
    # The first lines in full (a header line may be longer than any fixed-size sample: cutting it
    # would silently drop the later columns).
    with open(fpath, encoding=enc, errors=errors, newline="") as fh:
        head_text = "".join(itertools.islice(fh, _HEADER_SCAN_ROWS + 1))
    if not head_text.strip():
        raise BundleError(f"{label}: 文件为空 (file is empty) — export it again")
    try:
        # the delimiter is told by the first lines; the sniffer's regexes are slow on megabytes
        delim = csv.Sniffer().sniff(head_text[: 64 << 10], delimiters=",\t;|").delimiter
    except csv.Error:
        delim = ","
    # The csv module reads the first rows: ragged title lines above the header trip pandas' parser.
    csv.field_size_limit(1 << 30)
    head_rows = []
    try:
        for i, rec in enumerate(csv.reader(io.StringIO(head_text), delimiter=delim)):
            if i >= _HEADER_SCAN_ROWS:
                break
            head_rows.append(rec)
    except csv.Error as exc:
        raise BundleError(f"{label}: 无法解析 (cannot parse CSV: {exc}) — check quotes and the number of fields") from exc
    hidx, names = _detect_header(role, head_rows, ov.get("columns"), label=label)
    total = _count_lines(fpath)
    parts, first = [], hidx + 2  # spreadsheet line number of the first data row
    try:
        reader = pd.read_csv(fpath, encoding=enc, encoding_errors=errors, sep=delim, header=None, skiprows=hidx + 1, dtype=str,
                             keep_default_na=False, na_filter=False, skip_blank_lines=False, chunksize=CHUNK,
                             names=range(len(names)), index_col=False)
        done = 0
        mapping = match_columns(role, names, ov.get("columns"))[0]
        junk = seen = 0
        for chunk in reader:
            parts.append(chunk)
            done += len(chunk)
            if progress:
                progress(role, done, max(total - hidx - 1, done))
            counted = _junk_rows(role, chunk.set_axis(names[: chunk.shape[1]], axis=1), mapping)
            if counted is not None and done < total - hidx - 1:
                junk, seen = junk + counted[0], seen + counted[1]
                _refuse_junk(role, junk, seen, label, complete=False)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{label}: 无法解析 (cannot parse CSV: {exc}) — check quotes and the number of fields") from exc
    raw = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=range(len(names)))
    raw.columns = names
    rows = np.arange(first, first + len(raw))
    return _drop_blank(raw, rows)


def _count_lines(fpath: Path) -> int:
    n = 0
    with open(fpath, "rb") as fh:
        while chunk := fh.read(8 << 20):
            n += chunk.count(b"\n")
    return n


#: Sheets whose cell area (rows × columns, declared or used) exceeds this are streamed row by
#: row (openpyxl read-only) instead of loaded whole by calamine, which allocates the full
#: rectangle: one stray cell at XFD1048576 would ask for 17 billion cells (≈ 512 GB).
XLSX_CELL_BUDGET = 10_000_000


def _read_xlsx(role, fpath, label, ov, progress, rejects: "_Rejects"):
    # calamine (Rust) parses xlsx ~20x faster than openpyxl: a county's 15k-row sheets take a
    # second instead of half a minute. Merged cells come back as the top-left value, like Excel.
    from python_calamine import CalamineError, CalamineWorkbook

    parts = _xlsx_sheet_parts(fpath, label)
    try:
        wb = CalamineWorkbook.from_path(str(fpath))
    except (CalamineError, OSError, ValueError) as exc:
        raise BundleError(f"{label}: 无法读取 (cannot read xlsx: {exc}) — the file is damaged or truncated; save it again in Excel") from exc
    sheet = ov.get("layer")
    if sheet is not None and sheet not in wb.sheet_names:
        raise BundleError(f"{label}: 没有工作表 {sheet!r} (no such sheet); sheets: {', '.join(wb.sheet_names)}")
    # The named sheet, else the first sheet where a header is recognised.
    best = None
    for name in [sheet] if sheet else wb.sheet_names:
        scan = _xlsx_scan(fpath, parts.get(name), label)
        streamed = scan["area"] > XLSX_CELL_BUDGET
        if streamed:
            head = _openpyxl_rows(fpath, name, label, 1, _HEADER_SCAN_ROWS, None)
            width = max((i + 1 for r in head for i, v in enumerate(r) if v not in (None, "")), default=0)
            head = [list(r[:width]) for r in head]
            values = None
        else:
            try:
                values = wb.get_sheet_by_name(name).to_python(skip_empty_area=False)
            except (CalamineError, OSError, ValueError) as exc:
                raise BundleError(f"{label}: 无法读取 (cannot read xlsx: {exc}) — the file is damaged or truncated") from exc
            head = values[:_HEADER_SCAN_ROWS]
        head = [[_cell_str(v) for v in r] for r in head]
        hidx, names, score = _detect_header(role, head, ov.get("columns"), with_score=True, label=label)
        if best is None or score > best[3]:
            best = (values, hidx, names, score, name, scan)
        if score > 0:
            break
    values, hidx, names, _, name, scan = best
    width = len(names)
    if values is None:
        rejects.add(label, np.array([0]), "(工作表)", scan["extent"],
                    f"工作表 {name} 的数据区域达到 {scan['extent']}，只按表头的 {width} 列逐行读取，其余单元格忽略 "
                    f"(sheet extent {scan['extent']}: streamed, cells right of the header ignored) — 删除表格外的单元格",
                    "warning")
        source = _openpyxl_rows(fpath, name, label, hidx + 2, None, width, lazy=True)
    else:
        source = values[hidx + 1:]
    data, lines = [], []
    for line, r in enumerate(source, start=hidx + 2):
        r = list(r[:width]) + [None] * (width - len(r))
        cells = [_cell_str(v) for v in r]
        if any(c.strip() for c in cells):
            data.append(cells)
            lines.append(line)
        if progress and len(data) and len(data) % CHUNK == 0:
            progress(role, len(data), 0)
    if progress:
        progress(role, len(data), len(data))
    raw = pd.DataFrame(data, columns=names, dtype=object) if data else pd.DataFrame(columns=names, dtype=object)
    raw = raw.astype("string").fillna("")
    rows = np.asarray(lines, dtype="int64")
    formulas = [(r, names[c - 1]) for r, c in scan["formulas"] if r > hidx + 1 and c <= width]
    return (*_drop_blank(raw, rows), formulas)


def _openpyxl_rows(fpath, sheet, label, min_row, max_row, max_col, lazy=False):
    """Rows of a sheet streamed by openpyxl (read-only: memory bounded by one row)."""
    import openpyxl

    try:
        wb = openpyxl.load_workbook(fpath, read_only=True, data_only=True)
        it = wb[sheet].iter_rows(min_row=min_row, max_row=max_row, max_col=max_col or 1000, values_only=True)
        return it if lazy else list(it)
    except Exception as exc:  # openpyxl raises many types on a broken file
        raise BundleError(f"{label}: 无法读取 (cannot read xlsx: {exc}) — the file is damaged or truncated; save it again in Excel") from exc


def _xlsx_sheet_parts(fpath, label) -> dict[str, str]:
    """Sheet name → its XML member in the xlsx zip (from workbook.xml and its relationships)."""
    import zipfile

    try:
        with zipfile.ZipFile(fpath) as z:
            wbx = z.read("xl/workbook.xml").decode("utf-8", errors="replace")
            rels = z.read("xl/_rels/workbook.xml.rels").decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        raise BundleError(f"{label}: 无法读取 (cannot read xlsx: {exc}) — the file is damaged or truncated; save it again in Excel") from exc
    targets = {}
    for m in re.finditer(r"<(?:\w+:)?Relationship\b[^>]*>", rels):
        tag = m.group(0)
        rid, tgt = re.search(r'\bId="([^"]+)"', tag), re.search(r'\bTarget="([^"]+)"', tag)
        if rid and tgt:
            t = tgt.group(1)
            targets[rid.group(1)] = t.lstrip("/") if t.startswith("/") else "xl/" + t
    out = {}
    for m in re.finditer(r"<(?:\w+:)?sheet\b[^>]*>", wbx):
        tag = m.group(0)
        nm, rid = re.search(r'\bname="([^"]*)"', tag), re.search(r'\br:id="([^"]+)"|\bid="([^"]+)"', tag)
        if nm and rid:
            import html

            out[html.unescape(nm.group(1))] = targets.get(rid.group(1) or rid.group(2), "")
    return out


_XL_CELL = re.compile(rb"<(?:\w+:)?c\b([^>]*?)(?:/>|>(.*?)</(?:\w+:)?c>)", re.S)
_XL_REF = re.compile(rb'\br="([A-Z]{1,3})([0-9]{1,7})"')
_XL_DIM = re.compile(rb'<(?:\w+:)?dimension\b[^>]*\bref="(?:[A-Z]+[0-9]+:)?([A-Z]{1,3})([0-9]{1,7})"')


def _col_number(letters: bytes) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ch - 64
    return n


def _xlsx_scan(fpath, member: str | None, label) -> dict:
    """One streamed pass over a sheet's XML: the cell area (declared and used) and the formula
    cells that carry no cached value. Returns ``{"area", "extent", "formulas": [(row, col)]}``."""
    import zipfile

    out = {"area": 0, "extent": "", "formulas": []}
    if not member:
        return out
    max_r = max_c = 0
    dim_area = 0
    try:
        with zipfile.ZipFile(fpath) as z, z.open(member) as fh:
            buf = b""
            first = True
            while True:
                chunk = fh.read(4 << 20)
                buf += chunk
                if first:
                    m = _XL_DIM.search(buf[:4096])
                    if m:
                        dim_area = _col_number(m.group(1)) * int(m.group(2))
                    first = False
                # cut after the last complete cell; the rest waits for the next chunk
                end = buf.rfind(b"c>")
                cut = len(buf) if not chunk else (end + 2 if end >= 0 else 0)
                part, buf = buf[:cut], buf[cut:]
                for m in _XL_CELL.finditer(part):
                    ref = _XL_REF.search(m.group(1))
                    body = m.group(2) or b""
                    if ref is None or not body:
                        continue
                    r, c = int(ref.group(2)), _col_number(ref.group(1))
                    max_r, max_c = max(max_r, r), max(max_c, c)
                    if b"<f" in body and not re.search(rb"<(?:\w+:)?v>[^<]", body):
                        out["formulas"].append((r, c))
                if not chunk:
                    break
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib_error) as exc:
        raise BundleError(f"{label}: 无法读取 (cannot read xlsx: {exc}) — the file is damaged or truncated; save it again in Excel") from exc
    out["area"] = max(dim_area, max_r * max_c)
    out["extent"] = f"{_col_letters(max_c)}{max_r}" if max_r else ""
    if dim_area > max_r * max_c:
        out["extent"] = (m.group(1) + m.group(2)).decode() if (m := _XL_DIM.search(_xlsx_head(fpath, member))) else ""
    return out


def _xlsx_head(fpath, member) -> bytes:
    import zipfile

    with zipfile.ZipFile(fpath) as z, z.open(member) as fh:
        return fh.read(4096)


def _col_letters(n: int) -> str:
    s = ""
    while n > 0:
        n, r = divmod(n - 1, 26)
        s = chr(65 + r) + s
    return s


def _cell_str(v) -> str:
    """A cell as text: integral floats without '.0' (Excel stores 2024 as 2024.0), dates as ISO."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "是" if v else "否"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(v, _dt.datetime):
        return v.date().isoformat() if v.time() == _dt.time(0) else v.isoformat(sep=" ")
    if isinstance(v, _dt.date):
        return v.isoformat()
    return str(v)


def _drop_blank(raw: pd.DataFrame, rows: np.ndarray):
    if len(raw) == 0:
        return raw, rows
    blank = np.ones(len(raw), dtype=bool)
    for c in raw.columns:
        blank &= (raw[c].astype("string").fillna("").str.strip() == "").to_numpy(dtype=bool)
    keep = ~blank
    return raw.loc[keep].reset_index(drop=True), rows[keep]


def _detect_header(role, rows: list[list[str]], extra=None, with_score=False, label=""):
    """Find the header among the first rows; combine a 2-row header.

    Each row r is scored by the number of canonical columns its cells name, where an empty cell
    takes the text of the cell above (a header cell merged vertically over two rows keeps its
    text in the upper row only; a title row merged across the top is skipped because it names
    nothing). The best row wins; ties go to the upper row. Returns (row index, column names).
    """
    best_score, best_r, best_names = -1, 0, None
    for r in range(len(rows)):
        names = _combined_names(rows, r)
        if not any(names):
            continue
        mapping, _ = match_columns(role, names, extra)
        score = len(set(mapping.values()))
        if score > best_score:
            best_score, best_r, best_names = score, r, names
    if best_names is None:
        raise BundleError(f"{label}: 文件为空 (no header row found: the first rows are empty) — export it again")
    score, r, names = best_score, best_r, best_names
    names = _unique([n if n else f"第{i + 1}列" for i, n in enumerate(names)])
    return (r, names, score) if with_score else (r, names)


def _combined_names(rows, r) -> list[str]:
    lower = [str(x).strip() if x is not None else "" for x in rows[r]]
    if r == 0:
        return lower
    upper = [str(x).strip() if x is not None else "" for x in rows[r - 1]]
    upper += [""] * (len(lower) - len(upper))
    # Vertical merge: lower cell empty → the upper cell's text. Only when the upper row is a
    # header-like row (several cells), not a one-cell title.
    if sum(1 for u in upper if u) < 2:
        return lower
    return [lo if lo else up for lo, up in zip(lower, upper)]


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}.{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


# --------------------------------------------------------------------------------------------
# canonical columns and types


class _Rejects:
    """Collects reject rows column-wise (vectorised: one call per rule, not per row)."""

    def __init__(self, frame: pd.DataFrame | None = None):
        self.parts: list[pd.DataFrame] = [] if frame is None or len(frame) == 0 else [frame]

    def add(self, file, rows, field, values, reason, severity="error") -> None:
        rows = np.asarray(rows)
        if rows.size == 0:
            return
        n = rows.size
        if not np.isscalar(reason):
            reason = np.array([str(r).replace("\x00", "\\x00") for r in reason], dtype=object)
        vals = pd.Series(values, dtype=object) if not np.isscalar(values) else pd.Series([values] * n, dtype=object)
        self.parts.append(pd.DataFrame({
            "file": np.broadcast_to(np.asarray(file, dtype=object), n),
            "row": rows.astype("int64"),
            "field": field,
            "value": vals.map(_value_text).to_numpy(dtype=object),
            "reason": np.broadcast_to(np.asarray(reason, dtype=object), n),
            "severity": severity,
        }))

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else object) for c in REJECT_COLUMNS})
        if len(self.parts) > 1:
            # later calls (validate's checks) read the frame repeatedly: concatenate once
            self.parts = [pd.concat(self.parts, ignore_index=True)]
        out = self.parts[0][REJECT_COLUMNS]
        return out.astype({"row": "int64"})


#: A rejected value is shown up to this many characters (a 4,000-character cell is cut).
_VALUE_SHOWN = 80


def _value_text(v) -> str:
    if v is None or v is pd.NA or v is pd.NaT:
        return ""
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return ""
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))
    t = str(v).replace("\x00", "\\x00").encode("utf-8", errors="replace").decode("utf-8")
    return t if len(t) <= _VALUE_SHOWN else t[:_VALUE_SHOWN] + f"…（共 {len(t)} 字符）"


def _missing_mask(s: pd.Series) -> np.ndarray:
    if not (pd.api.types.is_string_dtype(s) or s.dtype == object):
        return s.isna().to_numpy()
    t = s.astype("string").str.strip().str.lower()
    return (t.isna() | t.isin(_MISSING_TOKENS)).to_numpy(dtype=bool)


def _as_text(s: pd.Series, strip: bool = True) -> pd.Series:
    """Text column: missing tokens → NA, stripped unless ``strip=False``. Pandas' default ``str`` dtype."""
    out = s.astype("string")
    if strip:
        out = out.str.strip()
    out = out.mask(pd.Series(_missing_mask(s), index=s.index))
    return out.astype("str")


def _as_code(s: pd.Series) -> pd.Series:
    """An identifier: NFKC (full-width → ASCII), upper case, inner spaces removed."""
    t = _as_text(s).str.normalize("NFKC")
    return t.str.replace(r"\s+", "", regex=True).str.upper()


def _as_number(s: pd.Series, kind: str, label, rows, field, rejects):
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        num = s.astype("float64")
        bad = np.zeros(len(s), dtype=bool)
    else:
        miss = _missing_mask(s)
        t = s.astype("string").str.strip().str.normalize("NFKC")
        t = t.str.replace(",", "", regex=False).str.replace(" ", "", regex=False)
        num = pd.to_numeric(t.mask(pd.Series(miss, index=s.index)), errors="coerce").astype("float64")
        bad = num.isna().to_numpy() & ~miss
        if bad.any():
            rejects.add(label, rows[bad], field, s[bad].to_numpy(dtype=object),
                        "非数值 (not a number) — 填写数字（单位见表头），不要夹带文字", "error")
    num = _check_range(num, label, rows, field, rejects)
    if kind == "int":
        frac = num.notna().to_numpy() & (np.mod(num.fillna(0).to_numpy(), 1) != 0)
        if frac.any():
            rejects.add(label, rows[frac], field, num[frac].to_numpy(), "应为整数 (not an integer) — 填写整数", "error")
            num = num.mask(pd.Series(frac, index=s.index))
        return num.round().astype("Int64")
    return num


_UNITS = {c.name: c.unit for cols in COLUMNS.values() for c in cols}


def _check_range(num: pd.Series, label, rows, field, rejects) -> pd.Series:
    """Non-finite values (``1e400`` → inf) and values above :data:`spatial.columns.PLAUSIBLE_MAX`
    become errors and missing (negative values are the validator's: it names the rule)."""
    v = num.to_numpy(dtype="float64", na_value=np.nan)
    inf = np.isinf(v)
    if inf.any():
        rejects.add(label, rows[inf], field, np.where(v[inf] > 0, "inf", "-inf").astype(object),
                    "不是有限数值（溢出，如 1e400）(not a finite number) — 填写实际数值", "error")
    hi = PLAUSIBLE_MAX.get(field)
    big = np.zeros(len(v), dtype=bool)
    if hi is not None:
        big = np.isfinite(v) & (np.abs(v) > hi)
        if big.any():
            unit = _UNITS.get(field, "")
            rejects.add(label, rows[big], field, v[big],
                        f"数值超出合理范围，上限 {hi:g}{(' ' + unit) if unit else ''} (value above the plausible "
                        f"maximum {hi:g}{(' ' + unit) if unit else ''}) — 检查单位（如 元 与 万元）和数值", "error")
    bad = inf | big
    return num.mask(pd.Series(bad, index=num.index)) if bad.any() else num


_DATE_CLEAN = re.compile(r"[年月./]")


def _as_date(s, label, rows, field, rejects):
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    miss = _missing_mask(s)
    t = s.astype("string").str.strip().str.replace("日", "", regex=False)
    t = t.str.replace(_DATE_CLEAN, "-", regex=True).str.strip("-")
    t = t.mask(pd.Series(miss, index=s.index))
    out = pd.to_datetime(t, errors="coerce", format="mixed", yearfirst=True)
    bad = out.isna().to_numpy() & ~miss
    if bad.any():
        rejects.add(label, rows[bad], field, s[bad].to_numpy(dtype=object), "无法识别的日期 (unreadable date, set empty) — 写成 2024-03-04 的形式", "warning")
    return out


_TRUE = {"是", "y", "yes", "true", "1", "t", "已登记", "登记", "√"}
_FALSE = {"否", "n", "no", "false", "0", "f", "未登记", "×"}


def _as_bool(s, label, rows, field, rejects):
    if pd.api.types.is_bool_dtype(s):
        return s.astype("boolean")
    miss = _missing_mask(s)
    t = s.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=s.index, dtype="boolean")
    out[t.isin(_TRUE).fillna(False).to_numpy(dtype=bool)] = True
    out[t.isin(_FALSE).fillna(False).to_numpy(dtype=bool)] = False
    bad = out.isna().to_numpy() & ~miss
    if bad.any():
        rejects.add(label, rows[bad], field, s[bad].to_numpy(dtype=object), "应为 是/否 (not yes/no, set empty) — 填写 是 或 否", "warning")
    return out


_CODE_COLUMNS = {"parcel_code", "unit_code", "uscc", "owner_uscc", "user_uscc", "tenant_uscc", "landlord_uscc",
                 "industry_code", "building_id"}
# Free text kept exactly as written (names are compared with other registers character by
# character); categories (镇街, 用途, 规模 …) are stripped so they group.
_VERBATIM_COLUMNS = {"name", "owner_name", "address", "location", "note", "reason", "by", "flags"}
_EMPTY = {"str": "str", "float": "float64", "int": "Int64", "date": "datetime64[ns]", "bool": "boolean"}


def _canonicalize(role, raw: pd.DataFrame, rows, mapping: dict, label: str, rejects: _Rejects) -> pd.DataFrame:
    cols = {}
    for src, canon in mapping.items():
        s = raw[src].reset_index(drop=True)
        kind = DTYPES[role][canon]
        if kind == "str":
            if canon in _CODE_COLUMNS:
                cols[canon] = _as_code(s)
            else:
                cols[canon] = _as_text(s, strip=canon not in _VERBATIM_COLUMNS)
        elif kind in ("float", "int"):
            cols[canon] = _as_number(s, kind, label, rows, canon, rejects)
        elif kind == "date":
            cols[canon] = _as_date(s, label, rows, canon, rejects)
        else:
            cols[canon] = _as_bool(s, label, rows, canon, rejects)
    n = len(raw)
    out = pd.DataFrame(index=pd.RangeIndex(n))
    for c in COLUMNS[role]:
        out[c.name] = cols[c.name] if c.name in cols else pd.Series([None] * n, dtype=_EMPTY[c.dtype])
    if role == "corrections":
        out["action"] = _normalize_action(out["action"])
    for src in raw.columns:
        if src not in mapping and src != "geometry":
            out[EXTRA_PREFIX + str(src)] = raw[src].reset_index(drop=True).to_numpy()
    out["_file"] = label
    out["_row"] = np.asarray(rows, dtype="int64")
    return out


_ACTIONS = {"add": "add", "添加": "add", "新增": "add", "增加": "add", "+": "add",
            "remove": "remove", "删除": "remove", "移除": "remove", "去除": "remove", "-": "remove"}


def _normalize_action(s: pd.Series) -> pd.Series:
    # Unknown actions stay as written; validate_bundle rejects them naming the value.
    return s.map(lambda v: _ACTIONS.get(str(v).strip().lower(), v) if isinstance(v, str) else v).astype("str")


# --------------------------------------------------------------------------------------------
# enterprises: coordinates per row


def _enterprise_points(df: pd.DataFrame, raw, label, rejects: _Rejects, is_point_layer: bool) -> gpd.GeoDataFrame:
    """Points in EPSG:4490 from per-row lon/lat and 坐标系 (GCJ-02/BD-09 converted with to_cgcs2000)."""
    rows = df["_row"].to_numpy()
    if is_point_layer:
        geom = raw.geometry.reset_index(drop=True)
        non_point = geom.notna().to_numpy() & ~geom.geom_type.isin(["Point"]).to_numpy()
        if non_point.any():
            rejects.add(label, rows[non_point], "geometry", geom[non_point].geom_type.to_numpy(),
                        "企业图层应为点 (enterprise layer geometry must be a Point)", "error")
        pts = geom.where(~pd.Series(non_point))
        has = pts.notna().to_numpy() & ~np.asarray(shapely.is_empty(pts.values), dtype=bool)
        lon = np.full(len(df), np.nan)
        lat = np.full(len(df), np.nan)
        lon[has] = shapely.get_x(pts.values[has])
        lat[has] = shapely.get_y(pts.values[has])
    else:
        lon = df["lon"].to_numpy(dtype="float64", na_value=np.nan)
        lat = df["lat"].to_numpy(dtype="float64", na_value=np.nan)
    # 坐标系: normalise each distinct value once (2M rows hold a handful of values).
    cs_raw = df["coord_sys"]
    uniq = pd.unique(cs_raw.astype(object))
    lut = {u: normalize_coord_sys(u) for u in uniq}
    cs = cs_raw.astype(object).map(lut)
    unknown = cs.isna().to_numpy()
    if unknown.any():
        rejects.add(label, rows[unknown], "coord_sys", cs_raw[unknown].to_numpy(dtype=object),
                    "未知坐标系，应为 wgs84/cgcs2000/gcj02/bd09 (unknown coord_sys)", "error")
    has_lon, has_lat = ~np.isnan(lon), ~np.isnan(lat)
    half = has_lon ^ has_lat
    if half.any():
        rejects.add(label, rows[half], "lon" if (~has_lon[half]).all() else "lon/lat",
                    [f"{a}, {b}" for a, b in zip(lon[half], lat[half])],
                    "经纬度不完整 (only one of lon/lat given) — 同时填写经度和纬度，或都留空", "error")
    both = has_lon & has_lat
    out_range = both & ((np.abs(lon) > 180) | (np.abs(lat) > 90))
    if out_range.any():
        rejects.add(label, rows[out_range], "lon/lat", [f"{a}, {b}" for a, b in zip(lon[out_range], lat[out_range])],
                    "经纬度超出范围 (lon/lat out of range: projected metres in a lon/lat column?)", "error")
    # Swapped columns: latitude values in the lon column, in China's range.
    swapped = both & (lon > 3) & (lon < 54) & (lat > 73) & (lat < 136)
    if swapped.any():
        rejects.add(label, rows[swapped], "lon/lat", [f"{a}, {b}" for a, b in zip(lon[swapped], lat[swapped])],
                    "经纬度疑似颠倒 (lon and lat look swapped)", "error")
    ok = both & ~unknown & ~out_range & ~swapped
    x = np.full(len(df), np.nan)
    y = np.full(len(df), np.nan)
    if ok.any():
        x[ok], y[ok] = to_cgcs2000(lon[ok], lat[ok], cs.to_numpy(dtype=object)[ok])
    df = df.copy()
    df["coord_sys"] = cs.fillna(cs_raw.astype(object)).astype("str")
    df["lon_src"] = np.where(both, lon, np.nan)
    df["lat_src"] = np.where(both, lat, np.nan)
    df["lon"] = x
    df["lat"] = y
    geometry = np.empty(len(df), dtype=object)
    geometry[:] = None
    if ok.any():
        geometry[ok] = shapely.points(x[ok], y[ok])
    front = [c for c in df.columns if not c.startswith("_")] + ["_file", "_row"]
    return gpd.GeoDataFrame(df[front], geometry=gpd.GeoSeries(geometry, crs=TARGET_CRS), crs=TARGET_CRS)


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if len(parts) == 1:
        return parts[0]
    out = pd.concat(parts, ignore_index=True)
    if isinstance(parts[0], gpd.GeoDataFrame):
        out = gpd.GeoDataFrame(out, geometry="geometry", crs=TARGET_CRS)
    return out
