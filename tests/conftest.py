"""Session-wide fixtures: where the real Kafka broker and PostgreSQL are, and fresh names per test.

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

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    address = os.environ.get("WEBHOOKS_TEST_KAFKA")
    if not address:
        pytest.fail("WEBHOOKS_TEST_KAFKA is not set: run the suite with `make test`")
    return address


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("WEBHOOKS_TEST_POSTGRES")
    if not url:
        pytest.fail("WEBHOOKS_TEST_POSTGRES is not set: run the suite with `make test`")
    return url


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
