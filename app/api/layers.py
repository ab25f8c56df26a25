"""The layers mujun serves, defined once: features, tiles, exports and styles all read this.

Each :class:`Layer` says where its rows come from (SQL over the tables and the evaluation run
being shown), its stable feature id, its geometry, which township a row belongs to (for
region-scoped keys), and its properties with their types and the role needed to see them
(see :mod:`app.auth`). Declaring the property schema here is what lets QGIS get the right
field types without guessing from the first features.

Every ``from_sql`` takes the bind parameter ``:run_id`` — the evaluation run whose grades are
shown (see :func:`current_run_sql`); rows without a rating in that run still appear, ungraded.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prop:
    name: str
    sql: str
    type: str  # JSON Schema type: string | number | integer | boolean
    level: str = "public"  # the least level that sees it: public | link | viewer | analyst (app.auth)
    title: str = ""
    filterable: bool = False  # usable as a query parameter / in CQL2 and as a queryable


@dataclass(frozen=True)
class Layer:
    id: str
    title: str
    description: str
    from_sql: str
    id_sql: str
    geom_sql: str
    township_sql: str
    geometry_type: str
    properties: tuple[Prop, ...] = field(default_factory=tuple)
    #: Default ordering and keyset column (unique, indexed in the base table).
    key_sql: str = ""
    #: Rows the layer shows beyond its join (e.g. de-facto land is the non-registered land).
    where_sql: str = "TRUE"
    #: The least level whose callers may learn the feature id (enterprise layers are keyed by
    #: USCC: an identity, ``link`` level — see app.auth.CONFIDENTIALITY).
    id_level: str = "public"

    def prop(self, name: str) -> Prop:
        for p in self.properties:
            if p.name == name:
                return p
        raise KeyError(name)

    def visible(self, role_sees) -> list[Prop]:
        """Properties a principal may see: ``role_sees(level) -> bool``."""
        return [p for p in self.properties if role_sees(p.level)]


def shown_runs_sql(drafts: bool = True) -> str:
    """The run shown for each year — the one rule maps, archives and multi-year history share:
    the latest published run of the year, else (for callers who may review drafts, ``drafts``)
    its latest finished draft. Newest year first."""
    statuses = "('published', 'draft')" if drafts else "('published')"
    return f"""
    SELECT DISTINCT ON (year) id, year, status, scheme_name, scheme_version
    FROM evaluation_runs
    WHERE status IN {statuses}
    ORDER BY year DESC, (status = 'published') DESC, id DESC"""


#: :func:`shown_runs_sql` for reviewers (drafts included); the CLI and pipeline use this.
SHOWN_RUNS_SQL = shown_runs_sql(True)


def run_statuses(drafts: bool) -> str:
    """Statuses a caller may open with an explicit ``run=`` id (drafts only for reviewers)."""
    return "('published', 'draft', 'superseded')" if drafts else "('published', 'superseded')"


def current_run_sql(year_param: str = "year", drafts: bool = True) -> str:
    """The run shown for one year (:func:`shown_runs_sql`); with ``:year`` NULL, the newest year's."""
    return f"""
        SELECT id FROM ({shown_runs_sql(drafts)}) shown
        WHERE CAST(:{year_param} AS integer) IS NULL OR year = CAST(:{year_param} AS integer)
        ORDER BY year DESC
        LIMIT 1"""


def explicit_run_sql(run_param: str = "run", drafts: bool = True) -> str:
    """The run ``:run`` if it exists and the caller may open it (drafts only for reviewers)."""
    return (f"SELECT id FROM evaluation_runs WHERE id = CAST(:{run_param} AS bigint) "
            f"AND status IN {run_statuses(drafts)}")


#: The year of the run a layer shows (NULL without a run: then the current land).
RUN_YEAR_SQL = "(SELECT year FROM evaluation_runs WHERE id = CAST(:run_id AS bigint))"


def land_in_year_sql(year_sql: str = "CAST(:year AS integer)") -> str:
    """The land of a year — the one rule every reader of land shares (layers, tiles, archives,
    clusters, exports, matching, evaluation): the versions of ``parcels`` valid in year Y
    (``valid_from <= Y < valid_to``, ``valid_to`` NULL = still valid). A year before the county's
    first delivery reads the first delivery's land (a county delivers its land once, then
    changes); Y NULL reads the current land. A parenthesised subquery: alias it (``… p``).

    ``year_sql`` is any SQL expression of the year, e.g. :data:`RUN_YEAR_SQL`.
    """
    y = (f"CASE WHEN ({year_sql}) IS NULL THEN 9999 "
         f"ELSE greatest(({year_sql}), (SELECT min(valid_from) FROM parcels)) END")
    return (f"(SELECT * FROM parcels lv WHERE lv.valid_from <= ({y}) "
            f"AND coalesce(lv.valid_to, 10000) > ({y}))")


def derived_year_sql(table: str, year_sql: str) -> str:
    """The year of a per-year derived table (land_links, sublots, enterprise_land) that maps,
    archives and exports read for ``year_sql``: the newest year matched up to it (that year
    itself after ``mujun match``), else the earliest; NULL reads the newest. (Evaluation reads
    exactly its own year.) Year 0 = undated rows, read when no dated year fits."""
    return (f"coalesce((SELECT max(year) FROM {table} WHERE year <= coalesce(({year_sql}), 10000)), "
            f"(SELECT min(year) FROM {table}))")


_RATING_PROPS = (
    Prop("run_id", "r.run_id", "integer", title="评价批次"),
    Prop("grade", "r.grade", "string", title="等级", filterable=True),
    Prop("colour", "r.colour", "string", title="预警颜色", filterable=True),
    Prop("industry_group", "r.industry_group", "string", title="行业组", filterable=True),
    Prop("list_name", "r.list_name", "string", "viewer", "评价名单", filterable=True),
    # A score is a figure: in a single-indicator list score ÷ 亩均税收 is constant (app.auth).
    Prop("score", "r.score", "number", "analyst", "综合得分"),
    Prop("rank", "r.rank", "integer", "viewer", "排名"),
    Prop("percentile", "r.percentile", "number", "viewer", "排名百分位"),
    Prop("tax_per_mu", "r.tax_per_mu", "number", "analyst", "亩均税收(万元/亩)", filterable=True),
)

PARCELS = Layer(
    id="parcels",
    title="宗地 Parcels",
    description="Industrial land (registered parcels and de-facto land) with its 宗地等级 (parcel grade).",
    from_sql=f"{land_in_year_sql(RUN_YEAR_SQL)} p "
             "LEFT JOIN parcel_ratings r ON r.identity_code = p.identity_code AND r.run_id = :run_id",
    id_sql="p.identity_code",
    geom_sql="p.geom",
    township_sql="p.township",
    geometry_type="MultiPolygon",
    key_sql="p.identity_code",
    properties=(
        Prop("identity_code", "p.identity_code", "string", title="宗地身份码", filterable=True),
        Prop("kind", "p.kind", "string", title="用地类型", filterable=True),
        Prop("parcel_code", "p.parcel_code", "string", title="宗地代码", filterable=True),
        Prop("township", "p.township", "string", title="镇街", filterable=True),
        Prop("land_use", "p.land_use", "string", title="用途"),
        Prop("area_m2", "round(p.area_m2 * 100) / 100", "number", title="面积(平方米)"),
        Prop("area_mu", "round(p.area_mu * 1000) / 1000", "number", title="面积(亩)", filterable=True),
        Prop("idle", "coalesce(r.idle, false)", "boolean", title="闲置", filterable=True),
        *_RATING_PROPS,
        Prop("owner_uscc", "p.owner_uscc", "string", "link", "权利人统一社会信用代码", filterable=True),
        Prop("owner_name", "p.owner_name", "string", "link", "权利人"),
        Prop("low_yield_years", "r.low_yield_years", "integer", "viewer", "连续低效年数"),
    ),
)

DEFACTO = Layer(
    id="defacto",
    title="事实用地 De-facto land",
    description="Land used by an enterprise without registration: independent, or attached to a registered parcel.",
    from_sql=PARCELS.from_sql,
    id_sql="p.identity_code",
    geom_sql="p.geom",
    township_sql="p.township",
    geometry_type="MultiPolygon",
    key_sql="p.identity_code",
    where_sql="p.kind <> 'registered'",
    properties=(
        Prop("identity_code", "p.identity_code", "string", title="宗地身份码", filterable=True),
        Prop("kind", "p.kind", "string", title="用地类型", filterable=True),
        Prop("parent_identity_code", "p.parent_identity_code", "string", title="关联宗地身份码"),
        Prop("parcel_code", "p.parcel_code", "string", title="关联宗地代码"),
        Prop("township", "p.township", "string", title="镇街", filterable=True),
        Prop("area_mu", "round(p.area_mu * 1000) / 1000", "number", title="面积(亩)"),
        Prop("grade", "r.grade", "string", title="等级", filterable=True),
        Prop("colour", "r.colour", "string", title="预警颜色", filterable=True),
        Prop("user_uscc", "p.user_uscc", "string", "link", "使用企业统一社会信用代码"),
    ),
)

ENTERPRISES = Layer(
    id="enterprises",
    title="企业 Enterprises",
    description="Enterprise locations with their 经营主体等级 (enterprise grade, all their land merged).",
    from_sql="enterprises e LEFT JOIN enterprise_ratings r ON r.uscc = e.uscc AND r.run_id = :run_id "
             "LEFT JOIN enterprise_land el ON el.uscc = e.uscc "
             f"AND el.year = {derived_year_sql('enterprise_land', RUN_YEAR_SQL)}",
    id_sql="e.uscc",
    geom_sql="e.geom",
    township_sql="e.township",
    geometry_type="Point",
    key_sql="e.uscc",
    where_sql="e.geom IS NOT NULL",
    id_level="link",
    properties=(
        # Which enterprise sits where is an identity (app.auth.CONFIDENTIALITY): link level.
        Prop("uscc", "e.uscc", "string", "link", "统一社会信用代码", filterable=True),
        Prop("industry_code", "e.industry_code", "string", title="行业代码", filterable=True),
        Prop("scale", "e.scale", "string", title="规模", filterable=True),
        Prop("township", "e.township", "string", title="镇街", filterable=True),
        *_RATING_PROPS,
        Prop("name", "e.name", "string", "link", "企业名称", filterable=True),
        Prop("land_class", "el.land_class", "string", "link", "用地类别", filterable=True),
        Prop("land_area_mu", "round(el.land_area_mu * 1000) / 1000", "number", "link", "用地面积(亩)"),
        Prop("consecutive_d_years", "r.consecutive_d_years", "integer", "viewer", "连续D档年数"),
        Prop("electricity_surcharge_yuan", "r.electricity_surcharge_yuan", "number", "analyst", "差别电价(元)"),
    ),
)

SUBLOTS = Layer(
    id="sublots",
    title="分割地块 Sub-lots",
    description="Each occupant's part of a shared parcel (多企共地分割), with the occupant's enterprise grade.",
    from_sql=f"sublots s JOIN {land_in_year_sql(RUN_YEAR_SQL)} p ON p.identity_code = s.identity_code "
             f"AND s.year = {derived_year_sql('sublots', RUN_YEAR_SQL)} "
             "LEFT JOIN enterprise_ratings r ON r.uscc = s.uscc AND r.run_id = :run_id "
             "LEFT JOIN enterprises e ON e.uscc = s.uscc",
    id_sql="s.identity_code || '/' || s.uscc",
    geom_sql="s.geom",
    township_sql="p.township",
    geometry_type="MultiPolygon",
    key_sql="(s.identity_code || '/' || s.uscc)",
    id_level="link",
    properties=(
        Prop("identity_code", "s.identity_code", "string", title="宗地身份码", filterable=True),
        Prop("uscc", "s.uscc", "string", "link", "统一社会信用代码", filterable=True),
        Prop("township", "p.township", "string", title="镇街", filterable=True),
        Prop("share", "round(s.share * 10000) / 10000", "number", "link", "面积占比"),
        Prop("area_mu", "round(s.area_m2 * 15 / 10) / 1000", "number", title="面积(亩)"),
        Prop("grade", "r.grade", "string", title="企业等级", filterable=True),
        Prop("colour", "r.colour", "string", title="预警颜色", filterable=True),
        Prop("name", "e.name", "string", "link", "企业名称"),
    ),
)

LAYERS: dict[str, Layer] = {layer.id: layer for layer in (PARCELS, ENTERPRISES, SUBLOTS, DEFACTO)}
