"""Recovery: one delivery sent again (`redeliver`), a window of past events queued again
(`replay`), and when a subscription's deliveries cannot go out at all (`cannot_send`).

Nothing is sent from here: the deliveries are made due now in the store, and a dispatcher claims
them; `wake` (the API's own dispatcher, when it runs one) makes that at once rather than within
its poll interval."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
import structlog

from service.clock import iso, now_ms, to_ms
from service.domain import (
    DeliveryLogEntry,
    PayloadGone,
    PayloadRemoval,
    Redelivery,
    ReplayWindow,
    Subscription,
)
from service.errors import CannotSend, DeliveryNotFound, InvalidInput, PayloadRemoved
from service.filters import compile_filter

if TYPE_CHECKING:
    from service.store import DeliveryLog

MAX_REPLAY = 10_000
"""Deliveries one replay call queues at most; `next_since` says where the next call goes on."""

INACTIVE = "the subscription is inactive; re-enable it first"

log = structlog.get_logger(__name__)

Wake = Callable[[], None]
"""Tells a dispatcher in this process that deliveries are due now."""


def cannot_send(subscription: Subscription) -> CannotSend | None:
    """Why the subscription's deliveries cannot go out now, if they cannot."""
    if not subscription.active:
        return CannotSend("subscription-inactive", INACTIVE)
    if subscription.secret is None:
        return CannotSend("secret-undecryptable", Subscription.UNDECRYPTABLE)
    return None


async def redeliver(
    store: DeliveryLog, subscription: Subscription, delivery_id: str, *, wake: Wake | None = None
) -> DeliveryLogEntry | None:
    """One more attempt at a delivery (sent, failed or still open), same delivery id, signed
    afresh when it goes out. Returns the delivery as it is now (None when it was purged in
    between: the redelivery was taken all the same)."""
    org, subscription_id = subscription.org_id, subscription.id
    entry = await store.get_delivery(org, subscription_id, delivery_id)
    if entry is None:
        raise DeliveryNotFound(subscription_id, delivery_id)
    if entry.gone is not None:
        raise PayloadRemoved(f"delivery {delivery_id}", entry.gone.detail)
    if blocked := cannot_send(subscription):
        raise blocked
    done = await store.redeliver(org, subscription_id, delivery_id)
    if done is Redelivery.NOT_FOUND:
        raise DeliveryNotFound(subscription_id, delivery_id)
    if done is Redelivery.PAYLOAD_GONE:  # erased in between
        raise PayloadRemoved(
            f"delivery {delivery_id}", PayloadGone(PayloadRemoval.ERASED, None).detail
        )
    if wake is not None:
        wake()
    log.info("delivery.redeliver", subscription_id=subscription_id, delivery_id=delivery_id)
    return await store.get_delivery(org, subscription_id, delivery_id)


@dataclass(frozen=True, slots=True)
class ReplayAsk:
    """A replay as asked: events that occurred in [`since`, `until`) (default now), of `events`
    (default the subscription's), only the failed deliveries or not, at most `limit` of them
    (None: MAX_REPLAY, read when the replay runs). `null_fields` names the fields the caller
    gave as null, which are refused (they may be left out, not null)."""

    since: datetime
    until: datetime | None = None
    events: Sequence[str] | None = None
    only_failed: bool = True
    null_fields: Sequence[str] = ()
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay queued: `count` deliveries of the window [`since`, `until`); `next_since`
    is set when the per-call bound cut the window short (call again from there)."""

    count: int
    next_since: int | None
    since: int
    until: int
    without_payload: int = 0  # events in the window whose payloads are removed: not queued
    filtered: int = 0  # events in the window the subscription's filter refuses: not queued


def replay_window(
    subscription: Subscription, ask: ReplayAsk, *, now: int, retention_s: float
) -> ReplayWindow:
    """The window of a replay checked against its subscription and the retention, or
    InvalidInput with all that is wrong: `since` within the retention, `until` (default now)
    after it, and the events (default the subscription's) among the subscription's."""
    retained_from = now - int(retention_s * 1000)
    since = to_ms(ask.since)
    until = now if ask.until is None else to_ms(ask.until)
    errors = [(name, "cannot be null") for name in ask.null_fields]
    if since < retained_from:
        errors.append(
            ("since", f"is before the retention (events are kept from {iso(retained_from)})")
        )
    if until <= since:
        errors.append(("until", "must be after since"))
    events: list[str] = list(subscription.events if ask.events is None else ask.events)
    if others := [e for e in events if e not in subscription.events]:
        errors.append(("events", f"the subscription does not receive {', '.join(others)}"))
    if errors:
        raise InvalidInput(errors)
    limit = MAX_REPLAY if ask.limit is None else ask.limit
    accepts = None
    if subscription.filter is not None:
        accepts = compile_filter(orjson.loads(subscription.filter)).matches
    return ReplayWindow(events, since, until, ask.only_failed, limit, accepts)


async def replay(
    store: DeliveryLog,
    subscription: Subscription,
    ask: ReplayAsk,
    *,
    retention_s: float,
    wake: Wake | None = None,
) -> ReplayOutcome:
    """Queues again the subscription's deliveries of the events in the window: by default only
    its failed ones; else its sent ones too, and new deliveries of retained events it never had.
    What is open already is left alone. At most the ask's `limit`.

    An inactive subscription may be replayed into: what is queued waits in the store until it
    is re-enabled."""
    window = replay_window(subscription, ask, now=now_ms(), retention_s=retention_s)
    replayed = await store.replay(subscription.org_id, subscription, window)
    if not replayed.count and replayed.without_payload and replayed.next_since is None:
        # Everything the window held is without its payload: nothing can be sent again.
        raise PayloadRemoved(
            f"the {replayed.without_payload} events in the window",
            "their payloads are no longer kept (erased at the customer's request, or past "
            "the payload retention)",
        )
    if replayed.count and wake is not None:
        wake()
    log.info(
        "subscription.replay",
        subscription_id=subscription.id,
        queued=replayed.count,
        only_failed=ask.only_failed,
        cut_short=replayed.next_since is not None,
        without_payload=replayed.without_payload,
        filtered=replayed.filtered,
    )
    return ReplayOutcome(
        replayed.count,
        replayed.next_since,
        window.since,
        window.until,
        replayed.without_payload,
        replayed.filtered,
    )
