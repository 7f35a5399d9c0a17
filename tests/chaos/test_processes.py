"""Faults of the service's own processes, each ending in a ledger: SIGKILL at random points of a
stream (restarted each time), one of two PostgreSQL replicas killed, SIGTERM under load.

Bounded in `make test`; `make test-chaos` runs the full sizes (WEBHOOKS_CHAOS_FULL=1).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from service.settings import Settings
from tests.support.chaos import (
    ELSEWHERE,
    FULL,
    PATHS,
    Stream,
    dead_lettered,
    report,
    scale,
    service_env,
    subscribe,
    wait_balanced,
)
from tests.support.process import ServiceProcess, service_settings
from tools.receiver import Behaviour, Receiver

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900 if FULL else 240)]


@pytest.fixture
def sqlite_settings(tmp_path: Path, kafka_bootstrap: str) -> Settings:
    return service_settings(f"sqlite:///{tmp_path}/chaos.db", kafka_bootstrap)


async def test_sigkill_at_random_points_loses_nothing(
    sqlite_settings: Settings, topics: list[str], kafka_bootstrap: str, receiver: Receiver
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    count, rate, kills = scale(3_000, 20_000), float(scale(1_000, 2_000)), scale(1, 3)
    await subscribe(sqlite_settings, receiver)
    env = service_env(sqlite_settings, topics)
    service = await ServiceProcess(env).start()
    stream = Stream(kafka_bootstrap, topics[0], count, rate).start()
    faults: list[float] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await service.wait_ready()
        span = count / rate
        for at in sorted(rng.uniform(0.1 * span, 0.9 * span) for _ in range(kills)):
            await asyncio.sleep(max(0.0, started + at - loop.time()))
            await service.kill()
            faults.append(time.time())
            service = await ServiceProcess(env).start()
        await stream.done()
        ledger = await wait_balanced(
            receiver, stream, PATHS, timeout=scale(90, 300), fault_at=faults[-1]
        )
    finally:
        await service.stop()
    report("sigkill", ledger, kills=len(faults), events=stream.sent, seed=seed)
    assert stream.failed == 0
    assert ledger.balanced(), (ledger, seed)
    assert receiver.at(ELSEWHERE) == []
    assert await dead_lettered(kafka_bootstrap, topics[3]) == 0


async def test_one_of_two_postgres_replicas_killed_the_other_takes_over(
    fresh_postgres_url: str, topics: list[str], kafka_bootstrap: str, receiver: Receiver
) -> None:
    settings = service_settings(fresh_postgres_url, kafka_bootstrap)
    await subscribe(settings, receiver, run_migrations=False)
    env = service_env(settings, topics)
    replicas = [await ServiceProcess(env).start() for _ in range(2)]
    count, rate = scale(2_000, 10_000), float(scale(500, 1_000))
    stream: Stream | None = None
    try:
        for replica in replicas:
            await replica.wait_ready()
        stream = Stream(kafka_bootstrap, topics[0], count, rate).start()
        await asyncio.sleep(count / rate / 2)
        await replicas[0].kill()
        fault_at = time.time()
        await stream.done()
        # The group notices the dead member after its session timeout (10 s), then the
        # survivor takes its partitions; its deliveries come back when their leases run out.
        ledger = await wait_balanced(
            receiver, stream, PATHS, timeout=scale(90, 240), fault_at=fault_at
        )
    finally:
        for replica in replicas:
            await replica.stop()
    assert stream is not None
    report("replica-sigkill", ledger, events=stream.sent)
    assert ledger.balanced(), ledger
    # A delivery sent twice was sent again only after the kill (by the survivor, once the
    # dead replica's lease ran out): two live replicas never sent the same delivery.
    first_seen: dict[str, float] = {}
    for r in receiver.requests:
        if r.delivery in first_seen:
            assert r.at >= fault_at, f"{r.delivery} sent twice before the kill"
        else:
            first_seen[r.delivery] = r.at


async def test_sigterm_under_load_drains_and_a_restart_finishes(
    sqlite_settings: Settings, topics: list[str], kafka_bootstrap: str, receiver: Receiver
) -> None:
    await subscribe(sqlite_settings, receiver)
    # Slow answers keep deliveries in flight and queued when SIGTERM comes.
    for path in PATHS:
        receiver.set(path, Behaviour(status=200, delay=0.05))
    env = service_env(sqlite_settings, topics)
    service = await ServiceProcess(env).start()
    count, rate = scale(1_500, 5_000), float(scale(500, 1_000))
    stream = Stream(kafka_bootstrap, topics[0], count, rate).start()
    try:
        await service.wait_ready()
        await asyncio.sleep(count / rate / 2)
        stopping = time.monotonic()
        code = await service.stop()
        stopped_in = time.monotonic() - stopping
        assert code == 0
        assert any('"dispatch.drained"' in line for line in service.logs)
        fault_at = time.time()
        service = await ServiceProcess(env).start()
        await stream.done()
        ledger = await wait_balanced(
            receiver, stream, PATHS, timeout=scale(90, 240), fault_at=fault_at
        )
    finally:
        await service.stop()
    report("sigterm", ledger, events=stream.sent, stopped_in_s=round(stopped_in, 2))
    assert ledger.balanced(), ledger
    # WEBHOOKS_SHUTDOWN_GRACE is 2 s here: the drain ends within it and a few seconds.
    assert stopped_in < 2 + 8
