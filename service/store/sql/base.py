"""What every part of the SQL store shares: the `Driver` and `Conn` protocols a database
implements, transactions and connections, and the one place where a driver's errors become
`StoreUnavailable`.

A driver owns only what really differs: how a connection and a transaction are had, the
placeholders (statements are written with `$n`, asyncpg's; the SQLite driver rewrites them), the
row source of a bulk insert (`json_each` or `unnest`), the lock clause of a claim
(`FOR UPDATE SKIP LOCKED` where replicas compete) and which of its errors mean "the database is
away". Times are epoch milliseconds, read through `SqlBase._now` (this module's `now_ms`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from service.clock import now_ms
from service.operational import AlertPolicy
from service.store import crypto
from service.store.crypto import Keyring
from service.store.interfaces import StoreUnavailable

Row = Mapping[str, Any]


def as_dict(row: Row) -> dict[str, Any]:
    """`row` as a dict, for a caller reading most of its many columns: a SQLite row finds a
    column by name by comparing it with each of its own (asyncpg's hash), which over thirty
    columns costs more than making the dict once. Both drivers' rows iterate over their values,
    in the order of `keys()`."""
    return dict(zip(row.keys(), iter(row), strict=True))


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

    lock_row: str
    """Appended to a SELECT of one row a transaction then writes from what it read (a PATCH's
    headers, merged with the stored ones): `FOR UPDATE` where replicas write at once, so a
    concurrent change waits instead of being lost; empty where the write transaction is the
    database's only one (SQLite's `BEGIN IMMEDIATE`)."""

    share_row: str
    """Appended to a read of the subscription revision that decides what a write records:
    `FOR KEY SHARE` where replicas write at once, so the read waits for a change that took
    the revision with `lock_row` (`hold_revision`: a create, a deactivation, a deletion) and
    sees it once committed (a row lock's read follows the row to its newest version), while a
    plain bump (a PATCH) neither waits for ingest nor is waited for; empty where the write
    transaction is the database's only one."""

    now_ms_sql: str
    """The database's clock in epoch milliseconds, as SQL: every lease time is taken from it,
    so replicas whose clocks disagree still agree on whose lease has run out."""

    sequence_sql: str
    """Takes $1 places in the order of ordered deliveries: $1 rows of `v`, or one row whose `v`
    is the new top of a counter (the $1 values up to it are the caller's)."""

    writes_in_with: bool
    """True where one statement may write several tables (PostgreSQL's data-modifying
    `WITH`): such a statement is atomic alone, and a batch's writes go to the server as one
    round trip with no transaction around them. False on SQLite: several statements in one
    transaction."""

    def transaction(self) -> AbstractAsyncContextManager[Conn]: ...

    def connection(self) -> AbstractAsyncContextManager[Conn]: ...

    def atomic(self) -> AbstractAsyncContextManager[Conn]:
        """A session for one write statement, atomic by itself: on PostgreSQL a pooled
        connection with no `BEGIN` and `COMMIT` around the statement (two round trips fewer);
        on SQLite a write transaction, its write lock taken as every writer's is."""

    def scan(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for reads that may go through many rows (the API's summary rows and
        delivery log, the backlog count): where statements run on the event loop's thread
        (SQLite), these run elsewhere, so they never stall the loop."""

    async def scrub(self) -> None:
        """After an erasure, whatever makes the erased bytes leave the database's files at
        once, where the database can (SQLite: its WAL copied and truncated)."""

    def unavailable(self, exc: Exception) -> bool:
        """True when `exc` means the database is away (down, locked, failing over, out of
        connections or disk), not that the statement is wrong."""

    async def estimated_rows(self, conn: Conn, query: str) -> int | None:
        """How many rows the database's planner expects `query` to return, from its
        statistics, in a time that does not grow with the table; None where it has no such
        estimate (SQLite)."""

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


PAYLOAD_REMOVED = "its payload was removed (erased at the customer's request)"
"""Why an open delivery of an erased customer's event ended (`cancelled`)."""
LOOKUP_KEY = "customer_lookup"
_LOOKUP_CONTEXT = "store-key:customer_lookup"


def body_context(org_id: str, event_id: str) -> bytes:
    """What an event's sealed body is bound to: its row."""
    return f"event:{org_id}:{event_id}".encode()


def excerpt_context(delivery_id: str) -> str:
    return f"attempt:{delivery_id}"


def secret_context(subscription_id: str) -> str:
    return f"secret:{subscription_id}"


def signing_key_context(subscription_id: str) -> str:
    return f"signing-key:{subscription_id}"


def headers_context(subscription_id: str) -> str:
    return f"headers:{subscription_id}"


def filter_context(subscription_id: str) -> str:
    return f"filter:{subscription_id}"


def auth_context(subscription_id: str) -> str:
    return f"auth:{subscription_id}"


OPEN = "status IN ('pending', 'retrying')"
"""A delivery still to be sent (or retried)."""
JOIN_EVENTS = "JOIN events e ON e.org_id = d.org_id AND e.id = d.event_id"
"""A delivery `d`'s event `e`."""
REVISION = "SELECT value FROM store_meta WHERE name = 'subscriptions_revision'"
"""The subscription revision every change moves (`bump_revision`): an index that matched a
batch's events at this revision missed no change."""

BUMP_REVISION = "UPDATE store_meta SET value = value + 1 WHERE name = 'subscriptions_revision'"
"""Tells every subscription index that subscriptions changed (`bump_revision` also says which)."""
BUMPED = f"WITH bumped AS ({BUMP_REVISION} RETURNING value) "
"""The revision moved by the statement it begins, where the driver `writes_in_with`; the
statement stamps its rows' `change_seq` with `NEW_STAMP`."""
NEW_STAMP = "(SELECT value FROM bumped)"


async def bump_revision(driver: Driver, conn: Conn, subscription_ids: Sequence[str]) -> None:
    """Moves the revision every subscription index follows and stamps the changed rows with it
    (`change_seq`), in the transaction that changed them. The revision's row lock is held from
    here to the commit, so changes commit in the order of their stamps: an index that has read
    a stamp has seen every smaller one (docs/decisions/0008-index-follows-changes.md)."""
    if driver.writes_in_with and subscription_ids:
        # One round trip: the revision moved and the rows stamped by one statement.
        await conn.execute(
            f"{BUMPED}UPDATE subscriptions SET change_seq = {NEW_STAMP} "
            f"WHERE id {driver.in_list('$1')}",
            driver.list_param(subscription_ids),
        )
        return
    row = await conn.fetchrow(BUMP_REVISION + " RETURNING value")
    assert row is not None
    if subscription_ids:
        await conn.execute(
            f"UPDATE subscriptions SET change_seq = $1 WHERE id {driver.in_list('$2')}",
            int(row["value"]),
            driver.list_param(subscription_ids),
        )


async def hold_revision(driver: Driver, conn: Conn) -> None:
    """Takes the revision's row lock first thing in a transaction that will move it: ingest's
    reads of the revision (`share_row`) wait from here to the commit, so what a new
    subscription's `created_at`, stamped after this, promises cannot be overtaken by a write
    matched without it; and taken before any delivery row, the lock order is ingest's
    (docs/decisions/0019-fewer-statements-per-event.md)."""
    await conn.fetchrow(f"{REVISION} {driver.lock_row}")


class SqlBase:
    """The store's shared state and sessions; each part (`appkeys`, `subscriptions`, …) adds
    its statements on top, and `SqlStore` is all of them."""

    def __init__(self, driver: Driver, keyring: Keyring) -> None:
        self._driver = driver
        self._keyring = keyring
        self._lookup: crypto.LookupHasher | None = None
        self.alerts = AlertPolicy()
        """When a subscription's run of failures is announced (`open_store` sets the
        configured one)."""

    async def load_keys(self) -> None:
        """Reads the store's customer lookup key, generating it on first use (one row of
        `store_keys`, sealed by the key ring; replicas starting together agree on the first
        written). Raises `crypto.Undecryptable` when no configured key opens it."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO store_keys (name, sealed, created_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (name) DO NOTHING",
                LOOKUP_KEY,
                self._keyring.seal_text(crypto.new_lookup_key().hex(), _LOOKUP_CONTEXT),
                self._now(),
            )
            row = await conn.fetchrow("SELECT sealed FROM store_keys WHERE name = $1", LOOKUP_KEY)
        assert row is not None
        try:
            key = bytes.fromhex(self._keyring.open_text(row["sealed"], _LOOKUP_CONTEXT))
        except crypto.Undecryptable:
            raise crypto.Undecryptable(
                "the store's customer lookup key was sealed with a key WEBHOOKS_ENCRYPTION_KEY "
                "no longer holds: configure that key again (after it, first), then run "
                "`identity-webhooks rekey` before removing it"
            ) from None
        self._lookup = crypto.LookupHasher(key)

    def _customer_key(self, org_id: str, customer_id: str | None) -> str | None:
        """What is stored of the customer an event is about: its keyed hash."""
        if customer_id is None:
            return None
        if self._lookup is None:
            raise RuntimeError("the store's keys are not loaded (load_keys)")
        return self._lookup(org_id, customer_id)

    def _open_excerpt(self, delivery_id: str, stored: str | None) -> str | None:
        """A response excerpt: opened, or as an older revision kept it in clear; None when
        none is kept or no configured key opens it."""
        if stored is None:
            return None
        opened = self._keyring.open_text_or_none(stored, excerpt_context(delivery_id))
        if opened is None and not stored.startswith(crypto.TEXT_PREFIX):
            return stored
        return opened

    def _open_headers_json(self, subscription_id: str, stored: str) -> str | None:
        """Static headers as one JSON object: opened, or as an older revision kept them in
        clear; None when no configured key opens them."""
        if stored.startswith("{"):
            return stored
        return self._keyring.open_text_or_none(stored, headers_context(subscription_id))

    def _seal_body(self, org_id: str, event_id: str, body: bytes) -> bytes:
        return self._keyring.seal(body, body_context(org_id, event_id))

    def _open_body(self, org_id: str, event_id: str, stored: bytes) -> bytes:
        """An event's body as received: opened, or as it is when an older revision kept it in
        clear; empty when its payload was removed. Raises `crypto.Undecryptable`."""
        if not crypto.is_sealed(stored):
            return stored
        return self._keyring.open(stored, body_context(org_id, event_id))

    @staticmethod
    def _now() -> int:
        """This replica's clock, epoch ms (lease times are the database's: `now_ms_sql`)."""
        return now_ms()

    def _transaction(self) -> AbstractAsyncContextManager[Conn]:
        return self._mapped(self._driver.transaction())

    def _connection(self) -> AbstractAsyncContextManager[Conn]:
        return self._mapped(self._driver.connection())

    def _atomic(self) -> AbstractAsyncContextManager[Conn]:
        return self._mapped(self._driver.atomic())

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
