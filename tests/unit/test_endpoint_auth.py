"""Endpoint authentication's pure parts: the token endpoint's answer read, the Basic
credentials, the single flight and the one refresh per refused token (the token request itself
replaced by a counter), the certificate checks, and what reads show."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from service import endpointauth
from service.delivery import tls
from service.delivery.tls import TlsSessions
from service.delivery.tokens import TokenFailed, Tokens, _read_answer, basic_credentials
from service.domain import MutualTls, OAuthClientCredentials, Subscription
from tests.support.endpointauth import Pki

BEGIN, END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
AUTH = OAuthClientCredentials("https://auth.example.com/token", "client", "s3cret")


class CountingTokens(Tokens):
    """Tokens whose request is a counter: each fetch takes `delay` and issues `tok-N`."""

    def __init__(self, *, lifetime: float = 60.0, delay: float = 0.01, fail: bool = False) -> None:
        super().__init__(None, timeout=1.0, allow_private=False)  # type: ignore[arg-type]
        self.asked = 0
        self.lifetime, self.delay, self.fail = lifetime, delay, fail

    async def _ask(self, auth: OAuthClientCredentials) -> tuple[float, str]:
        self.asked += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise TokenFailed("token endpoint answered 503")
        return self.lifetime, f"tok-{self.asked}"


async def test_concurrent_attempts_share_one_fetch_and_then_the_cached_token() -> None:
    tokens = CountingTokens()
    got = await asyncio.gather(*(tokens.get("whk_1", AUTH) for _ in range(20)))
    assert {t.value for t in got} == {"tok-1"}
    assert (await tokens.get("whk_1", AUTH)).value == "tok-1"
    assert tokens.asked == 1
    assert (await tokens.get("whk_2", AUTH)).value == "tok-2"  # each subscription its own


async def test_a_refused_token_is_replaced_once_for_every_attempt_it_was_refused_to() -> None:
    tokens = CountingTokens()
    old = await tokens.get("whk_1", AUTH)
    # Ten attempts were refused with it: the first drops it, all retry with one new token.
    verdicts = [tokens.refused("whk_1", old) for _ in range(10)]
    assert verdicts == [True] * 10
    new = await asyncio.gather(*(tokens.get("whk_1", AUTH) for _ in range(10)))
    assert {t.value for t in new} == {"tok-2"}
    assert tokens.asked == 2
    # The new one refused too: not replaced again (the endpoint refuses our tokens).
    assert tokens.refused("whk_1", new[0]) is False
    assert (await tokens.get("whk_1", AUTH)).value == "tok-2"
    assert tokens.asked == 2


async def test_changed_credentials_fetch_afresh_and_an_expired_token_is_renewed() -> None:
    tokens = CountingTokens(lifetime=0.05)  # fresh for 0.045 s
    assert (await tokens.get("whk_1", AUTH)).value == "tok-1"
    await asyncio.sleep(0.06)
    assert (await tokens.get("whk_1", AUTH)).value == "tok-2"
    other = OAuthClientCredentials(AUTH.token_url, AUTH.client_id, "rotated")
    assert (await tokens.get("whk_1", other)).value == "tok-3"


async def test_a_failed_fetch_fails_every_waiting_attempt_and_the_next_asks_again() -> None:
    tokens = CountingTokens(fail=True)
    results = await asyncio.gather(
        *(tokens.get("whk_1", AUTH) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, TokenFailed) for r in results)
    assert tokens.asked == 1
    with pytest.raises(TokenFailed):
        await tokens.get("whk_1", AUTH)
    assert tokens.asked == 2


async def test_a_cancelled_waiter_does_not_cancel_the_others_fetch() -> None:
    tokens = CountingTokens(delay=0.05)
    first = asyncio.create_task(tokens.get("whk_1", AUTH))
    second = asyncio.create_task(tokens.get("whk_1", AUTH))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).value == "tok-1"
    assert tokens.asked == 1


def _answer(status: int, body: Any) -> tuple[float, str]:
    return _read_answer(status, orjson.dumps(body) if not isinstance(body, bytes) else body)


def test_the_token_answer_is_read_as_rfc_6749_section_5_says() -> None:
    assert _answer(200, {"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 60}) == (
        60.0,
        "a.b.c",
    )
    assert _answer(200, {"access_token": "x", "token_type": "bearer", "expires_in": "30"})[0] == 30
    assert _answer(200, {"access_token": "x"})[0] == 300.0  # no expires_in: 5 minutes
    assert _answer(200, {"access_token": "x", "expires_in": 1e12})[0] == 86400.0  # capped
    for status, body, reason in (
        (401, {"error": "invalid_client"}, "token endpoint answered 401 (invalid_client)"),
        (500, b"<html>oops</html>", "token endpoint answered 500"),
        (400, {"error": "x\ny"}, "token endpoint answered 400"),
        (200, b"not json", "without a JSON object"),
        (200, {"token_type": "Bearer"}, "without a usable access_token"),
        (200, {"access_token": "has space"}, "without a usable access_token"),
        (200, {"access_token": "x", "token_type": "mac"}, "a 'mac' token, not a Bearer one"),
        (200, {"access_token": "x", "expires_in": "soon"}, "expires_in is not a number"),
        (200, {"access_token": "x", "expires_in": 0}, "expires_in is not positive"),
    ):
        with pytest.raises(TokenFailed) as failed:
            _answer(status, body)
        assert reason in failed.value.reason
        assert failed.value.reason.startswith("token endpoint"), failed.value.reason


def test_basic_credentials_form_encode_both_parts() -> None:
    header = basic_credentials("id:with space", "s&cret/")
    user, _, password = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
    assert (user, password) == ("id%3Awith+space", "s%26cret%2F")


def test_mtls_checks_say_which_field_is_wrong() -> None:
    pki = Pki()
    issued, other = pki.issue("client.example"), pki.issue("other.example")
    endpointauth.check_mtls(issued.certificate, issued.key)
    for certificate, key, message in (
        ("not a pem", issued.key, "certificate: must be PEM"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            issued.key,
            "certificate: is not a readable",
        ),
        (issued.certificate, "nope", "privateKey: must be PEM"),
        (issued.certificate, other.key, "privateKey: does not belong to the certificate"),
    ):
        with pytest.raises(ValueError, match=message):
            endpointauth.check_mtls(certificate, key)
    later = datetime.now(UTC) + timedelta(days=400)
    with pytest.raises(ValueError, match="certificate: expired at"):
        endpointauth.check_mtls(issued.certificate, issued.key, now=later)


def test_reads_show_no_secret_and_the_stored_form_round_trips() -> None:
    pki = Pki()
    issued = pki.issue("client.example", days=20)
    mtls = MutualTls(issued.certificate, issued.key)
    for auth in (AUTH, mtls):
        assert endpointauth.loads(endpointauth.dumps(auth)) == auth
        shown = orjson.dumps(endpointauth.shown(auth))
        assert b"s3cret" not in shown
        assert b"PRIVATE KEY" not in shown
    shown_mtls = endpointauth.shown(mtls)
    assert shown_mtls is not None
    assert shown_mtls["certificate"]["subject"] == issued.subject
    expiry = endpointauth.client_certificate_expiry(mtls)
    assert expiry is not None
    assert endpointauth.client_certificate_expiry(AUTH) is None
    keep = OAuthClientCredentials(AUTH.token_url, "renamed", endpointauth.KEEP_SECRET)
    assert endpointauth.merged(AUTH, keep).client_secret == "s3cret"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="clientSecret is required"):
        endpointauth.merged(mtls, keep)


async def test_tls_pools_are_per_subscription_replaced_on_change_and_swept() -> None:
    pki = Pki()
    issued, renewed = pki.issue("a.example"), pki.issue("a.example")
    made: list[aiohttp.ClientSession] = []

    def make(context: ssl.SSLContext) -> aiohttp.ClientSession:
        made.append(aiohttp.ClientSession())
        return made[-1]

    pools = TlsSessions(make, ca_file=None, grace=5.0)
    first = _tls_subscription("whk_a", MutualTls(issued.certificate, issued.key))
    pinned = _tls_subscription("whk_b", None, ca=pki.certificate)
    assert pools.session(first) is pools.session(first)
    assert pools.session(pinned) is not pools.session(first)  # a pool per subscription
    replaced = pools.session(
        _tls_subscription("whk_a", MutualTls(renewed.certificate, renewed.key))
    )
    assert replaced is not made[0]
    now = time.monotonic()
    assert await pools.sweep(now + 1) == 0  # the old pool still serves attempts begun on it
    assert await pools.sweep(now + 6) == 1
    assert made[0].closed
    assert not replaced.closed
    assert await pools.sweep(now + tls.IDLE + 1) == 2  # idle: gone (a deleted subscription's)
    assert len(pools) == 0
    assert all(session.closed for session in made)


def _tls_subscription(sid: str, auth: MutualTls | None, ca: str | None = None) -> Subscription:
    return Subscription(
        id=sid,
        org_id="org",
        url="https://hooks.example/x",
        events=("verification.created",),
        installed_by=None,
        active=True,
        deactivated_reason=None,
        created_at=0,
        updated_at=0,
        failing_since=None,
        secret="s",
        auth=auth,
        ca_certificate=ca,
    )
