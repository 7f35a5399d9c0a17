"""Every typed aiohttp application key, in one place: how handlers and cleanup
contexts reach the resources that `app.py` creates at start-up.

Delivery is reached through the `Tester` protocol, so the API needs nothing of `service.delivery`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from service.domain import AttemptRecord, Subscription
from service.egress import Resolve
from service.feedwaits import FeedWaits
from service.health import Readiness
from service.metrics import Metrics
from service.settings import Settings
from service.store import Store
from service.supervise import Fatal
from service.tracing import Tracing

if TYPE_CHECKING:
    from service.delivery.dispatcher import Dispatcher
    from service.ingest import Ingest
    from service.matching import SubscriptionIndex


class Tester(Protocol):
    """Sends a test event through the delivery path and waits for the first attempt."""

    async def send_test(self, subscription: Subscription, event: str) -> AttemptRecord:
        """Sends a test `event` (`service.triggers`) and waits for the first attempt."""

    def wake(self) -> None:
        """Deliveries were made due now (a redelivery, a replay): look for them at once."""


OnChange = Callable[[str], Awaitable[None]]

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
READINESS: web.AppKey[Readiness] = web.AppKey("readiness", Readiness)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
FATAL: web.AppKey[Fatal] = web.AppKey("fatal", Fatal)
TRACING: web.AppKey[Tracing] = web.AppKey("tracing", Tracing)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
INDEX: web.AppKey[SubscriptionIndex] = web.AppKey("index")
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")
INGEST: web.AppKey[Ingest] = web.AppKey("ingest")
TESTER: web.AppKey[Tester] = web.AppKey("tester", Tester)
ON_CHANGE: web.AppKey[OnChange] = web.AppKey("on_change")
FEED_WAITS: web.AppKey[FeedWaits] = web.AppKey("feed_waits", FeedWaits)
# How registration looks host names up (the system resolver when unset; tests set their own).
RESOLVE: web.AppKey[Resolve] = web.AppKey("resolve")
