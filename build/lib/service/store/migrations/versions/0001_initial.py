"""Initial schema: API keys, subscriptions, events, deliveries, attempts.

Times are epoch milliseconds (BIGINT) in both databases: one representation, cheap to compare
and index, no time-zone handling in SQL. The API renders them as RFC 3339.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

_OPEN = "status IN ('pending', 'retrying')"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("org_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("org_id", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=False),  # JSON list of event names
        sa.Column("installed_by", sa.Text, nullable=True),
        sa.Column("secret_enc", sa.Text, nullable=False),  # Fernet token
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("deactivated_reason", sa.Text, nullable=True),
        sa.Column("failing_since", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
    )
    op.create_index("subscriptions_org", "subscriptions", ["org_id", "id"])
    # A change counter: every subscription write bumps it in the same transaction, so each
    # replica's in-memory index knows with one cheap read whether to reload.
    op.create_table(
        "store_meta",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO store_meta (name, value) VALUES ('subscriptions_revision', 0)")
    # Keyed by (org, id): an event id reused by another org is another event, so one org's
    # body can never be delivered to another org's subscription.
    op.create_table(
        "events",
        sa.Column("org_id", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("occurred_at", sa.BigInteger, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("sibling_service", sa.Text, nullable=True),
        sa.Column("source", sa.Text, nullable=True),  # topic/partition/offset it came from
        sa.Column("received_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("org_id", sa.Text, nullable=False),
        sa.Column("subscription_id", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("last_attempt_at", sa.BigInteger, nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("lease_owner", sa.Text, nullable=True),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("event_id", "subscription_id", name="deliveries_event_subscription"),
    )
    # Due work: only open deliveries are indexed, so the index stays small however long the
    # retention.
    op.create_index(
        "deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text(_OPEN),
        sqlite_where=sa.text(_OPEN),
    )
    op.create_index("deliveries_subscription", "deliveries", ["subscription_id", "created_at"])
    op.create_index("deliveries_retention", "deliveries", ["updated_at"])
    op.create_table(
        "attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("delivery_id", sa.Text, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("result", sa.Text, nullable=False),  # 2xx, 3xx, 4xx, 5xx, timeout, connection
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("response_excerpt", sa.Text, nullable=True),  # first 1 KiB of the body
    )
    op.create_index("attempts_delivery", "attempts", ["delivery_id"])


def downgrade() -> None:
    for table in ("attempts", "deliveries", "events", "store_meta", "subscriptions", "api_keys"):
        op.drop_table(table)
