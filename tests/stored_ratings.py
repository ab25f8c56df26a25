"""Stored rating rows of an evaluation run, compared column by column (the province-database tests)."""

from __future__ import annotations

import math

import pandas as pd
import sqlalchemy as sa

#: Rating table → its subject key.
KEYS = {"enterprise_ratings": "uscc", "parcel_ratings": "identity_code"}


def stored_rows(conn, table: str, run_id: int) -> pd.DataFrame:
    """The rows of ``table`` of run ``run_id``, ordered by subject, without ``run_id``."""
    return pd.read_sql(sa.text(f"SELECT * FROM {table} WHERE run_id = :r ORDER BY {KEYS[table]}"), conn,
                       params={"r": run_id}).drop(columns="run_id")


def _null(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def same_value(a, b) -> bool:
    """Both NULL, or equal exactly (floats, and the numbers in the JSON, to the last bit)."""
    return _null(a) and _null(b) or (not _null(a) and not _null(b) and a == b)


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame, key: str, what) -> None:
    """The same subjects in the same order, the same columns, every value :func:`same_value`."""
    assert len(a) == len(b) > 0, what
    assert a[key].tolist() == b[key].tolist(), what
    assert list(a.columns) == list(b.columns), what
    for c in a.columns:
        bad = [(k, x, z) for k, x, z in zip(a[key], a[c].astype(object), b[c].astype(object)) if not same_value(x, z)]
        assert not bad, (what, c, len(bad), bad[:2])
