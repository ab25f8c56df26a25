"""Land over the years: match a new delivery's pieces to the current land by overlap.

A county re-delivers its land every year. Pieces come back nudged by centimetres, re-digitised
with extra vertices, in another row order, sometimes computed in another Gauss-Krüger zone; some
are split, merged, re-coded, retired, or new. :func:`reconcile` says, for every piece of the new
delivery, which 宗地身份码 it carries from now on and why, which current pieces retire, and the
lineage between codes. It is pure: GeoDataFrames in (the same projected metric CRS), DataFrames
out; ``app.ingest`` writes the result as versions (``valid_from`` / ``valid_to``).

The rules
---------
* **By 宗地代码 first.** A registered piece whose code ``R-<宗地代码>`` is current keeps it, whatever
  its geometry does (镇海 宗地身份码: the registered code is the parcel's identity).
* **The same land, nearly unchanged**: a new and a current piece whose intersection over union is
  at least ``SAME_IOU`` (0.9) are paired first, highest IoU first (ties by code): each keeps its
  code even where a delivery has pieces overlapping each other (two de-facto pieces drawn over one
  yard), and a split that leaves ≥ 90 % of a piece is that piece, changed, plus a piece split off.
* **By overlap otherwise.** A new piece ``n`` and a current piece ``c`` *overlap significantly*
  when their intersection is at least ``overlap_share`` (default ½) of the smaller of the two.
  Centimetre noise along a shared road or boundary gives slivers of a few thousandths, never ½; a
  split child lies wholly in its parent (share 1), a merge covers each parent wholly (share 1).

  ====================================  ==========================================================
  n overlaps only c, c only n           the same land: keeps c's code (``kept``, or ``changed``
                                        when it moved beyond the tolerance or its attributes
                                        changed); a different code family (a re-issued 宗地代码,
                                        de-facto land now registered, attachment changed) gets
                                        the new code with lineage ``recode``
  n overlaps only c, c several new      split: n gets a new code, lineage ``split`` c → n
  n overlaps several current            merge: n gets a new code, lineage ``merge`` c → n
  n overlaps nothing                    ``new``
  c claimed by no new piece             retired (from the delivery year on) — in a partial
                                        delivery only when it has heirs (split/merge)
  ====================================  ==========================================================

* **Tolerance.** The same land is ``kept`` (no new version) when no vertex of either outline lies
  farther than ``tolerance_m`` from the other (the Hausdorff distance, GEOS's discrete one: vertex
  to outline, so extra collinear vertices cost nothing) and the symmetric difference is at most
  ``tolerance_m`` × the current piece's perimeter + 0.01 m² (the band that much noise can sweep).
  Default 5 cm: 2 cm vertex noise, extra vertices, re-digitising within centimetres and
  zone-to-zone reprojection (sub-millimetre) are kept; a corner clipped by 1 m is a change, even
  on a 6 ha parcel where it is 0.01 % of the area.
* **Land that comes back** (``revived``): a piece that overlaps no current land but is the same
  land as a piece retired earlier (``retired_land``: IoU ≥ ``SAME_IOU``, the same code family), or
  a registered piece whose ``R-<宗地代码>`` was retired, takes the old code again — a de-facto yard
  dropped from one year's survey and drawn again the next is the same 宗地身份码, not a new one.
* **New codes** are the delivery's own (``spatial.identity``: content hashes that do not depend on
  the CRS); one that collides with a code already used in the county (``reserved``) gets ``-2``,
  ``-3`` … in content order, so a retired code never comes back meaning other land.

>>> out = reconcile(current, delivery, reserved=all_codes)        # doctest: +SKIP
>>> out.land[["identity_code", "status", "parents"]]              # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

__all__ = ["reconcile", "carry_corrections", "Reconciled", "STATUSES"]

#: Two pieces overlapping this much (intersection over union) are the same land, nearly unchanged.
SAME_IOU = 0.9

#: Status of a delivered piece (``retired`` is for current pieces in ``Reconciled.retired``).
STATUSES = ("kept", "changed", "new", "split", "merged", "recoded", "revived")


@dataclass
class Reconciled:
    """What a delivery does to the land.

    ``land``: the delivery's rows (same order) with ``identity_code`` (final), ``provisional_code``
    (the delivery's own), ``status`` (one of :data:`STATUSES`), ``previous_code`` (the current
    piece it continues, for kept/changed/recoded), ``parents`` (codes it came from: split/merge/
    recode; ``;``-joined, "" for none).
    ``retired``: current pieces that stop being land — ``identity_code``, ``reason``
    (``absent`` | ``split`` | ``merged`` | ``recoded``), ``heirs`` (``;``-joined codes).
    ``lineage``: ``parent_code``, ``child_code``, ``kind`` (split | merge | recode).
    """

    land: pd.DataFrame
    retired: pd.DataFrame
    lineage: pd.DataFrame


def reconcile(current: gpd.GeoDataFrame, delivery: gpd.GeoDataFrame, *, complete: bool = True,
              reserved=(), attributes: list[str] | tuple[str, ...] = (), tolerance_m: float = 0.05,
              overlap_share: float = 0.5, retired_land: gpd.GeoDataFrame | None = None) -> Reconciled:
    """Match a delivery to the current land (see the module docstring for the rules).

    Parameters
    ----------
    current : GeoDataFrame
        The land valid now: ``identity_code``, ``attributes`` columns, polygons in a projected
        metric CRS (m).
    delivery : GeoDataFrame
        The delivery as built by :func:`spatial.identity.build_land` (``identity_code`` = its own
        provisional code), the same CRS; ``parent_identity_code`` (attached land) is re-mapped to
        the parents' final codes.
    complete : bool
        A complete delivery (the county's whole land as of its year): current pieces absent from
        it retire. A partial one only adds and changes.
    reserved : iterable of str
        Every code ever used in the county (current and retired versions).
    attributes : columns compared to decide ``kept`` vs ``changed`` (NA equals NA).
    tolerance_m : float
        Width of the noise band, metres (see the module docstring).
    overlap_share : float
        Share of the smaller piece an overlap must cover to be significant (0 < share ≤ 1).
    retired_land : GeoDataFrame, optional
        The last version of every code used in the county that is not current now
        (``identity_code``, polygons, the same CRS): land that comes back takes its code again.

    Raises ``ValueError`` when the two layers are not in the same projected CRS.
    """
    if current.crs is not None and delivery.crs is not None and current.crs != delivery.crs:
        raise ValueError(f"current land in {current.crs}, delivery in {delivery.crs}: reproject first")
    if delivery.crs is not None and not delivery.crs.is_projected:
        raise ValueError("reconcile needs a projected metric CRS (m)")
    cur = current.reset_index(drop=True)
    new = delivery.reset_index(drop=True)
    cg, ng = cur.geometry.to_numpy(), new.geometry.to_numpy()
    ccode = cur["identity_code"].to_numpy(dtype=object)
    prov = new["identity_code"].to_numpy(dtype=object)
    nn, nc = len(new), len(cur)

    pairs, iou = _significant_pairs(ng, cg, overlap_share)
    by_code = {c: j for j, c in enumerate(ccode)}
    # 1. registered pieces continue their code whatever the geometry does
    cont = np.array([by_code.get(c, -1) if _registered_code(c) else -1 for c in prov], dtype=np.intp)
    coded = set(cont[cont >= 0].tolist())
    # 2. the same land, nearly unchanged: mutual best match with IoU >= SAME_IOU. Done before
    #    splits and merges so that pieces that overlap each other within one delivery (two
    #    de-facto pieces drawn over the same yard) each find their own continuation.
    same_pair = {}
    # highest IoU first; ties by code, so the result never depends on row order
    pi = np.array([p[0] for p in pairs], dtype=np.intp)
    pj = np.array([p[1] for p in pairs], dtype=np.intp)
    order = np.lexsort((ccode[pj].astype(str), prov[pi].astype(str), -np.round(iou, 9))) if len(pairs) else []
    n_taken, c_taken = set(np.flatnonzero(cont >= 0).tolist()), set(coded)
    for k in order:
        if iou[k] < SAME_IOU:
            break
        i, j = pairs[k]
        if i in n_taken or j in c_taken:
            continue
        same_pair[i] = j
        n_taken.add(i)
        c_taken.add(j)
    n_part = [set() for _ in range(nn)]
    c_part = [set() for _ in range(nc)]
    for i, j in pairs:
        n_part[i].add(j)
        c_part[j].add(i)

    final = np.empty(nn, dtype=object)
    status = np.empty(nn, dtype=object)
    previous = np.full(nn, None, dtype=object)
    parents = [[] for _ in range(nn)]
    lineage: list[tuple[str, str, str]] = []
    claimed = np.zeros(nc, dtype=bool)
    mint = np.zeros(nn, dtype=bool)

    for i in range(nn):
        j0 = cont[i] if cont[i] >= 0 else same_pair.get(i, -1)
        if j0 >= 0:
            previous[i] = ccode[j0]
            if cont[i] >= 0 or _family(prov[i]) == _family(ccode[j0]):
                final[i], status[i], claimed[j0] = ccode[j0], "same", True
            else:  # the old code retires, with this one as its heir
                final[i], status[i], mint[i] = prov[i], "recoded", not _registered_code(prov[i])
                parents[i].append(ccode[j0])
            for j in sorted(n_part[i] - {j0}):  # land it absorbed from pieces that are gone
                if j not in c_taken:
                    parents[i].append(ccode[j])
            continue
        # 3. the rest by overlap with current pieces not already continued
        part = {j for j in n_part[i] if j not in c_taken}
        carved = sorted(j for j in n_part[i] if j in c_taken)  # from land that continues
        if not part and not carved:
            final[i], status[i], mint[i] = prov[i], "new", True
        elif not part:
            final[i], status[i], mint[i] = prov[i], "split", True
            parents[i].extend(ccode[j] for j in carved)
        elif len(part) == 1:
            j = next(iter(part))
            rest = {k for k in c_part[j] if k not in n_taken}
            if rest == {i}:
                previous[i] = ccode[j]
                if _family(prov[i]) == _family(ccode[j]):
                    final[i], status[i], claimed[j] = ccode[j], "same", True
                else:
                    final[i], status[i], mint[i] = prov[i], "recoded", not _registered_code(prov[i])
                    parents[i].append(ccode[j])
            else:
                final[i], status[i], mint[i] = prov[i], "split", True
                parents[i].append(ccode[j])
        else:
            final[i], status[i], mint[i] = prov[i], "merged", True
            parents[i].extend(ccode[j] for j in sorted(part))

    for i, code in _revivals(ng, prov, np.flatnonzero(status == "new"), retired_land).items():
        final[i], status[i], mint[i] = code, "revived", False
    final = _unique_codes(final, mint, new, reserved, keep=set(final[~mint]))
    code_map = dict(zip(prov, final))
    if "parent_identity_code" in new.columns:  # attached land follows its parent's final code
        new["parent_identity_code"] = new["parent_identity_code"].map(
            lambda v: code_map.get(v, v) if isinstance(v, str) else v)
    # same land: kept or changed
    same = np.flatnonzero(status == "same")
    if len(same):
        j = np.array([by_code[c] for c in previous[same]], dtype=np.intp)
        moved = _moved(ng[same], cg[j], tolerance_m)
        differs = _differs(new.iloc[same], cur.iloc[j], attributes)
        status[same] = np.where(moved | differs, "changed", "kept")
    for i in range(nn):
        kind = {"split": "split", "merged": "merge", "recoded": "recode"}.get(status[i], "merge")
        for p in parents[i]:
            lineage.append((p, final[i], kind))

    heirs: dict[str, list[str]] = {}
    for p, c, _ in lineage:
        heirs.setdefault(p, []).append(c)
    reasons = {p: {"split": "split", "merge": "merged", "recode": "recoded"}[k] for p, _, k in lineage}
    retired = []
    for j in range(nc):
        if claimed[j]:
            continue  # continued (possibly after giving land away: its lineage says so)
        if ccode[j] in heirs:
            retired.append((ccode[j], reasons[ccode[j]], ";".join(sorted(set(heirs[ccode[j]])))))
        elif complete:
            retired.append((ccode[j], "absent", ""))

    land = new.copy()
    land["provisional_code"] = prov
    land["identity_code"] = final
    land["status"] = status
    land["previous_code"] = previous
    land["parents"] = [";".join(p) for p in parents]
    return Reconciled(
        land=land,
        retired=pd.DataFrame(retired, columns=["identity_code", "reason", "heirs"]),
        lineage=pd.DataFrame(lineage, columns=["parent_code", "child_code", "kind"]).drop_duplicates(
            ["parent_code", "child_code"], ignore_index=True),
    )


# --------------------------------------------------------------------------- helpers

def _significant_pairs(ng: np.ndarray, cg: np.ndarray, share: float) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(new, current) pairs overlapping by at least ``share`` of the smaller, and their IoU."""
    if len(ng) == 0 or len(cg) == 0:
        return [], np.array([])
    ni, ci = shapely.STRtree(cg).query(ng, predicate="intersects")
    if len(ni) == 0:
        return [], np.array([])
    inter = shapely.area(shapely.intersection(ng[ni], cg[ci]))
    an, ac = shapely.area(ng[ni]), shapely.area(cg[ci])
    keep = (inter > 0) & (inter >= share * np.minimum(an, ac))
    iou = inter[keep] / (an[keep] + ac[keep] - inter[keep])
    return list(zip(ni[keep].tolist(), ci[keep].tolist())), iou


def _revivals(ng: np.ndarray, prov: np.ndarray, candidates: np.ndarray,
              retired: gpd.GeoDataFrame | None) -> dict[int, str]:
    """New pieces (overlapping no current land) that are land retired earlier: index → old code.

    A registered ``R-<宗地代码>`` comes back by its code; other land by the same rule as kept land
    (IoU ≥ ``SAME_IOU``, highest first, ties by code, one to one) within its code family.
    """
    if retired is None or not len(retired) or not len(candidates):
        return {}
    rcode = retired["identity_code"].to_numpy(dtype=object)
    out: dict[int, str] = {}
    by_code = set(rcode.tolist())
    for i in candidates:
        if _registered_code(prov[i]) and prov[i] in by_code:
            out[int(i)] = prov[i]
    used = set(out.values())
    rest = np.array([i for i in candidates if i not in out], dtype=np.intp)
    pairs, iou = _significant_pairs(ng[rest], retired.geometry.to_numpy(), 0.5)
    if not pairs:
        return out
    pi = rest[np.array([p[0] for p in pairs], dtype=np.intp)]
    pj = np.array([p[1] for p in pairs], dtype=np.intp)
    for k in np.lexsort((rcode[pj].astype(str), prov[pi].astype(str), -np.round(iou, 9))):
        if iou[k] < SAME_IOU:
            break
        i, code = int(pi[k]), rcode[pj[k]]
        if i in out or code in used or _registered_code(code) or _family(prov[i]) != _family(code):
            continue
        out[i] = code
        used.add(code)
    return out


def _registered_code(code) -> bool:
    """``R-<宗地代码>`` (not ``R-X<hash>``: a parcel without 宗地代码 has no code to keep)."""
    return isinstance(code, str) and code.startswith("R-") and not code.startswith("R-X")


def _family(code: str) -> str:
    """What a code says about its land besides the hash: kind, and the parent (A-) or county (D-).
    ``R-X<hash>`` and hash-only codes of de-facto land keep their code on the same land."""
    if _registered_code(code):
        return code
    if code.startswith("R-X"):
        return "R-X"
    head, _, _ = code.rpartition("-")
    # A-<parent>-<hash>, D-<county>-<hash>, D-<hash>; drop a collision suffix "-2" first
    if code.rsplit("-", 1)[-1].isdigit() and len(code.rsplit("-", 1)[-1]) < 4:
        head, _, _ = head.rpartition("-")
    return head


def _unique_codes(final: np.ndarray, mint: np.ndarray, new: pd.DataFrame, reserved, keep: set) -> np.ndarray:
    """Minted codes that collide with a code in use (or another minted one) get ``-2``, ``-3`` …
    in content order (area, then geometry on a 1 cm grid), never in row order."""
    out = final.copy()
    idx = np.flatnonzero(mint)
    if len(idx) == 0:
        return out
    taken = set(reserved) | keep
    g = new.geometry.to_numpy()[idx]
    order = np.lexsort((
        np.array([w.hex() for w in shapely.to_wkb(shapely.set_precision(g, 0.01), output_dimension=2)]),
        np.round(shapely.area(g), 2),
        out[idx].astype(str),
    ))
    for k in idx[order]:
        base, n, code = out[k], 1, out[k]
        while code in taken:
            n += 1
            code = f"{base}-{n}"
        taken.add(code)
        out[k] = code
    return out


def _moved(a: np.ndarray, b: np.ndarray, tol: float) -> np.ndarray:
    """True where an outline moved beyond ``tol`` somewhere, or the symmetric difference exceeds
    the noise band ``tol`` × perimeter."""
    far = shapely.hausdorff_distance(a, b) > tol
    sym = shapely.area(shapely.symmetric_difference(a, b))
    return far | (sym > tol * shapely.length(b) + 0.01)


def _differs(a: pd.DataFrame, b: pd.DataFrame, cols) -> np.ndarray:
    out = np.zeros(len(a), dtype=bool)
    for c in cols:
        if c not in a.columns or c not in b.columns:
            continue
        x = a[c].to_numpy(dtype=object)
        y = b[c].to_numpy(dtype=object)
        xn, yn = pd.isna(x), pd.isna(y)
        with np.errstate(invalid="ignore"):
            eq = np.array([(u == v) if not (p or q) else (p and q) for u, v, p, q in zip(x, y, xn, yn)], dtype=bool)
        out |= ~eq
    return out


def carry_corrections(corrections: pd.DataFrame, land: pd.DataFrame,
                      lineage: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """纠偏 naming land that was split, merged or re-coded since: carried to its heirs.

    ``corrections``: ``uscc``, ``parcel_code`` (a 宗地代码 or a 宗地身份码), ``action`` …;
    ``land``: the land of the year being matched (``identity_code``, ``parcel_code``,
    ``source_parcel_code``, ``kind``); ``lineage``: ``parent_code``, ``child_code`` of the
    changes up to that year. A correction naming land present in ``land`` is left alone. Otherwise
    its land is followed through the lineage (transitively) to the heirs present now:

    * one heir (a merge, a recode, or a split that left one piece) — carried to it;
    * several heirs and ``remove`` — carried to every heir (the enterprise uses none of that land);
    * several heirs and ``add`` — ambiguous: not applied, reported with the heirs.

    Returns ``(corrections, ambiguous)``; ``ambiguous`` has ``uscc, parcel_code, action, reason``
    (reason in Chinese, for the match quality report). Corrections naming land that never
    existed are left for the matcher to report as unknown.
    """
    empty = pd.DataFrame(columns=["uscc", "parcel_code", "action", "reason"])
    if corrections is None or len(corrections) == 0 or lineage is None or len(lineage) == 0:
        return corrections, empty
    present = set(land["identity_code"].dropna())
    reg = land[land["kind"] == "registered"] if "kind" in land.columns else land
    present |= set(reg["parcel_code"].dropna())
    if "source_parcel_code" in land.columns:
        present |= set(land["source_parcel_code"].dropna())
    kids: dict[str, set[str]] = {}
    for p, c in zip(lineage["parent_code"], lineage["child_code"]):
        kids.setdefault(p, set()).add(c)

    def heirs(code: str) -> list[str]:
        start = [code, "R-" + code] if not code.startswith(("R-", "A-", "D-")) else [code]
        seen, out, todo = set(), set(), [s for s in start if s in kids]
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            for c in kids.get(k, ()):
                if c in present:
                    out.add(c)
                elif c in kids:
                    todo.append(c)
        return sorted(out)

    rows, bad = [], []
    for rec in corrections.to_dict("records"):
        code = str(rec.get("parcel_code") or "")
        if code in present or not code:
            rows.append(rec)
            continue
        h = heirs(code)
        action = str(rec.get("action") or "").strip().lower()
        if not h:
            rows.append(rec)  # unknown land: the matcher reports it
        elif len(h) == 1 or action == "remove":
            rows.extend({**rec, "parcel_code": c} for c in h)
        else:
            bad.append({"uscc": rec.get("uscc"), "parcel_code": code, "action": action,
                        "reason": f"宗地已分割为 {'、'.join(h)}，纠偏无法唯一对应，请指定其中一宗 "
                                  f"(split since: ambiguous)"})
    out = pd.DataFrame(rows, columns=corrections.columns) if rows else corrections.iloc[0:0]
    return out.reset_index(drop=True), (pd.DataFrame(bad) if bad else empty)
