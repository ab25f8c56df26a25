"""Identifiers: 统一社会信用代码 (USCC, GB 32100-2015) and 宗地代码 / 不动产单元代码 (GB/T 37346).

A USCC has 18 characters from ``0123456789ABCDEFGHJKLMNPQRTUWXY`` (no I, O, S, V, Z); the 18th
is a check character over the first 17 with weights 3^i mod 31. A wrong length or character
is a rejection; a failed check only a warning, since some real early pilot codes fail it
(e.g. ``91350211M00013FA1N``).

>>> uscc_check_char("91110000600037341")
'L'
>>> uscc_status("91110000600037341L")
('ok', '')
>>> is_parcel_code("340123002004GB00011")
True
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_VALUE = {c: i for i, c in enumerate(USCC_CHARSET)}
_USCC_RE = re.compile(r"^[0-9A-HJ-NP-RTUWXY]{18}$")

#: 宗地代码 (19) with an optional 定着物 part (28 = 不动产单元代码).
PARCEL_CODE_RE = re.compile(r"^\d{12}[GJZ][ABSXCDEFLNHGWY]\d{5}([FLQW]\d{8})?$")


def uscc_check_char(first17: str) -> str:
    """The GB 32100-2015 check character for the first 17 characters of a USCC."""
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, USCC_WEIGHTS))
    return USCC_CHARSET[(31 - total % 31) % 31]


def uscc_status(code: object) -> tuple[str, str]:
    """Classify one USCC: ``('ok', '')``, ``('warning', reason)`` or ``('error', reason)``."""
    if code is None or (isinstance(code, float) and np.isnan(code)) or code is pd.NA:
        return "error", "统一社会信用代码为空 (USCC is empty)"
    text = str(code).strip().upper()
    if len(text) != 18:
        return "error", f"统一社会信用代码应为18位，实为{len(text)}位 (USCC must have 18 characters, got {len(text)})"
    if not _USCC_RE.match(text):
        bad = sorted({c for c in text if c not in _USCC_VALUE})
        return "error", f"统一社会信用代码含非法字符 {''.join(bad)} (USCC has characters outside GB 32100: {''.join(bad)})"
    expected = uscc_check_char(text[:17])
    if text[17] != expected:
        return "warning", f"校验码应为{expected}，实为{text[17]} (USCC check character should be {expected})"
    return "ok", ""


def uscc_status_series(codes: pd.Series) -> pd.DataFrame:
    """Vectorised-enough :func:`uscc_status` over a column: returns columns ``status``, ``reason``.

    The check-character sum is computed with numpy over the whole column; only malformed codes
    take the per-value path for their message.
    """
    text = codes.astype("string").str.strip().str.upper()
    well_formed = text.str.fullmatch(_USCC_RE.pattern).fillna(False).astype(bool)
    status = pd.Series("error", index=codes.index, dtype="object")
    reason = pd.Series("", index=codes.index, dtype="object")
    if well_formed.any():
        wf = text[well_formed].to_numpy(dtype=str)
        chars = np.frombuffer("".join(wf).encode("ascii"), dtype="S1").reshape(len(wf), 18)
        lut = np.full(256, -1, dtype=np.int64)
        for c, v in _USCC_VALUE.items():
            lut[ord(c)] = v
        values = lut[chars.view(np.uint8)]
        total = (values[:, :17] * np.asarray(USCC_WEIGHTS)).sum(axis=1)
        expected = (31 - total % 31) % 31
        ok = values[:, 17] == expected
        idx = text.index[well_formed]
        status.loc[idx[ok]] = "ok"
        status.loc[idx[~ok]] = "warning"
        charset = np.array(list(USCC_CHARSET))
        reason.loc[idx[~ok]] = [
            f"校验码应为{e}，实为{g} (USCC check character should be {e})"
            for e, g in zip(charset[expected[~ok]], wf[~ok].astype("U18").view("U1").reshape(-1, 18)[:, 17])
        ]
    for i in text.index[~well_formed]:
        status.loc[i], reason.loc[i] = uscc_status(text.loc[i] if text.loc[i] is not pd.NA else None)
    return pd.DataFrame({"status": status, "reason": reason})


def make_uscc(body17: str) -> str:
    """Append the check character: a valid USCC from its first 17 characters."""
    return body17 + uscc_check_char(body17)


def is_parcel_code(code: object) -> bool:
    """Whether a 宗地代码 (19) or 不动产单元代码 (28) has the GB/T 37346 form."""
    return isinstance(code, str) and PARCEL_CODE_RE.match(code) is not None
