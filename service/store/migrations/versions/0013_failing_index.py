"""`failing` on housekeeping's minute timer without reading every subscription: a partial index
of the subscriptions in a run of failures not yet announced, by when the run began, so that
`announce_failing` probes it instead of scanning the table
(docs/decisions/0017-failing-on-a-timer-and-the-console.md).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"

_UNANNOUNCED = "failing_since IS NOT NULL AND alerted_at IS NULL AND deleted_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "subscriptions_failing",
        "subscriptions",
        ["failing_since"],
        postgresql_where=sa.text(_UNANNOUNCED),
        sqlite_where=sa.text(_UNANNOUNCED),
    )


def downgrade() -> None:
    op.drop_index("subscriptions_failing", "subscriptions")
