"""Subscriptions stamped with the revision that last changed them (`change_seq`), so every
replica's index reads only what changed since its last read instead of every active
subscription (docs/decisions/0008-index-follows-changes.md).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("change_seq", sa.BigInteger, nullable=False, server_default="0"))
    op.create_index("subscriptions_changes", "subscriptions", ["change_seq"])


def downgrade() -> None:
    op.drop_index("subscriptions_changes", "subscriptions")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("change_seq")
