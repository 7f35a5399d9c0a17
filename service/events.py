"""The event envelope and the Identity Platform event catalog (docs/contract.md, "Events in").

`parse_event` turns one Kafka record value into exactly one of three outcomes:

- `Accepted`: a well-formed envelope of a catalog event. Its `body` is the compact JSON of the
  object the producer sent (unknown fields kept, nothing re-serialised through a model, every
  integer exact however wide): the bytes that are signed and POSTed.
- `Skipped`: a well-formed envelope whose event is outside the catalog (a future event type is not
  an error), or a `webhook.test` or an operational event (`OPERATIONAL`), which only this
  service creates.
- `Rejected`: anything else, for the dead-letter topic. `reason` goes into the `x-dlq-reason`
  header, so it is short ASCII built only from fixed words and known field names, never from the
  payload. The reasons:

  | reason | the record value |
  |---|---|
  | `empty` | is missing (a tombstone) or zero bytes |
  | `too_large` | is longer than `max_bytes` |
  | `invalid_utf8` | is not UTF-8 |
  | `invalid_json` | is UTF-8 but not one JSON document |
  | `not_an_object` | is JSON but not an object (array, string, number, null) |
  | `missing_field:<f>` | lacks the required field `<f>` |
  | `invalid_field:<f>` | has `<f>` of the wrong type, empty, or an unparsable timestamp |
  | `too_deep` | nests deeper than the JSON encoder allows (254 levels) |

  `<f>` is an envelope field (`id`, `event`, `occurredAt`, `orgId`, `data`) or a data field
  written `data.<name>`, e.g. `invalid_field:data.score`.

Validation is strict on structure and types and open on values: ids are non-empty strings, `score`
is a JSON number (never a boolean or a string), timestamps are RFC 3339 strings with an offset,
while a new `method`, `status` or `kycLevel` string passes and extra fields are kept. Fields that
may be `null` (the key must still be present): `verification.created` `score` (a check that yields
no score, e.g. a NIK format check or a pending verification), `customer.kyc_updated`
`kycLastVerifiedAt` (a tier the customer holds without ever having verified) and `kycExpiresAt`
(a tier that does not expire), `review.overridden` `reason` (the dashboard does not require one,
and it may also be empty).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
)

from service.ids import EVENT, new_id

CATALOG: tuple[str, ...] = ("verification.created", "customer.kyc_updated", "review.overridden")
TEST_EVENT = "webhook.test"
# Operational events: about the org's own subscriptions, made by this service in the transaction
# of the change that causes them (service/operational.py), never read from Kafka.
SUBSCRIPTION_FAILING = "webhook.subscription.failing"
SUBSCRIPTION_DISABLED = "webhook.subscription.disabled"
SUBSCRIPTION_RECOVERED = "webhook.subscription.recovered"
DELIVERY_EXHAUSTED = "webhook.delivery.exhausted"
SUBSCRIPTION_CHANGED = "webhook.subscription.changed"
OPERATIONAL: tuple[str, ...] = (
    SUBSCRIPTION_FAILING,
    SUBSCRIPTION_DISABLED,
    SUBSCRIPTION_RECOVERED,
    DELIVERY_EXHAUSTED,
    SUBSCRIPTION_CHANGED,
)
SUBSCRIBABLE: tuple[str, ...] = (*CATALOG, *OPERATIONAL)
"""What a subscription's `events` may hold: the domain catalog and the operational events."""

MAX_ID_LENGTH = 200

# RFC 3339 `date-time`: full date, `T`, full time with optional fraction, and a mandatory offset.
# `datetime.fromisoformat` alone also takes dates without a time, basic format and naive times.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)


def parse_time(value: object) -> datetime:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 timestamp such as 2026-05-24T08:15:12.481Z")
    # Python 3.11 reads `Z` but not the lower-case `t`/`z` that RFC 3339 also allows.
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is before year 1 in UTC.
        raise ValueError("the timestamp is out of range") from None


Timestamp = Annotated[
    datetime,
    PlainValidator(parse_time),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An RFC 3339 timestamp string with an offset, parsed to an aware datetime in UTC."""

NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
# Identifiers we store as text and index: no control characters (PostgreSQL text cannot hold NUL,
# and a record that cannot be stored must be dead-lettered, not crash the consumer).
Identifier = Annotated[
    StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1F\x7F]+$")
]


class _Model(BaseModel):
    # Fields are named as on the wire. Extra fields are allowed; the delivered body keeps them
    # anyway, since it is the producer's object, not a dump of the model.
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class VerificationCreatedData(_Model):
    """`data` of `verification.created`: a new verification was persisted."""

    verificationId: NonEmptyStr
    customerId: NonEmptyStr
    method: NonEmptyStr
    status: NonEmptyStr
    score: StrictInt | StrictFloat | None


class CustomerKycUpdatedData(_Model):
    """`data` of `customer.kyc_updated`: the customer's KYC tier went up or down."""

    customerId: NonEmptyStr
    kycLevel: NonEmptyStr
    kycLastVerifiedAt: Timestamp | None
    kycExpiresAt: Timestamp | None


class ReviewOverriddenData(_Model):
    """`data` of `review.overridden`: an analyst overrode a verification verdict."""

    verificationId: NonEmptyStr
    customerId: NonEmptyStr
    actorUserId: NonEmptyStr
    fromStatus: NonEmptyStr
    toStatus: NonEmptyStr
    reason: StrictStr | None


class WebhookTestData(_Model):
    """`data` of `webhook.test`, which only this service creates (`POST …/{id}/test`)."""

    source: NonEmptyStr


class ActorData(_Model):
    """Who made a change: an API key (its id and name), `cli` (the operating-system user who
    ran the command) or `system` (the service itself: 410 Gone, the failure clock)."""

    type: Literal["api_key", "cli", "system"]
    id: StrictStr | None
    name: StrictStr | None


class SubscriptionFailingData(_Model):
    """`data` of `webhook.subscription.failing`: a subscription's attempts have failed for the
    threshold (`WEBHOOKS_FAILING_AFTER_ATTEMPTS` in a row, or `WEBHOOKS_FAILING_AFTER`), once per
    run of failures."""

    subscriptionId: NonEmptyStr
    url: StrictStr
    failingSince: Timestamp
    consecutiveFailures: StrictInt
    lastStatusCode: StrictInt | None
    lastError: StrictStr | None


class SubscriptionDisabledData(_Model):
    """`data` of `webhook.subscription.disabled`: deliveries to it stopped, by the service (410
    Gone, the failure clock) or by someone (`actor`)."""

    subscriptionId: NonEmptyStr
    url: StrictStr
    reason: NonEmptyStr
    automatic: bool
    actor: ActorData
    disabledAt: Timestamp


class SubscriptionRecoveredData(_Model):
    """`data` of `webhook.subscription.recovered`: the first success after a `failing` or
    `disabled` event about it."""

    subscriptionId: NonEmptyStr
    url: StrictStr
    failingSince: Timestamp | None
    recoveredAt: Timestamp


class DeliveryExhaustedData(_Model):
    """`data` of `webhook.delivery.exhausted`: a delivery failed its last attempt (its schedule
    spent, or 410 Gone); the event is in the subscription's delivery log for a redelivery."""

    subscriptionId: NonEmptyStr
    url: StrictStr
    deliveryId: NonEmptyStr
    eventId: NonEmptyStr
    eventType: NonEmptyStr
    attempts: StrictInt
    lastStatusCode: StrictInt | None
    lastError: StrictStr | None


class SubscriptionChangedData(_Model):
    """`data` of `webhook.subscription.changed`: created, updated, its secret rotated, or
    deleted, by `actor`. `changes` names what changed, never a value that is a secret: a URL's
    and other plain settings' old and new values, only the names of headers, and only that
    a filter, credentials or a CA changed."""

    subscriptionId: NonEmptyStr
    url: StrictStr
    action: Literal["created", "updated", "secret_rotated", "deleted"]
    actor: ActorData
    changes: dict[str, Any]


DATA_MODELS: Mapping[str, type[_Model]] = {
    "verification.created": VerificationCreatedData,
    "customer.kyc_updated": CustomerKycUpdatedData,
    "review.overridden": ReviewOverriddenData,
    TEST_EVENT: WebhookTestData,
    SUBSCRIPTION_FAILING: SubscriptionFailingData,
    SUBSCRIPTION_DISABLED: SubscriptionDisabledData,
    SUBSCRIPTION_RECOVERED: SubscriptionRecoveredData,
    DELIVERY_EXHAUSTED: DeliveryExhaustedData,
    SUBSCRIPTION_CHANGED: SubscriptionChangedData,
}


class Envelope(_Model):
    """The record value: `{id, event, occurredAt, orgId, data}`, extra top-level fields kept."""

    id: Identifier
    event: Identifier
    occurredAt: Timestamp
    orgId: Identifier
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Accepted:
    """A catalog event to fan out; `body` is what is signed and sent."""

    event_id: str
    event: str
    org_id: str
    occurred_at: datetime
    body: bytes
    customer_id: str | None = None  # `data.customerId` (`customer_key`)
    # The envelope as parsed (integers too wide for 64 bits read as floats): what content
    # filters read, so that matching parses nothing again.
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    verification_id: str | None = None  # `data.verificationId`, what search finds it by


@dataclass(frozen=True, slots=True)
class Skipped:
    """A well-formed event this service does not deliver. `event` is the producer's string."""

    event: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record for the dead-letter topic; `reason` is one of the module docstring's table."""

    reason: str


def parse_event(value: bytes | None, max_bytes: int) -> Accepted | Skipped | Rejected:
    """Classify one Kafka record value. Never raises, whatever the bytes: a record that trips
    an unforeseen error is dead-lettered, never allowed to crash the consumer on every replay."""
    try:
        return _parse_event(value, max_bytes)
    except Exception:  # noqa: BLE001 - the poison-record backstop
        return Rejected("unparseable")


def _parse_event(value: bytes | None, max_bytes: int) -> Accepted | Skipped | Rejected:
    if not value:
        return Rejected("empty")
    if len(value) > max_bytes:
        return Rejected("too_large")
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return Rejected("invalid_utf8")
        return Rejected("invalid_json")
    if not isinstance(decoded, dict):
        return Rejected("not_an_object")
    try:
        envelope = Envelope.model_validate(decoded)
    except ValidationError as exc:
        return Rejected(_reason(exc, Envelope, ""))
    event = envelope.event
    model = DATA_MODELS.get(event)
    if model is None or event == TEST_EVENT or event in OPERATIONAL:
        return Skipped(event)
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        return Rejected(_reason(exc, model, "data."))
    try:
        body = orjson.dumps(decoded)
    except orjson.JSONEncodeError:
        return Rejected("too_deep")
    if _wide_integer_in(value):
        body = _exact_body(value)
    return Accepted(
        event_id=envelope.id,
        event=event,
        org_id=envelope.orgId,
        occurred_at=envelope.occurredAt,
        body=body,
        customer_id=customer_key(getattr(data, "customerId", None)),
        document=decoded,
        verification_id=customer_key(getattr(data, "verificationId", None)),
    )


def customer_key(customer_id: object) -> str | None:
    """The customer an event is about (`data.customerId`), when it names one: its ordering key,
    and what an erasure finds it by. The store keeps only its keyed hash."""
    return customer_id if isinstance(customer_id, str) and customer_id else None


# An integer literal that may not fit in 64 bits (below -2**63, or 20 digits and more): orjson
# reads those as floats, which would deliver 123456789012345678901234567890 as
# 1.2345678901234568e+29. Also matches digits inside strings, which only costs a slower parse.
_WIDE_INTEGER = re.compile(rb"-[0-9]{19}|[0-9]{20}")
# What any such literal contains: 19 digits in a row, looked for as 19 zeros in the value with
# every digit written 0 and every other byte a space (two passes in C, several times faster
# than a regex, which tries a match at every digit). The exact pattern runs only where found.
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGITS = b"0" * 19


def _wide_integer_in(value: bytes) -> bool:
    """Whether `value` may hold an integer literal orjson would read as a float."""
    return _LONG_DIGITS in value.translate(_DIGITS) and _WIDE_INTEGER.search(value) is not None


def _exact_body(value: bytes) -> bytes:
    """The compact JSON of a value orjson has already accepted (valid UTF-8, no lone surrogates,
    no NaN, nesting it can write), read again by Python's own parser, which keeps every integer
    exact. Only for the rare record with a wide integer: it is several times slower."""
    decoded = json.loads(value.decode("utf-8"))
    return json.dumps(decoded, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def project(body: bytes, fields: Collection[str]) -> bytes:
    """The envelope `body` as a subscription with `dataFields` receives it: `data` holds only
    the keys in `fields`, in the event's order (a key the event lacks is simply absent), and
    every top-level field is kept, in its order. The body itself when nothing is left out (or
    it has no `data` object to cut, which no accepted event lacks).

    One parse and one write: orjson's, or Python's own where the body holds an integer orjson
    would read as a float (`_exact_body`), so every integer stays exact."""
    exact = _wide_integer_in(body)
    try:
        envelope = json.loads(body.decode("utf-8")) if exact else orjson.loads(body)
    except ValueError:  # never for a stored event; sent as it is rather than not at all
        return body
    data = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(data, dict):
        return body
    wanted = frozenset(fields)
    kept = {key: value for key, value in data.items() if key in wanted}
    if len(kept) == len(data):
        return body
    envelope["data"] = kept
    if exact:
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return orjson.dumps(envelope)


def _reason(exc: ValidationError, model: type[BaseModel], prefix: str) -> str:
    # Only the first problem is named; the field name comes from the model, never the input.
    error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    location = error["loc"]
    first = location[0] if location else ""
    name = first if isinstance(first, str) and first in model.model_fields else "?"
    kind = "missing_field" if error["type"] == "missing" else "invalid_field"
    return f"{kind}:{prefix}{name}"


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and `Z`, e.g. `2026-05-24T11:42:18.122Z`
    (docs/contract.md, "The API").

    Sub-millisecond digits are cut, not rounded. A naive datetime is a bug and raises ValueError.
    """
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("format_time needs an aware datetime")
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def test_event_body(org_id: str, now: datetime) -> tuple[str, bytes]:
    """A fresh `webhook.test` envelope for `org_id`: its event id and its compact JSON body."""
    event_id = new_id(EVENT)
    envelope = {
        "id": event_id,
        "event": TEST_EVENT,
        "occurredAt": format_time(now),
        "orgId": org_id,
        "data": {"source": "test"},
    }
    return event_id, orjson.dumps(envelope)


# The name starts with `test_`; this keeps pytest from collecting it where a test module imports it.
test_event_body.__test__ = False  # type: ignore[attr-defined]
