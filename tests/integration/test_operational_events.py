"""Operational events and the audit trail through the whole service (real Kafka, PostgreSQL, the
in-process receiver): an endpoint failing, disabled (the failure clock, 410), recovering and
running out of attempts tells the org's other subscription, never itself; a change through the
API is audited naming the key and announced with its old and new URL; another org sees none of
it; every payload validates against the schema `/event-types` serves.

One service for the module (its clocks test-sized: `failing` after 2 failed attempts, disabled
after 1 s of failures), one org per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr
from ulid import ULID

from service import operational as operational_events
from service.delivery.retry import GONE
from service.domain import SYSTEM, DeliveryFilter
from service.events import CATALOG, OPERATIONAL
from service.samples import record_key, sample_event
from service.settings import load_settings
from service.store import PageRequest, open_store
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.live import LiveApp, live_app
from tests.support.postgres import scratch_database
from tests.support.signatures import we_verify
from tools.receiver import Behaviour, Received, Receiver, start_receiver

AUDIT = "/api/identity/audit"
SETTLE = 1.0  # seconds to wait for what must not arrive


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def ops(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LiveApp]:
    """The service on each store: the events are made in the store's own transactions."""
    run = uuid.uuid4().hex[:8]
    names = [f"t{run}.identity.{event}" for event in CATALOG] + [f"t{run}.dlq"]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(n, 3, 1) for n in names])
    try:
        async with (
            _store_url(request.param, postgres_url, tmp_path_factory, run) as url,
            _started_receiver() as receiver,
        ):
            settings = load_settings(
                database_url=url, encryption_key=SecretStr(TEST_ENCRYPTION_KEY)
            )
            async with live_app(
                settings,
                names,
                kafka_bootstrap,
                receiver,
                failing_after_attempts=2,
                # A delivery's 4th and last attempt comes 1.5 s (±20%) after its 3rd: only
                # the last one is past the 1 s failure clock.
                retry_schedule=[0.2, 0.2, 1.5],
                disable_after=1.0,
            ) as app:
                yield app
    finally:
        await admin.delete_topics(names)
        await admin.close()


@asynccontextmanager
async def _store_url(
    store: str, postgres_url: str, tmp: pytest.TempPathFactory, run: str
) -> AsyncIterator[str]:
    if store == "postgres":
        async with scratch_database(postgres_url, f"webhooks_ops_{run}") as url:
            yield url
    else:
        yield f"sqlite:///{tmp.mktemp('ops')}/webhooks.db"


@asynccontextmanager
async def _started_receiver() -> AsyncIterator[Receiver]:
    async for receiver in start_receiver():
        yield receiver


class Org:
    """One org of the shared service: its API key, subscriptions made through the API."""

    def __init__(self, live: LiveApp, org: str, key: str, key_id: str) -> None:
        self.live, self.org, self.key, self.key_id = live, org, key, key_id

    async def call(self, method: str, path: str = "", body: Any = None) -> tuple[int, Any]:
        return await self.live.call(method, path, body, key=self.key)

    async def subscribe(self, path: str, events: list[str]) -> dict[str, Any]:
        status, created = await self.call(
            "POST", body={"url": self.live.receiver.url(path), "events": events}
        )
        assert status == 201, created
        return dict(created)

    async def audit(self, query: str = "") -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with self.live.client.get(AUDIT + query, headers=headers) as answer:
            assert answer.status == 200, await answer.text()
            return list((await answer.json())["rows"])

    async def produce(self) -> str:
        event = sample_event("verification.created", self.org, datetime.now(UTC))
        await self.live.send_events([orjson.dumps(event)], [record_key(event)])
        return str(event["id"])


async def an_org(live: LiveApp, name: str = "ops-tests") -> Org:
    org = f"org_{uuid.uuid4().hex[:10]}"
    record, key = await live.store.create_api_key(org, name)
    return Org(live, org, key, record.id)


async def schemas(live: LiveApp) -> dict[str, Any]:
    status, catalog = await live.call("GET", "/event-types")
    assert status == 200
    return {row["name"]: row["schema"] for row in catalog["rows"]}


def operational(receiver: Receiver, path: str, event: str | None = None) -> list[dict[str, Any]]:
    """The operational envelopes `path` received (of `event` only, when named)."""
    bodies = [orjson.loads(r.body) for r in receiver.at(path)]
    return [
        b for b in bodies if b["event"] in OPERATIONAL and (event is None or b["event"] == event)
    ]


async def wait_for(receiver: Receiver, path: str, event: str, count: int = 1) -> list[Any]:
    await receiver.wait_for(
        lambda: len(operational(receiver, path, event)) >= count, what=f"{event} at {path}"
    )
    return operational(receiver, path, event)


def ulid_ms(prefixed: str) -> int:
    """The time (epoch ms) in a prefixed ULID id."""
    return int(ULID.from_str(prefixed.split("_", 1)[1]).milliseconds)


def about(envelopes: list[dict[str, Any]], subscription_id: str) -> list[dict[str, Any]]:
    return [e for e in envelopes if e["data"]["subscriptionId"] == subscription_id]


def requests_of(receiver: Receiver, path: str, event_id: str) -> list[Received]:
    return [r for r in receiver.at(path) if r.event_id == event_id]


async def test_a_failing_endpoint_is_announced_to_the_other_subscription(ops: LiveApp) -> None:
    """500 on every attempt: `failing` once at the threshold, `exhausted` when the delivery's
    schedule is spent, `disabled` once by the failure clock; to the watcher, never to the
    broken subscription itself, which takes the same events; signed; valid; audited."""
    org, receiver = await an_org(ops), ops.receiver
    watcher = await org.subscribe("w1", list(OPERATIONAL))
    broken = await org.subscribe("b1", ["verification.created", *OPERATIONAL])
    receiver.set("b1", Behaviour(status=500))
    event_id = await org.produce()

    failings = await wait_for(receiver, "w1", "webhook.subscription.failing")
    (failing,) = about(failings, broken["id"])
    (exhausted,) = await wait_for(receiver, "w1", "webhook.delivery.exhausted")
    (disabled,) = await wait_for(receiver, "w1", "webhook.subscription.disabled")
    await asyncio.sleep(SETTLE)

    assert failing["data"]["consecutiveFailures"] == 2
    assert failing["data"]["lastStatusCode"] == 500
    assert exhausted["data"] | {"deliveryId": None} == {
        "subscriptionId": broken["id"],
        "url": broken["url"],
        "deliveryId": None,
        "eventId": event_id,
        "eventType": "verification.created",
        "attempts": 4,
        "lastStatusCode": 500,
        "lastError": exhausted["data"]["lastError"],
    }
    assert disabled["data"]["automatic"] is True
    assert disabled["data"]["actor"] == {"type": "system", "id": None, "name": None}
    assert "failed for" in disabled["data"]["reason"]
    # Once each, and nothing about itself ever reached the broken endpoint.
    told = [e["event"] for e in about(operational(receiver, "w1"), broken["id"])]
    assert sorted(told) == [
        "webhook.delivery.exhausted",
        "webhook.subscription.changed",  # its creation
        "webhook.subscription.disabled",
        "webhook.subscription.failing",
    ]
    assert about(operational(receiver, "b1"), broken["id"]) == []
    assert len(requests_of(receiver, "b1", event_id)) == 4

    published = await schemas(ops)
    for envelope in operational(receiver, "w1"):
        jsonschema.validate(envelope, published[envelope["event"]])
        assert envelope["orgId"] == org.org
    for got in receiver.at("w1"):
        assert we_verify(watcher["secret"], got)

    entries = await org.audit(f"?subscriptionId={broken['id']}")
    (entry,) = [e for e in entries if e["action"] == "subscription.disabled"]
    assert entry["actor"] == {"type": "system", "id": None, "name": None}
    status, row = await org.call("GET", f"/{broken['id']}")
    assert status == 200
    assert (row["active"], row["updatedBy"]) == (False, "system")


async def test_gone_disables_at_once_and_the_first_success_after_recovers(ops: LiveApp) -> None:
    """410 disables at the first attempt; re-enabled through the API and answering again, the
    first success is announced as `recovered`, once."""
    org, receiver = await an_org(ops), ops.receiver
    await org.subscribe("w2", list(OPERATIONAL))
    gone = await org.subscribe("g2", ["verification.created"])
    receiver.set("g2", Behaviour(status=410))
    first = await org.produce()

    (disabled,) = await wait_for(receiver, "w2", "webhook.subscription.disabled")
    assert disabled["data"]["reason"] == GONE
    assert len(requests_of(receiver, "g2", first)) == 1
    assert operational(receiver, "w2", "webhook.subscription.failing") == []

    receiver.set("g2", Behaviour(status=204))
    status, _ = await org.call("PATCH", f"/{gone['id']}", {"active": True})
    assert status == 200
    second = await org.produce()
    await receiver.wait_for(lambda: bool(requests_of(receiver, "g2", second)), what="resent")
    (recovered,) = await wait_for(receiver, "w2", "webhook.subscription.recovered")
    await org.produce()
    await asyncio.sleep(SETTLE)
    assert len(operational(receiver, "w2", "webhook.subscription.recovered")) == 1
    assert recovered["data"]["subscriptionId"] == gone["id"]
    published = await schemas(ops)
    jsonschema.validate(recovered, published["webhook.subscription.recovered"])


async def test_failing_then_success_recovers_once(ops: LiveApp) -> None:
    """Two failed tests reach the threshold (`failing`, once, even after a third failure);
    the next success is `recovered`, once."""
    org, receiver = await an_org(ops), ops.receiver
    await org.subscribe("w3", list(OPERATIONAL))
    flaky = await org.subscribe("f3", ["verification.created"])
    receiver.set("f3", Behaviour(status=500))
    for _ in range(3):
        status, result = await org.call("POST", f"/{flaky['id']}/test")
        assert (status, result["responseCode"]) == (200, 500)
    (failing,) = await wait_for(receiver, "w3", "webhook.subscription.failing")
    receiver.set("f3", Behaviour(status=204))
    for _ in range(2):
        status, result = await org.call("POST", f"/{flaky['id']}/test")
        assert result["status"] == "sent"
    (recovered,) = await wait_for(receiver, "w3", "webhook.subscription.recovered")
    await asyncio.sleep(SETTLE)
    assert len(operational(receiver, "w3", "webhook.subscription.failing")) == 1
    assert len(operational(receiver, "w3", "webhook.subscription.recovered")) == 1
    assert recovered["data"]["failingSince"] == failing["data"]["failingSince"]
    # A test's failure is not an exhausted delivery.
    assert operational(receiver, "w3", "webhook.delivery.exhausted") == []


async def test_a_change_through_the_api_is_audited_and_announced(ops: LiveApp) -> None:
    """PATCH of a URL and a header: an audit entry and `changed` naming the key, with the old
    and new URL and the header's name, never its value; another org's key sees none of it."""
    org, receiver = await an_org(ops, "deploy-bot"), ops.receiver
    await org.subscribe("w4", ["webhook.subscription.changed"])
    target = await org.subscribe("s4", ["verification.created"])
    new_url = receiver.url("s4-moved")
    status, row = await org.call(
        "PATCH",
        f"/{target['id']}",
        {"url": new_url, "headers": {"X-Gateway-Token": "tok-3f9a-never-shown"}},
    )
    assert status == 200, row
    assert row["updatedBy"] == org.key_id

    changes = await wait_for(receiver, "w4", "webhook.subscription.changed", 2)
    created, updated = about(changes, target["id"])
    assert created["data"]["action"] == "created"
    assert updated["data"]["action"] == "updated"
    key = {"type": "api_key", "id": org.key_id, "name": "deploy-bot"}
    assert updated["data"]["actor"] == key
    assert updated["data"]["url"] == new_url
    assert updated["data"]["changes"]["url"] == {"old": target["url"], "new": new_url}
    assert updated["data"]["changes"]["headers"] == {"set": ["X-Gateway-Token"], "removed": []}

    entries = await org.audit(f"?subscriptionId={target['id']}")
    assert [e["action"] for e in entries] == ["subscription.updated", "subscription.created"]
    assert entries[0]["actor"] == key
    assert entries[0]["changes"] == updated["data"]["changes"]
    raw = orjson.dumps(await org.audit())
    assert b"tok-3f9a-never-shown" not in raw
    assert all(b"tok-3f9a-never-shown" not in r.body for r in receiver.at("w4"))

    other = await an_org(ops)
    assert [e["action"] for e in await other.audit()] == ["api_key.created"]
    assert await other.audit(f"?subscriptionId={target['id']}") == []
    # The watcher's own creation was announced to nobody (it was the org's first).
    assert about(changes, target["id"]) == [created, updated]


async def test_the_audit_trail_pages_and_filters_by_time(ops: LiveApp) -> None:
    org = await an_org(ops)
    made = [await org.subscribe(f"p5-{n}", ["verification.created"]) for n in range(3)]
    (key_created,) = [r for r in await org.audit() if r["action"] == "api_key.created"]
    assert key_created["apiKeyId"] == org.key_id
    rows = await org.audit("?limit=2")
    assert [r["subscriptionId"] for r in rows] == [made[2]["id"], made[1]["id"]]
    headers = {"Authorization": f"Bearer {org.key}"}
    async with ops.client.get(AUDIT + "?limit=2", headers=headers) as answer:
        cursor = (await answer.json())["nextCursor"]
    rest = await org.audit(f"?cursor={cursor}")
    assert [r["subscriptionId"] for r in rest] == [made[0]["id"], None]
    later = rows[0]["at"]
    assert [r["subscriptionId"] for r in await org.audit(f"?since={later}")] == [made[2]["id"]]
    assert len(await org.audit(f"?until={later}")) == 3
    async with ops.client.get(AUDIT + "?cursor=nope&bad=1", headers=headers) as answer:
        assert answer.status == 422
    created = await org.audit("?action=subscription.created,subscription.deleted")
    assert [r["subscriptionId"] for r in created] == [m["id"] for m in reversed(made)]
    assert await org.audit("?action=subscription.failing") == []
    async with ops.client.get(AUDIT + "?action=subscription.exploded", headers=headers) as answer:
        assert answer.status == 422
        assert "subscription.exploded" in await answer.text()


async def test_an_event_committed_before_a_crash_is_delivered_after_the_restart_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The change commits its event's deliveries with it: with no service running (it died
    between the commit and the send), the next one to start sends it, once, with the id the
    event's cause gives it; a third start sends nothing again. On SQLite, in this process."""
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/webhooks.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    run = uuid.uuid4().hex[:8]
    names = [f"t{run}.identity.{event}" for event in CATALOG] + [f"t{run}.dlq"]
    async with _started_receiver() as receiver:
        store = await open_store(settings)
        try:
            watcher = await store.create_subscription(
                "org_crash", receiver.url("w6"), ["webhook.subscription.disabled"], None
            )
            broken = await store.create_subscription(
                "org_crash", receiver.url("b6"), ["verification.created"], None
            )
            assert await store.deactivate_subscription(broken.id, GONE)
            assert not await store.deactivate_subscription(broken.id, GONE)  # once
        finally:
            await store.close()
        for _ in range(2):
            async with live_app(settings, names, kafka_bootstrap, receiver) as live:
                await receiver.wait_for(lambda: bool(receiver.at("w6")), what="disabled")
                await asyncio.sleep(SETTLE)
                page = await live.store.list_deliveries(
                    "org_crash", watcher.id, DeliveryFilter(), PageRequest(10, None)
                )
        (got,) = receiver.at("w6")
        (row,) = page.rows
        assert (got.delivery, row.status.value) == (row.id, "sent")
        envelope = orjson.loads(got.body)
        event = operational_events.disabled(
            operational_events.About(broken.id, "org_crash", broken.url),
            GONE,
            SYSTEM,
            ulid_ms(envelope["id"]),
        )
        assert (envelope["id"], got.delivery) == (event.id, event.delivery_id(watcher.id))
