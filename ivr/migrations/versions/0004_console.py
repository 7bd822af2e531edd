"""the operator console: sign-in (password, TOTP, lock-out), notes, a case's outcome; each
operator's count of open cases (read by the assignment rule)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 21:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["operator_id"], ["operators.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notes_case_id"), ["case_id"], unique=False)
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seconds", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_calls_started_at"), ["started_at"], unique=False)
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(length=24), nullable=True))
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_hash", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("totp_secret", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("totp_enrolled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("totp_last_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("locale", sa.String(length=5), nullable=False, server_default="uk"))
        batch_op.add_column(sa.Column("open_cases", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE operators SET open_cases = (SELECT count(*) FROM cases WHERE cases.operator_id = "
               "operators.id AND cases.status IN ('new', 'transcribed', 'transcription_failed', 'routed'))")
    # The console's queue: its order, and what its figures and filters read (bench/console.py).
    op.create_index("ix_cases_queue", "cases", [sa.text("(operator_id IS NOT NULL)"),
                                                sa.text("(acted_at IS NOT NULL)"),
                                                sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index("ix_cases_console", "cases", ["status", "region", "language", "operator_id", "acted_at",
                                                  "assigned_at", "callback_status", "next_callback_at"])


def downgrade() -> None:
    op.drop_index("ix_cases_console", table_name="cases")
    op.drop_index("ix_cases_queue", table_name="cases")
    with op.batch_alter_table("operators", schema=None) as batch_op:
        for column in ("open_cases", "locale", "session_epoch", "locked_until", "failed_logins",
                       "totp_last_step", "totp_enrolled_at", "totp_secret", "password_hash"):
            batch_op.drop_column(column)
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("outcome")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calls_started_at"))
        batch_op.drop_column("seconds")
    with op.batch_alter_table("notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notes_case_id"))
    op.drop_table("notes")
