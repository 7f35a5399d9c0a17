"""Content filters on both stores, through the API, Kafka, the dispatcher and a receiver.

The property: random events of every type go through Kafka to subscriptions with random filters
(tests/support/filters.py draws both); each subscription receives exactly the events the
reference evaluator says its filter matches, the store holds a delivery row for those and for no
other, and `webhooks_events_filtered` counts the refused pairs. Besides: hostile filters refused
with 422 naming the place, in bounded time; `POST …/filter-test`; a PATCH applies to the next
event; `webhook.test` ignores the filter; a replay honours the filter as it stands."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from service.api.catalog import event_types
from service.appkeys import METRICS
from service.events import CATALOG
from service.filters import MAX_DEPTH, MAX_IN
from service.samples import sample_event
from tests.support.filters import FILTERS, events, reference_matches
from tests.support.live import BASE, ORG, LiveApp, send_test

pytestmark = pytest.mark.integration

LOW_SCORES: dict[str, Any] = {
    "data": {"status": {"$in": ["rejected", "requires_review"]}, "score": {"$lt": 60}}
}


def _filtered_total(live: LiveApp) -> float:
    metric = live.app[METRICS].events_filtered
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def _produce(live: LiveApp, batch: Sequence[dict[str, Any]]) -> None:
    topics = {
        event: t for t in live.settings.kafka_topics for event in CATALOG if t.endswith(event)
    }
    sent = [
        await live.producer.send(
            topics[e["event"]], orjson.dumps(e), key=e["data"]["customerId"].encode()
        )
        for e in batch
    ]
    await asyncio.gather(*sent)


async def _rows(live: LiveApp, key: str, subscription_id: str) -> set[str]:
    """The event ids of the subscription's delivery rows (one page holds them all here)."""
    status, page = await live.call("GET", f"/{subscription_id}/deliveries?limit=100", key=key)
    assert status == 200, page
    assert page["nextCursor"] is None
    return {row["eventId"] for row in page["rows"]}


@settings(
    max_examples=3,
    deadline=None,
    database=None,
    # No shrinking: each try is a round trip through Kafka; a failure reports its case as is.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@seed(20261207)
@given(data=st.data())
async def test_each_subscription_gets_exactly_what_its_filter_matches(
    live: LiveApp, data: st.DataObject
) -> None:
    org = f"org_f{uuid.uuid4().hex[:8]}"
    _, key = await live.store.create_api_key(org, "filters")
    filters = data.draw(st.lists(FILTERS, min_size=4, max_size=8), label="filters")
    batch = data.draw(st.lists(events(org), min_size=20, max_size=40), label="events")
    run = uuid.uuid4().hex[:6]
    paths = [f"filters-{run}-{i}" for i in range(len(filters))]
    ids = []
    for path, document in zip(paths, filters, strict=True):
        status, created = await live.call(
            "POST",
            body={"url": live.receiver.url(path), "events": list(CATALOG), "filter": document},
            key=key,
        )
        assert status == 201, (document, created)
        ids.append(created["id"])
    everything = f"filters-{run}-all"  # no filter: every event, and the sign that all went by
    status, created = await live.call(
        "POST", body={"url": live.receiver.url(everything), "events": list(CATALOG)}, key=key
    )
    assert status == 201
    before = _filtered_total(live)

    await _produce(live, batch)
    all_ids = {e["id"] for e in batch}
    await live.receiver.wait_for(
        lambda: {r.event_id for r in live.receiver.at(everything)} >= all_ids,
        what="every event at the subscription without a filter",
    )
    expected = {
        path: {e["id"] for e in batch if reference_matches(document, e)}
        for path, document in zip(paths, filters, strict=True)
    }
    await live.receiver.wait_for(
        lambda: all(
            {r.event_id for r in live.receiver.at(path)} >= expected[path] for path in paths
        ),
        what="the filtered deliveries",
    )
    for path, subscription_id, document in zip(paths, ids, filters, strict=True):
        received = [r.event_id for r in live.receiver.at(path)]
        assert sorted(received) == sorted(expected[path]), document
        # Refused events made no delivery row at all.
        assert await _rows(live, key, subscription_id) == expected[path], document
    refused = sum(len(batch) - len(expected[path]) for path in paths)
    assert _filtered_total(live) - before == refused


async def test_a_filter_is_shown_changed_by_patch_at_once_and_ignored_by_test(
    live: LiveApp,
) -> None:
    path = f"kyc-{uuid.uuid4().hex[:6]}"
    created = await live.subscribe(path, filter=LOW_SCORES)
    sid = created["id"]
    status, row = await live.call("GET", f"/{sid}")
    assert (status, row["filter"]) == (200, LOW_SCORES)

    # The test event is sent whatever the filter says.
    tested = await send_test(live, sid, path)
    assert orjson.loads(tested.body)["event"] == "webhook.test"

    now = datetime.now(UTC)

    def verdict(status: str, score: float | None) -> dict[str, Any]:
        event = sample_event("verification.created", ORG, now)
        event["data"].update(status=status, score=score)
        return event

    wanted, refused = verdict("rejected", 41), verdict("verified", 41)
    await _produce(live, [refused, wanted])
    await live.receiver.wait_for(
        lambda: any(r.event_id == wanted["id"] for r in live.receiver.at(path)), what="wanted"
    )
    assert [r.event_id for r in live.receiver.at(path)][1:] == [wanted["id"]]

    # A PATCH applies to the next event; null takes the filter away.
    status, row = await live.call("PATCH", f"/{sid}", {"filter": {"data": {"method": "face"}}})
    assert (status, row["filter"]) == (200, {"data": {"method": "face"}})
    ktp = verdict("rejected", 10)
    face = verdict("verified", 99)
    face["data"]["method"] = "face"
    await _produce(live, [ktp, face])
    await live.receiver.wait_for(
        lambda: any(r.event_id == face["id"] for r in live.receiver.at(path)), what="face"
    )
    status, row = await live.call("PATCH", f"/{sid}", {"filter": None})
    assert (status, row["filter"]) == (200, None)
    last = verdict("verified", 99)
    await _produce(live, [last])
    await live.receiver.wait_for(
        lambda: any(r.event_id == last["id"] for r in live.receiver.at(path)), what="last"
    )
    got = [r.event_id for r in live.receiver.at(path)][1:]
    assert got == [wanted["id"], face["id"], last["id"]]
    assert ktp["id"] not in await _rows(live, live.key, sid)

    # A replay of the window honours the filter as it stands: only events it matches again.
    async with asyncio.timeout(10):
        while True:  # every delivery recorded as sent: what a replay takes again
            _, page = await live.call("GET", f"/{sid}/deliveries?event=verification.created")
            if {row["status"] for row in page["rows"]} == {"sent"}:
                break
            await asyncio.sleep(0.05)
    status, _ = await live.call("PATCH", f"/{sid}", {"filter": {"data": {"score": {"$gte": 50}}}})
    assert status == 200
    since = (now - timedelta(minutes=1)).isoformat()
    status, replayed = await live.call(
        "POST", f"/{sid}/replay", {"since": since, "onlyFailed": False}
    )
    assert status == 202, replayed
    # face and last (99) again, wanted (41) refused; the events no subscription took were
    # never stored.
    assert (replayed["count"], replayed["filtered"]) == (2, 1)


def _deep(levels: int) -> bytes:
    """A filter `levels` objects deep under data, as JSON text (deeper than orjson writes)."""
    return b'{"data":' + b'{"a":' * levels + b'{"x":1}' + b"}" * levels + b"}"


HOSTILE: list[tuple[Any, str]] = [
    (_deep(MAX_DEPTH), "filter.data" + ".a" * (MAX_DEPTH - 1)),
    (_deep(1000), "filter.data" + ".a" * (MAX_DEPTH - 1)),
    (
        {"data": {"customerId": {"$in": [f"cus_{i}" for i in range(5000)]}}},
        "filter.data.customerId.$in",
    ),
    ({"data": {"score": {"$lt": 2**63}}}, "filter.data.score.$lt"),
    ({"data": {"score": {"$lt": 1e300}}}, "filter.data.score.$lt"),
    ({"data": {"score": {"$lt": "sixty"}}}, "filter.data.score.$lt"),
    ({"data": {"score": {"$gte": [60]}}}, "filter.data.score.$gte"),
    ({"data": {"status": {"$regex": ".*"}}}, "filter.data.status.$regex"),
    ({"$where": "sleep(10)"}, "filter.$where"),
    ({"status": "rejected"}, "filter.status"),
    ({"$or": [{"data": {f"f{i}": i}} for i in range(2000)]}, "filter.$or[63].data.f63"),
    ("rejected", "filter"),
]


async def _post(live: LiveApp, path: str, body: bytes) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {live.key}", "Content-Type": "application/json"}
    async with live.client.post(BASE + path, data=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_hostile_filters_are_refused_with_422_naming_the_place(live: LiveApp) -> None:
    url = orjson.dumps(live.receiver.url("hostile"))
    for document, field in HOSTILE:
        text = document if isinstance(document, bytes) else orjson.dumps(document)
        for path, body in (
            ("", b'{"url":' + url + b',"events":["verification.created"],"filter":' + text + b"}"),
            ("/filter-test", b'{"event":{},"filter":' + text + b"}"),
        ):
            started = time.perf_counter()
            status, problem = await _post(live, path, body)
            assert time.perf_counter() - started < 1.0, field
            assert status == 422, problem
            assert problem["errors"][0]["field"] == field, problem
    status, page = await live.call("GET")
    assert (status, page["rows"]) == (200, [])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_filter_test_says_which_clause_refused_each_catalog_example(live: LiveApp) -> None:
    examples: dict[str, Any] = {row["name"]: row["example"] for row in event_types()}
    verification = examples["verification.created"]  # status verified, score 87, ktp_capture
    status, verdict = await live.call(
        "POST", "/filter-test", {"filter": LOW_SCORES, "event": verification}
    )
    assert status == 200
    assert verdict == {
        "matches": False,
        "refusedBy": "data.status.$in",
        "reason": "the value is not one of the listed values",
    }
    ktp = {"data": {"method": "ktp_capture"}}
    status, verdict = await live.call(
        "POST", "/filter-test", {"filter": ktp, "event": verification}
    )
    assert (status, verdict) == (200, {"matches": True, "refusedBy": None, "reason": None})
    status, verdict = await live.call(
        "POST", "/filter-test", {"filter": ktp, "event": examples["customer.kyc_updated"]}
    )
    assert (status, verdict["refusedBy"], verdict["reason"]) == (
        200,
        "data.method",
        "the field is absent",
    )
    status, _ = await live.call("GET", "/filter-test")
    assert status == 405
    assert len(LOW_SCORES["data"]["status"]["$in"]) < MAX_IN
