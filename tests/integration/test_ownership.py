"""An embedded (SQLite) store has one serving process: a second `serve` on the same file is
refused with a clear message while the admin commands keep working beside it, and a restarted
`serve` takes back at once whatever a killed one held (no waiting for its leases)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from service import ids
from service.clock import now_ms
from service.domain import IncomingEvent, NewDelivery
from service.settings import load_settings
from service.store import Lease, open_store
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.process import ServiceProcess
from tools.receiver import Receiver


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        "WEBHOOKS_DATABASE_URL": f"sqlite:///{tmp_path}/webhooks.db",
        "WEBHOOKS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
        "WEBHOOKS_POLL_INTERVAL": "100ms",
    }


async def test_a_second_serve_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    first = ServiceProcess(env, args=["--no-consumer"])
    await first.start()
    try:
        await first.wait_ready()
        second = ServiceProcess(env, args=["--no-consumer"])
        await second.start()
        assert await second.wait(timeout=60) == 1
        refusal = "".join(second.logs)
        assert "already served by another identity-webhooks serve" in refusal
        assert first.process is not None
        assert f"pid {first.process.pid}" in refusal
        # The admin commands work beside the owner.
        admin = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "service", "api-key", "create", "--org", "org_x"),
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(admin.communicate(), 60)
        assert admin.returncode == 0, err.decode()
        assert out.decode().strip().splitlines()[-1].startswith("qe_key_")
    finally:
        assert await first.stop() == 0


async def test_a_restarted_serve_takes_back_a_killed_ones_leases_at_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    env = env_for(tmp_path)
    settings = load_settings(
        database_url=env["WEBHOOKS_DATABASE_URL"],
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    store = await open_store(settings)
    try:
        sub = await store.create_subscription(
            "org_k", receiver.url("ok"), ("verification.created",), None
        )
        event = IncomingEvent(
            ids.new_id(ids.EVENT), "org_k", "verification.created", now_ms(), b"{}", None, None
        )
        delivery = NewDelivery(ids.new_id(ids.DELIVERY), event.id, sub.id, event.event, "org_k")
        # What a process killed mid-delivery leaves: a delivery leased to it for minutes.
        await store.record_events([event], [delivery], Lease("killed:1234", 300_000))
    finally:
        await store.close()
    service = ServiceProcess(env, args=["--no-consumer"])
    await service.start()
    try:
        await receiver.wait_for(lambda: bool(receiver.at("ok")), timeout=15, what="the delivery")
        assert receiver.at("ok")[0].delivery == delivery.id
        assert any('"store.leases_taken_back"' in line for line in service.logs)
    finally:
        assert await service.stop() == 0
