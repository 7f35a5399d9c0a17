"""Migration 0002 on a database that already holds 0001's data, on both stores: existing
subscriptions keep working with the new columns' defaults, and the hourly counters are filled
from the deliveries already there, so deliveryCount does not restart at 0."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service.settings import load_settings
from service.store import open_store
from service.store.migrate import (
    head_revision,
    migrate,
    newest_revision,
    recorded_revision,
    sqlalchemy_url,
)
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.commands import ROOT
from tests.support.postgres import scratch_database

HOUR = 3_600_000


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str
) -> AsyncIterator[str]:
    """A database with no schema at all (the shared fixtures' are migrated already)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/webhooks.db"
        return
    async with scratch_database(postgres_url, f"webhooks_mig_{uuid.uuid4().hex[:10]}") as url:
        yield url


async def test_0002_keeps_0001_data_and_counts_its_deliveries(empty_database: str) -> None:
    database_url = empty_database
    assert await migrate(database_url, "0001") == (None, "0001")
    # Secrets were Fernet tokens before the key ring's own format; they still open.
    legacy = Fernet(TEST_ENCRYPTION_KEY)
    base = 1_780_000_000_000 // HOUR * HOUR
    engine = create_async_engine(sqlalchemy_url(database_url))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO subscriptions (id, org_id, url, events, installed_by, secret_enc, "
                "active, created_at, updated_at) VALUES ('whk_01JD2Y8Q0S6M2X0YV1X4J5T7ZK', "
                "'org_a', 'https://a.example/h', '[\"verification.created\"]', NULL, :secret, "
                "true, :at, :at)"
            ),
            {"secret": legacy.encrypt(("qe_whsec_" + "ab" * 32).encode()).decode(), "at": base},
        )
        for n, (status, at) in enumerate(
            [("sent", base), ("failed", base + 10), ("sent", base + HOUR), ("cancelled", base)]
        ):
            await conn.execute(
                text(
                    "INSERT INTO deliveries (id, event_id, org_id, subscription_id, event, "
                    "status, attempts, next_attempt_at, created_at, updated_at) VALUES "
                    "(:id, :event_id, 'org_a', 'whk_01JD2Y8Q0S6M2X0YV1X4J5T7ZK', "
                    "'verification.created', :status, 1, :at, :at, :at)"
                ),
                {"id": f"whd_{n}", "event_id": f"evt_{n}", "status": status, "at": at},
            )
    await engine.dispose()

    assert await migrate(database_url) == ("0001", head_revision())

    settings = load_settings(
        database_url=database_url, encryption_key=SecretStr(TEST_ENCRYPTION_KEY)
    )
    store = await open_store(settings, run_migrations=False)
    try:
        sub = await store.get_subscription("org_a", "whk_01JD2Y8Q0S6M2X0YV1X4J5T7ZK")
        assert sub is not None
        assert sub.secret == "qe_whsec_" + "ab" * 32
        assert (sub.rate_limit, sub.headers, sub.consecutive_failures) == (None, (), 0)
        assert sub.signing_secrets(base) == [sub.secret]
        summary = (await store.subscription_summaries([sub.id]))[sub.id]
        assert summary.delivery_count == 3  # the cancelled one is not counted
        assert summary.last_delivery is not None
    finally:
        await store.close()


def test_the_newest_file_is_alembics_head() -> None:
    assert newest_revision() == head_revision()


_OPEN_AND_SAY = """
import asyncio, sys
from pydantic import SecretStr
from service.settings import load_settings
from service.store import open_store
async def main(url, key):
    store = await open_store(load_settings(database_url=url, encryption_key=SecretStr(key)))
    await store.close()
asyncio.run(main(sys.argv[1], sys.argv[2]))
print("alembic" in sys.modules, "sqlalchemy" in sys.modules)
"""


async def test_a_store_at_the_newest_revision_opens_without_alembic(empty_database: str) -> None:
    """Every start and every CLI command opens the store: when nothing is to migrate, the
    recorded revision is read with the store's own driver and Alembic is never imported. A
    schema behind is still migrated (and then Alembic is there)."""
    assert await migrate(empty_database, "0013") == (None, "0013")
    assert await recorded_revision(empty_database) == "0013"

    async def open_in_a_child() -> str:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _OPEN_AND_SAY,
            empty_database,
            TEST_ENCRYPTION_KEY,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == 0, err.decode()
        return out.decode().strip()

    assert await open_in_a_child() == "True True"
    assert await recorded_revision(empty_database) == head_revision()
    assert await open_in_a_child() == "False False"
