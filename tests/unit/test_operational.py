"""Operational events' pure parts: ids derived from the cause, what a change records (never a
value that may be secret), the failing threshold, payloads valid against the catalog's models."""

from __future__ import annotations

import orjson
import pytest

from service import operational
from service.domain import SYSTEM, Actor, ActorKind, MutualTls
from service.events import DATA_MODELS, Envelope
from service.ids import DELIVERY, EVENT, looks_like

ABOUT = operational.About("whk_01M98G16WJBEVN2SYF5T4KSBYB", "org_a", "https://a.example/h")
AT = 1_796_655_370_621


def test_the_same_cause_makes_the_same_ids_and_another_cause_others() -> None:
    first = operational.disabled(ABOUT, "gone", SYSTEM, AT)
    again = operational.disabled(ABOUT, "gone", SYSTEM, AT)
    later = operational.disabled(ABOUT, "gone", SYSTEM, AT + 1)
    assert (first.id, first.body) == (again.id, again.body)
    assert later.id != first.id
    assert looks_like(first.id, EVENT)
    assert first.delivery_id("whk_X") == again.delivery_id("whk_X") != first.delivery_id("whk_Y")
    assert looks_like(first.delivery_id("whk_X"), DELIVERY)
    # Time-ordered like any ULID id: the cause's time leads.
    assert later.id > first.id


def test_every_kind_is_valid_against_its_catalog_model() -> None:
    key = Actor(ActorKind.API_KEY, "key_1", "deploy-bot")
    events = [
        operational.failing(
            ABOUT, failing_since=AT - 5, consecutive=5, status_code=500, error="HTTP 500", at=AT
        ),
        operational.disabled(ABOUT, "paused", key, AT),
        operational.recovered(ABOUT, None, AT - 1, AT),
        operational.exhausted(
            ABOUT,
            delivery_id="whd_1",
            event_id="evt_1",
            event="verification.created",
            attempts=8,
            status_code=None,
            error="timeout",
            at=AT,
        ),
        operational.changed(ABOUT, "deleted", key, changes={}, at=AT, cause="aud_1"),
    ]
    for event in events:
        envelope = orjson.loads(event.body)
        Envelope.model_validate(envelope)
        DATA_MODELS[event.event].model_validate(envelope["data"])
        assert envelope["event"] == event.event


def test_a_change_records_names_and_plain_values_never_secret_ones() -> None:
    before = {"url": "https://old.example/h", "events": ["verification.created"], "active": True}
    changes = operational.update_changes(
        before,
        {
            "url": "https://new.example/h",
            "headers": {"Authorization": "Bearer s3cr3t", "X-Old": None},
            "content_filter": '{"data":{"customerId":"cus_42"}}',
            "auth": MutualTls("-----BEGIN CERTIFICATE-----", "-----BEGIN PRIVATE KEY-----"),
            "active": False,
        },
    )
    assert changes == {
        "fields": ["active", "auth", "filter", "headers", "url"],
        "url": {"old": "https://old.example/h", "new": "https://new.example/h"},
        "headers": {"set": ["Authorization"], "removed": []} | {"removed": ["X-Old"]},
        "filter": {"set": True},
        "auth": {"type": "mtls"},
        "active": {"old": True, "new": False},
    }
    text = orjson.dumps(changes)
    for secret in (b"s3cr3t", b"cus_42", b"PRIVATE KEY", b"CERTIFICATE"):
        assert secret not in text


@pytest.mark.parametrize(
    ("consecutive", "age_ms", "failing"),
    [(4, 0, False), (5, 0, True), (1, 3_599_999, False), (1, 3_600_000, True)],
)
def test_the_failing_threshold_is_attempts_or_age(
    consecutive: int, age_ms: int, failing: bool
) -> None:
    assert operational.AlertPolicy().failing(consecutive, AT - age_ms, AT) is failing
