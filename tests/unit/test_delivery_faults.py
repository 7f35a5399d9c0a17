"""Delivery under faults, through the real dispatcher on an embedded SQLite store, an
in-process receiver and no Kafka: a starved connection pool, a 2xx whose body stalls, a drain
while the store is away, and `/test` while the store stalls.

Each test runs on an event loop whose clock skips its waits (tests/support/virtual_time.py): the
pauses, timeouts and grace periods below take virtual seconds and real milliseconds. Leases are
the exception: the database's clock times them, in real seconds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from service import ids
from service.app import Roles, create_app
from service.appkeys import DISPATCHER, INDEX, METRICS, STORE
from service.delivery.attempt import ResultClass
from service.domain import (
    AttemptRecord,
    DeliveryJob,
    IncomingEvent,
    NewDelivery,
    Subscription,
)
from service.events import format_time
from service.settings import Settings, load_settings
from service.store import Claim, Lease, Store, StoreUnavailable, open_store
from tests.conftest import FAST_DELIVERY, TEST_ENCRYPTION_KEY
from tests.support.sender import loopback_sender
from tests.support.virtual_time import in_virtual_time
from tools.receiver import Behaviour, Receiver

EVENT = "verification.created"
T = TypeVar("T")


def settings_at(tmp_path: Path, **overrides: Any) -> Settings:
    defaults: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path}/webhooks.db",
        "encryption_key": SecretStr(TEST_ENCRYPTION_KEY),
        "allow_private_targets": True,
        **FAST_DELIVERY,
    }
    return load_settings(**{**defaults, **overrides})


class Service:
    """The dispatcher's half of the service (no API, no consumer) and a receiver."""

    def __init__(self, app: web.Application, runner: web.AppRunner, receiver: Receiver) -> None:
        self.app = app
        self.runner = runner
        self.receiver = receiver

    @property
    def store(self) -> Store:
        return self.app[STORE]

    async def subscribe(self, path: str) -> Subscription:
        subscription = await self.store.create_subscription(
            "org_a", self.receiver.url(path), [EVENT], None
        )
        await self.app[INDEX].refresh(force=True)
        return subscription

    async def deliver(self, subscriptions: Sequence[Subscription], count: int = 1) -> list[str]:
        """What ingest does for `count` events: record them and a delivery per subscription
        (leased to this process), then hand the deliveries to their lanes."""
        dispatcher = self.app[DISPATCHER]
        now = datetime.now(UTC)
        events, deliveries, jobs = [], [], []
        for _ in range(count):
            event_id = ids.new_id(ids.EVENT)
            envelope = {
                "id": event_id,
                "event": EVENT,
                "occurredAt": format_time(now),
                "orgId": "org_a",
                "data": {},
            }
            event = IncomingEvent(
                event_id,
                "org_a",
                EVENT,
                int(now.timestamp() * 1000),
                orjson.dumps(envelope),
                None,
                None,
            )
            events.append(event)
            for subscription in subscriptions:
                delivery = NewDelivery(
                    ids.new_id(ids.DELIVERY), event_id, subscription.id, EVENT, "org_a"
                )
                deliveries.append(delivery)
                jobs.append(DeliveryJob.first(delivery, event))
        await self.store.record_events(
            events, deliveries, Lease(dispatcher.owner, dispatcher.lease_ms)
        )
        dispatcher.submit(jobs)
        return [d.id for d in deliveries]

    async def arrived(self, path: str, count: int) -> None:
        await self.receiver.wait_for(
            lambda: len(self.receiver.at(path)) >= count, timeout=10, what=f"{count} at {path}"
        )

    def attempts(self, result: ResultClass) -> float:
        value = self.app[METRICS].registry.get_sample_value(
            "webhooks_attempts_total", {"result": result.value}
        )
        return value or 0.0


@contextlib.asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[Service]:
    # The receiver notes arrivals by the loop's clock, the one the test's pauses run on.
    async with Receiver(clock=asyncio.get_running_loop().time).serving() as receiver:
        app = create_app(settings, Roles(api=False, consumer=False))
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            yield Service(app, runner, receiver)
        finally:
            await runner.cleanup()


async def within(seconds: float, work: Awaitable[T]) -> T:
    """Awaits `work`, failing the test (TimeoutError) if it takes longer than `seconds`."""
    async with asyncio.timeout(seconds):
        return await work


# -- hole 3: the shared pool ------------------------------------------------------------------


@in_virtual_time
async def test_slow_lanes_saturating_the_pool_do_not_starve_a_healthy_lane(
    tmp_path: Path,
) -> None:
    """Six lanes of four requests that each take 3 s want 24 connections of a pool of 8; a
    healthy lane beside them still gets its deliveries through at once, and none of its
    attempts is recorded as a timeout (waiting for a connection is not the endpoint's time)."""
    settings = settings_at(tmp_path, max_connections=8, lane_concurrency=4, delivery_timeout=4.0)
    async with service(settings) as s:
        slow = [await s.subscribe(f"slow{n}") for n in range(6)]
        for n in range(6):
            s.receiver.set(f"slow{n}", Behaviour(status=200, delay=3.0))
        healthy = await s.subscribe("ok")
        await s.deliver(slow, count=4)
        await asyncio.sleep(0.5)  # the slow ones hold the pool
        for n in range(1, 6):
            sent = asyncio.get_running_loop().time()
            await s.deliver([healthy])
            await s.arrived("ok", n)
            assert s.receiver.at("ok")[-1].at - sent < 1.5
        await s.receiver.wait_for(
            lambda: sum(s.receiver.ok[f"slow{n}"] for n in range(6)) == 24,
            timeout=20,
            what="every slow delivery",
        )
        assert s.attempts(ResultClass.TIMEOUT) == 0
        assert len({r.delivery for r in s.receiver.requests}) == len(s.receiver.requests)
        # The slow endpoints together never held more than the pool.
        in_flight = sum(s.receiver.max_in_flight[f"slow{n}"] for n in range(6))
        assert in_flight <= settings.max_connections


# -- hole 4: a 2xx whose body is slow ---------------------------------------------------------


@contextlib.asynccontextmanager
async def stalling_endpoint(status: int) -> AsyncIterator[str]:
    """Answers `status` with its headers and the first bytes of a 100-byte body, then stalls."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=status)
        response.content_length = 100
        await response.prepare(request)
        await response.write(b"accepted")
        await asyncio.sleep(30)
        return response

    server = web.Server(handle, access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/hook"
    finally:
        listener.close()
        await server.shutdown(0.1)


def a_job() -> tuple[DeliveryJob, Subscription]:
    job = DeliveryJob("whd_1", "whk_1", "evt_1", EVENT, b"{}", None, 0, 0)
    subscription = Subscription(
        "whk_1", "org_a", "", (EVENT,), None, True, None, 0, 0, None, secret="qe_whsec_x"
    )
    return job, subscription


@pytest.mark.parametrize(
    ("status", "result"), [(200, ResultClass.OK), (503, ResultClass.SERVER_ERROR)]
)
@in_virtual_time
async def test_the_status_line_decides_and_a_stalled_body_is_cut(
    status: int, result: ResultClass
) -> None:
    """SPEC: success is a 2xx within the timeout. The status line came in time, so a body that
    then stalls is cut (noted in the excerpt) and the answer stands: no timeout, no retry of a
    delivery the endpoint accepted."""
    job, subscription = a_job()
    async with stalling_endpoint(status) as url, aiohttp.ClientSession() as session:
        sender = loopback_sender(session, timeout=1.0, connect_timeout=0.5)
        exchange = await within(10, sender.send(job, replace(subscription, url=url)))
    assert exchange.result is result
    assert exchange.status == status
    assert exchange.excerpt is not None
    assert exchange.excerpt.startswith("accepted")
    assert "cut" in exchange.excerpt


@pytest.mark.parametrize(
    ("body", "excerpt"),
    [
        (b"", ""),
        (b"ok", "ok"),
        (b"\x00no\x07", "\ufffdno\ufffd"),  # control characters are never stored
        ("é".encode() * 2000, "é" * 512),  # the first KiB: 512 two-byte characters
        (b"a" * 1023 + "é".encode(), "a" * 1023 + "\ufffd"),  # a character cut at the KiB
        (b"x" * (200 * 1024), "x" * 1024),  # past the 64 KiB read
    ],
    ids=["empty", "short", "control", "two-byte", "cut-character", "200KiB"],
)
async def test_the_excerpt_is_the_answers_first_kib_printable(body: bytes, excerpt: str) -> None:
    """An answer, short or long, whole with its status line or not: its first KiB, decoded
    with replacement and without control characters, is what the attempt log keeps; the next
    attempt on the pool goes out as well."""

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(status=200, body=body)

    server = web.Server(handle, access_log=None)
    listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/hook"
    job, subscription = a_job()
    try:
        async with aiohttp.ClientSession() as session:
            sender = loopback_sender(session, timeout=5.0, connect_timeout=5.0)
            for _ in range(2):
                exchange = await within(10, sender.send(job, replace(subscription, url=url)))
                assert exchange.result is ResultClass.OK
                assert exchange.excerpt == excerpt
    finally:
        listener.close()
        await server.shutdown(0.1)


# -- hole 5: a drain while the store is away --------------------------------------------------


async def raising(*_: object) -> Any:
    raise StoreUnavailable("the database is away")


async def stalling(*_: object) -> Any:
    await asyncio.Event().wait()


@pytest.mark.parametrize("outage", [raising, stalling], ids=["raises", "stalls"])
@in_virtual_time
async def test_a_drain_during_a_store_outage_ends_in_time_and_the_unrecorded_keep_their_leases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outage: Callable[..., Awaitable[Any]]
) -> None:
    """SIGTERM while every write of outcomes fails (or hangs): the drain still ends within
    WEBHOOKS_SHUTDOWN_GRACE plus a few seconds, and the deliveries whose outcome was never
    written keep their leases, so that they are attempted again once those expire."""
    # A lease outlasts the drain (virtual seconds, real milliseconds) and then runs out on the
    # database's clock: a real second.
    settings = settings_at(tmp_path, shutdown_grace=1.0, lease=1.0)
    async with Receiver().serving() as receiver:
        app = create_app(settings, Roles(api=False, consumer=False))
        runner = web.AppRunner(app)
        await runner.setup()
        s = Service(app, runner, receiver)
        subscription = await s.subscribe("ok")
        monkeypatch.setattr(s.store, "record_attempts", outage)
        sent = await s.deliver([subscription], count=3)
        await receiver.wait_for(lambda: len(receiver.at("ok")) == 3, what="the attempts")
        await asyncio.sleep(0.5)  # the recorder keeps trying
        await within(settings.shutdown_grace + 5, runner.cleanup())
    store = await open_store(settings)
    try:
        assert await store.claim_due(Claim("another", 10, 3000)) == []  # still leased
        await asyncio.to_thread(time.sleep, settings.lease)  # real time, the database's clock
        again = await store.claim_due(Claim("another", 10, 3000))
        assert sorted(job.id for job in again) == sorted(sent)
        assert all(job.attempts == 0 for job in again)  # nothing was recorded
    finally:
        await store.close()


# -- hole 9: /test while the store stalls -----------------------------------------------------


@pytest.mark.parametrize("stalled", ["record_events", "record_attempts"])
@in_virtual_time
async def test_a_test_send_answers_in_time_while_the_store_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stalled: str
) -> None:
    """`POST …/test` answers within the delivery timeout plus a few seconds whatever the store
    does: a delivery it cannot record is not sent (StoreUnavailable, the API's 503); an attempt
    whose outcome it cannot record is answered with status `pending`."""
    settings = settings_at(tmp_path, delivery_timeout=2.0)
    async with service(settings) as s:
        subscription = await s.subscribe("ok")
        monkeypatch.setattr(s.store, stalled, stalling)
        answer: AttemptRecord | StoreUnavailable
        try:
            answer = await within(
                settings.delivery_timeout + 5, s.app[DISPATCHER].send_test(subscription)
            )
        except StoreUnavailable as exc:
            answer = exc
        if stalled == "record_events":
            assert isinstance(answer, StoreUnavailable)
            assert s.receiver.at("ok") == []
            return
        assert isinstance(answer, AttemptRecord)
        assert (answer.new_status, answer.status_code, answer.error) == ("pending", 200, None)
        (request,) = s.receiver.at("ok")
        assert request.delivery == answer.delivery_id
