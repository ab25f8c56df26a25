"""The database schema (SQLAlchemy Core + GeoAlchemy2), mirrored by the Alembic migrations.

Geometries are stored in CGCS2000 (EPSG:4490) with GiST indexes; areas are computed in the data's
Gauss-Krüger zone by ``spatial/`` and stored in m² and 亩. Money is in 万元, energy in 吨标煤,
electricity in kWh, as in the import bundle (``data/README.md``).

Land of all three kinds (registered parcels, independent and attached de-facto land) lives in one
``parcels`` table, one row per *version* of a piece of land: its 宗地身份码 ``identity_code`` lasts
across versions, ``valid_from`` / ``valid_to`` (years, ``valid_to`` exclusive, NULL = current) say
when a version is the land. Which versions are "the land of year Y" is one rule,
:func:`app.api.layers.land_in_year_sql`; derived tables (links, sub-lots, enterprise land, parcel
metrics) carry the year they were computed for. ``land_lineage`` records splits, merges and
re-issued 宗地代码 between codes (migration 0003).
"""

from __future__ import annotations

import sqlalchemy as sa
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import JSONB

SRID = 4490
metadata = sa.MetaData()

_now = sa.text("now()")


def _metric_columns() -> list[sa.Column]:
    """The per-year figures of an enterprise (and, apportioned, of a parcel)."""
    return [
        sa.Column("tax_paid", sa.Float, comment="实缴税金 万元"),
        sa.Column("tax_refund", sa.Float, comment="税收还原额 万元"),
        sa.Column("value_added", sa.Float, comment="工业增加值 万元"),
        sa.Column("revenue", sa.Float, comment="营业收入 万元"),
        sa.Column("output_value", sa.Float, comment="工业总产值 万元"),
        sa.Column("energy_tce", sa.Float, comment="综合能耗 吨标煤"),
        sa.Column("emission_t", sa.Float, comment="排放当量 吨"),
        sa.Column("rd_expense", sa.Float, comment="研发经费 万元"),
        sa.Column("employees", sa.Float, comment="从业人员 人"),
        sa.Column("electricity_kwh", sa.Float, comment="用电量 kWh"),
    ]


METRIC_COLUMNS = [c.name for c in _metric_columns()]


def _rating_columns() -> list[sa.Column]:
    """What one evaluation run says of one subject (enterprise or parcel)."""
    return [
        sa.Column("list_name", sa.Text),
        sa.Column("industry_group", sa.Text),
        sa.Column("evaluated", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("excluded_reason", sa.Text),
        sa.Column("score", sa.Float),
        sa.Column("rank", sa.Integer),
        sa.Column("percentile", sa.Float),
        sa.Column("band_grade", sa.Text),
        sa.Column("grade", sa.Text),
        sa.Column("colour", sa.Text),
        sa.Column("tax_per_mu", sa.Float, comment="亩均税收 万元/亩"),
        sa.Column("indicators", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("adjustments", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("explanation", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("warnings", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    ]


#: Per-year tables are partitioned by year (migration 0007): one partition per year, created when
#: the year first arrives (``mujun_ensure_year``, :func:`app.store.ensure_year_partitions`), and a
#: default partition for undated rows (year 0) and years without a partition yet.
_BY_YEAR = {"postgresql_partition_by": "LIST (year)"}
YEAR_PARTITIONED = ("land_links", "sublots", "enterprise_land", "parcel_metrics", "enterprise_ratings",
                    "parcel_ratings")


def _rating_year() -> sa.Column:
    """The run's year on each rating row: the partition key (PostgreSQL wants it in the key)."""
    return sa.Column("year", sa.Integer, primary_key=True, server_default=sa.text("0"),
                     comment="year of the run (partition key; 0 = written without it)")


import_batches = sa.Table(
    "import_batches", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("bundle_path", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False, comment="sha256 of the bundle's files"),
    sa.Column("status", sa.Text, nullable=False, comment="loaded | refused"),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("counts", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("column_map", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("source_crs", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("report_path", sa.Text),
    sa.Column("land_year", sa.Integer, comment="the year the bundle's land is the land of"),
    sa.Column("land_mode", sa.Text, comment="complete | partial (land deliveries only)"),
)

import_rejects = sa.Table(
    "import_rejects", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("batch_id", sa.BigInteger, sa.ForeignKey("import_batches.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("row", sa.Integer),
    sa.Column("field", sa.Text),
    sa.Column("value", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False, comment="error (row rejected) | warning (row kept)"),
)

parcels = sa.Table(
    "parcels", metadata,
    sa.Column("version_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("identity_code", sa.Text, nullable=False, comment="宗地身份码"),
    sa.Column("valid_from", sa.Integer, nullable=False, index=True, server_default=sa.text("0"),
              comment="first year this version is the land"),
    sa.Column("valid_to", sa.Integer, index=True, comment="first year it no longer is (exclusive); NULL = current"),
    sa.Column("kind", sa.Text, nullable=False, comment="registered | defacto | defacto_attached"),
    sa.Column("parcel_code", sa.Text, index=True, comment="宗地代码 (own, or the parent's for attached land)"),
    sa.Column("source_parcel_code", sa.Text, index=True, comment="the 宗地代码 an unregistered cadastre row came with"),
    sa.Column("parent_identity_code", sa.Text, comment="attached de-facto land: its registered parcel"),
    sa.Column("owner_uscc", sa.Text, index=True, comment="权利人统一社会信用代码"),
    sa.Column("owner_name", sa.Text),
    sa.Column("user_uscc", sa.Text, comment="de-facto land: the enterprise using it"),
    sa.Column("land_use", sa.Text),
    sa.Column("township", sa.Text, index=True),
    sa.Column("county", sa.Text, comment="县级行政区划代码 (6 digits) of the county it belongs to; NULL = the database's one county"),
    sa.Column("registered_area_m2", sa.Float),
    sa.Column("area_m2", sa.Float, nullable=False),
    sa.Column("area_mu", sa.Float, nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("attrs", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"), comment="extra columns kept from the import"),
    sa.Column("batch_id", sa.BigInteger, sa.ForeignKey("import_batches.id", ondelete="SET NULL")),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("geom", Geometry("MULTIPOLYGON", srid=SRID, spatial_index=True), nullable=False),
    sa.CheckConstraint("kind IN ('registered', 'defacto', 'defacto_attached')", name="parcels_kind"),
    sa.CheckConstraint("valid_to IS NULL OR valid_to >= valid_from", name="parcels_valid_span"),
    sa.UniqueConstraint("identity_code", "valid_from", name="parcels_identity_version"),
)

land_lineage = sa.Table(
    "land_lineage", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("year", sa.Integer, nullable=False, comment="the delivery year the change took effect"),
    sa.Column("parent_code", sa.Text, nullable=False, index=True),
    sa.Column("child_code", sa.Text, nullable=False, index=True),
    sa.Column("kind", sa.Text, nullable=False, comment="split | merge | recode"),
    sa.Column("batch_id", sa.BigInteger, sa.ForeignKey("import_batches.id", ondelete="SET NULL")),
    sa.CheckConstraint("kind IN ('split', 'merge', 'recode')", name="land_lineage_kind"),
    sa.UniqueConstraint("year", "parent_code", "child_code", name="land_lineage_natural_key"),
)

buildings = sa.Table(
    "buildings", metadata,
    sa.Column("building_id", sa.Text, primary_key=True, comment="建筑编号"),
    sa.Column("parcel_code", sa.Text, index=True),
    sa.Column("floors", sa.Float, comment="层数"),
    sa.Column("floor_area_m2", sa.Float, comment="建筑面积"),
    sa.Column("footprint_m2", sa.Float),
    sa.Column("attrs", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("batch_id", sa.BigInteger, sa.ForeignKey("import_batches.id", ondelete="SET NULL")),
    sa.Column("geom", Geometry("MULTIPOLYGON", srid=SRID, spatial_index=True), nullable=False),
)

enterprises = sa.Table(
    "enterprises", metadata,
    sa.Column("uscc", sa.Text, primary_key=True, comment="统一社会信用代码"),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("industry_code", sa.Text, index=True, comment="GB/T 4754"),
    sa.Column("scale", sa.Text, comment="规上 | 规下"),
    sa.Column("township", sa.Text, index=True),
    sa.Column("county", sa.Text, comment="县级行政区划代码 (6 digits) of the county it belongs to; NULL = the database's one county"),
    sa.Column("address", sa.Text),
    sa.Column("founded", sa.Date),
    sa.Column("flags", sa.Text, comment="免评, 过渡期 …"),
    sa.Column("coord_sys", sa.Text, comment="the source coordinates' system"),
    sa.Column("lon_src", sa.Float),
    sa.Column("lat_src", sa.Float),
    sa.Column("attrs", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("batch_id", sa.BigInteger, sa.ForeignKey("import_batches.id", ondelete="SET NULL")),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("geom", Geometry("POINT", srid=SRID, spatial_index=True)),
)

metrics = sa.Table(
    "metrics", metadata,
    sa.Column("uscc", sa.Text, sa.ForeignKey("enterprises.uscc", ondelete="CASCADE"), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    *_metric_columns(),
    sa.Column("meter_id", sa.Text, index=True, comment="电表户号"),
    sa.Column("attrs", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("batch_id", sa.BigInteger, sa.ForeignKey("import_batches.id", ondelete="SET NULL")),
)

leases = sa.Table(
    "leases", metadata,
    sa.Column("lease_key", sa.Text, primary_key=True, comment="natural key: tenant|parcel|landlord|start"),
    sa.Column("tenant_uscc", sa.Text, nullable=False, index=True),
    sa.Column("parcel_code", sa.Text, index=True),
    sa.Column("landlord_uscc", sa.Text, index=True),
    sa.Column("floor_area_m2", sa.Float),
    sa.Column("land_area_m2", sa.Float),
    sa.Column("start_date", sa.Date),
    sa.Column("end_date", sa.Date),
    sa.Column("attrs", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("batch_id", sa.BigInteger, sa.ForeignKey("import_batches.id", ondelete="SET NULL")),
)

link_corrections = sa.Table(
    "link_corrections", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("uscc", sa.Text, nullable=False),
    sa.Column("parcel_code", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("share", sa.Float),
    sa.Column("reason", sa.Text),
    sa.Column("by", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.UniqueConstraint("uscc", "parcel_code", name="link_corrections_natural_key"),
    sa.CheckConstraint("action IN ('add', 'remove')", name="link_corrections_action"),
)

land_links = sa.Table(
    "land_links", metadata,
    sa.Column("year", sa.Integer, primary_key=True, server_default=sa.text("0")),
    sa.Column("identity_code", sa.Text, primary_key=True),
    sa.Column("uscc", sa.Text, primary_key=True, index=True),
    sa.Column("parcel_code", sa.Text),
    sa.Column("role", sa.Text, nullable=False, comment="owner_occupier 自用 | landlord 出租方 | tenant 承租方"),
    sa.Column("method", sa.Text, nullable=False, comment="owner_code | point_in_polygon | building | snap | lease | correction"),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("distance_m", sa.Float),
    sa.Column("share", sa.Float, comment="share of the land's area attributed"),
    sa.Column("attributed_area_m2", sa.Float),
    sa.Column("attributed_area_mu", sa.Float),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    **_BY_YEAR,
)

sublots = sa.Table(
    "sublots", metadata,
    sa.Column("year", sa.Integer, primary_key=True, server_default=sa.text("0")),
    sa.Column("identity_code", sa.Text, primary_key=True),
    sa.Column("uscc", sa.Text, primary_key=True),
    sa.Column("share", sa.Float, nullable=False),
    sa.Column("area_m2", sa.Float, nullable=False),
    sa.Column("geom", Geometry("MULTIPOLYGON", srid=SRID, spatial_index=True), nullable=False),
    **_BY_YEAR,
)

enterprise_land = sa.Table(
    "enterprise_land", metadata,
    sa.Column("year", sa.Integer, primary_key=True, server_default=sa.text("0")),
    sa.Column("uscc", sa.Text, primary_key=True),
    sa.Column("land_area_m2", sa.Float, nullable=False),
    sa.Column("land_area_mu", sa.Float, nullable=False),
    sa.Column("parcel_count", sa.Integer, nullable=False),
    sa.Column("owned_area_m2", sa.Float),
    sa.Column("leased_in_area_m2", sa.Float),
    sa.Column("land_class", sa.Text, comment="I owns+uses all | II owns, leases some out | III rents | none"),
    **_BY_YEAR,
)

parcel_metrics = sa.Table(
    "parcel_metrics", metadata,
    sa.Column("identity_code", sa.Text, primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    *_metric_columns(),
    sa.Column("occupant_count", sa.Integer),
    **_BY_YEAR,
)

evaluation_runs = sa.Table(
    "evaluation_runs", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("year", sa.Integer, nullable=False, index=True),
    sa.Column("scheme_name", sa.Text, nullable=False),
    sa.Column("scheme_version", sa.Text, nullable=False),
    sa.Column("scheme_hash", sa.Text, nullable=False),
    sa.Column("inputs_fingerprint", sa.Text, nullable=False),
    sa.Column("run_hash", sa.Text, nullable=False, comment="scheme + inputs + year: same hash, same results"),
    sa.Column("status", sa.Text, nullable=False, server_default="draft", comment="running | draft | published | superseded | failed"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    sa.Column("scheme", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"), comment="the scheme as evaluated"),
    sa.Column("summary", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
)

enterprise_ratings = sa.Table(
    "enterprise_ratings", metadata,
    sa.Column("run_id", sa.BigInteger, sa.ForeignKey("evaluation_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("uscc", sa.Text, primary_key=True, index=True),
    *_rating_columns(),
    sa.Column("land_area_mu", sa.Float),
    sa.Column("consecutive_d_years", sa.Integer),
    sa.Column("electricity_surcharge_yuan", sa.Float, comment="差别电价 for D"),
    sa.Column("electricity_refund_yuan", sa.Float, comment="refund on leaving D"),
    _rating_year(),
    **_BY_YEAR,
)

parcel_ratings = sa.Table(
    "parcel_ratings", metadata,
    sa.Column("run_id", sa.BigInteger, sa.ForeignKey("evaluation_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("identity_code", sa.Text, primary_key=True, index=True),
    *_rating_columns(),
    sa.Column("idle", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("low_yield_years", sa.Integer, comment="consecutive years below the 低产田 threshold"),
    _rating_year(),
    **_BY_YEAR,
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True, comment="sha256 of the key; the key itself is never stored"),
    sa.Column("role", sa.Text, nullable=False, comment="public | viewer | analyst | admin"),
    sa.Column("region", sa.Text, comment="NULL = whole county; else a township"),
    sa.Column("county", sa.Text, comment="NULL = the database's one county; else the 6-digit 县级行政区划代码 the scope is limited to"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("role IN ('public', 'viewer', 'analyst', 'admin')", name="api_keys_role"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("entity", sa.Text),
    sa.Column("entity_id", sa.Text, index=True),
    sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
)

data_version = sa.Table(
    "data_version", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False, comment="bumped by every write; ETags and cached counts key on it"),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.CheckConstraint("id = 1", name="data_version_single_row"),
)

# -- the yearly cycle in the browser (migration 0004, app/accounts.py, app/jobs.py, app/workflow.py)
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("username", sa.Text, nullable=False, unique=True),
    sa.Column("display_name", sa.Text),
    sa.Column("password_hash", sa.Text, nullable=False, comment="argon2id; the password itself is never stored"),
    sa.Column("role", sa.Text, nullable=False, comment="viewer | analyst | officer (township officer) | admin"),
    sa.Column("township", sa.Text, comment="NULL = whole county; else the township the user is limited to"),
    sa.Column("county", sa.Text, comment="NULL = the database's one county; else the 6-digit 县级行政区划代码 the scope is limited to"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("last_login_at", sa.DateTime(timezone=True)),
    sa.Column("disabled_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("role IN ('viewer', 'analyst', 'officer', 'admin')", name="users_role"),
    sa.CheckConstraint("role <> 'officer' OR township IS NOT NULL", name="users_officer_township"),
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False, comment="validate | import"),
    sa.Column("status", sa.Text, nullable=False, server_default="queued",
              comment="queued | running | done | failed | refused"),
    sa.Column("stage", sa.Text, comment="what it is doing now (Chinese, shown in the progress bar)"),
    sa.Column("rows_read", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("rows_total", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("rows_rejected", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("params", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("result", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("error", sa.Text),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

correction_proposals = sa.Table(
    "correction_proposals", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("uscc", sa.Text, nullable=False),
    sa.Column("parcel_code", sa.Text, nullable=False),
    sa.Column("township", sa.Text, comment="the land's township (who may propose / see it)"),
    sa.Column("county", sa.Text, comment="县级行政区划代码 of its township (NULL = the database's one county)"),
    sa.Column("action", sa.Text, nullable=False, comment="add (is on this land) | remove (is not)"),
    sa.Column("share", sa.Float),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="proposed", comment="proposed | accepted | rejected"),
    sa.Column("answer", sa.Text),
    sa.Column("proposed_by", sa.Text, nullable=False),
    sa.Column("decided_by", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("action IN ('add', 'remove')", name="correction_proposals_action"),
    sa.CheckConstraint("status IN ('proposed', 'accepted', 'rejected')", name="correction_proposals_status"),
)

appeals = sa.Table(
    "appeals", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", sa.BigInteger, sa.ForeignKey("evaluation_runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("uscc", sa.Text, nullable=False, index=True),
    sa.Column("township", sa.Text),
    sa.Column("county", sa.Text, comment="县级行政区划代码 of its township (NULL = the database's one county)"),
    sa.Column("grade", sa.Text, comment="the draft grade appealed against"),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="submitted",
              comment="submitted | under_review | accepted | rejected"),
    sa.Column("answer", sa.Text),
    sa.Column("submitted_by", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.CheckConstraint("status IN ('submitted', 'under_review', 'accepted', 'rejected')", name="appeals_status"),
)

saved_groups = sa.Table(
    "saved_groups", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False, comment="parcels 宗地组 | enterprises 企业组"),
    sa.Column("members", sa.ARRAY(sa.Text), nullable=False, comment="宗地身份码 or USCC"),
    sa.Column("township", sa.Text, comment="the creator's scope: NULL = county"),
    sa.Column("county", sa.Text, comment="the creator's county: NULL = the database's one county"),
    sa.Column("shared", sa.Boolean, nullable=False, server_default=sa.false(), comment="shared with the county"),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.CheckConstraint("kind IN ('parcels', 'enterprises')", name="saved_groups_kind"),
)

tile_cache = sa.Table(
    "tile_cache", metadata,
    sa.Column("layer", sa.Text, primary_key=True),
    sa.Column("scope", sa.Text, primary_key=True),  # the caller's visibility class
    sa.Column("query", sa.Text, primary_key=True),  # year/run asked
    sa.Column("z", sa.SmallInteger, primary_key=True),
    sa.Column("x", sa.Integer, primary_key=True),
    sa.Column("y", sa.Integer, primary_key=True),
    sa.Column("data_version", sa.BigInteger, nullable=False),  # served only while current
    sa.Column("run_id", sa.BigInteger),
    sa.Column("mvt", sa.LargeBinary),
    prefixes=["UNLOGGED"],
)

#: GeoJSON features rendered once (app.feature_cache, migration 0006): one row per feature,
#: collection and visibility class; read only while its state row's data version is current.
#: Read without parallel workers (``parallel_workers = 0``, migration 0008: a page is a short range read).
feature_cache = sa.Table(
    "feature_cache", metadata,
    sa.Column("collection", sa.Text, primary_key=True, comment="layer id (app.api.layers)"),
    sa.Column("visibility", sa.Text, primary_key=True,
              comment="visibility class: public | link | viewer | analyst (app.auth)"),
    sa.Column("key", sa.Text, primary_key=True, comment="the layer's order key (Layer.key_sql), = the feature id"),
    sa.Column("township", sa.Text, comment="Layer.township_sql: rows of a region-scoped key"),
    sa.Column("county", sa.Text, comment="Layer.township_sql's county: rows of a county-scoped key"),
    sa.Column("geom", Geometry("GEOMETRY", srid=SRID, spatial_index=True), comment="Layer.geom_sql: bbox filters"),
    sa.Column("feature", sa.Text, nullable=False, comment="the Feature's GeoJSON text (CRS84)"),
    sa.Index("ix_feature_cache_township", "collection", "visibility", "township", "key"),
)

feature_cache_state = sa.Table(
    "feature_cache_state", metadata,
    sa.Column("collection", sa.Text, primary_key=True),
    sa.Column("visibility", sa.Text, primary_key=True),
    sa.Column("data_version", sa.BigInteger, nullable=False, comment="served only while this is current"),
    sa.Column("run_id", sa.BigInteger, comment="the evaluation run rendered (NULL: none, ungraded land)"),
    sa.Column("features", sa.BigInteger, nullable=False),
    sa.Column("built_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)
