"""Personal data at rest: what marks a payload as removed (erased at a customer's request or
past the payload retention), the index an erasure finds a customer's events by, the store's own
sealed keys, the erasure receipts an auditor reads, and a subscription's `data_fields`.

Event bodies, response excerpts, static header values and signing secrets are sealed by the
service's key ring from this revision on (docs/decisions/0007-sealing-and-lookup-keys.md); rows
written before it are read as they are and sealed by `identity-webhooks rekey`. A removed
payload is an empty `body`: no table is rebuilt to relax a NOT NULL.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("payload_removed_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("payload_removed_reason", sa.Text, nullable=True))
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("data_fields", sa.Text, nullable=True))  # JSON list
    # An erasure: the org's events about one customer (by the keyed hash of its id).
    op.create_index("events_customer", "events", ["org_id", "customer_id"])
    # The payload retention: excerpts still kept, oldest first.
    op.create_index(
        "attempts_excerpt",
        "attempts",
        ["started_at"],
        postgresql_where=sa.text("response_excerpt IS NOT NULL"),
        sqlite_where=sa.text("response_excerpt IS NOT NULL"),
    )
    # Keys the store generates for itself (the customer lookup key), sealed by the key ring.
    op.create_table(
        "store_keys",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    # What each erasure removed, for the org's auditors: the customer by its keyed hash only.
    op.create_table(
        "erasures",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("org_id", sa.Text, nullable=False),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("erased_at", sa.BigInteger, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("cancelled", sa.Integer, nullable=False),
    )
    op.create_index("erasures_customer", "erasures", ["org_id", "customer_key"])


def downgrade() -> None:
    op.drop_index("erasures_customer", "erasures")
    op.drop_table("erasures")
    op.drop_table("store_keys")
    op.drop_index("attempts_excerpt", "attempts")
    op.drop_index("events_customer", "events")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("data_fields")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("payload_removed_reason")
        batch.drop_column("payload_removed_at")
