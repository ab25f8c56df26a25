"""A county in every township scope: keys, users, proposals, appeals, groups, cached features.

Since migration 0009 one database may hold a whole province, and townships (镇街) of different
counties often share a name (城关镇, 新城街道 …). A scope given by a township name alone would
then see another county's land and confidential figures. Every place that records a scope or a
row's township therefore gets ``county`` (6-digit 县级行政区划代码) next to it:

* ``api_keys.county``, ``users.county``: the county the key/user is limited to; NULL = the
  database's one county (a county database, where every subject's county is NULL).
  :meth:`app.auth.Principal.region_clause` is the one rule that reads them.
* ``correction_proposals.county``, ``appeals.county``, ``saved_groups.county``: the county of the
  land/enterprise/creator, as ``township`` already records its township.
* ``feature_cache.county``: ``Layer.township_sql``'s county, so the cache answers a scoped
  caller with exactly the rows the dynamic path gives. The cache's state is cleared: it is
  served again once rebuilt with counties (the next render), the tables answer meanwhile.

Plain nullable columns: no rewrite, no default. Existing keys, users, proposals, appeals and
groups keep NULL, which on a county database is what they mean (see :mod:`app.auth` for a
township scope without a county on a province database: it sees nothing).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: Union[str, None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_SCOPE = "NULL = the database's one county; else the 6-digit 县级行政区划代码 the scope is limited to"
_ROW = "县级行政区划代码 of its township (NULL = the database's one county)"
_COLUMNS = (
    ("api_keys", _SCOPE),
    ("users", _SCOPE),
    ("correction_proposals", _ROW),
    ("appeals", _ROW),
    ("saved_groups", "the creator's county: NULL = the database's one county"),
    ("feature_cache", "Layer.township_sql's county: rows of a county-scoped key"),
)


def upgrade() -> None:
    for table, comment in _COLUMNS:
        op.add_column(table, sa.Column("county", sa.Text, comment=comment))
    # Cached rows have no county yet: invalid until rebuilt (the dynamic path answers meanwhile),
    # else a township-scoped read of the cache could see a same-named township of another county.
    op.execute("DELETE FROM feature_cache_state")


def downgrade() -> None:
    for table, _comment in _COLUMNS:
        op.drop_column(table, "county")
