"""Vector tiles rendered once: ``tile_cache`` (app.cache), one row per tile and caller scope with
the data version it was rendered at. UNLOGGED: a cache, emptied after a crash, never replicated.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "tile_cache",
        sa.Column("layer", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("z", sa.SmallInteger, nullable=False),
        sa.Column("x", sa.Integer, nullable=False),
        sa.Column("y", sa.Integer, nullable=False),
        sa.Column("data_version", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.BigInteger),
        sa.Column("mvt", sa.LargeBinary),
        sa.PrimaryKeyConstraint("layer", "scope", "query", "z", "x", "y"),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("tile_cache")
