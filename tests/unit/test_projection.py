"""`dataFields`: the envelope a subscription with a list receives (`events.project`), and the
`Sender` signing and sending exactly that, while a subscription without one gets the stored
bytes untouched."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from service.delivery.attempt import Sender
from service.domain import DeliveryJob, Subscription
from service.errors import SignatureError
from service.events import Accepted, parse_event, project
from service.signing import LEGACY_HEADER, QUANTUM_HEADER, verify_signature
from tests.support.sender import loopback_sender
from tests.support.strategies import JSON

SECRET = "qe_whsec_projection"
ENVELOPE: dict[str, Any] = {
    "id": "evt_1",
    "event": "verification.created",
    "occurredAt": "2026-05-24T08:15:12.481Z",
    "orgId": "org_1",
    "data": {
        "verificationId": "ver_1",
        "customerId": "cus_1",
        "method": "ktp_capture",
        "status": "verified",
        "score": 87,
        "document": {"number": "3171234567890001", "name": "Siti"},
    },
    "traceId": "t-1",  # a top-level field beyond the envelope's own: kept
}


def body_of(value: dict[str, Any]) -> bytes:
    """The body ingest keeps for `value` (the bytes a delivery starts from)."""
    parsed = parse_event(json.dumps(value).encode(), 256 * 1024)
    assert isinstance(parsed, Accepted), parsed
    return parsed.body


def test_data_keeps_only_the_listed_keys_in_the_events_order_and_every_top_level_field() -> None:
    body = body_of(ENVELOPE)
    sent = project(body, ("status", "verificationId", "customerId", "notInTheEvent"))
    assert sent == orjson.dumps(
        {
            "id": "evt_1",
            "event": "verification.created",
            "occurredAt": "2026-05-24T08:15:12.481Z",
            "orgId": "org_1",
            "data": {"verificationId": "ver_1", "customerId": "cus_1", "status": "verified"},
            "traceId": "t-1",
        }
    )
    assert list(orjson.loads(sent)) == list(ENVELOPE)


def test_a_list_the_event_matches_none_of_sends_an_empty_data() -> None:
    sent = orjson.loads(project(body_of(ENVELOPE), ["nothing", "here"]))
    assert sent["data"] == {}
    assert {k: v for k, v in sent.items() if k != "data"} == {
        k: v for k, v in ENVELOPE.items() if k != "data"
    }


def test_nothing_left_out_is_the_same_bytes() -> None:
    body = body_of(ENVELOPE)
    assert project(body, [*ENVELOPE["data"], "more"]) is body


def test_a_body_without_a_data_object_is_left_as_it_is() -> None:
    for body in (b'{"id":"evt_1","event":"verification.created"}', b'{"data":[1,2]}', b"[]"):
        assert project(body, ["status"]) is body


@pytest.mark.parametrize(
    "number", [2**64, -(2**63) - 1, 123456789012345678901234567890, -(10**40), 10**300]
)
def test_integers_wider_than_64_bits_stay_exact(number: int) -> None:
    value = json.loads(json.dumps(ENVELOPE))
    value["data"]["score"] = number
    value["data"]["ledger"] = {"balance": -number}
    value["data"]["dropped"] = number
    value["amount"] = number  # top level: kept as it is too
    sent = project(body_of(value), ["score", "ledger", "status"])
    assert str(number).encode() in sent
    assert json.loads(sent) == {
        **value,
        "data": {"status": "verified", "score": number, "ledger": {"balance": -number}},
    }


def test_a_long_digit_string_is_not_taken_for_a_number() -> None:
    value = json.loads(json.dumps(ENVELOPE))
    value["data"]["customerId"] = "1234567890123456789012345"
    sent = project(body_of(value), ["customerId"])
    assert json.loads(sent)["data"] == {"customerId": "1234567890123456789012345"}


KEYS = st.sampled_from([*ENVELOPE["data"], "extra", "é", ""])


@settings(database=None, max_examples=200)
@given(extra=st.dictionaries(KEYS, JSON, max_size=4), fields=st.lists(KEYS, max_size=5))
@example(extra={"extra": 2**64}, fields=["extra"])
@example(extra={"extra": -(2**63) - 1}, fields=["score"])
def test_the_projection_means_the_event_with_only_the_listed_data(
    extra: dict[str, Any], fields: list[str]
) -> None:
    value = json.loads(json.dumps(ENVELOPE))
    value["data"].update(extra)
    parsed = parse_event(json.dumps(value).encode(), 256 * 1024)
    assume(isinstance(parsed, Accepted))  # a catalog field of the wrong type is refused
    assert isinstance(parsed, Accepted)
    sent = project(parsed.body, fields)
    # Read exactly (json, not orjson): every integer as the producer wrote it.
    kept = {key: item for key, item in value["data"].items() if key in fields}
    assert json.loads(sent) == {**value, "data": kept}
    assert list(json.loads(sent)["data"]) == [k for k in value["data"] if k in fields]


def a_job(body: bytes) -> tuple[DeliveryJob, Subscription]:
    job = DeliveryJob("whd_1", "whk_1", "evt_1", "verification.created", body, None, 0, 0)
    subscription = Subscription(
        id="whk_1",
        org_id="org_1",
        url="http://127.0.0.1:1/hook",
        events=("verification.created",),
        installed_by=None,
        active=True,
        deactivated_reason=None,
        created_at=0,
        updated_at=0,
        failing_since=None,
        secret=SECRET,
    )
    return job, subscription


def test_without_data_fields_the_stored_bytes_are_sent_untouched() -> None:
    body = body_of(ENVELOPE)
    job, subscription = a_job(body)
    assert Sender.body(job, subscription) is body


async def test_the_signatures_cover_the_projected_bytes_exactly() -> None:
    body = body_of(ENVELOPE)
    job, subscription = a_job(body)
    minimised = Subscription(**{**_fields(subscription), "data_fields": ("status",)})
    sent = Sender.body(job, minimised)
    assert orjson.loads(sent)["data"] == {"status": "verified"}
    async with aiohttp.ClientSession() as session:
        sender = loopback_sender(session, timeout=1.0, connect_timeout=1.0)
        headers = sender.headers(job, minimised, sent, 1_800_000_000)
    for name in (LEGACY_HEADER, QUANTUM_HEADER):
        verify_signature(SECRET, headers[name], sent, now=1_800_000_000)
        with pytest.raises(SignatureError):
            verify_signature(SECRET, headers[name], body, now=1_800_000_000)


def _fields(subscription: Subscription) -> dict[str, Any]:
    return {name: getattr(subscription, name) for name in Subscription.__dataclass_fields__}
