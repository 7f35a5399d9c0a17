"""The operations on both stores, through the API: the delivery log and one delivery,
redelivery, replay, secret rotation, the richer summary of a row, rate limits and static headers;
and a problem body (never a 500, never another org's data) for every kind of bad input.

The app runs without its dispatcher, so what a test seeds through the store (`record_events`,
`record_attempts`) stays exactly as the test left it: nothing claims or sends it behind its back.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from service import ids
from service.api.models import DeliveryDetail, DeliveryList, DeliveryRow, SubscriptionRow
from service.app import Roles
from service.clock import iso, now_ms
from service.domain import AttemptRecord, DeliveryStatus, IncomingEvent, NewDelivery
from service.events import parse_time
from service.operations import recovery
from service.settings import Settings
from service.store import Claim, Lease, Store
from tests.support.api import (
    RFC3339_MS,
    SEED_REQUEST,
    Api,
    api_over,
    assert_problem,
    create,
    problem_fields,
    sealed_elsewhere,
)

OWNER = "seeder"
HOUR = 3_600_000
DAY = 24 * HOUR
PAUSED = "paused through the API (PATCH active: false)"
UNKNOWN_DELIVERY = "whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK"
UNKNOWN_SUBSCRIPTION = "whk_01JD2Y8Q0S6M2X0YV1X4J5T7ZK"


@pytest.fixture
async def ops(settings_for: Settings) -> AsyncIterator[Api]:
    """The API (org_a's key, and org_b's as `other_key`) over a store nothing else writes to."""
    async with api_over(settings_for, Roles(consumer=False, dispatch=False)) as api:
        yield api


# -- seeding through the store ----------------------------------------------------------------


def event(
    org: str = "org_a", name: str = "verification.created", occurred_at: int | None = None
) -> IncomingEvent:
    event_id = ids.new_id(ids.EVENT)
    at = now_ms() - 60_000 if occurred_at is None else occurred_at
    body = orjson.dumps(
        {
            "id": event_id,
            "event": name,
            "occurredAt": iso(at),
            "orgId": org,
            "data": {"customerId": "cus_1", "note": "Zoë ✓ \u2028"},
        }
    )
    return IncomingEvent(event_id, org, name, at, body, None, "t/0/1")


async def seed(
    store: Store, subscription_id: str, events: Sequence[IncomingEvent]
) -> list[NewDelivery]:
    """The events and a delivery of each to the subscription, leased to OWNER (pending)."""
    deliveries = [
        NewDelivery(ids.new_id(ids.DELIVERY), e.id, subscription_id, e.event, e.org_id)
        for e in events
    ]
    assert await store.record_events(events, deliveries, Lease(OWNER, 600_000)) == deliveries
    return deliveries


def outcome(
    delivery: NewDelivery,
    status: DeliveryStatus,
    *,
    number: int = 1,
    code: int | None = None,
    at: int | None = None,
    duration: int = 12,
    error: str | None = None,
    excerpt: str | None = None,
    next_at: int | None = None,
) -> AttemptRecord:
    if code is None and error is None:
        code = 200 if status is DeliveryStatus.SENT else 500
    return AttemptRecord(
        delivery_id=delivery.id,
        subscription_id=delivery.subscription_id,
        number=number,
        started_at=now_ms() - 5_000 if at is None else at,
        duration_ms=duration,
        status_code=code,
        result="2xx" if status is DeliveryStatus.SENT else "5xx",
        error=error,
        response_excerpt=excerpt,
        new_status=status,
        next_attempt_at=next_at,
    )


async def record(store: Store, *attempts: AttemptRecord) -> None:
    recorded = await store.record_attempts(attempts, OWNER)
    assert recorded.lost == frozenset()


async def sent(store: Store, delivery: NewDelivery) -> None:
    await record(store, outcome(delivery, DeliveryStatus.SENT, excerpt="ok"))


async def failed(store: Store, delivery: NewDelivery) -> None:
    await record(store, outcome(delivery, DeliveryStatus.FAILED, code=500, excerpt="boom"))


def by_id(delivery: NewDelivery) -> str:
    return delivery.id


def ms(text: str) -> int:
    return int(parse_time(text).timestamp() * 1000)


async def log(api: Api, subscription_id: str, **query: Any) -> list[dict[str, Any]]:
    """Every row of the log (walking its cursor), checking each page's shape."""
    rows: list[dict[str, Any]] = []
    params = {k: str(v) for k, v in query.items()}
    while True:
        status, page, _ = await api.call(
            "GET", f"/{subscription_id}/deliveries?{urlencode(params)}"
        )
        assert status == 200, page
        DeliveryList.model_validate(page)
        rows += page["rows"]
        if page["nextCursor"] is None:
            return rows
        params["cursor"] = page["nextCursor"]


async def detail(api: Api, subscription_id: str, delivery_id: str) -> dict[str, Any]:
    status, body, _ = await api.call("GET", f"/{subscription_id}/deliveries/{delivery_id}")
    assert status == 200, body
    DeliveryDetail.model_validate(body)
    assert isinstance(body, dict)
    return body


async def row_of(api: Api, subscription_id: str) -> dict[str, Any]:
    status, body, _ = await api.call("GET", f"/{subscription_id}")
    assert status == 200, body
    SubscriptionRow.model_validate(body)
    assert isinstance(body, dict)
    return body


# -- the delivery log -------------------------------------------------------------------------


async def test_the_log_pages_newest_first_and_shows_every_row_once(ops: Api) -> None:
    sub = (await create(ops))["id"]
    neighbour = (await create(ops, url="https://other.example.com/h"))["id"]
    batches = []
    for _ in range(3):
        batches.append(await seed(ops.store, sub, [event() for _ in range(4)]))
        await seed(ops.store, neighbour, [event()])
        await asyncio.sleep(0.005)  # each batch its own createdAt; within one, ids break ties
    expected = [
        d.id for batch in reversed(batches) for d in sorted(batch, key=lambda d: d.id)[::-1]
    ]

    pages = []
    path = f"/{sub}/deliveries?limit=5"
    while True:
        status, page, _ = await ops.call("GET", path)
        assert status == 200, page
        pages.append([row["id"] for row in page["rows"]])
        if page["nextCursor"] is None:
            break
        path = f"/{sub}/deliveries?limit=5&cursor={page['nextCursor']}"
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [i for p in pages for i in p] == expected
    # The default page holds them all, in the same order; the neighbour's are not there.
    status, whole, _ = await ops.call("GET", f"/{sub}/deliveries")
    assert status == 200
    assert [row["id"] for row in whole["rows"]] == expected
    assert whole["nextCursor"] is None
    created = [ms(row["createdAt"]) for row in whole["rows"]]
    assert created == sorted(created, reverse=True)
    assert len(set(created)) == 3


async def test_log_rows_show_the_last_attempt_and_the_next_one_while_open(ops: Api) -> None:
    sub = (await create(ops))["id"]
    fresh, retrying, done = await seed(ops.store, sub, [event() for _ in range(3)])
    t0 = now_ms() - 10_000
    await record(
        ops.store,
        outcome(retrying, DeliveryStatus.RETRYING, code=503, at=t0, duration=77, next_at=t0 + 1),
        outcome(done, DeliveryStatus.SENT, at=t0 + 5, duration=9, excerpt="ok"),
    )
    rows = {row["id"]: row for row in await log(ops, sub)}
    assert rows[fresh.id]["status"] == "pending"
    assert rows[fresh.id]["attemptCount"] == 0
    assert rows[fresh.id]["lastAttempt"] is None
    assert RFC3339_MS.match(rows[fresh.id]["nextAttemptAt"])
    assert rows[retrying.id]["status"] == "retrying"
    assert rows[retrying.id]["attemptCount"] == 1
    assert rows[retrying.id]["lastAttempt"] == {
        "at": iso(t0),
        "responseCode": 503,
        "durationMs": 77,
        "error": None,
    }
    assert rows[retrying.id]["nextAttemptAt"] == iso(t0 + 1)
    assert rows[done.id]["status"] == "sent"
    assert rows[done.id]["lastAttempt"]["responseCode"] == 200
    assert rows[done.id]["nextAttemptAt"] is None  # finished: nothing is due
    assert rows[done.id]["eventId"] == done.event_id
    assert rows[done.id]["event"] == "verification.created"
    assert "responseExcerpt" not in rows[done.id]["lastAttempt"]


async def test_the_log_filters_by_status_event_and_window(ops: Api) -> None:
    sub = (await create(ops))["id"]
    d_sent, d_failed = await seed(ops.store, sub, [event(), event(name="customer.kyc_updated")])
    await asyncio.sleep(0.005)
    d_retrying, d_pending = await seed(
        ops.store, sub, [event(), event(name="customer.kyc_updated")]
    )
    await sent(ops.store, d_sent)
    await failed(ops.store, d_failed)
    await record(ops.store, outcome(d_retrying, DeliveryStatus.RETRYING, next_at=now_ms() + 60_000))

    def ids_of(rows: list[dict[str, Any]]) -> list[str]:
        return [row["id"] for row in rows]

    def newest_first(*deliveries: NewDelivery) -> list[str]:
        return [d.id for d in deliveries]

    for status, delivery in (
        ("sent", d_sent),
        ("failed", d_failed),
        ("retrying", d_retrying),
        ("pending", d_pending),
    ):
        assert ids_of(await log(ops, sub, status=status)) == [delivery.id], status
    kyc = await log(ops, sub, event="customer.kyc_updated")
    assert ids_of(kyc) == newest_first(d_pending, d_failed)
    assert {row["event"] for row in kyc} == {"customer.kyc_updated"}
    assert ids_of(await log(ops, sub, event="verification.created", status="sent")) == [d_sent.id]
    assert await log(ops, sub, event="review.overridden") == []
    assert await log(ops, sub, event="webhook.test") == []

    rows = {row["id"]: row for row in await log(ops, sub)}
    first, second = rows[d_sent.id]["createdAt"], rows[d_pending.id]["createdAt"]
    assert ms(first) < ms(second)
    later = await log(ops, sub, since=second)
    assert set(ids_of(later)) == {d_retrying.id, d_pending.id}
    earlier = await log(ops, sub, until=second)
    assert set(ids_of(earlier)) == {d_sent.id, d_failed.id}
    assert set(ids_of(await log(ops, sub, since=first, until=second))) == {d_sent.id, d_failed.id}
    assert ids_of(await log(ops, sub, since=second, status="pending")) == [d_pending.id]
    assert await log(ops, sub, since=iso(now_ms() + HOUR)) == []


async def test_one_delivery_carries_its_payload_and_attempts_in_order(ops: Api) -> None:
    sub = (await create(ops))["id"]
    incoming = event(name="customer.kyc_updated")
    (delivery,) = await seed(ops.store, sub, [incoming])
    t0 = now_ms() - 30_000
    await record(
        ops.store,
        outcome(
            delivery,
            DeliveryStatus.RETRYING,
            number=1,
            code=503,
            at=t0,
            duration=40,
            excerpt="busy",
            next_at=t0 + 1000,
        ),
        outcome(
            delivery,
            DeliveryStatus.RETRYING,
            number=2,
            at=t0 + 2000,
            duration=2000,
            error="timed out after 2s",
            next_at=t0 + 5000,
        ),
        outcome(
            delivery,
            DeliveryStatus.FAILED,
            number=3,
            code=500,
            at=t0 + 6000,
            duration=15,
            excerpt='{"error": "boom"}',
        ),
    )
    body = await detail(ops, sub, delivery.id)
    assert body["payload"] == orjson.loads(incoming.body)
    assert body["payload"]["data"]["note"] == "Zoë ✓ \u2028"
    assert body["id"] == delivery.id
    assert body["eventId"] == incoming.id
    assert body["event"] == "customer.kyc_updated"
    assert body["status"] == "failed"
    assert body["attemptCount"] == 3
    assert body["nextAttemptAt"] is None
    assert body["attempts"] == [
        {
            "number": 1,
            "at": iso(t0),
            "responseCode": 503,
            "durationMs": 40,
            "error": None,
            "responseExcerpt": "busy",
        },
        {
            "number": 2,
            "at": iso(t0 + 2000),
            "responseCode": None,
            "durationMs": 2000,
            "error": "timed out after 2s",
            "responseExcerpt": None,
        },
        {
            "number": 3,
            "at": iso(t0 + 6000),
            "responseCode": 500,
            "durationMs": 15,
            "error": None,
            "responseExcerpt": '{"error": "boom"}',
        },
    ]
    assert body["lastAttempt"] == {
        "at": iso(t0 + 6000),
        "responseCode": 500,
        "durationMs": 15,
        "error": None,
    }
    # Not yet attempted: no attempts, the payload all the same.
    (waiting,) = await seed(ops.store, sub, [event()])
    fresh = await detail(ops, sub, waiting.id)
    assert fresh["attempts"] == []
    assert fresh["payload"]["id"] == waiting.event_id


async def test_bad_log_queries_are_422_naming_the_parameter(ops: Api) -> None:
    sub = (await create(ops))["id"]
    await seed(ops.store, sub, [event()])
    now = iso(now_ms())
    subscription_cursor = base64.urlsafe_b64encode(sub.encode()).decode().rstrip("=")
    # The shape of a log position with letters a ULID never has (I, L, O, U).
    not_crockford = base64.urlsafe_b64encode(f"123.whd_{'I' * 26}".encode()).decode()
    for query, field in (
        ({"status": "canceled"}, "status"),
        ({"status": "SENT"}, "status"),
        ({"status": ""}, "status"),
        ({"event": "verification.deleted"}, "event"),
        ({"event": ""}, "event"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        ({"since": now, "until": now}, "until"),
        ({"since": now, "until": iso(now_ms() - HOUR)}, "until"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": subscription_cursor}, "cursor"),
        ({"cursor": not_crockford}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"1.whd_\x00").decode()}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "9" * 5000}, "limit"),
        ({"colour": "red"}, "colour"),
        ({"subscriptionId": sub}, "subscriptionId"),
    ):
        status, body, ct = await ops.call("GET", f"/{sub}/deliveries?{urlencode(query)}")
        assert_problem(status, body, ct, 422)
        assert field in problem_fields(body), (query, body)
    # Several at once: each named.
    status, body, ct = await ops.call("GET", f"/{sub}/deliveries?status=x&event=y&colour=z")
    assert_problem(status, body, ct, 422)
    assert problem_fields(body) == {"status", "event", "colour"}


# -- ids that are not the caller's ------------------------------------------------------------


async def test_unknown_malformed_and_foreign_ids_are_404_without_a_leak(ops: Api) -> None:
    mine = (await create(ops))["id"]
    sibling = (await create(ops, url="https://sibling.example.com/h"))["id"]
    (my_delivery,) = await seed(ops.store, mine, [event()])
    (sibling_delivery,) = await seed(ops.store, sibling, [event()])
    status, made, _ = await ops.call("POST", body=SEED_REQUEST, key=ops.other_key)
    assert status == 201
    theirs = made["id"]
    their_event = event(org="org_b")
    (their_delivery,) = await seed(ops.store, theirs, [their_event])
    await failed(ops.store, their_delivery)
    gone = (await create(ops, url="https://gone.example.com/h"))["id"]
    (gone_delivery,) = await seed(ops.store, gone, [event()])
    status, _, _ = await ops.call("DELETE", f"/{gone}")
    assert status == 204

    def calls(sub: str, delivery: str) -> list[tuple[str, str, Any]]:
        return [
            ("GET", f"/{sub}/deliveries", None),
            ("GET", f"/{sub}/deliveries/{delivery}", None),
            ("POST", f"/{sub}/deliveries/{delivery}/redeliver", None),
            ("POST", f"/{sub}/replay", {"since": iso(now_ms() - HOUR)}),
            ("POST", f"/{sub}/rotate-secret", {"overlapSeconds": 0}),
        ]

    not_found = [
        # Another org's subscription, with its own delivery, called with org_a's key.
        *calls(theirs, their_delivery.id),
        # A deleted subscription.
        *calls(gone, gone_delivery.id),
        # Unknown and malformed subscription ids.
        *calls(UNKNOWN_SUBSCRIPTION, my_delivery.id),
        *calls("nope", my_delivery.id),
        *calls("%27%3B--", my_delivery.id),
        *calls(mine.lower(), my_delivery.id),
        # My subscription, with deliveries that are not its.
        ("GET", f"/{mine}/deliveries/{their_delivery.id}", None),
        ("POST", f"/{mine}/deliveries/{their_delivery.id}/redeliver", None),
        ("GET", f"/{mine}/deliveries/{sibling_delivery.id}", None),
        ("POST", f"/{mine}/deliveries/{sibling_delivery.id}/redeliver", None),
        ("GET", f"/{mine}/deliveries/{UNKNOWN_DELIVERY}", None),
        ("POST", f"/{mine}/deliveries/{UNKNOWN_DELIVERY}/redeliver", None),
        ("GET", f"/{mine}/deliveries/nope", None),
        ("GET", f"/{mine}/deliveries/{my_delivery.event_id}", None),  # an event id
        ("GET", f"/{mine}/deliveries/{my_delivery.id.lower()}", None),
        ("POST", f"/{mine}/deliveries/whd_%00/redeliver", None),
    ]
    for method, path, body in not_found:
        status, problem, ct = await ops.call(method, path, body)
        assert_problem(status, problem, ct, 404)
        shown = orjson.dumps(problem).decode()
        assert their_event.id not in shown, path
        assert "cus_1" not in shown, path
    # Nothing of theirs changed: their failed delivery is still failed, their secret the same.
    status, theirs_log, _ = await ops.call("GET", f"/{theirs}/deliveries", key=ops.other_key)
    assert status == 200
    assert [(r["id"], r["status"]) for r in theirs_log["rows"]] == [(their_delivery.id, "failed")]
    subscription = await ops.store.get_subscription("org_b", theirs)
    assert subscription is not None
    assert subscription.previous_secret is None
    # And org_b cannot reach org_a's either.
    status, problem, ct = await ops.call(
        "GET", f"/{mine}/deliveries/{my_delivery.id}", key=ops.other_key
    )
    assert_problem(status, problem, ct, 404)


# -- redelivery -------------------------------------------------------------------------------


async def test_redelivering_a_sent_delivery_reopens_it_with_the_same_id(ops: Api) -> None:
    sub = (await create(ops))["id"]
    done, lost = await seed(ops.store, sub, [event(), event()])
    await sent(ops.store, done)
    await failed(ops.store, lost)
    for delivery in (done, lost):
        before = now_ms()
        status, row, _ = await ops.call("POST", f"/{sub}/deliveries/{delivery.id}/redeliver")
        after = now_ms()
        assert status == 202, row
        DeliveryRow.model_validate(row)
        assert row["id"] == delivery.id
        assert row["status"] == "pending"
        assert row["attemptCount"] == 1  # until it is attempted
        assert row["lastAttempt"] is not None
        assert before <= ms(row["nextAttemptAt"]) <= after
        shown = await detail(ops, sub, delivery.id)
        assert (shown["status"], shown["attemptCount"]) == ("pending", 1)
        assert len(shown["attempts"]) == 1
    # A claimer gets both now, as their second attempt, and records it in the same log.
    jobs = await ops.store.claim_due(Claim(OWNER, 10, 60_000, subscription_id=sub))
    assert sorted((job.id, job.attempts) for job in jobs) == sorted([(done.id, 1), (lost.id, 1)])
    await record(ops.store, outcome(done, DeliveryStatus.SENT, number=2, excerpt="again"))
    again = await detail(ops, sub, done.id)
    assert (again["status"], again["attemptCount"]) == ("sent", 2)
    assert [a["number"] for a in again["attempts"]] == [1, 2]
    assert again["attempts"][1]["responseExcerpt"] == "again"
    assert [row["id"] for row in await log(ops, sub)].count(done.id) == 1


async def test_redelivering_an_open_delivery_makes_it_due_now(ops: Api) -> None:
    sub = (await create(ops))["id"]
    retrying, waiting = await seed(ops.store, sub, [event(), event()])
    await record(ops.store, outcome(retrying, DeliveryStatus.RETRYING, next_at=now_ms() + DAY))
    before = now_ms()
    status, row, _ = await ops.call("POST", f"/{sub}/deliveries/{retrying.id}/redeliver")
    assert status == 202, row
    assert row["status"] == "retrying"  # still on its schedule, only sooner
    assert before <= ms(row["nextAttemptAt"]) <= now_ms()
    status, row, _ = await ops.call("POST", f"/{sub}/deliveries/{waiting.id}/redeliver")
    assert (status, row["status"], row["attemptCount"]) == (202, "pending", 0)
    await ops.store.release([waiting.id], OWNER)
    claimed = {job.id for job in await ops.store.claim_due(Claim("x", 10, 60_000))}
    assert claimed == {retrying.id, waiting.id}


async def test_redelivery_for_an_inactive_or_undecryptable_subscription_is_409(
    ops: Api, settings_for: Settings
) -> None:
    sub = (await create(ops))["id"]
    (delivery,) = await seed(ops.store, sub, [event()])
    await sent(ops.store, delivery)
    status, _, _ = await ops.call("PATCH", f"/{sub}", {"active": False})
    assert status == 200
    status, problem, ct = await ops.call("POST", f"/{sub}/deliveries/{delivery.id}/redeliver")
    assert_problem(status, problem, ct, 409)
    assert problem["type"].endswith("subscription-inactive")
    assert (await detail(ops, sub, delivery.id))["status"] == "sent"  # left alone
    # An unknown delivery of an inactive subscription is still a 404.
    status, problem, ct = await ops.call("POST", f"/{sub}/deliveries/{UNKNOWN_DELIVERY}/redeliver")
    assert_problem(status, problem, ct, 404)
    status, _, _ = await ops.call("PATCH", f"/{sub}", {"active": True})
    assert status == 200
    status, row, _ = await ops.call("POST", f"/{sub}/deliveries/{delivery.id}/redeliver")
    assert (status, row["status"]) == (202, "pending")

    broken = await sealed_elsewhere(ops, settings_for)
    (stuck,) = await seed(ops.store, broken, [event()])
    await failed(ops.store, stuck)
    status, problem, ct = await ops.call("POST", f"/{broken}/deliveries/{stuck.id}/redeliver")
    assert_problem(status, problem, ct, 409)
    assert "WEBHOOKS_ENCRYPTION_KEY" in problem["detail"]
    assert (await detail(ops, broken, stuck.id))["status"] == "failed"


# -- replay -----------------------------------------------------------------------------------


async def test_replay_queues_failed_then_also_missed_and_sent_and_is_idempotent(
    ops: Api,
) -> None:
    now = now_ms()
    # An event of the org from before the subscription existed: it never had it.
    before_it = event(occurred_at=now - 2 * HOUR)
    await ops.store.record_events([before_it], [], Lease(OWNER, 0))
    created = await create(ops)
    sub = created["id"]
    assert before_it.occurred_at < ms(created["createdAt"])
    d_sent, d_failed, d_open = await seed(ops.store, sub, [event() for _ in range(3)])
    (d_old_failure,) = await seed(ops.store, sub, [event(occurred_at=now - 3 * DAY)])
    await sent(ops.store, d_sent)
    await failed(ops.store, d_failed)
    await failed(ops.store, d_old_failure)
    # Never replayed into this subscription: an event it does not take, another org's event.
    await ops.store.record_events(
        [event(name="review.overridden"), event(org="org_b")], [], Lease(OWNER, 0)
    )
    assert (await row_of(ops, sub))["deliveryCount"] == 4
    window = {"since": iso(now - DAY)}

    status, result, _ = await ops.call("POST", f"/{sub}/replay", window)
    assert (status, result) == (
        202,
        {"count": 1, "withoutPayload": 0, "filtered": 0, "nextSince": None},
    )
    shown = await detail(ops, sub, d_failed.id)
    assert (shown["status"], shown["attemptCount"]) == ("pending", 1)
    assert (await detail(ops, sub, d_sent.id))["status"] == "sent"
    assert (await detail(ops, sub, d_old_failure.id))["status"] == "failed"  # before `since`
    status, result, _ = await ops.call("POST", f"/{sub}/replay", window)
    assert (status, result["count"]) == (202, 0)

    known = {d_sent.id, d_failed.id, d_open.id, d_old_failure.id}
    status, result, _ = await ops.call("POST", f"/{sub}/replay", {**window, "onlyFailed": False})
    assert (status, result) == (
        202,
        {"count": 2, "withoutPayload": 0, "filtered": 0, "nextSince": None},
    )
    rows = await log(ops, sub)
    new = [row for row in rows if row["id"] not in known]
    assert [(row["eventId"], row["status"], row["attemptCount"]) for row in new] == [
        (before_it.id, "pending", 0)
    ]
    assert new[0]["id"].startswith("whd_")
    assert (await detail(ops, sub, new[0]["id"]))["payload"] == orjson.loads(before_it.body)
    by_id = {row["id"]: row for row in rows}
    assert (by_id[d_sent.id]["status"], by_id[d_sent.id]["attemptCount"]) == ("pending", 1)
    assert by_id[d_open.id]["status"] == "pending"
    assert len(rows) == 5  # nothing for the other event type or the other org
    # The new delivery is counted; reopened ones are not counted twice.
    assert (await row_of(ops, sub))["deliveryCount"] == 5
    for body in (window, {**window, "onlyFailed": False}):
        status, result, _ = await ops.call("POST", f"/{sub}/replay", body)
        assert (status, result["count"]) == (202, 0)
    assert len(await log(ops, sub)) == 5
    jobs = await ops.store.claim_due(Claim("x", 10, 60_000, subscription_id=sub))
    assert {job.id for job in jobs} >= {d_sent.id, d_failed.id, new[0]["id"]}


async def test_replay_keeps_to_its_window_and_events(ops: Api) -> None:
    now = now_ms()
    sub = (await create(ops))["id"]
    early, middle, late = (event(occurred_at=now - h * HOUR) for h in (5, 3, 1))
    kyc = event(name="customer.kyc_updated", occurred_at=now - 3 * HOUR)
    deliveries = await seed(ops.store, sub, [early, middle, late, kyc])
    for delivery in deliveries:
        await failed(ops.store, delivery)
    d_early, d_middle, d_late, d_kyc = deliveries
    window = {"since": iso(now - 4 * HOUR), "until": iso(now - 2 * HOUR)}
    status, result, _ = await ops.call(
        "POST", f"/{sub}/replay", {**window, "events": ["verification.created"]}
    )
    assert (status, result["count"]) == (202, 1)
    statuses = {row["id"]: row["status"] for row in await log(ops, sub)}
    assert statuses == {
        d_early.id: "failed",
        d_middle.id: "pending",
        d_late.id: "failed",
        d_kyc.id: "failed",
    }
    # `until` is exclusive: a window ending at the event's time leaves it out.
    status, result, _ = await ops.call(
        "POST", f"/{sub}/replay", {"since": iso(now - 6 * HOUR), "until": iso(early.occurred_at)}
    )
    assert (status, result["count"]) == (202, 0)
    status, result, _ = await ops.call("POST", f"/{sub}/replay", window)
    assert (status, result["count"]) == (202, 1)  # the kyc one: every event of the subscription
    assert (await detail(ops, sub, d_kyc.id))["status"] == "pending"


async def test_replay_is_bounded_per_call_and_next_since_goes_on(
    ops: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "MAX_REPLAY", 2)
    now = now_ms()
    sub = (await create(ops))["id"]
    events = [event(occurred_at=now - HOUR + i * 1000) for i in range(5)]
    deliveries = await seed(ops.store, sub, events)
    for delivery in deliveries:
        await failed(ops.store, delivery)
    body: dict[str, Any] = {"since": iso(now - 2 * HOUR)}
    results = []
    for _ in range(4):
        status, result, _ = await ops.call("POST", f"/{sub}/replay", body)
        assert status == 202, result
        results.append(result)
        if result["nextSince"] is not None:
            body = {"since": result["nextSince"]}
    assert results == [
        {"count": 2, "withoutPayload": 0, "filtered": 0, "nextSince": iso(events[2].occurred_at)},
        {"count": 2, "withoutPayload": 0, "filtered": 0, "nextSince": iso(events[4].occurred_at)},
        {"count": 1, "withoutPayload": 0, "filtered": 0, "nextSince": None},
        {"count": 0, "withoutPayload": 0, "filtered": 0, "nextSince": None},
    ]
    assert {row["status"] for row in await log(ops, sub)} == {"pending"}


async def test_replay_with_only_failed_false_is_bounded_over_new_deliveries_too(
    ops: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "MAX_REPLAY", 2)
    now = now_ms()
    events = [event(occurred_at=now - HOUR + i * 1000) for i in range(3)]
    await ops.store.record_events(events, [], Lease(OWNER, 0))
    sub = (await create(ops))["id"]
    body = {"since": iso(now - 2 * HOUR), "onlyFailed": False}
    status, result, _ = await ops.call("POST", f"/{sub}/replay", body)
    assert (status, result) == (
        202,
        {"count": 2, "withoutPayload": 0, "filtered": 0, "nextSince": iso(events[2].occurred_at)},
    )
    status, result, _ = await ops.call(
        "POST", f"/{sub}/replay", {**body, "since": result["nextSince"]}
    )
    assert (status, result) == (
        202,
        {"count": 1, "withoutPayload": 0, "filtered": 0, "nextSince": None},
    )
    assert sorted(row["eventId"] for row in await log(ops, sub)) == sorted(e.id for e in events)
    assert (await row_of(ops, sub))["deliveryCount"] == 3


async def test_bad_replays_are_problems(ops: Api) -> None:
    sub = (await create(ops))["id"]
    now = now_ms()
    hour_ago = iso(now - HOUR)
    for body, field in (
        ({"since": iso(now - 31 * DAY)}, "since"),
        ({"since": "1970-01-01T00:00:00Z"}, "since"),
        ({"since": hour_ago, "until": hour_ago}, "until"),
        ({"since": hour_ago, "until": iso(now - 2 * HOUR)}, "until"),
        ({"since": iso(now + HOUR)}, "until"),  # until defaults to now
        ({"since": hour_ago, "events": ["review.overridden"]}, "events"),
        ({"since": hour_ago, "events": ["verification.created", "review.overridden"]}, "events"),
        ({"since": hour_ago, "events": []}, "events"),
        ({"since": hour_ago, "events": ["verification.deleted"]}, "events[0]"),
        ({"since": hour_ago, "until": None}, "until"),
        ({"since": hour_ago, "events": None}, "events"),
        ({"since": hour_ago, "onlyFailed": "yes"}, "onlyFailed"),
        ({"since": hour_ago, "colour": "red"}, "colour"),
        ({"since": "an hour ago"}, "since"),
        ({"since": 1_700_000_000_000}, "since"),
        ({}, "since"),
    ):
        status, problem, ct = await ops.call("POST", f"/{sub}/replay", body)
        assert_problem(status, problem, ct, 422)
        assert field in problem_fields(problem), (body, problem)
    status, problem, ct = await ops.call(
        "POST", f"/{sub}/replay", raw=b"since=x", headers={"Content-Type": "text/plain"}
    )
    assert_problem(status, problem, ct, 415)
    status, problem, ct = await ops.call(
        "POST", f"/{sub}/replay", raw=b"{", headers={"Content-Type": "application/json"}
    )
    assert_problem(status, problem, ct, 400)
    # A deleted subscription cannot be replayed into.
    status, _, _ = await ops.call("DELETE", f"/{sub}")
    assert status == 204
    status, problem, ct = await ops.call("POST", f"/{sub}/replay", {"since": hour_ago})
    assert_problem(status, problem, ct, 404)


# -- secret rotation --------------------------------------------------------------------------


async def test_rotating_the_secret_keeps_the_old_one_for_the_overlap(ops: Api) -> None:
    created = await create(ops)
    sub, first = created["id"], created["secret"]

    before = now_ms()
    status, rotated, _ = await ops.call("POST", f"/{sub}/rotate-secret")  # no body: a day
    after = now_ms()
    assert status == 200, rotated
    assert set(rotated) == {"secret", "standardSecret", "publicKey", "previousSecretExpiresAt"}
    second = rotated["secret"]
    assert second.startswith("qe_whsec_")
    assert second != first
    expires = ms(rotated["previousSecretExpiresAt"])
    assert before + DAY <= expires <= after + DAY
    stored = await ops.store.get_subscription("org_a", sub)
    assert stored is not None
    assert stored.secret == second
    assert stored.previous_secret == first
    assert stored.signing_secrets(after) == [second, first]
    assert stored.signing_secrets(expires) == [second]
    row = await row_of(ops, sub)
    assert second not in orjson.dumps(row).decode()

    status, rotated, _ = await ops.call("POST", f"/{sub}/rotate-secret", {"overlapSeconds": 60})
    assert status == 200
    third = rotated["secret"]
    assert len({first, second, third}) == 3
    assert before + 60_000 <= ms(rotated["previousSecretExpiresAt"]) <= now_ms() + 60_000
    stored = await ops.store.get_subscription("org_a", sub)
    assert stored is not None
    assert stored.signing_secrets(now_ms()) == [third, second]  # the first is gone

    before = now_ms()
    status, rotated, _ = await ops.call("POST", f"/{sub}/rotate-secret", {"overlapSeconds": 0})
    assert status == 200
    fourth = rotated["secret"]
    assert before <= ms(rotated["previousSecretExpiresAt"]) <= now_ms()
    stored = await ops.store.get_subscription("org_a", sub)
    assert stored is not None
    assert stored.previous_secret is None
    assert stored.signing_secrets(now_ms()) == [fourth]


async def test_bad_rotations_are_problems(ops: Api) -> None:
    created = await create(ops)
    sub = created["id"]
    for body, field in (
        ({"overlapSeconds": -1}, "overlapSeconds"),
        ({"overlapSeconds": 7 * 86_400 + 1}, "overlapSeconds"),
        ({"overlapSeconds": "60"}, "overlapSeconds"),
        ({"overlapSeconds": 1.5}, "overlapSeconds"),
        ({"overlapSeconds": None}, "overlapSeconds"),
        ({"overlap": 60}, "overlap"),
    ):
        status, problem, ct = await ops.call("POST", f"/{sub}/rotate-secret", body)
        assert_problem(status, problem, ct, 422)
        assert field in problem_fields(problem), (body, problem)
    status, problem, ct = await ops.call("POST", f"/{sub}/rotate-secret", key=ops.other_key)
    assert_problem(status, problem, ct, 404)
    stored = await ops.store.get_subscription("org_a", sub)
    assert stored is not None
    assert (stored.secret, stored.previous_secret) == (created["secret"], None)
    status, rotated, _ = await ops.call(
        "POST", f"/{sub}/rotate-secret", {"overlapSeconds": 7 * 86_400}
    )
    assert status == 200
    assert rotated["secret"] != created["secret"]


# -- summaries, rate limits, headers, pausing ----------------------------------------------------


async def test_summary_fields_follow_recorded_attempts(ops: Api) -> None:
    sub = (await create(ops))["id"]
    row = await row_of(ops, sub)
    assert (row["successRate24h"], row["p95LatencyMs24h"], row["nextRetryAt"]) == (None,) * 3
    assert (row["consecutiveFailures"], row["pendingCount"], row["deliveryCount"]) == (0, 0, 0)

    ok, retrying, later, waiting, dead = await seed(ops.store, sub, [event() for _ in range(5)])
    now = now_ms()
    retry_at = now + 60_000
    await record(ops.store, outcome(ok, DeliveryStatus.SENT, at=now - 3000, duration=40))
    await record(
        ops.store,
        outcome(retrying, DeliveryStatus.RETRYING, at=now - 2000, duration=200, next_at=retry_at),
    )
    await record(
        ops.store,
        outcome(later, DeliveryStatus.RETRYING, at=now - 1500, duration=200, next_at=now + DAY),
    )
    await record(ops.store, outcome(dead, DeliveryStatus.FAILED, at=now - 1000, duration=1200))
    row = await row_of(ops, sub)
    assert row["deliveryCount"] == 5
    assert row["successRate24h"] == pytest.approx(1 / 4)
    # Buckets ≤50 ms: 1, ≤250 ms: 2, ≤1500 ms: 1. The 95th percentile's rank, 3.8, falls in
    # the last, 80 % of the way from 1000 to 1500.
    assert row["p95LatencyMs24h"] == 1400
    assert row["consecutiveFailures"] == 3
    assert row["pendingCount"] == 3  # two retrying, one waiting for its first attempt
    assert row["nextRetryAt"] == iso(retry_at)  # the earliest retry, not the first attempt's
    (listed,) = [r for r in (await ops.call("GET"))[1]["rows"] if r["id"] == sub]
    assert listed == row
    # A success ends the failure streak; attempts older than a day leave the 24 h figures.
    await ops.store.release([waiting.id], OWNER)
    (job,) = await ops.store.claim_due(Claim(OWNER, 10, 60_000, subscription_id=sub))
    assert job.id == waiting.id
    await record(ops.store, outcome(waiting, DeliveryStatus.SENT, at=now - 500, duration=5))
    (old,) = await seed(ops.store, sub, [event()])
    await record(ops.store, outcome(old, DeliveryStatus.FAILED, at=now - 2 * DAY, duration=5))
    row = await row_of(ops, sub)
    assert row["successRate24h"] == pytest.approx(2 / 5)
    assert row["consecutiveFailures"] == 1
    assert row["pendingCount"] == 2
    assert row["deliveryCount"] == 6


async def test_rate_limit_and_headers_are_stored_shown_and_cleared_by_null(ops: Api) -> None:
    headers = {"X-Tenant": "acme", "Authorization": "Bearer abc def", "X-Empty": ""}
    created = await create(ops, rateLimit=5, headers=headers)
    sub = created["id"]
    row = await row_of(ops, sub)
    # The sensitive one by its name only; its value is kept, and sent.
    ordinary = {"X-Tenant": "acme", "X-Empty": ""}
    assert (row["rateLimit"], row["headers"], row["sensitiveHeaders"]) == (
        5,
        ordinary,
        ["Authorization"],
    )
    stored = await ops.store.get_subscription("org_a", sub)
    assert stored is not None
    assert (stored.rate_limit, dict(stored.headers)) == (5, headers)
    # PATCH without them leaves them; with some merges them in by name; null clears them.
    status, row, _ = await ops.call("PATCH", f"/{sub}", {"installedBy": "ops@2"})
    assert (status, row["rateLimit"], row["headers"]) == (200, 5, ordinary)
    status, row, _ = await ops.call(
        "PATCH", f"/{sub}", {"rateLimit": 10_000, "headers": {"X-Other": "1"}}
    )
    assert (status, row["rateLimit"], row["headers"]) == (200, 10_000, {**ordinary, "X-Other": "1"})
    assert row["sensitiveHeaders"] == ["Authorization"]
    status, row, _ = await ops.call("PATCH", f"/{sub}", {"rateLimit": None})
    assert (status, row["rateLimit"], row["headers"]) == (200, None, {**ordinary, "X-Other": "1"})
    status, row, _ = await ops.call("PATCH", f"/{sub}", {"headers": None, "rateLimit": 1})
    cleared = (status, row["rateLimit"], row["headers"], row["sensitiveHeaders"])
    assert cleared == (200, 1, {}, [])
    status, row, _ = await ops.call("PATCH", f"/{sub}", {"headers": {"X-A": "b"}})
    assert (status, row["headers"]) == (200, {"X-A": "b"})
    status, row, _ = await ops.call("PATCH", f"/{sub}", {"headers": {}})
    assert (status, row["headers"]) == (200, {"X-A": "b"})  # an empty merge patch keeps all
    status, row, _ = await ops.call("PATCH", f"/{sub}", {"headers": {"x-a": None}})
    assert (status, row["headers"]) == (200, {})  # names ignore case
    stored = await ops.store.get_subscription("org_a", sub)
    assert stored is not None
    assert (stored.rate_limit, stored.headers) == (1, ())
    plain = await row_of(ops, (await create(ops))["id"])
    assert (plain["rateLimit"], plain["headers"]) == (None, {})
    # The limits themselves are allowed.
    most = {f"X-H{i}": "v" for i in range(20)}
    assert (await row_of(ops, (await create(ops, headers=most))["id"]))["headers"] == most
    exact = {"X-Big": "v" * (4096 - len("X-Big"))}
    assert (await row_of(ops, (await create(ops, headers=exact))["id"]))["headers"] == exact


BAD_HEADERS: list[dict[str, Any]] = [
    {"X-Identity-Foo": "x"},
    {"x-identity-delivery": "x"},
    {"X-Quantum-Signature": "v1=forged"},
    {"Content-Type": "text/plain"},
    {"content-length": "0"},
    {"Host": "evil.example.com"},
    {"User-Agent": "me"},
    {"X-Sibling-Service": "kyc"},
    {"Transfer-Encoding": "chunked"},
    {"Connection": "close"},
    {"Proxy-Authorization": "Basic x"},
    {"Bad Header": "x"},
    {"": "x"},
    {"X:Colon": "x"},
    {"X-Ünicode": "x"},
    {"X-" + "a" * 200: "x"},
    {"X-Split": "a\r\nX-Injected: yes"},
    {"X-Split": "a\nb"},
    {"X-Split": "a\rb"},
    {"X-Trailing": "a\n"},  # a `$` alone would take it
    {"X-Name\n": "a"},
    {"X-Nul": "a\x00b"},
    {"X-Lead": " padded"},
    {"X-Unicode-Value": "café"},
    {"X-Number": 5},
    {"X-Dup": "1", "x-dup": "2"},
    # Over the limits: by themselves, and for a PATCH with the one header kept.
    {f"X-H{i}": "v" for i in range(21)},
    {"X-Big": "v" * (4097 - len("X-Big"))},
]


async def test_bad_headers_and_rate_limits_are_422_on_create_and_patch(ops: Api) -> None:
    sub = (await create(ops, rateLimit=3, headers={"X-Keep": "1"}))["id"]
    cases: list[tuple[dict[str, Any], str]] = [
        *(({"headers": bad}, "headers") for bad in BAD_HEADERS),
        ({"headers": ["X-A: b"]}, "headers"),
        ({"headers": "X-A: b"}, "headers"),
        ({"rateLimit": 0}, "rateLimit"),
        ({"rateLimit": -1}, "rateLimit"),
        ({"rateLimit": 10_001}, "rateLimit"),
        ({"rateLimit": "5"}, "rateLimit"),
        ({"rateLimit": 1.5}, "rateLimit"),
        ({"rateLimit": True}, "rateLimit"),
        ({"rateLimit": 2**63 - 1}, "rateLimit"),
    ]
    for change, field in cases:
        status, body, ct = await ops.call("POST", body={**SEED_REQUEST, **change})
        assert_problem(status, body, ct, 422)
        assert any(f.startswith(field) for f in problem_fields(body)), (change, body)
        status, body, ct = await ops.call("PATCH", f"/{sub}", change)
        assert_problem(status, body, ct, 422)
        assert any(f.startswith(field) for f in problem_fields(body)), (change, body)
    # null removes a header in a PATCH (one it does not have: nothing to do), never in a POST.
    status, body, ct = await ops.call("POST", body={**SEED_REQUEST, "headers": {"X-Null": None}})
    assert_problem(status, body, ct, 422)
    assert "headers.X-Null" in problem_fields(body)
    # The merged result is over the limits although the patch alone is not: one header kept.
    for change in (
        {f"X-H{i}": "v" for i in range(20)},
        {"X-Big": "v" * (4096 - len("X-Big"))},
    ):
        status, body, ct = await ops.call("PATCH", f"/{sub}", {"headers": change})
        assert_problem(status, body, ct, 422)
        assert problem_fields(body) == {"headers"}, body
    # Past 64 bits (orjson reads it as a float): still a 422.
    raw = b'{"rateLimit": 100000000000000000000000000000}'
    for method, path in (("POST", ""), ("PATCH", f"/{sub}")):
        status, body, ct = await ops.call(
            method, path, raw=raw, headers={"Content-Type": "application/json"}
        )
        assert_problem(status, body, ct, 422)
        assert "rateLimit" in problem_fields(body)
    row = await row_of(ops, sub)
    assert (row["rateLimit"], row["headers"]) == (3, {"X-Keep": "1"})
    status, listed, _ = await ops.call("GET")
    assert [r["id"] for r in listed["rows"]] == [sub]  # no bad POST created anything


async def test_pausing_sets_disabled_at_and_reason_and_resuming_clears_them(ops: Api) -> None:
    sub = (await create(ops))["id"]
    row = await row_of(ops, sub)
    assert (row["disabledAt"], row["disabledReason"]) == (None, None)
    before = now_ms()
    status, row, _ = await ops.call("PATCH", f"/{sub}", {"active": False})
    assert status == 200
    assert row["active"] is False
    assert before <= ms(row["disabledAt"]) <= now_ms()
    assert row["disabledReason"] == PAUSED
    assert row["deactivatedReason"] == PAUSED
    assert await row_of(ops, sub) == row
    status, row, _ = await ops.call("PATCH", f"/{sub}", {"active": True})
    assert status == 200
    assert (row["active"], row["disabledAt"], row["disabledReason"]) == (True, None, None)
    assert row["deactivatedReason"] is None
    # Deactivated by the service: its reason, not the pause's, and PATCH false keeps it.
    assert await ops.store.deactivate_subscription(sub, "410 Gone") is True
    row = await row_of(ops, sub)
    assert (row["active"], row["disabledReason"]) == (False, "410 Gone")
    assert RFC3339_MS.match(row["disabledAt"])
    status, again, _ = await ops.call("PATCH", f"/{sub}", {"active": False})
    assert (status, again["disabledReason"], again["disabledAt"]) == (
        200,
        "410 Gone",
        row["disabledAt"],
    )
