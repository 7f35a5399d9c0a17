"""Sample events are what the catalog accepts."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from service.events import CATALOG, Accepted, format_time, parse_event
from service.samples import record_key, sample_event, seed_examples

NOW = datetime(2026, 5, 24, 8, 15, 12, 481000, tzinfo=UTC)
MAX_BYTES = 256 * 1024


@pytest.mark.parametrize("event", CATALOG)
def test_every_sample_is_accepted_as_its_event(event: str) -> None:
    envelope = sample_event(event, "org_demo", NOW)

    parsed = parse_event(orjson.dumps(envelope), MAX_BYTES)

    assert isinstance(parsed, Accepted)
    assert parsed.event == event
    assert parsed.org_id == "org_demo"
    assert parsed.occurred_at == NOW
    assert parsed.event_id.startswith("evt_")
    assert envelope["occurredAt"] == format_time(NOW) == "2026-05-24T08:15:12.481Z"
    assert record_key(envelope) == envelope["data"]["customerId"].encode()


def test_seed_examples_are_one_of_each_event_with_fresh_ids() -> None:
    first, second = seed_examples("org_1", NOW), seed_examples("org_1", NOW)

    assert [e["event"] for e in first] == list(CATALOG)
    assert all(isinstance(parse_event(orjson.dumps(e), MAX_BYTES), Accepted) for e in first)
    ids = {e["id"] for e in first + second} | {e["data"]["customerId"] for e in first + second}
    assert len(ids) == 12


def test_data_is_shaped_like_the_seed_page() -> None:
    by_event = {e["event"]: e["data"] for e in seed_examples("org_1", NOW)}

    assert set(by_event["verification.created"]) == {
        "verificationId",
        "customerId",
        "method",
        "status",
        "score",
    }
    assert set(by_event["customer.kyc_updated"]) == {
        "customerId",
        "kycLevel",
        "kycLastVerifiedAt",
        "kycExpiresAt",
    }
    assert set(by_event["review.overridden"]) == {
        "verificationId",
        "customerId",
        "actorUserId",
        "fromStatus",
        "toStatus",
        "reason",
    }


def test_an_unknown_event_has_no_sample() -> None:
    with pytest.raises(ValueError, match="no sample"):
        sample_event("webhook.test", "org_1", NOW)
