"""Per-year tables partitioned by year (issue 16): links, sub-lots, merged land, apportioned
figures and both rating tables are ``PARTITION BY LIST (year)``.

* ``land_links``, ``sublots``, ``enterprise_land``, ``parcel_metrics`` already carry ``year`` in
  their primary key. ``enterprise_ratings`` and ``parcel_ratings`` gain ``year`` (their run's
  year, filled here from ``evaluation_runs`` and written by every writer of ratings); their primary
  keys become ``(run_id, subject, year)`` — PostgreSQL requires the partition key in every unique
  index, and ``run_id`` stays first so a lookup by run still uses it.
* One partition per year (``<table>_y<year>``) plus ``<table>_default``: rows of a year that has no
  partition yet, and undated rows (year 0: the server default, e.g. a row written by hand), land
  there, so no write ever fails for want of a partition.
* ``mujun_ensure_year(year)`` creates a year's partitions when the year first arrives; the writers
  call it (``app.store.ensure_year_partitions``: evaluation, matching, the province writer) — no
  manual DBA step. It moves that year's rows out of the default partition first and attaches the
  new table (``ATTACH PARTITION``: a SHARE UPDATE EXCLUSIVE lock, readers are not blocked).
* A year's reads of links, sub-lots, merged land and figures name the year (``year = …``,
  ``derived_year_sql``) and are pruned to its partition; ratings are read by run (``run_id``, the
  run fixes the year), which probes each year's ``(run_id, …)`` key once — the layers do not
  filter ratings by year, so a rating row is shown with its run whatever year it was filed under.
  Dropping or archiving a year is ``DETACH PARTITION``.

``parcels`` (land versions) is **not** partitioned. A version is the land of every year in
``[valid_from, valid_to)``: by ``valid_from`` the land of year Y (``valid_from <= Y``) would still
read every earlier partition, so nothing is pruned, and a version would have to be copied into
each year it spans (one unchanged piece = one row today). Partitioning it by county would need a
county column the API never filters on (a tile or a bbox crosses counties; requests name a
township or a bbox, not a county), and ``version_id`` / ``(identity_code, valid_from)`` would have
to carry the county. Its GiST index already confines a map request to its bbox, and a province is
~0.5 M rows (docs/scale.md, "Database at scale"). By county it pays only when one database holds
many provinces — then as the distribution column of Citus, not as local partitions.

Existing rows are carried over unchanged (copied into the new partitioned tables); the downgrade
copies them back into plain tables and drops the ratings' ``year``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

#: table -> (primary key after 0007, primary key before, other indexes (name, columns, method),
#:           foreign key on run_id)
_TABLES = {
    "land_links": (["year", "identity_code", "uscc"], ["year", "identity_code", "uscc"],
                   [("ix_land_links_uscc", "uscc", "btree")], False),
    "sublots": (["year", "identity_code", "uscc"], ["year", "identity_code", "uscc"],
                [("idx_sublots_geom", "geom", "gist")], False),
    "enterprise_land": (["year", "uscc"], ["year", "uscc"], [], False),
    "parcel_metrics": (["identity_code", "year"], ["identity_code", "year"], [], False),
    "enterprise_ratings": (["run_id", "uscc", "year"], ["run_id", "uscc"],
                           [("ix_enterprise_ratings_uscc", "uscc", "btree")], True),
    "parcel_ratings": (["run_id", "identity_code", "year"], ["run_id", "identity_code"],
                       [("ix_parcel_ratings_identity_code", "identity_code", "btree")], True),
}
_RATINGS = ("enterprise_ratings", "parcel_ratings")
_YEAR_COMMENT = "year of the run (partition key; 0 = written without it)"

ENSURE_YEAR_SQL = """
CREATE OR REPLACE FUNCTION mujun_ensure_year(y integer) RETURNS integer
LANGUAGE plpgsql AS $$
-- Create the partitions of year y of every per-year table that lacks one (migration 0007).
-- Rows of y already in a default partition move to the new partition. Returns how many were made.
DECLARE
    t text;
    part text;
    made integer := 0;
BEGIN
    IF y IS NULL OR y <= 0 THEN  -- 0 = undated rows: they stay in the default partition
        RETURN 0;
    END IF;
    FOREACH t IN ARRAY ARRAY['land_links', 'sublots', 'enterprise_land', 'parcel_metrics',
                             'enterprise_ratings', 'parcel_ratings'] LOOP
        part := format('%s_y%s', t, y);
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        -- two writers reaching a new year at once: the second waits, then finds it made
        PERFORM pg_advisory_xact_lock(hashtext('mujun_ensure_year'), y);
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, t);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE year = %s RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved', t || '_default', y, part);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES IN (%s)', t, part, y);
        made := made + 1;
    END LOOP;
    RETURN made;
END $$;
"""


def _years(table: str) -> list[int]:
    return [r[0] for r in op.get_bind().execute(sa.text(
        f"SELECT DISTINCT year FROM {table} WHERE year > 0 ORDER BY year"))]


def upgrade() -> None:
    conn = op.get_bind()
    for table, (key, old_key, indexes, fk) in _TABLES.items():
        old = f"{table}_pre0007"
        op.execute(f"ALTER TABLE {table} RENAME TO {old}")
        if fk:
            op.execute(f"ALTER TABLE {old} DROP CONSTRAINT {table}_run_id_fkey")
        op.execute(f"ALTER TABLE {old} DROP CONSTRAINT {table}_pkey")
        for name, _, _ in indexes:
            op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS INCLUDING COMMENTS) "
                   "PARTITION BY LIST (year)" if table not in _RATINGS else
                   f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS INCLUDING COMMENTS, "
                   "year integer NOT NULL DEFAULT 0) PARTITION BY LIST (year)")
        if table in _RATINGS:
            op.execute(f"COMMENT ON COLUMN {table}.year IS '{_YEAR_COMMENT}'")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({', '.join(key)})")
        for name, col, method in indexes:
            op.execute(f"CREATE INDEX {name} ON {table} USING {method} ({col})")
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        cols = [c["name"] for c in sa.inspect(conn).get_columns(old)]
        col_list = ", ".join(cols)
        if table in _RATINGS:
            op.execute(f"INSERT INTO {table} ({col_list}, year) SELECT {', '.join('o.' + c for c in cols)}, "
                       f"r.year FROM {old} o JOIN evaluation_runs r ON r.id = o.run_id")
        else:
            op.execute(f"INSERT INTO {table} ({col_list}) SELECT {col_list} FROM {old}")
        if fk:
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_run_id_fkey FOREIGN KEY (run_id) "
                       "REFERENCES evaluation_runs (id) ON DELETE CASCADE")
        op.execute(f"DROP TABLE {old}")
    op.execute(ENSURE_YEAR_SQL)
    years = sorted({y for t in _TABLES for y in _years(t)})
    for y in years:
        op.execute(f"SELECT mujun_ensure_year({int(y)})")


def downgrade() -> None:
    conn = op.get_bind()
    op.execute("DROP FUNCTION IF EXISTS mujun_ensure_year(integer)")
    for table, (key, old_key, indexes, fk) in _TABLES.items():
        new = f"{table}_p0007"
        op.execute(f"ALTER TABLE {table} RENAME TO {new}")
        if fk:
            op.execute(f"ALTER TABLE {new} DROP CONSTRAINT {table}_run_id_fkey")
        op.execute(f"ALTER TABLE {new} DROP CONSTRAINT {table}_pkey")
        for name, _, _ in indexes:
            op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE TABLE {table} (LIKE {new} INCLUDING DEFAULTS INCLUDING COMMENTS)")
        if table in _RATINGS:
            op.execute(f"ALTER TABLE {table} DROP COLUMN year")
        cols = [c["name"] for c in sa.inspect(conn).get_columns(table)]
        col_list = ", ".join(cols)
        op.execute(f"INSERT INTO {table} ({col_list}) SELECT {col_list} FROM {new}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({', '.join(old_key)})")
        for name, col, method in indexes:
            op.execute(f"CREATE INDEX {name} ON {table} USING {method} ({col})")
        if fk:
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_run_id_fkey FOREIGN KEY (run_id) "
                       "REFERENCES evaluation_runs (id) ON DELETE CASCADE")
        op.execute(f"DROP TABLE {new}")  # its partitions go with it
