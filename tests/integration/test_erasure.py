"""The erasure of one customer's data, on both stores: end to end (events through Kafka to the
real service, delivered to the test receiver, then erased through the API), and the route's
answer to every kind of bad or odd input (never a 500, nothing erased unless clearly asked)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import structlog

from service import ids
from service.api.models import CustomerErasure, DeliveryDetail
from service.app import Roles
from service.clock import now_ms
from service.domain import IncomingEvent, NewDelivery
from service.samples import sample_event
from service.settings import Settings
from service.store import Lease, Store
from service.store.sql.base import PAYLOAD_REMOVED
from tests.support.api import RFC3339_MS, Api, api_over, assert_problem, erase, erase_path
from tests.support.live import ORG, LiveApp, live_app
from tools.receiver import Behaviour, Receiver

ORG_TWO = "org_two"
A = "cus/ø ✓ A"  # a "/" and more than ASCII: percent-encoded in the path
B = "cus_B"
ERASED = "its payload was erased at the customer's request"


def about(event: str, org: str, customer: str) -> dict[str, Any]:
    envelope = sample_event(event, org, datetime.now(UTC))
    envelope["data"]["customerId"] = customer
    return envelope


async def until(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await probe():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class Org:
    """One org's view through the API: its key, its subscriptions' logs."""

    def __init__(self, live: LiveApp, key: str) -> None:
        self.live = live
        self.key = key

    async def subscribe(self, path: str, events: list[str]) -> str:
        body = {"url": self.live.receiver.url(path), "events": events}
        status, created = await self.live.call("POST", body=body, key=self.key)
        assert status == 201, created
        return str(created["id"])

    async def rows(self, subscription_id: str) -> dict[str, dict[str, Any]]:
        """The subscription's log by event id."""
        status, page = await self.live.call(
            "GET", f"/{subscription_id}/deliveries?limit=100", key=self.key
        )
        assert status == 200, page
        return {row["eventId"]: row for row in page["rows"]}

    async def detail(self, subscription_id: str, event: dict[str, Any]) -> dict[str, Any]:
        row = (await self.rows(subscription_id))[event["id"]]
        status, body = await self.live.call(
            "GET", f"/{subscription_id}/deliveries/{row['id']}", key=self.key
        )
        assert status == 200, body
        DeliveryDetail.model_validate(body)
        assert isinstance(body, dict)
        return body

    async def statuses(self, subscription_id: str, *events: dict[str, Any]) -> list[str | None]:
        rows = await self.rows(subscription_id)
        return [rows[e["id"]]["status"] if e["id"] in rows else None for e in events]

    async def erase(self, customer: str, *, dry_run: bool = False) -> dict[str, Any]:
        status, receipt, _ = await erase(self.live.client, self.key, customer, dry_run=dry_run)
        assert status == 200, receipt
        CustomerErasure.model_validate(receipt)
        assert isinstance(receipt, dict)
        return receipt


def receipt(customer: str, events: int, deliveries: int, cancelled: int) -> dict[str, Any]:
    """A receipt's counts, as the response holds them (erasedAt aside)."""
    return {
        "customerId": customer,
        "events": events,
        "deliveries": deliveries,
        "cancelled": cancelled,
    }


def counts(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in ("erasedAt", "dryRun")}


@pytest.fixture
async def retrying(
    settings_for: Settings, topics: list[str], kafka_bootstrap: str, receiver: Receiver
) -> AsyncIterator[LiveApp]:
    """The whole service; a failing endpoint is retried about every second, so that a delivery
    stays open (retrying) for as long as the test needs."""
    async with live_app(
        settings_for, topics, kafka_bootstrap, receiver, retry_schedule=[1.0] * 40
    ) as app:
        yield app


async def test_an_erasure_end_to_end(retrying: LiveApp, receiver: Receiver) -> None:
    live = retrying
    _, key_two = await live.store.create_api_key(ORG_TWO, "tests")
    one, two = Org(live, live.key), Org(live, key_two)
    receiver.set("ok", Behaviour(status=200, body=b"thanks"))
    receiver.set("down", Behaviour(status=500, body=b"down"))
    receiver.set("other", Behaviour(status=200, body=b"other"))
    ok = await one.subscribe("ok", ["verification.created"])
    mirror = await one.subscribe("mirror", ["verification.created"])
    down = await one.subscribe("down", ["customer.kyc_updated"])
    other = await two.subscribe("other", ["verification.created"])

    a1 = about("verification.created", ORG, A)
    await asyncio.sleep(0.005)
    a2 = about("verification.created", ORG, A)
    a3 = about("customer.kyc_updated", ORG, A)
    await asyncio.sleep(0.005)
    b1 = about("verification.created", ORG, B)
    b2 = about("customer.kyc_updated", ORG, B)
    a4 = about("verification.created", ORG_TWO, A)
    assert a1["occurredAt"] < a2["occurredAt"] < b1["occurredAt"]
    for envelope in (a1, a2, a3, b1, b2, a4):
        await produce(live, envelope)

    async def delivered() -> bool:
        sent = ["sent"] * 3
        return (
            await one.statuses(ok, a1, a2, b1) == sent
            and await one.statuses(mirror, a1, a2, b1) == sent
            and await two.statuses(other, a4) == ["sent"]
            and await one.statuses(down, a3, b2) == ["retrying"] * 2
        )

    await until(delivered, "every delivery sent, the failing ones retrying")

    # Another org's key erases nothing of org 1: it has no event about B.
    foreign = await two.erase(B)
    assert counts(foreign) == receipt(B, 0, 0, 0)
    assert (await one.detail(ok, b1))["payload"] == b1

    # A dry run counts and changes nothing.
    dry = await one.erase(A, dry_run=True)
    assert counts(dry) == receipt(A, 3, 5, 1)
    assert (dry["dryRun"], dry["erasedAt"]) == (True, None)
    assert (await one.detail(ok, a1))["payload"] == a1
    assert await one.statuses(down, a3) == ["retrying"]

    # The erasure: A's three events in org 1, their five deliveries, the one still open.
    with structlog.testing.capture_logs() as logs:
        erased = await one.erase(A)
    attempts_at_erasure = len(attempts(receiver, "down", a3))
    assert counts(erased) == receipt(A, 3, 5, 1)
    assert erased["dryRun"] is False
    assert RFC3339_MS.match(erased["erasedAt"])
    (logged,) = [e for e in logs if e["event"] == "customer.erased"]
    assert logged == {
        "event": "customer.erased",
        "log_level": "info",
        "org_id": ORG,
        "events": 3,
        "deliveries": 5,
        "cancelled": 1,
        "at": erased["erasedAt"],
    }
    for secret in (A, quote(A, safe=""), "ø ✓", a1["data"]["verificationId"]):
        assert secret not in repr(logs)

    # A's deliveries keep their metadata, without payload or response excerpts.
    removed = {"reason": "erased", "at": erased["erasedAt"], "detail": ERASED}
    for subscription, event in ((ok, a1), (ok, a2), (mirror, a1), (mirror, a2), (down, a3)):
        detail = await one.detail(subscription, event)
        assert detail["payload"] is None
        assert detail["payloadRemoved"] == removed
        assert detail["eventId"] == event["id"]
        assert detail["attempts"]
        assert all(a["responseExcerpt"] is None for a in detail["attempts"])
    cancelled = (await one.rows(down))[a3["id"]]
    assert (cancelled["status"], cancelled["cancelledReason"]) == ("cancelled", PAYLOAD_REMOVED)

    # B's and org 2's are as they were.
    for subscription, event, excerpt in ((ok, b1, "thanks"), (down, b2, "down")):
        detail = await one.detail(subscription, event)
        assert detail["payload"] == event
        assert detail["payloadRemoved"] is None
        assert {a["responseExcerpt"] for a in detail["attempts"]} == {excerpt}
    assert await one.statuses(down, b2) == ["retrying"]
    kept = await two.detail(other, a4)
    assert (kept["payload"], kept["attempts"][0]["responseExcerpt"]) == (a4, "other")

    # The cancelled delivery is not attempted again (one already in flight may land), while
    # B's, on the same failing endpoint, still is.
    await asyncio.sleep(1.0)
    settled = len(attempts(receiver, "down", a3))
    assert settled - attempts_at_erasure <= 1
    b_attempts = len(attempts(receiver, "down", b2))
    await asyncio.sleep(2.5)
    assert len(attempts(receiver, "down", a3)) == settled
    assert len(attempts(receiver, "down", b2)) > b_attempts
    assert (await one.rows(down))[a3["id"]]["status"] == "cancelled"

    # Nothing of A's can be sent again.
    for subscription, event in ((ok, a1), (down, a3)):
        row = (await one.rows(subscription))[event["id"]]
        status, problem = await live.call(
            "POST", f"/{subscription}/deliveries/{row['id']}/redeliver"
        )
        assert status == 410, problem
        assert problem["type"].endswith("/payload-removed")
        assert ERASED in problem["detail"]
    only_a = {"since": a1["occurredAt"], "until": b1["occurredAt"], "onlyFailed": False}
    status, problem = await live.call("POST", f"/{ok}/replay", only_a)
    assert status == 410, problem
    assert problem["type"].endswith("/payload-removed")
    status, replayed = await live.call(
        "POST", f"/{ok}/replay", {"since": a1["occurredAt"], "onlyFailed": False}
    )
    assert status == 202, replayed
    assert replayed == {"count": 1, "withoutPayload": 2, "filtered": 0, "nextSince": None}
    await receiver.wait_for(lambda: len(attempts(receiver, "ok", b1)) == 2, what="B again")
    assert [len(attempts(receiver, "ok", e)) for e in (a1, a2)] == [1, 1]

    # A repeat finds the same, and cancels nothing more.
    again = await one.erase(A)
    assert counts(again) == receipt(A, 3, 5, 0)
    assert again["erasedAt"] >= erased["erasedAt"]
    assert (await one.detail(ok, a1))["payloadRemoved"] == removed  # the first erasure's time

    # An event about A after the erasure is delivered as usual, and kept.
    a5 = about("verification.created", ORG, A)
    await produce(live, a5)

    async def a5_sent() -> bool:
        return await one.statuses(ok, a5) == await one.statuses(mirror, a5) == ["sent"]

    await until(a5_sent, "A's new event sent")
    (arrived,) = attempts(receiver, "ok", a5)
    assert orjson.loads(arrived.body) == a5
    assert (await one.detail(ok, a5))["payload"] == a5
    dry_after = await one.erase(A, dry_run=True)
    assert counts(dry_after) == receipt(A, 4, 7, 0)
    assert (await one.detail(ok, a5))["payload"] == a5

    # Org 2 erasing its own A leaves org 1's alone.
    assert counts(await two.erase(A)) == receipt(A, 1, 1, 0)
    assert (await two.detail(other, a4))["payload"] is None
    assert (await one.detail(ok, a5))["payload"] == a5
    assert (await one.detail(ok, b1))["payload"] == b1


async def produce(live: LiveApp, envelope: dict[str, Any]) -> None:
    (topic,) = [t for t in live.settings.kafka_topics if t.endswith(envelope["event"])]
    key = str(envelope["data"]["customerId"]).encode()
    await live.producer.send_and_wait(topic, orjson.dumps(envelope), key=key)


def attempts(receiver: Receiver, path: str, event: dict[str, Any]) -> list[Any]:
    return [r for r in receiver.at(path) if r.event_id == event["id"]]


# -- the route's answers ----------------------------------------------------------------------


@pytest.fixture
async def api(settings_for: Settings) -> AsyncIterator[Api]:
    """The API over a store nothing else writes to (org_a's key; org_b's as `other_key`)."""
    async with api_over(settings_for, Roles(consumer=False, dispatch=False)) as api:
        yield api


async def seeded(store: Store, customer: str, org: str = "org_a") -> tuple[str, str]:
    """A subscription of `org` and one delivery to it, left open, of an event about
    `customer`; their ids."""
    subscription = await store.create_subscription(
        org, "https://a.example/h", ("verification.created",), None
    )
    envelope = sample_event("verification.created", org, datetime.now(UTC))
    envelope["data"]["customerId"] = customer
    event = IncomingEvent(
        str(envelope["id"]),
        org,
        "verification.created",
        now_ms(),
        orjson.dumps(envelope),
        None,
        "t/0/1",
        customer_id=customer,
    )
    delivery = NewDelivery(ids.new_id(ids.DELIVERY), event.id, subscription.id, event.event, org)
    await store.record_events([event], [delivery], Lease("seeder", 600_000))
    return subscription.id, delivery.id


async def payload_of(api: Api, subscription_id: str, delivery_id: str) -> Any:
    status, body, _ = await api.call("GET", f"/{subscription_id}/deliveries/{delivery_id}")
    assert status == 200, body
    return body["payload"]


@pytest.mark.parametrize(
    ("customer", "message"),
    [
        ("a" * 201, "must be at most 200 characters"),
        ("a\x00b", "must not hold control characters"),
        ("\x1f", "must not hold control characters"),
        ("a\x7f", "must not hold control characters"),
        ("a\u0085b", "must not hold control characters"),  # C1: NEL
        ("x\r\nSet-Cookie: a=b", "must not hold control characters"),
    ],
)
async def test_an_id_that_cannot_be_one_is_a_422(api: Api, customer: str, message: str) -> None:
    status, body, content_type = await erase(api.client, api.key, customer)

    assert_problem(status, body, content_type, 422)
    assert body["errors"] == [{"field": "customerId", "message": message}]


async def test_odd_ids_are_ids_and_erase_only_their_own(api: Api) -> None:
    odd = [
        "a" * 200,
        "' OR 1=1 --",
        "100%",
        "a%2Fb",
        "../x",
        "a?b#c&dryRun=true",
        "🙂",
        "line\u2028sep",
        " ",
        "\u202eevil",
    ]
    seeded_ids = {customer: await seeded(api.store, customer) for customer in ("日本語/顧客", "k")}

    for customer in odd:
        status, body, _ = await erase(api.client, api.key, customer)
        assert status == 200, (customer, body)
        assert counts(body) == receipt(customer, 0, 0, 0)
        assert body["dryRun"] is False
    status, body, _ = await erase(api.client, api.key, "日本語/顧客")

    assert status == 200, body
    assert counts(body) == receipt("日本語/顧客", 1, 1, 1)
    assert await payload_of(api, *seeded_ids["日本語/顧客"]) is None
    assert (await payload_of(api, *seeded_ids["k"]))["data"]["customerId"] == "k"


async def test_nothing_is_erased_unless_clearly_asked(api: Api) -> None:
    subscription_id, delivery_id = await seeded(api.store, "cus_1")
    # A body is refused, not ignored: {"dryRun": true} there must not erase.
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"body": orjson.dumps({"dryRun": True})}, {"(body)"}),
        ({"query": "dryRun=yes"}, {"dryRun"}),
        ({"query": "dryRun=True"}, {"dryRun"}),
        ({"query": "dryRun=true&dryRun=false"}, {"dryRun"}),
        ({"query": "dryrun=true"}, {"dryrun"}),
        ({"query": "colour=red&dryRun=maybe"}, {"colour", "dryRun"}),
    ]
    for how, fields in cases:
        status, body, content_type = await erase(api.client, api.key, "cus_1", **how)
        assert_problem(status, body, content_type, 422)
        assert {e["field"] for e in body["errors"]} == fields, how
    status, body, _ = await erase(api.client, api.key, "cus_1", query="dryRun=false")

    assert (await payload_of(api, subscription_id, delivery_id)) is None
    assert status == 200
    assert counts(body) == receipt("cus_1", 1, 1, 1)


async def test_the_route_needs_a_key_a_post_and_an_id(api: Api) -> None:
    subscription_id, delivery_id = await seeded(api.store, "cus_1")
    client = api.client
    path = erase_path("cus_1")
    for headers in ({}, {"Authorization": "Bearer qe_key_neverIssuedToAnyone"}):
        async with client.post(path, headers=headers) as response:
            body = await response.json(content_type=None)
            assert_problem(response.status, body, response.content_type, 401)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    async with client.get(path, headers=api.auth()) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert response.content_type == "application/problem+json"
    for unrouted in ("/api/identity/customers//erase", "/api/identity/customers/cus/1/erase"):
        async with client.post(unrouted, headers=api.auth()) as response:
            body = await response.json(content_type=None)
            assert_problem(response.status, body, response.content_type, 404)
    # org_b's key: its own (none) erased, org_a's delivery as it was.
    status, body, _ = await erase(client, api.other_key, "cus_1")

    assert status == 200
    assert counts(body) == receipt("cus_1", 0, 0, 0)
    assert (await payload_of(api, subscription_id, delivery_id))["data"]["customerId"] == "cus_1"
