"""The yearly cycle in the browser (issue 15): users, background jobs, 纠偏 proposals, appeals,
saved selections (宗地组/企业组).

* ``users``: people signing in to the web app; role viewer / analyst / officer (township officer,
  limited to its township) / admin; argon2id password hashes only.
* ``jobs``: validation and import jobs run in the background (app/jobs.py), with their progress.
* ``correction_proposals``: a township officer's proposed link correction; accepted ones are
  written to ``link_corrections`` (applied by the next ``mujun match``).
* ``appeals``: an enterprise's appeal against a draft grade and its answer.
* ``saved_groups``: named groups of parcels or enterprises.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: Union[str, None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_now = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("username", sa.Text(), nullable=False, unique=True),
        sa.Column("display_name", sa.Text()),
        sa.Column("password_hash", sa.Text(), nullable=False, comment="argon2id; the password itself is never stored"),
        sa.Column("role", sa.Text(), nullable=False, comment="viewer | analyst | officer (township officer) | admin"),
        sa.Column("township", sa.Text(), comment="NULL = whole county; else the township the user is limited to"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("last_login_at", sa.DateTime(timezone=True)),
        sa.Column("disabled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("role IN ('viewer', 'analyst', 'officer', 'admin')", name="users_role"),
        sa.CheckConstraint("role <> 'officer' OR township IS NOT NULL", name="users_officer_township"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False, comment="validate | import"),
        sa.Column("status", sa.Text(), nullable=False, server_default="queued",
                  comment="queued | running | done | failed | refused"),
        sa.Column("stage", sa.Text(), comment="what it is doing now (Chinese, shown in the progress bar)"),
        sa.Column("rows_read", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("rows_total", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("rows_rejected", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("params", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("result", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("error", sa.Text()),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "correction_proposals",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("uscc", sa.Text(), nullable=False),
        sa.Column("parcel_code", sa.Text(), nullable=False),
        sa.Column("township", sa.Text(), comment="the land's township (who may propose / see it)"),
        sa.Column("action", sa.Text(), nullable=False, comment="add (is on this land) | remove (is not)"),
        sa.Column("share", sa.Float()),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="proposed",
                  comment="proposed | accepted | rejected"),
        sa.Column("answer", sa.Text()),
        sa.Column("proposed_by", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("action IN ('add', 'remove')", name="correction_proposals_action"),
        sa.CheckConstraint("status IN ('proposed', 'accepted', 'rejected')", name="correction_proposals_status"),
    )
    op.create_table(
        "appeals",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("run_id", sa.BigInteger(), sa.ForeignKey("evaluation_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("uscc", sa.Text(), nullable=False),
        sa.Column("township", sa.Text()),
        sa.Column("grade", sa.Text(), comment="the draft grade appealed against"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="submitted",
                  comment="submitted | under_review | accepted | rejected"),
        sa.Column("answer", sa.Text()),
        sa.Column("submitted_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.CheckConstraint("status IN ('submitted', 'under_review', 'accepted', 'rejected')", name="appeals_status"),
    )
    op.create_index(op.f("ix_appeals_uscc"), "appeals", ["uscc"])
    op.create_table(
        "saved_groups",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False, comment="parcels 宗地组 | enterprises 企业组"),
        sa.Column("members", sa.ARRAY(sa.Text()), nullable=False, comment="宗地身份码 or USCC"),
        sa.Column("township", sa.Text(), comment="the creator's scope: NULL = county"),
        sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false(), comment="shared with the county"),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.CheckConstraint("kind IN ('parcels', 'enterprises')", name="saved_groups_kind"),
    )


def downgrade() -> None:
    op.drop_table("saved_groups")
    op.drop_index(op.f("ix_appeals_uscc"), table_name="appeals")
    op.drop_table("appeals")
    op.drop_table("correction_proposals")
    op.drop_table("jobs")
    op.drop_table("users")
