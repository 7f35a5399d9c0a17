"""A subscription as the management API and the command line show it (`SubscriptionRow`): its
settings, its deliveries at a glance, and of its static headers only what may be shown."""

from __future__ import annotations

import orjson

from service import endpointauth
from service import headers as header_rules
from service.api.models import SubscriptionRow
from service.clock import iso, iso_or_none, now_ms
from service.domain import FeedHealth, Subscription, Summary
from service.signing import public_key_text


def subscription_row(
    subscription: Subscription,
    summary: Summary,
    feed: FeedHealth | None = None,
    behind_after_ms: int = 0,
) -> SubscriptionRow:
    """One subscription with its deliveries at a glance, in the API's shape: the static headers
    with their values but the sensitive ones, named in `sensitiveHeaders` alone; a polling
    one's reader too (`feed`: behind when its oldest unread delivery is older than
    `behind_after_ms`)."""
    last = summary.last_delivery
    ordinary, sensitive = header_rules.shown(subscription.headers)
    return SubscriptionRow.model_validate(
        {
            "id": subscription.id,
            "url": subscription.url if not subscription.polled else None,
            "delivery": subscription.delivery.value,
            "feed": feed_state(feed, behind_after_ms) if subscription.polled else None,
            "events": list(subscription.events),
            "installedBy": subscription.installed_by,
            "active": subscription.active,
            "createdAt": iso(subscription.created_at),
            "deliveryCount": summary.delivery_count,
            "lastDelivery": None
            if last is None
            else {
                "status": last.status.value,
                "responseCode": last.response_code,
                "at": iso(last.at),
            },
            "deactivatedReason": subscription.deactivated_reason,
            "updatedBy": subscription.updated_by,
            "problem": Subscription.UNDECRYPTABLE if subscription.secret is None else None,
            "rateLimit": subscription.rate_limit,
            "headers": ordinary,
            "sensitiveHeaders": sensitive,
            "dataFields": None
            if subscription.data_fields is None
            else list(subscription.data_fields),
            "filter": None if subscription.filter is None else orjson.loads(subscription.filter),
            "successRate24h": summary.success_rate_24h,
            "p95LatencyMs24h": summary.p95_latency_ms_24h,
            "consecutiveFailures": subscription.consecutive_failures,
            "pendingCount": summary.pending_count,
            "nextRetryAt": iso_or_none(summary.next_retry_at),
            "ordering": subscription.ordering.value,
            "blockedCustomers": summary.blocked_customers,
            "oldestBlockedDelivery": None
            if summary.oldest_blocked is None
            else {
                "id": summary.oldest_blocked[0],
                "createdAt": iso(summary.oldest_blocked[1]),
            },
            "disabledAt": None if subscription.active else iso_or_none(subscription.disabled_at),
            "disabledReason": None if subscription.active else subscription.deactivated_reason,
            "signing": subscription.signing.value,
            "publicKey": public_key_or_none(subscription),
            "hmacHeaders": subscription.hmac_headers,
            "auth": endpointauth.shown(subscription.auth),
            "caCertificate": None
            if subscription.ca_certificate is None
            else endpointauth.certificate_shown(subscription.ca_certificate),
        }
    )


def public_key_or_none(subscription: Subscription) -> str | None:
    """An Ed25519 subscription's published public key (`whpk_…`); None for an HMAC one."""
    return None if subscription.public_key is None else public_key_text(subscription.public_key)


def feed_state(feed: FeedHealth | None, behind_after_ms: int) -> dict[str, object]:
    """A polling subscription's reader as its row shows it (`FeedState`)."""
    if feed is None:
        feed = FeedHealth(None, 0, None)
    oldest = feed.oldest_unread_at
    return {
        "lastReadAt": iso_or_none(feed.read_at),
        "unread": feed.unread,
        "oldestUnreadAt": iso_or_none(oldest),
        "behind": oldest is not None and now_ms() - oldest > behind_after_ms,
    }
