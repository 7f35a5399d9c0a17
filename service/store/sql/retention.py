"""Retention in SQL: finished deliveries with their attempts, the events no delivery needs
and old counters go, in short batches (housekeeping paces them)."""

from __future__ import annotations

from service.store.sql.base import OPEN, SqlBase
from service.summaries import DAY_MS, HOUR_MS


class RetentionSql(SqlBase):
    """`interfaces.Retention`."""

    async def purge(self, finished_before: int, batch: int) -> int:
        in_ids = self._driver.in_list("$1")
        async with self._transaction() as conn:
            old = await conn.fetch(
                f"SELECT id FROM deliveries WHERE NOT ({OPEN}) AND updated_at < $1 LIMIT $2",
                finished_before,
                batch,
            )
            removed = 0
            if old:
                gone = self._driver.list_param([row["id"] for row in old])
                await conn.execute(f"DELETE FROM attempts WHERE delivery_id {in_ids}", gone)
                removed = await conn.execute(f"DELETE FROM deliveries WHERE id {in_ids}", gone)
            removed += await conn.execute(
                "DELETE FROM events WHERE (org_id, id) IN (SELECT e.org_id, e.id FROM events e "
                "WHERE e.received_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d "
                "WHERE d.event_id = e.id AND d.org_id = e.org_id) LIMIT $2)",
                finished_before,
                batch,
            )
            removed += await conn.execute(
                "DELETE FROM subscription_stats WHERE (subscription_id, period, counter) IN ("
                "SELECT subscription_id, period, counter FROM subscription_stats "
                "WHERE period < $1 OR (counter <> 'deliveries' AND period < $3) LIMIT $2)",
                finished_before - DAY_MS,
                batch,
                # The attempts' counters are read for the last 24 hours only.
                self._now() - DAY_MS - 2 * HOUR_MS,
            )
        return removed
