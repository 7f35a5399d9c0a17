"""Write-only sensitive headers on both stores, through the real API, Kafka and a receiver: a
sensitive header's value reaches the receiver with every delivery and is never in an API answer
(POST, GET, list, PATCH, the delivery log) nor in what the service logs (structlog's events and
the standard library's records, at debug level); a PATCH leaves it alone when it does not name
it, replaces it with a new value and removes it with null."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from tests.support.live import LiveApp, header_values, send_test, through_kafka, two_deliveries

pytestmark = pytest.mark.integration

AUTH = "Bearer s3cr3t-auth-ONE"
NEW_AUTH = "Bearer s3cr3t-auth-TWO"
API_KEY = "k3y-VALUE-123"
HEADERS = {"X-Tenant": "acme", "Authorization": AUTH, "X-Api-Key": API_KEY}
VALUES = (AUTH, NEW_AUTH, API_KEY, "s3cr3t", "k3y-VALUE")


def hidden(answer: Any) -> None:
    """No sensitive value, nor a part of one, is anywhere in an API answer."""
    text = orjson.dumps(answer).decode()
    for value in VALUES:
        assert value not in text, (value, answer)


class Logged:
    """Everything the service logs while the test runs: structlog's events as emitted, and the
    standard library's records (aiohttp, aiokafka) rendered with their arguments."""

    def __init__(self, events: list[Any], caplog: pytest.LogCaptureFixture) -> None:
        self.events = events
        self.caplog = caplog

    def text(self) -> str:
        records = [f"{r.getMessage()} {r.__dict__}" for r in self.caplog.records]
        return repr(self.events) + "\n".join(records)


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[Logged]:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        yield Logged(events, caplog)


async def test_a_sensitive_value_is_sent_never_shown_nor_logged_and_patched_by_name(
    live: LiveApp, logged: Logged
) -> None:
    created = await live.subscribe("sensitive", headers=HEADERS)
    hidden(created)
    sid = created["id"]

    status, row = await live.call("GET", f"/{sid}")
    assert status == 200
    assert row["headers"] == {"X-Tenant": "acme"}
    assert row["sensitiveHeaders"] == ["Authorization", "X-Api-Key"]
    hidden(row)
    status, listed = await live.call("GET")
    assert status == 200
    assert [r for r in listed["rows"] if r["id"] == sid] == [row]
    hidden(listed)

    # Sent as set, with /test and through Kafka.
    for got in await two_deliveries(live, sid, "sensitive"):
        assert header_values(got, "Authorization") == [AUTH]
        assert header_values(got, "X-Api-Key") == [API_KEY]
        assert header_values(got, "X-Tenant") == ["acme"]

    # A client that PATCHes back the headers it read (the ordinary ones) keeps the hidden ones.
    status, patched = await live.call("PATCH", f"/{sid}", {"headers": row["headers"]})
    assert status == 200
    assert (patched["headers"], patched["sensitiveHeaders"]) == (
        row["headers"],
        row["sensitiveHeaders"],
    )
    hidden(patched)
    got = await through_kafka(live, "sensitive")
    assert header_values(got, "Authorization") == [AUTH]
    assert header_values(got, "X-Api-Key") == [API_KEY]

    # A new value replaces it (names ignore case): the next delivery carries the new one only.
    status, patched = await live.call("PATCH", f"/{sid}", {"headers": {"authorization": NEW_AUTH}})
    assert status == 200
    assert patched["sensitiveHeaders"] == ["authorization", "X-Api-Key"]
    hidden(patched)
    got = await through_kafka(live, "sensitive")
    assert header_values(got, "Authorization") == [NEW_AUTH]
    got = await send_test(live, sid, "sensitive")
    assert header_values(got, "Authorization") == [NEW_AUTH]

    # null removes it; the others stay.
    status, patched = await live.call("PATCH", f"/{sid}", {"headers": {"X-Api-Key": None}})
    assert status == 200
    assert (patched["headers"], patched["sensitiveHeaders"]) == (
        {"X-Tenant": "acme"},
        ["authorization"],
    )
    got = await through_kafka(live, "sensitive")
    assert header_values(got, "X-Api-Key") == []
    assert header_values(got, "Authorization") == [NEW_AUTH]

    # Nor in the delivery log, its rows or a delivery in full.
    status, log = await live.call("GET", f"/{sid}/deliveries")
    assert status == 200
    assert len(log["rows"]) == 6
    hidden(log)
    for delivery in log["rows"]:
        status, detail = await live.call("GET", f"/{sid}/deliveries/{delivery['id']}")
        assert status == 200
        hidden(detail)

    # A refused PATCH names the header, never its value.
    status, problem = await live.call(
        "PATCH", f"/{sid}", {"headers": {"X-Api-Key": "s3cr3t\r\nX-Evil: 1"}}
    )
    assert status == 422
    hidden(problem)

    # The capture saw the service at work (so the check below can fail), and no value in it.
    names = {event.get("event") for event in logged.events}
    assert {"subscription.created", "subscription.updated"} <= names, names
    assert logged.caplog.records, "the standard library's logging was not captured"
    text = logged.text()
    for value in VALUES:
        assert value not in text, value


async def test_the_merged_headers_keep_to_the_limits_and_a_refusal_changes_nothing(
    live: LiveApp,
) -> None:
    full = {f"X-H{i}": "v" for i in range(19)}
    created = await live.subscribe("limits", headers={**full, "Authorization": AUTH})
    sid = created["id"]
    status, problem = await live.call("PATCH", f"/{sid}", {"headers": {"X-Twenty-One": "v"}})
    assert status == 422
    assert [e["field"] for e in problem["errors"]] == ["headers"]
    assert "those kept included" in problem["errors"][0]["message"]
    hidden(problem)
    # Removing one makes room for another, in the same PATCH.
    status, row = await live.call(
        "PATCH", f"/{sid}", {"headers": {"X-H0": None, "X-Twenty-One": "v"}}
    )
    assert status == 200
    assert len(row["headers"]) == 19
    assert row["sensitiveHeaders"] == ["Authorization"]
    got = await send_test(live, sid, "limits")
    assert header_values(got, "Authorization") == [AUTH]
    assert header_values(got, "X-H0") == []
    assert header_values(got, "X-Twenty-One") == ["v"]
