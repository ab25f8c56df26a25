"""体检表 (一企一单, 湖州): one A4 page per enterprise or per piece of land, as HTML and PDF.

What a page holds: identity; a map thumbnail of its land and the neighbours (an SVG drawn from the
PostGIS geometry with ``ST_AsSVG`` in Web Mercator, EPSG:3857 — no tile server); each indicator
against the average of its group (same list and 行业组) and of its township (same list), and the
baseline it was scored against — averages over its own county (a province database holds many:
``enterprises.county`` / ``parcels.county``, NULL = the database's one county, each rated as its
own unit by :func:`app.evaluation.county_ratings`); score, rank and percentile; the grade over the years; the
adjustment rules that fired; warnings; and what would raise the grade.

"What would raise the grade" is computed from the run's own scores: the score to reach is the
score of the lowest-ranked subject that the next better band holds (same county, list and group;
bands are by rank within the county, 办法 §分档), the gap is that minus this subject's score, and the gain needed on the
weightiest indicator follows from the scoring rule ``points = value ÷ baseline × weight × 系数``
(:mod:`scoring.engine`): Δvalue = Δscore × baseline ÷ (weight × 系数), holding everyone else's
values — and so the baseline — fixed. When the indicator is capped (封顶) and its headroom is
smaller than the gap, the page says so instead of giving a number.

Who sees what follows :data:`app.auth.CONFIDENTIALITY` exactly as the archives do
(:mod:`app.api.archives`): an enterprise's page needs ``link`` (viewer, or public when the
county publishes links); figures (values, averages, baselines, points, scores, the gain needed)
only ``analyst``; a township key sees only its township (404 elsewhere).

The page is rendered by Jinja2 (``app/templates/checkup.html``, print stylesheet ``@page A4``)
and turned into PDF by WeasyPrint.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app.api.classification import for_run
from app.api.layers import derived_year_sql, land_in_year_sql, shown_runs_sql
from app.auth import Principal

TEMPLATES = Path(__file__).resolve().parent / "templates"
MU_M2 = 10000.0 / 15

__all__ = ["Checkups", "render_html", "render_pdf"]


@lru_cache(maxsize=1)
def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape())
    env.filters["n"] = _fmt
    return env


def _fmt(v: Any, digits: int = 2) -> str:
    """A number as the 办法's tables print it (half-up, thousands separators); ``—`` for none."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, float)):
        q = math.floor(abs(v) * 10 ** digits + 0.5 + 1e-9) / 10 ** digits
        return f"{math.copysign(q, v):,.{digits}f}" if digits else f"{int(math.copysign(q, v)):,}"
    return str(v)


def render_html(doc: dict) -> str:
    """The 体检表 as one HTML page (print stylesheet: A4 portrait)."""
    return _env().get_template("checkup.html").render(d=doc)


_FONTS = threading.local()


def render_pdf(html: str) -> bytes:
    """The page as PDF (WeasyPrint); fonts are the system's CJK fonts (fonts-noto-cjk).

    The font configuration is kept per thread (a third of the time of a page goes into setting it
    up again; it is not shared across threads, which WeasyPrint does not promise to support)."""
    import weasyprint
    from weasyprint.text.fonts import FontConfiguration

    fonts = getattr(_FONTS, "config", None)
    if fonts is None:
        fonts = _FONTS.config = FontConfiguration()
    return weasyprint.HTML(string=html, base_url=str(TEMPLATES)).write_pdf(font_config=fonts)


# --------------------------------------------------------------------------- SQL

_RUN = """SELECT r.id, r.year, r.status, r.scheme_name, r.scheme_version, r.scheme
          FROM evaluation_runs r WHERE r.id = ({run})"""

_ENT = """SELECT e.uscc, e.name, e.industry_code, e.scale, e.township, e.county, e.address, e.flags,
                 ST_AsGeoJSON(e.geom) AS point
          FROM enterprises e WHERE e.uscc = :code AND {region}"""

_ENT_RATING = "SELECT * FROM enterprise_ratings WHERE run_id = :run AND uscc = :code"

_PAR = """SELECT p.identity_code, p.parcel_code, p.kind, p.township, p.county, p.land_use, p.owner_name, p.owner_uscc,
                 p.area_m2, p.area_mu, p.registered_area_m2
          FROM {land} p WHERE p.identity_code = :code AND {region} ORDER BY p.valid_from DESC LIMIT 1"""

_PAR_RATING = "SELECT * FROM parcel_ratings WHERE run_id = :run AND identity_code = :code"

_HISTORY = """WITH shown AS ({shown})
    SELECT s.year, s.id AS run_id, r.grade, r.colour, r.score, r.rank, r.percentile,
           (r.explanation ->> 'rank_n')::int AS rank_n
    FROM shown s JOIN {table} r ON r.run_id = s.id AND r.{key} = :code ORDER BY s.year"""

_ENT_LAND = """SELECT p.identity_code, p.parcel_code, p.kind, p.area_mu, l.role, l.share, l.attributed_area_mu
    FROM land_links l JOIN {land} p ON p.identity_code = l.identity_code
    WHERE l.uscc = :code AND l.year = {link_year} AND {region}
    ORDER BY l.share DESC NULLS LAST, p.identity_code"""

_PAR_ENTS = """SELECT l.uscc, e.name, l.role, l.share, l.attributed_area_mu
    FROM land_links l LEFT JOIN enterprises e ON e.uscc = l.uscc
    WHERE l.identity_code = :code AND l.year = {link_year}
    ORDER BY l.share DESC NULLS LAST, l.uscc"""

#: Mean of each indicator over the evaluated subjects of one list, by county and group or by
#: county and township (``s``: the subject's row, for its county and township).
_MEANS = """SELECT s.county AS c, {by} AS k, key, avg((r.indicators ->> key)::float) AS mean, count(*) AS n
    FROM {table} r {join}, jsonb_object_keys(r.indicators) key
    WHERE r.run_id = :run AND r.list_name = :list AND r.evaluated AND r.grade IS NOT NULL
      AND jsonb_typeof(r.indicators -> key) = 'number'
    GROUP BY 1, 2, 3"""

#: Score range of each band (before adjustments) of one county, list and group: bands are by rank.
_BANDS = """SELECT r.band_grade, min(r.score) AS lo, max(r.score) AS hi, count(*) AS n
    FROM {table} r LEFT JOIN {subject} s ON {on}
    WHERE r.run_id = :run AND r.list_name = :list AND r.industry_group IS NOT DISTINCT FROM :grp
      AND s.county IS NOT DISTINCT FROM :county
      AND r.evaluated AND r.score IS NOT NULL AND r.band_grade IS NOT NULL
    GROUP BY 1"""

#: The land around a subject, in Web Mercator (EPSG:3857): the subject's land and its neighbours.
_MAP = """WITH focus AS (
        SELECT ST_Transform(p.geom, 3857) AS g FROM {land} p WHERE p.identity_code = ANY(:codes) AND {region}),
    box AS (
        SELECT ST_SetSRID(ST_Expand(e, greatest(80.0, 0.45 * greatest(ST_XMax(e) - ST_XMin(e), ST_YMax(e) - ST_YMin(e)))), 3857) AS b
        FROM (SELECT ST_Extent(g)::geometry AS e FROM focus) x WHERE e IS NOT NULL)
    SELECT p.identity_code, p.identity_code = ANY(:codes) AS mine, r.grade,
           ST_AsSVG(ST_Transform(p.geom, 3857), 0, 1) AS d,
           ST_XMin(b) AS x0, ST_YMin(b) AS y0, ST_XMax(b) AS x1, ST_YMax(b) AS y1,
           ST_Y(ST_Transform(ST_Centroid(b), 4326)) AS lat
    FROM box, {land} p
    LEFT JOIN parcel_ratings r ON r.identity_code = p.identity_code AND r.run_id = :run
    WHERE p.geom && ST_Transform(box.b, 4490) AND ST_Intersects(p.geom, ST_Transform(box.b, 4490)) AND {region}
    ORDER BY (p.identity_code = ANY(:codes)), p.identity_code
    LIMIT 400"""


# --------------------------------------------------------------------------- the pages


@dataclass
class Checkups:
    """Builds 体检表 documents for one caller, caching what every page of a run shares
    (means by group and township, band scores, colours) — a batch builds thousands.

    ``year`` picks the run shown for it (newest when ``None``); Raises ``LookupError`` when the
    caller may see no run of that year.
    """

    conn: sa.Connection
    who: Principal
    year: int | None = None
    run: dict = field(init=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        shown = shown_runs_sql(self.who.sees_drafts)
        row = self.conn.execute(sa.text(_RUN.format(
            run=f"SELECT id FROM ({shown}) s WHERE CAST(:y AS integer) IS NULL OR s.year = CAST(:y AS integer) "
                "ORDER BY s.year DESC LIMIT 1")), {"y": self.year}).mappings().first()
        if row is None:
            raise LookupError(f"{self.year} 年没有可查看的评价结果" if self.year else "尚无评价结果")
        self.run = dict(row)
        cls, _ = for_run(self.conn, self.run["id"], drafts=True)
        self.colours = {c.grade: c.hex for c in cls.classes}
        self.ungraded = cls.ungraded_hex
        self.land = land_in_year_sql(str(int(self.run["year"])))
        self.link_year = derived_year_sql("land_links", str(int(self.run["year"])))
        self.decimals = int(((self.run["scheme"] or {}).get("precision") or {}).get("decimals", 2))

    # -- shared per run ------------------------------------------------------------------------
    def _subject(self, table: str) -> tuple[str, str]:
        """The table of a rating's subject (its county and township) and the join condition."""
        if table == "enterprise_ratings":
            return "enterprises", "s.uscc = r.uscc"
        return self.land, "s.identity_code = r.identity_code"

    def _means(self, table: str, list_name: str, by: str) -> dict[tuple[str | None, str, str], tuple[float, int]]:
        """``{(county, group or township, indicator): (mean, n)}`` of one list: a group's or a
        township's average is over its county (a province database: each county is rated apart)."""
        key = ("means", table, list_name, by)
        if key not in self._cache:
            subject, on = self._subject(table)
            # by group every rating counts (no subject row: the one county); by township only those with one
            join = f"{'LEFT JOIN' if by == 'group' else 'JOIN'} {subject} s ON {on}"
            by_sql = "r.industry_group" if by == "group" else "s.township"
            rows = self.conn.execute(sa.text(_MEANS.format(by=by_sql, table=table, join=join)),
                                     {"run": self.run["id"], "list": list_name}).all()
            self._cache[key] = {(r.c, r.k, r.key): (r.mean, r.n) for r in rows}
        return self._cache[key]

    def _bands(self, table: str, list_name: str, group: str | None,
               county: str | None) -> dict[str, tuple[float, float, int]]:
        key = ("bands", table, list_name, group, county)
        if key not in self._cache:
            subject, on = self._subject(table)
            rows = self.conn.execute(sa.text(_BANDS.format(table=table, subject=subject, on=on)),
                                     {"run": self.run["id"], "list": list_name, "grp": group,
                                      "county": county}).all()
            self._cache[key] = {r.band_grade: (r.lo, r.hi, r.n) for r in rows}
        return self._cache[key]

    # -- parts -----------------------------------------------------------------------------------
    def _indicators(self, table: str, rating: dict, township: str | None, county: str | None) -> list[dict]:
        expl = rating.get("explanation") or {}
        list_name, group = rating.get("list_name"), rating.get("industry_group")
        by_group = self._means(table, list_name, "group") if list_name else {}
        by_town = self._means(table, list_name, "township") if list_name else {}
        out = []
        for ind in expl.get("indicators") or []:
            k = ind.get("key")
            g = by_group.get((county, group, k))
            t = by_town.get((county, township, k))
            value, base = ind.get("value"), ind.get("baseline")
            out.append({"key": k, "title": ind.get("title", k), "unit": ind.get("unit") or "",
                        "weight": ind.get("weight"), "value": value, "points": ind.get("points"),
                        "baseline": base, "baseline_source": ind.get("baseline_source"),
                        "group_mean": g[0] if g else None, "group_n": g[1] if g else 0,
                        "town_mean": t[0] if t else None, "town_n": t[1] if t else 0,
                        "capped": bool(ind.get("capped")), "cap": ind.get("cap"),
                        "coefficient": ind.get("coefficient"),
                        "ratio": (value / base) if isinstance(value, (int, float)) and base else None})
        return out

    def _raise(self, table: str, rating: dict, indicators: list[dict], county: str | None) -> dict | None:
        """The gain needed on the weightiest indicator to reach the next better band's score (of
        the subject's county: ``county``, None = the database's one county)."""
        grades = [str(g) for g in (self.run["scheme"] or {}).get("grades", [])]
        band, score = rating.get("band_grade"), rating.get("score")
        if band not in grades or score is None or not rating.get("list_name"):
            return None
        i = grades.index(band)
        if i == 0:
            return {"top": True, "band": band}
        better = grades[i - 1]
        bands = self._bands(table, rating["list_name"], rating.get("industry_group"), county)
        if better not in bands:
            return {"top": False, "band": band, "next": better, "reachable": False,
                    "why": f"本组没有 {better} 档主体，无法从评价结果推算"}
        target = bands[better][0]  # the lowest score the next better band holds
        gap = max(0.0, target - score)
        weighted = [d for d in indicators if isinstance(d.get("weight"), (int, float))]
        if not weighted:
            return None
        top = max(weighted, key=lambda d: (d["weight"], -indicators.index(d)))
        out = {"top": False, "band": band, "next": better, "target_score": target, "score": score,
               "gap": gap, "indicator": top["title"], "unit": top["unit"], "weight": top["weight"],
               "value": top["value"]}
        coef = top.get("coefficient") if isinstance(top.get("coefficient"), (int, float)) else 1.0
        base = top.get("baseline")
        if not base or not coef:
            return out | {"reachable": False, "why": "该指标没有可用的基准值"}
        headroom = math.inf
        if top.get("cap") is not None and top.get("points") is not None:
            headroom = top["cap"] * top["weight"] - top["points"]
        if top.get("capped") or headroom < gap:
            return out | {"reachable": False,
                          "why": f"{top['title']}得分已达或将达封顶（{_fmt(top['cap'])} 倍权重），仅靠该指标无法升档"}
        delta = gap * base / (top["weight"] * coef)
        value = top["value"] if isinstance(top["value"], (int, float)) else 0.0
        return out | {"reachable": True, "delta": delta, "new_value": value + delta,
                      "pct": (delta / value * 100) if value else None}

    def _map(self, codes: list[str], mine_hex: str) -> dict | None:
        if not codes:
            return None
        region, rp = self.who.region_clause("p.township")
        rows = self.conn.execute(sa.text(_MAP.format(land=self.land, region=region)),
                                 {"codes": codes, "run": self.run["id"], **rp}).all()
        if not rows:
            return None
        r0 = rows[0]
        w, h = r0.x1 - r0.x0, r0.y1 - r0.y0
        # a 4:3 frame: widen the shorter side
        if w / h < 4 / 3:
            d = (h * 4 / 3 - w) / 2
            x0, x1, y0, y1 = r0.x0 - d, r0.x1 + d, r0.y0, r0.y1
        else:
            d = (w * 3 / 4 - h) / 2
            x0, x1, y0, y1 = r0.x0, r0.x1, r0.y0 - d, r0.y1 + d
        w, h = x1 - x0, y1 - y0
        k = math.cos(math.radians(r0.lat))  # metres on the ground per Mercator metre
        ground = w * k
        nice = max(v for v in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if v <= ground / 3) \
            if ground / 3 >= 10 else 10
        shapes = [{"d": r.d, "mine": bool(r.mine),
                   "fill": mine_hex if r.mine else self.colours.get(r.grade, self.ungraded)} for r in rows]
        return {"viewbox": f"{x0:.1f} {-y1:.1f} {w:.1f} {h:.1f}", "shapes": shapes, "w": w, "h": h,
                "stroke": w / 400, "scale_m": nice, "scale_w": nice / k, "x0": x0, "y1": y1,
                "count_mine": sum(s["mine"] for s in shapes), "count": len(shapes)}

    def _history(self, table: str, key: str, code: str) -> list[dict]:
        sql = _HISTORY.format(shown=shown_runs_sql(self.who.sees_drafts), table=table, key=key)
        return [dict(r._mapping) for r in self.conn.execute(sa.text(sql), {"code": code})]

    def _base(self, kind: str, rating: dict | None) -> dict:
        who = self.who
        return {"kind": kind, "year": self.run["year"], "run_id": self.run["id"], "run_status": self.run["status"],
                "scheme": f"{self.run['scheme_name']}@{self.run['scheme_version']}",
                "generated": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "figures": who.sees_figures, "names": who.sees_names, "links": who.sees_links,
                "role": who.role, "region": who.region, "decimals": self.decimals,
                "colours": self.colours, "ungraded": self.ungraded,
                "rating": _shape_rating(rating, who) if rating else None}

    # -- public ----------------------------------------------------------------------------------
    def enterprise(self, uscc: str) -> dict | None:
        """The 体检表 of one enterprise, or ``None`` when it does not exist in the caller's region
        (or the caller may not see enterprise identities)."""
        if not self.who.sees_links:
            return None
        code = uscc.strip().upper()
        region, rp = self.who.region_clause("e.township")
        ent = self.conn.execute(sa.text(_ENT.format(region=region)), {"code": code, **rp}).mappings().first()
        if ent is None:
            return None
        rating = self.conn.execute(sa.text(_ENT_RATING), {"run": self.run["id"], "code": code}).mappings().first()
        rating = dict(rating) if rating else None
        pregion, prp = self.who.region_clause("p.township")
        land = [dict(r._mapping) for r in self.conn.execute(sa.text(_ENT_LAND.format(
            land=self.land, link_year=self.link_year, region=pregion)), {"code": code, **prp})]
        doc = self._base("enterprise", rating)
        doc |= {"title": ent["name"] or code, "code": code, "code_label": "统一社会信用代码",
                "identity": [("企业名称", ent["name"]), ("统一社会信用代码", code), ("镇街", ent["township"]),
                             ("行业代码", ent["industry_code"]), ("规模", ent["scale"]),
                             ("地址", ent["address"] if self.who.sees_names else None),
                             ("用地", f"{_fmt(sum(x['attributed_area_mu'] or 0 for x in land))} 亩，{len(land)} 宗")],
                "land": land}
        grade = rating.get("grade") if rating else None
        doc["map"] = self._map([x["identity_code"] for x in land], self.colours.get(grade, "#5b6770"))
        self._rated_parts(doc, "enterprise_ratings", "uscc", code, rating, ent["township"], ent["county"])
        if self.who.sees_names:
            doc["warnings"] = _warnings(rating, self.run["year"], flags=ent["flags"], no_land=not land,
                                        no_point=ent["point"] is None)
        return doc

    def parcel(self, identity_code: str) -> dict | None:
        """The 体检表 of one piece of land (宗地身份码), or ``None`` outside the caller's region."""
        code = identity_code.strip()
        region, rp = self.who.region_clause("p.township")
        par = self.conn.execute(sa.text(_PAR.format(land=self.land, region=region)),
                                {"code": code, **rp}).mappings().first()
        if par is None:
            return None
        rating = self.conn.execute(sa.text(_PAR_RATING), {"run": self.run["id"], "code": code}).mappings().first()
        rating = dict(rating) if rating else None
        ents = [dict(r._mapping) for r in self.conn.execute(sa.text(_PAR_ENTS.format(link_year=self.link_year)),
                                                             {"code": code})]
        doc = self._base("parcel", rating)
        identity = [("宗地代码", par["parcel_code"]), ("宗地身份码", code), ("镇街", par["township"]),
                    ("用地类型", {"registered": "已登记工业宗地", "defacto": "独立的事实用地",
                                  "defacto_attached": "关联事实用地"}.get(par["kind"], par["kind"])),
                    ("土地用途", par["land_use"]), ("面积", f"{_fmt(par['area_mu'])} 亩（{_fmt(par['area_m2'], 0)} m²）")]
        if self.who.sees_links:
            identity.append(("权利人", par["owner_name"]))
            names = [e["name"] or e["uscc"] for e in ents]
            identity.append(("使用企业", "、".join(names[:6]) + (f" 等 {len(names)} 家" if len(names) > 6 else "")
                             if names else "无"))
        doc |= {"title": par["parcel_code"] or code, "code": code, "code_label": "宗地身份码",
                "identity": identity, "enterprises": ents if self.who.sees_links else []}
        grade = rating.get("grade") if rating else None
        doc["map"] = self._map([code], self.colours.get(grade, self.ungraded))
        self._rated_parts(doc, "parcel_ratings", "identity_code", code, rating, par["township"], par["county"])
        if self.who.sees_names:
            doc["warnings"] = _warnings(rating, self.run["year"], no_enterprise=not ents)
        return doc

    def _rated_parts(self, doc: dict, table: str, key: str, code: str, rating: dict | None,
                     township: str | None, county: str | None) -> None:
        who = self.who
        doc["history"] = self._history(table, key, code) if who.sees("history") else []
        if not who.sees_figures:
            for h in doc["history"]:
                h.pop("score", None)
        doc["indicators"], doc["raise"] = [], None
        if rating and rating.get("evaluated") and rating.get("grade") is not None:
            inds = self._indicators(table, rating, township, county)
            if who.sees_figures:
                doc["indicators"] = inds
                doc["raise"] = self._raise(table, rating, inds, county)
            else:
                # without figures: which indicators count, and their weights (the scheme is public)
                doc["indicators"] = [{"title": d["title"], "unit": d["unit"], "weight": d["weight"]} for d in inds]
                r = self._raise(table, rating, inds, county) if who.sees_names else None
                if r:
                    doc["raise"] = {k: r[k] for k in ("top", "band", "next", "indicator", "weight") if k in r}
        doc["warnings"] = []


_ADJ_KIND = {"hold": "保档", "down": "降档", "cap": "限档", "up": "提档", "fix": "定档"}


def _shape_rating(r: dict, who: Principal) -> dict:
    out = {"grade": r.get("grade"), "colour": r.get("colour"), "evaluated": r.get("evaluated"),
           "industry_group": r.get("industry_group")}
    if who.sees_names:
        expl = r.get("explanation") or {}
        out |= {"list_name": r.get("list_name"), "rank": r.get("rank"), "rank_n": expl.get("rank_n"),
                "percentile": r.get("percentile"), "band_grade": r.get("band_grade"),
                "excluded_reason": r.get("excluded_reason"),
                "consecutive_d_years": r.get("consecutive_d_years"), "low_yield_years": r.get("low_yield_years"),
                "warnings_run": [w for w in (r.get("warnings") or []) if isinstance(w, str)],
                "adjustments": [{"kind": _ADJ_KIND.get(a.get("kind"), a.get("kind")), "rule": a.get("rule"),
                                 "from": a.get("from"), "to": a.get("to"),
                                 "compared": a.get("compared") if who.sees_figures else None}
                                for a in (r.get("adjustments") or []) if isinstance(a, dict)]}
    if who.sees_figures:
        out |= {"score": r.get("score"), "tax_per_mu": r.get("tax_per_mu"),
                "surcharge": r.get("electricity_surcharge_yuan"), "refund": r.get("electricity_refund_yuan"),
                "land_area_mu": r.get("land_area_mu"),
                "bonus": (r.get("explanation") or {}).get("bonus") or [],
                "penalty": (r.get("explanation") or {}).get("penalty") or []}
    return out


def _warnings(rating: dict | None, year: int, *, flags=None, no_land: bool = False, no_point: bool = False,
              no_enterprise: bool = False) -> list[str]:
    """What the subject should look at, in plain Chinese (the run's warnings and the multi-year rules)."""
    out = []
    if rating:
        out += [str(w) for w in (rating.get("warnings") or []) if isinstance(w, str)]
        d = rating.get("consecutive_d_years") or 0
        if d >= 2:
            out.append(f"连续 {d} 年 D 档（截至 {year} 年）：重点整治对象")
        elif d == 1:
            out.append(f"{year} 年 D 档：按差别电价加价")
        ly = rating.get("low_yield_years") or 0
        if ly >= 1:
            out.append(f"亩均税收连续 {ly} 年低于低产田标准")
        if rating.get("idle"):
            out.append("土地闲置（供而未用）")
        if not rating.get("evaluated") and rating.get("excluded_reason"):
            out.append(f"本年不参评：{rating['excluded_reason']}")
    if flags:
        out.append(f"标记：{flags}（可能免评或处于过渡期）")
    if no_land:
        out.append("未关联到任何宗地（无地企业或尚未匹配）")
    if no_point:
        out.append("地址未能定位，仅按权利人代码或租赁记录匹配")
    if no_enterprise:
        out.append("无企业关联此宗地（地企对应缺失）")
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- batch

_BATCH = """SELECT r.uscc, e.name, e.county, e.township, r.grade, r.list_name
    FROM enterprise_ratings r JOIN enterprises e ON e.uscc = r.uscc
    WHERE r.run_id = :run AND (:all OR r.grade IS NOT NULL)
      AND (CAST(:town AS text) IS NULL OR e.township = :town)
    ORDER BY e.county NULLS FIRST, e.township, r.list_name NULLS LAST, r.rank NULLS LAST, r.uscc"""


def _safe(name: str) -> str:
    return "".join("_" if c in '\\/:*?"<>|' or ord(c) < 32 else c for c in name).strip()[:60] or "企业"


def write_checkups(engine: sa.Engine, out: str | Path, *, year: int | None = None, township: str | None = None,
                   include_unrated: bool = False, limit: int | None = None, progress=None) -> list[dict]:
    """One 体检表 PDF per enterprise of the year's run (those with a grade; ``include_unrated``
    adds the others), optionally of one township, into ``out``, plus ``index.html`` and
    ``index.xlsx`` listing them (county by county, with a 县（区）代码 column, on a province
    database). ``progress(done, total)`` is called after each page.

    Written as county staff see them (figures included). Raises ``LookupError`` when the year
    has no run, ``ValueError`` for a township the county does not have.
    """
    import pandas as pd

    from app.auth import check_region

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    who = Principal("admin")
    rows = []
    with engine.connect() as conn:
        town = check_region(conn, township)
        c = Checkups(conn, who, year)
        subjects = conn.execute(sa.text(_BATCH), {"run": c.run["id"], "all": include_unrated, "town": town}).all()
        if limit is not None:
            subjects = subjects[:limit]
        for i, s in enumerate(subjects, 1):
            doc = c.enterprise(s.uscc)
            name = f"{s.uscc}_{_safe(s.name or '')}.pdf"
            (out / name).write_bytes(render_pdf(render_html(doc)))
            rows.append({"统一社会信用代码": s.uscc, "企业名称": s.name, "县（区）代码": s.county, "镇街": s.township,
                         "名单": s.list_name, "等级": s.grade, "文件": name})
            if progress:
                progress(i, len(subjects))
        year_done = c.run["year"]
    counties = any(r["县（区）代码"] is not None for r in rows)  # a province database
    frame = pd.DataFrame(rows, columns=["统一社会信用代码", "企业名称", "县（区）代码", "镇街", "名单", "等级", "文件"])
    if not counties:  # a county's own database: as it always was
        frame = frame.drop(columns="县（区）代码")
        for r in rows:
            del r["县（区）代码"]
    _env_index = _env().from_string(_INDEX)
    (out / "index.html").write_text(_env_index.render(rows=rows, year=year_done, township=town, n=len(rows),
                                                      counties=counties), encoding="utf-8")
    import xlsxwriter

    from app.lists import _sheet

    wb = xlsxwriter.Workbook(str(out / "index.xlsx"))
    try:
        head = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
        _sheet(wb, "体检表", frame, head)
    finally:
        wb.close()
    return rows


_INDEX = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>{{ year }} 年企业体检表{% if township %} · {{ township }}{% endif %}</title>
<style>body{font-family:"Noto Sans CJK SC",sans-serif;font-size:13px;margin:20px}table{border-collapse:collapse}
td,th{border:1px solid #ccd;padding:3px 8px}th{background:#eef3f8}</style></head><body>
<h1>{{ year }} 年企业亩均效益体检表{% if township %} · {{ township }}{% endif %}（{{ n }} 份）</h1>
<table><thead><tr><th>统一社会信用代码</th><th>企业名称</th>{% if counties %}<th>县（区）代码</th>{% endif %}<th>镇街</th><th>名单</th><th>等级</th><th>体检表</th></tr></thead><tbody>
{% for r in rows %}<tr><td>{{ r["统一社会信用代码"] }}</td><td>{{ r["企业名称"] }}</td>{% if counties %}<td>{{ r["县（区）代码"] }}</td>{% endif %}<td>{{ r["镇街"] }}</td>
<td>{{ r["名单"] or "" }}</td><td>{{ r["等级"] or "" }}</td><td><a href="{{ r["文件"] | urlencode }}">PDF</a></td></tr>
{% endfor %}</tbody></table></body></html>"""
