"""keypad intake: the caller's answers kept on the case (sealed), and `urgent` in clear for
the queue's order (first) and the shorter re-offer

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-05 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The queue's order begins with the urgent cases now: its index too (dropped first: SQLite's
    # batch mode may copy the table, and an index on expressions does not survive the copy).
    op.drop_index("ix_cases_queue", table_name="cases")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("intake", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("urgent", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_cases_queue", "cases", [sa.text("urgent DESC"),
                                                sa.text("(operator_id IS NOT NULL)"),
                                                sa.text("(acted_at IS NOT NULL)"),
                                                sa.text("created_at DESC"), sa.text("id DESC")])
    # The urgent cases (few): the queue's "overdue" figure counts those overdue sooner from it.
    op.create_index("ix_cases_urgent", "cases", ["assigned_at"], postgresql_where=sa.text("urgent"),
                    sqlite_where=sa.text("urgent = 1"))


def downgrade() -> None:
    op.drop_index("ix_cases_urgent", table_name="cases")
    op.drop_index("ix_cases_queue", table_name="cases")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("urgent")
        batch_op.drop_column("intake")
    op.create_index("ix_cases_queue", "cases", [sa.text("(operator_id IS NOT NULL)"),
                                                sa.text("(acted_at IS NOT NULL)"),
                                                sa.text("created_at DESC"), sa.text("id DESC")])
