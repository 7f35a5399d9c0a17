"""Client certificates nearing their end: active subscriptions whose mTLS certificate ends
within 30 days (or has ended), counted for the `webhooks_client_certificates_expiring` gauge and
shown by `/readyz` (never deciding readiness: a customer's certificate is not this replica's
health). Read from the subscription index when it changed, and at least once a minute."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from service import endpointauth
from service.clock import iso, now_ms
from service.domain import Subscription

SHOWN = 20
"""Subscriptions `/readyz` names at most, the soonest to expire first."""
EVERY = 60.0
"""Seconds a reading is reused."""


class CertificateWatch:
    """What the index's subscriptions' client certificates come to."""

    def __init__(
        self,
        subscriptions: Callable[[], Sequence[Subscription]],
        revision: Callable[[], int | None],
    ) -> None:
        self._subscriptions = subscriptions
        self._revision = revision
        self._read: tuple[float, int | None] | None = None  # when, and at which revision
        self._expiring: list[tuple[int, str]] = []  # (not after, subscription id), soonest first

    def expiring(self) -> list[tuple[int, str]]:
        """(end in epoch ms, subscription id) of the certificates ending within 30 days."""
        now, revision = time.monotonic(), self._revision()
        if self._read is None or now - self._read[0] >= EVERY or revision != self._read[1]:
            horizon = now_ms() + endpointauth.EXPIRING_WITHIN * 1000
            found = []
            for subscription in self._subscriptions():
                ends = endpointauth.client_certificate_expiry(subscription.auth)
                if ends is not None and ends <= horizon:
                    found.append((ends, subscription.id))
            self._expiring = sorted(found)
            self._read = (now, revision)
        return self._expiring

    def count(self) -> float:
        return float(len(self.expiring()))

    def report(self) -> dict[str, Any]:
        """The fact `/readyz` shows."""
        expiring = self.expiring()
        return {
            "expiringWithin30Days": len(expiring),
            "subscriptions": [
                {"id": subscription_id, "notAfter": iso(ends)}
                for ends, subscription_id in expiring[:SHOWN]
            ],
        }
