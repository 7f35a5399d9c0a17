"""The subscriptions gauge without reading every subscription row: a partial index of the
undeleted subscriptions by state, so that counting them (`deactivated_subscriptions`, every 5 s)
reads that small index instead of the table's wide rows
(docs/decisions/0018-store-wide-counts-at-scale.md).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"

_KEPT = "deleted_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "subscriptions_state",
        "subscriptions",
        # With the condition's own column: SQLite then reads the index alone (covering).
        ["active", "deleted_at"],
        postgresql_where=sa.text(_KEPT),
        sqlite_where=sa.text(_KEPT),
    )


def downgrade() -> None:
    op.drop_index("subscriptions_state", "subscriptions")
