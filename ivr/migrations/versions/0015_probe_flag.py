"""the probe flag: a case marked a possible intelligence probe, its sealed reason, its operator

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

CONSOLE = ["status", "region", "language", "operator_id", "acted_at", "assigned_at",
           "callback_status", "next_callback_at"]


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flag", sa.String(length=12), nullable=True))
        batch_op.add_column(sa.Column("flag_reason", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("flagged_from", sa.Integer(), nullable=True))
    # The queue's figures leave flagged cases out for operators: read from the index alone.
    op.drop_index("ix_cases_console", table_name="cases")
    op.create_index("ix_cases_console", "cases", [*CONSOLE, "flag"])


def downgrade() -> None:
    op.drop_index("ix_cases_console", table_name="cases")
    op.create_index("ix_cases_console", "cases", CONSOLE)
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("flagged_from")
        batch_op.drop_column("flag_reason")
        batch_op.drop_column("flag")
