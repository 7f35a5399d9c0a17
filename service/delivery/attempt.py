"""One HTTP attempt: the headers, the signed POST, the bounded read of the answer, and what kind
of answer it was. It returns a plain `Exchange` and decides nothing about what comes next (that
is `retry.decide`).

All attempts share one pooled `ClientSession`. Redirects are not followed, at most 64 KiB of
an answer is read and its first KiB kept for the attempt log (docs/contract.md, "Webhooks out").

Two clocks, both started only once the request is being sent (a lane takes its connection slot
before the attempt begins, see `lane.ConnectionBudget`, so no clock ever runs while waiting for the
pool): the delivery timeout bounds everything up to the status line and headers, which decide the
attempt ("any 2xx within the timeout", docs/contract.md); the body then gets a short bound of its
own (`READ_TIMEOUT`). A body that does not finish in it is cut and the excerpt says so, but the
answer stands: an endpoint that accepted a delivery and then dribbles its body is not retried into a
duplicate.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from service import __version__
from service.delivery.tls import TlsSessions, needs_own_pool
from service.delivery.tokens import TokenFailed, Tokens
from service.domain import DeliveryJob, OAuthClientCredentials, Subscription
from service.egress import check_literal_target
from service.errors import TargetRejected
from service.signing import Scheme
from service.tracing import Tracing
from service.wire import delivery_body, delivery_headers

USER_AGENT = f"QuantumElixir-Identity-Webhooks/{__version__}"
MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_BYTES = 1024
READ_TIMEOUT = 2.0  # seconds for the body once the status line is in; 64 KiB need far less


class ResultClass(enum.StrEnum):
    """How an attempt ended, for metrics and the attempt log."""

    OK = "2xx"
    REDIRECT = "3xx"
    CLIENT_ERROR = "4xx"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    # The subscription's OAuth token endpoint gave no token: nothing was sent to the endpoint.
    TOKEN = "token"  # noqa: S105 - a result class, not a secret


def classify(status: int | None, *, timed_out: bool = False) -> ResultClass:
    if timed_out:
        return ResultClass.TIMEOUT
    if status is None:
        return ResultClass.CONNECTION
    if 200 <= status < 300:
        return ResultClass.OK
    if 300 <= status < 400:
        return ResultClass.REDIRECT
    if 400 <= status < 500:
        return ResultClass.CLIENT_ERROR
    return ResultClass.SERVER_ERROR


@dataclass(frozen=True, slots=True)
class Exchange:
    """What one POST came to. Times are epoch seconds."""

    started: float
    duration: float
    status: int | None  # None when no answer came
    result: ResultClass
    error: str | None  # for people: "HTTP 503", "timed out after 10s", "refused: …"
    excerpt: str | None  # the answer's first KiB, printable
    retry_after: str | None  # the Retry-After header as sent


class Sender:
    """Signs and POSTs one delivery through the shared session, or, for a subscription that
    authenticates to its endpoint (docs/decisions/0011-endpoint-authentication.md), with its
    access token (`tokens`) and through its own TLS pool (`tls`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        header_formats: Sequence[Scheme],
        timeout: float,
        connect_timeout: float,
        allow_private: bool,
        read_timeout: float = READ_TIMEOUT,
        tracing: Tracing | None = None,
        tokens: Tokens | None = None,
        tls: TlsSessions | None = None,
    ) -> None:
        self._session = session
        self._tokens = tokens or Tokens(session, timeout=timeout, allow_private=allow_private)
        self._tls = tls
        self._tracing = tracing or Tracing()
        self._formats = frozenset(header_formats)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # No `total` for aiohttp: its total includes the wait for a pooled connection and the
        # body. The delivery timeout is an asyncio timeout around the request up to its headers,
        # and the body has its own bound (see the module docstring).
        self._client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._allow_private = allow_private

    def headers(
        self, job: DeliveryJob, subscription: Subscription, body: bytes, now: float
    ) -> dict[str, str]:
        """The attempt's headers (`wire.delivery_headers`) in the configured schemes; the
        User-Agent is the session's default (see `app.py`)."""
        return delivery_headers(self._formats, job, subscription, body, now)

    @staticmethod
    def body(job: DeliveryJob, subscription: Subscription) -> bytes:
        """What is signed and POSTed (`wire.delivery_body`)."""
        return delivery_body(job, subscription)

    async def send(self, job: DeliveryJob, subscription: Subscription) -> Exchange:
        """Signs `job` afresh (t = now), POSTs it and classifies the answer; never raises for
        anything the endpoint or the network does."""
        status: int | None = None
        excerpt: str | None = None
        error: str | None = None
        retry_after: str | None = None
        timed_out = no_token = False
        started = time.time()
        span = self._tracing.attempt_span(
            job.id, subscription.id, job.event_id, job.event, job.attempts + 1
        )
        with span as traced:
            try:
                if not self._allow_private:
                    check_literal_target(subscription.url, allow_private=False)
                body = self.body(job, subscription)
                headers = self.headers(job, subscription, body, started)
                if subscription.plain:  # the common path, kept as lean as before
                    async with asyncio.timeout(self._timeout):
                        response = await self._session.post(
                            subscription.url,
                            data=body,
                            headers=headers,
                            allow_redirects=False,
                            timeout=self._client_timeout,
                        )
                else:
                    response = await self._authenticated(subscription, body, headers)
                async with response:
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                    excerpt = await read_excerpt(response, self._read_timeout)
            except aiohttp.ConnectionTimeoutError:
                timed_out = True
                error = f"connect timed out after {self._connect_timeout:g}s"
            except TimeoutError:
                timed_out = True
                error = f"timed out after {self._timeout:g}s"
            except TargetRejected as exc:
                error = f"refused: {exc.reason}"
            except TokenFailed as exc:
                no_token, error = True, printable(exc.reason)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                error = printable(f"{type(exc).__name__}: {exc}"[:500])
            result = ResultClass.TOKEN if no_token else classify(status, timed_out=timed_out)
            traced.outcome(result.value, status)
        if result is not ResultClass.OK and error is None:
            error = f"HTTP {status}"
        return Exchange(
            started=started,
            duration=time.time() - started,
            status=status,
            result=result,
            error=error,
            excerpt=excerpt,
            retry_after=retry_after,
        )

    async def _post(
        self, session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """The POST up to the answer's status line and headers, within the delivery timeout."""
        async with asyncio.timeout(self._timeout):
            return await session.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=self._client_timeout
            )

    async def _authenticated(
        self, subscription: Subscription, body: bytes, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """The POST of a subscription that authenticates to its endpoint: through its own TLS
        pool when it has one; with its access token when it has OAuth client credentials, and
        when the endpoint answers 401 once more at once with the next token (`Tokens.refused`
        says whether there is one). Raises `TokenFailed` when no token could be had."""
        session = self._session
        if needs_own_pool(subscription):
            if self._tls is None:
                raise ValueError("this sender has no TLS pools of subscriptions' own")
            session = self._tls.session(subscription)
        auth = subscription.auth
        if not isinstance(auth, OAuthClientCredentials):
            return await self._post(session, subscription.url, body, headers)
        # The token is the request's Authorization: a static one of that name gives way.
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        token = await self._tokens.get(subscription.id, auth)
        headers["Authorization"] = f"Bearer {token.value}"
        response = await self._post(session, subscription.url, body, headers)
        if response.status != 401 or not self._tokens.refused(subscription.id, token):
            return response
        response.release()
        token = await self._tokens.get(subscription.id, auth)
        headers["Authorization"] = f"Bearer {token.value}"
        return await self._post(session, subscription.url, body, headers)


async def read_excerpt(response: aiohttp.ClientResponse, timeout: float = READ_TIMEOUT) -> str:
    """Reads at most 64 KiB of the body within `timeout` seconds (a lying, endless or stalled
    endpoint cannot make us read more or wait longer) and keeps the first KiB for the attempt
    log. A body that stalls or breaks off is cut, and the excerpt ends with a note saying so;
    the connection is then closed, as it is stuck in the middle of an answer."""
    content = response.content
    if content.is_eof() and content.exception() is None:
        # The whole body came with the status line (the usual short answer): nothing to wait
        # for, so no timer and no read loop.
        whole = content.read_nowait(MAX_RESPONSE_BYTES)
        return printable(whole[:EXCERPT_BYTES].decode("utf-8", errors="replace"))
    data = bytearray()
    cut: str | None = None
    try:
        async with asyncio.timeout(timeout):
            while len(data) < MAX_RESPONSE_BYTES:
                chunk = await response.content.read(MAX_RESPONSE_BYTES - len(data))
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        cut = f"not finished within {timeout:g}s"
    except (aiohttp.ClientError, OSError) as exc:
        # The status line already came: a body the endpoint breaks off does not undo it.
        cut = type(exc).__name__
    if cut is not None:
        response.close()
    excerpt = printable(bytes(data[:EXCERPT_BYTES]).decode("utf-8", errors="replace"))
    return excerpt if cut is None else f"{excerpt} [body cut: {cut}]"


_CONTROL = re.compile(r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]")


def printable(text: str) -> str:
    """What an endpoint sends us is stored and logged: no NUL (PostgreSQL text refuses it) and
    no other control characters."""
    return _CONTROL.sub("\ufffd", text)
