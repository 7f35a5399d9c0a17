"""`dataFields` on both stores, through Kafka, the dispatcher and a receiver: a subscription with
a list receives its events with `data` cut down to the listed keys (every top-level field kept,
in order) and signatures over exactly the bytes received, verified by Stripe's verifier and by
ours; a PATCH of the list applies to the next delivery, to a redelivery of an earlier one and to
what the delivery log shows; null sends the stored body untouched."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from service.samples import sample_event
from service.signing import LEGACY_HEADER, QUANTUM_HEADER
from tests.support.api import SEED_REQUEST
from tests.support.live import ORG, LiveApp, send_test, through_kafka
from tests.support.signatures import stripe_verifies, we_verify
from tools.receiver import Received

pytestmark = pytest.mark.integration

WIDE = 2**70  # read by orjson as a float: must arrive digit for digit


def an_event(**data: Any) -> dict[str, Any]:
    """A verification.created of the org with more in `data` and a top-level field of its own."""
    event = sample_event("verification.created", ORG, datetime.now(UTC))
    event["data"].update(data)
    event["traceId"] = "trace-1"
    return event


def verified(got: Received, secret: str) -> Any:
    """The body received, once both verifiers took both signatures over its raw bytes."""
    assert stripe_verifies(secret, got)
    assert we_verify(secret, got, QUANTUM_HEADER)
    assert we_verify(secret, got, LEGACY_HEADER)
    return json.loads(got.body)  # json, not orjson: wide integers read exactly


def cut(event: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The event as a subscription listing `keys` receives it."""
    return {**event, "data": {k: v for k, v in event["data"].items() if k in keys}}


async def test_the_listed_data_fields_arrive_signed_and_a_patch_changes_the_next_delivery(
    live: LiveApp,
) -> None:
    listed = ["status", "verificationId", "customerId", "notInTheEvent"]
    created = await live.subscribe("minimal", dataFields=listed)
    sid, secret = created["id"], created["secret"]
    status, row = await live.call("GET", f"/{sid}")
    assert (status, row["dataFields"]) == (200, listed)

    first = an_event(document={"number": "3171234567890001"}, ledger=WIDE)
    got = await through_kafka(live, "minimal", json.dumps(first).encode())
    received = verified(got, secret)
    assert received == cut(first, "verificationId", "customerId", "status")
    assert list(received) == list(first)  # every top-level field, in the event's order
    assert list(received["data"]) == ["verificationId", "customerId", "status"]
    assert b"3171234567890001" not in got.body
    assert str(WIDE).encode() not in got.body

    # The delivery log shows what is sent under the current list.
    status, detail = await live.call("GET", f"/{sid}/deliveries/{got.delivery}")
    assert (status, detail["payload"]) == (200, received)

    # webhook.test follows the list too: its one data field is not listed.
    tested = verified(await send_test(live, sid, "minimal"), secret)
    assert (tested["event"], tested["data"]) == ("webhook.test", {})

    # PATCH: the next delivery, a redelivery of the first and the log follow the new list.
    status, row = await live.call("PATCH", f"/{sid}", {"dataFields": ["score", "ledger"]})
    assert (status, row["dataFields"]) == (200, ["score", "ledger"])
    second = an_event(score=WIDE)
    got = await through_kafka(live, "minimal", json.dumps(second).encode())
    assert verified(got, secret) == cut(second, "score")
    assert f'"score":{WIDE}'.encode() in got.body

    status, _ = await live.call("POST", f"/{sid}/deliveries/{received_id(live, first)}/redeliver")
    assert status == 202
    await live.receiver.wait_for(
        lambda: len(of_event(live, first)) == 2, what="the redelivery of the first event"
    )
    again = of_event(live, first)[-1]
    assert verified(again, secret) == cut(first, "score", "ledger")
    assert f'"ledger":{WIDE}'.encode() in again.body
    status, detail = await live.call("GET", f"/{sid}/deliveries/{again.delivery}")
    assert list(detail["payload"]["data"]) == ["score", "ledger"]

    # null: every field again, the stored bytes themselves.
    status, row = await live.call("PATCH", f"/{sid}", {"dataFields": None})
    assert (status, row["dataFields"]) == (200, None)
    third = an_event()
    got = await through_kafka(live, "minimal", orjson.dumps(third))
    assert got.body == orjson.dumps(third)
    assert verified(got, secret) == third


def of_event(live: LiveApp, event: dict[str, Any]) -> list[Received]:
    return [r for r in live.receiver.at("minimal") if r.event_id == event["id"]]


def received_id(live: LiveApp, event: dict[str, Any]) -> str:
    """The delivery id the receiver saw for `event`."""
    (got,) = of_event(live, event)
    return got.delivery


BAD: list[Any] = [
    [],
    ["status", "status"],
    [""],
    ["x" * 101],
    [f"f{i}" for i in range(101)],
    ["line\nbreak"],
    "status",
    [1],
    [None],
    {"status": True},
]


async def test_bad_data_fields_are_422_on_create_and_patch(live: LiveApp) -> None:
    created = await live.subscribe("bad", dataFields=["status"])
    sid = created["id"]
    for bad in BAD:
        status, problem = await live.call(
            "POST", body={**SEED_REQUEST, "url": live.receiver.url("x"), "dataFields": bad}
        )
        assert status == 422, (bad, problem)
        assert all(e["field"].startswith("dataFields") for e in problem["errors"]), problem
        status, problem = await live.call("PATCH", f"/{sid}", {"dataFields": bad})
        assert status == 422, (bad, problem)
        assert all(e["field"].startswith("dataFields") for e in problem["errors"]), problem
    # The limits themselves are allowed; unknown keys too.
    most = [f"{i:03d}{'k' * 97}" for i in range(100)]
    status, row = await live.call("PATCH", f"/{sid}", {"dataFields": most})
    assert (status, row["dataFields"]) == (200, most)
    status, row = await live.call("GET", f"/{sid}")
    assert row["dataFields"] == most
    status, listed = await live.call("GET")
    assert [r["dataFields"] for r in listed["rows"] if r["id"] == sid] == [most]
