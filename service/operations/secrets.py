"""Secret rotation: a subscription gets a new signing secret, and the previous one keeps signing
too for an overlap, so that receivers can switch over without refusing a delivery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from service.domain import SYSTEM, Actor, Subscription
from service.errors import SubscriptionNotFound

if TYPE_CHECKING:
    from service.store import Subscriptions

log = structlog.get_logger(__name__)

OnChange = Callable[[str], Awaitable[None]]
"""Tells this process's matcher at once that a subscription changed (others see it within
their index refresh)."""


@dataclass(frozen=True, slots=True)
class Rotated:
    """The subscription after the rotation, its new `secret` (shown once) and until when the
    previous one signs too (`previous_until`, epoch ms: now when there is no overlap)."""

    subscription: Subscription
    secret: str
    previous_until: int


async def rotate_secret(
    store: Subscriptions,
    org_id: str,
    subscription_id: str,
    overlap_seconds: int,
    *,
    on_change: OnChange | None = None,
    actor: Actor = SYSTEM,
) -> Rotated:
    """A new signing secret for the subscription, by `actor`; the current one stays valid for
    `overlap_seconds` (0: it ends now)."""
    rotated = await store.rotate_secret(
        org_id, subscription_id, overlap_seconds * 1000, actor=actor
    )
    if rotated is None or rotated.secret is None:
        raise SubscriptionNotFound(subscription_id, org_id)
    if on_change is not None:
        await on_change(rotated.id)
    log.info(
        "subscription.secret_rotated",
        subscription_id=rotated.id,
        overlap_seconds=overlap_seconds,
    )
    return Rotated(rotated, rotated.secret, rotated.previous_secret_until or rotated.updated_at)
