"""Property test of ``mujun import``: random corruptions of a small county bundle never crash it.

A small bundle derived from the test county (``tests/bundle_factory.py``: 6 parcels, 7
enterprises, 2 years of metrics, a lease; here extended with buildings, corrections and every
column the format defines) gets 1–4 random corruptions: blank, mistyped, out-of-range, overlong
and wrongly encoded cells in any column of any file; degenerate, self-intersecting, empty, huge,
NaN, Z and non-polygon geometries; a Shapefile with a truncated or missing sidecar or a wrong
.cpg; a table saved as xlsx (numbers and codes as numbers, a formula without a cached value, a
stray cell at XFD1048576, a date cell, title rows); duplicated rows. Each bundle is imported through the CLI entry point in-process (typer's
CliRunner: the exit codes are the real ones) into one PostGIS database, imports piling up as in
a county's life. The property:

* no traceback, and the exit code is 0 (loaded), 3 (loaded, rejected rows listed) or a refusal
  (2: the bundle is refused; 4: the land delivery is refused);
* a refusal leaves every data table exactly as it was (row counts and content);
* what was loaded is sane: no parcel below the minimum area, no non-finite or implausible figure.

The faults the importer once crashed on (:data:`KNOWN`) always run as explicit examples; on the
code before issue 11 they fail (the XFD1048576 sheet aborts the process). Then CI runs
``MUJUN_FUZZ_EXAMPLES`` random examples (default 25; about a minute in all); run more with
``MUJUN_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/test_import_fuzz.py``. A failing example is
printed by hypothesis as the list of corruptions, to be replayed as a test of its own.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
import sqlalchemy as sa
from hypothesis import HealthCheck, event, example, given, settings, strategies as st
from shapely.geometry import LineString, Point, Polygon, box

from spatial.columns import CHINESE_HEADERS, COLUMNS, PLAUSIBLE_MAX
from spatial.validate import MIN_AREA_M2
from tests.bundle_factory import X0, Y0, parcel_code, uscc, write_bundle
from tests.test_import_robustness import DATA_TABLES, mujun_import, table_state

EXAMPLES = int(os.environ.get("MUJUN_FUZZ_EXAMPLES", "25"))
LOADED, LOADED_WITH_REJECTS = 0, 3
REFUSED = {2, 4}  # 2: bundle refused (BundleError); 4: land delivery refused (too much land retired)

CSV_FILES = {"enterprises.csv": "enterprises", "metrics.csv": "metrics", "leases.csv": "leases",
             "corrections.csv": "corrections"}
LAYER_FILES = {"parcels.geojson": "parcels", "buildings.geojson": "buildings"}


# --------------------------------------------------------------------------------- the base bundle

def _fill_columns(df: pd.DataFrame, role: str) -> pd.DataFrame:
    """Every column the format defines for ``role``, under its Chinese header (example values)."""
    for col in COLUMNS[role]:
        zh = col.zh
        if zh not in df.columns and not (role == "parcels" and col.name == "unit_code"):
            df[zh] = "" if col.example is None else str(col.example)
    return df


def base_bundle(root: Path) -> Path:
    d = write_bundle(root)
    p = gpd.read_file(d / "parcels.geojson")
    p["登记面积"] = 6000.0
    p["是否登记"] = "是"
    p["坐落"] = "示例路1号"
    p["权利人"] = [f"测试企业{i + 1}有限公司" for i in range(len(p))]
    (d / "parcels.geojson").unlink()
    pyogrio.write_dataframe(p, d / "parcels.geojson")
    b = gpd.GeoDataFrame({"建筑编号": ["B1", "B2"], "层数": [3, 2], "建筑面积": [5400.0, 2000.0],
                          "宗地代码": [parcel_code(1), parcel_code(2)]},
                         geometry=[box(X0 + 10, Y0 + 10, X0 + 70, Y0 + 40), box(X0 + 130, Y0 + 10, X0 + 180, Y0 + 30)],
                         crs=p.crs)
    pyogrio.write_dataframe(b, d / "buildings.geojson")
    for name, role in CSV_FILES.items():
        path = d / name
        df = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False) if path.exists() else None
        if role == "corrections":
            df = pd.DataFrame({"统一社会信用代码": [uscc(7)], "宗地代码": [parcel_code(1)], "操作": ["add"]})
        if role == "leases":
            df = df.rename(columns={"出租方统一社会信用代码": "出租企业统一社会信用代码"})
        df = _fill_columns(df, role)
        if role == "enterprises":
            df["成立日期"] = "2015-06-01"
        df.to_csv(path, index=False, encoding="utf-8-sig")
    return d


# ------------------------------------------------------------------------------------ corruptions

_NASTY = st.sampled_from(["", " ", "-", "无", "N/A", "0", "-5", "八十", "abc", "1e400", "-1e400", "inf", "nan",
                     "1.7e308", "99999999999999999999", "2024-03-04", "2024/3/4", "9.13309E+17", "TRUE",
                     "东湖\x00街道", "\x00", "东" * 4000, "=A1*2", "'0511", "１２３", " 3311 ", "\ufeff3311",
                     "\u202e反向", "\ud7ff", "a,b\nc", '"', "\\"])
# Half of the values from the list of known troublemakers, half generated.
_NASTY_TEXT = st.one_of(
    _NASTY, _NASTY, _NASTY,
    st.text(min_size=0, max_size=40),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**25, max_value=10**25).map(str),
)


@st.composite
def cell_edit(draw):
    files = {**CSV_FILES, **LAYER_FILES}
    name = draw(st.sampled_from(sorted(files)))
    role = files[name]
    header = draw(st.sampled_from([c.zh for c in COLUMNS[role] if not (role == "parcels" and c.name == "unit_code")]))
    return ("cell", name, header, draw(st.integers(0, 20)), draw(_NASTY_TEXT))


def _geoms():
    x, y = X0, Y0
    return {
        "degenerate": Polygon([(x, y), (x + 100, y), (x + 50, y), (x, y)]),
        "bowtie": Polygon([(x, y), (x + 100, y + 60), (x + 100, y), (x, y + 60)]),
        "empty": Polygon(),
        "none": None,
        "huge": box(x - 5e5, y - 5e5, x + 5e5, y + 5e5),
        "far": box(x + 1e9, y, x + 1e9 + 100, y + 60),
        "nan": Polygon([(x, y), (np.nan, y), (x + 100, y + 60), (x, y)]),
        "z": shapely.force_3d(box(x, y, x + 100, y + 60), 12.0),
        "point": Point(x + 50, y + 30),
        "line": LineString([(x, y), (x + 100, y + 60)]),
        "sliver": box(x, y, x + 100, y + 0.001),
        "tiny": box(x, y, x + 0.5, y + 0.5),
        "spike": Polygon([(x, y), (x + 100, y), (x + 100, y + 60), (x + 50, y + 60), (x + 50, y + 1e6),
                          (x + 50, y + 60), (x, y + 60)]),
        "many_vertices": Point(x + 50, y + 30).buffer(30, quad_segs=5000),
    }


GEOM_KINDS = sorted(_geoms())

geom_edit = st.tuples(st.just("geom"), st.sampled_from(sorted(LAYER_FILES)), st.integers(0, 8),
                      st.sampled_from(GEOM_KINDS))
dup_edit = st.tuples(st.just("dup"), st.sampled_from(sorted({**CSV_FILES, **LAYER_FILES})), st.integers(0, 20))
encoding_edit = st.tuples(st.just("encoding"), st.sampled_from(sorted(CSV_FILES)),
                          st.sampled_from(["gbk", "latin1_mojibake", "utf16", "one_gbk_cell", "bom_twice", "binary"]))
shapefile_edit = st.tuples(
    st.just("shapefile"), st.sampled_from(["GBK", "UTF-8"]),
    st.sampled_from(["none", "truncate_shp", "truncate_shx", "truncate_dbf", "drop_shx", "drop_dbf", "drop_prj",
                     "drop_cpg", "cpg_utf8", "cpg_gbk", "cpg_junk"]),
    st.floats(0.0, 0.99))
xlsx_edit = st.tuples(st.just("xlsx"), st.sampled_from(sorted(CSV_FILES)),
                      st.sampled_from(["plain", "numbers", "formula", "far_cell", "date_cell", "title_rows"]),
                      st.integers(0, 50))
edits = st.lists(st.one_of(cell_edit(), cell_edit(), geom_edit, dup_edit, encoding_edit, shapefile_edit, xlsx_edit),
                 min_size=1, max_size=6)

#: Faults the importer once crashed on or silently stored (issue 11): always tried, then random ones.
KNOWN = [
    [("cell", "enterprises.csv", "企业名称", 2, "")],                       # 230-line DB traceback
    [("cell", "enterprises.csv", "镇街", 1, "东" * 4000)],                  # index row too large
    [("cell", "metrics.csv", "电表户号", 3, "33\x0001")],                  # NUL byte
    [("cell", "metrics.csv", "实缴税金", 0, "1e400")],                      # stored as Infinity
    [("cell", "metrics.csv", "从业人员", 0, "99999999999999999999")],       # Int64 overflow
    [("geom", "parcels.geojson", 5, "degenerate")],                          # 2.9e12 万元/亩
    [("xlsx", "enterprises.csv", "far_cell", 0)],                            # 512 GB allocation
    [("xlsx", "metrics.csv", "formula", 3)],                                 # NULL over a stored figure
    [("shapefile", "UTF-8", "cpg_gbk", 0.0)],                                # mojibake
    [("shapefile", "GBK", "drop_dbf", 0.0)],                                 # "missing column parcel_code"
]


def apply(d: Path, edit) -> None:
    kind = edit[0]
    if kind == "cell":
        _, name, header, row, value = edit
        path = d / name
        if not path.exists():
            return
        if name in LAYER_FILES:
            g = gpd.read_file(path)
            if header in g.columns and len(g):
                g[header] = g[header].astype(object)
                g.loc[g.index[row % len(g)], header] = value.replace("\x00", "")  # GeoJSON strings: no NUL
                path.unlink()
                pyogrio.write_dataframe(g, path)
            return
        df = _read_csv(path)
        if df is None or header not in df.columns or not len(df):
            return
        df.loc[df.index[row % len(df)], header] = value
        df.to_csv(path, index=False, encoding="utf-8-sig")
    elif kind == "geom":
        _, name, row, which = edit
        path = d / name
        if not path.exists():
            return
        g = gpd.read_file(path)
        geoms = np.asarray(g.geometry.values, dtype=object)
        geoms[row % len(g)] = _geoms()[which]
        g = g.set_geometry(gpd.GeoSeries(geoms, crs=g.crs))
        path.unlink()
        try:
            pyogrio.write_dataframe(g, path)
        except Exception:  # noqa: BLE001 — a geometry GDAL cannot even write: the county could not either
            pyogrio.write_dataframe(g.iloc[[i for i in range(len(g)) if i != row % len(g)]], path)
    elif kind == "dup":
        _, name, row = edit
        path = d / name
        if not path.exists():
            return
        if name in LAYER_FILES:
            g = gpd.read_file(path)
            g = pd.concat([g, g.iloc[[row % len(g)]]], ignore_index=True)
            path.unlink()
            pyogrio.write_dataframe(gpd.GeoDataFrame(g, geometry="geometry", crs=g.crs), path)
        else:
            df = _read_csv(path)
            if df is not None and len(df):
                pd.concat([df, df.iloc[[row % len(df)]]]).to_csv(path, index=False, encoding="utf-8-sig")
    elif kind == "encoding":
        _, name, how = edit
        path = d / name
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        if how == "gbk":
            path.write_bytes(text.encode("gbk", errors="replace"))
        elif how == "latin1_mojibake":
            path.write_text(text.encode("utf-8").decode("latin-1"), encoding="utf-8")
        elif how == "utf16":
            path.write_text(text, encoding="utf-16")
        elif how == "one_gbk_cell":
            lines = text.splitlines(keepends=True)
            raw = b"".join(ln.encode("gbk", errors="replace") if i == len(lines) - 1 else ln.encode("utf-8")
                           for i, ln in enumerate(lines))
            path.write_bytes(raw)
        elif how == "bom_twice":
            path.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbf" + text.encode("utf-8"))
        else:
            path.write_bytes(bytes(range(256)) * 8)
    elif kind == "xlsx":
        _, name, how, k = edit
        path = d / name
        df = _read_csv(path) if path.exists() else None
        if df is None:
            return
        _to_xlsx(df, path.with_suffix(".xlsx"), how, k)
        path.unlink()
    elif kind == "shapefile":
        _, enc, how, frac = edit
        src = d / "parcels.geojson"
        if not src.exists():
            return
        g = gpd.read_file(src)
        src.unlink()
        # Shapefile field names ≤ 10 bytes: the names a county's GIS writes
        from spatial.columns import SHAPEFILE_FIELDS

        g = g.rename(columns={c.zh: SHAPEFILE_FIELDS["parcels"][c.name] for c in COLUMNS["parcels"] if c.zh in g})
        try:
            pyogrio.write_dataframe(g, d / "parcels.shp", encoding=enc)
        except Exception:  # noqa: BLE001 — mixed geometry types GDAL refuses to put in one .shp
            for p in d.glob("parcels.*"):
                p.unlink()
            keep = g.geometry.isna() | g.geom_type.isin(["Polygon", "MultiPolygon"])
            pyogrio.write_dataframe(g[keep.to_numpy()], d / "parcels.shp", encoding=enc)
        part = {"truncate_shp": ".shp", "truncate_shx": ".shx", "truncate_dbf": ".dbf"}.get(how)
        if part:
            p = d / f"parcels{part}"
            data = p.read_bytes()
            p.write_bytes(data[: int(len(data) * frac)])
        elif how.startswith("drop_"):
            (d / f"parcels.{how[5:]}").unlink(missing_ok=True)
        elif how.startswith("cpg_"):
            (d / "parcels.cpg").write_text({"cpg_utf8": "UTF-8", "cpg_gbk": "GBK", "cpg_junk": "KLINGON-9"}[how])


def _to_xlsx(df: pd.DataFrame, path: Path, how: str, k: int) -> None:
    """The table as Excel saves it: numbers as numbers ("numbers": codes too, as Excel does),
    a formula without a cached value, a stray cell at XFD1048576, a date cell, title rows."""
    import datetime as dt

    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    if how == "title_rows":
        ws.append(["2025年度亩均效益评价数据"])
        ws.append([])
    ws.append(list(df.columns))
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            try:
                num = float(v)
                cells.append(num if (how == "numbers" or not str(v).isdigit() or len(str(v)) < 6)
                             and math.isfinite(num) else v)
            except (TypeError, ValueError):
                cells.append(v)
        ws.append([c.replace("\x00", "") if isinstance(c, str) else c for c in cells])
    r = 2 + k % max(len(df), 1) + (2 if how == "title_rows" else 0)
    c = 1 + k % max(len(df.columns), 1)
    if how == "formula":
        ws.cell(row=r, column=c).value = "=B2*2"
    elif how == "far_cell":
        ws["XFD1048576"] = "x"
    elif how == "date_cell":
        ws.cell(row=r, column=c).value = dt.datetime(2024, 3, 4)
    try:
        wb.save(path)
    except Exception:  # noqa: BLE001 — control characters openpyxl refuses to write: Excel could not either
        ws2 = openpyxl.Workbook()
        ws2.active.append(list(df.columns))
        ws2.save(path)


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None


# ------------------------------------------------------------------------------------ the property

def _sane(engine) -> list[str]:
    """What a loaded import must never store: a parcel below the minimum, a non-finite or absurd figure."""
    problems = []
    with engine.connect() as conn:
        small = conn.execute(sa.text("SELECT count(*) FROM parcels WHERE area_m2 < :m"), {"m": MIN_AREA_M2}).scalar_one()
        if small:
            problems.append(f"{small} parcels below {MIN_AREA_M2} m²")
        cols = [c.name for c in COLUMNS["metrics"] if c.dtype in ("float", "int") and c.name != "year"]
        for c in cols:
            v = conn.execute(sa.text(f"SELECT max(abs({c})) FROM metrics")).scalar_one()
            if v is not None and (not math.isfinite(v) or v > PLAUSIBLE_MAX[c]):
                problems.append(f"metrics.{c} holds {v}")
    return problems


def _known(test):
    for corruptions in KNOWN:
        test = example(corruptions=corruptions)(test)
    return test


@_known
@settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("CI") is not None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(corruptions=edits)
def test_import_never_crashes_and_refusal_changes_nothing(db_url, monkeypatch, corruptions):
    work = Path(tempfile.mkdtemp(prefix="mujun_fuzz_"))
    engine = sa.create_engine(db_url)  # one engine per example keeps connections short
    try:
        d = base_bundle(work / "bundle")
        for e in corruptions:
            apply(d, e)
        before = table_state(engine)
        code, out = mujun_import(db_url, d, work, monkeypatch)
        event(f"exit code {code}")  # shown by --hypothesis-show-statistics
        assert code in {LOADED, LOADED_WITH_REJECTS} | REFUSED, (code, out)
        if code in REFUSED:
            assert "nothing was imported" in out.lower(), out
            assert table_state(engine) == before, "a refused import changed the database"
        else:
            assert "拒收行" in out, out
            assert _sane(engine) == []
    finally:
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)


def test_base_bundle_loads_clean(db_url, tmp_path, monkeypatch):
    """The uncorrupted bundle loads with no rejected row: every corruption's effect is its own."""
    d = base_bundle(tmp_path / "bundle")
    code, out = mujun_import(db_url, d, tmp_path, monkeypatch)
    assert code == LOADED, out
    assert "拒收行 0" in out
    for role in ("enterprises", "metrics", "leases", "corrections"):
        name = next(n for n, r in CSV_FILES.items() if r == role)
        header = pd.read_csv(d / name, encoding="utf-8-sig", nrows=0).columns
        assert set(CHINESE_HEADERS[role].values()) <= set(header), role
    assert set(DATA_TABLES) >= {"parcels", "buildings"}
