"""``feature_cache`` is read without parallel workers: a page is a short range read of ≤ 1,001
rows, and starting workers cost more than the read. Measured on 100k parcels (EXPLAIN ANALYZE,
limit=1000 + a bbox of a quarter of the county): 37 ms with a Gather Merge of 2 workers, 5 ms
serial (bench/RESULTS.md, "Issue 17 targets").

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0008"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("ALTER TABLE feature_cache SET (parallel_workers = 0)")


def downgrade() -> None:
    op.execute("ALTER TABLE feature_cache RESET (parallel_workers)")
