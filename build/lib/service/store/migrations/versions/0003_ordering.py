"""Ordered delivery per customer (issue 14): a subscription's `ordering` (`none` or
`customer`), the customer an event is about, and per delivery of an ordered subscription its
customer (`ordering_key`) and its place in the store-wide order (`seq`).

A delivery with a `seq` is claimable only when no open delivery of the same subscription and
customer has a smaller one: the index below answers that with one step per claim candidate.
`seq` comes from a sequence on PostgreSQL (no lock shared by ingesting replicas) and from a
counter row in `store_meta` on SQLite (one writer anyway).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

_OPEN_ORDERED = "status IN ('pending', 'retrying') AND seq IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("ordering", sa.Text, nullable=False, server_default="none"))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("customer_id", sa.Text, nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("ordering_key", sa.Text, nullable=True))
        batch.add_column(sa.Column("seq", sa.BigInteger, nullable=True))
    op.create_index(
        "deliveries_ordered",
        "deliveries",
        ["subscription_id", "ordering_key", "seq"],
        postgresql_where=sa.text(_OPEN_ORDERED),
        sqlite_where=sa.text(_OPEN_ORDERED),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE delivery_seq")
    else:
        op.execute("INSERT INTO store_meta (name, value) VALUES ('delivery_seq', 0)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE delivery_seq")
    else:
        op.execute("DELETE FROM store_meta WHERE name = 'delivery_seq'")
    op.drop_index("deliveries_ordered", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("seq")
        batch.drop_column("ordering_key")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("customer_id")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("ordering")
