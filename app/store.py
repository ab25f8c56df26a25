"""Bulk moves between (Geo)DataFrames and PostGIS: COPY into a temp table, then one statement.

Row-by-row INSERTs would take minutes for a province (500k parcels, 2M enterprises); COPY
streams them in seconds, and the final ``INSERT … ON CONFLICT`` or swap is one set operation.
Upserts only touch rows whose content changed, so re-importing the same data changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import shapely
import sqlalchemy as sa

from app.models import SRID, YEAR_PARTITIONED, metadata


def _cell(value):
    """One value in COPY text form (None = NULL)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (dict, list)):
        # orjson writes NaN as null (JSONB refuses NaN) and numpy scalars as numbers.
        return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()
    if isinstance(value, (np.bool_, bool)):
        return "t" if value else "f"
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _prepared_columns(table: str, df: pd.DataFrame, columns: Sequence[str], geom_col: str | None) -> list[Iterable]:
    types = {c.name: c.type for c in metadata.tables[table].columns}
    out = []
    for col in columns:
        if col == geom_col:
            geoms = np.asarray(df.geometry.values if isinstance(df, gpd.GeoDataFrame) else df[col].values, dtype=object)
            present = ~shapely.is_missing(geoms)
            hexed = np.full(len(geoms), None, dtype=object)
            if present.any():
                g = shapely.set_srid(geoms[present], SRID)
                hexed[present] = shapely.to_wkb(g, hex=True, include_srid=True)
            out.append(hexed)
        elif col not in df.columns:
            out.append([None] * len(df))
        elif isinstance(types.get(col), sa.Integer):
            # pandas turns integer columns with gaps into floats; the database wants "3", not "3.0".
            out.append(pd.array(pd.to_numeric(df[col], errors="coerce").round(), dtype="Int64").tolist())
        else:
            out.append(df[col].tolist())
    return out


def copy_into_temp(conn: sa.Connection, table: str, df: pd.DataFrame, columns: Sequence[str],
                   geom_col: str | None = None) -> str:
    """COPY ``df[columns]`` into a temp table shaped like ``table``; return the temp table's name."""
    tmp = f"tmp_{table}"
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {tmp}"))
    conn.execute(sa.text(
        f"CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {', '.join(columns)} FROM {table} WITH NO DATA"))
    copy_rows(conn, table, df, columns, geom_col, into=tmp)
    return tmp


def copy_rows(conn: sa.Connection, table: str, df: pd.DataFrame, columns: Sequence[str],
              geom_col: str | None = None, into: str | None = None) -> int:
    """COPY ``df[columns]`` (typed as ``table``'s columns) straight into ``into`` (default
    ``table``, a partitioned table routes each row); returns the number of rows."""
    raw = conn.connection.driver_connection
    cols = _prepared_columns(table, df, columns, geom_col)
    with raw.cursor() as cur:
        with cur.copy(f"COPY {into or table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in zip(*cols):
                copy.write_row([_cell(v) for v in row])
    return len(df)


def upsert(conn: sa.Connection, table: str, df: pd.DataFrame, keys: Sequence[str],
           geom_col: str | None = None, columns: Sequence[str] | None = None) -> dict[str, int]:
    """Insert new rows, update changed ones, leave identical ones untouched.

    Returns ``{"inserted": n, "updated": m, "unchanged": k}``.
    """
    if len(df) == 0:
        return {"inserted": 0, "updated": 0, "unchanged": 0}
    t = metadata.tables[table]
    columns = list(columns or [c.name for c in t.columns if c.name in df.columns or c.name == geom_col])
    tmp = copy_into_temp(conn, table, df, columns, geom_col)
    updatable = [c for c in columns if c not in keys]
    col_list = ", ".join(columns)
    if updatable:
        # Only rows whose content differs are rewritten: a re-import is a no-op.
        sets = ", ".join(f"{c} = excluded.{c}" for c in updatable)
        if "updated_at" in t.columns and "updated_at" not in columns:
            sets += ", updated_at = now()"
        old = ", ".join(f"{table}.{c}" for c in updatable)
        new = ", ".join(f"excluded.{c}" for c in updatable)
        conflict = f"DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})"
    else:
        conflict = "DO NOTHING"
    rows = conn.execute(sa.text(
        f"INSERT INTO {table} ({col_list}) SELECT {col_list} FROM {tmp} "
        f"ON CONFLICT ({', '.join(keys)}) {conflict} RETURNING (xmax = 0) AS inserted"
    )).all()
    inserted = sum(1 for r in rows if r[0])
    updated = len(rows) - inserted
    return {"inserted": inserted, "updated": updated, "unchanged": len(df) - len(rows)}


def ensure_year_partitions(conn: sa.Connection, years: Iterable[int]) -> None:
    """Create the partitions of each year of the per-year tables (:data:`app.models.YEAR_PARTITIONED`)
    that has none yet (``mujun_ensure_year``, migration 0007); cheap when they exist. Without it
    rows still land, in the default partition, but a year's reads are not pruned to them."""
    for y in sorted({int(y) for y in years if pd.notna(y) and int(y) > 0}):
        conn.execute(sa.text("SELECT mujun_ensure_year(:y)"), {"y": y})


def replace_all(conn: sa.Connection, table: str, df: pd.DataFrame, geom_col: str | None = None,
                where: str | None = None) -> int:
    """Replace a derived table's rows (or those matching ``where``) with ``df``; a per-year table
    gets its years' partitions first (:func:`ensure_year_partitions`)."""
    t = metadata.tables[table]
    if table in YEAR_PARTITIONED and len(df) and "year" in df.columns:
        ensure_year_partitions(conn, df["year"].unique())
    conn.execute(sa.text(f"DELETE FROM {table}" + (f" WHERE {where}" if where else "")))
    if len(df) == 0:
        return 0
    columns = [c.name for c in t.columns if c.name in df.columns or c.name == geom_col]
    tmp = copy_into_temp(conn, table, df, columns, geom_col)
    conn.execute(sa.text(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {tmp}"))
    return len(df)


def read_frame(conn: sa.Connection, sql: str, params: dict | None = None, geom_col: str | None = None,
               crs: int | None = SRID) -> pd.DataFrame:
    """A query's result as a DataFrame, or a GeoDataFrame when ``geom_col`` is given (sent as WKB)."""
    result = conn.execute(sa.text(sql), params or {})
    df = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    if geom_col is None:
        return df
    wkb = df[geom_col].map(lambda b: bytes(b) if b is not None else None).to_numpy(dtype=object)
    geoms = shapely.from_wkb(wkb)
    return gpd.GeoDataFrame(df.drop(columns=[geom_col]), geometry=gpd.GeoSeries(geoms, index=df.index, crs=crs))
