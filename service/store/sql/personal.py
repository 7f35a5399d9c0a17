"""Personal data in SQL: an erasure of one customer's payloads in one org, the payload retention,
the re-sealing of what an older key (or an older revision, in clear) wrote, and the census of
sealed rows readiness reports (docs/personal-data.md)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import structlog

from service import ids
from service.domain import ErasureReceipt, PayloadRemoval
from service.store.crypto import TEXT_PREFIX, Undecryptable, is_sealed
from service.store.interfaces import (
    CENSUS_BUCKETS,
    ExpungeCursor,
    Expunged,
    RekeyProgress,
    SealedCensus,
)
from service.store.sql.base import (
    LOOKUP_KEY,
    OPEN,
    PAYLOAD_REMOVED,
    SqlBase,
    auth_context,
    bump_revision,
    excerpt_context,
    filter_context,
    headers_context,
    secret_context,
    signing_key_context,
)

log = structlog.get_logger(__name__)

_NO_BYTES = b""
_OF_CUSTOMER = "org_id = $1 AND customer_id IN ($2, $3)"
_EVENTS_OF_CUSTOMER = f"SELECT id FROM events WHERE {_OF_CUSTOMER}"
_FERNET = "gAAAAA%"
"""A signing secret sealed before the key ring's own format: a Fernet token."""
_CLEAR_CUSTOMER = "(customer_id IS NOT NULL AND customer_id NOT LIKE 'c1.%')"
"""An event whose customer id is an older revision's (`legacy_customer_key`), not hashed yet."""
_LEGACY_KEY_MAX = 200
_LEGACY_PRINTABLE = re.compile(r"[^\x00-\x1F\x7F]+")


def legacy_customer_key(customer_id: str) -> str:
    """What revisions before the keyed hash stored of a customer id (until `rekey` hashes it):
    the id itself when short and printable, else its SHA-256."""
    if len(customer_id) <= _LEGACY_KEY_MAX and _LEGACY_PRINTABLE.fullmatch(customer_id):
        return customer_id
    return "sha256:" + hashlib.sha256(customer_id.encode("utf-8", "surrogatepass")).hexdigest()


class PersonalDataSql(SqlBase):
    """`interfaces.PersonalData`."""

    async def erase_customer(
        self, org_id: str, customer_id: str, *, dry_run: bool = False
    ) -> ErasureReceipt:
        keys = (self._customer_key(org_id, customer_id), legacy_customer_key(customer_id))
        now = self._now()
        async with self._transaction() as conn:
            counts = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM events WHERE "
                f"{_OF_CUSTOMER}) AS events, (SELECT count(*) FROM deliveries WHERE org_id = $1 "
                f"AND event_id IN ({_EVENTS_OF_CUSTOMER})) AS deliveries, "
                f"(SELECT count(*) FROM deliveries WHERE org_id = $1 AND {OPEN} "
                f"AND event_id IN ({_EVENTS_OF_CUSTOMER})) AS open",
                org_id,
                *keys,
            )
            assert counts is not None
            receipt = ErasureReceipt(
                customer_id,
                int(counts["events"]),
                int(counts["deliveries"]),
                int(counts["open"]),
                now,
            )
            if dry_run or not receipt.events:
                return receipt
            # An older revision's customer id (the id itself) is replaced by its keyed hash,
            # here and as the ordering key of the deliveries: erased means not kept in clear.
            await conn.execute(
                "UPDATE deliveries SET ordering_key = $2 WHERE org_id = $1 AND ordering_key = $3 "
                f"AND event_id IN ({_EVENTS_OF_CUSTOMER})",
                org_id,
                *keys,
            )
            await conn.execute(
                f"UPDATE events SET body = $4, payload_removed_at = $5, customer_id = $2, "
                f"payload_removed_reason = '{PayloadRemoval.ERASED.value}' WHERE {_OF_CUSTOMER} "
                "AND (payload_removed_reason IS NULL "
                f"OR payload_removed_reason <> '{PayloadRemoval.ERASED.value}')",
                org_id,
                *keys,
                _NO_BYTES,
                now,
            )
            await conn.execute(
                "UPDATE attempts SET response_excerpt = NULL WHERE response_excerpt IS NOT NULL "
                "AND delivery_id IN (SELECT id FROM deliveries WHERE org_id = $1 "
                f"AND event_id IN ({_EVENTS_OF_CUSTOMER}))",
                org_id,
                *keys,
            )
            # Cancelled, their leases dropped: a sender still holding one cannot record it.
            await conn.execute(
                "UPDATE deliveries SET status = 'cancelled', last_error = $4, updated_at = $5, "
                f"lease_owner = NULL, lease_until = NULL WHERE org_id = $1 AND {OPEN} "
                f"AND event_id IN ({_EVENTS_OF_CUSTOMER})",
                org_id,
                *keys,
                PAYLOAD_REMOVED,
                now,
            )
            await conn.execute(
                "INSERT INTO erasures (id, org_id, customer_key, erased_at, events, deliveries, "
                "cancelled) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                ids.new_id(ids.ERASURE),
                org_id,
                keys[0],
                now,
                receipt.events,
                receipt.deliveries,
                receipt.cancelled,
            )
        await self._driver.scrub()
        return receipt

    async def expunge_payloads(
        self, received_before: int, batch: int, after: ExpungeCursor | None = None
    ) -> Expunged:
        after = after or ExpungeCursor()
        now = self._now()
        async with self._transaction() as conn:
            # Walked in order from where the last batch stopped, over the events that still
            # have their payload only (a partial index in the walk's order): what is kept (an
            # open delivery needs it) is read once a pass, what was removed never again. Each
            # event's open deliveries are probed by its id, a subquery per event: asked as NOT
            # EXISTS, the planner may join instead, and at 20 million deliveries it read every
            # one of them for each batch, taking the open ones for few.
            events = await conn.fetch(
                "UPDATE events SET body = $3, payload_removed_at = $4, "
                f"payload_removed_reason = '{PayloadRemoval.EXPIRED.value}' "
                "WHERE (org_id, id) IN (SELECT e.org_id, e.id FROM events e "
                "WHERE e.received_at < $1 AND e.payload_removed_at IS NULL "
                "AND e.received_at >= $5 AND (e.received_at, e.org_id, e.id) > ($5, $6, $7) "
                # An unread delivery of a feed needs its payload as an open one does.
                "AND (SELECT 1 FROM deliveries d WHERE d.event_id = e.id "
                f"AND d.org_id = e.org_id AND (d.{OPEN} OR d.status = 'available') "
                "LIMIT 1) IS NULL ORDER BY e.received_at, e.org_id, e.id LIMIT $2) "
                "RETURNING received_at, org_id, id",
                received_before,
                batch,
                _NO_BYTES,
                now,
                *after.event,
            )
            excerpts = await conn.fetch(
                "UPDATE attempts SET response_excerpt = NULL WHERE id IN (SELECT a.id "
                "FROM attempts a WHERE a.response_excerpt IS NOT NULL AND a.started_at < $1 "
                "AND a.started_at >= $3 AND (a.started_at, a.id) > ($3, $4) "
                "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id "
                f"AND d.{OPEN}) ORDER BY a.started_at, a.id LIMIT $2) RETURNING started_at, id",
                received_before,
                batch,
                *after.attempt,
            )
        event = max(
            ((int(r["received_at"]), str(r["org_id"]), str(r["id"])) for r in events),
            default=after.event,
        )
        attempt = max(
            ((int(r["started_at"]), int(r["id"])) for r in excerpts), default=after.attempt
        )
        return Expunged(
            len(events) + len(excerpts),
            ExpungeCursor(event, attempt),
            len(events) < batch and len(excerpts) < batch,
        )

    async def rekey(self, batch: int, progress: Callable[[RekeyProgress], None]) -> RekeyProgress:
        done = RekeyProgress()
        await self._rekey_store_keys(done)
        await self._rekey_subscriptions(done)
        progress(done)
        after: tuple[str, str] = ("", "")
        while True:
            more, after = await self._rekey_events(batch, after, done)
            progress(done)
            if not more:
                break
        last = 0
        while True:
            more, last = await self._rekey_excerpts(batch, last, done)
            progress(done)
            if not more:
                break
        if any(done.resealed.values()):
            # What was replaced (values in clear, above all) leaves the files at once where
            # the database can make it (SQLite's WAL), as after an erasure.
            await self._driver.scrub()
        return done

    async def _rekey_store_keys(self, done: RekeyProgress) -> None:
        context = "store-key:customer_lookup"
        async with self._transaction() as conn:
            row = await conn.fetchrow("SELECT sealed FROM store_keys WHERE name = $1", LOOKUP_KEY)
            if row is None or row["sealed"].startswith(self._keyring.text_current):
                return
            plain = self._keyring.open_text(row["sealed"], context)
            await conn.execute(
                "UPDATE store_keys SET sealed = $2 WHERE name = $1",
                LOOKUP_KEY,
                self._keyring.seal_text(plain, context),
            )
        done.add("store_keys", 1, 0)

    async def _rekey_subscriptions(self, done: RekeyProgress) -> None:
        current = self._keyring.text_current
        undecryptable = 0
        resealed_ids: list[str] = []
        async with self._transaction() as conn:
            rows = await conn.fetch(
                "SELECT id, secret_enc, previous_secret_enc, headers, signing_key_enc, "
                "previous_signing_key_enc, content_filter, auth FROM subscriptions"
            )
            for row in rows:
                changes: dict[str, tuple[str, str]] = {}  # column: (as read, sealed again)
                failed = False
                for column, context in (
                    ("secret_enc", secret_context(row["id"])),
                    ("previous_secret_enc", secret_context(row["id"])),
                    ("headers", headers_context(row["id"])),
                    ("signing_key_enc", signing_key_context(row["id"])),
                    ("previous_signing_key_enc", signing_key_context(row["id"])),
                    ("content_filter", filter_context(row["id"])),
                    ("auth", auth_context(row["id"])),
                ):
                    stored = row[column]
                    if stored is None or stored.startswith(current):
                        continue
                    plain = (
                        self._open_headers_json(row["id"], stored)
                        if column == "headers"
                        else self._keyring.open_text_or_none(stored, context)
                    )
                    if plain is None:
                        failed = True
                        continue
                    changes[column] = (stored, self._keyring.seal_text(plain, context))
                if failed:
                    undecryptable += 1
                if changes:
                    # Only as read: on PostgreSQL a rotation or a PATCH may commit between
                    # the read and this write, and wins (a rerun seals what it wrote, if needed).
                    n = len(changes)
                    assignments = ", ".join(
                        f"{column} = ${i}" for i, column in enumerate(changes, start=2)
                    )
                    unchanged = " AND ".join(
                        f"{column} = ${i}" for i, column in enumerate(changes, start=2 + n)
                    )
                    if await conn.execute(
                        f"UPDATE subscriptions SET {assignments} WHERE id = $1 AND {unchanged}",
                        row["id"],
                        *(sealed for _, sealed in changes.values()),
                        *(stored for stored, _ in changes.values()),
                    ):
                        resealed_ids.append(row["id"])
            resealed = len(resealed_ids)
            if resealed:
                await bump_revision(self._driver, conn, resealed_ids)
        done.add("subscriptions", resealed, undecryptable)

    async def _rekey_events(
        self, batch: int, after: tuple[str, str], done: RekeyProgress
    ) -> tuple[bool, tuple[str, str]]:
        """One batch of events, in (org, id) order after `after`, whose body is not sealed by
        the current key or whose customer key is an older revision's; returns whether there
        may be more, and where the next batch starts. An event whose payload was removed
        before its customer id was hashed has it hashed from the column, which held the id
        itself unless it was long or unprintable (`legacy_customer_key`: then it stays)."""
        current = self._keyring.binary_prefixes()[0]
        async with self._scan() as conn:
            rows = await conn.fetch(
                "SELECT org_id, id, body, customer_id FROM events "
                "WHERE (org_id, id) > ($1, $2) AND ("
                "(payload_removed_at IS NULL AND substr(body, 1, $3) <> $4) "
                f"OR ({_CLEAR_CUSTOMER} "
                "AND (payload_removed_at IS NULL OR customer_id NOT LIKE 'sha256:%'))) "
                "ORDER BY org_id, id LIMIT $5",
                *after,
                len(current),
                current,
                batch,
            )
        if not rows:
            return False, after
        updates: list[Sequence[Any]] = []
        keys: list[Sequence[Any]] = []
        failed = 0
        for row in rows:
            stored = bytes(row["body"])
            try:
                plain = self._open_body(row["org_id"], row["id"], stored)
            except Undecryptable:
                failed += 1
                continue
            customer = row["customer_id"]
            if customer is not None and not customer.startswith("c1."):
                clear = _customer_of(plain)
                if clear is None and not customer.startswith("sha256:"):
                    clear = customer  # the payload is gone, the id was kept as it was
                customer = self._customer_key(row["org_id"], clear) or customer
                keys.append((row["org_id"], row["id"], row["customer_id"], customer))
            sealed = (
                stored
                if not stored or stored[: len(current)] == current
                else self._seal_body(row["org_id"], row["id"], plain)
            )
            updates.append((row["org_id"], row["id"], stored, sealed, customer))
        if updates:
            async with self._transaction() as conn:
                # Only rows still as read: an erasure or a purge in between wins.
                await conn.executemany(
                    "UPDATE events SET body = $4, customer_id = $5 "
                    "WHERE org_id = $1 AND id = $2 AND body = $3",
                    updates,
                )
                if keys:
                    await conn.executemany(
                        "UPDATE deliveries SET ordering_key = $4 WHERE org_id = $1 "
                        "AND event_id = $2 AND ordering_key = $3",
                        keys,
                    )
        done.add("events", len(updates), failed)
        last = rows[-1]
        return len(rows) == batch, (last["org_id"], last["id"])

    async def _rekey_excerpts(
        self, batch: int, after: int, done: RekeyProgress
    ) -> tuple[bool, int]:
        current = self._keyring.text_current
        async with self._scan() as conn:
            rows = await conn.fetch(
                "SELECT id, delivery_id, response_excerpt FROM attempts WHERE id > $1 "
                "AND response_excerpt IS NOT NULL AND substr(response_excerpt, 1, $2) <> $3 "
                "ORDER BY id LIMIT $4",
                after,
                len(current),
                current,
                batch,
            )
        if not rows:
            return False, after
        updates: list[Sequence[Any]] = []
        failed = 0
        for row in rows:
            stored = row["response_excerpt"]
            plain = self._open_excerpt(row["delivery_id"], stored)
            if plain is None:
                failed += 1
                continue
            sealed = self._keyring.seal_text(plain, excerpt_context(row["delivery_id"]))
            updates.append((row["id"], stored, sealed))
        if updates:
            async with self._transaction() as conn:
                await conn.executemany(
                    "UPDATE attempts SET response_excerpt = $3 WHERE id = $1 "
                    "AND response_excerpt = $2",
                    updates,
                )
        done.add("attempts", len(updates), failed)
        return len(rows) == batch, int(rows[-1]["id"])

    async def sealed_census(self) -> SealedCensus:
        """Reads every sealed column's prefixes: a scan, for `rekey`'s pace, not a timer's."""
        census = await self.sealed_settings()
        for table in CENSUS_BUCKETS:
            for tally in (await self.sealed_buckets(table)).values():
                census = census.plus(tally)
        return census

    async def sealed_buckets(
        self, table: str, first: int | None = None, end: int | None = None
    ) -> dict[int, SealedCensus]:
        """The sealed values of `table` ("events": bodies, and customer ids kept in clear;
        "attempts": response excerpts) by bucket, `CENSUS_BUCKETS[table]` wide, from bucket
        `first` to before `end` (None: no bound): each a read of its rows only."""
        width = CENSUS_BUCKETS[table]
        low = -(2**62) if first is None else first * width
        high = 2**62 if end is None else end * width
        tallies: dict[int, dict[str, int]] = {}

        def add(bucket: int, state: str, n: int) -> None:
            tally = tallies.setdefault(bucket, dict.fromkeys(_STATES, 0))
            tally[state] += n

        async with self._scan() as conn:
            if table == "events":
                binary = self._keyring.binary_prefixes()
                bodies = await conn.fetch(
                    f"SELECT b, p, count(*) AS n FROM (SELECT received_at / {width} AS b, "
                    f"substr(body, 1, {len(binary[0])}) AS p FROM events "
                    "WHERE payload_removed_at IS NULL AND received_at >= $1 "
                    "AND received_at < $2) s GROUP BY b, p",
                    low,
                    high,
                )
                for row in bodies:
                    add(int(row["b"]), _binary_state(bytes(row["p"]), binary), int(row["n"]))
                # A customer id an older revision kept as it was is a value in clear too
                # (`rekey` hashes it); its SHA-256 form, kept for long ids, is not.
                customers = await conn.fetch(
                    f"SELECT b, count(*) AS n FROM (SELECT received_at / {width} AS b "
                    f"FROM events WHERE {_CLEAR_CUSTOMER} AND customer_id NOT LIKE 'sha256:%' "
                    "AND received_at >= $1 AND received_at < $2) s GROUP BY b",
                    low,
                    high,
                )
                for row in customers:
                    add(int(row["b"]), "clear", int(row["n"]))
            else:
                text = self._keyring.text_prefixes()
                excerpts = await conn.fetch(
                    f"SELECT b, p, count(*) AS n FROM (SELECT id / {width} AS b, "
                    "substr(response_excerpt, 1, $1) AS p FROM attempts "
                    "WHERE response_excerpt IS NOT NULL AND id >= $2 AND id < $3) s "
                    "GROUP BY b, p",
                    len(text[0]),
                    low,
                    high,
                )
                for row in excerpts:
                    add(int(row["b"]), _text_state(row["p"], text), int(row["n"]))
        return {bucket: SealedCensus(**tally) for bucket, tally in tallies.items()}

    async def sealed_settings(self) -> SealedCensus:
        """The sealed values of subscriptions and of the store's own keys (one row each)."""
        text = self._keyring.text_prefixes()
        tally = dict.fromkeys(_STATES, 0)
        async with self._scan() as conn:
            texts = await conn.fetch(
                "SELECT p, count(*) AS n FROM ("
                f"SELECT substr(secret_enc, 1, $1) AS p FROM subscriptions "
                f"WHERE secret_enc NOT LIKE '{_FERNET}' "
                "UNION ALL SELECT substr(previous_secret_enc, 1, $1) FROM subscriptions "
                f"WHERE previous_secret_enc NOT LIKE '{_FERNET}' "
                "UNION ALL SELECT substr(headers, 1, $1) FROM subscriptions "
                "WHERE headers IS NOT NULL "
                "UNION ALL SELECT substr(signing_key_enc, 1, $1) FROM subscriptions "
                "WHERE signing_key_enc IS NOT NULL "
                "UNION ALL SELECT substr(previous_signing_key_enc, 1, $1) FROM subscriptions "
                "WHERE previous_signing_key_enc IS NOT NULL "
                "UNION ALL SELECT substr(content_filter, 1, $1) FROM subscriptions "
                "WHERE content_filter IS NOT NULL "
                "UNION ALL SELECT substr(auth, 1, $1) FROM subscriptions WHERE auth IS NOT NULL "
                "UNION ALL SELECT substr(sealed, 1, $1) FROM store_keys) s GROUP BY p",
                len(text[0]),
            )
            # A Fernet token tells no key id: whether a configured key opens it is tried.
            # Only secrets were ever sealed so, and subscriptions are few.
            fernet = await conn.fetch(
                f"SELECT id, secret_enc AS t FROM subscriptions WHERE secret_enc LIKE '{_FERNET}' "
                "UNION ALL SELECT id, previous_secret_enc FROM subscriptions "
                f"WHERE previous_secret_enc LIKE '{_FERNET}'"
            )
        for row in texts:
            tally[_text_state(row["p"], text)] += int(row["n"])
        for row in fernet:
            opened = self._keyring.open_text_or_none(row["t"], secret_context(row["id"]))
            tally["older" if opened is not None else "unknown"] += 1
        return SealedCensus(**tally)


_STATES = ("current", "older", "unknown", "clear")


def _binary_state(prefix: bytes, prefixes: Sequence[bytes]) -> str:
    """Which key sealed a body with these first bytes, of the configured ones (the sealing one
    first)."""
    if prefix == prefixes[0]:
        return "current"
    if prefix in prefixes:
        return "older"
    return "unknown" if is_sealed(prefix) else "clear"


def _text_state(prefix: str, prefixes: Sequence[str]) -> str:
    """Which key sealed a text value beginning with `prefix`; a Fernet token is an older
    revision's, opened by the configured keys (`sealed_settings` tries them)."""
    if prefix == prefixes[0]:
        return "current"
    if prefix in prefixes or prefix.startswith("gAAAAA"):
        return "older"
    return "unknown" if prefix.startswith(TEXT_PREFIX) else "clear"


def _customer_of(body: bytes) -> str | None:
    try:
        data = orjson.loads(body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    customer = data.get("customerId") if isinstance(data, dict) else None
    return customer if isinstance(customer, str) and customer else None
