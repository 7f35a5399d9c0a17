"""Endpoint authentication against real servers on loopback, each started here: an OAuth token
server and a gateway that accepts only a current token; a TLS receiver that requires client
certificates of a private PKI made with `cryptography` (trusted through WEBHOOKS_TLS_CA_FILE).

The delivery tests share one service on SQLite (a module fixture: it is started once); the
store's side (sealed at rest, the secret kept on PATCH) runs on both stores.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.fernet import Fernet
from pydantic import SecretStr

from service.app import Roles, create_app
from service.appkeys import RESOLVE, STORE
from service.delivery.attempt import ResultClass, Sender
from service.delivery.tokens import TokenFailed, Tokens
from service.domain import DeliveryJob, MutualTls, OAuthClientCredentials, Subscription
from service.egress import make_connector
from service.endpointauth import KEEP_SECRET
from service.settings import Settings, load_settings
from service.signing import ALL_SCHEMES
from service.store import Store, SubscriptionChanges, open_store
from service.store.crypto import Keyring
from tests.conftest import CATALOG_TOPICS, TEST_ENCRYPTION_KEY
from tests.support.dns import FakeResolver, fake_dns
from tests.support.endpointauth import (
    GatedReceiver,
    Pki,
    TlsReceiver,
    TokenServer,
    serve,
    server_context,
    wait_until,
)
from tests.support.live import LiveApp, live_app
from tests.support.postgres import raw_database_bytes
from tests.support.raw import query, sqlite_files
from tools.receiver import start_receiver

pytestmark = pytest.mark.integration

LIFETIME = 2.0  # seconds a token lives
EARLY = LIFETIME / 10  # renewed this much before it ends (service/delivery/tokens.py)


@dataclass
class Service:
    live: LiveApp
    pki: Pki
    tls: TlsReceiver
    directory: Path

    async def subscribe(self, url: str, **fields: Any) -> dict[str, Any]:
        body = {"url": url, "events": ["verification.created"], **fields}
        status, created = await self.live.call("POST", body=body)
        assert status == 201, created
        assert isinstance(created, dict)
        return created

    async def test(self, subscription_id: str) -> dict[str, Any]:
        status, result = await self.live.call("POST", f"/{subscription_id}/test")
        assert status == 200, result
        assert isinstance(result, dict)
        return result

    async def delete(self, *subscription_ids: str) -> None:
        """Deliveries of later tests' events are not theirs."""
        for subscription_id in subscription_ids:
            status, _ = await self.live.call("DELETE", f"/{subscription_id}")
            assert status == 204


@pytest.fixture(scope="module")
async def service(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> AsyncIterator[Service]:
    directory = tmp_path_factory.mktemp("endpoint-auth")
    pki = Pki()
    ca_file = directory / "private-pki.pem"
    ca_file.write_text(pki.certificate)
    run = uuid.uuid4().hex[:8]
    topics = [f"a{run}.identity.{event}" for event in CATALOG_TOPICS] + [f"a{run}.dlq"]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, 3, 1) for name in topics])
    settings = load_settings(
        database_url=f"sqlite:///{directory}/webhooks.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
        allow_private_targets=True,
        tls_ca_file=str(ca_file),
    )
    tls = TlsReceiver(server_context(pki, directory, require_client=True))
    try:
        async with tls.running():
            async for receiver in start_receiver():
                async with live_app(settings, topics, kafka_bootstrap, receiver) as live:
                    yield Service(live, pki, tls, directory)
    finally:
        await admin.delete_topics(topics)
        await admin.close()


def oauth(tokens: TokenServer, **more: Any) -> dict[str, Any]:
    return {
        "type": "oauth2_client_credentials",
        "tokenUrl": tokens.url,
        "clientId": tokens.client_id,
        "clientSecret": tokens.client_secret,
        **more,
    }


def new_token_server(**fields: Any) -> TokenServer:
    return TokenServer(
        client_id="webhooks-" + uuid.uuid4().hex[:6],
        client_secret="cs-" + uuid.uuid4().hex,
        lifetime=LIFETIME,
        **fields,
    )


async def test_concurrent_deliveries_share_one_token_fetch_per_expiry(service: Service) -> None:
    """Waves of deliveries, ten at a time, for over two token lifetimes: the token server is
    asked once per expiry (a fetch 10% before the end), plus once after the gateway revokes
    every token (each attempt refused retries at once with the one new token), and every
    delivery arrives. Basic client authentication (the default)."""
    async with new_token_server().running() as tokens, GatedReceiver(tokens).running() as gate:
        created = await service.subscribe(gate.url(), auth=oauth(tokens))
        produced = 0
        started = time.monotonic()
        revoked_at = None
        while time.monotonic() - started < 2.5 * LIFETIME:
            if revoked_at is None and time.monotonic() - started > 1.2 * LIFETIME:
                tokens.revoke_all()
                revoked_at = time.monotonic()
            await service.live.produce(10)
            produced += 10
            await asyncio.sleep(0.4)
        await wait_until(lambda: len(gate.accepted) >= produced, f"{produced} deliveries")
        await service.delete(created["id"])

    assert len(set(gate.accepted)) == produced  # every one arrived, none twice
    assert gate.refused >= 1  # the revocation was felt
    fetches = tokens.fetches
    elapsed = fetches[-1] - fetches[0]
    # One fetch per expiry: fetches are a token's use apart, but the one after the revocation.
    gaps = [b - a for a, b in itertools.pairwise(fetches)]
    assert sum(gap < LIFETIME - EARLY - 0.15 for gap in gaps) <= 1, gaps
    assert len(fetches) <= 2 + elapsed / (LIFETIME - EARLY - 0.15), gaps
    assert len(fetches) >= 3, gaps  # renewed as the tokens ended, not only once
    assert all(form == {"grant_type": "client_credentials"} for form in tokens.forms)


async def test_a_failing_token_endpoint_is_an_attempt_failure_retried_then_delivered(
    service: Service,
) -> None:
    """The token server answers 500 first: the attempt fails as `token` with a clear error
    (in the log too), nothing reaches the endpoint, and the retry delivers. Client credentials
    in the form body."""
    tokens = new_token_server(answers=[500])
    async with tokens.running(), GatedReceiver(tokens).running() as gate:
        created = await service.subscribe(gate.url(), auth=oauth(tokens, clientAuth="body"))
        with structlog.testing.capture_logs() as logs:
            first = await service.test(created["id"])
            assert first["status"] == "retrying", first
            assert first["responseCode"] is None
            assert first["error"] == "token endpoint answered 500 (temporarily_unavailable)"
            assert gate.accepted == []
            assert gate.refused == 0
            await wait_until(lambda: first["deliveryId"] in gate.accepted, "the retry")
        path = f"/{created['id']}/deliveries/{first['deliveryId']}"
        async with asyncio.timeout(10):
            while (detail := (await service.live.call("GET", path))[1])["status"] != "sent":
                await asyncio.sleep(0.05)  # the outcome is written within the recorder's linger
        await service.delete(created["id"])
    assert [a["responseCode"] for a in sorted(detail["attempts"], key=lambda a: a["number"])] == [
        None,
        204,
    ]
    failed = [e for e in logs if e["event"] == "endpoint_auth.token_failed"]
    assert failed
    assert failed[0]["error"].startswith("token endpoint answered 500")
    assert failed[0]["subscription_id"] == created["id"]
    assert tokens.forms[-1]["client_secret"] == tokens.client_secret  # sent in the body
    assert len(tokens.fetches) == 2
    text = repr(logs)
    assert tokens.client_secret not in text
    assert not any(token in text for token in tokens.issued)


async def test_mtls_presents_the_certificate_to_its_endpoint_only(service: Service) -> None:
    """The TLS receiver requires a client certificate of the private PKI: the mTLS
    subscription's deliveries (a test and one from Kafka) arrive with it; another
    subscription to the same host, without one, is refused at the handshake; a subscription
    pinned to another CA does not trust the receiver."""
    client = service.pki.issue("webhooks.example-bank.test", days=10)
    with_cert = await service.subscribe(
        service.tls.url("mtls"),
        auth={"type": "mtls", "certificate": client.certificate, "privateKey": client.key},
    )
    pinned_here = await service.subscribe(
        service.tls.url("pinned"),
        auth={"type": "mtls", "certificate": client.certificate, "privateKey": client.key},
        caCertificate=service.pki.certificate,
    )
    without = await service.subscribe(service.tls.url("plain"))
    elsewhere = Pki("Another CA")
    pinned_elsewhere = await service.subscribe(
        service.tls.url("elsewhere"),
        auth={"type": "mtls", "certificate": client.certificate, "privateKey": client.key},
        caCertificate=elsewhere.certificate,
    )

    assert (await service.test(with_cert["id"]))["status"] == "sent"
    assert (await service.test(pinned_here["id"]))["status"] == "sent"
    refused = await service.test(without["id"])
    assert refused["status"] == "retrying", refused
    assert refused["responseCode"] is None, refused
    untrusted = await service.test(pinned_elsewhere["id"])
    assert untrusted["status"] == "retrying", untrusted
    assert "certificate verify failed" in (untrusted["error"] or ""), untrusted
    await service.live.produce(1)
    await wait_until(
        lambda: [p for p, _ in service.tls.got].count("mtls") >= 2, "the delivery from Kafka"
    )
    paths = {path for path, _ in service.tls.got}
    assert paths == {"mtls", "pinned"}, service.tls.got
    subjects = {subject for _, subject in service.tls.got}
    assert subjects == {"commonName=webhooks.example-bank.test,organizationName=Example Bank"}

    status, row = await service.live.call("GET", f"/{with_cert['id']}")
    assert status == 200
    assert row["auth"]["type"] == "mtls"
    assert row["auth"]["certificate"]["subject"] == client.subject
    assert "privateKey" not in row["auth"]
    # Ending within 30 days: readiness names it (without deciding), the gauge counts it.
    async with service.live.client.get("/readyz") as response:
        ready = await response.json()
    expiring = ready["clientCertificates"]
    assert expiring["expiringWithin30Days"] >= 3
    assert with_cert["id"] in {s["id"] for s in expiring["subscriptions"]}
    async with service.live.client.get("/metrics") as response:
        metrics = await response.text()
    (line,) = [
        m for m in metrics.splitlines() if m.startswith("webhooks_client_certificates_expiring ")
    ]
    assert float(line.split()[1]) >= 3
    await service.delete(with_cert["id"], pinned_here["id"], without["id"], pinned_elsewhere["id"])


async def test_no_credential_in_the_store_files_a_log_line_or_an_answer(service: Service) -> None:
    tokens = new_token_server()
    client = service.pki.issue("secret-keeper.example-bank.test")
    key_body = "".join(client.key.splitlines()[1:-1])
    async with tokens.running(), GatedReceiver(tokens).running() as gate:
        with structlog.testing.capture_logs() as logs:
            oauth_sub = await service.subscribe(gate.url(), auth=oauth(tokens, scope="hooks"))
            mtls_sub = await service.subscribe(
                service.tls.url("kept"),
                auth={"type": "mtls", "certificate": client.certificate, "privateKey": client.key},
            )
            assert (await service.test(oauth_sub["id"]))["status"] == "sent"
            assert (await service.test(mtls_sub["id"]))["status"] == "sent"
            # A PATCH that leaves the client secret out keeps it.
            status, patched = await service.live.call(
                "PATCH",
                f"/{oauth_sub['id']}",
                {"auth": {**oauth(tokens, scope="hooks:write"), "clientSecret": None}},
            )
            assert status == 422, patched  # null is not "left out"
            changed = oauth(tokens, scope="hooks:write")
            del changed["clientSecret"]
            status, patched = await service.live.call(
                "PATCH", f"/{oauth_sub['id']}", {"auth": changed}
            )
            assert status == 200, patched
            assert patched["auth"]["scope"] == "hooks:write"
            assert (await service.test(oauth_sub["id"]))["status"] == "sent"
        answers = [orjson.dumps(oauth_sub), orjson.dumps(mtls_sub), orjson.dumps(patched)]
        for sid in (oauth_sub["id"], mtls_sub["id"]):
            answers.append(orjson.dumps(await service.live.call("GET", f"/{sid}")))
        answers.append(orjson.dumps(await service.live.call("GET", "")))
        await service.delete(oauth_sub["id"], mtls_sub["id"])
    assert tokens.forms[-1]["scope"] == "hooks:write"
    issued = list(tokens.issued)
    assert issued
    raw = b"".join(sqlite_files(service.live.settings.database_url).values())
    assert oauth_sub["id"].encode() in raw  # these are the service's files
    lines = repr(logs)
    for needle in (tokens.client_secret, key_body[:40], key_body[-40:], *issued):
        assert needle.encode() not in raw
        assert needle not in lines
        assert not any(needle.encode() in answer for answer in answers)


# -- the SSRF guard for token URLs ---------------------------------------------------------------


async def test_a_private_token_url_is_refused_at_registration(settings_for: Settings) -> None:
    settings = settings_for.model_copy(update={"allow_private_targets": False})
    app = create_app(settings, Roles(consumer=False, dispatch=False))
    app[RESOLVE] = fake_dns(
        {"hooks.example.test": ["93.184.216.34"], "tokens.example.test": ["10.0.0.7"]}
    )
    async with TestClient(TestServer(app)) as client:
        _, key = await app[STORE].create_api_key("org_tokens", None)
        for token_url, reason in (
            ("https://tokens.example.test/oauth/token", "private address 10.0.0.7"),
            ("https://127.0.0.1/oauth/token", "loopback address 127.0.0.1"),
            ("http://tokens.public.test/oauth/token", "must use https"),
        ):
            body = {
                "url": "https://hooks.example.test/hook",
                "events": ["verification.created"],
                "auth": {
                    "type": "oauth2_client_credentials",
                    "tokenUrl": token_url,
                    "clientId": "c",
                    "clientSecret": "s",
                },
            }
            async with client.post(
                "/api/identity/webhooks", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as response:
                answer = await response.json(content_type=None)
            assert response.status == 422, answer
            (error,) = answer["errors"]
            assert error["field"] == "auth.tokenUrl"
            assert reason in error["message"], error


async def test_a_token_url_that_resolves_to_a_private_address_is_refused_at_fetch() -> None:
    """Public at registration, loopback when fetched (DNS rebinding): the guarded connector
    refuses it, the attempt fails as `token`, and the token server hears nothing."""
    tokens = new_token_server()
    async with tokens.running():
        resolver = FakeResolver({"tokens.example.test": ["127.0.0.1"]})
        connector = make_connector(allow_private=False, limit=0, resolver=resolver)
        async with aiohttp.ClientSession(connector=connector) as session:
            sender = Sender(
                session,
                header_formats=ALL_SCHEMES,
                timeout=2.0,
                connect_timeout=1.0,
                allow_private=False,
            )
            for token_url, reason in (
                (
                    f"https://tokens.example.test:{tokens.port}/oauth/token",
                    "tokens.example.test resolves to loopback address 127.0.0.1",
                ),
                (f"https://10.0.0.7:{tokens.port}/t", "private address 10.0.0.7"),
            ):
                auth = OAuthClientCredentials(token_url, tokens.client_id, tokens.client_secret)
                exchange = await sender.send(_job(), _subscription(auth))
                assert exchange.result is ResultClass.TOKEN, exchange
                assert exchange.status is None
                assert exchange.error is not None
                assert exchange.error.startswith("token endpoint"), exchange.error
                assert reason in exchange.error, exchange.error
    assert tokens.fetches == []
    assert resolver.asked == ["tokens.example.test"]


def _subscription(auth: OAuthClientCredentials | MutualTls) -> Subscription:
    return Subscription(
        id="whk_01J0000000000000000000TOKN",
        org_id="org_tokens",
        url="https://hooks.example.test/hook",
        events=("verification.created",),
        installed_by=None,
        active=True,
        deactivated_reason=None,
        created_at=0,
        updated_at=0,
        failing_since=None,
        secret="qe_whsec_test",
        auth=auth,
    )


def _job() -> DeliveryJob:
    return DeliveryJob(
        id="whd_01J0000000000000000000TOKN",
        subscription_id="whk_01J0000000000000000000TOKN",
        event_id="evt_1",
        event="verification.created",
        body=b'{"id": "evt_1"}',
        sibling_service=None,
        attempts=0,
        occurred_at=0,
    )


# -- the store, on both ----------------------------------------------------------------------------


async def test_credentials_are_sealed_at_rest_and_a_kept_secret_survives_a_patch(
    store: Store, settings_for: Settings
) -> None:
    pki = Pki()
    client = pki.issue("store.example-bank.test")
    secret = "cs-" + uuid.uuid4().hex
    key_body = "".join(client.key.splitlines()[1:-1])
    auth = OAuthClientCredentials(
        "https://tokens.example.com/oauth/token", "client-at-rest", secret, scope="hooks"
    )
    oauth_sub = await store.create_subscription(
        "org_rest", "https://hooks.example.com/oauth", ["verification.created"], None, auth=auth
    )
    mtls_sub = await store.create_subscription(
        "org_rest",
        "https://hooks.example.com/mtls",
        ["verification.created"],
        None,
        auth=MutualTls(client.certificate, client.key),
        ca_certificate=pki.certificate,
    )
    found = await store.get_subscription("org_rest", oauth_sub.id)
    assert found is not None
    assert found.auth == auth
    kept = OAuthClientCredentials(auth.token_url, "client-renamed", KEEP_SECRET)
    changed = await store.update_subscription(
        "org_rest", oauth_sub.id, SubscriptionChanges(auth=kept)
    )
    assert changed is not None
    assert changed.auth == OAuthClientCredentials(auth.token_url, "client-renamed", secret)
    mtls = await store.get_subscription("org_rest", mtls_sub.id)
    assert mtls is not None
    assert mtls.auth == MutualTls(client.certificate, client.key)
    assert mtls.ca_certificate == pki.certificate

    url = settings_for.database_url
    if settings_for.is_postgres:
        raw = await raw_database_bytes(url)
    else:
        raw = b"".join(sqlite_files(url).values())
    assert b"hooks.example.com/mtls" in raw
    for needle in (secret, key_body[:40], key_body[-40:], "client-at-rest", "tokens.example.com"):
        assert needle.encode() not in raw, needle


async def test_a_hanging_token_endpoint_is_cut_at_the_timeout_and_holds_up_no_one_else() -> None:
    """One subscription's token endpoint never answers: its fetch fails at the timeout, while
    another subscription's token comes at once meanwhile."""
    hung, released = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        hung.set()
        await released.wait()  # past the test's assertions: the server then stops at once
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/token", hang)
    healthy = new_token_server()
    async with serve(app) as port, healthy.running(), aiohttp.ClientSession() as session:
        tokens = Tokens(session, timeout=0.5, allow_private=True)
        stuck = OAuthClientCredentials(f"http://127.0.0.1:{port}/token", "c", "s")
        waiting = asyncio.create_task(tokens.get("whk_stuck", stuck))
        await hung.wait()
        started = time.monotonic()
        other = OAuthClientCredentials(healthy.url, healthy.client_id, healthy.client_secret)
        token = await tokens.get("whk_other", other)
        assert healthy.current(token.value)
        assert time.monotonic() - started < 0.25  # not behind the hanging fetch
        with pytest.raises(TokenFailed, match=r"^token endpoint timed out after 0\.5s$"):
            await waiting
        released.set()


async def test_rekey_seals_the_credentials_again_and_the_census_counts_them(
    store: Store, settings_for: Settings
) -> None:
    auth = OAuthClientCredentials("https://tokens.example.com/t", "client", "cs-rekey")
    created = await store.create_subscription(
        "org_rekey", "https://hooks.example.com/r", ["verification.created"], None, auth=auth
    )
    new_key = Fernet.generate_key().decode()
    rotated = settings_for.model_copy(
        update={"encryption_key": SecretStr(f"{new_key},{TEST_ENCRYPTION_KEY}")}
    )
    url = settings_for.database_url
    sealed_before = await query(url, f"SELECT auth FROM subscriptions WHERE id = '{created.id}'")
    reopened = await open_store(rotated, run_migrations=False)
    try:
        older = (await reopened.sealed_census()).older
        assert older >= 2  # the signing secret and the credentials, at least
        done = await reopened.rekey(500, lambda _: None)
        assert done.resealed["subscriptions"] >= 1
        assert (await reopened.sealed_census()).older == 0
        found = await reopened.get_subscription("org_rekey", created.id)
        assert found is not None
        assert found.auth == auth
        [(sealed_after,)] = await query(
            url, f"SELECT auth FROM subscriptions WHERE id = '{created.id}'"
        )
        assert sealed_after != sealed_before[0][0]
        assert sealed_after.startswith(Keyring(new_key).text_current)
    finally:
        await reopened.close()
