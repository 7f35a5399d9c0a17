"""The fault suite: the whole service — real Kafka in, real HTTP out, each store —
against endpoints that misbehave, ending in a ledger of what arrived.

`-m "not chaos"` leaves it out; each test runs in well under a minute per store.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web

from service.appkeys import METRICS
from service.samples import seed_examples
from tests.support.pipeline import Pipeline, PipelineFactory
from tools.receiver import Behaviour, Received, Receiver

pytestmark = pytest.mark.chaos

VERIFICATION = "verification.created"
KYC = "customer.kyc_updated"


def metric(p: Pipeline, name: str, **labels: str) -> float:
    return p.app[METRICS].registry.get_sample_value(name, labels) or 0.0


def example(org: str, event: str) -> dict[str, object]:
    (found,) = [e for e in seed_examples(org, datetime.now(UTC)) if e["event"] == event]
    return found


async def test_sixty_slow_endpoints_do_not_delay_a_healthy_one(
    pipeline_factory: PipelineFactory,
) -> None:
    """Sixty endpoints that answer 200 after 8 s, ten events each at ten in flight per lane, want
    600 connections of the pool's 512; a healthy endpoint beside them still gets each of its
    deliveries within a second or two, exactly once, and nothing is recorded as a timeout."""
    p = await pipeline_factory(delivery_timeout=10.0)
    slow_paths = [f"slow{n}" for n in range(60)]
    for path in slow_paths:
        p.receiver.set(path, Behaviour(status=200, delay=8.0))
        await p.subscribe("org_a", path, (VERIFICATION,))
    await p.subscribe("org_a", "ok", (VERIFICATION, KYC))
    for _ in range(10):
        await p.produce(example("org_a", VERIFICATION))
    await p.receiver.wait_for(
        lambda: sum(p.receiver.max_in_flight.values()) >= 384, what="the slow ones in flight"
    )

    async def healthy_arrival(count: int) -> float:
        """When the healthy endpoint got its `count`th event of its own."""

        def own() -> list[Received]:
            return [r for r in p.receiver.at("ok") if r.headers["X-Identity-Event"] == KYC]

        await p.receiver.wait_for(lambda: len(own()) >= count, what="a healthy delivery")
        return own()[count - 1].at

    lateness = []
    for n in range(1, 11):
        produced = time.time()
        await p.produce(example("org_a", KYC))
        lateness.append(await healthy_arrival(n) - produced)
        await asyncio.sleep(0.2)
    print(f"healthy lateness: max {max(lateness):.3f} s, all {[round(x, 3) for x in lateness]}")
    assert max(lateness) < 2.5, lateness
    # The receiver notes a request as it comes in; the sender counts it once answered.
    await p.receiver.wait_for(
        lambda: metric(p, "webhooks_attempts_total", result="2xx") >= 620,
        timeout=40,
        what="every slow delivery answered",
    )
    per_pair = Counter((r.path, r.event_id) for r in p.receiver.requests)
    assert len(per_pair) == 600 + 20
    assert set(per_pair.values()) == {1}, "a delivery arrived twice"
    assert metric(p, "webhooks_attempts_total", result="timeout") == 0
    assert metric(p, "webhooks_attempts_total", result="2xx") == 620


# -- flapping endpoints -----------------------------------------------------------------------

MODES = ("500", "timeout", "reset", "200", "slow-body")
FAILING = frozenset({"500", "timeout", "reset"})


@dataclass
class Flapping(Receiver):
    """Paths named `flap…` answer each request by a mode drawn at random: 500, a 200 only after
    the sender gave up (a timeout), a connection reset, a 200, or a 200 whose body stalls after
    the headers. A delivery that failed `patience` times is answered 200 next, so that the
    schedule is never spent. Notes per delivery the modes it got, in order."""

    timeout: float = 1.0
    patience: int = 3
    rng: random.Random = field(default_factory=lambda: random.Random(20261201))
    modes: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        name = request.path[1:]
        if not name.startswith("flap"):
            return await super().handle(request)
        body = await request.read()
        delivery = request.headers.get("X-Identity-Delivery", "")
        failed = sum(m in FAILING for m in self.modes[delivery])
        mode = "200" if failed >= self.patience else self.rng.choice(MODES)
        self.modes[delivery].append(mode)
        status = {"500": 500, "reset": 0}.get(mode, 200)
        self._note(name, request.headers, body, time.time(), status)
        if mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never written: the connection is gone
        if mode == "timeout":
            await asyncio.sleep(self.timeout * 1.5)  # processed, but after the sender gave up
        if mode == "slow-body":
            response = web.StreamResponse(status=200)
            response.content_length = 100
            await response.prepare(request)
            await response.write(b"ok")
            with contextlib.suppress(ConnectionError):
                await asyncio.sleep(5)
            return response
        return web.Response(status=status)


async def test_flapping_endpoints_end_in_a_ledger_with_every_delivery_made(
    pipeline_factory: PipelineFactory,
) -> None:
    """Four endpoints flapping between 500, timeouts, resets, 200 and 200s with a stalled body,
    fifteen events each: every (event, subscription) is delivered, nothing is left open or
    failed, a 2xx whose body stalled is never retried, and the duplicates (200s the sender
    never saw, then retried) are counted."""
    flapping = Flapping()
    async with flapping.serving():
        p = await pipeline_factory(
            delivery_timeout=flapping.timeout,
            delivery_connect_timeout=0.5,
            retry_schedule=[0.2] * 6,
        )
        paths = [f"flap{n}" for n in range(4)]
        for path in paths:
            subscription = await p.store.create_subscription(
                "org_a", flapping.url(path), (VERIFICATION,), "t"
            )
            assert subscription.active
        await p.subscribe("org_a", "ok", (KYC,))  # refreshes the index for the four too
        produced = [example("org_a", VERIFICATION) for _ in range(15)]
        for envelope in produced:
            await p.produce(envelope)

        def accepted() -> set[tuple[str, str]]:
            """(path, event id) pairs answered 2xx while the sender waited."""
            pairs = {r.delivery: (r.path, r.event_id) for r in flapping.requests}
            return {
                pairs[delivery]
                for delivery, modes in flapping.modes.items()
                if modes[-1] in ("200", "slow-body")
            }

        wanted = {(path, str(e["id"])) for path in paths for e in produced}
        await flapping.wait_for(lambda: accepted() >= wanted, timeout=45, what="every delivery")

        async def settled() -> bool:
            return await p.store.pending_count() == 0

        async with asyncio.timeout(15):
            while not await settled():
                await asyncio.sleep(0.1)
        attempts = Counter(r.delivery for r in flapping.requests)
        processed = Counter(
            r.delivery for r in flapping.requests if r.status == 200
        )  # 200s, late ones included: what a receiver that does the work did
        duplicates = sum(n - 1 for n in processed.values() if n > 1)
        print(
            f"ledger: {len(wanted)} pairs delivered, {sum(attempts.values())} requests, "
            f"modes {Counter(m for ms in flapping.modes.values() for m in ms)}, "
            f"duplicates {duplicates}"
        )
        assert len(attempts) == len(wanted)  # one delivery id per (event, subscription)
        for modes in flapping.modes.values():
            # A 2xx ends the delivery, a slow body included; only what failed was repeated.
            assert all(m in FAILING for m in modes[:-1]), modes
            assert modes[-1] in ("200", "slow-body"), modes
        assert metric(p, "webhooks_deliveries_total", event=VERIFICATION, outcome="failed") == 0
        assert metric(p, "webhooks_deliveries_total", event=VERIFICATION, outcome="sent") == len(
            wanted
        )
