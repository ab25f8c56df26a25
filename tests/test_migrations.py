"""Migrations up and down on a real PostGIS: tables, spatial indexes, clean downgrade."""

import sqlalchemy as sa

from app import db
from app.models import metadata

SPATIAL_TABLES = {"parcels", "buildings", "enterprises", "sublots"}


def _tables(conn) -> set[str]:
    return {r[0] for r in conn.execute(sa.text(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))}


def _gist_indexes(conn) -> dict[str, str]:
    rows = conn.execute(sa.text(
        "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexdef ILIKE '%USING gist%'"))
    return {r[0]: r[1] for r in rows}


def test_upgrade_creates_every_table_and_gist_index(empty_db_url):
    db.upgrade(empty_db_url)
    eng = sa.create_engine(empty_db_url)
    with eng.connect() as conn:
        tables = _tables(conn)
        assert set(metadata.tables) <= tables
        gist = _gist_indexes(conn)
        assert SPATIAL_TABLES <= set(gist)
        assert all("(geom)" in gist[t] for t in SPATIAL_TABLES)
        assert db.current_revision(conn) == db.head_revision()
        geom_types = dict(conn.execute(sa.text(
            "SELECT f_table_name, type || ':' || srid FROM geometry_columns WHERE f_table_schema = 'public'")).all())
        assert geom_types["parcels"] == "MULTIPOLYGON:4490"
        assert geom_types["enterprises"] == "POINT:4490"
        # Constraints are real: a bad land kind is refused by the database itself.
        try:
            conn.execute(sa.text(
                "INSERT INTO parcels (identity_code, kind, area_m2, area_mu, geom) VALUES "
                "('x', 'bogus', 1, 1, ST_Multi(ST_GeomFromText('POLYGON((120 30,120.001 30,120.001 30.001,120 30))', 4490)))"))
            raise AssertionError("kind check constraint missing")
        except sa.exc.IntegrityError:
            conn.rollback()
    eng.dispose()


def test_downgrade_to_base_removes_everything_and_upgrade_again(empty_db_url):
    db.upgrade(empty_db_url)
    db.downgrade(empty_db_url, "base")
    eng = sa.create_engine(empty_db_url)
    with eng.connect() as conn:
        left = _tables(conn) - {"spatial_ref_sys", "alembic_version"}
        assert left == set()
        assert _gist_indexes(conn) == {}
        assert db.current_revision(conn) is None
    eng.dispose()
    db.upgrade(empty_db_url)
    eng = sa.create_engine(empty_db_url)
    with eng.connect() as conn:
        assert set(metadata.tables) <= _tables(conn)
    eng.dispose()


def test_models_match_migrations(db_url):
    """The migrations and app/models.py describe the same schema (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from geoalchemy2 import alembic_helpers

    def include(obj, name, type_, reflected, compare_to):
        if type_ == "table" and reflected and compare_to is None:
            return False  # PostGIS's own tables
        return alembic_helpers.include_object(obj, name, type_, reflected, compare_to)

    eng = sa.create_engine(db_url)
    with eng.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": include})
        diff = compare_metadata(ctx, metadata)
    eng.dispose()
    assert diff == []
