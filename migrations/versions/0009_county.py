"""A county for each subject: ``enterprises.county`` and ``parcels.county`` (issue 16).

One database may hold a whole province (``mujun run --province … --db``), but the 亩均论英雄
ratings are county-level 综合评价: baselines and ranks are taken within a county (and industry
group). ``mujun evaluate`` therefore needs to know which county each enterprise and each piece of
land belongs to, so that re-evaluating a province database gives the province run's grades.

The column is the 6-digit 县级行政区划代码 (GB/T 2260; a 宗地代码 starts with it, GB/T 37346).
NULL = the database's one county: every county import (``mujun import``) leaves it NULL, and a
database whose subjects all have NULL is rated as one county, exactly as before. The province
writer (``app.province_db``) fills it from the province run's outputs.

Neither table is partitioned (migration 0007: ``parcels`` is not, ``enterprises`` has no year),
so this is a plain nullable column on each: no rewrite, no default, no index (evaluation reads
every subject of the year and groups them in memory).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_COMMENT = "县级行政区划代码 (6 digits) of the county it belongs to; NULL = the database's one county"


def upgrade() -> None:
    for table in ("enterprises", "parcels"):
        op.add_column(table, sa.Column("county", sa.Text, comment=_COMMENT))


def downgrade() -> None:
    for table in ("enterprises", "parcels"):
        op.drop_column(table, "county")
