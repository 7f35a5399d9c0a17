"""A month of history without the retention reading it again and again
(docs/decisions/0013-history-at-scale.md): the payload retention walks only the events that still
have their payload (a partial index), and on PostgreSQL the tables the retention deletes from are
vacuumed after 2 % of their rows changed instead of 20 %, so the space deletes free is reused
before the tables grow.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

_VACUUMED = ("events", "deliveries", "attempts")
_KEPT = "payload_removed_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "events_payload_kept",
        "events",
        ["received_at"],
        postgresql_where=sa.text(_KEPT),
        sqlite_where=sa.text(_KEPT),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in _VACUUMED:
            op.execute(
                f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.02, "
                "autovacuum_analyze_scale_factor = 0.02)"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _VACUUMED:
            op.execute(
                f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor, "
                "autovacuum_analyze_scale_factor)"
            )
    op.drop_index("events_payload_kept", "events")
