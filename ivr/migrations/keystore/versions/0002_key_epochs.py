"""key epochs: data keys wrapped by a key-encryption key kept in a file (KEY_EPOCH_DIR)

Existing keys stay wrapped by their master key (epoch_id NULL) until the first start after
the upgrade re-wraps them under a new epoch (Vault.prepare): a migration has no master keys.

Revision ID: k0002
Revises: k0001
Create Date: 2026-12-05 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "k0002"
down_revision = "k0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_epochs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("current"),
    )
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epoch_id", sa.String(length=40), nullable=True))
        batch_op.alter_column("master_id", existing_type=sa.String(length=40), nullable=True)
        batch_op.create_index(batch_op.f("ix_data_keys_epoch_id"), ["epoch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_data_keys_purpose"), ["purpose"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_keys_purpose"))
        batch_op.drop_index(batch_op.f("ix_data_keys_epoch_id"))
        batch_op.drop_column("epoch_id")
    op.drop_table("key_epochs")
