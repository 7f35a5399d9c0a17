"""The delivery `Sender` as the unit tests build it: every signature scheme, loopback targets
allowed (their endpoints listen on 127.0.0.1)."""

from __future__ import annotations

import aiohttp

from service.delivery.attempt import Sender
from service.signing import ALL_SCHEMES


def loopback_sender(
    session: aiohttp.ClientSession, *, timeout: float, connect_timeout: float
) -> Sender:
    return Sender(
        session,
        header_formats=ALL_SCHEMES,
        timeout=timeout,
        connect_timeout=connect_timeout,
        allow_private=True,
    )
