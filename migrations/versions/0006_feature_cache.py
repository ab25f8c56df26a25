"""GeoJSON features rendered once (app.feature_cache): ``feature_cache`` holds each feature's GeoJSON
text per collection and visibility class, with its order key, township and geometry;
``feature_cache_state`` says for which data version and evaluation run a (collection, class) was
built — the cache is read only while that version is current.

Logged tables (unlike ``tile_cache``): a read replica gets them too, and after a crash the rows and
their state row are consistent (an UNLOGGED cache would come back empty while a logged state row
still called it valid).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "feature_cache",
        sa.Column("collection", sa.Text, nullable=False, comment="layer id (app.api.layers)"),
        sa.Column("visibility", sa.Text, nullable=False,
                  comment="visibility class: public | link | viewer | analyst (app.auth)"),
        sa.Column("key", sa.Text, nullable=False, comment="the layer's order key (Layer.key_sql), = the feature id"),
        sa.Column("township", sa.Text, comment="Layer.township_sql: rows of a region-scoped key"),
        sa.Column("geom", Geometry(geometry_type="GEOMETRY", srid=4490, spatial_index=False),
                  comment="Layer.geom_sql: bbox filters"),
        sa.Column("feature", sa.Text, nullable=False, comment="the Feature's GeoJSON text (CRS84)"),
        sa.PrimaryKeyConstraint("collection", "visibility", "key"),
    )
    op.create_index("ix_feature_cache_township", "feature_cache", ["collection", "visibility", "township", "key"])
    op.create_geospatial_index("idx_feature_cache_geom", "feature_cache", ["geom"], postgresql_using="gist")
    op.create_table(
        "feature_cache_state",
        sa.Column("collection", sa.Text, nullable=False),
        sa.Column("visibility", sa.Text, nullable=False),
        sa.Column("data_version", sa.BigInteger, nullable=False, comment="served only while this is current"),
        sa.Column("run_id", sa.BigInteger, comment="the evaluation run rendered (NULL: none, ungraded land)"),
        sa.Column("features", sa.BigInteger, nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("collection", "visibility"),
    )


def downgrade() -> None:
    op.drop_table("feature_cache_state")
    op.drop_geospatial_index("idx_feature_cache_geom", table_name="feature_cache", postgresql_using="gist",
                             column_name="geom")
    op.drop_index("ix_feature_cache_township", table_name="feature_cache")
    op.drop_table("feature_cache")
