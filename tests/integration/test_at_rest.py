"""What the store keeps on disk: signing secrets only encrypted, API keys only hashed, and
nothing of an erased customer's payloads on SQLite.

The raw bytes are searched: SQLite's database and WAL files, and PostgreSQL's own files of every
table, index and TOAST relation of the database (read after a checkpoint), or its whole data
directory.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from service import ids
from service.clock import now_ms
from service.domain import DeliveryStatus, IncomingEvent, NewDelivery
from service.samples import sample_event
from service.settings import Settings
from service.store import Lease, Store
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.postgres import raw_database_bytes
from tests.support.raw import holding, postgres_holding, query, sqlite_files
from tests.support.store import attempt


def _sqlite_bytes(database_url: str) -> bytes:
    path = Path(database_url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


async def test_the_raw_database_holds_no_secret_and_no_key(
    store: Store, settings_for: Settings
) -> None:
    _, key = await store.create_api_key("org_rest", "at rest")
    created = await store.create_subscription(
        "org_rest", "https://hooks.example.com/at-rest", ["verification.created"], None
    )
    found = await store.get_subscription("org_rest", created.id)
    assert found is not None
    assert created.secret is not None
    assert found.secret == created.secret  # kept, and readable through the store
    assert await store.org_for_api_key(key) == "org_rest"

    url = settings_for.database_url
    raw = await raw_database_bytes(url) if settings_for.is_postgres else _sqlite_bytes(url)
    # These bytes really are this database's, and what is stored in the clear is found.
    assert created.id.encode() in raw
    assert b"hooks.example.com/at-rest" in raw
    for needle in (
        created.secret,
        created.secret.removeprefix("qe_whsec_"),
        key,
        key.removeprefix("qe_key_"),
        TEST_ENCRYPTION_KEY,
    ):
        assert needle.encode() not in raw


async def test_an_erasure_leaves_no_byte_of_the_erased_payloads(
    store: Store, settings_for: Settings
) -> None:
    """On SQLite, the sealed bodies and excerpts of the erased customer's events leave the
    database and its WAL (`secure_delete` and the WAL's truncation), another customer's stay.
    On PostgreSQL an updated row's old version stays in the file until its space is reused
    (VACUUM does not zero it: that is why bodies are sealed): there, the customer's values are
    never in the files in clear, and after a VACUUM the live rows hold empty bodies."""
    org, url = "org_erase", settings_for.database_url
    run = uuid.uuid4().hex
    erased, kept = f"3173{uuid.uuid4().int % 10**12:012d}", f"3175{uuid.uuid4().int % 10**12:012d}"
    subscription = await store.create_subscription(
        org, "https://hooks.example.com/erase", ["verification.created"], None
    )
    events, deliveries = [], []
    for customer, count in ((erased, 3), (kept, 2)):
        for n in range(count):
            envelope = sample_event("verification.created", org, datetime.now(UTC))
            envelope["data"]["customerId"] = customer
            # One of each a few pages long: its tail in overflow pages (TOAST on PostgreSQL).
            envelope["data"]["note"] = f"{run} {customer} " * (400 if n == 0 else 1)
            event = IncomingEvent(
                id=str(envelope["id"]),
                org_id=org,
                event="verification.created",
                occurred_at=now_ms(),
                body=orjson.dumps(envelope),
                sibling_service=None,
                source="t/0/1",
                customer_id=customer,
            )
            events.append(event)
            deliveries.append(
                NewDelivery(ids.new_id(ids.DELIVERY), event.id, subscription.id, event.event, org)
            )
    await store.record_events(events, deliveries, Lease("t", 60_000))
    await store.record_attempts(
        [attempt(d, 1, DeliveryStatus.SENT, 200, now_ms()) for d in deliveries], "t"
    )
    customer_of = {event.id: str(event.customer_id) for event in events}
    sealed: dict[str, set[bytes]] = {erased: set(), kept: set()}
    for event_id, body in await query(url, f"SELECT id, body FROM events WHERE org_id = '{org}'"):
        # Its start (key id, nonce, ciphertext): on the row's own page even when long.
        sealed[customer_of[event_id]].add(bytes(body)[:48])
    by_delivery = {d.id: customer_of[d.event_id] for d in deliveries}
    for delivery_id, excerpt in await query(
        url, "SELECT delivery_id, response_excerpt FROM attempts"
    ):
        sealed[by_delivery[delivery_id]].add(excerpt.encode())
    assert (len(sealed[erased]), len(sealed[kept])) == (6, 4)  # 3 and 2 bodies and excerpts

    receipt = await store.erase_customer(org, erased)

    assert (receipt.events, receipt.deliveries) == (3, 3)
    plain = {erased.encode(), kept.encode(), run.encode()}
    if settings_for.is_postgres:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("VACUUM events")
            bodies = await connection.fetch(
                "SELECT body, payload_removed_at, customer_id FROM events WHERE org_id = $1", org
            )
        finally:
            await connection.close()
        assert sorted(len(row["body"]) == 0 for row in bodies) == [False, False, True, True, True]
        assert all(
            (len(row["body"]) == 0) == (row["payload_removed_at"] is not None) for row in bodies
        )
        assert all(row["customer_id"].startswith("c1.") for row in bodies)
        assert not await postgres_holding(url, plain)
        return
    files = sqlite_files(url)
    assert not holding(files, sealed[erased] | plain)
    assert holding(files, sealed[kept]) == sealed[kept]
