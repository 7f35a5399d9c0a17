"""The delivery pipeline end to end: real Kafka in, real HTTP out, on both stores."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from service.appkeys import DISPATCHER
from service.domain import DeliveryJob, Subscription
from service.events import format_time
from service.samples import seed_examples
from service.signing import verify_signature
from service.store import Store, open_store
from tests.conftest import CATALOG_TOPICS
from tests.support.pipeline import PipelineFactory
from tests.support.store import seal_elsewhere


def _now() -> str:
    return format_time(datetime.now(UTC))


def secret_of(subscription: Subscription) -> str:
    assert subscription.secret is not None
    return subscription.secret


async def test_seed_examples_arrive_signed_with_every_header(
    pipeline_factory: PipelineFactory,
) -> None:
    p = await pipeline_factory()
    subscription = await p.subscribe("org_seed", "ok", CATALOG_TOPICS)
    examples = seed_examples("org_seed", datetime.now(UTC))
    for example in examples:
        await p.produce(example, headers=[("x-sibling-service", b"orchestration")])
    await p.receiver.wait_for(lambda: len(p.receiver.at("ok")) == 3, what="3 deliveries")
    by_event = {r.headers["X-Identity-Event"]: r for r in p.receiver.at("ok")}
    assert set(by_event) == set(CATALOG_TOPICS)
    for example in examples:
        got = by_event[example["event"]]
        assert got.body == orjson.dumps(example)
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["User-Agent"].startswith("QuantumElixir-Identity-Webhooks/")
        assert got.headers["X-Identity-Delivery"].startswith("whd_")
        assert got.headers["X-Sibling-Service"] == "orchestration"
        verify_signature(secret_of(subscription), got.headers["X-Identity-Signature"], got.body)
        verify_signature(secret_of(subscription), got.headers["X-Quantum-Signature"], got.body)
    assert len({r.headers["X-Identity-Delivery"] for r in p.receiver.at("ok")}) == 3


async def test_fan_out_reaches_exactly_the_matching_subscriptions(
    pipeline_factory: PipelineFactory,
) -> None:
    p = await pipeline_factory()
    a_all = await p.subscribe("org_a", "a-all", CATALOG_TOPICS)
    a_kyc = await p.subscribe("org_a", "a-kyc", ("customer.kyc_updated",))
    b_ver = await p.subscribe("org_b", "b-ver", ("verification.created",))
    b_rev = await p.subscribe("org_b", "b-rev", ("review.overridden",))
    now = datetime.now(UTC)
    for org in ("org_a", "org_b", "org_c"):
        for example in seed_examples(org, now):
            await p.produce(example)
    expected = {"a-all": 3, "a-kyc": 1, "b-ver": 1, "b-rev": 1}
    await p.receiver.wait_for(
        lambda: all(len(p.receiver.at(path)) >= n for path, n in expected.items()),
        what="fan-out",
    )
    await asyncio.sleep(0.5)  # nothing else may trickle in
    got = {path: len(p.receiver.at(path)) for path in expected}
    assert got == expected
    assert len(p.receiver.requests) == sum(expected.values())
    for path, subscription in (("a-kyc", a_kyc), ("b-ver", b_ver), ("b-rev", b_rev)):
        (request,) = p.receiver.at(path)
        assert orjson.loads(request.body)["orgId"] == subscription.org_id
        assert request.headers["X-Identity-Event"] in subscription.events
    assert {orjson.loads(r.body)["orgId"] for r in p.receiver.at("a-all")} == {a_all.org_id}


async def test_events_older_than_the_subscription_are_not_delivered(
    pipeline_factory: PipelineFactory,
) -> None:
    p = await pipeline_factory()
    await p.subscribe("org_a", "ok", CATALOG_TOPICS)
    old = seed_examples("org_a", datetime(2020, 1, 1, tzinfo=UTC))[0]
    new = seed_examples("org_a", datetime.now(UTC))[0]
    await p.produce(old)
    await p.produce(new)
    await p.receiver.wait_for(lambda: len(p.receiver.at("ok")) >= 1)
    await asyncio.sleep(0.5)
    (only,) = p.receiver.at("ok")
    assert orjson.loads(only.body)["id"] == new["id"]


async def test_a_subscription_made_through_another_replica_is_matched_by_the_next_event(
    pipeline_factory: PipelineFactory,
) -> None:
    # The index's own follow-up is an hour away: only the write's check can find the change.
    p = await pipeline_factory(index_refresh=3600.0)
    await p.subscribe("org_a", "first", CATALOG_TOPICS)
    await p.produce(seed_examples("org_a", datetime.now(UTC))[0])
    await p.receiver.wait_for(lambda: len(p.receiver.at("first")) == 1, what="the first")
    # Another replica (a store of its own: its own connections) makes a subscription.
    other = await open_store(p.settings)
    try:
        made = await other.create_subscription(
            "org_a", p.receiver.url("second"), CATALOG_TOPICS, "t"
        )
    finally:
        await other.close()
    event = seed_examples("org_a", datetime.fromtimestamp((made.created_at + 1) / 1000, UTC))[0]
    await p.produce(event)
    await p.receiver.wait_for(lambda: len(p.receiver.at("second")) == 1, what="the second")
    (got,) = p.receiver.at("second")
    assert orjson.loads(got.body)["id"] == event["id"]
    await p.receiver.wait_for(lambda: len(p.receiver.at("first")) == 2, what="both")


async def _delivery_rows(store: Store, subscription_id: str) -> tuple[int, str | None, int | None]:
    summary = (await store.subscription_summaries([subscription_id]))[subscription_id]
    last = summary.last_delivery
    return (
        summary.delivery_count,
        None if last is None else last.status.value,
        None if last is None else last.response_code,
    )


async def test_failures_retry_on_schedule_and_succeed(pipeline_factory: PipelineFactory) -> None:
    p = await pipeline_factory()
    subscription = await p.subscribe("org_a", "flaky", ("verification.created",))
    await p.produce(seed_examples("org_a", datetime.now(UTC))[0])
    await p.receiver.wait_for(lambda: len(p.receiver.at("flaky")) == 3, what="3 attempts")
    attempts = p.receiver.at("flaky")
    assert len({r.headers["X-Identity-Delivery"] for r in attempts}) == 1
    # Each attempt is signed afresh and still verifies.
    for attempt in attempts:
        verify_signature(
            secret_of(subscription), attempt.headers["X-Quantum-Signature"], attempt.body
        )
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.2 for gap in gaps), gaps  # 0.3 s ± 20%
    await _eventually(lambda: _delivery_rows(p.store, subscription.id), (1, "sent", 200))


async def _eventually(
    probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {expected!r}, still {got!r}")
        await asyncio.sleep(0.05)


async def test_failed_after_the_last_attempt(pipeline_factory: PipelineFactory) -> None:
    p = await pipeline_factory(retry_schedule=[0.1])
    subscription = await p.subscribe("org_a", "redirect", ("verification.created",))
    await p.produce(seed_examples("org_a", datetime.now(UTC))[0])
    # A 3xx is a failure: not followed, retried, and failed after the schedule's 2 attempts.
    await _eventually(lambda: _delivery_rows(p.store, subscription.id), (1, "failed", 302))
    assert len(p.receiver.at("redirect")) == 2


async def test_410_deactivates_the_subscription(pipeline_factory: PipelineFactory) -> None:
    p = await pipeline_factory()
    subscription = await p.subscribe("org_a", "gone", ("verification.created",))

    async def state() -> tuple[bool, str | None]:
        got = await p.store.get_subscription("org_a", subscription.id)
        assert got is not None
        return got.active, got.deactivated_reason

    await p.produce(seed_examples("org_a", datetime.now(UTC))[0])
    await _eventually(state, (False, "the endpoint answered 410 Gone"))
    assert len(p.receiver.at("gone")) == 1
    await p.produce(seed_examples("org_a", datetime.now(UTC))[0])
    await asyncio.sleep(0.8)
    assert len(p.receiver.at("gone")) == 1


async def test_429_retry_after_is_honoured(pipeline_factory: PipelineFactory) -> None:
    p = await pipeline_factory(retry_schedule=[0.2, 5.0])
    subscription = await p.subscribe("org_a", "slowdown", ("verification.created",))
    await p.produce(seed_examples("org_a", datetime.now(UTC))[0])
    await p.receiver.wait_for(lambda: len(p.receiver.at("slowdown")) == 2, what="the retry")
    first, second = p.receiver.at("slowdown")
    # Retry-After: 2 beats the schedule's 0.2 s (and stays under its 5 s cap).
    assert second.at - first.at >= 1.9
    await _eventually(lambda: _delivery_rows(p.store, subscription.id), (1, "sent", 204))


async def test_a_hanging_endpoint_delays_only_itself(
    pipeline_factory: PipelineFactory, kafka_admin: AIOKafkaAdminClient
) -> None:
    p = await pipeline_factory(delivery_timeout=30.0, lane_concurrency=2, lane_queue_size=5)
    await p.subscribe("org_a", "hang", ("verification.created",))
    await p.subscribe("org_a", "ok", ("verification.created",))
    n = 30
    for _ in range(n):
        await p.produce(seed_examples("org_a", datetime.now(UTC))[0])
    await p.receiver.wait_for(lambda: len(p.receiver.at("ok")) == n, what="healthy deliveries")
    # The hanging lane holds at most its concurrency in flight.
    assert len(p.receiver.at("hang")) <= 2
    # Offsets are committed although the hanging lane still holds its deliveries.
    topic = p.topic("verification.created")
    async with asyncio.timeout(30):
        while True:
            offsets = await kafka_admin.list_consumer_group_offsets(p.settings.kafka_group_id)
            if sum(m.offset for tp, m in offsets.items() if tp.topic == topic) == n:
                break
            await asyncio.sleep(0.1)


async def test_poison_records_are_dead_lettered_and_later_records_flow(
    pipeline_factory: PipelineFactory, kafka_bootstrap: str
) -> None:
    p = await pipeline_factory()
    await p.subscribe("org_a", "ok", ("verification.created",))
    topic = p.topic("verification.created")
    good = seed_examples("org_a", datetime.now(UTC))[0]
    poison: list[bytes | None] = [
        b"not json at all",
        b"[1, 2, 3]",
        orjson.dumps({**good, "occurredAt": "yesterday"}),
        orjson.dumps({k: v for k, v in good.items() if k != "orgId"}),
        orjson.dumps({**good, "data": {**good["data"], "score": "high"}}),
        b"{" * 10,
        b"x" * (p.settings.max_event_bytes + 1),
    ]
    for value in poison:
        await p.produce_raw(topic, value, key=b"cus_1")
    await p.produce_raw(topic, orjson.dumps(good), key=b"cus_1")
    await p.receiver.wait_for(lambda: len(p.receiver.at("ok")) == 1, what="the good record")
    assert orjson.loads(p.receiver.at("ok")[0].body)["id"] == good["id"]

    consumer = AIOKafkaConsumer(
        p.settings.kafka_dlq_topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        dead: list[Any] = []
        async with asyncio.timeout(20):
            while len(dead) < len(poison):
                batch = await consumer.getmany(timeout_ms=500)
                dead += [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    assert sorted(r.value or b"" for r in dead) == sorted(v or b"" for v in poison)
    reasons = set()
    for record in dead:
        headers = dict(record.headers)
        assert headers["x-dlq-source-topic"] == topic.encode()
        assert int(headers["x-dlq-source-partition"]) in range(3)
        assert int(headers["x-dlq-source-offset"]) >= 0
        assert record.key == b"cus_1"
        reasons.add(headers["x-dlq-reason"].decode())
    assert {"invalid_json", "not_an_object", "too_large"} <= {r.split(":")[0] for r in reasons}
    assert "invalid_field:occurredAt" in reasons
    assert "missing_field:orgId" in reasons


async def test_the_test_endpoint_sends_and_shows_in_the_summary(
    pipeline_factory: PipelineFactory,
) -> None:
    p = await pipeline_factory()
    subscription = await p.subscribe("org_a", "ok", ("verification.created",))
    result = await p.app[DISPATCHER].send_test(subscription)
    assert result.new_status == "sent"
    assert result.status_code == 200
    assert result.duration_ms >= 0
    (request,) = p.receiver.at("ok")
    body = orjson.loads(request.body)
    assert body["event"] == "webhook.test"
    assert body["data"] == {"source": "test"}
    assert request.headers["X-Identity-Delivery"] == result.delivery_id
    assert await _delivery_rows(p.store, subscription.id) == (1, "sent", 200)


async def test_a_huge_response_is_cut_at_64_kib(pipeline_factory: PipelineFactory) -> None:
    p = await pipeline_factory()
    subscription = await p.subscribe("org_a", "huge", ("verification.created",))
    result = await p.app[DISPATCHER].send_test(subscription)
    assert result.new_status == "sent"


async def test_an_undecryptable_secret_parks_its_deliveries_and_delays_nobody(
    pipeline_factory: PipelineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await pipeline_factory()
    claimed: list[str] = []
    claim_due = p.store.claim_due

    async def noting_claims(*args: Any, **kwargs: Any) -> list[DeliveryJob]:
        jobs = await claim_due(*args, **kwargs)
        claimed.extend(job.subscription_id for job in jobs)
        return jobs

    monkeypatch.setattr(p.store, "claim_due", noting_claims)
    # Sealed with a key this service lacks (removed from WEBHOOKS_ENCRYPTION_KEY too early).
    broken = await p.store.create_subscription(
        "org_a", p.receiver.url("broken"), ("verification.created",), None
    )
    await seal_elsewhere(p.settings, broken.id)
    healthy = await p.subscribe("org_a", "ok", ("verification.created",))
    n = 5
    for _ in range(n):
        await p.produce(seed_examples("org_a", datetime.now(UTC))[0])
    await p.receiver.wait_for(lambda: len(p.receiver.at("ok")) == n, what="healthy deliveries")
    await asyncio.sleep(1.0)  # ten claim intervals
    assert p.receiver.at("broken") == []
    # Recorded (nothing lost), never attempted, never claimed again: they wait for the key.
    assert await _delivery_rows(p.store, broken.id) == (n, "pending", None)
    assert await _delivery_rows(p.store, healthy.id) == (n, "sent", 200)
    assert broken.id not in claimed
