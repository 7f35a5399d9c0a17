"""Poison records are what the service dead-letters, for the reason they name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.events import CATALOG, Rejected, parse_event
from tools.poison import poison_records

NOW = datetime(2026, 5, 24, 8, 15, 12, 481000, tzinfo=UTC)
MAX_BYTES = 256 * 1024


def test_poison_records_are_rejected_for_the_reason_they_name() -> None:
    poisons = poison_records(14, "org_1", NOW, max_event_bytes=MAX_BYTES)

    reasons = {p.reason for p in poisons}
    assert {"invalid_json", "not_an_object", "missing_field:orgId", "invalid_utf8", "empty"} <= (
        reasons
    )
    assert "too_large" in reasons
    assert any(r.startswith("invalid_field:data.") for r in reasons)
    for poison in poisons:
        assert parse_event(poison.value, MAX_BYTES) == Rejected(poison.reason)
        assert poison.key.startswith(b"cus_")


@pytest.mark.parametrize("event", CATALOG)
def test_poison_records_keep_to_the_events_asked_for(event: str) -> None:
    poisons = poison_records(7, "org_1", NOW, events=[event], max_event_bytes=MAX_BYTES)

    assert {p.event for p in poisons} == {event}
    for poison in poisons:
        assert parse_event(poison.value, MAX_BYTES) == Rejected(poison.reason)


def test_no_oversized_poison_when_the_limit_is_above_what_a_broker_takes() -> None:
    poisons = poison_records(20, "org_1", NOW, max_event_bytes=2 * 1024 * 1024)

    assert "too_large" not in {p.reason for p in poisons}
