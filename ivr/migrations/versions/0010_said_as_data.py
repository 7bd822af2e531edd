"""reasons and audit details kept as data (a code and its values, JSON) beside their English,
so that the console says them in its reader's language (ivr/reasons.py)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 18:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route_reason_data", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("status_reason_data", sa.Text(), nullable=True))
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_column("data")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("status_reason_data")
        batch_op.drop_column("route_reason_data")
