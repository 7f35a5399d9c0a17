"""The events `POST …/{id}/test` sends: `webhook.test` (the default), or any catalog event as
the catalog's example with fresh ids, `occurredAt` now and the caller's org, marked as a test
by a top-level `"test": true` (in the signed body, where the envelope allows extra fields), so a
receiver can tell it from a real one (docs/api.md, "Testing an endpoint")."""

from __future__ import annotations

from datetime import datetime

import orjson

from service.domain import IncomingEvent
from service.events import TEST_EVENT, customer_key, test_event_body
from service.samples import sample_event

SOURCE = "api:test"


def test_event(event_name: str, org_id: str, now: datetime) -> IncomingEvent:
    """A fresh test event of `event_name` (a catalog event or `webhook.test`) for `org_id`."""
    occurred_at = int(now.timestamp() * 1000)
    if event_name == TEST_EVENT:
        event_id, body = test_event_body(org_id, now)
        return IncomingEvent(event_id, org_id, TEST_EVENT, occurred_at, body, None, SOURCE)
    envelope = {**sample_event(event_name, org_id, now), "test": True}
    data = envelope["data"]
    return IncomingEvent(
        id=envelope["id"],
        org_id=org_id,
        event=event_name,
        occurred_at=occurred_at,
        body=orjson.dumps(envelope),
        sibling_service=None,
        source=SOURCE,
        customer_id=customer_key(data.get("customerId")),
        verification_id=customer_key(data.get("verificationId")),
    )


# The name starts with `test_`; this keeps pytest from collecting it where a test module imports it.
test_event.__test__ = False  # type: ignore[attr-defined]
