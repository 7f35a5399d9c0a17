"""A subscription's content filter (`content_filter`): the JSON document that narrows the events
of its types it receives, sealed by the key ring as the static header values are
(docs/decisions/0009-content-filters.md). NULL: every event of its types.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("content_filter", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("content_filter")
