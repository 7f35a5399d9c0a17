"""How a subscription signs its Standard Webhooks header: `signing` (`hmac` or `ed25519`), an
Ed25519 subscription's private key sealed by the key ring (and the one a rotation replaced,
signing too until `previous_secret_until`), its public key in clear (it is published), and
`hmac_headers` (false: no X-Identity-Signature nor X-Quantum-Signature)
(docs/decisions/0010-standard-webhooks-and-ed25519.md).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("signing", sa.Text, nullable=False, server_default="hmac"))
        batch.add_column(sa.Column("signing_key_enc", sa.Text, nullable=True))
        batch.add_column(sa.Column("previous_signing_key_enc", sa.Text, nullable=True))
        batch.add_column(sa.Column("public_key", sa.Text, nullable=True))
        batch.add_column(
            sa.Column("hmac_headers", sa.Boolean, nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("hmac_headers")
        batch.drop_column("public_key")
        batch.drop_column("previous_signing_key_enc")
        batch.drop_column("signing_key_enc")
        batch.drop_column("signing")
