"""Small, exact import bundles for database-level tests (the sample generator makes big ones).

A 3 × 2 grid of 100 m × 60 m parcels in EPSG:4549 (CGCS2000 / GK 120°E) near 120.1°E 30.2°N,
separated by 20 m roads; six enterprises, one per parcel centre (one tenant shares parcel 1);
two years of metrics; one lease.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry import box

from spatial.identifiers import make_uscc

X0, Y0 = 509_660.0, 3_341_300.0  # ~120.1°E, 30.2°N in EPSG:4549
W, H, ROAD = 100.0, 60.0, 20.0
COUNTY = "330999"


def parcel_code(i: int) -> str:
    return f"{COUNTY}001001GB{i:05d}"


def uscc(i: int) -> str:
    return make_uscc(f"91330999MA{i:07d}")


def parcel_boxes() -> list:
    out = []
    for r in range(2):
        for c in range(3):
            x = X0 + c * (W + ROAD)
            y = Y0 + r * (H + ROAD)
            out.append(box(x, y, x + W, y + H))
    return out


def write_bundle(root: Path, *, enterprises_extra: list[dict] | None = None,
                 metrics_extra: list[dict] | None = None, drop_enterprise_column: str | None = None) -> Path:
    """Write the bundle; ``*_extra`` rows are appended as given (to inject bad rows)."""
    root.mkdir(parents=True, exist_ok=True)
    boxes = parcel_boxes()
    parcels = gpd.GeoDataFrame({
        "宗地代码": [parcel_code(i + 1) for i in range(6)],
        "权利人统一社会信用代码": [uscc(i + 1) for i in range(6)],
        "权利人": [f"测试企业{i + 1}有限公司" for i in range(6)],
        "用途": ["工业用地"] * 6,
        "镇街": ["东湖街道"] * 3 + ["西山镇"] * 3,
    }, geometry=boxes, crs=4549)
    parcels.to_file(root / "parcels.geojson", driver="GeoJSON")

    pts = gpd.GeoSeries([b.centroid for b in boxes], crs=4549).to_crs(4490)
    ents = pd.DataFrame({
        "统一社会信用代码": [uscc(i + 1) for i in range(6)],
        "企业名称": [f"测试企业{i + 1}有限公司" for i in range(6)],
        "经度": pts.x.round(7), "纬度": pts.y.round(7),
        "坐标系": ["cgcs2000"] * 6,
        "行业代码": ["3311", "2611", "3412", "1713", "3911", "2929"],
        "规模": ["规上", "规上", "规下", "规上", "规下", "规上"],
        "镇街": ["东湖街道"] * 3 + ["西山镇"] * 3,
    })
    tenant_pt = gpd.GeoSeries([boxes[0].centroid.buffer(1).centroid], crs=4549).to_crs(4490)
    ents.loc[len(ents)] = [uscc(7), "租户科技有限公司", round(tenant_pt.x[0] + 0.0001, 7), round(tenant_pt.y[0], 7),
                           "cgcs2000", "3989", "规下", "东湖街道"]
    if enterprises_extra:
        ents = pd.concat([ents, pd.DataFrame(enterprises_extra)], ignore_index=True)
    if drop_enterprise_column:
        ents = ents.drop(columns=[drop_enterprise_column])
    ents.to_csv(root / "enterprises.csv", index=False, encoding="utf-8-sig")

    rows = []
    for year in (2024, 2025):
        for i in range(7):
            rows.append({"统一社会信用代码": uscc(i + 1), "年度": year, "实缴税金": 50.0 + 10 * i + year % 10,
                         "税收还原额": 2.0, "工业增加值": 400.0 + 30 * i, "营业收入": 3000.0 + 100 * i,
                         "综合能耗": 100.0 + i, "排放当量": 1.0 + i / 10, "研发经费": 60.0 + i,
                         "从业人员": 40 + i, "用电量": 1_000_000 + 1000 * i})
    metrics = pd.DataFrame(rows)
    if metrics_extra:
        metrics = pd.concat([metrics, pd.DataFrame(metrics_extra)], ignore_index=True)
    metrics.to_csv(root / "metrics.csv", index=False, encoding="utf-8-sig")

    pd.DataFrame({"承租企业统一社会信用代码": [uscc(7)], "宗地代码": [parcel_code(1)],
                  "出租方统一社会信用代码": [uscc(1)], "租赁面积": [1500.0]}).to_csv(
        root / "leases.csv", index=False, encoding="utf-8-sig")
    return root
