"""Subscription summaries in SQL: the hourly counters (`subscription_stats`) that attempts and
new deliveries add to, and the summary read from them and from the open deliveries, never from
a subscription's whole history. What the counters mean is `service.summaries`'."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from service.domain import DeliveryStatus, HourStats, LatestOutcome, Summary
from service.store.sql.base import OPEN, Column, Conn, Driver, Row, SqlBase
from service.summaries import (
    DAY_MS,
    DELIVERIES,
    HOUR_MS,
    LATENCY_COUNTERS,
    OK,
    hours,
    p95,
    period,
)

_STAT_COLUMNS: tuple[Column, ...] = (
    ("subscription_id", "text"),
    ("period", "bigint"),
    ("counter", "text"),
    ("n", "bigint"),
)


def _summary_parts(in_ids: str) -> str:
    """The four parts of the subscriptions' summaries (`$1` their ids, `in_ids` the driver's
    test of them; `$2` the period a day ago) as one statement, each row
    (part, subscription_id, label, n, at):

    - `stats`: a counter (`label`) summed (`n`): at most (retention in hours + 24 x the
      latency buckets) rows per subscription;
    - `last`: its newest delivery, one index step: status (`label`), last response code (`n`),
      when (`at`);
    - `open`: its open deliveries only (a partial index: the backlog, not the history): how
      many (`n`), the next retry (`at`);
    - `blocked` (ordered subscriptions): customers whose head is failing (`n`), the oldest such
      head's time (`at`) and an id among them (`label`)."""
    text, bigint = "CAST(NULL AS TEXT)", "CAST(NULL AS BIGINT)"
    return (
        "SELECT 'stats' AS part, subscription_id, counter AS label, sum(n) AS n, "
        f"{bigint} AS at FROM subscription_stats "
        f"WHERE subscription_id {in_ids} AND (counter = 'deliveries' OR period >= $2) "
        "GROUP BY subscription_id, counter "
        "UNION ALL "
        "SELECT 'last', d.subscription_id, d.status, d.last_status_code, "
        "COALESCE(d.last_attempt_at, d.created_at) FROM subscriptions s "
        "JOIN deliveries d ON d.id = (SELECT x.id FROM deliveries x "
        "WHERE x.subscription_id = s.id AND x.status <> 'cancelled' "
        "ORDER BY x.created_at DESC, x.id DESC LIMIT 1) "
        f"WHERE s.id {in_ids} "
        "UNION ALL "
        f"SELECT 'open', subscription_id, {text}, count(*), "
        "min(CASE WHEN status = 'retrying' THEN next_attempt_at END) "
        f"FROM deliveries WHERE subscription_id {in_ids} AND {OPEN} "
        "GROUP BY subscription_id "
        "UNION ALL "
        "SELECT 'blocked', subscription_id, min(id), count(DISTINCT ordering_key), "
        "min(created_at) FROM deliveries "
        f"WHERE subscription_id {in_ids} AND status = 'retrying' AND seq IS NOT NULL "
        "GROUP BY subscription_id"
    )


class SummariesSql(SqlBase):
    """`interfaces.Summaries`."""

    async def subscription_summaries(self, subscription_ids: Sequence[str]) -> dict[str, Summary]:
        if not subscription_ids:
            return {}
        in_ids = self._driver.in_list("$1")
        ids_param = self._driver.list_param(subscription_ids)
        day_ago = period(self._now() - DAY_MS, OK)
        async with self._scan() as conn:
            rows = await conn.fetch(_summary_parts(in_ids), ids_param, day_ago)
            parts: dict[str, list[Row]] = {"stats": [], "last": [], "open": [], "blocked": []}
            for row in rows:
                parts[row["part"]].append(row)
            stats, lasts, opens, blocked = (parts[p] for p in ("stats", "last", "open", "blocked"))
            oldest: dict[str, tuple[str, int]] = {}
            for row in blocked:
                head = await conn.fetchrow(
                    "SELECT id FROM deliveries WHERE subscription_id = $1 AND created_at = $2 "
                    "AND status = 'retrying' AND seq IS NOT NULL ORDER BY id LIMIT 1",
                    row["subscription_id"],
                    row["at"],
                )
                head_id = row["label"] if head is None else head["id"]
                oldest[row["subscription_id"]] = (head_id, int(row["at"]))
        blocked_of = {row["subscription_id"]: int(row["n"]) for row in blocked}
        counters: dict[str, dict[str, int]] = {sid: {} for sid in subscription_ids}
        for row in stats:
            counters[row["subscription_id"]][row["label"]] = int(row["n"])
        last_of = {
            row["subscription_id"]: LatestOutcome(
                DeliveryStatus(row["label"]),
                None if row["n"] is None else int(row["n"]),
                int(row["at"]),
            )
            for row in lasts
        }
        open_of = {row["subscription_id"]: row for row in opens}
        summaries = {}
        for sid in subscription_ids:
            mine = counters[sid]
            latencies = [mine.get(counter, 0) for counter in LATENCY_COUNTERS]
            opened = open_of.get(sid)
            summaries[sid] = Summary(
                delivery_count=mine.get(DELIVERIES, 0),
                last_delivery=last_of.get(sid),
                attempts_24h=sum(latencies),
                ok_24h=mine.get(OK, 0),
                p95_latency_ms_24h=p95(latencies),
                pending_count=0 if opened is None else int(opened["n"]),
                next_retry_at=None if opened is None or opened["at"] is None else int(opened["at"]),
                blocked_customers=blocked_of.get(sid, 0),
                oldest_blocked=oldest.get(sid),
            )
        return summaries

    async def subscription_hours(self, subscription_id: str, count: int = 24) -> list[HourStats]:
        now = self._now()
        async with self._scan() as conn:
            # Its key's range: at most `count` hours x ~30 counters.
            rows = await conn.fetch(
                "SELECT period, counter, n FROM subscription_stats "
                "WHERE subscription_id = $1 AND period >= $2 AND counter <> 'deliveries'",
                subscription_id,
                period(now, OK) - (count - 1) * HOUR_MS,
            )
        return hours(((int(r["period"]), str(r["counter"]), int(r["n"])) for r in rows), now, count)


async def add_counts(driver: Driver, conn: Conn, counts: Counter[tuple[str, int, str]]) -> None:
    """Adds to the counters: (subscription, a time, counter) → n, each to its `period`."""
    rows = sorted(
        (sid, period(at, counter), counter, n) for (sid, at, counter), n in counts.items() if n
    )
    if not rows:
        return
    # Summed per period first: one row may not be upserted twice in one statement.
    summed: Counter[tuple[str, int, str]] = Counter()
    for sid, start, counter, n in rows:
        summed[(sid, start, counter)] += n
    source, args = driver.row_source(
        _STAT_COLUMNS, [(*key, n) for key, n in sorted(summed.items())], first=1
    )
    # In key order, so two writers adding to the same counters cannot deadlock.
    await conn.execute(
        "INSERT INTO subscription_stats (subscription_id, period, counter, n) "
        f"SELECT r.subscription_id, r.period, r.counter, r.n FROM ({source}) r WHERE true "
        "ORDER BY r.subscription_id, r.period, r.counter "
        "ON CONFLICT (subscription_id, period, counter) "
        "DO UPDATE SET n = subscription_stats.n + excluded.n",
        *args,
    )
