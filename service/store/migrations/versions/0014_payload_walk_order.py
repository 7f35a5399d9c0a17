"""The payload retention's walk in its own order: the partial index of the events that still
have their payload holds the whole key the walk is ordered by (received_at, org_id, id), so a
batch reads the next rows of the index instead of sorting every event received in the same
millisecond again for each batch (docs/decisions/0013-history-at-scale.md).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"

_KEPT = "payload_removed_at IS NULL"


def _payload_kept(columns: list[str]) -> None:
    op.drop_index("events_payload_kept", "events")
    op.create_index(
        "events_payload_kept",
        "events",
        columns,
        postgresql_where=sa.text(_KEPT),
        sqlite_where=sa.text(_KEPT),
    )


def upgrade() -> None:
    _payload_kept(["received_at", "org_id", "id"])


def downgrade() -> None:
    _payload_kept(["received_at"])
