"""erasure: a purged call or recording forgets its provider id (CallSid, RecordingSid)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.alter_column("call_sid", existing_type=sa.String(length=64), nullable=True)
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.alter_column("recording_sid", existing_type=sa.String(length=64), nullable=True)
    # Recordings of cases purged before this version: their sid and byte size go now.
    op.execute("UPDATE recordings SET recording_sid = NULL, audio_bytes = NULL WHERE id IN "
               "(SELECT recording_id FROM cases WHERE purged_at IS NOT NULL)")


def downgrade() -> None:
    pass  # a forgotten sid cannot come back; the columns may stay nullable
