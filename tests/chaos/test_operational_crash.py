"""A real crash between a change and its announcement: the service process SIGKILLed while the
`changed` event a PATCH committed is on its way to the org's other subscription (the receiver
holds the request), then restarted, then restarted again.

The event and its delivery are written in the PATCH's transaction
(docs/decisions/0015-operational-events-and-audit.md), so the restart finds the delivery
unfinished and sends it again under the same delivery id; once answered, nothing sends it
anew."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from service.settings import Settings
from service.store import open_store
from tests.support.chaos import service_env
from tests.support.process import ServiceProcess, service_settings
from tools.receiver import Behaviour, Receiver

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

ORG = "org_ops_crash"
SETTLE = 1.0  # seconds to wait for what must not come


@pytest.fixture
def sqlite_settings(tmp_path: Path, kafka_bootstrap: str) -> Settings:
    return service_settings(f"sqlite:///{tmp_path}/crash.db", kafka_bootstrap)


async def test_sigkill_while_a_changed_event_is_in_flight_delivers_it_once_per_id(
    sqlite_settings: Settings, topics: list[str], receiver: Receiver
) -> None:
    store = await open_store(sqlite_settings)
    try:
        # The target first: the watcher's own creation is announced to nobody.
        target = await store.create_subscription(
            ORG, receiver.url("ops-target"), ("verification.created",), None
        )
        watcher = await store.create_subscription(
            ORG, receiver.url("ops-watch"), ("webhook.subscription.changed",), None
        )
        _, key = await store.create_api_key(ORG, "deploy-bot")
    finally:
        await store.close()
    receiver.set("ops-watch", Behaviour(hang=60))
    env = service_env(sqlite_settings, topics)
    moved = receiver.url("ops-moved")

    service = await ServiceProcess(env).start()
    try:
        await service.wait_ready()
        url = f"http://127.0.0.1:{service.port}/api/identity/webhooks/{target.id}"
        async with (
            aiohttp.ClientSession() as session,
            session.patch(
                url, json={"url": moved}, headers={"Authorization": f"Bearer {key}"}
            ) as answer,
        ):
            assert answer.status == 200, await answer.text()
        # Committed with the PATCH, claimed and sent: the receiver holds it unanswered.
        await receiver.wait_for(lambda: bool(receiver.at("ops-watch")), 20, "the held request")
        await service.kill()
        receiver.set("ops-watch", Behaviour(status=204))

        after_restarts = []
        for _ in range(2):
            service = await ServiceProcess(env).start()
            await service.wait_ready()
            await receiver.wait_for(
                lambda: any(r.status == 204 for r in receiver.at("ops-watch")),
                20,
                "the event after the restart",
            )
            await asyncio.sleep(SETTLE)
            await service.stop()
            after_restarts.append(len(receiver.at("ops-watch")))
    finally:
        await service.kill()

    got = receiver.at("ops-watch")
    assert [r.status for r in got] == [0, 204], got  # held by the crash, then answered
    assert len({r.delivery for r in got}) == 1  # the same delivery, not a second one
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert got[0].headers["webhook-id"] == got[0].delivery
    assert len({r.event_id for r in got}) == 1
    assert after_restarts[0] == after_restarts[1]  # the second restart sends nothing
    envelope = orjson.loads(got[-1].body)
    assert envelope["event"] == "webhook.subscription.changed"
    assert envelope["data"]["subscriptionId"] == target.id
    assert envelope["data"]["action"] == "updated"
    assert envelope["data"]["actor"]["name"] == "deploy-bot"
    assert envelope["data"]["changes"]["url"] == {"old": target.url, "new": moved}
    assert receiver.at("ops-target") == []
    assert watcher.id != target.id
