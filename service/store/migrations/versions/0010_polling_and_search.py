"""Polling subscriptions and search (docs/decisions/0014-polling-and-listen.md): a
subscription's `delivery` (`push` or `poll`); per polling subscription a feed row, whose counter
stamps each of its deliveries with its place in the feed (`poll_seq`) and whose row lock makes
the stamps commit in order, and how far its reader has read (`acked`, `read_at`); and the keyed
hash of an event's `data.verificationId` (`verification_key`), indexed as the customer's is, so
the delivery log is searched by it without opening a payload.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"

_IN_FEED = "poll_seq IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("delivery", sa.Text, nullable=False, server_default="push"))
    op.create_table(
        "poll_feeds",
        sa.Column("subscription_id", sa.Text, primary_key=True),
        sa.Column("top", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("acked", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("read_at", sa.BigInteger, nullable=True),
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("poll_seq", sa.BigInteger, nullable=True))
    op.create_index(
        "deliveries_feed",
        "deliveries",
        ["subscription_id", "poll_seq"],
        postgresql_where=sa.text(_IN_FEED),
        sqlite_where=sa.text(_IN_FEED),
    )
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("verification_key", sa.Text, nullable=True))
    op.create_index("events_verification", "events", ["org_id", "verification_key"])


def downgrade() -> None:
    op.drop_index("events_verification", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("verification_key")
    op.drop_index("deliveries_feed", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("poll_seq")
    op.drop_table("poll_feeds")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("delivery")
