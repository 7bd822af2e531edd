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
    # Cases purged before this version: what a purge now leaves, their recordings' sid and
    # byte size gone, times to the day, lengths to a bucket (their calls are deleted at
    # Twilio, and their sids dropped, by the next hourly retention run).
    op.execute("UPDATE recordings SET recording_sid = NULL, audio_bytes = NULL, error = NULL WHERE id IN "
               "(SELECT recording_id FROM cases WHERE purged_at IS NOT NULL)")
    when = sa.DateTime(timezone=True)
    coarse = {
        "cases": ("id", ["created_at", "transcribed_at", "routed_at", "closed_at", "assigned_at",
                         "notified_at", "acted_at", "next_callback_at", "purged_at"], [],
                  "purged_at IS NOT NULL"),
        "recordings": ("id", ["reported_at", "stored_at", "deleted_at_provider"], ["duration"],
                       "id IN (SELECT recording_id FROM cases WHERE purged_at IS NOT NULL)"),
        "callback_attempts": ("id", ["started_at", "confirmed_at", "ended_at"], ["seconds"],
                              "case_id IN (SELECT id FROM cases WHERE purged_at IS NOT NULL)"),
        "notes": ("id", ["at"], [], "case_id IN (SELECT id FROM cases WHERE purged_at IS NOT NULL)"),
        "audit": ("id", ["at"], [], "case_id IN (SELECT id FROM cases WHERE purged_at IS NOT NULL)"),
    }
    bind = op.get_bind()
    for name, (key, times, lengths, where) in coarse.items():
        table = sa.table(name, sa.column(key, sa.Integer()), *(sa.column(c, when) for c in times),
                         *(sa.column(c, sa.Integer()) for c in lengths))
        rows = bind.execute(sa.select(table).where(sa.text(where))).mappings().all()
        changes = [{"b_key": row[key],
                    **{c: row[c].replace(hour=0, minute=0, second=0, microsecond=0) if row[c] else None
                       for c in times},
                    **{c: _bucket(row[c]) for c in lengths}} for row in rows]
        if changes:
            bind.execute(table.update().where(table.c[key] == sa.bindparam("b_key")), changes)


def _bucket(seconds: int | None) -> int | None:
    """As ivr.voicemail.length_bucket (<30 s, 30-60 s, 1-3 min, 3+ min), frozen here."""
    if seconds is None:
        return None
    return max(b for b in (0, 30, 60, 180) if seconds >= b) if seconds >= 0 else 0


def downgrade() -> None:
    pass  # a forgotten sid cannot come back; the columns may stay nullable
