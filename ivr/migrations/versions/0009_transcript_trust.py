"""transcripts operators can trust: the language transcribed in, the mean word confidence,
the words with their confidences (sealed), and what the guard against model failures noticed

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transcript_language", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("transcript_confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("transcript_words", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("transcript_flags", sa.String(length=80), nullable=True))
    # Cases transcribed before: in the language the caller chose (nothing else was possible).
    op.execute("UPDATE cases SET transcript_language = language WHERE transcript_engine IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("transcript_flags")
        batch_op.drop_column("transcript_words")
        batch_op.drop_column("transcript_confidence")
        batch_op.drop_column("transcript_language")
