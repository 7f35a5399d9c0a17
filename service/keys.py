"""Typed application keys (STYLE lesson 3): how handlers reach the resources that the cleanup
contexts of `app.py` create at start-up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from service.api.models import TestResult
from service.health import Readiness
from service.settings import Settings
from service.store import Store
from service.store.models import Subscription


class Tester(Protocol):
    """Sends `webhook.test` through the delivery path and waits for the first attempt."""

    async def send_test(self, subscription: Subscription) -> TestResult: ...


OnChange = Callable[[str], Awaitable[None]]

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
READINESS: web.AppKey[Readiness] = web.AppKey("readiness", Readiness)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
TESTER: web.AppKey[Tester] = web.AppKey("tester", Tester)
ON_CHANGE: web.AppKey[OnChange] = web.AppKey("on_change")
