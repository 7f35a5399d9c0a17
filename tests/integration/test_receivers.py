"""The verification examples of docs/receivers.md, each in its own runtime with the library it
names, against real deliveries of one service run through Kafka: HMAC (v1) subscriptions with
their `standardSecret`, Ed25519 (v1a) ones with their `publicKey`; before, during and after a
rotation's overlap, and signed by a clock 10 minutes slow. Each language's example runs once over
the whole list (tests/support/receivers.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

import service.delivery.attempt as attempt_module
from service.errors import SignatureError
from service.settings import load_settings
from service.signing import standard_secret, verify_standard
from tests.conftest import CATALOG_TOPICS, TEST_ENCRYPTION_KEY
from tests.support.live import LiveApp, live_app, send_test
from tests.support.receivers import Delivery, prepare, verdicts
from tools.receiver import Received, start_receiver

pytestmark = pytest.mark.integration

SLOW_BY = 600  # seconds: outside every library's 5 minutes
OVERLAP = 3  # seconds: long enough for one event's deliveries, then waited out


@dataclass(frozen=True)
class Case:
    what: str
    delivery: Delivery
    genuine: bool


class SlowClock:
    """The sender's `time` module, SLOW_BY seconds behind: deliveries signed in the past."""

    @staticmethod
    def time() -> float:
        return time.time() - SLOW_BY


async def one_event(live: LiveApp, paths: list[str]) -> dict[str, Received]:
    """One event produced to Kafka; the delivery each path received of it."""
    (event,) = await live.produce()

    def of(path: str) -> list[Received]:
        return [r for r in live.receiver.at(path) if r.event_id == event["id"]]

    await live.receiver.wait_for(lambda: all(of(p) for p in paths), what=f"event {event['id']}")
    return {path: of(path)[0] for path in paths}


def seen(got: Received, kind: str, key: str) -> Delivery:
    return Delivery(
        kind,
        key,
        got.headers["webhook-id"],
        got.headers["webhook-timestamp"],
        got.headers["webhook-signature"],
        got.body,
    )


def changed_id(delivery_id: str) -> str:
    return delivery_id[:-1] + ("A" if delivery_id[-1] != "A" else "B")


async def record(live: LiveApp) -> list[Case]:
    """The deliveries and what a correct receiver must answer for each."""

    async def subscribe(path: str, signing: str) -> dict[str, Any]:
        created = await live.subscribe(path, signing=signing)
        assert created["signing"] == signing
        assert created["standardSecret"] == standard_secret(created["secret"])
        status, shown = await live.call("GET", f"/{created['id']}")
        assert status == 200
        assert shown["publicKey"] == created["publicKey"]  # public: in every read
        assert (created["publicKey"] is None) == (signing == "hmac")
        return created

    hmac_sub, other_hmac = await subscribe("h", "hmac"), await subscribe("h2", "hmac")
    ed_sub, other_ed = await subscribe("e", "ed25519"), await subscribe("e2", "ed25519")
    paths = ["h", "e"]
    old_secret, old_public = hmac_sub["standardSecret"], ed_sub["publicKey"]
    cases: list[Case] = []

    before = await one_event(live, paths)
    for kind, got, key, other in (
        ("hmac", before["h"], old_secret, other_hmac["standardSecret"]),
        ("ed25519", before["e"], old_public, other_ed["publicKey"]),
    ):
        assert got.headers["webhook-id"] == got.delivery
        delivery = seen(got, kind, key)
        cases += [
            Case(f"{kind}: as delivered", delivery, True),
            Case(f"{kind}: a changed body", replace(delivery, body=got.body + b" "), False),
            Case(
                f"{kind}: a changed id",
                replace(delivery, delivery_id=changed_id(delivery.delivery_id)),
                False,
            ),
            Case(f"{kind}: another subscription's key", replace(delivery, key=other), False),
        ]

    rotated = {}
    for sub in (hmac_sub, ed_sub):
        status, answer = await live.call(
            "POST", f"/{sub['id']}/rotate-secret", {"overlapSeconds": OVERLAP}
        )
        assert status == 200, answer
        rotated[sub["id"]] = answer
    new_secret = rotated[hmac_sub["id"]]["standardSecret"]
    new_public = rotated[ed_sub["id"]]["publicKey"]
    assert new_public not in (None, old_public)
    # Past the overlap by the server's own expiry, not a guess.
    expires = max(
        datetime.fromisoformat(answer["previousSecretExpiresAt"]).timestamp()
        for answer in rotated.values()
    )

    during = await one_event(live, paths)
    assert during["h"].headers["webhook-signature"].count("v1,") == 2
    assert during["e"].headers["webhook-signature"].count("v1a,") == 2
    for kind, got, old, new in (
        ("hmac", during["h"], old_secret, new_secret),
        ("ed25519", during["e"], old_public, new_public),
    ):
        cases += [
            Case(f"{kind}: the overlap, the old key", seen(got, kind, old), True),
            Case(f"{kind}: the overlap, the new key", seen(got, kind, new), True),
        ]

    await asyncio.sleep(max(0.0, expires - time.time()) + 0.5)
    after = await one_event(live, paths)
    for kind, got, old, new in (
        ("hmac", after["h"], old_secret, new_secret),
        ("ed25519", after["e"], old_public, new_public),
    ):
        cases += [
            Case(f"{kind}: after the overlap, the new key", seen(got, kind, new), True),
            Case(f"{kind}: after the overlap, the old key", seen(got, kind, old), False),
        ]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attempt_module, "time", SlowClock)
        slow = await one_event(live, paths)
    for kind, got, key in (("hmac", slow["h"], new_secret), ("ed25519", slow["e"], new_public)):
        delivery = seen(got, kind, key)
        assert int(delivery.timestamp) < time.time() - SLOW_BY + 60
        # Genuine but for its time: our own check takes it at the time it was signed.
        verify_standard(key, dict(got.headers), got.body, now=float(delivery.timestamp))
        with pytest.raises(SignatureError, match="timestamp_outside_tolerance"):
            verify_standard(key, dict(got.headers), got.body)
        cases.append(Case(f"{kind}: a timestamp 10 minutes old", delivery, False))
    return cases


@pytest.fixture(scope="module")
async def recorded(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[Case]]:
    """One service run for every language: its deliveries, recorded once per module."""
    run = uuid.uuid4().hex[:8]
    topics = [f"t{run}.identity.{event}" for event in CATALOG_TOPICS] + [f"t{run}.dlq"]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, 3, 1) for name in topics])
    database: Path = tmp_path_factory.mktemp("receivers") / "webhooks.db"
    settings = load_settings(
        database_url=f"sqlite:///{database}",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    try:
        async for receiver in start_receiver():
            async with live_app(settings, topics, kafka_bootstrap, receiver) as live:
                yield await record(live)
    finally:
        await admin.delete_topics(topics)
        await admin.close()


def check(language: str, cases: list[Case]) -> None:
    command = prepare(language)
    got = verdicts(command, [case.delivery for case in cases])
    wrong = [
        f"{case.what}: expected {case.genuine}, got {verdict}"
        for case, verdict in zip(cases, got, strict=True)
        if verdict != str(case.genuine).lower()
    ]
    assert not wrong, f"the {language} example of docs/receivers.md: {wrong}"


def test_the_python_example_verifies_hmac_deliveries_with_the_standard_secret(
    recorded: list[Case],
) -> None:
    check("python", [case for case in recorded if case.delivery.kind == "hmac"])


@pytest.mark.parametrize("language", ["node", "go", "java"])
def test_the_example_verifies_hmac_and_ed25519_deliveries(
    language: str, recorded: list[Case]
) -> None:
    assert {case.delivery.kind for case in recorded} == {"hmac", "ed25519"}
    check(language, recorded)


async def test_signing_switches_by_patch_and_rotates_with_the_secret(live: LiveApp) -> None:
    """On both stores: PATCH to Ed25519 makes a pair (kept by a repeat), the HMAC headers can
    be turned off, a rotation makes a new pair signing beside the old, and PATCH back to HMAC
    drops it."""
    created = await live.subscribe("sw")
    sid = created["id"]

    async def patch(body: dict[str, Any]) -> dict[str, Any]:
        status, row = await live.call("PATCH", f"/{sid}", body)
        assert status == 200, row
        assert isinstance(row, dict)
        return row

    def headers_of(got: Received) -> dict[str, str]:
        return dict(got.headers)

    row = await patch({"signing": "ed25519"})
    public = row["publicKey"]
    assert row["signing"] == "ed25519"
    assert public.startswith("whpk_")
    assert (await patch({"signing": "ed25519"}))["publicKey"] == public  # kept
    got = await send_test(live, sid, "sw")
    assert got.headers["webhook-signature"].startswith("v1a,")
    assert "X-Quantum-Signature" in got.headers  # the HMAC headers by default
    verify_standard(public, headers_of(got), got.body)

    assert (await patch({"hmacHeaders": False}))["hmacHeaders"] is False
    got = await send_test(live, sid, "sw")
    assert "X-Quantum-Signature" not in got.headers
    assert "X-Identity-Signature" not in got.headers
    verify_standard(public, headers_of(got), got.body)

    status, rotated = await live.call("POST", f"/{sid}/rotate-secret", {"overlapSeconds": 60})
    assert status == 200, rotated
    new_public = rotated["publicKey"]
    assert new_public not in (None, public)
    got = await send_test(live, sid, "sw")
    assert got.headers["webhook-signature"].count("v1a,") == 2
    for key in (public, new_public):
        verify_standard(key, headers_of(got), got.body)

    row = await patch({"signing": "hmac", "hmacHeaders": True})
    assert (row["signing"], row["publicKey"]) == ("hmac", None)
    got = await send_test(live, sid, "sw")
    assert got.headers["webhook-signature"].startswith("v1,")
    verify_standard(rotated["standardSecret"], headers_of(got), got.body)
    with pytest.raises(SignatureError):
        verify_standard(new_public, headers_of(got), got.body)
    for bad in ({"signing": "rsa"}, {"signing": None}, {"hmacHeaders": None}):
        status, answer = await live.call("PATCH", f"/{sid}", bad)
        assert status == 422, answer
