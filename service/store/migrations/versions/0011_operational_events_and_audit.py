"""Operational events and the audit trail (docs/decisions/0015-operational-events-and-audit.md):
per subscription, who last changed it (`updated_by`) and when its current failure streak was
announced (`alerted_at`: a `failing` or `disabled` event sent, waiting for its `recovered`); and
`audit_log`, every change to the org's subscriptions and API keys, newest first by its
time-ordered id, kept for `WEBHOOKS_AUDIT_RETENTION`.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("updated_by", sa.Text, nullable=True))
        batch.add_column(sa.Column("alerted_at", sa.BigInteger, nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("org_id", sa.Text, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor_kind", sa.Text, nullable=False),
        sa.Column("actor_id", sa.Text, nullable=True),
        sa.Column("actor_name", sa.Text, nullable=True),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("subscription_id", sa.Text, nullable=True),
        sa.Column("api_key_id", sa.Text, nullable=True),
        sa.Column("changes", sa.Text, nullable=False),
    )
    op.create_index("audit_org", "audit_log", ["org_id", "id"])
    op.create_index("audit_subscription", "audit_log", ["org_id", "subscription_id", "id"])
    op.create_index("audit_retention", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("audit_retention", "audit_log")
    op.drop_index("audit_subscription", "audit_log")
    op.drop_index("audit_org", "audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("alerted_at")
        batch.drop_column("updated_by")
