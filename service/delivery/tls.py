"""TLS for deliveries: the trust every connection starts from, and the pools of subscriptions
with TLS of their own (docs/decisions/0011-endpoint-authentication.md).

Every TLS connection deliveries make — to endpoints and to OAuth token URLs — trusts the
system's CAs and those of `WEBHOOKS_TLS_CA_FILE` (`trust`). A subscription with a client
certificate (mTLS) or a CA bundle of its own (`caCertificate`, trusted instead of all others)
gets a `ClientSession` of its own, with its own SSRF-guarded connector (`TlsSessions`): a
connection that presented one customer's certificate is never handed to another's delivery,
and one made without it is never reused for this one. A pool is replaced when its subscription's
TLS settings change (the old one closed once the attempts that may still use it are over), and
closed after a while without use (a deleted subscription's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import structlog

from service.domain import MutualTls, Subscription
from service.supervise import Fatal, in_background

log = structlog.get_logger(__name__)

IDLE = 600.0
"""Seconds without an attempt after which a subscription's pool is closed."""
SWEEP_INTERVAL = 30.0

MakeSession = Callable[[ssl.SSLContext], aiohttp.ClientSession]
"""A pooled session (SSRF-guarded, as the shared one) whose connections use the context."""


def trust(ca_file: str | None) -> ssl.SSLContext | None:
    """The context of the shared pool: None (aiohttp's default, the system's CAs) unless
    `ca_file` (WEBHOOKS_TLS_CA_FILE) adds CAs to the system's."""
    if ca_file is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=ca_file)
    return context


def needs_own_pool(subscription: Subscription) -> bool:
    """True when the subscription's connections cannot be the shared pool's: it presents a
    client certificate or trusts a CA bundle of its own."""
    return isinstance(subscription.auth, MutualTls) or subscription.ca_certificate is not None


def subscription_context(subscription: Subscription, ca_file: str | None) -> ssl.SSLContext:
    """The context of a subscription's own pool: its CA bundle alone when it has one (else the
    shared trust), and its client certificate when it has one."""
    if subscription.ca_certificate is not None:
        context = ssl.create_default_context(cadata=subscription.ca_certificate)
    else:
        context = trust(ca_file) or ssl.create_default_context()
    if isinstance(subscription.auth, MutualTls):
        load_client_certificate(context, subscription.auth)
    return context


def load_client_certificate(context: ssl.SSLContext, auth: MutualTls) -> None:
    """Loads the certificate chain and its key into `context`. `ssl` reads them only from a
    file: an anonymous file in memory (Linux's memfd) is used, so the key never reaches a disk;
    elsewhere a private temporary file, removed at once."""
    pem = (auth.private_key.rstrip("\n") + "\n" + auth.certificate).encode()
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("client-certificate", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="client-certificate-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)


@dataclass(slots=True)
class _Pool:
    settings: tuple[MutualTls | None, str | None]
    session: aiohttp.ClientSession
    used: float


class TlsSessions:
    """The pools of subscriptions with TLS of their own, by subscription."""

    def __init__(self, make_session: MakeSession, *, ca_file: str | None, grace: float) -> None:
        self._make = make_session
        self._ca_file = ca_file
        self._grace = grace  # how long an attempt may still use a pool after it was replaced
        self._pools: dict[str, _Pool] = {}
        self._retired: list[tuple[float, aiohttp.ClientSession]] = []

    def __len__(self) -> int:
        return len(self._pools)

    def session(self, subscription: Subscription) -> aiohttp.ClientSession:
        """The subscription's pool, made (or made again, when its TLS settings changed) on
        first use; raises `ssl.SSLError` when its certificate or CAs cannot be loaded."""
        auth = subscription.auth if isinstance(subscription.auth, MutualTls) else None
        settings = (auth, subscription.ca_certificate)
        now = time.monotonic()
        pool = self._pools.get(subscription.id)
        if pool is not None and pool.settings == settings:
            pool.used = now
            return pool.session
        session = self._make(subscription_context(subscription, self._ca_file))
        if pool is not None:
            self._retired.append((now + self._grace, pool.session))
            log.info("tls.pool_replaced", subscription_id=subscription.id)
        self._pools[subscription.id] = _Pool(settings, session, now)
        return session

    async def sweep(self, now: float | None = None) -> int:
        """Closes the pools replaced more than the grace ago and those idle for `IDLE`;
        returns how many."""
        now = time.monotonic() if now is None else now
        closing = [session for until, session in self._retired if until <= now]
        self._retired = [(until, s) for until, s in self._retired if until > now]
        for subscription_id, pool in list(self._pools.items()):
            if now - pool.used >= IDLE:
                del self._pools[subscription_id]
                closing.append(pool.session)
        for session in closing:
            await session.close()
        return len(closing)

    async def close(self) -> None:
        """Closes every pool (at shutdown, once attempts are drained)."""
        sessions = [pool.session for pool in self._pools.values()]
        sessions += [session for _, session in self._retired]
        self._pools.clear()
        self._retired.clear()
        for session in sessions:
            await session.close()

    @contextlib.asynccontextmanager
    async def running(self, fatal: Fatal | None = None) -> AsyncIterator[TlsSessions]:
        """Sweeps while the block lasts; closes every pool when it ends."""
        try:
            async with in_background(self._sweeping(), "tls-sweep", fatal):
                yield self
        finally:
            await self.close()

    async def _sweeping(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            await self.sweep()
