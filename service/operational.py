"""Operational events (docs/receivers.md, "Operational events"): what a customer's other
subscriptions are told about one of theirs — failing, disabled, recovered, a delivery exhausted,
a change — and what the audit trail records of a change. Pure: the store calls these inside the
transaction of the change that causes the event, and inserts what they return.

Every id here is derived from what caused it (the subscription, the kind, the time the cause
was stamped), never drawn at random, so the same cause written twice (a transaction retried, an
outcome recorded again) makes the same event and the same deliveries, which the store's unique
keys then keep once (docs/decisions/0015-operational-events-and-audit.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from ulid import ULID

from service import ids
from service.clock import iso
from service.domain import SYSTEM, Actor, AuditEntry, EndpointAuth, MutualTls
from service.events import (
    DELIVERY_EXHAUSTED,
    SUBSCRIPTION_CHANGED,
    SUBSCRIPTION_DISABLED,
    SUBSCRIPTION_FAILING,
    SUBSCRIPTION_RECOVERED,
)

AUDIT = "aud"
"""The prefix of an audit entry's id."""

AUDIT_ACTIONS = (
    "subscription.created",
    "subscription.updated",
    "subscription.secret_rotated",
    "subscription.deleted",
    "subscription.disabled",
    "subscription.failing",
    "subscription.recovered",
    "api_key.created",
    "api_key.revoked",
)
"""Every action of the audit trail: the changes, and the service's own verdicts on a
subscription (`failing`, `disabled`, `recovered`) beside the events that announce them."""


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """When a run of failures is announced as `failing`: after `attempts` failed attempts in a
    row, or once the first of them is `after_ms` old, whichever comes first."""

    attempts: int = 5
    after_ms: int = 3_600_000

    def failing(self, consecutive: int, failing_since: int, now: int) -> bool:
        return consecutive >= self.attempts or now - failing_since >= self.after_ms


def derived_id(prefix: str, at: int, *parts: str) -> str:
    """`<prefix>_<ULID>` whose time is `at` (epoch ms) and whose other 80 bits are a hash of
    `parts`: the same cause gives the same id, and ids still sort by time."""
    digest = hashlib.sha256("\x1f".join((prefix, *parts)).encode()).digest()
    return f"{prefix}_{ULID.from_bytes(max(at, 0).to_bytes(6, 'big') + digest[:10])}"


@dataclass(frozen=True, slots=True)
class OperationalEvent:
    """An operational event to record and fan out to the org's subscribers of `event`, but
    never to `subject`, the subscription it is about."""

    id: str
    org_id: str
    event: str
    at: int
    subject: str
    body: bytes = field(repr=False)

    def delivery_id(self, subscription_id: str) -> str:
        """The id of its delivery to a subscription: the same for the same event and
        subscription, whoever writes it."""
        return derived_id(ids.DELIVERY, self.at, self.id, subscription_id)


def _event(
    event: str, org_id: str, subject: str, at: int, *, cause: str, data: dict[str, Any]
) -> OperationalEvent:
    event_id = derived_id(ids.EVENT, at, event, subject, cause)
    envelope = {"id": event_id, "event": event, "occurredAt": iso(at), "orgId": org_id}
    return OperationalEvent(
        event_id, org_id, event, at, subject, orjson.dumps({**envelope, "data": data})
    )


@dataclass(frozen=True, slots=True)
class About:
    """The subscription an operational event is about, as its row stands."""

    id: str
    org_id: str
    url: str


def failing(
    about: About,
    *,
    failing_since: int,
    consecutive: int,
    status_code: int | None,
    error: str | None,
    at: int,
) -> OperationalEvent:
    """Its run of failures that began at `failing_since` reached the threshold, at `at`: one
    event per run (the run's start is its cause)."""
    data = {
        "subscriptionId": about.id,
        "url": about.url,
        "failingSince": iso(failing_since),
        "consecutiveFailures": consecutive,
        "lastStatusCode": status_code,
        "lastError": error,
    }
    return _event(
        SUBSCRIPTION_FAILING, about.org_id, about.id, at, cause=str(failing_since), data=data
    )


def system_entry(event: OperationalEvent, action: str, changes: dict[str, Any]) -> AuditEntry:
    """The audit entry of the service's own verdict that `event` announces (actor `system`),
    its id derived from the event's: written twice, it is kept once."""
    return AuditEntry(
        derived_id(AUDIT, event.at, event.id),
        event.org_id,
        event.at,
        SYSTEM,
        action,
        event.subject,
        None,
        changes,
    )


def disabled(about: About, reason: str, actor: Actor, at: int) -> OperationalEvent:
    """Deliveries to it stopped at `at`: by the service (`actor` is `system`) or by someone."""
    data = {
        "subscriptionId": about.id,
        "url": about.url,
        "reason": reason,
        "automatic": actor.kind.value == "system",
        "actor": actor.document(),
        "disabledAt": iso(at),
    }
    return _event(SUBSCRIPTION_DISABLED, about.org_id, about.id, at, cause="disabled", data=data)


def recovered(
    about: About, failing_since: int | None, alerted_at: int, at: int
) -> OperationalEvent:
    """Its first success (at `at`) since the `failing` or `disabled` event of `alerted_at`:
    one per such event (its time is the cause)."""
    data = {
        "subscriptionId": about.id,
        "url": about.url,
        "failingSince": None if failing_since is None else iso(failing_since),
        "recoveredAt": iso(at),
    }
    return _event(
        SUBSCRIPTION_RECOVERED, about.org_id, about.id, at, cause=str(alerted_at), data=data
    )


def exhausted(
    about: About,
    *,
    delivery_id: str,
    event_id: str,
    event: str,
    attempts: int,
    status_code: int | None,
    error: str | None,
    at: int,
) -> OperationalEvent:
    """Its delivery `delivery_id` failed its last attempt (one event per delivery)."""
    data = {
        "subscriptionId": about.id,
        "url": about.url,
        "deliveryId": delivery_id,
        "eventId": event_id,
        "eventType": event,
        "attempts": attempts,
        "lastStatusCode": status_code,
        "lastError": error,
    }
    return _event(DELIVERY_EXHAUSTED, about.org_id, about.id, at, cause=delivery_id, data=data)


def changed(
    about: About, action: str, actor: Actor, *, changes: dict[str, Any], at: int, cause: str
) -> OperationalEvent:
    """It was created, updated, its secret rotated or deleted by `actor` (`cause`: the audit
    entry's id, one event per change)."""
    data = {
        "subscriptionId": about.id,
        "url": about.url,
        "action": action,
        "actor": actor.document(),
        "changes": changes,
    }
    return _event(SUBSCRIPTION_CHANGED, about.org_id, about.id, at, cause=cause, data=data)


# The store's names of a PATCH's fields, as the API spells them.
WIRE_NAMES: Mapping[str, str] = {
    "url": "url",
    "events": "events",
    "active": "active",
    "installed_by": "installedBy",
    "rate_limit": "rateLimit",
    "headers": "headers",
    "ordering": "ordering",
    "data_fields": "dataFields",
    "signing": "signing",
    "hmac_headers": "hmacHeaders",
    "content_filter": "filter",
    "auth": "auth",
    "ca_certificate": "caCertificate",
}
# Fields whose old and new values are shown: settings, never a secret nor personal data.
PLAIN = ("url", "events", "active", "installed_by", "rate_limit", "ordering", "data_fields")
PLAIN_ENUMS = ("signing", "hmac_headers")


def update_changes(before: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """What a PATCH changed, as the audit trail and the `changed` event show it: `fields`, the
    names given; old and new values of the plain settings (`before`: the row as it was, in the
    store's names and types); of static headers only the names set and removed; of a content
    filter, endpoint credentials or a CA only whether one is set now (and the kind of
    credentials), never a value."""
    changes: dict[str, Any] = {"fields": sorted(WIRE_NAMES[name] for name in given)}
    for name, value in given.items():
        wire = WIRE_NAMES[name]
        if name in PLAIN or name in PLAIN_ENUMS:
            changes[wire] = {"old": _plain(before.get(name)), "new": _plain(value)}
        elif name == "headers":
            patch: Mapping[str, str | None] | None = value
            changes[wire] = (
                {"removedAll": True}
                if patch is None
                else {
                    "set": sorted(k for k, v in patch.items() if v is not None),
                    "removed": sorted(k for k, v in patch.items() if v is None),
                }
            )
        elif name == "auth":
            changes[wire] = {"type": _auth_kind(value)}
        else:  # content_filter, ca_certificate: whether one is set now
            changes[wire] = {"set": value is not None}
    return changes


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return list(value)
    if hasattr(value, "value"):  # an enum
        return value.value
    return value


def _auth_kind(auth: EndpointAuth | None) -> str | None:
    if auth is None:
        return None
    return "mtls" if isinstance(auth, MutualTls) else "oauth_client_credentials"


def created_changes(
    url: str, events: Sequence[str], delivery: str, options: Iterable[str]
) -> dict[str, Any]:
    """What a new subscription was made with: its URL, events and delivery, and the names of
    the other settings it was given (`options`, the store's names), never their values."""
    return {
        "url": url,
        "events": list(events),
        "delivery": delivery,
        "fields": sorted(WIRE_NAMES.get(name, name) for name in options),
    }
