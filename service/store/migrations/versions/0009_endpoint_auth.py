"""A subscription's authentication toward its endpoint (`auth`: one JSON object sealed by the
key ring, credentials and all) and the CA bundle its endpoint's certificate must chain to
(`ca_certificate`: PEM, public, kept as given)
(docs/decisions/0011-endpoint-authentication.md).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("auth", sa.Text, nullable=True))
        batch.add_column(sa.Column("ca_certificate", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("ca_certificate")
        batch.drop_column("auth")
