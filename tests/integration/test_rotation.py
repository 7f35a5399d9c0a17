"""Secret rotation on both stores, end to end: during the overlap a receiver that
knows only the old secret and one that knows only the new both verify the same delivery — one
with Stripe's own verifier, one with ours — and after it only the new one does. Deliveries go
out through `POST …/test` and through Kafka and the dispatcher's lanes."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import orjson
import pytest
import structlog

from service.signing import LEGACY_HEADER, QUANTUM_HEADER, standard_secret
from tests.support.live import LiveApp, send_test, through_kafka
from tests.support.signatures import stripe_verifies, we_verify
from tools.receiver import Received

pytestmark = pytest.mark.integration


def v1_count(got: Received) -> int:
    return sum(item.startswith("v1=") for item in got.headers[QUANTUM_HEADER].split(","))


def epoch_ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


async def rotate(live: LiveApp, subscription_id: str, body: Any = None) -> tuple[str, int, int]:
    """Rotates; the new secret, previousSecretExpiresAt (epoch ms), and the time of the call."""
    before = int(time.time() * 1000)
    status, rotated = await live.call("POST", f"/{subscription_id}/rotate-secret", body)
    assert status == 200, rotated
    assert set(rotated) == {"secret", "standardSecret", "publicKey", "previousSecretExpiresAt"}
    assert rotated["secret"].startswith("qe_whsec_")
    assert rotated["standardSecret"] == standard_secret(rotated["secret"])
    assert rotated["publicKey"] is None  # an HMAC subscription has no key pair
    return rotated["secret"], epoch_ms(rotated["previousSecretExpiresAt"]), before


async def test_old_and_new_secret_both_verify_during_the_overlap_then_only_the_new(
    live: LiveApp,
) -> None:
    created = await live.subscribe("rot")
    sid, old = created["id"], created["secret"]

    before_rotation = await send_test(live, sid, "rot")
    assert v1_count(before_rotation) == 1
    assert stripe_verifies(old, before_rotation)
    assert we_verify(old, before_rotation)
    assert we_verify(old, before_rotation, LEGACY_HEADER)

    # An overlap of 2 s: long enough for the deliveries below, then waited out.
    new, expires, called = await rotate(live, sid, {"overlapSeconds": 2})
    assert new != old
    assert called + 2000 <= expires <= int(time.time() * 1000) + 2000

    during = [await send_test(live, sid, "rot"), await through_kafka(live, "rot")]
    for got in during:
        assert v1_count(got) == 2
        # The old-secret receiver with Stripe's verifier, the new-secret one with ours ...
        assert stripe_verifies(old, got)
        assert we_verify(new, got)
        # ... and the other way round.
        assert we_verify(old, got)
        assert stripe_verifies(new, got)
        # The legacy header is single-valued: the new secret from the moment of rotation.
        assert we_verify(new, got, LEGACY_HEADER)
        assert not we_verify(old, got, LEGACY_HEADER)

    # Past the overlap (by the server's own expiry, not a guess): the old secret is gone.
    await asyncio.sleep(max(0.0, expires / 1000 - time.time()) + 0.5)
    after = [await send_test(live, sid, "rot"), await through_kafka(live, "rot")]
    for got in after:
        assert v1_count(got) == 1
        assert stripe_verifies(new, got)
        assert we_verify(new, got)
        assert not stripe_verifies(old, got)
        assert not we_verify(old, got)
        assert we_verify(new, got, LEGACY_HEADER)
        assert not we_verify(old, got, LEGACY_HEADER)


async def test_overlap_zero_ends_the_old_secret_at_once(live: LiveApp) -> None:
    created = await live.subscribe("now")
    sid, old = created["id"], created["secret"]
    new, expires, called = await rotate(live, sid, {"overlapSeconds": 0})
    assert called <= expires <= int(time.time() * 1000)
    for got in (await send_test(live, sid, "now"), await through_kafka(live, "now")):
        assert v1_count(got) == 1
        assert stripe_verifies(new, got)
        assert we_verify(new, got)
        assert not stripe_verifies(old, got)
        assert not we_verify(old, got)
        assert not we_verify(old, got, LEGACY_HEADER)
        assert we_verify(new, got, LEGACY_HEADER)


async def test_rotation_without_a_body_keeps_the_old_secret_a_day(live: LiveApp) -> None:
    created = await live.subscribe("day")
    sid, old = created["id"], created["secret"]
    new, expires, called = await rotate(live, sid)
    assert called + 86_400_000 <= expires <= int(time.time() * 1000) + 86_400_000
    got = await send_test(live, sid, "day")
    assert v1_count(got) == 2
    assert stripe_verifies(old, got)
    assert we_verify(new, got)

    # A second rotation at once with no overlap ends both earlier secrets.
    newest, _, _ = await rotate(live, sid, {"overlapSeconds": 0})
    got = await send_test(live, sid, "day")
    assert v1_count(got) == 1
    assert stripe_verifies(newest, got)
    for stale in (old, new):
        assert not stripe_verifies(stale, got)
        assert not we_verify(stale, got)


async def test_the_new_secret_is_shown_only_in_the_rotate_response(live: LiveApp) -> None:
    created = await live.subscribe("shown")
    sid = created["id"]
    with structlog.testing.capture_logs() as logs:
        new, _, _ = await rotate(live, sid, {"overlapSeconds": 60})
    assert new not in repr(logs)
    delivered = await send_test(live, sid, "shown")
    assert we_verify(new, delivered)

    shown = [
        await live.call("GET"),
        await live.call("GET", f"/{sid}"),
        await live.call("PATCH", f"/{sid}", {"installedBy": "rotated@2"}),
        await live.call("GET", f"/{sid}/deliveries"),
        await live.call("GET", f"/{sid}/deliveries/{delivered.delivery}"),
    ]
    for status, body in shown:
        assert status == 200, body
        text = orjson.dumps(body).decode()
        assert new not in text
        assert created["secret"] not in text
        assert "secret" not in text.lower()


async def test_rotating_an_unknown_or_another_orgs_subscription_is_a_404(live: LiveApp) -> None:
    other = await live.store.create_subscription(
        "org_other", live.receiver.url("other"), ("verification.created",), "t"
    )
    for sid in (other.id, "whk_00000000000000000000000000", "nope"):
        status, body = await live.call("POST", f"/{sid}/rotate-secret", {"overlapSeconds": 0})
        assert status == 404, body
    unchanged = await live.store.get_subscription("org_other", other.id)
    assert unchanged is not None
    assert unchanged.secret == other.secret
    assert unchanged.previous_secret is None
    mine = await live.subscribe("mine")
    for bad in ({"overlapSeconds": -1}, {"overlapSeconds": 7 * 86_400 + 1}, {"x": 1}):
        status, body = await live.call("POST", f"/{mine['id']}/rotate-secret", bad)
        assert status == 422, body
