"""The alias table: canonical columns of an import bundle and every header accepted for them.

One table drives the reader (:mod:`spatial.io`), the validator, the import templates under
``data/templates/`` and ``data/README.md``. A county's file may label a column

* with the canonical English name (``parcel_code``) or a common English variant (``parcel_id``);
* with the Chinese header of the templates (``宗地代码``) or a synonym (``地块编号``);
* with the pinyin initials of cadastral databases (``ZDDM`` 宗地代码, ``QLRMC`` 权利人名称 …);
* with a Chinese name cut to 10 bytes by the Shapefile format (5 GBK characters: ``权利人统一``
  for 权利人统一社会信用代码) or abbreviated (``权利人代码``).

Headers are compared after :func:`normalize_header` (NFKC, so full-width letters and brackets
become ASCII; case folded; spaces, ``*`` required-marks and a trailing unit in brackets such as
``(万元)`` removed). A header that matches no alias but is a 10-byte prefix of exactly one
Chinese name or alias of the role is accepted too: that is what a Shapefile writer produces.

Example
-------
>>> match_columns("parcels", ["ZDDM", "权利人统一", "登记面积(m²)", "备注"])[0]
{'ZDDM': 'parcel_code', '权利人统一': 'owner_uscc', '登记面积(m²)': 'registered_area_m2'}
>>> CHINESE_HEADERS["parcels"]["parcel_code"]
'宗地代码'
>>> SHAPEFILE_FIELDS["parcels"]["owner_uscc"]
'权利人统一'
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: Roles of a bundle, in reading order (enterprises before metrics so references can be checked).
ROLES = ("parcels", "buildings", "defacto", "enterprises", "metrics", "leases", "corrections")

#: Roles that are layers (geometry) and roles that are tables.
LAYER_ROLES = ("parcels", "buildings", "defacto")
TABLE_ROLES = ("metrics", "leases", "corrections")

#: A bundle without these files is refused.
REQUIRED_ROLES = ("parcels", "enterprises")

#: Chinese name of each role (宗地, 建筑 …), used in messages and docs.
ROLE_NAMES = {
    "parcels": "宗地", "buildings": "建筑", "defacto": "事实用地", "enterprises": "企业",
    "metrics": "指标", "leases": "租赁", "corrections": "纠偏",
}


@dataclass(frozen=True)
class Column:
    """One canonical column of a role.

    ``dtype`` is one of ``str``, ``float``, ``int``, ``date``, ``bool``. ``nonneg`` marks money,
    energy, areas and counts, which must be ≥ 0. ``shp`` is the ≤ 10-byte GBK field name used
    when writing a Shapefile (defaults to ``zh`` cut to 10 bytes).
    """

    name: str
    zh: str
    dtype: str = "str"
    required: bool = False
    nonneg: bool = False
    unit: str = ""
    aliases: tuple[str, ...] = ()
    shp: str | None = None
    example: object = None
    doc: str = ""

    @property
    def shapefile_field(self) -> str:
        return self.shp or gbk_truncate(self.zh, 10)


def gbk_truncate(text: str, nbytes: int = 10) -> str:
    """Cut ``text`` to at most ``nbytes`` GBK bytes without splitting a character (DBF field names)."""
    out = ""
    for ch in text:
        if len((out + ch).encode("gbk", errors="replace")) > nbytes:
            break
        out += ch
    return out


_USCC_ALIASES = ("统一社会信用代码", "社会信用代码", "信用代码", "统一代码", "USCC", "credit_code",
                 "social_credit_code", "TYSHXYDM", "统一社会信")
# Example identifiers for the templates: valid GB 32100 / GB/T 37346 codes.
_EX_USCC = "91330110MA27Y8XK1P"
_EX_USCC2 = "91330110MA2H0F5N8C"
_EX_PARCEL = "330110001001GB00001"

COLUMNS: dict[str, tuple[Column, ...]] = {
    "parcels": (
        Column("parcel_code", "宗地代码", required=True, example=_EX_PARCEL,
               aliases=("ZDDM", "宗地编号", "地块编号", "地块代码", "宗地号", "parcel_id", "parcel_no",
                        "code", "宗地编码"),
               doc="GB/T 37346 宗地代码 (19) or 不动产单元代码 (28)"),
        Column("unit_code", "不动产单元号", example=_EX_PARCEL + "W00000000",
               aliases=("BDCDYH", "不动产单元代码", "不动产单元编号", "单元号", "unit_no"),
               doc="28-character 不动产单元代码; when no 宗地代码 column exists its first 19 characters are used"),
        Column("owner_uscc", "权利人统一社会信用代码", example=_EX_USCC,
               aliases=("权利人代码", "权利人统一", "权利人信用代码", "权利人证件号", "权利人证件号码", "QLRZJH",
                        "QLRDM", "owner_code", "owner_id"),
               doc="USCC of the land-use right holder; need not appear in enterprises"),
        Column("owner_name", "权利人", example="杭州示例机械有限公司",
               aliases=("QLRMC", "权利人名称", "权利人姓名", "土地使用者", "使用权人", "owner")),
        Column("land_use", "用途", example="工业用地",
               aliases=("TDYT", "土地用途", "地类", "地类名称", "用地性质", "DLMC", "use", "landuse")),
        Column("registered_area_m2", "登记面积", "float", nonneg=True, unit="m²", example=13333.3,
               aliases=("ZDMJ", "宗地面积", "土地面积", "登记面积m2", "面积", "area_m2", "area",
                        "registered_area")),
        Column("township", "镇街", example="示例街道",
               aliases=("乡镇", "镇街道", "乡镇街道", "所属镇街", "街道", "XZMC", "town")),
        Column("registered", "是否登记", "bool", example="是", aliases=("已登记", "登记状态", "is_registered")),
        Column("location", "坐落", example="示例路1号", aliases=("ZL", "地址", "土地坐落", "address")),
    ),
    "buildings": (
        Column("building_id", "建筑编号", required=True, example="B0001",
               aliases=("建筑物编号", "幢号", "自然幢号", "ZRZH", "ZH", "楼栋编号", "bldg_id", "id")),
        Column("floors", "层数", "int", nonneg=True, example=3,
               aliases=("CS", "总层数", "ZCS", "楼层数", "levels", "building_levels")),
        Column("floor_area_m2", "建筑面积", "float", nonneg=True, unit="m²", example=9000.0,
               aliases=("JZMJ", "总建筑面积", "floor_area", "gfa")),
        Column("parcel_code", "宗地代码", example=_EX_PARCEL, aliases=("ZDDM", "所在宗地", "宗地编号")),
    ),
    "defacto": (
        Column("user_uscc", "使用企业统一社会信用代码", example=_EX_USCC,
               aliases=("使用企业代码", "使用企业统", "使用单位代码", "使用者代码", "企业代码", "user_code",
                        "uscc")),
        Column("note", "备注", example="围墙外堆场", aliases=("说明", "BZ", "remark", "remarks")),
    ),
    "enterprises": (
        Column("uscc", "统一社会信用代码", required=True, example=_EX_USCC, aliases=_USCC_ALIASES),
        Column("name", "企业名称", required=True, example="杭州示例机械有限公司",
               aliases=("名称", "单位名称", "企业名", "公司名称", "纳税人名称", "QYMC", "enterprise_name",
                        "company", "company_name")),
        Column("lon", "经度", "float", required=True, unit="°", example=120.0012,
               aliases=("X", "lng", "long", "longitude", "经度坐标", "JD")),
        Column("lat", "纬度", "float", required=True, unit="°", example=30.2751,
               aliases=("Y", "latitude", "纬度坐标", "WD")),
        Column("coord_sys", "坐标系", example="gcj02", aliases=("坐标系统", "坐标类型", "crs", "coord_type")),
        Column("industry_code", "行业代码", example="3484",
               aliases=("国民经济行业代码", "行业分类代码", "所属行业代码", "HYDM", "industry", "nace")),
        Column("scale", "规模", example="规上", aliases=("企业规模", "规模类型", "是否规上", "size_class")),
        Column("township", "镇街", example="示例街道", aliases=("乡镇", "镇街道", "乡镇街道", "所属镇街", "街道", "town")),
        Column("address", "地址", example="示例路1号", aliases=("注册地址", "生产经营地址", "经营地址", "企业地址", "DZ")),
        Column("founded", "成立日期", "date", example="2015-06-01",
               aliases=("成立时间", "注册日期", "成立年月", "founded_date", "established")),
        Column("flags", "标记", example="", aliases=("标志", "备注标记", "特殊标记", "tags")),
    ),
    "metrics": (
        Column("uscc", "统一社会信用代码", required=True, example=_EX_USCC, aliases=_USCC_ALIASES),
        Column("year", "年度", "int", required=True, example=2024, aliases=("年份", "评价年度", "统计年度", "ND")),
        Column("tax_paid", "实缴税金", "float", nonneg=True, unit="万元", example=512.3,
               aliases=("实缴税收", "税收", "实缴税额", "纳税额", "税收总额", "tax")),
        Column("tax_refund", "税收还原额", "float", nonneg=True, unit="万元", example=40.0,
               aliases=("税收还原", "还原税额", "留抵退税", "退税额", "refund")),
        Column("value_added", "工业增加值", "float", nonneg=True, unit="万元", example=2300.0,
               aliases=("增加值", "va")),
        Column("revenue", "营业收入", "float", nonneg=True, unit="万元", example=9800.0,
               aliases=("销售收入", "主营业务收入", "营收", "sales")),
        Column("output_value", "工业总产值", "float", nonneg=True, unit="万元", example=10200.0,
               aliases=("总产值", "产值", "output")),
        Column("energy_tce", "综合能耗", "float", nonneg=True, unit="吨标煤", example=820.0,
               aliases=("能耗", "综合能源消费量", "energy", "tce")),
        Column("emission_t", "排放当量", "float", nonneg=True, unit="吨", example=3.2,
               aliases=("污染物排放当量", "主要污染物排放当量", "排放量", "emission")),
        Column("rd_expense", "研发经费", "float", nonneg=True, unit="万元", example=310.0,
               aliases=("研发费用", "R&D经费", "研发经费支出", "rd", "r_and_d")),
        Column("employees", "从业人员", "int", nonneg=True, unit="人", example=120,
               aliases=("从业人员数", "年平均从业人员", "职工人数", "员工人数", "staff")),
        Column("electricity_kwh", "用电量", "float", nonneg=True, unit="kWh", example=1_500_000.0,
               aliases=("年用电量", "用电", "electricity", "kwh")),
        Column("meter_id", "电表户号", example="3301000012345", aliases=("电力户号", "用电户号", "户号", "meter")),
    ),
    "leases": (
        Column("tenant_uscc", "承租企业统一社会信用代码", required=True, example=_EX_USCC2,
               aliases=("承租企业代码", "承租方代码", "承租企业统", "承租方统一社会信用代码", "承租人代码", "tenant")),
        Column("parcel_code", "宗地代码", example=_EX_PARCEL, aliases=("ZDDM", "宗地编号", "地块编号")),
        Column("landlord_uscc", "出租企业统一社会信用代码", example=_EX_USCC,
               aliases=("出租企业代码", "出租方代码", "出租企业统", "出租方统一社会信用代码", "出租人代码", "landlord")),
        Column("floor_area_m2", "租赁面积", "float", nonneg=True, unit="m²", example=1200.0,
               aliases=("租赁建筑面积", "承租面积", "floor_area")),
        Column("land_area_m2", "租赁土地面积", "float", nonneg=True, unit="m²", example=0.0,
               aliases=("租赁用地面积", "land_area")),
        Column("start_date", "起租日期", "date", example="2023-01-01", aliases=("租赁开始日期", "开始日期", "start")),
        Column("end_date", "到期日期", "date", example="2027-12-31", aliases=("租赁结束日期", "结束日期", "end")),
    ),
    "corrections": (
        Column("uscc", "统一社会信用代码", required=True, example=_EX_USCC2, aliases=_USCC_ALIASES),
        Column("parcel_code", "宗地代码", required=True, example=_EX_PARCEL, aliases=("ZDDM", "宗地编号", "地块编号")),
        Column("action", "操作", required=True, example="add", aliases=("动作", "纠偏操作", "类型")),
        Column("share", "面积占比", "float", nonneg=True, example=0.25, aliases=("占比", "比例", "分摊比例")),
        Column("reason", "原因", example="现场核实承租", aliases=("纠偏原因", "说明")),
        Column("by", "操作人", example="张三", aliases=("经办人", "核实人", "operator")),
    ),
}

# leases need one of these columns besides tenant_uscc.
ONE_OF_REQUIRED = {"leases": ("parcel_code", "landlord_uscc")}

#: canonical → Chinese header (what the templates show), per role.
CHINESE_HEADERS: dict[str, dict[str, str]] = {r: {c.name: c.zh for c in cols} for r, cols in COLUMNS.items()}
#: canonical → ≤ 10-byte GBK field name for writing Shapefiles, per role.
SHAPEFILE_FIELDS: dict[str, dict[str, str]] = {
    r: {c.name: c.shapefile_field for c in cols} for r, cols in COLUMNS.items()
}
#: canonical → dtype per role.
DTYPES: dict[str, dict[str, str]] = {r: {c.name: c.dtype for c in cols} for r, cols in COLUMNS.items()}
#: canonical column names that must be present in the file, per role.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    r: tuple(c.name for c in cols if c.required) for r, cols in COLUMNS.items()
}
#: money / energy / area / count columns that must be ≥ 0.
NONNEGATIVE: dict[str, tuple[str, ...]] = {r: tuple(c.name for c in cols if c.nonneg) for r, cols in COLUMNS.items()}

#: Plausible upper bound of every numeric column, in the column's unit (one table for all roles).
#: A value above it is almost always a unit mistake (元 in a 万元 column, m² in 亩) or an Excel
#: overflow (``1e400`` → Infinity, ``1.7e308``), and one such value moves the ranks of everyone
#: else; such a cell is an error (row rejected, message states the bound). Non-finite values are
#: always errors. Bounds are generous: the largest single plants in China stay well below them.
PLAUSIBLE_MAX: dict[str, float] = {
    "registered_area_m2": 1e8,      # m²: 100 km² (15 万亩) for one 宗地
    "floors": 200,                  # 层
    "floor_area_m2": 1e7,           # m²
    "land_area_m2": 1e8,            # m²
    "year": 9999,                   # 年 (the validator checks the real range)
    "tax_paid": 1e7,                # 万元 (1000 亿元)
    "tax_refund": 1e7,              # 万元
    "value_added": 1e8,             # 万元 (1 万亿元)
    "revenue": 1e8,                 # 万元
    "output_value": 1e8,            # 万元
    "energy_tce": 1e8,              # 吨标煤
    "emission_t": 1e7,              # 吨
    "rd_expense": 1e7,              # 万元
    "employees": 1e6,               # 人
    "electricity_kwh": 1e11,        # kWh (1000 亿 kWh)
    # share (0–1) and lon/lat (±180/±90) are checked by the validator and the reader with their
    # own messages; non-finite values there are errors too.
}

#: Longest text accepted in a cell, in characters (a 4,000-character 镇街 is a paste mistake).
#: Columns not listed use ``default``; columns a county adds beyond the contract use ``extra``.
MAX_TEXT_LENGTH: dict[str, int] = {
    "default": 100,
    "name": 200, "owner_name": 200, "address": 500, "location": 500,
    "note": 1000, "reason": 1000, "flags": 200, "by": 100,
    "extra": 2000,
}

#: Columns added by the reader itself (never matched from a file).
META_COLUMNS = ("_file", "_row")
#: Prefix of columns kept from a file that match nothing in the table.
EXTRA_PREFIX = "x_"

_UNIT_SUFFIX = re.compile(r"[(\[（【][^)\]）】]*[)\]）】]$")


def normalize_header(text: object) -> str:
    """Comparable form of a header: NFKC, case-folded, no spaces/``*``/newlines, no trailing ``(unit)``."""
    s = unicodedata.normalize("NFKC", str(text)).strip()
    # BOMs and zero-width / direction marks pasted into headers are invisible to a person
    s = re.sub("[\ufeff\u200b-\u200f\u202a-\u202e\u2060]", "", s)
    s = s.replace("*", "").replace("＊", "")
    s = re.sub(r"\s+", "", s)
    # A unit in brackets after the name: 登记面积(m²), 实缴税金（万元）. Only strip when a name remains.
    stripped = _UNIT_SUFFIX.sub("", s)
    if stripped:
        s = stripped
    return s.casefold()


def _alias_index(role: str) -> dict[str, str]:
    index: dict[str, str] = {}
    for col in COLUMNS[role]:
        # The canonical and Chinese names win over aliases of other columns.
        for name in (col.name, col.zh, col.shapefile_field, *col.aliases):
            index.setdefault(normalize_header(name), col.name)
    for col in COLUMNS[role]:
        index[normalize_header(col.name)] = col.name
        index[normalize_header(col.zh)] = col.name
    return index


ALIASES: dict[str, dict[str, str]] = {r: _alias_index(r) for r in COLUMNS}


def _truncated_match(role: str, header: str) -> str | None:
    """A header cut to 10 bytes by a Shapefile writer: a unique prefix of a longer name."""
    raw = unicodedata.normalize("NFKC", str(header)).strip()
    # Only names that fill (nearly) the 10-byte DBF limit can have been cut: a short header that
    # happens to be a prefix (``权利``) is not accepted. GBK names are cut at 9–10 bytes; UTF-8 ones
    # lose up to 2 more bytes with the cut character (``登记面`` is 9 bytes of 登记面积).
    if len(raw.encode("gbk", errors="replace")) < 9 and len(raw.encode("utf-8")) < 8:
        return None
    key = raw.casefold()
    hits = {canon for alias, canon in ALIASES[role].items() if len(alias) > len(key) and alias.startswith(key)}
    return hits.pop() if len(hits) == 1 else None


def match_columns(role: str, headers, extra: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Map source headers to canonical columns of ``role``.

    ``extra`` (from the caller's overrides) maps source header → canonical and wins over the table.
    Returns ``(mapping, conflicts)``: mapping source → canonical for recognised headers; conflicts
    lists messages for canonical columns claimed by more than one header (the first is kept).
    """
    canon_names = {c.name for c in COLUMNS[role]}
    mapping: dict[str, str] = {}
    extra = dict(extra or {})
    for src, target in extra.items():
        if target not in canon_names:
            raise ValueError(f"override maps {src!r} to unknown {role} column {target!r}; known: {sorted(canon_names)}")
    for h in headers:
        if h in extra:
            mapping[h] = extra[h]
            continue
        canon = ALIASES[role].get(normalize_header(h)) or _truncated_match(role, h)
        if canon is not None:
            mapping[h] = canon
    # Overrides claim their canonical column: other headers matched by alias to it step aside.
    claimed = set(extra.values())
    mapping = {h: c for h, c in mapping.items() if h in extra or c not in claimed}
    conflicts = []
    seen: dict[str, str] = {}
    for h, c in list(mapping.items()):
        if c in seen:
            conflicts.append(f"列 {seen[c]!r} 和 {h!r} 都被识别为 {c} (columns {seen[c]!r} and {h!r} both map to {c})")
            del mapping[h]
        else:
            seen[c] = h
    return mapping, conflicts


def column(role: str, name: str) -> Column:
    """The :class:`Column` of ``role`` called ``name``."""
    for c in COLUMNS[role]:
        if c.name == name:
            return c
    raise KeyError(f"{role}.{name}")


def alias_table_markdown() -> str:
    """The alias table as Markdown (pasted into data/README.md; a test keeps them in sync)."""
    lines = ["| role | column | 中文表头 | type | unit | required | ≥ 0 | Shapefile field | also accepted |",
             "|---|---|---|---|---|---|---|---|---|"]
    for role, cols in COLUMNS.items():
        for c in cols:
            lines.append(
                f"| {role} | `{c.name}` | {c.zh} | {c.dtype} | {c.unit} | {'yes' if c.required else ''} | "
                f"{'yes' if c.nonneg else ''} | `{c.shapefile_field}` | {', '.join(f'`{a}`' for a in c.aliases)} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# import templates (data/templates/)

#: Template file per role: xlsx for enterprises/metrics (Excel users), csv for leases/corrections.
TEMPLATE_FILES = {"enterprises": "enterprises.xlsx", "metrics": "metrics.xlsx",
                  "leases": "leases.csv", "corrections": "corrections.csv"}


def template_header(col: Column) -> str:
    """Header shown in a template: ``*`` marks a required column, the unit follows in （）."""
    return ("*" if col.required else "") + col.zh + (f"（{col.unit}）" if col.unit and col.unit != "°" else "")


def write_templates(directory) -> list:
    """Write the import templates (one per table role, Chinese headers, one example row).

    >>> write_templates("data/templates")                                  # doctest: +SKIP
    """
    import csv
    from pathlib import Path

    import openpyxl
    from openpyxl.styles import Font

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for role, fname in TEMPLATE_FILES.items():
        cols = COLUMNS[role]
        header = [template_header(c) for c in cols]
        example = ["" if c.example is None else c.example for c in cols]
        path = directory / fname
        if fname.endswith(".csv"):
            # UTF-8 with BOM: Excel on Chinese Windows opens it without garbling.
            with open(path, "w", encoding="utf-8-sig", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(header)
                w.writerow(example)
        else:
            wb = openpyxl.Workbook()
            ws = wb.active
            ws.title = ROLE_NAMES[role]
            ws.append(header)
            ws.append(example)
            for cell in ws[1]:
                cell.font = Font(bold=True)
            for i, c in enumerate(cols, start=1):
                ws.column_dimensions[openpyxl.utils.get_column_letter(i)].width = max(12, len(c.zh) * 2 + 4)
                if c.dtype == "str":
                    ws.cell(row=2, column=i).number_format = "@"  # codes stay text (leading zeros)
            doc = wb.create_sheet("说明")
            doc.append(["列名", "字段", "类型", "单位", "必填", "≥0", "也接受的表头", "说明"])
            for c in cols:
                doc.append([c.zh, c.name, c.dtype, c.unit, "是" if c.required else "", "是" if c.nonneg else "",
                            "、".join(c.aliases), c.doc])
            # Saved with a fixed timestamp so regenerating gives the same cells.
            wb.properties.created = wb.properties.modified = __import__("datetime").datetime(2024, 1, 1)
            wb.save(path)
        written.append(path)
    return written
