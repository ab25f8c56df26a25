"""Run fingerprints: the same inputs give the same hash (and, the engine being pure, the
same results), so a stored run can be recognised and never recomputed differently.

The hash covers the scheme's canonical content (:func:`scoring.scheme.scheme_hash`), the
year, the kind, and the columns of ``subjects`` the engine reads — normalised (numbers as
float64, text as str, dates as ISO dates) and sorted by ``subject_id``, so row order and
unused extra columns do not change it.

Example
-------
>>> import pandas as pd
>>> from scoring import load_scheme
>>> s = load_scheme("zhejiang_default")
>>> a = pd.DataFrame({"subject_id": ["x", "y"], "industry_code": ["13", "26"],
...                   "scale": ["规上", "规上"], "land_area_mu": [10, 20]})
>>> run_fingerprint(a, s, 2024) == run_fingerprint(a.iloc[::-1], s, 2024)
True
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .engine import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from .scheme import METRIC_COLUMNS, Scheme, scheme_hash

_TEXT = ("subject_id", "industry_code", "scale", "flags", "land_class", "township", "landlord_id")
_BOOL = ("is_tenant", "idle")


def run_fingerprint(
    subjects: pd.DataFrame,
    scheme: Scheme,
    year: int,
    *,
    previous: pd.DataFrame | None = None,
    kind: str = "enterprise",
) -> str:
    """sha256 over scheme hash, year, kind and the normalised input (and ``previous``)."""
    h = hashlib.sha256()
    h.update(f"mujun-run-v1|{scheme_hash(scheme)}|{year}|{kind}|".encode())
    _update(h, subjects, scheme)
    if previous is not None:
        h.update(b"|previous|")
        _update(h, previous, scheme)
    return h.hexdigest()


def _update(h, frame: pd.DataFrame, scheme: Scheme) -> None:
    columns = [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, *METRIC_COLUMNS, *scheme.extra_columns]
    columns = sorted({c for c in columns if c in frame.columns})
    order = np.argsort(frame["subject_id"].astype("str").to_numpy(dtype=object), kind="stable")
    frame = frame.iloc[order]
    h.update(f"{len(frame)}|".encode())
    for c in columns:
        h.update(f"{c}|".encode())
        h.update(_normalise(frame[c], c).to_numpy().tobytes())


def _normalise(s: pd.Series, column: str) -> pd.Series:
    """A column as uint64 hashes of a canonical dtype, so 10 and 10.0 hash alike."""
    if column in _TEXT:
        s = s.astype("str")
    elif column in _BOOL:
        s = s.astype("boolean")
    elif column == "founded":
        s = pd.to_datetime(s, errors="coerce").dt.strftime("%Y-%m-%d").astype("str")
    else:
        s = pd.to_numeric(s, errors="coerce").astype("float64")
    return pd.util.hash_pandas_object(s, index=False)
