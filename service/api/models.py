"""The API's request and response shapes, one source for validation and for the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from pydantic.config import JsonDict

from service import endpointauth
from service import headers as header_rules
from service.clock import iso
from service.domain import (
    ClientAuth,
    EndpointAuth,
    ErasureReceipt,
    MutualTls,
    OAuthClientCredentials,
)
from service.events import SUBSCRIBABLE, Timestamp
from service.filters import (
    ENVELOPE_FIELDS,
    LOGICAL,
    MAX_BYTES,
    MAX_DEPTH,
    MAX_IN,
    MAX_NUMBER,
    MAX_OPERATORS,
    FilterError,
)
from service.filters import check_filter as _check_filter
from service.operations.recovery import ReplayAsk

MAX_URL_LENGTH = 2048
MAX_INSTALLED_BY = 200
# Free text we store: printable, no control characters (PostgreSQL text cannot hold NUL).
_PRINTABLE = r"^[^\x00-\x1F\x7F]*$"

EventName = Literal[
    "verification.created",
    "customer.kyc_updated",
    "review.overridden",
    "webhook.subscription.failing",
    "webhook.subscription.disabled",
    "webhook.subscription.recovered",
    "webhook.delivery.exhausted",
    "webhook.subscription.changed",
]
assert set(EventName.__args__) == set(SUBSCRIBABLE)  # type: ignore[attr-defined]

Errors = list[tuple[str, str]]
"""(field, message) pairs: what is wrong with the input, all of it at once."""


def _field(loc: Sequence[int | str]) -> str:
    """pydantic's location as a field path: ("events", 1) -> "events[1]"."""
    path = ""
    if len(loc) > 1 and loc[0] == "auth" and loc[1] in AUTH_TYPES:
        loc = [loc[0], *loc[2:]]  # the union's tag: `auth.tokenUrl`, not `auth.mtls.tokenUrl`
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "(body)"


def field_messages(exc: ValidationError) -> Errors:
    """A request model's validation errors as (field, message) pairs, in our words."""
    out = []
    for error in exc.errors():
        kind = error["type"]
        message = str(error["msg"]).removeprefix("Value error, ")
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, FilterError):
            # The place inside the filter, e.g. filter.data.score.$lt.
            place = _field(error["loc"])
            out.append((f"{place}.{cause.place}" if cause.place else place, cause.message))
            continue
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "is required"
        out.append((_field(error["loc"]), message))
    return out


def _events_rule(events: list[str]) -> list[str]:
    if not events:
        raise ValueError("must name at least one event")
    seen: set[str] = set()
    for event in events:
        if event in seen:
            raise ValueError(f"{event!r} is listed twice")
        seen.add(event)
    return events


class _Request(BaseModel):
    # Unknown fields are an error, not silently dropped: a typo must not look like success.
    model_config = ConfigDict(extra="forbid", strict=True)


# What the handlers check beyond the types, said in the document too (the messages stay ours).
def _documented(**extra: JsonValue) -> Callable[[JsonDict], None]:
    def apply(schema: JsonDict) -> None:
        # PATCH's optional fields may be left out but not null (the handler answers "cannot be
        # null"): the document shows the non-null branch alone, and no default.
        branches = schema.pop("anyOf", None)
        if isinstance(branches, list):
            (kept,) = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"]
            schema.update(kept)
        schema.pop("default", None)
        schema.update(extra)

    return apply


_EVENTS_SCHEMA = _documented(minItems=1, uniqueItems=True)
_URL_SCHEMA = _documented(pattern="^https?://")
_NOT_NULL = _documented()


MAX_RATE_LIMIT = 10_000
MAX_DATA_FIELDS = 100
MAX_DATA_FIELD_LENGTH = 100

OrderingName = Annotated[
    Literal["none", "customer"],
    Field(
        description='"customer": one customer\'s deliveries (by data.customerId) go out one '
        "at a time, in order; a failing one holds up only its own customer's queue.",
    ),
]
SigningName = Annotated[
    Literal["hmac", "ed25519"],
    Field(
        description='What signs the Standard Webhooks header (webhook-signature): "hmac" (v1, '
        'HMAC-SHA256 with the secret) or "ed25519" (v1a, with a key pair the service makes: '
        "its public key is `publicKey`). Changing it to ed25519 makes a new pair.",
    ),
]
HmacHeaders = Annotated[
    StrictBool,
    Field(
        description="false: no X-Identity-Signature nor X-Quantum-Signature (HMAC with the "
        "secret, they have no asymmetric form); the Standard Webhooks headers are then its "
        "signature. true by default, for an Ed25519 subscription too.",
    ),
]
PUBLIC_KEY_TEXT = (
    "Ed25519 subscriptions: the public key that verifies their v1a signatures, `whpk_` and the "
    "standard base64 of its 32 raw bytes; null for hmac."
)
RateLimit = Annotated[
    StrictInt,
    Field(
        ge=1,
        le=MAX_RATE_LIMIT,
        description="Deliveries per second at most, per process running the dispatcher. "
        "What waits stays in the store.",
    ),
]
_RESERVED_TEXT = (
    "The names the service sets (Content-Type, User-Agent, Host, Content-Length, X-Identity-*, "
    "X-Quantum-*, X-Sibling-Service, webhook-id, webhook-timestamp, webhook-signature) and "
    "hop-by-hop ones are refused."
)
_SENSITIVE_TEXT = (
    "A sensitive header's value (Authorization, Cookie, and any name containing token, "
    "secret, key, password, auth, credential, session, signature or cookie, in any case) is "
    "write-only: it is sent, never shown."
)
Headers = Annotated[
    dict[StrictStr, StrictStr],
    Field(
        description=f"Sent with every delivery: at most {header_rules.MAX_HEADERS} headers and "
        f"{header_rules.MAX_HEADER_BYTES} bytes of names and values. {_RESERVED_TEXT} "
        f"{_SENSITIVE_TEXT}",
        json_schema_extra={"maxProperties": header_rules.MAX_HEADERS},
    ),
]
HeadersPatch = Annotated[
    dict[StrictStr, StrictStr | None],
    Field(
        description="A JSON merge patch (RFC 7386) of the static headers, by name (names ignore "
        "case): a value sets or replaces that header, null removes it, a header not named is "
        'kept; `"headers": null` removes them all. The result holds at most '
        f"{header_rules.MAX_HEADERS} headers and {header_rules.MAX_HEADER_BYTES} bytes of "
        f"names and values. {_RESERVED_TEXT} {_SENSITIVE_TEXT}",
        json_schema_extra={"maxProperties": header_rules.MAX_PATCH},
    ),
]
DataFields = Annotated[
    list[
        Annotated[
            StrictStr,
            Field(min_length=1, max_length=MAX_DATA_FIELD_LENGTH, pattern=_PRINTABLE),
        ]
    ],
    Field(
        min_length=1,
        max_length=MAX_DATA_FIELDS,
        description="The keys of the event's `data` to send, e.g. "
        '["verificationId", "customerId", "status"]; the envelope\'s other fields are always '
        "sent. A key the event lacks is left out. null (the default): every field.",
        json_schema_extra={"uniqueItems": True},
    ),
]


_FILTER_TEXT = (
    'A content filter (docs/api.md, "Content filters"): only the events of its types that it '
    "matches are delivered. Field names lead into the event (nested objects are paths: "
    '{"data": {"score": {"$lt": 60}}}), a plain value means equality, and the operators are '
    "$eq $neq $in $nin $gt $gte $lt $lte $exist on a field, $and $or $not on filters; the top "
    "level reads event, occurredAt, orgId and data. A value of a type an operator does not take "
    f"is a non-match. At most {MAX_BYTES} bytes of JSON, {MAX_DEPTH} levels, {MAX_OPERATORS} "
    f"operators, {MAX_IN} values per $in list, numbers within ±{MAX_NUMBER}."
)
_FILTER_EXAMPLE: dict[str, JsonValue] = {
    "data": {"status": {"$in": ["rejected", "requires_review"]}, "score": {"$lt": 60}}
}
ContentFilter = Annotated[
    dict[str, Any],
    Field(
        description=_FILTER_TEXT,
        json_schema_extra={
            "minProperties": 1,
            # The names the top level takes: the envelope's fields and the logical operators.
            "propertyNames": {"enum": [*ENVELOPE_FIELDS, *LOGICAL]},
            "examples": [_FILTER_EXAMPLE],
        },
    ),
]
AUTH_TYPES = ("oauth2_client_credentials", "mtls")
_PEM_TEXT = f"PEM, at most {endpointauth.MAX_PEM // 1024} KiB"


class OAuthClientCredentialsAuth(_Request):
    """Deliveries carry an OAuth 2.0 access token had by the client credentials grant."""

    type: Literal["oauth2_client_credentials"]
    tokenUrl: StrictStr = Field(
        max_length=MAX_URL_LENGTH,
        description="The token endpoint; https, and held to the same address rules as `url`.",
        json_schema_extra=_URL_SCHEMA,
    )
    clientId: StrictStr = Field(min_length=1, max_length=256, pattern=_PRINTABLE)
    clientSecret: StrictStr | None = Field(
        None,
        min_length=1,
        max_length=1024,
        pattern=_PRINTABLE,
        description="Write-only: never shown. Required when the subscription has no OAuth "
        "client secret yet; left out of a PATCH, the stored one is kept.",
        json_schema_extra=_NOT_NULL,
    )
    scope: StrictStr | None = Field(None, min_length=1, max_length=1024, pattern=_PRINTABLE)
    audience: StrictStr | None = Field(
        None, min_length=1, max_length=MAX_URL_LENGTH, pattern=_PRINTABLE
    )
    clientAuth: Literal["basic", "body"] = Field(
        "basic",
        description="How the client authenticates to the token endpoint: HTTP Basic, or "
        "client_id and client_secret in the form body.",
    )


class MutualTlsAuth(_Request):
    """Deliveries present a client certificate on the TLS handshake."""

    type: Literal["mtls"]
    certificate: StrictStr = Field(
        min_length=1,
        max_length=endpointauth.MAX_PEM,
        description=f"{_PEM_TEXT}: the client certificate, then any intermediates.",
    )
    privateKey: StrictStr = Field(
        min_length=1,
        max_length=endpointauth.MAX_PEM,
        description=f"{_PEM_TEXT}, unencrypted: the certificate's key. Write-only: never shown.",
    )


Auth = Annotated[
    OAuthClientCredentialsAuth | MutualTlsAuth,
    Field(
        discriminator="type",
        description="How deliveries authenticate to the endpoint beyond the signature; null: "
        "they do not. Its credentials are write-only.",
    ),
]
CaCertificate = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=endpointauth.MAX_PEM,
        description=f"{_PEM_TEXT}: the only CAs the endpoint's certificate may chain to "
        "(instead of the system's); null: the system's.",
    ),
]


def _filter_rule(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is not None:
        _check_filter(document)
    return document


def auth_errors(
    auth: OAuthClientCredentialsAuth | MutualTlsAuth | None,
    ca_certificate: str | None,
    *,
    creating: bool,
) -> Errors:
    """What is wrong with a request's `auth` and `caCertificate` beyond their types (the token
    URL's address is the handler's to check)."""
    errors: Errors = []
    if isinstance(auth, OAuthClientCredentialsAuth) and auth.clientSecret is None:
        if "clientSecret" in auth.model_fields_set:
            errors.append(("auth.clientSecret", "cannot be null (leave it out to keep it)"))
        elif creating:
            errors.append(("auth.clientSecret", "is required"))
    if isinstance(auth, MutualTlsAuth):
        try:
            endpointauth.check_mtls(auth.certificate, auth.privateKey)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            errors.append((f"auth.{field}", message))
    if ca_certificate is not None:
        try:
            endpointauth.check_ca_bundle(ca_certificate)
        except ValueError as exc:
            errors.append(("caCertificate", str(exc)))
    return errors


def endpoint_auth(auth: OAuthClientCredentialsAuth | MutualTlsAuth | None) -> EndpointAuth | None:
    """A request's `auth` as the domain's; an OAuth client secret left out is
    `endpointauth.KEEP_SECRET` (the store keeps the stored one)."""
    if auth is None:
        return None
    if isinstance(auth, MutualTlsAuth):
        return MutualTls(certificate=auth.certificate, private_key=auth.privateKey)
    return OAuthClientCredentials(
        token_url=auth.tokenUrl,
        client_id=auth.clientId,
        client_secret=auth.clientSecret or endpointauth.KEEP_SECRET,
        scope=auth.scope,
        audience=auth.audience,
        client_auth=ClientAuth(auth.clientAuth),
    )


def _headers_rule(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None:
        header_rules.check(value)
    return value


def _headers_patch_rule(patch: dict[str, str | None] | None) -> dict[str, str | None] | None:
    if patch is not None:
        header_rules.check_patch(patch)
    return patch


def _data_fields_rule(fields: list[str] | None) -> list[str] | None:
    if fields is None:
        return None
    seen: set[str] = set()
    for name in fields:
        if name in seen:
            raise ValueError(f"{name[:100]!r} is listed twice")
        seen.add(name)
    return fields


DeliveryName = Annotated[
    Literal["push", "poll"],
    Field(
        description='"push" (the default): each delivery is POSTed to `url`. "poll": no URL; '
        "deliveries are kept in the subscription's feed and read with GET …/{id}/events, "
        "signed as a push would be.",
    ),
]


class CreateSubscription(_Request):
    url: StrictStr | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        json_schema_extra=_documented(pattern="^https?://"),
        description='Where deliveries are POSTed: required for "push", refused for "poll".',
    )
    delivery: DeliveryName = "push"
    events: list[EventName] = Field(json_schema_extra=_EVENTS_SCHEMA)
    installedBy: StrictStr | None = Field(None, max_length=MAX_INSTALLED_BY, pattern=_PRINTABLE)
    rateLimit: RateLimit | None = None
    headers: Headers | None = None
    ordering: OrderingName = "none"
    dataFields: DataFields | None = None
    signing: SigningName = "hmac"
    hmacHeaders: HmacHeaders = True
    filter: ContentFilter | None = None
    auth: Auth | None = None
    caCertificate: CaCertificate | None = None

    _events = field_validator("events")(_events_rule)
    _headers = field_validator("headers")(_headers_rule)
    _data_fields = field_validator("dataFields")(_data_fields_rule)
    _filter = field_validator("filter")(_filter_rule)


class PatchSubscription(_Request):
    # `installedBy` may be null, which clears it; the others may only be left out.
    url: StrictStr | None = Field(None, max_length=MAX_URL_LENGTH, json_schema_extra=_URL_SCHEMA)
    events: list[EventName] | None = Field(None, json_schema_extra=_EVENTS_SCHEMA)
    active: StrictBool | None = Field(None, json_schema_extra=_NOT_NULL)
    installedBy: StrictStr | None = Field(None, max_length=MAX_INSTALLED_BY, pattern=_PRINTABLE)
    # null clears these: no limit, no headers, every data field
    rateLimit: RateLimit | None = None
    headers: HeadersPatch | None = None
    ordering: OrderingName | None = Field(None, json_schema_extra=_NOT_NULL)
    dataFields: DataFields | None = None
    signing: SigningName | None = Field(None, json_schema_extra=_NOT_NULL)
    hmacHeaders: HmacHeaders | None = Field(None, json_schema_extra=_NOT_NULL)
    filter: ContentFilter | None = None  # null: every event of its types
    auth: Auth | None = None
    caCertificate: CaCertificate | None = None

    _headers = field_validator("headers")(_headers_patch_rule)
    _data_fields = field_validator("dataFields")(_data_fields_rule)
    _filter = field_validator("filter")(_filter_rule)

    @field_validator("events")
    @classmethod
    def _events(cls, events: list[str] | None) -> list[str] | None:
        return None if events is None else _events_rule(events)


class LastDelivery(BaseModel):
    status: Literal["sent", "retrying", "failed", "pending", "available"]
    responseCode: int | None
    at: str


class BlockedDelivery(BaseModel):
    id: str
    createdAt: str


class CertificateShown(BaseModel):
    subject: str = Field(description="RFC 4514, e.g. CN=webhooks.example.com,O=Example")
    issuer: str
    notAfter: str = Field(description="When it expires.")
    sha256: str = Field(description="The certificate's SHA-256 fingerprint, hex.")


class AuthShown(BaseModel):
    """`auth` as reads show it: no client secret, no private key."""

    type: Literal["oauth2_client_credentials", "mtls"]
    tokenUrl: str | None = None
    clientId: str | None = None
    scope: str | None = None
    audience: str | None = None
    clientAuth: Literal["basic", "body"] | None = None
    certificate: CertificateShown | None = Field(
        None, description="mtls: the client certificate (the first of the chain)."
    )


class FeedState(BaseModel):
    lastReadAt: str | None = Field(description="When its feed was last read; null: never.")
    unread: int = Field(description="Deliveries put in its feed after the reader's cursor.")
    oldestUnreadAt: str | None = Field(
        description="When the oldest of those entered the feed; null when all are read."
    )
    behind: bool = Field(
        description="The oldest unread delivery is older than WEBHOOKS_FEED_BEHIND (15 "
        "minutes by default): the reader is not keeping up (as a failing endpoint, it alerts)."
    )


class SubscriptionRow(BaseModel):
    id: str
    url: str | None = Field(description='Where deliveries are POSTed; null for "poll".')
    delivery: Literal["push", "poll"] = "push"
    feed: FeedState | None = Field(
        None, description='"poll" only: how its reader stands; null for "push".'
    )
    events: list[str]
    installedBy: str | None
    active: bool
    createdAt: str
    deliveryCount: int
    lastDelivery: LastDelivery | None
    deactivatedReason: str | None = Field(
        None,
        description="Why the service deactivated it (410 Gone, failing too long); null if active.",
    )
    updatedBy: str | None = Field(
        None,
        description="Who last changed it: the API key's id, cli:<operating-system user>, or "
        "system (the service, e.g. when it deactivated it); null before the audit trail began.",
    )
    problem: str | None = Field(
        None,
        description="Why its deliveries cannot go out now although it is active (its signing "
        "secret cannot be decrypted with the configured keys); null when nothing stops them.",
    )
    rateLimit: int | None = None
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="The static headers sent with every delivery, with their values, except the "
        "sensitive ones (`sensitiveHeaders`).",
    )
    sensitiveHeaders: list[str] = Field(
        default_factory=list,
        description="The names of the sensitive static headers, sent with every delivery too: "
        "their values are write-only, never shown (PATCH one to replace it, or null it).",
    )
    dataFields: list[str] | None = Field(
        None,
        description="The keys of the event's `data` its deliveries carry; null: every field.",
    )
    filter: dict[str, Any] | None = Field(
        None,
        description="Its content filter: only the events of its types that it matches are "
        "delivered; null: every event of its types.",
    )
    successRate24h: float | None = Field(
        None, description="2xx attempts / attempts in the last 24 hours; null without attempts."
    )
    p95LatencyMs24h: int | None = Field(
        None,
        description="95th percentile of attempt durations in the last 24 hours, from latency "
        "buckets; null without attempts.",
    )
    consecutiveFailures: int = Field(0, description="Failed attempts since the last success.")
    pendingCount: int = Field(0, description="Deliveries waiting to be sent or retried.")
    nextRetryAt: str | None = Field(None, description="When the earliest retry is due.")
    ordering: Literal["none", "customer"] = "none"
    blockedCustomers: int = Field(
        0, description="Ordered: customers whose queue waits behind a failing delivery."
    )
    oldestBlockedDelivery: BlockedDelivery | None = Field(
        None, description="Ordered: the oldest failing delivery holding up its customer."
    )
    disabledAt: str | None = None
    disabledReason: str | None = Field(
        None, description="Why it is inactive: 410 Gone, failing too long, or paused."
    )
    signing: Literal["hmac", "ed25519"] = "hmac"
    publicKey: str | None = Field(None, description=PUBLIC_KEY_TEXT)
    hmacHeaders: bool = Field(
        True, description="false: no X-Identity-Signature nor X-Quantum-Signature is sent."
    )
    auth: AuthShown | None = Field(
        None, description="How deliveries authenticate to the endpoint; its secrets never shown."
    )
    caCertificate: CertificateShown | None = Field(
        None, description="The subscription's own CA (the first of its bundle), when it has one."
    )


class CreatedSubscription(BaseModel):
    id: str
    url: str | None
    delivery: Literal["push", "poll"]
    events: list[str]
    installedBy: str | None
    secret: str = Field(description="The signing secret. Shown in this response only.")
    standardSecret: str = Field(
        description="The same secret in Standard Webhooks' form, for their libraries: `whsec_` "
        "and the standard base64 of the secret's UTF-8 bytes. Shown in this response only."
    )
    active: bool
    createdAt: str
    signing: Literal["hmac", "ed25519"]
    publicKey: str | None = Field(description=PUBLIC_KEY_TEXT)
    hmacHeaders: bool


class SubscriptionList(BaseModel):
    rows: list[SubscriptionRow]
    nextCursor: str | None


class TestRequest(_Request):
    event: Literal["webhook.test"] | EventName = Field(
        "webhook.test",
        description="Which event to send: webhook.test, or any catalog event (an operational "
        "one too) as the catalog's example with fresh ids, occurredAt now, your org's id and a "
        'top-level "test": true.',
    )


class TestResult(BaseModel):
    deliveryId: str
    eventId: str | None = None
    status: Literal["sent", "retrying", "failed", "pending", "available"] = Field(
        description='"available": a polling subscription\'s, put in its feed.'
    )
    responseCode: int | None
    durationMs: int | None
    error: str | None


class EventType(BaseModel):
    name: str
    description: str
    schema_: dict[str, Any] = Field(
        alias="schema",
        description="JSON Schema of the whole envelope, from the models ingest validates with.",
    )
    example: dict[str, Any]


class EventTypes(BaseModel):
    rows: list[EventType]


DeliveryStatusName = Literal["pending", "available", "retrying", "sent", "failed", "cancelled"]


class LastAttempt(BaseModel):
    at: str
    responseCode: int | None
    durationMs: int
    error: str | None


class DeliveryRow(BaseModel):
    id: str
    eventId: str
    event: str
    status: DeliveryStatusName
    createdAt: str
    attemptCount: int
    lastAttempt: LastAttempt | None
    nextAttemptAt: str | None
    cancelledReason: str | None = Field(
        None, description="Why it was cancelled (its payload was erased while it was open)."
    )


class DeliveryList(BaseModel):
    rows: list[DeliveryRow]
    nextCursor: str | None


class HourRow(BaseModel):
    start: str = Field(description="The hour's start (UTC, on the hour).")
    attempts: int = Field(description="Attempts made in the hour.")
    sent: int = Field(description="Of those, answered 2xx.")
    failed: dict[str, int] = Field(
        description="The others by result class (3xx, 4xx, 5xx, timeout, connection, token; "
        "other for attempts counted before the classes were kept); classes at zero left out."
    )
    p95LatencyMs: int | None = Field(
        description="The hour's 95th percentile attempt duration, from latency buckets (exact "
        "to the bucket's width); null without attempts."
    )


class SubscriptionHours(BaseModel):
    hours: list[HourRow] = Field(
        description="The last 24 hours, oldest first, the current (partial) hour last."
    )


class AttemptRow(BaseModel):
    number: int
    at: str
    responseCode: int | None
    durationMs: int
    error: str | None
    responseExcerpt: str | None = Field(description="The answer's first KiB.")


class PayloadRemoved(BaseModel):
    reason: Literal["erased", "expired", "undecryptable"]
    at: str | None = Field(description="When it was removed; null when undecryptable.")
    detail: str


class DeliveryDetail(DeliveryRow):
    payload: dict[str, Any] | None = Field(
        description="The envelope as it is sent now (the signed body): its `data` cut down to "
        "the subscription's current `dataFields`, so this is what a redelivery sends; an "
        "attempt made before `dataFields` last changed sent what the list then kept. null "
        "when the payload is no longer kept (`payloadRemoved` says why)."
    )
    payloadRemoved: PayloadRemoved | None = None
    attempts: list[AttemptRow]


class FeedRow(BaseModel):
    deliveryId: str
    eventId: str
    event: str
    body: str | None = Field(
        description="The exact text a push would POST (verify the signatures over it as it "
        "is); null when its payload is no longer kept (`payloadRemoved` says why)."
    )
    headers: dict[str, str] = Field(
        description="The headers a push would carry: X-Identity-Delivery, X-Identity-Event, "
        "Content-Type and the signatures (X-Identity-Signature, X-Quantum-Signature, "
        "webhook-id, webhook-timestamp, webhook-signature), signed at this read."
    )
    createdAt: str
    payloadRemoved: PayloadRemoved | None = None


class Feed(BaseModel):
    rows: list[FeedRow]
    nextCursor: str = Field(
        description="Pass as `after` for what comes next; keep it once the rows are handled "
        "(passing it tells the service they were read)."
    )


class EventDeliveryRow(DeliveryRow):
    subscriptionId: str


class EventTrail(BaseModel):
    id: str
    event: str
    occurredAt: str
    receivedAt: str
    deliveries: list[EventDeliveryRow] = Field(
        description="Every subscription's delivery of it in your org (not deleted ones)."
    )


class ReplayRequest(_Request):
    since: Timestamp
    until: Timestamp | None = Field(None, json_schema_extra=_NOT_NULL)
    events: list[EventName] | None = Field(None, json_schema_extra=_EVENTS_SCHEMA)
    onlyFailed: StrictBool = Field(
        True,
        description="true: only its failed deliveries; false: also its sent ones and events "
        "it never had.",
    )

    @field_validator("events")
    @classmethod
    def _events(cls, events: list[str] | None) -> list[str] | None:
        return None if events is None else _events_rule(events)

    def ask(self) -> ReplayAsk:
        """The replay to run; `until` and `events` may be left out, not null (as PATCH's)."""
        return ReplayAsk(
            since=self.since,
            until=self.until,
            events=self.events,
            only_failed=self.onlyFailed,
            null_fields=[
                name
                for name in ("until", "events")
                if name in self.model_fields_set and getattr(self, name) is None
            ],
        )


class FilterTest(_Request):
    filter: ContentFilter
    event: dict[str, Any] = Field(
        description="An event envelope, e.g. an example of GET …/event-types or a payload of "
        "the delivery log."
    )

    _filter = field_validator("filter")(_filter_rule)


class FilterVerdict(BaseModel):
    matches: bool
    refusedBy: str | None = Field(
        description="Where in the filter the clause that refused the event is, e.g. "
        "data.score.$lt or $or; null when it matches."
    )
    reason: str | None = Field(description="Why that clause refused it; null when it matches.")


class ReplayResult(BaseModel):
    count: int = Field(description="Deliveries queued by this call.")
    withoutPayload: int = Field(
        0,
        description="Events in the window not queued because their payloads are no longer "
        "kept (erased, or past the payload retention).",
    )
    filtered: int = Field(
        0,
        description="Events in the window not queued because the subscription's content "
        "filter, as it stands, refuses them.",
    )
    nextSince: str | None = Field(
        description="Set when the per-call bound cut the window short: call again with this "
        "as `since` for the rest."
    )


class RotateSecret(_Request):
    overlapSeconds: StrictInt = Field(
        86_400,
        ge=0,
        le=7 * 86_400,
        description="How long the previous secret (and an Ed25519 subscription's previous key "
        "pair) keeps signing too; 0 ends it now.",
    )


class RotatedSecret(BaseModel):
    secret: str = Field(description="The new signing secret. Shown in this response only.")
    standardSecret: str = Field(
        description="The new secret in Standard Webhooks' form (`whsec_…`). Shown in this "
        "response only."
    )
    publicKey: str | None = Field(
        description="Ed25519 subscriptions: the new key pair's public key (the previous pair "
        "signs too until previousSecretExpiresAt); null for hmac."
    )
    previousSecretExpiresAt: str


class CustomerErasure(BaseModel):
    customerId: str = Field(description="The customer, as given (the path's id, decoded).")
    events: int = Field(
        description="The org's retained events about the customer (their data.customerId): "
        "their payloads are removed, their metadata kept (a dry run: would be)."
    )
    deliveries: int = Field(
        description="The deliveries of those events, to every subscription of the org: their "
        "response excerpts are removed."
    )
    cancelled: int = Field(
        description="Deliveries of those events still open (pending or retrying) that this "
        "call cancelled (a dry run: would cancel); 0 on a repeat."
    )
    erasedAt: str | None = Field(
        description="When this call erased them (a repeat: the repeat's time); null for a dry "
        "run, which erases nothing."
    )
    dryRun: bool

    @classmethod
    def of(cls, receipt: ErasureReceipt, *, dry_run: bool) -> CustomerErasure:
        """An erasure's (or a dry run's) receipt in the API's shape."""
        return cls(
            customerId=receipt.customer_id,
            events=receipt.events,
            deliveries=receipt.deliveries,
            cancelled=receipt.cancelled,
            erasedAt=None if dry_run else iso(receipt.erased_at),
            dryRun=dry_run,
        )


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    resumeCursor: str | None = Field(
        None,
        description="410 of a feed read: the cursor to go on from (before the oldest delivery "
        "its feed still keeps).",
    )


class AuditActor(BaseModel):
    type: Literal["api_key", "cli", "system"]
    id: str | None = Field(description="The API key's id (api_key); null otherwise.")
    name: str | None = Field(
        description="The API key's name (api_key) or the operating-system user (cli)."
    )


class AuditRow(BaseModel):
    id: str
    at: str
    actor: AuditActor
    action: Literal[
        "subscription.created",
        "subscription.updated",
        "subscription.secret_rotated",
        "subscription.deleted",
        "subscription.disabled",
        "subscription.failing",
        "subscription.recovered",
        "api_key.created",
        "api_key.revoked",
    ]
    subscriptionId: str | None
    apiKeyId: str | None
    changes: dict[str, Any] = Field(
        description="What changed: field names, old and new values of plain settings (the URL, "
        "events, active…), header names, whether a filter, credentials or a CA are set; never "
        "a secret, a header value or a credential."
    )


class AuditList(BaseModel):
    rows: list[AuditRow]
    nextCursor: str | None
