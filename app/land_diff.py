"""``mujun land diff OLD NEW``: what became of every piece of land between two years.

One row per piece — each code valid in either year — with ``identity_code``, ``status``,
``related_codes`` (``;``-joined), ``area_mu_old``, ``area_mu_new`` (亩):

==========  =============================================================================
kept        the same version in both years
changed     the same code, another version (moved beyond the noise band, or attributes)
split       a parent split in the new year (related: its children), or a child (its parent)
merged      a parent merged (related: the merged piece), or the merged piece (its parents)
recoded     the same land under another code (a re-issued 宗地代码, registration …)
new         only in the new year, from no earlier land
revived     only in the new year, land retired before the old year that came back (its old code)
retired     only in the old year, with no heir
==========  =============================================================================

Both years read the land by the one rule (:func:`app.api.layers.land_in_year_sql`); lineage is
that recorded by deliveries after OLD up to NEW.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from app import store
from app.api.layers import land_in_year_sql

COLUMNS = ["identity_code", "status", "related_codes", "area_mu_old", "area_mu_new"]
STATUS_ZH = {"kept": "未变", "changed": "变更", "split": "分割", "merged": "合并", "recoded": "换码",
             "new": "新增", "revived": "恢复", "retired": "注销"}
HEADERS_ZH = {"identity_code": "宗地身份码", "status": "状态", "related_codes": "相关宗地身份码",
              "area_mu_old": "原面积(亩)", "area_mu_new": "新面积(亩)"}
_KIND_STATUS = {"split": "split", "merge": "merged", "recode": "recoded"}


def land_diff(engine: sa.Engine, old_year: int, new_year: int) -> pd.DataFrame:
    """The diff table (module docstring), sorted by status then code.

    Raises ``ValueError`` when ``new_year`` is not after ``old_year``.
    """
    if new_year <= old_year:
        raise ValueError(f"新年度 {new_year} 应晚于原年度 {old_year} (NEW must be after OLD)")
    sql = f"SELECT identity_code, version_id, area_mu FROM {land_in_year_sql()} p"
    with engine.connect() as conn:
        old = store.read_frame(conn, sql, {"year": old_year}).set_index("identity_code")
        new = store.read_frame(conn, sql, {"year": new_year}).set_index("identity_code")
        lin = store.read_frame(conn, "SELECT parent_code, child_code, kind FROM land_lineage "
                                     "WHERE year > :a AND year <= :b ORDER BY id", {"a": old_year, "b": new_year})
        # codes whose land was retired by OLD's year: in NEW again, they are land that came back
        before = set(conn.execute(sa.text("SELECT DISTINCT identity_code FROM parcels WHERE valid_to <= :a"),
                                  {"a": old_year}).scalars())
    rows = []
    both = old.index.intersection(new.index)
    for code in old.index.union(new.index):
        o = old["area_mu"].get(code)
        n = new["area_mu"].get(code)
        if code in both:
            same = old.at[code, "version_id"] == new.at[code, "version_id"]
            kids = lin[lin["parent_code"] == code]
            status = "kept" if same and not len(kids) else "changed"
            rows.append((code, status, ";".join(sorted(kids["child_code"])), o, n))
        elif code in new.index:
            par = lin[lin["child_code"] == code]
            status = _KIND_STATUS.get(par["kind"].iloc[0], "new") if len(par) else \
                "revived" if code in before else "new"
            rows.append((code, status, ";".join(sorted(par["parent_code"])), None, n))
        else:
            kids = lin[lin["parent_code"] == code]
            status = _KIND_STATUS.get(kids["kind"].iloc[0], "retired") if len(kids) else "retired"
            rows.append((code, status, ";".join(sorted(kids["child_code"])), o, None))
    out = pd.DataFrame(rows, columns=COLUMNS)
    order = {s: i for i, s in enumerate(STATUS_ZH)}
    return out.sort_values(["status", "identity_code"], key=lambda s: s.map(order) if s.name == "status" else s,
                           ignore_index=True)


def write_diff(diff: pd.DataFrame, out: str | Path) -> Path:
    """``.csv`` (UTF-8 with BOM, the English column names) or ``.xlsx`` (Chinese headers and
    statuses). Raises ``ValueError`` for another extension."""
    out = Path(out)
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        diff.to_csv(out, index=False, encoding="utf-8-sig")
    elif suffix == ".xlsx":
        zh = diff.assign(status=diff["status"].map(STATUS_ZH)).rename(columns=HEADERS_ZH)
        zh.to_excel(out, index=False, sheet_name="土地变化")
    else:
        raise ValueError(f"{out}: 请用 .csv 或 .xlsx (use .csv or .xlsx)")
    return out


def summary_text(diff: pd.DataFrame, old_year: int, new_year: int) -> str:
    """A printed summary in Chinese: pieces per status, land area of both years."""
    counts = diff["status"].value_counts()
    parts = [f"{STATUS_ZH[s]} {int(counts[s])} 宗" for s in STATUS_ZH if s in counts]
    a_old = diff["area_mu_old"].astype(float).sum()
    # a piece kept/changed counts once per year; the new year's area is the land valid in it
    a_new = diff["area_mu_new"].astype(float).sum()
    return (f"{old_year} → {new_year} 年土地变化：" + "，".join(parts)
            + f"。土地面积 {a_old:,.2f} 亩 → {a_new:,.2f} 亩（{a_new - a_old:+,.2f} 亩）。")
