"""The SSRF matrix, at registration (the API's 422) and at delivery (the attempt's error).

Every target below is refused twice: `POST /api/identity/webhooks` answers 422 naming the url,
and a subscription that holds it anyway (written to the store directly, as an old row or a
PATCH racing a DNS change would) gets a refused attempt with a readable reason and sends
nothing. Host names go through resolvers with fixed answers, so nothing leaves the machine; the
loopback targets carry the port of a live receiver, which must see no request at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.api.models import TestResult as ApiTestResult
from service.app import Roles, create_app
from service.appkeys import RESOLVE, STORE
from service.delivery.attempt import Sender
from service.delivery.dispatcher import Dispatcher
from service.domain import AttemptRecord
from service.egress import make_connector
from service.matching import SubscriptionIndex
from service.metrics import Metrics
from service.settings import Settings
from service.store import Store
from tests.support.dns import FakeResolver, fake_dns
from tools.receiver import Receiver

BASE = "/api/identity/webhooks"
EVENTS = ["verification.created"]
# host -> the address the refusal must name (a name's refusal also says what it resolved to)
MATRIX: dict[str, str] = {
    "127.0.0.1": "loopback address 127.0.0.1",
    "127.8.9.10": "loopback address 127.8.9.10",
    "10.1.2.3": "private address 10.1.2.3",
    "172.16.5.4": "private address 172.16.5.4",
    "192.168.1.1": "private address 192.168.1.1",
    "169.254.10.20": "link-local address 169.254.10.20",
    "169.254.169.254": "cloud metadata service",
    "[fd00:ec2::254]": "unique-local (private) address fd00:ec2::254",
    "100.64.1.2": "carrier-grade NAT address 100.64.1.2",
    "0.0.0.0": "unspecified address 0.0.0.0",
    "[::]": "unspecified address ::",
    "224.0.0.1": "multicast address 224.0.0.1",
    "[ff02::1]": "multicast address ff02::1",
    "255.255.255.255": "broadcast address 255.255.255.255",
    "[::1]": "loopback address ::1",
    "[fd12:3456::1]": "unique-local (private) address fd12:3456::1",
    "[fe80::1%25eth0]": "link-local address fe80::1",
    "[::ffff:127.0.0.1]": "IPv4-mapped IPv6 address ::ffff:7f00:1 embeds loopback",
    "[::ffff:a9fe:a9fe]": "embeds link-local address 169.254.169.254 (cloud metadata service)",
    "[::127.0.0.1]": "IPv4-compatible IPv6 address ::7f00:1 embeds loopback",
    "[64:ff9b::7f00:1]": "NAT64 address 64:ff9b::7f00:1 embeds loopback",
    "[64:ff9b::a9fe:a9fe]": "NAT64 address 64:ff9b::a9fe:a9fe embeds link-local",
    "[2002:7f00:1::]": "6to4 address 2002:7f00:1:: embeds loopback",
    "[2002:c0a8:101::]": "6to4 address 2002:c0a8:101:: embeds private address 192.168.1.1",
    "2130706433": "loopback address 127.0.0.1",
    "0177.0.0.1": "loopback address 127.0.0.1",
    "0x7f000001": "loopback address 127.0.0.1",
    "0x7f.0.0.1": "loopback address 127.0.0.1",
    "127.1": "loopback address 127.0.0.1",
    "10.1": "private address 10.0.0.1",
    "127.0.0.1.": "loopback address 127.0.0.1",
    "loopback.example.test": "loopback address 127.0.0.1",
    "loopback6.example.test": "loopback address ::1",
    "metadata.example.test": "link-local address 169.254.169.254",
    "mixed.example.test": "private address 10.0.0.5",
    "mixed6.example.test": "unique-local (private) address fd00:ec2::254",
    "localhost.": "loopback address 127.0.0.1",
}
DNS: dict[str, list[str]] = {
    "loopback.example.test": ["127.0.0.1"],
    "loopback6.example.test": ["::1"],
    "metadata.example.test": ["169.254.169.254"],
    "mixed.example.test": ["93.184.216.34", "10.0.0.5"],
    "mixed6.example.test": ["2606:4700::1111", "fd00:ec2::254"],
    "localhost.": ["127.0.0.1"],
    "localhost": ["127.0.0.1"],
}


@pytest.fixture
async def guarded(settings_for: Settings) -> Settings:
    return settings_for.model_copy(update={"allow_private_targets": False})


@dataclass
class Api:
    client: TestClient[Any, Any]
    key: str
    dns: dict[str, list[str]]  # what registration's resolver answers; a test may change it


@pytest.fixture
async def api(guarded: Settings) -> AsyncIterator[Api]:
    app = create_app(guarded, Roles(consumer=False))
    answers = dict(DNS)
    app[RESOLVE] = fake_dns(answers)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        _, key = await app[STORE].create_api_key("org_ssrf", None)
        yield Api(client, key, answers)
    finally:
        await client.close()


def _target(host: str, port: int) -> str:
    return f"http://{host}:{port}/ssrf"


async def _register(api: Api, url: str) -> tuple[int, Any]:
    async with api.client.post(
        BASE, json={"url": url, "events": EVENTS}, headers={"Authorization": f"Bearer {api.key}"}
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_registration_refuses_the_whole_matrix(api: Api) -> None:
    for host, reason in MATRIX.items():
        status, body = await _register(api, f"https://{host}/hook")
        assert status == 422, (host, body)
        (error,) = body["errors"]
        assert error["field"] == "url"
        # A literal in a non-standard spelling is named with its standard one; a zone id and
        # the localhost names are refused as such; everything else by the reason of the matrix.
        assert any(
            part in error["message"]
            for part in (reason, "non-standard way", "zone id", "local machine")
        ), (host, error)


@pytest.fixture
async def deliver(
    guarded: Settings, store: Store
) -> AsyncIterator[Callable[[str, FakeResolver], Awaitable[AttemptRecord]]]:
    """Sends `webhook.test` to a stored subscription through a real Dispatcher whose pooled
    session has the guarded connector over the given resolver; returns the recorded attempt."""
    index = SubscriptionIndex(store, 60)
    async with index.running():

        async def send(url: str, resolver: FakeResolver) -> AttemptRecord:
            subscription = await store.create_subscription("org_ssrf", url, EVENTS, None)
            await index.refresh()
            connector = make_connector(allow_private=False, limit=10, resolver=resolver)
            async with aiohttp.ClientSession(connector=connector) as session:
                sender = Sender(
                    session,
                    header_formats=guarded.signature_headers,
                    timeout=guarded.delivery_timeout,
                    connect_timeout=guarded.delivery_connect_timeout,
                    allow_private=False,
                )
                dispatcher = Dispatcher(
                    settings=guarded,
                    store=store,
                    index=index,
                    sender=sender,
                    metrics=Metrics(),
                    owner="ssrf-test",
                )
                async with dispatcher.running():
                    return await dispatcher.send_test(subscription)

        yield send


async def test_delivery_refuses_the_whole_matrix_with_a_readable_reason(
    deliver: Callable[[str, FakeResolver], Awaitable[AttemptRecord]], receiver: Receiver
) -> None:
    port = receiver.port
    for host, reason in MATRIX.items():
        result = await deliver(_target(host, port), FakeResolver(DNS))
        assert result.new_status == "retrying", (host, result)
        assert result.status_code is None
        assert result.error is not None
        assert "refused" in result.error, (host, result.error)
        assert reason in result.error, (host, result.error)
        if host in DNS:
            assert f"{host} resolves to {reason}" in result.error
    assert receiver.requests == []


async def test_dns_rebinding_public_at_registration_private_at_delivery_is_refused(
    api: Api,
    deliver: Callable[[str, FakeResolver], Awaitable[AttemptRecord]],
    receiver: Receiver,
) -> None:
    port = receiver.port
    api.dns["rebind.example.test"] = ["93.184.216.34"]
    status, body = await _register(api, f"https://rebind.example.test:{port}/ssrf")
    assert status == 201, body
    # The same name, asked again when the delivery connects, now answers loopback.
    result = await deliver(
        _target("rebind.example.test", port), FakeResolver({"rebind.example.test": ["127.0.0.1"]})
    )
    assert result.error is not None
    assert "rebind.example.test resolves to loopback address 127.0.0.1" in result.error
    assert receiver.requests == []


async def test_the_served_app_refuses_literal_and_local_targets_at_delivery(
    guarded: Settings, receiver: Receiver
) -> None:
    """The wiring of `create_app` itself (its own connector and the system resolver)."""
    port = receiver.port
    app = create_app(guarded, Roles(consumer=False))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        _, key = await app[STORE].create_api_key("org_ssrf", None)
        for host in ("127.0.0.1", "[::1]", "2130706433", "169.254.169.254", "localhost"):
            subscription = await app[STORE].create_subscription(
                "org_ssrf", _target(host, port), EVENTS, None
            )
            async with client.post(
                f"{BASE}/{subscription.id}/test", headers={"Authorization": f"Bearer {key}"}
            ) as response:
                assert response.status == 200
                result = ApiTestResult.model_validate(await response.json())
            assert result.error is not None
            assert "refused" in result.error, (host, result.error)
            assert "loopback" in result.error or "metadata" in result.error, result.error
    finally:
        await client.close()
    assert receiver.requests == []
