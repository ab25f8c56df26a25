"""Land over the years: versions of every piece of land, lineage, yearly deliveries, per-year
derived data.

* ``parcels`` holds *versions*: ``version_id`` is the key, ``valid_from`` / ``valid_to`` (years,
  ``valid_to`` exclusive, NULL = still valid) say when a version is the land; one version per
  ``(identity_code, valid_from)``. A piece absent from a later complete delivery gets
  ``valid_to`` = that year: it is retired, never deleted.
* ``land_lineage``: split / merge / recode between identity codes, with the delivery year.
* ``import_batches.land_year`` / ``land_mode``: what land delivery a bundle was.
* ``land_links``, ``sublots``, ``enterprise_land`` gain ``year`` in their key: each year's derived
  data is kept (the land of 2024 stays matched as it was after a 2025 delivery).
  ``parcel_metrics`` already had one. Their foreign keys to ``parcels.identity_code`` go: an
  identity code is no longer unique in ``parcels`` (one row per version).

Undated rows (``valid_from`` / ``year`` 0, the server default for rows written without a year)
count as land since the beginning / derived data for any year without its own.

Existing data stays readable: current land becomes one version valid from the earliest metrics
year (or this year, without metrics); existing derived rows are copied to every metrics year
(they were the same land for all of them).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_FIRST_YEAR = "(SELECT coalesce(min(year), extract(year FROM now())::int) FROM metrics)"
_YEARS = "(SELECT DISTINCT year FROM metrics)"


def upgrade() -> None:
    # -- deliveries
    op.add_column("import_batches", sa.Column("land_year", sa.Integer(), nullable=True,
                                              comment="the year the bundle's land is the land of"))
    op.add_column("import_batches", sa.Column("land_mode", sa.Text(), nullable=True,
                                              comment="complete | partial (land deliveries only)"))

    # -- foreign keys onto parcels.identity_code go first (it stops being unique)
    op.drop_constraint("land_links_identity_code_fkey", "land_links", type_="foreignkey")
    op.drop_constraint("sublots_identity_code_fkey", "sublots", type_="foreignkey")
    op.drop_constraint("parcel_metrics_identity_code_fkey", "parcel_metrics", type_="foreignkey")

    # -- parcels become versions
    op.add_column("parcels", sa.Column("version_id", sa.BigInteger(), sa.Identity(always=False), nullable=False))
    op.add_column("parcels", sa.Column("valid_from", sa.Integer(), nullable=True,
                                       comment="first year this version is the land"))
    op.add_column("parcels", sa.Column("valid_to", sa.Integer(), nullable=True,
                                       comment="first year it no longer is (exclusive); NULL = current"))
    op.execute(f"UPDATE parcels SET valid_from = {_FIRST_YEAR}")
    # 0 = undated (a row written without a year, e.g. by hand): land since the beginning
    op.alter_column("parcels", "valid_from", nullable=False, server_default=sa.text("0"))
    op.drop_constraint("parcels_pkey", "parcels", type_="primary")
    op.create_primary_key("parcels_pkey", "parcels", ["version_id"])
    op.create_unique_constraint("parcels_identity_version", "parcels", ["identity_code", "valid_from"])
    op.create_check_constraint("parcels_valid_span", "parcels", "valid_to IS NULL OR valid_to >= valid_from")
    # the land of a year is read by these (app.api.layers.land_in_year_sql)
    op.create_index(op.f("ix_parcels_valid_from"), "parcels", ["valid_from"], unique=False)
    op.create_index(op.f("ix_parcels_valid_to"), "parcels", ["valid_to"], unique=False)

    # -- per-year derived tables
    for table, key in (("land_links", ["year", "identity_code", "uscc"]),
                       ("sublots", ["year", "identity_code", "uscc"]),
                       ("enterprise_land", ["year", "uscc"])):
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.add_column(table, sa.Column("year", sa.Integer(), nullable=True))
        cols = [c["name"] for c in sa.inspect(op.get_bind()).get_columns(table) if c["name"] != "year"]
        col_list = ", ".join(cols)
        op.execute(f"INSERT INTO {table} ({col_list}, year) SELECT {col_list}, y.year FROM {table}, {_YEARS} y "
                   f"WHERE {table}.year IS NULL")
        op.execute(f"DELETE FROM {table} WHERE year IS NULL")
        # 0 = undated: read for any year that has no derived rows of its own (derived_year_sql)
        op.alter_column(table, "year", nullable=False, server_default=sa.text("0"))
        op.create_primary_key(f"{table}_pkey", table, key)

    # -- lineage
    op.create_table(
        "land_lineage",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False, comment="the delivery year the change took effect"),
        sa.Column("parent_code", sa.Text(), nullable=False),
        sa.Column("child_code", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False, comment="split | merge | recode"),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("kind IN ('split', 'merge', 'recode')", name="land_lineage_kind"),
        sa.ForeignKeyConstraint(["batch_id"], ["import_batches.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("year", "parent_code", "child_code", name="land_lineage_natural_key"),
    )
    op.create_index(op.f("ix_land_lineage_parent_code"), "land_lineage", ["parent_code"], unique=False)
    op.create_index(op.f("ix_land_lineage_child_code"), "land_lineage", ["child_code"], unique=False)


def downgrade() -> None:
    # Only the current land and the newest year's derived rows fit the old schema.
    op.drop_index(op.f("ix_land_lineage_child_code"), table_name="land_lineage")
    op.drop_index(op.f("ix_land_lineage_parent_code"), table_name="land_lineage")
    op.drop_table("land_lineage")
    for table, key in (("land_links", ["identity_code", "uscc"]),
                       ("sublots", ["identity_code", "uscc"]),
                       ("enterprise_land", ["uscc"])):
        op.execute(f"DELETE FROM {table} WHERE year <> (SELECT max(year) FROM {table})")
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.drop_column(table, "year")
        op.create_primary_key(f"{table}_pkey", table, key)
    op.execute("DELETE FROM parcels WHERE valid_to IS NOT NULL")
    op.drop_index(op.f("ix_parcels_valid_to"), table_name="parcels")
    op.drop_index(op.f("ix_parcels_valid_from"), table_name="parcels")
    op.drop_constraint("parcels_valid_span", "parcels", type_="check")
    op.drop_constraint("parcels_identity_version", "parcels", type_="unique")
    op.drop_constraint("parcels_pkey", "parcels", type_="primary")
    op.drop_column("parcels", "valid_to")
    op.drop_column("parcels", "valid_from")
    op.drop_column("parcels", "version_id")
    op.create_primary_key("parcels_pkey", "parcels", ["identity_code"])
    for table in ("land_links", "sublots", "parcel_metrics"):
        op.execute(f"DELETE FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM parcels p WHERE p.identity_code = t.identity_code)")
        op.create_foreign_key(f"{table}_identity_code_fkey", table, "parcels", ["identity_code"], ["identity_code"],
                              ondelete="CASCADE")
    op.drop_column("import_batches", "land_mode")
    op.drop_column("import_batches", "land_year")
