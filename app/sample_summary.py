"""Summary of a synthetic bundle: ``summary.md`` (counts, distributions) and ``summary.png``
(a map coloured by 亩均税收 band, and the 亩均税收 histogram).

Fed county by county (:meth:`SummaryCollector.add`), so a province summary keeps only a few
numbers per parcel/enterprise (no geometries): the map then shows parcel centroids instead of
polygons. Figures come from the generator's ground truth (true land attribution), i.e. what a
correct pipeline should reproduce.

Example
-------
>>> from spatial.synthetic import generate_county
>>> col = SummaryCollector(year=2025)
>>> col.add(generate_county(seed=1, parcels=80))
>>> col.counts["parcels"]
80
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from spatial.synthetic import MU_M2, YIELD_BANDS, SyntheticCounty, parcel_yield

__all__ = ["SummaryCollector", "low_yield_clustering", "enterprise_yield", "BAND_LABELS", "BAND_COLOURS"]

BAND_LABELS = ("<5", "5–10", "10–20", "20–40", "40–80", "≥80")
BAND_COLOURS = ("#d7191c", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641", "#00441b")
IDLE_COLOUR = "#9e9e9e"


def enterprise_yield(c: SyntheticCounty) -> pd.DataFrame:
    """亩均税收 (万元/亩) per enterprise and year on its true attributed land (land > 0 only).

    Columns: ``uscc``, ``year``, ``scale``, ``tax_per_mu``, ``x``, ``y``, ``old_zone``.
    """
    e = c.enterprises[["uscc", "scale", "land_m2", "x", "y", "old_zone"]]
    m = c.metrics[["uscc", "year", "tax_paid", "tax_refund"]].merge(e, on="uscc")
    m = m[m["land_m2"] > 0]
    m = m.assign(tax_per_mu=(m["tax_paid"] + m["tax_refund"].fillna(0.0)) / (m["land_m2"] / MU_M2))
    return m[["uscc", "year", "scale", "tax_per_mu", "x", "y", "old_zone"]].reset_index(drop=True)


def low_yield_clustering(c: SyntheticCounty, year: int | None = None, threshold: float = 5.0,
                         distance: float = 50.0) -> dict:
    """How clustered low-yield parcels are: a join-count ratio.

    ``ratio`` = P(a neighbour within ``distance`` m is low | parcel is low) / P(low). 1 means no
    clustering; the generator's old zone makes it well above 1 (连片低效用地).
    """
    py = parcel_yield(c, year)
    low = (py["tax_per_mu"] < threshold).to_numpy()
    geoms = c.parcels.geometry.values
    tree = shapely.STRtree(geoms)
    i, j = tree.query(geoms, predicate="dwithin", distance=distance)
    keep = i != j
    i, j = i[keep], j[keep]
    base = float(low.mean()) if len(low) else 0.0
    from_low = low[i]
    cond = float(low[j][from_low].mean()) if from_low.any() else 0.0
    return {"low_share": base, "neighbour_low_given_low": cond,
            "ratio": cond / base if base > 0 else float("nan"), "pairs": int(len(i))}


class SummaryCollector:
    """Accumulate a bundle's summary one county at a time; :meth:`write` renders it."""

    def __init__(self, year: int, max_polygons: int = 20_000):
        self.year = year
        self.max_polygons = max_polygons
        self.counts: Counter = Counter()
        self.roles: Counter = Counter()
        self.placements: Counter = Counter()
        self.coord_sys: Counter = Counter()
        self.area_mu: list[np.ndarray] = []
        self.yield_big: list[np.ndarray] = []
        self.yield_small: list[np.ndarray] = []
        self.band_count = np.zeros(len(BAND_LABELS) + 1, dtype=np.int64)  # last = idle
        self.band_area = np.zeros(len(BAND_LABELS) + 1)
        self.log_pairs: list[np.ndarray] = []
        self.low_all_years = 0
        self.with_all_years = 0
        self.cluster: list[dict] = []
        self.centroids: list[np.ndarray] = []
        self.bands: list[np.ndarray] = []
        self.polygons = None
        self.townships: list[pd.DataFrame] = []
        self.crs = None

    def add(self, c: SyntheticCounty) -> None:
        p, e = c.parcels, c.enterprises
        k = self.counts
        k["counties"] += 1
        k["parcels"] += len(p)
        k["registered"] += int(p["registered"].sum())
        k["idle"] += int((p["use_kind"] == "idle").sum())
        area_mu = shapely.area(p.geometry.values) / MU_M2
        k["under_1_mu"] += int((area_mu < 1).sum())
        k["buildings"] += len(c.buildings)
        k["defacto_attached"] += int(c.defacto["attached_to"].notna().sum())
        k["defacto_independent"] += int(c.defacto["attached_to"].isna().sum())
        k["enterprises"] += len(e)
        k["above_scale"] += int((e["scale"] == "规上").sum())
        k["no_coordinates"] += int(e["lon"].isna().sum())
        k["leases"] += len(c.leases)
        k["corrections"] += len(c.corrections)
        k["metric_rows"] += len(c.metrics)
        k["links"] += len(c.truth)
        self.roles.update(e["role"].tolist())
        self.placements.update(e["placement"].tolist())
        self.coord_sys.update(e["coord_sys"].fillna("(none)").tolist())
        self.area_mu.append(area_mu.astype(np.float32))
        ey = enterprise_yield(c)
        cur = ey[ey["year"] == self.year]
        self.yield_big.append(cur.loc[cur["scale"] == "规上", "tax_per_mu"].to_numpy(np.float32))
        self.yield_small.append(cur.loc[cur["scale"] == "规下", "tax_per_mu"].to_numpy(np.float32))
        wide = ey.pivot_table(index="uscc", columns="year", values="tax_per_mu")
        years = sorted(wide.columns)
        if len(years) >= 2:
            full = wide.dropna()
            self.with_all_years += len(full)
            self.low_all_years += int((full < 5.0).all(axis=1).sum())
            pair = wide[[years[-2], years[-1]]].dropna().to_numpy()
            self.log_pairs.append(np.log(np.maximum(pair, 1e-6)).astype(np.float32))
        py = parcel_yield(c, self.year)
        band = np.where(py["idle"], len(BAND_LABELS),
                        np.digitize(py["tax_per_mu"].fillna(0).to_numpy(), YIELD_BANDS[1:-1]))
        self.band_count += np.bincount(band, minlength=len(self.band_count))
        self.band_area += np.bincount(band, weights=py["area_mu"].to_numpy(), minlength=len(self.band_area))
        self.cluster.append(low_yield_clustering(c, self.year))
        cen = shapely.centroid(p.geometry.values)
        lon, lat = Transformer.from_crs(p.crs, 4490, always_xy=True).transform(shapely.get_x(cen), shapely.get_y(cen))
        self.centroids.append(np.c_[lon, lat].astype(np.float32))
        self.bands.append(band.astype(np.int8))
        if k["counties"] == 1 and len(p) <= self.max_polygons:
            self.polygons, self.crs = p.geometry.values, p.crs
        else:
            self.polygons = None
        if k["counties"] == 1:
            t = pd.DataFrame({"township": p["township"].to_numpy(), "area_mu": area_mu,
                              "idle": (p["use_kind"] == "idle").to_numpy()})
            tp = t.groupby("township").agg(parcels=("area_mu", "size"), area_mu=("area_mu", "sum"),
                                           idle=("idle", "sum"))
            te = e.groupby("township").agg(enterprises=("uscc", "size"),
                                           above_scale=("scale", lambda s: int((s == "规上").sum())))
            self.townships = [tp.join(te, how="outer").fillna(0).sort_index()]

    # -- output ----------------------------------------------------------------------------------
    def stats(self) -> dict:
        area = np.concatenate(self.area_mu) if self.area_mu else np.empty(0)
        big = np.concatenate(self.yield_big) if self.yield_big else np.empty(0)
        small = np.concatenate(self.yield_small) if self.yield_small else np.empty(0)
        pairs = np.concatenate(self.log_pairs) if self.log_pairs else np.empty((0, 2))
        q = (0.05, 0.25, 0.5, 0.75, 0.95)

        def quant(a):
            return [round(float(v), 2) for v in np.quantile(a, q)] if len(a) else []

        pairs_n = sum(d["pairs"] for d in self.cluster)
        ratio = (np.average([d["ratio"] for d in self.cluster], weights=[max(d["pairs"], 1) for d in self.cluster])
                 if self.cluster and pairs_n else float("nan"))
        return {
            "counts": dict(sorted(self.counts.items())),
            "roles": dict(sorted(self.roles.items())),
            "placements": dict(sorted(self.placements.items())),
            "coord_sys": dict(sorted(self.coord_sys.items())),
            "above_scale_share": round(self.counts["above_scale"] / max(self.counts["enterprises"], 1), 4),
            "parcel_area_mu_quantiles": quant(area),
            "parcel_area_mu_max": round(float(area.max()), 2) if len(area) else None,
            "year": self.year,
            "tax_per_mu_above_scale_quantiles": quant(big),
            "tax_per_mu_above_scale_median": round(float(np.median(big)), 2) if len(big) else None,
            "tax_per_mu_below_scale_quantiles": quant(small),
            "share_under_5_above_scale": round(float((big < 5).mean()), 4) if len(big) else None,
            "share_under_5_below_scale": round(float((small < 5).mean()), 4) if len(small) else None,
            "bands": {lab: {"parcels": int(n), "area_mu": round(float(a), 1)}
                      for lab, n, a in zip((*BAND_LABELS, "idle"), self.band_count, self.band_area)},
            "low_yield_clustering_ratio": round(float(ratio), 2),
            "log_yield_corr_last_two_years": (round(float(np.corrcoef(pairs.T)[0, 1]), 3)
                                              if len(pairs) > 2 else None),
            "enterprises_under_5_every_year": self.low_all_years,
            "enterprises_with_all_years": self.with_all_years,
        }

    def write(self, out_dir, *, title: str, files: list[str] | None = None) -> dict:
        """Write ``summary.md`` and ``summary.png`` into ``out_dir``; return :meth:`stats`."""
        out = Path(out_dir)
        s = self.stats()
        (out / "summary.md").write_text(self._markdown(s, title, files or []), encoding="utf-8")
        self._figure(out / "summary.png", s)
        return s

    def _markdown(self, s: dict, title: str, files: list[str]) -> str:
        c = s["counts"]
        lines = [f"# 样例数据摘要 — {title}", "",
                 "Synthetic, fictional data (no real enterprise). Money in 万元, areas in m² (shown in 亩, "
                 "1 亩 = 666.667 m²), energy in 吨标煤, electricity in kWh. Figures below use the "
                 "generator's ground truth (true land attribution).", ""]
        if files:
            lines += ["## 文件 Files", "", *[f"- `{f}`" for f in files], ""]
        rows = [("counties 县", c.get("counties", 0)), ("parcels 宗地", c.get("parcels", 0)),
                ("  registered 已登记", c.get("registered", 0)), ("  idle 闲置", c.get("idle", 0)),
                ("  under 1 亩 边角料", c.get("under_1_mu", 0)), ("buildings 建筑", c.get("buildings", 0)),
                ("de-facto land attached 关联事实用地", c.get("defacto_attached", 0)),
                ("de-facto land independent 独立事实用地", c.get("defacto_independent", 0)),
                ("enterprises 企业", c.get("enterprises", 0)), ("  规上", c.get("above_scale", 0)),
                ("  no coordinates 无坐标", c.get("no_coordinates", 0)),
                ("true 地企 links", c.get("links", 0)), ("leases 租赁", c.get("leases", 0)),
                ("corrections 纠偏", c.get("corrections", 0)), ("metric rows 指标", c.get("metric_rows", 0))]
        lines += ["## 数量 Counts", "", "| item | count |", "|---|---:|", *[f"| {a} | {b:,} |" for a, b in rows], ""]
        lines += [f"规上 share: {s['above_scale_share']:.1%}", "",
                  "Enterprise roles: " + ", ".join(f"{k} {v:,}" for k, v in s["roles"].items()), "",
                  "Point placement: " + ", ".join(f"{k} {v:,}" for k, v in s["placements"].items()), "",
                  "坐标系 as delivered: " + ", ".join(f"{k} {v:,}" for k, v in s["coord_sys"].items()), ""]
        qh = "| | p5 | p25 | median | p75 | p95 |\n|---|---:|---:|---:|---:|---:|"
        lines += ["## 宗地面积 Parcel area (亩)", "", qh,
                  "| parcels | " + " | ".join(f"{v:g}" for v in s["parcel_area_mu_quantiles"]) + " |", "",
                  f"Largest parcel: {s['parcel_area_mu_max']} 亩.", ""]
        lines += [f"## 亩均税收 ({s['year']}, 万元/亩, tax paid + refunds on true land)", "", qh,
                  "| 规上 | " + " | ".join(f"{v:g}" for v in s["tax_per_mu_above_scale_quantiles"]) + " |",
                  "| 规下 | " + " | ".join(f"{v:g}" for v in s["tax_per_mu_below_scale_quantiles"]) + " |", "",
                  f"Share below 5 万元/亩: 规上 {s['share_under_5_above_scale']:.1%}, "
                  f"规下 {s['share_under_5_below_scale']:.1%}.", ""]
        lines += ["## 宗地亩均税收分档 Parcels by 亩均税收 band", "", "| band (万元/亩) | parcels | area (亩) |",
                  "|---|---:|---:|",
                  *[f"| {k} | {v['parcels']:,} | {v['area_mu']:,.1f} |" for k, v in s["bands"].items()], ""]
        lines += ["## 低效聚集与持续 Clustering and persistence", "",
                  f"- Low-yield (< 5 万元/亩) parcels cluster: a low parcel's neighbours (≤ 50 m) are low "
                  f"{s['low_yield_clustering_ratio']}× as often as parcels overall.",
                  f"- Correlation of log 亩均税收 between the last two years: {s['log_yield_corr_last_two_years']}.",
                  f"- Enterprises under 5 万元/亩 in every year: {s['enterprises_under_5_every_year']:,} "
                  f"of {s['enterprises_with_all_years']:,} with land and all years.", ""]
        if self.townships and c.get("counties", 0) == 1:
            t = self.townships[0]
            lines += ["## 镇街 Townships", "", "| 镇街 | parcels | area (亩) | idle | enterprises | 规上 |",
                      "|---|---:|---:|---:|---:|---:|",
                      *[f"| {name} | {int(r.parcels)} | {r.area_mu:,.1f} | {int(r.idle)} | {int(r.enterprises)} | "
                        f"{int(r.above_scale)} |" for name, r in t.iterrows()], ""]
        return "\n".join(lines)

    def _figure(self, path: Path, s: dict) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import font_manager
        from matplotlib.patches import Patch

        cjk = next((f.name for f in font_manager.fontManager.ttflist
                    if f.name in ("Noto Sans CJK SC", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei",
                                  "Source Han Sans SC", "Noto Sans SC")), None)
        zh = cjk is not None
        rc = {"font.family": [cjk, "DejaVu Sans"]} if zh else {}
        colours = np.array([*BAND_COLOURS, IDLE_COLOUR])
        labels = [*BAND_LABELS, "闲置 idle" if zh else "idle"]
        with plt.rc_context(rc):
            fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 7), gridspec_kw={"width_ratios": [1.4, 1]})
            bands = np.concatenate(self.bands) if self.bands else np.empty(0, int)
            if self.polygons is not None:
                import geopandas as gpd

                gpd.GeoSeries(self.polygons, crs=self.crs).plot(ax=ax, color=colours[bands], edgecolor="#555555",
                                                                linewidth=0.1)
                ax.set_xlabel(f"EPSG:{self.crs.to_epsg()} (m)")
            else:
                xy = np.concatenate(self.centroids)
                ax.scatter(xy[:, 0], xy[:, 1], c=colours[bands], s=0.3, linewidths=0, rasterized=True)
                ax.set_xlabel("lon (EPSG:4490)")
            ax.set_aspect("equal")
            ax.set_title(("宗地亩均税收 (万元/亩) " if zh else "Parcel tax per mu (10k CNY/mu) ") + str(self.year))
            ax.legend(handles=[Patch(color=c, label=l) for c, l in zip(colours, labels)], loc="lower left",
                      fontsize=8)
            ax.tick_params(labelsize=7)
            big = np.concatenate(self.yield_big) if self.yield_big else np.empty(0)
            small = np.concatenate(self.yield_small) if self.yield_small else np.empty(0)
            bins = np.logspace(-1, 3.3, 60)
            ax2.hist(np.clip(small, 0.1, None), bins=bins, alpha=0.6, label="规下" if zh else "below scale")
            ax2.hist(np.clip(big, 0.1, None), bins=bins, alpha=0.6, label="规上" if zh else "above scale")
            ax2.axvline(5, color="#d7191c", linestyle="--", linewidth=1)
            ax2.set_xscale("log")
            ax2.set_xlabel("亩均税收 (万元/亩)" if zh else "tax per mu (10k CNY/mu)")
            ax2.set_ylabel("企业数" if zh else "enterprises")
            med = s.get("tax_per_mu_above_scale_median")
            ax2.set_title((f"{self.year} 企业亩均税收，规上中位数 {med}" if zh else
                           f"{self.year} enterprise tax per mu; above-scale median {med}")
                          if med is not None and not math.isnan(med) else "")
            ax2.legend()
            fig.tight_layout()
            fig.savefig(path, dpi=110, metadata={"Software": None})
            plt.close(fig)
