"""OAuth 2.0 access tokens for endpoints behind a gateway: the client credentials grant (RFC 6749
section 4.4), one token cached per subscription until shortly before it expires, one fetch shared
by every attempt that needs it meanwhile, and a token the endpoint refused replaced at most once
(docs/decisions/0011-endpoint-authentication.md).

A token endpoint that fails (answers other than 2xx, says nothing usable, hangs past the
timeout, or is refused by the SSRF guard) raises `TokenFailed` in every attempt that waited for
that fetch, which each records as its own result class and the schedule retries; the next
attempt asks again (the lane's circuit breaker slows a subscription whose attempts keep failing).
Only the subscription's own attempts wait for its token endpoint: nothing here is shared between
subscriptions but the connection pool.
"""

from __future__ import annotations

import asyncio
import base64
import re
import urllib.parse
from dataclasses import dataclass, field

import aiohttp
import orjson
import structlog

from service.domain import ClientAuth, OAuthClientCredentials
from service.egress import check_literal_target, check_url
from service.errors import TargetRejected
from service.metrics import Metrics

log = structlog.get_logger(__name__)

MAX_ANSWER = 16 * 1024
"""Bytes of a token endpoint's answer read at most."""
DEFAULT_LIFETIME = 300.0
"""Seconds a token is used when its answer gives no `expires_in`."""
EARLY = 30.0
"""A token is renewed this many seconds before it expires at most (a tenth of its lifetime for
short ones): an attempt never sends one that runs out on the way."""
LONGEST = 86400.0
"""Seconds a token is used at most, whatever its `expires_in` says."""

_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_VISIBLE = re.compile(r"[\x21-\x7E]+")


class TokenFailed(Exception):
    """No token could be had; `reason` is for people and the attempt log (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Token:
    """An access token and, by the event loop's clock, until when it is used."""

    value: str = field(repr=False)
    fresh_until: float
    after_refusal: bool  # fetched because the endpoint refused the one before it


@dataclass(slots=True)
class _Entry:
    auth: OAuthClientCredentials = field(repr=False)
    token: Token | None = None
    fetching: asyncio.Task[Token] | None = None
    after_refusal: bool = False  # the next fetch replaces a token the endpoint refused


class Tokens:
    """The token of each subscription with OAuth client credentials, fetched through the shared
    (SSRF-guarded) session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        allow_private: bool,
        metrics: Metrics | None = None,
    ) -> None:
        self._session = session
        self._timeout = timeout
        self._allow_private = allow_private
        self._metrics = metrics
        self._entries: dict[str, _Entry] = {}

    async def get(self, subscription_id: str, auth: OAuthClientCredentials) -> Token:
        """A current token for the subscription: the cached one, the fetch under way, or a new
        fetch. Raises `TokenFailed`."""
        loop = asyncio.get_running_loop()
        entry = self._entries.get(subscription_id)
        if entry is None or entry.auth != auth:
            # New, or its credentials changed: nothing of the old ones is used again.
            entry = self._entries[subscription_id] = _Entry(auth)
        now = loop.time()
        if entry.token is not None and now < entry.token.fresh_until:
            return entry.token
        if entry.fetching is None:
            fetching = asyncio.create_task(
                self._fetch(subscription_id, auth, entry.after_refusal),
                name=f"token-{subscription_id}",
            )
            entry.fetching = fetching
            fetching.add_done_callback(lambda done: self._fetched(entry, done))
        # Shielded: an attempt cancelled while it waits does not cancel the others' fetch.
        return await asyncio.shield(entry.fetching)

    def _fetched(self, entry: _Entry, done: asyncio.Task[Token]) -> None:
        entry.fetching = None
        # Read here, so a failure no attempt waits for any more is never left unobserved.
        if not done.cancelled() and done.exception() is None:
            entry.token, entry.after_refusal = done.result(), False

    def refused(self, subscription_id: str, token: Token) -> bool:
        """The endpoint answered 401 to `token`: True when the attempt should try once more at
        once with the subscription's next token. The first attempt to report a token drops it
        (the next `get` fetches); later ones find a newer token or its fetch. A token fetched
        because its predecessor was refused is not dropped again: the endpoint refuses this
        service's tokens, and asking for more would be one fetch per attempt."""
        entry = self._entries.get(subscription_id)
        if entry is None:
            return False
        if entry.token is token:
            if token.after_refusal:
                return False
            entry.token, entry.after_refusal = None, True
            log.info("endpoint_auth.token_refused", subscription_id=subscription_id)
            return True
        # Another attempt dropped it already: a newer token is cached, being fetched, or about
        # to be fetched by that attempt.
        return entry.token is not None or entry.fetching is not None or entry.after_refusal

    def forget(self, subscription_id: str) -> None:
        self._entries.pop(subscription_id, None)

    async def _fetch(
        self, subscription_id: str, auth: OAuthClientCredentials, after_refusal: bool
    ) -> Token:
        loop = asyncio.get_running_loop()
        asked = loop.time()
        try:
            lifetime, value = await self._ask(auth)
        except TokenFailed as failed:
            self._count("failed")
            log.warning(
                "endpoint_auth.token_failed", subscription_id=subscription_id, error=failed.reason
            )
            raise
        self._count("ok")
        early = min(EARLY, lifetime / 10)
        return Token(value, asked + lifetime - early, after_refusal)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.child(self._metrics.token_fetches, outcome).inc()

    async def _ask(self, auth: OAuthClientCredentials) -> tuple[float, str]:
        """One token request (RFC 6749 section 4.4.2) and its answer read (section 5.1):
        the token's lifetime in seconds and the token."""
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        if auth.audience:
            form["audience"] = auth.audience
        headers = {"Accept": "application/json"}
        if auth.client_auth is ClientAuth.BASIC:
            headers["Authorization"] = basic_credentials(auth.client_id, auth.client_secret)
        else:
            form["client_id"] = auth.client_id
            form["client_secret"] = auth.client_secret
        try:
            check_url(auth.token_url, allow_private=self._allow_private)
            check_literal_target(auth.token_url, allow_private=self._allow_private)
            async with asyncio.timeout(self._timeout):
                async with self._session.post(
                    auth.token_url, data=form, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    raw = await response.content.read(MAX_ANSWER + 1)
                    while len(raw) <= MAX_ANSWER and (more := await response.content.read(4096)):
                        raw += more
        except TimeoutError:
            raise TokenFailed(f"token endpoint timed out after {self._timeout:g}s") from None
        except TargetRejected as exc:
            raise TokenFailed(f"token endpoint refused: {exc.reason}") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise TokenFailed(f"token endpoint: {type(exc).__name__}: {exc}"[:500]) from None
        if len(raw) > MAX_ANSWER:
            raise TokenFailed(f"token endpoint's answer is over {MAX_ANSWER // 1024} KiB")
        return _read_answer(status, raw)


def basic_credentials(client_id: str, client_secret: str) -> str:
    """The Basic `Authorization` of RFC 6749 section 2.3.1: both form-encoded first."""
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _read_answer(status: int, raw: bytes) -> tuple[float, str]:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    if not 200 <= status < 300:
        code = answer.get("error") if isinstance(answer, dict) else None
        said = f" ({code})" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
        raise TokenFailed(f"token endpoint answered {status}{said}")
    if not isinstance(answer, dict):
        raise TokenFailed(f"token endpoint answered {status} without a JSON object")
    value = answer.get("access_token")
    if not isinstance(value, str) or not _VISIBLE.fullmatch(value):
        raise TokenFailed(f"token endpoint answered {status} without a usable access_token")
    kind = answer.get("token_type", "Bearer")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        shown = kind[:32] if isinstance(kind, str) and _VISIBLE.fullmatch(kind[:32]) else "?"
        raise TokenFailed(f"token endpoint issued a {shown!r} token, not a Bearer one")
    expires = answer.get("expires_in")
    try:
        lifetime = DEFAULT_LIFETIME if expires is None else float(expires)
    except (TypeError, ValueError):
        raise TokenFailed("token endpoint's expires_in is not a number") from None
    if not lifetime > 0:
        raise TokenFailed("token endpoint's expires_in is not positive")
    return min(lifetime, LONGEST), value
