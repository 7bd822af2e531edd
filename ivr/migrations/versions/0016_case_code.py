"""case codes and PINs: keyed hash and argon2 hash on the case, its lock-out, the calls between
code and PIN, and the wrong codes' times (the global slow-down)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code_hash", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("pin_hash", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("pin_failures", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("code_locked_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_cases_code_hash", ["code_hash"], unique=True)
    op.create_table(
        "code_entries",
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=8), nullable=False),
        sa.Column("first_pin", sa.String(length=200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("call_sid"),
    )
    op.create_table(
        "code_misses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alarm", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_code_misses_at", "code_misses", ["at"])


def downgrade() -> None:
    op.drop_index("ix_code_misses_at", table_name="code_misses")
    op.drop_table("code_misses")
    op.drop_table("code_entries")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_code_hash")
        batch_op.drop_column("code_locked_until")
        batch_op.drop_column("pin_failures")
        batch_op.drop_column("pin_hash")
        batch_op.drop_column("code_hash")
