"""`parse_event` accepts the catalog, skips the unknown, rejects the malformed, and never raises."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service import events
from service.events import (
    CATALOG,
    TEST_EVENT,
    Accepted,
    Rejected,
    Skipped,
    format_time,
    parse_event,
)
from tests.support.strategies import JSON

MAX = 256 * 1024

# The seed page's three example payloads, verbatim.
SEED_EXAMPLES = [
    """{
"id": "evt_01HXY...",
"event": "verification.created",
"occurredAt": "2026-05-24T08:15:12.481Z",
"orgId": "org_01HXY...",
"data": {
"verificationId": "ver_01HXY...",
"customerId": "cus_01HXY...",
"method": "ktp_capture",
"status": "verified",
"score": 87
}
}""",
    """{
"id": "evt_01HXZ...",
"event": "customer.kyc_updated",
"occurredAt": "2026-05-24T08:17:58.491Z",
"orgId": "org_01HXY...",
"data": {
"customerId": "cus_01HXY...",
"kycLevel": "premium",
"kycLastVerifiedAt": "2026-05-24T08:17:58.491Z",
"kycExpiresAt": "2027-05-24T08:17:58.491Z"
}
}""",
    """{
"id": "evt_01HXA...",
"event": "review.overridden",
"occurredAt": "2026-05-24T11:42:08.122Z",
"orgId": "org_01HXY...",
"data": {
"verificationId": "ver_01HXY...",
"customerId": "cus_01HXY...",
"actorUserId": "usr_01HXY...",
"fromStatus": "requires_review",
"toStatus": "verified",
"reason": "Glare on hologram but all OCR fields self-consistent. Approved per supervisor."
}
}""",
]

DATA: dict[str, dict[str, Any]] = {
    str(json.loads(text)["event"]): json.loads(text)["data"] for text in SEED_EXAMPLES
}
ENVELOPE_FIELDS = ["id", "event", "occurredAt", "orgId", "data"]


def envelope(event: str = "verification.created", **changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": "evt_01HXY",
        "event": event,
        "occurredAt": "2026-05-24T08:15:12.481Z",
        "orgId": "org_01HXY",
        "data": dict(DATA.get(event, {"anything": 1})),
    }
    value.update(changes)
    return value


def encode(value: object) -> bytes:
    return json.dumps(value, indent=2).encode()


def compact(text: str | bytes) -> bytes:
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False).encode()


def accepted(value: bytes) -> Accepted:
    result = parse_event(value, MAX)
    assert isinstance(result, Accepted), result
    return result


def rejected(value: bytes | None) -> str:
    result = parse_event(value, MAX)
    assert isinstance(result, Rejected), result
    return result.reason


def test_the_catalog_is_the_seed_pages() -> None:
    assert set(CATALOG) == set(DATA)
    assert TEST_EVENT not in CATALOG


@pytest.mark.parametrize("text", SEED_EXAMPLES, ids=[str(e) for e in DATA])
def test_the_seed_examples_are_accepted_as_compact_json(text: str) -> None:
    result = accepted(text.encode())
    original = json.loads(text)
    assert result.body == compact(text)
    assert result.event == original["event"]
    assert result.event_id == original["id"]
    assert result.org_id == original["orgId"]
    assert result.occurred_at.tzinfo is UTC
    assert format_time(result.occurred_at) == original["occurredAt"]


def test_the_body_keeps_the_producers_object_with_unknown_fields() -> None:
    value = envelope(traceId="abc", schemaVersion=2)
    value["data"]["channel"] = {"kind": "mobile", "tags": ["a", "é"]}
    value["data"]["score"] = 87.5
    result = accepted(encode(value))
    assert result.body == compact(encode(value))
    assert json.loads(result.body) == value


@pytest.mark.parametrize(
    "number",
    [2**64 - 1, 2**64, -(2**63) - 1, 123456789012345678901234567890, -(10**40), 10**300],
)
def test_integers_beyond_64_bits_are_delivered_exactly(number: int) -> None:
    # orjson reads an integer it cannot hold in 64 bits as a float (1.2345678901234568e+29);
    # the body must carry the producer's number, digit for digit.
    value = envelope()
    value["data"]["score"] = number
    value["data"]["ledger"] = {"balance": -number, "note": "12345678901234567890123"}
    result = accepted(json.dumps(value).encode())
    assert str(number).encode() in result.body
    assert json.loads(result.body) == value
    assert result.body == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_long_digit_string_changes_nothing_in_the_body() -> None:
    value = envelope()
    value["data"]["customerId"] = "1234567890123456789012345"
    value["data"]["score"] = 87.5
    assert accepted(encode(value)).body == compact(encode(value))


def test_too_deep_is_rejected_even_with_a_wide_integer() -> None:
    value = envelope()
    value["data"]["score"] = 2**70
    deep = "[" * 400 + "]" * 400
    text = json.dumps(value).replace('"data": {', '"data": {"nested": ' + deep + ", ", 1)
    assert rejected(text.encode()) == "too_deep"


@pytest.mark.parametrize(
    ("event", "field", "new_value"),
    [
        ("verification.created", "method", "dukcapil_biometric_v2"),
        ("verification.created", "status", "escalated"),
        ("customer.kyc_updated", "kycLevel", "platinum"),
        ("review.overridden", "toStatus", "rejected_fraud"),
    ],
)
def test_unknown_enum_values_pass(event: str, field: str, new_value: str) -> None:
    value = envelope(event)
    value["data"][field] = new_value
    assert json.loads(accepted(encode(value)).body)["data"][field] == new_value


@pytest.mark.parametrize(
    ("event", "field", "new_value"),
    [
        ("verification.created", "score", None),
        ("verification.created", "score", 0.93),
        ("verification.created", "score", 0),
        ("customer.kyc_updated", "kycExpiresAt", None),
        ("customer.kyc_updated", "kycLastVerifiedAt", None),
        ("customer.kyc_updated", "kycExpiresAt", "2027-05-24T15:17:58+07:00"),
        ("review.overridden", "reason", None),
        ("review.overridden", "reason", ""),
    ],
)
def test_nullable_and_other_valid_values(event: str, field: str, new_value: object) -> None:
    value = envelope(event)
    value["data"][field] = new_value
    accepted(encode(value))


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-05-24T08:15:12Z", datetime(2026, 5, 24, 8, 15, 12, tzinfo=UTC)),
        ("2026-05-24T15:15:12.5+07:00", datetime(2026, 5, 24, 8, 15, 12, 500000, tzinfo=UTC)),
        ("2026-05-24t08:15:12.123456789z", datetime(2026, 5, 24, 8, 15, 12, 123456, tzinfo=UTC)),
        ("2026-05-24T08:15:12-00:00", datetime(2026, 5, 24, 8, 15, 12, tzinfo=UTC)),
    ],
)
def test_occurred_at_is_kept_in_utc(text: str, utc: datetime) -> None:
    result = accepted(encode(envelope(occurredAt=text)))
    assert result.occurred_at == utc
    assert result.occurred_at.utcoffset() == timedelta(0)
    assert json.loads(result.body)["occurredAt"] == text  # the producer's spelling is sent


@pytest.mark.parametrize("value", [None, b""])
def test_empty_values_are_rejected(value: bytes | None) -> None:
    assert rejected(value) == "empty"


def test_too_large_is_rejected() -> None:
    value = encode(envelope())
    assert isinstance(parse_event(value, len(value)), Accepted)
    assert parse_event(value, len(value) - 1) == Rejected("too_large")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe{}", "invalid_utf8"),
        (b'{"id": "\xc3"}', "invalid_utf8"),
        (b"{", "invalid_json"),
        (b"not json", "invalid_json"),
        (b'{"a": 1} {"b": 2}', "invalid_json"),
        (b"NaN", "invalid_json"),
        (b"[]", "not_an_object"),
        (b'[{"id": "evt_1"}]', "not_an_object"),
        (b'"verification.created"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
        (b"true", "not_an_object"),
    ],
)
def test_undecodable_and_non_object_values_are_rejected(value: bytes, reason: str) -> None:
    assert rejected(value) == reason


@pytest.mark.parametrize("field", ENVELOPE_FIELDS)
def test_each_missing_envelope_field_is_named(field: str) -> None:
    value = envelope()
    del value[field]
    assert rejected(encode(value)) == f"missing_field:{field}"


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("id", ""),
        ("id", 42),
        ("id", None),
        ("id", "e" * 201),
        ("event", ""),
        ("event", ["verification.created"]),
        ("occurredAt", "2026-05-24"),
        ("occurredAt", "2026-05-24T08:15:12"),  # no offset
        ("occurredAt", "2026-05-24 08:15:12Z"),
        ("occurredAt", "20260524T081512Z"),
        ("occurredAt", "2026-05-24T25:15:12Z"),
        ("occurredAt", "2026-05-24T08:15:60Z"),
        ("occurredAt", "\uff12\uff10\uff12\uff16-05-24T08:15:12Z"),  # full-width digits
        ("occurredAt", "yesterday"),
        ("occurredAt", 1779610512),
        ("occurredAt", None),
        ("orgId", ""),
        ("orgId", 7),
        ("data", None),
        ("data", []),
        ("data", "{}"),
    ],
)
def test_each_invalid_envelope_field_is_named(field: str, bad: object) -> None:
    value = envelope()
    value[field] = bad
    assert rejected(encode(value)) == f"invalid_field:{field}"


def test_an_id_of_200_characters_is_fine() -> None:
    accepted(encode(envelope(id="e" * 200)))


BAD_DATA: list[tuple[str, str, object]] = [
    ("verification.created", "verificationId", ""),
    ("verification.created", "customerId", 12),
    ("verification.created", "method", None),
    ("verification.created", "status", ["verified"]),
    ("verification.created", "score", "87"),
    ("verification.created", "score", True),
    ("verification.created", "score", {"value": 87}),
    ("customer.kyc_updated", "customerId", None),
    ("customer.kyc_updated", "kycLevel", 3),
    ("customer.kyc_updated", "kycLastVerifiedAt", "last tuesday"),
    ("customer.kyc_updated", "kycExpiresAt", "2027-05-24T08:17:58"),
    ("customer.kyc_updated", "kycExpiresAt", 1811146678),
    ("review.overridden", "verificationId", None),
    ("review.overridden", "actorUserId", ""),
    ("review.overridden", "fromStatus", False),
    ("review.overridden", "toStatus", None),
    ("review.overridden", "reason", 5),
]


@pytest.mark.parametrize(("event", "field", "bad"), BAD_DATA)
def test_invalid_data_fields_are_named(event: str, field: str, bad: object) -> None:
    value = envelope(event)
    value["data"][field] = bad
    assert rejected(encode(value)) == f"invalid_field:data.{field}"


@pytest.mark.parametrize(
    ("event", "field"), [(event, field) for event, data in DATA.items() for field in data]
)
def test_missing_data_fields_are_named(event: str, field: str) -> None:
    value = envelope(event)
    del value["data"][field]
    assert rejected(encode(value)) == f"missing_field:data.{field}"


def test_too_deep_to_re_encode_is_rejected() -> None:
    value = envelope()
    value["data"]["nested"] = json.loads("[" * 400 + "]" * 400)
    assert rejected(json.dumps(value).encode()) == "too_deep"


@pytest.mark.parametrize("event", ["identity.document.expired", "Verification.Created", " x "])
def test_events_outside_the_catalog_are_skipped(event: str) -> None:
    assert parse_event(encode(envelope(event)), MAX) == Skipped(event)


def test_webhook_test_from_kafka_is_skipped() -> None:
    value = envelope(TEST_EVENT, data={"source": "test"})
    assert parse_event(encode(value), MAX) == Skipped(TEST_EVENT)


def test_an_unknown_event_still_needs_a_valid_envelope() -> None:
    assert rejected(encode(envelope("future.event", data=None))) == "invalid_field:data"


_REASON = re.compile(
    r"empty|too_large|invalid_utf8|invalid_json|not_an_object|too_deep"
    r"|(missing|invalid)_field:(id|event|occurredAt|orgId|data|data\.[A-Za-z]+)"
)


def check_never_raises(value: bytes) -> None:
    result = parse_event(value, MAX)
    assert isinstance(result, Accepted | Skipped | Rejected)
    if isinstance(result, Rejected):
        assert _REASON.fullmatch(result.reason), result.reason
    if isinstance(result, Accepted):
        assert result.event in CATALOG
        # The body means exactly what the record said, integers of any width included; where
        # orjson reads the record exactly, the body is its compact form byte for byte.
        exact = json.loads(value)
        assert json.loads(result.body) == exact
        fast = orjson.loads(value)
        if json.dumps(fast) == json.dumps(exact):  # type-aware: 2**64 read as a float differs
            assert result.body == orjson.dumps(fast)


@settings(database=None, max_examples=300)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    check_never_raises(value)


@settings(database=None, max_examples=300)
@given(JSON)
def test_arbitrary_json_values_never_raise(value: object) -> None:
    check_never_raises(json.dumps(value).encode())


@settings(database=None, max_examples=300)
@given(
    event=st.sampled_from([*CATALOG, TEST_EVENT, "other.event"]),
    fields=st.dictionaries(st.sampled_from([*ENVELOPE_FIELDS, "extra"]), JSON),
    data=st.dictionaries(
        st.sampled_from(sorted({f for d in DATA.values() for f in d} | {"extra"})), JSON
    ),
)
# An integer orjson reads as a float: the body keeps it exact, as the record had it.
@example(event="verification.created", fields={}, data={"extra": -(2**63) - 1})
@example(event="verification.created", fields={}, data={"extra": 2**64})
def test_arbitrary_envelopes_never_raise(
    event: str, fields: dict[str, Any], data: dict[str, Any]
) -> None:
    value = envelope(event)
    value["data"].update(data)
    value.update(fields)
    check_never_raises(json.dumps(value).encode())


def test_format_time_gives_utc_milliseconds_and_z() -> None:
    moment = datetime(2026, 5, 24, 18, 42, 18, 122999, tzinfo=timezone(timedelta(hours=7)))
    assert format_time(moment) == "2026-05-24T11:42:18.122Z"
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


def test_format_time_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        format_time(datetime(2026, 5, 24, 11, 42, 18))


def test_test_event_body_is_a_webhook_test_envelope() -> None:
    now = datetime(2026, 5, 24, 11, 42, 18, 122000, tzinfo=UTC)
    event_id, body = events.test_event_body("org_01HXY", now)
    assert re.fullmatch(r"evt_[0-9A-HJKMNP-TV-Z]{26}", event_id)
    assert orjson.loads(body) == {
        "id": event_id,
        "event": "webhook.test",
        "occurredAt": "2026-05-24T11:42:18.122Z",
        "orgId": "org_01HXY",
        "data": {"source": "test"},
    }
    assert body == compact(body)
    assert events.test_event_body("org_01HXY", now)[0] != event_id
    # Valid by the service's own rules, and skipped if it ever came back through Kafka.
    assert parse_event(body, MAX) == Skipped(TEST_EVENT)
    events.WebhookTestData.model_validate(orjson.loads(body)["data"])


@pytest.mark.parametrize(
    "name", ["model_config", "model_fields", "__class__", "__dict__", "__pydantic_extra__"]
)
def test_extra_fields_named_like_model_internals_are_plain_data(name: str) -> None:
    value = envelope()
    value[name] = 1
    value["data"][name] = 2
    assert json.loads(accepted(encode(value)).body) == value


def test_control_characters_in_identifiers_are_rejected() -> None:
    """PostgreSQL text cannot hold NUL: such a record must be dead-lettered, not stored."""
    for field in ("id", "event", "orgId"):
        envelope: dict[str, Any] = {
            "id": "evt_1",
            "event": "verification.created",
            "occurredAt": "2026-05-24T08:15:12.481Z",
            "orgId": "org_1",
            "data": {},
        }
        envelope[field] = envelope[field] + "\u0000"
        assert parse_event(orjson.dumps(envelope), 10_000) == Rejected(f"invalid_field:{field}")
