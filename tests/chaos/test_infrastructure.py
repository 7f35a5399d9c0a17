"""Faults of what the service stands on, each ending in a ledger: PostgreSQL stopped mid-stream
(ingest pauses and commits nothing unrecorded, then resumes) and the Kafka broker stopped and
restarted mid-stream. Each test runs its own private instance (deploy/local/*.sh with a state
folder and ports of its own), so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.settings import Settings
from tests.conftest import CATALOG_TOPICS
from tests.support import chaos
from tests.support.process import ServiceProcess, free_port, service_settings
from tools.receiver import Receiver

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900 if chaos.FULL else 240)]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Private:
    """One private instance of deploy/local/<script>.sh: started, stopped, started again."""

    script: str
    env: dict[str, str]

    def run(self, action: str) -> str:
        done = subprocess.run(
            [str(ROOT / "deploy" / "local" / self.script), action],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@contextlib.contextmanager
def private(script: str, name: str, ports: Sequence[str], state_variable: str) -> Iterator[Private]:
    """A private instance of deploy/local/<script> in var/<name>-…, on free ports; stopped and
    removed afterwards."""
    state = ROOT / "var" / f"{name}-{uuid.uuid4().hex[:8]}"
    instance = Private(
        script, {state_variable: str(state), **{port: str(free_port()) for port in ports}}
    )
    instance.run("start")
    try:
        yield instance
    finally:
        instance.run("stop")
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[Private]:
    with private("postgres.sh", "chaos-pg", ["PG_PORT"], "PG_STATE") as pg:
        yield pg


@pytest.fixture
def private_kafka() -> Iterator[Private]:
    ports = ["KAFKA_PORT", "KAFKA_CONTROLLER_PORT"]
    with private("kafka.sh", "chaos-kafka", ports, "KAFKA_STATE") as kafka:
        yield kafka


@pytest.fixture
async def private_topics(private_kafka: Private) -> tuple[str, list[str]]:
    bootstrap = f"127.0.0.1:{private_kafka.env['KAFKA_PORT']}"
    names = [f"identity.{event}" for event in CATALOG_TOPICS] + ["dlq"]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 3, 1) for n in names])
    finally:
        await admin.close()
    return bootstrap, names


async def run_through_fault(
    settings: Settings,
    topics: list[str],
    receiver: Receiver,
    fault: Private,
    *,
    name: str,
    outage_s: float,
) -> None:
    """A stream through the service; halfway, `fault` is stopped for `outage_s` and started
    again; the ledger must balance."""
    await chaos.subscribe(settings, receiver)
    service = await ServiceProcess(chaos.service_env(settings, topics)).start()
    count, rate = chaos.scale(2_000, 10_000), float(chaos.scale(400, 500))
    stream: chaos.Stream | None = None
    try:
        await service.wait_ready()
        stream = chaos.Stream(settings.kafka_bootstrap_servers, topics[0], count, rate).start()
        await asyncio.sleep(count / rate / 2)
        fault.run("stop")
        await asyncio.sleep(outage_s)
        fault.run("start")
        back_at = time.time()
        await stream.done()
        ledger = await chaos.wait_balanced(
            receiver, stream, chaos.PATHS, timeout=chaos.scale(120, 300), fault_at=back_at
        )
    finally:
        await service.stop()
    assert stream is not None
    chaos.report(name, ledger, events=stream.sent, outage_s=outage_s)
    logs = ROOT / "var" / "chaos" / f"{name}.log"
    logs.parent.mkdir(parents=True, exist_ok=True)
    logs.write_text("".join(service.logs))  # the service's own account, for a failure's reader
    assert stream.failed == 0
    assert ledger.balanced(), (ledger, f"the service's log: {logs}")
    assert await chaos.dead_lettered(settings.kafka_bootstrap_servers, topics[3]) == 0
    return


async def test_postgres_stopped_mid_stream_loses_nothing(
    private_postgres: Private, topics: list[str], kafka_bootstrap: str, receiver: Receiver
) -> None:
    settings = service_settings(private_postgres.run("url"), kafka_bootstrap)
    outage = float(chaos.scale(5, 20))
    await run_through_fault(
        settings, topics, receiver, private_postgres, name="postgres-stopped", outage_s=outage
    )


async def test_kafka_restarted_mid_stream_loses_nothing(
    private_kafka: Private,
    private_topics: tuple[str, list[str]],
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    bootstrap, topics = private_topics
    settings = service_settings(f"sqlite:///{tmp_path}/chaos.db", bootstrap)
    outage = float(chaos.scale(3, 10))
    await run_through_fault(
        settings, topics, receiver, private_kafka, name="kafka-restarted", outage_s=outage
    )
