"""指标对比 (余杭) and the county's summary report of a year.

Indicators and grade shares of the rated subjects (经营主体 or 宗地) of the runs shown for each year
(:func:`app.api.layers.shown_runs_sql`), compared by township (镇街), industry group (行业组) or year:
as tables (:func:`compare_table`) and charts drawn server-side with matplotlib (no chart library
is vendored): trend lines over the years, bars by township, the score distribution of a group with
the band cut-offs marked (the lowest score each band holds — bands are by rank).

Who sees what is :data:`app.auth.CONFIDENTIALITY`: counts and grade shares are public (grades are);
indicator means, scores and cut-offs are figures (``mean_tax_per_mu``, ``score``: analyst); a
township key compares within its township only (:meth:`Principal.region_clause`).
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import pandas as pd
import sqlalchemy as sa

from app import store
from app.api.classification import for_run
from app.api.layers import land_in_year_sql, shown_runs_sql
from app.auth import Principal

BY = {"township": "镇街", "industry_group": "行业组", "year": "年度"}
LEVELS = {"enterprise": "经营主体", "parcel": "宗地"}

_ENTERPRISES = """WITH shown AS ({shown})
    SELECT s.year, s.id AS run_id, e.township, r.industry_group, r.list_name, r.grade, r.band_grade, r.score,
           (r.indicators ->> :ind)::float AS value, r.land_area_mu AS area_mu, false AS idle,
           0 AS low_yield_years, r.uscc AS subject
    FROM shown s JOIN enterprise_ratings r ON r.run_id = s.id JOIN enterprises e ON e.uscc = r.uscc
    WHERE {region}"""

_PARCELS = """WITH shown AS ({shown})
    SELECT s.year, s.id AS run_id, p.township, r.industry_group, r.list_name, r.grade, r.band_grade, r.score,
           (r.indicators ->> :ind)::float AS value, p.area_mu, r.idle,
           coalesce(r.low_yield_years, 0) AS low_yield_years, r.identity_code AS subject
    FROM shown s JOIN parcel_ratings r ON r.run_id = s.id
    JOIN LATERAL (SELECT q.township, q.county, q.area_mu FROM {land} q WHERE q.identity_code = r.identity_code LIMIT 1) p ON TRUE
    WHERE {region}"""


def subjects(conn: sa.Connection, who: Principal, level: str = "enterprise",
             indicator: str = "tax_per_mu") -> pd.DataFrame:
    """Every subject of every shown run the caller may see: year, township, group, list, grade,
    band, score, the ``indicator``'s value (its scheme unit), area (亩), idle, low-yield years.
    Raises ``ValueError`` for an unknown level."""
    if level not in LEVELS:
        raise ValueError("level must be enterprise or parcel")
    town = "e.township" if level == "enterprise" else "p.township"
    region, params = who.region_clause(town)
    sql = (_ENTERPRISES if level == "enterprise" else _PARCELS).format(
        shown=shown_runs_sql(who.sees_drafts), region=region, land=land_in_year_sql("s.year"))
    return store.read_frame(conn, sql, params | {"ind": indicator})


def indicators(conn: sa.Connection, who: Principal) -> dict[str, dict]:
    """``{key: {"title", "unit"}}`` of the newest shown run's scheme (the page's choices)."""
    row = conn.execute(sa.text(f"SELECT r.scheme FROM ({shown_runs_sql(who.sees_drafts)}) s "
                               "JOIN evaluation_runs r ON r.id = s.id ORDER BY s.year DESC LIMIT 1")).scalar()
    out: dict[str, dict] = {}
    for lst in (row or {}).get("lists", []):
        for ind in lst.get("indicators", []):
            out.setdefault(ind["key"], {"title": ind.get("title", ind["key"]), "unit": ind.get("unit") or ""})
    return out or {"tax_per_mu": {"title": "亩均税收", "unit": "万元/亩"}}


def grades_of(conn: sa.Connection, who: Principal) -> tuple[list[str], dict[str, str]]:
    cls, _ = for_run(conn, drafts=who.sees_drafts)
    return [c.grade for c in cls.classes], {c.grade: c.hex for c in cls.classes}


def compare_table(df: pd.DataFrame, by: str, grades: list[str], *, year: int | None = None,
                  figures: bool = False, title: str = "指标") -> pd.DataFrame:
    """One row per township / group / year: rated count, count and share (%) per grade and — with
    ``figures`` — the indicator's mean, median and quartiles over the rated subjects. ``year``
    (for ``by`` township or group) picks one year; default the newest. Raises ``ValueError``
    for an unknown ``by``."""
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}")
    rated = df[df["grade"].notna()]
    if by != "year" and len(rated):
        rated = rated[rated["year"] == (year if year is not None else rated["year"].max())]
    rows = []
    for key, part in rated.groupby(by, sort=True, dropna=False):
        row = {BY[by]: key if pd.notna(key) else "（未填）", "参评数": len(part)}
        counts = part["grade"].value_counts()
        for g in grades:
            row[f"{g} 档数"] = int(counts.get(g, 0))
        for g in grades:
            row[f"{g} 档占比(%)"] = round(100.0 * counts.get(g, 0) / len(part), 1) if len(part) else None
        if figures:
            v = part["value"].dropna()
            row[f"{title}平均"] = round(float(v.mean()), 2) if len(v) else None
            row[f"{title}中位数"] = round(float(v.median()), 2) if len(v) else None
            row[f"{title}下四分位"] = round(float(v.quantile(0.25)), 2) if len(v) else None
            row[f"{title}上四分位"] = round(float(v.quantile(0.75)), 2) if len(v) else None
        rows.append(row)
    cols = [BY[by], "参评数", *[f"{g} 档数" for g in grades], *[f"{g} 档占比(%)" for g in grades]]
    out = pd.DataFrame(rows)
    return out if len(out) else pd.DataFrame(columns=cols)


def cutoffs(df: pd.DataFrame, grades: list[str], year: int, list_name: str, group: str | None) -> dict[str, float]:
    """The lowest score each band holds in one list and group (bands are by rank: this is where
    a score crosses into the band)."""
    part = df[(df["year"] == year) & (df["list_name"] == list_name) & df["score"].notna()]
    if group is not None:
        part = part[part["industry_group"] == group]
    lows = part.groupby("band_grade")["score"].min()
    return {g: float(lows[g]) for g in grades if g in lows.index}


# --------------------------------------------------------------------------- charts (matplotlib)

@lru_cache(maxsize=1)
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib import font_manager

    # only fonts that are installed (fonts-noto-cjk on Debian): a missing one warns on every glyph
    have = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in ("Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "WenQuanYi Zen Hei") if f in have]
    plt.rcParams["font.family"] = [*cjk, "sans-serif"]
    plt.rcParams["axes.unicode_minus"] = False
    return plt


def _save(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def chart(kind: str, df: pd.DataFrame, grades: list[str], colours: dict[str, str], *, figures: bool,
          title: str = "亩均税收", unit: str = "万元/亩", year: int | None = None, list_name: str | None = None,
          group: str | None = None, fmt: str = "png") -> bytes:
    """One chart as PNG or SVG bytes: ``trend`` (grade shares, and for figures the indicator's mean,
    over the years), ``township`` (grade shares by township, and the mean), ``distribution`` (the
    scores of one list and group in a year with the band cut-offs marked; figures only).
    Raises ``ValueError`` for an unknown kind, ``PermissionError`` for a distribution without figures."""
    plt = _plt()
    rated = df[df["grade"].notna()]
    if kind == "trend":
        fig, axes = plt.subplots(1, 2 if figures else 1, figsize=(10 if figures else 6, 3.6), squeeze=False)
        t = compare_table(df, "year", grades)
        ax = axes[0][0]
        for g in grades:
            if f"{g} 档占比(%)" in t:
                ax.plot(t["年度"], t[f"{g} 档占比(%)"], marker="o", color=colours.get(g), label=f"{g} 档")
        ax.set_title("各档占比（%）随年度变化")
        ax.set_xticks(list(t["年度"])) if len(t) else None
        ax.legend(fontsize=8)
        ax.grid(alpha=.3)
        if figures:
            ax2 = axes[0][1]
            means = rated.groupby("year")["value"].mean()
            meds = rated.groupby("year")["value"].median()
            ax2.plot(means.index, means.values, marker="o", color="#0b5cad", label="平均")
            ax2.plot(meds.index, meds.values, marker="s", color="#7a869a", ls="--", label="中位数")
            ax2.set_title(f"{title}（{unit}）随年度变化")
            ax2.set_xticks(list(means.index))
            ax2.legend(fontsize=8)
            ax2.grid(alpha=.3)
        return _save(fig, fmt)
    if kind == "township":
        y = year if year is not None else (int(rated["year"].max()) if len(rated) else None)
        t = compare_table(df, "township", grades, year=y, figures=figures, title=title)
        fig, axes = plt.subplots(1, 2 if figures else 1, figsize=(11 if figures else 6.5, 3.8), squeeze=False)
        ax = axes[0][0]
        left = np.zeros(len(t))
        for g in grades:
            vals = t.get(f"{g} 档占比(%)", pd.Series([0] * len(t))).fillna(0).to_numpy()
            ax.barh(t["镇街"], vals, left=left, color=colours.get(g), label=f"{g} 档")
            left += vals
        ax.set_title(f"{y} 年各镇街等级构成（%）")
        ax.invert_yaxis()
        ax.legend(fontsize=8, ncol=len(grades), loc="lower right")
        if figures:
            ax2 = axes[0][1]
            ax2.barh(t["镇街"], t[f"{title}平均"], color="#0b5cad")
            ax2.invert_yaxis()
            ax2.set_title(f"{y} 年各镇街{title}平均（{unit}）")
            ax2.grid(alpha=.3, axis="x")
        return _save(fig, fmt)
    if kind == "distribution":
        if not figures:
            raise PermissionError("the score distribution and its cut-offs are figures (analyst)")
        y = year if year is not None else int(rated["year"].max())
        lists = rated[rated["year"] == y]["list_name"].dropna()
        ln = list_name or (lists.mode().iat[0] if len(lists) else None)
        part = rated[(rated["year"] == y) & (rated["list_name"] == ln)]
        if group is not None:
            part = part[part["industry_group"] == group]
        fig, ax = plt.subplots(figsize=(8, 3.6))
        scores = part["score"].dropna()
        # a long tail (a few very high scores) would squeeze the bulk: show up to the 98th percentile
        hi = float(scores.quantile(0.98)) * 1.05 if len(scores) else 1.0
        shown = scores[scores <= hi]
        ax.hist(shown, bins=min(40, max(5, len(shown) // 10)), color="#9fb3c8", edgecolor="#5f7288")
        cuts = cutoffs(df, grades, y, ln, group)
        top = ax.get_ylim()[1]
        for k, (g, s) in enumerate(cuts.items()):
            if g == grades[-1]:
                continue  # the lowest band starts at the bottom: no cut-off to mark
            ax.axvline(s, color=colours.get(g, "#333"), lw=2)
            ax.text(s, top * (0.95 - 0.1 * k), f" {g} ≥ {s:.2f}", color=colours.get(g, "#333"), fontsize=8, va="top")
        if len(scores) > len(shown):
            ax.text(0.99, 0.02, f"另有 {len(scores) - len(shown)} 个高分主体未画出", transform=ax.transAxes,
                    ha="right", fontsize=7, color="#66707a")
        ax.set_title(f"{y} 年 {ln}{' · ' + group if group else ''} 综合得分分布（竖线：各档最低得分）")
        ax.set_xlabel("综合得分")
        ax.set_ylabel("主体数")
        return _save(fig, fmt)
    raise ValueError("kind must be trend, township or distribution")


def svg_inline(data: bytes) -> str:
    """An SVG chart for inlining in HTML (without the XML prolog)."""
    text = data.decode("utf-8")
    return text[text.find("<svg"):]


# --------------------------------------------------------------------------- the county summary


def summary(conn: sa.Connection, who: Principal, year: int | None = None) -> dict:
    """The county's summary of one year: totals, grade shares, list sizes, low-yield land (亩),
    clusters, and changes since the year before (grade moves of the same subjects). Raises
    ``LookupError`` when the caller may see no run of that year."""
    from app.api.clusters import find_clusters
    from app.lists import _run

    run = _run(conn, year, None, drafts=who.sees_drafts) if year is not None else None
    ent = subjects(conn, who, "enterprise")
    par = subjects(conn, who, "parcel")
    if run is None:
        if not len(ent):
            raise LookupError("尚无评价结果")
        run = _run(conn, int(ent["year"].max()), None, drafts=who.sees_drafts)
    y = int(run["year"])
    grades, colours = grades_of(conn, who)
    prev_years = sorted(v for v in set(ent["year"]) if v < y)
    prev = prev_years[-1] if prev_years else None

    def block(df: pd.DataFrame, kind: str) -> dict:
        cur = df[df["year"] == y]
        rated = cur[cur["grade"].notna()]
        counts = rated["grade"].value_counts()
        out = {"total": len(cur), "rated": len(rated), "not_rated": len(cur) - len(rated),
               "grades": [{"grade": g, "n": int(counts.get(g, 0)), "colour": colours.get(g),
                           "share": round(100.0 * counts.get(g, 0) / len(rated), 1) if len(rated) else 0.0}
                          for g in grades],
               "lists": [{"name": k, "n": int(v)} for k, v in rated["list_name"].value_counts().sort_index().items()],
               "area_mu": round(float(rated["area_mu"].fillna(0).sum()), 2)}
        if prev is not None:
            before = df[(df["year"] == prev) & df["grade"].notna()].set_index("subject")["grade"]
            now = rated.set_index("subject")["grade"]
            both = now.index.intersection(before.index)
            order = {g: i for i, g in enumerate(grades)}
            up = sum(order.get(now[s], 99) < order.get(before[s], 99) for s in both)
            down = sum(order.get(now[s], 99) > order.get(before[s], 99) for s in both)
            prev_counts = before.value_counts()
            out["change"] = {"year": prev, "same_subjects": len(both), "up": int(up), "down": int(down),
                             "same": int(len(both) - up - down), "new": int(len(now.index.difference(before.index))),
                             "delta": [{"grade": g, "n": int(counts.get(g, 0) - prev_counts.get(g, 0))} for g in grades]}
        if who.sees_figures:
            v = rated["value"].dropna()
            out["mean_tax_per_mu"] = round(float(v.mean()), 2) if len(v) else None
        return out

    doc = {"year": y, "run_id": int(run["id"]), "scheme": run["scheme_name"], "region": who.region,
           "figures": who.sees_figures, "grades": grades, "colours": colours,
           "enterprises": block(ent, "enterprise") if who.sees_links else None, "parcels": block(par, "parcel")}
    cur_p = par[par["year"] == y]
    low = cur_p[(cur_p["low_yield_years"] >= 1) | cur_p["idle"].fillna(False).astype(bool)]
    if who.sees("low_yield_years"):
        doc["low_yield"] = {"n": len(low), "area_mu": round(float(low["area_mu"].fillna(0).sum()), 2),
                            "idle_n": int(cur_p["idle"].fillna(False).astype(bool).sum()),
                            "idle_area_mu": round(float(cur_p.loc[cur_p["idle"].fillna(False).astype(bool),
                                                                   "area_mu"].fillna(0).sum()), 2)}
    rows = find_clusters(conn, int(run["id"]), grades=grades[-2:], include_idle=True, gap_m=30.0,
                         min_area_mu=0.0, who=who)
    big = [r for r in rows if r.area_mu >= 100]
    doc["clusters"] = {"n": len(rows), "area_mu": round(sum(r.area_mu for r in rows), 2),
                       "n_100": len(big), "area_100": round(sum(r.area_mu for r in big), 2),
                       "largest": [{"id": r.id, "area_mu": round(r.area_mu, 2), "members": r.member_count,
                                    "townships": "、".join(sorted(t for t in r.townships if t))} for r in rows[:5]],
                       "rule": f"{'、'.join(grades[-2:])} 档或闲置宗地，间隔不超过 30 米"}
    src = ent if who.sees_links else par
    t = compare_table(src, "township", grades, year=y)
    doc["by_township"] = t.to_dict("records")
    doc["by_township_columns"] = list(t.columns)
    src = src[src["year"] <= y]  # the report looks back from its year
    doc["charts"] = {"trend": svg_inline(chart("trend", src, grades, colours, figures=who.sees_figures, fmt="svg")),
                     "township": svg_inline(chart("township", src, grades, colours, figures=False, year=y, fmt="svg"))}
    doc["level"] = "经营主体" if who.sees_links else "宗地"
    return doc


def render_summary(conn: sa.Connection, who: Principal, year: int | None, ext: str) -> tuple[bytes, str]:
    """The county summary report (亩均效益评价汇总报告) of a year as ``html`` or ``pdf`` bytes, and its
    file name, for the web route and ``mujun report summary`` alike. Raises ``LookupError`` when
    the caller may see no run of that year."""
    import datetime as dt

    from app.checkup import _env, render_pdf

    doc = summary(conn, who, year)
    doc["generated"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    html = _env().get_template("summary.html").render(d=doc)
    name = f"{doc['year']}年亩均效益评价汇总报告{('_' + who.region) if who.region else ''}.{ext}"
    return (html.encode() if ext == "html" else render_pdf(html)), name
