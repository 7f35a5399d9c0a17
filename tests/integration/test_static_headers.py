"""A subscription's static `headers` on both stores: they reach the receiver exactly
as set, with `/test` and with deliveries from Kafka, change with a PATCH (a merge patch by name),
and can never stand in for a header the service sets. The write-only sensitive ones:
test_sensitive_headers.py."""

from __future__ import annotations

import pytest

from service.signing import LEGACY_HEADER, QUANTUM_HEADER, verify_signature
from tests.support.live import LiveApp, header_values, two_deliveries
from tools.receiver import Received

pytestmark = pytest.mark.integration

STATIC = {
    "Authorization": "Bearer tenant-token-123",
    "X-Tenant": "acme corp",  # an inner space is kept
    "x-lower-case": 'v=1;w="two"',
    "Accept": "application/json, text/plain",  # aiohttp sends */* unless told
}
ORDINARY = {name: value for name, value in STATIC.items() if name != "Authorization"}
# Every name the service sets, and the hop-by-hop and framing ones, in any case.
OURS = [
    "Content-Type",
    "content-type",
    "User-Agent",
    "HOST",
    "Content-Length",
    "X-Identity-Event",
    "x-identity-delivery",
    "X-Identity-Signature",
    "X-Quantum-Signature",
    "x-quantum-anything",
    "X-Sibling-Service",
    "Transfer-Encoding",
    "Connection",
    "Proxy-Authorization",
]


def assert_ours_intact(got: Received, secret: str) -> None:
    assert header_values(got, "Content-Type") == ["application/json"]
    assert got.headers["User-Agent"].startswith("QuantumElixir-Identity-Webhooks/")
    assert got.headers["X-Identity-Delivery"].startswith("whd_")
    verify_signature(secret, got.headers[LEGACY_HEADER], got.body)
    verify_signature(secret, got.headers[QUANTUM_HEADER], got.body)


async def test_static_headers_arrive_exactly_as_set_beside_ours(live: LiveApp) -> None:
    created = await live.subscribe("static", headers=STATIC)
    status, row = await live.call("GET", f"/{created['id']}")
    assert (status, row["headers"], row["sensitiveHeaders"]) == (200, ORDINARY, ["Authorization"])
    for got in await two_deliveries(live, created["id"], "static"):
        for name, value in STATIC.items():
            assert header_values(got, name) == [value], name
        assert_ours_intact(got, created["secret"])


async def test_a_patch_merges_the_static_headers_by_name_and_null_clears_them(
    live: LiveApp,
) -> None:
    created = await live.subscribe("patched", headers=STATIC)
    sid = created["id"]
    change = {"X-Other": "2", "x-tenant": "globex", "X-Lower-Case": None, "Accept": None}
    status, row = await live.call("PATCH", f"/{sid}", {"headers": change})
    assert (status, row["headers"]) == (200, {"x-tenant": "globex", "X-Other": "2"})
    for got in await two_deliveries(live, sid, "patched"):
        assert header_values(got, "X-Other") == ["2"]
        assert header_values(got, "X-Tenant") == ["globex"]
        assert header_values(got, "Authorization") == [STATIC["Authorization"]]  # not named: kept
        assert "x-lower-case" not in got.headers
        assert header_values(got, "Accept") != [STATIC["Accept"]]
    seen = len(live.receiver.at("patched"))
    status, row = await live.call("PATCH", f"/{sid}", {"headers": None})
    assert (status, row["headers"], row["sensitiveHeaders"]) == (200, {}, [])
    for got in await two_deliveries(live, sid, "patched"):
        assert "X-Other" not in got.headers
        assert "Authorization" not in got.headers
        assert_ours_intact(got, created["secret"])
    assert len(live.receiver.at("patched")) == seen + 2


async def test_a_static_header_can_never_be_one_of_ours(live: LiveApp) -> None:
    created = await live.subscribe("guarded", headers={"X-Tenant": "acme"})
    sid = created["id"]
    for name in OURS:
        status, body = await live.call(
            "POST",
            body={
                "url": live.receiver.url("nope"),
                "events": ["verification.created"],
                "headers": {name: "forged"},
            },
        )
        assert status == 422, (name, body)
        assert any(e["field"] == "headers" for e in body["errors"]), body
        status, body = await live.call("PATCH", f"/{sid}", {"headers": {name: "forged"}})
        assert status == 422, (name, body)
    # Bad names and values, too many, too large, the same name twice in two cases.
    for bad in (
        {"Bad Name": "x"},
        {"X-Ok": "line\r\nX-Injected: 1"},
        {"X-Ok": " leading space"},
        {f"X-H{n}": "v" for n in range(21)},
        {"X-Big": "v" * 4096},
        {"X-Twice": "1", "x-twice": "2"},
        {"X-Number": 5},
    ):
        status, body = await live.call("PATCH", f"/{sid}", {"headers": bad})
        assert status == 422, (bad, body)
    # Nothing refused was stored: the deliveries carry what was set first, and ours.
    status, row = await live.call("GET", f"/{sid}")
    assert row["headers"] == {"X-Tenant": "acme"}
    for got in await two_deliveries(live, sid, "guarded"):
        assert header_values(got, "X-Tenant") == ["acme"]
        assert "forged" not in str(dict(got.headers))
        assert_ours_intact(got, created["secret"])
    assert live.receiver.at("nope") == []
