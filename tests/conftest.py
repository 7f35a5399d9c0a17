"""Session-wide fixtures: where the real Kafka broker and PostgreSQL are, and fresh names per test;
and each test's tier marker.

`make test` starts both and exports their addresses (`WEBHOOKS_TEST_KAFKA`,
`WEBHOOKS_TEST_POSTGRES`); a developer can point the suite at an existing broker or database the
same way. An integration test whose service is not configured fails loudly rather than skipping:
a core path is never skipped silently.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr
from xdist.remote import Producer
from xdist.scheduler.protocol import Scheduling

from service.settings import Settings, load_settings
from service.store import Store, migrate, open_store
from tests.support.parallel import TogetherScheduling
from tests.support.postgres import scratch_database
from tools.receiver import Receiver, start_receiver

# -- tiers and workers -----------------------------------------------------------------------

TESTS = Path(__file__).resolve().parent
TIERS = {"unit", "integration", "chaos", "deploy"}
BROWSER = {"test_console.py"}
"""Files that drive Chromium: `browser` besides their folder's tier."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test with its tier, the folder it is in (`-m unit` selects the unit tier)."""
    for item in items:
        path = item.path.resolve()
        if not path.is_relative_to(TESTS):
            continue
        tier = path.relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(tier)
        if path.name in BROWSER:
            item.add_marker("browser")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> Scheduling | None:
    """Under `-n`: one test at a time to each worker, the fault tests (and the tests sharing a
    module's service) to one worker together (tests/support/parallel.py)."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    return TogetherScheduling(config, log)


def _from_make_test(name: str) -> str:
    """An address that `make test` (deploy/local/with-services.sh) exports."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `make test`")
    return value


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _from_make_test("WEBHOOKS_TEST_KAFKA")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _from_make_test("WEBHOOKS_TEST_POSTGRES")


CATALOG_TOPICS = ("verification.created", "customer.kyc_updated", "review.overridden")


def unique_name(request: pytest.FixtureRequest, prefix: str) -> str:
    """A name no other test (or earlier run) uses: prefix, the test's name, a random suffix."""
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:40].lower()
    return f"{prefix}.{stem}.{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def kafka_admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@pytest.fixture
async def topics(kafka_admin: AIOKafkaAdminClient) -> AsyncIterator[list[str]]:
    run = uuid.uuid4().hex[:8]
    names = [f"t{run}.identity.{event}" for event in CATALOG_TOPICS] + [f"t{run}.dlq"]
    await kafka_admin.create_topics([NewTopic(n, 3, 1) for n in names])
    try:
        yield names
    finally:
        await kafka_admin.delete_topics(names)


@pytest.fixture
async def topic(
    request: pytest.FixtureRequest, kafka_admin: AIOKafkaAdminClient
) -> AsyncIterator[str]:
    """A fresh three-partition topic, deleted after the test."""
    name = unique_name(request, "test")
    await kafka_admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    try:
        yield name
    finally:
        await kafka_admin.delete_topics([name])


# -- stores -----------------------------------------------------------------------------------

TEST_ENCRYPTION_KEY = "lYb3Qx0kVQ8m0mB2n4yXbVZ5hJ1e9Wq3cS7aT6uR8dE="

FAST_DELIVERY: dict[str, object] = {
    "retry_schedule": [0.3, 0.3, 0.3],
    "poll_interval": 0.1,
    "delivery_timeout": 2.0,
    "delivery_connect_timeout": 1.0,
    "lease": 3.0,
    "shutdown_grace": 1.0,
}
"""Settings overrides that make a running service's retries, timeouts and leases test-sized."""


@pytest.fixture(scope="session")
async def postgres_template(postgres_url: str) -> AsyncIterator[str]:
    """A database migrated once per session; each test gets a fresh copy of it."""
    name = f"webhooks_tmpl_{uuid.uuid4().hex[:8]}"
    async with scratch_database(postgres_url, name) as url:
        await migrate(url)
        yield name


@pytest.fixture
async def fresh_postgres_url(postgres_url: str, postgres_template: str) -> AsyncIterator[str]:
    """A new, migrated database of its own for one test, dropped after it."""
    name = f"webhooks_test_{uuid.uuid4().hex[:10]}"
    async with scratch_database(postgres_url, name, template=postgres_template) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind (SQLite is migrated when the store opens): the store
    contract and the API tests run against both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/webhooks.db"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@pytest.fixture
def settings_for(database_url: str) -> Settings:
    return load_settings(
        database_url=database_url,
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
        allow_private_targets=True,
    )


@pytest.fixture
async def store(settings_for: Settings) -> AsyncIterator[Store]:
    opened = await open_store(settings_for, run_migrations=not settings_for.is_postgres)
    try:
        yield opened
    finally:
        await opened.close()


# -- receivers --------------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """The one test receiver (tools/receiver.py), in-process on a free loopback port."""
    async for r in start_receiver():
        yield r
