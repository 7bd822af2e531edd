"""operators, and where each case was assigned and why

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("data_key_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.LargeBinary(), nullable=False),
        sa.Column("languages", sa.String(length=40), nullable=False),
        sa.Column("regions", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("hours", sa.String(length=200), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("on_duty", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("last_assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("operator_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("route_reason", sa.String(length=300), nullable=True))
        batch_op.create_index(batch_op.f("ix_cases_operator_id"), ["operator_id"], unique=False)
        batch_op.create_foreign_key("fk_cases_operator_id", "operators", ["operator_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_constraint("fk_cases_operator_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_cases_operator_id"))
        batch_op.drop_column("route_reason")
        batch_op.drop_column("assigned_at")
        batch_op.drop_column("operator_id")
    op.drop_table("operators")
