"""Polling subscriptions' feeds in SQL: a read after a place (the index on each feed's places),
the reader's progress acknowledged (what it has read past becomes `sent`), and each feed's
health. Places are given by `pipeline.stamp_feed` (docs/decisions/0014-polling-and-listen.md)."""

from __future__ import annotations

from collections.abc import Sequence

from service.domain import FeedCounts, FeedHealth, FeedItem, FeedPage, PayloadGone, PayloadRemoval
from service.store.crypto import Undecryptable
from service.store.sql.base import JOIN_EVENTS, Row, SqlBase

_OLDEST_UNREAD = (
    "(SELECT d.updated_at FROM deliveries d WHERE d.subscription_id = f.subscription_id "
    "AND d.poll_seq IS NOT NULL AND d.poll_seq > f.acked ORDER BY d.poll_seq LIMIT 1)"
)
"""When the oldest delivery after feed `f`'s acknowledged place entered it: through the feed's
index, one row per feed."""


class FeedsSql(SqlBase):
    """`interfaces.Feeds`' feeds (an event's trail is the log's: `DeliveryLogSql`)."""

    async def read_feed(self, subscription_id: str, after: int, limit: int) -> FeedPage:
        async with self._scan() as conn:
            rows = await conn.fetch(
                "SELECT d.poll_seq, d.id, d.event_id, d.event, d.created_at, d.org_id, "
                "e.occurred_at, e.body, e.sibling_service, e.payload_removed_at, "
                f"e.payload_removed_reason FROM deliveries d {JOIN_EVENTS} "
                "WHERE d.subscription_id = $1 AND d.poll_seq IS NOT NULL AND d.poll_seq > $2 "
                "AND d.status <> 'cancelled' ORDER BY d.poll_seq LIMIT $3",
                subscription_id,
                after,
                limit,
            )
            oldest = await conn.fetchrow(
                "SELECT min(poll_seq) AS seq FROM deliveries "
                "WHERE subscription_id = $1 AND poll_seq IS NOT NULL",
                subscription_id,
            )
        items = [self._item(row) for row in rows]
        kept = None if oldest is None or oldest["seq"] is None else int(oldest["seq"])
        return FeedPage(items, items[-1].seq if items else after, kept)

    def _item(self, row: Row) -> FeedItem:
        body: bytes | None = None
        gone = None
        if row["payload_removed_at"] is not None:
            reason = PayloadRemoval(row["payload_removed_reason"])
            gone = PayloadGone(reason, row["payload_removed_at"])
        else:
            try:
                body = self._open_body(row["org_id"], row["event_id"], bytes(row["body"]))
            except Undecryptable:
                gone = PayloadGone(None, None)
        return FeedItem(
            seq=int(row["poll_seq"]),
            delivery_id=row["id"],
            event_id=row["event_id"],
            event=row["event"],
            occurred_at=row["occurred_at"],
            created_at=row["created_at"],
            body=body,
            sibling_service=row["sibling_service"],
            gone=gone,
        )

    async def acknowledge(self, subscription_id: str, through: int) -> None:
        now = self._now()
        async with self._transaction() as conn:
            feed = await conn.fetchrow(
                f"SELECT acked FROM poll_feeds WHERE subscription_id = $1 {self._driver.lock_row}",
                subscription_id,
            )
            if feed is None:
                return
            acked = int(feed["acked"])
            await conn.execute(
                "UPDATE poll_feeds SET acked = $2, read_at = $3 WHERE subscription_id = $1",
                subscription_id,
                max(acked, through),
                now,
            )
            if through > acked:
                # Only the places after the last acknowledgement: a place is never given twice,
                # and one made available again (a redelivery, a replay) takes a new one.
                await conn.execute(
                    "UPDATE deliveries SET status = 'sent', updated_at = $4 "
                    "WHERE subscription_id = $1 AND poll_seq IS NOT NULL AND poll_seq > $2 "
                    "AND poll_seq <= $3 AND status = 'available'",
                    subscription_id,
                    acked,
                    through,
                    now,
                )

    async def feed_health(self, subscription_ids: Sequence[str]) -> dict[str, FeedHealth]:
        if not subscription_ids:
            return {}
        async with self._scan() as conn:
            rows = await conn.fetch(
                "SELECT f.subscription_id, f.read_at, f.top - f.acked AS unread, "
                f"{_OLDEST_UNREAD} AS oldest FROM poll_feeds f "
                f"WHERE f.subscription_id {self._driver.in_list('$1')}",
                self._driver.list_param(subscription_ids),
            )
        return {
            row["subscription_id"]: FeedHealth(
                read_at=row["read_at"],
                unread=int(row["unread"]) if row["oldest"] is not None else 0,
                oldest_unread_at=row["oldest"],
            )
            for row in rows
        }

    async def feed_counts(self, behind_before: int) -> FeedCounts:
        async with self._scan() as conn:
            rows = await conn.fetch(
                f"SELECT {_OLDEST_UNREAD} AS oldest FROM poll_feeds f "
                "JOIN subscriptions s ON s.id = f.subscription_id "
                "WHERE s.deleted_at IS NULL AND s.active"
            )
        behind = sum(
            1 for row in rows if row["oldest"] is not None and row["oldest"] < behind_before
        )
        return FeedCounts(feeds=len(rows), behind=behind)
