"""The API's request and response shapes (SPEC section 3), one source for validation and for the
OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictStr,
    field_validator,
)
from pydantic.config import JsonDict

from service.events import CATALOG

MAX_URL_LENGTH = 2048
MAX_INSTALLED_BY = 200
# Free text we store: printable, no control characters (PostgreSQL text cannot hold NUL).
_PRINTABLE = r"^[^\x00-\x1F\x7F]*$"

EventName = Literal["verification.created", "customer.kyc_updated", "review.overridden"]
assert set(EventName.__args__) == set(CATALOG)  # type: ignore[attr-defined]


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


class CreateSubscription(_Request):
    url: StrictStr = Field(max_length=MAX_URL_LENGTH, json_schema_extra=_URL_SCHEMA)
    events: list[EventName] = Field(json_schema_extra=_EVENTS_SCHEMA)
    installedBy: StrictStr | None = Field(None, max_length=MAX_INSTALLED_BY, pattern=_PRINTABLE)

    _events = field_validator("events")(_events_rule)


class PatchSubscription(_Request):
    # `installedBy` may be null, which clears it; the others may only be left out.
    url: StrictStr | None = Field(None, max_length=MAX_URL_LENGTH, json_schema_extra=_URL_SCHEMA)
    events: list[EventName] | None = Field(None, json_schema_extra=_EVENTS_SCHEMA)
    active: StrictBool | None = Field(None, json_schema_extra=_NOT_NULL)
    installedBy: StrictStr | None = Field(None, max_length=MAX_INSTALLED_BY, pattern=_PRINTABLE)

    @field_validator("events")
    @classmethod
    def _events(cls, events: list[str] | None) -> list[str] | None:
        return None if events is None else _events_rule(events)


class LastDelivery(BaseModel):
    status: Literal["sent", "retrying", "failed", "pending"]
    responseCode: int | None
    at: str


class SubscriptionRow(BaseModel):
    id: str
    url: str
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
    problem: str | None = Field(
        None,
        description="Why its deliveries cannot go out now although it is active (its signing "
        "secret cannot be decrypted with the configured keys); null when nothing stops them.",
    )


class CreatedSubscription(BaseModel):
    id: str
    url: str
    events: list[str]
    installedBy: str | None
    secret: str = Field(description="The signing secret. Shown in this response only.")
    active: bool
    createdAt: str


class SubscriptionList(BaseModel):
    rows: list[SubscriptionRow]
    nextCursor: str | None


class TestResult(BaseModel):
    deliveryId: str
    status: Literal["sent", "retrying", "failed", "pending"]
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


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
