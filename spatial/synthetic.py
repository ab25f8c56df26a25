"""Synthetic 亩均论英雄 data: a realistic fictional county, and a province in county-sized chunks.

Pure and deterministic: no file I/O, every random draw comes from a ``numpy`` generator seeded
from ``(seed, county index)``, so a county is the same whether it is generated alone or as chunk
*i* of a province (see :func:`iter_province`). ``app.sample`` writes the result as a county would
deliver it (GBK Shapefiles, Excel with Chinese headers, CSV with BOM …).

What one county (县/区) holds — close to the published ones (余杭: 1,923 parcels, 15,276
enterprises, 16,964 地企 links):

- 工业园区 (industrial zones) laid out as blocks between roads 15–40 m wide, rotated a little;
  one 老工业区 (old zone) with small lots, landlords (地主) and many tenants, whose yield is low —
  the spatially clustered low tail (连片低效用地);
- 宗地 (registered parcels, ``^\\d{12}GB\\d{5}$``) from < 1 亩 边角料 to several hundred 亩, mostly
  rectangles with jittered corners, some L-shaped or chamfered; some idle (闲置, no user), some
  unregistered (是否登记 = 否), some owned by one enterprise in a row (一企多地);
- 小微企业园 parcels with 4–6 storey buildings full of tenants, and ordinary plants of 1–3 floors;
- 事实用地: independent pieces (no code) in vacant blocks, and pieces attached to a registered
  parcel (the notch of an L-shaped parcel, a strip taken from the road) used by the same enterprise;
- enterprises (≈ 7.5 per parcel) with valid 统一社会信用代码, GB/T 4754 manufacturing codes 13–43,
  ~12.5 % 规上, Chinese names; points inside their building, some pushed into the road (geocoding
  noise), ~1/3 in GCJ-02 (as Amap returns them), a few % with no land (no point or a point in town);
- three years of metrics with AR(1) persistence in log space, tax refunds (税收还原), missing values
  and shared electricity meters (一表多企); leases consistent with the buildings; a few 纠偏.

Coordinates are generated in the county's CGCS2000 3-degree Gauss-Krüger zone (EPSG:4549 for the
sample county at 120.08°E 30.05°N). Money in 万元, areas in m², energy in 吨标煤, electricity in kWh.

Example
-------
>>> c = generate_county(seed=1, parcels=200)
>>> len(c.parcels), c.crs
(200, 4549)
>>> bool(c.parcels.parcel_code.str.fullmatch(r"\\d{12}GB\\d{5}").all())
True
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from spatial.crs import from_cgcs2000, gk_zone_epsg
from spatial.identifiers import USCC_CHARSET, USCC_WEIGHTS

__all__ = [
    "MU_M2",
    "DEFAULT_YEARS",
    "SAMPLE_COUNTY_CODE",
    "COUNTY_PARCELS",
    "ENTERPRISES_PER_PARCEL",
    "PROVINCE_ENTERPRISES_PER_PARCEL",
    "YIELD_BANDS",
    "SyntheticCounty",
    "generate_county",
    "iter_province",
    "province_plan",
    "parcel_yield",
    "county_code",
]

#: 1 亩 in m².
MU_M2 = 10000.0 / 15.0
DEFAULT_YEARS = (2023, 2024, 2025)
#: The fictional sample county 青溪县 (county index 0).
SAMPLE_COUNTY_CODE = "330999"
SAMPLE_CENTRE = (120.08, 30.05)
#: Parcels per county chunk in a province run.
COUNTY_PARCELS = 2000
ENTERPRISES_PER_PARCEL = 7.5
#: A province has relatively fewer tenants per parcel (≈ 500k parcels, 2M enterprises).
PROVINCE_ENTERPRISES_PER_PARCEL = 4.0
#: 亩均税收 bands (万元/亩) used by the summary map; below 5 is the published 低效 threshold.
YIELD_BANDS = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0, math.inf)

_ROAD_WIDTHS = np.array([16.0, 18.0, 20.0, 24.0, 30.0, 36.0])
_OUTER_ROAD = 40.0
_SETBACK = 0.6  # parcel edge back from the lot line, so jittered neighbours never overlap
_JITTER = 0.5

# ---------------------------------------------------------------------------------------------
# Word lists (names are fictional; any likeness to a real enterprise is chance)

_TOWN_ROOTS = (
    "青溪", "临江", "白沙", "东湖", "西塘", "南渚", "北港", "新桥", "石门", "竹林", "长乐", "安仁",
    "丰山", "凤鸣", "龙泉", "桃源", "梅林", "柳湾", "金沙", "银湖", "双溪", "三塘", "五里", "上塘",
    "下沙", "横山", "古城", "永宁", "太平", "云岭", "松溪", "荷塘", "翠屏", "鹤鸣", "芦花", "秀川",
)
_TOWN_SUFFIX = ("镇", "镇", "镇", "街道", "街道", "乡")
_COUNTY_ROOTS = list("青临云清宁平安永嘉兴德泰丰华松桐海富长")
_BRAND = list(
    "恒华达永盛金鼎信宏泰隆兴昌鑫源丰瑞祥德利天宇新力博奥创智汇通腾飞凯迪海峰嘉和安康振宝诚佳"
    "美顺远合正光明中大科东方伟业旺富欣荣"
)
_ROAD_ROOTS = ("兴业", "创业", "工业", "科技", "发展", "振兴", "富民", "开元", "新港", "滨江",
               "环城", "经一", "经二", "纬一", "纬二", "园区", "锦绣", "和平", "建设", "友谊")

#: GB/T 4754-2017 manufacturing divisions 13–43 (16 烟草 left out): weight, name words.
_DIVISIONS: dict[int, tuple[float, tuple[str, ...]]] = {
    13: (2, ("食品", "粮油", "饲料")), 14: (2, ("食品", "乳业")), 15: (1, ("酒业", "茶业", "饮品")),
    17: (8, ("纺织", "织造", "印染")), 18: (5, ("服饰", "制衣", "服装")), 19: (2, ("皮革", "鞋业")),
    20: (2, ("木业",)), 21: (3, ("家具", "家居")), 22: (3, ("纸业", "包装")), 23: (2, ("印刷", "彩印")),
    24: (3, ("文具", "工艺品", "体育用品")), 25: (1, ("石化", "能源")), 26: (5, ("化工", "新材料", "涂料")),
    27: (2, ("药业", "生物医药")), 28: (2, ("化纤",)), 29: (8, ("塑业", "橡胶", "塑胶")),
    30: (4, ("建材", "玻璃", "陶瓷")), 31: (1, ("钢业", "特钢")), 32: (2, ("铜业", "铝业")),
    33: (10, ("五金", "金属制品", "不锈钢")), 34: (12, ("机械", "精密机械", "泵业", "阀门")),
    35: (6, ("机械设备", "智能装备")), 36: (6, ("汽车部件", "汽配")), 37: (1, ("船舶", "车辆")),
    38: (10, ("电气", "电机", "电器", "照明")), 39: (6, ("电子", "光电", "微电子")),
    40: (2, ("仪表", "仪器")), 41: (2, ("制品",)), 42: (1, ("再生资源", "环保科技")),
    43: (1, ("设备修理",)),
}
_DIV_CODES = np.array(list(_DIVISIONS))
_DIV_P = np.array([v[0] for v in _DIVISIONS.values()], dtype=float)
_DIV_P /= _DIV_P.sum()
_SUFFIX = ("有限公司", "有限公司", "有限公司", "有限公司", "股份有限公司", "有限责任公司", "科技有限公司", "厂")
_OPERATORS = ("张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "周敏")
_DEFACTO_NOTES = ("围墙外扩占用", "堆场", "临时搭建", "停车场", "仓储棚", None)

_USCC_LUT = np.full(128, -1, dtype=np.int64)
for _i, _c in enumerate(USCC_CHARSET):
    _USCC_LUT[ord(_c)] = _i


# ---------------------------------------------------------------------------------------------
# Public API


@dataclasses.dataclass
class SyntheticCounty:
    """One generated county (one chunk of a province run).

    Frames carry the data-contract columns under their canonical English names plus a few ground-
    truth columns (listed in :attr:`truth_columns`) that a writer leaves out. ``truth`` is the true
    地企对应: one row per (enterprise, land) link with role and attributed land.
    """

    index: int
    county_code: str
    county_name: str
    crs: int
    parcels: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame
    defacto: gpd.GeoDataFrame
    enterprises: pd.DataFrame
    metrics: pd.DataFrame
    leases: pd.DataFrame
    corrections: pd.DataFrame
    truth: pd.DataFrame
    truth_columns: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


def county_code(index: int) -> str:
    """Fictional 6-digit 行政区划代码 of county *index*: 330999, 330998, … 330910, 331099, …

    >>> county_code(0), county_code(1), county_code(90)
    ('330999', '330998', '331099')
    """
    city, county = divmod(int(index), 90)
    if city > 90:
        raise ValueError("at most 8190 county chunks")
    return f"33{9 + city:02d}{99 - county:02d}"


def province_plan(parcels: int, county_parcels: int = COUNTY_PARCELS) -> list[int]:
    """Parcels per county chunk: full counties of ``county_parcels`` and a smaller last one.

    >>> province_plan(4500)
    [2000, 2000, 500]
    """
    parcels = int(parcels)
    if parcels < 1:
        raise ValueError("parcels must be >= 1")
    full, rest = divmod(parcels, county_parcels)
    return [county_parcels] * full + ([rest] if rest else [])


def generate_county(
    seed: int = 0,
    parcels: int = COUNTY_PARCELS,
    *,
    index: int = 0,
    years: tuple[int, ...] = DEFAULT_YEARS,
    enterprises_per_parcel: float = ENTERPRISES_PER_PARCEL,
) -> SyntheticCounty:
    """Generate one fictional county (县) of ``parcels`` industrial parcels.

    County *index* 0 is the sample county 青溪县 (330999) near 120°E 30°N in EPSG:4549; other
    indices are placed over Zhejiang in their own Gauss-Krüger zone. The same ``(seed, index,
    parcels, years)`` always gives the same county.

    >>> c = generate_county(seed=7, parcels=120)
    >>> len(c.enterprises) == round(120 * ENTERPRISES_PER_PARCEL)
    True
    """
    if parcels < 1:
        raise ValueError("parcels must be >= 1")
    return _County(int(seed), int(index), int(parcels), tuple(int(y) for y in years),
                   float(enterprises_per_parcel)).build()


def iter_province(
    seed: int = 0,
    parcels: int = 500_000,
    *,
    county_parcels: int = COUNTY_PARCELS,
    years: tuple[int, ...] = DEFAULT_YEARS,
    enterprises_per_parcel: float = PROVINCE_ENTERPRISES_PER_PARCEL,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[SyntheticCounty]:
    """Yield a province as county chunks (县 by 县), so memory stays bounded by one county.

    Chunk *i* is :func:`generate_county` ``(seed, plan[i], index=i, enterprises_per_parcel=...)``
    (4 enterprises per parcel by default, ≈ 2M for 500k parcels): the content does not depend
    on how many chunks are generated or in which process (``start``/``stop`` select a range).

    >>> [len(c.parcels) for c in iter_province(seed=1, parcels=250, county_parcels=100)]
    [100, 100, 50]
    """
    plan = province_plan(parcels, county_parcels)
    for i in range(start, len(plan) if stop is None else min(stop, len(plan))):
        yield generate_county(seed, plan[i], index=i, years=years, enterprises_per_parcel=enterprises_per_parcel)


def parcel_yield(county: SyntheticCounty, year: int | None = None) -> pd.DataFrame:
    """True 亩均税收 per parcel (万元/亩) for one year, from the ground-truth links.

    Each enterprise's tax (实缴 + 还原) is apportioned to its land by attributed land area (the
    一企多地 rule); a parcel's 亩均税收 is the sum over its occupants divided by its area in 亩.
    Idle parcels (no occupant) get NaN. Returns columns ``parcel_code``, ``area_mu``, ``tax``,
    ``tax_per_mu``, ``idle``.
    """
    year = max(county.metrics["year"]) if year is None else year
    m = county.metrics[county.metrics["year"] == year]
    tax = pd.Series((m["tax_paid"] + m["tax_refund"].fillna(0.0)).to_numpy(), index=m["uscc"].to_numpy())
    t = county.truth[county.truth["parcel_code"].notna()]
    ent_land = county.truth.groupby("uscc")["land_m2"].sum()
    share = t["land_m2"].to_numpy() / ent_land.reindex(t["uscc"]).to_numpy()
    link_tax = tax.reindex(t["uscc"]).fillna(0.0).to_numpy() * np.nan_to_num(share)
    per_parcel = pd.Series(link_tax).groupby(t["parcel_code"].to_numpy()).sum()
    p = county.parcels
    area_mu = shapely.area(p.geometry.values) / MU_M2
    out = pd.DataFrame({"parcel_code": p["parcel_code"].to_numpy(), "area_mu": area_mu})
    out["tax"] = per_parcel.reindex(out["parcel_code"]).to_numpy()
    out["idle"] = out["tax"].isna().to_numpy()
    out["tax_per_mu"] = out["tax"] / out["area_mu"]
    return out


# ---------------------------------------------------------------------------------------------
# Helpers


def _rng_streams(seed: int, index: int, n: int) -> list[np.random.Generator]:
    # Independent streams per concern, so changing e.g. the metrics does not move the parcels.
    ss = np.random.SeedSequence([seed, index, 0x6D756A75])  # "muju"
    return [np.random.default_rng(s) for s in ss.spawn(n)]


def _uscc_batch(rng: np.random.Generator, region: str, n: int, prefix: str = "91",
                taken: set[str] | None = None) -> np.ndarray:
    """``n`` unique valid USCCs: ``prefix`` + 6-digit region + 9-char org code + check char.

    Org codes look like real ones: ~70 % new-style ``MA…``, the rest old 8-digit + 1 character.
    """
    taken = set() if taken is None else taken
    out: list[str] = []
    chars = np.frombuffer(USCC_CHARSET.encode(), dtype="S1")
    digits = chars[:10]
    while len(out) < n:
        k = (n - len(out)) + 8
        org = np.empty((k, 9), dtype="S1")
        new_style = rng.random(k) < 0.7
        org[:, :] = chars[rng.integers(0, 31, (k, 9))]
        old = ~new_style
        org[old, :8] = digits[rng.integers(0, 10, (int(old.sum()), 8))]
        org[new_style, 0] = b"M"
        org[new_style, 1] = b"A"
        body = np.empty((k, 17), dtype="S1")
        body[:, :2] = np.frombuffer(prefix.encode(), dtype="S1")
        body[:, 2:8] = np.frombuffer(region.encode(), dtype="S1")
        body[:, 8:] = org
        vals = _USCC_LUT[body.view(np.uint8)]
        check = (31 - (vals * np.asarray(USCC_WEIGHTS)).sum(axis=1) % 31) % 31
        codes = np.char.add(body.view("S17").ravel().astype(str), chars[check].astype(str))
        for c in codes:
            if c not in taken:
                taken.add(c)
                out.append(c)
                if len(out) == n:
                    break
    return np.asarray(out, dtype=object)


def _largest_remainder(weights: np.ndarray, total: int, minimum: int = 1) -> np.ndarray:
    minimum = min(minimum, total // len(weights))
    raw = weights / weights.sum() * (total - minimum * len(weights))
    out = np.floor(raw).astype(int)
    rest = total - minimum * len(weights) - out.sum()
    out[np.argsort(-(raw - out), kind="stable")[:rest]] += 1
    return out + minimum


def _group_share(rng: np.random.Generator, groups: np.ndarray, shape: float = 2.0) -> np.ndarray:
    # Dirichlet shares within groups, vectorised: gamma draws normalised by their group sum.
    g = rng.gamma(shape, 1.0, len(groups))
    sums = np.bincount(groups, weights=g)
    return g / sums[groups]


def _pick_weighted(rng: np.random.Generator, owner: np.ndarray, weight: np.ndarray,
                   which: np.ndarray) -> np.ndarray:
    """For each entry of ``which`` (a group id), pick a row among rows with ``owner == which``
    with probability proportional to ``weight`` (rows sorted by owner)."""
    cum = np.cumsum(weight)
    start = np.concatenate([[0.0], cum])[np.searchsorted(owner, which, side="left")]
    end = cum[np.searchsorted(owner, which, side="right") - 1]
    u = start + rng.random(len(which)) * (end - start)
    return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)


# ---------------------------------------------------------------------------------------------
# The county builder. One object per county keeps the many intermediate arrays readable; every
# step is vectorised over parcels / buildings / enterprises.


class _County:
    def __init__(self, seed: int, index: int, n: int, years: tuple[int, ...], epp: float):
        self.seed, self.index, self.n, self.years = seed, index, n, years
        self.n_ent = max(int(round(n * epp)), 1)
        (self.r_layout, self.r_shape, self.r_own, self.r_ent, self.r_attr, self.r_metric,
         self.r_geo) = _rng_streams(seed, index, 7)
        self.code = county_code(index)
        lon, lat = _county_centre(index)
        self.epsg = gk_zone_epsg(lon)
        self.to_geo = Transformer.from_crs(self.epsg, 4490, always_xy=True)
        e0, n0 = Transformer.from_crs(4490, self.epsg, always_xy=True).transform(lon, lat)
        self.origin = (float(e0), float(n0))
        r = self.r_attr
        self.name = "青溪县" if index == 0 else "".join(r.choice(_COUNTY_ROOTS, 2, replace=False)) + "县"
        self.short = self.name[:-1]

    # -- build ---------------------------------------------------------------------------------
    def build(self) -> SyntheticCounty:
        self._townships_and_zones()
        self._lots()
        self._parcel_shapes()
        self._ownership()
        self._buildings()
        self._defacto()
        self._enterprises()
        self._placement()
        self._attributes()
        self._metrics()
        return self._assemble()

    # -- townships, zones ----------------------------------------------------------------------
    def _townships_and_zones(self) -> None:
        r = self.r_layout
        n_town = int(r.integers(8, 11))
        roots = r.choice(len(_TOWN_ROOTS), n_town, replace=False)
        self.towns = np.array([_TOWN_ROOTS[k] + _TOWN_SUFFIX[j]
                               for k, j in zip(roots, r.integers(0, len(_TOWN_SUFFIX), n_town))],
                              dtype=object)
        n_zones = max(1, min(n_town + 2, math.ceil(self.n / 60)))
        quota = _largest_remainder(r.dirichlet(np.full(n_zones, 4.0)), self.n, minimum=1)
        self.zone_town = np.where(np.arange(n_zones) < n_town, np.arange(n_zones) % n_town,
                                  r.integers(0, n_town, n_zones))
        self.n_zones, self.quota = n_zones, quota
        self.zone_roads = np.array([[_ROAD_ROOTS[i] + ("路" if j else "大道") for j, i in
                                     enumerate(r.choice(len(_ROAD_ROOTS), 2, replace=False))]
                                    for _ in range(n_zones)], dtype=object)

    # -- lots ----------------------------------------------------------------------------------
    def _lots(self) -> None:
        r = self.r_layout
        zones = [_zone_lots(r, int(q), old=(z == 0)) for z, q in enumerate(self.quota)]
        # Place zones on a grid around the town centre, nearest cells first (zone 0, the old
        # zone, is next to town); spacing keeps every zone's grid clear of its neighbours.
        radius = np.array([z["radius"] for z in zones])
        spacing = 2 * radius.max() + 1200.0
        k = int(math.ceil(math.sqrt(self.n_zones + 1))) + 2
        gx, gy = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1))
        cells = np.c_[gx.ravel(), gy.ravel()]
        cells = cells[(cells != 0).any(axis=1)]
        dist = np.hypot(*cells.T) + r.uniform(0, 0.3, len(cells))
        cells = cells[np.argsort(dist, kind="stable")][: self.n_zones]
        slack = (spacing - 2 * radius) * 0.45
        cx = self.origin[0] + cells[:, 0] * spacing + r.uniform(-1, 1, self.n_zones) * slack
        cy = self.origin[1] + cells[:, 1] * spacing + r.uniform(-1, 1, self.n_zones) * slack
        ang = np.deg2rad(r.uniform(-25, 25, self.n_zones))
        self.Z = {"cx": cx, "cy": cy, "cos": np.cos(ang), "sin": np.sin(ang)}
        self.county_radius = float(np.hypot(cx - self.origin[0], cy - self.origin[1]).max() + spacing / 2)
        L = {key: np.concatenate([z["lots"][key] for z in zones]) for key in zones[0]["lots"]}
        L["zone"] = np.repeat(np.arange(self.n_zones), [len(z["lots"]["w"]) for z in zones])
        # strip ids unique across zones, to find neighbours in the same row
        offs = np.cumsum([0] + [int(z["lots"]["strip"].max()) + 1 for z in zones[:-1]])
        L["strip"] = L["strip"] + offs[L["zone"]]
        self.L = L
        U = {key: np.concatenate([z["unused"][key] for z in zones]) for key in zones[0]["unused"]}
        U["zone"] = np.repeat(np.arange(self.n_zones), [len(z["unused"]["w"]) for z in zones])
        self.U = U
        # 宗地代码: county + 地籍区 (township) + 地籍子区 (zone's ordinal in its township) + GB + seq
        town = self.zone_town[L["zone"]]
        sub = np.zeros(self.n_zones, dtype=int)
        for t in range(len(self.towns)):
            members = np.flatnonzero(self.zone_town == t)
            sub[members] = np.arange(1, len(members) + 1)
        seq = np.arange(len(L["w"])) - np.searchsorted(L["zone"], L["zone"], side="left") + 1
        self.parcel_code = np.array([f"{self.code}{t + 1:03d}{s:03d}GB{q:05d}"
                                     for t, s, q in zip(town, sub[L["zone"]], seq)], dtype=object)
        self.old_lot = L["zone"] == 0

    def _xy(self, P: dict, i: np.ndarray, a: np.ndarray, b: np.ndarray):
        """Lot-local (a along the road, b away from it) → county CRS metres."""
        w = P["w"][i]
        a2 = np.where(P["fx"][i], w - a, a)
        x = P["bx0"][i] + P["a0"][i] + a2
        y = P["y_road"][i] + P["v"][i] * b
        z = P["zone"][i]
        c, s = self.Z["cos"][z], self.Z["sin"][z]
        return self.Z["cx"][z] + c * x - s * y, self.Z["cy"][z] + s * x + c * y

    def _polygons(self, P: dict, owner: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        x, y = self._xy(P, owner, A, B)
        rings = shapely.linearrings(np.c_[x, y], indices=np.unique(owner, return_inverse=True)[1])
        return shapely.orient_polygons(shapely.polygons(rings))

    # -- parcel geometry -----------------------------------------------------------------------
    def _parcel_shapes(self) -> None:
        r, L = self.r_shape, self.L
        n = len(L["w"])
        w, d = L["w"], L["d"]
        L["fx"] = r.random(n) < 0.5
        big = (w > 45) & (d > 45) & ~L["leftover"]
        u = r.random(n)
        kind = np.where(big & (u < 0.12), 1, np.where((u > 0.9) & (w > 12) & (d > 12), 2, 0))
        nw = w * r.uniform(0.25, 0.45, n)
        nh = d * r.uniform(0.25, 0.45, n)
        c1 = np.minimum(w, d) * r.uniform(0.15, 0.4, n)
        c2 = np.minimum(w, d) * r.uniform(0.15, 0.4, n)
        s = _SETBACK
        A = np.full((n, 6), np.nan)
        B = np.full((n, 6), np.nan)
        A[:, 0], B[:, 0] = s, s
        A[:, 1], B[:, 1] = w - s, s
        # rect
        rect = kind == 0
        A[rect, 2], B[rect, 2] = (w - s)[rect], (d - s)[rect]
        A[rect, 3], B[rect, 3] = s, (d - s)[rect]
        # L: notch at the back corner (away from the road)
        lk = kind == 1
        A[lk, 2], B[lk, 2] = (w - s)[lk], (d - nh)[lk]
        A[lk, 3], B[lk, 3] = (w - nw)[lk], (d - nh)[lk]
        A[lk, 4], B[lk, 4] = (w - nw)[lk], (d - s)[lk]
        A[lk, 5], B[lk, 5] = s, (d - s)[lk]
        # chamfer
        ch = kind == 2
        A[ch, 2], B[ch, 2] = (w - s)[ch], (d - c2)[ch]
        A[ch, 3], B[ch, 3] = (w - c1)[ch], (d - s)[ch]
        A[ch, 4], B[ch, 4] = s, (d - s)[ch]
        A += r.uniform(-_JITTER, _JITTER, A.shape)
        B += r.uniform(-_JITTER, _JITTER, B.shape)
        valid = ~np.isnan(A)
        owner = np.broadcast_to(np.arange(n)[:, None], A.shape)[valid]
        self.parcel_geom = self._polygons(L, owner, A[valid], B[valid])
        self.parcel_area = shapely.area(self.parcel_geom)
        L["kind"], L["A"], L["B"] = kind, A, B
        # where buildings / points may go, lot-local: [2.5, w-2.5] x [2.5, b_max]
        L["b_max"] = np.where(lk, d - nh - 2.0, np.where(ch, d - c2 - 2.0, d - 2.0))

    # -- ownership -----------------------------------------------------------------------------
    def _ownership(self) -> None:
        r, L = self.r_own, self.L
        n = len(L["w"])
        leftover = self.parcel_area < MU_M2
        old = self.old_lot
        idle = ~leftover & (r.random(n) < np.where(old, 0.03, 0.05))
        park = ~old & ~leftover & ~idle & (self.parcel_area > 15 * MU_M2) & (r.random(n) < 0.05)
        prev_same = np.r_[False, L["strip"][1:] == L["strip"][:-1]]
        prev = np.r_[0, np.arange(n - 1)]
        prev_ok = prev_same & ~idle[prev] & ~park[prev] & ~leftover[prev]
        # 边角料 goes with the neighbour half the time; 一企多地: ~8 % of plants extend a neighbour's
        u = r.random(n)
        join = prev_ok & ~idle & ~park & np.where(leftover, u < 0.5, u < 0.08)
        group = np.cumsum(~join) - 1
        n_groups = int(group[-1]) + 1
        first = np.flatnonzero(~join)
        g_old = old[first]
        kind = np.full(n_groups, "self", dtype=object)
        kind[(r.random(n_groups) < np.where(g_old, 0.55, 0.06))] = "landlord"
        kind[park[first]] = "park"
        kind[idle[first]] = "idle"
        kind[leftover[first]] = "gov"  # a lone 边角料 stays with the land reserve (土地储备中心)
        self.group, self.group_kind, self.group_first = group, kind, first
        self.lot_kind = kind[group]
        self.leftover, self.idle = leftover, idle
        self.registered = r.random(n) < 0.97

    # -- buildings -----------------------------------------------------------------------------
    def _buildings(self) -> None:
        r, L = self.r_shape, self.L
        n = len(L["w"])
        lk = self.lot_kind
        used = np.isin(lk, ["self", "landlord", "park"]) & ~self.leftover
        sa = r.uniform(3, 8, n)
        bf = np.minimum(r.uniform(6, 20, n), 0.25 * L["d"])
        bb = L["b_max"] - r.uniform(1, 6, n)
        rw, rd = L["w"] - 2 * sa, bb - bf
        must = np.isin(lk, ["landlord", "park"])
        has = used & (rw >= 12) & (rd >= 12) & (must | (r.random(n) < 0.9))
        gap = 8.0
        k = np.clip(np.floor(rw / r.uniform(50, 90, n)) + 1, 1, np.where(self.old_lot, 2, 4))
        k = np.maximum(np.minimum(k, np.floor((rw + gap) / (10 + gap))), 1).astype(int)
        k[~has] = 0
        lot = np.repeat(np.arange(n), k)
        j = np.arange(len(lot)) - np.repeat(np.cumsum(k) - k, k)
        bw = ((rw - (k - 1) * gap) / np.maximum(k, 1))[lot]
        a0 = sa[lot] + j * (bw + gap)
        b0 = bf[lot]
        b1 = b0 + rd[lot] * r.uniform(0.55, 1.0, len(lot))
        a1 = a0 + bw
        A = np.c_[a0, a1, a1, a0]
        B = np.c_[b0, b0, b1, b1]
        owner = np.repeat(np.arange(len(lot)), 4)
        P = {key: self.L[key][lot] for key in ("w", "fx", "bx0", "a0", "y_road", "v", "zone")}
        geom = self._polygons(P, owner, A.ravel(), B.ravel())
        p = np.array([0.33, 0.3, 0.17, 0.1, 0.06, 0.04])
        floors = r.choice(np.arange(1, 7), len(lot), p=p)
        floors = np.where(self.old_lot[lot], np.minimum(floors, 3), floors)
        floors = np.where(lk[lot] == "park", r.integers(4, 7, len(lot)), floors)
        footprint = shapely.area(geom)
        self.B = {"lot": lot, "j": j, "a0": a0, "a1": a1, "b0": b0, "b1": b1, "geom": geom,
                  "floors": floors, "floor_area": np.round(footprint * floors, 2)}
        self.lot_floor = np.bincount(lot, weights=self.B["floor_area"], minlength=n)

    # -- 事实用地 --------------------------------------------------------------------------------
    def _defacto(self) -> None:
        r, L = self.r_shape, self.L
        n = len(L["w"])
        users = np.isin(self.lot_kind, ["self", "landlord"]) & ~self.leftover
        # attached: the notch of an L-shaped parcel, or a strip taken from the road in front
        notch = users & (L["kind"] == 1) & (r.random(n) < 0.5)
        strip = users & ~notch & (r.random(n) < 0.04)
        depth = np.minimum(r.uniform(2, 6, n), L["road"] / 2 - 1.5)
        A, B = L["A"], L["B"]
        s = _SETBACK
        i_n = np.flatnonzero(notch)
        An = np.c_[A[i_n, 2], L["w"][i_n] - s + r.uniform(-_JITTER, _JITTER, len(i_n)), A[i_n, 4], A[i_n, 3]]
        Bn = np.c_[B[i_n, 2], L["d"][i_n] - s + r.uniform(-_JITTER, _JITTER, len(i_n)), B[i_n, 4], B[i_n, 3]]
        i_s = np.flatnonzero(strip)
        As = np.c_[A[i_s, 0], A[i_s, 1], A[i_s, 1], A[i_s, 0]]
        Bs = np.c_[B[i_s, 0], B[i_s, 1], B[i_s, 1] - depth[i_s], B[i_s, 0] - depth[i_s]]
        lots = np.r_[i_n, i_s]
        owner = np.repeat(np.arange(len(lots)), 4)
        P = {key: L[key][lots] for key in ("w", "fx", "bx0", "a0", "y_road", "v", "zone")}
        att_geom = self._polygons(P, owner, np.r_[An.ravel(), As.ravel()], np.r_[Bn.ravel(), Bs.ravel()]) \
            if len(lots) else np.empty(0, dtype=object)
        self.df_att = {"lot": lots, "geom": att_geom}
        self.L["front_taken"] = strip
        # independent pieces: one per vacant block, in ~2 % of the parcel count
        U = self.U
        want = min(max(1, int(round(0.02 * self.n))), len(U["w"]))
        pick = np.sort(r.choice(len(U["w"]), want, replace=False)) if want else np.empty(0, int)
        P = {key: U[key][pick] for key in U}
        P["fx"] = r.random(len(pick)) < 0.5
        P["a0"] = np.zeros(len(pick))
        pw = np.minimum(r.uniform(15, 120, len(pick)), P["w"] - 10)
        pd_ = np.minimum(r.uniform(15, 100, len(pick)), P["d"] - 10)
        a0 = r.uniform(3, 30, len(pick))
        A = np.c_[a0, a0 + pw, a0 + pw, a0] + r.uniform(-_JITTER, _JITTER, (len(pick), 4))
        B = np.c_[np.full(len(pick), 3.0), np.full(len(pick), 3.0), 3 + pd_, 3 + pd_]
        owner = np.repeat(np.arange(len(pick)), 4)
        ind_geom = self._polygons(P, owner, A.ravel(), B.ravel()) if len(pick) else np.empty(0, dtype=object)
        has_user = r.random(len(pick)) < 0.8
        P.update({"pa0": a0, "pw": pw, "pd": pd_})
        self.df_ind = {"P": P, "geom": ind_geom, "has_user": has_user}

    # -- enterprises and their land --------------------------------------------------------------
    def _enterprises(self) -> None:
        r = self.r_ent
        n_lot = len(self.L["w"])
        gk = self.group_kind
        owner_groups = np.flatnonzero(np.isin(gk, ["self", "landlord"]))
        n_owner = len(owner_groups)
        n_df = int(self.df_ind["has_user"].sum())
        n_noland = int(round(0.03 * self.n_ent))
        n_ten = max(self.n_ent - n_owner - n_df - n_noland, 0)
        n_noland = self.n_ent - n_owner - n_df - n_ten  # absorbs any shortfall on tiny counties
        role = np.r_[np.full(n_owner, "owner", dtype=object), np.full(n_df, "defacto", dtype=object),
                     np.full(n_ten, "tenant", dtype=object), np.full(n_noland, "noland", dtype=object)]
        role[:n_owner][gk[owner_groups] == "landlord"] = "landlord"
        E = len(role)
        self.role = role
        # tenants: lot by floor area × kind factor, then a building by floor area
        factor = {"self": 0.35, "landlord": 12.0, "park": 25.0}
        f = np.array([factor.get(k, 0.0) for k in self.lot_kind]) * (self.lot_floor > 0)
        wgt = self.lot_floor * f
        counts = r.multinomial(n_ten, wgt / wgt.sum()) if n_ten and wgt.sum() > 0 else np.zeros(n_lot, int)
        ten_lot = np.repeat(np.arange(n_lot), counts)
        ten_bld = _pick_weighted(r, self.B["lot"], self.B["floor_area"], ten_lot) if n_ten else np.empty(0, int)
        # leased floor area: a share of the building's leasable part (the rest is the landlord's)
        leasable = np.array([{"self": 0.3, "landlord": 0.8, "park": 0.9}.get(k, 0.0) for k in self.lot_kind])
        share = _group_share(r, ten_bld) if n_ten else np.empty(0)
        ten_floor = np.round(leasable[ten_lot] * self.B["floor_area"][ten_bld] * share, 2)
        moved = r.random(n_ten) < 0.003  # lease ended, address unchanged: a 'remove' correction
        self.ten = {"lot": ten_lot, "bld": ten_bld, "floor": ten_floor, "moved": moved,
                    "recorded": r.random(n_ten) < 0.92}
        # 一企多地 for tenants: ~3 % also rent on the next parcel with buildings in the same zone
        nxt = _next_true(self.lot_floor > 0)
        cand = r.random(n_ten) < 0.03
        second = np.where(cand, nxt[np.minimum(ten_lot + 1, n_lot - 1)], -1)
        second[(second >= 0) & (self.L["zone"][np.maximum(second, 0)] != self.L["zone"][ten_lot])] = -1
        second[moved | (ten_lot + 1 >= n_lot)] = -1
        sec_bld = np.full(n_ten, -1)
        ok = second >= 0
        if ok.any():
            sec_bld[ok] = _pick_weighted(r, self.B["lot"], self.B["floor_area"], second[ok])
        self.ten.update({"second": second, "sec_bld": sec_bld,
                         "sec_floor": np.where(ok, np.round(self.B["floor_area"][np.maximum(sec_bld, 0)]
                                                            * r.uniform(0.02, 0.1, n_ten), 2), 0.0)})
        # a building is never leased beyond 97 % of its floor area, second leases included
        nb = len(self.B["floor_area"])
        total = np.bincount(ten_bld, weights=ten_floor, minlength=nb)
        total += np.bincount(sec_bld[ok], weights=self.ten["sec_floor"][ok], minlength=nb)
        scale = np.minimum(1.0, np.divide(0.97 * self.B["floor_area"], total, out=np.ones(nb), where=total > 0))
        ten_floor = self.ten["floor"] = np.floor(ten_floor * scale[ten_bld] * 100) / 100
        self.ten["sec_floor"] = np.where(ok, np.floor(self.ten["sec_floor"] * scale[np.maximum(sec_bld, 0)] * 100)
                                         / 100, 0.0)
        # land attributed to each occupant (split by leased floor area, 多企共地分割)
        leased = np.bincount(ten_lot[~moved], weights=ten_floor[~moved], minlength=n_lot)
        leased += np.bincount(second[ok], weights=self.ten["sec_floor"][ok], minlength=n_lot)
        frac = np.divide(leased, self.lot_floor, out=np.zeros(n_lot), where=self.lot_floor > 0)
        frac = np.minimum(frac, 0.97)
        self.ten_land = np.where(moved, 0.0, self.parcel_area[ten_lot] * np.divide(
            ten_floor, self.lot_floor[ten_lot], out=np.zeros(n_ten), where=self.lot_floor[ten_lot] > 0))
        self.sec_land = np.where(ok, self.parcel_area[np.maximum(second, 0)] * np.divide(
            self.ten["sec_floor"], self.lot_floor[np.maximum(second, 0)], out=np.zeros(n_ten),
            where=self.lot_floor[np.maximum(second, 0)] > 0), 0.0)
        self.owner_lot_land = self.parcel_area * (1 - frac)
        self.owner_groups = owner_groups
        self.n_owner, self.n_df, self.n_ten, self.n_noland = n_owner, n_df, n_ten, n_noland
        self.E = E

    # -- points --------------------------------------------------------------------------------
    def _placement(self) -> None:
        r, L, Bd = self.r_geo, self.L, self.B
        E = self.E
        x = np.full(E, np.nan)
        y = np.full(E, np.nan)
        placement = np.full(E, "none", dtype=object)
        home = np.full(E, -1)  # lot index where the point belongs
        zone = np.full(E, -1)
        # owners: in their first lot's first building, else anywhere safe in the lot
        o = np.arange(self.n_owner)
        o_lot = self.group_first[self.owner_groups]
        first_bld = np.full(len(L["w"]), -1)
        bl = Bd["lot"]
        first_bld[bl[::-1]] = np.arange(len(bl))[::-1]
        ob = first_bld[o_lot]
        a, b = self._in_lot(r, o_lot)
        hb = ob >= 0
        a[hb], b[hb] = _in_rect(r, Bd["a0"][ob[hb]], Bd["a1"][ob[hb]], Bd["b0"][ob[hb]], Bd["b1"][ob[hb]])
        x[o], y[o] = self._xy(L, o_lot, a, b)
        placement[o] = np.where(hb, "building", "parcel")
        home[o], zone[o] = o_lot, L["zone"][o_lot]
        # tenants: in their building
        t = self.n_owner + self.n_df + np.arange(self.n_ten)
        tb, tl = self.ten["bld"], self.ten["lot"]
        a, b = _in_rect(r, Bd["a0"][tb], Bd["a1"][tb], Bd["b0"][tb], Bd["b1"][tb])
        x[t], y[t] = self._xy(L, tl, a, b)
        placement[t] = "building"
        home[t], zone[t] = tl, L["zone"][tl]
        # geocoding noise: ~7 % of owners/tenants land in the road in front of their lot
        cand = np.r_[o, t]
        c_lot = home[cand]
        noisy = (r.random(len(cand)) < 0.07) & ~L["front_taken"][c_lot]
        ni, nl = cand[noisy], c_lot[noisy]
        a = L["w"][nl] * r.uniform(0.2, 0.8, len(nl))
        b = -r.uniform(2.0, L["road"][nl] / 2 - 1.0)
        x[ni], y[ni] = self._xy(L, nl, a, b)
        placement[ni] = "road"
        # de-facto users inside their piece
        P = self.df_ind["P"]
        d = self.n_owner + np.arange(self.n_df)
        k = np.flatnonzero(self.df_ind["has_user"])
        a, b = _in_rect(r, P["pa0"][k] + 1.5, P["pa0"][k] + P["pw"][k] - 1.5,
                        np.full(len(k), 4.5), 3 + P["pd"][k] - 1.5)
        x[d], y[d] = self._xy(P, k, a, b)  # same frame as the piece's vertices
        placement[d] = "defacto"
        zone[d] = P["zone"][k]
        # no land: half without coordinates, half with an address in town (far from the zones)
        nl_idx = self.n_owner + self.n_df + self.n_ten + np.arange(self.n_noland)
        far = r.random(self.n_noland) < 0.5
        fi = nl_idx[far]
        ang = r.uniform(0, 2 * np.pi, len(fi))
        rad = r.uniform(100, 1500, len(fi))
        x[fi] = self.origin[0] + rad * np.cos(ang)
        y[fi] = self.origin[1] + rad * np.sin(ang)
        placement[fi] = "far"
        # moved-out tenants keep their old address: a point in the building, but no land now
        self.x, self.y, self.placement, self.home, self.ent_zone = x, y, placement, home, zone

    def _in_lot(self, r, lots):
        L = self.L
        a = r.uniform(3.0, np.maximum(L["w"][lots] - 3.0, 3.1))
        b = r.uniform(3.0, np.maximum(L["b_max"][lots] - 1.5, 3.1))
        return a, b

    # -- attributes ----------------------------------------------------------------------------
    def _attributes(self) -> None:
        r = self.r_attr
        E, role = self.E, self.role
        # land attributed (truth) per enterprise
        land = np.zeros(E)
        o = np.arange(self.n_owner)
        grp_of_owner = np.full(int(self.group.max()) + 1, -1)
        grp_of_owner[self.owner_groups] = o
        lot_owner = grp_of_owner[self.group]  # enterprise index owning each lot, or -1
        usable = lot_owner >= 0
        land[:] = np.bincount(lot_owner[usable], weights=self.owner_lot_land[usable], minlength=E)[:E]
        att_lots = self.df_att["lot"]
        att_area = shapely.area(self.df_att["geom"]) if len(att_lots) else np.empty(0)
        land += np.bincount(lot_owner[att_lots], weights=att_area, minlength=E)[:E] if len(att_lots) else 0
        d0 = self.n_owner
        k = np.flatnonzero(self.df_ind["has_user"])
        ind_area = shapely.area(self.df_ind["geom"]) if len(self.df_ind["geom"]) else np.empty(0)
        land[d0:d0 + self.n_df] = ind_area[k]
        t0 = d0 + self.n_df
        land[t0:t0 + self.n_ten] = self.ten_land + self.sec_land
        self.land, self.lot_owner = land, lot_owner
        # scale: the top ~12.5 % by a score favouring owners with large land
        score = (np.select([role == "owner", role == "landlord", role == "tenant", role == "defacto"],
                           [2.2, 0.3, -0.6, -1.5], -1.0) + 0.45 * np.log1p(land / MU_M2)
                 + r.normal(0, 0.9, E))
        n_big = int(round(0.125 * E))
        big = np.zeros(E, bool)
        big[np.argsort(-score, kind="stable")[:n_big]] = True
        self.big = big
        div = r.choice(_DIV_CODES, E, p=_DIV_P)
        digits = r.choice([2, 3, 4], E, p=[0.3, 0.4, 0.3])
        g1, g2 = r.integers(1, 5, E), r.integers(1, 5, E)
        self.division = div
        self.industry = np.where(digits == 2, div.astype(str),
                                 np.where(digits == 3, np.char.add(div.astype(str), g1.astype(str)),
                                          np.char.add(np.char.add(div.astype(str), g1.astype(str)),
                                                      g2.astype(str)))).astype(object)
        taken: set[str] = set()
        self.uscc = _uscc_batch(r, self.code, E, taken=taken)
        self.names = self._names(r, E, div, role)
        # 成立日期: owners older, tenants younger; a few founded in the last two years (免评)
        last = max(self.years)
        lo = np.where(np.isin(role, ["owner", "landlord"]), 1990, 2000)
        fy = np.minimum(lo + np.floor(r.beta(2.0, 1.6, E) * (last + 1 - lo)).astype(int), last)
        fy[(role == "owner") | (role == "landlord")] = np.minimum(fy[(role == "owner") | (role == "landlord")], 2018)
        self.founded_year = fy
        self.founded = np.array([f"{y}-{m:02d}-{dd:02d}" for y, m, dd in
                                 zip(fy, r.integers(1, 13, E), r.integers(1, 29, E))], dtype=object)
        flags = np.full(E, None, dtype=object)
        flags[fy >= last - 1] = "免评"
        flags[(flags == None) & (r.random(E) < 0.01)] = "过渡期"  # noqa: E711 (elementwise)
        self.flags = flags
        # 镇街 and address
        town_idx = np.where(self.ent_zone >= 0, self.zone_town[np.maximum(self.ent_zone, 0)],
                            r.integers(0, len(self.towns), E))
        self.ent_town = self.towns[town_idx]
        road = np.where(self.ent_zone >= 0,
                        self.zone_roads[np.maximum(self.ent_zone, 0), r.integers(0, 2, E)],
                        np.array(["人民路", "解放路", "中山路", "府前街"], dtype=object)[r.integers(0, 4, E)])
        num = r.integers(1, 999, E)
        self.address = np.array([f"浙江省{self.name}{t}{rd}{k}号" for t, rd, k in
                                 zip(self.ent_town, road, num)], dtype=object)
        # coordinate systems as delivered: ~1/3 GCJ-02 (Amap), the rest CGCS2000 or WGS84
        u = r.random(E)
        self.coord_sys = np.where(u < 1 / 3, "gcj02", np.where(u < 0.55, "wgs84", "cgcs2000")).astype(object)

    def _names(self, r, E, div, role) -> np.ndarray:
        # one flat word table; each division's words are a slice of it
        table = np.array([w for d in _DIV_CODES for w in _DIVISIONS[d][1]], dtype=object)
        count = np.array([len(_DIVISIONS[d][1]) for d in _DIV_CODES])
        offset = dict(zip(_DIV_CODES.tolist(), (np.cumsum(count) - count).tolist()))
        cnt = dict(zip(_DIV_CODES.tolist(), count.tolist()))
        off = np.vectorize(offset.get)(div)
        k = np.vectorize(cnt.get)(div)
        words = table[off + np.floor(r.random(E) * k).astype(int)]
        b1 = r.integers(0, len(_BRAND), E)
        b2 = (b1 + r.integers(1, len(_BRAND), E)) % len(_BRAND)  # never the same character twice
        brand = np.char.add(np.asarray(_BRAND)[b1], np.asarray(_BRAND)[b2]).astype(object)
        pre = np.array(["浙江", self.short, ""], dtype=object)[r.choice(3, E, p=[0.3, 0.5, 0.2])]
        suf = np.asarray(_SUFFIX, dtype=object)[r.integers(0, len(_SUFFIX), E)]
        names = pre + brand + words + suf
        # unique names: redraw the brand of duplicates (a few rounds are enough)
        for _ in range(20):
            dup = pd.Series(names).duplicated().to_numpy()
            if not dup.any():
                break
            k = int(dup.sum())
            brand[dup] = (np.asarray(_BRAND)[r.integers(0, len(_BRAND), k)].astype(object)
                          + np.asarray(_BRAND)[r.integers(0, len(_BRAND), k)].astype(object)
                          + np.asarray(_BRAND)[r.integers(0, len(_BRAND), k)].astype(object))
            names = pre + brand + words + suf
        return names

    # -- metrics -------------------------------------------------------------------------------
    def _metrics(self) -> None:
        r = self.r_metric
        E, years = self.E, self.years
        big = self.big
        petro = (self.division >= 25) & (self.division <= 28)
        # smooth spatial field (a few bumps) + the old zone's low yield: the clustered low tail
        kb = 8
        bx = self.origin[0] + r.uniform(-1, 1, kb) * self.county_radius
        by = self.origin[1] + r.uniform(-1, 1, kb) * self.county_radius
        amp = r.normal(0, 0.35, kb)
        ell = r.uniform(1000, 3000, kb)
        xs = np.where(np.isnan(self.x), self.origin[0], self.x)
        ys = np.where(np.isnan(self.y), self.origin[1], self.y)
        field = (amp * np.exp(-((xs[:, None] - bx) ** 2 + (ys[:, None] - by) ** 2) / (2 * ell ** 2))).sum(1)
        old = self.ent_zone == 0
        field = field + np.where(old, -1.3, 0.0) + np.where(self.role == "landlord", -0.4, 0.0)
        mu = np.where(big, np.log(28.0), np.log(9.0))
        a_e = r.normal(0, 0.6, E)
        rho, su = 0.7, 0.45
        u = r.normal(0, su, E)
        land_mu = self.land / MU_M2
        has_land = land_mu > 0
        base_noland = np.where(big, np.log(150.0), np.log(8.0)) + r.normal(0, 1.0, E)
        tax_rate = np.exp(r.normal(np.log(0.045), 0.35, E))
        va_rate = np.exp(r.normal(np.log(0.22), 0.25, E))
        e_int = np.exp(r.normal(np.where(petro, np.log(1.5), np.log(4.5)), 0.6, E))
        m_int = np.exp(r.normal(np.where(petro, np.log(1800.0), np.log(3500.0)), 0.7, E))
        prod = np.exp(r.normal(np.log(25.0), 0.45, E))
        rd_share = np.where(big, np.exp(r.normal(np.log(0.025), 0.7, E)), np.exp(r.normal(np.log(0.012), 0.9, E)))
        rd_share[~big & (r.random(E) < 0.3)] = 0.0
        elec_share = r.uniform(0.5, 0.95, E)
        refund_prone = r.random(E) < np.where(big, 0.45, 0.2)
        # meters: each its own, but tenants of ~half the landlords share the landlord's meter
        meter = np.array([f"{self.code}{i:08d}" for i in range(E)], dtype=object)
        t0 = self.n_owner + self.n_df
        ten_lot = self.ten["lot"]
        landlord_of_lot = np.where(self.lot_kind == "landlord", self.lot_owner, -1)
        shared_lot = (landlord_of_lot >= 0) & (r.random(len(landlord_of_lot)) < 0.5)
        ts = np.flatnonzero(shared_lot[ten_lot] & ~self.ten["moved"])
        meter[t0 + ts] = meter[landlord_of_lot[ten_lot[ts]]]
        rows = []
        for yi, year in enumerate(years):
            if yi:
                u = rho * u + math.sqrt(1 - rho ** 2) * r.normal(0, su, E)
            y_mu = np.exp(mu + field + a_e + u + 0.03 * yi)
            gross = np.where(has_land, y_mu * land_mu, np.exp(base_noland + 0.5 * u))
            gross = np.maximum(gross, 0.01)
            refund = np.where(refund_prone & (r.random(E) < 0.8), gross * r.uniform(0.03, 0.35, E), 0.0)
            tax_paid = np.round(gross - refund, 2)
            refund = np.round(refund, 2)
            rev = gross / (tax_rate * np.exp(r.normal(0, 0.08, E)))
            rev = np.where(big, np.maximum(rev, 2000 * r.uniform(1.0, 1.6, E)), rev)  # 规上: ≥ 2000 万元
            output = rev * r.uniform(0.9, 1.1, E)
            va = output * va_rate * np.exp(r.normal(0, 0.05, E))
            energy = va / (e_int * np.exp(r.normal(0, 0.1, E)))
            emission = va / (m_int * np.exp(r.normal(0, 0.1, E)))
            emp = np.maximum(np.round(va / prod), 3)
            rd = rev * rd_share
            kwh = energy * 8137.0 * elec_share  # 1 万kWh ≈ 1.229 tce (equivalent value)
            frame = pd.DataFrame({
                "uscc": self.uscc, "year": year, "tax_paid": tax_paid, "tax_refund": refund,
                "value_added": np.round(va, 2), "revenue": np.round(rev, 2), "output_value": np.round(output, 2),
                "energy_tce": np.round(energy, 2), "emission_t": np.round(emission, 3),
                "rd_expense": np.round(rd, 2), "employees": emp, "electricity_kwh": np.round(kwh),
                "meter_id": meter,
            })
            # missing data as delivered: 5 % emission, 2 % energy, 3 % R&D; 规下 often only tax+power
            small = ~big
            for col, p_all, p_small in (("emission_t", 0.05, 0.5), ("energy_tce", 0.02, 0.4),
                                        ("rd_expense", 0.03, 0.4), ("value_added", 0.0, 0.3),
                                        ("employees", 0.01, 0.05)):
                miss = (r.random(E) < p_all) | (small & (r.random(E) < p_small))
                frame.loc[miss, col] = np.nan
            # a shared meter's reading is the meter total, repeated on every row that names it
            frame["electricity_kwh"] = frame.groupby("meter_id")["electricity_kwh"].transform("sum")
            frame = frame[self.founded_year <= year]
            rows.append(frame)
        self.metrics = pd.concat(rows, ignore_index=True)
        self.metrics["employees"] = self.metrics["employees"].astype("Int64")
        self.metrics["electricity_kwh"] = self.metrics["electricity_kwh"].astype("int64")

    # -- frames --------------------------------------------------------------------------------
    def _assemble(self) -> SyntheticCounty:
        r = self.r_own
        crs = self.epsg
        n = len(self.L["w"])
        # owners of lots: enterprise, land reserve (gov), park operator or an idle holder
        gk = self.group_kind
        n_groups = len(gk)
        g_uscc = np.full(n_groups, None, dtype=object)
        g_name = np.full(n_groups, None, dtype=object)
        og = self.owner_groups
        g_uscc[og] = self.uscc[: self.n_owner]
        g_name[og] = self.names[: self.n_owner]
        other = np.flatnonzero(np.isin(gk, ["park", "idle"]))
        taken = set(self.uscc)
        g_uscc[other] = _uscc_batch(r, self.code, len(other), taken=taken)
        brands = np.asarray(_BRAND)
        g_name[other] = [
            (f"{self.short}{brands[r.integers(len(brands))]}{brands[r.integers(len(brands))]}小微企业园开发有限公司"
             if gk[g] == "park" else
             f"{self.short}{brands[r.integers(len(brands))]}{brands[r.integers(len(brands))]}实业投资有限公司")
            for g in other
        ]
        reserve_uscc = _uscc_batch(r, self.code, 1, prefix="12", taken=taken)[0]
        gov = gk == "gov"
        g_uscc[gov] = reserve_uscc
        g_name[gov] = f"{self.name}土地储备中心"
        idle_gov = (gk == "idle") & (r.random(n_groups) < 0.4)
        g_uscc[idle_gov] = reserve_uscc
        g_name[idle_gov] = f"{self.name}土地储备中心"
        owner_uscc = g_uscc[self.group]
        owner_name = g_name[self.group]
        reg = self.registered
        town = self.towns[self.zone_town[self.L["zone"]]]
        parcels = gpd.GeoDataFrame({
            "parcel_code": self.parcel_code,
            "owner_uscc": np.where(reg, owner_uscc, None),
            "owner_name": np.where(reg, owner_name, None),
            "land_use": "工业用地",
            # 登记面积 differs a little from the drawn geometry, as surveyed areas do
            "registered_area_m2": np.where(reg, np.round(self.parcel_area * r.uniform(0.995, 1.005, n), 2), np.nan),
            "township": town,
            "registered": reg,
            "zone": self.L["zone"],
            "use_kind": np.where(self.leftover & (self.lot_kind != "gov"), "leftover", self.lot_kind),
            "old_zone": self.old_lot,
        }, geometry=self.parcel_geom, crs=crs)
        Bd = self.B
        code_of = self.parcel_code
        buildings = gpd.GeoDataFrame({
            "building_id": [f"{c}F{j + 1:04d}0000" for c, j in zip(code_of[Bd["lot"]], Bd["j"])],
            "floors": Bd["floors"].astype("int32"),
            "floor_area_m2": Bd["floor_area"],
            "parcel_code": code_of[Bd["lot"]],
        }, geometry=Bd["geom"], crs=crs)
        # 事实用地
        att_lots = self.df_att["lot"]
        att_user = self.uscc[np.maximum(self.lot_owner[att_lots], 0)] if len(att_lots) else np.empty(0, object)
        k_user = self.df_ind["has_user"]
        ind_user = np.full(len(k_user), None, dtype=object)
        ind_user[k_user] = self.uscc[self.n_owner: self.n_owner + self.n_df]
        notes = np.asarray(_DEFACTO_NOTES, dtype=object)
        n_att, n_ind = len(att_lots), len(k_user)
        df_ids = np.array([f"SS{self.code}{i + 1:05d}" for i in range(n_att + n_ind)], dtype=object)
        defacto = gpd.GeoDataFrame({
            "user_uscc": np.r_[att_user, ind_user],
            "note": notes[r.integers(0, len(notes), n_att + n_ind)],
            "defacto_id": df_ids,
            "attached_to": np.r_[code_of[att_lots] if n_att else np.empty(0, object), np.full(n_ind, None, dtype=object)],
        }, geometry=np.r_[self.df_att["geom"], self.df_ind["geom"]], crs=crs)
        # enterprise points → CGCS2000 lon/lat → as delivered (GCJ-02 for Amap-geocoded rows)
        lon, lat = self.to_geo.transform(self.x, self.y)
        cs = self.coord_sys.copy()
        g = cs == "gcj02"
        lon = np.asarray(lon, dtype=float).copy()
        lat = np.asarray(lat, dtype=float).copy()
        lon[g], lat[g] = from_cgcs2000(lon[g], lat[g], "gcj02")
        none = self.placement == "none"
        cs[none] = None
        E = self.E
        home_code = np.where(self.home >= 0, code_of[np.maximum(self.home, 0)], None)
        t0 = self.n_owner + self.n_df
        moved = np.zeros(E, bool)
        moved[t0: t0 + self.n_ten] = self.ten["moved"]
        enterprises = pd.DataFrame({
            "uscc": self.uscc, "name": self.names,
            "lon": np.round(lon, 7), "lat": np.round(lat, 7), "coord_sys": cs,
            "industry_code": self.industry, "scale": np.where(self.big, "规上", "规下"),
            "township": self.ent_town, "address": self.address, "founded": self.founded,
            "flags": self.flags,
            # ground truth
            "role": np.where(moved, "moved", self.role), "land_m2": np.round(self.land, 2),
            "home_parcel": home_code, "placement": self.placement,
            "x": self.x, "y": self.y, "zone": self.ent_zone, "old_zone": self.ent_zone == 0,
        })
        leases, corrections, truth = self._links(r, code_of, owner_uscc, df_ids, n_att)
        truth_cols = {
            "parcels": ("zone", "use_kind", "old_zone"),
            "buildings": (),
            "defacto": ("defacto_id", "attached_to"),
            "enterprises": ("role", "land_m2", "home_parcel", "placement", "x", "y", "zone", "old_zone"),
        }
        return SyntheticCounty(self.index, self.code, self.name, crs, parcels, buildings, defacto,
                               enterprises, self.metrics, leases, corrections, truth, truth_cols)

    def _links(self, r, code_of, owner_uscc, df_ids, n_att):
        t0 = self.n_owner + self.n_df
        T = self.ten
        ten_uscc = self.uscc[t0: t0 + self.n_ten]
        last = max(self.years)
        start_y = np.maximum(self.founded_year[t0: t0 + self.n_ten], last - 9)
        start = np.array([f"{y}-{m:02d}-01" for y, m in zip(start_y, r.integers(1, 13, self.n_ten))], dtype=object)
        end_y = np.where(T["moved"], last - 1, last + r.integers(1, 6, self.n_ten))
        end = np.array([f"{y}-{m:02d}-{'30' if m in (4, 6, 9, 11) else '28' if m == 2 else '31'}"
                        for y, m in zip(end_y, r.integers(1, 13, self.n_ten))], dtype=object)
        rec = T["recorded"]
        sec = T["second"] >= 0
        leases = pd.DataFrame({
            "tenant_uscc": np.r_[ten_uscc[rec], ten_uscc[sec]],
            "parcel_code": np.r_[code_of[T["lot"][rec]], code_of[T["second"][sec]]],
            "landlord_uscc": np.r_[owner_uscc[T["lot"][rec]], owner_uscc[T["second"][sec]]],
            "floor_area_m2": np.r_[T["floor"][rec], T["sec_floor"][sec]],
            "start_date": np.r_[start[rec], start[sec]],
            "end_date": np.r_[end[rec], end[sec]],
        })
        # truth links
        lot_owner = self.lot_owner
        lots = np.flatnonzero(lot_owner >= 0)
        att_lots = self.df_att["lot"]
        att_area = shapely.area(self.df_att["geom"]) if n_att else np.empty(0)
        k = np.flatnonzero(self.df_ind["has_user"])
        ind_area = shapely.area(self.df_ind["geom"]) if len(self.df_ind["geom"]) else np.empty(0)
        active = ~T["moved"]
        truth = pd.DataFrame({
            "uscc": np.r_[self.uscc[lot_owner[lots]], self.uscc[lot_owner[att_lots]] if n_att else [],
                          self.uscc[self.n_owner: t0], ten_uscc[active], ten_uscc[sec]],
            "parcel_code": np.r_[code_of[lots], np.full(n_att, None, object), np.full(self.n_df, None, object),
                                 code_of[T["lot"][active]], code_of[T["second"][sec]]],
            "defacto_id": np.r_[np.full(len(lots), None, object), df_ids[:n_att], df_ids[n_att + k],
                                np.full(int(active.sum()) + int(sec.sum()), None, object)],
            "role": np.r_[np.where(self.lot_kind[lots] == "landlord", "landlord", "owner"),
                          np.full(n_att, "defacto_attached", object), np.full(self.n_df, "defacto", object),
                          np.full(int(active.sum()) + int(sec.sum()), "tenant", object)],
            "floor_area_m2": np.r_[np.full(len(lots), np.nan), np.full(n_att + self.n_df, np.nan),
                                   T["floor"][active], T["sec_floor"][sec]],
            "land_m2": np.r_[self.owner_lot_land[lots], att_area, ind_area[k], self.ten_land[active],
                             self.sec_land[sec]],
            "lease_recorded": np.r_[np.zeros(len(lots) + n_att + self.n_df, bool), rec[active],
                                    np.ones(int(sec.sum()), bool)],
        })
        # 纠偏: add for road-noise points and unrecorded leases, remove for moved-out tenants
        ops = np.asarray(_OPERATORS, dtype=object)
        noisy = np.flatnonzero((self.placement == "road") & (r.random(self.E) < 0.08))
        unrec = np.flatnonzero(~rec & active & (r.random(self.n_ten) < 0.1))
        moved = np.flatnonzero(T["moved"])
        uscc = np.r_[self.uscc[noisy], ten_uscc[unrec], ten_uscc[moved]]
        corrections = pd.DataFrame({
            "uscc": uscc,
            "parcel_code": np.r_[code_of[self.home[noisy]], code_of[T["lot"][unrec]], code_of[T["lot"][moved]]],
            "action": np.r_[np.full(len(noisy) + len(unrec), "add", object), np.full(len(moved), "remove", object)],
            "share": np.nan,
            "reason": np.r_[np.full(len(noisy), "地址解析偏差，现场核实", object),
                            np.full(len(unrec), "租赁合同未备案，现场核实", object),
                            np.full(len(moved), "已搬离，租赁到期", object)],
            "by": ops[r.integers(0, len(ops), len(uscc))],
        })
        return leases, corrections, truth


# ---------------------------------------------------------------------------------------------
# Layout helpers


def _county_centre(index: int) -> tuple[float, float]:
    """Centre (lon, lat) of county *index*: one cell of a 0.3° × 0.27° lattice each (a county
    of 2,000 parcels spans about 0.27° × 0.28°, so counties lie side by side, never on top of
    each other, as the counties of a real province do).

    County 0 is the sample county; 1–240 fill Zhejiang nearest the sample first; further ones
    (a multi-province run) continue on the same lattice outside Zhejiang, nearest first.
    """
    if index == 0:
        return SAMPLE_CENTRE
    cells = _lattice()
    if index - 1 >= len(cells):
        raise ValueError(f"at most {len(cells)} county chunks")
    lon, lat = cells[index - 1]
    return float(lon), float(lat)


@functools.lru_cache(maxsize=1)
def _lattice() -> np.ndarray:
    def nearest_first(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        cells = np.c_[lon.ravel(), lat.ravel()]
        d = np.hypot(cells[:, 0] - SAMPLE_CENTRE[0], cells[:, 1] - SAMPLE_CENTRE[1])
        return cells[np.argsort(d, kind="stable")]

    # Zhejiang: lon 118.2-122.7, lat 27.2-30.98 (16 x 15 cells), exactly as the first build placed them
    inner = nearest_first(*np.meshgrid(np.arange(118.2, 122.95, 0.3), np.arange(27.2, 31.15, 0.27)))
    k, m = np.meshgrid(np.arange(-45, 61), np.arange(-45, 60))
    outside = ~((k >= 0) & (k < 16) & (m >= 0) & (m < 15))
    return np.vstack([inner, nearest_first(118.2 + 0.3 * k[outside], 27.2 + 0.27 * m[outside])])


def _next_true(mask: np.ndarray) -> np.ndarray:
    """For each position, the first index >= it where ``mask`` is True (or -1)."""
    n = len(mask)
    idx = np.where(mask, np.arange(n), n)
    nxt = np.minimum.accumulate(idx[::-1])[::-1]
    return np.where(nxt == n, -1, nxt)


def _in_rect(r, a0, a1, b0, b1, margin: float = 1.0):
    a = r.uniform(a0 + margin, np.maximum(a1 - margin, a0 + margin + 1e-6))
    b = r.uniform(b0 + margin, np.maximum(b1 - margin, b0 + margin + 1e-6))
    return a, b


def _zone_lots(r: np.random.Generator, quota: int, old: bool) -> dict:
    """Blocks between roads, split into lots along each block's road front, nearest blocks first.

    Returns ``lots`` (zone-local frame parameters per lot) and ``unused`` (vacant blocks, where
    independent 事实用地 goes), plus the zone's radius.
    """
    med_area = 3500.0 if old else 9000.0
    n = int(math.ceil(math.sqrt(quota / (9.0 if old else 4.0)))) + 2
    while True:
        W = r.uniform(150, 380 if old else 640, n)
        D = r.uniform(110, 240 if old else 380, n)
        gx = r.choice(_ROAD_WIDTHS, n - 1) + r.uniform(-1, 1, n - 1)
        gy = r.choice(_ROAD_WIDTHS, n - 1) + r.uniform(-1, 1, n - 1)
        xs = np.r_[0.0, np.cumsum(W[:-1] + gx)]
        ys = np.r_[0.0, np.cumsum(D[:-1] + gy)]
        xs -= (xs[-1] + W[-1]) / 2
        ys -= (ys[-1] + D[-1]) / 2
        radius = math.hypot(xs[-1] + W[-1], ys[-1] + D[-1])  # half-diagonal of the grid
        bi, bj = (m.ravel() for m in np.meshgrid(np.arange(n), np.arange(n)))
        bx0, by0, bw, bd = xs[bi], ys[bj], W[bi], D[bj]
        below = np.where(bj > 0, np.r_[_OUTER_ROAD, gy][bj], _OUTER_ROAD)
        above = np.where(bj < n - 1, np.r_[gy, _OUTER_ROAD][bj], _OUTER_ROAD)
        nb = n * n
        dist = np.hypot(bx0 + bw / 2, by0 + bd / 2) + r.normal(0, 120, nb)
        rank = np.empty(nb, int)
        rank[np.argsort(dist, kind="stable")] = np.arange(nb)
        u = r.random(nb)
        single = u < (0.02 if old else 0.08)  # one plant on a whole block: up to ~350 亩
        two = ~single & (u < 0.6)
        split = r.uniform(0.42, 0.58, nb)
        # strips: lower (road below) for every block, upper (road above) for two-row blocks
        s_blk = np.r_[np.arange(nb), np.flatnonzero(two)]
        upper = np.r_[np.zeros(nb, bool), np.ones(int(two.sum()), bool)]
        depth = np.where(upper, bd[s_blk] * (1 - split[s_blk]),
                         np.where(two[s_blk], bd[s_blk] * split[s_blk], bd[s_blk]))
        y_road = np.where(upper, by0[s_blk] + bd[s_blk], by0[s_blk])
        v = np.where(upper, -1.0, 1.0)
        road = np.where(upper, above[s_blk], below[s_blk])
        Ls = bw[s_blk]
        S = len(s_blk)
        lo = ~single[s_blk] & (r.random(S) < (0.14 if old else 0.10))
        lw = r.uniform(10, 24, S)
        ld = np.minimum(r.uniform(250, 640, S) / lw, depth - 2)
        leff = Ls - np.where(lo, lw, 0.0)
        K = 64
        # lot frontage from a lognormal area; at most 4:1 deep (narrower lots are not sold as plants)
        min_w = np.maximum(20.0 if old else 25.0, depth / 4.0)[:, None]
        widths = np.maximum(r.lognormal(np.log(med_area), 0.85, (S, K)) / depth[:, None], min_w)
        widths[single[s_blk], 0] = leff[single[s_blk]]
        ends = np.cumsum(widths, axis=1)
        starts = ends - widths
        valid = starts < leff[:, None] - 1e-9
        ends = np.minimum(ends, leff[:, None])
        last = valid.sum(axis=1) - 1
        rows = np.arange(S)
        tiny = (ends[rows, last] - starts[rows, last] < 0.5 * min_w[:, 0]) & (last > 0)
        valid[rows[tiny], last[tiny]] = False
        ends[rows[tiny], last[tiny] - 1] = leff[tiny]
        si, ki = np.nonzero(valid)
        a0 = np.r_[starts[si, ki], leff[lo]]
        w = np.r_[ends[si, ki] - starts[si, ki], lw[lo]]
        lot_strip = np.r_[si, rows[lo]]
        d = np.r_[depth[si], ld[lo]]
        leftover = np.r_[np.zeros(len(si), bool), np.ones(int(lo.sum()), bool)]
        blk = s_blk[lot_strip]
        order = np.lexsort((a0, upper[lot_strip], rank[blk]))
        if len(order) >= quota:
            break
        n += 2
    order = order[:quota]
    used_blocks = np.zeros(nb, bool)
    used_blocks[blk[order]] = True
    ub = np.flatnonzero(~used_blocks & (rank > rank[blk[order]].max()))
    # keep strip ids in the selection order so neighbours along a row are consecutive
    lots = {
        "bx0": bx0[blk[order]], "a0": a0[order], "w": w[order], "d": d[order],
        "y_road": y_road[lot_strip[order]], "v": v[lot_strip[order]], "road": road[lot_strip[order]],
        "strip": lot_strip[order], "leftover": leftover[order], "block": blk[order],
    }
    unused = {"bx0": bx0[ub], "w": bw[ub], "d": bd[ub], "y_road": by0[ub], "v": np.ones(len(ub)),
              "road": below[ub]}
    return {"lots": lots, "unused": unused, "radius": radius}
