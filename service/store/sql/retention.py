"""Retention in SQL: finished deliveries with their attempts, the events no delivery needs
and old counters go, in short batches (housekeeping paces them), each batch starting where the
last stopped (docs/decisions/0013-history-at-scale.md)."""

from __future__ import annotations

from service.store.interfaces import PurgeCursor, Purged
from service.store.sql.base import OPEN, SqlBase
from service.summaries import DAY_MS, HOUR_MS


class RetentionSql(SqlBase):
    """`interfaces.Retention`."""

    async def purge(
        self, finished_before: int, batch: int, after: PurgeCursor | None = None
    ) -> Purged:
        after = after or PurgeCursor()
        async with self._transaction() as conn:
            old = await conn.fetch(
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries "
                "WHERE updated_at < $1 AND updated_at >= $3 AND (updated_at, id) > ($3, $4) "
                f"AND NOT ({OPEN}) ORDER BY updated_at, id LIMIT $2) RETURNING id, updated_at",
                finished_before,
                batch,
                *after.delivery,
            )
            delivery = max(((int(r["updated_at"]), str(r["id"])) for r in old), default=None)
            if old:
                await conn.execute(
                    f"DELETE FROM attempts WHERE delivery_id {self._driver.in_list('$1')}",
                    self._driver.list_param([row["id"] for row in old]),
                )
            # Behind the deliveries' walk: an event's deliveries were all touched after it was
            # received, so one received before where that walk stands has had its finished
            # deliveries removed already. One a delivery still needs is passed, and kept.
            walked = delivery is None or len(old) < batch
            received_before = (
                finished_before if delivery is None or walked else min(finished_before, delivery[0])
            )
            events = await conn.fetch(
                "DELETE FROM events WHERE (org_id, id) IN (SELECT e.org_id, e.id FROM events e "
                "WHERE e.received_at < $1 AND e.received_at >= $3 "
                "AND (e.received_at, e.org_id, e.id) > ($3, $4, $5) AND NOT EXISTS (SELECT 1 "
                "FROM deliveries d WHERE d.event_id = e.id AND d.org_id = e.org_id) "
                "ORDER BY e.received_at, e.org_id, e.id LIMIT $2) "
                "RETURNING received_at, org_id, id",
                received_before,
                batch,
                *after.event,
            )
            event = max(
                ((int(r["received_at"]), str(r["org_id"]), str(r["id"])) for r in events),
                default=None,
            )
            counters = await conn.execute(
                "DELETE FROM subscription_stats WHERE (subscription_id, period, counter) IN ("
                "SELECT subscription_id, period, counter FROM subscription_stats "
                "WHERE period < $1 OR (counter <> 'deliveries' AND period < $3) LIMIT $2)",
                finished_before - DAY_MS,
                batch,
                # The attempts' counters are read for the last 24 hours only.
                self._now() - DAY_MS - 2 * HOUR_MS,
            )
        done = walked and len(events) < batch and counters < batch
        cursor = PurgeCursor(delivery or after.delivery, event or after.event)
        return Purged(len(old) + len(events) + counters, cursor, done)
