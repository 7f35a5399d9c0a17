"""The pipeline's statements: events and their deliveries recorded (ordered ones given their
place in their customer's queue), due work claimed under leases timed by the database clock,
leases renewed and given back, and outcomes recorded behind the fence `lease_owner = $me`
(docs/decisions/0005-leases-and-fencing.md; which ordered delivery may be claimed:
docs/decisions/0006-ordering-claim-rule.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import structlog

from service import operational
from service.clock import iso
from service.domain import (
    AttemptRecord,
    DeliveryJob,
    DeliveryStatus,
    IncomingEvent,
    NewDelivery,
    failure_clocks,
)
from service.events import OPERATIONAL, TEST_EVENT
from service.operational import OperationalEvent
from service.store.crypto import Undecryptable
from service.store.interfaces import Claim, IndexBehind, Lease, Recorded
from service.store.sql.base import (
    JOIN_EVENTS,
    OPEN,
    PAYLOAD_REMOVED,
    REVISION,
    Column,
    Conn,
    Row,
    excerpt_context,
)
from service.store.sql.deliveryrows import insert_deliveries, insert_polled, take_places
from service.store.sql.operational import OperationalSql
from service.store.sql.summaries import add_counts
from service.summaries import DELIVERIES, OK, failed_counter, latency_counter, period

log = structlog.get_logger(__name__)

_JOB_COLUMNS = (
    "d.id, d.subscription_id, d.event_id, d.org_id, d.event, e.body, e.sibling_service, "
    "d.attempts, e.occurred_at"
)
# A paused subscription's deliveries wait (PATCH active=false); they go out again when it is
# re-enabled.
_ACTIVE = (
    "EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = deliveries.subscription_id AND s.active)"
)
# Deliveries whose failure is not announced: a test's, and an operational event's (two broken
# subscriptions of an org would tell each other of their failures forever).
_NOT_EXHAUSTED = frozenset((*OPERATIONAL, TEST_EVENT))
_EVENT_COLUMNS: tuple[Column, ...] = (
    ("id", "text"),
    ("org_id", "text"),
    ("event", "text"),
    ("occurred_at", "bigint"),
    ("body", "bytea"),
    ("sibling_service", "text"),
    ("source", "text"),
    ("customer_id", "text"),
    ("verification_key", "text"),
)
_OUTCOME_COLUMNS: tuple[Column, ...] = (
    ("id", "text"),
    ("status", "text"),
    ("number", "bigint"),
    ("started_at", "bigint"),
    ("status_code", "bigint"),
    ("error", "text"),
    ("next_attempt_at", "bigint"),
    ("finished_at", "bigint"),
)
_ATTEMPT_COLUMNS: tuple[Column, ...] = (
    ("delivery_id", "text"),
    ("number", "bigint"),
    ("started_at", "bigint"),
    ("duration_ms", "bigint"),
    ("status_code", "bigint"),
    ("result", "text"),
    ("error", "text"),
    ("response_excerpt", "text"),
)
_ATTEMPT_NAMES = ", ".join(name for name, _ in _ATTEMPT_COLUMNS)
# An attempt's counters (`service.summaries`), to be added if its delivery was held.
_COUNT_COLUMNS: tuple[Column, ...] = (
    ("delivery_id", "text"),
    ("subscription_id", "text"),
    ("period", "bigint"),
    ("counter", "text"),
)
_DELIVERY_COLUMNS: tuple[Column, ...] = (
    ("id", "text"),
    ("event_id", "text"),
    ("subscription_id", "text"),
    ("event", "text"),
    ("org_id", "text"),
)


class PipelineSql(OperationalSql):
    """`interfaces.Pipeline`'s deliveries and attempts (its subscription reads are
    `SubscriptionsSql`')."""

    def _job(self, row: Row) -> DeliveryJob:
        """Raises `crypto.Undecryptable` when no configured key opens the body."""
        return DeliveryJob(
            id=row["id"],
            subscription_id=row["subscription_id"],
            event_id=row["event_id"],
            event=row["event"],
            body=self._open_body(row["org_id"], row["event_id"], bytes(row["body"])),
            sibling_service=row["sibling_service"],
            attempts=row["attempts"],
            occurred_at=row["occurred_at"],
        )

    def _due(self, leading: Sequence[Any], subscription_id: str | None) -> tuple[str, list[Any]]:
        """The WHERE clause of one subscription's due, unleased deliveries and its arguments:
        `leading` (the caller's own, numbered from $1), then now (this replica's clock, which
        wrote the retry times), then `subscription_id` (None: the skip-scan's current one,
        `o.id`). Whether a lease has run out is the database clock's call."""
        args: list[Any] = [*leading, self._now()]
        conditions = [OPEN, f"next_attempt_at <= ${len(args)}"]
        if subscription_id is None:
            conditions.append("subscription_id = o.id")
        else:
            args.append(subscription_id)
            conditions.append(f"subscription_id = ${len(args)}")
        conditions += [
            f"(lease_until IS NULL OR lease_until < {self._driver.now_ms_sql})",
            # Ordered: only the head of its customer's queue (no open one before it), so one
            # customer's deliveries never go out together or out of order, whoever claims; and
            # never while another of the customer's is held (in flight): on PostgreSQL a place
            # taken from the sequence may commit after a later one was claimed.
            "(seq IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries p "
            "WHERE p.subscription_id = deliveries.subscription_id "
            "AND p.ordering_key = deliveries.ordering_key AND p.seq IS NOT NULL "
            "AND p.status IN ('pending', 'retrying') AND (p.seq < deliveries.seq "
            f"OR p.lease_until >= {self._driver.now_ms_sql})))",
        ]
        return " AND ".join(conditions), args

    async def _due_subscriptions(self, claim: Claim) -> list[str]:
        """The subscriptions with work to claim now, the longest-waiting first: active, not
        excluded, with a due delivery nobody holds. Found subscription by subscription (a
        skip-scan of the open deliveries' index), never by walking due rows: a dead or paused
        endpoint's million overdue deliveries cost one index probe here, not a million
        (docs/decisions/0012-claim-by-subscription.md)."""
        if claim.subscription_id is not None:
            where, args = self._due([], claim.subscription_id)
            query = "SELECT next_attempt_at AS due_at, subscription_id AS id FROM deliveries "
            query += f"WHERE {where} AND {_ACTIVE} ORDER BY next_attempt_at LIMIT 1"
        else:
            where, args = self._due([], None)
            args.append(self._driver.list_param(claim.exclude))
            query = (
                "WITH RECURSIVE open_subs(id) AS ("
                f"SELECT (SELECT subscription_id FROM deliveries WHERE {OPEN} "
                "ORDER BY subscription_id LIMIT 1) "
                f"UNION ALL SELECT (SELECT subscription_id FROM deliveries WHERE {OPEN} "
                "AND subscription_id > o.id ORDER BY subscription_id LIMIT 1) "
                "FROM open_subs o WHERE o.id IS NOT NULL) "
                f"SELECT o.id AS id, (SELECT next_attempt_at FROM deliveries WHERE {where} "
                "ORDER BY next_attempt_at LIMIT 1) AS due_at FROM open_subs o "
                f"WHERE o.id IS NOT NULL AND NOT (o.id {self._driver.in_list(f'${len(args)}')}) "
                "AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = o.id AND s.active)"
            )
        async with self._scan() as conn:
            rows = await conn.fetch(query, *args)
        due = sorted((row["due_at"], row["id"]) for row in rows if row["due_at"] is not None)
        return [subscription_id for _, subscription_id in due]

    async def record_events(
        self, events: Sequence[IncomingEvent], deliveries: Sequence[NewDelivery], lease: Lease
    ) -> list[NewDelivery]:
        recorded = await self._record(events, deliveries, lease, None)
        assert not isinstance(recorded, IndexBehind)
        return recorded

    async def record_matched(
        self,
        events: Sequence[IncomingEvent],
        deliveries: Sequence[NewDelivery],
        lease: Lease,
        revision: int,
    ) -> list[NewDelivery] | IndexBehind:
        return await self._record(events, deliveries, lease, revision)

    async def _record(
        self,
        events: Sequence[IncomingEvent],
        deliveries: Sequence[NewDelivery],
        lease: Lease,
        revision: int | None,
    ) -> list[NewDelivery] | IndexBehind:
        """`record_events`; with a `revision`, `record_matched`."""
        now = self._now()
        # Sealed and hashed before the transaction: no write lock is held for the CPU work.
        # An ordered delivery's key is its event's: hashed once.
        customers = {
            (e.org_id, e.customer_id): self._customer_key(e.org_id, e.customer_id)
            for e in events
            if e.customer_id is not None
        }
        event_rows = [
            (
                e.id,
                e.org_id,
                e.event,
                e.occurred_at,
                self._seal_body(e.org_id, e.id, e.body),
                e.sibling_service,
                e.source,
                None if e.customer_id is None else customers[(e.org_id, e.customer_id)],
                self._customer_key(e.org_id, e.verification_id),
            )
            for e in events
        ]
        if any(d.ordering_key is not None for d in deliveries):
            deliveries = [
                d
                if d.ordering_key is None
                else replace(
                    d,
                    ordering_key=customers.get((d.org_id, d.ordering_key))
                    or self._customer_key(d.org_id, d.ordering_key),
                )
                for d in deliveries
            ]
        if self._driver.writes_in_with and not any(
            d.poll or d.ordering_key is not None for d in deliveries
        ):
            return await self._record_in_one_statement(event_rows, deliveries, lease, now, revision)
        async with self._transaction() as conn:
            if revision is not None:
                row = await conn.fetchrow(f"{REVISION} {self._driver.share_row}")
                if row is not None and row["value"] != revision:
                    return IndexBehind(row["value"])
            source, args = self._driver.row_source(_EVENT_COLUMNS, event_rows, first=2)
            # `WHERE true`: SQLite reads an ON CONFLICT after a bare SELECT as a join clause.
            await conn.execute(
                "INSERT INTO events (id, org_id, event, occurred_at, body, sibling_service, "
                "source, customer_id, verification_key, received_at) SELECT r.id, r.org_id, "
                "r.event, r.occurred_at, r.body, r.sibling_service, r.source, r.customer_id, "
                "r.verification_key, $1 "
                f"FROM ({source}) r WHERE true ON CONFLICT (org_id, id) DO NOTHING",
                now,
                *args,
            )
            if not deliveries:
                return []
            unordered = [d for d in deliveries if d.ordering_key is None and not d.poll]
            created: set[str] = set()
            if polled := [d for d in deliveries if d.poll]:
                created.update(await insert_polled(self._driver, conn, polled, now))
            if unordered:
                source, args = self._driver.row_source(
                    _DELIVERY_COLUMNS,
                    [(d.id, d.event_id, d.subscription_id, d.event, d.org_id) for d in unordered],
                    first=4,
                )
                rows = await conn.fetch(
                    "INSERT INTO deliveries (id, event_id, subscription_id, event, org_id, "
                    "status, attempts, next_attempt_at, created_at, updated_at, lease_owner, "
                    "lease_until) SELECT r.id, r.event_id, r.subscription_id, r.event, r.org_id, "
                    f"'pending', 0, $1, $1, $1, $2, {self._driver.now_ms_sql} + $3 "
                    f"FROM ({source}) r WHERE true "
                    "ON CONFLICT (event_id, subscription_id) DO NOTHING RETURNING id",
                    now,
                    lease.owner,
                    lease.ms,
                    *args,
                )
                created.update(row["id"] for row in rows)
            if ordered := [d for d in deliveries if d.ordering_key is not None and not d.poll]:
                created.update(await self._insert_ordered(conn, ordered, now))
            await add_counts(
                self._driver,
                conn,
                Counter(
                    (d.subscription_id, now, DELIVERIES) for d in deliveries if d.id in created
                ),
            )
        return [d for d in deliveries if d.id in created]

    async def _record_in_one_statement(
        self,
        event_rows: Sequence[Sequence[Any]],
        deliveries: Sequence[NewDelivery],
        lease: Lease,
        now: int,
        revision: int | None,
    ) -> list[NewDelivery] | IndexBehind:
        """`record_events`' writes where one statement may write several tables, for a batch
        with no ordered or polled delivery (those take places first): the events, their
        deliveries (leased to this replica) and the deliveries' counters, one round trip and
        atomic with no transaction around it (docs/decisions/0016-postgres-round-trips.md).
        With a `revision`, they are written only if it is still the store's, read in the same
        snapshot (docs/decisions/0019-fewer-statements-per-event.md)."""
        first = 7
        events, event_args = self._driver.row_source(_EVENT_COLUMNS, event_rows, first=first)
        made, made_args = self._driver.row_source(
            _DELIVERY_COLUMNS,
            [(d.id, d.event_id, d.subscription_id, d.event, d.org_id) for d in deliveries],
            first=first + len(event_args),
        )
        # The revision read once, under a share lock: a subscription change in flight is
        # waited for, and its value is the one both the writes and the answer compare with
        # (a lock's read follows the row to its newest version; a filter over the subquery
        # would be applied before the lock, to the version the statement began with).
        revision_now = (
            f"rev AS MATERIALIZED ({REVISION} AND $6::bigint IS NOT NULL "
            f"{self._driver.share_row}), "
        )
        current = "WHERE $6::bigint IS NULL OR (SELECT value FROM rev) = $6"
        async with self._atomic() as conn:
            rows = await conn.fetch(
                f"WITH {revision_now}recorded AS (INSERT INTO events (id, org_id, event, "
                "occurred_at, body, sibling_service, source, customer_id, verification_key, "
                "received_at) "
                "SELECT r.id, r.org_id, r.event, r.occurred_at, r.body, r.sibling_service, "
                f"r.source, r.customer_id, r.verification_key, $1 FROM ({events}) r {current} "
                "ON CONFLICT (org_id, id) DO NOTHING), "
                "made AS (INSERT INTO deliveries (id, event_id, subscription_id, event, org_id, "
                "status, attempts, next_attempt_at, created_at, updated_at, lease_owner, "
                "lease_until) SELECT r.id, r.event_id, r.subscription_id, r.event, r.org_id, "
                f"'pending', 0, $1, $1, $1, $2, {self._driver.now_ms_sql} + $3 FROM ({made}) r "
                f"{current} ON CONFLICT (event_id, subscription_id) DO NOTHING "
                "RETURNING id, subscription_id), "
                # In key order, as `add_counts` adds: two writers cannot deadlock.
                "counted AS (INSERT INTO subscription_stats (subscription_id, period, counter, n) "
                "SELECT subscription_id, $4, $5, count(*) FROM made GROUP BY subscription_id "
                "ORDER BY subscription_id ON CONFLICT (subscription_id, period, counter) "
                "DO UPDATE SET n = subscription_stats.n + excluded.n) "
                "SELECT id, NULL AS revision FROM made UNION ALL "
                "SELECT NULL, value FROM rev WHERE value <> $6",
                now,
                lease.owner,
                lease.ms,
                period(now, DELIVERIES),
                DELIVERIES,
                revision,
                *event_args,
                *made_args,
            )
        for row in rows:
            if row["id"] is None:
                return IndexBehind(row["revision"])
        created = {row["id"] for row in rows}
        return [d for d in deliveries if d.id in created]

    async def _insert_ordered(
        self, conn: Conn, deliveries: Sequence[NewDelivery], now: int
    ) -> set[str]:
        """Ordered deliveries, unleased, each given its place in the order as listed (Kafka's
        order within a partition); returns the ids that were new."""
        seqs = await take_places(self._driver, conn, len(deliveries))
        return await insert_deliveries(
            self._driver, conn, list(zip(deliveries, seqs, strict=True)), now
        )

    async def claim_due(self, claim: Claim) -> list[DeliveryJob]:
        # A read first: most claims (every poll of an idle process) find nothing, and a read
        # costs no write transaction (on SQLite, no fsync).
        subscriptions = await self._due_subscriptions(claim)
        if not subscriptions:
            return []
        if self._driver.writes_in_with:
            rows = await self._claim_in_statements(claim, subscriptions)
        else:
            rows = await self._claim_in_transaction(claim, subscriptions)
        jobs = []
        for row in rows:
            if not row["body"]:
                continue
            try:
                jobs.append(self._job(row))
            except Undecryptable:
                # Kept leased: it is tried again when the lease runs out, by when the key that
                # sealed it may be configured again (readiness counts such rows).
                log.error("delivery.undecryptable", delivery_id=row["id"])
        return jobs

    def _claim_sql(self, where: str) -> str:
        """Leases `where`'s due deliveries ($1 the owner, $2 the lease, $3 how many at most),
        returning their ids."""
        return (
            f"WITH due AS (SELECT id FROM deliveries WHERE {where} AND {_ACTIVE} "
            f"ORDER BY next_attempt_at LIMIT $3 {self._driver.lock_due}) "
            f"UPDATE deliveries SET lease_owner = $1, lease_until = "
            f"{self._driver.now_ms_sql} + $2 WHERE id IN (SELECT id FROM due) RETURNING id"
        )

    async def _claim_in_transaction(self, claim: Claim, subscriptions: list[str]) -> list[Row]:
        """The claimed deliveries' job rows, by due time: each subscription's claim, then the
        jobs' read, in one transaction (with the deliveries that cannot be sent ended)."""
        claimed: list[Row] = []
        async with self._transaction() as conn:
            for subscription_id in subscriptions:
                if (left := claim.limit - len(claimed)) <= 0:
                    break
                where, args = self._due([claim.owner, claim.lease_ms, left], subscription_id)
                claimed += await conn.fetch(self._claim_sql(where), *args)
            if not claimed:
                return []
            rows = await conn.fetch(
                f"SELECT {_JOB_COLUMNS} FROM deliveries d {JOIN_EVENTS} "
                f"WHERE d.id {self._driver.in_list('$1')} ORDER BY d.next_attempt_at",
                self._driver.list_param([row["id"] for row in claimed]),
            )
            await self._end_unsendable(conn, {row["id"] for row in claimed}, rows)
        return rows

    async def _claim_in_statements(self, claim: Claim, subscriptions: list[str]) -> list[Row]:
        """`_claim_in_transaction` where one statement may write and read several tables:
        each subscription's claim and its jobs' read are one statement, atomic alone (what it
        leased is this replica's until the lease runs out), with no transaction around them."""
        claimed: set[str] = set()
        rows: list[Row] = []
        async with self._connection() as conn:
            for subscription_id in subscriptions:
                if (left := claim.limit - len(claimed)) <= 0:
                    break
                where, args = self._due([claim.owner, claim.lease_ms, left], subscription_id)
                # The read sees the deliveries as before the lease was written: only the
                # lease's columns change, and the job reads none of them. A delivery whose
                # event is gone comes back with its job's columns NULL.
                found = await conn.fetch(
                    f"WITH claimed AS ({self._claim_sql(where)}) "
                    f"SELECT c.id AS claimed_id, {_JOB_COLUMNS}, d.next_attempt_at AS due_at "
                    f"FROM claimed c LEFT JOIN (deliveries d {JOIN_EVENTS}) ON d.id = c.id",
                    *args,
                )
                claimed.update(row["claimed_id"] for row in found)
                rows += [row for row in found if row["id"] is not None]
        rows.sort(key=lambda row: row["due_at"])
        if len(rows) < len(claimed) or any(not row["body"] for row in rows):
            async with self._transaction() as conn:
                await self._end_unsendable(conn, claimed, rows)
        return rows

    async def _end_unsendable(self, conn: Conn, claimed: set[str], rows: Sequence[Row]) -> None:
        """Ends the claimed deliveries that can never be sent: their event is gone (a retention
        purge raced a replay that made the delivery, on PostgreSQL), or its payload was removed
        (an erasure raced a redelivery). Neither may be claimed forever nor hold up an ordered
        customer's queue."""
        if orphans := claimed - {row["id"] for row in rows}:
            await self._end(conn, orphans, "failed", "its event was deleted by the retention")
            log.error("delivery.event_missing", deliveries=sorted(orphans))
        if removed := {row["id"] for row in rows if not row["body"]}:
            await self._end(conn, removed, "cancelled", PAYLOAD_REMOVED)
            log.warning("delivery.payload_removed", deliveries=sorted(removed))

    async def _end(self, conn: Conn, delivery_ids: set[str], status: str, error: str) -> None:
        await conn.execute(
            "UPDATE deliveries SET status = $2, last_error = $3, updated_at = $4, "
            f"lease_owner = NULL, lease_until = NULL WHERE id {self._driver.in_list('$1')}",
            self._driver.list_param(sorted(delivery_ids)),
            status,
            error,
            self._now(),
        )

    async def renew(self, delivery_ids: Sequence[str], owner: str, lease_ms: int) -> set[str]:
        assignment = f"lease_until = {self._driver.now_ms_sql} + $3"
        return await self._leases(delivery_ids, owner, assignment, lease_ms)

    async def release(self, delivery_ids: Sequence[str], owner: str) -> None:
        await self._leases(delivery_ids, owner, "lease_owner = NULL, lease_until = NULL")

    async def _leases(
        self, delivery_ids: Sequence[str], owner: str, assignments: str, *args: Any
    ) -> set[str]:
        """Sets `assignments` ($3… are `args`) on those of these deliveries that `owner` still
        holds (the fence: a lease that ran out and was taken by another is theirs); returns
        their ids."""
        if not delivery_ids:
            return set()
        async with self._atomic() as conn:
            rows = await conn.fetch(
                f"UPDATE deliveries SET {assignments} "
                f"WHERE id {self._driver.in_list('$1')} AND lease_owner = $2 RETURNING id",
                self._driver.list_param(delivery_ids),
                owner,
                *args,
            )
        return {row["id"] for row in rows}

    async def take_back_leases(self) -> int:
        async with self._atomic() as conn:
            return await conn.execute(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL "
                "WHERE lease_owner IS NOT NULL"
            )

    async def record_attempts(self, attempts: Sequence[AttemptRecord], owner: str) -> Recorded:
        if not attempts:
            return Recorded({}, frozenset())
        if not self._driver.writes_in_with or any(
            a.new_status is not DeliveryStatus.SENT for a in attempts
        ):
            return await self._record_in_transaction(attempts, owner)
        # Every attempt succeeded: the failure clocks are cleared inside the outcome's own
        # statement, with no transaction around it
        # (docs/decisions/0019-fewer-statements-per-event.md).
        # A subscription whose failure was announced owes a `recovered` event, written with its
        # cause: its attempts are left to the transaction.
        ordered = sorted(attempts, key=lambda a: (a.delivery_id, a.number))
        latest = list({a.delivery_id: a for a in ordered}.values())
        subscriptions = sorted({a.subscription_id for a in ordered})
        rows, alerted = await self._successes_in_one_statement(
            owner, subscriptions, latest, self._attempt_rows(ordered), ordered
        )
        recorded = Recorded(
            dict.fromkeys(s for s in subscriptions if s not in alerted),
            frozenset(a.delivery_id for a in latest if a.subscription_id not in alerted)
            - {row["id"] for row in rows},
        )
        if not alerted:
            return recorded
        rest = await self._record_in_transaction(
            [a for a in attempts if a.subscription_id in alerted], owner
        )
        return Recorded(
            recorded.failing_since | rest.failing_since,
            recorded.lost | rest.lost,
            emitted=rest.emitted,
        )

    async def _record_in_transaction(
        self, attempts: Sequence[AttemptRecord], owner: str
    ) -> Recorded:
        """`record_attempts` with the subscriptions' failure clocks written first, each locked
        in id order, then the deliveries, in one transaction."""
        clocks = failure_clocks(attempts)
        ordered = sorted(attempts, key=lambda a: (a.delivery_id, a.number))
        latest = list({a.delivery_id: a for a in ordered}.values())
        attempt_rows = self._attempt_rows(ordered)
        succeeded = {
            a.subscription_id: a.started_at + a.duration_ms
            for a in ordered
            if a.new_status is DeliveryStatus.SENT
        }
        last_failed = {
            a.subscription_id: a for a in ordered if a.new_status is not DeliveryStatus.SENT
        }
        failing_since: dict[str, int | None] = {}
        announced: list[OperationalEvent] = []
        async with self._transaction() as conn:
            healed = {}
            if not self._driver.writes_in_with:
                # One writer at a time (SQLite's write transaction): no lock order to keep, so
                # every subscription with a success is cleared at once.
                healed = await self._heal(conn, sorted(succeeded), succeeded)
            for subscription_id, (reset, first_failure, failures) in sorted(clocks.items()):
                if subscription_id in succeeded and self._driver.writes_in_with:
                    healed |= await self._heal(conn, [subscription_id], succeeded)
                if subscription_id in healed:
                    announced += healed[subscription_id]
                if first_failure is None:
                    failing_since[subscription_id] = None
                    continue
                row = await conn.fetchrow(
                    "UPDATE subscriptions SET failing_since = "
                    + (
                        "$2, consecutive_failures = $3"
                        if reset
                        else "COALESCE(failing_since, $2), "
                        "consecutive_failures = consecutive_failures + $3"
                    )
                    + " WHERE id = $1 RETURNING failing_since, consecutive_failures, alerted_at, "
                    "org_id, url",
                    subscription_id,
                    first_failure,
                    failures,
                )
                failing_since[subscription_id] = None if row is None else row["failing_since"]
                if row is not None:
                    announced += await self._failing(conn, row, last_failed[subscription_id])
            update, update_args = self._held_update(owner, latest)
            if self._driver.writes_in_with:
                sql, args = self._outcomes_sql(update, update_args, attempt_rows, ordered)
                rows = await conn.fetch(sql, *args)
                held = {row["id"] for row in rows}
            else:
                rows = await conn.fetch(update, *update_args)
                held = {row["id"] for row in rows}
                if kept := [row for row in attempt_rows if row[0] in held]:
                    source, args = self._driver.row_source(_ATTEMPT_COLUMNS, kept, first=1)
                    await conn.execute(
                        f"INSERT INTO attempts ({_ATTEMPT_NAMES}) SELECT {_ATTEMPT_NAMES} "
                        f"FROM ({source}) r",
                        *args,
                    )
                counts: Counter[tuple[str, int, str]] = Counter()
                for a in ordered:
                    if a.delivery_id in held:
                        for counter in _counters(a):
                            counts[(a.subscription_id, a.started_at, counter)] += 1
                await add_counts(self._driver, conn, counts)
            announced += await self._exhausted(
                conn,
                [r for r in rows if r["status"] == "failed" and r["event"] not in _NOT_EXHAUSTED],
                {a.delivery_id: a for a in latest},
            )
            emitted = 0
            for event in announced:
                emitted += len(await self._emit(conn, event))
        return Recorded(
            failing_since, frozenset(a.delivery_id for a in latest) - held, emitted=emitted
        )

    def _attempt_rows(self, ordered: Sequence[AttemptRecord]) -> list[tuple[Any, ...]]:
        """The attempts as rows of `attempts`, their excerpts sealed (before any transaction:
        no write lock is held for the CPU work)."""
        return [
            (
                a.delivery_id,
                a.number,
                a.started_at,
                a.duration_ms,
                a.status_code,
                a.result,
                a.error,
                None
                if a.response_excerpt is None
                else self._keyring.seal_text(a.response_excerpt, excerpt_context(a.delivery_id)),
            )
            for a in ordered
        ]

    def _held_update(
        self, owner: str, latest: Sequence[AttemptRecord], first: int = 1
    ) -> tuple[str, list[Any]]:
        """The fenced outcome update (only deliveries this replica still holds take its
        outcome), returning the rows it held; its arguments numbered from `$first`."""
        source, args = self._driver.row_source(
            _OUTCOME_COLUMNS,
            [
                (
                    a.delivery_id,
                    a.new_status.value,
                    a.number,
                    a.started_at,
                    a.status_code,
                    a.error,
                    a.next_attempt_at,
                    a.started_at + a.duration_ms,
                )
                for a in latest
            ],
            first=first + 1,
        )
        update = (
            "UPDATE deliveries SET status = r.status, attempts = r.number, "
            "last_attempt_at = r.started_at, last_status_code = r.status_code, "
            "last_error = r.error, "
            "next_attempt_at = COALESCE(r.next_attempt_at, deliveries.next_attempt_at), "
            "updated_at = r.finished_at, lease_owner = NULL, lease_until = NULL "
            f"FROM ({source}) r WHERE deliveries.id = r.id "
            "AND deliveries.status IN ('pending', 'retrying') "
            f"AND deliveries.lease_owner = ${first} RETURNING deliveries.id, deliveries.status, "
            "deliveries.event, deliveries.event_id, deliveries.subscription_id"
        )
        return update, [owner, *args]

    async def _heal(
        self, conn: Conn, subscription_ids: Sequence[str], succeeded: dict[str, int]
    ) -> dict[str, list[OperationalEvent]]:
        """Clears the failure clock and the announcement of those of `subscription_ids` (which
        had a success: `succeeded`, when) that have either, and returns them with the
        `recovered` event owed where a `failing` or `disabled` event announced the streak. A
        healthy subscription's row is neither locked nor written."""
        unhealthy = (
            "(failing_since IS NOT NULL OR consecutive_failures > 0 OR alerted_at IS NOT NULL)"
        )
        ids = self._driver.list_param(subscription_ids)
        if self._driver.writes_in_with:
            # One statement: the old values are read under the row's lock and returned by the
            # update that clears them.
            rows = await conn.fetch(
                "UPDATE subscriptions s SET failing_since = NULL, consecutive_failures = 0, "
                "alerted_at = NULL FROM (SELECT id, failing_since, alerted_at FROM subscriptions "
                f"WHERE id {self._driver.in_list('$1')} AND {unhealthy} "
                f"ORDER BY id {self._driver.lock_row}) old WHERE s.id = old.id "
                "RETURNING s.id, s.org_id, s.url, old.failing_since, old.alerted_at",
                ids,
            )
        else:
            rows = await conn.fetch(
                "SELECT id, org_id, url, failing_since, alerted_at FROM subscriptions "
                f"WHERE id {self._driver.in_list('$1')} AND {unhealthy}",
                ids,
            )
            if rows:
                await conn.execute(
                    "UPDATE subscriptions SET failing_since = NULL, consecutive_failures = 0, "
                    f"alerted_at = NULL WHERE id {self._driver.in_list('$1')}",
                    self._driver.list_param([row["id"] for row in rows]),
                )
        healed: dict[str, list[OperationalEvent]] = {}
        for row in rows:
            healed[row["id"]] = []
            if row["alerted_at"] is None:
                continue
            since = row["failing_since"]
            event = operational.recovered(
                operational.About(row["id"], row["org_id"], row["url"]),
                since,
                row["alerted_at"],
                succeeded[row["id"]],
            )
            await self._audit(
                conn,
                operational.system_entry(
                    event,
                    "subscription.recovered",
                    {"failingSince": None if since is None else iso(since)},
                ),
            )
            healed[row["id"]].append(event)
        return healed

    async def _failing(
        self, conn: Conn, row: Row, attempt: AttemptRecord
    ) -> list[OperationalEvent]:
        """After failures (`row`: the subscription's clock as now written; `attempt`: its
        latest failure): `failing` once its streak reaches the threshold, once per streak."""
        at = attempt.started_at + attempt.duration_ms
        since, consecutive = row["failing_since"], row["consecutive_failures"]
        if row["alerted_at"] is not None or not self.alerts.failing(consecutive, since, at):
            return []
        await conn.execute(
            "UPDATE subscriptions SET alerted_at = $2 WHERE id = $1", attempt.subscription_id, at
        )
        about = operational.About(attempt.subscription_id, row["org_id"], row["url"])
        return [
            await self._failing_event(
                conn,
                about,
                since,
                consecutive,
                status_code=attempt.status_code,
                error=attempt.error,
                at=at,
            )
        ]

    async def _failing_event(
        self,
        conn: Conn,
        about: operational.About,
        since: int,
        consecutive: int,
        *,
        status_code: int | None,
        error: str | None,
        at: int,
    ) -> OperationalEvent:
        """`failing` of `about` at `at`, and its audit entry, in the transaction `conn`."""
        event = operational.failing(
            about,
            failing_since=since,
            consecutive=consecutive,
            status_code=status_code,
            error=error,
            at=at,
        )
        changes = {
            "failingSince": iso(since),
            "consecutiveFailures": consecutive,
            "lastStatusCode": status_code,
            "lastError": error,
        }
        await self._audit(conn, operational.system_entry(event, "subscription.failing", changes))
        return event

    async def announce_failing(self, now: int) -> int:
        failing_for = now - self.alerts.after_ms
        async with self._transaction() as conn:
            # Every subscription row, as the gauges' count reads them: an org has a handful.
            due = await conn.fetch(
                "SELECT id FROM subscriptions WHERE failing_since <= $1 AND alerted_at IS NULL "
                "AND active AND deleted_at IS NULL ORDER BY id",
                failing_for,
            )
            announced = 0
            for candidate in due:
                # Claimed as `_failing` claims it: whichever writes `alerted_at` first says it.
                row = await conn.fetchrow(
                    "UPDATE subscriptions SET alerted_at = $2 WHERE id = $1 "
                    "AND alerted_at IS NULL AND failing_since <= $3 AND active "
                    "AND deleted_at IS NULL "
                    "RETURNING org_id, url, failing_since, consecutive_failures",
                    candidate["id"],
                    now,
                    failing_for,
                )
                if row is None:
                    continue
                last = await conn.fetchrow(
                    "SELECT last_status_code, last_error FROM deliveries "
                    "WHERE subscription_id = $1 AND last_attempt_at IS NOT NULL "
                    "ORDER BY created_at DESC, id DESC LIMIT 1",
                    candidate["id"],
                )
                about = operational.About(candidate["id"], row["org_id"], row["url"])
                event = await self._failing_event(
                    conn,
                    about,
                    row["failing_since"],
                    row["consecutive_failures"],
                    status_code=None if last is None else last["last_status_code"],
                    error=None if last is None else last["last_error"],
                    at=now,
                )
                await self._emit(conn, event)
                announced += 1
        return announced

    async def _exhausted(
        self, conn: Conn, failed: Sequence[Row], attempts: dict[str, AttemptRecord]
    ) -> list[OperationalEvent]:
        """`exhausted` for each delivery of `failed` (which failed its last attempt)."""
        if not failed:
            return []
        subjects = await conn.fetch(
            f"SELECT id, org_id, url FROM subscriptions WHERE id {self._driver.in_list('$1')}",
            self._driver.list_param(sorted({r["subscription_id"] for r in failed})),
        )
        about = {r["id"]: operational.About(r["id"], r["org_id"], r["url"]) for r in subjects}
        events = []
        for row in failed:
            attempt = attempts[row["id"]]
            events.append(
                operational.exhausted(
                    about[row["subscription_id"]],
                    delivery_id=row["id"],
                    event_id=row["event_id"],
                    event=row["event"],
                    attempts=attempt.number,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    at=attempt.started_at + attempt.duration_ms,
                )
            )
        return events

    async def _successes_in_one_statement(
        self,
        owner: str,
        subscriptions: Sequence[str],
        latest: Sequence[AttemptRecord],
        attempt_rows: Sequence[Sequence[Any]],
        ordered: Sequence[AttemptRecord],
    ) -> tuple[list[Row], set[str]]:
        """A batch of successes in one statement: the failure clocks of `subscriptions` that
        have one cleared (their rows locked first, in id order, as every writer locks), then
        `_outcomes_in_one_statement`'s writes — except for the subscriptions whose failure was
        announced, returned apart for the transaction that writes their `recovered` event.
        Returns the deliveries held and those subscriptions."""
        update, update_args = self._held_update(owner, latest, first=2)
        # The announced subscriptions' deliveries are left alone; `(SELECT count(*) FROM
        # cleared)` makes the clocks' update run, and lock its rows, before any delivery's.
        update = update.replace(
            " RETURNING deliveries.id,",
            " AND deliveries.subscription_id NOT IN (SELECT id FROM announced) "
            "AND (SELECT count(*) FROM cleared) >= 0 RETURNING deliveries.id,",
        )
        ids = self._driver.in_list("$1")
        sql, args = self._outcomes_sql(
            update,
            [self._driver.list_param(subscriptions), *update_args],
            attempt_rows,
            ordered,
            before=(
                f"announced AS (SELECT id FROM subscriptions WHERE id {ids} "
                "AND alerted_at IS NOT NULL), "
                "cleared AS (UPDATE subscriptions SET failing_since = NULL, "
                "consecutive_failures = 0 WHERE id IN (SELECT id FROM subscriptions "
                f"WHERE id {ids} AND alerted_at IS NULL "
                "AND (failing_since IS NOT NULL OR consecutive_failures > 0) "
                f"ORDER BY id {self._driver.lock_row}) RETURNING id), "
            ),
            after="UNION ALL SELECT id, NULL, NULL, NULL, NULL, true FROM announced",
        )
        async with self._atomic() as conn:
            rows = await conn.fetch(sql, *args)
        alerted = {row["id"] for row in rows if row["announced"]}
        return [row for row in rows if not row["announced"]], alerted

    def _outcomes_sql(
        self,
        update: str,
        update_args: list[Any],
        attempt_rows: Sequence[Sequence[Any]],
        ordered: Sequence[AttemptRecord],
        *,
        before: str = "",
        after: str = "",
    ) -> tuple[str, list[Any]]:
        """`record_attempts`' writes after the subscriptions' where one statement may write
        several tables: the fenced outcome `update` (its arguments `update_args`, from $1), the
        attempts of the deliveries it held and their counters, one round trip; `before`, more
        of the `WITH`'s statements ahead of the update, and `after`, more rows after those the
        update held. The statement returns the deliveries held, as the update returned them,
        `announced` false. Returns it and its arguments."""
        first = len(update_args) + 1
        attempts, attempt_args = self._driver.row_source(_ATTEMPT_COLUMNS, attempt_rows, first)
        counted, count_args = self._driver.row_source(
            _COUNT_COLUMNS,
            [
                (a.delivery_id, a.subscription_id, period(a.started_at, counter), counter)
                for a in ordered
                for counter in _counters(a)
            ],
            first + len(attempt_args),
        )
        sql = (
            f"WITH {before}held AS ({update}), "
            f"logged AS (INSERT INTO attempts ({_ATTEMPT_NAMES}) SELECT {_ATTEMPT_NAMES} "
            f"FROM ({attempts}) r WHERE r.delivery_id IN (SELECT id FROM held)), "
            # In key order, as `add_counts` adds: two writers cannot deadlock.
            "counted AS (INSERT INTO subscription_stats (subscription_id, period, counter, n) "
            f"SELECT c.subscription_id, c.period, c.counter, count(*) FROM ({counted}) c "
            "WHERE c.delivery_id IN (SELECT id FROM held) "
            "GROUP BY c.subscription_id, c.period, c.counter "
            "ORDER BY c.subscription_id, c.period, c.counter "
            "ON CONFLICT (subscription_id, period, counter) "
            "DO UPDATE SET n = subscription_stats.n + excluded.n) "
            "SELECT id, status, event, event_id, subscription_id, false AS announced FROM held "
            f"{after}"
        )
        return sql, [*update_args, *attempt_args, *count_args]

    async def pending_count(self) -> int:
        async with self._scan() as conn:
            row = await conn.fetchrow(f"SELECT count(*) AS n FROM deliveries WHERE {OPEN}")
        return 0 if row is None else int(row["n"])

    async def pending_at_most(self, cap: int) -> int:
        async with self._scan() as conn:
            row = await conn.fetchrow(
                f"SELECT count(*) AS n FROM (SELECT 1 FROM deliveries WHERE {OPEN} LIMIT $1) o",
                cap,
            )
        return 0 if row is None else int(row["n"])

    async def pending_estimate(self) -> int | None:
        async with self._scan() as conn:
            return await self._driver.estimated_rows(conn, f"SELECT 1 FROM deliveries WHERE {OPEN}")


def _counters(attempt: AttemptRecord) -> tuple[str, ...]:
    """The counters an attempt adds one to: its latency bucket, and `OK` when it was sent or
    its result class's failure counter when not."""
    latency = latency_counter(attempt.duration_ms)
    if attempt.new_status is DeliveryStatus.SENT:
        return (latency, OK)
    return (latency, failed_counter(attempt.result))
