"""Rotating WEBHOOKS_ENCRYPTION_KEY with `identity-webhooks rekey`, on both stores, with the whole
service running (Kafka in, the test receiver out) and the command line as operators run it.

K1 alone seals deliveries, some left open (the receiver failing); with "K2,K1" the old rows are
still sent and read; removing K1 before `rekey` stops the service and the command (the store's
own key is K1's), and rolling back to K1 alone leaves what K2 sealed unreadable, which readiness
shows without failing; `rekey` beside a running service then leaves nothing to K1, a second run
does nothing, and with K2 alone everything opens, signs and delivers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service import credentials, ids
from service.cli.rekey import STATES
from service.clock import now_ms
from service.samples import sample_event
from service.settings import Settings, load_settings
from service.signing import QUANTUM_HEADER, verify_signature
from service.store import Claim, SealedCensus, open_store
from service.store.migrate import migrate, sqlalchemy_url
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.commands import Result, run_module
from tests.support.live import ORG, LiveApp, live_app
from tests.support.postgres import scratch_database
from tests.support.process import ServiceProcess, service_env
from tests.support.raw import column_values, holding, sqlite_files
from tools.receiver import Behaviour, Receiver

pytestmark = pytest.mark.integration

K1 = Fernet.generate_key().decode()
K2 = Fernet.generate_key().decode()
PATH = "echo"  # tools/receiver.py: 500 once per delivery, then 200, echoing the body


class Rotation:
    """The service on one store and one consumer group, started with whichever keys."""

    def __init__(
        self, settings: Settings, topics: list[str], kafka_bootstrap: str, receiver: Receiver
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.kafka_bootstrap = kafka_bootstrap
        self.receiver = receiver
        self.group = f"g-{uuid.uuid4().hex[:8]}"

    @asynccontextmanager
    async def running(self, keys: str) -> AsyncIterator[LiveApp]:
        async with live_app(
            self.settings,
            self.topics,
            self.kafka_bootstrap,
            self.receiver,
            encryption_key=SecretStr(keys),
            kafka_group_id=self.group,
            retry_schedule=[0.3] * 60,  # open long enough to outlive a restart
        ) as live:
            yield live

    async def cli(self, keys: str, *args: str, cwd: Path) -> Result:
        env = {
            "WEBHOOKS_DATABASE_URL": self.settings.database_url,
            "WEBHOOKS_ENCRYPTION_KEY": keys,
        }
        return await run_module("service", "rekey", *args, env=env, cwd=cwd)


async def deliveries_by_event(live: LiveApp, subscription_id: str) -> dict[str, dict[str, Any]]:
    status, listed = await live.call("GET", f"/{subscription_id}/deliveries")
    assert status == 200, listed
    return {row["eventId"]: row for row in listed["rows"]}


async def all_sent(live: LiveApp, subscription_id: str, count: int) -> dict[str, dict[str, Any]]:
    """The subscription's deliveries, by event, once `count` of them are recorded as sent."""
    async with asyncio.timeout(20):
        while True:
            rows = await deliveries_by_event(live, subscription_id)
            if sum(row["status"] == "sent" for row in rows.values()) == count:
                return rows
            await asyncio.sleep(0.1)


async def detail(live: LiveApp, subscription_id: str, delivery_id: str) -> dict[str, Any]:
    status, shown = await live.call("GET", f"/{subscription_id}/deliveries/{delivery_id}")
    assert status == 200, shown
    assert isinstance(shown, dict)
    return shown


async def census(live: LiveApp) -> dict[str, Any]:
    """What /readyz says of the sealed values, once housekeeping has counted them; it answers
    200 whatever they are."""
    async with asyncio.timeout(10):
        while True:
            async with live.client.get("/readyz") as response:
                body = await response.json()
                assert response.status == 200, body
            if body["sealed"] is not None:
                sealed: dict[str, Any] = body["sealed"]
                return sealed
            await asyncio.sleep(0.05)


def signed_with(secret: str, receiver: Receiver) -> None:
    """Every 2xx the receiver answered was to a request signed with `secret`."""
    answered = [got for got in receiver.at(PATH) if got.status == 200]
    assert answered
    for got in answered:
        verify_signature(secret, got.headers[QUANTUM_HEADER], got.body)


def counts(sealed: Mapping[str, Any]) -> tuple[int, int, int]:
    return sealed["older"], sealed["unknown"], sealed["clear"]


async def test_rotating_the_key_with_rekey(
    settings_for: Settings,
    topics: list[str],
    kafka_bootstrap: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    rotation = Rotation(settings_for, topics, kafka_bootstrap, receiver)

    # K1 alone: two events delivered (each after one 500), two left open.
    async with rotation.running(K1) as live:
        subscription = await live.subscribe(PATH, headers={"X-Tenant": "acme"})
        sid, secret = subscription["id"], subscription["secret"]
        delivered = await live.produce(2)
        await all_sent(live, sid, 2)
        receiver.set(PATH, Behaviour(status=503))
        held = await live.produce(2)
        async with asyncio.timeout(10):
            while True:
                rows = await deliveries_by_event(live, sid)
                if all(rows.get(e["id"], {}).get("attemptCount", 0) >= 1 for e in held):
                    break
                await asyncio.sleep(0.05)
    assert {row["status"] for e, row in rows.items() if e in {h["id"] for h in held}} == {
        "retrying"
    }
    first = rows[delivered[0]["id"]]["id"]

    # "K2,K1": the open ones go out once the receiver recovers, the old ones read.
    receiver.set(PATH, None)
    async with rotation.running(f"{K2},{K1}") as live:
        late = await live.produce(1)
        rows = await all_sent(live, sid, 5)
        shown = await detail(live, sid, first)
        assert shown["payload"] == delivered[0]
        assert [a["responseCode"] for a in shown["attempts"]] == [500, 200]
        assert all(delivered[0]["id"] in a["responseExcerpt"] for a in shown["attempts"])
        older, unknown, _ = counts(await census(live))
        assert older > 0
        assert unknown == 0
    signed_with(secret, receiver)

    # K1 removed before rekey: the store's own key is K1's, so nothing starts.
    env = service_env(rotation.settings, topics, WEBHOOKS_ENCRYPTION_KEY=K2)
    service = await ServiceProcess(env).start()
    refused, code = await asyncio.gather(rotation.cli(K2, cwd=tmp_path), service.wait())
    assert refused.code == 1
    assert "configure that key again" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert code == 1
    assert any('"service.start_failed"' in line for line in service.logs)
    assert not any("Traceback" in line for line in service.logs)

    # Rolled back to K1 alone: what K2 sealed cannot be read, readiness says so and stays.
    async with rotation.running(K1) as live:
        _, unknown, _ = counts(await census(live))
        assert unknown > 0
        async with live.client.get("/metrics") as response:
            metrics = await response.text()
        assert f'webhooks_sealed_rows{{state="unknown"}} {float(unknown)}' in metrics
        unreadable = await detail(live, sid, rows[late[0]["id"]]["id"])
        assert unreadable["payload"] is None
        assert unreadable["payloadRemoved"]["reason"] == "undecryptable"
        stuck = await rotation.cli(K1, cwd=tmp_path)
        assert stuck.code == 1, stuck.stderr
        assert "sealed with a key that is not configured" in stuck.stderr
        assert "configure the key that sealed them" in stuck.stderr

    # "K2,K1" again, and rekey beside the running service; a second run has nothing to do.
    async with rotation.running(f"{K2},{K1}") as live:
        done = await rotation.cli(f"{K2},{K1}", "--batch", "2", cwd=tmp_path)
        assert done.code == 0, done.stderr
        assert done.stdout.splitlines()[0].split() == ["TABLE", "RESEALED", "UNDECRYPTABLE"]
        assert "older 0, unknown 0, clear 0" in done.stdout
        assert done.stderr.count("rekey: resealed") >= 4  # one line per batch of two
        again = await live.store.rekey(500, lambda _: None)
        assert set(again.resealed.values()) == {0}
        assert set(again.undecryptable.values()) == {0}

    # K2 alone: every old row opens, the secret signs, new events go out.
    async with rotation.running(K2) as live:
        assert counts(await census(live)) == (0, 0, 0)
        shown = await detail(live, sid, first)
        assert shown["payload"] == delivered[0]
        assert all(delivered[0]["id"] in a["responseExcerpt"] for a in shown["attempts"])
        status, row = await live.call("GET", f"/{sid}")
        assert (status, row["headers"], row["problem"]) == (200, {"X-Tenant": "acme"}, None)
        await live.produce(1)
        await all_sent(live, sid, 6)
    signed_with(secret, receiver)
    assert receiver.ok[PATH] == 6


# -- rows an older revision wrote in clear ----------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str
) -> AsyncIterator[str]:
    """A database with no schema at all (the shared fixtures' are migrated already)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/legacy.db"
        return
    async with scratch_database(postgres_url, f"webhooks_legacy_{uuid.uuid4().hex[:10]}") as url:
        yield url


@dataclass(frozen=True)
class Legacy:
    """What revision 0003 kept in clear: a customer-ordered subscription with a Fernet-token
    secret and clear headers; customer A's open delivery (`a1`), customer B's sent one (`b0`,
    with a clear response excerpt) and B's open one after it (`b1`)."""

    subscription_id: str
    secret: str
    token: str  # in the clear Authorization header
    excerpt: str
    customers: dict[str, str]  # a, b: their NIKs
    deliveries: dict[str, str]  # a1, b0, b1: their ids
    envelopes: dict[str, dict[str, Any]]  # a1, b0, b1

    @classmethod
    def new(cls) -> Legacy:
        run = uuid.uuid4().int
        customers = {"a": f"3171{run % 10**12:012d}", "b": f"3172{run // 10**12 % 10**12:012d}"}
        now = datetime.now(UTC)
        envelopes = {}
        for name in ("a1", "b0", "b1"):
            envelopes[name] = sample_event("verification.created", ORG, now)
            envelopes[name]["data"]["customerId"] = customers[name[0]]
        return cls(
            subscription_id=ids.new_id(ids.SUBSCRIPTION),
            secret=credentials.new_secret(),
            token=f"legacy-{uuid.uuid4().hex}",
            excerpt=f"thanks, {customers['b']} noted",
            customers=customers,
            deliveries={name: ids.new_id(ids.DELIVERY) for name in envelopes},
            envelopes=envelopes,
        )

    @property
    def needles(self) -> set[bytes]:
        return {s.encode() for s in (self.token, self.excerpt, *self.customers.values())}


async def write_at_0003(database_url: str, legacy: Legacy, url: str) -> None:
    """Revision 0003's schema with `legacy`'s rows, as that revision wrote them."""
    assert await migrate(database_url, "0003") == (None, "0003")
    at = now_ms() - 60_000
    engine = create_async_engine(sqlalchemy_url(database_url))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO subscriptions (id, org_id, url, events, secret_enc, active, "
                "created_at, updated_at, headers, ordering) VALUES (:id, :org, :url, "
                "'[\"verification.created\"]', :secret, true, :at, :at, :headers, 'customer')"
            ),
            {
                "id": legacy.subscription_id,
                "org": ORG,
                "url": url,
                "secret": Fernet(TEST_ENCRYPTION_KEY).encrypt(legacy.secret.encode()).decode(),
                "at": at,
                "headers": orjson.dumps({"Authorization": f"Bearer {legacy.token}"}).decode(),
            },
        )
        for seq, (name, envelope) in enumerate(legacy.envelopes.items(), start=1):
            customer = legacy.customers[name[0]]
            sent = name == "b0"
            await conn.execute(
                text(
                    "INSERT INTO events (org_id, id, event, occurred_at, body, source, "
                    "received_at, customer_id) VALUES (:org, :id, 'verification.created', :at, "
                    ":body, 't/0/1', :at, :customer)"
                ),
                {
                    "org": ORG,
                    "id": envelope["id"],
                    "at": at + seq,
                    "body": orjson.dumps(envelope),
                    "customer": customer,
                },
            )
            await conn.execute(
                text(
                    "INSERT INTO deliveries (id, event_id, org_id, subscription_id, event, "
                    "status, attempts, next_attempt_at, created_at, updated_at, ordering_key, "
                    "seq) VALUES (:id, :event, :org, :sub, 'verification.created', :status, "
                    ":attempts, :at, :at, :at, :customer, :seq)"
                ),
                {
                    "id": legacy.deliveries[name],
                    "event": envelope["id"],
                    "org": ORG,
                    "sub": legacy.subscription_id,
                    "status": "sent" if sent else "pending",
                    "attempts": int(sent),
                    "at": at + seq,
                    "customer": customer,
                    "seq": seq,
                },
            )
            if sent:
                await conn.execute(
                    text(
                        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, "
                        "status_code, result, response_excerpt) VALUES (:id, 1, :at, 12, 200, "
                        "'2xx', :excerpt)"
                    ),
                    {"id": legacy.deliveries[name], "at": at + seq, "excerpt": legacy.excerpt},
                )
        if database_url.startswith("sqlite"):
            await conn.execute(text("UPDATE store_meta SET value = 3 WHERE name = 'delivery_seq'"))
        else:
            await conn.execute(text("SELECT setval('delivery_seq', 3)"))
    await engine.dispose()


async def test_rows_kept_in_clear_are_sent_read_then_sealed_by_rekey(
    empty_database: str,
    topics: list[str],
    kafka_bootstrap: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    legacy = Legacy.new()
    database_url = empty_database
    await write_at_0003(database_url, legacy, receiver.url("legacy"))
    settings = load_settings(
        database_url=database_url, encryption_key=SecretStr(TEST_ENCRYPTION_KEY)
    )
    rotation = Rotation(settings, topics, kafka_bootstrap, receiver)

    # Upgraded, and read as they are: everything in clear, the Fernet token an older key's.
    store = await open_store(settings)
    try:
        assert await store.sealed_census() == SealedCensus(current=1, older=1, unknown=0, clear=8)
        subscription = await store.get_subscription(ORG, legacy.subscription_id)
        assert subscription is not None
        assert subscription.secret == legacy.secret
        assert subscription.headers == (("Authorization", f"Bearer {legacy.token}"),)
        sent = await store.get_delivery(ORG, legacy.subscription_id, legacy.deliveries["b0"])
        assert sent is not None
        assert sent.payload is not None
        assert orjson.loads(sent.payload) == legacy.envelopes["b0"]
        assert [a.response_excerpt for a in sent.attempts] == [legacy.excerpt]
    finally:
        await store.close()
    status = await rotation.cli(TEST_ENCRYPTION_KEY, "--status", cwd=tmp_path)
    assert status.code == 0, status.stderr
    assert status.stdout.splitlines()[1:] == [
        "STATE    ROWS  MEANING",
        f"current  1     {STATES['current']}",
        f"older    1     {STATES['older']}",
        f"unknown  0     {STATES['unknown']}",
        f"clear    8     {STATES['clear']}",
    ]

    # Still delivered: A's open delivery goes out with its clear body, the Fernet secret's
    # signature and the clear header; B's receiver fails, and B has one more event (hashed).
    receiver.set_customer(legacy.customers["b"], Behaviour(status=503))
    async with rotation.running(TEST_ENCRYPTION_KEY) as live:
        newer = sample_event("verification.created", ORG, datetime.now(UTC))
        newer["data"]["customerId"] = legacy.customers["b"]
        await live.producer.send_and_wait(
            next(t for t in topics if t.endswith("verification.created")),
            orjson.dumps(newer),
            key=legacy.customers["b"].encode(),
        )
        await receiver.wait_for(lambda: receiver.ok["legacy"] == 1, what="A's delivery")
        await receiver.wait_for(
            lambda: {r.event_id for r in receiver.at("legacy")} >= {newer["id"]},
            what="B's newer event",
        )
    (got,) = [r for r in receiver.at("legacy") if r.status == 200]
    assert orjson.loads(got.body) == legacy.envelopes["a1"]
    verify_signature(legacy.secret, got.headers[QUANTUM_HEADER], got.body)
    assert got.headers["Authorization"] == f"Bearer {legacy.token}"

    # Customer A erased before rekey: its clear id goes with its payload.
    store = await open_store(settings)
    try:
        receipt = await store.erase_customer(ORG, legacy.customers["a"])
    finally:
        await store.close()
    assert (receipt.events, receipt.deliveries) == (1, 1)
    for table, column in (("events", "customer_id"), ("deliveries", "ordering_key")):
        assert legacy.customers["a"] not in await column_values(database_url, table, column)

    # rekey: nothing in clear is left, customer ids are hashed in events and deliveries.
    done = await rotation.cli(TEST_ENCRYPTION_KEY, "--json", cwd=tmp_path)
    assert done.code == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["resealed"] == {"store_keys": 0, "subscriptions": 1, "events": 2, "attempts": 1}
    assert report["census"]["older"] == report["census"]["clear"] == 0
    customers = await column_values(database_url, "events", "customer_id")
    keys = await column_values(database_url, "deliveries", "ordering_key")
    assert len(customers) == len(keys) == 4
    assert all(key.startswith("c1.") for key in customers + keys)
    assert len(set(customers)) == 2  # one hash per customer, B's newer event's included
    if database_url.startswith("sqlite"):
        # rekey scrubbed the WAL: what was in clear is not in the files any more.
        assert not holding(sqlite_files(database_url), legacy.needles)

    # Ordering still works: B's next one waits behind the one before it, now in one queue.
    store = await open_store(settings)
    try:
        claimed = await store.claim_due(Claim("t", 10, 60_000))
        assert [job.id for job in claimed] == [legacy.deliveries["b1"]]
        await store.release([legacy.deliveries["b1"]], "t")
    finally:
        await store.close()
    receiver.set_customer(legacy.customers["b"], None)
    async with rotation.running(TEST_ENCRYPTION_KEY) as live:
        await receiver.wait_for(lambda: receiver.ok["legacy"] == 3, what="B's deliveries")
        shown = await detail(live, legacy.subscription_id, legacy.deliveries["b0"])
        assert shown["payload"] == legacy.envelopes["b0"]
        assert [a["responseExcerpt"] for a in shown["attempts"]] == [legacy.excerpt]
    b_sent = [r.event_id for r in receiver.at("legacy") if r.status == 200][1:]
    assert b_sent == [legacy.envelopes["b1"]["id"], newer["id"]]


async def test_a_fernet_token_no_configured_key_opens_is_counted_unknown(tmp_path: Path) -> None:
    """A Fernet token tells no key id: the census tries it, so a secret an older revision
    sealed with a key since removed shows as unknown (and alerts), not as older."""
    database_url = f"sqlite:///{tmp_path}/fernet.db"
    await write_at_0003(database_url, Legacy.new(), "https://a.example/h")
    settings = load_settings(database_url=database_url, encryption_key=SecretStr(K2))
    store = await open_store(settings)
    try:
        census = await store.sealed_census()
        done = await store.rekey(500, lambda _: None)
    finally:
        await store.close()
    assert (census.older, census.unknown) == (0, 1)
    assert done.undecryptable["subscriptions"] == 1
