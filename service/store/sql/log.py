"""A subscription's delivery log in SQL, newest first and paged by position (`service.ids`),
one delivery in full, and the recovery that acts on it: a redelivery (same id, due now) and a
replay of a window of retained events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from service import ids
from service.domain import (
    AttemptLog,
    DeliveryFilter,
    DeliveryLogEntry,
    DeliveryLogRow,
    DeliveryStatus,
    EventDelivery,
    EventTrail,
    NewDelivery,
    PayloadGone,
    PayloadRemoval,
    Redelivery,
    Replayed,
    ReplayWindow,
    Subscription,
)
from service.store.crypto import Undecryptable
from service.store.interfaces import Page, PageRequest
from service.store.sql.base import JOIN_EVENTS, Row, SqlBase
from service.store.sql.deliveryrows import insert_deliveries, insert_polled, stamp_feed, take_places
from service.store.sql.operational import SOURCE as OPERATIONAL_SOURCE
from service.store.sql.summaries import add_counts
from service.summaries import DELIVERIES

_LOG_COLUMNS = (
    "d.id, d.event_id, d.event, d.status, d.created_at, d.attempts, d.next_attempt_at, "
    "d.last_error, "
    "a.number AS a_number, a.started_at AS a_at, a.status_code AS a_code, "
    "a.duration_ms AS a_duration, a.error AS a_error"
)
# The last attempt: attempt numbers are unique per delivery (only the lease holder records).
_JOIN_LAST_ATTEMPT = "LEFT JOIN attempts a ON a.delivery_id = d.id AND a.number = d.attempts"
MAX_ATTEMPTS_SHOWN = 100


class DeliveryLogSql(SqlBase):
    """`interfaces.DeliveryLog`."""

    async def list_deliveries(
        self, org_id: str, subscription_id: str, where: DeliveryFilter, page_of: PageRequest
    ) -> Page[DeliveryLogRow]:
        limit, after = page_of.limit, page_of.after
        # Cancelled deliveries are listed: a live subscription's were cancelled by an erasure
        # (a deleted subscription's log cannot be read).
        conditions = ["d.subscription_id = $1", "d.org_id = $2"]
        args: list[Any] = [subscription_id, org_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if where.status is not None:
            conditions.append(f"d.status = {arg(where.status.value)}")
        if where.event is not None:
            conditions.append(f"d.event = {arg(where.event)}")
        if where.since is not None:
            conditions.append(f"d.created_at >= {arg(where.since)}")
        if where.until is not None:
            conditions.append(f"d.created_at < {arg(where.until)}")
        if where.event_id is not None:
            # With the subscription: the pair's unique index.
            conditions.append(f"d.event_id = {arg(where.event_id)}")
        source = f"deliveries d {_JOIN_LAST_ATTEMPT}"
        searched = (
            ("customer_id", where.customer_id),
            ("verification_key", where.verification_id),
        )
        for column, value in searched:
            if value is None:
                continue
            # By the keyed hash the store keeps (never a payload opened): the org's events
            # about it from their index, then each one's delivery by the (event, subscription)
            # index. A CROSS JOIN keeps SQLite to that order (PostgreSQL plans it so anyway):
            # walking the subscription's whole log instead would read every delivery it had.
            source = (
                f"events e CROSS JOIN deliveries d {_JOIN_LAST_ATTEMPT}"
                if not source.startswith("events")
                else source
            )
            conditions += [
                "e.org_id = d.org_id",
                "e.id = d.event_id",
                f"e.{column} = {arg(self._customer_key(org_id, value))}",
                "e.org_id = $2",
            ]
        if after is not None:
            created, after_id = ids.parse_log_position(after)
            # A row value (SQLite 3.15+), which both databases read as a range of the log's
            # indexes (…, created_at, id): the page starts where the cursor points. Spelled
            # out as `created_at < $a OR (created_at = $a AND id < $b)`, PostgreSQL reads it
            # as a filter instead, walking every newer row first (linear in the page's depth,
            # as the operations bench's query plans show).
            conditions.append(f"(d.created_at, d.id) < ({arg(created)}, {arg(after_id)})")
        async with self._scan() as conn:
            rows = await conn.fetch(
                f"SELECT {_LOG_COLUMNS} FROM {source} "
                f"WHERE {' AND '.join(conditions)} "
                f"ORDER BY d.created_at DESC, d.id DESC LIMIT {arg(limit + 1)}",
                *args,
            )
        page = [_log_row(row) for row in rows[:limit]]
        last = page[-1] if len(rows) > limit else None
        return Page(page, None if last is None else ids.log_position(last.created_at, last.id))

    async def get_delivery(
        self, org_id: str, subscription_id: str, delivery_id: str
    ) -> DeliveryLogEntry | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_LOG_COLUMNS}, e.body, e.payload_removed_at, e.payload_removed_reason "
                f"FROM deliveries d {JOIN_EVENTS} {_JOIN_LAST_ATTEMPT} "
                "WHERE d.id = $1 AND d.subscription_id = $2 AND d.org_id = $3",
                delivery_id,
                subscription_id,
                org_id,
            )
            if row is None:
                return None
            attempts = await conn.fetch(
                "SELECT number, started_at, status_code, duration_ms, error, response_excerpt "
                "FROM attempts WHERE delivery_id = $1 ORDER BY number DESC, id DESC LIMIT $2",
                delivery_id,
                MAX_ATTEMPTS_SHOWN,
            )
        payload: bytes | None = None
        gone = None
        if row["payload_removed_at"] is not None:
            reason = PayloadRemoval(row["payload_removed_reason"])
            gone = PayloadGone(reason, row["payload_removed_at"])
        else:
            try:
                payload = self._open_body(org_id, row["event_id"], bytes(row["body"]))
            except Undecryptable:
                gone = PayloadGone(None, None)
        return DeliveryLogEntry(
            row=_log_row(row),
            payload=payload,
            gone=gone,
            attempts=tuple(
                AttemptLog(
                    number=a["number"],
                    at=a["started_at"],
                    response_code=a["status_code"],
                    duration_ms=a["duration_ms"],
                    error=a["error"],
                    response_excerpt=self._open_excerpt(delivery_id, a["response_excerpt"]),
                )
                for a in reversed(attempts)
            ),
        )

    async def redeliver(self, org_id: str, subscription_id: str, delivery_id: str) -> Redelivery:
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                f"SELECT e.payload_removed_at, d.poll_seq, d.status FROM deliveries d "
                f"{JOIN_EVENTS} WHERE d.id = $1 AND d.subscription_id = $2 AND d.org_id = $3",
                delivery_id,
                subscription_id,
                org_id,
            )
            if row is None:
                return Redelivery.NOT_FOUND
            if row["payload_removed_at"] is not None:
                return Redelivery.PAYLOAD_GONE
            if row["poll_seq"] is not None:
                # A feed's: available again at a new place, after whatever its reader has.
                if row["status"] == DeliveryStatus.CANCELLED.value:
                    return Redelivery.NOT_FOUND
                (place,) = await stamp_feed(conn, subscription_id, 1)
                await conn.execute(
                    "UPDATE deliveries SET status = 'available', poll_seq = $2, updated_at = $3 "
                    "WHERE id = $1",
                    delivery_id,
                    place,
                    self._now(),
                )
                return Redelivery.QUEUED
            # A finished delivery of an ordered subscription goes again out of band (its
            # place in the order dropped): sent as what it is, neither waiting for its
            # customer's queue nor holding it up. An open one keeps its place.
            changed = await conn.execute(
                "UPDATE deliveries SET next_attempt_at = $4, updated_at = $4, "
                "seq = CASE WHEN status IN ('pending', 'retrying') THEN seq END, "
                "status = CASE WHEN status = 'retrying' THEN 'retrying' ELSE 'pending' END "
                "WHERE id = $1 AND subscription_id = $2 AND org_id = $3 "
                "AND status <> 'cancelled'",
                delivery_id,
                subscription_id,
                org_id,
                self._now(),
            )
        return Redelivery.QUEUED if changed else Redelivery.NOT_FOUND

    async def replay(
        self, org_id: str, subscription: Subscription, window: ReplayWindow
    ) -> Replayed:
        events, limit = window.events, window.limit
        if not events:
            return Replayed(0, None)
        in_names = self._driver.in_list("$2")
        if window.only_failed:
            # From the subscription's failed deliveries (an index on its statuses).
            source = (
                f"FROM deliveries d {JOIN_EVENTS} WHERE d.subscription_id = $1 "
                f"AND d.status = 'failed' AND d.event {in_names} AND d.org_id = $6"
            )
        else:
            # From the org's events in the window (an index on their time), with what the
            # subscription had of each: nothing, or a finished delivery.
            source = (
                "FROM events e LEFT JOIN deliveries d ON d.org_id = e.org_id "
                "AND d.event_id = e.id AND d.subscription_id = $1 "
                f"WHERE e.org_id = $6 AND e.event {in_names} "
                "AND (d.id IS NULL OR d.status IN ('failed', 'sent')) "
                # An operational event it never had is not made for it: it may be about
                # itself, or from before it subscribed.
                f"AND (d.id IS NOT NULL OR e.source IS NULL OR e.source <> '{OPERATIONAL_SOURCE}')"
            )
        now = self._now()
        async with self._transaction() as conn:
            # The bodies are read only to judge them by the subscription's filter.
            body = ", e.body" if window.accepts is not None else ""
            candidates = await conn.fetch(
                "SELECT d.id AS delivery_id, e.id AS event_id, e.event, e.occurred_at, "
                f"e.customer_id, e.payload_removed_at{body} "
                f"{source} AND e.occurred_at >= $3 AND e.occurred_at < $4 "
                "ORDER BY e.occurred_at, e.id LIMIT $5",
                subscription.id,
                self._driver.list_param(events),
                window.since,
                window.until,
                limit + 1,
                org_id,
            )
            more = len(candidates) > limit
            # An event whose payload was removed cannot be sent again: counted, not queued.
            without_payload = sum(
                1 for row in candidates[:limit] if row["payload_removed_at"] is not None
            )
            chosen = [row for row in candidates[:limit] if row["payload_removed_at"] is None]
            filtered = 0
            if window.accepts is not None:
                kept = [row for row in chosen if self._accepted(org_id, row, window.accepts)]
                filtered, chosen = len(chosen) - len(kept), kept
            # Ordered: every replayed delivery takes a new place in its customer's queue, in
            # the events' order, behind what is open already.
            ordered = subscription.ordered and not subscription.polled
            keys = [row["customer_id"] if ordered else None for row in chosen]
            seqs: list[int | None] = [None] * len(chosen)
            if any(keys):
                taken = iter(await take_places(self._driver, conn, sum(1 for k in keys if k)))
                seqs = [next(taken) if key else None for key in keys]
            again = [
                (row["delivery_id"], key, seq)
                for row, key, seq in zip(chosen, keys, seqs, strict=True)
                if row["delivery_id"] is not None
            ]
            reopened = 0
            if subscription.polled:
                # A feed's: each one available again at a new place, in the events' order.
                places = await stamp_feed(conn, subscription.id, len(chosen)) if chosen else []
                seqs = list(places)
                again = [
                    (row["delivery_id"], None, place)
                    for row, place in zip(chosen, places, strict=True)
                    if row["delivery_id"] is not None
                ]
                if again:
                    source, args = self._driver.row_source(
                        (("id", "text"), ("poll_seq", "bigint")),
                        [(delivery_id, place) for delivery_id, _, place in again],
                        first=2,
                    )
                    reopened = len(
                        await conn.fetch(
                            "UPDATE deliveries SET status = 'available', updated_at = $1, "
                            f"poll_seq = r.poll_seq FROM ({source}) r WHERE deliveries.id = r.id "
                            "AND deliveries.status IN ('failed', 'sent', 'available') "
                            "RETURNING deliveries.id",
                            now,
                            *args,
                        )
                    )
                again = []
            if again:
                source, args = self._driver.row_source(
                    (("id", "text"), ("ordering_key", "text"), ("seq", "bigint")), again, first=2
                )
                rows = await conn.fetch(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, "
                    "updated_at = $1, ordering_key = r.ordering_key, seq = r.seq "
                    f"FROM ({source}) r WHERE deliveries.id = r.id "
                    "AND deliveries.status IN ('failed', 'sent') RETURNING deliveries.id",
                    now,
                    *args,
                )
                reopened = len(rows)
            fresh = [
                (
                    NewDelivery(
                        ids.new_id(ids.DELIVERY),
                        row["event_id"],
                        subscription.id,
                        row["event"],
                        org_id,
                        ordering_key=key,
                    ),
                    seq,
                )
                for row, key, seq in zip(chosen, keys, seqs, strict=True)
                if row["delivery_id"] is None
            ]
            created = 0
            if fresh and subscription.polled:
                # At the places taken above, in the events' order with the reopened ones.
                made = [replace(d, poll=True, ordering_key=None) for d, _ in fresh]
                at = [place for _, place in fresh if place is not None]
                created = len(await insert_polled(self._driver, conn, made, now, at))
                await add_counts(
                    self._driver, conn, Counter({(subscription.id, now, DELIVERIES): created})
                )
            elif fresh:
                created = len(await insert_deliveries(self._driver, conn, fresh, now))
                await add_counts(
                    self._driver, conn, Counter({(subscription.id, now, DELIVERIES): created})
                )
        next_since = int(candidates[limit]["occurred_at"]) if more else None
        return Replayed(reopened + created, next_since, without_payload, filtered)

    def _accepted(self, org_id: str, row: Row, accepts: Callable[[Any], bool]) -> bool:
        """Whether the filter takes a candidate event of a replay; True when its body cannot
        be read here (it is queued, and the dispatcher deals with it as with any other)."""
        try:
            envelope = orjson.loads(self._open_body(org_id, row["event_id"], bytes(row["body"])))
        except (Undecryptable, orjson.JSONDecodeError):
            return True
        return bool(accepts(envelope))

    async def event_trail(self, org_id: str, event_id: str) -> EventTrail | None:
        async with self._connection() as conn:
            event = await conn.fetchrow(
                "SELECT id, event, occurred_at, received_at FROM events "
                "WHERE org_id = $1 AND id = $2",
                org_id,
                event_id,
            )
            if event is None:
                return None
            # The (event, subscription) index, then each subscription by its key.
            rows = await conn.fetch(
                f"SELECT d.subscription_id, {_LOG_COLUMNS} FROM deliveries d "
                f"{_JOIN_LAST_ATTEMPT} JOIN subscriptions s ON s.id = d.subscription_id "
                "WHERE d.event_id = $2 AND d.org_id = $1 AND s.org_id = $1 "
                "AND s.deleted_at IS NULL ORDER BY d.created_at, d.id",
                org_id,
                event_id,
            )
        return EventTrail(
            id=event["id"],
            event=event["event"],
            occurred_at=event["occurred_at"],
            received_at=event["received_at"],
            deliveries=[EventDelivery(row["subscription_id"], _log_row(row)) for row in rows],
        )


def _log_row(row: Row) -> DeliveryLogRow:
    status = DeliveryStatus(row["status"])
    last = (
        None
        if row["a_number"] is None
        else AttemptLog(
            number=row["a_number"],
            at=row["a_at"],
            response_code=row["a_code"],
            duration_ms=row["a_duration"],
            error=row["a_error"],
            response_excerpt=None,
        )
    )
    return DeliveryLogRow(
        id=row["id"],
        event_id=row["event_id"],
        event=row["event"],
        status=status,
        created_at=row["created_at"],
        attempt_count=row["attempts"],
        last_attempt=last,
        next_attempt_at=row["next_attempt_at"]
        if status in (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)
        else None,
        cancelled_reason=row["last_error"] if status is DeliveryStatus.CANCELLED else None,
    )
