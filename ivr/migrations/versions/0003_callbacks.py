"""consent and callbacks: the caller's consent on the case, callback attempts, supervisors

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=24), nullable=True),
        sa.Column("seconds", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["operator_id"], ["operators.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("call_sid"),
    )
    with op.batch_alter_table("callback_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_callback_attempts_case_id"), ["case_id"], unique=False)
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consent", sa.String(length=8), nullable=True))
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consent", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("caller_tz", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("acted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("offered_to", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("reoffers", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("callback_status", sa.String(length=12), nullable=True))
        batch_op.add_column(sa.Column("callback_attempts", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("next_callback_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_cases_next_callback_at"), ["next_callback_at"],
                              unique=False)
        batch_op.create_index("ix_cases_status_operator_id", ["status", "operator_id"], unique=False)
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=12), nullable=False,
                                      server_default="operator"))


def downgrade() -> None:
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.drop_column("role")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_status_operator_id")
        batch_op.drop_index(batch_op.f("ix_cases_next_callback_at"))
        for column in ("next_callback_at", "callback_attempts", "callback_status", "reoffers",
                       "acted_at", "offered_to", "notified_at", "caller_tz", "consent"):
            batch_op.drop_column(column)
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("consent")
    with op.batch_alter_table("callback_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callback_attempts_case_id"))
    op.drop_table("callback_attempts")
