"""Explanations: why a subject got its score and grade, as a JSON-able dict and as Chinese text.

The dict is built by :func:`scoring.evaluate` (column ``explanation``); :func:`explain_text`
renders it for a 一企一单 check-up sheet or an appeal reply.

Example
-------
>>> print(explain_text({
...     "subject_id": "x", "evaluated": True, "list": "规上", "group": "全部", "kind": "enterprise",
...     "indicators": [{"title": "亩均税收", "unit": "万元/亩", "value": 12.5, "baseline": 24.097,
...                     "weight": 30, "points": 15.562, "coefficient": 1.0, "negative": False,
...                     "capped": False, "cap": None, "missing_rule": None}],
...     "bonus": [], "penalty": [], "total": 15.562, "rank": 12, "rank_n": 240,
...     "percentile": 5.0, "band": "A", "band_note": None, "grade": "A", "adjustments": [],
...     "colour": "绿"}))
经营主体等级 x（规上 · 全部）
亩均税收 12.50 万元/亩，基准 24.097，权重 30，得分 15.56
总分 15.56；排名 12/240（前 5.0%），A 档；最终 A 档（绿）
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from .engine import _Run
    from .scheme import Scheme

_KIND = {"enterprise": "经营主体等级", "parcel": "宗地等级"}
_STAT = {"mean": "平均值", "median": "中位数"}


def explain_text(explanation: dict) -> str:
    """Readable Chinese text for one subject's ``explanation`` dict."""
    e = explanation
    head = f"{_KIND.get(e.get('kind'), '等级')} {e['subject_id']}"
    if not e.get("evaluated"):
        reason = e.get("excluded_reason") or "未参评"
        grade = f"，定 {e['grade']} 档" if e.get("grade") else ""
        source = f"（随 {e['result_from']}）" if e.get("result_from") else ""
        return f"{head}：未参评，{reason}{source}{grade}"
    lines = [f"{head}（{e['list']} · {e['group']}）"]
    if e.get("land_note"):
        lines.append(e["land_note"])
    for it in e["indicators"]:
        if it.get("missing_rule"):
            rule = {"zero": "按 0 分计", "population_average_score": "按总体平均得分计"}[it["missing_rule"]]
            lines.append(f"{it['title']} 数据缺失，{rule}，权重 {_n(it['weight'])}，得分 {it['points']:.2f}")
            continue
        text = (f"{it['title']} {_v(it['value'])} {it['unit']}，基准 {_n(it['baseline'])}，"
                f"权重 {_n(it['weight'])}")
        if it.get("negative"):
            text += f"，倒扣分（比较值：{it['negative_compared']}）" if it.get("negative_compared") else "，倒扣分"
        if it.get("coefficient", 1.0) != 1.0:
            text += f"，修正系数 ×{_n(it['coefficient'])}"
        if it.get("capped"):
            text += f"，封顶 {_n(it['cap'])}×权重"
        lines.append(text + f"，得分 {it['points']:.2f}")
    extras = [f"加分「{b['name']}」+{_n(b['points'])}" for b in e.get("bonus", [])]
    extras += [f"减分「{p['name']}」−{_n(p['points'])}" for p in e.get("penalty", [])]
    if extras:
        lines.append("；".join(extras))
    scope = "（小组并入全名单排名）" if e.get("rank_scope") == "list_pooled" else ""
    tail = (f"总分 {e['total']:.2f}；排名 {e['rank']}/{e['rank_n']}{scope}"
            f"（前 {e['percentile']:.1f}%），{e['band']} 档")
    if e.get("band_note"):
        tail += f"（{e['band_note']}）"
    for adj in e.get("adjustments", []):
        seen = f"，比较值：{adj['compared']}" if adj.get("compared") not in (None, "—") else ""
        if adj["changed"]:
            tail += f"；规则『{adj['rule']}』生效（{adj['kind']} {adj['from']}→{adj['to']}{seen}）"
        else:
            tail += f"；规则『{adj['rule']}』条件成立（{adj['kind']}{seen}），等级未变"
    colour = f"（{e['colour']}）" if e.get("colour") else ""
    lines.append(tail + f"；最终 {e['grade']} 档{colour}")
    return "\n".join(lines)


def _n(x: Any) -> str:
    """Numbers as written in a 评价办法: no trailing zeros (24.097, 30, 1.05)."""
    if x is None:
        return "—"
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _v(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _f(x) -> float | None:
    """JSON-able float: NaN → None."""
    x = float(x)
    return None if math.isnan(x) else x


def _baseline_source(scheme: "Scheme", li: int, key: str) -> str | dict:
    lst = scheme.lists[li]
    b = next(ind.baseline for ind in lst.indicators if ind.key == key)
    if b.kind == "fixed":
        return "固定基准"
    if b.kind == "groups":
        return "按行业组固定基准"
    stat = _STAT.get(b.stat) or f"第{b.p:g}百分位"
    when = "本年" if b.of == "current" else "上年"
    scope = "同名单同行业组" if b.scope == "group" else "同名单"
    return f"{when}{scope}{stat}"


def build_explanations(run: "_Run", scheme: "Scheme", frame: pd.DataFrame) -> list[dict]:
    """One dict per row. The only per-row Python in the engine: it formats, never computes."""
    out: list[dict | None] = [None] * run.n
    head = {"kind": run.kind, "year": run.year, "scheme": f"{scheme.name}@{scheme.version}"}
    grades = frame["grade"].astype(object).where(frame["grade"].notna(), None).tolist()
    colours = frame["colour"].astype(object).where(frame["colour"].notna(), None).tolist()
    ev = run.evaluated
    for li, lst in enumerate(scheme.lists):
        idx = np.flatnonzero(ev & (run.list_idx == li))
        if idx.size == 0:
            continue
        cols = {}
        for ind in lst.indicators:
            d = run.detail[(li, ind.key)]
            cols[ind.key] = (
                run.values[ind.key][idx].tolist(), d["baseline"][idx].tolist(),
                d["coef"][idx].tolist(), d["negative"][idx].tolist(), d["capped"][idx].tolist(),
                d["missing"][idx].tolist(), run.points[ind.key][idx].tolist(),
                _baseline_source(scheme, li, ind.key), d["rule"], d["negative_note"][idx].tolist(),
            )
        items = {kind: [(it, run.items[(li, kind, k)][idx]) for k, it in enumerate(getattr(lst, kind))]
                 for kind in ("bonus", "penalty")}
        score, rank, rank_n = run.score[idx].tolist(), run.rank[idx].tolist(), run.rank_n[idx].tolist()
        pooled = run.pooled[idx].tolist()
        band = [scheme.grades[b] if b >= 0 else None for b in run.band[idx].tolist()]
        notes = run.band_note[idx].tolist()
        groups = [run.group_names[g] for g in run.group[idx].tolist()]
        landless = run.landless[idx].tolist()
        land_note = None
        if scheme.landless.treatment == "list" and lst.name == scheme.landless.list:
            from .engine import _landless_text

            land_note = _landless_text(run.env["land_area_mu"][idx], scheme, f"列入{lst.name}名单，不计亩均指标",
                                       run.kind).tolist()
        for j, i in enumerate(idx.tolist()):
            indicators = []
            for ind in lst.indicators:
                v, b, c, neg, cap_hit, miss, pts, source, rule, neg_note = cols[ind.key]
                indicators.append({
                    "key": ind.key, "title": ind.title, "unit": ind.unit,
                    "value": _f(v[j]), "baseline": _f(b[j]), "baseline_source": source,
                    "weight": ind.weight, "coefficient": c[j], "negative": neg[j],
                    "negative_compared": neg_note[j],
                    "cap": ind.cap, "capped": cap_hit[j], "points": pts[j],
                    "missing_rule": rule if miss[j] else None,
                })
            out[i] = {
                **head, "subject_id": run.ids[i], "evaluated": True, "list": lst.name,
                "group": groups[j], "indicators": indicators,
                "bonus": [{"name": it.name, "points": it.points} for it, hit in items["bonus"] if hit[j]],
                "penalty": [{"name": it.name, "points": it.points} for it, hit in items["penalty"] if hit[j]],
                "total": score[j], "rank": rank[j], "rank_n": rank_n[j],
                "rank_scope": "list_pooled" if pooled[j] else lst.rank_within,
                "percentile": rank[j] * 100.0 / rank_n[j], "band": band[j], "band_note": notes[j],
                "grade": grades[i], "adjustments": run.adjustments.get(i, []), "colour": colours[i],
                "land_note": land_note[j] if land_note is not None and landless[j] else None,
            }
    for i in np.flatnonzero(~ev).tolist():
        src = run.result_from[i]
        out[i] = {
            **head, "subject_id": run.ids[i], "evaluated": False,
            "excluded_reason": run.reason_of(i), "grade": grades[i], "colour": colours[i],
            "result_from": src if src != run.ids[i] else None,
        }
    return out
