"""The store in the SQL that SQLite and PostgreSQL both speak: one `SqlStore`, over a thin
`Driver` per database (`sqlite.py`, `postgres.py`).

A driver owns only what really differs: how a connection and a transaction are had, the
placeholders (statements are written with `$n`, asyncpg's; the SQLite driver rewrites them), the
row source of a bulk insert (`json_each` or `unnest`), the lock clause of a claim
(`FOR UPDATE SKIP LOCKED` where replicas compete) and which of its errors mean "the database is
away". Those errors become `StoreUnavailable` here, in one place, for every statement. Times are
epoch milliseconds.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import orjson
import structlog

from service import ids
from service.clock import now_ms
from service.store.base import Page, Recorded, Store, StoreUnavailable, SubscriptionChanges
from service.store.crypto import SecretBox
from service.store.models import (
    ApiKey,
    AttemptLog,
    AttemptRecord,
    DeliveryDetail,
    DeliveryFilter,
    DeliveryJob,
    DeliveryLogRow,
    DeliveryStatus,
    Health,
    IncomingEvent,
    LastDelivery,
    NewDelivery,
    Replayed,
    Subscription,
)

Row = Mapping[str, Any]
log = structlog.get_logger(__name__)

API_KEY_PREFIX = "qe_key_"
SECRET_PREFIX = "qe_whsec_"  # noqa: S105 - a prefix, not a secret


def hash_api_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is as safe as a slow one and keeps auth cheap.
    return hashlib.sha256(key.encode()).hexdigest()


class Conn(Protocol):
    """One connection (or transaction) of either driver."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Runs a statement; returns the number of rows it changed."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


Column = tuple[str, str]
"""A bulk insert's column: its name and its PostgreSQL type (`text`, `bigint` or `bytea`)."""


class Driver(Protocol):
    """What differs between the two databases; everything else is `SqlStore`'s."""

    lock_due: str
    """Appended to the SELECT of due deliveries a claim takes: `FOR UPDATE SKIP LOCKED` where
    several replicas claim at once, empty where one process owns the database."""

    now_ms_sql: str
    """The database's clock in epoch milliseconds, as SQL: every lease time is taken from it,
    so replicas whose clocks disagree still agree on whose lease has run out."""

    sequence_sql: str
    """Takes $1 places in the order of ordered deliveries: $1 rows of `v`, or one row whose `v`
    is the new top of a counter (the $1 values up to it are the caller's)."""

    def transaction(self) -> AbstractAsyncContextManager[Conn]: ...

    def connection(self) -> AbstractAsyncContextManager[Conn]: ...

    def scan(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for reads that may go through many rows (the API's health rows and
        delivery log, the backlog count): where statements run on the event loop's thread
        (SQLite), these run elsewhere, so they never stall the loop."""

    def unavailable(self, exc: Exception) -> bool:
        """True when `exc` means the database is away (down, locked, failing over, out of
        connections or disk), not that the statement is wrong."""

    def in_list(self, placeholder: str) -> str:
        """SQL that is true when a column is in the list passed as `placeholder`, after `IN`
        or `= ANY`: the caller writes `column <in_list>`."""

    def list_param(self, values: Sequence[str]) -> Any: ...

    def row_source(
        self, columns: Sequence[Column], rows: Sequence[Sequence[Any]], first: int
    ) -> tuple[str, list[Any]]:
        """A `SELECT` of `rows` as a table with `columns`, for `INSERT … SELECT`; its
        parameters are numbered from `$first`, and returned to be passed in that order."""

    async def close(self) -> None: ...


_SUBSCRIPTION_COLUMNS = (
    "id, org_id, url, events, installed_by, secret_enc, active, deactivated_reason, "
    "created_at, updated_at, failing_since, previous_secret_enc, previous_secret_until, "
    "rate_limit, headers, disabled_at, consecutive_failures, ordering"
)
_JOB_COLUMNS = (
    "d.id, d.subscription_id, d.event_id, d.event, e.body, e.sibling_service, d.attempts, "
    "e.occurred_at"
)
_JOIN_EVENTS = "JOIN events e ON e.org_id = d.org_id AND e.id = d.event_id"
_OPEN = "status IN ('pending', 'retrying')"
_DELETE = (
    "UPDATE subscriptions SET deleted_at = $2, active = false, updated_at = $2 "
    "WHERE id = $1 AND org_id = $3 AND deleted_at IS NULL"
)
_DEACTIVATE = (
    "UPDATE subscriptions SET active = false, deactivated_reason = $3, updated_at = $2, "
    "disabled_at = $2 WHERE id = $1 AND active AND deleted_at IS NULL"
)
PAUSED = "paused through the API (PATCH active: false)"
_BUMP_REVISION = "UPDATE store_meta SET value = value + 1 WHERE name = 'subscriptions_revision'"
_EVENT_COLUMNS: tuple[Column, ...] = (
    ("id", "text"),
    ("org_id", "text"),
    ("event", "text"),
    ("occurred_at", "bigint"),
    ("body", "bytea"),
    ("sibling_service", "text"),
    ("source", "text"),
    ("customer_id", "text"),
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
_DELIVERY_COLUMNS: tuple[Column, ...] = (
    ("id", "text"),
    ("event_id", "text"),
    ("subscription_id", "text"),
    ("event", "text"),
    ("org_id", "text"),
)
_ORDERED_COLUMNS: tuple[Column, ...] = (
    *_DELIVERY_COLUMNS,
    ("ordering_key", "text"),
    ("seq", "bigint"),
)
_STAT_COLUMNS: tuple[Column, ...] = (
    ("subscription_id", "text"),
    ("period", "bigint"),
    ("counter", "text"),
    ("n", "bigint"),
)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
LATENCY_BUCKETS_MS = (
    5, 10, 25, 50, 75, 100, 150, 250, 400, 600, 1000, 1500, 2500, 4000, 6000, 10000, 15000, 30000
)  # fmt: skip
"""Upper bounds of the attempt-duration counters (`le:<ms>`, and `le:inf` past the last): a
24 h p95 is read from them, interpolated within its bucket as Prometheus' histogram_quantile
does, so it is exact to the bucket's width (at most 40 % of the value above 100 ms)."""
_LOG_COLUMNS = (
    "d.id, d.event_id, d.event, d.status, d.created_at, d.attempts, d.next_attempt_at, "
    "a.number AS a_number, a.started_at AS a_at, a.status_code AS a_code, "
    "a.duration_ms AS a_duration, a.error AS a_error"
)
# The last attempt: attempt numbers are unique per delivery (only the lease holder records).
_JOIN_LAST_ATTEMPT = "LEFT JOIN attempts a ON a.delivery_id = d.id AND a.number = d.attempts"
MAX_ATTEMPTS_SHOWN = 100


class SqlStore(Store):
    """The store on either database, through its driver."""

    def __init__(self, driver: Driver, box: SecretBox) -> None:
        self._driver = driver
        self._box = box

    def _transaction(self) -> AbstractAsyncContextManager[Conn]:
        return self._mapped(self._driver.transaction())

    def _connection(self) -> AbstractAsyncContextManager[Conn]:
        return self._mapped(self._driver.connection())

    def _scan(self) -> AbstractAsyncContextManager[Conn]:
        return self._mapped(self._driver.scan())

    @asynccontextmanager
    async def _mapped(self, session: AbstractAsyncContextManager[Conn]) -> AsyncIterator[Conn]:
        """The one place where a driver's errors become the store's: whatever means the
        database is away, from connecting to committing, is `StoreUnavailable`."""
        try:
            async with session as conn:
                yield conn
        except Exception as exc:
            if self._driver.unavailable(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise

    async def close(self) -> None:
        await self._driver.close()

    async def ping(self) -> bool:
        async with self._connection() as conn:
            row = await conn.fetchrow("SELECT 1 AS one")
        return row is not None and row["one"] == 1

    # -- API keys ---------------------------------------------------------------------------

    async def create_api_key(self, org_id: str, name: str | None) -> tuple[ApiKey, str]:
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        async with self._transaction() as conn:
            row = await _insert(
                conn,
                "api_keys",
                "id, org_id, name, prefix, created_at, revoked_at",
                id=ids.new_id(ids.API_KEY),
                org_id=org_id,
                name=name,
                key_hash=hash_api_key(key),
                prefix=key[: len(API_KEY_PREFIX) + 4],
                created_at=now_ms(),
            )
        return ApiKey(**dict(row)), key

    async def org_for_api_key(self, key: str) -> str | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT org_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                hash_api_key(key),
            )
        return None if row is None else str(row["org_id"])

    async def list_api_keys(self) -> list[ApiKey]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id, org_id, name, prefix, created_at, revoked_at FROM api_keys ORDER BY id"
            )
        return [ApiKey(**dict(row)) for row in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        async with self._transaction() as conn:
            changed = await conn.execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                key_id,
                now_ms(),
            )
        return changed > 0

    # -- subscriptions ----------------------------------------------------------------------

    def _subscription(self, row: Row) -> Subscription:
        return Subscription(
            id=row["id"],
            org_id=row["org_id"],
            url=row["url"],
            events=tuple(orjson.loads(row["events"])),
            installed_by=row["installed_by"],
            active=bool(row["active"]),
            deactivated_reason=row["deactivated_reason"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            failing_since=row["failing_since"],
            secret=self._box.open_or_none(row["secret_enc"]),
            previous_secret=None
            if row["previous_secret_enc"] is None
            else self._box.open_or_none(row["previous_secret_enc"]),
            previous_secret_until=row["previous_secret_until"],
            rate_limit=row["rate_limit"],
            headers=() if row["headers"] is None else tuple(orjson.loads(row["headers"]).items()),
            disabled_at=row["disabled_at"],
            consecutive_failures=row["consecutive_failures"],
            ordering=row["ordering"],
        )

    async def create_subscription(
        self,
        org_id: str,
        url: str,
        events: Sequence[str],
        installed_by: str | None,
        *,
        rate_limit: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        ordering: str = "none",
    ) -> Subscription:
        now = now_ms()
        async with self._transaction() as conn:
            row = await _insert(
                conn,
                "subscriptions",
                _SUBSCRIPTION_COLUMNS,
                id=ids.new_id(ids.SUBSCRIPTION),
                org_id=org_id,
                url=url,
                events=orjson.dumps(list(events)).decode(),
                installed_by=installed_by,
                secret_enc=self._box.seal(new_secret()),
                active=True,
                created_at=now,
                updated_at=now,
                rate_limit=rate_limit,
                headers=_headers_json(headers),
                ordering=ordering,
            )
            await conn.execute(_BUMP_REVISION)
        return self._subscription(row)

    async def get_subscription(self, org_id: str, subscription_id: str) -> Subscription | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
                "WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL",
                subscription_id,
                org_id,
            )
        return None if row is None else self._subscription(row)

    async def find_subscription(self, subscription_id: str) -> Subscription | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
                "WHERE id = $1 AND deleted_at IS NULL",
                subscription_id,
            )
        return None if row is None else self._subscription(row)

    async def list_subscriptions(
        self, org_id: str, limit: int, after: str | None
    ) -> Page[Subscription]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
                "WHERE org_id = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id LIMIT $3",
                org_id,
                after or "",
                limit + 1,
            )
        subscriptions = [self._subscription(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(subscriptions, subscriptions[-1].id if more else None)

    async def update_subscription(
        self, org_id: str, subscription_id: str, changes: SubscriptionChanges
    ) -> Subscription | None:
        given = dict(changes.given())
        if "events" in given:
            given["events"] = orjson.dumps(list(given["events"])).decode()
        if "headers" in given:
            given["headers"] = _headers_json(given["headers"])
        assignments = [f"{column} = ${n}" for n, column in enumerate(given, start=4)]
        if given.get("active") is True:
            # Reactivating starts a fresh failure clock and clears the old reason.
            assignments += [
                "deactivated_reason = NULL",
                "failing_since = NULL",
                "disabled_at = NULL",
                "consecutive_failures = 0",
            ]
        elif given.get("active") is False:
            # Paused by its owner: said so, unless the service had deactivated it already.
            assignments += [
                "disabled_at = COALESCE(disabled_at, $3)",
                f"deactivated_reason = COALESCE(deactivated_reason, '{PAUSED}')",
            ]
        return await self._change(
            org_id,
            subscription_id,
            ", ".join(["updated_at = $3", *assignments]),
            now_ms(),
            *given.values(),
        )

    async def _change(
        self, org_id: str, subscription_id: str, assignments: str, *args: Any
    ) -> Subscription | None:
        """Sets `assignments` ($3… are `args`) on the org's subscription, if it is not
        deleted, and bumps the revision every index follows; returns the row as it is now."""
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                f"UPDATE subscriptions SET {assignments} "
                "WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL "
                f"RETURNING {_SUBSCRIPTION_COLUMNS}",
                subscription_id,
                org_id,
                *args,
            )
            if row is not None:
                await conn.execute(_BUMP_REVISION)
        return None if row is None else self._subscription(row)

    async def delete_subscription(self, org_id: str, subscription_id: str) -> bool:
        ended = ("cancelled", "subscription deleted")
        return await self._take_down(_DELETE, subscription_id, org_id, ended)

    async def deactivate_subscription(self, subscription_id: str, reason: str) -> bool:
        ended = ("failed", f"subscription deactivated: {reason}"[:500])
        return await self._take_down(_DEACTIVATE, subscription_id, reason, ended)

    async def _take_down(
        self, sql: str, subscription_id: str, arg: str, ended: tuple[str, str]
    ) -> bool:
        """Runs `sql` ($1 the subscription, $2 now, $3 `arg`) on the subscription's row; when
        it changed the row, the open deliveries end as `ended` (status, error) in the same
        transaction."""
        now = now_ms()
        async with self._transaction() as conn:
            changed = await conn.execute(sql, subscription_id, now, arg)
            if changed:
                await _close_open(conn, subscription_id, *ended, now)
        return changed > 0

    async def subscription_health(self, subscription_ids: Sequence[str]) -> dict[str, Health]:
        if not subscription_ids:
            return {}
        in_ids = self._driver.in_list("$1")
        ids_param = self._driver.list_param(subscription_ids)
        day_ago = (now_ms() - DAY_MS) // HOUR_MS * HOUR_MS
        async with self._scan() as conn:
            # At most (retention in hours + 24 x the latency buckets) rows per subscription.
            stats = await conn.fetch(
                "SELECT subscription_id, counter, sum(n) AS n FROM subscription_stats "
                f"WHERE subscription_id {in_ids} AND (counter = 'deliveries' OR period >= $2) "
                "GROUP BY subscription_id, counter",
                ids_param,
                day_ago,
            )
            # One index step per subscription: its newest delivery.
            lasts = await conn.fetch(
                "SELECT d.subscription_id, d.status, d.last_status_code, "
                "COALESCE(d.last_attempt_at, d.created_at) AS at FROM subscriptions s "
                "JOIN deliveries d ON d.id = (SELECT x.id FROM deliveries x "
                "WHERE x.subscription_id = s.id AND x.status <> 'cancelled' "
                "ORDER BY x.created_at DESC, x.id DESC LIMIT 1) "
                f"WHERE s.id {in_ids}",
                ids_param,
            )
            # Its open deliveries only (a partial index): the backlog, not the history.
            opens = await conn.fetch(
                "SELECT subscription_id, count(*) AS n, "
                "min(CASE WHEN status = 'retrying' THEN next_attempt_at END) AS next_retry "
                f"FROM deliveries WHERE subscription_id {in_ids} AND {_OPEN} "
                "GROUP BY subscription_id",
                ids_param,
            )
            # Ordered subscriptions: customers whose head is failing, and the oldest such head.
            blocked = await conn.fetch(
                "SELECT subscription_id, count(DISTINCT ordering_key) AS n, "
                "min(created_at) AS oldest, min(id) AS any_id FROM deliveries "
                f"WHERE subscription_id {in_ids} AND status = 'retrying' AND seq IS NOT NULL "
                "GROUP BY subscription_id",
                ids_param,
            )
            oldest: dict[str, tuple[str, int]] = {}
            for row in blocked:
                head = await conn.fetchrow(
                    "SELECT id FROM deliveries WHERE subscription_id = $1 AND created_at = $2 "
                    "AND status = 'retrying' AND seq IS NOT NULL ORDER BY id LIMIT 1",
                    row["subscription_id"],
                    row["oldest"],
                )
                head_id = row["any_id"] if head is None else head["id"]
                oldest[row["subscription_id"]] = (head_id, int(row["oldest"]))
        blocked_of = {row["subscription_id"]: int(row["n"]) for row in blocked}
        counters: dict[str, dict[str, int]] = {sid: {} for sid in subscription_ids}
        for row in stats:
            counters[row["subscription_id"]][row["counter"]] = int(row["n"])
        last_of = {
            row["subscription_id"]: LastDelivery(
                DeliveryStatus(row["status"]), row["last_status_code"], int(row["at"])
            )
            for row in lasts
        }
        open_of = {row["subscription_id"]: row for row in opens}
        health = {}
        for sid in subscription_ids:
            mine = counters[sid]
            latencies = [mine.get(_latency_counter(b), 0) for b in (*LATENCY_BUCKETS_MS, None)]
            opened = open_of.get(sid)
            health[sid] = Health(
                delivery_count=mine.get("deliveries", 0),
                last_delivery=last_of.get(sid),
                attempts_24h=sum(latencies),
                ok_24h=mine.get("ok", 0),
                p95_latency_ms_24h=p95(latencies),
                pending_count=0 if opened is None else int(opened["n"]),
                next_retry_at=None if opened is None else opened["next_retry"],
                blocked_customers=blocked_of.get(sid, 0),
                oldest_blocked=oldest.get(sid),
            )
        return health

    async def rotate_secret(
        self, org_id: str, subscription_id: str, overlap_ms: int
    ) -> Subscription | None:
        now = now_ms()
        keep, until = (
            ("previous_secret_enc = secret_enc, previous_secret_until = $5", [now + overlap_ms])
            if overlap_ms > 0
            else ("previous_secret_enc = NULL, previous_secret_until = NULL", [])
        )
        # Both sides of every assignment read the row as it was: the old secret moves over.
        return await self._change(
            org_id,
            subscription_id,
            f"secret_enc = $3, updated_at = $4, {keep}",
            self._box.seal(new_secret()),
            now,
            *until,
        )

    # -- the delivery log and recovery --------------------------------------------------------

    async def list_deliveries(
        self,
        org_id: str,
        subscription_id: str,
        where: DeliveryFilter,
        limit: int,
        after: str | None,
    ) -> Page[DeliveryLogRow]:
        conditions = ["d.subscription_id = $1", "d.org_id = $2", "d.status <> 'cancelled'"]
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
        if after is not None:
            created, after_id = log_position(after)
            # A row value (SQLite 3.15+), which both databases read as a range of the log's
            # indexes (…, created_at, id): the page starts where the cursor points. Spelled
            # out as `created_at < $a OR (created_at = $a AND id < $b)`, PostgreSQL reads it
            # as a filter instead, walking every newer row first (linear in the page's depth:
            # 7,600 rows read for page 51 of an event-filtered log, tests/bench/operations.py).
            conditions.append(f"(d.created_at, d.id) < ({arg(created)}, {arg(after_id)})")
        async with self._scan() as conn:
            rows = await conn.fetch(
                f"SELECT {_LOG_COLUMNS} FROM deliveries d {_JOIN_LAST_ATTEMPT} "
                f"WHERE {' AND '.join(conditions)} "
                f"ORDER BY d.created_at DESC, d.id DESC LIMIT {arg(limit + 1)}",
                *args,
            )
        page = [_log_row(row) for row in rows[:limit]]
        last = page[-1] if len(rows) > limit else None
        return Page(page, None if last is None else f"{last.created_at}.{last.id}")

    async def get_delivery(
        self, org_id: str, subscription_id: str, delivery_id: str
    ) -> DeliveryDetail | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_LOG_COLUMNS}, e.body FROM deliveries d {_JOIN_EVENTS} "
                f"{_JOIN_LAST_ATTEMPT} WHERE d.id = $1 AND d.subscription_id = $2 "
                "AND d.org_id = $3 AND d.status <> 'cancelled'",
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
        return DeliveryDetail(
            row=_log_row(row),
            payload=bytes(row["body"]),
            attempts=tuple(
                AttemptLog(
                    number=a["number"],
                    at=a["started_at"],
                    response_code=a["status_code"],
                    duration_ms=a["duration_ms"],
                    error=a["error"],
                    response_excerpt=a["response_excerpt"],
                )
                for a in reversed(attempts)
            ),
        )

    async def redeliver(self, org_id: str, subscription_id: str, delivery_id: str) -> bool:
        async with self._transaction() as conn:
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
                now_ms(),
            )
        return changed > 0

    async def replay(
        self,
        org_id: str,
        subscription: Subscription,
        events: Sequence[str],
        since: int,
        until: int,
        *,
        only_failed: bool,
        limit: int,
    ) -> Replayed:
        if not events:
            return Replayed(0, None)
        names = self._driver.list_param(events)
        in_names = self._driver.in_list("$2")
        now = now_ms()
        async with self._transaction() as conn:
            if only_failed:
                # From the subscription's failed deliveries (an index on its statuses).
                candidates = await conn.fetch(
                    "SELECT d.id AS delivery_id, e.id AS event_id, e.event, e.occurred_at, "
                    f"e.customer_id FROM deliveries d {_JOIN_EVENTS} WHERE d.subscription_id = $1 "
                    f"AND d.status = 'failed' AND d.event {in_names} AND e.occurred_at >= $3 "
                    "AND e.occurred_at < $4 AND d.org_id = $6 "
                    "ORDER BY e.occurred_at, e.id LIMIT $5",
                    subscription.id,
                    names,
                    since,
                    until,
                    limit + 1,
                    org_id,
                )
            else:
                # From the org's events in the window (an index on their time), with what the
                # subscription had of each: nothing, or a finished delivery.
                candidates = await conn.fetch(
                    "SELECT d.id AS delivery_id, e.id AS event_id, e.event, e.occurred_at, "
                    "e.customer_id FROM events e LEFT JOIN deliveries d ON d.org_id = e.org_id "
                    "AND d.event_id = e.id AND d.subscription_id = $1 "
                    f"WHERE e.org_id = $6 AND e.event {in_names} AND e.occurred_at >= $3 "
                    "AND e.occurred_at < $4 AND (d.id IS NULL OR d.status IN ('failed', 'sent')) "
                    "ORDER BY e.occurred_at, e.id LIMIT $5",
                    subscription.id,
                    names,
                    since,
                    until,
                    limit + 1,
                    org_id,
                )
            more = len(candidates) > limit
            chosen = candidates[:limit]
            # Ordered: every replayed delivery takes a new place in its customer's queue, in
            # the events' order, behind what is open already.
            ordered = subscription.ordering == "customer"
            keys = [row["customer_id"] if ordered else None for row in chosen]
            seqs: list[int | None] = [None] * len(chosen)
            if any(keys):
                taken = iter(await self._sequence(conn, sum(1 for k in keys if k)))
                seqs = [next(taken) if key else None for key in keys]
            again = [
                (row["delivery_id"], key, seq)
                for row, key, seq in zip(chosen, keys, seqs, strict=True)
                if row["delivery_id"] is not None
            ]
            reopened = 0
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
            if fresh:
                created = len(await self._insert_deliveries(conn, fresh, now))
                await self._count(conn, Counter({(subscription.id, now, "deliveries"): created}))
        next_since = int(candidates[limit]["occurred_at"]) if more else None
        return Replayed(reopened + created, next_since)

    async def _count(self, conn: Conn, counts: Counter[tuple[str, int, str]]) -> None:
        """Adds to the counters: (subscription, a time, counter) → n. `deliveries` are
        counted by the day (they are summed over the whole retention: 30 rows a subscription,
        not 720), the attempts' counters by the hour (read for the last 24 hours only)."""
        rows = sorted(
            (sid, at - at % (DAY_MS if counter == "deliveries" else HOUR_MS), counter, n)
            for (sid, at, counter), n in counts.items()
            if n
        )
        if not rows:
            return
        # Summed per period first: one row may not be upserted twice in one statement.
        summed: Counter[tuple[str, int, str]] = Counter()
        for sid, period, counter, n in rows:
            summed[(sid, period, counter)] += n
        source, args = self._driver.row_source(
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

    async def subscriptions_revision(self) -> int:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT value FROM store_meta WHERE name = 'subscriptions_revision'"
            )
        return 0 if row is None else int(row["value"])

    async def active_subscriptions(self) -> list[Subscription]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
                "WHERE active = $1 AND deleted_at IS NULL ORDER BY id",
                True,
            )
        active = [self._subscription(row) for row in rows]
        for subscription in active:
            if subscription.secret is None:
                # Still matched (its events are recorded, nothing is lost); delivery skips it.
                log.error("subscription.undecryptable", subscription_id=subscription.id)
        return active

    async def subscription_counts(self) -> dict[str, int]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT active, count(*) AS n FROM subscriptions WHERE deleted_at IS NULL "
                "GROUP BY active"
            )
        counts = {"active": 0, "deactivated": 0}
        for row in rows:
            counts["active" if row["active"] else "deactivated"] = int(row["n"])
        return counts

    # -- pipeline ---------------------------------------------------------------------------

    @staticmethod
    def _job(row: Row) -> DeliveryJob:
        return DeliveryJob(
            id=row["id"],
            subscription_id=row["subscription_id"],
            event_id=row["event_id"],
            event=row["event"],
            body=bytes(row["body"]),
            sibling_service=row["sibling_service"],
            attempts=row["attempts"],
            occurred_at=row["occurred_at"],
        )

    def _due(
        self, leading: Sequence[Any], subscription_id: str | None, exclude: Sequence[str]
    ) -> tuple[str, list[Any]]:
        """The WHERE clause of due, unleased deliveries and its arguments: `leading` (the
        caller's own, numbered from $1), then now (this replica's clock, which wrote the retry
        times), then the optional filters. Whether a lease has run out is the database clock's
        call."""
        args: list[Any] = [*leading, now_ms()]
        conditions = [
            _OPEN,
            f"next_attempt_at <= ${len(args)}",
            f"(lease_until IS NULL OR lease_until < {self._driver.now_ms_sql})",
            # A paused subscription's deliveries wait (PATCH active=false); they go out again
            # when it is re-enabled.
            "EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = deliveries.subscription_id "
            "AND s.active)",
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
        if subscription_id is not None:
            args.append(subscription_id)
            conditions.append(f"subscription_id = ${len(args)}")
        if exclude:
            args.append(self._driver.list_param(exclude))
            conditions.append(f"NOT (subscription_id {self._driver.in_list(f'${len(args)}')})")
        return " AND ".join(conditions), args

    async def record_events(
        self,
        events: Sequence[IncomingEvent],
        deliveries: Sequence[NewDelivery],
        lease_owner: str,
        lease_ms: int,
    ) -> list[NewDelivery]:
        now = now_ms()
        async with self._transaction() as conn:
            source, args = self._driver.row_source(
                _EVENT_COLUMNS,
                [
                    (
                        e.id,
                        e.org_id,
                        e.event,
                        e.occurred_at,
                        e.body,
                        e.sibling_service,
                        e.source,
                        e.customer_id,
                    )
                    for e in events
                ],
                first=2,
            )
            # `WHERE true`: SQLite reads an ON CONFLICT after a bare SELECT as a join clause.
            await conn.execute(
                "INSERT INTO events (id, org_id, event, occurred_at, body, sibling_service, "
                "source, customer_id, received_at) SELECT r.id, r.org_id, r.event, "
                "r.occurred_at, r.body, r.sibling_service, r.source, r.customer_id, $1 "
                f"FROM ({source}) r WHERE true ON CONFLICT (org_id, id) DO NOTHING",
                now,
                *args,
            )
            if not deliveries:
                return []
            unordered = [d for d in deliveries if d.ordering_key is None]
            created: set[str] = set()
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
                    lease_owner,
                    lease_ms,
                    *args,
                )
                created.update(row["id"] for row in rows)
            if ordered := [d for d in deliveries if d.ordering_key is not None]:
                created.update(await self._insert_ordered(conn, ordered, now))
            await self._count(
                conn,
                Counter(
                    (d.subscription_id, now, "deliveries") for d in deliveries if d.id in created
                ),
            )
        return [d for d in deliveries if d.id in created]

    async def _sequence(self, conn: Conn, n: int) -> list[int]:
        """`n` new places in the store-wide order of ordered deliveries, ascending."""
        rows = await conn.fetch(self._driver.sequence_sql, n)
        if len(rows) == n:
            return sorted(int(row["v"]) for row in rows)
        top = int(rows[0]["v"])  # a counter's new top: the n values up to it are ours
        return list(range(top - n + 1, top + 1))

    async def _insert_ordered(
        self, conn: Conn, deliveries: Sequence[NewDelivery], now: int
    ) -> set[str]:
        """Ordered deliveries, unleased, each given its place in the order as listed (Kafka's
        order within a partition); returns the ids that were new."""
        seqs = await self._sequence(conn, len(deliveries))
        return await self._insert_deliveries(conn, list(zip(deliveries, seqs, strict=True)), now)

    async def _insert_deliveries(
        self, conn: Conn, deliveries: Sequence[tuple[NewDelivery, int | None]], now: int
    ) -> set[str]:
        """Unleased deliveries due now, each with its place in the order (None: unordered);
        returns the ids that were new."""
        source, args = self._driver.row_source(
            _ORDERED_COLUMNS,
            [
                (d.id, d.event_id, d.subscription_id, d.event, d.org_id, d.ordering_key, seq)
                for d, seq in deliveries
            ],
            first=2,
        )
        rows = await conn.fetch(
            "INSERT INTO deliveries (id, event_id, subscription_id, event, org_id, status, "
            "attempts, next_attempt_at, created_at, updated_at, ordering_key, seq) "
            "SELECT r.id, r.event_id, r.subscription_id, r.event, r.org_id, 'pending', 0, "
            f"$1, $1, $1, r.ordering_key, r.seq FROM ({source}) r WHERE true "
            "ON CONFLICT (event_id, subscription_id) DO NOTHING RETURNING id",
            now,
            *args,
        )
        return {row["id"] for row in rows}

    async def claim_due(
        self,
        owner: str,
        limit: int,
        lease_ms: int,
        *,
        subscription_id: str | None = None,
        exclude: Sequence[str] = (),
    ) -> list[DeliveryJob]:
        # A read first: most claims (every poll of an idle process) find nothing, and a read
        # costs no write transaction (on SQLite, no fsync). A scan: behind a failing ordered
        # head, thousands of due but blocked deliveries may be walked before nothing is found.
        where, args = self._due([], subscription_id, exclude)
        async with self._scan() as conn:
            if (
                await conn.fetchrow(f"SELECT 1 AS one FROM deliveries WHERE {where} LIMIT 1", *args)
                is None
            ):
                return []
        where, args = self._due([owner, lease_ms, limit], subscription_id, exclude)
        async with self._transaction() as conn:
            claimed = await conn.fetch(
                f"WITH due AS (SELECT id FROM deliveries WHERE {where} "
                f"ORDER BY next_attempt_at LIMIT $3 {self._driver.lock_due}) "
                f"UPDATE deliveries SET lease_owner = $1, lease_until = {self._driver.now_ms_sql} "
                "+ $2 WHERE id IN (SELECT id FROM due) RETURNING id",
                *args,
            )
            if not claimed:
                return []
            rows = await conn.fetch(
                f"SELECT {_JOB_COLUMNS} FROM deliveries d {_JOIN_EVENTS} "
                f"WHERE d.id {self._driver.in_list('$1')} ORDER BY d.next_attempt_at",
                self._driver.list_param([row["id"] for row in claimed]),
            )
            if orphans := {row["id"] for row in claimed} - {row["id"] for row in rows}:
                # Its event is gone (a retention purge raced a replay that made the delivery,
                # on PostgreSQL): it can never be sent, and must not be claimed forever nor
                # hold up an ordered customer's queue.
                await conn.execute(
                    "UPDATE deliveries SET status = 'failed', last_error = $2, updated_at = $3, "
                    f"lease_owner = NULL, lease_until = NULL WHERE id {self._driver.in_list('$1')}",
                    self._driver.list_param(sorted(orphans)),
                    "its event was deleted by the retention",
                    now_ms(),
                )
                log.error("delivery.event_missing", deliveries=sorted(orphans))
        return [self._job(row) for row in rows]

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
        async with self._transaction() as conn:
            rows = await conn.fetch(
                f"UPDATE deliveries SET {assignments} "
                f"WHERE id {self._driver.in_list('$1')} AND lease_owner = $2 RETURNING id",
                self._driver.list_param(delivery_ids),
                owner,
                *args,
            )
        return {row["id"] for row in rows}

    async def take_back_leases(self) -> int:
        async with self._transaction() as conn:
            return await conn.execute(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL "
                "WHERE lease_owner IS NOT NULL"
            )

    async def record_attempts(self, attempts: Sequence[AttemptRecord], owner: str) -> Recorded:
        if not attempts:
            return Recorded({}, frozenset())
        clocks = _failure_clocks(attempts)
        # Locks are taken in one order everywhere — subscriptions (by id), then deliveries (by
        # id) — as deactivate and delete do, so concurrent writers cannot deadlock.
        ordered = sorted(attempts, key=lambda a: (a.delivery_id, a.number))
        # A delivery attempted twice in one batch ends as its later attempt says.
        latest = list({a.delivery_id: a for a in ordered}.values())
        failing_since: dict[str, int | None] = {}
        async with self._transaction() as conn:
            for subscription_id, (reset, first_failure, failures) in sorted(clocks.items()):
                if first_failure is None:
                    # Only a row that was failing is written: the healthy common case
                    # leaves the subscription row (and its lock) alone.
                    await conn.execute(
                        "UPDATE subscriptions SET failing_since = NULL, consecutive_failures = 0 "
                        "WHERE id = $1 AND (failing_since IS NOT NULL OR consecutive_failures > 0)",
                        subscription_id,
                    )
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
                    + " WHERE id = $1 RETURNING failing_since",
                    subscription_id,
                    first_failure,
                    failures,
                )
                failing_since[subscription_id] = None if row is None else row["failing_since"]
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
                first=2,
            )
            # The fence: only deliveries this replica still holds take its outcome.
            rows = await conn.fetch(
                "UPDATE deliveries SET status = r.status, attempts = r.number, "
                "last_attempt_at = r.started_at, last_status_code = r.status_code, "
                "last_error = r.error, "
                "next_attempt_at = COALESCE(r.next_attempt_at, deliveries.next_attempt_at), "
                "updated_at = r.finished_at, lease_owner = NULL, lease_until = NULL "
                f"FROM ({source}) r WHERE deliveries.id = r.id "
                "AND deliveries.status IN ('pending', 'retrying') "
                "AND deliveries.lease_owner = $1 RETURNING deliveries.id",
                owner,
                *args,
            )
            held = {row["id"] for row in rows}
            await conn.executemany(
                "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, "
                "result, error, response_excerpt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                [
                    (
                        a.delivery_id,
                        a.number,
                        a.started_at,
                        a.duration_ms,
                        a.status_code,
                        a.result,
                        a.error,
                        a.response_excerpt,
                    )
                    for a in ordered
                    if a.delivery_id in held
                ],
            )
            counts: Counter[tuple[str, int, str]] = Counter()
            for a in ordered:
                if a.delivery_id in held:
                    counts[(a.subscription_id, a.started_at, _latency_counter(a.duration_ms))] += 1
                    if a.new_status is DeliveryStatus.SENT:
                        counts[(a.subscription_id, a.started_at, "ok")] += 1
            await self._count(conn, counts)
        return Recorded(failing_since, frozenset(a.delivery_id for a in latest) - held)

    async def pending_count(self) -> int:
        async with self._scan() as conn:
            row = await conn.fetchrow(f"SELECT count(*) AS n FROM deliveries WHERE {_OPEN}")
        return 0 if row is None else int(row["n"])

    async def purge(self, finished_before: int, batch: int) -> int:
        in_ids = self._driver.in_list("$1")
        async with self._transaction() as conn:
            old = await conn.fetch(
                f"SELECT id FROM deliveries WHERE NOT ({_OPEN}) AND updated_at < $1 LIMIT $2",
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
                now_ms() - DAY_MS - 2 * HOUR_MS,
            )
        return removed


async def _close_open(conn: Conn, subscription_id: str, status: str, error: str, now: int) -> None:
    """A subscription went away (deleted or deactivated): its open deliveries end as `status`
    with `error`, their leases dropped, and every index learns of the change."""
    await conn.execute(
        "UPDATE deliveries SET status = $2, updated_at = $3, lease_owner = NULL, "
        f"lease_until = NULL, last_error = $4 WHERE subscription_id = $1 AND {_OPEN}",
        subscription_id,
        status,
        now,
        error,
    )
    await conn.execute(_BUMP_REVISION)


async def _insert(conn: Conn, table: str, returning: str, **values: Any) -> Row:
    """Inserts one row and returns its `returning` columns. The table and column names are
    this module's constants, never input."""
    columns = ", ".join(values)
    placeholders = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING {returning}",
        *values.values(),
    )
    if row is None:  # an INSERT without ON CONFLICT returns its row or raises
        raise RuntimeError(f"INSERT INTO {table} returned no row")
    return row


def _failure_clocks(
    attempts: Sequence[AttemptRecord],
) -> dict[str, tuple[bool, int | None, int]]:
    """Per subscription, in attempt order: (whether a success came first in this batch, the
    first failure after the last success or None when the last attempt succeeded, and how many
    failures came after the last success)."""
    clocks: dict[str, tuple[bool, int | None, int]] = {}
    for attempt in attempts:
        reset, first, failures = clocks.get(attempt.subscription_id, (False, None, 0))
        if attempt.new_status is DeliveryStatus.SENT:
            clocks[attempt.subscription_id] = (True, None, 0)
        else:
            start = attempt.started_at if first is None else first
            clocks[attempt.subscription_id] = (reset, start, failures + 1)
    return clocks


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_hex(32)


def _headers_json(headers: Sequence[tuple[str, str]]) -> str | None:
    return orjson.dumps(dict(headers)).decode() if headers else None


def _latency_counter(bound_or_ms: int | None) -> str:
    """The counter of an attempt that took `bound_or_ms` ms (None: the `inf` bucket's)."""
    if bound_or_ms is not None:
        for bound in LATENCY_BUCKETS_MS:
            if bound_or_ms <= bound:
                return f"le:{bound}"
    return "le:inf"


def p95(counts: Sequence[int]) -> int | None:
    """The 95th percentile of attempt durations from the counts per latency bucket
    (`LATENCY_BUCKETS_MS` then `inf`), interpolated linearly within its bucket; a value past
    the last bound is reported as that bound. None without attempts."""
    total = sum(counts)
    if not total:
        return None
    rank = 0.95 * total
    below = 0
    lower = 0
    for bound, n in zip((*LATENCY_BUCKETS_MS, None), counts, strict=True):
        if n and below + n >= rank:
            if bound is None:
                return lower
            return round(lower + (bound - lower) * (rank - below) / n)
        below += n
        lower = bound if bound is not None else lower
    return lower


def log_position(after: str) -> tuple[int, str]:
    """A log cursor's position, `<createdAt ms>.<delivery id>`; ValueError when it is not."""
    created, dot, delivery_id = after.partition(".")
    if not (dot and created.isascii() and created.isdigit() and len(created) <= 15):
        raise ValueError("not a cursor this listing gave out")
    if not ids.looks_like(delivery_id, ids.DELIVERY):
        raise ValueError("not a cursor this listing gave out")
    return int(created), delivery_id


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
    )
