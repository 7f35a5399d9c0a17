"""Operating it (issue 12): secret rotation, rate limits, static headers, the disable time, a
maintained failure streak, hourly health counters, and the indexes the delivery log, per-
subscription health and replay read through.

`subscription_stats` holds counters per (subscription, period, counter): `deliveries` (created,
per day, kept for the retention), `ok` (2xx attempts, per hour) and `le:<ms>` (attempts whose
duration fell in that latency bucket, per hour; their sum is the attempt count; kept for a day).
A subscription's health reads at most 30 days + 25 hours x ~20 counters however many deliveries
it has had; writers add to them once per written batch.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

_OPEN = "status IN ('pending', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        # The secret a rotation replaced, still signed with until `previous_secret_until`.
        batch.add_column(sa.Column("previous_secret_enc", sa.Text, nullable=True))
        batch.add_column(sa.Column("previous_secret_until", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("rate_limit", sa.Integer, nullable=True))
        batch.add_column(sa.Column("headers", sa.Text, nullable=True))  # JSON object
        batch.add_column(sa.Column("disabled_at", sa.BigInteger, nullable=True))
        batch.add_column(
            sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0")
        )
    op.create_table(
        "subscription_stats",
        sa.Column("subscription_id", sa.Text, primary_key=True),
        sa.Column("period", sa.BigInteger, primary_key=True),  # its hour or day: start, epoch ms
        sa.Column("counter", sa.Text, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_index("subscription_stats_period", "subscription_stats", ["period"])
    # What the deliveries already there count for, so deliveryCount does not restart at 0.
    op.execute(
        "INSERT INTO subscription_stats (subscription_id, period, counter, n) "
        "SELECT subscription_id, (created_at / 86400000) * 86400000, 'deliveries', count(*) "
        "FROM deliveries WHERE status <> 'cancelled' "
        "GROUP BY subscription_id, (created_at / 86400000) * 86400000"
    )
    # The log, newest first, by (createdAt, id): its cursor; and the same within one status.
    op.drop_index("deliveries_subscription", "deliveries")
    op.create_index("deliveries_log", "deliveries", ["subscription_id", "created_at", "id"])
    op.create_index(
        "deliveries_log_status", "deliveries", ["subscription_id", "status", "created_at", "id"]
    )
    # pendingCount and nextRetryAt: a subscription's open deliveries only.
    op.create_index(
        "deliveries_open_subscription",
        "deliveries",
        ["subscription_id", "next_attempt_at"],
        postgresql_where=sa.text(_OPEN),
        sqlite_where=sa.text(_OPEN),
    )
    # Replay: an org's events in a window.
    op.create_index("events_org_occurred", "events", ["org_id", "occurred_at"])
    op.create_index("events_retention", "events", ["received_at"])


def downgrade() -> None:
    op.drop_index("events_retention", "events")
    op.drop_index("events_org_occurred", "events")
    op.drop_index("deliveries_open_subscription", "deliveries")
    op.drop_index("deliveries_log_status", "deliveries")
    op.drop_index("deliveries_log", "deliveries")
    op.create_index("deliveries_subscription", "deliveries", ["subscription_id", "created_at"])
    op.drop_table("subscription_stats")
    with op.batch_alter_table("subscriptions") as batch:
        for column in (
            "consecutive_failures",
            "disabled_at",
            "headers",
            "rate_limit",
            "previous_secret_until",
            "previous_secret_enc",
        ):
            batch.drop_column(column)
